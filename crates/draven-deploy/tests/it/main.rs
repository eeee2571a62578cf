//! Ref resolution and signed-tag verification against real repositories made with real `git`
//! and `ssh-keygen`.

use draven_deploy::git::{resolve, verify_tag};
use draven_deploy::testing::fixture;
use draven_deploy::GitRef;

mod templates;

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
