//! `POST /auth/token` (and `/api/auth/token`, `/token`): OAuth2 client credentials, read from the
//! query string or a form body, answered with OpenCRVS's `{access_token, token_type}` and OAuth2
//! error bodies.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::{DECOY_HASH, TokenUserType, verify_secret};
use super::{AuthHost, wall_ms};

/// Longest client id or secret considered, in bytes; longer ones are refused without hashing.
const CREDENTIAL_BYTES_MAX: usize = 512;

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

fn params(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = query
        .map(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .collect();
    // A form body wins over the query string (OpenCRVS's getParam checks the payload first).
    // An empty JSON body (`Content-Type: application/json`, nothing sent) is ignored.
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form && let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
        out.extend(pairs);
    }
    out
}

/// The token handler.
pub async fn token<H: AuthHost>(
    State(host): State<Arc<H>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Could not read request body",
        );
    };
    let p = params(query.as_deref(), &headers, &body);
    let grant = p.get("grant_type").map(String::as_str);
    match grant {
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing grant_type",
            );
        }
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Only client_credentials is supported",
            );
        }
    }
    let (Some(client_id), Some(secret)) = (p.get("client_id"), p.get("client_secret")) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing client_id or client_secret",
        );
    };
    if client_id.len() > CREDENTIAL_BYTES_MAX || secret.len() > CREDENTIAL_BYTES_MAX {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client id or secret",
        );
    }
    let client = match host.client(client_id.clone()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = ?e, "token: reading client");
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "Internal server error",
            );
        }
    };
    let (hash, active) = match &client {
        Some(c) => (c.secret_hash.clone(), c.status == "active"),
        None => (DECOY_HASH.to_owned(), false),
    };
    let Ok(_permit) = host.auth().secret_permit().await else {
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "Too many secret checks at once; try again shortly",
        );
    };
    let secret = zeroize::Zeroizing::new(secret.clone());
    let ok = tokio::task::spawn_blocking(move || verify_secret(&hash, &secret))
        .await
        .unwrap_or(false);
    let client = match client {
        Some(c) if ok && active => c,
        _ => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Invalid client id or secret",
            );
        }
    };
    let now_secs = wall_ms() / 1000;
    match host
        .auth()
        .tokens
        .mint(&client.id, client.scopes, TokenUserType::System, now_secs)
    {
        Ok(token) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            axum::Json(json!({ "access_token": token, "token_type": "Bearer" })),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "token: minting");
            oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "Internal server error",
            )
        }
    }
}
