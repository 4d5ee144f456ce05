//! The TOML configuration file (`COFFER_CONFIG`): the same settings as the
//! environment, plus per-tenant policy settings and server tokens.

use std::path::Path;

use super::Config;
use crate::error::{Error, Result};

impl Config {
    /// Read a TOML configuration file.
    ///
    /// An error names the file, line and column and says what is wrong,
    /// but never quotes the file: toml's `Display` prints the offending
    /// line, which may be `secret_access_key = "…"`, and serde's messages
    /// quote the offending value (`invalid type: string "…"`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config> {
        /// serde's message without the value it quotes ("invalid type:
        /// string \"…\", expected a boolean" keeps "string"; "unknown
        /// variant `…`" keeps only what was expected). Field names (unknown,
        /// missing or duplicate field) are keys, not values, and stay.
        fn without_value(message: &str) -> String {
            for prefix in ["invalid type: ", "invalid value: "] {
                if let Some((unexpected, expected)) =
                    message.strip_prefix(prefix).and_then(|rest| rest.rsplit_once(", expected "))
                {
                    let kind = unexpected.split(['"', '`']).next().unwrap_or_default().trim_end();
                    return format!("{prefix}{kind}, expected {expected}");
                }
            }
            match message.rsplit_once(", expected ") {
                Some((_, expected)) if message.starts_with("unknown variant ") => {
                    format!("unknown variant, expected {expected}")
                }
                _ => message.to_string(),
            }
        }

        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read config file {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| {
            let at = e.span().and_then(|span| text.get(..span.start)).map_or(String::new(), |before| {
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
                format!(":{line}:{column}")
            });
            let message = without_value(e.message().trim());
            Error::Config(format!("config file {}{at}: {}", path.display(), message.replace('\n', "; ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// toml's `Display` prints the offending line, and serde's messages
    /// the offending value: a secret on that line must not reach the error.
    #[test]
    fn config_file_errors_name_the_place_but_never_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret.toml");
        let path = file.to_str().unwrap();
        for (toml, line) in [
            // Unterminated string.
            ("[s3]\naccess_key_id = \"AK\"\nsecret_access_key = \"TOPSECRET\n", 3),
            // The secret pasted where a boolean belongs; serde would quote it.
            ("[s3]\nbucket_per_org = \"TOPSECRET\"\n", 2),
            ("[s3]\nbucket_per_org = \"TOP\\u0053ECRET\"\n", 2),
            ("[s3]\n\nsecret_access_key = 12345678\n", 3),
            ("[s3]\nsecret_access_key = \"TOPSECRET\" trailing\n", 2),
        ] {
            std::fs::write(&file, toml).unwrap();
            let e = Config::from_file(&file).unwrap_err().to_string();
            assert!(e.contains(&format!("{path}:{line}:")), "{toml:?}: {e}");
            assert!(!e.contains("TOPSECRET") && !e.contains("12345678"), "{toml:?}: {e}");
            assert!(!e.contains("secret_access_key ="), "the source line: {e}");
        }
        // What is wrong is still said.
        std::fs::write(&file, "[s3]\nbucket_per_org = \"TOPSECRET\"\n").unwrap();
        let e = Config::from_file(&file).unwrap_err().to_string();
        assert!(e.contains("invalid type: string, expected a boolean"), "{e}");
    }
}
