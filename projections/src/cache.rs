//! The in-process read cache (moka): payment details under `payment:detail:{id}` and list
//! pages under their normalised query, bounded by capacity and TTL.
//!
//! A cached read must never be older than the projection. The projector invalidates the
//! entries of every payment it touches right after its commit; a reader that missed the cache
//! only stores what it read if no invalidation of that payment happened since it started
//! reading (checked and stored under a read lock that invalidation takes for writing), so a
//! slow reader cannot put back a row the projector has already replaced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use uuid::Uuid;

use bytes::Bytes;

use super::read::{ListChange, ListFilter, ListPage, PaymentDetail};

/// A cached answer: the view, and its JSON as served, serialised once when it is stored so a
/// cached read costs a lookup and a copy of bytes.
#[derive(Debug)]
pub struct Cached<T> {
    pub value: T,
    pub json: Bytes,
}

impl<T: serde::Serialize> Cached<T> {
    pub fn new(value: T) -> Cached<T> {
        let json = serde_json::to_vec(&value).expect("views are plain data and serialize");
        Cached {
            value,
            json: Bytes::from(json),
        }
    }
}

impl<T> std::ops::Deref for Cached<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

const SHARDS: usize = 64;

#[derive(Clone)]
pub struct ReadCache {
    inner: Arc<Inner>,
}

struct Inner {
    details: moka::sync::Cache<Uuid, Arc<Cached<PaymentDetail>>>,
    /// Each page with the filter it answers, so that a change drops only the lists it can
    /// alter.
    lists: moka::sync::Cache<String, (Arc<ListFilter>, Arc<Cached<ListPage>>)>,
    /// Invalidation counters: one per shard of payment ids, and one for all lists.
    epochs: [AtomicU64; SHARDS],
    list_epoch: AtomicU64,
    /// Makes "check epoch, then insert" atomic with respect to "bump epoch, then invalidate".
    /// A std lock: it is held for a few instructions and never across an await.
    gate: RwLock<()>,
}

/// Taken before a database read; decides whether what was read may be cached.
#[derive(Clone, Copy)]
pub struct Ticket(u64);

impl ReadCache {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                details: moka::sync::Cache::builder()
                    .name("payment:detail")
                    .max_capacity(capacity)
                    .time_to_live(ttl)
                    .build(),
                lists: moka::sync::Cache::builder()
                    .name("payment:list")
                    .max_capacity(capacity / 4 + 1)
                    .time_to_live(ttl)
                    .build(),
                epochs: std::array::from_fn(|_| AtomicU64::new(0)),
                list_epoch: AtomicU64::new(0),
                gate: RwLock::new(()),
            }),
        }
    }

    /// The key the seed design names, for logs and metrics.
    pub fn detail_key(id: Uuid) -> String {
        format!("payment:detail:{id}")
    }

    fn shard(id: &Uuid) -> usize {
        (id.as_u128() as usize) % SHARDS
    }

    pub fn detail(&self, id: &Uuid) -> Option<Arc<Cached<PaymentDetail>>> {
        let hit = self.inner.details.get(id);
        count(hit.is_some(), "detail");
        hit
    }

    pub fn detail_ticket(&self, id: &Uuid) -> Ticket {
        Ticket(self.inner.epochs[Self::shard(id)].load(Ordering::Acquire))
    }

    pub fn store_detail(&self, ticket: Ticket, detail: Arc<Cached<PaymentDetail>>) {
        let _gate = self.inner.gate.read().unwrap_or_else(|p| p.into_inner());
        if self.inner.epochs[Self::shard(&detail.id)].load(Ordering::Acquire) == ticket.0 {
            self.inner.details.insert(detail.id, detail);
        }
    }

    pub fn list(&self, key: &str) -> Option<Arc<Cached<ListPage>>> {
        let hit = self.inner.lists.get(key).map(|(_, page)| page);
        count(hit.is_some(), "list");
        hit
    }

    pub fn list_ticket(&self) -> Ticket {
        Ticket(self.inner.list_epoch.load(Ordering::Acquire))
    }

    pub fn store_list(&self, ticket: Ticket, filter: ListFilter, page: Arc<Cached<ListPage>>) {
        let _gate = self.inner.gate.read().unwrap_or_else(|p| p.into_inner());
        if self.inner.list_epoch.load(Ordering::Acquire) == ticket.0 {
            self.inner
                .lists
                .insert(filter.cache_key(), (Arc::new(filter), page));
        }
    }

    /// Called by the projector after it committed `changes`: drops the details of those
    /// payments and only the list pages one of the changes can alter.
    pub fn invalidate_changes(&self, changes: &[ListChange]) {
        let _gate = self.inner.gate.write().unwrap_or_else(|p| p.into_inner());
        for c in changes {
            self.inner.epochs[Self::shard(&c.after.id)].fetch_add(1, Ordering::AcqRel);
            self.inner.details.invalidate(&c.after.id);
        }
        // Readers that started before this point do not store what they read.
        self.inner.list_epoch.fetch_add(1, Ordering::AcqRel);
        let stale: Vec<Arc<String>> = self
            .inner
            .lists
            .iter()
            .filter(|(_, (filter, _))| changes.iter().any(|c| filter.affected_by(c)))
            .map(|(key, _)| key)
            .collect();
        for key in stale {
            self.inner.lists.invalidate(key.as_str());
        }
    }

    /// Called when other nodes changed these payments and only their ids are known: drops
    /// their details and every list page.
    pub fn invalidate(&self, payment_ids: impl IntoIterator<Item = Uuid>) {
        let _gate = self.inner.gate.write().unwrap_or_else(|p| p.into_inner());
        for id in payment_ids {
            self.inner.epochs[Self::shard(&id)].fetch_add(1, Ordering::AcqRel);
            self.inner.details.invalidate(&id);
        }
        self.inner.list_epoch.fetch_add(1, Ordering::AcqRel);
        self.inner.lists.invalidate_all();
    }

    /// Drops everything (after a replay swapped the tables).
    pub fn clear(&self) {
        let _gate = self.inner.gate.write().unwrap_or_else(|p| p.into_inner());
        for e in &self.inner.epochs {
            e.fetch_add(1, Ordering::AcqRel);
        }
        self.inner.list_epoch.fetch_add(1, Ordering::AcqRel);
        self.inner.details.invalidate_all();
        self.inner.lists.invalidate_all();
    }
}

fn count(hit: bool, kind: &'static str) {
    if hit {
        metrics::counter!("ledger_cache_hits_total", "kind" => kind).increment(1);
    } else {
        metrics::counter!("ledger_cache_misses_total", "kind" => kind).increment(1);
    }
}
