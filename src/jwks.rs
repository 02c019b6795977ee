//! JWKS parsing and validation (README "Keys"): a fetched body becomes a [`KeySet`] of verifying
//! keys by `kid`, each converted once here so that verification does no key parsing.
//!
//! A key that cannot be used (unknown type, symmetric, too weak, `use` other than `sig`, or an
//! algorithm this build does not carry) is skipped and reported, never fatal; a set with no
//! usable key at all is refused.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::{Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::Deserialize;

pub use crate::algorithm::Algorithm;
use crate::json::Member;
use crate::rsa::RsaPublicKey;
use crate::signature::{ec_host_key, rsa_host_key, HostKey, HostKeyKind};

/// Key material ready to verify, in the module, every algorithm the key may be used with.
#[derive(Debug, Clone)]
pub enum KeyMaterial {
    /// RS256/384/512 and PS256/384/512 (`rsa`).
    Rsa(RsaPublicKey),
    #[cfg(feature = "ecdsa")]
    P256(p256::ecdsa::VerifyingKey),
    #[cfg(feature = "ecdsa")]
    P384(p384::ecdsa::VerifyingKey),
    #[cfg(feature = "eddsa")]
    Ed25519(ed25519_compact::PublicKey),
}

impl KeyMaterial {
    /// Verifies `signature` (as decoded from the token) over `signing_input` under `alg`.
    /// An algorithm that does not fit the material is false, never a guess.
    pub fn verify(&self, alg: Algorithm, signing_input: &[u8], signature: &[u8]) -> bool {
        match (self, alg) {
            (KeyMaterial::Rsa(key), Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512) => {
                key.verify_pkcs1v15(alg.digest(), signing_input, signature)
            }
            (KeyMaterial::Rsa(key), Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512) => {
                key.verify_pss(alg.digest(), signing_input, signature)
            }
            #[cfg(feature = "ecdsa")]
            (KeyMaterial::P256(key), Algorithm::ES256) => {
                use p256::ecdsa::signature::Verifier;
                p256::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|sig| key.verify(signing_input, &sig).is_ok())
            }
            #[cfg(feature = "ecdsa")]
            (KeyMaterial::P384(key), Algorithm::ES384) => {
                use p384::ecdsa::signature::Verifier;
                p384::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|sig| key.verify(signing_input, &sig).is_ok())
            }
            #[cfg(feature = "eddsa")]
            (KeyMaterial::Ed25519(key), Algorithm::EdDSA) => {
                ed25519_compact::Signature::from_slice(signature)
                    .is_ok_and(|sig| key.verify(signing_input, &sig).is_ok())
            }
            _ => false,
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
    /// The algorithms the key may be used with (just the JWK's `alg` when set).
    algorithms: Vec<Algorithm>,
    material: KeyMaterial,
    /// The key as a host crypto library imports it (RSA and EC keys), built once here.
    pub host_key: Option<HostKey>,
}

impl Jwk {
    /// Whether this key may verify tokens of `alg`.
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    /// Verifies a signature with this key in the module; false for an algorithm the key does
    /// not allow.
    pub fn verify(&self, alg: Algorithm, signing_input: &[u8], signature: &[u8]) -> bool {
        self.allows(alg) && self.material.verify(alg, signing_input, signature)
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
    keys: Vec<JwkEntry>,
}

/// The JWK members read, each a string or absent (`null` counting as absent).
struct WireJwk {
    kty: Option<String>,
    kid: Option<String>,
    use_: Option<String>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Its members, in the order of a JWK written as a list (serde's sequence form of a struct).
const JWK_MEMBERS: [&str; 9] = ["kty", "kid", "use", "alg", "n", "e", "crv", "x", "y"];

/// One item of `keys`: a JWK, or why it is not one. Read in full whatever it holds, so that
/// one bad key skips that key, not the set.
struct JwkEntry(Result<WireJwk, String>);

impl<'de> Deserialize<'de> for JwkEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JwkVisitor).map(JwkEntry)
    }
}

struct JwkVisitor;

/// The JWK from its members' values (by [`JWK_MEMBERS`] position): each a string, or absent
/// (`null` too).
fn wire_jwk(values: [Option<Member<'_>>; 9]) -> Result<WireJwk, String> {
    let wrong = JWK_MEMBERS
        .iter()
        .zip(&values)
        .find(|(_, v)| !matches!(v, None | Some(Member::Null | Member::Str(_))));
    if let Some((name, _)) = wrong {
        return Err(format!("not a JWK object: {name} is not a string"));
    }
    let [kty, kid, use_, alg, n, e, crv, x, y] = values.map(|v| match v {
        Some(Member::Str(s)) => Some(s.into_owned()),
        _ => None,
    });
    Ok(WireJwk {
        kty,
        kid,
        use_,
        alg,
        n,
        e,
        crv,
        x,
        y,
    })
}

fn not_an_object(unexpected: Unexpected<'_>) -> Result<WireJwk, String> {
    let e = <serde_json::Error as serde::de::Error>::invalid_type(unexpected, &"struct WireJwk");
    Err(format!("not a JWK object: {e}"))
}

impl<'de> Visitor<'de> for JwkVisitor {
    type Value = Result<WireJwk, String>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JWK")
    }
    /// Members by name; a repeated one counts once, the last (as a JSON object read whole).
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values: [Option<Member<'de>>; 9] = Default::default();
        while let Some(name) = map.next_key::<String>()? {
            let value: Member = map.next_value()?;
            if let Some(slot) = JWK_MEMBERS
                .iter()
                .position(|m| *m == name)
                .and_then(|i| values.get_mut(i))
            {
                *slot = Some(value);
            }
        }
        Ok(wire_jwk(values))
    }
    /// Members by position, all nine of them.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut values: [Option<Member<'de>>; 9] = Default::default();
        let mut count = 0;
        while let Some(value) = seq.next_element::<Member>()? {
            if let Some(slot) = values.get_mut(count) {
                *slot = Some(value);
            }
            count += 1;
        }
        if count != JWK_MEMBERS.len() {
            return Ok(Err(format!(
                "not a JWK object: a list of {count} items, expected {}",
                JWK_MEMBERS.len()
            )));
        }
        Ok(wire_jwk(values))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(not_an_object(Unexpected::Unit))
    }
    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(not_an_object(Unexpected::Bool(b)))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(not_an_object(Unexpected::Unsigned(n)))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(not_an_object(Unexpected::Signed(n)))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        Ok(not_an_object(Unexpected::Float(n)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(not_an_object(Unexpected::Str(s)))
    }
}

/// Parses and validates a JWKS body.
pub fn parse_jwks(body: &[u8], max_bytes: usize) -> Result<ParsedJwks, String> {
    if body.len() > max_bytes {
        return Err(format!(
            "JWKS is {} bytes, over max_jwks_bytes ({max_bytes})",
            body.len()
        ));
    }
    // UTF-8 first: serde skips members it ignores without checking their text, so a body
    // that is not JSON at all could otherwise pass.
    // (`from_slice` still: the same parser as every other document, not a second copy.)
    std::str::from_utf8(body).map_err(|e| format!("JWKS is not UTF-8 text: {e}"))?;
    let wire: WireJwks =
        serde_json::from_slice(body).map_err(|e| format!("JWKS is not a JSON key set: {e}"))?;
    let mut keys: HashMap<String, Jwk> = HashMap::new();
    let mut skipped = Vec::new();
    let mut duplicated: Vec<String> = Vec::new();
    for (i, JwkEntry(entry)) in wire.keys.into_iter().enumerate() {
        match entry.and_then(parse_key) {
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

fn parse_key(wire: WireJwk) -> Result<Jwk, String> {
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
    // The algorithms of the key's type that it may serve: the JWK's `alg` if set, and only
    // those this build carries (a key for none of them is skipped, and logged as such).
    let allowed = |candidates: &[Algorithm]| -> Result<Vec<Algorithm>, String> {
        let algorithms = match alg {
            None => candidates.to_vec(),
            Some(a) if candidates.contains(&a) => vec![a],
            Some(a) => {
                return Err(format!(
                    "kid {kid:?}: alg {} does not fit kty {kty}",
                    a.as_str()
                ))
            }
        };
        let built_in: Vec<Algorithm> = algorithms
            .iter()
            .copied()
            .filter(|a| a.is_built_in())
            .collect();
        if built_in.is_empty() {
            let names: Vec<&str> = algorithms.iter().map(|a| a.as_str()).collect();
            return Err(format!(
                "kid {kid:?}: {} is not built into this module (it verifies {})",
                names.join("/"),
                Algorithm::built_in_names()
            ));
        }
        Ok(built_in)
    };
    let mut hasher = DefaultHasher::new();
    kty.hash(&mut hasher);
    let (algorithms, material, host_key) = match kty.as_str() {
        "RSA" => {
            let n = b64(wire.n, "n")?;
            let e = b64(wire.e, "e")?;
            let algorithms = allowed(&Algorithm::RSA)?;
            let key = RsaPublicKey::new(&n, &e).map_err(|why| format!("kid {kid:?}: {why}"))?;
            n.hash(&mut hasher);
            e.hash(&mut hasher);
            (
                algorithms,
                KeyMaterial::Rsa(key),
                Some(rsa_host_key(&n, &e)),
            )
        }
        "EC" => {
            let crv = wire.crv.unwrap_or_default();
            let (algorithm, size, kind) = match crv.as_str() {
                "P-256" => (Algorithm::ES256, 32, HostKeyKind::EcP256),
                "P-384" => (Algorithm::ES384, 48, HostKeyKind::EcP384),
                other => return Err(format!("kid {kid:?}: curve {other:?} is not supported")),
            };
            let algorithms = allowed(&[algorithm])?;
            let x = b64(wire.x, "x")?;
            let y = b64(wire.y, "y")?;
            if x.len() != size || y.len() != size {
                return Err(format!("kid {kid:?}: coordinates are not {size} bytes"));
            }
            let mut sec1 = Vec::with_capacity(1 + 2 * size);
            sec1.push(0x04);
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            sec1.hash(&mut hasher);
            let material = ec_material(kind, &sec1)
                .ok_or_else(|| format!("kid {kid:?}: invalid key material"))?;
            (algorithms, material, ec_host_key(kind, &sec1))
        }
        "OKP" => {
            let crv = wire.crv.unwrap_or_default();
            if crv != "Ed25519" {
                return Err(format!("kid {kid:?}: curve {crv:?} is not supported"));
            }
            let algorithms = allowed(&[Algorithm::EdDSA])?;
            let x = b64(wire.x, "x")?;
            x.hash(&mut hasher);
            let material =
                ed25519_material(&x).ok_or_else(|| format!("kid {kid:?}: invalid key material"))?;
            (algorithms, material, None)
        }
        other => {
            // "oct" (symmetric) keys are refused on purpose: a JWKS is public.
            return Err(format!("kid {kid:?}: kty {other:?} is not supported"));
        }
    };
    Ok(Jwk {
        kid,
        fingerprint: hasher.finish(),
        algorithms,
        material,
        host_key,
    })
}

/// The point must be on the curve (checked by the curve crate, as jwt-simple does).
#[cfg(feature = "ecdsa")]
fn ec_material(kind: HostKeyKind, sec1: &[u8]) -> Option<KeyMaterial> {
    match kind {
        HostKeyKind::EcP256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
            .ok()
            .map(KeyMaterial::P256),
        HostKeyKind::EcP384 => p384::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
            .ok()
            .map(KeyMaterial::P384),
        HostKeyKind::Rsa => None,
    }
}

#[cfg(not(feature = "ecdsa"))]
fn ec_material(_kind: HostKeyKind, _sec1: &[u8]) -> Option<KeyMaterial> {
    None // unreachable: `allowed` refused the key first
}

/// A valid Ed25519 point (small-order points refused, as jwt-simple does).
#[cfg(feature = "eddsa")]
fn ed25519_material(x: &[u8]) -> Option<KeyMaterial> {
    let key = ed25519_compact::PublicKey::from_slice(x).ok()?;
    key.validate().ok()?;
    Some(KeyMaterial::Ed25519(key))
}

#[cfg(not(feature = "eddsa"))]
fn ed25519_material(_x: &[u8]) -> Option<KeyMaterial> {
    None // unreachable: `allowed` refused the key first
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jwt_simple::prelude::*;

    /// One of two RSA-2048 test key pairs (`which`: 0 or 1), generated once per test run and
    /// shared by every module's tests (generating one takes a while).
    pub(crate) fn test_key(which: usize) -> &'static RS256KeyPair {
        static KEYS: [std::sync::OnceLock<RS256KeyPair>; 2] =
            [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
        KEYS[which % 2].get_or_init(|| RS256KeyPair::generate(2048).unwrap())
    }

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
        assert!(jwk.allows(Algorithm::RS256));
        assert!(!jwk.allows(Algorithm::PS256));
        assert!(parsed.skipped.is_empty());
    }

    #[test]
    fn rsa_key_without_alg_serves_every_rsa_algorithm() {
        let key = RS256KeyPair::generate(2048).unwrap();
        let parsed = parse_jwks(&body(vec![rsa_jwk(&key, "k1", None)]), 65536).unwrap();
        let jwk = parsed.keys.get("k1").unwrap();
        for a in Algorithm::RSA {
            assert!(jwk.allows(a), "{a:?}");
        }
        assert!(!jwk.allows(Algorithm::ES256));
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
    fn each_key_is_read_as_a_json_value_read_whole_would_be() {
        let key = test_key(0);
        let good = rsa_jwk(key, "good", None).to_string();
        // A repeated member counts once, the last; `null` is absent; any other type skips
        // the key (and only that key).
        let last_kid =
            format!(r#"{{"kid":5,{}"#, &good[1..]).replace(r#""kid":"good""#, r#""kid":"last""#);
        let body = format!(
            r#"{{"keys":[{good},{last_kid},{},{},[1],"x",null,7,-1,1.5,true,{{"kid":{{}}}}]}}"#,
            good.replace(r#""kid":"good""#, r#""kid":"nullalg","alg":null"#),
            good.replace(r#""kid":"good""#, r#""kid":"badalg","alg":["RS256"]"#),
        );
        let parsed = parse_jwks(body.as_bytes(), 1 << 20).unwrap();
        assert_eq!(parsed.keys.kids(), ["good", "last", "nullalg"]);
        assert_eq!(parsed.skipped.len(), 9, "{:?}", parsed.skipped);
        assert!(parsed
            .skipped
            .iter()
            .any(|s| s.contains("alg is not a string")));
        assert!(parsed
            .skipped
            .iter()
            .any(|s| s.contains("invalid type: string \"x\"")));
        // Malformed JSON anywhere, read or not, refuses the set.
        let body = format!(r#"{{"keys":[{},{{"other":1e400}}]}}"#, good);
        assert!(parse_jwks(body.as_bytes(), 1 << 20).is_err());
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
        // Found by the jwks fuzz target: bytes that are not UTF-8 in a member serde ignores.
        let mut not_text = br#"{"extra":{""#.to_vec();
        not_text.extend_from_slice(&[0xc5, 0xc5]);
        not_text.extend_from_slice(br#"":1},"keys":["#);
        not_text.extend_from_slice(rsa_jwk(&key, "k", None).to_string().as_bytes());
        not_text.extend_from_slice(b"]}");
        let why = parse_jwks(&not_text, 65536).unwrap_err();
        assert!(why.contains("not UTF-8"), "{why}");
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

    /// A JWKS with one key of each curve, tokens signed by jwt-simple with each, and
    /// jwt-simple's own verification of them.
    struct CurveKeys {
        jwks: Vec<u8>,
        /// (kid, alg, token, jwt-simple verifies it)
        tokens: Vec<(&'static str, Algorithm, String, bool)>,
    }

    fn curve_keys() -> CurveKeys {
        let es256 = ES256KeyPair::generate();
        let es384 = ES384KeyPair::generate();
        let ed = Ed25519KeyPair::generate();
        let p256 = es256.public_key().public_key().to_bytes_uncompressed();
        let p384 = es384.public_key().public_key().to_bytes_uncompressed();
        let (x256, y256) = p256[1..].split_at(32);
        let (x384, y384) = p384[1..].split_at(48);
        let jwks = body(vec![
            serde_json::json!({"kty":"EC","kid":"p256","crv":"P-256",
                "x": URL_SAFE_NO_PAD.encode(x256), "y": URL_SAFE_NO_PAD.encode(y256)}),
            serde_json::json!({"kty":"EC","kid":"p384","crv":"P-384","alg":"ES384",
                "x": URL_SAFE_NO_PAD.encode(x384), "y": URL_SAFE_NO_PAD.encode(y384)}),
            serde_json::json!({"kty":"OKP","kid":"ed","crv":"Ed25519",
                "x": URL_SAFE_NO_PAD.encode(ed.public_key().to_bytes())}),
        ]);
        let mut tokens = Vec::new();
        let o = || Some(VerificationOptions::default());
        for i in 0..3 {
            let claims = Claims::create(Duration::from_hours(1)).with_subject(format!("u{i}"));
            let t = es256.sign(claims.clone()).unwrap();
            let tampered = tamper(&t, i);
            for t in [t, tampered] {
                let ok = es256
                    .public_key()
                    .verify_token::<NoCustomClaims>(&t, o())
                    .is_ok();
                tokens.push(("p256", Algorithm::ES256, t, ok));
            }
            let t = es384.sign(claims.clone()).unwrap();
            let tampered = tamper(&t, i);
            for t in [t, tampered] {
                let ok = es384
                    .public_key()
                    .verify_token::<NoCustomClaims>(&t, o())
                    .is_ok();
                tokens.push(("p384", Algorithm::ES384, t, ok));
            }
            let t = ed.sign(claims).unwrap();
            let tampered = tamper(&t, i);
            for t in [t, tampered] {
                let ok = ed
                    .public_key()
                    .verify_token::<NoCustomClaims>(&t, o())
                    .is_ok();
                tokens.push(("ed", Algorithm::EdDSA, t, ok));
            }
        }
        CurveKeys { jwks, tokens }
    }

    /// One signature bit flipped (at a place that depends on `i`).
    fn tamper(token: &str, i: usize) -> String {
        let (input, sig) = token.rsplit_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let pos = [0, raw.len() / 2, raw.len() - 1][i % 3];
        raw[pos] ^= 0x10;
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(raw))
    }

    fn verify_in_module(keys: &KeySet, kid: &str, alg: Algorithm, token: &str) -> bool {
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        keys.get(kid).unwrap().verify(alg, input.as_bytes(), &sig)
    }

    #[test]
    fn curve_keys_follow_the_built_in_algorithms() {
        let c = curve_keys();
        let parsed = parse_jwks(&c.jwks, 65536);
        let built: Vec<&str> = ["p256", "p384", "ed"]
            .into_iter()
            .filter(|kid| match *kid {
                "ed" => cfg!(feature = "eddsa"),
                _ => cfg!(feature = "ecdsa"),
            })
            .collect();
        if built.is_empty() {
            // Not built in: every key skipped (with why), so the set has no usable key.
            let err = parsed.unwrap_err();
            assert!(err.contains("ES256 is not built into this module"), "{err}");
            assert!(err.contains("ES384 is not built into this module"), "{err}");
            assert!(err.contains("EdDSA is not built into this module"), "{err}");
            return;
        }
        let parsed = parsed.unwrap();
        let mut kids = built.clone();
        kids.sort_unstable();
        assert_eq!(parsed.keys.kids(), kids);
        assert_eq!(
            parsed.skipped.len(),
            3 - built.len(),
            "{:?}",
            parsed.skipped
        );
        for (kid, alg, token, reference) in &c.tokens {
            if built.contains(kid) {
                // The module's verifier answers as jwt-simple, the reference, does.
                assert_eq!(
                    verify_in_module(&parsed.keys, kid, *alg, token),
                    *reference,
                    "{alg:?} {token}"
                );
                // The key serves its own algorithm only.
                assert!(!parsed.keys.get(kid).unwrap().allows(Algorithm::RS256));
            }
        }
        assert!(c.tokens.iter().any(|t| t.3) && c.tokens.iter().any(|t| !t.3));
    }

    #[test]
    fn rsa_keys_verify_as_jwt_simple_does() {
        let key = RS256KeyPair::generate(2048).unwrap();
        let parsed = parse_jwks(&body(vec![rsa_jwk(&key, "k", None)]), 65536).unwrap();
        let claims = Claims::create(Duration::from_hours(1));
        let token = key.sign(claims).unwrap();
        assert!(verify_in_module(
            &parsed.keys,
            "k",
            Algorithm::RS256,
            &token
        ));
        assert!(!verify_in_module(
            &parsed.keys,
            "k",
            Algorithm::RS384,
            &token
        ));
        assert!(!verify_in_module(
            &parsed.keys,
            "k",
            Algorithm::PS256,
            &token
        ));
        assert!(!verify_in_module(
            &parsed.keys,
            "k",
            Algorithm::RS256,
            &tamper(&token, 1)
        ));
        // A key restricted to RS256 does not verify another algorithm, even a valid one.
        let parsed = parse_jwks(&body(vec![rsa_jwk(&key, "k", Some("RS512"))]), 65536).unwrap();
        assert!(!verify_in_module(
            &parsed.keys,
            "k",
            Algorithm::RS256,
            &token
        ));
    }
}
