//! A real S3 server for the tests: s3s-fs (S3 over a folder) behind s3s's
//! SigV4 verification, listening on 127.0.0.1 on a port of its own, on its
//! own thread and runtime so it outlives each test's runtime. One per test
//! process; tests keep apart by bucket name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "coffer-test-key";
pub const SECRET_KEY: &str = "coffer-test-secret-0123456789";

pub struct S3Server {
    pub addr: SocketAddr,
    /// The folder s3s-fs keeps buckets in (a bucket is a directory).
    pub root: PathBuf,
}

impl S3Server {
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The shared server, started on first use.
pub fn server() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let root = tempfile::tempdir().unwrap().keep();
        let (tx, rx) = std::sync::mpsc::channel();
        let fs_root = root.clone();
        std::thread::Builder::new()
            .name("s3-test-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
                rt.block_on(async move {
                    let fs = s3s_fs::FileSystem::new(&fs_root).unwrap();
                    let mut builder = S3ServiceBuilder::new(fs);
                    builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
                    let service = builder.build();
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    tx.send(listener.local_addr().unwrap()).unwrap();
                    let http = ConnBuilder::new(TokioExecutor::new());
                    loop {
                        let Ok((socket, _)) = listener.accept().await else { continue };
                        // Without it, small responses wait on delayed ACKs (40 ms each).
                        let _ = socket.set_nodelay(true);
                        let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                    }
                });
            })
            .unwrap();
        let addr = rx.recv().unwrap();
        S3Server { addr, root }
    })
}
