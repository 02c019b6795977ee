//! Root context: parses the configuration; keeps this VM's copy of each pool's keys and of
//! each revocation document in step with the process-wide state in shared data; fetches a
//! JWKS or a revocation document when this VM wins its fetch lease; wakes the requests that
//! wait for them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use log::{debug, error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use super::host::{self, now_ms, request_headers, HostCrypto, Metrics};
use super::http;
use super::shared::{HostSharedData, SharedRevocations};
use super::{SharedState, Vm};
use crate::algorithm::Algorithm;
use crate::authorize::Attempt;
use crate::config::{Config, SignatureBackendChoice};
use crate::key_fetch::{CalloutAnswer, FetchResult};
use crate::metrics::Counter;
use crate::revocation::{document_digest, RevocationList, Stamp};
use crate::vm::VmState;

/// Tick while nothing waits: drives refreshes, retries and picking up keys other VMs fetched.
const IDLE_TICK: Duration = Duration::from_millis(1000);
/// The idle tick when revocation sources are configured: a due refresh starts at most this
/// late, and the other workers install the new document at most this long after it was
/// published, so a revocation is in force on every worker within `refresh_seconds` + 1 s.
const IDLE_TICK_REVOCATIONS: Duration = Duration::from_millis(500);

fn idle_tick(vm: &Vm) -> Duration {
    if vm.core.sources.is_empty() {
        IDLE_TICK
    } else {
        IDLE_TICK_REVOCATIONS
    }
}

/// What a callout this VM started fetches.
#[derive(Debug, Clone, Copy)]
enum Fetch {
    /// A pool's JWKS (pool index).
    Jwks(usize),
    /// A revocation document (source index).
    Revocations(usize),
}
/// The first tick, right after configuration, starts the first fetch. Not on_configure
/// itself: Envoy configures a throw-away root context first, whose callouts are cancelled
/// with it (seen on Envoy 1.40: the lease then blocked every worker for 2 x the timeout).
const FIRST_TICK: Duration = Duration::from_millis(1);

pub struct Root {
    context_id: u32,
    state: Option<SharedState>,
    /// Callout token → what it fetches, for fetches this VM started.
    fetches: HashMap<u32, Fetch>,
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
        let mut vm = state.borrow_mut();
        vm.core.sync_pools();
        vm.core.sync_sources(now_ms());
        vm.report_key_counts();
    }

    /// Starts the revocation fetches that are due and whose lease this VM wins.
    fn dispatch_due_revocation_fetches(&mut self, state: &SharedState) {
        let now = now_ms();
        let count = state.borrow().core.sources.len();
        for source in 0..count {
            let (shared, timing, due, vm_id) = {
                let s = &state.borrow().core;
                let Some(slot) = s.sources.get(source) else {
                    continue;
                };
                (
                    slot.shared.clone(),
                    slot.timing,
                    slot.list.schedule.fetch_due(now, &slot.timing),
                    s.vm_id,
                )
            };
            if !due {
                continue;
            }
            let Some((won, schedule)) = shared.entries.update(|sch| {
                let due = sch.fetch_due(now, &timing);
                if due {
                    sch.fetch_started(now, vm_id);
                }
                due
            }) else {
                continue;
            };
            if let Some(slot) = state.borrow_mut().core.sources.get_mut(source) {
                slot.list.observe(schedule);
            }
            if won {
                self.start_revocation_fetch(state, source, &shared, now);
            }
        }
    }

    fn start_revocation_fetch(
        &mut self,
        state: &SharedState,
        source: usize,
        shared: &SharedRevocations,
        now: u64,
    ) {
        let (cluster, authority, path, timeout) = {
            let s = &state.borrow().core;
            let Some(src) = s.config.revocation_sources.get(source) else {
                return;
            };
            (
                src.cluster.clone(),
                src.location.authority.clone(),
                src.location.path.clone(),
                Duration::from_millis(src.timeout_ms),
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
                debug!("revocations #{source}: fetching via cluster {cluster}: {authority}{path}");
                self.fetches.insert(token, Fetch::Revocations(source));
            }
            Err(status) => {
                warn!("revocations #{source}: cannot call cluster {cluster:?}: {status:?}");
                let schedule = shared.entries.update(|s| {
                    s.fetch_failed(now, host::jitter());
                    true
                });
                let mut vm = state.borrow_mut();
                vm.metrics.count(Counter::RevocationFetchFailed, None);
                if let (Some(slot), Some((_, schedule))) =
                    (vm.core.sources.get_mut(source), schedule)
                {
                    slot.list.observe(schedule);
                }
            }
        }
    }

    /// A revocation document arrived (or the callout failed). A valid one is published for
    /// the other workers and installed here; anything else leaves the previous list in force.
    fn on_revocations_response(&mut self, state: &SharedState, source: usize, body_size: usize) {
        let now = now_ms();
        let status = host::callout_response_header(":status");
        let (limits, shared, timing, known_digest) = {
            let s = &state.borrow().core;
            let (Some(src), Some(slot)) = (
                s.config.revocation_sources.get(source),
                s.sources.get(source),
            ) else {
                return;
            };
            (
                src.limits(s.config.clock_skew_seconds),
                slot.shared.clone(),
                slot.timing,
                slot.digest,
            )
        };
        let result = if status.as_deref() != Some("200") {
            Err(format!(
                "status {}",
                status
                    .as_deref()
                    .unwrap_or("none (timeout or connection failure)")
            ))
        } else if body_size > limits.max_bytes {
            Err(format!(
                "body of {body_size} bytes is over max_bytes ({})",
                limits.max_bytes
            ))
        } else {
            let body = self
                .get_http_call_response_body(0, body_size)
                .unwrap_or_default();
            let digest = document_digest(&body);
            if Some(digest) == known_digest {
                // The very document in use: validated already, nothing to parse.
                Ok((body, digest, None))
            } else {
                RevocationList::parse(&body, &limits, now / 1000)
                    .map(|list| (body, digest, Some((list, now_ms().saturating_sub(now)))))
                    .map_err(|e| e.to_string())
            }
        };
        match result {
            Ok((body, digest, list)) => {
                // Publish first, then release the lease: other workers pick it up.
                let stamp = Stamp {
                    fetched_at_ms: now,
                    digest,
                };
                let cas = shared.publish(&body, stamp);
                let schedule = shared.entries.update(|s| {
                    s.fetch_succeeded(now, &timing);
                    true
                });
                let mut vm = state.borrow_mut();
                if let Some(slot) = vm.core.sources.get_mut(source) {
                    match list {
                        Some((list, took_ms)) => {
                            info!(
                                "revocations #{source}: loaded document generated_at {} ({} bytes, read in {took_ms} ms): {} revoked ids, {} signed-out users ({} expired entries dropped)",
                                list.generated_at(),
                                body.len(),
                                list.revoked_ids(),
                                list.signed_out_users(),
                                list.dropped_expired()
                            );
                            slot.list.set_keys(list, now);
                            slot.digest = Some(digest);
                        }
                        None => {
                            debug!("revocations #{source}: refreshed, unchanged");
                            slot.list.refreshed(now);
                        }
                    }
                    slot.stamp_cas = cas;
                    if let Some((_, schedule)) = schedule {
                        slot.list.observe(schedule);
                    }
                }
                vm.metrics.count(Counter::RevocationFetchOk, None);
            }
            Err(why) => {
                let jitter = host::jitter();
                let schedule = shared.entries.update(|s| {
                    s.fetch_failed(now, jitter);
                    true
                });
                let mut vm = state.borrow_mut();
                if let Some(slot) = vm.core.sources.get_mut(source) {
                    warn!(
                        "revocations #{source}: fetch failed ({why}); {}",
                        if slot.list.keys().is_some() {
                            "keeping the previous list"
                        } else {
                            "no list yet"
                        }
                    );
                    if let Some((_, schedule)) = schedule {
                        slot.list.observe(schedule);
                    }
                }
                vm.metrics.count(Counter::RevocationFetchFailed, None);
            }
        }
        self.wake_waiters(state);
    }

    /// Starts the fetches that are due and whose lease this VM wins.
    fn dispatch_due_fetches(&mut self, state: &SharedState) {
        let now = now_ms();
        let claimed = state.borrow_mut().core.claim_due_fetches(now);
        for fetch in claimed {
            let timeout = Duration::from_millis(state.borrow().core.config.jwks_timeout_ms);
            let headers = vec![
                (":method", "GET"),
                (":path", fetch.path.as_str()),
                (":authority", fetch.authority.as_str()),
                ("accept", "application/json"),
                ("user-agent", "cognito-authorizer"),
            ];
            let (pool, cluster) = (fetch.pool, &fetch.cluster);
            match self.dispatch_http_call(cluster, headers, None, vec![], timeout) {
                Ok(token) => {
                    debug!(
                        "pool #{pool}: fetching JWKS via cluster {cluster}: {}{}",
                        fetch.authority, fetch.path
                    );
                    self.fetches.insert(token, Fetch::Jwks(pool));
                }
                Err(status) => {
                    // Typically the cluster does not exist (yet): retried with backoff.
                    warn!("pool #{pool}: cannot call cluster {cluster:?} for the JWKS: {status:?}");
                    let mut vm = state.borrow_mut();
                    vm.core.fetch_failed(pool, now, host::jitter());
                    vm.metrics.count(Counter::JwksFetchFailed, Some(pool));
                }
            }
        }
    }

    /// Re-runs the waiting requests whose pool moved on (new keys, a fetch finished) or whose
    /// deadline passed; the others keep waiting.
    fn wake_waiters(&mut self, state: &SharedState) {
        let now = now_ms();
        let due = state.borrow_mut().core.due_waiters(now);
        for waiter in due {
            // The request may be gone (client closed): then there is nothing to do.
            if hostcalls::set_effective_context(waiter.context_id).is_err() {
                continue;
            }
            let attempt = Attempt {
                context_id: waiter.context_id,
                kid_refetched: waiter.kid_refetched,
                deadline_ms: Some(waiter.deadline_ms),
            };
            if http::decide(state, attempt, &request_headers()) == Action::Continue {
                let _ = hostcalls::resume_http_request();
            }
        }
        let _ = hostcalls::set_effective_context(self.context_id);
        let mut vm = state.borrow_mut();
        if vm.core.waiters.is_empty() && vm.core.busy_tick {
            vm.core.busy_tick = false;
            let idle = idle_tick(&vm);
            drop(vm);
            self.set_tick_period(idle);
        }
    }

    fn on_jwks_response(&mut self, state: &SharedState, pool: usize, body_size: usize) {
        let now = now_ms();
        let status = host::callout_response_header(":status");
        let answer = CalloutAnswer {
            status: status.as_deref(),
            body_size,
        };
        let body = if state.borrow().core.wants_body(answer) {
            self.get_http_call_response_body(0, body_size)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut vm = state.borrow_mut();
        let name = vm
            .core
            .config
            .pools
            .get(pool)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        match vm
            .core
            .jwks_answer(pool, now, answer, &body, host::jitter())
        {
            FetchResult::Loaded {
                kids,
                changed,
                skipped,
            } => {
                for skipped in &skipped {
                    warn!("pool {name}: JWKS key skipped: {skipped}");
                }
                let kids = kids.join(",");
                if changed {
                    info!("pool {name}: loaded JWKS with kids [{kids}]");
                } else {
                    debug!("pool {name}: JWKS refreshed, kids [{kids}]");
                }
                vm.report_key_counts();
                vm.metrics.count(Counter::JwksFetchOk, Some(pool));
            }
            FetchResult::Failed { why, keeping_keys } => {
                let keeping = if keeping_keys {
                    "keeping the previous keys"
                } else {
                    "no keys yet"
                };
                warn!("pool {name}: JWKS fetch failed ({why}); {keeping}");
                vm.metrics.count(Counter::JwksFetchFailed, Some(pool));
            }
        }
        drop(vm);
        self.wake_waiters(state);
    }
}

impl Context for Root {
    /// A VM going away mid-fetch hands its lease back, so another worker fetches at once.
    fn on_done(&mut self) -> bool {
        if let Some(state) = &self.state {
            let vm = state.borrow();
            vm.core
                .abandon_fetches(self.fetches.values().filter_map(|f| match f {
                    Fetch::Jwks(pool) => Some(*pool),
                    Fetch::Revocations(_) => None,
                }));
            for fetch in self.fetches.values() {
                if let Fetch::Revocations(i) = fetch {
                    if let Some(slot) = vm.core.sources.get(*i) {
                        // Only a lease this VM still holds: another VM may have taken it since.
                        let _ = slot
                            .shared
                            .entries
                            .update(|sch| sch.lease_abandoned(vm.core.vm_id));
                    }
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
        let Some(fetch) = self.fetches.remove(&token) else {
            return;
        };
        if let Some(state) = self.state.clone() {
            match fetch {
                Fetch::Jwks(pool) => self.on_jwks_response(&state, pool, body_size),
                Fetch::Revocations(source) => {
                    self.on_revocations_response(&state, source, body_size)
                }
            }
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
                    "{} (iss {}, jwks via cluster {}{})",
                    p.name,
                    p.issuer,
                    p.jwks_cluster,
                    p.revocations
                        .and_then(|i| config.revocation_sources.get(i).map(|src| (i, src)))
                        .map(|(i, src)| format!(
                            ", revocations #{i} via cluster {} ({:?} when unavailable)",
                            src.cluster, src.on_unavailable
                        ))
                        .unwrap_or_default()
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
        let metrics = Metrics::define(&config);
        // Tells this VM's fetch leases from other VMs'.
        let core = VmState::new(config, HostSharedData, host::jitter());
        let state = Rc::new(RefCell::new(Vm {
            core,
            metrics,
            host_crypto,
        }));
        self.state = Some(Rc::clone(&state));
        self.fetches.clear();
        // Keys another worker (or this VM before a reload) published are used at once; a
        // first fetch starts now, not on the first request or tick: cold start is one round trip.
        // After a reload with a shorter refresh period, the shared schedule (kept across
        // reloads with the keys) must not wait for the old, longer one.
        state.borrow_mut().core.start(now_ms());
        state.borrow_mut().core.start_sources(now_ms());
        state.borrow_mut().report_key_counts();
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
            let idle = {
                let vm = state.borrow();
                (!vm.core.busy_tick).then(|| idle_tick(&vm))
            };
            if let Some(idle) = idle {
                self.set_tick_period(idle);
            }
        }
        self.sync_pools(&state);
        self.dispatch_due_fetches(&state);
        self.dispatch_due_revocation_fetches(&state);
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
