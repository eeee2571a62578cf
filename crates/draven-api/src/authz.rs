//! Authentication and authorization for every route.
//!
//! Each route declares its access rule as the OpenAPI `security` requirement of its handler
//! (`security(("token" = ["tenant:admin"]))`, or `security(())` for public routes). At start the
//! rules are read out of the generated OpenAPI document into a [`RoutePolicy`], and one
//! route-level middleware enforces them before any handler runs. A route that declares nothing
//! is refused, so a new route cannot forget authorization, and the published API document is by
//! construction what is enforced. Every refusal is audited.

use crate::problem::{current_request_id, problem_response, ApiError};
use crate::AppState;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;
use draven_core::{Action, Decision, Error, ErrorCode, Principal, RouteRule, Target};
use draven_store::audit::Actor;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The security scheme name routes use in their OpenAPI `security` requirement.
pub const SCHEME: &str = "token";

/// (method, route template) → rule, read from the OpenAPI document.
#[derive(Clone, Debug, Default)]
pub struct RoutePolicy {
    rules: HashMap<(Method, String), RouteRule>,
}

impl RoutePolicy {
    /// Reads every operation's rule. Fails on a scope that is not a valid rule (a typo in a
    /// handler's annotation stops the server from starting, rather than opening a route).
    pub fn from_openapi(doc: &utoipa::openapi::OpenApi) -> Result<RoutePolicy, String> {
        let json = serde_json::to_value(doc).map_err(|e| e.to_string())?;
        let mut rules = HashMap::new();
        let paths = json
            .get("paths")
            .and_then(|p| p.as_object())
            .cloned()
            .unwrap_or_default();
        for (path, item) in paths {
            for (method, op) in item.as_object().into_iter().flatten() {
                let Ok(method) = method.to_uppercase().parse::<Method>() else {
                    continue;
                };
                let Some(reqs) = op.get("security").and_then(|s| s.as_array()) else {
                    continue;
                };
                let rule = if reqs
                    .iter()
                    .any(|r| r.as_object().is_some_and(|o| o.is_empty()))
                {
                    RouteRule::Public
                } else {
                    let scope = reqs
                        .iter()
                        .find_map(|r| {
                            r.get(SCHEME)?
                                .as_array()?
                                .first()?
                                .as_str()
                                .map(str::to_owned)
                        })
                        .ok_or_else(|| {
                            format!("{method} {path}: security requirement names no {SCHEME} scope")
                        })?;
                    RouteRule::parse(&scope).ok_or_else(|| {
                        format!("{method} {path}: {scope:?} is not an access rule")
                    })?
                };
                rules.insert((method, path.clone()), rule);
            }
        }
        Ok(RoutePolicy { rules })
    }

    pub fn rule(&self, method: &Method, route: &str) -> Option<RouteRule> {
        // HEAD is served by GET handlers.
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.rules.get(&(method.clone(), route.to_owned())).copied()
    }

    /// The methods that have a rule on `route`, sorted.
    pub fn methods_of(&self, route: &str) -> Vec<String> {
        let mut m: Vec<String> = self
            .rules
            .keys()
            .filter(|(_, r)| r == route)
            .map(|(m, _)| m.to_string())
            .collect();
        m.sort();
        m
    }

    pub fn rules(&self) -> impl Iterator<Item = (&(Method, String), &RouteRule)> {
        self.rules.iter()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Recently authenticated tokens, so a busy client costs no database round trip per request.
///
/// Entries live [`PrincipalCache::TTL`]; every identity change made through this server (token
/// revoked, user disabled, grant added or removed) clears the cache at once, so such changes are
/// immediate here and take at most the TTL on other servers sharing the database (or after a
/// `draven admin` change).
#[derive(Debug, Default)]
pub struct PrincipalCache {
    entries: std::sync::RwLock<HashMap<String, (Arc<Principal>, std::time::Instant)>>,
}

impl PrincipalCache {
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(5);
    const MAX_ENTRIES: usize = 10_000;

    fn key(token: &str) -> String {
        draven_store::identity::hash_token(token)
    }

    pub fn get(&self, token: &str) -> Option<Arc<Principal>> {
        let entries = self.entries.read().ok()?;
        let (p, at) = entries.get(&Self::key(token))?;
        (at.elapsed() < Self::TTL).then(|| p.clone())
    }

    pub fn put(&self, token: &str, p: Arc<Principal>) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= Self::MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(Self::key(token), (p, std::time::Instant::now()));
        }
    }

    /// Forgets everything: called after any change to tokens, users or grants.
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }
}

/// The authenticated caller of a request, and how to name them in the audit trail.
#[derive(Clone, Debug)]
pub struct Auth {
    pub principal: Arc<Principal>,
    pub actor: Actor,
}

impl Auth {
    pub fn tenant_id(&self) -> &str {
        &self.principal.tenant_id
    }

    /// Checks `action` on a concrete target (project, environment); audits a refusal.
    pub async fn require(
        &self,
        state: &AppState,
        action: Action,
        target: &Target<'_>,
        what: &str,
    ) -> Result<(), ApiError> {
        match self.principal.decide(action, target) {
            Decision::Allow => Ok(()),
            Decision::Deny(why) => {
                metrics::counter!("draven_auth_denials_total", "reason" => "forbidden")
                    .increment(1);
                state
                    .db
                    .audit(
                        self.actor
                            .denied(&format!("{action:?}").to_lowercase(), what, &why),
                    )
                    .await?;
                Err(ApiError(Error::forbidden(why)))
            }
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Auth>().cloned().ok_or_else(|| {
            // Only reachable if a public route asks for a principal: a programming error.
            tracing::error!("handler wants a principal on a route that declares none");
            ApiError(Error::internal())
        })
    }
}

fn client_addr(req: &Request) -> Option<String> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A principal the web UI authenticated by its session cookie, attached to the requests the UI
/// makes to this router in-process (see `crate::ui`). Only code can attach an extension, so a
/// network request can never carry one; the route's rule is still checked and refusals audited.
#[derive(Clone, Debug)]
pub struct SessionPrincipal(pub Arc<Principal>);

/// The route-level middleware that enforces [`RoutePolicy`].
pub async fn authorize(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let target = format!("route:{} {route}", req.method());
    let Some(rule) = state.policy.rule(req.method(), &route) else {
        let allowed = state.policy.methods_of(&route);
        if !allowed.is_empty() {
            let mut r = problem_response(&Error::new(
                ErrorCode::MethodNotAllowed,
                format!(
                    "{} is not allowed on {route}; allowed: {}",
                    req.method(),
                    allowed.join(", ")
                ),
            ));
            if let Ok(v) = axum::http::HeaderValue::from_str(&allowed.join(", ")) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            return r;
        }
        tracing::error!(%target, "route declares no access rule; refusing");
        return problem_response(&Error::new(
            ErrorCode::Internal,
            "this route declares no access rule and is refused",
        ));
    };
    if rule == RouteRule::Public {
        return next.run(req).await;
    }
    let base_actor = Actor {
        tenant_id: None,
        name: "anonymous".into(),
        request_id: current_request_id(),
        client_addr: client_addr(&req),
    };
    let session = req
        .extensions()
        .get::<SessionPrincipal>()
        .map(|s| s.0.clone());
    let principal = match bearer(&req) {
        _ if session.is_some() => session,
        None => None,
        Some(token) => match state.principals.get(token) {
            Some(p) => Some(p),
            None => match state.db.authenticate(token).await {
                Ok(Some(p)) => {
                    let p = Arc::new(p);
                    state.principals.put(token, p.clone());
                    Some(p)
                }
                Ok(None) => None,
                Err(e) => return problem_response(&Error::from(e)),
            },
        },
    };
    let Some(principal) = principal else {
        let why = if bearer(&req).is_some() {
            "invalid, expired or revoked token"
        } else {
            "no bearer token"
        };
        metrics::counter!("draven_auth_denials_total", "reason" => "unauthenticated").increment(1);
        if let Err(e) = state
            .db
            .audit(base_actor.denied("auth.authenticate", &target, why))
            .await
        {
            return problem_response(&Error::from(e));
        }
        return problem_response(&Error::new(
            ErrorCode::Unauthenticated,
            format!("{why}: send Authorization: Bearer <token>"),
        ));
    };
    let actor = Actor {
        tenant_id: Some(principal.tenant_id.clone()),
        name: format!("user:{}", principal.username),
        ..base_actor
    };
    if let Decision::Deny(why) = principal.decide_route(rule) {
        metrics::counter!("draven_auth_denials_total", "reason" => "forbidden").increment(1);
        if let Err(e) = state
            .db
            .audit(actor.denied("auth.authorize", &target, &why))
            .await
        {
            return problem_response(&Error::from(e));
        }
        return problem_response(&Error::forbidden(why));
    }
    req.extensions_mut().insert(Auth { principal, actor });
    next.run(req).await
}
