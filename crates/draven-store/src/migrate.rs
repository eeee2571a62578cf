//! Numbered migrations, applied in order at start and by `draven migrate`.
//!
//! Each migration is portable SQL plus an optional per-backend part (triggers differ). A
//! migration's checksum is recorded; a landed migration that was edited afterwards is refused
//! at start rather than silently diverging between databases.

use crate::{now_ms, Backend, Db, Result, StoreError};
use sha2::{Digest, Sha256};
use sqlx::Row;

struct Migration {
    version: i64,
    name: &'static str,
    portable: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "kernel",
        portable: include_str!("migrations/0001_kernel.sql"),
        sqlite: include_str!("migrations/0001_kernel.sqlite.sql"),
        postgres: include_str!("migrations/0001_kernel.postgres.sql"),
    },
    Migration {
        version: 2,
        name: "registry",
        portable: include_str!("migrations/0002_registry.sql"),
        sqlite: include_str!("migrations/0002_registry.sqlite.sql"),
        postgres: include_str!("migrations/0002_registry.postgres.sql"),
    },
    Migration {
        version: 3,
        name: "locks",
        portable: include_str!("migrations/0003_locks.sql"),
        sqlite: include_str!("migrations/0003_locks.sqlite.sql"),
        postgres: include_str!("migrations/0003_locks.postgres.sql"),
    },
    Migration {
        version: 4,
        name: "deploy",
        portable: include_str!("migrations/0004_deploy.sql"),
        sqlite: include_str!("migrations/0004_deploy.sqlite.sql"),
        postgres: include_str!("migrations/0004_deploy.postgres.sql"),
    },
    Migration {
        version: 5,
        name: "runner",
        portable: include_str!("migrations/0005_runner.sql"),
        sqlite: include_str!("migrations/0005_runner.sqlite.sql"),
        postgres: include_str!("migrations/0005_runner.postgres.sql"),
    },
    Migration {
        version: 6,
        name: "deploy_additions",
        portable: include_str!("migrations/0006_deploy_additions.sql"),
        sqlite: include_str!("migrations/0006_deploy_additions.sqlite.sql"),
        postgres: include_str!("migrations/0006_deploy_additions.postgres.sql"),
    },
];

impl Migration {
    fn checksum(&self) -> String {
        let mut h = Sha256::new();
        for part in [self.portable, self.sqlite, self.postgres] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }
}

/// What `migrate` did.
#[derive(Debug, Default)]
pub struct Report {
    pub applied: Vec<String>,
    pub current: i64,
}

// Any fixed number: the advisory lock that keeps two servers from migrating at once.
const MIGRATION_LOCK: i64 = 0x6472_6176_656e;

impl Db {
    /// Applies every pending migration; idempotent and safe to run from several processes.
    pub async fn migrate(&self) -> Result<Report> {
        let mut conn = self.pool().acquire().await?;
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        let result = self.migrate_locked(&mut conn).await;
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        result
    }

    async fn migrate_locked(&self, conn: &mut sqlx::AnyConnection) -> Result<Report> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS draven_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        let rows = sqlx::query("SELECT version, checksum FROM draven_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await?;
        let mut applied = std::collections::BTreeMap::new();
        for row in rows {
            applied.insert(
                row.try_get::<i64, _>("version")?,
                row.try_get::<String, _>("checksum")?,
            );
        }
        let mut report = Report::default();
        for m in MIGRATIONS {
            if let Some(sum) = applied.get(&m.version) {
                if *sum != m.checksum() {
                    return Err(StoreError::Corrupt(format!(
                        "migration {} ({}) was changed after it was applied",
                        m.version, m.name
                    )));
                }
                continue;
            }
            let specific = match self.backend() {
                Backend::Sqlite => m.sqlite,
                Backend::Postgres => m.postgres,
            };
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            sqlx::raw_sql(m.portable).execute(&mut *tx).await?;
            if !specific.trim().is_empty() {
                sqlx::raw_sql(specific).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO draven_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)")
                .bind(m.version)
                .bind(m.name)
                .bind(m.checksum())
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            report.applied.push(format!("{:04}_{}", m.version, m.name));
        }
        let newest_known = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
        if let Some((&newest_applied, _)) = applied.iter().next_back() {
            if newest_applied > newest_known {
                return Err(StoreError::Corrupt(format!(
                    "the database is at migration {newest_applied}, newer than this binary knows ({newest_known}); upgrade draven"
                )));
            }
        }
        report.current = newest_known;
        Ok(report)
    }
}
