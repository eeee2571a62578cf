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
    /// Where finished jobs' large logs go.
    pub blobs: draven_blob::Blobs,
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
            not_before: None,
            verdict,
        };
        Ok(self.db.create_job(who.actor, tenant_id, &new).await?)
    }

    pub fn new(db: Db, git_cache: PathBuf, blobs: draven_blob::Blobs) -> Deploys {
        Deploys {
            db,
            git_cache,
            blobs,
        }
    }

    /// Moves a finished job's log to object storage when it is larger than `inline_max` bytes
    /// (written first, then the database copy dropped), so the database keeps small logs only.
    pub async fn archive_log_if_large(
        &self,
        tenant_id: &str,
        job_id: &str,
        inline_max: i64,
    ) -> Result<bool, DeployError> {
        if self.db.job_log_size(job_id).await? <= inline_max
            || self.db.job_log_object(tenant_id, job_id).await?.is_some()
        {
            return Ok(false);
        }
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let chunks = self.db.job_log(tenant_id, job_id, after, 5000).await?;
            let Some(last) = chunks.last() else { break };
            after = last.seq;
            for c in &chunks {
                out.extend(serde_json::to_vec(&serde_json::json!({"seq": c.seq, "at": c.at, "stream": c.stream, "text": c.text})).unwrap_or_default());
                out.push(b'\n');
            }
        }
        let key = format!("tenants/{tenant_id}/jobs/{job_id}/log.jsonl");
        self.blobs
            .put_immutable(&key, bytes::Bytes::from(out))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "could not archive a job log; it stays in the database");
                Error::new(ErrorCode::Unavailable, "object storage is unavailable")
            })?;
        self.db.move_job_log(tenant_id, job_id, &key).await?;
        Ok(true)
    }

    /// A job's log chunks after `after`, wherever the log lives.
    pub async fn log_chunks(
        &self,
        tenant_id: &str,
        job_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<draven_store::runner::LogChunk>, DeployError> {
        let Some(key) = self.db.job_log_object(tenant_id, job_id).await? else {
            return Ok(self.db.job_log(tenant_id, job_id, after, limit).await?);
        };
        let bytes = self.blobs.get(&key).await.map_err(|e| {
            tracing::warn!(error = %e, "could not read an archived job log");
            Error::new(ErrorCode::Unavailable, "object storage is unavailable")
        })?;
        let mut out = Vec::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            let seq = v["seq"].as_i64().unwrap_or(0);
            if seq > after && (out.len() as i64) < limit {
                out.push(draven_store::runner::LogChunk {
                    seq,
                    at: v["at"].as_str().unwrap_or_default().to_owned(),
                    stream: v["stream"].as_str().unwrap_or_default().to_owned(),
                    text: v["text"].as_str().unwrap_or_default().to_owned(),
                });
            }
        }
        Ok(out)
    }

    /// Requests a deploy of `ref_input` of `project` onto `environment`.
    pub async fn request(
        &self,
        tenant_id: &str,
        who: &Requester<'_>,
        project: &Project,
        environment: &str,
        ref_input: &str,
        not_before: Option<i64>,
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
            not_before,
            verdict,
        };
        Ok(self.db.create_job(who.actor, tenant_id, &new).await?)
    }
}
