//! Storage behaviour, each test run on SQLite and on PostgreSQL (see `on_both_backends!`).

use draven_core::{Grant, Role, Slug, TokenScope};
use draven_store::audit::{Actor, AuditFilter, Outcome, Verification};
use draven_store::crypto::MasterKey;
use draven_store::environments::EnvironmentPatch;
use draven_store::idempotency::{Claim, IdempotencyKey, StoredResponse};
use draven_store::identity::NewUser;
use draven_store::testing::TestDb;
use draven_store::{Backend, Db};

fn slug(s: &str) -> Slug {
    Slug::parse("name", s).unwrap()
}

fn actor(tenant_id: &str) -> Actor {
    Actor {
        tenant_id: Some(tenant_id.into()),
        name: "user:test".into(),
        request_id: Some("req-1".into()),
        client_addr: None,
    }
}

async fn new_tenant(db: &Db, name: &str) -> String {
    db.create_tenant(&Actor::system(), &slug(name), "")
        .await
        .unwrap()
        .id
}

async fn migrations_are_idempotent(db: TestDb) {
    let again = db.migrate().await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.current, 9);
}

async fn bootstrap_once_then_authenticate(db: TestDb) {
    let first = db
        .bootstrap(Some("a-chosen-bootstrap-token"))
        .await
        .unwrap()
        .expect("first start bootstraps");
    assert_eq!(first.token, "a-chosen-bootstrap-token");
    assert!(
        db.bootstrap(None).await.unwrap().is_none(),
        "second start must not create another admin"
    );
    let p = db
        .authenticate("a-chosen-bootstrap-token")
        .await
        .unwrap()
        .expect("token works");
    assert!(p.system_admin);
    assert_eq!(p.tenant, "default");
    assert_eq!(p.grants, vec![Grant::tenant_wide(Role::Admin)]);
    assert!(db
        .authenticate("a-chosen-bootstrap-tokeX")
        .await
        .unwrap()
        .is_none());
}

async fn tokens_revoke_expire_and_disable(db: TestDb) {
    let t = new_tenant(&db, "acme").await;
    let a = actor(&t);
    let u = db
        .create_user(
            &a,
            &t,
            &NewUser {
                username: "ann".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (meta, token) = db
        .create_token(&a, &t, &u.id, "ci", Some(&[TokenScope::Invoke]), None)
        .await
        .unwrap();
    assert!(token.starts_with("drv_") && token.len() == 44);
    assert_eq!(meta.scopes, vec!["invoke"]);
    let p = db.authenticate(&token).await.unwrap().unwrap();
    assert_eq!(p.token_scopes, Some(vec![TokenScope::Invoke]));
    // Only the hash is stored.
    let listed = db.list_tokens(&t, Some(&u.id), None, None).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(!format!("{listed:?}").contains(&token[4..]));
    // Disabled users' tokens stop working; enabling restores them.
    db.set_user_disabled(&a, &t, &u.id, true).await.unwrap();
    assert!(db.authenticate(&token).await.unwrap().is_none());
    db.set_user_disabled(&a, &t, &u.id, false).await.unwrap();
    assert!(db.authenticate(&token).await.unwrap().is_some());
    // Revocation is immediate and idempotent.
    let revoked = db.revoke_token(&a, &t, &meta.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    db.revoke_token(&a, &t, &meta.id).await.unwrap();
    assert!(db.authenticate(&token).await.unwrap().is_none());
    // Expiry in the past is refused; a short one expires.
    let past = draven_store::now_ms() - 1;
    assert!(db
        .create_token(&a, &t, &u.id, "old", None, Some(past))
        .await
        .is_err());
    let (_, short) = db
        .create_token(
            &a,
            &t,
            &u.id,
            "short",
            None,
            Some(draven_store::now_ms() + 1500),
        )
        .await
        .unwrap();
    assert!(db.authenticate(&short).await.unwrap().is_some());
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    assert!(db.authenticate(&short).await.unwrap().is_none());
}

async fn tenants_do_not_see_each_other(db: TestDb) {
    let t1 = new_tenant(&db, "one").await;
    let t2 = new_tenant(&db, "two").await;
    let u = db
        .create_user(
            &actor(&t1),
            &t1,
            &NewUser {
                username: "ann".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        db.get_user(&t2, &u.id).await.unwrap_err().to_string(),
        "not-found: user not found"
    );
    assert!(db.get_user(&t2, "ann").await.is_err());
    assert!(db
        .create_token(&actor(&t2), &t2, &u.id, "x", None, None)
        .await
        .is_err());
    assert!(db
        .add_grant(&actor(&t2), &t2, &u.id, &Grant::tenant_wide(Role::Admin))
        .await
        .is_err());
    // The same username may exist in both tenants.
    db.create_user(
        &actor(&t2),
        &t2,
        &NewUser {
            username: "ann".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let dup = db
        .create_tenant(&Actor::system(), &slug("one"), "")
        .await
        .unwrap_err();
    assert_eq!(
        draven_core::Error::from(dup).code,
        draven_core::ErrorCode::Conflict
    );
}

async fn grants_are_unique_and_scoped(db: TestDb) {
    let t = new_tenant(&db, "acme").await;
    let a = actor(&t);
    let u = db
        .create_user(
            &a,
            &t,
            &NewUser {
                username: "bob".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let g = Grant {
        role: Role::Deployer,
        project: Some("shop".into()),
        environment: Some("prod".into()),
    };
    let rec = db.add_grant(&a, &t, &u.id, &g).await.unwrap();
    assert!(
        db.add_grant(&a, &t, &u.id, &g).await.is_err(),
        "duplicate grant"
    );
    db.add_grant(&a, &t, &u.id, &Grant::tenant_wide(Role::Viewer))
        .await
        .unwrap();
    assert_eq!(db.list_grants(&t, Some(&u.id)).await.unwrap().len(), 2);
    db.remove_grant(&a, &t, &rec.id).await.unwrap();
    assert_eq!(db.list_grants(&t, Some(&u.id)).await.unwrap().len(), 1);
    let bad = Grant {
        role: Role::Viewer,
        project: Some("Not A Slug".into()),
        environment: None,
    };
    assert!(db.add_grant(&a, &t, &u.id, &bad).await.is_err());
}

async fn passwords(db: TestDb) {
    let t = new_tenant(&db, "acme").await;
    let a = actor(&t);
    assert!(db
        .create_user(
            &a,
            &t,
            &NewUser {
                username: "c".into(),
                password: Some("short".into()),
                ..Default::default()
            }
        )
        .await
        .is_err());
    db.create_user(
        &a,
        &t,
        &NewUser {
            username: "cat".into(),
            password: Some("correct horse".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(db
        .check_password("acme", "cat", "correct horse")
        .await
        .unwrap()
        .is_some());
    assert!(db
        .check_password("acme", "cat", "wrong horse")
        .await
        .unwrap()
        .is_none());
    assert!(db
        .check_password("other", "cat", "correct horse")
        .await
        .unwrap()
        .is_none());
}

async fn environments_use_revisions(db: TestDb) {
    let t = new_tenant(&db, "acme").await;
    let a = actor(&t);
    let e = db
        .create_environment(&a, &t, &slug("prod"), "production", true)
        .await
        .unwrap();
    assert_eq!(e.revision, 1);
    assert!(db
        .create_environment(&a, &t, &slug("prod"), "", false)
        .await
        .is_err());
    let patch = EnvironmentPatch {
        protected: Some(false),
        ..Default::default()
    };
    let e2 = db
        .update_environment(&a, &t, "prod", Some(1), &patch)
        .await
        .unwrap();
    assert_eq!((e2.revision, e2.protected), (2, false));
    let stale = db
        .update_environment(&a, &t, "prod", Some(1), &patch)
        .await
        .unwrap_err();
    assert_eq!(
        draven_core::Error::from(stale).code,
        draven_core::ErrorCode::PreconditionFailed
    );
    assert!(db
        .delete_environment(&a, &t, "prod", Some(1))
        .await
        .is_err());
    db.delete_environment(&a, &t, "prod", Some(2))
        .await
        .unwrap();
    assert!(db.get_environment(&t, "prod").await.is_err());
}

async fn audit_chain_verifies_and_filters(db: TestDb) {
    let t = new_tenant(&db, "acme").await;
    let a = actor(&t);
    db.create_environment(&a, &t, &slug("stage"), "", false)
        .await
        .unwrap();
    db.audit(a.denied("environment.delete", "environment:stage", "no grant"))
        .await
        .unwrap();
    assert!(matches!(
        db.verify_audit().await.unwrap(),
        Verification::Intact { records: 3, .. }
    ));
    let denied = db
        .list_audit(&AuditFilter {
            tenant_id: Some(t.clone()),
            outcome: Some(Outcome::Denied),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.items.len(), 1);
    assert_eq!(denied.items[0].reason.as_deref(), Some("no grant"));
    let envs = db
        .list_audit(&AuditFilter {
            tenant_id: Some(t.clone()),
            action: Some("environment.".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(envs.items.len(), 2);
    // Paging: newest first, one per page, three pages then none.
    let mut cursor = None;
    let mut seqs = vec![];
    loop {
        let page = db
            .list_audit(&AuditFilter {
                cursor: cursor.clone(),
                limit: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        seqs.extend(page.items.iter().map(|r| r.seq));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seqs, vec![3, 2, 1]);
    let first = db.audit_batch(Some(&t), 0, 2).await.unwrap();
    assert_eq!(first.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
    let rest = db.audit_batch(Some(&t), 2, 2).await.unwrap();
    assert_eq!(rest.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
    assert!(db
        .audit_batch(Some("other"), 0, 10)
        .await
        .unwrap()
        .is_empty());
}

/// Turns off the append-only triggers the way an attacker with database access would.
async fn disable_guards(db: &Db) {
    let sql = match db.backend() {
        Backend::Sqlite => {
            "DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;"
        }
        Backend::Postgres => "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
    };
    sqlx::raw_sql(sql).execute(db.pool()).await.unwrap();
}

async fn audit_detects_tampering(db: TestDb) {
    let t = new_tenant(&db, "acme").await;
    let a = actor(&t);
    for env in ["a", "b", "c"] {
        db.create_environment(&a, &t, &slug(env), "", false)
            .await
            .unwrap();
    }
    // The table refuses changes outright.
    assert!(
        sqlx::query("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
            .execute(db.pool())
            .await
            .is_err()
    );
    assert!(sqlx::query("DELETE FROM audit_events WHERE seq = 2")
        .execute(db.pool())
        .await
        .is_err());
    disable_guards(&db).await;
    sqlx::query("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
        .execute(db.pool())
        .await
        .unwrap();
    assert!(matches!(
        db.verify_audit().await.unwrap(),
        Verification::Broken { seq: 2, .. }
    ));
}

async fn audit_detects_deletion(db: TestDb) {
    let t = new_tenant(&db, "acme").await;
    let a = actor(&t);
    for env in ["a", "b", "c"] {
        db.create_environment(&a, &t, &slug(env), "", false)
            .await
            .unwrap();
    }
    disable_guards(&db).await;
    sqlx::query("DELETE FROM audit_events WHERE seq = 4")
        .execute(db.pool())
        .await
        .unwrap();
    assert!(
        matches!(
            db.verify_audit().await.unwrap(),
            Verification::Broken { .. }
        ),
        "last record removed"
    );
    sqlx::query("DELETE FROM audit_events WHERE seq = 2")
        .execute(db.pool())
        .await
        .unwrap();
    assert!(
        matches!(
            db.verify_audit().await.unwrap(),
            Verification::Broken { seq: 2, .. }
        ),
        "middle record removed"
    );
}

async fn concurrent_appends_keep_one_chain(db: TestDb) {
    let t = new_tenant(&db, "acme").await;
    let mut tasks = vec![];
    for i in 0..20 {
        let db = db.db.clone();
        let a = actor(&t);
        tasks.push(tokio::spawn(async move {
            db.audit(a.did("test.append", &format!("n:{i}")))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(matches!(
        db.verify_audit().await.unwrap(),
        Verification::Intact { records: 21, .. }
    ));
}

/// Every byte the database holds, as text, for looking for a plaintext.
async fn everything_stored(db: &TestDb) -> Vec<u8> {
    match db.backend() {
        Backend::Sqlite => {
            sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(db.pool())
                .await
                .unwrap();
            let path = db.url.trim_start_matches("sqlite://");
            let mut bytes = std::fs::read(path).unwrap();
            bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
            bytes
        }
        Backend::Postgres => {
            let mut out = vec![];
            for table in ["secrets", "audit_events", "idempotency_keys"] {
                let rows = sqlx::query(&format!("SELECT CAST(t AS TEXT) AS r FROM {table} t"))
                    .fetch_all(db.pool())
                    .await
                    .unwrap();
                for r in rows {
                    out.extend(sqlx::Row::get::<String, _>(&r, "r").into_bytes());
                }
            }
            out
        }
    }
}

async fn secrets_are_sealed(db: TestDb) {
    let t = new_tenant(&db, "acme").await;
    let a = actor(&t);
    let kek = MasterKey::parse(&MasterKey::generate_hex()).unwrap();
    let plaintext = b"s3cr3t-P4ssw0rd-that-must-not-leak";
    let (m, created) = db
        .put_secret(&a, &kek, &t, &slug("db-password"), "prod db", plaintext)
        .await
        .unwrap();
    assert!(created && m.version == 1);
    let (m, created) = db
        .put_secret(&a, &kek, &t, &slug("db-password"), "prod db", plaintext)
        .await
        .unwrap();
    assert!(!created && m.version == 2);
    let stored = everything_stored(&db).await;
    assert!(
        !stored.windows(plaintext.len()).any(|w| w == plaintext),
        "plaintext reached the database"
    );
    assert_eq!(
        db.reveal_secret(&kek, &t, "db-password").await.unwrap(),
        plaintext
    );
    // Another tenant cannot reach it; another key cannot open it.
    let t2 = new_tenant(&db, "other").await;
    assert!(db.reveal_secret(&kek, &t2, "db-password").await.is_err());
    let other_key = MasterKey::parse(&MasterKey::generate_hex()).unwrap();
    assert!(db
        .reveal_secret(&other_key, &t, "db-password")
        .await
        .is_err());
    assert_eq!(
        db.list_secrets(&t, None, None).await.unwrap().items.len(),
        1
    );
    db.delete_secret(&a, &t, "db-password").await.unwrap();
    assert!(db.secret_meta(&t, "db-password").await.is_err());
}

async fn idempotency_keys(db: TestDb) {
    let k = IdempotencyKey {
        tenant_id: "t",
        principal: "p",
        key: "k1",
    };
    assert_eq!(
        db.claim_idempotency_key(&k, "POST", "/x", "h1", 60_000)
            .await
            .unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        db.claim_idempotency_key(&k, "POST", "/x", "h1", 60_000)
            .await
            .unwrap(),
        Claim::InFlight
    );
    assert_eq!(
        db.claim_idempotency_key(&k, "POST", "/x", "h2", 60_000)
            .await
            .unwrap(),
        Claim::Mismatch
    );
    let resp = StoredResponse {
        status: 201,
        content_type: Some("application/json".into()),
        location: None,
        body: b"{}".to_vec(),
    };
    db.complete_idempotency_key(&k, &resp).await.unwrap();
    assert_eq!(
        db.claim_idempotency_key(&k, "POST", "/x", "h1", 60_000)
            .await
            .unwrap(),
        Claim::Replay(resp)
    );
    // Released claims and expired keys can be used again.
    let k2 = IdempotencyKey {
        key: "k2",
        ..k.clone()
    };
    db.claim_idempotency_key(&k2, "POST", "/x", "h1", 60_000)
        .await
        .unwrap();
    db.release_idempotency_key(&k2).await.unwrap();
    assert_eq!(
        db.claim_idempotency_key(&k2, "POST", "/x", "h9", 60_000)
            .await
            .unwrap(),
        Claim::Claimed
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(
        db.claim_idempotency_key(&k, "POST", "/x", "h3", 1)
            .await
            .unwrap(),
        Claim::Claimed
    );
}

fn lock_key<'a>(tenant: &'a str, env: &'a str) -> draven_store::locks::LockKey<'a> {
    draven_store::locks::LockKey {
        tenant_id: tenant,
        project: "shop",
        environment: env,
    }
}

async fn environment_locks_are_leases(db: TestDb) {
    use draven_store::locks::Acquire;
    let t = new_tenant(&db, "acme").await;
    let a = actor(&t);
    let prod = lock_key(&t, "prod");
    assert_eq!(
        db.acquire_environment_lock(&a, prod, "job-1", "runner-a", 60_000)
            .await
            .unwrap(),
        Acquire::Acquired
    );
    // Held: another job waits; the holder re-acquiring is a renewal.
    match db
        .acquire_environment_lock(&a, prod, "job-2", "runner-b", 60_000)
        .await
        .unwrap()
    {
        Acquire::HeldBy(l) => assert_eq!(
            (l.holder_job.as_str(), l.holder.as_str()),
            ("job-1", "runner-a")
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        db.acquire_environment_lock(&a, prod, "job-1", "runner-a", 60_000)
            .await
            .unwrap(),
        Acquire::Acquired
    );
    // Other environments and tenants are independent.
    assert_eq!(
        db.acquire_environment_lock(&a, lock_key(&t, "stage"), "job-3", "runner-b", 60_000)
            .await
            .unwrap(),
        Acquire::Acquired
    );
    assert!(db
        .renew_environment_lock(prod, "job-1", 60_000)
        .await
        .unwrap());
    assert!(!db
        .renew_environment_lock(prod, "job-2", 60_000)
        .await
        .unwrap());
    // Release by a non-holder does nothing; by the holder frees it.
    assert!(!db
        .release_environment_lock(&a, prod, "job-2")
        .await
        .unwrap());
    assert!(db
        .release_environment_lock(&a, prod, "job-1")
        .await
        .unwrap());
    assert_eq!(db.environment_lock(prod).await.unwrap(), None);
    assert_eq!(
        db.acquire_environment_lock(&a, prod, "job-2", "runner-b", 60_000)
            .await
            .unwrap(),
        Acquire::Acquired
    );
    // Force unlock is audited with the holder it removed.
    let removed = db
        .force_unlock_environment(&a, prod, "runner host is gone")
        .await
        .unwrap();
    assert_eq!(removed.holder_job, "job-2");
    let trail = db
        .list_audit(&AuditFilter {
            tenant_id: Some(t.clone()),
            action: Some("lock.force-unlock".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(trail.items[0].ref_name.as_deref(), Some("job-2"));
    assert_eq!(trail.items[0].detail["reason"], "runner host is gone");
    assert!(db
        .force_unlock_environment(&a, prod, "again")
        .await
        .is_err());
}

async fn an_expired_lease_is_taken_over(db: TestDb) {
    use draven_store::locks::Acquire;
    let t = new_tenant(&db, "acme").await;
    let a = actor(&t);
    let prod = lock_key(&t, "prod");
    assert_eq!(
        db.acquire_environment_lock(&a, prod, "crashed-job", "dead-runner", 100)
            .await
            .unwrap(),
        Acquire::Acquired
    );
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert_eq!(
        db.acquire_environment_lock(&a, prod, "next-job", "runner-b", 60_000)
            .await
            .unwrap(),
        Acquire::Acquired
    );
    // The crashed holder's heartbeat now fails, so it knows to stop.
    assert!(!db
        .renew_environment_lock(prod, "crashed-job", 60_000)
        .await
        .unwrap());
    let takeover = db
        .list_audit(&AuditFilter {
            tenant_id: Some(t.clone()),
            action: Some("lock.takeover".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(takeover.items.len(), 1);
    assert_eq!(
        takeover.items[0].detail["expired_holder_job"],
        "crashed-job"
    );
}

async fn one_lock_holder_under_contention(db: TestDb) {
    use draven_store::locks::Acquire;
    let t = new_tenant(&db, "acme").await;
    let mut tasks = vec![];
    for i in 0..12 {
        let db = db.db.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let a = actor(&t);
            db.acquire_environment_lock(&a, lock_key(&t, "prod"), &format!("job-{i}"), "r", 60_000)
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        if task.await.unwrap() == Acquire::Acquired {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

draven_store::on_both_backends!(
    environment_locks_are_leases,
    an_expired_lease_is_taken_over,
    one_lock_holder_under_contention,
    migrations_are_idempotent,
    bootstrap_once_then_authenticate,
    tokens_revoke_expire_and_disable,
    tenants_do_not_see_each_other,
    grants_are_unique_and_scoped,
    passwords,
    environments_use_revisions,
    audit_chain_verifies_and_filters,
    audit_detects_tampering,
    audit_detects_deletion,
    concurrent_appends_keep_one_chain,
    secrets_are_sealed,
    idempotency_keys,
);
