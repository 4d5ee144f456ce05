//! The `coffer` command line: argument definitions and what each command
//! does with the library. The binary only parses and calls [`run`].
//!
//! Output is for scripts: JSON objects on stdout (one per line for `ls`),
//! raw bytes for `get`; errors are one line on stderr, and the exit code
//! says which kind of failure it was ([`exit_code`]).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use serde::Serialize;

use crate::{Coffer, Config, Content, Error, ErrorKind, Result};

/// Store organisations' files in S3 or a database, placed by a sandboxed
/// WebAssembly policy. Configured by environment (see the README).
#[derive(Debug, Parser)]
#[command(name = "coffer", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store a file (`-` for standard input); prints its record as JSON.
    Put {
        #[arg(long)]
        org: String,
        file: PathBuf,
        /// MIME type to record (default application/octet-stream).
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Write a stored file's bytes to standard output or a file.
    Get {
        #[arg(long)]
        org: String,
        sha256: String,
        /// Write here instead of standard output (atomically: the file
        /// appears only once the bytes are verified).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Print a stored file's record as JSON.
    Stat {
        #[arg(long)]
        org: String,
        sha256: String,
    },
    /// List an organisation's files, one JSON object per line.
    Ls {
        #[arg(long)]
        org: String,
    },
    /// Print a direct download link (S3 only): presigned and expiring, or
    /// plain with --public for a bucket made public.
    Link {
        #[arg(long)]
        org: String,
        sha256: String,
        /// Seconds the link stays valid (1 to 604800).
        #[arg(long, default_value_t = 3600)]
        expires: u64,
        /// File name the browser saves the download as.
        #[arg(long)]
        filename: Option<String>,
        /// The plain URL, for a bucket the operator made public.
        #[arg(long, conflicts_with_all = ["expires", "filename"])]
        public: bool,
    },
    /// Delete an organisation's file (where policy allows).
    Rm {
        #[arg(long)]
        org: String,
        sha256: String,
    },
    /// Print the bucket the configuration gives an organisation, or why it
    /// cannot have one. Contacts no backend.
    BucketName {
        #[arg(long)]
        org: String,
    },
    /// Work with policy components.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a component against the contract, print what it exports, and
    /// run it through a self-test on a scratch database.
    Check { file: PathBuf },
}

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

fn print_json(value: &impl Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value).map_err(|e| Error::Internal(format!("JSON: {e}")))?;
    writeln!(out).map_err(|e| Error::io("writing to standard output", e))
}

/// Run a parsed command line; errors are printed, and turned into the exit
/// code for their kind.
pub fn run(cli: Cli) -> ExitCode {
    init_logging();
    // One command, one request at a time: a single-threaded runtime spares
    // every streamed chunk a cross-thread wake-up (it cut the CPU of a
    // large `get` threefold; see BENCHMARKS.md). Hashing and file I/O still
    // run on the blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coffer: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coffer: error: {e}");
            ExitCode::from(exit_code(e.kind()))
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("COFFER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn execute(command: Command) -> Result<()> {
    if let Command::Policy(PolicyCommand::Check { file }) = &command {
        // Only limits and the cache come from the environment: the check
        // runs on a scratch database with no S3.
        let report = crate::policy::check::check(file, &Config::from_env()?).await?;
        print_json(&report)?;
        return match report.steps.iter().find(|s| !s.ok) {
            None => Ok(()),
            Some(failed) => Err(Error::Policy(format!("self-test step {:?} failed: {}", failed.name, failed.detail))),
        };
    }
    let coffer = Coffer::open(Config::from_env()?).await?;
    match command {
        Command::Policy(_) => unreachable!("handled above"),
        Command::Put { org, file, content_type } => {
            let content = if file.as_os_str() == "-" {
                Content::from_reader(std::io::stdin(), content_type.as_deref(), None).await?
            } else {
                Content::from_path(&file, content_type.as_deref()).await?
            };
            print_json(&coffer.put(&org, content).await?)
        }
        Command::Get { org, sha256, output: Some(path) } => {
            coffer.get_to_path(&org, &sha256, &path).await?;
            Ok(())
        }
        Command::Get { org, sha256, output: None } => {
            let (_, mut stream) = coffer.get(&org, &sha256).await?;
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk?).map_err(|e| Error::io("writing to standard output", e))?;
            }
            out.flush().map_err(|e| Error::io("writing to standard output", e))
        }
        Command::Stat { org, sha256 } => print_json(&coffer.stat(&org, &sha256).await?),
        Command::Ls { org } => {
            let mut after: Option<String> = None;
            loop {
                let page = coffer.list(&org, after.as_deref(), 1000).await?;
                for info in &page {
                    print_json(info)?;
                }
                match page.last() {
                    Some(last) if page.len() == 1000 => after = Some(last.sha256.to_string()),
                    _ => return Ok(()),
                }
            }
        }
        Command::Link { org, sha256, expires, filename, public } => {
            let expires = (!public).then(|| std::time::Duration::from_secs(expires));
            let url = coffer.link(&org, &sha256, expires, filename.as_deref()).await?;
            print_json(&serde_json::json!({ "url": url }))
        }
        Command::Rm { org, sha256 } => print_json(&coffer.delete(&org, &sha256).await?),
        Command::BucketName { org } => {
            let (backend, container) = coffer.container_name(&org).await?;
            #[derive(Serialize)]
            struct Answer<'a> {
                org: &'a str,
                backend: crate::backend::BackendKind,
                container: &'a str,
                #[serde(skip_serializing_if = "Option::is_none")]
                bucket: Option<&'a str>,
            }
            let bucket = (backend == crate::backend::BackendKind::S3).then_some(container.as_str());
            print_json(&Answer { org: &org, backend, container: &container, bucket })
        }
    }
}
