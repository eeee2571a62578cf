//! Health, readiness, metrics, the OpenAPI document and its browsable page. All public.

use crate::problem::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use draven_core::{Error, ErrorCode};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "system", security(()), responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, `draining` or `unavailable`.
    pub status: &'static str,
    pub database: String,
    pub object_store: String,
}

/// Readiness: the database and object storage answer and the server is not draining.
#[utoipa::path(get, path = "/readyz", tag = "system", security(()), responses(
    (status = 200, body = Readiness), (status = 503, body = Readiness)
))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (db, blobs) = tokio::join!(state.db.ping(), state.blobs.probe());
    let database = match db {
        Ok(()) => "ok".to_owned(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database");
            "unreachable".to_owned()
        }
    };
    let object_store = match blobs {
        Ok(()) => "ok".to_owned(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: object store");
            "unreachable".to_owned()
        }
    };
    let draining = state.draining.is_draining();
    let ok = !draining && database == "ok" && object_store == "ok";
    let status = if draining {
        "draining"
    } else if ok {
        "ready"
    } else {
        "unavailable"
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Readiness {
            status,
            database,
            object_store,
        }),
    )
        .into_response()
}

fn prometheus(state: &AppState) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "system", security(()), responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    prometheus(&state)
}

/// The same metrics at the path Spring Boot Actuator uses.
#[utoipa::path(get, path = "/actuator/prometheus", tag = "system", security(()), responses((status = 200, content_type = "text/plain")))]
pub async fn actuator_prometheus(State(state): State<AppState>) -> Response {
    prometheus(&state)
}

/// This API's OpenAPI 3.1 document, generated from the handlers.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "system", security(()), responses((status = 200, content_type = "application/json")))]
pub async fn openapi_json(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi_json.as_str().to_owned(),
    )
        .into_response()
}

/// A browsable page of the API, rendered on the server (no scripts, works offline).
#[utoipa::path(get, path = "/api/docs", tag = "system", security(()), responses((status = 200, content_type = "text/html")))]
pub async fn docs_page(State(state): State<AppState>) -> Html<String> {
    Html(state.docs_html.as_str().to_owned())
}

/// Anything unrouted.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError(Error::new(
        ErrorCode::NotFound,
        format!("no route for {}", uri.path()),
    ))
}
