//! Request body parsing: size limit, JSON syntax and strict top-level keys, every failure mapped
//! to OpenCRVS's envelope (`Input validation failed` with zod-like issues, or 413).

use crate::error::ErrorCode;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Turns the raw-body extraction result into bytes or an envelope error.
pub fn bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "Request body is larger than {} bytes",
                    crate::limits::REQUEST_BODY_BYTES_MAX
                ),
            )
        } else {
            ApiError::bad_request(format!("Could not read request body: {rejection}"))
        }
    })
}

/// Parses a JSON body into `T` (whose serde derive denies unknown fields).
pub fn json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = bytes(body)?;
    parse(&bytes)
}

/// Parses JSON bytes into `T`, mapping serde's error to a zod-like issue.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::input_one("invalid_type", "Required", &[]));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    value.map_err(|e| {
        let text = e.to_string();
        let code = if text.starts_with("unknown field") {
            "unrecognized_keys"
        } else if text.starts_with("missing field") {
            "invalid_type"
        } else if e.is_syntax() || e.is_eof() {
            "invalid_json"
        } else {
            "invalid_type"
        };
        ApiError::input_one(code, text, &[])
    })
}
