//! Token revocation: the revocation document (a small versioned JSON file that a producer
//! writes from Cognito's `RevokeToken` and global sign-out events), its validated in-memory
//! form [`RevocationList`], the per-request check, and the `revocations` configuration block.
//!
//! Cognito's own APIs refuse revoked and signed-out tokens, but a JWT verifier cannot see the
//! revocation in the token: without this list, those tokens keep working until `exp`.
//!
//! The document (README, "Revocation"):
//!
//! ```json
//! {"version": 1, "generated_at": 1767225600, "max_token_lifetime_seconds": 86400,
//!  "revoked_jti": {"<jti or origin_jti>": <until, epoch seconds>},
//!  "signed_out": {"<sub>": <sign-out instant, epoch seconds>}}
//! ```
//!
//! Loading is all or nothing: an oversized or malformed document is an error and never a
//! partial list, so the caller keeps its previous good list. Entries that can no longer
//! match a token the filter would accept are dropped at load. Identifiers are stored as
//! 64-bit keyed hashes (a random SipHash key per list), not strings: 100,000 entries take a
//! few MiB instead of tens, and a lookup is one hash and one probe per identifier.
//!
//! Nothing here reads a clock: the caller passes `now` (Unix seconds).

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::cognito::JwksLocation;
use crate::error::ConfigError;
use crate::keys::{Availability, KeyTiming};

/// The only document version this filter reads. A new version is a new format: refused,
/// never half-read.
pub const DOCUMENT_VERSION: u64 = 1;

/// Identifiers longer than this are refused (Cognito's are 36-character UUIDs).
pub const MAX_ID_BYTES: usize = 512;

/// `max_token_lifetime_seconds` may not exceed a year (Cognito's id and access tokens live
/// at most one day).
pub const MAX_TOKEN_LIFETIME_SECONDS: u64 = 366 * 86400;

/// What the check needs to know about a verified token, as plain values (claims absent from
/// the token are `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenFacts<'a> {
    pub jti: Option<&'a str>,
    /// Cognito: the refresh token (sign-in session) every access and id token came from.
    pub origin_jti: Option<&'a str>,
    pub sub: Option<&'a str>,
    pub iat: Option<u64>,
    /// Cognito: when the user authenticated; kept by tokens obtained with a refresh token.
    pub auth_time: Option<u64>,
}

/// Why a token is revoked (for the debug log; every variant is the refusal reason `revoked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Its `jti` is listed.
    Jti,
    /// Its `origin_jti` is listed: the refresh token it came from was revoked.
    OriginJti,
    /// Its `sub` signed out after the token's `auth_time` (or `iat`).
    SignedOut,
}

impl Revoked {
    /// The refusal reason (filter state, report mode, metric `denied_revoked`).
    pub const REASON: &'static str = "revoked";
    /// `error_description` of the 401's `www-authenticate` (RFC 6750 `invalid_token`).
    pub const ERROR_DESCRIPTION: &'static str = "The access token has been revoked";

    /// A short stable name for the debug log (`reason=revoked detail=...`).
    pub fn detail(self) -> &'static str {
        match self {
            Revoked::Jti => "revoked_jti",
            Revoked::OriginJti => "revoked_origin_jti",
            Revoked::SignedOut => "signed_out",
        }
    }
}

/// Why a fetched document is not used. The previous good list stays in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentError {
    /// Larger than the configured `max_bytes`: refused before parsing.
    TooLarge { bytes: usize, max_bytes: usize },
    /// A `version` this filter does not read.
    UnsupportedVersion(u64),
    /// Not a valid version-1 document: JSON syntax, types, missing or unknown keys, bounds.
    Malformed(String),
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocumentError::TooLarge { bytes, max_bytes } => write!(
                f,
                "revocation document refused: {bytes} bytes is more than max_bytes ({max_bytes})"
            ),
            DocumentError::UnsupportedVersion(v) => write!(
                f,
                "revocation document refused: version {v} is not supported (expected {DOCUMENT_VERSION})"
            ),
            DocumentError::Malformed(why) => write!(f, "revocation document refused: {why}"),
        }
    }
}

impl std::error::Error for DocumentError {}

/// Bounds applied when loading a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentLimits {
    pub max_bytes: usize,
    /// The filter's `clock_skew_seconds`: an entry is kept this long past its expiry, as
    /// long as a token it revokes can still be accepted.
    pub clock_skew_seconds: u64,
}

/// A validated revocation document, ready for O(1) checks.
#[derive(Debug, Clone)]
pub struct RevocationList {
    /// Keyed hashes of revoked `jti` / `origin_jti` values.
    revoked: HashSet<u64, Prehashed>,
    /// Keyed hash of `sub` → sign-out instant (Unix seconds).
    signed_out: HashMap<u64, u64, Prehashed>,
    /// The random key of those hashes: unknown outside this process, so nobody can aim a
    /// collision at a given identifier.
    key: RandomState,
    generated_at: u64,
    dropped_expired: usize,
}

impl RevocationList {
    /// Parses and validates a fetched document. All or nothing: any error leaves no list.
    pub fn parse(
        bytes: &[u8],
        limits: &DocumentLimits,
        now: u64,
    ) -> Result<RevocationList, DocumentError> {
        if bytes.len() > limits.max_bytes {
            return Err(DocumentError::TooLarge {
                bytes: bytes.len(),
                max_bytes: limits.max_bytes,
            });
        }
        let key = RandomState::new();
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let seed = DocumentSeed {
            key: &key,
            now,
            skew: limits.clock_skew_seconds,
        };
        let fields = seed
            .deserialize(&mut deserializer)
            .and_then(|p| deserializer.end().map(|()| p))
            .map_err(|e| DocumentError::Malformed(e.to_string()))?;
        let parsed = fields.validate()?;
        let mut list = RevocationList {
            revoked: parsed.revoked,
            signed_out: parsed.signed_out,
            key,
            generated_at: parsed.generated_at,
            dropped_expired: parsed.dropped_expired,
        };
        // Sign-out entries expire with the longest-lived token they can revoke; the lifetime
        // may come after them in the document, so they are pruned once it is read.
        let keep_until = |instant: u64| {
            instant
                .saturating_add(parsed.max_token_lifetime)
                .saturating_add(limits.clock_skew_seconds)
        };
        let before = list.signed_out.len();
        list.signed_out
            .retain(|_, instant| now <= keep_until(*instant));
        list.dropped_expired += before - list.signed_out.len();
        list.revoked.shrink_to_fit();
        list.signed_out.shrink_to_fit();
        Ok(list)
    }

    /// Whether a verified token has been revoked. Constant time in the list size: at most
    /// three hashes and three probes.
    ///
    /// A sign-out at instant `T` revokes the user's tokens authenticated strictly before `T`:
    /// `auth_time < T`, or `iat < T` when the token has no `auth_time`. Cognito keeps
    /// `auth_time` when tokens are refreshed, so a session refreshed after the sign-out (a
    /// race with the revocation) is still caught. A token with neither claim cannot be placed
    /// in time and is treated as revoked. No clock skew is applied: `T` and the token's times
    /// come from the same issuer's clock.
    pub fn check(&self, facts: &TokenFacts<'_>) -> Result<(), Revoked> {
        if !self.revoked.is_empty() {
            if facts
                .jti
                .is_some_and(|j| self.revoked.contains(&self.hash(j)))
            {
                return Err(Revoked::Jti);
            }
            if facts
                .origin_jti
                .is_some_and(|o| self.revoked.contains(&self.hash(o)))
            {
                return Err(Revoked::OriginJti);
            }
        }
        if !self.signed_out.is_empty() {
            if let Some(&instant) = facts.sub.and_then(|s| self.signed_out.get(&self.hash(s))) {
                match facts.auth_time.or(facts.iat) {
                    Some(issued) if issued >= instant => {}
                    _ => return Err(Revoked::SignedOut),
                }
            }
        }
        Ok(())
    }

    /// `generated_at` of the document (Unix seconds), for logs: a producer that stopped
    /// shows as an old value.
    pub fn generated_at(&self) -> u64 {
        self.generated_at
    }

    /// Revoked `jti` / `origin_jti` entries in force.
    pub fn revoked_ids(&self) -> usize {
        self.revoked.len()
    }

    /// Users with a sign-out in force.
    pub fn signed_out_users(&self) -> usize {
        self.signed_out.len()
    }

    /// Entries the document listed that had expired at load (not kept).
    pub fn dropped_expired(&self) -> usize {
        self.dropped_expired
    }

    fn hash(&self, id: &str) -> u64 {
        self.key.hash_one(id)
    }
}

/// The hasher of the inner tables: their keys already are keyed SipHash values, uniformly
/// spread, so hashing them again would only cost time.
type Prehashed = BuildHasherDefault<PrehashedHasher>;

#[derive(Debug, Default, Clone, Copy)]
struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the keys are u64); fold anything else rather than panic.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

// ---------------------------------------------------------------------------------------
// Streaming parser: entries go straight into the hash tables, so a 100,000-entry document
// never exists as 100,000 strings.

/// The top-level members as read; checked by [`Fields::validate`] once the whole object is
/// in, because JSON members come in any order.
#[derive(Default)]
struct Fields {
    version: Option<u64>,
    generated_at: Option<u64>,
    max_token_lifetime: Option<u64>,
    revoked: Option<(HashSet<u64, Prehashed>, usize)>,
    signed_out: Option<HashMap<u64, u64, Prehashed>>,
    /// The first member this version does not define.
    unknown: Option<String>,
}

struct Parsed {
    revoked: HashSet<u64, Prehashed>,
    signed_out: HashMap<u64, u64, Prehashed>,
    generated_at: u64,
    max_token_lifetime: u64,
    dropped_expired: usize,
}

impl Fields {
    fn validate(self) -> Result<Parsed, DocumentError> {
        let missing = |key: &str| DocumentError::Malformed(format!("missing key {key:?}"));
        // The version first: a newer format is reported as such, whatever else it holds.
        match self.version {
            None => return Err(missing("version")),
            Some(DOCUMENT_VERSION) => {}
            Some(other) => return Err(DocumentError::UnsupportedVersion(other)),
        }
        if let Some(key) = self.unknown {
            return Err(DocumentError::Malformed(format!("unknown key {key:?}")));
        }
        let max_token_lifetime = self
            .max_token_lifetime
            .ok_or_else(|| missing("max_token_lifetime_seconds"))?;
        if max_token_lifetime == 0 || max_token_lifetime > MAX_TOKEN_LIFETIME_SECONDS {
            return Err(DocumentError::Malformed(format!(
                "max_token_lifetime_seconds {max_token_lifetime} is out of range (1 to {MAX_TOKEN_LIFETIME_SECONDS})"
            )));
        }
        let (revoked, dropped_expired) = self.revoked.unwrap_or_default();
        Ok(Parsed {
            revoked,
            signed_out: self.signed_out.unwrap_or_default(),
            generated_at: self.generated_at.ok_or_else(|| missing("generated_at"))?,
            max_token_lifetime,
            dropped_expired,
        })
    }
}

struct DocumentSeed<'a> {
    key: &'a RandomState,
    now: u64,
    skew: u64,
}

impl<'de> DeserializeSeed<'de> for DocumentSeed<'_> {
    type Value = Fields;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Fields, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocumentSeed<'_> {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a revocation document (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields = Fields::default();
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            let name: &str = &name;
            let fresh = match name {
                "version" => fields.version.replace(map.next_value()?).is_none(),
                "generated_at" => fields.generated_at.replace(map.next_value()?).is_none(),
                "max_token_lifetime_seconds" => fields
                    .max_token_lifetime
                    .replace(map.next_value()?)
                    .is_none(),
                "revoked_jti" => {
                    let seed = RevokedSeed {
                        key: self.key,
                        now: self.now,
                        skew: self.skew,
                    };
                    fields.revoked.replace(map.next_value_seed(seed)?).is_none()
                }
                "signed_out" => {
                    let seed = SignedOutSeed { key: self.key };
                    fields
                        .signed_out
                        .replace(map.next_value_seed(seed)?)
                        .is_none()
                }
                other => {
                    map.next_value::<IgnoredAny>()?;
                    if fields.unknown.is_none() {
                        fields.unknown = Some(other.to_string());
                    }
                    true
                }
            };
            if !fresh {
                return Err(A::Error::custom(format!("key {name:?} appears twice")));
            }
        }
        Ok(fields)
    }
}

/// An identifier, hashed as it is read (no allocation for unescaped strings).
struct IdSeed<'a> {
    key: &'a RandomState,
    section: &'static str,
}

impl<'de> DeserializeSeed<'de> for IdSeed<'_> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for IdSeed<'_> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an identifier")
    }

    fn visit_str<E: serde::de::Error>(self, id: &str) -> Result<u64, E> {
        if id.is_empty() || id.len() > MAX_ID_BYTES {
            return Err(E::custom(format!(
                "{}: an identifier must have 1 to {MAX_ID_BYTES} bytes",
                self.section
            )));
        }
        Ok(self.key.hash_one(id))
    }
}

/// `revoked_jti`: identifier → until. Entries past `until` + skew are dropped as they are
/// read: no token carrying them can pass the `exp` check any more.
struct RevokedSeed<'a> {
    key: &'a RandomState,
    now: u64,
    skew: u64,
}

impl<'de> DeserializeSeed<'de> for RevokedSeed<'_> {
    type Value = (HashSet<u64, Prehashed>, usize);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RevokedSeed<'_> {
    type Value = (HashSet<u64, Prehashed>, usize);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("revoked_jti: an object of identifier → until (Unix seconds)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut set = HashSet::with_hasher(Prehashed::default());
        let mut dropped = 0;
        let id_seed = || IdSeed {
            key: self.key,
            section: "revoked_jti",
        };
        while let Some(id) = map.next_key_seed(id_seed())? {
            let until = map.next_value::<u64>()?;
            // A duplicate identifier is not an error: keeping it listed is the safe reading.
            if self.now <= until.saturating_add(self.skew) {
                set.insert(id);
            } else {
                dropped += 1;
            }
        }
        Ok((set, dropped))
    }
}

/// `signed_out`: `sub` → sign-out instant. Pruned after the whole document is read.
struct SignedOutSeed<'a> {
    key: &'a RandomState,
}

impl<'de> DeserializeSeed<'de> for SignedOutSeed<'_> {
    type Value = HashMap<u64, u64, Prehashed>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SignedOutSeed<'_> {
    type Value = HashMap<u64, u64, Prehashed>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("signed_out: an object of sub → sign-out instant (Unix seconds)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut table = HashMap::with_hasher(Prehashed::default());
        let id_seed = || IdSeed {
            key: self.key,
            section: "signed_out",
        };
        while let Some(sub) = map.next_key_seed(id_seed())? {
            let instant = map.next_value::<u64>()?;
            // Listed twice: the later sign-out revokes more, so it is the safe reading.
            let entry = table.entry(sub).or_insert(instant);
            *entry = (*entry).max(instant);
        }
        Ok(table)
    }
}

// ---------------------------------------------------------------------------------------
// The `revocations` block of a user pool's configuration.

/// What requests get when no usable document is available (never fetched, or older than
/// `max_stale_seconds` while refreshes fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    /// 503 with `retry-after`, like missing keys: a revoked token must not pass because the
    /// list could not be read.
    Deny,
    /// Verify tokens without revocation checks (fail open).
    Allow,
}

/// The `revocations` block as written. Unknown keys are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRevocationSource {
    pub cluster: String,
    pub uri: String,
    #[serde(default = "default_refresh_seconds")]
    pub refresh_seconds: u64,
    #[serde(default = "default_max_stale_seconds")]
    pub max_stale_seconds: u64,
    #[serde(default = "default_on_unavailable")]
    pub on_unavailable: OnUnavailable,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// Default `refresh_seconds`: a revocation takes effect within this period (+ 1 s).
pub const DEFAULT_REFRESH_SECONDS: u64 = 30;
/// Default `max_stale_seconds`: how long the last good document is used while refreshes fail.
pub const DEFAULT_MAX_STALE_SECONDS: u64 = 300;
/// Default `max_bytes`: about 150,000 entries of Cognito UUIDs.
pub const DEFAULT_MAX_BYTES: u64 = 8 << 20;
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

fn default_refresh_seconds() -> u64 {
    DEFAULT_REFRESH_SECONDS
}
fn default_max_stale_seconds() -> u64 {
    DEFAULT_MAX_STALE_SECONDS
}
fn default_on_unavailable() -> OnUnavailable {
    OnUnavailable::Deny
}
fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// A validated revocation source. Equal sources (same cluster, URI and settings) are one
/// source: pools that name the same one share its fetches and its list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationSource {
    pub cluster: String,
    pub uri: String,
    /// `:authority` and `:path` of the callout.
    pub location: JwksLocation,
    pub refresh_seconds: u64,
    pub max_stale_seconds: u64,
    pub on_unavailable: OnUnavailable,
    pub max_bytes: usize,
    pub timeout_ms: u64,
}

impl RevocationSource {
    /// Validates a parsed block; `path` is its JSON path (`user_pools[0].revocations`), so
    /// that errors name the key at fault.
    pub fn validate(wire: WireRevocationSource, path: &str) -> Result<Self, ConfigError> {
        if wire.cluster.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.cluster"),
                "must name the Envoy cluster that serves the revocation document",
            ));
        }
        let location = JwksLocation::parse(&wire.uri)
            .map_err(|e| ConfigError::new(format!("{path}.uri"), e))?;
        let bounded = |value: u64, min: u64, max: u64, key: &str| {
            if value < min || value > max {
                Err(ConfigError::new(
                    format!("{path}.{key}"),
                    format!("{value} is out of range ({min} to {max})"),
                ))
            } else {
                Ok(value)
            }
        };
        let refresh_seconds = bounded(wire.refresh_seconds, 1, 3600, "refresh_seconds")?;
        let max_stale_seconds = bounded(wire.max_stale_seconds, 0, 7 * 86400, "max_stale_seconds")?;
        let max_bytes = bounded(wire.max_bytes, 1024, 64 << 20, "max_bytes")?;
        let timeout_ms = bounded(wire.timeout_ms, 100, 60_000, "timeout_ms")?;
        if timeout_ms >= refresh_seconds.saturating_mul(1000) {
            return Err(ConfigError::new(
                format!("{path}.timeout_ms"),
                format!(
                    "{timeout_ms} ms must be shorter than refresh_seconds ({refresh_seconds} s)"
                ),
            ));
        }
        Ok(RevocationSource {
            cluster: wire.cluster,
            uri: wire.uri,
            location,
            refresh_seconds,
            max_stale_seconds,
            on_unavailable: wire.on_unavailable,
            max_bytes: max_bytes as usize,
            timeout_ms,
        })
    }

    /// Parses a block on its own (the embedding configuration parses it as one of its keys).
    pub fn parse(json: &[u8], path: &str) -> Result<Self, ConfigError> {
        let deserializer = &mut serde_json::Deserializer::from_slice(json);
        let wire: WireRevocationSource =
            serde_path_to_error::deserialize(deserializer).map_err(|e| {
                let inner = e.path().to_string();
                let problem = e.into_inner().to_string();
                let key = problem
                    .strip_prefix("missing field `")
                    .and_then(|rest| rest.split('`').next())
                    .map(str::to_string);
                let at = match (inner.as_str(), key) {
                    (".", Some(k)) => format!("{path}.{k}"),
                    (".", None) => path.to_string(),
                    (i, Some(k)) => format!("{path}.{i}.{k}"),
                    (i, None) => format!("{path}.{i}"),
                };
                ConfigError::new(at, problem)
            })?;
        RevocationSource::validate(wire, path)
    }

    /// The limits a fetched document is loaded with.
    pub fn limits(&self, clock_skew_seconds: u64) -> DocumentLimits {
        DocumentLimits {
            max_bytes: self.max_bytes,
            clock_skew_seconds,
        }
    }
}

impl RevocationSource {
    /// Fetch timing of this source, in the form the shared fetch schedule uses (the same
    /// machinery as the JWKS: lease, backoff, stale bound).
    pub fn timing(&self) -> KeyTiming {
        KeyTiming {
            refresh_ms: self.refresh_seconds.saturating_mul(1000),
            // Only the JWKS refetches on demand (unknown `kid`); a document is only refreshed.
            min_refetch_ms: 0,
            max_stale_ms: self.max_stale_seconds.saturating_mul(1000),
            timeout_ms: self.timeout_ms,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The filter's side: facts from verified claims, the per-request decision, and the small
// stamp that tells worker VMs a new document was published.

/// The facts [`RevocationList::check`] needs, from a verified token's claims. A time claim
/// that is not a non-negative integer counts as absent (a signed-out user's token without a
/// usable time is then revoked, never passed).
pub fn token_facts(claims: &crate::claims::Claims) -> TokenFacts<'_> {
    TokenFacts {
        jti: claims.jti.as_deref(),
        origin_jti: claims.origin_jti.as_deref(),
        sub: claims.sub.as_deref(),
        iat: claims.iat,
        auth_time: claims.auth_time,
    }
}

/// What a request with a verified token gets from its pool's revocation source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Not revoked (or no usable document under `on_unavailable: "allow"`).
    Pass,
    Revoked(Revoked),
    /// The first document is on its way: wait for it (bounded by the request's deadline).
    Wait,
    /// No usable document under `on_unavailable: "deny"`: 503, retry after this many seconds.
    Unavailable {
        retry_after_s: u64,
    },
}

/// Decides one request: `availability` of the source's document in this VM, whether the
/// request's wait deadline has passed, and the verified token's facts.
pub fn gate(
    availability: &Availability<RevocationList>,
    on_unavailable: OnUnavailable,
    deadline_passed: bool,
    facts: &TokenFacts<'_>,
) -> Gate {
    match availability {
        Availability::Ready(list) => match list.check(facts) {
            Ok(()) => Gate::Pass,
            Err(why) => Gate::Revoked(why),
        },
        Availability::Wait if !deadline_passed => Gate::Wait,
        _ if on_unavailable == OnUnavailable::Allow => Gate::Pass,
        Availability::Wait => Gate::Unavailable { retry_after_s: 1 },
        Availability::Unavailable { retry_after_s } => Gate::Unavailable {
            retry_after_s: *retry_after_s,
        },
    }
}

/// A digest of a document's bytes: a refresh that brings the same bytes is not parsed or
/// copied again. Deterministic (the same in every VM of the module).
pub fn document_digest(body: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write_usize(body.len());
    h.write(body);
    h.finish()
}

/// The small shared-data entry published with each fetched document:
/// `<fetched_at_ms> <digest>`. Workers read it every tick (the document itself only when
/// the digest changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub fetched_at_ms: u64,
    pub digest: u64,
}

impl Stamp {
    pub fn encode(&self) -> String {
        format!("{} {:016x}", self.fetched_at_ms, self.digest)
    }

    pub fn decode(bytes: &[u8]) -> Option<Stamp> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (at, digest) = text.split_once(' ')?;
        Some(Stamp {
            fetched_at_ms: at.parse().ok()?,
            digest: u64::from_str_radix(digest, 16).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
    const LIMITS: DocumentLimits = DocumentLimits {
        max_bytes: 1 << 20,
        clock_skew_seconds: 60,
    };

    fn load(json: &str) -> RevocationList {
        RevocationList::parse(json.as_bytes(), &LIMITS, NOW).unwrap()
    }

    fn refused(json: &str) -> DocumentError {
        match RevocationList::parse(json.as_bytes(), &LIMITS, NOW) {
            Ok(_) => panic!("document should be refused: {json}"),
            Err(e) => e,
        }
    }

    fn doc(revoked: &str, signed_out: &str) -> String {
        format!(
            r#"{{"version":1,"generated_at":{NOW},"max_token_lifetime_seconds":3600,"revoked_jti":{{{revoked}}},"signed_out":{{{signed_out}}}}}"#
        )
    }

    /// An access token of alice: signed in at NOW - 600, refreshed at NOW - 100.
    fn alice<'a>() -> TokenFacts<'a> {
        TokenFacts {
            jti: Some("jti-access-2"),
            origin_jti: Some("origin-1"),
            sub: Some("sub-alice"),
            iat: Some(NOW - 100),
            auth_time: Some(NOW - 600),
        }
    }

    #[test]
    fn token_not_listed_passes() {
        let list = load(&doc(r#""other":9999999999"#, r#""sub-bob":1767225000"#));
        assert_eq!(list.check(&alice()), Ok(()));
        assert_eq!(list.revoked_ids(), 1);
        assert_eq!(list.signed_out_users(), 1);
        assert_eq!(list.generated_at(), NOW);
    }

    #[test]
    fn listed_jti_is_revoked() {
        let list = load(&doc(r#""jti-access-2":9999999999"#, ""));
        assert_eq!(list.check(&alice()), Err(Revoked::Jti));
    }

    #[test]
    fn listed_origin_jti_revokes_every_token_of_that_session() {
        let list = load(&doc(r#""origin-1":9999999999"#, ""));
        assert_eq!(list.check(&alice()), Err(Revoked::OriginJti));
        let id_token = TokenFacts {
            jti: Some("jti-id-7"),
            ..alice()
        };
        assert_eq!(list.check(&id_token), Err(Revoked::OriginJti));
        let other_session = TokenFacts {
            origin_jti: Some("origin-2"),
            ..alice()
        };
        assert_eq!(list.check(&other_session), Ok(()));
    }

    #[test]
    fn sign_out_revokes_tokens_authenticated_before_it() {
        let list = load(&doc("", &format!(r#""sub-alice":{}"#, NOW - 50)));
        assert_eq!(list.check(&alice()), Err(Revoked::SignedOut));
    }

    #[test]
    fn sign_out_uses_auth_time_so_a_refresh_after_it_is_still_revoked() {
        // Refreshed (iat) after the sign-out instant, but authenticated before it.
        let list = load(&doc("", &format!(r#""sub-alice":{}"#, NOW - 200)));
        assert_eq!(list.check(&alice()), Err(Revoked::SignedOut));
    }

    #[test]
    fn sign_in_at_or_after_the_sign_out_instant_passes() {
        let instant = NOW - 600;
        let list = load(&doc("", &format!(r#""sub-alice":{instant}"#)));
        // auth_time == instant: the boundary second belongs to the new session.
        assert_eq!(list.check(&alice()), Ok(()));
        let later = TokenFacts {
            auth_time: Some(instant + 1),
            ..alice()
        };
        assert_eq!(list.check(&later), Ok(()));
        let earlier = TokenFacts {
            auth_time: Some(instant - 1),
            ..alice()
        };
        assert_eq!(list.check(&earlier), Err(Revoked::SignedOut));
    }

    #[test]
    fn sign_out_falls_back_to_iat_without_auth_time() {
        let list = load(&doc("", &format!(r#""sub-alice":{}"#, NOW - 50)));
        let no_auth_time = TokenFacts {
            auth_time: None,
            ..alice()
        };
        assert_eq!(list.check(&no_auth_time), Err(Revoked::SignedOut));
        let issued_after = TokenFacts {
            auth_time: None,
            iat: Some(NOW - 50),
            ..alice()
        };
        assert_eq!(list.check(&issued_after), Ok(()));
    }

    #[test]
    fn signed_out_user_token_without_any_time_is_revoked() {
        let list = load(&doc("", &format!(r#""sub-alice":{}"#, NOW - 50)));
        let timeless = TokenFacts {
            auth_time: None,
            iat: None,
            ..alice()
        };
        assert_eq!(list.check(&timeless), Err(Revoked::SignedOut));
    }

    #[test]
    fn sign_out_of_another_user_does_not_touch_this_one() {
        let list = load(&doc("", &format!(r#""sub-bob":{NOW}"#)));
        assert_eq!(list.check(&alice()), Ok(()));
        let no_sub = TokenFacts {
            sub: None,
            ..alice()
        };
        assert_eq!(list.check(&no_sub), Ok(()));
    }

    #[test]
    fn expired_revoked_entries_are_dropped_at_load_after_the_skew() {
        // until + skew < now → dropped; until + skew == now → kept.
        let list = load(&doc(
            &format!(
                r#""gone":{},"edge":{},"live":{}"#,
                NOW - 61,
                NOW - 60,
                NOW + 10
            ),
            "",
        ));
        assert_eq!(list.revoked_ids(), 2);
        assert_eq!(list.dropped_expired(), 1);
        let gone = TokenFacts {
            jti: Some("gone"),
            ..Default::default()
        };
        assert_eq!(list.check(&gone), Ok(()));
        let edge = TokenFacts {
            jti: Some("edge"),
            ..Default::default()
        };
        assert_eq!(list.check(&edge), Err(Revoked::Jti));
    }

    #[test]
    fn sign_outs_older_than_the_token_lifetime_are_dropped_even_if_listed_first() {
        // Lifetime 3600, skew 60: an instant older than now - 3660 can revoke nothing.
        let json = format!(
            r#"{{"signed_out":{{"old":{},"edge":{}}},"version":1,"generated_at":{NOW},"max_token_lifetime_seconds":3600}}"#,
            NOW - 3661,
            NOW - 3660
        );
        let list = load(&json);
        assert_eq!(list.signed_out_users(), 1);
        assert_eq!(list.dropped_expired(), 1);
    }

    #[test]
    fn duplicate_entries_keep_the_most_revoking_value() {
        let list = load(&doc(
            "",
            &format!(r#""sub-alice":{},"sub-alice":{}"#, NOW - 700, NOW - 50),
        ));
        assert_eq!(list.signed_out_users(), 1);
        assert_eq!(list.check(&alice()), Err(Revoked::SignedOut));
        let list = load(&doc(
            &format!(r#""x":{},"x":{}"#, NOW + 100, NOW - 1000),
            "",
        ));
        assert_eq!(list.revoked_ids(), 1);
    }

    #[test]
    fn empty_sections_may_be_omitted() {
        let list = load(&format!(
            r#"{{"version":1,"generated_at":{NOW},"max_token_lifetime_seconds":86400}}"#
        ));
        assert_eq!(list.check(&alice()), Ok(()));
        assert_eq!(list.revoked_ids() + list.signed_out_users(), 0);
    }

    #[test]
    fn oversized_document_is_refused_before_parsing() {
        let json = doc(r#""a":1"#, "");
        let limits = DocumentLimits {
            max_bytes: json.len() - 1,
            ..LIMITS
        };
        assert_eq!(
            RevocationList::parse(json.as_bytes(), &limits, NOW).unwrap_err(),
            DocumentError::TooLarge {
                bytes: json.len(),
                max_bytes: json.len() - 1
            }
        );
        let limits = DocumentLimits {
            max_bytes: json.len(),
            ..LIMITS
        };
        assert!(RevocationList::parse(json.as_bytes(), &limits, NOW).is_ok());
    }

    #[test]
    fn other_versions_are_refused_as_unsupported() {
        let json =
            format!(r#"{{"version":2,"generated_at":{NOW},"max_token_lifetime_seconds":3600}}"#);
        assert_eq!(refused(&json), DocumentError::UnsupportedVersion(2));
        assert!(refused(&json).to_string().contains("version 2"));
    }

    #[test]
    fn malformed_documents_are_refused_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "EOF"),
            ("[]", "expected a revocation document (a JSON object)"),
            ("not json", "expected"),
            (
                r#"{"generated_at":1,"max_token_lifetime_seconds":1}"#,
                "version",
            ),
            (
                r#"{"version":1,"max_token_lifetime_seconds":1}"#,
                "generated_at",
            ),
            (
                r#"{"version":1,"generated_at":1}"#,
                "max_token_lifetime_seconds",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":0}"#,
                "out of range",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"extra":1}"#,
                "unknown key \"extra\"",
            ),
            (
                r#"{"version":1,"version":1,"generated_at":1,"max_token_lifetime_seconds":1}"#,
                "appears twice",
            ),
            (
                r#"{"version":"1","generated_at":1,"max_token_lifetime_seconds":1}"#,
                "invalid type",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"revoked_jti":{"a":1.5}}"#,
                "invalid type",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"revoked_jti":{"a":-1}}"#,
                "invalid value",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"revoked_jti":{"":1}}"#,
                "revoked_jti: an identifier",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"signed_out":["a"]}"#,
                "expected signed_out: an object of sub",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"signed_out":{"a":null}}"#,
                "invalid type",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1} {}"#,
                "trailing characters",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"revoked_jti":{"a":1"#,
                "EOF",
            ),
        ];
        for (json, reason) in cases {
            let e = refused(json);
            assert!(
                matches!(e, DocumentError::Malformed(_)),
                "{json}: {e:?} should be Malformed"
            );
            assert!(
                e.to_string().contains(reason),
                "{json}: {e} lacks {reason:?}"
            );
        }
    }

    #[test]
    fn revoked_jti_must_be_an_object() {
        let e = refused(
            r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"revoked_jti":[]}"#,
        );
        assert!(
            e.to_string()
                .contains("expected revoked_jti: an object of identifier"),
            "{e}"
        );
    }

    #[test]
    fn the_longest_token_lifetime_accepted_is_a_year() {
        let at = |lifetime: u64| {
            format!(
                r#"{{"version":1,"generated_at":{NOW},"max_token_lifetime_seconds":{lifetime}}}"#
            )
        };
        assert!(
            RevocationList::parse(at(MAX_TOKEN_LIFETIME_SECONDS).as_bytes(), &LIMITS, NOW).is_ok()
        );
        let e = refused(&at(MAX_TOKEN_LIFETIME_SECONDS + 1));
        assert!(e.to_string().contains("31622400"), "{e}");
    }

    #[test]
    fn overlong_identifier_is_refused() {
        let long = "a".repeat(MAX_ID_BYTES + 1);
        let e = refused(&doc(&format!(r#""{long}":9999999999"#), ""));
        assert!(e.to_string().contains("1 to 512 bytes"), "{e}");
        let ok = "a".repeat(MAX_ID_BYTES);
        assert_eq!(
            load(&doc(&format!(r#""{ok}":9999999999"#), "")).revoked_ids(),
            1
        );
    }

    #[test]
    fn escaped_identifiers_match_their_decoded_value() {
        let list = load(&doc(r#""origin\u002d1":9999999999"#, ""));
        assert_eq!(list.check(&alice()), Err(Revoked::OriginJti));
    }

    #[test]
    fn large_document_loads_every_entry() {
        let mut revoked = String::new();
        let mut signed_out = String::new();
        for i in 0..50_000u64 {
            if i > 0 {
                revoked.push(',');
                signed_out.push(',');
            }
            revoked.push_str(&format!(r#""jti-{i:08}":{}"#, NOW + i));
            signed_out.push_str(&format!(r#""sub-{i:08}":{}"#, NOW - 10));
        }
        let json = doc(&revoked, &signed_out);
        let limits = DocumentLimits {
            max_bytes: json.len(),
            ..LIMITS
        };
        let list = RevocationList::parse(json.as_bytes(), &limits, NOW).unwrap();
        assert_eq!(list.revoked_ids(), 50_000);
        assert_eq!(list.signed_out_users(), 50_000);
        let listed = TokenFacts {
            jti: Some("jti-00049999"),
            ..Default::default()
        };
        assert_eq!(list.check(&listed), Err(Revoked::Jti));
        let user = TokenFacts {
            sub: Some("sub-00012345"),
            auth_time: Some(NOW - 11),
            ..Default::default()
        };
        assert_eq!(list.check(&user), Err(Revoked::SignedOut));
        let unlisted = TokenFacts {
            jti: Some("jti-00050000"),
            sub: Some("sub-00050000"),
            auth_time: Some(0),
            ..Default::default()
        };
        assert_eq!(list.check(&unlisted), Ok(()));
    }

    // --- configuration block ---

    fn source(json: &str) -> Result<RevocationSource, ConfigError> {
        RevocationSource::parse(json.as_bytes(), "user_pools[0].revocations")
    }

    #[test]
    fn minimal_source_gets_documented_defaults() {
        let s = source(
            r#"{"cluster":"revocations","uri":"https://bucket.s3.amazonaws.com/revocations.json"}"#,
        )
        .unwrap();
        assert_eq!(s.location.authority, "bucket.s3.amazonaws.com");
        assert_eq!(s.location.path, "/revocations.json");
        assert_eq!(s.refresh_seconds, 30);
        assert_eq!(s.max_stale_seconds, 300);
        assert_eq!(s.on_unavailable, OnUnavailable::Deny);
        assert_eq!(s.max_bytes, 8 << 20);
        assert_eq!(s.timeout_ms, 5000);
        assert_eq!(
            s.limits(60),
            DocumentLimits {
                max_bytes: 8 << 20,
                clock_skew_seconds: 60
            }
        );
    }

    #[test]
    fn complete_source_is_accepted() {
        let s = source(
            r#"{"cluster":"c","uri":"http://revocations.internal:8080/v1/doc.json","refresh_seconds":5,
                "max_stale_seconds":0,"on_unavailable":"allow","max_bytes":1024,"timeout_ms":1000}"#,
        )
        .unwrap();
        assert_eq!(s.on_unavailable, OnUnavailable::Allow);
        assert_eq!(s.location.authority, "revocations.internal:8080");
        assert_eq!(s.max_stale_seconds, 0);
    }

    #[test]
    fn source_bounds_are_inclusive() {
        let with = |key: &str, value: u64| {
            source(&format!(
                r#"{{"cluster":"c","uri":"https://h/p","timeout_ms":100,"{key}":{value}}}"#
            ))
        };
        for (key, max) in [
            ("refresh_seconds", 3600),
            ("max_stale_seconds", 7 * 86400),
            ("max_bytes", 64 << 20),
        ] {
            assert!(with(key, max).is_ok(), "{key} = {max}");
            assert!(with(key, max + 1).is_err(), "{key} = {max} + 1");
        }
    }

    fn source_error(json: &str) -> ConfigError {
        match source(json) {
            Ok(s) => panic!("source should be refused: {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn source_errors_name_their_json_path() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"uri":"https://h/p"}"#,
                "user_pools[0].revocations.cluster",
            ),
            (r#"{"cluster":"c"}"#, "user_pools[0].revocations.uri"),
            (
                r#"{"cluster":"","uri":"https://h/p"}"#,
                "user_pools[0].revocations.cluster",
            ),
            (
                r#"{"cluster":"c","uri":"ftp://h/p"}"#,
                "user_pools[0].revocations.uri",
            ),
            (
                r#"{"cluster":"c","uri":"https://h/p","refresh_seconds":0}"#,
                "user_pools[0].revocations.refresh_seconds",
            ),
            (
                r#"{"cluster":"c","uri":"https://h/p","refresh_seconds":"30"}"#,
                "user_pools[0].revocations.refresh_seconds",
            ),
            (
                r#"{"cluster":"c","uri":"https://h/p","max_bytes":100}"#,
                "user_pools[0].revocations.max_bytes",
            ),
            (
                r#"{"cluster":"c","uri":"https://h/p","on_unavailable":"open"}"#,
                "user_pools[0].revocations.on_unavailable",
            ),
            (
                r#"{"cluster":"c","uri":"https://h/p","refresh_seconds":1,"timeout_ms":1000}"#,
                "user_pools[0].revocations.timeout_ms",
            ),
            (
                r#"{"cluster":"c","uri":"https://h/p","max_stale_seconds":-1}"#,
                "user_pools[0].revocations.max_stale_seconds",
            ),
        ];
        for (json, path) in cases {
            assert_eq!(&source_error(json).path, path, "{json}");
        }
        let e = source_error(r#"{"cluster":"c","uri":"https://h/p","refresh":30}"#);
        assert!(e.to_string().contains("refresh"), "{e}");
        assert!(e.path.starts_with("user_pools[0].revocations"), "{e}");
    }

    #[test]
    fn equal_sources_compare_equal_so_pools_can_share_one() {
        let a = source(r#"{"cluster":"c","uri":"https://h/p"}"#).unwrap();
        let b = source(r#"{"uri":"https://h/p","cluster":"c","refresh_seconds":30}"#).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn revoked_reason_and_description_are_stable() {
        assert_eq!(Revoked::REASON, "revoked");
        assert_eq!(
            Revoked::ERROR_DESCRIPTION,
            "The access token has been revoked"
        );
        assert_eq!(Revoked::OriginJti.detail(), "revoked_origin_jti");
    }

    /// The claims a verified token with this payload keeps.
    fn claims(json: &str) -> crate::claims::Claims {
        crate::claims::Payload::read(json.as_bytes(), &[])
            .unwrap()
            .into_claims(None)
    }

    #[test]
    fn token_facts_come_from_the_verified_claims() {
        let c =
            claims(r#"{"sub":"u1","jti":"j1","origin_jti":"o1","iat":10,"auth_time":5,"exp":99}"#);
        assert_eq!(
            token_facts(&c),
            TokenFacts {
                jti: Some("j1"),
                origin_jti: Some("o1"),
                sub: Some("u1"),
                iat: Some(10),
                auth_time: Some(5),
            }
        );
        // Times that are not integers count as absent: a signed-out user's token is refused.
        let c = claims(r#"{"sub":"alice-sub","iat":"late","auth_time":-3}"#);
        let facts = token_facts(&c);
        assert_eq!((facts.iat, facts.auth_time, facts.jti), (None, None, None));
        let list = load(&doc("", &format!(r#""alice-sub":{}"#, NOW - 10)));
        assert_eq!(list.check(&facts), Err(Revoked::SignedOut));
    }

    fn ready(json: &str) -> Availability<RevocationList> {
        Availability::Ready(std::rc::Rc::new(load(json)))
    }

    #[test]
    fn gate_checks_a_ready_list() {
        let list = ready(&doc(r#""j1":99999999999"#, ""));
        let listed = TokenFacts {
            jti: Some("j1"),
            ..TokenFacts::default()
        };
        let other = TokenFacts {
            jti: Some("j2"),
            ..TokenFacts::default()
        };
        for on in [OnUnavailable::Deny, OnUnavailable::Allow] {
            assert_eq!(gate(&list, on, false, &listed), Gate::Revoked(Revoked::Jti));
            assert_eq!(gate(&list, on, true, &listed), Gate::Revoked(Revoked::Jti));
            assert_eq!(gate(&list, on, false, &other), Gate::Pass);
        }
    }

    #[test]
    fn gate_without_a_list_waits_then_applies_on_unavailable() {
        let facts = TokenFacts::default();
        let deny = OnUnavailable::Deny;
        let allow = OnUnavailable::Allow;
        assert_eq!(gate(&Availability::Wait, deny, false, &facts), Gate::Wait);
        assert_eq!(gate(&Availability::Wait, allow, false, &facts), Gate::Wait);
        assert_eq!(
            gate(&Availability::Wait, deny, true, &facts),
            Gate::Unavailable { retry_after_s: 1 }
        );
        assert_eq!(gate(&Availability::Wait, allow, true, &facts), Gate::Pass);
        let down = Availability::Unavailable { retry_after_s: 7 };
        assert_eq!(
            gate(&down, deny, false, &facts),
            Gate::Unavailable { retry_after_s: 7 }
        );
        assert_eq!(gate(&down, allow, false, &facts), Gate::Pass);
    }

    #[test]
    fn a_stale_list_is_used_up_to_the_bound_then_unavailable() {
        use crate::keys::{FetchSchedule, PoolKeys};
        let src = source(
            r#"{"cluster":"c","uri":"https://h/p","refresh_seconds":10,"max_stale_seconds":20}"#,
        )
        .unwrap();
        let timing = src.timing();
        let mut state: PoolKeys<RevocationList> = PoolKeys::new();
        state.set_keys(load(&doc("", "")), 1_000);
        // Refreshes fail from then on: the list serves until 1 s + 10 s + 20 s.
        let mut failing = FetchSchedule::default();
        failing.fetch_failed(11_000, 0);
        state.observe(failing);
        assert!(matches!(
            state.availability(31_000, &timing),
            Availability::Ready(_)
        ));
        assert!(matches!(
            state.availability(31_001, &timing),
            Availability::Unavailable { .. }
        ));
        // The same bytes again: only the age moves.
        state.refreshed(30_000);
        assert!(matches!(
            state.availability(59_000, &timing),
            Availability::Ready(_)
        ));
    }

    #[test]
    fn stamps_round_trip_and_digests_tell_documents_apart() {
        let a = document_digest(br#"{"version":1}"#);
        assert_eq!(a, document_digest(br#"{"version":1}"#));
        assert_ne!(a, document_digest(br#"{"version":2}"#));
        let stamp = Stamp {
            fetched_at_ms: 1_767_225_600_123,
            digest: a,
        };
        assert_eq!(Stamp::decode(stamp.encode().as_bytes()), Some(stamp));
        assert_eq!(Stamp::decode(b"12"), None);
        assert_eq!(Stamp::decode(b"x 00"), None);
    }
}
