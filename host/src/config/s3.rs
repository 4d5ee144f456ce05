//! S3 settings (`AWS_*`, `S3_BUCKET`, `BUCKET_PER_ORG` + `S3_BUCKET_PREFIX`,
//! `COFFER_MULTIPART_*`, `COFFER_S3_*`), and the limits of S3 itself that
//! they are checked against.

use std::fmt;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Smallest part S3 accepts in a multipart upload (all but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Largest object S3 accepts in one PUT.
pub const MAX_SINGLE_PUT: u64 = 5 << 30;

/// S3 settings. Credentials stay in the host; they never reach a guest.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub bucket_per_org: Option<bool>,
    pub bucket_prefix: Option<String>,
    /// Virtual-hosted-style URLs (`bucket.endpoint`) instead of path style.
    pub virtual_hosted: Option<bool>,
    /// Whether Coffer may create missing buckets (default true).
    pub create_buckets: Option<bool>,
    /// Objects larger than this go up in parts (default 64 MiB).
    pub multipart_threshold: Option<u64>,
    /// Size of each part (default 8 MiB, at least 5 MiB; grown so that no
    /// object needs more than 10,000 parts).
    pub part_size: Option<u64>,
    /// Seconds an S3 request may stay silent (no bytes arriving) before it
    /// fails and is retried (default 60).
    pub timeout: Option<u64>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Settings")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("bucket_per_org", &self.bucket_per_org)
            .field("bucket_prefix", &self.bucket_prefix)
            .field("virtual_hosted", &self.virtual_hosted)
            .field("create_buckets", &self.create_buckets)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl S3Settings {
    /// Whether any S3 setting is present (the operator meant to use S3).
    pub fn any(&self) -> bool {
        self.access_key_id.is_some()
            || self.secret_access_key.is_some()
            || self.endpoint_url.is_some()
            || self.bucket.is_some()
            || self.bucket_per_org == Some(true)
            || self.bucket_prefix.is_some()
    }

    /// S3 is meant: every part of its configuration must be there. Bucket
    /// and prefix *names* are checked by the policy's `check-config`.
    pub(crate) fn validate(&self) -> Result<()> {
        let mut missing = Vec::new();
        if self.access_key_id.is_none() {
            missing.push("AWS_ACCESS_KEY_ID");
        }
        if self.secret_access_key.is_none() {
            missing.push("AWS_SECRET_ACCESS_KEY");
        }
        let per_org = self.bucket_per_org == Some(true);
        if !per_org && self.bucket.is_none() {
            missing.push(if self.bucket_prefix.is_some() {
                "BUCKET_PER_ORG=true (S3_BUCKET_PREFIX is set, but only applies with BUCKET_PER_ORG=true)"
            } else {
                "S3_BUCKET (or BUCKET_PER_ORG=true with S3_BUCKET_PREFIX)"
            });
        }
        if per_org && self.bucket_prefix.is_none() {
            missing.push("S3_BUCKET_PREFIX (BUCKET_PER_ORG=true names buckets prefix + organisation)");
        }
        if !missing.is_empty() {
            return Err(Error::Config(format!(
                "S3 is half configured; missing: {}. Set them, or unset every S3 variable to use the database",
                missing.join(", ")
            )));
        }
        if self
            .region
            .as_deref()
            .is_some_and(|r| r.is_empty() || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err(Error::Config(format!("AWS_REGION {:?} is not a region name like eu-west-1", self.region)));
        }
        if let Some(part) = self.part_size
            && part < MIN_PART_SIZE
        {
            return Err(Error::Config(format!(
                "COFFER_MULTIPART_PART_SIZE is {part}; S3 needs parts of at least {} bytes",
                MIN_PART_SIZE
            )));
        }
        if self.timeout == Some(0) {
            return Err(Error::Config("COFFER_S3_TIMEOUT must be at least 1 second".into()));
        }
        if let Some(t) = self.multipart_threshold
            && t > MAX_SINGLE_PUT
        {
            return Err(Error::Config(format!(
                "COFFER_MULTIPART_THRESHOLD is {t}; S3 refuses single uploads over {} bytes",
                MAX_SINGLE_PUT
            )));
        }
        Ok(())
    }
}
