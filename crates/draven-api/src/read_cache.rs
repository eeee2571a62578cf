//! A short-lived cache of hot read responses (artifact reads), per tenant.
//!
//! An entry is served only while it is younger than [`ReadCache::TTL`] and its tenant has seen
//! no write since it was filled: every state-changing request of a tenant (any method but GET
//! and HEAD) bumps the tenant's generation after it completes, which retires all its entries.
//! So a server never serves something older than its own last write, and other servers sharing
//! the database see a change within the TTL. Writes always go to the database (ETag checks
//! included), so a stale read can at most cost the client a 412.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Cached {
    pub body: Bytes,
    pub revision: i64,
}

/// (tenant id, resource key) → (tenant generation when filled, when filled, value)
type Entries = HashMap<(String, String), (u64, Instant, Cached)>;

#[derive(Debug, Default)]
pub struct ReadCache {
    generations: RwLock<HashMap<String, u64>>,
    entries: RwLock<Entries>,
}

impl ReadCache {
    pub const TTL: Duration = Duration::from_secs(1);
    const MAX_ENTRIES: usize = 50_000;

    /// The tenant's current generation; read it *before* loading what you will `put`.
    pub fn generation(&self, tenant_id: &str) -> u64 {
        self.generations
            .read()
            .map(|g| g.get(tenant_id).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    pub fn get(&self, tenant_id: &str, key: &str) -> Option<Cached> {
        let generation = self.generation(tenant_id);
        let entries = self.entries.read().ok()?;
        let (g, at, c) = entries.get(&(tenant_id.to_owned(), key.to_owned()))?;
        (*g == generation && at.elapsed() < Self::TTL).then(|| c.clone())
    }

    pub fn put(&self, tenant_id: &str, key: &str, generation: u64, value: Cached) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= Self::MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(
                (tenant_id.to_owned(), key.to_owned()),
                (generation, Instant::now(), value),
            );
        }
    }

    /// Retires every entry of the tenant (after a write).
    pub fn invalidate(&self, tenant_id: &str) {
        if let Ok(mut g) = self.generations.write() {
            *g.entry(tenant_id.to_owned()).or_insert(0) += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_retires_entries_filled_before_it() {
        let c = ReadCache::default();
        let g = c.generation("t");
        c.put(
            "t",
            "k",
            g,
            Cached {
                body: Bytes::from_static(b"v1"),
                revision: 1,
            },
        );
        assert_eq!(c.get("t", "k").unwrap().body, Bytes::from_static(b"v1"));
        assert!(c.get("u", "k").is_none(), "tenants are separate");
        c.invalidate("t");
        assert!(c.get("t", "k").is_none());
        // A value loaded before the write but stored after it is never served.
        c.put(
            "t",
            "k",
            g,
            Cached {
                body: Bytes::from_static(b"stale"),
                revision: 1,
            },
        );
        assert!(c.get("t", "k").is_none());
    }
}
