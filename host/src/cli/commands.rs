//! What each command does with the library, its output for scripts:
//! JSON objects on stdout (one per line for `ls`), raw bytes for `get`.

use std::io::Write;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;

#[cfg(feature = "server")]
use super::args::TokenCommand;
use super::args::{Command, ImportCommand, MigrateArgs, PolicyCommand};
use super::progress::Bar;
use crate::backend::Disposition;
use crate::coffer::Coffer;
use crate::config::Config;
use crate::content::Content;
use crate::error::{Error, Result};

fn print_json(value: &impl Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value).map_err(|e| Error::Internal(format!("JSON: {e}")))?;
    writeln!(out).map_err(|e| Error::io("writing to standard output", e))
}

pub(super) async fn execute(command: Command) -> Result<()> {
    if let Command::Policy(PolicyCommand::Check { file }) = &command {
        // Only limits and the cache come from the environment: the check
        // runs on a scratch database with no S3.
        let report = crate::policy_check::check(file, &Config::from_env()?).await?;
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
                Content::from_reader(std::io::stdin(), content_type.as_deref(), coffer.spool()).await?
            } else {
                Content::from_path(&file, content_type.as_deref()).await?
            };
            print_json(&coffer.put(&org, content).await?)
        }
        Command::Get { org, sha256, output: Some(path) } if path.as_os_str() != "-" => {
            coffer.get_to_path(&org, &sha256, &path).await?;
            Ok(())
        }
        Command::Get { org, sha256, output: _ } => {
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
            report.outcome()
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
