//! Token verification (README "Behaviour"), in two steps so that no key is fetched for a token that
//! cheap checks already refuse:
//!
//! 1. [`inspect`]: structure, algorithm, issuer → pool, claim types, `token_use` and client.
//!    Needs no key. Its result is an [`UnverifiedToken`]: nothing in it may be trusted yet.
//! 2. [`verify_signature`]: the pool's key by `kid`, the signature, then the time claims —
//!    after the signature, so that "The incoming token has expired" is only ever said of a
//!    token the pool really issued (a forged expired token is just invalid).
//!
//! Every claim rule is checked here, explicitly, with `now` and the skew given by the caller
//! (jwt-simple's defaults, the reference implementation the tests compare with, do not fit
//! Cognito: 15-minute tolerance, `exp` optional); the header rules are jwt-simple's.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::{MapAccess, Visitor};

use crate::algorithm::Algorithm;
use crate::claims::{Claims, Payload};
use crate::cognito::{client_candidates, TokenUse};
use crate::config::{Config, Pool};
use crate::error::AuthError;
use crate::json::{decode_segment, each_member, is_base64url, read_object, skip, Member};
use crate::jwks::{Jwk, KeySet};
use crate::rules::TokenFacts;
use crate::signature::{
    ecdsa_signature_to_der, host_hash, HostCheck, HostKeyKind, SignatureBackend,
};

/// Latest accepted time claim (2106-02-07): later values overflow jwt-simple's clock type
/// (kept so that both backends, and jwt-simple in the tests, agree).
const MAX_TIMESTAMP: u64 = u32::MAX as u64;

/// A token that passed every check that needs no key. Not trusted until
/// [`verify_signature`] says so.
#[derive(Debug, Clone)]
pub struct UnverifiedToken<'t> {
    token: &'t str,
    /// Index of the pool named by `iss`.
    pub pool: usize,
    pub alg: Algorithm,
    pub kid: String,
    pub exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    pub token_use: Option<TokenUse>,
    scopes: Vec<String>,
    groups: Vec<String>,
    claims: Claims,
}

/// A token whose signature and claims were verified: what rules and claim headers read.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    pub pool: usize,
    pub kid: String,
    /// Fingerprint of the key that verified it (a cache entry dies with its key).
    pub key_fingerprint: u64,
    pub exp: u64,
    pub token_use: Option<TokenUse>,
    pub scopes: Vec<String>,
    pub groups: Vec<String>,
    /// What later requests read of its other claims (a compact copy, cached with it).
    pub claims: Claims,
}

impl VerifiedToken {
    pub fn sub(&self) -> Option<&str> {
        self.claims.sub.as_deref()
    }

    /// The app client: `client_id` (access tokens) or the first `aud` (id tokens).
    pub fn client_id(&self) -> Option<&str> {
        self.claims.client_id.as_deref()
    }
}

impl TokenFacts for VerifiedToken {
    fn token_use(&self) -> Option<TokenUse> {
        self.token_use
    }
    fn scopes(&self) -> &[String] {
        &self.scopes
    }
    fn groups(&self) -> &[String] {
        &self.groups
    }
    /// Rules name only configured claims (`Config::named_claims`), kept whole; of the others,
    /// `sub` and `cognito:groups` are kept anyway.
    fn claim_values(&self, claim: &str) -> Vec<&str> {
        match (self.claims.named(claim), claim) {
            (Some(value), _) => value.strings(),
            (None, "sub") => self.sub().into_iter().collect(),
            (None, "cognito:groups") => self.groups.iter().map(String::as_str).collect(),
            (None, _) => Vec::new(),
        }
    }
}

/// The base64url payload segment of a compact JWS (for `payload_header`).
pub fn payload_segment(token: &str) -> Option<&str> {
    token.split('.').nth(1)
}

/// Why [`inspect`] refused a token, and the pool its `iss` named when it got that far (so
/// that per-pool metrics and filter state can say which pool was targeted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: AuthError,
    pub pool: Option<usize>,
}

impl From<AuthError> for Rejected {
    fn from(reason: AuthError) -> Self {
        Rejected { reason, pool: None }
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.reason.fmt(f)
    }
}

/// Step 1: every check that needs no key (and no clock).
pub fn inspect<'t>(token: &'t str, config: &Config) -> Result<UnverifiedToken<'t>, Rejected> {
    // Bounded before any decoding: a huge token costs nothing but this comparison.
    if token.len() > config.max_token_bytes {
        return Err(AuthError::TokenTooLarge.into());
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed.into());
    };
    if signature_b64.is_empty() {
        // An empty signature is `alg: none` in disguise.
        return Err(AuthError::Malformed.into());
    }
    let header_bytes = decode_segment(header_b64)?;
    let header = read_object(&header_bytes, HeaderVisitor)?;
    let payload_bytes = decode_segment(payload_b64)?;
    let payload = Payload::read(&payload_bytes, &config.named_claims)?;
    // Signature must at least be base64url; its bytes are checked by the verifier.
    if !signature_b64.bytes().all(is_base64url) {
        return Err(AuthError::Malformed.into());
    }

    // An algorithm this build does not carry is refused here, before any key lookup: its
    // keys were skipped at load, and an unknown `kid` must not trigger a refetch.
    let alg = header
        .alg
        .as_ref()
        .and_then(Member::as_str)
        .and_then(Algorithm::parse)
        .filter(|a| a.is_built_in())
        .ok_or(AuthError::AlgorithmNotAllowed)?;
    // `crit` names extensions we do not implement; RFC 7515 says such a token must be refused.
    // `b64: false` (RFC 7797) changes what is signed; it is only legal with `crit`.
    if header.crit || header.b64.as_ref().is_some_and(|b| b != &Member::True) {
        return Err(AuthError::CriticalHeader.into());
    }

    let pool_index = match &payload.iss {
        Some(Member::Str(iss)) => config.pool_for_issuer(iss),
        _ => None,
    }
    .ok_or(AuthError::UnknownIssuer)?;
    let pool = config
        .pools
        .get(pool_index)
        .ok_or(AuthError::UnknownIssuer)?;
    let in_pool = |reason: AuthError| Rejected {
        reason,
        pool: Some(pool_index),
    };

    // `jku`, `x5u`, `jwk`, `x5c` are never read: keys come only from the pool's JWKS.
    let kid = match &header.kid {
        Some(Member::Str(k)) if !k.is_empty() => k.to_string(),
        _ => return Err(in_pool(AuthError::MissingKeyId)),
    };
    // One header policy whichever backend checks the signature: jwt-simple's (typed JOSE
    // members, `typ` JWT-like, no `salt`), which host-verified tokens would otherwise skip —
    // without this, `typ: "JOSE"` would pass for RS256 by host and fail for PS256.
    if !jwt_header_acceptable(token, &header) {
        return Err(in_pool(AuthError::Malformed));
    }
    let checked = pool_claims(&payload, pool).map_err(in_pool)?;
    let scopes = scopes_of(&payload);
    let groups = match &payload.groups {
        Some(Member::Strings(items)) => items.iter().map(|g| g.to_string()).collect(),
        _ => Vec::new(),
    };

    Ok(UnverifiedToken {
        token,
        pool: pool_index,
        alg,
        kid,
        exp: checked.exp,
        nbf: checked.nbf,
        iat: checked.iat,
        token_use: checked.token_use,
        scopes,
        groups,
        claims: payload.into_claims(checked.client.as_deref()),
    })
}

/// Longest encoded header jwt-simple reads (its `MAX_HEADER_LENGTH`).
const MAX_HEADER_B64: usize = 8192;

/// The JOSE registered members jwt-simple reads as strings, and as lists of strings.
const STRINGS: [&str; 9] = [
    "cty", "kid", "typ", "jku", "jwk", "x5u", "x5t", "x5t#S256", "salt",
];
const STRING_LISTS: [&str; 2] = ["crit", "x5c"];

/// The header members [`inspect`] reads.
#[derive(Debug)]
struct Header<'b> {
    alg: Option<Member<'b>>,
    kid: Option<Member<'b>>,
    typ: Option<Member<'b>>,
    b64: Option<Member<'b>>,
    crit: bool,
    salt: bool,
    /// Every member of [`STRINGS`] is a string and every member of [`STRING_LISTS`] a list
    /// of strings (`null` counting as absent).
    typed: bool,
}

struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = Header<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Header<'de>, A::Error> {
        let mut header = Header {
            alg: None,
            kid: None,
            typ: None,
            b64: None,
            crit: false,
            salt: false,
            typed: true,
        };
        each_member(access, |name, access| {
            let string = STRINGS.contains(&name);
            let list = STRING_LISTS.contains(&name);
            if !(string || list || name == "alg" || name == "b64") {
                skip(access)?;
                return Ok(());
            }
            let value: Member = access.next_value()?;
            header.typed &= match value {
                Member::Null => true,
                Member::Str(_) => !list,
                Member::Strings(_) => !string,
                _ => !string && !list,
            };
            match name {
                "alg" => header.alg = Some(value),
                "kid" => header.kid = Some(value),
                "typ" => header.typ = Some(value),
                "b64" => header.b64 = Some(value),
                "crit" => header.crit = true,
                "salt" => header.salt = true,
                _ => {}
            }
            Ok(())
        })?;
        Ok(header)
    }
}

/// jwt-simple's header rules: the registered JOSE members it reads have their types (strings;
/// `crit` and `x5c` lists of strings; `null` as absent), the encoded header is at most 8 KiB,
/// `typ` (when present) is `JWT` or ends in `+JWT`, and there is no `salt` (it is for
/// HMAC-derived keys only).
fn jwt_header_acceptable(token: &str, header: &Header<'_>) -> bool {
    let short = token
        .split('.')
        .next()
        .is_some_and(|h| h.len() <= MAX_HEADER_B64);
    let typ_ok = match &header.typ {
        None | Some(Member::Null) => true,
        Some(Member::Str(t)) => {
            // ASCII case folding: no other letter upper-cases to J, W or T (and no Unicode
            // case tables in the module).
            let t = t.to_ascii_uppercase();
            t == "JWT" || t.ends_with("+JWT")
        }
        Some(_) => false,
    };
    short && header.typed && typ_ok && !header.salt
}

/// What [`pool_claims`] extracts.
struct PoolClaims {
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    token_use: Option<TokenUse>,
    /// The app client ([`VerifiedToken::client_id`]).
    client: Option<String>,
}

/// The claim checks that need the pool but no key: time claim types (their values are
/// checked after the signature, see the module docs), `token_use`, the client, claim types.
fn pool_claims(payload: &Payload<'_>, pool: &Pool) -> Result<PoolClaims, AuthError> {
    let exp = timestamp(&payload.exp, "exp")?.ok_or(AuthError::MissingExpiry)?;
    let nbf = timestamp(&payload.nbf, "nbf")?;
    let iat = timestamp(&payload.iat, "iat")?;

    let token_use = match pool.token_use {
        None => None,
        Some(allowed) => {
            let use_ = payload
                .token_use
                .as_ref()
                .and_then(Member::as_str)
                .and_then(TokenUse::parse)
                .ok_or(AuthError::TokenUseNotAllowed)?;
            if !allowed.allows(use_) {
                return Err(AuthError::TokenUseNotAllowed);
            }
            Some(use_)
        }
    };
    let clients = client_candidates(payload.aud.as_ref(), payload.client_id.as_ref(), token_use)
        .map_err(AuthError::ClaimType)?;
    if !pool.client_ids.is_empty()
        && !clients
            .iter()
            .any(|c| pool.client_ids.iter().any(|allowed| allowed == c))
    {
        return Err(AuthError::ClientNotAllowed);
    }
    check_claim_types(payload)?;
    Ok(PoolClaims {
        exp,
        nbf,
        iat,
        token_use,
        client: clients.first().map(|c| c.to_string()),
    })
}

/// Step 2: the key named by `kid` in the pool's key set, then the signature — by the host
/// `backend` when it can check this algorithm, else by the module's own verifier.
pub fn verify_signature(
    unverified: UnverifiedToken<'_>,
    keys: &KeySet,
    config: &Config,
    now: u64,
    backend: &dyn SignatureBackend,
) -> Result<VerifiedToken, AuthError> {
    let jwk = keys.get(&unverified.kid).ok_or(AuthError::UnknownKeyId)?;
    // The JWK decides which algorithms its key serves: a token cannot pick another one.
    if !jwk.allows(unverified.alg) {
        return Err(AuthError::KeyAlgorithmMismatch);
    }
    let (signing_input, signature_b64) = unverified
        .token
        .rsplit_once('.')
        .ok_or(AuthError::Malformed)?;
    // Canonical base64url only (no padding, no stray trailing bits), like the other parts.
    let raw = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| AuthError::BadSignature)?;
    if !signature_valid(jwk, unverified.alg, signing_input.as_bytes(), &raw, backend) {
        return Err(AuthError::BadSignature);
    }
    let skew = config.clock_skew_seconds;
    if now > unverified.exp.saturating_add(skew) {
        return Err(AuthError::Expired);
    }
    if unverified
        .nbf
        .is_some_and(|nbf| nbf > now.saturating_add(skew))
    {
        return Err(AuthError::NotYetValid);
    }
    if unverified
        .iat
        .is_some_and(|iat| iat > now.saturating_add(skew))
    {
        return Err(AuthError::IssuedInFuture);
    }
    Ok(VerifiedToken {
        pool: unverified.pool,
        kid: unverified.kid,
        key_fingerprint: jwk.fingerprint,
        exp: unverified.exp,
        token_use: unverified.token_use,
        scopes: unverified.scopes,
        groups: unverified.groups,
        claims: unverified.claims,
    })
}

/// Whether `signature` (decoded from the token) is `jwk`'s over `signing_input` under `alg`:
/// the host `backend`'s answer when it gives one ([`host_answer`]), else the module's own
/// verifier's. The one place that picks who checks a signature.
pub fn signature_valid(
    jwk: &Jwk,
    alg: Algorithm,
    signing_input: &[u8],
    signature: &[u8],
    backend: &dyn SignatureBackend,
) -> bool {
    host_answer(jwk, alg, signing_input, signature, backend)
        .unwrap_or_else(|| jwk.verify(alg, signing_input, signature))
}

/// The host `backend`'s answer, when the key has a host form, the host offers `alg` for it
/// (RS*, ES*: `signature::host_hash`) and the backend decides; `None` leaves it to the module.
/// ECDSA signatures are handed over as DER.
pub fn host_answer(
    jwk: &Jwk,
    alg: Algorithm,
    signing_input: &[u8],
    signature: &[u8],
    backend: &dyn SignatureBackend,
) -> Option<bool> {
    let key = jwk.host_key.as_ref()?;
    let hash = host_hash(alg, key)?;
    let der;
    let signature = match key.kind {
        HostKeyKind::Rsa => signature,
        ec => {
            der = ecdsa_signature_to_der(signature, ec)?;
            der.as_slice()
        }
    };
    backend.verify(&HostCheck {
        hash,
        key,
        signature,
        text: signing_input,
    })
}

/// OAuth scopes: Cognito's space-separated `scope`, or `scp` (a list or a string) elsewhere.
fn scopes_of(payload: &Payload<'_>) -> Vec<String> {
    let split = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    match (&payload.scope, &payload.scp) {
        (Some(Member::Str(s)), _) | (_, Some(Member::Str(s))) => split(s),
        (_, Some(Member::Strings(items))) => items.iter().map(|s| s.to_string()).collect(),
        _ => Vec::new(),
    }
}

/// Claims that rules and headers read must have the type Cognito gives them: a wrong type is
/// a forged or broken token, not a value to coerce.
fn check_claim_types(payload: &Payload<'_>) -> Result<(), AuthError> {
    let string = |member: &Option<Member<'_>>, name: &'static str| match member {
        None | Some(Member::Str(_)) => Ok(()),
        Some(_) => Err(AuthError::ClaimType(name)),
    };
    string(&payload.sub, "sub")?;
    string(&payload.jti, "jti")?;
    string(&payload.nonce, "nonce")?;
    string(&payload.scope, "scope")?;
    string(&payload.client_id, "client_id")?;
    string(&payload.token_use, "token_use")?;
    let strings = |member: &Option<Member<'_>>, name: &'static str, or_string: bool| match member {
        None | Some(Member::Strings(_)) => Ok(()),
        Some(Member::Str(_)) if or_string => Ok(()),
        Some(_) => Err(AuthError::ClaimType(name)),
    };
    strings(&payload.groups, "cognito:groups", false)?;
    strings(&payload.scp, "scp", true)?;
    strings(&payload.aud, "aud", true)
}

/// A time claim: absent, or an integer number of seconds within jwt-simple's range.
fn timestamp(member: &Option<Member<'_>>, name: &'static str) -> Result<Option<u64>, AuthError> {
    match member {
        None => Ok(None),
        Some(Member::Unsigned(t)) if *t <= MAX_TIMESTAMP => Ok(Some(*t)),
        Some(_) => Err(AuthError::ClaimType(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwks::{parse_jwks, tests::rsa_jwk};
    use crate::signature::NoHostCrypto;
    use jwt_simple::prelude::*;
    use serde_json::{json, Value};

    const NOW: u64 = 1_800_000_000;
    const POOL: &str = "us-east-1_TestPool1";
    const ISS: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TestPool1";
    const CLIENT: &str = "client-abc";

    fn key() -> &'static RS256KeyPair {
        crate::jwks::tests::test_key(0)
    }

    fn other_key() -> &'static RS256KeyPair {
        crate::jwks::tests::test_key(1)
    }

    fn config() -> Config {
        Config::parse(
            json!({"user_pools": [{"user_pool_id": POOL, "client_ids": [CLIENT], "jwks_cluster": "c"}]})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
        .0
    }

    fn keys() -> KeySet {
        let body = json!({"keys": [rsa_jwk(key(), "kid-1", Some("RS256"))]}).to_string();
        parse_jwks(body.as_bytes(), 65536).unwrap().keys
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// Signs `header.payload` with the test key (RS256), whatever the header says.
    fn sign(header: &Value, payload: &Value) -> String {
        sign_raw(&b64(header), &b64(payload), key())
    }

    /// Signs `header_b64.payload_b64` with RS256 whatever the header says (jwt-simple only
    /// signs headers it builds itself, so adversarial headers go through superboring).
    fn sign_raw(header_b64: &str, payload_b64: &str, with: &RS256KeyPair) -> String {
        use superboring::hash::MessageDigest;
        use superboring::pkey::PKey;
        use superboring::rsa::Padding;
        use superboring::sign::Signer;
        let input = format!("{header_b64}.{payload_b64}");
        let pkey = PKey::from_rsa(with.key_pair().as_ref().clone()).unwrap();
        let mut signer = Signer::new(MessageDigest::sha256(), &pkey).unwrap();
        signer.set_rsa_padding(Padding::PKCS1).unwrap();
        signer.update(input.as_bytes()).unwrap();
        let sig = signer.sign_to_vec().unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn id_header() -> Value {
        json!({"kid": "kid-1", "alg": "RS256"})
    }

    /// A Cognito id token for alice, valid for an hour from NOW.
    fn id_payload() -> Value {
        json!({
            "sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "aud": CLIENT, "iss": ISS,
            "token_use": "id", "cognito:username": "alice", "cognito:groups": ["admins"],
            "auth_time": NOW - 10, "iat": NOW - 10, "exp": NOW + 3600, "email": "alice@example.com"
        })
    }

    /// A Cognito access token, as issued by the client-credentials flow with custom scopes.
    fn access_payload() -> Value {
        json!({
            "sub": "m2m", "client_id": CLIENT, "iss": ISS, "token_use": "access",
            "scope": "api/read api/write", "iat": NOW - 10, "exp": NOW + 3600, "jti": "j"
        })
    }

    fn check(token: &str) -> Result<VerifiedToken, AuthError> {
        check_at(token, NOW)
    }

    fn check_at(token: &str, now: u64) -> Result<VerifiedToken, AuthError> {
        let c = config();
        let u = inspect(token, &c).map_err(|e| e.reason)?;
        verify_signature(u, &keys(), &c, now, &NoHostCrypto)
    }

    fn with(mut payload: Value, key: &str, value: Value) -> Value {
        payload[key] = value;
        payload
    }

    fn without(mut payload: Value, key: &str) -> Value {
        payload.as_object_mut().unwrap().remove(key);
        payload
    }

    #[test]
    fn valid_id_token_is_verified_with_its_groups() {
        let v = check(&sign(&id_header(), &id_payload())).unwrap();
        assert_eq!(v.token_use, Some(TokenUse::Id));
        assert_eq!(v.groups, vec!["admins"]);
        assert_eq!(v.sub(), Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"));
        assert_eq!(v.client_id(), Some(CLIENT));
    }

    #[test]
    fn valid_access_token_is_verified_with_its_scopes() {
        let v = check(&sign(&id_header(), &access_payload())).unwrap();
        assert_eq!(v.token_use, Some(TokenUse::Access));
        assert_eq!(v.scopes, vec!["api/read", "api/write"]);
        assert_eq!(v.client_id(), Some(CLIENT));
    }

    #[test]
    fn rules_see_the_use_scopes_and_groups_the_token_carries() {
        let access = check(&sign(&id_header(), &access_payload())).unwrap();
        assert_eq!(TokenFacts::token_use(&access), Some(TokenUse::Access));
        assert_eq!(access.scopes(), ["api/read", "api/write"]);
        let id = check(&sign(&id_header(), &id_payload())).unwrap();
        assert_eq!(TokenFacts::token_use(&id), Some(TokenUse::Id));
        assert_eq!(id.groups(), ["admins"]);
        assert!(id.scopes().is_empty());
        assert_eq!(id.claim_values("cognito:groups"), ["admins"]);
        assert_eq!(id.claim_values("sub"), [id.sub().unwrap()]);
        assert!(
            id.claim_values("exp").is_empty(),
            "a number is not a string value"
        );
        assert!(id.claim_values("absent").is_empty());
    }

    #[test]
    fn the_payload_segment_is_the_middle_one() {
        assert_eq!(payload_segment("h.p.s"), Some("p"));
        assert_eq!(payload_segment("h"), None);
    }

    #[test]
    fn a_refusal_reads_as_its_reason() {
        let rejected = Rejected::from(AuthError::MissingKeyId);
        assert_eq!(rejected.to_string(), AuthError::MissingKeyId.to_string());
        assert!(!rejected.to_string().is_empty());
    }

    #[test]
    fn a_token_of_exactly_max_token_bytes_is_read() {
        let token = sign(&id_header(), &id_payload());
        let mut c = config();
        c.max_token_bytes = token.len();
        assert!(inspect(&token, &c).is_ok());
        c.max_token_bytes = token.len() - 1;
        assert_eq!(
            inspect(&token, &c).map(|_| ()).unwrap_err().reason,
            AuthError::TokenTooLarge
        );
    }

    #[test]
    fn an_empty_kid_is_no_kid() {
        let header = json!({"kid": "", "alg": "RS256"});
        assert_eq!(
            check(&sign(&header, &id_payload())).map(|_| ()),
            Err(AuthError::MissingKeyId)
        );
    }

    #[test]
    fn exp_in_past_beyond_skew_is_expired_but_within_skew_ok() {
        let t = sign(&id_header(), &with(id_payload(), "exp", json!(NOW - 61)));
        assert_eq!(check(&t), Err(AuthError::Expired));
        let t = sign(&id_header(), &with(id_payload(), "exp", json!(NOW - 60)));
        assert!(check(&t).is_ok());
    }

    #[test]
    fn forged_expired_token_is_invalid_not_expired() {
        let t = sign_raw(
            &b64(&id_header()),
            &b64(&with(id_payload(), "exp", json!(NOW - 600))),
            other_key(),
        );
        assert_eq!(check(&t), Err(AuthError::BadSignature));
    }

    #[test]
    fn authentic_token_issued_before_nbf_passes_jwt_simple_and_our_checks() {
        // nbf and iat in the past, exp in the future: jwt-simple's clock (set to exp) agrees.
        let t = sign(&id_header(), &with(id_payload(), "nbf", json!(NOW - 100)));
        assert!(check(&t).is_ok());
    }

    #[test]
    fn missing_exp_is_refused_unlike_jwt_simple_default() {
        let t = sign(&id_header(), &without(id_payload(), "exp"));
        assert_eq!(check(&t), Err(AuthError::MissingExpiry));
    }

    #[test]
    fn time_claims_of_wrong_type_are_refused() {
        for bad in [
            json!("1900000000"),
            json!(1.9e9),
            json!(-1),
            json!(null),
            json!(u64::MAX),
            json!(1u64 << 40),
        ] {
            let t = sign(&id_header(), &with(id_payload(), "exp", bad.clone()));
            assert_eq!(check(&t), Err(AuthError::ClaimType("exp")), "exp {bad}");
            let t = sign(&id_header(), &with(id_payload(), "nbf", bad.clone()));
            assert_eq!(check(&t), Err(AuthError::ClaimType("nbf")), "nbf {bad}");
        }
    }

    #[test]
    fn nbf_and_iat_in_future_beyond_skew_are_refused() {
        let t = sign(&id_header(), &with(id_payload(), "nbf", json!(NOW + 61)));
        assert_eq!(check(&t), Err(AuthError::NotYetValid));
        let t = sign(&id_header(), &with(id_payload(), "nbf", json!(NOW + 60)));
        assert!(check(&t).is_ok());
        let t = sign(&id_header(), &with(id_payload(), "iat", json!(NOW + 61)));
        assert_eq!(check(&t), Err(AuthError::IssuedInFuture));
        let t = sign(&id_header(), &with(id_payload(), "iat", json!(NOW + 60)));
        assert!(check(&t).is_ok());
    }

    /// A host backend with a fixed answer, counting how often it is asked.
    struct FixedHost(Option<bool>, std::cell::Cell<usize>);

    impl SignatureBackend for FixedHost {
        fn verify(&self, check: &HostCheck<'_>) -> Option<bool> {
            assert_eq!(check.hash, "sha256");
            self.1.set(self.1.get() + 1);
            self.0
        }
    }

    #[test]
    fn the_host_decides_what_it_checks_and_the_module_the_rest() {
        let body = json!({"keys": [rsa_jwk(key(), "k", None)]}).to_string();
        let keys = parse_jwks(body.as_bytes(), 65536).unwrap().keys;
        let jwk = keys.get("k").unwrap();
        let token = sign(&id_header(), &id_payload());
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let input = input.as_bytes();
        let host = |answer| FixedHost(answer, Default::default());
        // RS256: the host's answer is the answer, either way.
        let refusing = host(Some(false));
        assert_eq!(
            host_answer(jwk, Algorithm::RS256, input, &sig, &refusing),
            Some(false)
        );
        assert!(!signature_valid(
            jwk,
            Algorithm::RS256,
            input,
            &sig,
            &refusing
        ));
        assert_eq!(refusing.1.get(), 2);
        let mut tampered = sig.clone();
        tampered[0] ^= 1;
        assert!(signature_valid(
            jwk,
            Algorithm::RS256,
            input,
            &tampered,
            &host(Some(true))
        ));
        // A host that cannot decide leaves it to the module.
        assert!(signature_valid(
            jwk,
            Algorithm::RS256,
            input,
            &sig,
            &host(None)
        ));
        assert!(!signature_valid(
            jwk,
            Algorithm::RS256,
            input,
            &tampered,
            &host(None)
        ));
        // PS256 is never asked of the host (its function has no PSS).
        let never = host(Some(true));
        assert_eq!(
            host_answer(jwk, Algorithm::PS256, input, &sig, &never),
            None
        );
        assert!(!signature_valid(jwk, Algorithm::PS256, input, &sig, &never));
        assert_eq!(never.1.get(), 0);
    }

    #[test]
    fn issuer_must_name_a_configured_pool_exactly() {
        for iss in [
            json!("https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Other"),
            json!(format!("{ISS}/")),
            json!(ISS.to_uppercase()),
            json!(5),
        ] {
            let t = sign(&id_header(), &with(id_payload(), "iss", iss.clone()));
            assert_eq!(check(&t), Err(AuthError::UnknownIssuer), "{iss}");
        }
        let t = sign(&id_header(), &without(id_payload(), "iss"));
        assert_eq!(check(&t), Err(AuthError::UnknownIssuer));
    }

    #[test]
    fn client_is_aud_for_id_tokens_and_client_id_for_access_tokens() {
        let t = sign(&id_header(), &with(id_payload(), "aud", json!("other")));
        assert_eq!(check(&t), Err(AuthError::ClientNotAllowed));
        let t = sign(
            &id_header(),
            &with(id_payload(), "aud", json!(["other", CLIENT])),
        );
        assert!(check(&t).is_ok());
        let t = sign(
            &id_header(),
            &with(access_payload(), "client_id", json!("other")),
        );
        assert_eq!(check(&t), Err(AuthError::ClientNotAllowed));
        // An access token's aud is not its client: Cognito access tokens have none.
        let t = sign(
            &id_header(),
            &with(without(access_payload(), "client_id"), "aud", json!(CLIENT)),
        );
        assert_eq!(check(&t), Err(AuthError::ClientNotAllowed));
    }

    #[test]
    fn token_use_must_be_present_and_allowed() {
        let t = sign(&id_header(), &without(id_payload(), "token_use"));
        assert_eq!(check(&t), Err(AuthError::TokenUseNotAllowed));
        let t = sign(
            &id_header(),
            &with(id_payload(), "token_use", json!("refresh")),
        );
        assert_eq!(check(&t), Err(AuthError::TokenUseNotAllowed));
        let mut c = config();
        c.pools[0].token_use = Some(crate::config::AllowedTokenUse {
            id: false,
            access: true,
        });
        let t = sign(&id_header(), &id_payload());
        assert_eq!(
            inspect(&t, &c).err().map(|e| e.reason),
            Some(AuthError::TokenUseNotAllowed)
        );
    }

    #[test]
    fn refusals_after_the_issuer_name_the_pool() {
        let c = config();
        let t = sign(&id_header(), &with(id_payload(), "aud", json!("other")));
        let e = inspect(&t, &c).err().unwrap();
        assert_eq!((e.reason, e.pool), (AuthError::ClientNotAllowed, Some(0)));
        let t = sign(
            &id_header(),
            &with(id_payload(), "iss", json!("https://elsewhere")),
        );
        assert_eq!(inspect(&t, &c).err().unwrap().pool, None);
    }

    #[test]
    fn tampered_payload_or_signature_fails_the_signature() {
        let t = sign(&id_header(), &id_payload());
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&with(id_payload(), "cognito:groups", json!(["root"]))),
            parts[2]
        );
        assert_eq!(check(&forged), Err(AuthError::BadSignature));
        for pos in [0, parts[2].len() / 2, parts[2].len() - 2] {
            let mut sig = parts[2].as_bytes().to_vec();
            sig[pos] = if sig[pos] == b'A' { b'B' } else { b'A' };
            let t = format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                String::from_utf8(sig).unwrap()
            );
            assert_eq!(check(&t), Err(AuthError::BadSignature), "flip at {pos}");
        }
    }

    #[test]
    fn signature_by_another_key_with_the_same_kid_fails() {
        let t = sign_raw(&b64(&id_header()), &b64(&id_payload()), other_key());
        assert_eq!(check(&t), Err(AuthError::BadSignature));
    }

    #[test]
    fn alg_none_and_hmac_are_refused_before_any_key_lookup() {
        for alg in [
            "none", "None", "NONE", "HS256", "HS384", "HS512", "rs256", "",
        ] {
            let t = format!(
                "{}.{}.c2ln",
                b64(&json!({"alg": alg, "kid": "kid-1"})),
                b64(&id_payload())
            );
            assert_eq!(check(&t), Err(AuthError::AlgorithmNotAllowed), "{alg}");
        }
        let t = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&id_payload()));
        assert_eq!(check(&t), Err(AuthError::Malformed));
    }

    #[test]
    fn alg_that_the_jwk_does_not_serve_is_refused() {
        let t = sign(&json!({"kid": "kid-1", "alg": "PS256"}), &id_payload());
        assert_eq!(check(&t), Err(AuthError::KeyAlgorithmMismatch));
    }

    #[test]
    fn unknown_or_missing_kid_is_refused() {
        let t = sign(&json!({"kid": "nope", "alg": "RS256"}), &id_payload());
        assert_eq!(check(&t), Err(AuthError::UnknownKeyId));
        let t = sign(&json!({"alg": "RS256"}), &id_payload());
        assert_eq!(check(&t), Err(AuthError::MissingKeyId));
        let t = sign(&json!({"alg": "RS256", "kid": 7}), &id_payload());
        assert_eq!(check(&t), Err(AuthError::MissingKeyId));
    }

    #[test]
    fn crit_and_b64_false_headers_are_refused() {
        let t = sign(
            &json!({"kid": "kid-1", "alg": "RS256", "crit": ["exp"]}),
            &id_payload(),
        );
        assert_eq!(check(&t), Err(AuthError::CriticalHeader));
        let t = sign(
            &json!({"kid": "kid-1", "alg": "RS256", "b64": false}),
            &id_payload(),
        );
        assert_eq!(check(&t), Err(AuthError::CriticalHeader));
    }

    #[test]
    fn headers_jwt_simple_would_refuse_are_refused_for_every_backend() {
        for header in [
            json!({"kid": "kid-1", "alg": "RS256", "typ": "JOSE"}),
            json!({"kid": "kid-1", "alg": "RS256", "typ": 1}),
            json!({"kid": "kid-1", "alg": "RS256", "x5c": [1]}),
            json!({"kid": "kid-1", "alg": "RS256", "jku": 1}),
            json!({"kid": "kid-1", "alg": "RS256", "salt": "AAAA"}),
            json!({"kid": "kid-1", "alg": "RS256", "jwk": {"kty": "RSA"}}),
        ] {
            let t = sign(&header, &id_payload());
            assert_eq!(check(&t), Err(AuthError::Malformed), "{header}");
        }
        let t = sign(
            &json!({"kid": "kid-1", "alg": "RS256", "typ": "at+jwt"}),
            &id_payload(),
        );
        assert!(check(&t).is_ok());
    }

    #[test]
    fn header_rules_agree_with_jwt_simple() {
        let reference = RS256PublicKey::from_components(
            &key().public_key().to_components().n,
            &key().public_key().to_components().e,
        )
        .unwrap();
        let long_cty = "x".repeat(6200);
        for header in [
            json!({"kid": "kid-1", "alg": "RS256"}),
            json!({"kid": "kid-1", "alg": "RS256", "typ": "JWT"}),
            json!({"kid": "kid-1", "alg": "RS256", "typ": "jwt"}),
            json!({"kid": "kid-1", "alg": "RS256", "typ": "at+jwt"}),
            json!({"kid": "kid-1", "alg": "RS256", "typ": null}),
            json!({"kid": "kid-1", "alg": "RS256", "typ": "JOSE"}),
            json!({"kid": "kid-1", "alg": "RS256", "typ": ["JWT"]}),
            json!({"kid": "kid-1", "alg": "RS256", "cty": "JWT"}),
            json!({"kid": "kid-1", "alg": "RS256", "cty": 5}),
            json!({"kid": "kid-1", "alg": "RS256", "x5t": "abc", "x5t#S256": "def"}),
            json!({"kid": "kid-1", "alg": "RS256", "x5t#S256": false}),
            json!({"kid": "kid-1", "alg": "RS256", "x5c": ["a", "b"]}),
            json!({"kid": "kid-1", "alg": "RS256", "x5c": "a"}),
            json!({"kid": "kid-1", "alg": "RS256", "x5u": {}}),
            json!({"kid": "kid-1", "alg": "RS256", "other": {"any": 1}}),
            json!({"kid": "kid-1", "alg": "RS256", "cty": long_cty}),
        ] {
            let t = sign(&header, &id_payload());
            let theirs = reference
                .verify_token::<NoCustomClaims>(
                    &t,
                    Some(VerificationOptions {
                        artificial_time: Some(UnixTimeStamp::from_secs(NOW)),
                        ..Default::default()
                    }),
                )
                .is_ok();
            assert_eq!(check(&t).is_ok(), theirs, "{:.80}", header.to_string());
        }
    }

    #[test]
    fn key_carrying_headers_are_ignored_not_followed() {
        let t = sign(
            &json!({"kid": "kid-1", "alg": "RS256", "jku": "http://127.0.0.1:1/jwks", "x5u": "http://127.0.0.1:1/x"}),
            &id_payload(),
        );
        assert!(check(&t).is_ok());
    }

    #[test]
    fn malformed_structures_are_refused() {
        let good = sign(&id_header(), &id_payload());
        let parts: Vec<&str> = good.split('.').collect();
        let cases = [
            "".to_string(),
            "abc".to_string(),
            format!("{}.{}", parts[0], parts[1]),
            format!("{good}.extra"),
            format!(".{}.{}", parts[1], parts[2]),
            format!("{}..{}", parts[0], parts[2]),
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}", parts[0].replace('-', "+"), parts[1], "a+b/"),
            format!("{} .{}.{}", parts[0], parts[1], parts[2]),
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode("[1,2]"),
                parts[1],
                parts[2]
            ),
            format!(
                "{}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD.encode("not json"),
                parts[2]
            ),
            format!(
                "{}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD.encode("{} trailing"),
                parts[2]
            ),
        ];
        for t in cases {
            let r = check(&t);
            assert!(
                matches!(
                    r,
                    Err(AuthError::Malformed) | Err(AuthError::AlgorithmNotAllowed)
                ),
                "{t:.60}: {r:?}"
            );
        }
    }

    #[test]
    fn deeply_nested_json_is_refused_without_stack_overflow() {
        let mut c = config();
        c.max_token_bytes = 1 << 20;
        let nested = format!(r#"{{"a":{}1{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        let t = format!(
            "{}.{}.c2ln",
            b64(&id_header()),
            URL_SAFE_NO_PAD.encode(nested)
        );
        assert_eq!(
            inspect(&t, &c).err().map(|e| e.reason),
            Some(AuthError::Malformed)
        );
    }

    #[test]
    fn duplicate_members_are_refused() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"kid-1","alg":"HS256"}"#);
        let t = sign_raw(&header, &b64(&id_payload()), key());
        assert_eq!(check(&t), Err(AuthError::DuplicateClaim));
        let payload_json = id_payload().to_string();
        let dup = format!(r#"{{"sub":"evil",{}"#, &payload_json[1..]);
        let t = sign_raw(&b64(&id_header()), &URL_SAFE_NO_PAD.encode(dup), key());
        assert_eq!(check(&t), Err(AuthError::DuplicateClaim));
    }

    #[test]
    fn oversize_token_is_refused_without_decoding() {
        let mut c = config();
        c.max_token_bytes = 300;
        let t = sign(&id_header(), &id_payload());
        assert!(t.len() > 300);
        assert_eq!(
            inspect(&t, &c).err().map(|e| e.reason),
            Some(AuthError::TokenTooLarge)
        );
        assert_eq!(
            inspect(&"a".repeat(1 << 20), &c).err().map(|e| e.reason),
            Some(AuthError::TokenTooLarge)
        );
    }

    #[test]
    fn claim_types_that_rules_read_are_enforced() {
        let t = sign(
            &id_header(),
            &with(id_payload(), "cognito:groups", json!("admins")),
        );
        assert_eq!(check(&t), Err(AuthError::ClaimType("cognito:groups")));
        let t = sign(&id_header(), &with(id_payload(), "sub", json!(1)));
        assert_eq!(check(&t), Err(AuthError::ClaimType("sub")));
        let t = sign(&id_header(), &with(id_payload(), "aud", json!({"a": 1})));
        assert_eq!(check(&t), Err(AuthError::ClaimType("aud")));
        // A list must hold strings only.
        let t = sign(
            &id_header(),
            &with(id_payload(), "cognito:groups", json!(["admins", 1])),
        );
        assert_eq!(check(&t), Err(AuthError::ClaimType("cognito:groups")));
        let t = sign(
            &id_header(),
            &with(id_payload(), "aud", json!([CLIENT, null])),
        );
        assert_eq!(check(&t), Err(AuthError::ClaimType("aud")));
    }

    #[test]
    fn configured_claims_become_headers_and_rule_values_as_before() {
        let c = Config::parse(
            json!({"user_pools": [{"user_pool_id": POOL, "client_ids": [CLIENT], "jwks_cluster": "c"}],
                   "claims_to_headers": {"sub": "x-sub", "aud": "x-aud", "auth_time": "x-auth-time",
                       "n": "x-n", "f": "x-f", "b": "x-b", "o": "x-o", "l": "x-l", "z": "x-z",
                       "s": "x-s", "absent": "x-absent"},
                   "rules": [{"match": {"prefix": "/"}, "require": {"claims": {"custom:tenant": ["acme"]}}}]})
            .to_string()
            .as_bytes(),
        )
        .unwrap()
        .0;
        assert!(c.named_claims.contains(&"custom:tenant".to_string()));
        let payload = r#"{"sub":"u1","aud":["client-abc","other"],"iss":"ISS","token_use":"id",
            "exp":EXP,"auth_time":1.5,"n":-7,"f":1e20,"b":true,"o":{"b":[1,"x\n"],"a":null,"b":2},
            "l":["a",1,null,{"k":"v"},["y"]],"z":null,"s":"tab\there ","custom:tenant":["acme","x"]}"#
            .replace("ISS", ISS)
            .replace("EXP", &(NOW + 3600).to_string());
        let t = sign_raw(&b64(&id_header()), &URL_SAFE_NO_PAD.encode(payload), key());
        let u = inspect(&t, &c).unwrap();
        let v = verify_signature(u, &keys(), &c, NOW, &NoHostCrypto).unwrap();
        let headers = crate::identity::claim_headers(&c.claims_to_headers, &v);
        let expected = [
            ("x-aud", "client-abc,other"),
            ("x-auth-time", "1.5"),
            ("x-b", "true"),
            // serde_json's own writing of the float (a Value's too).
            ("x-f", "1e+20"),
            ("x-l", r#"a,1,null,{"k":"v"},["y"]"#),
            ("x-n", "-7"),
            ("x-o", r#"{"a":null,"b":2}"#),
            ("x-s", "tabhere"),
            ("x-sub", "u1"),
        ];
        let got: Vec<(&str, &str)> = headers
            .iter()
            .map(|(h, v)| (h.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(v.claim_values("custom:tenant"), ["acme", "x"]);
        assert_eq!(v.claim_values("aud"), ["client-abc", "other"]);
        assert_eq!(v.client_id(), Some(CLIENT));
        // A configured time claim that is not an integer is still no revocation fact.
        assert_eq!(crate::revocation::token_facts(&v.claims).auth_time, None);
    }

    #[test]
    fn the_first_refusal_is_the_one_it_always_was() {
        // A claim of the wrong type is only looked at once the issuer named a pool.
        let t = sign(
            &id_header(),
            &with(
                with(id_payload(), "sub", json!(1)),
                "iss",
                json!("https://elsewhere"),
            ),
        );
        assert_eq!(check(&t), Err(AuthError::UnknownIssuer));
        // A repeated name is refused where it is found, before a later syntax error.
        let payload = URL_SAFE_NO_PAD.encode(r#"{"x":1,"x":2,"#);
        let t = format!("{}.{payload}.c2ln", b64(&id_header()));
        assert_eq!(check(&t), Err(AuthError::DuplicateClaim));
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","alg":"RS256"}"#);
        let t = format!("{header}.{}.c2ln", URL_SAFE_NO_PAD.encode("not json"));
        assert_eq!(check(&t), Err(AuthError::DuplicateClaim));
        // Members nobody reads are read as strictly as the others.
        let good = id_payload().to_string();
        for bad in [r#""x":1e400"#, r#""x":"\ud800""#, r#""x":[1,{"a":01}]"#] {
            let payload = format!("{{{bad},{}", &good[1..]);
            let t = sign_raw(&b64(&id_header()), &URL_SAFE_NO_PAD.encode(payload), key());
            assert_eq!(check(&t), Err(AuthError::Malformed), "{bad}");
        }
        let mut payload = b"{\"x\":\"\xff\",".to_vec();
        payload.extend_from_slice(&good.as_bytes()[1..]);
        let t = sign_raw(&b64(&id_header()), &URL_SAFE_NO_PAD.encode(payload), key());
        assert_eq!(check(&t), Err(AuthError::Malformed));
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"kid-1","x":1e400}"#);
        let t = sign_raw(&header, &b64(&id_payload()), key());
        assert_eq!(check(&t), Err(AuthError::Malformed));
    }

    /// The fresh-token path's own cost (README "Benchmarks"): `inspect`, `verify_signature`
    /// and the claim headers of a Cognito-shaped access and id token, with the signature
    /// answered by a host that says yes (Envoy's `verify_signature` is outside the module) and
    /// with the module's own RS256. Prints only: `cargo test --release --lib
    /// fresh_token_check_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn fresh_token_check_cost() {
        use std::hint::black_box;
        use std::time::Instant;
        let c = Config::parse(
            json!({"user_pools": [{"user_pool_id": POOL, "client_ids": [CLIENT], "jwks_cluster": "c"}],
                   "claims_to_headers": {"sub": "x-cognito-sub", "cognito:groups": "x-cognito-groups",
                                         "username": "x-cognito-username"}})
            .to_string()
            .as_bytes(),
        )
        .unwrap()
        .0;
        let ks = keys();
        let access = sign(
            &id_header(),
            &json!({
                "sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "cognito:groups": ["admins", "ops"],
                "iss": ISS, "version": 2, "client_id": CLIENT,
                "origin_jti": "bbbbbbbb-cccc-dddd-eeee-ffffffffffff", "event_id": "cccccccc-dddd-eeee-ffff-000000000000",
                "token_use": "access", "scope": "aws.cognito.signin.user.admin api/read api/write",
                "auth_time": NOW - 10, "exp": NOW + 3600, "iat": NOW - 10,
                "jti": "dddddddd-eeee-ffff-0000-111111111111", "username": "alice"
            }),
        );
        let id = sign(
            &id_header(),
            &json!({
                "sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "cognito:groups": ["admins", "ops"],
                "email_verified": true, "iss": ISS, "cognito:username": "alice",
                "origin_jti": "bbbbbbbb-cccc-dddd-eeee-ffffffffffff", "aud": CLIENT,
                "event_id": "cccccccc-dddd-eeee-ffff-000000000000", "token_use": "id",
                "auth_time": NOW - 10, "exp": NOW + 3600, "iat": NOW - 10,
                "jti": "eeeeeeee-ffff-0000-1111-222222222222", "email": "alice@example.com"
            }),
        );
        let host = FixedHost(Some(true), Default::default());
        // The best of 20 batches: on a shared machine, the mean mostly measures the others.
        let run = |token: &str, backend: &dyn SignatureBackend, n: u32| {
            let mut best = f64::MAX;
            for _ in 0..20 {
                let start = Instant::now();
                for _ in 0..n / 20 {
                    let u = inspect(black_box(token), &c).unwrap();
                    let v = verify_signature(u, &ks, &c, NOW, backend).unwrap();
                    black_box(crate::identity::claim_headers(&c.claims_to_headers, &v));
                }
                best = best.min(start.elapsed().as_secs_f64() * 1e6 / f64::from(n / 20));
            }
            best
        };
        for (name, token) in [("access", &access), ("id", &id)] {
            let host_us = run(token, &host, 20_000);
            let module_us = run(token, &NoHostCrypto, 2_000);
            println!(
                "fresh {name} token ({} bytes): {host_us:.2} us with the host's signature check (not counted), {module_us:.1} us with the module's RS256",
                token.len()
            );
        }
    }

    #[test]
    fn scp_list_or_string_gives_scopes_for_other_issuers() {
        // The payload as `inspect` reads it (its bytes live as long as the test).
        let m = |v: Value| {
            let bytes: &'static [u8] = Vec::leak(v.to_string().into_bytes());
            Payload::read(bytes, &[]).unwrap()
        };
        assert_eq!(scopes_of(&m(json!({"scp": ["a", "b"]}))), vec!["a", "b"]);
        assert_eq!(scopes_of(&m(json!({"scp": "a b"}))), vec!["a", "b"]);
        assert_eq!(scopes_of(&m(json!({"scope": "x"}))), vec!["x"]);
        assert!(scopes_of(&m(json!({}))).is_empty());
    }
}
