//! The environment: the variables OpenKAT's Bytes uses, and Coffer's own
//! (`COFFER_*`), on top of the file named by `COFFER_CONFIG`.

use std::path::PathBuf;

use super::Config;
use crate::error::{Error, Result};

/// Environment variables that map onto policy settings.
const SETTING_VARS: &[(&str, &str)] = &[
    ("COFFER_NAME_MAPPING", "name-mapping"),
    ("COFFER_MAX_SIZE", "max-size"),
    ("COFFER_ALLOWED_CONTENT_TYPES", "allowed-content-types"),
    ("COFFER_ALLOW_DELETE", "allow-delete"),
    ("COFFER_STORE_IN", "store-in"),
    ("COFFER_PARK_WHEN_UNAVAILABLE", "park-when-unavailable"),
];

fn parse_bool(var: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        other => Err(Error::Config(format!("{var} must be true or false, not {other:?}"))),
    }
}

fn parse_num<T: std::str::FromStr>(var: &str, value: &str) -> Result<T> {
    value.trim().parse().map_err(|_| Error::Config(format!("{var} must be a whole number, not {value:?}")))
}

impl Config {
    /// The configuration from the process environment (and the file named
    /// by `COFFER_CONFIG`, if any).
    pub fn from_env() -> Result<Config> {
        Config::from_vars(|name| std::env::var(name).ok())
    }

    /// The configuration from a variable lookup: the file named by
    /// `COFFER_CONFIG` first, then the variables on top. Empty variables
    /// count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let mut config = match var("COFFER_CONFIG") {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let set = |slot: &mut Option<String>, name: &str| {
            if let Some(v) = var(name) {
                *slot = Some(v);
            }
        };
        set(&mut config.database_url, "COFFER_DATABASE_URL");
        if let Some(p) = var("COFFER_POLICY") {
            config.policy = Some(PathBuf::from(p));
        }
        if let Some(p) = var("COFFER_CACHE_DIR") {
            config.cache_dir = Some(PathBuf::from(p));
        }
        let s3 = &mut config.s3;
        set(&mut s3.access_key_id, "AWS_ACCESS_KEY_ID");
        set(&mut s3.secret_access_key, "AWS_SECRET_ACCESS_KEY");
        set(&mut s3.session_token, "AWS_SESSION_TOKEN");
        set(&mut s3.endpoint_url, "AWS_ENDPOINT_URL");
        set(&mut s3.region, "AWS_REGION");
        set(&mut s3.bucket, "S3_BUCKET");
        set(&mut s3.bucket_prefix, "S3_BUCKET_PREFIX");
        if let Some(v) = var("BUCKET_PER_ORG") {
            s3.bucket_per_org = Some(parse_bool("BUCKET_PER_ORG", &v)?);
        }
        if let Some(v) = var("COFFER_S3_ADDRESSING") {
            s3.virtual_hosted = Some(match v.trim() {
                "path" => false,
                "virtual" => true,
                other => {
                    return Err(Error::Config(format!("COFFER_S3_ADDRESSING must be path or virtual, not {other:?}")));
                }
            });
        }
        if let Some(v) = var("COFFER_CREATE_BUCKETS") {
            s3.create_buckets = Some(parse_bool("COFFER_CREATE_BUCKETS", &v)?);
        }
        if let Some(v) = var("COFFER_MULTIPART_THRESHOLD") {
            s3.multipart_threshold = Some(parse_num("COFFER_MULTIPART_THRESHOLD", &v)?);
        }
        if let Some(v) = var("COFFER_MULTIPART_PART_SIZE") {
            s3.part_size = Some(parse_num("COFFER_MULTIPART_PART_SIZE", &v)?);
        }
        if let Some(v) = var("COFFER_S3_TIMEOUT") {
            s3.timeout = Some(parse_num("COFFER_S3_TIMEOUT", &v)?);
        }
        if let Some(v) = var("COFFER_DELETE_TIMEOUT") {
            config.delete_timeout = Some(parse_num("COFFER_DELETE_TIMEOUT", &v)?);
        }
        let server = &mut config.server;
        set(&mut server.listen, "COFFER_LISTEN");
        set(&mut server.admin_token_sha256, "COFFER_ADMIN_TOKEN_SHA256");
        if let Some(v) = var("COFFER_MAX_BODY") {
            server.max_body = Some(parse_num("COFFER_MAX_BODY", &v)?);
        }
        if let Some(v) = var("COFFER_MAX_IN_FLIGHT") {
            server.max_in_flight = Some(parse_num("COFFER_MAX_IN_FLIGHT", &v)?);
        }
        if let Some(v) = var("COFFER_MAX_CONNECTIONS") {
            server.max_connections = Some(parse_num("COFFER_MAX_CONNECTIONS", &v)?);
        }
        if let Some(v) = var("COFFER_REQUEST_TIMEOUT") {
            server.request_timeout = Some(parse_num("COFFER_REQUEST_TIMEOUT", &v)?);
        }
        if let Some(v) = var("COFFER_MAX_IN_FLIGHT_PER_ORG") {
            server.max_in_flight_per_org = Some(parse_num("COFFER_MAX_IN_FLIGHT_PER_ORG", &v)?);
        }
        if let Some(v) = var("COFFER_MIN_RATE") {
            server.min_rate = Some(parse_num("COFFER_MIN_RATE", &v)?);
        }
        if let Some(v) = var("COFFER_SHUTDOWN_GRACE") {
            server.shutdown_grace = Some(parse_num("COFFER_SHUTDOWN_GRACE", &v)?);
        }
        if let Some(v) = var("COFFER_SPOOL_DIR") {
            server.spool_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = var("COFFER_SPOOL_LIMIT") {
            server.spool_limit = Some(parse_num("COFFER_SPOOL_LIMIT", &v)?);
        }
        if let Some(v) = var("COFFER_IDLE_TIMEOUT") {
            server.idle_timeout = Some(parse_num("COFFER_IDLE_TIMEOUT", &v)?);
        }
        for (name, key) in SETTING_VARS {
            if let Some(v) = var(name) {
                config.settings.insert(key.to_string(), v);
            }
        }
        if let Some(v) = var("COFFER_POLICY_FUEL") {
            config.limits.fuel = parse_num("COFFER_POLICY_FUEL", &v)?;
        }
        if let Some(v) = var("COFFER_POLICY_MEMORY") {
            config.limits.memory = parse_num("COFFER_POLICY_MEMORY", &v)?;
        }
        if let Some(v) = var("COFFER_POLICY_TIMEOUT") {
            config.limits.timeout_ms = parse_num("COFFER_POLICY_TIMEOUT", &v)?;
        }
        if let Some(v) = var("COFFER_POLICY_INSTANCES") {
            config.limits.instances = parse_num("COFFER_POLICY_INSTANCES", &v)?;
        }
        if let Some(v) = var("COFFER_POLICY_QUEUE") {
            config.limits.queue = parse_num("COFFER_POLICY_QUEUE", &v)?;
        }
        if let Some(v) = var("COFFER_POLICY_INSTANCES_PER_ORG") {
            config.limits.instances_per_org = parse_num("COFFER_POLICY_INSTANCES_PER_ORG", &v)?;
        }
        if let Some(v) = var("COFFER_POLICY_CPU_SHARE") {
            config.limits.cpu_share_percent = parse_num("COFFER_POLICY_CPU_SHARE", &v)?;
        }
        if let Some(v) = var("COFFER_POLICY_HOST_IO") {
            config.limits.host_io_ms = parse_num("COFFER_POLICY_HOST_IO", &v)?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;
    use crate::config::DatabaseUrl;

    fn from(pairs: &[(&str, &str)]) -> Result<Config> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn nothing_set_means_sqlite_in_the_current_directory() {
        let c = from(&[]).unwrap();
        c.validate().unwrap();
        assert_eq!(c.database().unwrap(), DatabaseUrl::Sqlite(PathBuf::from("coffer.db")));
        assert!(!c.s3.any());
    }

    #[test]
    fn server_settings_come_from_the_environment_and_are_checked() {
        let c = from(&[
            ("COFFER_LISTEN", "0.0.0.0:9000"),
            ("COFFER_MAX_BODY", "1000"),
            ("COFFER_MAX_IN_FLIGHT", "8"),
            ("COFFER_MAX_IN_FLIGHT_PER_ORG", "2"),
            ("COFFER_MIN_RATE", "0"),
            ("COFFER_REQUEST_TIMEOUT", "5"),
            ("COFFER_IDLE_TIMEOUT", "3"),
            ("COFFER_SHUTDOWN_GRACE", "7"),
            ("COFFER_SPOOL_DIR", "/spool"),
            ("COFFER_ADMIN_TOKEN_SHA256", &"a".repeat(64)),
        ])
        .unwrap();
        c.validate().unwrap();
        let s = &c.server;
        assert_eq!(s.listen.as_deref(), Some("0.0.0.0:9000"));
        assert_eq!((s.max_body, s.max_in_flight, s.max_in_flight_per_org), (Some(1000), Some(8), Some(2)));
        assert_eq!(
            (s.min_rate, s.request_timeout, s.idle_timeout, s.shutdown_grace),
            (Some(0), Some(5), Some(3), Some(7))
        );
        assert_eq!(s.spool_dir.as_deref(), Some(Path::new("/spool")));
        assert!(!format!("{c:?}").contains(&"a".repeat(64)), "the admin hash stays out of Debug");
        for (var, value) in
            [("COFFER_MAX_IN_FLIGHT", "0"), ("COFFER_IDLE_TIMEOUT", "0"), ("COFFER_ADMIN_TOKEN_SHA256", "secret")]
        {
            let err = from(&[(var, value)]).and_then(|c| c.validate()).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{var}={value}: {err}");
        }
        assert!(from(&[("COFFER_MAX_BODY", "lots")]).is_err());
    }

    #[test]
    fn environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("coffer.toml");
        std::fs::write(
            &file,
            "database_url = \"sqlite:file.db\"\n[settings]\nmax-size = \"10\"\n[tenants.acme]\nmax-size = \"5\"\n",
        )
        .unwrap();
        let c = from(&[("COFFER_CONFIG", file.to_str().unwrap()), ("COFFER_DATABASE_URL", "sqlite:env.db")]).unwrap();
        assert_eq!(c.database_url.as_deref(), Some("sqlite:env.db"));
        assert_eq!(c.setting(None, "max-size").as_deref(), Some("10"));
        assert_eq!(c.setting(Some("acme"), "max-size").as_deref(), Some("5"));
        assert_eq!(c.setting(Some("other"), "max-size").as_deref(), Some("10"));
        let c = from(&[("COFFER_CONFIG", file.to_str().unwrap()), ("COFFER_MAX_SIZE", "99")]).unwrap();
        assert_eq!(c.setting(None, "max-size").as_deref(), Some("99"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        assert!(matches!(from(&[("BUCKET_PER_ORG", "maybe")]), Err(Error::Config(m)) if m.contains("BUCKET_PER_ORG")));
        assert!(
            matches!(from(&[("COFFER_POLICY_FUEL", "lots")]), Err(Error::Config(m)) if m.contains("COFFER_POLICY_FUEL"))
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "no_such_key = 1\n").unwrap();
        assert!(
            matches!(from(&[("COFFER_CONFIG", file.to_str().unwrap())]), Err(Error::Config(m)) if m.contains("no_such_key"))
        );
    }

    #[test]
    fn half_an_s3_configuration_names_what_is_missing() {
        let c = from(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")]).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("AWS_ACCESS_KEY_ID") && e.contains("AWS_SECRET_ACCESS_KEY") && e.contains("S3_BUCKET"),
            "{e}"
        );
        let c = from(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")]).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("S3_BUCKET"));
        let c =
            from(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b"), ("BUCKET_PER_ORG", "true")]).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("S3_BUCKET_PREFIX"));
        let c =
            from(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b"), ("S3_BUCKET_PREFIX", "cyn-")]).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("BUCKET_PER_ORG=true"));
        let ok = from(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b"), ("S3_BUCKET", "files")]).unwrap();
        ok.validate().unwrap();
        let small_parts = from(&[
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "b"),
            ("S3_BUCKET", "files"),
            ("COFFER_MULTIPART_PART_SIZE", "1000"),
        ])
        .unwrap();
        assert!(small_parts.validate().unwrap_err().to_string().contains("COFFER_MULTIPART_PART_SIZE"));
        assert!(from(&[("COFFER_S3_ADDRESSING", "sideways")]).is_err());
    }

    #[test]
    fn no_setting_name_reaches_the_credentials() {
        let c =
            from(&[("AWS_ACCESS_KEY_ID", "AKID"), ("AWS_SECRET_ACCESS_KEY", "hunter2"), ("S3_BUCKET", "b")]).unwrap();
        for name in ["AWS_SECRET_ACCESS_KEY", "aws-secret-access-key", "secret_access_key", "s3", "access_key_id"] {
            assert_eq!(c.setting(Some("acme"), name), None, "{name}");
        }
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = from(&[("AWS_SECRET_ACCESS_KEY", "hunter2")]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
