//! A real S3 server for the tests: s3s-fs (S3 over a folder) behind s3s's
//! SigV4 verification, listening on 127.0.0.1 on a port of its own, on its
//! own thread and runtime so it outlives each test's runtime. One per test
//! process; tests keep apart by bucket name.
//!
//! s3s-fs does not implement ListMultipartUploads (501), which `coffer gc`
//! and the crash tests need; [`Fs`] passes every operation Coffer uses to
//! s3s-fs and answers that one from s3s-fs's own folder, where each open
//! upload is a `.upload-ID.json` file beside the metadata file that names
//! its bucket and key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use base64::Engine as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result};

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

/// s3s-fs, plus ListMultipartUploads.
#[derive(Debug)]
struct Fs {
    inner: s3s_fs::FileSystem,
    root: PathBuf,
}

/// Pass S3 operations to s3s-fs. Written out in the form `async_trait`
/// gives trait methods, since the attribute does not reach into macros.
macro_rules! delegate {
    ($($method:ident: $input:ident => $output:ident),* $(,)?) => {$(
        fn $method<'life0, 'async_trait>(
            &'life0 self,
            req: S3Request<$input>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = S3Result<S3Response<$output>>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            self.inner.$method(req)
        }
    )*};
}

/// The open multipart uploads in s3s-fs's folder: (bucket, key, upload id,
/// when it was created).
pub fn open_uploads(root: &std::path::Path) -> Vec<(String, String, String, std::time::SystemTime)> {
    let b64 = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok().and_then(|b| String::from_utf8(b).ok())
    };
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else { return out };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        // .bucket-{b64}.object-{b64}.upload-{uuid}.metadata.json
        let Some(rest) = name.strip_prefix(".bucket-").and_then(|r| r.strip_suffix(".metadata.json")) else { continue };
        let Some((bucket, rest)) = rest.split_once(".object-") else { continue };
        let Some((key, id)) = rest.split_once(".upload-") else { continue };
        if !root.join(format!(".upload-{id}.json")).exists() {
            continue;
        }
        let (Some(bucket), Some(key)) = (b64(bucket), b64(key)) else { continue };
        let created = e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
        out.push((bucket, key, id.to_string(), created));
    }
    out.sort();
    out
}

#[async_trait::async_trait]
impl S3 for Fs {
    delegate! {
        create_bucket: CreateBucketInput => CreateBucketOutput,
        head_bucket: HeadBucketInput => HeadBucketOutput,
        head_object: HeadObjectInput => HeadObjectOutput,
        get_object: GetObjectInput => GetObjectOutput,
        put_object: PutObjectInput => PutObjectOutput,
        delete_object: DeleteObjectInput => DeleteObjectOutput,
        list_objects_v2: ListObjectsV2Input => ListObjectsV2Output,
        create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput,
        upload_part: UploadPartInput => UploadPartOutput,
        complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput,
        abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput,
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let bucket = req.input.bucket;
        let uploads: Vec<MultipartUpload> = open_uploads(&self.root)
            .into_iter()
            .filter(|(b, ..)| *b == bucket)
            .map(|(_, key, id, created)| MultipartUpload {
                key: Some(key),
                upload_id: Some(id),
                initiated: Some(Timestamp::from(created)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(bucket),
            is_truncated: Some(false),
            uploads: Some(uploads),
            ..Default::default()
        }))
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
                    let fs = Fs { inner: s3s_fs::FileSystem::new(&fs_root).unwrap(), root: fs_root.clone() };
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
