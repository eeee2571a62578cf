//! Invocation records and the in-memory store that keeps them for status queries.
//!
//! Seed 002 keeps the queue in memory with no durability across restarts; the records live
//! with it. The store is bounded: at most `capacity` records (oldest finished ones leave first)
//! and none older than `ttl` once finished. An `Idempotency-Key` is remembered as long as its
//! invocation's record is.

use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Running,
    /// Failed, waiting for its next attempt.
    Retrying,
    Succeeded,
    Failed,
    TimedOut,
}

impl State {
    pub fn finished(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::TimedOut)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Retrying => "retrying",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::TimedOut => "timed_out",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Sync,
    Async,
}

/// The function's answer (or the error answer it gave).
#[derive(Clone, Debug)]
pub struct Output {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Failure {
    /// `timeout`, `crashed`, `unavailable`, `error`.
    pub kind: &'static str,
    pub message: String,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CallbackReport {
    pub url: String,
    pub attempts: u32,
    pub delivered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One invocation, as `GET /api/v1/invocations/{id}` shows it.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub id: String,
    pub tenant_id: String,
    pub function: String,
    pub revision: i64,
    pub executor: String,
    pub mode: Mode,
    pub state: State,
    pub attempts: u32,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub trace_id: String,
    pub idempotency_key: Option<String>,
    pub output: Option<Output>,
    pub failure: Option<Failure>,
    pub callback: Option<CallbackReport>,
    /// Set when the invocation ended in the dead-letter queue.
    pub dead_lettered: bool,
    /// The dead letter this invocation re-drives, if any.
    pub redriven_from: Option<String>,
    pub cold_start_ms: Option<f64>,
}

/// A record and the waiters of its end.
pub struct Cell {
    pub record: Mutex<Invocation>,
    pub done: Notify,
}

impl Cell {
    pub fn snapshot(&self) -> Invocation {
        self.record.lock().clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut Invocation)) {
        let finished = {
            let mut r = self.record.lock();
            f(&mut r);
            r.state.finished()
        };
        if finished {
            self.done.notify_waiters();
        }
    }

    /// Waits until the invocation has finished.
    pub async fn finished(&self) -> Invocation {
        loop {
            let notified = self.done.notified();
            {
                let r = self.record.lock();
                if r.state.finished() {
                    return r.clone();
                }
            }
            notified.await;
        }
    }
}

const SHARDS: usize = 16;

struct Shard {
    by_id: HashMap<String, Arc<Cell>>,
    order: VecDeque<(i64, String)>,
}

/// (tenant, function, key) → (invocation id, payload digest).
type KeyShard = HashMap<(String, String, String), (String, [u8; 32])>;

/// Bounded, sharded by id.
pub struct InvocationStore {
    shards: Vec<Mutex<Shard>>,
    /// (tenant, function, key) → (invocation id, payload digest).
    key_shards: Vec<Mutex<KeyShard>>,
    per_shard: usize,
    ttl_ms: i64,
}

/// What an idempotency lookup found.
pub enum Claim {
    /// The key is new: the caller creates the invocation.
    New,
    /// The same request was seen: this is its invocation.
    Existing(Arc<Cell>),
    /// The same key came with a different payload.
    Reused,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Claim::New => f.write_str("New"),
            Claim::Existing(c) => write!(f, "Existing({})", c.record.lock().id),
            Claim::Reused => f.write_str("Reused"),
        }
    }
}

fn shard_of(s: &str) -> usize {
    // The tail of a UUIDv7 is random; other keys hash.
    let mut h: usize = 0;
    for b in s.bytes().rev().take(8) {
        h = h.wrapping_mul(31).wrapping_add(b as usize);
    }
    h % SHARDS
}

impl InvocationStore {
    pub fn new(capacity: usize, ttl_ms: i64) -> InvocationStore {
        InvocationStore {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        by_id: HashMap::new(),
                        order: VecDeque::new(),
                    })
                })
                .collect(),
            key_shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            ttl_ms,
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Cell>> {
        self.shards[shard_of(id)].lock().by_id.get(id).cloned()
    }

    /// Checks an idempotency key before an invocation is created; `New` reserves nothing (the
    /// caller calls [`insert`](Self::insert) with the key, which settles races: the first wins).
    pub fn claim(&self, scope: (&str, &str, &str), digest: &[u8; 32]) -> Claim {
        let key = (scope.0.to_owned(), scope.1.to_owned(), scope.2.to_owned());
        let found = self.key_shards[shard_of(scope.2)].lock().get(&key).cloned();
        match found {
            None => Claim::New,
            Some((id, d)) => match self.get(&id) {
                None => {
                    self.key_shards[shard_of(scope.2)].lock().remove(&key);
                    Claim::New
                }
                Some(_) if &d != digest => Claim::Reused,
                Some(cell) => Claim::Existing(cell),
            },
        }
    }

    /// Stores a new record. With a key, a concurrent insert under the same key may have won:
    /// then that invocation is returned instead (`Err`).
    pub fn insert(
        &self,
        inv: Invocation,
        key: Option<((String, String, String), [u8; 32])>,
        now_ms: i64,
    ) -> Result<Arc<Cell>, Claim> {
        if let Some((k, digest)) = &key {
            let mut keys = self.key_shards[shard_of(&k.2)].lock();
            if let Some((id, d)) = keys.get(k) {
                if let Some(cell) = self.get(id) {
                    return Err(if d == digest {
                        Claim::Existing(cell)
                    } else {
                        Claim::Reused
                    });
                }
            }
            keys.insert(k.clone(), (inv.id.clone(), *digest));
        }
        let id = inv.id.clone();
        let cell = Arc::new(Cell {
            record: Mutex::new(inv),
            done: Notify::new(),
        });
        let mut shard = self.shards[shard_of(&id)].lock();
        shard.by_id.insert(id.clone(), cell.clone());
        shard.order.push_back((now_ms, id));
        self.evict(&mut shard, now_ms);
        Ok(cell)
    }

    fn evict(&self, shard: &mut Shard, now_ms: i64) {
        // Look at a bounded number of the oldest entries: finished ones past the TTL or over
        // capacity leave; unfinished ones go to the back (they are bounded by the queues).
        let mut budget = 8;
        while budget > 0 {
            let over = shard.by_id.len() > self.per_shard;
            let Some((at, id)) = shard.order.front().cloned() else {
                break;
            };
            let expired = now_ms - at > self.ttl_ms;
            if !over && !expired {
                break;
            }
            budget -= 1;
            shard.order.pop_front();
            let finished = shard.by_id.get(&id).map(|c| {
                let r = c.record.lock();
                (
                    r.state.finished(),
                    r.idempotency_key
                        .clone()
                        .map(|k| (r.tenant_id.clone(), r.function.clone(), k)),
                )
            });
            match finished {
                None => {}
                Some((true, key)) => {
                    shard.by_id.remove(&id);
                    if let Some(k) = key {
                        self.key_shards[shard_of(&k.2)].lock().remove(&k);
                    }
                }
                Some((false, _)) => shard.order.push_back((at, id)),
            }
        }
    }

    /// The kept records of one function, newest first, at most `limit` (the UI's list and
    /// live rates). Walks every shard: for people, not for the hot path.
    pub fn recent(&self, tenant_id: &str, function: &str, limit: usize) -> Vec<Invocation> {
        let mut out: Vec<Invocation> = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock();
            for cell in shard.by_id.values() {
                let r = cell.record.lock();
                if r.tenant_id == tenant_id && r.function == function {
                    out.push(r.clone());
                }
            }
        }
        out.sort_by(|a, b| (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id)));
        out.truncate(limit);
        out
    }

    /// Records kept now (for tests and the metrics).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().by_id.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(id: &str, state: State, key: Option<&str>) -> Invocation {
        Invocation {
            id: id.into(),
            tenant_id: "t".into(),
            function: "f".into(),
            revision: 1,
            executor: "local".into(),
            mode: Mode::Async,
            state,
            attempts: 0,
            created_ms: 0,
            started_ms: None,
            finished_ms: None,
            trace_id: String::new(),
            idempotency_key: key.map(str::to_owned),
            output: None,
            failure: None,
            callback: None,
            dead_lettered: false,
            redriven_from: None,
            cold_start_ms: None,
        }
    }

    #[test]
    fn the_store_stays_bounded_and_keeps_unfinished_records() {
        let store = InvocationStore::new(SHARDS * 2, 1_000_000);
        let running = store
            .insert(inv("running-0", State::Running, None), None, 0)
            .ok()
            .unwrap();
        for i in 0..1000 {
            store
                .insert(inv(&format!("done-{i}"), State::Succeeded, None), None, i)
                .ok()
                .unwrap();
        }
        assert!(store.len() <= SHARDS * 3, "{}", store.len());
        assert!(store.get("running-0").is_some());
        running.update(|r| r.state = State::Succeeded);
        assert!(store.get("done-999").is_some());
    }

    #[test]
    fn idempotency_keys_find_their_invocation_and_refuse_other_payloads() {
        let store = InvocationStore::new(100, 1_000_000);
        let scope = ("t", "f", "k1");
        let key = (
            ("t".to_string(), "f".to_string(), "k1".to_string()),
            [1u8; 32],
        );
        assert!(matches!(store.claim(scope, &[1; 32]), Claim::New));
        store
            .insert(inv("a", State::Running, Some("k1")), Some(key.clone()), 0)
            .ok()
            .unwrap();
        assert!(
            matches!(store.claim(scope, &[1; 32]), Claim::Existing(c) if c.snapshot().id == "a")
        );
        assert!(matches!(store.claim(scope, &[2; 32]), Claim::Reused));
        // A racing insert under the same key gets the first invocation.
        assert!(matches!(
            store.insert(inv("b", State::Queued, Some("k1")), Some(key), 0),
            Err(Claim::Existing(c)) if c.snapshot().id == "a"
        ));
    }
}
