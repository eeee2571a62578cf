//! Deploy requests: from (project, environment, ref) to a job that is queued, awaiting
//! approval, or rejected with the rule that refused it.
//!
//! The ref is resolved on the project's repository with real `git`, a tag's signature is
//! verified when the policy wants signed tags, the policy decides, and the store records the
//! job with its verdict in one transaction.

use crate::git::{resolve, verify_tag, GitError};
use crate::policy::{CheckInput, GitRef, Policy};
use draven_core::{Error, ErrorCode};
use draven_store::audit::Actor;
use draven_store::deploy::{Job, NewJob, Project, Verdict};
use draven_store::{Db, StoreError};
use std::path::PathBuf;

/// Default time a deploy may run.
pub const DEFAULT_TIMEOUT_SECS: i64 = 30 * 60;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Domain(#[from] Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Git(#[from] GitError),
}

impl From<DeployError> for Error {
    fn from(e: DeployError) -> Error {
        match e {
            DeployError::Domain(d) => d,
            DeployError::Store(s) => s.into(),
            DeployError::Git(GitError::Domain(d)) => d,
            DeployError::Git(g) => {
                tracing::warn!(error = %g, "git failed");
                Error::new(
                    ErrorCode::Unavailable,
                    format!("the repository could not be read: {g}"),
                )
            }
        }
    }
}

/// Who asks for a deploy.
#[derive(Clone, Debug)]
pub struct Requester<'a> {
    pub actor: &'a Actor,
    pub user_id: &'a str,
    pub username: &'a str,
    /// May override a freeze window (the caller checked the admin right).
    pub override_freeze: bool,
}

fn timeout_of(policy: &Policy) -> i64 {
    if policy.timeout_secs == 0 {
        DEFAULT_TIMEOUT_SECS
    } else {
        i64::from(policy.timeout_secs)
    }
}

pub fn parse_policy(json: &str) -> Result<Policy, Error> {
    serde_json::from_str(json).map_err(|e| {
        Error::new(
            ErrorCode::Internal,
            format!("stored policy is unreadable: {e}"),
        )
    })
}

#[derive(Clone, Debug)]
pub struct Deploys {
    pub db: Db,
    /// Bare repositories used to verify tag signatures.
    pub git_cache: PathBuf,
}

impl Deploys {
    /// Requests a rollback of `environment`: a job of kind `rollback` for the ref and commit of
    /// the successful deploy before the latest one. The runner runs the `rollback` task at that
    /// commit. The ref was allowed when it was deployed, so only approvals and freeze windows of
    /// today's policy apply.
    pub async fn rollback(
        &self,
        tenant_id: &str,
        who: &Requester<'_>,
        project: &Project,
        environment: &str,
    ) -> Result<Job, DeployError> {
        let env = self.db.project_environment(project, environment).await?;
        let policy = parse_policy(&env.policy)?;
        let Some(target) = self
            .db
            .rollback_target(tenant_id, project, environment)
            .await?
        else {
            return Err(Error::conflict(format!(
                "{environment} has no earlier successful deploy to roll back to"
            ))
            .into());
        };
        let freeze = policy
            .active_freeze(chrono::Utc::now())
            .filter(|_| !who.override_freeze);
        let reason;
        let note = format!(
            "rollback to {} ({}) of job {}",
            target.ref_name, target.commit_sha, target.id
        );
        let verdict = match freeze {
            Some((w, end)) => {
                reason = format!(
                    "the environment is frozen until {} ({})",
                    end.to_rfc3339(),
                    w.reason
                );
                Verdict::Refused {
                    rule: "policy-freeze-window",
                    reason: &reason,
                }
            }
            None => Verdict::Allowed {
                approvals: i64::from(policy.required_approvals),
                note: &note,
            },
        };
        let new = NewJob {
            project,
            environment,
            kind: "rollback",
            ref_name: &target.ref_name,
            ref_kind: &target.ref_kind,
            commit_sha: &target.commit_sha,
            requested_by: who.user_id,
            requested_by_name: who.username,
            timeout_secs: timeout_of(&policy),
            verdict,
        };
        Ok(self.db.create_job(who.actor, tenant_id, &new).await?)
    }

    pub fn new(db: Db, git_cache: PathBuf) -> Deploys {
        Deploys { db, git_cache }
    }

    /// Requests a deploy of `ref_input` of `project` onto `environment`.
    pub async fn request(
        &self,
        tenant_id: &str,
        who: &Requester<'_>,
        project: &Project,
        environment: &str,
        ref_input: &str,
    ) -> Result<Job, DeployError> {
        let env = self.db.project_environment(project, environment).await?;
        let policy = parse_policy(&env.policy)?;
        let resolved = resolve(&project.repo, ref_input).await?;
        let signature = match (&resolved.git_ref, policy.signed_tags_only) {
            (GitRef::Tag(t), true) => {
                Some(verify_tag(&self.git_cache, &project.repo, t, &project.allowed_signers).await?)
            }
            _ => None,
        };
        let input = CheckInput {
            git_ref: &resolved.git_ref,
            now: chrono::Utc::now(),
            tag_signature_verified: signature,
            override_freeze: who.override_freeze,
        };
        let decision = policy.check(&input);
        let note = match &decision {
            Ok(d) if d.freeze_overridden => {
                "policy passed; freeze window overridden by an administrator".to_owned()
            }
            Ok(d) if d.required_approvals > 0 => {
                format!("policy passed; {} approval(s) needed", d.required_approvals)
            }
            _ => "policy passed".to_owned(),
        };
        let verdict = match &decision {
            Ok(d) => Verdict::Allowed {
                approvals: i64::from(d.required_approvals),
                note: &note,
            },
            Err(r) => Verdict::Refused {
                rule: r.rule,
                reason: &r.message,
            },
        };
        let ref_kind = match resolved.git_ref {
            GitRef::Branch(_) => "branch",
            GitRef::Tag(_) => "tag",
        };
        let new = NewJob {
            project,
            environment,
            kind: "deploy",
            ref_name: resolved.git_ref.name(),
            ref_kind,
            commit_sha: &resolved.commit_sha,
            requested_by: who.user_id,
            requested_by_name: who.username,
            timeout_secs: timeout_of(&policy),
            verdict,
        };
        Ok(self.db.create_job(who.actor, tenant_id, &new).await?)
    }
}
