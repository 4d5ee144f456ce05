//! Organisation identifiers: what every operation, token and tenant
//! setting names an organisation by. Whether an identifier also makes a
//! valid bucket name is the policy's question, not this one.

use crate::error::{Error, Result};

/// Longest organisation identifier, in bytes.
pub const MAX_ORG_LEN: usize = 128;

/// Check an organisation identifier: 1 to 128 bytes, no `/`, no control
/// characters, no surrounding white space. Whether it also makes a valid
/// bucket name is the policy's question.
pub fn validate_org(org: &str) -> Result<()> {
    let problem = if org.is_empty() {
        Some("is empty")
    } else if org.len() > MAX_ORG_LEN {
        Some("is longer than 128 bytes")
    } else if org.contains('/') {
        Some("contains '/'")
    } else if org.chars().any(char::is_control) {
        Some("contains a control character")
    } else if org.trim() != org {
        Some("starts or ends with white space")
    } else if org == "." || org == ".." {
        Some("is a path component")
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::InvalidName(format!("organisation {org:?} {p}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_identifiers() {
        for ok in ["acme", "My_Org", "ünïcode", "a b"] {
            assert!(validate_org(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "..", " lead", "trail ", "tab\there", &"x".repeat(129)] {
            assert!(matches!(validate_org(bad), Err(Error::InvalidName(_))), "{bad:?}");
        }
    }
}
