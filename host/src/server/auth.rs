//! Bearer tokens: each configured as the SHA-256 of the token (never the
//! token), for one organisation with scopes, plus one admin token for
//! policy swaps. A presented token is hashed and compared with every
//! configured hash in constant time.
//!
//! The answers are chosen so a caller learns nothing it may not know:
//! no or an unknown token is 401; a token for another organisation gets
//! 404, as for an object that does not exist; a token lacking the scope
//! for what it asks is 403.

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::Digest;
use crate::config::{Scope, ServerSettings};

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No tokens are configured (loopback only): every organisation.
    Open,
    /// An organisation's token.
    Org { name: String, org: String, scopes: Vec<Scope> },
    /// The admin token.
    Admin,
}

impl Caller {
    /// The token's name for logs (never the token).
    pub fn name(&self) -> &str {
        match self {
            Caller::Open => "-",
            Caller::Org { name, .. } => name,
            Caller::Admin => "admin",
        }
    }

    /// May act on `org` with `scope`: 404 for another organisation (its
    /// objects are not this caller's to know of), 403 for a missing scope.
    pub fn allow(&self, org: &str, scope: Scope) -> Result<(), ApiError> {
        match self {
            Caller::Open => Ok(()),
            Caller::Org { org: own, scopes, name } if own == org => {
                if scopes.contains(&scope) {
                    Ok(())
                } else {
                    Err(ApiError::forbidden(format!(
                        "token {name:?} may not {} (its scopes: {})",
                        scope.as_str(),
                        scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    )))
                }
            }
            Caller::Org { .. } => Err(ApiError::not_found(format!("organisation {org:?} has nothing for this token"))),
            Caller::Admin => Err(ApiError::forbidden("the admin token swaps policies; use an organisation's token")),
        }
    }

    /// May swap policies.
    pub fn allow_admin(&self, configured: bool) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            _ if !configured => Err(ApiError::forbidden(
                "no admin token is configured (server.admin_token_sha256 or COFFER_ADMIN_TOKEN_SHA256)",
            )),
            _ => Err(ApiError::forbidden("only the admin token may swap policies")),
        }
    }
}

#[derive(Debug)]
struct Entry {
    hash: [u8; 32],
    caller: Caller,
}

/// The configured tokens.
#[derive(Debug)]
pub struct Tokens {
    entries: Vec<Entry>,
    admin: bool,
}

/// The SHA-256 (hex) configured for `token`.
pub fn token_hash(token: &str) -> String {
    Digest::of(token.as_bytes()).to_string()
}

/// A new random token (256 bits from the OS, URL-safe).
pub fn new_token() -> crate::Result<String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| crate::Error::Internal(format!("the OS's random source: {e}")))?;
    Ok(format!("coffer_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

impl Tokens {
    /// From checked settings ([`ServerSettings::validate`]).
    pub fn new(settings: &ServerSettings) -> Tokens {
        // Checked by `validate`: digests all.
        let decode = |h: &str| h.parse::<Digest>().map(|d| *d.as_bytes()).unwrap_or_default();
        let mut entries: Vec<Entry> = settings
            .tokens
            .iter()
            .map(|t| Entry {
                hash: decode(&t.sha256),
                caller: Caller::Org { name: t.name.clone(), org: t.org.clone(), scopes: t.scopes.clone() },
            })
            .collect();
        if let Some(admin) = &settings.admin_token_sha256 {
            entries.push(Entry { hash: decode(admin), caller: Caller::Admin });
        }
        Tokens { admin: settings.admin_token_sha256.is_some(), entries }
    }

    /// Whether any token is configured (if not, everything is open).
    pub fn any(&self) -> bool {
        !self.entries.is_empty()
    }

    pub fn admin_configured(&self) -> bool {
        self.admin
    }

    /// The caller a request's `Authorization` header names.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let header = headers.get(axum::http::header::AUTHORIZATION);
        if !self.any() {
            return Ok(Caller::Open);
        }
        let Some(header) = header else {
            return Err(ApiError::unauthorized("this request needs a bearer token (Authorization: Bearer …)"));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let presented = *Digest::of(token.as_bytes()).as_bytes();
        // Every entry is compared, whichever matches: the time taken says
        // nothing about which hash (or how much of one) matched.
        let mut found: Option<&Caller> = None;
        for entry in &self.entries {
            let hit = entry.hash.ct_eq(&presented);
            if bool::from(hit) {
                found = Some(&entry.caller);
            }
        }
        found.cloned().ok_or_else(|| ApiError::unauthorized("the token is not valid here"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenSettings;

    fn settings() -> ServerSettings {
        ServerSettings {
            tokens: vec![TokenSettings {
                name: "bytes".into(),
                org: "acme".into(),
                sha256: token_hash("secret-a"),
                scopes: vec![Scope::Read],
            }],
            admin_token_sha256: Some(token_hash("secret-admin")),
            ..Default::default()
        }
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn tokens_resolve_to_callers_and_scopes() {
        let settings = settings();
        settings.validate().unwrap();
        let tokens = Tokens::new(&settings);
        assert_eq!(tokens.caller(&HeaderMap::new()).unwrap_err().status, 401);
        assert_eq!(tokens.caller(&headers("Bearer nope")).unwrap_err().status, 401);
        assert_eq!(tokens.caller(&headers("Basic c2VjcmV0LWE=")).unwrap_err().status, 401);
        let acme = tokens.caller(&headers("Bearer secret-a")).unwrap();
        acme.allow("acme", Scope::Read).unwrap();
        assert_eq!(acme.allow("acme", Scope::Write).unwrap_err().status, 403);
        assert_eq!(acme.allow("other", Scope::Read).unwrap_err().status, 404);
        assert_eq!(acme.allow_admin(true).unwrap_err().status, 403);
        let admin = tokens.caller(&headers("Bearer secret-admin")).unwrap();
        admin.allow_admin(true).unwrap();
        assert_eq!(admin.allow("acme", Scope::Read).unwrap_err().status, 403);
    }

    #[test]
    fn no_tokens_means_open() {
        let tokens = Tokens::new(&ServerSettings::default());
        assert!(matches!(tokens.caller(&HeaderMap::new()).unwrap(), Caller::Open));
        assert!(matches!(tokens.caller(&headers("Bearer whatever")).unwrap(), Caller::Open));
    }

    #[test]
    fn new_tokens_are_random_and_hash_as_configured() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with("coffer_") && a.len() > 40);
        assert_eq!(token_hash(&a).len(), 64);
    }

    #[test]
    fn a_token_in_clear_is_refused_as_a_hash() {
        let mut s = settings();
        s.tokens[0].sha256 = "secret-a".into();
        assert!(s.validate().unwrap_err().to_string().contains("not the token"));
    }
}
