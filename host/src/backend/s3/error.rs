//! Every S3 answer that is not a success becomes an [`Error`] here, and
//! only here: the status and S3's error code decide the kind, and whether
//! a retry can help.

use reqwest::StatusCode;
use serde::Deserialize;

use super::transport::TimedOut;
use crate::error::Error;

/// S3's `<Error>` document.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct S3ErrorBody {
    pub code: String,
    pub message: String,
}

impl S3ErrorBody {
    pub fn parse(body: &str) -> S3ErrorBody {
        quick_xml::de::from_str(body).unwrap_or_default()
    }
}

/// What the request was, for messages.
#[derive(Debug, Clone)]
pub struct Op<'a> {
    pub name: &'a str,
    pub bucket: &'a str,
    pub key: Option<&'a str>,
}

impl std::fmt::Display for Op<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.key {
            Some(k) => write!(f, "{} s3://{}/{}", self.name, self.bucket, k),
            None => write!(f, "{} s3://{}", self.name, self.bucket),
        }
    }
}

/// Map an S3 error response to an error.
pub fn parse_error(op: &Op<'_>, status: StatusCode, body: &str) -> Error {
    let S3ErrorBody { code, message } = S3ErrorBody::parse(body);
    let detail = match (code.is_empty(), message.is_empty()) {
        (true, _) => format!("HTTP {status}"),
        (false, true) => format!("HTTP {status} {code}"),
        (false, false) => format!("HTTP {status} {code}: {message}"),
    };
    let retryable = |message: String| Error::Backend { message, retryable: true, source: None };
    match (status.as_u16(), code.as_str()) {
        (404, "NoSuchBucket") => Error::NotFound(format!("{op}: the bucket does not exist ({detail})")),
        (404, _) => Error::NotFound(format!("{op}: no such object ({detail})")),
        (403, "SignatureDoesNotMatch") => Error::Config(format!(
            "{op}: S3 refused the signature ({detail}); check AWS_SECRET_ACCESS_KEY and AWS_REGION"
        )),
        (403, "InvalidAccessKeyId") => {
            Error::Config(format!("{op}: S3 does not know the access key ({detail}); check AWS_ACCESS_KEY_ID"))
        }
        (403, "RequestTimeTooSkewed") => {
            Error::Config(format!("{op}: this machine's clock is too far off for S3 ({detail})"))
        }
        // The operator's keys may not do this: a configuration error (the
        // server's, not the caller's: an HTTP client is told in general
        // words, the log has this).
        (401 | 403, "") => Error::Config(format!(
            "{op}: access denied ({detail}); check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the key's \
             permissions for this bucket"
        )),
        (401 | 403, _) => Error::Config(format!(
            "{op}: access denied ({detail}); check the key's permissions (AWS_ACCESS_KEY_ID) for this bucket"
        )),
        (409, "BucketAlreadyExists") => Error::Conflict(format!(
            "{op}: the bucket name is taken by another account ({detail}); choose another S3_BUCKET or S3_BUCKET_PREFIX"
        )),
        (409, _) => Error::Conflict(format!("{op}: {detail}")),
        (412, _) => Error::Conflict(format!("{op}: precondition failed ({detail})")),
        (400, "BadDigest" | "XAmzContentSHA256Mismatch" | "InvalidDigest") => {
            Error::Integrity(format!("{op}: S3 received other bytes than were sent ({detail})"))
        }
        (400, "RequestTimeout") => retryable(format!("{op}: S3 timed out waiting for the body ({detail})")),
        (429, _) | (503, _) => retryable(format!("{op}: S3 is throttling or unavailable ({detail})")),
        // The client follows no redirects. S3 answers 301 PermanentRedirect
        // or 307 TemporaryRedirect when the bucket lives in another region
        // or behind another endpoint.
        (300..=399, _) => Error::Config(format!(
            "{op}: S3 answered with a redirect ({detail}); Coffer does not follow redirects, so signed \
             requests never go to another host: check AWS_ENDPOINT_URL and AWS_REGION"
        )),
        (501, _) => Error::Unsupported(format!("{op}: the server does not implement this ({detail})")),
        (500..=599, _) => retryable(format!("{op}: S3 server error ({detail})")),
        (400, _) => Error::InvalidInput(format!("{op}: S3 refused the request ({detail})")),
        _ => Error::Backend { message: format!("{op}: unexpected answer ({detail})"), retryable: false, source: None },
    }
}

/// Map a transport failure (connect, timeout, reset) to an error; these
/// are retryable. A request body that broke off because its bytes failed
/// their digest check is an integrity error, not retried.
pub fn transport_error(op: &Op<'_>, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    let e = e.into();
    let (mut connect, mut timeout, mut chain) = (false, false, Vec::new());
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*e);
    while let Some(s) = source {
        if let Some(Error::Integrity(m)) = s.downcast_ref::<Error>() {
            return Error::Integrity(format!("{op}: {m}"));
        }
        if let Some(h) = s.downcast_ref::<hyper_util::client::legacy::Error>() {
            connect |= h.is_connect();
        }
        if let Some(r) = s.downcast_ref::<reqwest::Error>() {
            connect |= r.is_connect();
            timeout |= r.is_timeout();
        }
        timeout |= s.is::<TimedOut>()
            || s.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
        let text = s.to_string();
        if chain.last() != Some(&text) {
            chain.push(text);
        }
        source = s.source();
    }
    let what = if connect {
        "cannot connect to S3 (check AWS_ENDPOINT_URL)"
    } else if timeout {
        "S3 did not answer in time"
    } else {
        "the connection to S3 failed"
    };
    Error::Backend { message: format!("{op}: {what}: {}", chain.join(": ")), retryable: true, source: Some(e) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn classify(status: u16, code: &str) -> Error {
        let body = format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>");
        parse_error(
            &Op { name: "GetObject", bucket: "b", key: Some("k") },
            StatusCode::from_u16(status).unwrap(),
            &body,
        )
    }

    #[test]
    fn statuses_map_to_kinds_and_retryability() {
        let table: &[(u16, &str, ErrorKind, bool)] = &[
            (404, "NoSuchKey", ErrorKind::NotFound, false),
            (404, "", ErrorKind::NotFound, false),
            (403, "SignatureDoesNotMatch", ErrorKind::Config, false),
            (403, "InvalidAccessKeyId", ErrorKind::Config, false),
            (403, "AccessDenied", ErrorKind::Config, false),
            (409, "BucketAlreadyExists", ErrorKind::Conflict, false),
            (412, "PreconditionFailed", ErrorKind::Conflict, false),
            (400, "BadDigest", ErrorKind::Integrity, false),
            (400, "InvalidArgument", ErrorKind::InvalidInput, false),
            (400, "RequestTimeout", ErrorKind::Unavailable, true),
            (429, "SlowDown", ErrorKind::Unavailable, true),
            (500, "InternalError", ErrorKind::Unavailable, true),
            (503, "SlowDown", ErrorKind::Unavailable, true),
            (501, "NotImplemented", ErrorKind::Unavailable, false),
            (301, "PermanentRedirect", ErrorKind::Config, false),
            (307, "TemporaryRedirect", ErrorKind::Config, false),
            (307, "", ErrorKind::Config, false),
        ];
        for (status, code, kind, retry) in table {
            let e = classify(*status, code);
            assert_eq!((e.kind(), e.is_retryable()), (*kind, *retry), "{status} {code}: {e}");
        }
    }

    #[test]
    fn bad_credentials_name_the_variable_to_check() {
        assert!(classify(403, "SignatureDoesNotMatch").to_string().contains("AWS_SECRET_ACCESS_KEY"));
        assert!(classify(403, "InvalidAccessKeyId").to_string().contains("AWS_ACCESS_KEY_ID"));
    }

    #[test]
    fn a_redirect_is_an_error_that_names_the_status() {
        let e = parse_error(&Op { name: "PutObject", bucket: "b", key: Some("k") }, StatusCode::TEMPORARY_REDIRECT, "");
        assert!(e.to_string().contains("307") && e.to_string().contains("redirect"), "{e}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn a_body_that_is_not_xml_still_gives_the_status() {
        let e = parse_error(&Op { name: "HeadObject", bucket: "b", key: None }, StatusCode::BAD_GATEWAY, "<html>");
        assert!(e.to_string().contains("502"), "{e}");
        assert!(e.is_retryable());
    }
}
