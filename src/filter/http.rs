//! One request through the decision flow of SPEC §1. [`authorize`] works on the host's
//! *current* request, so the root context can re-run it for a request that waited for keys.

use std::rc::Rc;
use std::time::Duration;

use log::debug;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::host::{
    self, property, request_header, request_header_values, set_property, set_request_header,
};
use super::{SharedState, Verified, Waiter};
use crate::config::{Config, CorsPreflight, Mode, TokenSource};
use crate::decision::{self, cors_headers, local_reply};
use crate::error::AuthError;
use crate::extract::{cookie_header_without, extract_token, path_without_query_param, FoundToken};
use crate::identity::claim_headers;
use crate::keys::Availability;
use crate::metrics::Counter;
use crate::rules::{first_match, normalize_path, RequestFacts, Requirement, RuleAction};
use crate::verify::{inspect, payload_segment, verify_signature, VerifiedToken};

/// Tick while requests wait for keys: bounds how late a deadline or a due refetch is seen.
pub const BUSY_TICK: Duration = Duration::from_millis(50);
/// Header added upstream in `"mode": "report"`; client copies are always removed.
pub const DECISION_HEADER: &str = "x-cognito-authorizer-decision";
/// Requests no rule matches need any valid token.
const ANY_VALID_TOKEN: Requirement = Requirement {
    scopes_any: Vec::new(),
    scopes_all: Vec::new(),
    groups_any: Vec::new(),
    groups_all: Vec::new(),
    claims: Vec::new(),
    token_use: None,
    scopes_imply_access: false,
};

pub struct Filter {
    context_id: u32,
    state: SharedState,
}

impl Filter {
    pub fn new(context_id: u32, state: SharedState) -> Self {
        Filter { context_id, state }
    }

    fn forget_waiter(&self) {
        if let Ok(mut s) = self.state.try_borrow_mut() {
            s.waiters.retain(|w| w.context_id != self.context_id);
        }
    }
}

impl Context for Filter {
    fn on_done(&mut self) -> bool {
        self.forget_waiter();
        true
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        self.forget_waiter();
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        #[cfg(feature = "fault-injection")]
        #[allow(clippy::panic)]
        if request_header("x-cognito-authorizer-fault").as_deref() == Some("panic") {
            panic!("fault injection: x-cognito-authorizer-fault: panic");
        }
        let config = Rc::clone(&self.state.borrow().config);
        // Always, even on anonymous routes: no client may forge identity headers.
        for header in config.identity_headers() {
            set_request_header(header, None);
        }
        set_request_header(DECISION_HEADER, None);
        authorize(
            &self.state,
            Request {
                context_id: self.context_id,
                kid_refetched: false,
                deadline_ms: None,
            },
        )
    }
}

/// Which request is being decided, and what it already went through.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub context_id: u32,
    pub kid_refetched: bool,
    /// Set once the request has waited: a request never waits past its first deadline.
    pub deadline_ms: Option<u64>,
}

/// Decides the current request. `Continue`: let it through (headers already set).
/// `Pause`: answered locally, or waiting for keys (the root will call this again).
pub fn authorize(state: &SharedState, request: Request) -> Action {
    let config = Rc::clone(&state.borrow().config);
    let method = request_header(":method").unwrap_or_default();
    let rule = if config.rules.is_empty() {
        None
    } else {
        let raw_path = request_header(":path").unwrap_or_default();
        let path = normalize_path(&raw_path);
        let facts = RequestFacts {
            method: &method,
            path: &path,
            header: request_header,
        };
        first_match(&config.rules, &facts)
    };
    let requirement = match rule.map(|r| &r.action) {
        Some(RuleAction::Allow) => return anonymous(&config, decision::REASON_ALLOW_RULE),
        Some(RuleAction::Require(r)) => r,
        None => &ANY_VALID_TOKEN,
    };
    // Browsers send preflights without credentials: demanding a token would break CORS.
    if config.cors_preflight == CorsPreflight::Bypass
        && method == "OPTIONS"
        && request_header("origin").is_some()
        && request_header("access-control-request-method").is_some()
    {
        return anonymous(&config, decision::REASON_CORS_PREFLIGHT);
    }
    let found = match extract_token(&config.token_sources, request_header_values) {
        Ok(found) => found,
        Err(e) => return refuse(state, &config, &e, None, None, requirement, 0),
    };
    let verified = match verify(state, &config, &found.token, request) {
        Step::Verified(v) => v,
        Step::Wait => return Action::Pause,
        Step::Refused(e, pool, retry_after) => {
            return refuse(state, &config, &e, pool, None, requirement, retry_after)
        }
    };
    let pool = Some(verified.token.pool);
    if let Err(failed) = requirement.check(&verified.token) {
        let error = AuthError::RequirementNotMet(failed);
        return refuse(
            state,
            &config,
            &error,
            pool,
            Some(&verified.token),
            requirement,
            0,
        );
    }
    allow(state, &config, &found, &verified)
}

enum Step {
    Verified(Rc<Verified>),
    Wait,
    /// Reason, pool (when known), retry-after seconds (for 503).
    Refused(AuthError, Option<usize>, u64),
}

/// The verified token from the cache, or verified now; or wait for keys.
fn verify(state: &SharedState, config: &Config, token: &str, request: Request) -> Step {
    let now_ms = host::now_ms();
    let now = now_ms / 1000;
    let mut guard = state.borrow_mut();
    let s = &mut *guard;
    let timing = s.timing;

    if let Some(hit) = s.cache.get(token, now).cloned() {
        // Identical to a fresh answer: the key must still be trusted and the set usable.
        let still_trusted = match s
            .pools
            .get(hit.token.pool)
            .map(|p| p.keys.availability(now_ms, &timing))
        {
            Some(Availability::Ready(keys)) => keys
                .get(&hit.token.kid)
                .is_some_and(|k| k.fingerprint == hit.token.key_fingerprint),
            _ => false,
        };
        if still_trusted {
            s.metrics.count(Counter::CacheHit, None);
            return Step::Verified(hit);
        }
        s.cache.remove(token);
    }
    s.metrics.count(Counter::CacheMiss, None);

    let unverified = match inspect(token, config) {
        Ok(u) => u,
        Err(rejected) => return Step::Refused(rejected.reason, rejected.pool, 0),
    };
    let pool = unverified.pool;
    let keys_here = s.pools.get(pool).and_then(|slot| slot.keys.keys());
    if keys_here.is_none_or(|keys| keys.get(&unverified.kid).is_none()) {
        // No keys yet, or not this kid: another worker may have published a newer set since
        // this one's last tick (e.g. the refetch that found a rotated key). Use it now.
        s.sync_pool(pool);
    }
    let Some(slot) = s.pools.get_mut(pool) else {
        return Step::Refused(AuthError::UnknownIssuer, None, 0);
    };
    let deadline_ms = request
        .deadline_ms
        .unwrap_or(now_ms + timing.timeout_ms + 1000);
    let deadline_passed = now_ms >= deadline_ms;
    let wait = |s: &mut super::VmState, kid_refetched: bool| {
        let generation = s.pools.get(pool).map_or(0, |p| p.keys.generation());
        s.waiters.push(Waiter {
            context_id: request.context_id,
            pool,
            deadline_ms,
            generation,
            kid_refetched,
        });
        if !s.busy_tick {
            s.busy_tick = true;
            let _ = hostcalls::set_tick_period(BUSY_TICK);
        }
        Step::Wait
    };
    match slot.keys.availability(now_ms, &timing) {
        Availability::Ready(keys) => {
            if slot.keys.is_stale(now_ms, &timing) {
                s.metrics.count(Counter::StaleKeysServed, Some(pool));
            }
            match verify_signature(unverified, &keys, config, now, &s.host_crypto) {
                Ok(token_claims) => {
                    let headers = claim_headers(&config.claims_to_headers, &token_claims);
                    let valid_until = token_claims.exp.saturating_add(config.clock_skew_seconds);
                    let verified = Rc::new(Verified {
                        token: token_claims,
                        claim_headers: headers,
                    });
                    s.cache
                        .insert(token, Rc::clone(&verified), valid_until, now);
                    Step::Verified(verified)
                }
                Err(AuthError::UnknownKeyId) if !request.kid_refetched && !deadline_passed => {
                    // Maybe the pool rotated its keys: one refetch per pool and
                    // jwks_min_refetch_seconds for the whole process, then decide.
                    let mut started = false;
                    let granted = slot.shared.update(|sch| {
                        let before = sch.last_kid_refetch_ms;
                        // True also when joining a fetch in flight; only a new one is written.
                        let _ = sch.refetch_for_unknown_kid(now_ms, &timing);
                        started = sch.last_kid_refetch_ms != before;
                        started
                    });
                    let join = match granted {
                        Some((_, schedule)) => {
                            slot.keys.observe(schedule);
                            started || schedule.in_flight(now_ms, &timing)
                        }
                        None => false,
                    };
                    if started {
                        s.metrics.count(Counter::JwksRefetchUnknownKid, Some(pool));
                    }
                    if join {
                        wait(s, true)
                    } else {
                        Step::Refused(AuthError::UnknownKeyId, Some(pool), 0)
                    }
                }
                Err(e) => Step::Refused(e, Some(pool), 0),
            }
        }
        Availability::Wait if !deadline_passed => wait(s, request.kid_refetched),
        Availability::Wait => Step::Refused(AuthError::KeysUnavailable, Some(pool), 1),
        Availability::Unavailable { retry_after_s } => {
            Step::Refused(AuthError::KeysUnavailable, Some(pool), retry_after_s)
        }
    }
}

fn pool_name(config: &Config, pool: Option<usize>) -> &str {
    pool.and_then(|p| config.pools.get(p))
        .map_or("-", |p| p.name.as_str())
}

#[allow(clippy::too_many_arguments)]
fn refuse(
    state: &SharedState,
    config: &Config,
    error: &AuthError,
    pool: Option<usize>,
    token: Option<&VerifiedToken>,
    requirement: &Requirement,
    retry_after: u64,
) -> Action {
    let refusal = error.refusal();
    state.borrow().metrics.count(refusal.counter(), pool);
    debug!(
        "refused: reason={error} class={} pool={}",
        refusal.reason(),
        pool_name(config, pool)
    );
    set_property(property::REASON, refusal.reason());
    if let Some(p) = pool.and_then(|p| config.pools.get(p)) {
        set_property(property::POOL, &p.name);
    }
    // A 403 comes after a verified token: who was refused is known, and logged.
    if let Some(token) = token {
        publish_identity(token);
    }
    if config.mode == Mode::Report {
        set_property(property::DECISION, "report");
        set_request_header(DECISION_HEADER, Some(refusal.reason()));
        return Action::Continue;
    }
    set_property(property::DECISION, "deny");
    let scope_hint = if error.refusal() == crate::error::Refusal::Forbidden {
        requirement.scope_hint()
    } else {
        String::new()
    };
    let reply = local_reply(error, &config.realm, &scope_hint, retry_after);
    let origin = request_header("origin");
    let cors = cors_headers(origin.as_deref(), &config.cors_allow_origins);
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .chain(cors.iter())
        .map(|(n, v)| (*n, v.as_str()))
        .collect();
    let _ = hostcalls::send_http_response(reply.status, headers, Some(reply.body.as_bytes()));
    Action::Pause
}

fn anonymous(config: &Config, reason: &'static str) -> Action {
    set_property(property::DECISION, "anonymous");
    set_property(property::REASON, reason);
    if config.mode == Mode::Report {
        set_request_header(DECISION_HEADER, Some(reason));
    }
    Action::Continue
}

fn allow(state: &SharedState, config: &Config, found: &FoundToken, verified: &Verified) -> Action {
    for (header, value) in &verified.claim_headers {
        set_request_header(header, Some(value));
    }
    if let Some(header) = &config.payload_header {
        if let Some(payload) = payload_segment(&found.token) {
            set_request_header(header, Some(payload));
        }
    }
    if !config.forward_token {
        remove_token(config, found);
    }
    let token = &verified.token;
    state
        .borrow()
        .metrics
        .count(Counter::Allowed, Some(token.pool));
    set_property(property::DECISION, "allow");
    set_property(property::REASON, decision::REASON_ALLOWED);
    if let Some(p) = config.pools.get(token.pool) {
        set_property(property::POOL, &p.name);
    }
    publish_identity(token);
    if config.mode == Mode::Report {
        set_request_header(DECISION_HEADER, Some(decision::REASON_ALLOWED));
    }
    Action::Continue
}

/// The verified token's subject and client, as filter state.
fn publish_identity(token: &VerifiedToken) {
    if let Some(sub) = token.sub() {
        set_property(property::SUB, sub);
    }
    if let Some(client) = token.client_id() {
        set_property(property::CLIENT_ID, client);
    }
}

/// `forward_token: false`: the upstream never sees the token, wherever it came from.
fn remove_token(config: &Config, found: &FoundToken) {
    for source in found
        .sources
        .iter()
        .filter_map(|i| config.token_sources.get(*i))
    {
        match source {
            TokenSource::Header { name } | TokenSource::HeaderWithPrefix { name, .. } => {
                set_request_header(name, None);
            }
            TokenSource::Query { name } => {
                if let Some(path) = request_header(":path") {
                    set_request_header(":path", Some(&path_without_query_param(&path, name)));
                }
            }
            TokenSource::Cookie { name } => {
                let cookies = request_header_values("cookie").join("; ");
                set_request_header("cookie", cookie_header_without(&cookies, name).as_deref());
            }
        }
    }
}
