//! The audit trail: append-only, hash-chained records of every state change and every denial.
//!
//! Each record carries the hash of the one before it and its own hash over all its fields, so
//! changing or deleting any record (even the last, thanks to the chain head) is detected by
//! [`Db::verify_audit`]. Appends happen inside the caller's transaction, so a state change and
//! its record commit together or not at all. Triggers refuse UPDATE and DELETE on the table.

use crate::{cursor, now_ms, page_limit, rfc3339, Db, Page, Result, Tx};
use draven_core::Error;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How an audited attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Denied,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }

    pub fn parse(s: &str) -> Result<Outcome, Error> {
        match s {
            "success" => Ok(Outcome::Success),
            "denied" => Ok(Outcome::Denied),
            "failure" => Ok(Outcome::Failure),
            _ => Err(Error::invalid(
                "outcome",
                "outcome must be success, denied or failure",
            )),
        }
    }
}

/// Who is acting, from where, in which request: the part of every record that comes from the
/// caller rather than the operation.
#[derive(Clone, Debug, Default)]
pub struct Actor {
    pub tenant_id: Option<String>,
    /// `user:<name>`, `cli:<os user>`, `system`, `anonymous`.
    pub name: String,
    pub request_id: Option<String>,
    pub client_addr: Option<String>,
}

impl Actor {
    pub fn system() -> Actor {
        Actor {
            name: "system".into(),
            ..Actor::default()
        }
    }

    /// A successful state change of `target`.
    pub fn did(&self, action: &str, target: &str) -> AuditEvent {
        AuditEvent {
            actor: self.clone(),
            action: action.to_owned(),
            target: target.to_owned(),
            ref_name: None,
            outcome: Outcome::Success,
            reason: None,
            detail: serde_json::json!({}),
        }
    }

    /// A refused attempt, with the reason.
    pub fn denied(&self, action: &str, target: &str, reason: &str) -> AuditEvent {
        let mut e = self.did(action, target);
        e.outcome = Outcome::Denied;
        e.reason = Some(reason.to_owned());
        e
    }
}

/// A record to append.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub actor: Actor,
    pub action: String,
    pub target: String,
    pub ref_name: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub detail: serde_json::Value,
}

impl AuditEvent {
    pub fn detail(mut self, detail: serde_json::Value) -> AuditEvent {
        self.detail = detail;
        self
    }

    pub fn ref_name(mut self, r: &str) -> AuditEvent {
        self.ref_name = Some(r.to_owned());
        self
    }
}

/// A stored record.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub seq: i64,
    pub id: String,
    pub at: String,
    pub at_ms: i64,
    pub tenant_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub ref_name: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub client_addr: Option<String>,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// The hash over every field but `hash` itself; the encoding is a JSON array, so field
    /// boundaries are unambiguous.
    pub fn compute_hash(&self, detail_text: &str) -> String {
        let canonical = serde_json::json!([
            self.prev_hash,
            self.seq,
            self.id,
            self.at_ms,
            self.tenant_id,
            self.actor,
            self.action,
            self.target,
            self.ref_name,
            self.outcome,
            self.reason,
            self.request_id,
            self.client_addr,
            detail_text,
        ]);
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }

    fn from_row(row: &AnyRow) -> Result<(AuditRecord, String)> {
        let at_ms: i64 = row.try_get("at")?;
        let detail_text: String = row.try_get("detail")?;
        let record = AuditRecord {
            seq: row.try_get("seq")?,
            id: row.try_get("id")?,
            at: rfc3339(at_ms),
            at_ms,
            tenant_id: row.try_get("tenant_id")?,
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            target: row.try_get("target")?,
            ref_name: row.try_get("ref_name")?,
            outcome: row.try_get("outcome")?,
            reason: row.try_get("reason")?,
            request_id: row.try_get("request_id")?,
            client_addr: row.try_get("client_addr")?,
            detail: serde_json::from_str(&detail_text).unwrap_or(serde_json::Value::Null),
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        };
        Ok((record, detail_text))
    }
}

const COLUMNS: &str =
    "seq, id, at, tenant_id, actor, action, target, ref_name, outcome, reason, request_id, client_addr, detail, prev_hash, hash";

/// Appends `event` inside `tx`. The head row update takes the chain's lock until commit.
pub async fn append(tx: &mut Tx, event: AuditEvent) -> Result<AuditRecord> {
    let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut **tx)
        .await?;
    let seq: i64 = head.try_get("seq")?;
    let prev_hash: String = head.try_get("hash")?;
    let at_ms = now_ms();
    let detail_text = event.detail.to_string();
    let mut record = AuditRecord {
        seq,
        id: crate::new_id(),
        at: rfc3339(at_ms),
        at_ms,
        tenant_id: event.actor.tenant_id,
        actor: event.actor.name,
        action: event.action,
        target: event.target,
        ref_name: event.ref_name,
        outcome: event.outcome.as_str().to_owned(),
        reason: event.reason,
        request_id: event.actor.request_id,
        client_addr: event.actor.client_addr,
        detail: event.detail,
        prev_hash,
        hash: String::new(),
    };
    record.hash = record.compute_hash(&detail_text);
    sqlx::query(&format!(
        "INSERT INTO audit_events ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    ))
    .bind(record.seq)
    .bind(&record.id)
    .bind(record.at_ms)
    .bind(&record.tenant_id)
    .bind(&record.actor)
    .bind(&record.action)
    .bind(&record.target)
    .bind(&record.ref_name)
    .bind(&record.outcome)
    .bind(&record.reason)
    .bind(&record.request_id)
    .bind(&record.client_addr)
    .bind(&detail_text)
    .bind(&record.prev_hash)
    .bind(&record.hash)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&record.hash)
        .execute(&mut **tx)
        .await?;
    Ok(record)
}

/// Filters for listing the trail. All optional; `tenant_id` is set by the API from the caller.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub tenant_id: Option<String>,
    pub actor: Option<String>,
    /// Exact action, or a prefix ending in `.` (`user.` matches `user.create`, `user.delete`).
    pub action: Option<String>,
    pub target: Option<String>,
    pub outcome: Option<Outcome>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    Intact { records: i64, head: String },
    Broken { seq: i64, problem: String },
}

impl Db {
    /// Appends one record in its own transaction (denials, which change nothing else).
    pub async fn audit(&self, event: AuditEvent) -> Result<AuditRecord> {
        let mut tx = self.begin().await?;
        let rec = append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(rec)
    }

    /// Newest first, filtered, cursor-paged.
    pub async fn list_audit(&self, f: &AuditFilter) -> Result<Page<AuditRecord>> {
        let limit = page_limit(f.limit)?;
        let mut sql = format!("SELECT {COLUMNS} FROM audit_events WHERE 1=1");
        let mut n = 0usize;
        let mut next = |sql: &mut String, clause: &str| {
            n += 1;
            sql.push_str(&clause.replace('?', &format!("${n}")));
        };
        // Binds in placeholder order: Ok is text, Err a number.
        let mut order: Vec<Result<String, i64>> = Vec::new();
        if let Some(t) = &f.tenant_id {
            next(&mut sql, " AND tenant_id = ?");
            order.push(Ok(t.clone()));
        }
        if let Some(a) = &f.actor {
            next(&mut sql, " AND actor = ?");
            order.push(Ok(a.clone()));
        }
        if let Some(a) = &f.action {
            if !a
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
            {
                return Err(Error::invalid(
                    "action",
                    "action filter may contain only a-z, 0-9, '.' and '-'",
                )
                .into());
            }
            if a.ends_with('.') {
                next(&mut sql, " AND action LIKE ?");
                order.push(Ok(format!("{a}%")));
            } else {
                next(&mut sql, " AND action = ?");
                order.push(Ok(a.clone()));
            }
        }
        if let Some(t) = &f.target {
            next(&mut sql, " AND target = ?");
            order.push(Ok(t.clone()));
        }
        if let Some(o) = f.outcome {
            next(&mut sql, " AND outcome = ?");
            order.push(Ok(o.as_str().to_owned()));
        }
        if let Some(s) = f.since_ms {
            next(&mut sql, " AND at >= ?");
            order.push(Err(s));
        }
        if let Some(u) = f.until_ms {
            next(&mut sql, " AND at < ?");
            order.push(Err(u));
        }
        if let Some(c) = &f.cursor {
            let seq: i64 = cursor::decode(c)?
                .parse()
                .map_err(|_| Error::invalid("cursor", "cursor is not one this server issued"))?;
            next(&mut sql, " AND seq < ?");
            order.push(Err(seq));
        }
        next(&mut sql, " ORDER BY seq DESC LIMIT ?");
        order.push(Err(limit + 1));
        let mut q = sqlx::query(&sql);
        for b in order {
            q = match b {
                Ok(s) => q.bind(s),
                Err(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(self.pool()).await?;
        let records = rows
            .iter()
            .map(|r| AuditRecord::from_row(r).map(|(rec, _)| rec))
            .collect::<Result<Vec<_>>>()?;
        Ok(crate::paginate(records, limit, |r| r.seq.to_string()))
    }

    /// Records after `after_seq` in order, at most `limit`: export reads the trail in batches.
    pub async fn audit_batch(
        &self,
        tenant_id: Option<&str>,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>> {
        let rows = match tenant_id {
            Some(t) => {
                sqlx::query(&format!("SELECT {COLUMNS} FROM audit_events WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"))
                    .bind(t.to_owned())
                    .bind(after_seq)
                    .bind(limit)
                    .fetch_all(self.pool())
                    .await?
            }
            None => {
                sqlx::query(&format!("SELECT {COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"))
                    .bind(after_seq)
                    .bind(limit)
                    .fetch_all(self.pool())
                    .await?
            }
        };
        rows.iter()
            .map(|r| AuditRecord::from_row(r).map(|(rec, _)| rec))
            .collect()
    }

    /// Walks the whole chain and checks sequence, links and hashes, then the head.
    pub async fn verify_audit(&self) -> Result<Verification> {
        use futures::TryStreamExt;
        let mut expected_seq = 1;
        let mut prev = GENESIS_HASH.to_owned();
        let sql = format!("SELECT {COLUMNS} FROM audit_events ORDER BY seq");
        let mut rows = sqlx::query(&sql).fetch(self.pool());
        while let Some(row) = rows.try_next().await? {
            let (rec, detail_text) = AuditRecord::from_row(&row)?;
            if rec.seq != expected_seq {
                return Ok(Verification::Broken {
                    seq: expected_seq,
                    problem: format!(
                        "record {expected_seq} is missing (next present is {})",
                        rec.seq
                    ),
                });
            }
            if rec.prev_hash != prev {
                return Ok(Verification::Broken {
                    seq: rec.seq,
                    problem: "link to the previous record is broken".into(),
                });
            }
            if rec.compute_hash(&detail_text) != rec.hash {
                return Ok(Verification::Broken {
                    seq: rec.seq,
                    problem: "record content does not match its hash (tampered)".into(),
                });
            }
            prev = rec.hash;
            expected_seq += 1;
        }
        drop(rows);
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        let head_seq: i64 = head.try_get("seq")?;
        let head_hash: String = head.try_get("hash")?;
        if head_seq != expected_seq - 1 || head_hash != prev {
            return Ok(Verification::Broken {
                seq: head_seq,
                problem: format!("the chain ends at record {} but its head says {head_seq}: newest records were removed", expected_seq - 1),
            });
        }
        Ok(Verification::Intact {
            records: expected_seq - 1,
            head: prev,
        })
    }
}
