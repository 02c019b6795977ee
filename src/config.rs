//! Configuration: the JSON users write (wire structs, unknown keys refused), validated once
//! into [`Config`], the only form the rest of the filter sees.
//!
//! Every error names the JSON path of the key at fault (`user_pools[0].user_pool_id`), so the
//! one log line Envoy shows when the filter refuses to start is enough to fix it.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Deserializer};

use crate::cognito::{jwks_uri_for_issuer, JwksLocation, PoolId, TokenUse};
use crate::decision::DECISION_HEADER;
use crate::error::ConfigError;
use crate::json_path;
use crate::request::folded_header_name;
use crate::request::header_name;
use crate::revocation::{RevocationSource, WireRevocationSource};
use crate::rules::{RouteRule, RuleAction, WireRule};

/// Validated configuration. Built by [`Config::parse`]; never constructed half-valid.
#[derive(Debug, Clone)]
pub struct Config {
    pub pools: Vec<Pool>,
    pub token_sources: Vec<TokenSource>,
    /// `false`: the token is removed from where it was found before the request goes upstream.
    pub forward_token: bool,
    pub rules: Vec<RouteRule>,
    /// Claim → header, in a stable (sorted by claim) order.
    pub claims_to_headers: Vec<ClaimHeader>,
    /// Every claim a claim header or a rule's `require.claims` names (sorted, once each): the
    /// payload members a token keeps whole (`claims::ClaimValue`); the others it reads only
    /// as far as the checks need.
    pub named_claims: Vec<String>,
    pub payload_header: Option<String>,
    /// Every header the filter sets for the upstream (claim headers, the payload header, the
    /// decision header), folded (`identity::folded_header_name`): client copies in any
    /// spelling are removed from every request.
    pub protected_headers: Vec<String>,
    pub realm: String,
    pub mode: Mode,
    pub cors_preflight: CorsPreflight,
    pub cors_allow_origins: Vec<String>,
    pub clock_skew_seconds: u64,
    pub max_token_bytes: usize,
    pub jwks_timeout_ms: u64,
    pub jwks_refresh_seconds: u64,
    pub jwks_min_refetch_seconds: u64,
    pub jwks_max_stale_seconds: u64,
    pub max_jwks_bytes: usize,
    pub token_cache_size: usize,
    pub signature_backend: SignatureBackendChoice,
    /// Distinct revocation sources; pools name theirs by index (equal blocks are one source:
    /// one fetch and one list).
    pub revocation_sources: Vec<RevocationSource>,
    /// The filter-state properties published per request (`cognito_authorizer.<name>`);
    /// each one is a host call. Default: all of them.
    pub filter_state: Vec<&'static str>,
}

/// Who checks signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureBackendChoice {
    /// The host's crypto (Envoy's `verify_signature`) for the algorithms it supports, when it
    /// passes a known-answer self-test at start; the module's own verifiers for the rest.
    Auto,
    /// The module's own verifiers for everything.
    Wasm,
}

/// One trusted issuer (a Cognito user pool, or any OIDC issuer given explicitly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Used in metric names and filter state; defaults to the pool id.
    pub name: String,
    pub user_pool_id: String,
    /// Exact `iss` value of its tokens.
    pub issuer: String,
    pub jwks_cluster: String,
    pub jwks_uri: String,
    pub jwks: JwksLocation,
    /// Empty: any app client of the pool (API Gateway REST behaviour; warned about at start).
    pub client_ids: Vec<String>,
    /// `None`: not a Cognito pool, `token_use` is not checked.
    pub token_use: Option<AllowedTokenUse>,
    /// Index of the pool's revocation source in `Config::revocation_sources`.
    pub revocations: Option<usize>,
}

/// Which Cognito token kinds a pool accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedTokenUse {
    pub id: bool,
    pub access: bool,
}

impl AllowedTokenUse {
    pub fn allows(self, token_use: TokenUse) -> bool {
        match token_use {
            TokenUse::Id => self.id,
            TokenUse::Access => self.access,
        }
    }
}

/// A place a token may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `Bearer <jwt>` (scheme in any case) or the raw `<jwt>`.
    Header {
        name: String,
    },
    /// Exactly `<prefix><jwt>`.
    HeaderWithPrefix {
        name: String,
        prefix: String,
    },
    Query {
        name: String,
    },
    Cookie {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    pub claim: String,
    pub header: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refused requests are answered locally.
    Enforce,
    /// Decide and count, but let every request through with the decision in a header.
    Report,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CorsPreflight {
    /// A preflight continues to the upstream (whose CORS layer answers it) without a token:
    /// browsers never send credentials on one, so every token source is removed from it.
    Bypass,
    /// A preflight on a route that needs a token is answered by the filter itself (204 with
    /// the CORS headers of `cors_allow_origins`) and never reaches the upstream.
    Answer,
    /// A preflight needs a token like any request.
    Authenticate,
}

// ---------------------------------------------------------------------------------------
// Wire format: exactly the JSON keys of README "Configuration reference". Unknown keys are refused.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireConfig {
    user_pools: Vec<WirePool>,
    #[serde(default)]
    token_sources: Option<Vec<WireTokenSource>>,
    #[serde(default = "default_true")]
    forward_token: bool,
    #[serde(default)]
    rules: Vec<WireRule>,
    #[serde(default)]
    claims_to_headers: BTreeMap<String, String>,
    #[serde(default)]
    payload_header: Option<String>,
    #[serde(default = "default_realm")]
    realm: String,
    #[serde(default = "default_mode")]
    mode: Mode,
    #[serde(default = "default_cors_preflight")]
    cors_preflight: CorsPreflight,
    #[serde(default)]
    cors_allow_origins: Vec<String>,
    #[serde(default = "default_clock_skew")]
    clock_skew_seconds: u64,
    #[serde(default = "default_max_token_bytes")]
    max_token_bytes: u64,
    #[serde(default = "default_jwks_timeout_ms")]
    jwks_timeout_ms: u64,
    #[serde(default = "default_jwks_refresh")]
    jwks_refresh_seconds: u64,
    #[serde(default = "default_jwks_min_refetch")]
    jwks_min_refetch_seconds: u64,
    #[serde(default = "default_jwks_max_stale")]
    jwks_max_stale_seconds: u64,
    #[serde(default = "default_max_jwks_bytes")]
    max_jwks_bytes: u64,
    #[serde(default = "default_token_cache_size")]
    token_cache_size: u64,
    #[serde(default = "default_signature_backend")]
    signature_backend: SignatureBackendChoice,
    #[serde(default)]
    filter_state: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePool {
    #[serde(default)]
    name: Option<String>,
    user_pool_id: String,
    #[serde(default)]
    client_ids: Option<Vec<String>>,
    /// Absent → both kinds; `null` → not a Cognito pool; a list → those kinds.
    #[serde(default = "absent", deserialize_with = "present")]
    token_use: Presence<Option<Vec<String>>>,
    jwks_cluster: String,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    revocations: Option<WireRevocationSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireTokenSource {
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    cookie: Option<String>,
}

/// Tells an absent key from an explicit `null`.
#[derive(Debug)]
enum Presence<T> {
    Absent,
    Present(T),
}

fn absent<T>() -> Presence<T> {
    Presence::Absent
}

fn present<'de, D, T>(deserializer: D) -> Result<Presence<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Presence::Present)
}

fn default_true() -> bool {
    true
}
fn default_realm() -> String {
    "api".to_string()
}
fn default_mode() -> Mode {
    Mode::Enforce
}
fn default_cors_preflight() -> CorsPreflight {
    CorsPreflight::Bypass
}
fn default_clock_skew() -> u64 {
    60
}
fn default_max_token_bytes() -> u64 {
    8192
}
fn default_jwks_timeout_ms() -> u64 {
    5000
}
fn default_jwks_refresh() -> u64 {
    3600
}
fn default_jwks_min_refetch() -> u64 {
    10
}
fn default_jwks_max_stale() -> u64 {
    86400
}
fn default_max_jwks_bytes() -> u64 {
    65536
}
fn default_token_cache_size() -> u64 {
    1024
}
/// The filter-state properties, by the name after `cognito_authorizer.`.
pub const FILTER_STATE: [&str; 5] = ["decision", "reason", "pool", "sub", "client_id"];

fn default_signature_backend() -> SignatureBackendChoice {
    SignatureBackendChoice::Auto
}

/// Headers the filter must never set or strip: routing, framing, the credentials themselves.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "cookie",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "origin",
    "x-cognito-authorizer-decision",
];

/// What [`Config::parse`] returns besides the config: things worth one warning at start.
pub type Warnings = Vec<String>;

impl Config {
    /// Parses and validates the plugin configuration (README "Configuration reference").
    pub fn parse(json: &[u8]) -> Result<(Config, Warnings), ConfigError> {
        let wire: WireConfig = json_path::from_slice(json, "")?;
        Config::validate(wire)
    }

    fn validate(wire: WireConfig) -> Result<(Config, Warnings), ConfigError> {
        let mut warnings = Vec::new();
        if wire.user_pools.is_empty() {
            return Err(ConfigError::new(
                "user_pools",
                "must list at least one user pool",
            ));
        }
        let mut pools = Vec::with_capacity(wire.user_pools.len());
        let mut revocation_sources: Vec<RevocationSource> = Vec::new();
        for (i, mut wp) in wire.user_pools.into_iter().enumerate() {
            let wire_revocations = wp.revocations.take();
            let mut pool = validate_pool(wp, &format!("user_pools[{i}]"))?;
            if let Some(w) = wire_revocations {
                let source =
                    RevocationSource::validate(w, &format!("user_pools[{i}].revocations"))?;
                pool.revocations =
                    Some(match revocation_sources.iter().position(|s| *s == source) {
                        Some(shared) => shared,
                        None => {
                            revocation_sources.push(source);
                            revocation_sources.len() - 1
                        }
                    });
            }
            if pools.iter().any(|p: &Pool| p.name == pool.name) {
                return Err(ConfigError::new(
                    format!("user_pools[{i}].name"),
                    format!("pool name {:?} is used twice", pool.name),
                ));
            }
            if pools.iter().any(|p: &Pool| p.issuer == pool.issuer) {
                return Err(ConfigError::new(
                    format!("user_pools[{i}].issuer"),
                    format!(
                        "issuer {:?} is configured twice: tokens are matched to pools by issuer",
                        pool.issuer
                    ),
                ));
            }
            if pool.client_ids.is_empty() {
                warnings.push(format!(
                    "user pool {:?}: no client_ids, tokens of any app client of the pool are accepted",
                    pool.name
                ));
            }
            pools.push(pool);
        }

        let token_sources = match wire.token_sources {
            None => vec![TokenSource::Header {
                name: "authorization".to_string(),
            }],
            Some(list) => {
                if list.is_empty() {
                    return Err(ConfigError::new(
                        "token_sources",
                        "must list at least one source (omit the key for the default)",
                    ));
                }
                list.into_iter()
                    .enumerate()
                    .map(|(i, s)| validate_source(s, &format!("token_sources[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?
            }
        };

        let rules = wire
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| RouteRule::compile(r, &format!("rules[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;

        let source_headers: HashSet<String> = token_sources
            .iter()
            .filter_map(|s| match s {
                TokenSource::Header { name } | TokenSource::HeaderWithPrefix { name, .. } => {
                    Some(folded_header_name(name))
                }
                _ => None,
            })
            .collect();
        // Folded names: `x_sub` and `x-sub` are one header to many servers.
        let mut identity_headers: HashSet<String> = HashSet::new();
        identity_headers.insert(folded_header_name(DECISION_HEADER));
        let mut claims_to_headers = Vec::with_capacity(wire.claims_to_headers.len());
        for (claim, header) in wire.claims_to_headers {
            let path = format!("claims_to_headers.{claim}");
            if claim.is_empty() {
                return Err(ConfigError::new(path, "claim name is empty"));
            }
            let header = identity_header(&header, &path, &source_headers)?;
            if !identity_headers.insert(folded_header_name(&header)) {
                return Err(ConfigError::new(
                    path,
                    format!("header {header:?} is the target of two claims (or the decision header), in some spelling"),
                ));
            }
            claims_to_headers.push(ClaimHeader { claim, header });
        }
        let payload_header = match wire.payload_header {
            None => None,
            Some(h) => {
                let header = identity_header(&h, "payload_header", &source_headers)?;
                if !identity_headers.insert(folded_header_name(&header)) {
                    return Err(ConfigError::new(
                        "payload_header",
                        format!("header {header:?} is also a claim header (or the decision header), in some spelling"),
                    ));
                }
                Some(header)
            }
        };

        if wire.realm.is_empty()
            || !wire
                .realm
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return Err(ConfigError::new(
                "realm",
                "must be non-empty printable ASCII without '\"' or '\\' (it is quoted in www-authenticate)",
            ));
        }
        for (i, origin) in wire.cors_allow_origins.iter().enumerate() {
            let ok = origin == "*"
                || ((origin.starts_with("https://") || origin.starts_with("http://"))
                    && origin.bytes().all(|b| b.is_ascii_graphic())
                    && !origin.ends_with('/'));
            if !ok {
                return Err(ConfigError::new(
                    format!("cors_allow_origins[{i}]"),
                    format!("{origin:?} is not an origin like https://app.example.com (no path, no trailing slash) or \"*\""),
                ));
            }
        }

        let clock_skew_seconds = bounded(wire.clock_skew_seconds, 0, 3600, "clock_skew_seconds")?;
        let max_token_bytes = bounded(wire.max_token_bytes, 256, 1 << 20, "max_token_bytes")?;
        let jwks_timeout_ms = bounded(wire.jwks_timeout_ms, 100, 60_000, "jwks_timeout_ms")?;
        let jwks_refresh_seconds = bounded(
            wire.jwks_refresh_seconds,
            1,
            7 * 86400,
            "jwks_refresh_seconds",
        )?;
        let jwks_min_refetch_seconds = bounded(
            wire.jwks_min_refetch_seconds,
            0,
            86400,
            "jwks_min_refetch_seconds",
        )?;
        let jwks_max_stale_seconds = bounded(
            wire.jwks_max_stale_seconds,
            0,
            30 * 86400,
            "jwks_max_stale_seconds",
        )?;
        let max_jwks_bytes = bounded(wire.max_jwks_bytes, 1024, 16 << 20, "max_jwks_bytes")?;
        let token_cache_size = bounded(wire.token_cache_size, 0, 1 << 20, "token_cache_size")?;

        let filter_state = match wire.filter_state {
            None => FILTER_STATE.to_vec(),
            Some(names) => {
                let mut chosen = Vec::with_capacity(names.len());
                for (i, name) in names.iter().enumerate() {
                    let Some(known) = FILTER_STATE.iter().find(|k| **k == name.as_str()) else {
                        return Err(ConfigError::new(
                            format!("filter_state[{i}]"),
                            format!("{name:?} is not one of {FILTER_STATE:?}"),
                        ));
                    };
                    if !chosen.contains(known) {
                        chosen.push(*known);
                    }
                }
                chosen
            }
        };

        let mut named_claims: Vec<String> = Vec::new();
        for claim in claims_to_headers.iter().map(|m| &m.claim) {
            named_claims.push(claim.clone());
        }
        for rule in &rules {
            if let RuleAction::Require(requirement) = &rule.action {
                for (claim, _) in &requirement.claims {
                    named_claims.push(claim.clone());
                }
            }
        }
        named_claims.sort();
        named_claims.dedup();

        let config = Config {
            pools,
            token_sources,
            forward_token: wire.forward_token,
            rules,
            claims_to_headers,
            named_claims,
            payload_header,
            protected_headers: {
                let mut protected: Vec<String> = identity_headers.into_iter().collect();
                protected.sort();
                protected
            },
            realm: wire.realm,
            mode: wire.mode,
            cors_preflight: wire.cors_preflight,
            cors_allow_origins: wire.cors_allow_origins,
            clock_skew_seconds,
            max_token_bytes: max_token_bytes as usize,
            jwks_timeout_ms,
            jwks_refresh_seconds,
            jwks_min_refetch_seconds,
            jwks_max_stale_seconds,
            max_jwks_bytes: max_jwks_bytes as usize,
            token_cache_size: token_cache_size as usize,
            signature_backend: wire.signature_backend,
            revocation_sources,
            filter_state,
        };
        Ok((config, warnings))
    }

    /// The pool whose issuer is exactly `iss`.
    pub fn pool_for_issuer(&self, iss: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.issuer == iss)
    }

    /// The pools and where their keys and revocations come from, for the start-up log.
    pub fn summary(&self) -> String {
        let pools: Vec<String> = self
            .pools
            .iter()
            .map(|p| {
                let revocations = p
                    .revocations
                    .and_then(|i| self.revocation_sources.get(i).map(|src| (i, src)))
                    .map(|(i, src)| {
                        format!(
                            ", revocations #{i} via cluster {} ({:?} when unavailable)",
                            src.cluster, src.on_unavailable
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "{} (iss {}, jwks via cluster {}{revocations})",
                    p.name, p.issuer, p.jwks_cluster
                )
            })
            .collect();
        format!("{} pool(s): {}", self.pools.len(), pools.join("; "))
    }
}

fn bounded(value: u64, min: u64, max: u64, key: &str) -> Result<u64, ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::new(
            key,
            format!("{value} is out of range ({min} to {max})"),
        ));
    }
    Ok(value)
}

fn validate_pool(wp: WirePool, path: &str) -> Result<Pool, ConfigError> {
    let pool_id = PoolId::parse(&wp.user_pool_id)
        .map_err(|e| ConfigError::new(format!("{path}.user_pool_id"), e))?;
    let name = wp.name.unwrap_or_else(|| wp.user_pool_id.clone());
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ConfigError::new(
            format!("{path}.name"),
            "must be 1 to 128 letters, digits, '_' or '-' (it is part of metric names)",
        ));
    }
    if wp.jwks_cluster.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.jwks_cluster"),
            "must name the Envoy cluster that reaches the JWKS",
        ));
    }
    let issuer = match wp.issuer {
        Some(iss) => {
            if !(iss.starts_with("https://") || iss.starts_with("http://"))
                || !iss.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(ConfigError::new(
                    format!("{path}.issuer"),
                    format!("{iss:?} is not an https:// URL"),
                ));
            }
            iss
        }
        None => pool_id.issuer(),
    };
    let jwks_uri = wp.jwks_uri.unwrap_or_else(|| jwks_uri_for_issuer(&issuer));
    let jwks = JwksLocation::parse(&jwks_uri)
        .map_err(|e| ConfigError::new(format!("{path}.jwks_uri"), e))?;

    let client_ids = wp.client_ids.unwrap_or_default();
    for (i, c) in client_ids.iter().enumerate() {
        if c.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.client_ids[{i}]"),
                "client id is empty",
            ));
        }
    }
    let token_use = match wp.token_use {
        Presence::Absent => Some(AllowedTokenUse {
            id: true,
            access: true,
        }),
        Presence::Present(None) => None,
        Presence::Present(Some(list)) => {
            if list.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.token_use"),
                    "must list \"id\", \"access\" or both (or be null for a non-Cognito issuer)",
                ));
            }
            let mut allowed = AllowedTokenUse {
                id: false,
                access: false,
            };
            for (i, u) in list.iter().enumerate() {
                match TokenUse::parse(u) {
                    Some(TokenUse::Id) => allowed.id = true,
                    Some(TokenUse::Access) => allowed.access = true,
                    None => {
                        return Err(ConfigError::new(
                            format!("{path}.token_use[{i}]"),
                            format!("{u:?} is neither \"id\" nor \"access\""),
                        ))
                    }
                }
            }
            Some(allowed)
        }
    };
    Ok(Pool {
        name,
        user_pool_id: wp.user_pool_id,
        issuer,
        jwks_cluster: wp.jwks_cluster,
        jwks_uri,
        jwks,
        client_ids,
        token_use,
        revocations: None,
    })
}

fn validate_source(s: WireTokenSource, path: &str) -> Result<TokenSource, ConfigError> {
    match (s.header, s.query, s.cookie, s.prefix) {
        (Some(h), None, None, None) => Ok(TokenSource::Header {
            name: header_name(&h, &format!("{path}.header"))?,
        }),
        (Some(h), None, None, Some(prefix)) => {
            if prefix.is_empty() || !prefix.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return Err(ConfigError::new(
                    format!("{path}.prefix"),
                    "must be non-empty printable ASCII",
                ));
            }
            Ok(TokenSource::HeaderWithPrefix {
                name: header_name(&h, &format!("{path}.header"))?,
                prefix,
            })
        }
        (None, Some(q), None, None) => {
            if q.is_empty()
                || !q
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"&=#?%".contains(&b))
            {
                return Err(ConfigError::new(
                    format!("{path}.query"),
                    "must be a plain query parameter name",
                ));
            }
            Ok(TokenSource::Query { name: q })
        }
        (None, None, Some(c), None) => {
            if c.is_empty()
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b";=,\"".contains(&b))
            {
                return Err(ConfigError::new(
                    format!("{path}.cookie"),
                    "must be a plain cookie name",
                ));
            }
            Ok(TokenSource::Cookie { name: c })
        }
        (None, _, _, Some(_)) => Err(ConfigError::new(
            format!("{path}.prefix"),
            "only a header source takes a prefix",
        )),
        _ => Err(ConfigError::new(
            path,
            "must have exactly one of \"header\", \"query\", \"cookie\"",
        )),
    }
}

/// A header the filter fills with identity: never a reserved or credential-carrying header,
/// because client copies of it are stripped from every request.
fn identity_header(
    name: &str,
    path: &str,
    source_headers: &HashSet<String>,
) -> Result<String, ConfigError> {
    let header = header_name(name, path)?;
    let folded = folded_header_name(&header);
    if RESERVED_HEADERS.contains(&folded.as_str()) || source_headers.contains(&folded) {
        return Err(ConfigError::new(
            path,
            format!(
                "{header:?} is reserved (routing, framing or credentials) and cannot carry claims"
            ),
        ));
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, ConfigError> {
        Config::parse(json.as_bytes()).map(|(c, _)| c)
    }

    const MINIMAL: &str =
        r#"{"user_pools":[{"user_pool_id":"us-east-1_AbCdEf123","jwks_cluster":"cognito"}]}"#;

    #[test]
    fn minimal_config_gets_spec_defaults() {
        let (c, warnings) = Config::parse(MINIMAL.as_bytes()).unwrap();
        let p = &c.pools[0];
        assert_eq!(p.name, "us-east-1_AbCdEf123");
        assert_eq!(
            p.issuer,
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbCdEf123"
        );
        assert_eq!(p.jwks.authority, "cognito-idp.us-east-1.amazonaws.com");
        assert_eq!(p.jwks.path, "/us-east-1_AbCdEf123/.well-known/jwks.json");
        assert_eq!(
            p.token_use,
            Some(AllowedTokenUse {
                id: true,
                access: true
            })
        );
        assert_eq!(
            c.token_sources,
            vec![TokenSource::Header {
                name: "authorization".into()
            }]
        );
        assert!(c.forward_token);
        assert_eq!(c.realm, "api");
        assert_eq!(c.mode, Mode::Enforce);
        assert_eq!(c.cors_preflight, CorsPreflight::Bypass);
        assert_eq!(c.clock_skew_seconds, 60);
        assert_eq!(c.max_token_bytes, 8192);
        assert_eq!(c.jwks_timeout_ms, 5000);
        assert_eq!(c.jwks_refresh_seconds, 3600);
        assert_eq!(c.jwks_min_refetch_seconds, 10);
        assert_eq!(c.jwks_max_stale_seconds, 86400);
        assert_eq!(c.max_jwks_bytes, 65536);
        assert_eq!(c.token_cache_size, 1024);
        assert_eq!(c.signature_backend, SignatureBackendChoice::Auto);
        assert_eq!(c.filter_state, FILTER_STATE);
        assert_eq!(warnings.len(), 1, "no client_ids must be warned about");
    }

    #[test]
    fn spec_complete_example_is_accepted() {
        let json = r#"{
          "user_pools": [{
            "name": "main", "user_pool_id": "us-east-1_AbCdEf123",
            "client_ids": ["1example23456789"], "token_use": ["id", "access"],
            "jwks_cluster": "cognito_jwks",
            "issuer": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbCdEf123",
            "jwks_uri": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbCdEf123/.well-known/jwks.json"
          }],
          "token_sources": [{ "header": "authorization" }],
          "forward_token": true, "rules": [], "claims_to_headers": {}, "payload_header": null,
          "realm": "api", "mode": "enforce", "cors_preflight": "bypass", "cors_allow_origins": [],
          "clock_skew_seconds": 60, "max_token_bytes": 8192, "jwks_timeout_ms": 5000,
          "jwks_refresh_seconds": 3600, "jwks_min_refetch_seconds": 10,
          "jwks_max_stale_seconds": 86400, "max_jwks_bytes": 65536, "token_cache_size": 1024
        }"#;
        let (c, warnings) = Config::parse(json.as_bytes()).unwrap();
        assert_eq!(c.pools[0].name, "main");
        assert_eq!(c.pools[0].client_ids, vec!["1example23456789"]);
        assert!(warnings.is_empty());
    }

    #[test]
    fn null_token_use_means_generic_oidc_issuer() {
        let c = parse(
            r#"{"user_pools":[{"user_pool_id":"us-east-1_X","jwks_cluster":"c","token_use":null,
                "issuer":"https://login.example.com","jwks_uri":"https://login.example.com/keys"}]}"#,
        )
        .unwrap();
        assert_eq!(c.pools[0].token_use, None);
        assert_eq!(c.pools[0].jwks.path, "/keys");
    }

    fn error_of(json: &str) -> ConfigError {
        match parse(json) {
            Ok(_) => panic!("config should be refused: {json}"),
            Err(e) => e,
        }
    }

    #[test]
    fn unknown_key_is_refused_naming_it() {
        let e = error_of(
            r#"{"user_pools":[{"user_pool_id":"us-east-1_X","jwks_cluster":"c"}],"bogus":1}"#,
        );
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = error_of(
            r#"{"user_pools":[{"user_pool_id":"us-east-1_X","jwks_cluster":"c","colour":1}]}"#,
        );
        assert!(e.path.starts_with("user_pools[0]"), "{e}");
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn bad_pool_id_is_refused_with_its_json_path() {
        let e = error_of(r#"{"user_pools":[{"user_pool_id":"nounderscore","jwks_cluster":"c"}]}"#);
        assert_eq!(e.path, "user_pools[0].user_pool_id");
    }

    #[test]
    fn wrong_types_are_refused_with_their_json_path() {
        let e = error_of(
            r#"{"user_pools":[{"user_pool_id":"us-east-1_X","jwks_cluster":"c"}],"clock_skew_seconds":"60"}"#,
        );
        assert_eq!(e.path, "clock_skew_seconds");
        let e = error_of(
            r#"{"user_pools":[{"user_pool_id":"us-east-1_X","jwks_cluster":"c","client_ids":"abc"}]}"#,
        );
        assert_eq!(e.path, "user_pools[0].client_ids");
        let e = error_of(
            r#"{"user_pools":[{"user_pool_id":"us-east-1_X","jwks_cluster":"c"}],"mode":"audit"}"#,
        );
        assert_eq!(e.path, "mode");
    }

    #[test]
    fn missing_or_empty_user_pools_are_refused() {
        assert_eq!(error_of(r#"{"user_pools":[]}"#).path, "user_pools");
        assert!(error_of(r#"{}"#).to_string().contains("user_pools"));
        assert!(
            error_of(r#"{"user_pools":[{"user_pool_id":"us-east-1_X"}]}"#)
                .to_string()
                .contains("jwks_cluster")
        );
        assert!(parse("not json").is_err());
        assert!(parse("[]").is_err());
    }

    #[test]
    fn duplicate_pools_are_refused() {
        let e = error_of(
            r#"{"user_pools":[{"user_pool_id":"us-east-1_X","jwks_cluster":"c"},
                              {"user_pool_id":"us-east-1_X","jwks_cluster":"c"}]}"#,
        );
        assert_eq!(e.path, "user_pools[1].name");
    }

    #[test]
    fn token_use_values_are_checked() {
        let e = error_of(
            r#"{"user_pools":[{"user_pool_id":"us-east-1_X","jwks_cluster":"c","token_use":["refresh"]}]}"#,
        );
        assert_eq!(e.path, "user_pools[0].token_use[0]");
        let e = error_of(
            r#"{"user_pools":[{"user_pool_id":"us-east-1_X","jwks_cluster":"c","token_use":[]}]}"#,
        );
        assert_eq!(e.path, "user_pools[0].token_use");
    }

    #[test]
    fn token_sources_need_exactly_one_kind() {
        let base = |sources: &str| {
            format!(
                r#"{{"user_pools":[{{"user_pool_id":"us-east-1_X","jwks_cluster":"c"}}],"token_sources":{sources}}}"#
            )
        };
        let c = parse(&base(
            r#"[{"header":"X-Token","prefix":"Token "},{"query":"access_token"},{"cookie":"id"}]"#,
        ))
        .unwrap();
        assert_eq!(
            c.token_sources[0],
            TokenSource::HeaderWithPrefix {
                name: "x-token".into(),
                prefix: "Token ".into()
            }
        );
        assert_eq!(
            error_of(&base(r#"[{"header":"a","query":"b"}]"#)).path,
            "token_sources[0]"
        );
        assert_eq!(
            error_of(&base(r#"[{"query":"a","prefix":"b"}]"#)).path,
            "token_sources[0].prefix"
        );
        assert_eq!(error_of(&base(r#"[]"#)).path, "token_sources");
        assert_eq!(
            error_of(&base(r#"[{"header":"bad header"}]"#)).path,
            "token_sources[0].header"
        );
    }

    #[test]
    fn claim_headers_cannot_target_reserved_or_token_headers() {
        let base = |map: &str| {
            format!(
                r#"{{"user_pools":[{{"user_pool_id":"us-east-1_X","jwks_cluster":"c"}}],"claims_to_headers":{map}}}"#
            )
        };
        assert!(parse(&base(r#"{"sub":"X-Cognito-Sub"}"#)).is_ok());
        for reserved in ["authorization", ":path", "host", "cookie", "content-length"] {
            let e = error_of(&base(&format!(r#"{{"sub":"{reserved}"}}"#)));
            assert_eq!(e.path, "claims_to_headers.sub", "{reserved}");
        }
        let e = error_of(&base(r#"{"sub":"x-id","username":"X-ID"}"#));
        assert!(e.problem.contains("two claims"), "{e}");
    }

    #[test]
    fn numeric_bounds_are_enforced() {
        let e = error_of(
            r#"{"user_pools":[{"user_pool_id":"us-east-1_X","jwks_cluster":"c"}],"jwks_timeout_ms":0}"#,
        );
        assert_eq!(e.path, "jwks_timeout_ms");
        let e = error_of(
            r#"{"user_pools":[{"user_pool_id":"us-east-1_X","jwks_cluster":"c"}],"clock_skew_seconds":-1}"#,
        );
        assert_eq!(e.path, "clock_skew_seconds");
    }

    #[test]
    fn realm_cannot_break_out_of_its_quotes() {
        let e = error_of(
            r#"{"user_pools":[{"user_pool_id":"us-east-1_X","jwks_cluster":"c"}],"realm":"a\", evil=\"x"}"#,
        );
        assert_eq!(e.path, "realm");
    }

    #[test]
    fn pools_with_equal_revocation_sources_share_one() {
        let c = parse(
            r#"{"user_pools":[
              {"user_pool_id":"us-east-1_A","jwks_cluster":"c","revocations":{"cluster":"r","uri":"https://h/doc"}},
              {"user_pool_id":"us-east-1_B","jwks_cluster":"c","revocations":{"uri":"https://h/doc","cluster":"r","refresh_seconds":30}},
              {"user_pool_id":"us-east-1_C","jwks_cluster":"c","revocations":{"cluster":"r","uri":"https://h/other"}},
              {"user_pool_id":"us-east-1_D","jwks_cluster":"c"}]}"#,
        )
        .unwrap();
        let used: Vec<Option<usize>> = c.pools.iter().map(|p| p.revocations).collect();
        assert_eq!(used, [Some(0), Some(0), Some(1), None]);
        assert_eq!(c.revocation_sources.len(), 2);
        assert_eq!(c.revocation_sources[1].location.path, "/other");
        assert!(parse(MINIMAL).unwrap().revocation_sources.is_empty());
    }

    #[test]
    fn summary_names_each_pool_its_issuer_cluster_and_revocation_source() {
        let c = parse(
            r#"{"user_pools":[
              {"user_pool_id":"us-east-1_A","jwks_cluster":"c","revocations":{"cluster":"r","uri":"https://h/doc"}},
              {"user_pool_id":"us-east-1_B","name":"b","jwks_cluster":"d"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.summary(),
            "2 pool(s): us-east-1_A (iss https://cognito-idp.us-east-1.amazonaws.com/us-east-1_A, \
             jwks via cluster c, revocations #0 via cluster r (Deny when unavailable)); \
             b (iss https://cognito-idp.us-east-1.amazonaws.com/us-east-1_B, jwks via cluster d)"
        );
    }

    #[test]
    fn revocation_errors_name_the_pool_and_key() {
        let e = parse(
            r#"{"user_pools":[{"user_pool_id":"us-east-1_A","jwks_cluster":"c"},
              {"user_pool_id":"us-east-1_B","jwks_cluster":"c","revocations":{"cluster":"r","uri":"https://h/d","refresh_seconds":0}}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.path, "user_pools[1].revocations.refresh_seconds");
        let e = parse(
            r#"{"user_pools":[{"user_pool_id":"us-east-1_A","jwks_cluster":"c","revocations":{"cluster":"r","uri":"https://h/d","on_unavailable":"maybe"}}]}"#,
        )
        .unwrap_err();
        assert!(e.path.starts_with("user_pools[0].revocations"), "{e}");
    }

    // --- the JSON path of a serde error, against a tracking deserializer ---------------------

    /// The path serde_path_to_error names for the same error, adjusted as `json_path` does
    /// for a missing key (the key after its object's path).
    fn tracked_path(json: &[u8]) -> Option<String> {
        let deserializer = &mut serde_json::Deserializer::from_slice(json);
        let e = match serde_path_to_error::deserialize::<_, WireConfig>(deserializer) {
            Ok(_) => return None,
            Err(e) => e,
        };
        let path = e.path().to_string();
        let problem = e.into_inner().to_string();
        Some(
            match problem
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
            {
                Some(key) if path == "." => key.to_string(),
                Some(key) => format!("{path}.{key}"),
                None => path,
            },
        )
    }

    /// Every value of a full configuration replaced by each JSON type, every object given
    /// an unknown key and stripped of each key in turn, compact and pretty-printed: the path
    /// `json_path` finds by scanning is the one a deserializer tracking its path names.
    #[test]
    fn configuration_errors_name_the_path_a_tracking_deserializer_names() {
        let full: serde_json::Value = serde_json::from_str(
            r#"{"user_pools":[{"name":"a","user_pool_id":"us-east-1_X","client_ids":["c1","c2"],
                "token_use":["id","access"],"jwks_cluster":"c","issuer":null,"jwks_uri":null,
                "revocations":{"cluster":"r","uri":"http://r/x.json","refresh_seconds":5,
                "max_stale_seconds":60,"on_unavailable":"deny","max_bytes":1000,"timeout_ms":100}},
               {"user_pool_id":"eu-west-1_Y","jwks_cluster":"d","token_use":null}],
              "token_sources":[{"header":"authorization","prefix":"Bearer "},{"query":"t"},{"cookie":"c"}],
              "forward_token":false,
              "rules":[{"match":{"prefix":"/a","methods":["GET"],"headers":{"x-h":"v"}},
                        "require":{"scopes":["s"],"scopes_all":["t"],"groups":["g"],"groups_all":["h"],
                                   "claims":{"k":["v1","v2"]},"token_use":"access"}},
                       {"match":{"exact":"/health"},"allow":true},
                       {"match":{"path_template":"/u/*/x"},"require":{}}],
              "claims_to_headers":{"sub":"x-sub","email":"x-email"},"payload_header":"x-payload",
              "realm":"api","mode":"report","cors_preflight":"allow","cors_allow_origins":["https://o"],
              "clock_skew_seconds":30,"max_token_bytes":8192,"jwks_timeout_ms":500,
              "jwks_refresh_seconds":600,"jwks_min_refetch_seconds":30,"jwks_max_stale_seconds":3600,
              "max_jwks_bytes":65536,"token_cache_size":100,"signature_backend":"wasm",
              "filter_state":["sub","decision"]}"#,
        )
        .unwrap();
        let replacements: Vec<serde_json::Value> = [
            r#""x""#,
            "1",
            "-1",
            "1.5",
            "true",
            "null",
            "[]",
            "{}",
            r#"["x"]"#,
            r#"[1]"#,
            r#"{"zz":1}"#,
            r#""""#,
            "18446744073709551616",
        ]
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
        let mut variants = Vec::new();
        fn walk(
            v: &serde_json::Value,
            at: &mut Vec<serde_json::Value>,
            out: &mut Vec<Vec<serde_json::Value>>,
        ) {
            out.push(at.clone());
            match v {
                serde_json::Value::Object(m) => {
                    for (k, child) in m {
                        at.push(k.clone().into());
                        walk(child, at, out);
                        at.pop();
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, child) in items.iter().enumerate() {
                        at.push(i.into());
                        walk(child, at, out);
                        at.pop();
                    }
                }
                _ => {}
            }
        }
        let mut places = Vec::new();
        walk(&full, &mut Vec::new(), &mut places);
        fn slot<'a>(
            v: &'a mut serde_json::Value,
            at: &[serde_json::Value],
        ) -> &'a mut serde_json::Value {
            at.iter().fold(v, |v, step| match step {
                serde_json::Value::String(k) => &mut v[k.as_str()],
                n => &mut v[n.as_u64().unwrap() as usize],
            })
        }
        for at in &places {
            for r in &replacements {
                let mut v = full.clone();
                *slot(&mut v, at) = r.clone();
                variants.push(v);
            }
            let mut v = full.clone();
            if let Some(m) = slot(&mut v, at).as_object_mut() {
                m.insert("zz_unknown".into(), 1.into());
                variants.push(v);
                let keys: Vec<String> = slot(&mut full.clone(), at)
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect();
                for k in keys {
                    let mut v = full.clone();
                    slot(&mut v, at).as_object_mut().unwrap().remove(&k);
                    variants.push(v);
                }
            }
        }
        let (mut compared, mut refused, mut mismatches) = (0, 0, Vec::new());
        for v in &variants {
            for text in [
                serde_json::to_vec(v).unwrap(),
                serde_json::to_vec_pretty(v).unwrap(),
            ] {
                let Some(expected) = tracked_path(&text) else {
                    continue;
                };
                let e = json_path::from_slice::<WireConfig>(&text, "").unwrap_err();
                if e.path != expected {
                    mismatches.push(format!("{} != {expected}: {}", e.path, e.problem));
                }
                refused += 1;
            }
            compared += 1;
        }
        assert!(
            mismatches.is_empty(),
            "{} of {refused}:\n{}",
            mismatches.len(),
            mismatches.join("\n")
        );
        assert!(
            refused > 1000,
            "{refused} of {compared} variants refused by serde"
        );
    }
}
