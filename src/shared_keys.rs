//! Process-wide key state in proxy-wasm shared data: every worker VM of the Envoy process sees
//! the same [`FetchSchedule`] and the same published key set per pool.
//!
//! - `cognito_authorizer.schedule|<pool identity>`: the schedule, changed only by
//!   compare-and-swap, so exactly one VM wins each fetch lease.
//! - `cognito_authorizer.jwks|<pool identity>`: the last valid JWKS, as an envelope with its
//!   fetch time. Written only by the VM that fetched it, after validation.
//!
//! The pool identity includes issuer, cluster and URI, so a configuration change never
//! picks up another pool's keys after a reload.
//!
//! A revocation source ([`SharedRevocations`]) has the same two entries under its own names
//! (`cognito_authorizer.revocation_list_schedule|…`, `cognito_authorizer.revocation_list|…`,
//! keyed by cluster, URI and fetch settings), plus a small stamp
//! (`cognito_authorizer.revocation_list_stamp|…`: fetch time and digest of the document) that
//! workers read on every tick instead of the list, which can be megabytes. The published value
//! is the validated list in its compact form (`revocation`), not the document: no VM but the
//! one that fetched it ever holds the document. These names are not the ones of the modules
//! that published the document itself (`revocations|…`), so a VM of this module never reads
//! such a value, nor shares a fetch lease with such a module during a reload. (Shared data is
//! the memory of one Envoy process: a hot restart's new process starts without it.)
//!
//! Envoy's shared data has one trap: a write to a key that does not exist yet ignores the
//! CAS and always succeeds. Two VMs that both saw "absent" would both win a lease taken by
//! such a write. So a lease is only ever taken by a CAS on an existing entry; the entry is
//! created first, holding no lease, by [`SharedKeys::ensure_schedule`] at configure time
//! (Envoy configures the main thread's VM before any worker VM exists).

use crate::config::Pool;
use crate::keys::{FetchSchedule, KeyTiming, PoolKeys};
use crate::revocation::{RevocationSource, Stamp};

/// The host's shared data, as proxy-wasm defines it.
pub trait SharedData {
    /// The value stored under `key` and its CAS, or `None` when absent (or unreadable).
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Stores `value`. With `cas`, only if the entry still has that CAS — unless the entry
    /// does not exist, which Envoy writes unconditionally.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// Another VM wrote the entry since it was read.
    CasMismatch,
    /// Any other host failure.
    Failed,
}

/// CAS retries before giving up for this tick (contention is between a handful of workers).
const CAS_ATTEMPTS: usize = 16;

/// The shared-data entries of one pool, over a host's shared data.
#[derive(Debug, Clone)]
pub struct SharedKeys<S> {
    store: S,
    schedule: String,
    envelope: String,
}

impl<S: SharedData> SharedKeys<S> {
    pub fn for_pool(pool: &Pool, store: S) -> Self {
        let identity = format!(
            "{}|{}|{}|{}",
            pool.name, pool.issuer, pool.jwks_cluster, pool.jwks_uri
        );
        SharedKeys {
            store,
            schedule: format!("cognito_authorizer.schedule|{identity}"),
            envelope: format!("cognito_authorizer.jwks|{identity}"),
        }
    }

    /// The schedule and list entries of a revocation source.
    pub fn for_revocations(source: &RevocationSource, store: S) -> Self {
        let identity = revocation_identity(source);
        SharedKeys {
            store,
            schedule: format!("cognito_authorizer.revocation_list_schedule|{identity}"),
            envelope: format!("cognito_authorizer.revocation_list|{identity}"),
        }
    }

    /// Creates the schedule entry (fetch due now, no lease) if it does not exist yet.
    pub fn ensure_schedule(&self) {
        if self.store.get(&self.schedule).is_none() {
            let _ = self.store.set(
                &self.schedule,
                FetchSchedule::default().encode().as_bytes(),
                None,
            );
        }
    }

    /// The current schedule (the default one — fetch now — when none is stored yet).
    pub fn schedule(&self) -> FetchSchedule {
        self.read_schedule()
            .map(|(schedule, _)| schedule)
            .unwrap_or_default()
    }

    fn read_schedule(&self) -> Option<(FetchSchedule, u32)> {
        let (bytes, cas) = self.store.get(&self.schedule)?;
        Some((FetchSchedule::decode(&bytes).unwrap_or_default(), cas))
    }

    /// Applies `change` atomically. `change` returns whether to write (its decision); the
    /// result is that decision and the schedule as stored afterwards. `None` when shared
    /// data keeps failing (the caller treats it as "not now"). A change is only ever written
    /// by CAS over an existing entry: a missing entry is created (without the change) first.
    pub fn update(
        &self,
        mut change: impl FnMut(&mut FetchSchedule) -> bool,
    ) -> Option<(bool, FetchSchedule)> {
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut schedule, cas)) = self.read_schedule() else {
                self.ensure_schedule();
                continue;
            };
            if !change(&mut schedule) {
                return Some((false, schedule));
            }
            match self
                .store
                .set(&self.schedule, schedule.encode().as_bytes(), Some(cas))
            {
                Ok(()) => return Some((true, schedule)),
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Failed) => return None,
            }
        }
        None
    }

    /// The published envelope and its CAS (which changes with every publication).
    pub fn envelope(&self) -> Option<(Vec<u8>, u32)> {
        self.store.get(&self.envelope)
    }

    /// Publishes a validated key set; returns its CAS.
    pub fn publish(&self, envelope: &[u8]) -> Option<u32> {
        self.store.set(&self.envelope, envelope, None).ok()?;
        self.envelope().map(|(_, cas)| cas)
    }
}

/// The fetch steps of every shared document (a pool's JWKS, a revocation document): each
/// changes the shared schedule by CAS and records the result in this VM's view (`local`).
impl<S: SharedData> SharedKeys<S> {
    /// At configure time: a refresh period shorter than the one that scheduled the next
    /// fetch applies now.
    pub fn fit_refresh<T>(&self, local: &PoolKeys<T>, now_ms: u64, timing: &KeyTiming) {
        let fetched_at = local.fetched_at_ms();
        let _ = self.update(|s| s.fit_refresh(now_ms, fetched_at, timing));
    }

    /// Takes the fetch lease if a fetch is due: true when this VM (`vm_id`) won it.
    pub fn claim_fetch<T>(
        &self,
        local: &mut PoolKeys<T>,
        now_ms: u64,
        timing: &KeyTiming,
        vm_id: u64,
    ) -> bool {
        if !local.schedule.fetch_due(now_ms, timing) {
            return false;
        }
        let claimed = self.update(|s| {
            let due = s.fetch_due(now_ms, timing);
            if due {
                s.fetch_started(now_ms, vm_id);
            }
            due
        });
        let Some((won, schedule)) = claimed else {
            return false;
        };
        local.observe(schedule);
        won
    }

    /// The fetch succeeded (and its document was published first): the lease is released
    /// and the next refresh scheduled.
    pub fn fetch_succeeded<T>(&self, local: &mut PoolKeys<T>, now_ms: u64, timing: &KeyTiming) {
        self.record(local, |s| s.fetch_succeeded(now_ms, timing));
    }

    /// The fetch failed (or could not be dispatched): retried with backoff (`jitter`: any
    /// u64). True when `local` keeps a document from before.
    pub fn fetch_failed<T>(&self, local: &mut PoolKeys<T>, now_ms: u64, jitter: u64) -> bool {
        self.record(local, |s| s.fetch_failed(now_ms, jitter));
        local.keys().is_some()
    }

    /// This VM (`vm_id`) goes away mid-fetch: its lease is released, unless another VM
    /// has taken one since.
    pub fn abandon_fetch(&self, vm_id: u64) {
        let _ = self.update(|s| s.lease_abandoned(vm_id));
    }

    fn record<T>(&self, local: &mut PoolKeys<T>, mut change: impl FnMut(&mut FetchSchedule)) {
        if let Some((_, schedule)) = self.update(|s| {
            change(s);
            true
        }) {
            local.observe(schedule);
        }
    }
}

/// Sources that fetch differently (another period, bound or timeout) keep apart schedules,
/// so a reload that changes them starts afresh.
fn revocation_identity(source: &RevocationSource) -> String {
    format!(
        "{}|{}|{}|{}|{}|{}",
        source.cluster,
        source.uri,
        source.refresh_seconds,
        source.max_stale_seconds,
        source.max_bytes,
        source.timeout_ms
    )
}

/// A revocation source's entries: the schedule and the list (as for keys) and the stamp
/// that announces each publication.
#[derive(Debug, Clone)]
pub struct SharedRevocations<S> {
    pub entries: SharedKeys<S>,
    store: S,
    stamp: String,
}

impl<S: SharedData + Clone> SharedRevocations<S> {
    pub fn for_source(source: &RevocationSource, store: S) -> Self {
        SharedRevocations {
            entries: SharedKeys::for_revocations(source, store.clone()),
            stamp: format!(
                "cognito_authorizer.revocation_list_stamp|{}",
                revocation_identity(source)
            ),
            store,
        }
    }

    /// The current stamp and its CAS (which changes with every publication).
    pub fn stamp(&self) -> Option<(Stamp, u32)> {
        let (bytes, cas) = self.store.get(&self.stamp)?;
        Some((Stamp::decode(&bytes)?, cas))
    }

    /// Publishes a validated list (its compact form) of the document fetched at
    /// `stamp.fetched_at_ms`: the list first (unless the list of the same document is already
    /// published), then the stamp, so a worker that sees the stamp finds the list.
    /// Returns the stamp's CAS.
    pub fn publish(&self, list: &[u8], stamp: Stamp) -> Option<u32> {
        // A stamp is only ever written after its list: the same digest means the list of the
        // same document is in place (and reading it back to check would copy megabytes).
        let same = self
            .stamp()
            .is_some_and(|(old, _)| old.digest == stamp.digest);
        if !same {
            self.entries.publish(list)?;
        }
        self.store
            .set(&self.stamp, stamp.encode().as_bytes(), None)
            .ok()?;
        self.stamp().map(|(_, cas)| cas)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::KeyTiming;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;

    /// Value and CAS by key.
    type Entries = HashMap<String, (Vec<u8>, u32)>;

    /// Shared data with Envoy's semantics, shared by the "VMs" of a test.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct FakeSharedData {
        entries: Rc<RefCell<Entries>>,
        next_cas: Rc<RefCell<u32>>,
    }

    impl SharedData for FakeSharedData {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.entries.borrow().get(key).cloned()
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            let mut entries = self.entries.borrow_mut();
            let mut next = self.next_cas.borrow_mut();
            *next += 1;
            match entries.get_mut(key) {
                Some(entry) => {
                    if cas.is_some_and(|c| c != 0 && c != entry.1) {
                        return Err(SetError::CasMismatch);
                    }
                    *entry = (value.to_vec(), *next);
                }
                // Envoy: a new key is written whatever the CAS.
                None => {
                    entries.insert(key.to_string(), (value.to_vec(), *next));
                }
            }
            Ok(())
        }
    }

    const T: KeyTiming = KeyTiming {
        refresh_ms: 3_600_000,
        min_refetch_ms: 10_000,
        max_stale_ms: 86_400_000,
        timeout_ms: 5_000,
    };

    fn pool() -> Pool {
        let json = r#"{"user_pools":[{"user_pool_id":"us-east-1_AbCdEf123","jwks_cluster":"c"}]}"#;
        let (config, _) = crate::config::Config::parse(json.as_bytes()).unwrap();
        config.pools[0].clone()
    }

    /// What the glue does on a tick: take the lease when a fetch is due.
    fn try_lease(keys: &SharedKeys<FakeSharedData>, now: u64, vm: u64) -> bool {
        keys.update(|s| {
            let due = s.fetch_due(now, &T);
            if due {
                s.fetch_started(now, vm);
            }
            due
        })
        .is_some_and(|(won, _)| won)
    }

    #[test]
    fn two_vms_ticking_together_at_start_fetch_once() {
        let store = FakeSharedData::default();
        let a = SharedKeys::for_pool(&pool(), store.clone());
        let b = SharedKeys::for_pool(&pool(), store.clone());
        a.ensure_schedule();
        b.ensure_schedule();
        assert!(try_lease(&a, 1, 0xA));
        assert!(!try_lease(&b, 1, 0xB));
        assert_eq!(b.schedule().lease_holder, 0xA);
    }

    #[test]
    fn a_lease_is_never_taken_by_the_write_that_creates_the_entry() {
        // No entry yet: the first VM's tick creates it, then leases by CAS; the second VM sees
        // the lease instead of overwriting the entry.
        let store = FakeSharedData::default();
        let a = SharedKeys::for_pool(&pool(), store.clone());
        let b = SharedKeys::for_pool(&pool(), store.clone());
        assert!(try_lease(&a, 1, 0xA));
        assert!(!try_lease(&b, 1, 0xB));
    }

    #[test]
    fn a_late_creation_after_a_lease_changes_nothing() {
        let store = FakeSharedData::default();
        let a = SharedKeys::for_pool(&pool(), store.clone());
        let b = SharedKeys::for_pool(&pool(), store.clone());
        assert!(try_lease(&a, 1, 0xA));
        // B configures after A took the lease: the entry exists, so nothing is written.
        b.ensure_schedule();
        assert!(!try_lease(&b, 2, 0xB));
    }

    #[test]
    fn a_vm_that_ends_releases_only_its_own_lease() {
        let store = FakeSharedData::default();
        let a = SharedKeys::for_pool(&pool(), store.clone());
        let b = SharedKeys::for_pool(&pool(), store.clone());
        a.ensure_schedule();
        assert!(try_lease(&a, 1, 0xA));
        // B ends (a reload drops its VM): A's lease must survive.
        let released = b.update(|s| s.lease_abandoned(0xB));
        assert_eq!(released.map(|(w, _)| w), Some(false));
        assert!(!try_lease(&b, 2, 0xB));
        // A ends mid-fetch: the fetch is due again at once, for anyone.
        let released = a.update(|s| s.lease_abandoned(0xA));
        assert_eq!(released.map(|(w, _)| w), Some(true));
        assert!(try_lease(&b, 3, 0xB));
    }

    #[test]
    fn a_concurrent_change_is_retried_on_the_fresh_entry() {
        let store = FakeSharedData::default();
        let a = SharedKeys::for_pool(&pool(), store.clone());
        a.ensure_schedule();
        let mut first = true;
        let result = a.update(|s| {
            if first {
                first = false;
                // Another VM writes between this VM's read and its CAS.
                let other = SharedKeys::for_pool(&pool(), store.clone());
                other.update(|o| {
                    o.completions += 1;
                    true
                });
            }
            s.failures += 1;
            true
        });
        let (written, schedule) = result.unwrap();
        assert!(written);
        assert_eq!((schedule.failures, schedule.completions), (1, 1));
    }

    #[test]
    fn published_key_sets_carry_a_new_cas_each_time() {
        let store = FakeSharedData::default();
        let a = SharedKeys::for_pool(&pool(), store.clone());
        let first = a.publish(b"0\n{\"keys\":[]}").unwrap();
        let second = a.publish(b"1\n{\"keys\":[]}").unwrap();
        assert_ne!(first, second);
        assert_eq!(a.envelope().map(|(_, cas)| cas), Some(second));
    }

    fn source(uri: &str) -> RevocationSource {
        let json = format!(r#"{{"cluster":"r","uri":"{uri}"}}"#);
        RevocationSource::parse(json.as_bytes(), "revocations").unwrap()
    }

    #[test]
    fn revocation_entries_are_apart_from_key_entries_and_per_source() {
        let store = FakeSharedData::default();
        let keys = SharedKeys::for_pool(&pool(), store.clone());
        let a = SharedRevocations::for_source(&source("https://h/a"), store.clone());
        let b = SharedRevocations::for_source(&source("https://h/b"), store.clone());
        keys.ensure_schedule();
        a.entries.ensure_schedule();
        assert!(try_lease(&a.entries, 1, 0xA));
        // The pool's keys and the other source have leases of their own.
        assert!(try_lease(&keys, 1, 0xB));
        assert!(try_lease(&b.entries, 1, 0xB));
        assert!(!try_lease(&a.entries, 1, 0xB));
        assert_eq!(a.entries.schedule().lease_holder, 0xA);
    }

    #[test]
    fn a_document_is_published_once_and_its_stamp_on_every_refresh() {
        let store = FakeSharedData::default();
        let fetcher = SharedRevocations::for_source(&source("https://h/a"), store.clone());
        let worker = SharedRevocations::for_source(&source("https://h/a"), store.clone());
        assert_eq!(worker.stamp(), None);
        let first = Stamp {
            fetched_at_ms: 1_000,
            digest: 7,
        };
        let cas1 = fetcher.publish(b"{doc}", first).unwrap();
        let (seen, seen_cas) = worker.stamp().unwrap();
        assert_eq!((seen, seen_cas), (first, cas1));
        let doc_cas = worker.entries.envelope().unwrap().1;
        // The same bytes refetched: a new stamp, the document is not written again.
        let again = Stamp {
            fetched_at_ms: 31_000,
            digest: 7,
        };
        let cas2 = fetcher.publish(b"{doc}", again).unwrap();
        assert_ne!(cas1, cas2);
        assert_eq!(worker.stamp().unwrap().0, again);
        assert_eq!(worker.entries.envelope().unwrap().1, doc_cas);
        // New bytes: the document is replaced before the stamp announces it.
        let changed = Stamp {
            fetched_at_ms: 61_000,
            digest: 8,
        };
        fetcher.publish(b"{new}", changed).unwrap();
        assert_eq!(worker.entries.envelope().unwrap().0, b"{new}");
        assert_eq!(worker.stamp().unwrap().0, changed);
    }
}
