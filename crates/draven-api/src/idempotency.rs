//! `Idempotency-Key` on creating POSTs (K9).
//!
//! A POST carrying the header is claimed under (tenant, principal, key) with a hash of its
//! method, path and body. A repeat of the same request gets the first response again (with
//! `Idempotent-Replayed: true`); the same key with a different request answers 422; a repeat
//! while the first is still running answers 409. A 5xx releases the key so the client may retry.

use crate::authz::Auth;
use crate::problem::problem_response;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use draven_core::{Error, ErrorCode};
use draven_store::idempotency::{Claim, IdempotencyKey, StoredResponse};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Responses bigger than this are not stored (the key is released; creating responses are small).
const MAX_STORED_RESPONSE: usize = 1024 * 1024;

pub async fn idempotent(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST
        || !req.headers().contains_key(&IDEMPOTENCY_KEY)
        || crate::is_gateway(&req)
    {
        return next.run(req).await;
    }
    let Some(auth) = req.extensions().get::<Auth>().cloned() else {
        return next.run(req).await;
    };
    let key = req
        .headers()
        .get(&IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if key.is_empty() || key.len() > 255 {
        return problem_response(&Error::invalid(
            "Idempotency-Key",
            "Idempotency-Key must be 1-255 visible ASCII characters",
        ));
    }
    let (parts, body) = req.into_parts();
    let bytes = match http_body_util::Limited::new(body, state.config.max_body_bytes)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return problem_response(&Error::new(
                ErrorCode::PayloadTooLarge,
                "the request body exceeds the configured limit",
            ))
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    let mut h = Sha256::new();
    h.update(parts.method.as_str());
    h.update([0]);
    h.update(&path);
    h.update([0]);
    h.update(&bytes);
    let request_hash = hex::encode(h.finalize());
    let principal = auth
        .principal
        .token_id
        .clone()
        .unwrap_or_else(|| auth.principal.user_id.clone());
    let k = IdempotencyKey {
        tenant_id: auth.tenant_id(),
        principal: &principal,
        key: &key,
    };
    let ttl_ms = state.config.idempotency_ttl.as_millis() as i64;
    match state
        .db
        .claim_idempotency_key(&k, parts.method.as_str(), &path, &request_hash, ttl_ms)
        .await
    {
        Err(e) => problem_response(&Error::from(e)),
        Ok(Claim::Mismatch) => problem_response(&Error::new(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used for a different request; use a new key",
        )),
        Ok(Claim::InFlight) => {
            let mut r = problem_response(&Error::new(
                ErrorCode::IdempotencyKeyInFlight,
                "a request with this Idempotency-Key is still being processed; retry shortly",
            ));
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        Ok(Claim::Replay(stored)) => replay(stored),
        Ok(Claim::Claimed) => {
            let resp = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            let (rparts, rbody) = resp.into_parts();
            let body = match http_body_util::Limited::new(rbody, MAX_STORED_RESPONSE)
                .collect()
                .await
            {
                Ok(c) => c.to_bytes(),
                Err(_) => {
                    let _ = state.db.release_idempotency_key(&k).await;
                    return problem_response(&Error::internal());
                }
            };
            if rparts.status.is_server_error() {
                let _ = state.db.release_idempotency_key(&k).await;
            } else {
                let stored = StoredResponse {
                    status: rparts.status.as_u16(),
                    content_type: rparts
                        .headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    location: rparts
                        .headers
                        .get(header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    body: body.to_vec(),
                };
                if let Err(e) = state.db.complete_idempotency_key(&k, &stored).await {
                    tracing::error!(error = %e, "could not store the idempotent response");
                }
            }
            Response::from_parts(rparts, Body::from(body))
        }
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut r = (status, stored.body).into_response();
    let h = r.headers_mut();
    if let Some(ct) = stored
        .content_type
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        h.insert(header::CONTENT_TYPE, ct);
    }
    if let Some(loc) = stored.location.and_then(|v| HeaderValue::from_str(&v).ok()) {
        h.insert(header::LOCATION, loc);
    }
    h.insert(
        IDEMPOTENT_REPLAYED.clone(),
        HeaderValue::from_static("true"),
    );
    r
}
