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
use super::shared::HostSharedData;
use super::{SharedState, Vm};
use crate::algorithm::Algorithm;
use crate::authorize::Attempt;
use crate::config::{Config, SignatureBackendChoice};
use crate::key_fetch::{CalloutAnswer, FetchResult};
use crate::metrics::Counter;
use crate::revocation_fetch::RevocationResult;
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

impl Fetch {
    /// What is fetched, for the log.
    fn document(self) -> &'static str {
        match self {
            Fetch::Jwks(_) => "JWKS",
            Fetch::Revocations(_) => "revocation document",
        }
    }
}

/// Whose fetch, for the log: `pool #0`, `revocations #0`.
impl std::fmt::Display for Fetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fetch::Jwks(pool) => write!(f, "pool #{pool}"),
            Fetch::Revocations(source) => write!(f, "revocations #{source}"),
        }
    }
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

    /// Starts the fetches (JWKS and revocation documents) that are due and whose lease this
    /// VM wins.
    fn dispatch_due_fetches(&mut self, state: &SharedState) {
        let now = now_ms();
        let (jwks, revocations) = {
            let core = &mut state.borrow_mut().core;
            (
                core.claim_due_fetches(now),
                core.claim_due_revocation_fetches(now),
            )
        };
        let claimed = jwks.into_iter().map(|f| (Fetch::Jwks(f.index), f)).chain(
            revocations
                .into_iter()
                .map(|f| (Fetch::Revocations(f.index), f)),
        );
        for (kind, fetch) in claimed {
            let headers = vec![
                (":method", "GET"),
                (":path", fetch.path.as_str()),
                (":authority", fetch.authority.as_str()),
                ("accept", "application/json"),
                ("user-agent", "cognito-authorizer"),
            ];
            let timeout = Duration::from_millis(fetch.timeout_ms);
            let cluster = &fetch.cluster;
            match self.dispatch_http_call(cluster, headers, None, vec![], timeout) {
                Ok(token) => {
                    debug!(
                        "{kind}: fetching {} via cluster {cluster}: {}{}",
                        kind.document(),
                        fetch.authority,
                        fetch.path
                    );
                    self.fetches.insert(token, kind);
                }
                Err(status) => {
                    // Typically the cluster does not exist (yet): retried with backoff.
                    warn!(
                        "{kind}: cannot call cluster {cluster:?} for the {}: {status:?}",
                        kind.document()
                    );
                    let mut vm = state.borrow_mut();
                    match kind {
                        Fetch::Jwks(pool) => {
                            vm.core.fetch_failed(pool, now, host::jitter());
                            vm.metrics.count(Counter::JwksFetchFailed, Some(pool));
                        }
                        Fetch::Revocations(source) => {
                            vm.core.revocation_fetch_failed(source, now, host::jitter());
                            vm.metrics.count(Counter::RevocationFetchFailed, None);
                        }
                    }
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

    /// A revocation document arrived (or the callout failed): the core publishes and
    /// installs a valid one; anything else leaves the previous list in force.
    fn on_revocations_response(&mut self, state: &SharedState, source: usize, body_size: usize) {
        let now = now_ms();
        let status = host::callout_response_header(":status");
        let answer = CalloutAnswer {
            status: status.as_deref(),
            body_size,
        };
        let body = if state.borrow().core.wants_revocation_body(source, answer) {
            self.get_http_call_response_body(0, body_size)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut vm = state.borrow_mut();
        match vm
            .core
            .revocation_answer(source, now, answer, &body, host::jitter())
        {
            RevocationResult::Loaded {
                generated_at,
                bytes,
                revoked_ids,
                signed_out_users,
                dropped_expired,
            } => {
                let took_ms = now_ms().saturating_sub(now);
                info!(
                    "revocations #{source}: loaded document generated_at {generated_at} ({bytes} bytes, read in {took_ms} ms): {revoked_ids} revoked ids, {signed_out_users} signed-out users ({dropped_expired} expired entries dropped)"
                );
                vm.metrics.count(Counter::RevocationFetchOk, None);
            }
            RevocationResult::Unchanged => {
                debug!("revocations #{source}: refreshed, unchanged");
                vm.metrics.count(Counter::RevocationFetchOk, None);
            }
            RevocationResult::Failed { why, keeping_list } => {
                let keeping = if keeping_list {
                    "keeping the previous list"
                } else {
                    "no list yet"
                };
                warn!("revocations #{source}: fetch failed ({why}); {keeping}");
                vm.metrics.count(Counter::RevocationFetchFailed, None);
            }
        }
        drop(vm);
        self.wake_waiters(state);
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
            let core = &state.borrow().core;
            let (jwks, revocations): (Vec<Fetch>, Vec<Fetch>) = self
                .fetches
                .values()
                .partition(|f| matches!(f, Fetch::Jwks(_)));
            let index = |f: Fetch| match f {
                Fetch::Jwks(i) | Fetch::Revocations(i) => i,
            };
            core.abandon_fetches(jwks.into_iter().map(index));
            core.abandon_revocation_fetches(revocations.into_iter().map(index));
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
