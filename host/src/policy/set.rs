//! The policies in force: a default and per-organisation overrides, each
//! replaceable while the host runs. A call takes the policy current when
//! it starts and finishes on it, whatever is swapped in meanwhile; a
//! replacement that fails to load or to pass its `check-config` is refused
//! and the old policy stays.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use super::Policy;
use super::host::HostServices;
use crate::config::Config;
use crate::error::{Error, Result};

/// The name of the per-tenant setting that names a tenant's component.
pub const TENANT_POLICY_SETTING: &str = "policy";

/// Where a policy comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Every organisation without its own policy.
    Default,
    /// One organisation.
    Tenant(String),
}

#[derive(Debug, Default)]
struct Current {
    default: Option<Policy>,
    tenants: HashMap<String, Policy>,
}

/// The policies in force.
#[derive(Debug, Default)]
pub struct PolicySet {
    current: RwLock<Current>,
    /// Last seen (modified time, length) of each component file, so
    /// watching does not re-read unchanged files.
    seen: Mutex<HashMap<PathBuf, (Option<SystemTime>, u64)>>,
}

/// The component files the configuration names, by slot.
fn configured_files(config: &Config) -> Vec<(Slot, PathBuf)> {
    let mut files: Vec<(Slot, PathBuf)> = config.policy.iter().map(|p| (Slot::Default, p.clone())).collect();
    for (org, settings) in &config.tenants {
        if let Some(p) = settings.get(TENANT_POLICY_SETTING) {
            files.push((Slot::Tenant(org.clone()), PathBuf::from(p)));
        }
    }
    files
}

fn setting_name(slot: &Slot) -> String {
    match slot {
        Slot::Default => "COFFER_POLICY".into(),
        Slot::Tenant(org) => format!("tenants.{org}.{TENANT_POLICY_SETTING}"),
    }
}

/// Load (compile, link, check against the contract) a component file.
async fn load_file(config: &Config, slot: &Slot, path: &Path) -> Result<Policy> {
    let bytes = tokio::fs::read(path).await.map_err(|e| {
        Error::Config(format!("cannot read policy component {} ({}): {e}", path.display(), setting_name(slot)))
    })?;
    load_bytes(config, bytes, path.display().to_string()).await
}

async fn load_bytes(config: &Config, bytes: Vec<u8>, name: String) -> Result<Policy> {
    let limits = config.limits;
    let cache = config.compiled_cache_dir();
    // Compiling a large component takes a while: off the async threads.
    tokio::task::spawn_blocking(move || Policy::from_bytes(&bytes, &name, &limits, cache.as_deref())).await?
}

/// Let `policy` check the settings it will run with: for the default
/// slot, the deployment's and every configured tenant's (it declares every
/// organisation's namespaces, also for tenants with a policy of their
/// own); for a tenant's slot, that tenant's. An error names the tenant
/// whose settings are wrong.
async fn check_all(policy: &Policy, services: &Arc<HostServices>, slot: &Slot) -> Result<()> {
    let config = &services.config;
    let tenants: Vec<&str> = match slot {
        Slot::Default => {
            policy.check_config(services, None).await?;
            config.tenants.keys().map(String::as_str).collect()
        }
        Slot::Tenant(org) => vec![org.as_str()],
    };
    for org in tenants {
        policy.check_config(services, Some(org)).await.map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("tenants.{org}: {m}")),
            other => other,
        })?;
    }
    Ok(())
}

impl PolicySet {
    /// Load every policy the configuration names (the built-in one when it
    /// names none) and let each check the configuration.
    pub async fn load(services: &Arc<HostServices>) -> Result<PolicySet> {
        let set = PolicySet::default();
        let config = &services.config;
        let default = match &config.policy {
            Some(_) => None,
            None => {
                let (limits, cache) = (config.limits, config.compiled_cache_dir());
                Some(tokio::task::spawn_blocking(move || Policy::default_policy(&limits, cache.as_deref())).await??)
            }
        };
        if let Some(p) = default {
            check_all(&p, services, &Slot::Default).await?;
            set.current.write().unwrap_or_else(|e| e.into_inner()).default = Some(p);
        }
        for (slot, path) in configured_files(config) {
            let policy = load_file(config, &slot, &path)
                .await
                .map_err(|e| Error::Config(format!("{}: {e}", setting_name(&slot))))?;
            set.install(services, slot, policy, Some(&path)).await?;
        }
        Ok(set)
    }

    /// The deployment's policy now: it declares every organisation's
    /// namespaces, also for tenants with a policy of their own.
    pub fn deployment(&self) -> Policy {
        self.for_org(None)
    }

    /// The policy for `org` now.
    pub fn for_org(&self, org: Option<&str>) -> Policy {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        org.and_then(|o| current.tenants.get(o))
            .or(current.default.as_ref())
            .cloned()
            .expect("a default policy is always installed")
    }

    /// Check `policy` against the configuration and put it in `slot`.
    async fn install(
        &self,
        services: &Arc<HostServices>,
        slot: Slot,
        policy: Policy,
        path: Option<&Path>,
    ) -> Result<()> {
        check_all(&policy, services, &slot).await?;
        if let Some(path) = path {
            let meta = std::fs::metadata(path).ok();
            let stamp = (meta.as_ref().and_then(|m| m.modified().ok()), meta.map(|m| m.len()).unwrap_or(0));
            self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(path.to_path_buf(), stamp);
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        match slot {
            Slot::Default => current.default = Some(policy),
            Slot::Tenant(org) => {
                current.tenants.insert(org, policy);
            }
        }
        Ok(())
    }

    /// Replace the policy in `slot` with the component `bytes`. On any
    /// error the old policy stays in force.
    pub async fn replace(&self, services: &Arc<HostServices>, slot: Slot, bytes: Vec<u8>, name: &str) -> Result<()> {
        let policy = load_bytes(&services.config, bytes, name.to_string()).await?;
        self.install(services, slot, policy, None).await
    }

    /// Reload every configured component file whose modification time or
    /// length changed; return the slots replaced. A file that fails to
    /// load is reported and its old policy kept; the others still reload.
    pub async fn reload_changed(&self, services: &Arc<HostServices>) -> (Vec<Slot>, Vec<Error>) {
        let (mut replaced, mut errors) = (Vec::new(), Vec::new());
        for (slot, path) in configured_files(&services.config) {
            let meta = std::fs::metadata(&path).ok();
            let stamp = (meta.as_ref().and_then(|m| m.modified().ok()), meta.map(|m| m.len()).unwrap_or(0));
            if self.seen.lock().unwrap_or_else(|e| e.into_inner()).get(&path) == Some(&stamp) {
                continue;
            }
            let loaded = load_file(&services.config, &slot, &path).await;
            // Remember this version either way: a broken file is reported
            // once, not on every poll.
            self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(path.clone(), stamp);
            let installed = match loaded {
                Ok(p) if p.digest() == self.digest_of(&slot) => continue,
                Ok(p) => self.install(services, slot.clone(), p, Some(&path)).await,
                Err(e) => Err(e),
            };
            match installed {
                Ok(()) => replaced.push(slot),
                Err(e) => errors.push(Error::Config(format!(
                    "{} ({}) was not swapped in, the old policy stays: {e}",
                    path.display(),
                    setting_name(&slot)
                ))),
            }
        }
        (replaced, errors)
    }

    fn digest_of(&self, slot: &Slot) -> crate::content::Digest {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        match slot {
            Slot::Default => current.default.as_ref(),
            Slot::Tenant(org) => current.tenants.get(org),
        }
        .map(|p| p.digest())
        .unwrap_or(crate::content::Digest::of(b""))
    }

    /// Check the configured component files every `every`, swapping in
    /// changed ones; runs until the returned task is aborted.
    pub fn watch(self: &Arc<Self>, services: Arc<HostServices>, every: Duration) -> tokio::task::JoinHandle<()> {
        let set = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let (replaced, errors) = set.reload_changed(&services).await;
                for slot in replaced {
                    tracing::info!(?slot, "swapped in a changed policy component");
                }
                for e in errors {
                    tracing::error!(error = %e, "policy component not swapped in");
                }
            }
        })
    }
}
