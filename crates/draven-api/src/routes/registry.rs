//! The registry: artifacts, versions and their payloads, dry-run validation, dependency graphs,
//! bundles (releases) and publications onto environments.

use super::{Page, PageQuery};
use crate::authz::Auth;
use crate::etag::{etag, if_match};
use crate::extract::{Json, Path, Query, RawBody};
use crate::problem::{ApiError, ApiResult};
use crate::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use draven_core::{Action, Error, ErrorCode, Target};
use draven_registry::service::ArtifactInput;
use draven_registry::validate::{validate, Kind, RefKind, MAX_PAYLOAD_BYTES};
use draven_store::registry::{Artifact, ArtifactFilter, ArtifactPatch, Version, VersionMeta};
use draven_store::registry_release::{Bundle, Publication};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactView {
    pub key: String,
    /// bpmn, dmn, form or request
    pub kind: String,
    pub name: String,
    pub description: String,
    pub labels: Vec<String>,
    pub created_by: String,
    /// Also the ETag.
    pub revision: i64,
    pub created_at: String,
    pub updated_at: String,
    pub latest_version: Option<i64>,
    pub latest_published: Option<i64>,
}

impl From<Artifact> for ArtifactView {
    fn from(a: Artifact) -> ArtifactView {
        ArtifactView {
            key: a.key,
            kind: a.kind,
            name: a.name,
            description: a.description,
            labels: a.labels,
            created_by: a.created_by,
            revision: a.revision,
            created_at: a.created_at,
            updated_at: a.updated_at,
            latest_version: a.latest_version,
            latest_published: a.latest_published,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefView {
    pub kind: String,
    pub id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DependencyView {
    /// process, decision or form
    pub kind: String,
    pub id: String,
    /// The element that makes the reference (`declared` for declared dependencies).
    pub from: String,
    pub declared: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    pub artifact: String,
    pub kind: String,
    pub number: i64,
    /// draft, published or deprecated
    pub state: String,
    pub version_tag: String,
    pub sha256: String,
    pub size: i64,
    pub content_type: String,
    /// Also the ETag (drafts change; published versions never do).
    pub revision: i64,
    /// Validation findings with severity error.
    pub errors: i64,
    /// Every finding: rule, severity, message, line, column, pointer, element.
    #[schema(value_type = Vec<Object>)]
    pub findings: serde_json::Value,
    pub provides: Vec<RefView>,
    pub dependencies: Vec<DependencyView>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    pub published_at: Option<String>,
    pub payload_url: String,
}

impl From<Version> for VersionView {
    fn from(v: Version) -> VersionView {
        VersionView {
            payload_url: format!(
                "/api/v1/artifacts/{}/versions/{}/payload",
                v.artifact_key, v.number
            ),
            artifact: v.artifact_key,
            kind: v.kind,
            number: v.number,
            state: v.state,
            version_tag: v.version_tag,
            sha256: v.sha256,
            size: v.size,
            content_type: v.content_type,
            revision: v.revision,
            errors: v.errors,
            findings: serde_json::from_str(&v.findings).unwrap_or(serde_json::Value::Array(vec![])),
            provides: v
                .provides
                .into_iter()
                .map(|(kind, id)| RefView { kind, id })
                .collect(),
            dependencies: v
                .requires
                .into_iter()
                .map(|r| DependencyView {
                    kind: r.kind,
                    id: r.id,
                    from: r.from,
                    declared: r.declared,
                })
                .collect(),
            created_by: v.created_by,
            created_at: v.created_at,
            updated_at: v.updated_at,
            published_at: v.published_at,
        }
    }
}

fn with_etag<T: Serialize>(status: StatusCode, revision: i64, body: T) -> Response {
    (status, [(header::ETAG, etag(revision))], axum::Json(body)).into_response()
}

fn err(e: draven_registry::service::RegistryError) -> ApiError {
    ApiError(e.into())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ArtifactQuery {
    /// bpmn, dmn, form or request
    pub kind: Option<String>,
    pub label: Option<String>,
    /// Artifacts with at least one version in this state: draft, published or deprecated.
    pub state: Option<String>,
    /// Text in key, name or description (case-insensitive).
    pub q: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// Lists and searches artifacts.
#[utoipa::path(get, path = "/api/v1/artifacts", tag = "registry", security(("token" = ["tenant:read"])), params(ArtifactQuery),
    responses((status = 200, body = Page<ArtifactView>), (status = 422, body = crate::problem::Problem)))]
pub async fn list_artifacts(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ArtifactQuery>,
) -> ApiResult<axum::Json<Page<ArtifactView>>> {
    if let Some(k) = &q.kind {
        Kind::parse(k)
            .ok_or_else(|| Error::invalid("kind", "kind must be bpmn, dmn, form or request"))?;
    }
    if let Some(s) = &q.state {
        if !["draft", "published", "deprecated"].contains(&s.as_str()) {
            return Err(
                Error::invalid("state", "state must be draft, published or deprecated").into(),
            );
        }
    }
    let filter = ArtifactFilter {
        kind: q.kind,
        label: q.label,
        state: q.state,
        text: q.q,
        cursor: q.cursor,
        limit: q.limit,
    };
    let page = state.db.list_artifacts(auth.tenant_id(), &filter).await?;
    Ok(axum::Json(Page::from_store(page, ArtifactView::from)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateArtifact {
    /// Unique in the tenant: 1-63 of a-z, 0-9, '-', starting with a letter.
    pub key: String,
    /// bpmn, dmn, form or request
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub labels: Vec<String>,
}

/// Creates an artifact (add its content as versions).
#[utoipa::path(post, path = "/api/v1/artifacts", tag = "registry", security(("token" = ["tenant:write"])), request_body = CreateArtifact,
    responses((status = 201, body = ArtifactView), (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn create_artifact(
    State(state): State<AppState>,
    auth: Auth,
    Json(b): Json<CreateArtifact>,
) -> ApiResult<Response> {
    let input = ArtifactInput {
        key: b.key,
        kind: b.kind,
        name: b.name,
        description: b.description,
        labels: b.labels,
    };
    let a = state
        .registry
        .create_artifact(&auth.actor, auth.tenant_id(), &input)
        .await
        .map_err(err)?;
    let mut r = with_etag(
        StatusCode::CREATED,
        a.revision,
        ArtifactView::from(a.clone()),
    );
    r.headers_mut().insert(
        header::LOCATION,
        format!("/api/v1/artifacts/{}", a.key)
            .parse()
            .expect("slug"),
    );
    Ok(r)
}

/// One artifact.
#[utoipa::path(get, path = "/api/v1/artifacts/{key}", tag = "registry", security(("token" = ["tenant:read"])), params(("key" = String, Path)),
    responses((status = 200, body = ArtifactView), (status = 404, body = crate::problem::Problem)))]
pub async fn get_artifact(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> ApiResult<Response> {
    let tenant = auth.tenant_id();
    if let Some(c) = state.reads.get(tenant, &key) {
        return Ok(cached_json(c));
    }
    let generation = state.reads.generation(tenant);
    let a = state.db.get_artifact(tenant, &key).await?;
    let cached = crate::read_cache::Cached {
        body: bytes::Bytes::from(
            serde_json::to_vec(&ArtifactView::from(a.clone())).unwrap_or_default(),
        ),
        revision: a.revision,
    };
    state.reads.put(tenant, &key, generation, cached.clone());
    Ok(cached_json(cached))
}

fn cached_json(c: crate::read_cache::Cached) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                "application/json".parse().expect("valid"),
            ),
            (header::ETAG, etag(c.revision)),
        ],
        c.body,
    )
        .into_response()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateArtifact {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub labels: Option<Vec<String>>,
}

/// Changes an artifact's name, description or labels (not its versions).
#[utoipa::path(patch, path = "/api/v1/artifacts/{key}", tag = "registry", security(("token" = ["tenant:write"])),
    params(("key" = String, Path), ("If-Match" = Option<String>, Header)), request_body = UpdateArtifact,
    responses((status = 200, body = ArtifactView), (status = 412, body = crate::problem::Problem)))]
pub async fn update_artifact(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
    headers: HeaderMap,
    Json(b): Json<UpdateArtifact>,
) -> ApiResult<Response> {
    let labels = b
        .labels
        .as_deref()
        .map(draven_registry::service::parse_labels)
        .transpose()?;
    let patch = ArtifactPatch {
        name: b.name,
        description: b.description,
        labels,
    };
    let a = state
        .db
        .update_artifact(
            &auth.actor,
            auth.tenant_id(),
            &key,
            if_match(&headers, false)?,
            &patch,
        )
        .await?;
    Ok(with_etag(StatusCode::OK, a.revision, ArtifactView::from(a)))
}

/// Deletes an artifact that has no published version (409 otherwise).
#[utoipa::path(delete, path = "/api/v1/artifacts/{key}", tag = "registry", security(("token" = ["tenant:write"])), params(("key" = String, Path)),
    responses((status = 204), (status = 409, body = crate::problem::Problem)))]
pub async fn delete_artifact(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .registry
        .delete_artifact(&auth.actor, auth.tenant_id(), &key)
        .await
        .map_err(err)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The versions of an artifact, oldest first.
#[utoipa::path(get, path = "/api/v1/artifacts/{key}/versions", tag = "registry", security(("token" = ["tenant:read"])), params(("key" = String, Path)),
    responses((status = 200, body = Vec<VersionView>), (status = 404, body = crate::problem::Problem)))]
pub async fn list_versions(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
) -> ApiResult<axum::Json<Vec<VersionView>>> {
    let vs = state.db.list_versions(auth.tenant_id(), &key).await?;
    Ok(axum::Json(vs.into_iter().map(VersionView::from).collect()))
}

/// Checks the media type against the artifact's kind and the size against the payload limit.
fn payload_for(kind: Kind, body: &RawBody) -> Result<(), Error> {
    let ok = match kind {
        Kind::Bpmn | Kind::Dmn => {
            body.media_type.ends_with("/xml") || body.media_type.ends_with("+xml")
        }
        Kind::Form | Kind::Request => {
            body.media_type == "application/json" || body.media_type.ends_with("+json")
        }
    };
    if !ok {
        return Err(Error::new(
            ErrorCode::UnsupportedMediaType,
            format!("a {kind} payload is sent as {}", kind.content_type()),
        ));
    }
    if body.bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(Error::new(
            ErrorCode::PayloadTooLarge,
            format!("an artifact payload may be at most {MAX_PAYLOAD_BYTES} bytes"),
        ));
    }
    if body.bytes.is_empty() {
        return Err(Error::invalid("body", "the payload is empty"));
    }
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// A label of your own for this version (e.g. `1.4.0`).
    pub version_tag: Option<String>,
}

/// Adds a version: the body is the payload (XML for bpmn/dmn, JSON for form/request). A payload
/// byte-identical to the latest version returns that version (200) instead of a new one (201).
/// The version is a draft; invalid drafts are stored with their findings, but cannot be released.
#[utoipa::path(post, path = "/api/v1/artifacts/{key}/versions", tag = "registry", security(("token" = ["tenant:write"])),
    params(("key" = String, Path), VersionQuery), request_body(content = String, content_type = "application/xml"),
    responses((status = 201, body = VersionView), (status = 200, body = VersionView), (status = 413, body = crate::problem::Problem), (status = 415, body = crate::problem::Problem)))]
pub async fn create_version(
    State(state): State<AppState>,
    auth: Auth,
    Path(key): Path<String>,
    Query(q): Query<VersionQuery>,
    body: RawBody,
) -> ApiResult<Response> {
    let a = state.db.get_artifact(auth.tenant_id(), &key).await?;
    let kind = Kind::parse(&a.kind).unwrap_or(Kind::Bpmn);
    payload_for(kind, &body)?;
    let tag = q.version_tag.unwrap_or_default();
    if tag.chars().count() > 100 {
        return Err(
            Error::invalid("version_tag", "version_tag may have at most 100 characters").into(),
        );
    }
    let (v, created) = state
        .registry
        .add_version(&auth.actor, auth.tenant_id(), &key, body.bytes, &tag)
        .await
        .map_err(err)?;
    let location = format!("/api/v1/artifacts/{key}/versions/{}", v.number);
    let mut r = with_etag(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        v.revision,
        VersionView::from(v),
    );
    r.headers_mut()
        .insert(header::LOCATION, location.parse().expect("path"));
    Ok(r)
}

/// One version with its findings and dependencies.
#[utoipa::path(get, path = "/api/v1/artifacts/{key}/versions/{number}", tag = "registry", security(("token" = ["tenant:read"])),
    params(("key" = String, Path), ("number" = i64, Path)), responses((status = 200, body = VersionView), (status = 404, body = crate::problem::Problem)))]
pub async fn get_version(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, number)): Path<(String, i64)>,
) -> ApiResult<Response> {
    let v = state.db.get_version(auth.tenant_id(), &key, number).await?;
    Ok(with_etag(StatusCode::OK, v.revision, VersionView::from(v)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclaredDependency {
    /// process, decision or form
    pub kind: String,
    pub id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVersion {
    #[serde(default)]
    pub version_tag: Option<String>,
    /// Dependencies the content does not show (replaces the declared list).
    #[serde(default)]
    pub dependencies: Option<Vec<DeclaredDependency>>,
}

/// Changes a draft's tag or declared dependencies. Needs `If-Match`; published versions: 409.
#[utoipa::path(patch, path = "/api/v1/artifacts/{key}/versions/{number}", tag = "registry", security(("token" = ["tenant:write"])),
    params(("key" = String, Path), ("number" = i64, Path), ("If-Match" = String, Header)), request_body = UpdateVersion,
    responses((status = 200, body = VersionView), (status = 409, body = crate::problem::Problem), (status = 412, body = crate::problem::Problem), (status = 428, body = crate::problem::Problem)))]
pub async fn update_version(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, number)): Path<(String, i64)>,
    headers: HeaderMap,
    Json(b): Json<UpdateVersion>,
) -> ApiResult<Response> {
    let declared = match &b.dependencies {
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, d)| {
                    let kind = RefKind::parse(&d.kind).ok_or_else(|| {
                        Error::invalid(
                            &format!("dependencies/{i}/kind"),
                            "kind must be process, decision or form",
                        )
                    })?;
                    if d.id.trim().is_empty() || d.id.len() > 255 {
                        return Err(Error::invalid(
                            &format!("dependencies/{i}/id"),
                            "id must be 1-255 characters",
                        ));
                    }
                    Ok((kind.as_str().to_owned(), d.id.clone()))
                })
                .collect::<Result<Vec<_>, Error>>()?,
        ),
        None => None,
    };
    let expected = if_match(&headers, true)?;
    let v = state
        .db
        .update_draft_meta(
            &auth.actor,
            auth.tenant_id(),
            &key,
            number,
            expected,
            &VersionMeta {
                version_tag: b.version_tag.as_deref(),
                declared: declared.as_deref(),
            },
        )
        .await?;
    Ok(with_etag(StatusCode::OK, v.revision, VersionView::from(v)))
}

/// Replaces a draft's payload. Needs `If-Match`; published versions: 409.
#[utoipa::path(put, path = "/api/v1/artifacts/{key}/versions/{number}/payload", tag = "registry", security(("token" = ["tenant:write"])),
    params(("key" = String, Path), ("number" = i64, Path), ("If-Match" = String, Header)), request_body(content = String, content_type = "application/xml"),
    responses((status = 200, body = VersionView), (status = 409, body = crate::problem::Problem), (status = 412, body = crate::problem::Problem), (status = 428, body = crate::problem::Problem)))]
pub async fn put_payload(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, number)): Path<(String, i64)>,
    headers: HeaderMap,
    body: RawBody,
) -> ApiResult<Response> {
    let v = state.db.get_version(auth.tenant_id(), &key, number).await?;
    if v.state != "draft" {
        return Err(Error::conflict(format!(
            "version {number} of {key} is {}: published versions never change",
            v.state
        ))
        .into());
    }
    payload_for(Kind::parse(&v.kind).unwrap_or(Kind::Bpmn), &body)?;
    let expected = if_match(&headers, true)?;
    let v = state
        .registry
        .replace_draft_payload(
            &auth.actor,
            auth.tenant_id(),
            &key,
            number,
            expected,
            body.bytes,
        )
        .await
        .map_err(err)?;
    Ok(with_etag(StatusCode::OK, v.revision, VersionView::from(v)))
}

/// Downloads a version's payload with its content type.
#[utoipa::path(get, path = "/api/v1/artifacts/{key}/versions/{number}/payload", tag = "registry", security(("token" = ["tenant:read"])),
    params(("key" = String, Path), ("number" = i64, Path)), responses((status = 200, content_type = "application/xml"), (status = 404, body = crate::problem::Problem)))]
pub async fn get_payload(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, number)): Path<(String, i64)>,
) -> ApiResult<Response> {
    let v = state.db.get_version(auth.tenant_id(), &key, number).await?;
    let stream = state.registry.payload(&v).await.map_err(err)?;
    let ext = Kind::parse(&v.kind).map(|k| k.extension()).unwrap_or("bin");
    Ok((
        [
            (
                header::CONTENT_TYPE,
                format!("{}; charset=utf-8", v.content_type),
            ),
            (header::CONTENT_LENGTH, v.size.to_string()),
            (header::ETAG, format!("\"{}\"", v.sha256)),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{key}-{number}.{ext}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Deletes a draft (409 for published versions).
#[utoipa::path(delete, path = "/api/v1/artifacts/{key}/versions/{number}", tag = "registry", security(("token" = ["tenant:write"])),
    params(("key" = String, Path), ("number" = i64, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 409, body = crate::problem::Problem)))]
pub async fn delete_version(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, number)): Path<(String, i64)>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let expected = if_match(&headers, false)?;
    state
        .registry
        .delete_draft(&auth.actor, auth.tenant_id(), &key, number, expected)
        .await
        .map_err(err)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Marks a published version deprecated: kept and downloadable, no longer used to resolve
/// dependencies of new releases.
#[utoipa::path(post, path = "/api/v1/artifacts/{key}/versions/{number}/deprecate", tag = "registry", security(("token" = ["tenant:deploy"])),
    params(("key" = String, Path), ("number" = i64, Path)), responses((status = 200, body = VersionView), (status = 409, body = crate::problem::Problem)))]
pub async fn deprecate_version(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, number)): Path<(String, i64)>,
) -> ApiResult<axum::Json<VersionView>> {
    Ok(axum::Json(
        state
            .db
            .deprecate_version(&auth.actor, auth.tenant_id(), &key, number)
            .await?
            .into(),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EdgeView {
    pub from: String,
    pub element: String,
    pub kind: String,
    pub id: String,
    pub to: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    pub key: String,
    pub kind: String,
    pub version: i64,
    pub state: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MissingView {
    pub from: String,
    pub version: i64,
    pub element: String,
    pub kind: String,
    pub id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GraphView {
    pub nodes: Vec<NodeView>,
    pub edges: Vec<EdgeView>,
    /// Requirements nothing published or in the closure satisfies.
    pub missing: Vec<MissingView>,
    /// Each cycle as a list of artifact keys.
    pub cycles: Vec<Vec<String>>,
}

/// The dependency graph of a version: what it needs, transitively, and what resolves it.
#[utoipa::path(get, path = "/api/v1/artifacts/{key}/versions/{number}/graph", tag = "registry", security(("token" = ["tenant:read"])),
    params(("key" = String, Path), ("number" = i64, Path)), responses((status = 200, body = GraphView), (status = 404, body = crate::problem::Problem)))]
pub async fn version_graph(
    State(state): State<AppState>,
    auth: Auth,
    Path((key, number)): Path<(String, i64)>,
) -> ApiResult<axum::Json<GraphView>> {
    let g = state
        .registry
        .graph(auth.tenant_id(), &key, number)
        .await
        .map_err(err)?;
    Ok(axum::Json(GraphView {
        nodes: g
            .nodes
            .into_iter()
            .map(|n| NodeView {
                key: n.key,
                kind: n.kind,
                version: n.version,
                state: n.state,
            })
            .collect(),
        edges: g
            .edges
            .into_iter()
            .map(|e| EdgeView {
                from: e.from,
                element: e.element,
                kind: e.kind,
                id: e.id,
                to: e.to,
            })
            .collect(),
        missing: g
            .missing
            .into_iter()
            .map(|m| MissingView {
                from: m.from,
                version: m.number,
                element: m.element,
                kind: m.kind,
                id: m.id,
            })
            .collect(),
        cycles: g.cycles,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ValidateQuery {
    /// bpmn, dmn, form or request
    pub kind: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationView {
    /// No finding of severity error.
    pub valid: bool,
    pub errors: usize,
    pub warnings: usize,
    #[schema(value_type = Vec<Object>)]
    pub findings: serde_json::Value,
    pub provides: Vec<RefView>,
    pub requires: Vec<DependencyView>,
}

/// Dry run: validates a payload without storing anything.
#[utoipa::path(post, path = "/api/v1/validate", tag = "registry", security(("token" = ["tenant:read"])), params(ValidateQuery),
    request_body(content = String, content_type = "application/xml"),
    responses((status = 200, body = ValidationView), (status = 413, body = crate::problem::Problem), (status = 415, body = crate::problem::Problem)))]
pub async fn validate_payload(
    Query(q): Query<ValidateQuery>,
    body: RawBody,
) -> ApiResult<axum::Json<ValidationView>> {
    let kind = Kind::parse(&q.kind)
        .ok_or_else(|| Error::invalid("kind", "kind must be bpmn, dmn, form or request"))?;
    payload_for(kind, &body)?;
    let report = validate(kind, &body.bytes);
    let errors = report
        .findings
        .iter()
        .filter(|f| f.severity == draven_registry::validate::Severity::Error)
        .count();
    Ok(axum::Json(ValidationView {
        valid: errors == 0,
        errors,
        warnings: report.findings.len() - errors,
        findings: serde_json::from_str(&draven_registry::service::findings_json(&report.findings))
            .unwrap_or_default(),
        provides: report
            .provides
            .into_iter()
            .map(|(k, id)| RefView {
                kind: k.as_str().into(),
                id,
            })
            .collect(),
        requires: report
            .requires
            .into_iter()
            .map(|r| DependencyView {
                kind: r.kind.as_str().into(),
                id: r.id,
                from: r.from,
                declared: false,
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BundleView {
    pub sha256: String,
    pub size: i64,
    pub created_by: String,
    pub created_at: String,
    /// The bundle's `manifest.json`.
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
    pub download_url: String,
}

impl From<Bundle> for BundleView {
    fn from(b: Bundle) -> BundleView {
        BundleView {
            download_url: format!("/api/v1/bundles/{}/download", b.sha256),
            sha256: b.sha256,
            size: b.size,
            created_by: b.created_by,
            created_at: b.created_at,
            manifest: serde_json::from_str(&b.manifest).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseItem {
    /// Artifact key.
    pub artifact: String,
    pub version: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRelease {
    /// The versions to release; their dependencies are added (newest published provider).
    pub items: Vec<ReleaseItem>,
}

/// Releases a set of versions: validates them and their dependency closure as a whole, writes
/// the deterministic bundle and publishes every draft in it, all or nothing. The same set again
/// returns the same bundle (200).
#[utoipa::path(post, path = "/api/v1/bundles", tag = "registry", security(("token" = ["tenant:deploy"])), request_body = CreateRelease,
    responses((status = 201, body = BundleView), (status = 200, body = BundleView), (status = 409, body = crate::problem::Problem), (status = 422, body = crate::problem::Problem)))]
pub async fn create_bundle(
    State(state): State<AppState>,
    auth: Auth,
    Json(b): Json<CreateRelease>,
) -> ApiResult<Response> {
    let items: Vec<(String, i64)> = b
        .items
        .into_iter()
        .map(|i| (i.artifact, i.version))
        .collect();
    let (bundle, created) = state
        .registry
        .create_release(&auth.actor, auth.tenant_id(), &items)
        .await
        .map_err(err)?;
    let location = format!("/api/v1/bundles/{}", bundle.sha256);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [(header::LOCATION, location)],
        axum::Json(BundleView::from(bundle)),
    )
        .into_response())
}

/// Bundles of the tenant.
#[utoipa::path(get, path = "/api/v1/bundles", tag = "registry", security(("token" = ["tenant:read"])), params(PageQuery),
    responses((status = 200, body = Page<BundleView>)))]
pub async fn list_bundles(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<BundleView>>> {
    let page = state
        .db
        .list_bundles(auth.tenant_id(), q.cursor.as_deref(), q.limit)
        .await?;
    Ok(axum::Json(Page::from_store(page, BundleView::from)))
}

/// One bundle and its manifest.
#[utoipa::path(get, path = "/api/v1/bundles/{sha256}", tag = "registry", security(("token" = ["tenant:read"])), params(("sha256" = String, Path)),
    responses((status = 200, body = BundleView), (status = 404, body = crate::problem::Problem)))]
pub async fn get_bundle(
    State(state): State<AppState>,
    auth: Auth,
    Path(sha): Path<String>,
) -> ApiResult<axum::Json<BundleView>> {
    Ok(axum::Json(
        state.db.get_bundle(auth.tenant_id(), &sha).await?.into(),
    ))
}

/// The bundle's tar.
#[utoipa::path(get, path = "/api/v1/bundles/{sha256}/download", tag = "registry", security(("token" = ["tenant:read"])), params(("sha256" = String, Path)),
    responses((status = 200, content_type = "application/x-tar"), (status = 404, body = crate::problem::Problem)))]
pub async fn download_bundle(
    State(state): State<AppState>,
    auth: Auth,
    Path(sha): Path<String>,
) -> ApiResult<Response> {
    let b = state.db.get_bundle(auth.tenant_id(), &sha).await?;
    let (size, stream) = state
        .blobs
        .get_stream(&b.object_key)
        .await
        .map_err(|e| err(e.into()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::ETAG, format!("\"{}\"", b.sha256)),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"bundle-{}.tar\"",
                    &b.sha256[..12.min(b.sha256.len())]
                ),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublicationView {
    pub id: String,
    pub environment: String,
    pub bundle: String,
    /// pending-approval, live, superseded or rejected
    pub state: String,
    pub requested_by: String,
    pub approval_id: Option<String>,
    pub created_at: String,
    pub live_at: Option<String>,
    pub ended_at: Option<String>,
}

impl From<Publication> for PublicationView {
    fn from(p: Publication) -> PublicationView {
        PublicationView {
            id: p.id,
            environment: p.environment,
            bundle: p.bundle_sha256,
            state: p.state,
            requested_by: p.requested_by,
            approval_id: p.approval_id,
            created_at: p.created_at,
            live_at: p.live_at,
            ended_at: p.ended_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePublication {
    /// Bundle sha256.
    pub bundle: String,
    pub environment: String,
}

/// Publishes a bundle onto an environment: live at once (201), or on a protected environment
/// pending approval by someone other than the requester (202). Re-publishing an earlier bundle
/// is how to roll back.
#[utoipa::path(post, path = "/api/v1/publications", tag = "registry", security(("token" = ["scoped:deploy"])), request_body = CreatePublication,
    responses((status = 201, body = PublicationView), (status = 202, body = PublicationView), (status = 403, body = crate::problem::Problem), (status = 404, body = crate::problem::Problem)))]
pub async fn create_publication(
    State(state): State<AppState>,
    auth: Auth,
    Json(b): Json<CreatePublication>,
) -> ApiResult<Response> {
    let env = state
        .db
        .get_environment(auth.tenant_id(), &b.environment)
        .await
        .map_err(|e| Error::from(e).with_field("environment"))?;
    let target = Target {
        project: None,
        environment: Some(&env.name),
        environment_protected: env.protected,
    };
    auth.require(
        &state,
        Action::Deploy,
        &target,
        &format!("environment:{}", env.name),
    )
    .await?;
    let required = if env.protected { 1 } else { 0 };
    let p = state
        .db
        .create_publication(
            &auth.actor,
            auth.tenant_id(),
            &env.name,
            &b.bundle,
            &auth.principal.user_id,
            required,
        )
        .await?;
    let status = if p.state == "live" {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    let location = format!("/api/v1/publications/{}", p.id);
    Ok((
        status,
        [(header::LOCATION, location)],
        axum::Json(PublicationView::from(p)),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PublicationQuery {
    pub environment: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// Publication history, newest first (optionally of one environment).
#[utoipa::path(get, path = "/api/v1/publications", tag = "registry", security(("token" = ["tenant:read"])), params(PublicationQuery),
    responses((status = 200, body = Page<PublicationView>)))]
pub async fn list_publications(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<PublicationQuery>,
) -> ApiResult<axum::Json<Page<PublicationView>>> {
    let page = state
        .db
        .list_publications(
            auth.tenant_id(),
            q.environment.as_deref(),
            q.cursor.as_deref(),
            q.limit,
        )
        .await?;
    Ok(axum::Json(Page::from_store(page, PublicationView::from)))
}

/// What is live on each environment.
#[utoipa::path(get, path = "/api/v1/publications/live", tag = "registry", security(("token" = ["tenant:read"])),
    responses((status = 200, body = Vec<PublicationView>)))]
pub async fn live_publications(
    State(state): State<AppState>,
    auth: Auth,
) -> ApiResult<axum::Json<Vec<PublicationView>>> {
    Ok(axum::Json(
        state
            .db
            .live_publications(auth.tenant_id())
            .await?
            .into_iter()
            .map(PublicationView::from)
            .collect(),
    ))
}

/// One publication.
#[utoipa::path(get, path = "/api/v1/publications/{id}", tag = "registry", security(("token" = ["tenant:read"])), params(("id" = String, Path)),
    responses((status = 200, body = PublicationView), (status = 404, body = crate::problem::Problem)))]
pub async fn get_publication(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<PublicationView>> {
    Ok(axum::Json(
        state
            .db
            .get_publication(auth.tenant_id(), &id)
            .await?
            .into(),
    ))
}
