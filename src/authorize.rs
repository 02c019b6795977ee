//! The decision for one request (README "Behaviour"), given what the glue read: the request
//! headers, the time, the VM's state. Pure: the outcome is a [`Decision`] that the glue
//! carries out — headers to change, a local reply, or a wait for keys — with the counters
//! to bump and the filter-state properties to publish.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use crate::config::{Config, CorsPreflight, Mode, TokenSource};
use crate::cors::{cors_headers, is_preflight, preflight_headers};
use crate::decision::{self, local_reply, DECISION_HEADER};
use crate::error::{AuthError, Refusal};
use crate::extract::{
    cookie_header_without, extract_token, path_without_query_param, token_locations, FoundToken,
};
use crate::identity::{claim_headers, strip_forged};
use crate::keys::Availability;
use crate::metrics::{Count, Counter};
use crate::request::RequestHeaders;
use crate::revocation::{gate, token_facts, Gate};
use crate::rules::{check_all, route, RequestFacts, Route};
use crate::shared_keys::SharedData;
use crate::signature::SignatureBackend;
use crate::verify::{inspect, payload_segment, verify_signature, VerifiedToken};
use crate::vm::{CachedToken, TokenIdentity, VmState, Waiter};

/// Filter-state property names (README "Identity for the upstream"), readable in access
/// logs as `%FILTER_STATE(wasm.<name>:PLAIN)%`.
pub mod property {
    pub const DECISION: &str = "cognito_authorizer.decision";
    pub const REASON: &str = "cognito_authorizer.reason";
    pub const POOL: &str = "cognito_authorizer.pool";
    pub const SUB: &str = "cognito_authorizer.sub";
    pub const CLIENT_ID: &str = "cognito_authorizer.client_id";
}

/// A property's value: static text, or text shared with the cache entry (no copy per
/// request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    Static(&'static str),
    Shared(Rc<str>),
}

impl std::ops::Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Text::Static(text) => text,
            Text::Shared(text) => text,
        }
    }
}

/// Which attempt at deciding a request this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub context_id: u32,
    /// It already waited for an unknown-`kid` refetch: no second one.
    pub kid_refetched: bool,
    /// Set once the request has waited: a request never waits past its first deadline.
    pub deadline_ms: Option<u64>,
}

impl Attempt {
    /// The first decision of request `context_id`.
    pub fn first(context_id: u32) -> Self {
        Attempt {
            context_id,
            kid_refetched: false,
            deadline_ms: None,
        }
    }

    /// A request that waited is decided again: it was counted the first time.
    fn is_first(&self) -> bool {
        self.deadline_ms.is_none()
    }
}

/// A request that waited is decided again when the root wakes it.
impl From<Waiter> for Attempt {
    fn from(waiter: Waiter) -> Self {
        Attempt {
            context_id: waiter.context_id,
            kid_refetched: waiter.kid_refetched,
            deadline_ms: Some(waiter.deadline_ms),
        }
    }
}

/// What to do with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Let it through after setting the verified token's claim headers (the cache entry's,
    /// not copied) and these other header changes (`None`: remove the header).
    Continue {
        claim_headers: Option<Rc<[(String, String)]>>,
        headers: Vec<(String, Option<String>)>,
    },
    /// Answer it locally.
    Reply {
        status: u32,
        body: &'static str,
        headers: Vec<(&'static str, String)>,
    },
    /// Wait for the pool's keys (or its revocation source's first document): the request
    /// is now among the VM's waiters. `tick`: the root's new tick period, when this first
    /// waiter changes it ([`crate::vm::Tick::BUSY`] until none is left).
    Wait { tick: Option<Duration> },
}

/// The decision and its side effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Client copies of identity headers: removed before anything else, whatever the action.
    pub forged: Vec<String>,
    pub action: Action,
    /// Counters to bump, with the pool when known.
    pub counters: Vec<Count>,
    /// Filter-state properties to publish (only those `filter_state` turns on).
    pub properties: Vec<(&'static str, Text)>,
    /// Why the request was refused, for the debug log (never the token): described only when
    /// the log wants it ([`Refused::describe`]).
    pub refused: Option<Refused>,
}

impl Decision {
    /// Every change to the request's headers, in the order to apply them (`None`: remove):
    /// the client's copies of identity headers first, then, when the request goes on, the
    /// claim headers and the other changes.
    pub fn header_changes(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        let forged = self.forged.iter().map(|name| (name.as_str(), None));
        let (claims, others) = match &self.action {
            Action::Continue {
                claim_headers,
                headers,
            } => (claim_headers.as_deref().unwrap_or_default(), &headers[..]),
            _ => (&[][..], &[][..]),
        };
        let claims = claims.iter().map(|(n, v)| (n.as_str(), Some(v.as_str())));
        let others = others.iter().map(|(n, v)| (n.as_str(), v.as_deref()));
        forged.chain(claims).chain(others)
    }
}

/// Decides a request. Client copies of identity headers (in any spelling, on every route)
/// are set aside first: nothing below sees them, and the decision lists them in `forged`.
/// `clock`: the time in milliseconds, read only when a token must be checked.
pub fn authorize<S: SharedData>(
    vm: &mut VmState<S>,
    mut headers: RequestHeaders,
    clock: impl Fn() -> u64,
    attempt: Attempt,
    crypto: &impl SignatureBackend,
) -> Decision {
    let config = Rc::clone(&vm.config);
    let forged = strip_forged(&mut headers, &config.protected_headers);
    let headers = &headers;
    let out = Decision {
        forged,
        action: Action::Continue {
            claim_headers: None,
            headers: Vec::new(),
        },
        counters: Vec::new(),
        properties: Vec::new(),
        refused: None,
    };
    decide(vm, &config, headers, &clock, attempt, crypto, out)
}

fn decide<S: SharedData>(
    vm: &mut VmState<S>,
    config: &Config,
    headers: &RequestHeaders,
    clock: &impl Fn() -> u64,
    attempt: Attempt,
    crypto: &impl SignatureBackend,
    out: Decision,
) -> Decision {
    let method = headers.method();
    let facts = RequestFacts {
        method,
        path: headers.path(),
        headers,
    };
    let requirements = match route(&config.rules, &facts) {
        Route::Anonymous => return anonymous(config, headers, decision::REASON_ALLOW_RULE, out),
        Route::Token(requirements) => requirements,
        Route::UnreadablePath(why) => {
            let mut refused = Refused::new(AuthError::UnreadablePath, None);
            refused.detail = Some(why.name());
            return refuse(config, headers, refused, None, out);
        }
    };
    // Browsers send preflights without credentials: demanding a token would break CORS.
    if config.cors_preflight != CorsPreflight::Authenticate && is_preflight(headers) {
        return preflight(config, headers, out);
    }
    let found = match extract_token(&config.token_sources, |name| headers.all_values(name)) {
        Ok(found) => found,
        Err(e) => return refuse(config, headers, Refused::new(e, None), None, out),
    };
    let mut out = out;
    // The clock is read once per request, when a token is checked (each read is a host call).
    let read = Cell::new(None);
    let clock = || match read.get() {
        Some(now) => now,
        None => {
            let now = clock();
            read.set(Some(now));
            now
        }
    };
    let cached = match verify(vm, config, &found.token, &clock, attempt, crypto, &mut out) {
        Step::Verified(cached) => cached,
        Step::Wait { tick } => {
            out.action = Action::Wait { tick };
            return out;
        }
        Step::Refused(refused) => return refuse(config, headers, refused, None, out),
    };
    // Fresh or from the cache: a token revoked after it was cached is refused all the same.
    match revocation(vm, config, &cached, clock(), attempt) {
        Step::Verified(_) => {}
        Step::Wait { tick } => {
            out.action = Action::Wait { tick };
            return out;
        }
        Step::Refused(refused) => {
            return refuse(config, headers, refused, Some(&cached.token), out)
        }
    }
    if let Err((failed, requirement)) = check_all(&requirements, &cached.token) {
        let mut refused = Refused::new(
            AuthError::RequirementNotMet(failed),
            Some(cached.token.pool),
        );
        refused.scope_hint = requirement.scope_hint();
        return refuse(config, headers, refused, Some(&cached.token), out);
    }
    allow(config, headers, &found, &cached, out)
}

/// Why a request is refused, and what the reply needs to say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    error: AuthError,
    /// The pool, once the token's issuer named one.
    pool: Option<usize>,
    /// Seconds, for a 503.
    retry_after: u64,
    /// The scopes a failed route requirement asked for (a 403's `www-authenticate`).
    scope_hint: String,
    /// What exactly matched, for the debug log (a revoked token: jti, origin_jti, sign-out).
    detail: Option<&'static str>,
}

impl Refused {
    fn new(error: AuthError, pool: Option<usize>) -> Self {
        Refused {
            error,
            pool,
            retry_after: 0,
            scope_hint: String::new(),
            detail: None,
        }
    }

    fn unavailable(pool: usize, retry_after: u64) -> Self {
        Refused {
            retry_after,
            ..Refused::new(AuthError::KeysUnavailable, Some(pool))
        }
    }

    /// The debug log's account: `reason=<name> class=<class> pool=<name or ->[ detail=..]`.
    pub fn describe(&self, config: &Config) -> String {
        let pool = self
            .pool
            .and_then(|p| config.pools.get(p))
            .map_or("-", |p| p.name.as_str());
        let detail = self
            .detail
            .map(|d| format!(" detail={d}"))
            .unwrap_or_default();
        let class = self.error.refusal().reason();
        format!("reason={} class={class} pool={pool}{detail}", self.error)
    }
}

/// Adds a filter-state property if the operator turned it on (`filter_state`): each one is a
/// host call per request. `value` is only built for properties that are published.
fn publish(out: &mut Decision, config: &Config, name: &'static str, value: impl FnOnce() -> Text) {
    let short = name.strip_prefix("cognito_authorizer.").unwrap_or(name);
    if config.filter_state.contains(&short) {
        out.properties.push((name, value()));
    }
}

enum Step {
    Verified(Rc<CachedToken>),
    Wait { tick: Option<Duration> },
    Refused(Refused),
}

/// The verified token from the cache, or verified now; or wait for keys.
fn verify<S: SharedData>(
    vm: &mut VmState<S>,
    config: &Config,
    token: &str,
    clock: &impl Fn() -> u64,
    attempt: Attempt,
    crypto: &impl SignatureBackend,
    out: &mut Decision,
) -> Step {
    // The clock is read only for a request with a token (one host call fewer otherwise).
    let now_ms = clock();
    let now = now_ms / 1000;
    let timing = vm.timing;
    if let Some(hit) = vm.cache.get(token, now).cloned() {
        // Identical to a fresh answer: the key must still be trusted and the set usable.
        let still_trusted = match vm
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
            if attempt.is_first() {
                out.counters.push((Counter::CacheHit, None));
            }
            return Step::Verified(hit);
        }
        vm.cache.remove(token);
    }
    if attempt.is_first() {
        out.counters.push((Counter::CacheMiss, None));
    }

    let unverified = match inspect(token, config) {
        Ok(u) => u,
        Err(rejected) => return Step::Refused(Refused::new(rejected.reason, rejected.pool)),
    };
    let pool = unverified.pool;
    let keys_here = vm.pools.get(pool).and_then(|slot| slot.keys.keys());
    if keys_here.is_none_or(|keys| keys.get(&unverified.kid).is_none()) {
        // No keys yet, or not this kid: another worker may have published a newer set since
        // this one's last tick (e.g. the refetch that found a rotated key). Use it now.
        vm.sync_pool(pool);
    }
    let deadline_ms = attempt
        .deadline_ms
        .unwrap_or(now_ms + timing.timeout_ms + 1000);
    let deadline_passed = now_ms >= deadline_ms;
    let Some(slot) = vm.pools.get_mut(pool) else {
        return Step::Refused(Refused::new(AuthError::UnknownIssuer, None));
    };
    let availability = slot.keys.availability(now_ms, &timing);
    let kid_refetched = match availability {
        Availability::Ready(keys) => {
            if slot.keys.is_stale(now_ms, &timing) {
                out.counters.push((Counter::StaleKeysServed, Some(pool)));
            }
            match verify_signature(unverified, &keys, config, now, crypto) {
                Ok(token_claims) => {
                    let headers = claim_headers(&config.claims_to_headers, &token_claims);
                    let valid_until = token_claims.exp.saturating_add(config.clock_skew_seconds);
                    let cached = Rc::new(CachedToken {
                        identity: TokenIdentity::of(&token_claims, config),
                        token: token_claims,
                        claim_headers: headers.into(),
                        revocation_passed: Cell::new(None),
                    });
                    vm.cache.insert(token, Rc::clone(&cached), valid_until, now);
                    return Step::Verified(cached);
                }
                Err(AuthError::UnknownKeyId) if !attempt.kid_refetched && !deadline_passed => {
                    // Maybe the pool rotated its keys: one refetch per pool and
                    // jwks_min_refetch_seconds for the whole process, then decide.
                    let mut started = false;
                    let granted = slot.shared.update(|schedule| {
                        let before = schedule.last_kid_refetch_ms;
                        // True also when joining a fetch in flight; only a new one is written.
                        let _ = schedule.refetch_for_unknown_kid(now_ms, &timing);
                        started = schedule.last_kid_refetch_ms != before;
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
                        out.counters
                            .push((Counter::JwksRefetchUnknownKid, Some(pool)));
                    }
                    if !join {
                        return Step::Refused(Refused::new(AuthError::UnknownKeyId, Some(pool)));
                    }
                    true
                }
                Err(e) => return Step::Refused(Refused::new(e, Some(pool))),
            }
        }
        Availability::Wait if !deadline_passed => attempt.kid_refetched,
        Availability::Wait => return Step::Refused(Refused::unavailable(pool, 1)),
        Availability::Unavailable { retry_after_s } => {
            return Step::Refused(Refused::unavailable(pool, retry_after_s))
        }
    };
    let generation = vm.generation_of(pool);
    vm.waiters.push(Waiter {
        context_id: attempt.context_id,
        pool,
        deadline_ms,
        generation,
        kid_refetched,
    });
    Step::Wait {
        tick: vm.tick_busy(),
    }
}

/// The revocation check of a verified token against its pool's source, if it has one:
/// `Verified` to go on, `Wait` for the source's first document, or the refusal (`revoked`,
/// or 503 when no usable document is available under `on_unavailable: "deny"`).
fn revocation<S: SharedData>(
    vm: &mut VmState<S>,
    config: &Config,
    cached: &Rc<CachedToken>,
    now_ms: u64,
    attempt: Attempt,
) -> Step {
    let pool = cached.token.pool;
    let Some(index) = config.pools.get(pool).and_then(|p| p.revocations) else {
        return Step::Verified(Rc::clone(cached));
    };
    let (Some(src), Some(slot)) = (config.revocation_sources.get(index), vm.sources.get(index))
    else {
        return Step::Refused(Refused::new(AuthError::RevocationsUnavailable, Some(pool)));
    };
    let deadline_ms = attempt
        .deadline_ms
        .unwrap_or(now_ms + slot.timing.timeout_ms + 1000);
    let availability = slot.list.availability(now_ms, &slot.timing);
    let list_generation = match availability {
        Availability::Ready(_) => Some(slot.list.generation()),
        _ => None,
    };
    if list_generation.is_some() && cached.revocation_passed.get() == list_generation {
        // Checked against this very list already (a cache hit): nothing can have changed.
        return Step::Verified(Rc::clone(cached));
    }
    let facts = token_facts(&cached.token.claims);
    match gate(
        &availability,
        src.on_unavailable,
        now_ms >= deadline_ms,
        &facts,
    ) {
        Gate::Pass => {
            cached.revocation_passed.set(list_generation);
            Step::Verified(Rc::clone(cached))
        }
        Gate::Revoked(why) => Step::Refused(Refused {
            detail: Some(why.detail()),
            ..Refused::new(AuthError::Revoked, Some(pool))
        }),
        Gate::Unavailable { retry_after_s } => Step::Refused(Refused {
            retry_after: retry_after_s,
            ..Refused::new(AuthError::RevocationsUnavailable, Some(pool))
        }),
        Gate::Wait => {
            let generation = vm.generation_of(pool);
            vm.waiters.push(Waiter {
                context_id: attempt.context_id,
                pool,
                deadline_ms,
                generation,
                kid_refetched: attempt.kid_refetched,
            });
            Step::Wait {
                tick: vm.tick_busy(),
            }
        }
    }
}

fn refuse(
    config: &Config,
    headers: &RequestHeaders,
    refused: Refused,
    token: Option<&VerifiedToken>,
    mut out: Decision,
) -> Decision {
    let error = &refused.error;
    let refusal = error.refusal();
    out.counters.push((refusal.counter(), refused.pool));
    publish(&mut out, config, property::REASON, || {
        Text::Static(refusal.reason())
    });
    if let Some(p) = refused.pool.and_then(|p| config.pools.get(p)) {
        publish(&mut out, config, property::POOL, || {
            Text::Shared(p.name.as_str().into())
        });
    }
    // A 403 comes after a verified token: who was refused is known, and logged.
    if let Some(token) = token {
        publish_identity(&TokenIdentity::of(token, config), config, &mut out);
    }
    if config.mode == Mode::Report {
        publish(&mut out, config, property::DECISION, || {
            Text::Static("report")
        });
        let mut changes = vec![(
            DECISION_HEADER.to_string(),
            Some(refusal.reason().to_string()),
        )];
        changes.extend(token_removals(config, headers, None));
        out.action = Action::Continue {
            claim_headers: None,
            headers: changes,
        };
        out.refused = Some(refused);
        return out;
    }
    publish(&mut out, config, property::DECISION, || {
        Text::Static("deny")
    });
    let scope_hint = if refusal == Refusal::Forbidden {
        refused.scope_hint.as_str()
    } else {
        ""
    };
    let reply = local_reply(error, &config.realm, scope_hint, refused.retry_after);
    let mut reply_headers = reply.headers;
    reply_headers.extend(cors_headers(
        headers.first("origin"),
        &config.cors_allow_origins,
    ));
    out.action = Action::Reply {
        status: reply.status,
        body: reply.body,
        headers: reply_headers,
    };
    out.refused = Some(refused);
    out
}

/// A preflight on a route that needs a token: answered here (`"answer"`), or passed on with
/// every token source removed (`"bypass"`), since a browser never sends one on a preflight
/// and the upstream must not act on one that came anyway.
fn preflight(config: &Config, headers: &RequestHeaders, mut out: Decision) -> Decision {
    let reason = decision::REASON_CORS_PREFLIGHT;
    if config.cors_preflight == CorsPreflight::Answer {
        publish(&mut out, config, property::DECISION, || {
            Text::Static("anonymous")
        });
        publish(&mut out, config, property::REASON, || Text::Static(reason));
        out.action = Action::Reply {
            status: 204,
            body: "",
            headers: preflight_headers(headers, config),
        };
        return out;
    }
    let every_source: Vec<usize> = (0..config.token_sources.len()).collect();
    let removals = strip_tokens(config, headers, &every_source);
    let mut out = anonymous(config, headers, reason, out);
    if let Action::Continue { headers, .. } = &mut out.action {
        headers.retain(|(name, _)| !removals.iter().any(|(removed, _)| removed == name));
        headers.extend(removals);
    }
    out
}

fn anonymous(
    config: &Config,
    headers: &RequestHeaders,
    reason: &'static str,
    mut out: Decision,
) -> Decision {
    publish(&mut out, config, property::DECISION, || {
        Text::Static("anonymous")
    });
    publish(&mut out, config, property::REASON, || Text::Static(reason));
    let mut changes = Vec::new();
    if config.mode == Mode::Report {
        changes.push((DECISION_HEADER.to_string(), Some(reason.to_string())));
    }
    changes.extend(token_removals(config, headers, None));
    out.action = Action::Continue {
        claim_headers: None,
        headers: changes,
    };
    out
}

fn allow(
    config: &Config,
    headers: &RequestHeaders,
    found: &FoundToken,
    cached: &CachedToken,
    mut out: Decision,
) -> Decision {
    let mut changes: Vec<(String, Option<String>)> = Vec::new();
    if let Some(header) = &config.payload_header {
        if let Some(payload) = payload_segment(&found.token) {
            changes.push((header.clone(), Some(payload.to_string())));
        }
    }
    changes.extend(token_removals(config, headers, Some(&found.sources)));
    let token = &cached.token;
    out.counters.push((Counter::Allowed, Some(token.pool)));
    publish(&mut out, config, property::DECISION, || {
        Text::Static("allow")
    });
    publish(&mut out, config, property::REASON, || {
        Text::Static(decision::REASON_ALLOWED)
    });
    if let Some(pool) = &cached.identity.pool {
        publish(&mut out, config, property::POOL, || {
            Text::Shared(Rc::clone(pool))
        });
    }
    publish_identity(&cached.identity, config, &mut out);
    if config.mode == Mode::Report {
        changes.push((
            DECISION_HEADER.to_string(),
            Some(decision::REASON_ALLOWED.to_string()),
        ));
    }
    out.action = Action::Continue {
        claim_headers: (!cached.claim_headers.is_empty()).then(|| Rc::clone(&cached.claim_headers)),
        headers: changes,
    };
    out
}

/// The verified token's subject and client, as filter state.
fn publish_identity(identity: &TokenIdentity, config: &Config, out: &mut Decision) {
    if let Some(sub) = &identity.sub {
        publish(out, config, property::SUB, || Text::Shared(Rc::clone(sub)));
    }
    if let Some(client) = &identity.client_id {
        publish(out, config, property::CLIENT_ID, || {
            Text::Shared(Rc::clone(client))
        });
    }
}

/// `forward_token: false`: the upstream never sees the token, wherever it came from — on
/// anonymous routes, CORS preflights and report-mode refusals too. `found`: the sources of
/// the verified token; otherwise every source holding something read as a token.
fn token_removals(
    config: &Config,
    headers: &RequestHeaders,
    found: Option<&[usize]>,
) -> Vec<(String, Option<String>)> {
    if config.forward_token {
        return Vec::new();
    }
    let located;
    let sources = match found {
        Some(sources) => sources,
        None => {
            located = token_locations(&config.token_sources, |name| headers.all_values(name));
            &located
        }
    };
    strip_tokens(config, headers, sources)
}

/// The header changes that remove token sources `sources` (indices into `token_sources`)
/// from the request; a source the request does not use changes nothing.
fn strip_tokens(
    config: &Config,
    headers: &RequestHeaders,
    sources: &[usize],
) -> Vec<(String, Option<String>)> {
    let mut changes = Vec::new();
    let mut path: Option<String> = None;
    let mut cookies: Option<Option<String>> = None;
    for source in sources.iter().filter_map(|i| config.token_sources.get(*i)) {
        match source {
            TokenSource::Header { name } | TokenSource::HeaderWithPrefix { name, .. } => {
                if headers.first(name).is_some() && !changes.iter().any(|(n, _)| n == name) {
                    changes.push((name.clone(), None));
                }
            }
            TokenSource::Query { name } => {
                let current = path.as_deref().unwrap_or(headers.path());
                path = Some(path_without_query_param(current, name));
            }
            TokenSource::Cookie { name } => {
                if headers.first("cookie").is_none() {
                    continue;
                }
                let current = match &cookies {
                    Some(c) => c.clone().unwrap_or_default(),
                    None => headers.all_values("cookie").join("; "),
                };
                cookies = Some(cookie_header_without(&current, name));
            }
        }
    }
    if let Some(path) = path.filter(|p| p != headers.path()) {
        changes.push((":path".to_string(), Some(path)));
    }
    if let Some(cookies) = cookies {
        changes.push(("cookie".to_string(), cookies));
    }
    changes
}

#[cfg(test)]
mod tests {
    //! Every transition of a request, natively: the VM's state is real (keys, cache,
    //! waiters, the shared schedule in a fake store with Envoy's semantics), the time is
    //! pinned, signatures are checked inside the module (no host crypto).

    use super::*;
    use crate::jwks::tests::rsa_jwk;
    use crate::keys::encode_envelope;
    use crate::shared_keys::tests::FakeSharedData;
    use crate::signature::NoHostCrypto;
    use crate::vm::Tick;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jwt_simple::prelude::*;
    use serde_json::{json, Value};

    const NOW_MS: u64 = 1_800_000_000_000;
    const POOL_ID: &str = "us-east-1_TestPool1";
    const ISS: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TestPool1";
    const CLIENT: &str = "client-abc";

    fn key_a() -> &'static RS256KeyPair {
        crate::jwks::tests::test_key(0)
    }

    fn key_b() -> &'static RS256KeyPair {
        crate::jwks::tests::test_key(1)
    }

    /// An RS256 token signed by `key`, header kid `kid`; payload: a valid id token of the
    /// pool for user `user` in `groups`, issued a minute before NOW, valid for an hour.
    fn token(key: &RS256KeyPair, kid: &str, user: &str, groups: &[&str]) -> String {
        use superboring::hash::MessageDigest;
        use superboring::pkey::PKey;
        use superboring::rsa::Padding;
        use superboring::sign::Signer;
        let now = NOW_MS / 1000;
        let header = json!({"alg": "RS256", "kid": kid});
        let payload = json!({
            "sub": format!("sub-{user}"), "iss": ISS, "aud": CLIENT, "token_use": "id",
            "cognito:username": user, "cognito:groups": groups,
            "iat": now - 60, "auth_time": now - 60, "exp": now + 3600,
        });
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let input = format!("{}.{}", b64(&header), b64(&payload));
        let pkey = PKey::from_rsa(key.key_pair().as_ref().clone()).unwrap();
        let mut signer = Signer::new(MessageDigest::sha256(), &pkey).unwrap();
        signer.set_rsa_padding(Padding::PKCS1).unwrap();
        signer.update(input.as_bytes()).unwrap();
        let signature = URL_SAFE_NO_PAD.encode(signer.sign_to_vec().unwrap());
        format!("{input}.{signature}")
    }

    fn jwks(keys: &[(&RS256KeyPair, &str)]) -> Vec<u8> {
        let keys: Vec<Value> = keys
            .iter()
            .map(|(k, kid)| rsa_jwk(k, kid, Some("RS256")))
            .collect();
        json!({ "keys": keys }).to_string().into_bytes()
    }

    /// A VM of one worker, with the rest of the process in `store`.
    struct World {
        vm: VmState<FakeSharedData>,
        now_ms: u64,
    }

    fn world(extra: Value) -> World {
        let mut config = json!({
            "user_pools": [{"name": "main", "user_pool_id": POOL_ID, "client_ids": [CLIENT],
                            "jwks_cluster": "cognito"}],
            "claims_to_headers": {"sub": "x-cognito-sub"},
            "rules": [
                {"match": {"exact": "/healthz"}, "allow": true},
                {"match": {"prefix": "/admin"}, "require": {"groups": ["admins"]}}
            ]
        });
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        let (config, _) = Config::parse(config.to_string().as_bytes()).unwrap();
        let vm = VmState::new(config, FakeSharedData::default(), 0xA);
        vm.pools[0].shared.ensure_schedule();
        World { vm, now_ms: NOW_MS }
    }

    impl World {
        /// Another VM fetched `body` now and published it; this VM picks it up.
        fn keys_published(&mut self, body: &[u8]) {
            let (now, timing) = (self.now_ms, self.vm.timing);
            let slot = &self.vm.pools[0];
            slot.shared.publish(&encode_envelope(now, body)).unwrap();
            slot.shared
                .update(|s| {
                    s.fetch_succeeded(now, &timing);
                    true
                })
                .unwrap();
            self.vm.sync_pool(0);
        }

        /// Another VM's fetch failed now.
        fn fetch_failed(&mut self) {
            let now = self.now_ms;
            self.vm.pools[0]
                .shared
                .update(|s| {
                    s.fetch_failed(now, 0);
                    true
                })
                .unwrap();
            self.vm.sync_pool(0);
        }

        fn decide(&mut self, path: &str, headers: &[(&str, &str)], attempt: Attempt) -> Decision {
            self.request("GET", path, headers, attempt)
        }

        fn request(
            &mut self,
            method: &str,
            path: &str,
            headers: &[(&str, &str)],
            attempt: Attempt,
        ) -> Decision {
            let mut all = vec![
                (":method".to_string(), method.to_string()),
                (":path".to_string(), path.to_string()),
            ];
            all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
            let headers = RequestHeaders::new(all);
            let now = self.now_ms;
            authorize(&mut self.vm, headers, || now, attempt, &NoHostCrypto)
        }

        fn get(&mut self, path: &str, token: &str) -> Decision {
            let bearer = format!("Bearer {token}");
            self.decide(path, &[("authorization", &bearer)], Attempt::first(1))
        }

        /// The one request that waits is due now: decide it again, as the root would.
        fn rerun_the_waiter(&mut self, token: &str) -> Decision {
            let due = self.vm.due_waiters(self.now_ms);
            assert_eq!(due.len(), 1, "one waiter is due");
            let attempt = Attempt::from(due[0]);
            let bearer = format!("Bearer {token}");
            self.decide("/x", &[("authorization", &bearer)], attempt)
        }

        /// How the debug log describes the decision's refusal.
        fn refusal(&self, d: &Decision) -> Option<String> {
            d.refused.as_ref().map(|r| r.describe(&self.vm.config))
        }

        fn advance(&mut self, ms: u64) {
            self.now_ms += ms;
        }
    }

    fn status(d: &Decision) -> u32 {
        match &d.action {
            Action::Continue { .. } => 200,
            Action::Reply { status, .. } => *status,
            Action::Wait { .. } => 0,
        }
    }

    fn reply_header<'d>(d: &'d Decision, name: &str) -> Option<&'d str> {
        match &d.action {
            Action::Reply { headers, .. } => headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }

    fn property<'d>(d: &'d Decision, name: &str) -> Option<&'d str> {
        d.properties
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| &**v)
    }

    fn counted(d: &Decision, counter: Counter) -> usize {
        d.counters.iter().filter(|(c, _)| *c == counter).count()
    }

    #[test]
    fn valid_token_is_allowed_with_its_claim_headers_and_identity() {
        let mut w = world(json!({}));
        w.keys_published(&jwks(&[(key_a(), "a")]));

        let d = w.get("/x", &token(key_a(), "a", "alice", &[]));

        assert_eq!(
            d.action,
            Action::Continue {
                claim_headers: Some(Rc::from(vec![(
                    "x-cognito-sub".to_string(),
                    "sub-alice".to_string()
                )])),
                headers: vec![]
            }
        );
        assert_eq!(property(&d, property::DECISION), Some("allow"));
        assert_eq!(property(&d, property::POOL), Some("main"));
        assert_eq!(property(&d, property::SUB), Some("sub-alice"));
        assert_eq!(property(&d, property::CLIENT_ID), Some(CLIENT));
        assert_eq!(
            d.counters,
            [(Counter::CacheMiss, None), (Counter::Allowed, Some(0))]
        );
        // The second time it comes from the cache.
        let again = w.get("/x", &token(key_a(), "a", "alice", &[]));
        assert_eq!(again.action, d.action);
        // ...sharing the cache entry's claim headers rather than copying them.
        let claims = |d: &Decision| match &d.action {
            Action::Continue {
                claim_headers: Some(c),
                ..
            } => Rc::clone(c),
            other => panic!("{other:?}"),
        };
        assert!(Rc::ptr_eq(&claims(&d), &claims(&again)));
        assert_eq!(counted(&again, Counter::CacheHit), 1);
    }

    #[test]
    fn cached_token_is_refused_once_a_refresh_drops_its_key_after_one_refetch() {
        let mut w = world(json!({}));
        w.keys_published(&jwks(&[(key_a(), "a"), (key_b(), "b")]));
        let t = token(key_a(), "a", "alice", &[]);
        assert_eq!(status(&w.get("/x", &t)), 200);

        w.advance(1000);
        w.keys_published(&jwks(&[(key_b(), "b")]));
        // Not from the cache: the kid is unknown now, and a refetch is started and awaited.
        let d = w.get("/x", &t);
        assert_eq!(counted(&d, Counter::CacheHit), 0);
        assert_eq!(
            d.action,
            Action::Wait {
                tick: Some(Tick::BUSY)
            }
        );

        // The refetch confirms: no key "a" any more.
        w.advance(100);
        w.keys_published(&jwks(&[(key_b(), "b")]));
        let d = w.rerun_the_waiter(&t);
        assert_eq!(status(&d), 401);
        assert_eq!(
            w.refusal(&d).as_deref(),
            Some("reason=unknown_kid class=invalid pool=main")
        );
    }

    #[test]
    fn cached_token_is_refused_once_its_kid_names_other_key_material() {
        let mut w = world(json!({}));
        w.keys_published(&jwks(&[(key_a(), "a")]));
        let t = token(key_a(), "a", "alice", &[]);
        assert_eq!(status(&w.get("/x", &t)), 200);

        w.advance(1000);
        w.keys_published(&jwks(&[(key_b(), "a")]));
        let d = w.get("/x", &t);

        assert_eq!(status(&d), 401);
        assert_eq!(counted(&d, Counter::CacheHit), 0);
        assert_eq!(
            w.refusal(&d).as_deref(),
            Some("reason=bad_signature class=invalid pool=main")
        );
    }

    #[test]
    fn unknown_kid_starts_one_refetch_and_waits_for_it() {
        let mut w = world(json!({}));
        w.keys_published(&jwks(&[(key_a(), "a")]));

        let d = w.get("/x", &token(key_b(), "b", "bob", &[]));

        assert_eq!(
            d.action,
            Action::Wait {
                tick: Some(Tick::BUSY)
            }
        );
        assert_eq!(counted(&d, Counter::JwksRefetchUnknownKid), 1);
        let schedule = w.vm.pools[0].shared.schedule();
        assert_eq!(schedule.last_kid_refetch_ms, Some(NOW_MS));
        assert!(
            schedule.fetch_due(NOW_MS, &w.vm.timing),
            "the root's next tick fetches"
        );
        assert_eq!(w.vm.waiters.len(), 1);
        assert!(w.vm.waiters[0].kid_refetched);
    }

    #[test]
    fn unknown_kid_joins_a_refetch_in_flight_without_starting_another() {
        let mut w = world(json!({}));
        w.keys_published(&jwks(&[(key_a(), "a")]));
        assert_eq!(
            w.get("/x", &token(key_b(), "b", "bob", &[])).action,
            Action::Wait {
                tick: Some(Tick::BUSY)
            }
        );
        // Another VM took the lease for that refetch.
        let now = w.now_ms;
        w.vm.pools[0]
            .shared
            .update(|s| {
                s.fetch_started(now, 0xB);
                true
            })
            .unwrap();

        w.advance(100);
        let d = w.decide(
            "/x",
            &[(
                "authorization",
                &format!("Bearer {}", token(key_b(), "b2", "carol", &[])),
            )],
            Attempt::first(2),
        );

        assert_eq!(d.action, Action::Wait { tick: None });
        assert_eq!(counted(&d, Counter::JwksRefetchUnknownKid), 0);
        assert_eq!(w.vm.waiters.len(), 2);
    }

    #[test]
    fn unknown_kid_within_the_rate_limit_is_invalid_without_a_refetch() {
        let mut w = world(json!({}));
        w.keys_published(&jwks(&[(key_a(), "a")]));
        assert_eq!(
            w.get("/x", &token(key_b(), "b", "bob", &[])).action,
            Action::Wait {
                tick: Some(Tick::BUSY)
            }
        );
        // The refetch came back without the kid.
        w.advance(200);
        w.keys_published(&jwks(&[(key_a(), "a")]));

        // 5 s later (limit: jwks_min_refetch_seconds = 10) another unknown kid.
        w.advance(5_000);
        let d = w.get("/x", &token(key_b(), "c", "carol", &[]));

        assert_eq!(status(&d), 401);
        assert_eq!(
            w.refusal(&d).as_deref(),
            Some("reason=unknown_kid class=invalid pool=main")
        );
        assert_eq!(counted(&d, Counter::JwksRefetchUnknownKid), 0);
    }

    #[test]
    fn a_wait_that_ends_in_keys_is_allowed_and_counted_once() {
        let mut w = world(json!({}));
        let t = token(key_a(), "a", "alice", &[]);
        let first = w.get("/x", &t);
        assert_eq!(
            first.action,
            Action::Wait {
                tick: Some(Tick::BUSY)
            }
        );
        assert_eq!(counted(&first, Counter::CacheMiss), 1);

        w.advance(300);
        w.keys_published(&jwks(&[(key_a(), "a")]));
        let d = w.rerun_the_waiter(&t);

        assert_eq!(status(&d), 200);
        assert_eq!(
            counted(&d, Counter::CacheMiss),
            0,
            "counted on the first attempt"
        );
        assert_eq!(counted(&d, Counter::Allowed), 1);
    }

    #[test]
    fn a_wait_past_its_deadline_is_503_with_retry_after_1() {
        let mut w = world(json!({"jwks_timeout_ms": 500}));
        let t = token(key_a(), "a", "alice", &[]);
        assert_eq!(
            w.get("/x", &t).action,
            Action::Wait {
                tick: Some(Tick::BUSY)
            }
        );

        // Deadline: the fetch timeout + 1 s; no keys came.
        w.advance(1_500);
        let d = w.rerun_the_waiter(&t);

        assert_eq!(status(&d), 503);
        assert_eq!(reply_header(&d, "retry-after"), Some("1"));
        assert_eq!(d.counters, [(Counter::Unavailable, Some(0))]);
    }

    #[test]
    fn keys_never_obtained_after_a_failed_fetch_are_503_with_the_backoff_as_retry_after() {
        let mut w = world(json!({}));
        w.fetch_failed();

        let d = w.get("/x", &token(key_a(), "a", "alice", &[]));

        assert_eq!(status(&d), 503);
        // First retry after 1 s (jitter 0 gives the shortest, half of it, rounded up).
        assert_eq!(reply_header(&d, "retry-after"), Some("1"));
        assert_eq!(property(&d, property::REASON), Some("unavailable"));
    }

    #[test]
    fn report_mode_lets_every_refusal_class_through_with_its_reason() {
        let mut w = world(json!({"mode": "report"}));
        w.keys_published(&jwks(&[(key_a(), "a")]));
        let valid = token(key_a(), "a", "alice", &[]);
        let mut forged = token(key_a(), "a", "alice", &[]);
        forged.push('x');
        let cases: [(&str, Option<String>, &str); 4] = [
            ("/x", None, "missing"),
            ("/x", Some(forged), "invalid"),
            ("/admin", Some(valid), "forbidden"),
            ("/healthz", None, "allow_rule"),
        ];
        for (path, token, reason) in cases {
            let bearer = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = bearer
                .iter()
                .map(|b| ("authorization", b.as_str()))
                .collect();
            let d = w.decide(path, &headers, Attempt::first(1));
            let Action::Continue { headers, .. } = &d.action else {
                panic!("{path}: report mode never refuses: {d:?}")
            };
            assert!(
                headers.contains(&(DECISION_HEADER.to_string(), Some(reason.to_string()))),
                "{path}: {headers:?}"
            );
        }
        // Keys unavailable too.
        let mut w = world(json!({"mode": "report"}));
        w.fetch_failed();
        let d = w.get("/x", &token(key_a(), "a", "alice", &[]));
        assert_eq!(property(&d, property::DECISION), Some("report"));
        assert_eq!(property(&d, property::REASON), Some("unavailable"));
        assert_eq!(status(&d), 200);
    }

    #[test]
    fn anonymous_rule_continues_without_a_token_and_strips_one_that_is_not_forwarded() {
        let mut w = world(json!({"forward_token": false}));
        let d = w.decide(
            "/healthz",
            &[("authorization", "Bearer a.b.c")],
            Attempt::first(1),
        );
        assert_eq!(
            d.action,
            Action::Continue {
                claim_headers: None,
                headers: vec![("authorization".into(), None)]
            }
        );
        assert_eq!(property(&d, property::DECISION), Some("anonymous"));
        assert_eq!(property(&d, property::REASON), Some("allow_rule"));
        assert!(d.counters.is_empty());
    }

    #[test]
    fn forged_identity_headers_are_removed_whatever_the_decision() {
        let mut w = world(json!({}));
        w.keys_published(&jwks(&[(key_a(), "a")]));
        let bearer = format!("Bearer {}", token(key_a(), "a", "alice", &[]));
        let forged = [("X_Cognito_Sub", "admin"), ("x-cognito-sub", "admin")];
        let mut with_token = forged.to_vec();
        with_token.push(("authorization", &bearer));
        for (path, headers, expected) in [
            ("/healthz", &forged[..], 200),
            ("/x", &forged[..], 401),
            ("/x", &with_token[..], 200),
            ("/admin", &with_token[..], 403),
        ] {
            let d = w.decide(path, headers, Attempt::first(1));
            assert_eq!(status(&d), expected, "{path}");
            assert_eq!(d.forged, ["X_Cognito_Sub", "x-cognito-sub"], "{path}");
        }
        // The allowed request gets the verified value, not the client's.
        let d = w.decide("/x", &with_token, Attempt::first(1));
        let Action::Continue { claim_headers, .. } = &d.action else {
            panic!("{d:?}")
        };
        assert_eq!(
            claim_headers.as_deref(),
            Some(&[("x-cognito-sub".to_string(), "sub-alice".to_string())][..])
        );
        assert_eq!(
            d.header_changes().collect::<Vec<_>>(),
            [
                ("X_Cognito_Sub", None),
                ("x-cognito-sub", None),
                ("x-cognito-sub", Some("sub-alice"))
            ],
            "removed first, then set: the verified value is the one that stays"
        );
        let refused = w.decide("/admin", &with_token, Attempt::first(1));
        assert_eq!(refused.header_changes().count(), 2, "only the removals");
        // Nothing to remove when the client sent none.
        assert!(w
            .get("/x", &token(key_a(), "a", "alice", &[]))
            .forged
            .is_empty());
    }

    #[test]
    fn cors_preflight_continues_without_a_token() {
        let mut w = world(json!({}));
        let mut all = vec![
            (":method".to_string(), "OPTIONS".to_string()),
            (":path".to_string(), "/admin".to_string()),
            ("origin".to_string(), "https://app.example".to_string()),
            (
                "access-control-request-method".to_string(),
                "POST".to_string(),
            ),
        ];
        let d = authorize(
            &mut w.vm,
            RequestHeaders::new(all.clone()),
            || NOW_MS,
            Attempt::first(1),
            &NoHostCrypto,
        );
        assert_eq!(status(&d), 200);
        assert_eq!(property(&d, property::REASON), Some("cors_preflight"));

        // Not a preflight without Access-Control-Request-Method: a token is needed.
        all.pop();
        let d = authorize(
            &mut w.vm,
            RequestHeaders::new(all),
            || NOW_MS,
            Attempt::first(1),
            &NoHostCrypto,
        );
        assert_eq!(status(&d), 401);
    }

    const APP: &str = "https://app.example";

    fn preflight_from(origin: &str, method: &str) -> Vec<(&'static str, String)> {
        vec![
            ("origin", origin.to_string()),
            ("access-control-request-method", method.to_string()),
        ]
    }

    fn borrowed<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
    }

    #[test]
    fn a_bypassed_preflight_reaches_the_upstream_without_any_token_source() {
        // A preflight carries no credentials from a browser; one that does is not a browser's,
        // and an upstream that ignores the method must not get a token with it.
        let mut w = world(json!({"token_sources": [
            {"header": "authorization"}, {"query": "access_token"}, {"cookie": "jwt"}
        ]}));
        let mut headers = preflight_from(APP, "DELETE");
        headers.push(("authorization", "Bearer a.b.c".into()));
        headers.push(("cookie", "jwt=a.b.c; theme=dark".into()));
        let d = w.request(
            "OPTIONS",
            "/admin?access_token=a.b.c&page=2",
            &borrowed(&headers),
            Attempt::first(1),
        );
        assert_eq!(status(&d), 200);
        assert_eq!(property(&d, property::REASON), Some("cors_preflight"));
        let changes: Vec<_> = d.header_changes().collect();
        assert!(changes.contains(&("authorization", None)), "{changes:?}");
        assert!(
            changes.contains(&(":path", Some("/admin?page=2"))),
            "{changes:?}"
        );
        assert!(
            changes.contains(&("cookie", Some("theme=dark"))),
            "{changes:?}"
        );
        // Without credentials there is nothing to change.
        let d = w.request(
            "OPTIONS",
            "/admin",
            &borrowed(&preflight_from(APP, "GET")),
            Attempt::first(1),
        );
        assert_eq!(d.header_changes().count(), 0);
    }

    #[test]
    fn a_preflight_must_ask_for_a_method() {
        let mut w = world(json!({}));
        for method in ["", "GET, POST", "G T", "GET\u{7f}"] {
            let d = w.request(
                "OPTIONS",
                "/admin",
                &borrowed(&preflight_from(APP, method)),
                Attempt::first(1),
            );
            assert_eq!(status(&d), 401, "{method:?}");
        }
    }

    #[test]
    fn an_answered_preflight_never_reaches_the_upstream_of_a_token_route() {
        let mut w = world(json!({"cors_preflight": "answer", "cors_allow_origins": [APP]}));
        let d = w.request(
            "OPTIONS",
            "/admin",
            &borrowed(&preflight_from(APP, "DELETE")),
            Attempt::first(1),
        );
        assert_eq!(status(&d), 204);
        assert_eq!(reply_header(&d, "access-control-allow-origin"), Some(APP));
        assert_eq!(
            reply_header(&d, "access-control-allow-methods"),
            Some("DELETE")
        );
        let other = w.request(
            "OPTIONS",
            "/admin",
            &borrowed(&preflight_from("https://evil.example", "DELETE")),
            Attempt::first(1),
        );
        assert_eq!(status(&other), 204);
        assert_eq!(reply_header(&other, "access-control-allow-origin"), None);
        // An anonymous route's preflight goes on like any request there.
        let d = w.request(
            "OPTIONS",
            "/healthz",
            &borrowed(&preflight_from(APP, "GET")),
            Attempt::first(1),
        );
        assert_eq!(status(&d), 200);
        assert_eq!(property(&d, property::REASON), Some("allow_rule"));
    }

    #[test]
    fn a_group_the_token_lacks_is_403_naming_who_was_refused() {
        let mut w = world(json!({}));
        w.keys_published(&jwks(&[(key_a(), "a")]));

        let d = w.get("/admin/x", &token(key_a(), "a", "bob", &["users"]));

        assert_eq!(status(&d), 403);
        assert_eq!(property(&d, property::SUB), Some("sub-bob"));
        assert_eq!(
            reply_header(&d, "www-authenticate"),
            Some(r#"Bearer realm="api", error="insufficient_scope""#)
        );
        assert_eq!(
            w.get("/admin/x", &token(key_a(), "a", "ada", &["admins"]))
                .counters
                .len(),
            2
        );
    }

    #[test]
    fn only_the_filter_state_an_operator_turned_on_is_published() {
        let mut w = world(json!({"filter_state": ["reason"]}));
        w.keys_published(&jwks(&[(key_a(), "a")]));
        let d = w.get("/x", &token(key_a(), "a", "alice", &[]));
        assert_eq!(d.properties, [(property::REASON, Text::Static("allowed"))]);
        let mut w = world(json!({"filter_state": []}));
        assert!(w.decide("/x", &[], Attempt::first(1)).properties.is_empty());
    }

    #[test]
    fn a_path_read_in_too_many_ways_is_400_before_any_token_is_read() {
        let mut w = world(json!({}));
        let path = "/A%2561;x/%u0062.\\%2e%2e//C;y/%252F..%5C.;z/D%20./".repeat(4);
        let d = w.decide(&path, &[], Attempt::first(1));
        assert_eq!(status(&d), 400);
        assert_eq!(d.counters, [(Counter::DeniedBadRequest, None)]);
    }
}

#[cfg(test)]
mod revocation_tests {
    //! The revocation step of the decision, natively: cached tokens, the first-document
    //! wait, `on_unavailable`, and documents arriving through shared data as on a worker.
    use super::*;
    use crate::jwks::parse_jwks;
    use crate::jwks::tests::rsa_jwk;
    use crate::keys::FetchSchedule;
    use crate::revocation::{RevocationList, Stamp};
    use crate::shared_keys::tests::FakeSharedData;
    use crate::shared_keys::SharedRevocations;
    use crate::signature::NoHostCrypto;
    use crate::vm::Tick;
    use jwt_simple::prelude::*;
    use std::sync::OnceLock;

    const ISS: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Rev0ked1";

    fn key() -> &'static RS256KeyPair {
        static KEY: OnceLock<RS256KeyPair> = OnceLock::new();
        KEY.get_or_init(|| RS256KeyPair::generate(2048).unwrap().with_key_id("k1"))
    }

    fn vm(on_unavailable: &str) -> (VmState<FakeSharedData>, FakeSharedData, u64) {
        let json = format!(
            r#"{{"user_pools":[{{"user_pool_id":"us-east-1_Rev0ked1","jwks_cluster":"c","client_ids":["cl"],
               "revocations":{{"cluster":"r","uri":"http://r/doc.json","refresh_seconds":10,
               "max_stale_seconds":20,"timeout_ms":1000,"on_unavailable":"{on_unavailable}"}}}}]}}"#
        );
        let (config, _) = Config::parse(json.as_bytes()).unwrap();
        let store = FakeSharedData::default();
        let mut vm = VmState::new(config, store.clone(), 7);
        let now_ms = Clock::now_since_epoch().as_millis();
        let jwks = serde_json::json!({"keys": [rsa_jwk(key(), "k1", None)]}).to_string();
        let keys = parse_jwks(jwks.as_bytes(), 1 << 20).unwrap().keys;
        vm.install_keys(0, keys, now_ms, None);
        (vm, store, now_ms)
    }

    fn token(sub: &str, session: &str, auth_time: u64) -> String {
        let custom = serde_json::json!({"token_use": "access", "client_id": "cl",
            "origin_jti": session, "auth_time": auth_time});
        let claims =
            Claims::with_custom_claims(custom, jwt_simple::prelude::Duration::from_hours(1))
                .with_issuer(ISS)
                .with_subject(sub)
                .with_jwt_id(format!("{session}-jti"));
        key().sign(claims).unwrap()
    }

    /// What the fetching VM publishes (`revocation_answer`): the document's list.
    fn publish(store: &FakeSharedData, vm: &VmState<FakeSharedData>, doc: &str, at_ms: u64) {
        let limits = vm.config.revocation_sources[0].limits(vm.config.clock_skew_seconds);
        let list = RevocationList::parse(doc.as_bytes(), &limits, at_ms / 1000).unwrap();
        publish_value(store, vm, list.encoded(), list.digest(), at_ms);
    }

    /// Publishes `value` as the list of the document with `digest`.
    fn publish_value(
        store: &FakeSharedData,
        vm: &VmState<FakeSharedData>,
        value: &[u8],
        digest: u64,
        at_ms: u64,
    ) {
        let src = &vm.config.revocation_sources[0];
        let shared = SharedRevocations::for_source(src, store.clone());
        let stamp = Stamp {
            fetched_at_ms: at_ms,
            digest,
        };
        shared.publish(value, stamp).unwrap();
        shared
            .entries
            .update(|s| {
                s.fetch_succeeded(at_ms, &src.timing());
                true
            })
            .unwrap();
    }

    fn doc(revoked: &str, signed_out: &str) -> String {
        format!(
            r#"{{"version":1,"generated_at":1,"max_token_lifetime_seconds":86400,"revoked_jti":{{{revoked}}},"signed_out":{{{signed_out}}}}}"#
        )
    }

    fn decide(
        vm: &mut VmState<FakeSharedData>,
        token: &str,
        now_ms: u64,
        context: u32,
    ) -> Decision {
        let headers = RequestHeaders::new(vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/x".into()),
            ("authorization".into(), format!("Bearer {token}")),
        ]);
        authorize(
            vm,
            headers,
            || now_ms,
            Attempt::first(context),
            &NoHostCrypto,
        )
    }

    fn status(d: &Decision) -> Option<u32> {
        match &d.action {
            Action::Reply { status, .. } => Some(*status),
            Action::Continue { .. } => Some(200),
            Action::Wait { .. } => None,
        }
    }

    #[test]
    fn requests_wait_for_the_first_document_then_the_list_applies() {
        let (mut vm, store, now_ms) = vm("deny");
        let now = now_ms / 1000;
        let t = token("u1", "s1", now - 100);
        let first = decide(&mut vm, &t, now_ms, 1);
        assert_eq!(
            first.action,
            Action::Wait {
                tick: Some(Tick::BUSY)
            }
        );
        assert!(vm.due_waiters(now_ms).is_empty());
        publish(&store, &vm, &doc(r#""s1":99999999999"#, ""), now_ms);
        vm.sync_sources();
        // The document arrived: the waiter is re-run, and its session is revoked.
        let due = vm.due_waiters(now_ms);
        assert_eq!(due.iter().map(|w| w.context_id).collect::<Vec<_>>(), [1]);
        let d = decide(&mut vm, &t, now_ms, 2);
        assert_eq!(status(&d), Some(401));
        assert!(d.counters.contains(&(Counter::DeniedRevoked, Some(0))));
        assert!(d
            .properties
            .contains(&(property::REASON, Text::Static("revoked"))));
        assert!(d
            .refused
            .unwrap()
            .describe(&vm.config)
            .contains("detail=revoked_origin_jti"));
        let Action::Reply { headers, .. } = &d.action else {
            panic!("not a reply");
        };
        assert!(headers
            .iter()
            .any(|(n, v)| *n == "www-authenticate"
                && v.contains("The access token has been revoked")));
    }

    #[test]
    fn a_cached_token_is_refused_once_its_user_signed_out() {
        let (mut vm, store, now_ms) = vm("deny");
        let now = now_ms / 1000;
        publish(&store, &vm, &doc("", ""), now_ms);
        vm.sync_sources();
        let old = token("alice", "s1", now - 100);
        assert_eq!(status(&decide(&mut vm, &old, now_ms, 1)), Some(200));
        let hit = decide(&mut vm, &old, now_ms, 2);
        assert!(hit.counters.contains(&(Counter::CacheHit, None)));
        assert_eq!(status(&hit), Some(200));
        // Signed out at now - 50: the cached token is refused, a sign-in at that instant passes.
        let signed_out = format!(r#""alice":{}"#, now - 50);
        publish(&store, &vm, &doc("", &signed_out), now_ms + 10);
        vm.sync_sources();
        let d = decide(&mut vm, &old, now_ms + 20, 3);
        assert!(d.counters.contains(&(Counter::CacheHit, None)));
        assert_eq!(status(&d), Some(401));
        let fresh = token("alice", "s2", now - 50);
        assert_eq!(status(&decide(&mut vm, &fresh, now_ms + 20, 4)), Some(200));
    }

    #[test]
    fn a_malformed_publication_keeps_the_list_in_force() {
        let (mut vm, store, now_ms) = vm("deny");
        let now = now_ms / 1000;
        publish(&store, &vm, &doc(r#""s1":99999999999"#, ""), now_ms);
        vm.sync_sources();
        // Not a list of this format (a truncated one, or another module's document).
        publish_value(&store, &vm, br#"{"version":1,"#, 1, now_ms + 10);
        vm.sync_sources();
        let t = token("u1", "s1", now - 100);
        assert_eq!(status(&decide(&mut vm, &t, now_ms + 20, 1)), Some(401));
    }

    #[test]
    fn past_the_stale_bound_deny_answers_503_and_allow_skips_the_check() {
        for (mode, expected) in [("deny", 503), ("allow", 200)] {
            let (mut vm, store, now_ms) = vm(mode);
            let now = now_ms / 1000;
            publish(&store, &vm, &doc(r#""s1":99999999999"#, ""), now_ms);
            vm.sync_sources();
            // Every refresh fails from then on.
            let src = vm.sources[0].shared.clone();
            let mut failed = FetchSchedule::default();
            src.entries
                .update(|s| {
                    s.fetch_failed(now_ms + 10_000, 0);
                    failed = *s;
                    true
                })
                .unwrap();
            let t = token("u1", "s1", now - 100);
            // Within refresh (10 s) + max_stale (20 s): the last list still refuses.
            vm.sync_sources();
            assert_eq!(status(&decide(&mut vm, &t, now_ms + 29_000, 1)), Some(401));
            vm.sync_sources();
            let d = decide(&mut vm, &t, now_ms + 31_000, 2);
            assert_eq!(status(&d), Some(expected), "{mode}");
            if mode == "deny" {
                assert!(d.counters.contains(&(Counter::Unavailable, Some(0))));
                let Action::Reply { headers, .. } = &d.action else {
                    panic!("not a reply");
                };
                assert!(headers.iter().any(|(n, _)| *n == "retry-after"));
            }
            assert_eq!(failed.failures, 1);
        }
    }
}
