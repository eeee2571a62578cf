//! The routes, one module per resource. Each handler declares its access rule in its
//! `#[utoipa::path(security(...))]`; see [`crate::authz`].

pub mod approvals;
pub mod audit;
pub mod callbacks;
pub mod deploy;
pub mod environments;
pub mod functions;
pub mod identity;
pub mod notifications;
pub mod registry;
pub mod runner;
pub mod secrets;
pub mod system;
pub mod tenants;
pub mod webhooks;

use crate::AppState;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Draven",
        description = "Release and runtime control plane: registry, deploy and functions. Errors are RFC 9457 problem+json with a stable `type`; lists are cursor-paged; creating POSTs honour `Idempotency-Key`.",
    ),
    modifiers(&BearerToken),
    components(schemas(crate::problem::Problem)),
    tags(
        (name = "system", description = "Health, readiness, metrics and this document"),
        (name = "identity", description = "Who am I, users, tokens and grants"),
        (name = "tenants", description = "Tenants (system administrators)"),
        (name = "environments", description = "Environments and their protection"),
        (name = "secrets", description = "Write-only encrypted secrets"),
        (name = "audit", description = "The hash-chained audit trail"),
        (name = "registry", description = "Artifacts, versions, validation, bundles and publications"),
        (name = "approvals", description = "Approval requests and votes (two-person rule)"),
        (name = "deploy", description = "Projects, environment policies and deploy jobs"),
        (name = "runner", description = "The runner agent: claim, heartbeat, logs, finish"),
        (name = "callbacks", description = "Per-job callbacks for whatever executes a job (runner or external pipeline), authenticated by the job's callback token"),
        (name = "functions", description = "Function definitions, the invocation gateway (sync and async), invocations and the dead-letter queue"),
        (name = "webhooks", description = "Pipeline providers' webhook deliveries, verified by their signatures"),
    )
)]
struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            crate::authz::SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`drv_…`). The scope listed on each operation is its access rule: `tenant:<action>` needs a tenant-wide grant allowing the action, `scoped:<action>` a grant allowing it in the concerned project/environment, `system` a system administrator, `authenticated` any valid token.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Documents the problem responses every operation can give besides its own: 401/403 on
/// protected operations, 400/413/415/422 where a body is read, 422 where query parameters are
/// parsed, 500/503 everywhere. Operations that document one of these keep their own text.
pub struct StandardErrors;

impl Modify for StandardErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    crate::problem::PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                // Error bodies are problem+json, whatever content type a handler's annotation
                // defaulted to.
                for (code, resp) in op.responses.responses.iter_mut() {
                    if let (true, utoipa::openapi::RefOr::T(r)) =
                        (code.starts_with('4') || code.starts_with('5'), resp)
                    {
                        if let Some(content) = r.content.shift_remove("application/json") {
                            r.content
                                .insert(crate::problem::PROBLEM_JSON.to_owned(), content);
                        }
                    }
                }
                let public = op.security.as_ref().is_some_and(|reqs| {
                    reqs.iter().any(|r| {
                        serde_json::to_value(r)
                            .is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty()))
                    })
                });
                let has_body = op.request_body.is_some();
                let has_query = op
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| matches!(p.parameter_in, ParameterIn::Query));
                let has_path = op
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| matches!(p.parameter_in, ParameterIn::Path));
                let mut add = |code: &str, description: &str| {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| problem(description).into());
                };
                if !public {
                    add("401", "No, unknown, expired or revoked token");
                    add("403", "The token's grants or scopes do not allow this");
                }
                if has_body {
                    add("400", "The body is not well-formed");
                    add("413", "The body is too large");
                    add("415", "The body's media type is not accepted");
                    add("422", "A field is invalid (the problem names it)");
                }
                if has_path {
                    add("404", "No such resource in your tenant");
                }
                if has_query {
                    add("422", "A query parameter is invalid (the problem names it)");
                }
                add(
                    "500",
                    "Internal error (details in the server log under the request id)",
                );
                add(
                    "503",
                    "A dependency (database, object storage) is unavailable",
                );
            }
        }
    }
}

/// Every route of the API, with its OpenAPI description. Call [`finish_document`] on the
/// document `split_for_parts` gives (modifiers on `ApiDoc` run before the routes exist).
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .routes(routes!(system::metrics))
        .routes(routes!(system::actuator_prometheus))
        .routes(routes!(system::openapi_json))
        .routes(routes!(system::docs_page))
        .routes(routes!(identity::me))
        .routes(routes!(identity::my_tokens, identity::create_my_token))
        .routes(routes!(identity::revoke_my_token))
        .routes(routes!(identity::list_users, identity::create_user))
        .routes(routes!(identity::get_user, identity::update_user))
        .routes(routes!(identity::create_user_token))
        .routes(routes!(identity::list_tokens))
        .routes(routes!(identity::revoke_token))
        .routes(routes!(identity::list_grants, identity::create_grant))
        .routes(routes!(identity::delete_grant))
        .routes(routes!(tenants::list_tenants, tenants::create_tenant))
        .routes(routes!(
            environments::list_environments,
            environments::create_environment
        ))
        .routes(routes!(
            environments::get_environment,
            environments::update_environment,
            environments::delete_environment
        ))
        .routes(routes!(secrets::list_secrets))
        .routes(routes!(
            secrets::get_secret,
            secrets::put_secret,
            secrets::delete_secret
        ))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::export_audit))
        .routes(routes!(registry::list_artifacts, registry::create_artifact))
        .routes(routes!(
            registry::get_artifact,
            registry::update_artifact,
            registry::delete_artifact
        ))
        .routes(routes!(registry::list_versions, registry::create_version))
        .routes(routes!(
            registry::get_version,
            registry::update_version,
            registry::delete_version
        ))
        .routes(routes!(registry::get_payload, registry::put_payload))
        .routes(routes!(registry::deprecate_version))
        .routes(routes!(registry::version_graph))
        .routes(routes!(registry::validate_payload))
        .routes(routes!(registry::list_bundles, registry::create_bundle))
        .routes(routes!(registry::get_bundle))
        .routes(routes!(registry::download_bundle))
        .routes(routes!(
            registry::list_publications,
            registry::create_publication
        ))
        .routes(routes!(registry::live_publications))
        .routes(routes!(registry::get_publication))
        .routes(routes!(approvals::list_approvals))
        .routes(routes!(approvals::get_approval))
        .routes(routes!(approvals::vote))
        .routes(routes!(deploy::list_projects, deploy::create_project))
        .routes(routes!(deploy::get_project))
        .routes(routes!(deploy::list_project_environments))
        .routes(routes!(deploy::set_project_environment))
        .routes(routes!(deploy::get_lock, deploy::force_unlock))
        .routes(routes!(deploy::request_deploy))
        .routes(routes!(deploy::request_rollback))
        .routes(routes!(deploy::list_deploys))
        .routes(routes!(deploy::get_deploy))
        .routes(routes!(deploy::cancel_deploy))
        .routes(routes!(runner::claim))
        .routes(routes!(runner::list_runners))
        .routes(routes!(runner::heartbeat))
        .routes(routes!(runner::append_log))
        .routes(routes!(runner::finish))
        .routes(routes!(runner::job_log))
        .routes(routes!(runner::stream_log))
        .routes(routes!(callbacks::start))
        .routes(routes!(callbacks::step))
        .routes(routes!(callbacks::logs))
        .routes(routes!(callbacks::finish))
        .routes(routes!(functions::list_functions))
        .routes(routes!(
            functions::get_function,
            functions::put_function,
            functions::delete_function
        ))
        .routes(routes!(functions::invoke))
        .routes(routes!(functions::invoke_async))
        .routes(routes!(functions::get_invocation))
        .routes(routes!(functions::list_invocations))
        .routes(routes!(functions::function_logs))
        .routes(routes!(
            functions::list_dead_letters,
            functions::purge_dead_letters
        ))
        .routes(routes!(
            functions::get_dead_letter,
            functions::delete_dead_letter
        ))
        .routes(routes!(functions::redrive_dead_letter))
        .routes(routes!(functions::redrive_all))
        .routes(routes!(deploy::set_integration))
        .routes(routes!(
            notifications::get_notifications,
            notifications::set_notifications
        ))
        .routes(routes!(webhooks::github))
        .routes(routes!(webhooks::gitlab))
        .routes(routes!(webhooks::bitbucket))
}

/// `?cursor=…&limit=…` on every list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1–500 (default 50).
    pub limit: Option<u32>,
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T: ToSchema> Page<T> {
    pub fn from_store<U>(page: draven_store::Page<U>, f: impl Fn(U) -> T) -> Page<T> {
        Page {
            items: page.items.into_iter().map(f).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// Completes the generated document: the standard problem responses of every operation.
pub fn finish_document(doc: &mut utoipa::openapi::OpenApi) {
    StandardErrors.modify(doc);
}
