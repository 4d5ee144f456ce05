//! The `coffer` command line: argument definitions and what each command
//! does with the library. The binary only parses and calls [`run`].
//!
//! Output is for scripts: JSON objects on stdout (one per line for `ls`),
//! raw bytes for `get`; errors are one line on stderr, and the exit code
//! says which kind of failure it was ([`exit_code`]).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use serde::Serialize;

use crate::backend::Disposition;
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
    /// Run a `wasi:cli` command component (a plugin) with Coffer's
    /// `wasi:blobstore` wired in, acting for ORG; for trying plugins out.
    /// The plugin gets its arguments, standard output and error, and no
    /// files, network or environment. Exits 1 if the plugin fails.
    RunPlugin {
        /// The component (`.wasm`).
        component: PathBuf,
        #[arg(long)]
        org: String,
        /// Arguments passed to the plugin.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
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
    /// Print a direct download link (S3 only): presigned and expiring, saved
    /// as a file unless --inline; or plain with --public for a bucket made
    /// public.
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
        /// Let the browser show the file instead of saving it
        /// (Content-Disposition: inline); only for content safe to display.
        #[arg(long)]
        inline: bool,
        /// The plain URL, for a bucket the operator made public.
        #[arg(long, conflicts_with_all = ["expires", "filename", "inline"])]
        public: bool,
    },
    /// Delete an organisation's file (where policy allows).
    Rm {
        #[arg(long)]
        org: String,
        sha256: String,
    },
    /// Serve the HTTP API (see the README and /openapi.json) until SIGTERM
    /// or SIGINT; requests in flight then finish.
    #[cfg(feature = "server")]
    Serve {
        /// HOST:PORT (default: COFFER_LISTEN, the config file, or 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Bearer tokens for `coffer serve`.
    #[cfg(feature = "server")]
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print the bucket the configuration gives an organisation, or why it
    /// cannot have one. Contacts no backend.
    BucketName {
        #[arg(long)]
        org: String,
    },
    /// Reclaim what crashes and failures left behind: abandoned
    /// reservations, unfinished deletions, incomplete uploads, and bytes no
    /// record refers to. Prints a JSON summary.
    Gc {
        /// Reclaim only what is older than this (`24h`, `30m`, `90s`, `2d`;
        /// `0s` for everything). Keep it longer than your longest upload.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        older_than: Duration,
        /// Count what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move objects to where the current configuration and policy put new
    /// ones (database → S3, S3 → database, between bucket layouts), and
    /// parked objects to S3: copied, verified at the destination, the
    /// record switched, the old bytes deleted. Resumable; prints a JSON
    /// summary.
    Migrate {
        #[command(flatten)]
        args: MigrateArgs,
        /// Only objects parked in the database while S3 was unavailable.
        #[arg(long)]
        parked: bool,
    },
    /// Move objects parked in the database while S3 was unavailable to S3
    /// (`coffer migrate --parked`).
    Drain {
        #[command(flatten)]
        args: MigrateArgs,
    },
    /// Check every record against its bytes: present where the catalog
    /// says (and, with --deep, hashed again). Problems are printed as JSON
    /// lines, then a JSON summary; exit 5 if any object is missing or
    /// corrupt, 6 if some could not be checked.
    Verify {
        /// Only this organisation's records (without it, bytes no record
        /// refers to are listed too).
        #[arg(long)]
        org: Option<String>,
        /// Read and hash every object instead of trusting the digest the
        /// store reports.
        #[arg(long)]
        deep: bool,
        /// Objects checked at once.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: u16,
    },
    /// Adopt an existing store: a Request Tracker bucket in place, or an
    /// OpenKAT Bytes store (S3 or files) or any directory copied in, with a
    /// mapping file of old ids to digests. Nothing in the source is
    /// changed. Prints a JSON summary.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Work with policy components.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// Options shared by `migrate` and `drain`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Only this organisation's objects.
    #[arg(long)]
    org: Option<String>,
    /// Count what would be moved; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Objects moved at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    jobs: u16,
    /// Move at most this many objects in this run.
    #[arg(long)]
    limit: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// A Request Tracker external-storage bucket (keys are SHA-256 digests),
    /// adopted in place for one organisation: nothing is copied, and
    /// Coffer never deletes bytes there.
    Rt {
        /// The bucket RT writes to (on the configured S3 endpoint).
        #[arg(long)]
        bucket: String,
        /// Only keys under this prefix (the digest follows it).
        #[arg(long, default_value = "")]
        prefix: String,
        /// The organisation the objects become records of.
        #[arg(long)]
        org: String,
        /// Read and hash every object, even when the server reports a
        /// SHA-256 checksum (objects without one are always read).
        #[arg(long)]
        deep: bool,
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: u16,
    },
    /// An OpenKAT Bytes S3 store, copied into Coffer's layout: a bucket per
    /// organisation (--bucket-prefix and --org for each), or one bucket
    /// with ORG/RAW-ID keys (--bucket).
    OpenkatS3 {
        #[arg(long, conflicts_with = "bucket_prefix", required_unless_present = "bucket_prefix")]
        bucket: Option<String>,
        #[arg(long)]
        bucket_prefix: Option<String>,
        /// Organisations to import (required with --bucket-prefix; with
        /// --bucket, all found when none is given). Repeat it.
        #[arg(long)]
        org: Vec<String>,
        /// The mapping file: one JSON line {org, raw_id, sha256, size} per
        /// object; appended to, and read to skip what a run did before.
        #[arg(long)]
        mapping: PathBuf,
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: u16,
    },
    /// A directory copied into Coffer's layout: OpenKAT's file layout
    /// (ORG/ID[:3]/ID), or, with --org, every file below it.
    Dir {
        path: PathBuf,
        /// Import every file (recursively) for this organisation; the raw
        /// id is the path relative to the directory.
        #[arg(long)]
        org: Option<String>,
        /// The mapping file, as for openkat-s3.
        #[arg(long)]
        mapping: PathBuf,
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: u16,
    },
}

/// Parse `90`, `90s`, `30m`, `24h` or `2d`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 24h or 2d"))?;
    let secs = match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    };
    secs.map(Duration::from_secs).ok_or_else(|| format!("{s:?} is not a duration like 90s, 30m, 24h or 2d"))
}

#[cfg(feature = "server")]
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new random token: prints the token once (give it to the
    /// client) and the `[[server.tokens]]` entry, with only its SHA-256,
    /// for the configuration file.
    New {
        #[arg(long)]
        org: String,
        /// A name for logs and metrics.
        #[arg(long)]
        name: String,
        /// Comma-separated: read, write, delete, link.
        #[arg(long, default_value = "read,write,delete,link", value_delimiter = ',')]
        scopes: Vec<crate::config::Scope>,
    },
    /// The SHA-256 to configure for a token read from standard input.
    Hash,
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

/// A progress bar on standard error, shown only on a terminal: objects
/// done (of how many, when known), their rate, and bytes done.
struct Bar {
    bar: indicatif::ProgressBar,
    stage: std::sync::Mutex<String>,
    bytes: std::sync::atomic::AtomicU64,
}

impl Bar {
    fn new() -> Bar {
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new(0)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:>36} [{bar:30}] {pos}/{len} objects ({per_sec}, {elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Bar { bar, stage: Default::default(), bytes: Default::default() }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl crate::gc::Progress for Bar {
    fn stage(&self, name: &str, items: Option<u64>) {
        self.bar.reset();
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) = name.to_string();
        self.bytes.store(0, std::sync::atomic::Ordering::Relaxed);
        self.bar.set_message(name.to_string());
        match items {
            Some(n) => self.bar.set_length(n),
            None => self.bar.unset_length(),
        }
    }

    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    fn wants_totals(&self) -> bool {
        !self.bar.is_hidden()
    }

    fn bytes(&self, n: u64) {
        let total = self.bytes.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        let stage = self.stage.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.bar.set_message(format!("{stage} {}", indicatif::HumanBytes(total)));
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
    #[cfg(feature = "server")]
    match &command {
        Command::Token(TokenCommand::New { org, name, scopes }) => {
            let mut scopes = scopes.clone();
            scopes.sort();
            scopes.dedup();
            let token = crate::server::auth::new_token()?;
            let entry = crate::config::TokenSettings {
                name: name.clone(),
                org: org.clone(),
                sha256: crate::server::auth::token_hash(&token),
                scopes,
            };
            let settings = crate::config::ServerSettings { tokens: vec![entry], ..Default::default() };
            settings.validate()?;
            #[derive(Serialize)]
            struct File<'a> {
                server: Server<'a>,
            }
            #[derive(Serialize)]
            struct Server<'a> {
                tokens: &'a [crate::config::TokenSettings],
            }
            let entry = toml::to_string(&File { server: Server { tokens: &settings.tokens } })
                .map_err(|e| Error::Internal(format!("TOML: {e}")))?;
            println!("# The token (shown once; give it to the client, keep it out of the file):\n# {token}\n{entry}");
            return Ok(());
        }
        Command::Token(TokenCommand::Hash) => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map_err(|e| Error::io("reading the token", e))?;
            let token = line.trim();
            if token.is_empty() {
                return Err(Error::InvalidInput("give the token on standard input".into()));
            }
            println!("{}", crate::server::auth::token_hash(token));
            return Ok(());
        }
        _ => {}
    }
    let coffer = Coffer::open(Config::from_env()?).await?;
    match command {
        Command::Policy(_) => unreachable!("handled above"),
        #[cfg(feature = "server")]
        Command::Serve { .. } | Command::Token(_) => unreachable!("handled above"),
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
        Command::Link { org, sha256, expires, filename, inline, public } => {
            let expires = (!public).then(|| std::time::Duration::from_secs(expires));
            let disposition = if inline { Disposition::Inline } else { Disposition::Attachment };
            let url = coffer.link(&org, &sha256, expires, filename.as_deref(), disposition).await?;
            print_json(&serde_json::json!({ "url": url }))
        }
        Command::Rm { org, sha256 } => print_json(&coffer.delete(&org, &sha256).await?),
        Command::Gc { older_than, dry_run } => {
            let bar = Bar::new();
            let report = coffer.gc(&crate::gc::GcOptions { older_than, dry_run }, &bar).await?;
            bar.finish();
            print_json(&report)?;
            some_failed(report.error_count, "gc finished with {n} errors (listed in the summary); run it again later")
        }
        Command::Migrate { args, parked } => migrate(&coffer, args, parked).await,
        Command::Drain { args } => migrate(&coffer, args, true).await,
        Command::Verify { org, deep, jobs } => {
            let bar = Bar::new();
            let options = crate::verify::VerifyOptions { org, deep, jobs: jobs.into() };
            let print = |f: &crate::verify::Finding| {
                if let Err(e) = print_json(f) {
                    tracing::error!(error = %e, "could not print a finding");
                }
            };
            let report = coffer.verify(&options, &bar, &print).await?;
            bar.finish();
            print_json(&report)?;
            if report.unconfirmed > 0 && !deep {
                eprintln!(
                    "coffer: note: {} objects are present with the right size, but their store reports no digest it \
                     checked; --deep reads and hashes them",
                    report.unconfirmed
                );
            }
            if report.missing + report.corrupt + report.outside_claims > 0 {
                Err(Error::Integrity(format!(
                    "{} missing, {} corrupt, {} outside their organisation's namespaces (listed above)",
                    report.missing, report.corrupt, report.outside_claims
                )))
            } else {
                some_failed(report.unreadable, "{n} objects could not be checked (listed above); run it again later")
            }
        }
        Command::Import(command) => {
            use crate::import::{ImportOptions, ImportSource};
            let (source, mapping, deep, jobs) = match command {
                ImportCommand::Rt { bucket, prefix, org, deep, jobs } => {
                    (ImportSource::RequestTracker { bucket, prefix, org }, None, deep, jobs)
                }
                ImportCommand::OpenkatS3 { bucket: Some(bucket), org, mapping, jobs, .. } => {
                    (ImportSource::OpenKatBucket { bucket, orgs: org }, Some(mapping), false, jobs)
                }
                ImportCommand::OpenkatS3 { bucket: None, bucket_prefix, org, mapping, jobs } => {
                    let prefix = bucket_prefix.unwrap_or_default();
                    (ImportSource::OpenKatBuckets { prefix, orgs: org }, Some(mapping), false, jobs)
                }
                ImportCommand::Dir { path, org, mapping, jobs } => {
                    (ImportSource::Directory { root: path, org }, Some(mapping), false, jobs)
                }
            };
            let bar = Bar::new();
            let options = ImportOptions { source, mapping, deep, jobs: jobs.into() };
            let report = coffer.import(&options, &bar).await?;
            bar.finish();
            print_json(&report)?;
            some_failed(report.failed, "{n} objects could not be imported (listed in the summary); run it again")
        }
        Command::RunPlugin { component, org, args } => {
            let wasm = std::fs::read(&component)
                .map_err(|e| Error::io(format!("reading the plugin {}", component.display()), e))?;
            let ctx = crate::blobstore::BlobstoreCtx::new(coffer.clone(), &org)?;
            let run = crate::blobstore::run_plugin(ctx, &wasm, &args, false).await;
            // The pins of the values it left open are released before the
            // process exits, whatever became of the plugin.
            coffer.quiesce(Duration::from_secs(30)).await;
            match run?.status {
                0 => Ok(()),
                status => Err(Error::Policy(format!("the plugin {} exited with status {status}", component.display()))),
            }
        }
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

/// `coffer migrate` and `coffer drain`.
async fn migrate(coffer: &Coffer, args: MigrateArgs, parked_only: bool) -> Result<()> {
    let bar = Bar::new();
    let options = crate::migrate::MigrateOptions {
        org: args.org,
        parked_only,
        jobs: args.jobs.into(),
        limit: args.limit,
        dry_run: args.dry_run,
    };
    let report = coffer.migrate(&options, &bar).await?;
    bar.finish();
    print_json(&report)?;
    if let Some(why) = &report.stopped {
        return Err(Error::Backend { message: why.clone(), retryable: true, source: None });
    }
    some_failed(
        report.failed,
        "{n} objects could not be moved (listed in the summary); they stay readable where they are. Run it again",
    )
}

/// Success when `n` is 0; otherwise the retryable failure (exit 6) that
/// `message` describes, `{n}` replaced by the count.
fn some_failed(n: u64, message: &str) -> Result<()> {
    match n {
        0 => Ok(()),
        n => Err(Error::Backend { message: message.replace("{n}", &n.to_string()), retryable: true, source: None }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "h", "1w", "-1s", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
