//! Root context: parses the configuration; keeps this VM's copy of each pool's keys in step
//! with the process-wide state in shared data; fetches a JWKS when this VM wins the fetch
//! lease; wakes the requests that wait for keys.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use log::{debug, error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use super::host::{self, now_ms, HostCrypto, Metrics};
use super::http::{self, Request};
use super::shared::SharedKeys;
use super::{PoolSlot, SharedState, VmState};
use crate::algorithm::Algorithm;
use crate::cache::TokenCache;
use crate::config::{Config, SignatureBackendChoice};
use crate::jwks::parse_jwks;
use crate::keys::{encode_envelope, KeyTiming, PoolKeys};
use crate::metrics::Counter;

/// Tick while nothing waits: drives refreshes, retries and picking up keys other VMs fetched.
const IDLE_TICK: Duration = Duration::from_millis(1000);
/// The first tick, right after configuration, starts the first fetch. Not on_configure
/// itself: Envoy configures a throw-away root context first, whose callouts are cancelled
/// with it (seen on Envoy 1.40: the lease then blocked every worker for 2 x the timeout).
const FIRST_TICK: Duration = Duration::from_millis(1);

pub struct Root {
    context_id: u32,
    state: Option<SharedState>,
    /// Callout token → pool index, for fetches this VM started.
    fetches: HashMap<u32, usize>,
    ticked: bool,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            state: None,
            fetches: HashMap::new(),
            ticked: false,
        }
    }

    /// Brings this VM's view of every pool up to date with shared data.
    fn sync_pools(&self, state: &SharedState) {
        let mut s = state.borrow_mut();
        for pool in 0..s.pools.len() {
            s.sync_pool(pool);
        }
    }

    /// Starts the fetches that are due and whose lease this VM wins.
    fn dispatch_due_fetches(&mut self, state: &SharedState) {
        let now = now_ms();
        let pool_count = state.borrow().pools.len();
        for pool in 0..pool_count {
            let (shared, timing, due) = {
                let s = state.borrow();
                let Some(slot) = s.pools.get(pool) else {
                    continue;
                };
                (
                    slot.shared.clone(),
                    s.timing,
                    slot.keys.schedule.fetch_due(now, &s.timing),
                )
            };
            if !due {
                continue;
            }
            let Some((won, schedule)) = shared.update(|sch| {
                let due = sch.fetch_due(now, &timing);
                if due {
                    sch.fetch_started(now);
                }
                due
            }) else {
                continue;
            };
            if let Some(slot) = state.borrow_mut().pools.get_mut(pool) {
                slot.keys.observe(schedule);
            }
            if won {
                self.start_fetch(state, pool, &shared, now);
            }
        }
    }

    fn start_fetch(&mut self, state: &SharedState, pool: usize, shared: &SharedKeys, now: u64) {
        let (cluster, authority, path, timeout) = {
            let s = state.borrow();
            let Some(p) = s.config.pools.get(pool) else {
                return;
            };
            (
                p.jwks_cluster.clone(),
                p.jwks.authority.clone(),
                p.jwks.path.clone(),
                Duration::from_millis(s.config.jwks_timeout_ms),
            )
        };
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", authority.as_str()),
            ("accept", "application/json"),
            ("user-agent", "cognito-authorizer"),
        ];
        match self.dispatch_http_call(&cluster, headers, None, vec![], timeout) {
            Ok(token) => {
                debug!("pool #{pool}: fetching JWKS via cluster {cluster}: {authority}{path}");
                self.fetches.insert(token, pool);
            }
            Err(status) => {
                // Typically the cluster does not exist (yet): retried with backoff.
                warn!("pool #{pool}: cannot call cluster {cluster:?} for the JWKS: {status:?}");
                let schedule = shared.update(|s| {
                    s.fetch_failed(now, host::jitter());
                    true
                });
                let mut s = state.borrow_mut();
                s.metrics.count(Counter::JwksFetchFailed, Some(pool));
                if let (Some(slot), Some((_, schedule))) = (s.pools.get_mut(pool), schedule) {
                    slot.keys.observe(schedule);
                }
            }
        }
    }

    /// Re-runs the waiting requests whose pool moved on (new keys, a fetch finished) or whose
    /// deadline passed; the others keep waiting.
    fn wake_waiters(&mut self, state: &SharedState) {
        let now = now_ms();
        let woken: Vec<_> = {
            let mut guard = state.borrow_mut();
            let s = &mut *guard;
            let pools = &s.pools;
            let (woken, kept) = s.waiters.drain(..).partition(|w| {
                now >= w.deadline_ms
                    || pools
                        .get(w.pool)
                        .is_none_or(|p| p.keys.generation() != w.generation)
            });
            s.waiters = kept;
            woken
        };
        for waiter in woken {
            // The request may be gone (client closed): then there is nothing to do.
            if hostcalls::set_effective_context(waiter.context_id).is_err() {
                continue;
            }
            let request = Request {
                context_id: waiter.context_id,
                kid_refetched: waiter.kid_refetched,
                deadline_ms: Some(waiter.deadline_ms),
            };
            if http::authorize(state, request) == Action::Continue {
                let _ = hostcalls::resume_http_request();
            }
        }
        let _ = hostcalls::set_effective_context(self.context_id);
        let mut s = state.borrow_mut();
        if s.waiters.is_empty() && s.busy_tick {
            s.busy_tick = false;
            drop(s);
            self.set_tick_period(IDLE_TICK);
        }
    }

    fn on_jwks_response(&mut self, state: &SharedState, pool: usize, body_size: usize) {
        let now = now_ms();
        let status = host::callout_response_header(":status");
        let (max, name, shared) = {
            let s = state.borrow();
            let Some(slot) = s.pools.get(pool) else {
                return;
            };
            let name = s
                .config
                .pools
                .get(pool)
                .map(|p| p.name.clone())
                .unwrap_or_default();
            (s.config.max_jwks_bytes, name, slot.shared.clone())
        };
        let body = if status.as_deref() == Some("200") && body_size <= max {
            self.get_http_call_response_body(0, body_size)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let result = if status.as_deref() != Some("200") {
            Err(format!(
                "status {}",
                status
                    .as_deref()
                    .unwrap_or("none (timeout or connection failure)")
            ))
        } else if body_size > max {
            Err(format!(
                "body of {body_size} bytes is over max_jwks_bytes ({max})"
            ))
        } else {
            parse_jwks(&body, max)
        };
        match result {
            Ok(parsed) => {
                for skipped in &parsed.skipped {
                    warn!("pool {name}: JWKS key skipped: {skipped}");
                }
                // Publish first, then release the lease: other workers pick the set up.
                let cas = shared.publish(&encode_envelope(now, &body));
                let timing = state.borrow().timing;
                let schedule = shared.update(|s| {
                    s.fetch_succeeded(now, &timing);
                    true
                });
                let mut s = state.borrow_mut();
                let changed = s
                    .pools
                    .get(pool)
                    .and_then(|slot| slot.keys.keys())
                    .is_none_or(|old| old.kids() != parsed.keys.kids());
                let kids = parsed.keys.kids().join(",");
                if changed {
                    info!("pool {name}: loaded JWKS with kids [{kids}]");
                } else {
                    debug!("pool {name}: JWKS refreshed, kids [{kids}]");
                }
                s.install_keys(pool, parsed.keys, now, cas);
                if let (Some(slot), Some((_, schedule))) = (s.pools.get_mut(pool), schedule) {
                    slot.keys.observe(schedule);
                }
                s.metrics.count(Counter::JwksFetchOk, Some(pool));
            }
            Err(why) => {
                let jitter = host::jitter();
                let schedule = shared.update(|s| {
                    s.fetch_failed(now, jitter);
                    true
                });
                let mut s = state.borrow_mut();
                let keeping = s
                    .pools
                    .get(pool)
                    .is_some_and(|slot| slot.keys.keys().is_some());
                warn!(
                    "pool {name}: JWKS fetch failed ({why}); {}",
                    if keeping {
                        "keeping the previous keys"
                    } else {
                        "no keys yet"
                    }
                );
                if let (Some(slot), Some((_, schedule))) = (s.pools.get_mut(pool), schedule) {
                    slot.keys.observe(schedule);
                }
                s.metrics.count(Counter::JwksFetchFailed, Some(pool));
            }
        }
        self.wake_waiters(state);
    }
}

impl Context for Root {
    /// A VM going away mid-fetch hands its lease back, so another worker fetches at once.
    fn on_done(&mut self) -> bool {
        if let Some(state) = &self.state {
            for pool in self.fetches.values() {
                if let Some(slot) = state.borrow().pools.get(*pool) {
                    let _ = slot.shared.update(|s| {
                        s.lease_abandoned();
                        true
                    });
                }
            }
        }
        self.fetches.clear();
        true
    }

    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(pool) = self.fetches.remove(&token) else {
            return;
        };
        if let Some(state) = self.state.clone() {
            self.on_jwks_response(&state, pool, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        // Debug lines are only formatted when the host would print them.
        proxy_wasm::set_log_level(hostcalls::get_log_level().unwrap_or(LogLevel::Info));
        let started_ms = now_ms();
        let raw = self.get_plugin_configuration().unwrap_or_default();
        let (config, warnings) = match Config::parse(&raw) {
            Ok(parsed) => parsed,
            Err(e) => {
                // One line naming the key; Envoy then refuses the filter (fail closed).
                error!("{e}");
                return false;
            }
        };
        for w in &warnings {
            warn!("{w}");
        }
        info!(
            "version {}: configured {} pool(s): {}",
            env!("CARGO_PKG_VERSION"),
            config.pools.len(),
            config
                .pools
                .iter()
                .map(|p| format!(
                    "{} (iss {}, jwks via cluster {})",
                    p.name, p.issuer, p.jwks_cluster
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let parsed_ms = now_ms();
        let host_crypto = match config.signature_backend {
            SignatureBackendChoice::Auto => HostCrypto::detect(),
            SignatureBackendChoice::Wasm => HostCrypto::default(),
        };
        debug!(
            "cold start: configuration parsed in {} ms, signature backend self-test {} ms",
            parsed_ms.saturating_sub(started_ms),
            now_ms().saturating_sub(parsed_ms)
        );
        let by = |host: bool| if host { "host crypto" } else { "the module" };
        info!(
            "signatures: RSA by {}, ECDSA {}, others by the module (built in: {})",
            by(host_crypto.rsa),
            if Algorithm::ES256.is_built_in() {
                format!("by {}", by(host_crypto.ec))
            } else {
                "not built in".to_string()
            },
            Algorithm::built_in_names()
        );
        let state = Rc::new(RefCell::new(VmState {
            timing: KeyTiming::from_config(&config),
            pools: config
                .pools
                .iter()
                .map(|p| PoolSlot {
                    keys: PoolKeys::new(),
                    shared: SharedKeys::for_pool(p),
                    envelope_cas: None,
                })
                .collect(),
            cache: TokenCache::new(config.token_cache_size),
            waiters: Vec::new(),
            busy_tick: false,
            metrics: Metrics::define(&config),
            host_crypto,
            config: Rc::new(config),
        }));
        self.state = Some(Rc::clone(&state));
        self.fetches.clear();
        // Keys another worker (or this VM before a reload) published are used at once; a
        // first fetch starts now, not on the first request or tick: cold start is one round trip.
        // After a reload with a shorter refresh period, the shared schedule (kept across
        // reloads with the keys) must not wait for the old, longer one.
        self.sync_pools(&state);
        let (now, timing) = (now_ms(), state.borrow().timing);
        for slot in state.borrow().pools.iter() {
            let fetched_at = slot.keys.fetched_at_ms();
            let _ = slot
                .shared
                .update(|s| s.fit_refresh(now, fetched_at, &timing));
        }
        self.ticked = false;
        self.set_tick_period(FIRST_TICK);
        true
    }

    fn on_tick(&mut self) {
        let Some(state) = self.state.clone() else {
            return;
        };
        if !self.ticked {
            self.ticked = true;
            if !state.borrow().busy_tick {
                self.set_tick_period(IDLE_TICK);
            }
        }
        self.sync_pools(&state);
        self.dispatch_due_fetches(&state);
        self.wake_waiters(&state);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let state = self.state.clone()?;
        Some(Box::new(http::Filter::new(context_id, state)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
