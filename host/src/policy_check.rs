//! `coffer policy check`: load a component the way the host would, say in
//! words why it does not fit the contract if it does not, and run it
//! through a short self-test on a scratch database.

use std::path::Path;

use serde::Serialize;

use crate::policy::{CONTRACT, Policy};
use crate::{Coffer, Config, Content, Error, Result};

/// One step of the self-test.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// What `coffer policy check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub component: String,
    pub sha256: String,
    pub contract: &'static str,
    pub exports: Vec<String>,
    /// Whether instances come from the pooling allocator on this machine.
    pub pooling: bool,
    pub steps: Vec<Step>,
}

impl Report {
    /// Whether every step passed.
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.ok)
    }
}

/// Organisation the self-test acts for.
const ORG: &str = "policy-check";

fn step<T>(name: &'static str, result: Result<T>, describe: impl FnOnce(&T) -> (bool, String)) -> (Step, Option<T>) {
    match result {
        Ok(v) => {
            let (ok, detail) = describe(&v);
            (Step { name, ok, detail }, Some(v))
        }
        Err(e) => (Step { name, ok: false, detail: e.to_string() }, None),
    }
}

/// Check the component at `path`. An error means it cannot be loaded at
/// all (not a component, wrong contract version, unknown imports, refuses
/// the default configuration); a report with failed steps means it loads
/// but misbehaves.
pub async fn check(path: &Path, base: &Config) -> Result<Report> {
    let bytes =
        tokio::fs::read(path).await.map_err(|e| Error::InvalidInput(format!("cannot read {}: {e}", path.display())))?;
    let name = path.display().to_string();
    let (limits, cache) = (base.limits, base.compiled_cache_dir());
    let b = bytes.clone();
    let n = name.clone();
    let policy = tokio::task::spawn_blocking(move || Policy::from_bytes(&b, &n, &limits, cache.as_deref())).await??;
    let scratch = tempfile::tempdir().map_err(|e| Error::io("creating a scratch directory", e))?;
    let config = Config {
        database_url: Some(format!("sqlite:{}", scratch.path().join("check.db").display())),
        policy: Some(path.to_path_buf()),
        limits: base.limits,
        cache_dir: base.cache_dir.clone(),
        ..Config::default()
    };
    let coffer = Coffer::open(config).await?;
    let mut steps = vec![Step { name: "check-config", ok: true, detail: "accepts the default configuration".into() }];

    let (s, _) = step("container-name", coffer.container_name(ORG).await, |(b, c)| (true, format!("{b}:{c}")));
    steps.push(s);
    let sample = format!("coffer policy self-test {}", policy.digest());
    let (s, first) =
        step("put", coffer.put(ORG, Content::from_bytes(sample.clone(), Some("text/plain"))?).await, |i| {
            (
                i.sha256 == crate::Digest::of(sample.as_bytes()),
                format!("stored at {}:{}/{}", i.backend, i.container, i.key),
            )
        });
    steps.push(s);
    if let Some(first) = first {
        let (s, _) = step("put again", coffer.put(ORG, Content::from_bytes(sample.clone(), None)?).await, |i| {
            (i.deduplicated == Some(true) && i.key == first.key, format!("deduplicated: {:?}", i.deduplicated))
        });
        steps.push(s);
        let (s, _) = step("get", coffer.get_bytes(ORG, &first.sha256).await, |b| {
            (b.as_ref() == sample.as_bytes(), format!("{} bytes back", b.len()))
        });
        steps.push(s);
        let (s, _) =
            step("stat", coffer.stat(ORG, &first.sha256.to_string()).await, |i| (true, i.content_type.clone()));
        steps.push(s);
        // A policy may refuse deletion; it must not fail at it.
        let deleted = coffer.delete(ORG, &first.sha256.to_string()).await;
        steps.push(match deleted {
            Ok(_) => Step { name: "delete", ok: true, detail: "allowed".into() },
            Err(Error::Denied(m)) => Step { name: "delete", ok: true, detail: format!("refused by policy: {m}") },
            Err(e) => Step { name: "delete", ok: false, detail: e.to_string() },
        });
    }
    Ok(Report {
        component: name,
        sha256: policy.digest().to_string(),
        contract: CONTRACT,
        exports: policy.exports(),
        pooling: policy.pooling(),
        steps,
    })
}
