//! Stored responses in this process's memory: bounded in bytes, each for its lifetime, the
//! oldest forgotten first when the bound is reached.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Entry {
    bytes: Arc<[u8]>,
    expires: Instant,
    /// Which write this is: a queue slot of an older write of the same id is stale.
    seq: u64,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Entry>,
    /// Writes in order (every entry has the same lifetime, so this is also expiry order).
    order: VecDeque<(u64, String)>,
    bytes: usize,
    next: u64,
}

pub(super) struct MemoryStore {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl MemoryStore {
    pub(super) fn new(capacity: usize) -> MemoryStore {
        MemoryStore {
            inner: Mutex::new(Inner::default()),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves whole entries: the map is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, id: &str) -> Option<Arc<[u8]>> {
        let inner = self.lock();
        let e = inner.by_id.get(id)?;
        (e.expires > Instant::now()).then(|| e.bytes.clone())
    }

    /// Keeps `bytes` as `id`; returns which write this is, for `forget`.
    pub(super) fn put(&self, id: &str, bytes: Arc<[u8]>, ttl: Duration) -> u64 {
        let mut inner = self.lock();
        let seq = inner.next;
        inner.next += 1;
        inner.bytes += bytes.len();
        let entry = Entry {
            bytes,
            expires: super::expiry(ttl),
            seq,
        };
        if let Some(old) = inner.by_id.insert(id.to_owned(), entry) {
            inner.bytes -= old.bytes.len();
        }
        inner.order.push_back((seq, id.to_owned()));
        let now = Instant::now();
        while let Some((seq, id)) = inner.order.front().cloned() {
            let (live, expired) = match inner.by_id.get(&id) {
                Some(e) if e.seq == seq => (true, e.expires <= now),
                _ => (false, false),
            };
            if live && !expired && inner.bytes <= self.capacity {
                break;
            }
            inner.order.pop_front();
            if live && let Some(e) = inner.by_id.remove(&id) {
                inner.bytes -= e.bytes.len();
            }
        }
        seq
    }

    /// Forgets write `seq` of `id`, unless a later write replaced it.
    pub(super) fn forget(&self, id: &str, seq: u64) {
        let mut inner = self.lock();
        if inner.by_id.get(id).is_some_and(|e| e.seq == seq)
            && let Some(e) = inner.by_id.remove(id)
        {
            inner.bytes -= e.bytes.len();
        }
    }

    pub(super) fn delete(&self, id: &str) {
        let mut inner = self.lock();
        if let Some(e) = inner.by_id.remove(id) {
            inner.bytes -= e.bytes.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_go_first_when_the_bound_is_reached() {
        let store = MemoryStore::new(25);
        let ten: Arc<[u8]> = Arc::from(vec![0u8; 10]);
        for id in ["a", "b", "c"] {
            store.put(id, ten.clone(), Duration::from_secs(60));
        }
        assert!(store.get("a").is_none());
        assert!(store.get("b").is_some() && store.get("c").is_some());
        store.delete("b");
        assert!(store.get("b").is_none());
        store.put("d", ten.clone(), Duration::from_secs(60));
        assert!(store.get("c").is_some() && store.get("d").is_some());
    }

    #[test]
    fn an_expired_response_is_gone() {
        let store = MemoryStore::new(1 << 20);
        store.put("a", Arc::from(vec![1u8]), Duration::ZERO);
        assert!(store.get("a").is_none());
    }
}
