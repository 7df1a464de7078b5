//! The one HTTP error type: client faults become 4xx with OpenCRVS's envelope, internal faults a
//! 500 with a generic body (the cause is logged once, never sent).

use crate::error::{ErrorCode, ErrorEnvelope, Issue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answered with `{message, code, issues?}`.
#[derive(Debug)]
pub struct ApiError {
    envelope: ErrorEnvelope,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            envelope: ErrorEnvelope::new(code, message),
        }
    }

    /// 400 `Input validation failed` with issues.
    pub fn input(issues: Vec<Issue>) -> Self {
        Self {
            envelope: ErrorEnvelope::input_validation(issues),
        }
    }

    /// 400 `Input validation failed` with one issue.
    pub fn input_one(code: &str, message: impl Into<String>, path: &[&str]) -> Self {
        Self::input(vec![Issue {
            code: code.to_owned(),
            message: message.into(),
            path: path.iter().map(|s| (*s).to_owned()).collect(),
        }])
    }

    /// 400 with a plain message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "Unauthorized")
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// 404 for an event, worded as OpenCRVS's `EventNotFoundError`.
    pub fn event_not_found(id: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorCode::NotFound,
            format!("Event not found with ID: {id}"),
        )
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// 500 without details (the cause is logged here).
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::InternalServerError, "Internal server error")
    }

    /// An error with a ready envelope (from shared validation in `common`).
    pub fn from_envelope(envelope: ErrorEnvelope) -> Self {
        Self { envelope }
    }

    /// The envelope (for tests).
    pub fn envelope(&self) -> &ErrorEnvelope {
        &self.envelope
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.envelope.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.envelope)).into_response()
    }
}
