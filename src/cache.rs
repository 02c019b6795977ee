//! The verified-token cache (README "Behaviour", "Keys"): per VM, bounded, exp-aware.
//!
//! The key is the whole token string, so an entry can only ever be found by the exact token
//! that was verified: the cache cannot be poisoned by a look-alike. An entry expires with the
//! token (`exp` + skew); the caller also drops it when the key that verified it is gone.
//!
//! Eviction is CLOCK (second chance), the usual constant-time approximation of LRU: a hit
//! only sets a flag (no allocation, no reordering on the hot path); when the cache is full, a
//! hand sweeps the insertion ring, evicting the first entry that is expired or was not used
//! since the hand last passed it.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;

/// A bounded map from token to a verified result `V`.
#[derive(Debug)]
pub struct TokenCache<V> {
    capacity: usize,
    entries: HashMap<Rc<str>, Entry<V>, TailHash>,
    /// The CLOCK ring: every key in `entries` exactly once, the hand at the front.
    ring: VecDeque<Rc<str>>,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    /// Last second (Unix) at which the entry may be used.
    valid_until: u64,
    /// Used since the hand last passed: gets a second chance.
    referenced: bool,
}

/// Bytes of a token the cache hashes: its end, which is the signature.
const HASHED_TAIL: usize = 32;

/// Hashes only the last [`HASHED_TAIL`] bytes of a key, with the standard keyed hasher:
/// every lookup hashes the whole request's token otherwise (~1 KB per request on the hot
/// path). Safe against collision flooding: the entries are verified tokens, whose tails are
/// signature bytes that nobody without the pool's private key can choose, and the hash is
/// still keyed per VM. Equality still compares whole tokens.
#[derive(Debug, Clone, Default)]
struct TailHash(RandomState);

struct TailHasher<H>(H);

impl BuildHasher for TailHash {
    type Hasher = TailHasher<<RandomState as BuildHasher>::Hasher>;

    fn build_hasher(&self) -> Self::Hasher {
        TailHasher(self.0.build_hasher())
    }
}

impl<H: Hasher> Hasher for TailHasher<H> {
    fn finish(&self) -> u64 {
        self.0.finish()
    }

    fn write(&mut self, bytes: &[u8]) {
        let tail = bytes.get(bytes.len().saturating_sub(HASHED_TAIL)..);
        self.0.write(tail.unwrap_or(bytes));
    }
}

impl<V> TokenCache<V> {
    /// `capacity` 0 disables the cache.
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            capacity,
            entries: HashMap::with_capacity_and_hasher(capacity.min(4096), TailHash::default()),
            ring: VecDeque::with_capacity(capacity.min(4096)),
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
        let entry = self.entries.get_mut(token)?;
        if now > entry.valid_until {
            // Left for the hand to collect: removing from the ring here would be O(n).
            return None;
        }
        entry.referenced = true;
        Some(&entry.value)
    }

    /// Stores a verified result valid until `valid_until` (Unix seconds, inclusive).
    pub fn insert(&mut self, token: &str, value: V, valid_until: u64, now: u64) {
        if self.capacity == 0 || now > valid_until {
            return;
        }
        if let Some(entry) = self.entries.get_mut(token) {
            *entry = Entry {
                value,
                valid_until,
                referenced: true,
            };
            return;
        }
        while self.entries.len() >= self.capacity {
            self.evict_one(now);
        }
        let key: Rc<str> = Rc::from(token);
        self.ring.push_back(Rc::clone(&key));
        self.entries.insert(
            key,
            Entry {
                value,
                valid_until,
                referenced: false,
            },
        );
    }

    pub fn remove(&mut self, token: &str) {
        if self.entries.remove(token).is_some() {
            self.ring.retain(|k| &**k != token);
        }
    }

    /// Drops every entry `keep` refuses (e.g. verified by a key a refresh removed).
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.entries.retain(|_, e| keep(&e.value));
        let entries = &self.entries;
        self.ring.retain(|k| entries.contains_key(k));
    }

    /// Advances the hand until one entry is evicted. Every entry is passed at most twice.
    fn evict_one(&mut self, now: u64) {
        while let Some(key) = self.ring.pop_front() {
            match self.entries.get_mut(&key) {
                None => continue,
                Some(e) if e.referenced && now <= e.valid_until => {
                    e.referenced = false;
                    self.ring.push_back(key);
                }
                Some(_) => {
                    self.entries.remove(&key);
                    return;
                }
            }
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
    fn tokens_with_the_same_tail_are_still_told_apart() {
        let mut c = TokenCache::new(8);
        let tail = "x".repeat(HASHED_TAIL);
        for i in 0..5 {
            c.insert(&format!("{i}.payload.{tail}"), i, 100, 0);
        }
        for i in 0..5 {
            assert_eq!(c.get(&format!("{i}.payload.{tail}"), 1), Some(&i));
        }
        assert_eq!(c.get(&format!("9.payload.{tail}"), 1), None);
        assert_eq!(c.get(&tail, 1), None);
        c.insert("short", 7, 100, 0);
        assert_eq!(c.get("short", 1), Some(&7));
    }

    #[test]
    fn entry_dies_with_the_token() {
        let mut c = TokenCache::new(4);
        c.insert("t", 1, 100, 0);
        assert_eq!(c.get("t", 100), Some(&1));
        assert_eq!(c.get("t", 101), None);
        c.insert("late", 2, 10, 11);
        assert_eq!(
            c.get("late", 11),
            None,
            "an already expired token is not cached"
        );
    }

    #[test]
    fn full_cache_gives_used_entries_a_second_chance() {
        let mut c = TokenCache::new(2);
        c.insert("a", 1, 100, 0);
        c.insert("b", 2, 100, 0);
        assert_eq!(c.get("a", 1), Some(&1));
        c.insert("c", 3, 100, 1);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("b", 1), None, "b was not used: evicted first");
        assert_eq!(c.get("a", 1), Some(&1));
        assert_eq!(c.get("c", 1), Some(&3));
    }

    #[test]
    fn full_cache_evicts_expired_entries_before_unused_ones() {
        let mut c = TokenCache::new(2);
        c.insert("old", 1, 10, 0);
        c.insert("new", 2, 100, 0);
        let _ = c.get("old", 5);
        c.insert("x", 3, 100, 50);
        assert_eq!(c.get("new", 50), Some(&2));
        assert_eq!(c.get("x", 50), Some(&3));
        assert_eq!(c.get("old", 50), None);
    }

    #[test]
    fn cache_stays_bounded_under_a_flood_of_distinct_tokens() {
        let mut c = TokenCache::new(64);
        for i in 0..10_000u64 {
            let token = format!("token-{i}");
            c.insert(&token, i, 1_000, 0);
            if i % 3 == 0 {
                let _ = c.get(&token, 0);
            }
            assert!(c.len() <= 64);
            assert_eq!(c.ring.len(), c.entries.len());
        }
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
        assert_eq!(c.ring.len(), 1);
    }

    #[test]
    fn remove_and_reinsert_keep_ring_and_map_in_step() {
        let mut c = TokenCache::new(2);
        c.insert("a", 1, 100, 0);
        c.insert("a", 2, 100, 0);
        assert_eq!(c.ring.len(), 1);
        assert_eq!(c.get("a", 0), Some(&2));
        c.remove("a");
        assert!(c.is_empty());
        assert!(c.ring.is_empty());
    }
}
