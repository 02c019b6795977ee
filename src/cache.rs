//! The verified-token cache (SPEC §9): per VM, bounded, least-recently-used eviction.
//!
//! The key is the whole token string, so an entry can only ever be found by the exact token
//! that was verified: the cache cannot be poisoned by a look-alike. An entry expires with the
//! token (`exp` + skew); the caller also drops it when the key that verified it is gone.

use std::collections::HashMap;

/// A bounded map from token to a verified result `V`.
#[derive(Debug)]
pub struct TokenCache<V> {
    capacity: usize,
    entries: HashMap<String, Entry<V>>,
    /// Logical clock for recency: bumped on every hit and insert.
    tick: u64,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    /// Last second (Unix) at which the entry may be used.
    valid_until: u64,
    last_used: u64,
}

impl<V> TokenCache<V> {
    /// `capacity` 0 disables the cache.
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            capacity,
            entries: HashMap::with_capacity(capacity.min(4096)),
            tick: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for exactly this token, if it is still within its validity.
    pub fn get(&mut self, token: &str, now: u64) -> Option<&V> {
        let expired = match self.entries.get(token) {
            None => return None,
            Some(e) => now > e.valid_until,
        };
        if expired {
            self.entries.remove(token);
            return None;
        }
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(token).map(|e| {
            e.last_used = tick;
            &e.value
        })
    }

    /// Stores a verified result valid until `valid_until` (Unix seconds, inclusive).
    pub fn insert(&mut self, token: &str, value: V, valid_until: u64, now: u64) {
        if self.capacity == 0 || now > valid_until {
            return;
        }
        if !self.entries.contains_key(token) && self.entries.len() >= self.capacity {
            self.evict(now);
        }
        self.tick += 1;
        self.entries.insert(
            token.to_string(),
            Entry {
                value,
                valid_until,
                last_used: self.tick,
            },
        );
    }

    pub fn remove(&mut self, token: &str) {
        self.entries.remove(token);
    }

    /// Drops every entry `keep` refuses (e.g. verified by a key a refresh removed).
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.entries.retain(|_, e| keep(&e.value));
    }

    /// Makes room for one entry: expired entries first, else the least recently used.
    /// O(n) over a bounded n, and only on inserts into a full cache (after a verification
    /// that costs far more).
    fn evict(&mut self, now: u64) {
        let before = self.entries.len();
        self.entries.retain(|_, e| now <= e.valid_until);
        if self.entries.len() < before {
            return;
        }
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.last_used)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.entries.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_returns_the_value_for_the_exact_token_only() {
        let mut c = TokenCache::new(4);
        c.insert("a.b.c", 1, 100, 0);
        assert_eq!(c.get("a.b.c", 50), Some(&1));
        assert_eq!(c.get("a.b.C", 50), None);
        assert_eq!(c.get("a.b.c ", 50), None);
    }

    #[test]
    fn entry_dies_with_the_token() {
        let mut c = TokenCache::new(4);
        c.insert("t", 1, 100, 0);
        assert_eq!(c.get("t", 100), Some(&1));
        assert_eq!(c.get("t", 101), None);
        assert!(c.is_empty(), "expired entry is removed on lookup");
        c.insert("late", 2, 10, 11);
        assert!(c.is_empty(), "an already expired token is not cached");
    }

    #[test]
    fn full_cache_evicts_least_recently_used() {
        let mut c = TokenCache::new(2);
        c.insert("a", 1, 100, 0);
        c.insert("b", 2, 100, 0);
        assert_eq!(c.get("a", 1), Some(&1));
        c.insert("c", 3, 100, 1);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("b", 1), None, "b was least recently used");
        assert_eq!(c.get("a", 1), Some(&1));
        assert_eq!(c.get("c", 1), Some(&3));
    }

    #[test]
    fn full_cache_evicts_expired_entries_first() {
        let mut c = TokenCache::new(2);
        c.insert("old", 1, 10, 0);
        c.insert("new", 2, 100, 0);
        let _ = c.get("old", 5);
        c.insert("x", 3, 100, 50);
        assert_eq!(c.get("new", 50), Some(&2));
        assert_eq!(c.get("x", 50), Some(&3));
    }

    #[test]
    fn capacity_zero_disables_caching() {
        let mut c = TokenCache::new(0);
        c.insert("a", 1, 100, 0);
        assert_eq!(c.get("a", 0), None);
    }

    #[test]
    fn retain_drops_entries_of_removed_keys() {
        let mut c = TokenCache::new(4);
        c.insert("a", "kid1", 100, 0);
        c.insert("b", "kid2", 100, 0);
        c.retain(|kid| *kid != "kid1");
        assert_eq!(c.get("a", 1), None);
        assert_eq!(c.get("b", 1), Some(&"kid2"));
    }
}
