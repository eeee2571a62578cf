//! Draven's database: one pool over SQLite or PostgreSQL, the migrations, and one module of
//! queries per table group.
//!
//! The SQL is written once and runs on both backends (through sqlx's `Any` driver): ids are
//! text, times are `BIGINT` milliseconds since the epoch, flags are `BIGINT` 0/1 and bytes are
//! base64 text. What genuinely differs (triggers, locking) is isolated in [`migrate`] and marked
//! at its call site. This crate knows nothing about HTTP; it returns [`StoreError`], which the
//! caller maps to a domain error once.

pub mod approvals;
pub mod audit;
pub mod crypto;
pub mod deploy;
pub mod environments;
pub mod functions;
pub mod idempotency;
pub mod identity;
pub mod locks;
pub mod migrate;
pub mod notifications;
pub mod registry;
pub mod registry_release;
pub mod remote;
pub mod runner;
pub mod secrets;
pub mod sessions;
pub mod tenants;
pub mod testing;

use draven_core::{Error, ErrorCode};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row};
use std::time::Duration;

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// An open transaction. State changes and their audit records are written in the same one.
pub type Tx = sqlx::Transaction<'static, Any>;

/// Errors of this crate. Database driver text never leaves the process: `From<StoreError> for
/// draven_core::Error` logs it and hands the client an opaque internal error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Domain(#[from] Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("crypto: {0}")]
    Crypto(#[from] crypto::CryptoError),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when the database refused a row because of a UNIQUE constraint.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Error {
        match err {
            StoreError::Domain(e) => e,
            other => {
                tracing::error!(error = %other, "storage failure");
                Error::internal()
            }
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The database handle: cheap to clone, shared by every request.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Connects to `url` (`sqlite://…` or `postgres://…`). SQLite files are created if missing
    /// and put in WAL mode.
    pub async fn connect(url: &str) -> Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let max = match backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 10,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the single writer; the busy timeout makes
                        // writers queue instead of failing at once.
                        sqlx::Executor::execute(
                            &mut *conn,
                            "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Ok(Db { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so a transaction that reads before it writes cannot fail on lock upgrade.
    pub async fn begin(&self) -> Result<Tx> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(tx)
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Milliseconds since the Unix epoch, the one time representation in the database.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Renders a stored time for humans and APIs (RFC 3339, UTC, milliseconds).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A new time-ordered id (UUIDv7): ids sort by creation, which cursor paging relies on.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

pub(crate) fn flag(row: &AnyRow, column: &str) -> Result<bool> {
    Ok(row.try_get::<i64, _>(column)? != 0)
}

/// `''` is how an absent optional scope is stored (so UNIQUE constraints treat it as a value on
/// both backends); these two convert at the boundary.
pub(crate) fn opt_to_db(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

pub(crate) fn opt_from_db(v: String) -> Option<String> {
    if v.is_empty() {
        None
    } else {
        Some(v)
    }
}

/// An opaque cursor over a text key (ids, names). Base64url so clients treat it as opaque.
pub mod cursor {
    use base64::Engine;
    use draven_core::Error;

    pub fn encode(key: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_bytes())
    }

    pub fn decode(cursor: &str) -> Result<String, Error> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Error::invalid("cursor", "cursor is not one this server issued"))
    }
}

/// One page of a list, with the cursor of the next page when there is one.
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Clamps a requested page size to 1..=500 (default 50).
pub fn page_limit(requested: Option<u32>) -> Result<i64, Error> {
    match requested {
        None => Ok(50),
        Some(n @ 1..=500) => Ok(n as i64),
        Some(_) => Err(Error::new(
            ErrorCode::ValidationFailed,
            "limit must be between 1 and 500",
        )
        .with_field("limit")),
    }
}

/// Cuts `rows` (fetched with `limit + 1`) to a page, taking the cursor from the last item.
pub fn paginate<T>(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> Page<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| cursor::encode(&key(r)))
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}

impl Db {
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Parses an RFC 3339 time to milliseconds since the epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}
