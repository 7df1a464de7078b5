//! The REST error envelope OpenCRVS (trpc-to-openapi) returns: `{message, code, issues?}`.

use serde::{Deserialize, Serialize};

/// tRPC error codes, as they appear in the `code` field, with their HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// 400: input failed validation.
    BadRequest,
    /// 401: missing, expired or invalid token.
    Unauthorized,
    /// 403: the token lacks a scope, or the caller type may not call this.
    Forbidden,
    /// 404: unknown record, or the caller may not see it.
    NotFound,
    /// 405: the route exists but not for this method.
    MethodNotSupported,
    /// 409: a state or assignment conflict, or an idempotency key reused with another body.
    Conflict,
    /// 413: the request body is over the limit.
    PayloadTooLarge,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 429: rate limited.
    TooManyRequests,
    /// 500: a fault of ours.
    InternalServerError,
    /// 503: the service cannot take this now (for example, the tracking-id pool is empty).
    ServiceUnavailable,
}

impl ErrorCode {
    /// The HTTP status code for this error code.
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotSupported => 405,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::TooManyRequests => 429,
            Self::InternalServerError => 500,
            Self::ServiceUnavailable => 503,
        }
    }
}

impl ErrorCode {
    /// The JSON-RPC code tRPC puts in its error shape (`error.json.code`).
    pub fn json_rpc_code(self) -> i32 {
        match self {
            Self::BadRequest => -32600,
            Self::Unauthorized => -32001,
            Self::Forbidden => -32003,
            Self::NotFound => -32004,
            Self::MethodNotSupported => -32005,
            Self::Conflict => -32009,
            Self::PayloadTooLarge => -32013,
            Self::UnsupportedMediaType => -32015,
            Self::TooManyRequests => -32029,
            Self::InternalServerError | Self::ServiceUnavailable => -32603,
        }
    }
}

/// One input problem, in the shape of a zod issue (`{code, message, path}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// zod's issue code, e.g. `invalid_type`, `unrecognized_keys`, `custom`.
    pub code: String,
    /// Human-readable description.
    pub message: String,
    /// Path of the offending value, e.g. `["declaration", "child.name"]`.
    pub path: Vec<String>,
}

/// The error envelope: every 4xx/5xx from the events API has this body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// What went wrong. For field validation this is a JSON-stringified issue array, as OpenCRVS does.
    pub message: String,
    /// The tRPC error code.
    pub code: ErrorCode,
    /// Input issues, present for input validation failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issues: Option<Vec<Issue>>,
}

impl ErrorEnvelope {
    /// An envelope without issues.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code,
            issues: None,
        }
    }

    /// OpenCRVS's `Input validation failed` with its issues.
    pub fn input_validation(issues: Vec<Issue>) -> Self {
        Self {
            message: INPUT_VALIDATION_FAILED.to_owned(),
            code: ErrorCode::BadRequest,
            issues: Some(issues),
        }
    }
}

/// The message OpenCRVS gives for a body that fails its zod schema.
pub const INPUT_VALIDATION_FAILED: &str = "Input validation failed";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_serialises_like_opencrvs() {
        let e = ErrorEnvelope::new(ErrorCode::NotFound, "Event not found");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"message":"Event not found","code":"NOT_FOUND"}"#
        );
        let e = ErrorEnvelope::input_validation(vec![Issue {
            code: "unrecognized_keys".into(),
            message: "Unrecognized key(s) in object: 'foo'".into(),
            path: vec![],
        }]);
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["code"], "BAD_REQUEST");
        assert_eq!(v["issues"][0]["code"], "unrecognized_keys");
        assert_eq!(ErrorCode::PayloadTooLarge.http_status(), 413);
    }
}
