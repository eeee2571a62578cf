//! RFC 9457 problem+json: the one way errors leave the API.
//!
//! Every error is a [`draven_core::Error`] with a stable code; this module renders it with the
//! request id of the request it belongs to. Internal errors carry no cause text (the cause was
//! logged where it happened).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use draven_core::{Error, ErrorCode};
use serde::Serialize;
use utoipa::ToSchema;

tokio::task_local! {
    /// The id of the request being served, set by the request-id middleware.
    pub static REQUEST_ID: String;
}

pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(|id| id.clone()).ok()
}

pub const PROBLEM_JSON: &str = "application/problem+json";

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Stable URI identifying the kind of problem, e.g. `urn:draven:problem:not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The stable code (the last segment of `type`).
    pub code: String,
    /// The offending field or parameter, when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Every problem, when there are several (e.g. all missing dependencies of a release).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemItem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemItem {
    pub field: String,
    pub message: String,
}

/// An error on its way out as problem+json.
#[derive(Debug)]
pub struct ApiError(pub Error);

pub type ApiResult<T> = Result<T, ApiError>;

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError(e)
    }
}

impl From<draven_store::StoreError> for ApiError {
    fn from(e: draven_store::StoreError) -> ApiError {
        ApiError(e.into())
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError(Error::new(code, message))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        problem_response(&self.0)
    }
}

pub fn problem_response(e: &Error) -> Response {
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = Problem {
        kind: e.code.type_uri(),
        title: e.code.title().to_owned(),
        status: status.as_u16(),
        detail: e.message.clone(),
        code: e.code.slug().to_owned(),
        field: e.field.clone(),
        request_id: current_request_id(),
        errors: e
            .errors
            .iter()
            .map(|f| ProblemItem {
                field: f.field.clone(),
                message: f.message.clone(),
            })
            .collect(),
    };
    let mut resp = (status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if e.code == ErrorCode::Unauthenticated {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"draven\""),
        );
    }
    resp
}
