//! `/readyz`'s answer: whether the database and S3 answer, found at most
//! once per [`READINESS_TTL`] however many checkers ask.

use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

use crate::backend::BackendKind;
use crate::coffer::Coffer;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// `ok` or `unavailable` (the reason is logged, not shown).
    pub database: &'static str,
    /// `ok`, `unavailable`, or absent when S3 is not configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<&'static str>,
    /// Shutting down: finishing what is in flight, taking nothing new.
    pub draining: bool,
}

/// How long a readiness answer is reused: probes from many checkers cost
/// one database query and one S3 request per period.
const READINESS_TTL: Duration = Duration::from_secs(2);

/// The last readiness answer, and when it was found.
#[derive(Debug, Default)]
pub struct ReadinessCache(tokio::sync::Mutex<Option<(Instant, Readiness)>>);

impl ReadinessCache {
    /// The answer of at most [`READINESS_TTL`] ago, or a fresh one (each
    /// part within 5 s). Why a part is unavailable is logged, not
    /// answered.
    pub async fn current(&self, coffer: &Coffer) -> Readiness {
        let mut cached = self.0.lock().await;
        if let Some((at, r)) = cached.as_ref()
            && at.elapsed() < READINESS_TTL
        {
            return r.clone();
        }
        let mut r = Readiness { ready: true, database: "unavailable", s3: None, draining: false };
        match tokio::time::timeout(Duration::from_secs(5), coffer.ready()).await {
            Ok(parts) => {
                for (backend, result) in parts {
                    let state = match result {
                        Ok(()) => "ok",
                        Err(e) => {
                            tracing::warn!(%backend, "not ready: {e}");
                            r.ready = false;
                            "unavailable"
                        }
                    };
                    match backend {
                        BackendKind::S3 => r.s3 = Some(state),
                        BackendKind::Database => r.database = state,
                    }
                }
            }
            Err(_) => {
                tracing::warn!("not ready: the readiness checks took longer than 5 s");
                r.ready = false;
            }
        }
        *cached = Some((Instant::now(), r.clone()));
        r
    }
}
