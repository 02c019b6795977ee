//! JWKS parsing and validation (README "Keys"): a fetched body becomes a [`KeySet`] of verifying
//! keys by `kid`, each converted once here so that verification does no key parsing.
//!
//! A key that cannot be used (unknown type, symmetric, too weak, `use` other than `sig`) is
//! skipped and reported, never fatal; a set with no usable key at all is refused.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use serde::Deserialize;

use crate::signature::{ec_host_key, rsa_host_key, HostKey, HostKeyKind};

/// The asymmetric JWS algorithms the filter accepts. `none` and `HS*` are not representable:
/// an HMAC "verified" with a public key is the classic algorithm-confusion forgery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    /// Exact, case-sensitive JOSE names only (`rs256` is not `RS256`).
    pub fn parse(name: &str) -> Option<Algorithm> {
        Some(match name {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "EdDSA" => Algorithm::EdDSA,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    const RSA: [Algorithm; 6] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ];
}

/// A key ready to verify one algorithm.
#[derive(Debug, Clone)]
pub enum VerifyingKey {
    RS256(RS256PublicKey),
    RS384(RS384PublicKey),
    RS512(RS512PublicKey),
    PS256(PS256PublicKey),
    PS384(PS384PublicKey),
    PS512(PS512PublicKey),
    ES256(ES256PublicKey),
    ES384(ES384PublicKey),
    EdDSA(Ed25519PublicKey),
}

impl VerifyingKey {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            VerifyingKey::RS256(_) => Algorithm::RS256,
            VerifyingKey::RS384(_) => Algorithm::RS384,
            VerifyingKey::RS512(_) => Algorithm::RS512,
            VerifyingKey::PS256(_) => Algorithm::PS256,
            VerifyingKey::PS384(_) => Algorithm::PS384,
            VerifyingKey::PS512(_) => Algorithm::PS512,
            VerifyingKey::ES256(_) => Algorithm::ES256,
            VerifyingKey::ES384(_) => Algorithm::ES384,
            VerifyingKey::EdDSA(_) => Algorithm::EdDSA,
        }
    }

    /// Verifies the token's signature with jwt-simple. Claims are checked by `verify.rs`
    /// before this is called; jwt-simple's own time checks run with the same clock and skew.
    pub fn verify(&self, token: &str, options: VerificationOptions) -> bool {
        let o = Some(options);
        match self {
            VerifyingKey::RS256(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            VerifyingKey::RS384(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            VerifyingKey::RS512(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            VerifyingKey::PS256(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            VerifyingKey::PS384(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            VerifyingKey::PS512(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            VerifyingKey::ES256(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            VerifyingKey::ES384(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
            VerifyingKey::EdDSA(k) => k.verify_token::<NoCustomClaims>(token, o).is_ok(),
        }
    }
}

/// One usable key of a JWKS.
#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: String,
    /// Identifies the key material: a refresh that keeps the `kid` but changes the key must
    /// invalidate what the old key verified.
    pub fingerprint: u64,
    /// One verifier per algorithm the key may be used with (just the JWK's `alg` when set).
    verifiers: Vec<VerifyingKey>,
    /// The key as a host crypto library imports it (RSA and EC keys), built once here.
    pub host_key: Option<HostKey>,
}

impl Jwk {
    /// The verifier for `alg`, if this key may verify it.
    pub fn verifier(&self, alg: Algorithm) -> Option<&VerifyingKey> {
        self.verifiers.iter().find(|v| v.algorithm() == alg)
    }
}

/// The usable keys of one JWKS, by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, Jwk>,
}

impl KeySet {
    pub fn get(&self, kid: &str) -> Option<&Jwk> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Key ids, sorted (for logs).
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }
}

/// A parsed JWKS and the keys that were skipped, with why (to be logged).
#[derive(Debug)]
pub struct ParsedJwks {
    pub keys: KeySet,
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct WireJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireJwk {
    kty: Option<String>,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Smallest RSA modulus accepted: NIST and Cognito use 2048 bits; shorter keys are forgeable.
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;

/// Parses and validates a JWKS body.
pub fn parse_jwks(body: &[u8], max_bytes: usize) -> Result<ParsedJwks, String> {
    if body.len() > max_bytes {
        return Err(format!(
            "JWKS is {} bytes, over max_jwks_bytes ({max_bytes})",
            body.len()
        ));
    }
    let wire: WireJwks =
        serde_json::from_slice(body).map_err(|e| format!("JWKS is not a JSON key set: {e}"))?;
    let mut keys: HashMap<String, Jwk> = HashMap::new();
    let mut skipped = Vec::new();
    let mut duplicated: Vec<String> = Vec::new();
    for (i, raw) in wire.keys.into_iter().enumerate() {
        match parse_key(raw) {
            Ok(jwk) => {
                if keys.contains_key(&jwk.kid) || duplicated.contains(&jwk.kid) {
                    // Two keys with one kid: which one a token means is a guess, so neither.
                    skipped.push(format!("key {i}: kid {:?} appears more than once", jwk.kid));
                    keys.remove(&jwk.kid);
                    duplicated.push(jwk.kid);
                } else {
                    keys.insert(jwk.kid.clone(), jwk);
                }
            }
            Err(why) => skipped.push(format!("key {i}: {why}")),
        }
    }
    if keys.is_empty() {
        return Err(format!(
            "JWKS has no usable key ({})",
            if skipped.is_empty() {
                "it is empty".to_string()
            } else {
                skipped.join("; ")
            }
        ));
    }
    Ok(ParsedJwks {
        keys: KeySet { keys },
        skipped,
    })
}

fn parse_key(raw: serde_json::Value) -> Result<Jwk, String> {
    let wire: WireJwk =
        serde_json::from_value(raw).map_err(|e| format!("not a JWK object: {e}"))?;
    let kid = match wire.kid {
        Some(k) if !k.is_empty() => k,
        _ => return Err("no kid".into()),
    };
    let kty = wire.kty.ok_or_else(|| format!("kid {kid:?}: no kty"))?;
    if let Some(u) = &wire.use_ {
        if u != "sig" {
            return Err(format!("kid {kid:?}: use {u:?} is not \"sig\""));
        }
    }
    let alg = match &wire.alg {
        None => None,
        Some(a) => Some(Algorithm::parse(a).ok_or_else(|| {
            format!("kid {kid:?}: alg {a:?} is not an accepted asymmetric algorithm")
        })?),
    };
    let b64 = |field: Option<String>, name: &str| -> Result<Vec<u8>, String> {
        let v = field.ok_or_else(|| format!("kid {kid:?}: no {name}"))?;
        URL_SAFE_NO_PAD
            .decode(v.as_bytes())
            .map_err(|_| format!("kid {kid:?}: {name} is not base64url"))
    };
    let allowed = |candidates: &[Algorithm]| -> Result<Vec<Algorithm>, String> {
        match alg {
            None => Ok(candidates.to_vec()),
            Some(a) if candidates.contains(&a) => Ok(vec![a]),
            Some(a) => Err(format!(
                "kid {kid:?}: alg {} does not fit kty {kty}",
                a.as_str()
            )),
        }
    };
    let mut hasher = DefaultHasher::new();
    kty.hash(&mut hasher);
    let bad = |_| format!("kid {kid:?}: invalid key material");
    let mut host_key = None;
    let verifiers = match kty.as_str() {
        "RSA" => {
            let n = b64(wire.n, "n")?;
            let e = b64(wire.e, "e")?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(format!(
                    "kid {kid:?}: RSA modulus of {bits} bits (accepted: {MIN_RSA_BITS} to {MAX_RSA_BITS})"
                ));
            }
            n.hash(&mut hasher);
            e.hash(&mut hasher);
            host_key = Some(rsa_host_key(&n, &e));
            allowed(&Algorithm::RSA)?
                .into_iter()
                .map(|a| {
                    Ok(match a {
                        Algorithm::RS256 => VerifyingKey::RS256(
                            RS256PublicKey::from_components(&n, &e).map_err(bad)?,
                        ),
                        Algorithm::RS384 => VerifyingKey::RS384(
                            RS384PublicKey::from_components(&n, &e).map_err(bad)?,
                        ),
                        Algorithm::RS512 => VerifyingKey::RS512(
                            RS512PublicKey::from_components(&n, &e).map_err(bad)?,
                        ),
                        Algorithm::PS256 => VerifyingKey::PS256(
                            PS256PublicKey::from_components(&n, &e).map_err(bad)?,
                        ),
                        Algorithm::PS384 => VerifyingKey::PS384(
                            PS384PublicKey::from_components(&n, &e).map_err(bad)?,
                        ),
                        _ => VerifyingKey::PS512(
                            PS512PublicKey::from_components(&n, &e).map_err(bad)?,
                        ),
                    })
                })
                .collect::<Result<Vec<_>, String>>()?
        }
        "EC" => {
            let crv = wire.crv.unwrap_or_default();
            let x = b64(wire.x, "x")?;
            let y = b64(wire.y, "y")?;
            let (algorithm, size, kind) = match crv.as_str() {
                "P-256" => (Algorithm::ES256, 32, HostKeyKind::EcP256),
                "P-384" => (Algorithm::ES384, 48, HostKeyKind::EcP384),
                other => return Err(format!("kid {kid:?}: curve {other:?} is not supported")),
            };
            allowed(&[algorithm])?;
            if x.len() != size || y.len() != size {
                return Err(format!("kid {kid:?}: coordinates are not {size} bytes"));
            }
            let mut sec1 = Vec::with_capacity(1 + 2 * size);
            sec1.push(0x04);
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            sec1.hash(&mut hasher);
            host_key = ec_host_key(kind, &sec1);
            vec![match algorithm {
                Algorithm::ES256 => {
                    VerifyingKey::ES256(ES256PublicKey::from_bytes(&sec1).map_err(bad)?)
                }
                _ => VerifyingKey::ES384(ES384PublicKey::from_bytes(&sec1).map_err(bad)?),
            }]
        }
        "OKP" => {
            let crv = wire.crv.unwrap_or_default();
            if crv != "Ed25519" {
                return Err(format!("kid {kid:?}: curve {crv:?} is not supported"));
            }
            allowed(&[Algorithm::EdDSA])?;
            let x = b64(wire.x, "x")?;
            x.hash(&mut hasher);
            vec![VerifyingKey::EdDSA(
                Ed25519PublicKey::from_bytes(&x).map_err(bad)?,
            )]
        }
        other => {
            // "oct" (symmetric) keys are refused on purpose: a JWKS is public.
            return Err(format!("kid {kid:?}: kty {other:?} is not supported"));
        }
    };
    Ok(Jwk {
        kid,
        fingerprint: hasher.finish(),
        verifiers,
        host_key,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A JWKS entry for an RSA key pair, as Cognito publishes it.
    pub(crate) fn rsa_jwk(key: &RS256KeyPair, kid: &str, alg: Option<&str>) -> serde_json::Value {
        let c = key.public_key().to_components();
        let mut jwk = serde_json::json!({
            "kty": "RSA", "kid": kid, "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(c.n), "e": URL_SAFE_NO_PAD.encode(c.e),
        });
        if let Some(a) = alg {
            jwk["alg"] = a.into();
        }
        jwk
    }

    fn body(keys: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn cognito_style_rsa_key_is_usable_for_its_alg_only() {
        let key = RS256KeyPair::generate(2048).unwrap();
        let parsed = parse_jwks(&body(vec![rsa_jwk(&key, "k1", Some("RS256"))]), 65536).unwrap();
        let jwk = parsed.keys.get("k1").unwrap();
        assert!(jwk.verifier(Algorithm::RS256).is_some());
        assert!(jwk.verifier(Algorithm::PS256).is_none());
        assert!(parsed.skipped.is_empty());
    }

    #[test]
    fn rsa_key_without_alg_serves_every_rsa_algorithm() {
        let key = RS256KeyPair::generate(2048).unwrap();
        let parsed = parse_jwks(&body(vec![rsa_jwk(&key, "k1", None)]), 65536).unwrap();
        let jwk = parsed.keys.get("k1").unwrap();
        for a in Algorithm::RSA {
            assert!(jwk.verifier(a).is_some(), "{a:?}");
        }
        assert!(jwk.verifier(Algorithm::ES256).is_none());
    }

    #[test]
    fn unusable_keys_are_skipped_not_fatal() {
        let key = RS256KeyPair::generate(2048).unwrap();
        let parsed = parse_jwks(
            &body(vec![
                rsa_jwk(&key, "good", Some("RS256")),
                // A 1024-bit modulus: refused before any parsing.
                serde_json::json!({"kty": "RSA", "kid": "weak",
                    "n": URL_SAFE_NO_PAD.encode([0xc5u8; 128]), "e": "AQAB"}),
                serde_json::json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
                serde_json::json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
                rsa_jwk(&key, "enc", None)
                    .as_object()
                    .map(|o| {
                        let mut o = o.clone();
                        o.insert("use".into(), "enc".into());
                        serde_json::Value::Object(o)
                    })
                    .unwrap(),
                rsa_jwk(&key, "hs", Some("HS256")),
                rsa_jwk(&key, "mismatch", Some("ES256")),
                serde_json::json!("not an object"),
            ]),
            65536,
        )
        .unwrap();
        assert_eq!(parsed.keys.kids(), vec!["good"]);
        assert_eq!(parsed.skipped.len(), 7, "{:?}", parsed.skipped);
    }

    #[test]
    fn duplicate_kid_drops_both_keys() {
        let a = RS256KeyPair::generate(2048).unwrap();
        let b = RS256KeyPair::generate(2048).unwrap();
        let parsed = parse_jwks(
            &body(vec![
                rsa_jwk(&a, "dup", None),
                rsa_jwk(&b, "dup", None),
                rsa_jwk(&a, "ok", None),
            ]),
            65536,
        )
        .unwrap();
        assert_eq!(parsed.keys.kids(), vec!["ok"]);
    }

    #[test]
    fn set_without_usable_keys_or_over_size_or_not_json_is_refused() {
        assert!(parse_jwks(&body(vec![]), 65536).is_err());
        assert!(parse_jwks(b"<html>", 65536).is_err());
        assert!(parse_jwks(b"{\"keys\": 5}", 65536).is_err());
        let key = RS256KeyPair::generate(2048).unwrap();
        let big = body(vec![rsa_jwk(&key, "k", None)]);
        assert!(parse_jwks(&big, big.len() - 1).is_err());
        assert!(parse_jwks(&big, big.len()).is_ok());
    }

    #[test]
    fn fingerprint_changes_with_key_material() {
        let a = RS256KeyPair::generate(2048).unwrap();
        let b = RS256KeyPair::generate(2048).unwrap();
        let fa = parse_jwks(&body(vec![rsa_jwk(&a, "k", None)]), 65536).unwrap();
        let fa2 = parse_jwks(&body(vec![rsa_jwk(&a, "k", Some("RS256"))]), 65536).unwrap();
        let fb = parse_jwks(&body(vec![rsa_jwk(&b, "k", None)]), 65536).unwrap();
        let f = |p: &ParsedJwks| p.keys.get("k").unwrap().fingerprint;
        assert_eq!(f(&fa), f(&fa2));
        assert_ne!(f(&fa), f(&fb));
    }

    #[test]
    fn ec_and_okp_keys_are_parsed() {
        let es = ES256KeyPair::generate();
        let raw = es.public_key().public_key().to_bytes_uncompressed();
        let (x, y) = raw[1..].split_at(32);
        let ed = Ed25519KeyPair::generate();
        let parsed = parse_jwks(
            &body(vec![
                serde_json::json!({"kty":"EC","kid":"ec","crv":"P-256",
                    "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}),
                serde_json::json!({"kty":"OKP","kid":"ed","crv":"Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(ed.public_key().to_bytes())}),
            ]),
            65536,
        )
        .unwrap();
        assert!(parsed
            .keys
            .get("ec")
            .unwrap()
            .verifier(Algorithm::ES256)
            .is_some());
        assert!(parsed
            .keys
            .get("ed")
            .unwrap()
            .verifier(Algorithm::EdDSA)
            .is_some());
    }
}
