//! Why a request is refused, and why a configuration is refused.
//!
//! [`AuthError`] has one variant per reason a request can be refused. Each reason belongs to
//! exactly one [`Refusal`] class (missing, invalid, expired, revoked, forbidden, unavailable,
//! bad request), which
//! `decision.rs` — and only it — turns into status, body, headers and metric.

use std::fmt;

/// One reason a request is refused. Logged (at debug) by name, never with the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No configured source carried a token (or only another scheme, e.g. `Basic`).
    NoToken,
    /// Two sources carried different tokens: refuse rather than guess which one counts.
    AmbiguousToken,
    /// Longer than `max_token_bytes`: rejected before any decoding.
    TokenTooLarge,
    /// Not a compact JWS: three base64url parts, header and payload JSON objects.
    Malformed,
    /// Duplicate member names in the header or payload: parsers would disagree on the value.
    DuplicateClaim,
    /// `alg` is `none`, an HMAC, or unknown: only asymmetric algorithms are accepted.
    AlgorithmNotAllowed,
    /// A `crit` header (or `b64: false`) asks for processing this verifier does not do.
    CriticalHeader,
    /// `iss` is missing, not a string, or names no configured user pool.
    UnknownIssuer,
    /// The header has no `kid` (or not a string): Cognito always sets one.
    MissingKeyId,
    /// `kid` names no key of the pool's JWKS, even after a refetch.
    UnknownKeyId,
    /// The key with that `kid` cannot verify this `alg` (type mismatch, or JWK `alg` differs).
    KeyAlgorithmMismatch,
    /// The signature does not verify with the pool's key.
    BadSignature,
    /// A registered claim has the wrong JSON type (e.g. `exp` as a string).
    ClaimType(&'static str),
    /// `exp` is absent: every Cognito token has one, and a token must not live forever.
    MissingExpiry,
    /// `exp` is in the past by more than the clock skew.
    Expired,
    /// `nbf` is in the future by more than the clock skew.
    NotYetValid,
    /// `iat` is in the future by more than the clock skew.
    IssuedInFuture,
    /// `token_use` is missing or not one the pool (or the route) accepts.
    TokenUseNotAllowed,
    /// `aud` (id token) or `client_id` (access token) names no configured app client.
    ClientNotAllowed,
    /// The token is valid but lacks a scope, group or claim value the route requires.
    RequirementNotMet(Unmet),
    /// No usable key set: never fetched successfully, or too stale to trust.
    KeysUnavailable,
    /// The path can be read in more ways than the filter weighs (`path::MAX_READINGS`): no
    /// rule can be chosen safely, so the request is refused before any token is looked at.
    UnreadablePath,
    /// The verified token is listed in the pool's revocation document (revoked `jti` or
    /// `origin_jti`, or its user signed out after it was issued).
    Revoked,
    /// The pool has a revocation source and no usable document (never fetched, or stale
    /// beyond `max_stale_seconds`) under `on_unavailable: "deny"`.
    RevocationsUnavailable,
}

/// The kind of route requirement (`rules::Requirement`) a valid token failed to meet (for
/// logs and filter state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmet {
    Scopes,
    Groups,
    Claims,
    TokenUse,
}

/// The classes of refusal that users and API Gateway see: each has its own status and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Invalid,
    Expired,
    Forbidden,
    Unavailable,
    BadRequest,
    /// A valid token that was revoked: 401 like an invalid one, its own description,
    /// counter and reason.
    Revoked,
}

impl AuthError {
    /// The refusal class of this reason; the only place reasons are grouped.
    pub fn refusal(&self) -> Refusal {
        match self {
            AuthError::NoToken => Refusal::Missing,
            AuthError::Expired => Refusal::Expired,
            AuthError::RequirementNotMet(_) => Refusal::Forbidden,
            AuthError::KeysUnavailable | AuthError::RevocationsUnavailable => Refusal::Unavailable,
            AuthError::Revoked => Refusal::Revoked,
            AuthError::UnreadablePath => Refusal::BadRequest,
            AuthError::AmbiguousToken
            | AuthError::TokenTooLarge
            | AuthError::Malformed
            | AuthError::DuplicateClaim
            | AuthError::AlgorithmNotAllowed
            | AuthError::CriticalHeader
            | AuthError::UnknownIssuer
            | AuthError::MissingKeyId
            | AuthError::UnknownKeyId
            | AuthError::KeyAlgorithmMismatch
            | AuthError::BadSignature
            | AuthError::ClaimType(_)
            | AuthError::MissingExpiry
            | AuthError::NotYetValid
            | AuthError::IssuedInFuture
            | AuthError::TokenUseNotAllowed
            | AuthError::ClientNotAllowed => Refusal::Invalid,
        }
    }

    /// A short stable name for logs (`reason=...`).
    pub fn name(&self) -> &'static str {
        match self {
            AuthError::NoToken => "no_token",
            AuthError::AmbiguousToken => "ambiguous_token",
            AuthError::TokenTooLarge => "token_too_large",
            AuthError::Malformed => "malformed",
            AuthError::DuplicateClaim => "duplicate_member",
            AuthError::AlgorithmNotAllowed => "alg_not_allowed",
            AuthError::CriticalHeader => "crit_header",
            AuthError::UnknownIssuer => "unknown_issuer",
            AuthError::MissingKeyId => "missing_kid",
            AuthError::UnknownKeyId => "unknown_kid",
            AuthError::KeyAlgorithmMismatch => "key_alg_mismatch",
            AuthError::BadSignature => "bad_signature",
            AuthError::ClaimType(_) => "claim_type",
            AuthError::MissingExpiry => "missing_exp",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::IssuedInFuture => "issued_in_future",
            AuthError::TokenUseNotAllowed => "token_use_not_allowed",
            AuthError::ClientNotAllowed => "client_not_allowed",
            AuthError::RequirementNotMet(Unmet::Scopes) => "missing_scope",
            AuthError::RequirementNotMet(Unmet::Groups) => "missing_group",
            AuthError::RequirementNotMet(Unmet::Claims) => "missing_claim_value",
            AuthError::RequirementNotMet(Unmet::TokenUse) => "wrong_token_use",
            AuthError::KeysUnavailable => "keys_unavailable",
            AuthError::UnreadablePath => "unreadable_path",
            AuthError::Revoked => "revoked",
            AuthError::RevocationsUnavailable => "revocations_unavailable",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::ClaimType(claim) => write!(f, "claim_type({claim})"),
            other => f.write_str(other.name()),
        }
    }
}

/// A configuration the filter refuses to start with: the JSON path of the key and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// JSON path of the offending key, e.g. `user_pools[0].user_pool_id` (`.` for the root).
    pub path: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration at {}: {}",
            self.path, self.problem
        )
    }
}

impl std::error::Error for ConfigError {}
