//! Content addressing: an object's identity is the lowercase hex SHA-256
//! of its bytes (as Request Tracker's external storage does), so the same
//! file stored twice is stored once.

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex_lower(&Sha256::digest(bytes))
}

fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

/// True for exactly 64 lowercase hex digits: the only form of key this
/// policy writes, so nothing else can be mistaken for content.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What a put should do, given what is already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Nothing at the location: upload.
    Absent,
    /// The same content is there already: upload nothing.
    Same,
    /// Something of another size sits under this content's name. Stored
    /// objects are never modified, so this is refused, not overwritten.
    Different { stored_size: u64 },
}

/// Compare what `head` found at the content's location with the content.
/// The host answers a put's `head` with a size only after confirming the
/// object's SHA-256 is the content's (and with a `conflict` error for
/// anything else), so a matching size here means the same content; a
/// different size is kept as a refusal for hosts that answer otherwise.
pub fn existing(head_size: Option<u64>, size: u64) -> Existing {
    match head_size {
        None => Existing::Absent,
        Some(s) if s == size => Existing::Same,
        Some(stored_size) => Existing::Different { stored_size },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_lowercase_hex_sha256() {
        // NIST test vector for "abc".
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn only_lowercase_64_hex_is_a_digest() {
        assert!(is_sha256_hex(&sha256_hex(b"x")));
        assert!(!is_sha256_hex(&sha256_hex(b"x").to_uppercase()));
        assert!(!is_sha256_hex(&"a".repeat(63)));
        assert!(!is_sha256_hex(&"g".repeat(64)));
        assert!(!is_sha256_hex("../../etc/passwd"));
    }

    #[test]
    fn same_size_is_a_duplicate_other_size_is_refused() {
        assert_eq!(existing(None, 5), Existing::Absent);
        assert_eq!(existing(Some(5), 5), Existing::Same);
        assert_eq!(existing(Some(4), 5), Existing::Different { stored_size: 4 });
    }
}
