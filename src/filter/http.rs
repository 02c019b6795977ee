//! One request through the decision flow (README "Behaviour"). [`authorize`] works on the
//! host's *current* request, so the root context can re-run it for a request that waited for
//! keys.

use std::rc::Rc;
use std::time::Duration;

use log::debug;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::host::{self, property, request_headers, set_property, set_request_header};
use super::{SharedState, Verified, Waiter};
use crate::config::{Config, CorsPreflight, Mode, TokenSource};
use crate::decision::{self, cors_headers, local_reply, DECISION_HEADER};
use crate::error::{AuthError, Refusal};
use crate::extract::{
    cookie_header_without, extract_token, path_without_query_param, token_locations, FoundToken,
};
use crate::identity::{claim_headers, forged_headers};
use crate::keys::Availability;
use crate::metrics::Counter;
use crate::request::RequestHeaders;
use crate::revocation::{gate, token_facts, Gate};
use crate::rules::{check_all, route, RequestFacts, Route};
use crate::verify::{inspect, payload_segment, verify_signature, VerifiedToken};

/// Tick while requests wait for keys: bounds how late a deadline or a due refetch is seen.
pub const BUSY_TICK: Duration = Duration::from_millis(50);

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
        let mut headers = request_headers();
        #[cfg(feature = "fault-injection")]
        #[allow(clippy::panic)]
        if headers.first("x-cognito-authorizer-fault") == Some("panic") {
            panic!("fault injection: x-cognito-authorizer-fault: panic");
        }
        let config = Rc::clone(&self.state.borrow().config);
        // Always, even on anonymous routes, and in every spelling (`x_cognito_sub` is
        // `x-cognito-sub` to CGI-style servers): no client may forge identity headers.
        let forged: Vec<String> = forged_headers(headers.names(), &config.protected_headers)
            .into_iter()
            .map(str::to_string)
            .collect();
        for name in &forged {
            set_request_header(name, None);
        }
        headers.remove(|name| forged.iter().any(|f| f == name));
        authorize(
            &self.state,
            Request {
                context_id: self.context_id,
                kid_refetched: false,
                deadline_ms: None,
            },
            &headers,
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

/// Decides the current request, whose headers the caller read. `Continue`: let it through
/// (headers already set). `Pause`: answered locally, or waiting for keys (the root will call
/// this again).
pub fn authorize(state: &SharedState, request: Request, headers: &RequestHeaders) -> Action {
    let config = Rc::clone(&state.borrow().config);
    let method = headers.method();
    let facts = RequestFacts {
        method,
        path: headers.path(),
        headers,
    };
    let requirements = match route(&config.rules, &facts) {
        Route::Anonymous => return anonymous(&config, headers, decision::REASON_ALLOW_RULE),
        Route::Token(requirements) => requirements,
        Route::UnreadablePath => {
            let refused = Refused::new(AuthError::UnreadablePath, None);
            return refuse(state, &config, headers, &refused, None);
        }
    };
    // Browsers send preflights without credentials: demanding a token would break CORS.
    if config.cors_preflight == CorsPreflight::Bypass
        && method == "OPTIONS"
        && headers.first("origin").is_some()
        && headers.first("access-control-request-method").is_some()
    {
        return anonymous(&config, headers, decision::REASON_CORS_PREFLIGHT);
    }
    let found = match extract_token(&config.token_sources, |name| headers.all_values(name)) {
        Ok(found) => found,
        Err(e) => return refuse(state, &config, headers, &Refused::new(e, None), None),
    };
    let verified = match verify(state, &config, &found.token, request) {
        Step::Verified(v) => v,
        Step::Wait => return Action::Pause,
        Step::Refused(refused) => return refuse(state, &config, headers, &refused, None),
    };
    // Fresh or from the cache: a token revoked after it was cached is refused all the same.
    match revocation(state, &config, &verified, request) {
        Step::Verified(_) => {}
        Step::Wait => return Action::Pause,
        Step::Refused(refused) => {
            return refuse(state, &config, headers, &refused, Some(&verified.token))
        }
    }
    if let Err((failed, requirement)) = check_all(&requirements, &verified.token) {
        let mut refused = Refused::new(
            AuthError::RequirementNotMet(failed),
            Some(verified.token.pool),
        );
        refused.scope_hint = requirement.scope_hint();
        return refuse(state, &config, headers, &refused, Some(&verified.token));
    }
    allow(state, &config, headers, &found, &verified)
}

/// Why a request is refused, and what the reply needs to say so.
#[derive(Debug)]
struct Refused {
    error: AuthError,
    /// The pool, once the token's issuer named one.
    pool: Option<usize>,
    /// Seconds, for a 503.
    retry_after: u64,
    /// The scopes a failed route requirement asked for (a 403's `www-authenticate`).
    scope_hint: String,
}

impl Refused {
    fn new(error: AuthError, pool: Option<usize>) -> Self {
        Refused {
            error,
            pool,
            retry_after: 0,
            scope_hint: String::new(),
        }
    }

    fn unavailable(pool: usize, retry_after: u64) -> Self {
        Refused {
            retry_after,
            ..Refused::new(AuthError::KeysUnavailable, Some(pool))
        }
    }
}

enum Step {
    Verified(Rc<Verified>),
    Wait,
    Refused(Refused),
}

/// The verified token from the cache, or verified now; or wait for keys.
fn verify(state: &SharedState, config: &Config, token: &str, request: Request) -> Step {
    let now_ms = host::now_ms();
    let now = now_ms / 1000;
    let mut guard = state.borrow_mut();
    let s = &mut *guard;
    let timing = s.timing;

    // A request that waited for keys is decided again: it was counted the first time.
    let first_attempt = request.deadline_ms.is_none();
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
            if first_attempt {
                s.metrics.count(Counter::CacheHit, None);
            }
            return Step::Verified(hit);
        }
        s.cache.remove(token);
    }
    if first_attempt {
        s.metrics.count(Counter::CacheMiss, None);
    }

    let unverified = match inspect(token, config) {
        Ok(u) => u,
        Err(rejected) => return Step::Refused(Refused::new(rejected.reason, rejected.pool)),
    };
    let pool = unverified.pool;
    let keys_here = s.pools.get(pool).and_then(|slot| slot.keys.keys());
    if keys_here.is_none_or(|keys| keys.get(&unverified.kid).is_none()) {
        // No keys yet, or not this kid: another worker may have published a newer set since
        // this one's last tick (e.g. the refetch that found a rotated key). Use it now.
        s.sync_pool(pool);
    }
    let Some(slot) = s.pools.get_mut(pool) else {
        return Step::Refused(Refused::new(AuthError::UnknownIssuer, None));
    };
    let deadline_ms = request
        .deadline_ms
        .unwrap_or(now_ms + timing.timeout_ms + 1000);
    let deadline_passed = now_ms >= deadline_ms;
    let wait = |s: &mut super::VmState, kid_refetched: bool| {
        let generation = s.generation_of(pool);
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
                        Step::Refused(Refused::new(AuthError::UnknownKeyId, Some(pool)))
                    }
                }
                Err(e) => Step::Refused(Refused::new(e, Some(pool))),
            }
        }
        Availability::Wait if !deadline_passed => wait(s, request.kid_refetched),
        Availability::Wait => Step::Refused(Refused::unavailable(pool, 1)),
        Availability::Unavailable { retry_after_s } => {
            Step::Refused(Refused::unavailable(pool, retry_after_s))
        }
    }
}

/// The revocation check of a verified token, against its pool's source (if it has one):
/// `Verified` to go on, `Wait` for the first document, or the refusal.
fn revocation(
    state: &SharedState,
    config: &Config,
    verified: &Rc<Verified>,
    request: Request,
) -> Step {
    let pool = verified.token.pool;
    let Some(index) = config.pools.get(pool).and_then(|p| p.revocations) else {
        return Step::Verified(Rc::clone(verified));
    };
    let Some(on_unavailable) = config
        .revocation_sources
        .get(index)
        .map(|src| src.on_unavailable)
    else {
        return Step::Refused(Refused::new(AuthError::RevocationsUnavailable, Some(pool)));
    };
    let now_ms = host::now_ms();
    let mut guard = state.borrow_mut();
    let s = &mut *guard;
    let Some(slot) = s.sources.get(index) else {
        return Step::Refused(Refused::new(AuthError::RevocationsUnavailable, Some(pool)));
    };
    let deadline_ms = request
        .deadline_ms
        .unwrap_or(now_ms + slot.timing.timeout_ms + 1000);
    let availability = slot.list.availability(now_ms, &slot.timing);
    let facts = token_facts(&verified.token.claims);
    match gate(&availability, on_unavailable, now_ms >= deadline_ms, &facts) {
        Gate::Pass => Step::Verified(Rc::clone(verified)),
        Gate::Revoked(why) => {
            debug!("revoked: detail={}", why.detail());
            Step::Refused(Refused::new(AuthError::Revoked, Some(pool)))
        }
        Gate::Wait => {
            let generation = s.generation_of(pool);
            s.waiters.push(Waiter {
                context_id: request.context_id,
                pool,
                deadline_ms,
                generation,
                kid_refetched: request.kid_refetched,
            });
            if !s.busy_tick {
                s.busy_tick = true;
                let _ = hostcalls::set_tick_period(BUSY_TICK);
            }
            Step::Wait
        }
        Gate::Unavailable { retry_after_s } => Step::Refused(Refused {
            retry_after: retry_after_s,
            ..Refused::new(AuthError::RevocationsUnavailable, Some(pool))
        }),
    }
}

fn pool_name(config: &Config, pool: Option<usize>) -> &str {
    pool.and_then(|p| config.pools.get(p))
        .map_or("-", |p| p.name.as_str())
}

fn refuse(
    state: &SharedState,
    config: &Config,
    headers: &RequestHeaders,
    refused: &Refused,
    token: Option<&VerifiedToken>,
) -> Action {
    let error = &refused.error;
    let refusal = error.refusal();
    state
        .borrow()
        .metrics
        .count(refusal.counter(), refused.pool);
    debug!(
        "refused: reason={error} class={} pool={}",
        refusal.reason(),
        pool_name(config, refused.pool)
    );
    set_property(property::REASON, refusal.reason());
    if let Some(p) = refused.pool.and_then(|p| config.pools.get(p)) {
        set_property(property::POOL, &p.name);
    }
    // A 403 comes after a verified token: who was refused is known, and logged.
    if let Some(token) = token {
        publish_identity(token);
    }
    if config.mode == Mode::Report {
        set_property(property::DECISION, "report");
        set_request_header(DECISION_HEADER, Some(refusal.reason()));
        remove_tokens(config, headers, None);
        return Action::Continue;
    }
    set_property(property::DECISION, "deny");
    let scope_hint = if refusal == Refusal::Forbidden {
        refused.scope_hint.as_str()
    } else {
        ""
    };
    let reply = local_reply(error, &config.realm, scope_hint, refused.retry_after);
    let cors = cors_headers(headers.first("origin"), &config.cors_allow_origins);
    let reply_headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .chain(cors.iter())
        .map(|(n, v)| (*n, v.as_str()))
        .collect();
    let _ = hostcalls::send_http_response(reply.status, reply_headers, Some(reply.body.as_bytes()));
    Action::Pause
}

fn anonymous(config: &Config, headers: &RequestHeaders, reason: &'static str) -> Action {
    set_property(property::DECISION, "anonymous");
    set_property(property::REASON, reason);
    if config.mode == Mode::Report {
        set_request_header(DECISION_HEADER, Some(reason));
    }
    remove_tokens(config, headers, None);
    Action::Continue
}

fn allow(
    state: &SharedState,
    config: &Config,
    headers: &RequestHeaders,
    found: &FoundToken,
    verified: &Verified,
) -> Action {
    for (header, value) in &verified.claim_headers {
        set_request_header(header, Some(value));
    }
    if let Some(header) = &config.payload_header {
        if let Some(payload) = payload_segment(&found.token) {
            set_request_header(header, Some(payload));
        }
    }
    remove_tokens(config, headers, Some(&found.sources));
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

/// `forward_token: false`: the upstream never sees the token, wherever it came from — on
/// anonymous routes, CORS preflights and report-mode refusals too. `found`: the sources of
/// the verified token; otherwise every source holding something read as a token.
fn remove_tokens(config: &Config, headers: &RequestHeaders, found: Option<&[usize]>) {
    if config.forward_token {
        return;
    }
    let located;
    let sources = match found {
        Some(sources) => sources,
        None => {
            located = token_locations(&config.token_sources, |name| headers.all_values(name));
            &located
        }
    };
    let mut path: Option<String> = None;
    let mut cookies: Option<Option<String>> = None;
    for source in sources.iter().filter_map(|i| config.token_sources.get(*i)) {
        match source {
            TokenSource::Header { name } | TokenSource::HeaderWithPrefix { name, .. } => {
                set_request_header(name, None);
            }
            TokenSource::Query { name } => {
                let current = path.as_deref().unwrap_or(headers.path());
                path = Some(path_without_query_param(current, name));
            }
            TokenSource::Cookie { name } => {
                let current = match &cookies {
                    Some(c) => c.clone().unwrap_or_default(),
                    None => headers.all_values("cookie").join("; "),
                };
                cookies = Some(cookie_header_without(&current, name));
            }
        }
    }
    if let Some(path) = path {
        set_request_header(":path", Some(&path));
    }
    if let Some(cookies) = cookies {
        set_request_header("cookie", cookies.as_deref());
    }
}
