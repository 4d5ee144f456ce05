//! The SHA-256 [`Digest`] that names content: its key everywhere.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;
pub use sha2::Sha256;

use crate::error::{Error, Result};

/// A SHA-256 digest; shown and parsed as 64 lowercase hex digits, the key
/// of every stored object.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// The digest with these raw 32 bytes.
    pub fn from_raw(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(super) fn from_hasher(h: Sha256) -> Digest {
        Digest(h.finalize().into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = Error;

    /// Only the canonical form: exactly 64 lowercase hex digits. Anything
    /// else (uppercase, short, a path) is refused, so one object never has
    /// two names.
    fn from_str(s: &str) -> Result<Digest> {
        let canonical = s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !canonical {
            return Err(Error::InvalidName(format!("{s:?} is not a SHA-256 digest: expected 64 lowercase hex digits")));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| Error::Internal(format!("hex: {e}")))?;
        Ok(Digest(out))
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_parses_only_canonical_hex() {
        let d = Digest::of(b"abc");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!(d.to_string().to_uppercase().parse::<Digest>().is_err());
        assert!("abc".parse::<Digest>().is_err());
        assert!("../../../../etc/passwd".parse::<Digest>().is_err());
    }
}
