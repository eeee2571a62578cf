//! Ref resolution and signed-tag verification against real repositories made with real `git`
//! and `ssh-keygen`.

use draven_deploy::git::{resolve, verify_tag};
use draven_deploy::GitRef;
use std::path::Path;
use std::process::Command;

fn run(dir: &Path, cmd: &str, args: &[&str]) -> String {
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
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository with branches `main` and `develop`, a lightweight tag, an annotated tag, a tag
/// signed by ann's SSH key, one signed by mallory's, and a name that is both branch and tag.
struct Fixture {
    _dir: tempfile::TempDir,
    repo: String,
    ann_signers: String,
    main_sha: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("app");
    std::fs::create_dir(&repo).unwrap();
    run(&repo, "git", &["init", "--quiet", "-b", "main"]);
    std::fs::write(repo.join("README"), "v1").unwrap();
    run(&repo, "git", &["add", "."]);
    run(&repo, "git", &["commit", "--quiet", "-m", "one"]);
    let main_sha = run(&repo, "git", &["rev-parse", "HEAD"]);
    run(&repo, "git", &["branch", "develop"]);
    run(&repo, "git", &["tag", "light"]);
    run(&repo, "git", &["tag", "-a", "v0.9.0", "-m", "annotated"]);
    for who in ["ann", "mallory"] {
        run(
            dir.path(),
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-C", who, "-f", who],
        );
    }
    let key = |who: &str| dir.path().join(who).display().to_string();
    let sign = |who: &str, tag: &str| {
        run(
            &repo,
            "git",
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("user.signingkey={}", key(who)),
                "tag",
                "-s",
                tag,
                "-m",
                "release",
            ],
        );
    };
    sign("ann", "v1.0.0");
    sign("mallory", "v1.0.1");
    run(&repo, "git", &["branch", "both"]);
    run(&repo, "git", &["tag", "both"]);
    let pubkey = std::fs::read_to_string(dir.path().join("ann.pub")).unwrap();
    let ann_signers = format!(
        "ann@example.com {}",
        pubkey
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Fixture {
        repo: repo.display().to_string(),
        _dir: dir,
        ann_signers,
        main_sha,
    }
}

#[tokio::test]
async fn refs_resolve_to_commits() {
    let f = fixture();
    let r = resolve(&f.repo, "develop").await.unwrap();
    assert_eq!(
        (r.git_ref, r.commit_sha.as_str()),
        (GitRef::Branch("develop".into()), f.main_sha.as_str())
    );
    let r = resolve(&f.repo, "v0.9.0").await.unwrap();
    assert_eq!(r.git_ref, GitRef::Tag("v0.9.0".into()));
    assert_eq!(
        r.commit_sha, f.main_sha,
        "annotated tags are peeled to their commit"
    );
    assert_eq!(
        resolve(&f.repo, "light").await.unwrap().commit_sha,
        f.main_sha
    );
    assert_eq!(
        resolve(&f.repo, "refs/heads/both").await.unwrap().git_ref,
        GitRef::Branch("both".into())
    );
    let err = |e: draven_deploy::git::GitError| match e {
        draven_deploy::git::GitError::Domain(d) => d.message,
        other => panic!("{other}"),
    };
    assert!(err(resolve(&f.repo, "both").await.unwrap_err()).contains("both a branch and a tag"));
    assert!(err(resolve(&f.repo, "nope").await.unwrap_err()).contains("neither a branch nor a tag"));
    assert!(err(resolve(&f.repo, &f.main_sha).await.unwrap_err()).contains("not a bare commit"));
    assert!(resolve("/nonexistent/repo", "main").await.is_err());
}

#[tokio::test]
async fn only_tags_signed_by_an_allowed_signer_verify() {
    let f = fixture();
    let cache = tempfile::tempdir().unwrap();
    assert!(
        verify_tag(cache.path(), &f.repo, "v1.0.0", &f.ann_signers)
            .await
            .unwrap(),
        "signed by ann"
    );
    assert!(
        !verify_tag(cache.path(), &f.repo, "v1.0.1", &f.ann_signers)
            .await
            .unwrap(),
        "signed by mallory, not allowed"
    );
    assert!(
        !verify_tag(cache.path(), &f.repo, "v0.9.0", &f.ann_signers)
            .await
            .unwrap(),
        "annotated but unsigned"
    );
    assert!(
        !verify_tag(cache.path(), &f.repo, "v1.0.0", "")
            .await
            .unwrap(),
        "nobody allowed"
    );
}
