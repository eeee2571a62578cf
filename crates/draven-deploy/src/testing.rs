//! Test support: a real git repository with branches, tags and SSH-signed tags, made with real
//! `git` and `ssh-keygen` in a temporary directory.

use std::path::Path;
use std::process::Command;

/// Runs a command in `dir` with a clean git identity and configuration; panics on failure.
pub fn run(dir: &Path, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Ann")
        .env("GIT_AUTHOR_EMAIL", "ann@example.com")
        .env("GIT_COMMITTER_NAME", "Ann")
        .env("GIT_COMMITTER_EMAIL", "ann@example.com")
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository with branches `main`, `develop` and `feature/x`, a lightweight tag `light`, an
/// annotated unsigned tag `v0.9.0`, `v1.0.0` signed by ann, `v1.0.1` signed by mallory, and
/// `both`, a name that is a branch and a tag.
pub struct GitFixture {
    pub dir: tempfile::TempDir,
    /// The repository path, usable as a git URL.
    pub repo: String,
    /// An allowed-signers file content that trusts ann only.
    pub ann_signers: String,
    pub main_sha: String,
}

pub fn fixture() -> GitFixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = dir.path().join("app");
    std::fs::create_dir(&repo).expect("repo dir");
    run(&repo, "git", &["init", "--quiet", "-b", "main"]);
    std::fs::write(repo.join("README"), "v1").expect("write");
    run(&repo, "git", &["add", "."]);
    run(&repo, "git", &["commit", "--quiet", "-m", "one"]);
    let main_sha = run(&repo, "git", &["rev-parse", "HEAD"]);
    run(&repo, "git", &["branch", "develop"]);
    run(&repo, "git", &["branch", "feature/x"]);
    run(&repo, "git", &["tag", "light"]);
    run(&repo, "git", &["tag", "-a", "v0.9.0", "-m", "annotated"]);
    for who in ["ann", "mallory"] {
        run(
            dir.path(),
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-C", who, "-f", who],
        );
    }
    for (who, tag) in [("ann", "v1.0.0"), ("mallory", "v1.0.1")] {
        let key = format!("user.signingkey={}", dir.path().join(who).display());
        run(
            &repo,
            "git",
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &key,
                "tag",
                "-s",
                tag,
                "-m",
                "release",
            ],
        );
    }
    run(&repo, "git", &["branch", "both"]);
    run(&repo, "git", &["tag", "both"]);
    let pubkey = std::fs::read_to_string(dir.path().join("ann.pub")).expect("ann.pub");
    let ann_signers = format!(
        "ann@example.com {}",
        pubkey
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    );
    GitFixture {
        repo: repo.display().to_string(),
        dir,
        ann_signers,
        main_sha,
    }
}
