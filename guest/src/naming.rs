//! AWS naming rules for general-purpose buckets, and the deterministic
//! mapping of organisation names that do not make a valid bucket name.
//!
//! Rules: <https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html>
//! (general purpose buckets). Every check is a pure function so the full
//! table of rules is unit-tested natively.

/// Prefixes AWS reserves; a bucket name may not start with them.
pub const RESERVED_PREFIXES: &[&str] = &["xn--", "sthree-", "amzn-s3-demo-"];
/// Suffixes AWS reserves; a bucket name may not end with them.
pub const RESERVED_SUFFIXES: &[&str] = &["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];

/// Shortest and longest bucket names AWS accepts.
pub const MIN_LEN: usize = 3;
pub const MAX_LEN: usize = 63;

/// Hex digits of the SHA-256 of the organisation name appended to a mapped
/// name: 64 bits, so two organisations collide only on a 64-bit SHA-256
/// prefix collision.
pub const MAPPED_HASH_HEX: usize = 16;

/// Why a name is not a valid bucket name: one case per AWS rule, so the
/// message can name the rule that was broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    TooShort(usize),
    TooLong(usize),
    InvalidChar(char),
    BadFirstOrLast,
    AdjacentPeriods,
    IpAddress,
    ReservedPrefix(&'static str),
    ReservedSuffix(&'static str),
}

impl core::fmt::Display for NameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NameError::TooShort(n) => write!(f, "is {n} characters long; bucket names need at least {MIN_LEN}"),
            NameError::TooLong(n) => write!(f, "is {n} characters long; bucket names may have at most {MAX_LEN}"),
            NameError::InvalidChar(c) => {
                write!(f, "contains {c:?}; bucket names may contain only lowercase letters, digits, '.' and '-'")
            }
            NameError::BadFirstOrLast => {
                write!(f, "must begin and end with a lowercase letter or digit")
            }
            NameError::AdjacentPeriods => write!(f, "must not contain two adjacent periods"),
            NameError::IpAddress => write!(f, "must not be formatted as an IP address"),
            NameError::ReservedPrefix(p) => {
                write!(f, "must not start with the reserved prefix {p:?}")
            }
            NameError::ReservedSuffix(s) => {
                write!(f, "must not end with the reserved suffix {s:?}")
            }
        }
    }
}

fn allowed_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'
}

fn alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Four dot-separated decimal numbers, as AWS forbids ("192.168.5.4").
fn looks_like_ip(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() == 4 && parts.iter().all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Check a complete bucket name against every AWS rule for general-purpose
/// buckets. The first broken rule is reported.
pub fn validate_bucket(name: &str) -> Result<(), NameError> {
    if let Some(c) = name.chars().find(|&c| !allowed_char(c)) {
        return Err(NameError::InvalidChar(c));
    }
    // All characters are ASCII from here on, so bytes == chars.
    let len = name.len();
    if len < MIN_LEN {
        return Err(NameError::TooShort(len));
    }
    if len > MAX_LEN {
        return Err(NameError::TooLong(len));
    }
    let (first, last) = (name.chars().next(), name.chars().last());
    if !first.is_some_and(alnum) || !last.is_some_and(alnum) {
        return Err(NameError::BadFirstOrLast);
    }
    if name.contains("..") {
        return Err(NameError::AdjacentPeriods);
    }
    if looks_like_ip(name) {
        return Err(NameError::IpAddress);
    }
    if let Some(p) = RESERVED_PREFIXES.iter().find(|p| name.starts_with(**p)) {
        return Err(NameError::ReservedPrefix(p));
    }
    if let Some(s) = RESERVED_SUFFIXES.iter().find(|s| name.ends_with(**s)) {
        return Err(NameError::ReservedSuffix(s));
    }
    Ok(())
}

/// Check a bucket prefix (`S3_BUCKET_PREFIX`): it must be able to start a
/// valid bucket name. Rules that depend on the whole name (length of at
/// least 3, last character, suffixes, IP form) are checked on the full name.
pub fn validate_prefix(prefix: &str) -> Result<(), NameError> {
    if let Some(c) = prefix.chars().find(|&c| !allowed_char(c)) {
        return Err(NameError::InvalidChar(c));
    }
    if prefix.len() >= MAX_LEN {
        return Err(NameError::TooLong(prefix.len() + 1));
    }
    if prefix.chars().next().is_some_and(|c| !alnum(c)) {
        return Err(NameError::BadFirstOrLast);
    }
    if prefix.contains("..") {
        return Err(NameError::AdjacentPeriods);
    }
    if let Some(p) = RESERVED_PREFIXES.iter().find(|p| prefix.starts_with(**p)) {
        return Err(NameError::ReservedPrefix(p));
    }
    Ok(())
}

/// True when `name` ends like a mapped name (`-` and [`MAPPED_HASH_HEX`]
/// lowercase hex digits). Such names are always mapped, even when valid as
/// they stand, so a name used as it stands can never equal another
/// organisation's mapped name.
fn has_mapped_shape(name: &str) -> bool {
    let n = name.len();
    n > MAPPED_HASH_HEX
        && name.as_bytes()[n - MAPPED_HASH_HEX - 1] == b'-'
        && name[n - MAPPED_HASH_HEX..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The bucket for `org` under `prefix`, as the organisation name stands.
pub fn bucket_for(prefix: &str, org: &str) -> Result<String, NameError> {
    let name = format!("{prefix}{org}");
    validate_bucket(&name)?;
    Ok(name)
}

/// The bucket for `org` under `prefix`, mapping organisation names that do
/// not make a valid bucket name as they stand.
///
/// A valid name is kept (`cyn-` + `org` → `cyn-org`), unless it has the
/// shape of a mapped name. Any other name becomes `prefix` + a readable
/// part (lowercased, every other character run turned into one `-`,
/// shortened to fit) + `-` + the first 16 hex digits of SHA-256(org).
/// When nothing readable is left (`___`), the hash is joined so that the
/// name still ends in `-` + hash: `cyn-` → `cyn-{hash}`, `cyn` →
/// `cyn-{hash}`, `cyn.` or no prefix → `cyn.x-{hash}` / `x-{hash}`.
///
/// Why it is collision-free for every prefix: every mapped name ends in
/// `-` + the hash of its organisation (the shape [`has_mapped_shape`]
/// detects), and no kept name has that shape. So a kept name never equals
/// a mapped one, two kept names differ because their organisations do, and
/// two mapped names are equal only if their SHA-256 digests share 64
/// leading bits. (A bare hash, as `cyn` + hash once was, would have been
/// the bucket of the organisation named by that hash.)
///
/// Fails with the broken rule when the prefix leaves no valid mapped name,
/// e.g. `sthree` + `-{hash}` starts with the reserved `sthree-`.
pub fn mapped_bucket_for(prefix: &str, org: &str) -> Result<String, NameError> {
    let as_is = format!("{prefix}{org}");
    if validate_bucket(&as_is).is_ok() && !has_mapped_shape(&as_is) {
        return Ok(as_is);
    }
    let digest = crate::dedup::sha256_hex(org.as_bytes());
    let hash = &digest[..MAPPED_HASH_HEX];
    let mut readable = String::new();
    for c in org.chars().flat_map(char::to_lowercase) {
        if alnum(c) {
            readable.push(c);
        } else if !readable.is_empty() && !readable.ends_with('-') {
            readable.push('-');
        }
    }
    let room = MAX_LEN.saturating_sub(prefix.len() + 1 + MAPPED_HASH_HEX);
    readable.truncate(room);
    while readable.ends_with('-') {
        readable.pop();
    }
    let name = if !readable.is_empty() {
        format!("{prefix}{readable}-{hash}")
    } else if prefix.ends_with('-') {
        // Kept byte for byte: existing deployments' buckets have these names.
        format!("{prefix}{hash}")
    } else if prefix.ends_with(alnum) {
        format!("{prefix}-{hash}")
    } else {
        // No prefix, or one ending in '.': "-{hash}" would start the name,
        // or a DNS label, with '-'.
        format!("{prefix}x-{hash}")
    };
    validate_bucket(&name)?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};

    #[test]
    fn valid_names_pass() {
        for name in [
            "abc",
            "cyn-org",
            "my.bucket.name",
            "a1-b2.c3",
            "123",
            "1.2.3",
            "1.2.3.4.5",
            "xn-abc",
            "s3alias-x",
            &"a".repeat(63),
        ] {
            assert_eq!(validate_bucket(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn every_rule_refuses_what_it_names() {
        let cases: &[(&str, NameError)] = &[
            ("ab", NameError::TooShort(2)),
            ("", NameError::TooShort(0)),
            (&"a".repeat(64), NameError::TooLong(64)),
            ("Upper", NameError::InvalidChar('U')),
            ("under_score", NameError::InvalidChar('_')),
            ("space d", NameError::InvalidChar(' ')),
            ("ünïcode", NameError::InvalidChar('ü')),
            ("slash/x", NameError::InvalidChar('/')),
            ("-start", NameError::BadFirstOrLast),
            ("end-", NameError::BadFirstOrLast),
            (".start", NameError::BadFirstOrLast),
            ("end.", NameError::BadFirstOrLast),
            ("two..dots", NameError::AdjacentPeriods),
            ("192.168.5.4", NameError::IpAddress),
            ("10.0.0.1", NameError::IpAddress),
            ("xn--abc", NameError::ReservedPrefix("xn--")),
            ("sthree-abc", NameError::ReservedPrefix("sthree-")),
            ("sthree-configurator", NameError::ReservedPrefix("sthree-")),
            ("amzn-s3-demo-abc", NameError::ReservedPrefix("amzn-s3-demo-")),
            ("abc-s3alias", NameError::ReservedSuffix("-s3alias")),
            ("abc--ol-s3", NameError::ReservedSuffix("--ol-s3")),
            ("abc.mrap", NameError::ReservedSuffix(".mrap")),
            ("abc--x-s3", NameError::ReservedSuffix("--x-s3")),
            ("abc--table-s3", NameError::ReservedSuffix("--table-s3")),
        ];
        for (name, want) in cases {
            assert_eq!(validate_bucket(name).as_ref(), Err(want), "{name}");
            // The message names the rule in words.
            assert!(!want.to_string().is_empty());
        }
    }

    #[test]
    fn prefix_rules() {
        assert_eq!(validate_prefix("cyn-"), Ok(()));
        assert_eq!(validate_prefix(""), Ok(()));
        assert_eq!(validate_prefix("Cyn-"), Err(NameError::InvalidChar('C')));
        assert_eq!(validate_prefix("cyn_"), Err(NameError::InvalidChar('_')));
        assert_eq!(validate_prefix("-cyn"), Err(NameError::BadFirstOrLast));
        assert_eq!(validate_prefix("a..b"), Err(NameError::AdjacentPeriods));
        assert_eq!(validate_prefix("xn--"), Err(NameError::ReservedPrefix("xn--")));
        assert_eq!(validate_prefix(&"a".repeat(63)), Err(NameError::TooLong(64)));
    }

    #[test]
    fn openkat_prefix_plus_org() {
        assert_eq!(bucket_for("cyn-", "org").as_deref(), Ok("cyn-org"));
        assert_eq!(bucket_for("cyn-", "org2").as_deref(), Ok("cyn-org2"));
        assert_eq!(bucket_for("cyn-", "Org"), Err(NameError::InvalidChar('O')));
        assert_eq!(bucket_for("cyn-", "my_org"), Err(NameError::InvalidChar('_')));
        assert_eq!(bucket_for("cyn-", &"o".repeat(60)), Err(NameError::TooLong(64)));
    }

    #[test]
    fn mapping_keeps_valid_names_and_maps_the_rest() {
        assert_eq!(mapped_bucket_for("cyn-", "org").as_deref(), Ok("cyn-org"));
        let upper = mapped_bucket_for("cyn-", "My_Org").unwrap();
        assert!(upper.starts_with("cyn-my-org-"), "{upper}");
        assert_eq!(upper.len(), "cyn-my-org-".len() + MAPPED_HASH_HEX);
        let long = mapped_bucket_for("cyn-", &"o".repeat(200)).unwrap();
        assert_eq!(long.len(), MAX_LEN);
        let unicode = mapped_bucket_for("", "ßüñ").unwrap();
        assert_eq!(validate_bucket(&unicode), Ok(()));
        let symbols = mapped_bucket_for("", "___").unwrap();
        assert_eq!(symbols.len(), "x-".len() + MAPPED_HASH_HEX);
    }

    #[test]
    fn an_org_with_nothing_readable_does_not_take_the_bucket_of_the_org_named_by_its_hash() {
        // SHA-256("___") starts with bda251550bf0478f, and "bda251550bf0478f"
        // is a valid organisation name as it stands. Under "cyn" the mapping
        // once gave both "cynbda251550bf0478f".
        let hash = "bda251550bf0478f";
        for (prefix, want) in [
            // Unchanged: buckets of existing deployments have this name.
            ("cyn-", "cyn-bda251550bf0478f"),
            ("cyn", "cyn-bda251550bf0478f"),
            ("", "x-bda251550bf0478f"),
            ("cyn.", "cyn.x-bda251550bf0478f"),
        ] {
            let mapped = mapped_bucket_for(prefix, "___").unwrap();
            assert_eq!(mapped, want, "prefix {prefix:?}");
            for impostor in [hash.to_string(), format!("-{hash}"), mapped[prefix.len()..].to_string()] {
                let theirs = mapped_bucket_for(prefix, &impostor).unwrap();
                assert_ne!(theirs, mapped, "prefix {prefix:?}, org {impostor:?}");
                assert_eq!(validate_bucket(&theirs), Ok(()));
            }
        }
    }

    #[test]
    fn a_prefix_that_leaves_no_valid_mapped_name_is_an_error() {
        // "sthree" + "-" + hash starts with the reserved "sthree-".
        assert_eq!(mapped_bucket_for("sthree", "___"), Err(NameError::ReservedPrefix("sthree-")));
        // A readable part avoids it.
        assert!(mapped_bucket_for("sthree", "My_Org").is_ok_and(|n| validate_bucket(&n).is_ok()));
    }

    #[test]
    fn names_shaped_like_mapped_names_are_mapped_too() {
        // Otherwise org "my-org-<hash of My_Org>" would take My_Org's bucket.
        let mapped = mapped_bucket_for("", "My_Org").unwrap();
        let impostor = mapped_bucket_for("", &mapped).unwrap();
        assert_ne!(mapped, impostor);
    }

    #[test]
    fn mapping_fails_cleanly_when_the_prefix_makes_it_impossible() {
        // "xn-" + "-a..." would start with the reserved "xn--".
        assert!(mapped_bucket_for("xn-", "-A").is_ok_and(|n| validate_bucket(&n).is_ok()));
        assert_eq!(mapped_bucket_for("a..", "b"), Err(NameError::AdjacentPeriods));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Deterministic, always valid, and no two distinct organisations
        /// share a bucket, over batches of arbitrary (unicode, long, mixed
        /// case) names.
        #[test]
        fn mapping_is_deterministic_valid_and_collision_free(
            orgs in proptest::collection::hash_set("\\PC{1,80}|[A-Za-z0-9_.-]{1,70}", 1..200),
            prefix in "|[a-z0-9]{1,8}-",
        ) {
            let mut seen: HashMap<String, String> = HashMap::new();
            for org in orgs {
                let name = mapped_bucket_for(&prefix, &org).unwrap();
                prop_assert_eq!(validate_bucket(&name), Ok(()));
                prop_assert_eq!(&mapped_bucket_for(&prefix, &org).unwrap(), &name);
                if let Some(other) = seen.insert(name.clone(), org.clone()) {
                    prop_assert!(false, "{:?} and {:?} both map to {:?}", other, org, name);
                }
            }
        }

        /// The same over any prefix `validate_prefix` accepts (empty, ending
        /// in a letter, digit, '.' or '-'), with adversarial organisations:
        /// next to each generated one, the names that could collide with its
        /// mapped name (its bare hash, the hash behind '-', '.' or "x-", and
        /// its mapped name minus the prefix).
        #[test]
        fn mapping_is_collision_free_for_any_valid_prefix(
            generated in proptest::collection::hash_set("\\PC{1,40}|[A-Za-z0-9_.-]{1,40}|[_ .-]{1,4}|[0-9a-f]{16}", 1..60),
            prefix in "[a-z0-9.-]{0,12}".prop_filter("valid prefix", |p| validate_prefix(p).is_ok()),
        ) {
            let mut orgs: BTreeSet<String> = BTreeSet::new();
            for org in generated {
                let hash = crate::dedup::sha256_hex(org.as_bytes())[..MAPPED_HASH_HEX].to_string();
                orgs.extend([format!("-{hash}"), format!(".{hash}"), format!("x-{hash}"), hash]);
                if let Ok(name) = mapped_bucket_for(&prefix, &org) {
                    orgs.insert(name[prefix.len()..].to_string());
                }
                orgs.insert(org);
            }
            let mut seen: HashMap<String, String> = HashMap::new();
            for org in orgs {
                let name = match mapped_bucket_for(&prefix, &org) {
                    Ok(name) => name,
                    // Only a prefix that runs into a reserved one may fail.
                    Err(e) => {
                        prop_assert!(matches!(e, NameError::ReservedPrefix(_)), "{:?} + {:?}: {:?}", prefix, org, e);
                        continue;
                    }
                };
                prop_assert_eq!(validate_bucket(&name), Ok(()));
                prop_assert_eq!(&mapped_bucket_for(&prefix, &org).unwrap(), &name);
                if name != format!("{prefix}{org}") {
                    let hash = &crate::dedup::sha256_hex(org.as_bytes())[..MAPPED_HASH_HEX];
                    prop_assert!(has_mapped_shape(&name) && name.ends_with(hash), "{:?} -> {:?}", org, name);
                }
                if let Some(other) = seen.insert(name.clone(), org.clone()) {
                    prop_assert!(false, "{:?} and {:?} both map to {:?} under {:?}", other, org, name, prefix);
                }
            }
        }
    }
}
