//! SigV4 for S3, as pure functions of the request, the credentials and the
//! time, so they are tested against AWS's published examples with a fixed
//! clock. Also URL building: object keys are percent-encoded exactly once,
//! and the same string is signed and sent.
//!
//! Settings S3 needs (see `shared/TOOLCHAIN.md`): `x-amz-content-sha256`
//! on every request, single percent-encoding, no path normalisation.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::{Error, Result};

/// SHA-256 of the empty payload, for requests without a body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Longest validity AWS allows for a presigned URL (7 days).
pub const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

/// Everything but RFC 3986's unreserved characters is encoded (AWS's
/// `UriEncode`).
const STRICT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encode a query value or key segment (`/` encoded too).
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, STRICT).to_string()
}

/// Percent-encode an object key for the path: each segment encoded, `/`
/// kept as the separator.
pub fn encode_key(key: &str) -> String {
    key.split('/').map(encode).collect::<Vec<_>>().join("/")
}

/// The credentials the host signs with; never shown in logs.
#[derive(Clone)]
pub struct Signer {
    credentials: Credentials,
    region: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("access_key_id", &self.credentials.access_key_id())
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

fn base_settings() -> SigningSettings {
    let mut s = SigningSettings::default();
    s.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    s.percent_encoding_mode = PercentEncodingMode::Single;
    s.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    s
}

impl Signer {
    pub fn new(access_key_id: &str, secret_access_key: &str, session_token: Option<&str>, region: &str) -> Signer {
        Signer {
            credentials: Credentials::new(
                access_key_id,
                secret_access_key,
                session_token.map(str::to_string),
                None,
                "coffer",
            ),
            region: region.to_string(),
        }
    }

    /// The signing headers (`authorization`, `x-amz-date`,
    /// `x-amz-content-sha256`, and `x-amz-security-token` with a session
    /// token) for a request whose body has SHA-256 `payload_sha256` (hex).
    /// `url` must already be percent-encoded; `headers` are signed as given.
    pub fn sign_headers(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        payload_sha256: &str,
        time: SystemTime,
    ) -> Result<Vec<(String, String)>> {
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(time)
            .settings(base_settings())
            .build()
            .map_err(|e| Error::Internal(format!("signing parameters: {e}")))?
            .into();
        let request = SignableRequest::new(
            method,
            url,
            headers.iter().copied(),
            SignableBody::Precomputed(payload_sha256.to_string()),
        )
        .map_err(|e| Error::Internal(format!("signing {method} {url}: {e}")))?;
        let (instructions, _) =
            sign(request, &params).map_err(|e| Error::Internal(format!("signing: {e}")))?.into_parts();
        Ok(instructions.headers().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    /// A presigned URL for `method` on `url` (already encoded, and possibly
    /// with a query), valid for `expires` from `time`.
    pub fn presign(&self, method: &str, url: &str, expires: Duration, time: SystemTime) -> Result<String> {
        if expires.is_zero() || expires > MAX_PRESIGN {
            return Err(Error::InvalidInput(format!(
                "a link may be valid for 1 second to 7 days ({} seconds), not {} seconds",
                MAX_PRESIGN.as_secs(),
                expires.as_secs()
            )));
        }
        let identity = self.credentials.clone().into();
        let mut settings = base_settings();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(expires);
        // Presigned S3 GETs sign no payload.
        settings.payload_checksum_kind = PayloadChecksumKind::NoHeader;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(time)
            .settings(settings)
            .build()
            .map_err(|e| Error::Internal(format!("signing parameters: {e}")))?
            .into();
        let request = SignableRequest::new(method, url, std::iter::empty(), SignableBody::UnsignedPayload)
            .map_err(|e| Error::Internal(format!("signing {url}: {e}")))?;
        let (instructions, _) =
            sign(request, &params).map_err(|e| Error::Internal(format!("presigning: {e}")))?.into_parts();
        let mut out = url.to_string();
        for (i, (k, v)) in instructions.params().iter().enumerate() {
            let sep = if i == 0 && !url.contains('?') { '?' } else { '&' };
            out.push(sep);
            out.push_str(k);
            out.push('=');
            out.push_str(&encode(v));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented example credentials and time (Signature Version 4,
    /// "Authenticating Requests: Using the Authorization Header" and "Using
    /// Query Parameters", Amazon S3 API reference).
    fn example() -> (Signer, SystemTime) {
        let signer = Signer::new("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None, "us-east-1");
        // 2013-05-24T00:00:00Z
        (signer, SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600))
    }

    #[test]
    fn get_object_matches_the_aws_example() {
        let (signer, time) = example();
        let headers = signer
            .sign_headers(
                "GET",
                "https://examplebucket.s3.amazonaws.com/test.txt",
                &[("range", "bytes=0-9")],
                EMPTY_SHA256,
                time,
            )
            .unwrap();
        let auth = headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.as_str()).unwrap();
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn presigned_get_matches_the_aws_example() {
        let (signer, time) = example();
        let url = signer
            .presign("GET", "https://examplebucket.s3.amazonaws.com/test.txt", Duration::from_secs(86400), time)
            .unwrap();
        assert!(
            url.ends_with("X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"),
            "{url}"
        );
        assert!(url.contains("X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"));
    }

    #[test]
    fn presign_refuses_expiry_aws_would_refuse() {
        let (signer, time) = example();
        assert!(signer.presign("GET", "https://h/b/k", Duration::ZERO, time).is_err());
        assert!(signer.presign("GET", "https://h/b/k", MAX_PRESIGN + Duration::from_secs(1), time).is_err());
    }

    #[test]
    fn keys_are_encoded_once_with_slashes_kept() {
        assert_eq!(encode_key("org/abc"), "org/abc");
        assert_eq!(encode_key("my org/ä+b=c&d"), "my%20org/%C3%A4%2Bb%3Dc%26d");
        assert_eq!(encode_key("a~b_c-d.e"), "a~b_c-d.e");
        assert_eq!(encode("a/b"), "a%2Fb");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let (signer, _) = example();
        assert!(!format!("{signer:?}").contains("EXAMPLEKEY"));
    }
}
