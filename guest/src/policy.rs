//! Where objects go and what a tenant may do: bucket mode, key layout,
//! size limits, allowed content types, deletion. Pure functions over a
//! settings lookup, so they unit-test natively.

use crate::naming::{self, NameError};

/// Setting names the host understands (see `wit/storage.wit`).
pub mod keys {
    pub const S3_BUCKET: &str = "s3-bucket";
    pub const BUCKET_PER_ORG: &str = "bucket-per-org";
    pub const S3_BUCKET_PREFIX: &str = "s3-bucket-prefix";
    pub const NAME_MAPPING: &str = "name-mapping";
    pub const MAX_SIZE: &str = "max-size";
    pub const ALLOWED_CONTENT_TYPES: &str = "allowed-content-types";
    pub const ALLOW_DELETE: &str = "allow-delete";
    pub const DEDUP_PROBE_MIN_SIZE: &str = "dedup-probe-min-size";
    pub const STORE_IN: &str = "store-in";
    pub const PARK_WHEN_UNAVAILABLE: &str = "park-when-unavailable";
}

/// Content at least this large is looked for on the backend before it is
/// uploaded (one small request that can save a large upload). Smaller
/// content is sent straight away with a precondition: the backend keeps
/// what it has, and a look first would cost more than it could save.
pub const DEFAULT_DEDUP_PROBE_MIN_SIZE: u64 = 8 << 20;

/// A refusal, before it is turned into the contract's error variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    InvalidName(String),
    InvalidConfig(String),
    Denied(String),
}

/// How S3 buckets are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketMode {
    /// `S3_BUCKET`: one bucket; keys are prefixed by organisation.
    Single(String),
    /// `BUCKET_PER_ORG=true` + `S3_BUCKET_PREFIX`: bucket = prefix + org.
    PerOrg { prefix: String, mapping: bool },
}

/// Settings as the policy reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub bucket_mode: Option<BucketMode>,
    pub max_size: Option<u64>,
    pub allowed_content_types: Vec<String>,
    pub allow_delete: bool,
    pub dedup_probe_min_size: u64,
    /// `store-in = database`: new objects go to the database even with S3
    /// configured (to move objects off S3 with `coffer migrate`, keeping
    /// S3 configured to read them). The default is S3 when it is there.
    pub store_in_database: bool,
    /// When S3 is unavailable for a put, store the object in the database
    /// (parked) instead of failing; `coffer migrate` moves it later.
    pub park_when_unavailable: bool,
}

fn parse_bool(name: &str, value: Option<String>, default: bool) -> Result<bool, Refusal> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(default),
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" || v.eq_ignore_ascii_case("yes") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" || v.eq_ignore_ascii_case("no") => Ok(false),
        Some(v) => Err(Refusal::InvalidConfig(format!("{name} must be true or false, not {v:?}"))),
    }
}

fn parse_bytes(name: &str, value: Option<String>) -> Result<Option<u64>, Refusal> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| Refusal::InvalidConfig(format!("{name} must be a number of bytes, not {v:?}"))),
    }
}

fn bad_name(what: &str, name: &str, e: NameError) -> String {
    format!("{what} {name:?} {e}")
}

impl Rules {
    /// Read and validate every setting. Errors name the setting.
    pub fn load(setting: impl Fn(&str) -> Option<String>) -> Result<Rules, Refusal> {
        let per_org = parse_bool(keys::BUCKET_PER_ORG, setting(keys::BUCKET_PER_ORG), false)?;
        let mapping = parse_bool(keys::NAME_MAPPING, setting(keys::NAME_MAPPING), false)?;
        let bucket = setting(keys::S3_BUCKET).filter(|b| !b.is_empty());
        let prefix = setting(keys::S3_BUCKET_PREFIX);
        let bucket_mode = match (per_org, bucket, prefix) {
            (true, _, Some(prefix)) => {
                naming::validate_prefix(&prefix)
                    .map_err(|e| Refusal::InvalidConfig(bad_name("S3_BUCKET_PREFIX", &prefix, e)))?;
                Some(BucketMode::PerOrg { prefix, mapping })
            }
            (true, _, None) => {
                return Err(Refusal::InvalidConfig(
                    "BUCKET_PER_ORG=true needs S3_BUCKET_PREFIX (the part before each organisation's name)".into(),
                ));
            }
            (false, Some(bucket), _) => {
                naming::validate_bucket(&bucket)
                    .map_err(|e| Refusal::InvalidConfig(bad_name("S3_BUCKET", &bucket, e)))?;
                Some(BucketMode::Single(bucket))
            }
            (false, None, _) => None,
        };
        let max_size = parse_bytes(keys::MAX_SIZE, setting(keys::MAX_SIZE))?;
        let dedup_probe_min_size = parse_bytes(keys::DEDUP_PROBE_MIN_SIZE, setting(keys::DEDUP_PROBE_MIN_SIZE))?
            .unwrap_or(DEFAULT_DEDUP_PROBE_MIN_SIZE);
        let allowed_content_types = setting(keys::ALLOWED_CONTENT_TYPES)
            .unwrap_or_default()
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        let allow_delete = parse_bool(keys::ALLOW_DELETE, setting(keys::ALLOW_DELETE), true)?;
        let store_in_database = match setting(keys::STORE_IN).as_deref().map(str::trim) {
            None | Some("") | Some("s3") => false,
            Some("database") => true,
            Some(other) => {
                return Err(Refusal::InvalidConfig(format!(
                    "{} must be s3 or database, not {other:?}",
                    keys::STORE_IN
                )));
            }
        };
        let park_when_unavailable =
            parse_bool(keys::PARK_WHEN_UNAVAILABLE, setting(keys::PARK_WHEN_UNAVAILABLE), false)?;
        Ok(Rules {
            bucket_mode,
            max_size,
            allowed_content_types,
            allow_delete,
            dedup_probe_min_size,
            store_in_database,
            park_when_unavailable,
        })
    }

    /// The bucket for `org`, or why there is none. `None` without S3.
    pub fn bucket_for(&self, org: &str) -> Result<Option<String>, Refusal> {
        match &self.bucket_mode {
            None => Ok(None),
            Some(BucketMode::Single(b)) => Ok(Some(b.clone())),
            Some(BucketMode::PerOrg { prefix, mapping }) => {
                let named =
                    if *mapping { naming::mapped_bucket_for(prefix, org) } else { naming::bucket_for(prefix, org) };
                named.map(Some).map_err(|e| {
                    let hint = if *mapping { "" } else { " (turn on name-mapping to map such names to valid buckets)" };
                    Refusal::InvalidName(format!(
                        "organisation {org:?} gives bucket {:?}, which {e}{hint}",
                        format!("{prefix}{org}")
                    ))
                })
            }
        }
    }

    /// The object key for content `sha256` of `org` in its bucket: keys are
    /// prefixed by organisation when all organisations share one bucket.
    pub fn key_for(&self, org: &str, sha256: &str) -> String {
        match &self.bucket_mode {
            Some(BucketMode::Single(_)) => format!("{org}/{sha256}"),
            _ => sha256.to_string(),
        }
    }

    /// Refuse content this tenant may not store.
    pub fn check_content(&self, size: u64, content_type: &str) -> Result<(), Refusal> {
        if let Some(max) = self.max_size.filter(|max| size > *max) {
            return Err(Refusal::Denied(format!(
                "the file is {size} bytes; this organisation's limit is {max} bytes ({})",
                keys::MAX_SIZE
            )));
        }
        if !self.allowed_content_types.is_empty() && !self.content_type_allowed(content_type) {
            return Err(Refusal::Denied(format!(
                "content type {content_type:?} is not allowed here; allowed: {}",
                self.allowed_content_types.join(", ")
            )));
        }
        Ok(())
    }

    fn content_type_allowed(&self, content_type: &str) -> bool {
        // Parameters (`; charset=...`) do not change the type.
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let major = essence.split('/').next().unwrap_or("");
        self.allowed_content_types.iter().any(|allowed| {
            allowed == "*" || allowed == "*/*" || *allowed == essence || allowed.strip_suffix("/*") == Some(major)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn rules(pairs: &[(&str, &str)]) -> Result<Rules, Refusal> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Rules::load(|k| map.get(k).cloned())
    }

    #[test]
    fn no_s3_settings_means_no_bucket() {
        let r = rules(&[]).unwrap();
        assert_eq!(r.bucket_for("org"), Ok(None));
        assert_eq!(r.key_for("org", "ab"), "ab");
    }

    #[test]
    fn single_bucket_prefixes_keys_by_org() {
        let r = rules(&[(keys::S3_BUCKET, "files")]).unwrap();
        assert_eq!(r.bucket_for("Org_1"), Ok(Some("files".into())));
        assert_eq!(r.key_for("Org_1", "ab"), "Org_1/ab");
    }

    #[test]
    fn invalid_bucket_or_prefix_is_a_config_error() {
        let e = rules(&[(keys::S3_BUCKET, "My_Bucket")]).unwrap_err();
        assert!(matches!(&e, Refusal::InvalidConfig(m) if m.contains("S3_BUCKET") && m.contains("'M'")), "{e:?}");
        let e = rules(&[(keys::BUCKET_PER_ORG, "true"), (keys::S3_BUCKET_PREFIX, "Cyn_")]).unwrap_err();
        assert!(matches!(&e, Refusal::InvalidConfig(m) if m.contains("S3_BUCKET_PREFIX")), "{e:?}");
        let e = rules(&[(keys::BUCKET_PER_ORG, "true")]).unwrap_err();
        assert!(matches!(&e, Refusal::InvalidConfig(m) if m.contains("needs S3_BUCKET_PREFIX")), "{e:?}");
        let e = rules(&[(keys::BUCKET_PER_ORG, "maybe")]).unwrap_err();
        assert!(matches!(&e, Refusal::InvalidConfig(m) if m.contains("true or false")), "{e:?}");
        let e = rules(&[(keys::MAX_SIZE, "10MB")]).unwrap_err();
        assert!(matches!(&e, Refusal::InvalidConfig(m) if m.contains("max-size")), "{e:?}");
    }

    #[test]
    fn per_org_bucket_is_prefix_plus_org_or_refused_with_the_rule() {
        let r = rules(&[(keys::BUCKET_PER_ORG, "true"), (keys::S3_BUCKET_PREFIX, "cyn-")]).unwrap();
        assert_eq!(r.bucket_for("org"), Ok(Some("cyn-org".into())));
        let e = r.bucket_for("My_Org").unwrap_err();
        assert!(
            matches!(&e, Refusal::InvalidName(m) if m.contains("cyn-My_Org") && m.contains("lowercase") && m.contains("name-mapping")),
            "{e:?}"
        );
    }

    #[test]
    fn per_org_with_mapping_maps_invalid_orgs() {
        let r =
            rules(&[(keys::BUCKET_PER_ORG, "true"), (keys::S3_BUCKET_PREFIX, "cyn-"), (keys::NAME_MAPPING, "true")])
                .unwrap();
        assert_eq!(r.bucket_for("org"), Ok(Some("cyn-org".into())));
        let mapped = r.bucket_for("My_Org").unwrap().unwrap();
        assert!(mapped.starts_with("cyn-my-org-"), "{mapped}");
    }

    #[test]
    fn size_limit_and_content_types() {
        let r = rules(&[(keys::MAX_SIZE, "10"), (keys::ALLOWED_CONTENT_TYPES, "text/*, application/json")]).unwrap();
        assert_eq!(r.check_content(10, "text/plain"), Ok(()));
        assert_eq!(r.check_content(3, "application/json; charset=utf-8"), Ok(()));
        assert_eq!(r.check_content(3, "TEXT/HTML"), Ok(()));
        assert!(matches!(r.check_content(11, "text/plain"), Err(Refusal::Denied(m)) if m.contains("limit is 10")));
        assert!(matches!(r.check_content(1, "image/png"), Err(Refusal::Denied(m)) if m.contains("image/png")));
        let open = rules(&[]).unwrap();
        assert_eq!(open.check_content(u64::MAX, "anything/at-all"), Ok(()));
    }

    #[test]
    fn the_probe_threshold_has_a_default_and_can_be_set() {
        assert_eq!(rules(&[]).unwrap().dedup_probe_min_size, DEFAULT_DEDUP_PROBE_MIN_SIZE);
        assert_eq!(rules(&[(keys::DEDUP_PROBE_MIN_SIZE, "0")]).unwrap().dedup_probe_min_size, 0);
        assert!(rules(&[(keys::DEDUP_PROBE_MIN_SIZE, "big")]).is_err());
    }

    #[test]
    fn placement_and_parking_settings() {
        let r = rules(&[]).unwrap();
        assert!(!r.store_in_database && !r.park_when_unavailable);
        let r = rules(&[(keys::STORE_IN, "database"), (keys::PARK_WHEN_UNAVAILABLE, "true")]).unwrap();
        assert!(r.store_in_database && r.park_when_unavailable);
        assert!(!rules(&[(keys::STORE_IN, "s3")]).unwrap().store_in_database);
        let e = rules(&[(keys::STORE_IN, "tape")]).unwrap_err();
        assert!(matches!(&e, Refusal::InvalidConfig(m) if m.contains("store-in")), "{e:?}");
        assert!(rules(&[(keys::PARK_WHEN_UNAVAILABLE, "sometimes")]).is_err());
    }

    #[test]
    fn delete_is_allowed_unless_switched_off() {
        assert!(rules(&[]).unwrap().allow_delete);
        assert!(!rules(&[(keys::ALLOW_DELETE, "false")]).unwrap().allow_delete);
    }
}
