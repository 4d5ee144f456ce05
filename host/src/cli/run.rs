//! Running a parsed command line: the runtime, signals, logging, and the
//! exit code for each kind of failure.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use super::args::{Cli, Command};
use super::commands::execute;
use crate::error::ErrorKind;
#[cfg(feature = "server")]
use crate::{coffer::Coffer, config::Config};

/// The exit code for each kind of failure.
///
/// | code | meaning |
/// |---|---|
/// | 0 | success |
/// | 1 | internal error or failing policy component |
/// | 2 | invalid input (names, digests, files, arguments) |
/// | 3 | not found |
/// | 4 | denied by policy |
/// | 5 | integrity: stored bytes do not match their digest |
/// | 6 | backend unavailable or failing |
/// | 7 | configuration error |
/// | 8 | conflict |
pub fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidInput => 2,
        ErrorKind::NotFound => 3,
        ErrorKind::Denied => 4,
        ErrorKind::Integrity => 5,
        ErrorKind::Unavailable => 6,
        ErrorKind::Config => 7,
        ErrorKind::Conflict => 8,
        _ => 1,
    }
}

/// Run a parsed command line; errors are printed, and turned into the exit
/// code for their kind.
pub fn run(cli: Cli) -> ExitCode {
    #[cfg(feature = "server")]
    if let Command::Serve { listen } = cli.command {
        return serve(listen);
    }
    init_logging("warn");
    // One command, one request at a time: a single-threaded runtime spares
    // every streamed chunk a cross-thread wake-up (it cut the CPU of a
    // large `get` threefold; see BENCHMARKS.md). Hashing and file I/O still
    // run on the blocking pool.
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            done = execute(cli.command) => Ok(done),
            signal = shutdown_signal() => {
                // `execute` was dropped: its guards queued their clean-up
                // (abort the multipart upload, release the reservation).
                // Let it finish, within bounds, before the process goes.
                let cleaned = crate::cleanup::cleanups().wait(Duration::from_secs(30)).await;
                Err((signal, cleaned))
            }
        }
    });
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("coffer: error: {e}");
            ExitCode::from(exit_code(e.kind()))
        }
        Err((signal, cleaned)) => {
            let name = if signal == 15 { "SIGTERM" } else { "SIGINT" };
            let tail = if cleaned { "cleaned up" } else { "clean-up did not finish; run coffer gc" };
            eprintln!("coffer: interrupted by {name}: the operation was cancelled and {tail}");
            ExitCode::from(128 + signal)
        }
    }
}

/// The runtime `builder` makes, with I/O and timers; or, said on stderr,
/// why there is none.
fn runtime(mut builder: tokio::runtime::Builder) -> std::result::Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("coffer: error: cannot start the async runtime: {e}");
        ExitCode::from(1)
    })
}

/// The first SIGINT or SIGTERM, as its number; never, if signals cannot
/// be watched.
async fn shutdown_signal() -> u8 {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => 2,
            _ = term.recv() => 15,
        },
        _ => std::future::pending().await,
    }
}

/// `coffer serve`: a multi-threaded runtime (requests in parallel), logs
/// at `info` (the access log) unless `COFFER_LOG` says otherwise, and
/// SIGTERM/SIGINT as the graceful shutdown.
#[cfg(feature = "server")]
fn serve(listen: Option<String>) -> ExitCode {
    init_logging("info");
    let runtime = match runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let served = runtime.block_on(async {
        let coffer = Coffer::open(Config::from_env()?).await?;
        let server = crate::server::Server::bind(coffer, listen.as_deref()).await?;
        // The one line a supervisor or test waits for.
        eprintln!("coffer: listening on http://{}", server.local_addr()?);
        server
            .run(async {
                let signal = shutdown_signal().await;
                tracing::info!(signal, "shutdown requested");
            })
            .await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coffer: error: {e}");
            ExitCode::from(exit_code(e.kind()))
        }
    }
}

/// Logs on standard error: `COFFER_LOG` filters (default `default`),
/// `COFFER_LOG_FORMAT=json` writes one JSON object per line.
fn init_logging(default: &str) {
    let wanted = std::env::var("COFFER_LOG").unwrap_or_else(|_| default.into());
    let mut filter =
        tracing_subscriber::EnvFilter::try_new(&wanted).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // tokio-postgres logs every statement's parameters at debug level: the
    // tenants' content, in 1 MiB rows. Only when asked for by name.
    if !wanted.contains("tokio_postgres")
        && let Ok(quiet) = "tokio_postgres=info".parse()
    {
        filter = filter.add_directive(quiet);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var("COFFER_LOG_FORMAT").is_ok_and(|f| f == "json") {
        let _ = builder.json().flatten_event(true).try_init();
    } else {
        let _ = builder.try_init();
    }
}
