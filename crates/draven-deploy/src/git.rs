//! Real `git`, for what the control plane must know about a ref before it deploys it: which
//! commit it names (`git ls-remote`) and whether a tag's signature verifies against the
//! project's allowed signers (`git verify-tag` with SSH signatures, in a bare cache repository
//! per remote).
//!
//! Git runs as a child process with a timeout, no terminal prompts and no system or global
//! configuration, so a hostile remote or a slow network cannot hang a request.

use crate::policy::GitRef;
use draven_core::Error;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

pub const GIT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{0}")]
    Domain(#[from] Error),
    #[error("git {args}: {message}")]
    Failed { args: String, message: String },
    #[error("git did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot run git: {0}")]
    Spawn(#[from] std::io::Error),
}

/// A ref resolved on the remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub git_ref: GitRef,
    /// The commit the ref points at (annotated tags peeled).
    pub commit_sha: String,
}

/// Runs git in `dir` (or the current directory) with the hardened environment and the timeout;
/// its standard output, or the failure with its standard error.
pub async fn git(dir: Option<&Path>, args: &[&str]) -> Result<String, GitError> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ASKPASS", "/bin/false")
        .env("SSH_ASKPASS", "/bin/false")
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(GIT_TIMEOUT, cmd.output())
        .await
        .map_err(|_| GitError::Timeout(GIT_TIMEOUT))??;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stderr)
            .trim()
            .chars()
            .take(500)
            .collect();
        return Err(GitError::Failed {
            args: args.join(" "),
            message,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolves a branch or tag name (or `refs/heads/…`, `refs/tags/…`) on `remote` to its commit.
/// A name that is both a branch and a tag must be written in full.
pub async fn resolve(remote: &str, name: &str) -> Result<Resolved, GitError> {
    if is_sha(name) {
        return Err(Error::invalid(
            "ref",
            "deploy a branch or a tag, not a bare commit: policies judge branches and tags",
        )
        .into());
    }
    let candidates: Vec<GitRef> = if name.starts_with("refs/") {
        vec![GitRef::parse(name, false)?]
    } else {
        vec![GitRef::parse(name, false)?, GitRef::parse(name, true)?]
    };
    let mut args = vec!["ls-remote", "--", remote];
    // The `^{}` patterns bring the peeled commit of annotated tags.
    let full: Vec<String> = candidates
        .iter()
        .flat_map(|c| [c.full_name(), format!("{}^{{}}", c.full_name())])
        .collect();
    args.extend(full.iter().map(String::as_str));
    let out = git(None, &args).await?;
    let mut found: Vec<(GitRef, String)> = Vec::new();
    let mut peeled: Vec<(String, String)> = Vec::new();
    for line in out.lines() {
        let Some((sha, r)) = line.split_once('\t') else {
            continue;
        };
        if let Some(base) = r.strip_suffix("^{}") {
            peeled.push((base.to_owned(), sha.to_owned()));
        } else if let Some(c) = candidates.iter().find(|c| c.full_name() == r) {
            found.push((c.clone(), sha.to_owned()));
        }
    }
    match found.len() {
        0 => Err(Error::invalid(
            "ref",
            format!("{name:?} is neither a branch nor a tag of the repository"),
        )
        .into()),
        1 => {
            let (git_ref, sha) = found.remove(0);
            let commit_sha = peeled
                .into_iter()
                .find(|(r, _)| *r == git_ref.full_name())
                .map(|(_, s)| s)
                .unwrap_or(sha);
            Ok(Resolved {
                git_ref,
                commit_sha,
            })
        }
        _ => Err(Error::invalid(
            "ref",
            format!(
                "{name:?} is both a branch and a tag; write refs/heads/{name} or refs/tags/{name}"
            ),
        )
        .into()),
    }
}

/// Verifies `tag`'s SSH signature against `allowed_signers` (the `ssh-keygen` allowed-signers
/// format), fetching the tag into a bare cache repository under `cache_dir`. `Ok(false)` when
/// the tag is unsigned or the signature does not verify.
pub async fn verify_tag(
    cache_dir: &Path,
    remote: &str,
    tag: &str,
    allowed_signers: &str,
) -> Result<bool, GitError> {
    let repo = cache_repo(cache_dir, remote).await?;
    let refspec = format!("+refs/tags/{tag}:refs/tags/{tag}");
    git(
        Some(&repo),
        &["fetch", "--no-tags", "--quiet", "--", remote, &refspec],
    )
    .await?;
    let signers = repo.join("allowed_signers");
    tokio::fs::write(&signers, allowed_signers).await?;
    let signers_arg = format!("gpg.ssh.allowedSignersFile={}", signers.display());
    match git(
        Some(&repo),
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signers_arg,
            "verify-tag",
            "--",
            tag,
        ],
    )
    .await
    {
        Ok(_) => Ok(true),
        Err(GitError::Failed { message, .. }) => {
            tracing::info!(tag, %message, "tag signature did not verify");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

async fn cache_repo(cache_dir: &Path, remote: &str) -> Result<PathBuf, GitError> {
    let dir = cache_dir.join(&hex::encode(Sha256::digest(remote.as_bytes()))[..16]);
    if !dir.join("HEAD").exists() {
        tokio::fs::create_dir_all(&dir).await?;
        git(Some(&dir), &["init", "--bare", "--quiet"]).await?;
    }
    Ok(dir)
}
