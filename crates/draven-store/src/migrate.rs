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

/// One migration from its three files in `migrations/`: `FILE.sql` (portable),
/// `FILE.sqlite.sql` and `FILE.postgres.sql` (what differs; may be empty).
macro_rules! migration {
    ($version:literal, $name:literal, $file:literal) => {
        Migration {
            version: $version,
            name: $name,
            portable: include_str!(concat!("migrations/", $file, ".sql")),
            sqlite: include_str!(concat!("migrations/", $file, ".sqlite.sql")),
            postgres: include_str!(concat!("migrations/", $file, ".postgres.sql")),
        }
    };
}

const MIGRATIONS: &[Migration] = &[
    migration!(1, "kernel", "0001_kernel"),
    migration!(2, "registry", "0002_registry"),
    migration!(3, "locks", "0003_locks"),
    migration!(4, "deploy", "0004_deploy"),
    migration!(5, "runner", "0005_runner"),
    migration!(6, "deploy_additions", "0006_deploy_additions"),
    migration!(7, "functions", "0007_functions"),
    migration!(8, "providers", "0008_providers"),
    migration!(9, "ui", "0009_ui"),
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
