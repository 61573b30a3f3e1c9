//! The errors a webhook delivery can meet. This enum is the HTTP contract: each variant
//! maps to one status, and nothing a retry could fix is ever a 4xx (the sender never
//! retries a 4xx, so that would lose the event).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::publisher::Record;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Unknown token, malformed event slug, or unknown path: one answer for all, so a
    /// prober learns nothing about which tokens exist.
    #[error("not found")]
    NotFound,
    /// The source address is not on the allow-list.
    #[error("forbidden")]
    Forbidden,
    #[error("body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// Kafka did not acknowledge in time and the spool could not take it, the server is
    /// overloaded (deliveries, memory) or shutting down, or the body arrived too slowly:
    /// retry later.
    #[error("the event could not be stored durably right now; retry later")]
    Unavailable { retry_after_s: u32 },
    /// A bug, or a record Kafka refused; the detail goes to the log and the dead-letter
    /// topic, not to the sender.
    #[error("internal error")]
    Internal,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl ResponseError for IngestError {
    fn status_code(&self) -> StatusCode {
        match self {
            IngestError::NotFound => StatusCode::NOT_FOUND,
            IngestError::Forbidden => StatusCode::FORBIDDEN,
            IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let IngestError::Unavailable { retry_after_s } = self {
            response.insert_header((header::RETRY_AFTER, retry_after_s.to_string()));
        }
        response.json(ErrorBody {
            error: &self.to_string(),
        })
    }
}

/// Why a delivery could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker did not acknowledge in time or is unreachable: worth a retry.
    #[error("kafka did not acknowledge: {0}")]
    Unavailable(String),
    /// The record itself was refused (e.g. too large for the topic): a retry will not
    /// help. The record comes back, so the refusal can be recorded with its body.
    #[error("kafka refused the record: {reason}")]
    Refused {
        reason: String,
        record: Option<Box<Record>>,
    },
}

impl PublishError {
    /// This error, carrying `record` when it is a refusal.
    pub fn with_record(self, record: Option<Record>) -> PublishError {
        match self {
            PublishError::Refused { reason, .. } => PublishError::Refused {
                reason,
                record: record.map(Box::new),
            },
            other => other,
        }
    }
}
