//! Who may do what: roles, grants, token scopes and the one function that decides.
//!
//! Every permission decision in Draven ends in [`Principal::decide`]. The HTTP layer maps each
//! route to a [`RouteRule`] and asks this module; domain code asks again with a concrete
//! [`Target`] (project, environment) when the route alone cannot know it.

use crate::error::{Error, ErrorCode};
use std::fmt;
use std::str::FromStr;

/// Roles granted to a user in a tenant, optionally narrowed to a project and/or environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Editor,
    Deployer,
    Approver,
    Admin,
}

/// What a request wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read anything in the tenant (secrets only as metadata).
    Read,
    /// Create and change drafts: artifacts, function definitions, project configuration.
    Write,
    /// Request deploys and publications.
    Deploy,
    /// Approve or reject someone else's deploy or publication.
    Approve,
    /// Invoke functions.
    Invoke,
    /// Write and delete secrets.
    ManageSecrets,
    /// Manage the tenant itself: users, tokens of others, grants, environments, audit.
    Administer,
    /// Execute deploy jobs (the runner agent).
    Run,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::Read,
        Action::Write,
        Action::Deploy,
        Action::Approve,
        Action::Invoke,
        Action::ManageSecrets,
        Action::Administer,
        Action::Run,
    ];
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Viewer,
        Role::Editor,
        Role::Deployer,
        Role::Approver,
        Role::Admin,
    ];

    /// The one table of role → actions.
    pub fn allows(self, action: Action) -> bool {
        use Action::*;
        match self {
            Role::Viewer => matches!(action, Read),
            Role::Editor => matches!(action, Read | Write | Invoke),
            Role::Deployer => matches!(action, Read | Deploy | Invoke | Run),
            Role::Approver => matches!(action, Read | Approve),
            Role::Admin => true,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Deployer => "deployer",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Role, Error> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| Error::invalid("role", format!("unknown role {s:?}; expected one of viewer, editor, deployer, approver, admin")))
    }
}

/// A scope a token may be narrowed to. A token with scopes can do only what both its user's
/// grants and its scopes allow; a token without scopes can do all its user may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenScope {
    Read,
    Write,
    Deploy,
    Approve,
    Invoke,
    Admin,
    /// Only what a runner agent does: take and execute deploy jobs.
    Runner,
}

impl TokenScope {
    pub const ALL: [TokenScope; 7] = [
        TokenScope::Read,
        TokenScope::Write,
        TokenScope::Deploy,
        TokenScope::Approve,
        TokenScope::Invoke,
        TokenScope::Admin,
        TokenScope::Runner,
    ];

    pub fn covers(self, action: Action) -> bool {
        match self {
            TokenScope::Read => action == Action::Read,
            TokenScope::Write => action == Action::Write,
            TokenScope::Deploy => action == Action::Deploy,
            TokenScope::Approve => action == Action::Approve,
            TokenScope::Invoke => action == Action::Invoke,
            TokenScope::Admin => true,
            TokenScope::Runner => action == Action::Run,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::Write => "write",
            TokenScope::Deploy => "deploy",
            TokenScope::Approve => "approve",
            TokenScope::Invoke => "invoke",
            TokenScope::Admin => "admin",
            TokenScope::Runner => "runner",
        }
    }
}

impl FromStr for TokenScope {
    type Err = Error;
    fn from_str(s: &str) -> Result<TokenScope, Error> {
        TokenScope::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| Error::invalid("scopes", format!("unknown token scope {s:?}; expected read, write, deploy, approve, invoke, admin or runner")))
    }
}

/// A role held in a tenant, narrowed to a project and/or an environment when those are set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    pub project: Option<String>,
    pub environment: Option<String>,
}

impl Grant {
    pub fn tenant_wide(role: Role) -> Grant {
        Grant {
            role,
            project: None,
            environment: None,
        }
    }

    fn is_tenant_wide(&self) -> bool {
        self.project.is_none() && self.environment.is_none()
    }
}

/// What an action is aimed at. `Target::tenant()` for tenant-level resources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target<'a> {
    pub project: Option<&'a str>,
    pub environment: Option<&'a str>,
    /// The environment is protected: deploy and approve need a grant naming it explicitly.
    pub environment_protected: bool,
}

impl Target<'_> {
    pub fn tenant() -> Target<'static> {
        Target::default()
    }
}

/// The authenticated caller: a user of one tenant, through one token (or a session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: String,
    pub tenant: String,
    pub user_id: String,
    pub username: String,
    /// May manage tenants (the bootstrap admin). Grants no rights inside other tenants' data.
    pub system_admin: bool,
    pub grants: Vec<Grant>,
    /// `None`: not narrowed.
    pub token_scopes: Option<Vec<TokenScope>>,
    pub token_id: Option<String>,
}

/// The outcome of a permission check; a denial says why, for the audit trail and the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

impl Decision {
    pub fn into_result(self) -> Result<(), Error> {
        match self {
            Decision::Allow => Ok(()),
            Decision::Deny(why) => Err(Error::new(ErrorCode::Forbidden, why)),
        }
    }
}

/// The rule a route declares. Every API route declares one (in its OpenAPI `security`
/// requirement); a route without one is refused, so a new route cannot forget authorization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteRule {
    /// No authentication (health, metrics, OpenAPI).
    Public,
    /// Any authenticated principal (e.g. "who am I").
    Authenticated,
    /// The action on the tenant as a whole (tenant-wide grant needed, except `Read`, which any
    /// grant in the tenant gives).
    Tenant(Action),
    /// The action somewhere in the tenant: any grant allowing it, whatever its scope. The
    /// handler must check again against the concrete project/environment.
    Scoped(Action),
    /// Only a system administrator (tenant management).
    System,
}

impl RouteRule {
    /// Parses the scope string a route declares, e.g. `tenant:read`, `scoped:deploy`, `system`.
    pub fn parse(s: &str) -> Option<RouteRule> {
        let action = |a: &str| -> Option<Action> {
            Some(match a {
                "read" => Action::Read,
                "write" => Action::Write,
                "deploy" => Action::Deploy,
                "approve" => Action::Approve,
                "invoke" => Action::Invoke,
                "secrets" => Action::ManageSecrets,
                "admin" => Action::Administer,
                "run" => Action::Run,
                _ => return None,
            })
        };
        match s.split_once(':') {
            None if s == "public" => Some(RouteRule::Public),
            None if s == "authenticated" => Some(RouteRule::Authenticated),
            None if s == "system" => Some(RouteRule::System),
            Some(("tenant", a)) => action(a).map(RouteRule::Tenant),
            Some(("scoped", a)) => action(a).map(RouteRule::Scoped),
            _ => None,
        }
    }
}

impl Principal {
    fn token_allows(&self, action: Action) -> bool {
        match &self.token_scopes {
            None => true,
            Some(scopes) => scopes.iter().any(|s| s.covers(action)),
        }
    }

    /// Decides `action` on `target`.
    pub fn decide(&self, action: Action, target: &Target<'_>) -> Decision {
        if !self.token_allows(action) {
            return Decision::Deny(format!("this token's scopes do not include {action:?}"));
        }
        let protected_action = matches!(action, Action::Deploy | Action::Approve);
        let matching = self.grants.iter().any(|g| {
            if !g.role.allows(action) {
                return false;
            }
            let project_ok = match (&g.project, target.project) {
                (None, _) => true,
                (Some(p), Some(t)) => p == t,
                (Some(_), None) => false,
            };
            let env_ok = match (&g.environment, target.environment) {
                (None, _) => !(target.environment_protected && protected_action),
                (Some(e), Some(t)) => e == t,
                (Some(_), None) => false,
            };
            project_ok && env_ok
        });
        if matching {
            Decision::Allow
        } else if target.environment_protected && protected_action {
            Decision::Deny(format!(
                "environment {:?} is protected: {action:?} needs a grant naming it",
                target.environment.unwrap_or_default()
            ))
        } else {
            Decision::Deny(format!("no grant allows {action:?} here"))
        }
    }

    /// Decides a route's declared rule, before the handler knows any concrete target.
    pub fn decide_route(&self, rule: RouteRule) -> Decision {
        match rule {
            RouteRule::Public | RouteRule::Authenticated => Decision::Allow,
            RouteRule::System if self.system_admin && self.token_allows(Action::Administer) => {
                Decision::Allow
            }
            RouteRule::System => Decision::Deny("only a system administrator may do this".into()),
            RouteRule::Tenant(Action::Read) => {
                if !self.token_allows(Action::Read) {
                    Decision::Deny("this token's scopes do not include Read".into())
                } else if self.grants.is_empty() {
                    Decision::Deny("no grant in this tenant".into())
                } else {
                    Decision::Allow
                }
            }
            RouteRule::Tenant(action) => {
                if !self.token_allows(action) {
                    return Decision::Deny(format!(
                        "this token's scopes do not include {action:?}"
                    ));
                }
                if self
                    .grants
                    .iter()
                    .any(|g| g.is_tenant_wide() && g.role.allows(action))
                {
                    Decision::Allow
                } else {
                    Decision::Deny(format!("{action:?} needs a tenant-wide grant"))
                }
            }
            RouteRule::Scoped(action) => {
                if !self.token_allows(action) {
                    return Decision::Deny(format!(
                        "this token's scopes do not include {action:?}"
                    ));
                }
                if self.grants.iter().any(|g| g.role.allows(action)) {
                    Decision::Allow
                } else {
                    Decision::Deny(format!("no grant allows {action:?}"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(grants: Vec<Grant>) -> Principal {
        Principal {
            tenant_id: "t".into(),
            tenant: "acme".into(),
            user_id: "u".into(),
            username: "ann".into(),
            system_admin: false,
            grants,
            token_scopes: None,
            token_id: None,
        }
    }

    fn grant(role: Role, project: Option<&str>, env: Option<&str>) -> Grant {
        Grant {
            role,
            project: project.map(Into::into),
            environment: env.map(Into::into),
        }
    }

    /// The role table, written out so a change to it is a visible change to this test.
    #[test]
    fn role_table_is_exhaustive() {
        use Action::*;
        let expected: [(Role, &[Action]); 5] = [
            (Role::Viewer, &[Read]),
            (Role::Editor, &[Read, Write, Invoke]),
            (Role::Deployer, &[Read, Deploy, Invoke, Run]),
            (Role::Approver, &[Read, Approve]),
            (Role::Admin, &Action::ALL),
        ];
        for (role, allowed) in expected {
            for action in Action::ALL {
                assert_eq!(
                    role.allows(action),
                    allowed.contains(&action),
                    "{role:?} {action:?}"
                );
            }
        }
    }

    #[test]
    fn scoped_grants_match_only_their_scope() {
        let p = principal(vec![grant(Role::Deployer, Some("shop"), Some("demo"))]);
        let t = |project, environment| Target {
            project,
            environment,
            environment_protected: false,
        };
        assert_eq!(
            p.decide(Action::Deploy, &t(Some("shop"), Some("demo"))),
            Decision::Allow
        );
        assert!(matches!(
            p.decide(Action::Deploy, &t(Some("shop"), Some("stage"))),
            Decision::Deny(_)
        ));
        assert!(matches!(
            p.decide(Action::Deploy, &t(Some("blog"), Some("demo"))),
            Decision::Deny(_)
        ));
        assert!(matches!(
            p.decide(Action::Deploy, &Target::tenant()),
            Decision::Deny(_)
        ));
        assert!(matches!(
            p.decide(Action::Approve, &t(Some("shop"), Some("demo"))),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn protected_environments_need_an_explicit_grant_even_for_admins() {
        let prod = Target {
            project: Some("shop"),
            environment: Some("prod"),
            environment_protected: true,
        };
        let admin = principal(vec![Grant::tenant_wide(Role::Admin)]);
        assert!(
            matches!(admin.decide(Action::Deploy, &prod), Decision::Deny(why) if why.contains("protected"))
        );
        assert!(matches!(
            admin.decide(Action::Approve, &prod),
            Decision::Deny(_)
        ));
        // Reading a protected environment needs nothing special.
        assert_eq!(admin.decide(Action::Read, &prod), Decision::Allow);
        let named = principal(vec![grant(Role::Approver, None, Some("prod"))]);
        assert_eq!(named.decide(Action::Approve, &prod), Decision::Allow);
        assert!(matches!(
            named.decide(Action::Deploy, &prod),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn token_scopes_narrow_the_user() {
        let mut p = principal(vec![Grant::tenant_wide(Role::Admin)]);
        p.token_scopes = Some(vec![TokenScope::Invoke]);
        assert_eq!(p.decide(Action::Invoke, &Target::tenant()), Decision::Allow);
        assert!(matches!(
            p.decide(Action::Read, &Target::tenant()),
            Decision::Deny(_)
        ));
        assert!(matches!(
            p.decide_route(RouteRule::Tenant(Action::Administer)),
            Decision::Deny(_)
        ));
        // Scopes never widen: an invoke-scoped viewer still cannot invoke.
        let mut v = principal(vec![Grant::tenant_wide(Role::Viewer)]);
        v.token_scopes = Some(vec![TokenScope::Invoke]);
        assert!(matches!(
            v.decide(Action::Invoke, &Target::tenant()),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn route_rules() {
        let viewer = principal(vec![grant(Role::Viewer, Some("shop"), None)]);
        let admin = principal(vec![Grant::tenant_wide(Role::Admin)]);
        let nobody = principal(vec![]);
        let check = |p: &Principal, rule: &str, allow: bool| {
            let rule = RouteRule::parse(rule).expect(rule);
            assert_eq!(
                p.decide_route(rule) == Decision::Allow,
                allow,
                "{} {rule:?}",
                p.username
            );
        };
        check(&viewer, "tenant:read", true);
        check(&viewer, "tenant:write", false);
        check(&viewer, "scoped:read", true);
        check(&viewer, "scoped:deploy", false);
        check(&nobody, "tenant:read", false);
        check(&nobody, "authenticated", true);
        check(&admin, "tenant:admin", true);
        check(&admin, "system", false);
        let mut root = admin.clone();
        root.system_admin = true;
        check(&root, "system", true);
        let deployer_in_shop = principal(vec![grant(Role::Deployer, Some("shop"), None)]);
        check(&deployer_in_shop, "scoped:deploy", true);
        check(&deployer_in_shop, "tenant:deploy", false);
    }

    #[test]
    fn route_rule_parsing() {
        assert_eq!(RouteRule::parse("public"), Some(RouteRule::Public));
        assert_eq!(
            RouteRule::parse("tenant:secrets"),
            Some(RouteRule::Tenant(Action::ManageSecrets))
        );
        assert_eq!(
            RouteRule::parse("scoped:approve"),
            Some(RouteRule::Scoped(Action::Approve))
        );
        assert_eq!(RouteRule::parse("tenant:fly"), None);
        assert_eq!(RouteRule::parse("whatever"), None);
    }

    #[test]
    fn parse_roles_and_scopes() {
        assert_eq!("approver".parse::<Role>().unwrap(), Role::Approver);
        assert_eq!(
            "nope".parse::<Role>().unwrap_err().field.as_deref(),
            Some("role")
        );
        assert_eq!("invoke".parse::<TokenScope>().unwrap(), TokenScope::Invoke);
    }
}
