//! The proxy-wasm glue: the only code that talks to the host. Kept thin: every decision is
//! made by the pure modules of the crate; this layer reads headers, the clock and callout
//! results, and carries out what the core decided.
//!
//! - `root`: configuration, JWKS and revocation-document fetches and refreshes, waking
//!   requests that wait for them.
//! - `http`: one request: the decision flow (README "Behaviour").
//! - `host`: metrics, properties, clock, request headers — small wrappers over host calls.
//! - `shared`: the host's shared data behind the pure `shared_keys` protocol.

mod host;
mod http;
mod root;
mod shared;

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::types::LogLevel;

use log::{debug, warn};

use crate::cache::TokenCache;
use crate::config::Config;
use crate::jwks::{parse_jwks, KeySet};
use crate::keys::{decode_envelope, KeyTiming, PoolKeys};
use crate::revocation::{RevocationList, Stamp};
use crate::verify::VerifiedToken;

proxy_wasm::main! {{
    // Until the host's level is read in on_configure: nothing below info is formatted.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(root::Root::new(context_id)));
}}

/// State of one VM, shared by its root context and its HTTP contexts (one thread per VM).
/// Never borrowed across a host call that could re-enter the VM.
pub(crate) struct VmState {
    pub config: Rc<Config>,
    pub timing: KeyTiming,
    /// One entry per configured pool, same order as `config.pools`.
    pub pools: Vec<PoolSlot>,
    /// One entry per revocation source, same order as `config.revocation_sources`.
    pub sources: Vec<SourceSlot>,
    pub cache: TokenCache<Rc<Verified>>,
    pub waiters: Vec<Waiter>,
    /// The root ticks fast (see `http::BUSY_TICK`) while requests wait.
    pub busy_tick: bool,
    pub metrics: host::Metrics,
    /// Signature checks by the host, where its self-test passed.
    pub host_crypto: host::HostCrypto,
    /// This VM's identity as a fetch-lease holder.
    pub vm_id: u64,
}

pub(crate) type SharedState = Rc<RefCell<VmState>>;

impl VmState {
    /// Brings one pool up to date with shared data: a key set published by another VM (or
    /// before a reload) is parsed and installed, and the schedule is observed. Only
    /// non-reentrant host calls (shared data reads) happen here.
    pub fn sync_pool(&mut self, pool: usize) {
        let Some(slot) = self.pools.get(pool) else {
            return;
        };
        let schedule = slot.shared.schedule();
        let known_cas = slot.envelope_cas;
        let parsed = slot
            .shared
            .envelope()
            .filter(|(_, cas)| Some(*cas) != known_cas)
            .and_then(|(envelope, cas)| {
                let (fetched_at, body) = decode_envelope(&envelope)?;
                let parsed = parse_jwks(body, self.config.max_jwks_bytes).ok()?;
                Some((parsed.keys, fetched_at, cas))
            });
        if let Some((keys, fetched_at, cas)) = parsed {
            debug!(
                "pool #{pool}: using the key set published in shared data: kids [{}]",
                keys.kids().join(",")
            );
            self.install_keys(pool, keys, fetched_at, Some(cas));
        }
        if let Some(slot) = self.pools.get_mut(pool) {
            slot.keys.observe(schedule);
        }
    }

    /// What requests waiting on `pool` watch: it moves when the pool's keys or fetches move,
    /// or its revocation source's document or fetches do.
    pub fn generation_of(&self, pool: usize) -> u64 {
        let keys = self.pools.get(pool).map_or(0, |p| p.keys.generation());
        let revocations = self
            .config
            .pools
            .get(pool)
            .and_then(|p| p.revocations)
            .and_then(|i| self.sources.get(i))
            .map_or(0, |src| src.list.generation());
        keys.wrapping_add(revocations)
    }

    /// Brings one revocation source up to date with shared data: a document another VM
    /// published is parsed and installed (only when its bytes changed: the stamp carries
    /// their digest); the schedule is observed. A document that does not load leaves the
    /// previous list in force. Called on the tick, never inside a request: parsing a large
    /// document takes milliseconds.
    pub fn sync_source(&mut self, index: usize, now_ms: u64) {
        let skew = self.config.clock_skew_seconds;
        let Some(limits) = self
            .config
            .revocation_sources
            .get(index)
            .map(|src| src.limits(skew))
        else {
            return;
        };
        let Some(slot) = self.sources.get_mut(index) else {
            return;
        };
        let schedule = slot.shared.entries.schedule();
        if let Some((stamp, cas)) = slot.shared.stamp() {
            if Some(cas) != slot.stamp_cas {
                slot.take_published(index, stamp, cas, &limits, now_ms);
            }
        }
        slot.list.observe(schedule);
    }

    /// Installs a key set in this VM and drops cached tokens whose key it no longer trusts.
    pub fn install_keys(&mut self, pool: usize, keys: KeySet, fetched_at: u64, cas: Option<u32>) {
        let count = keys.len();
        let Some(slot) = self.pools.get_mut(pool) else {
            return;
        };
        slot.keys.set_keys(keys, fetched_at);
        slot.envelope_cas = cas;
        if let Some(keys) = slot.keys.keys().cloned() {
            self.cache.retain(|v| {
                v.token.pool != pool
                    || keys
                        .get(&v.token.kid)
                        .is_some_and(|k| k.fingerprint == v.token.key_fingerprint)
            });
        }
        self.metrics.set_keys(pool, count);
    }
}

/// One pool as this VM sees it: its keys and schedule, where they live in shared data, and
/// which published key set it has parsed.
#[derive(Debug)]
pub(crate) struct PoolSlot {
    pub keys: PoolKeys,
    pub shared: shared::SharedKeys,
    pub envelope_cas: Option<u32>,
}

/// One revocation source as this VM sees it: its list and schedule, where they live in
/// shared data, and which publication it has installed.
#[derive(Debug)]
pub(crate) struct SourceSlot {
    pub list: PoolKeys<RevocationList>,
    pub shared: shared::SharedRevocations,
    pub timing: KeyTiming,
    /// CAS of the stamp last acted upon.
    pub stamp_cas: Option<u32>,
    /// Digest of the document the installed list was parsed from.
    pub digest: Option<u64>,
}

impl SourceSlot {
    fn take_published(
        &mut self,
        index: usize,
        stamp: Stamp,
        cas: u32,
        limits: &crate::revocation::DocumentLimits,
        now_ms: u64,
    ) {
        if Some(stamp.digest) == self.digest {
            self.list.refreshed(stamp.fetched_at_ms);
            self.stamp_cas = Some(cas);
            return;
        }
        // The document as fetched (its fetch time is in the stamp).
        let Some((body, _)) = self.shared.entries.envelope() else {
            return;
        };
        let body = body.as_slice();
        if crate::revocation::document_digest(body) != stamp.digest {
            // Published after the stamp was read: its own stamp comes next tick.
            return;
        }
        self.stamp_cas = Some(cas);
        match RevocationList::parse(body, limits, now_ms / 1000) {
            Ok(list) => {
                debug!(
                    "revocations #{index}: using the document published in shared data: {} revoked ids, {} signed-out users",
                    list.revoked_ids(),
                    list.signed_out_users()
                );
                self.list.set_keys(list, stamp.fetched_at_ms);
                self.digest = Some(stamp.digest);
            }
            Err(e) => {
                warn!("revocations: published document not loaded ({e}); keeping the previous list")
            }
        }
    }
}

/// A verified token and the claim headers it yields, computed once and reused from the cache.
#[derive(Debug)]
pub(crate) struct Verified {
    pub token: VerifiedToken,
    pub claim_headers: Vec<(String, String)>,
}

/// A request paused until its pool's keys arrive (or its deadline passes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waiter {
    pub context_id: u32,
    pub pool: usize,
    pub deadline_ms: u64,
    /// The pool's generation when it started waiting: it is re-run when that moves.
    pub generation: u64,
    /// It already waited for an unknown-`kid` refetch: it gets no second one.
    pub kid_refetched: bool,
}
