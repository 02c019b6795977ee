//! Root context: parses the configuration, fetches and refreshes each pool's JWKS by HTTP
//! callout, and wakes the requests that wait for keys.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use log::{debug, error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use super::host::{self, now_ms, Metrics};
use super::http::{self, Request};
use super::{SharedState, VmState};
use crate::cache::TokenCache;
use crate::config::Config;
use crate::jwks::parse_jwks;
use crate::keys::{KeyTiming, PoolKeys};
use crate::metrics::Counter;

/// Tick while nothing waits: drives refreshes and retries.
const IDLE_TICK: Duration = Duration::from_millis(1000);

pub struct Root {
    context_id: u32,
    state: Option<SharedState>,
    /// Callout token → pool index.
    fetches: HashMap<u32, usize>,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            state: None,
            fetches: HashMap::new(),
        }
    }

    /// Starts every fetch that is due (first fetch, refresh, retry, unknown-kid refetch).
    fn dispatch_due_fetches(&mut self, state: &SharedState) {
        let now = now_ms();
        let mut to_fetch = Vec::new();
        {
            let s = state.borrow();
            for (i, p) in s.pools.iter().enumerate() {
                if p.fetch_due(now, &s.timing) {
                    to_fetch.push(i);
                }
            }
        }
        for pool in to_fetch {
            let (cluster, authority, path, timeout) = {
                let s = state.borrow();
                let Some(p) = s.config.pools.get(pool) else {
                    continue;
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
                    debug!(
                        "fetching JWKS of pool #{pool} from cluster {cluster} {authority}{path}"
                    );
                    self.fetches.insert(token, pool);
                    if let Some(p) = state.borrow_mut().pools.get_mut(pool) {
                        p.fetch_started(now);
                    }
                }
                Err(status) => {
                    // Typically the cluster does not exist (yet): retried with backoff.
                    warn!("cannot call cluster {cluster:?} for the JWKS: {status:?}");
                    let mut s = state.borrow_mut();
                    s.metrics.count(Counter::JwksFetchFailed, Some(pool));
                    if let Some(p) = s.pools.get_mut(pool) {
                        p.fetch_started(now);
                        p.fetch_failed(now, host::jitter());
                    }
                    drop(s);
                    self.wake_waiters(state, Some(pool), false);
                }
            }
        }
    }

    /// Re-runs the requests waiting on `pool` (all pools when `None`); with `deadline_only`,
    /// only those whose deadline has passed.
    fn wake_waiters(&mut self, state: &SharedState, pool: Option<usize>, deadline_only: bool) {
        let now = now_ms();
        let woken: Vec<_> = {
            let mut s = state.borrow_mut();
            let (woken, kept) = s.waiters.drain(..).partition(|w| {
                pool.is_none_or(|p| w.pool == p) && (!deadline_only || now >= w.deadline_ms)
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
                deadline_passed: now >= waiter.deadline_ms,
            };
            if http::authorize(state, request) == proxy_wasm::types::Action::Continue {
                let _ = hostcalls::resume_http_request();
            }
        }
        let _ = hostcalls::set_effective_context(self.context_id);
        self.adjust_tick(state);
    }

    /// Back to slow ticks once nothing waits (HTTP contexts switch to fast ones).
    fn adjust_tick(&mut self, state: &SharedState) {
        let mut s = state.borrow_mut();
        if s.waiters.is_empty() && s.busy_tick {
            s.busy_tick = false;
            drop(s);
            self.set_tick_period(IDLE_TICK);
        }
    }

    fn on_jwks_response(&mut self, state: &SharedState, pool: usize, body_size: usize) {
        let now = now_ms();
        let status = self.get_http_call_response_header(":status");
        let max = state.borrow().config.max_jwks_bytes;
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
            let body = self
                .get_http_call_response_body(0, body_size)
                .unwrap_or_default();
            parse_jwks(&body, max)
        };
        let mut s = state.borrow_mut();
        let name = s
            .config
            .pools
            .get(pool)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        match result {
            Ok(parsed) => {
                for skipped in &parsed.skipped {
                    warn!("pool {name}: JWKS key skipped: {skipped}");
                }
                let kids = parsed.keys.kids().join(",");
                let changed = s
                    .pools
                    .get(pool)
                    .and_then(|p| p.keys())
                    .is_none_or(|old| old.kids().join(",") != kids);
                if changed {
                    info!("pool {name}: loaded JWKS with kids [{kids}]");
                } else {
                    debug!("pool {name}: JWKS refreshed, kids [{kids}]");
                }
                let timing = s.timing;
                if let Some(p) = s.pools.get_mut(pool) {
                    p.fetch_succeeded(parsed.keys, now, &timing);
                }
                // Entries verified by a key this set no longer has (or has changed) die now.
                if let Some(keys) = s.pools.get(pool).and_then(|p| p.keys()).cloned() {
                    s.cache.retain(|v| {
                        v.token.pool != pool
                            || keys
                                .get(&v.token.kid)
                                .is_some_and(|k| k.fingerprint == v.token.key_fingerprint)
                    });
                }
                s.metrics.count(Counter::JwksFetchOk, Some(pool));
            }
            Err(why) => {
                let failures = s.pools.get(pool).map_or(0, |p| p.failures()) + 1;
                let keeping = s.pools.get(pool).is_some_and(|p| p.keys().is_some());
                warn!(
                    "pool {name}: JWKS fetch failed ({why}); failure #{failures}, {}",
                    if keeping {
                        "keeping the previous keys"
                    } else {
                        "no keys yet"
                    }
                );
                if let Some(p) = s.pools.get_mut(pool) {
                    p.fetch_failed(now, host::jitter());
                }
                s.metrics.count(Counter::JwksFetchFailed, Some(pool));
            }
        }
        drop(s);
        self.wake_waiters(state, Some(pool), false);
    }
}

impl Context for Root {
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
        let state = Rc::new(RefCell::new(VmState {
            timing: KeyTiming::from_config(&config),
            pools: config.pools.iter().map(|_| PoolKeys::new()).collect(),
            cache: TokenCache::new(config.token_cache_size),
            waiters: Vec::new(),
            busy_tick: false,
            metrics: Metrics::define(&config),
            config: Rc::new(config),
        }));
        self.state = Some(Rc::clone(&state));
        self.fetches.clear();
        // Keys are fetched now, not on the first request or tick: cold start is one round trip.
        self.dispatch_due_fetches(&state);
        self.set_tick_period(IDLE_TICK);
        true
    }

    fn on_tick(&mut self) {
        let Some(state) = self.state.clone() else {
            return;
        };
        self.dispatch_due_fetches(&state);
        self.wake_waiters(&state, None, true);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let state = self.state.clone()?;
        Some(Box::new(http::Filter::new(context_id, state)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
