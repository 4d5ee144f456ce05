//! S3's listing answers (ListObjectsV2, ListMultipartUploads) and the
//! ISO 8601 timestamps in them.

use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::client::{Payload, S3Store, check_names};
use super::error::Op;
use super::sign::encode;
use crate::backend::IncompleteUpload;
use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListBucketResult {
    #[serde(default)]
    pub contents: Vec<ListEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListEntry {
    pub key: String,
    pub size: u64,
    #[serde(default)]
    pub last_modified: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListMultipartUploadsResult {
    #[serde(default)]
    upload: Vec<UploadEntry>,
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: String,
    #[serde(default)]
    next_upload_id_marker: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadEntry {
    key: String,
    upload_id: String,
    #[serde(default)]
    initiated: String,
}

/// Seconds since the Unix epoch of an S3 timestamp
/// (`2026-11-23T14:42:07.000Z`); `None` if it is not one.
pub fn parse_timestamp(s: &str) -> Option<u64> {
    let (date, time) = s.trim().split_once('T')?;
    let mut d = date.splitn(3, '-');
    let (y, m, day): (i64, i64, i64) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    let time = time.strip_suffix('Z')?;
    let time = time.split('.').next()?;
    let mut t = time.splitn(3, ':');
    let (h, min, sec): (i64, i64, i64) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + min * 60 + sec).ok()
}

impl S3Store {
    /// Every multipart upload in `bucket` that was started and neither
    /// completed nor aborted. A server that does not implement the listing
    /// is [`Error::Unsupported`].
    pub(super) async fn list_multipart_uploads(&self, bucket: &str) -> Result<Vec<IncompleteUpload>> {
        check_names(bucket, None)?;
        let op = Op { name: "ListMultipartUploads", bucket, key: None };
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        // Bounded: 1000 pages of 1000 uploads.
        for _ in 0..1000 {
            let mut query = "max-uploads=1000&uploads=".to_string();
            if !key_marker.is_empty() {
                query.push_str(&format!("&key-marker={}&upload-id-marker={}", encode(&key_marker), encode(&id_marker)));
            }
            let url = self.url(bucket, None, &query);
            let resp = self.send(&op, Method::GET, &url, &[], Payload::Empty, &[StatusCode::NOT_IMPLEMENTED]).await?;
            if resp.status() == StatusCode::NOT_IMPLEMENTED {
                return Err(Error::Unsupported(format!(
                    "{op}: the server does not list incomplete multipart uploads; give the bucket a lifecycle rule \
                     (AbortIncompleteMultipartUpload) instead"
                )));
            }
            let page: ListMultipartUploadsResult = Self::xml(&op, resp).await?;
            for u in page.upload {
                // An upload whose start cannot be read is never taken for old.
                let active_at = parse_timestamp(&u.initiated).unwrap_or_else(|| {
                    tracing::warn!(bucket, key = u.key, initiated = u.initiated, "unreadable upload date; kept");
                    u64::MAX
                });
                out.push(IncompleteUpload { name: u.key, id: u.upload_id, active_at });
            }
            if !page.is_truncated || page.next_key_marker.is_empty() {
                return Ok(out);
            }
            key_marker = page.next_key_marker;
            id_marker = page.next_upload_id_marker;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_timestamps_parse_to_epoch_seconds() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(parse_timestamp("2009-10-12T17:50:30.000Z"), Some(1_255_369_830));
        assert_eq!(parse_timestamp("2024-02-29T23:59:59Z"), Some(1_709_251_199));
        for bad in ["", "2024-02-29", "2024-13-01T00:00:00Z", "yesterday", "2024-01-01T00:00:00+01:00"] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_upload_listing_parses() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
            <ListMultipartUploadsResult><Bucket>b</Bucket><IsTruncated>true</IsTruncated>
            <NextKeyMarker>k2</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>
            <Upload><Key>k1</Key><UploadId>u1</UploadId><Initiated>2009-10-12T17:50:30.000Z</Initiated></Upload>
            <Upload><Key>k2</Key><UploadId>u2</UploadId><Initiated>2009-10-12T17:50:31.000Z</Initiated></Upload>
            </ListMultipartUploadsResult>"#;
        let parsed: ListMultipartUploadsResult = quick_xml::de::from_str(xml).unwrap();
        assert_eq!(parsed.upload.len(), 2);
        assert!(parsed.is_truncated);
        assert_eq!((parsed.next_key_marker.as_str(), parsed.upload[1].upload_id.as_str()), ("k2", "u2"));
        let empty: ListMultipartUploadsResult =
            quick_xml::de::from_str("<ListMultipartUploadsResult><Bucket>b</Bucket></ListMultipartUploadsResult>")
                .unwrap();
        assert!(empty.upload.is_empty() && !empty.is_truncated);
    }
}
