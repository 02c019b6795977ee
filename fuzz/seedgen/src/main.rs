//! Regenerates the fuzzing fixtures with fresh keys:
//!
//! - `fixtures/jwks.json`: the public JWKS the `token` target verifies against (RSA with and
//!   without `alg`, EC P-256, EC P-384, OKP Ed25519). Private keys are never written.
//! - `fixtures/valid_tokens.txt`: tokens signed with those keys that verify at
//!   `fixtures/NOW` against `fixtures/token_config.json`. The `token` target asserts that no
//!   other input ever verifies.
//! - `corpus/token/*`: the valid tokens plus signed and unsigned near misses (algorithm
//!   confusion, `alg: none`, forged payloads, wrong key, expired, `crit`, duplicates, ...) in raw
//!   form, and the same material in the target's structured form.
//! - `corpus/jwks/*`: real-looking key sets built from the same keys plus unusable keys.
//!
//! Run from the repository root: `cargo run --manifest-path fuzz/seedgen/Cargo.toml -- fuzz`.
//! Rerunning replaces every key, so all token seeds and fixtures change together.

use std::fs;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use cognito_authorizer::config::Config;
use cognito_authorizer::jwks::parse_jwks;
use cognito_authorizer::signature::NoHostCrypto;
use cognito_authorizer::verify::{inspect, verify_signature};
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

const NOW: u64 = 1_800_000_000;
const POOL: &str = "us-east-1_AbCdEf123";
const ISS: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbCdEf123";
const CLIENT: &str = "1example23456789";
const OIDC_ISS: &str = "https://login.example.com/";
const OIDC_AUD: &str = "api://fuzz";

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// RS256 over `header_b64.payload_b64`, whatever the header says.
fn sign_rs256_raw(header_b64: &str, payload_b64: &str, key: &RS256KeyPair) -> String {
    use superboring::hash::MessageDigest;
    use superboring::pkey::PKey;
    use superboring::rsa::Padding;
    use superboring::sign::Signer;
    let input = format!("{header_b64}.{payload_b64}");
    let pkey = PKey::from_rsa(key.key_pair().as_ref().clone()).expect("pkey");
    let mut signer = Signer::new(MessageDigest::sha256(), &pkey).expect("signer");
    signer.set_rsa_padding(Padding::PKCS1).expect("padding");
    signer.update(input.as_bytes()).expect("update");
    let sig = signer.sign_to_vec().expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn sign_rs256(header: &Value, payload: &Value, key: &RS256KeyPair) -> String {
    sign_rs256_raw(&b64(header), &b64(payload), key)
}

/// jwt-simple claims whose serialisation is exactly `payload` (time claims included).
fn claims(payload: &Value) -> JWTClaims<Map<String, Value>> {
    let mut c = Claims::with_custom_claims(
        payload.as_object().expect("object").clone(),
        Duration::from_hours(1),
    );
    c.issued_at = None;
    c.expires_at = None;
    c.invalid_before = None;
    c
}

fn id_payload(username: &str, groups: &[&str]) -> Value {
    json!({
        "sub": "4f2e1c3a-9b7d-4e61-8a2f-0c5d6e7f8a9b",
        "cognito:groups": groups,
        "email_verified": true,
        "iss": ISS,
        "cognito:username": username,
        "origin_jti": "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9",
        "aud": CLIENT,
        "event_id": "11111111-2222-3333-4444-555555555555",
        "token_use": "id",
        "auth_time": NOW - 60,
        "exp": NOW + 3600,
        "iat": NOW - 60,
        "jti": "9f8e7d6c-5b4a-3928-1706-f5e4d3c2b1a0",
        "email": format!("{username}@example.com"),
        "custom:tenant": "acme"
    })
}

fn access_payload(scope: &str) -> Value {
    json!({
        "sub": "4f2e1c3a-9b7d-4e61-8a2f-0c5d6e7f8a9b",
        "cognito:groups": ["admins", "ops"],
        "iss": ISS,
        "version": 2,
        "client_id": CLIENT,
        "origin_jti": "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9",
        "event_id": "11111111-2222-3333-4444-555555555555",
        "token_use": "access",
        "scope": scope,
        "auth_time": NOW - 60,
        "exp": NOW + 3600,
        "iat": NOW - 60,
        "jti": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "username": "alice"
    })
}

fn m2m_payload() -> Value {
    json!({
        "sub": CLIENT, "token_use": "access", "scope": "api/read api/write", "auth_time": NOW - 5,
        "iss": ISS, "exp": NOW + 3600, "iat": NOW - 5, "version": 2,
        "jti": "12345678-1234-1234-1234-123456789abc", "client_id": CLIENT
    })
}

fn oidc_payload() -> Value {
    json!({
        "iss": OIDC_ISS, "sub": "user-42", "aud": [OIDC_AUD, "other"], "scp": ["read", "write"],
        "iat": NOW - 1, "nbf": NOW - 1, "exp": NOW + 600, "name": "Zoë \u{2028} Test"
    })
}

/// `{header}\n{payload}\n{signature}`: the `token` target's structured form.
fn structured(token: &str) -> Vec<u8> {
    let mut parts = token.splitn(3, '.');
    let h = URL_SAFE_NO_PAD
        .decode(parts.next().unwrap_or_default())
        .unwrap_or_default();
    let p = URL_SAFE_NO_PAD
        .decode(parts.next().unwrap_or_default())
        .unwrap_or_default();
    let s = parts.next().unwrap_or_default();
    let mut out = h;
    out.push(b'\n');
    out.extend_from_slice(&p);
    out.push(b'\n');
    out.extend_from_slice(s.as_bytes());
    out
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    fs::create_dir_all(dir).expect("mkdir");
    fs::write(dir.join(name), bytes).expect("write");
}

/// P-256 group order: `n - s` is the other valid ECDSA signature for the same (r, s).
const P256_N: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

fn sub_be(a: &[u8; 32], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[i] = d as u8;
    }
    out
}

fn main() {
    let fuzz_dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz".into()));
    let fixtures = fuzz_dir.join("fixtures");
    let token_dir = fuzz_dir.join("corpus/token");
    let jwks_dir = fuzz_dir.join("corpus/jwks");
    for d in [&token_dir, &jwks_dir] {
        let _ = fs::remove_dir_all(d);
    }

    eprintln!("generating keys (RSA 2048 takes a few seconds)...");
    let rsa = RS256KeyPair::generate(2048).expect("rsa");
    let other_rsa = RS256KeyPair::generate(2048).expect("rsa");
    let rsa_der = rsa.to_der().expect("der");
    let ps256 = PS256KeyPair::from_der(&rsa_der)
        .expect("ps256")
        .with_key_id("rsa-any");
    let rs512 = RS512KeyPair::from_der(&rsa_der)
        .expect("rs512")
        .with_key_id("rsa-any");
    let es256 = ES256KeyPair::generate().with_key_id("ec-p256");
    let es384 = ES384KeyPair::generate().with_key_id("ec-p384");
    let ed = Ed25519KeyPair::generate().with_key_id("ed25519");

    let rc = rsa.public_key().to_components();
    let (n, e) = (URL_SAFE_NO_PAD.encode(&rc.n), URL_SAFE_NO_PAD.encode(&rc.e));
    let ec_jwk = |sec1: Vec<u8>, kid: &str, crv: &str, alg: &str| {
        let size = (sec1.len() - 1) / 2;
        json!({"kty": "EC", "kid": kid, "use": "sig", "alg": alg, "crv": crv,
               "x": URL_SAFE_NO_PAD.encode(&sec1[1..1 + size]),
               "y": URL_SAFE_NO_PAD.encode(&sec1[1 + size..])})
    };
    // Cognito's own field order for the RSA key.
    let rsa_cognito =
        json!({"alg": "RS256", "e": e, "kid": "rsa-cognito", "kty": "RSA", "n": n, "use": "sig"});
    let rsa_any = json!({"kty": "RSA", "kid": "rsa-any", "n": n, "e": e});
    let ec256 = ec_jwk(
        es256.public_key().public_key().to_bytes_uncompressed(),
        "ec-p256",
        "P-256",
        "ES256",
    );
    let ec384 = ec_jwk(
        es384.public_key().public_key().to_bytes_uncompressed(),
        "ec-p384",
        "P-384",
        "ES384",
    );
    let okp = json!({"kty": "OKP", "kid": "ed25519", "use": "sig", "alg": "EdDSA", "crv": "Ed25519",
                     "x": URL_SAFE_NO_PAD.encode(ed.public_key().to_bytes())});
    let jwks = json!({"keys": [rsa_cognito, rsa_any, ec256, ec384, okp]});
    let jwks_text = serde_json::to_string_pretty(&jwks).expect("json");

    // ---- valid tokens -------------------------------------------------------------------
    let cognito_header = json!({"kid": "rsa-cognito", "alg": "RS256"});
    let valid: Vec<(&str, String)> = vec![
        (
            "rs256-id",
            sign_rs256(&cognito_header, &id_payload("alice", &["admins"]), &rsa),
        ),
        (
            "rs256-access",
            sign_rs256(
                &cognito_header,
                &access_payload("aws.cognito.signin.user.admin api/read api/admin"),
                &rsa,
            ),
        ),
        (
            "ps256-access",
            ps256.sign(claims(&m2m_payload())).expect("sign"),
        ),
        (
            "rs512-id",
            rs512.sign(claims(&id_payload("bob", &[]))).expect("sign"),
        ),
        (
            "es256-access",
            es256.sign(claims(&m2m_payload())).expect("sign"),
        ),
        (
            "es384-id",
            es384
                .sign(claims(&id_payload("carol", &["ops"])))
                .expect("sign"),
        ),
        (
            "eddsa-oidc",
            ed.sign(claims(&oidc_payload())).expect("sign"),
        ),
    ];

    // Self-check with the crate itself: every valid seed verifies at NOW.
    let config_text = token_config();
    let (config, _) = Config::parse(config_text.as_bytes()).expect("config");
    let keys = parse_jwks(jwks_text.as_bytes(), 65536).expect("jwks");
    assert!(keys.skipped.is_empty(), "{:?}", keys.skipped);
    for (name, t) in &valid {
        let u = inspect(t, &config).unwrap_or_else(|e| panic!("{name}: {e}"));
        verify_signature(u, &keys.keys, &config, NOW, &NoHostCrypto)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    // ---- near misses ----------------------------------------------------------------------
    let id = id_payload("alice", &["admins"]);
    let valid_id = &valid[0].1;
    let parts: Vec<&str> = valid_id.split('.').collect();
    let with = |mut v: Value, k: &str, x: Value| {
        v[k] = x;
        v
    };
    let pem = rsa.public_key().to_pem().expect("pem");
    let der = rsa.public_key().to_der().expect("der");
    let hs_pem = HS256Key::from_bytes(pem.as_bytes()).with_key_id("rsa-cognito");
    let hs_der = HS256Key::from_bytes(&der).with_key_id("rsa-cognito");
    let hs_n = HS256Key::from_bytes(&rc.n).with_key_id("rsa-cognito");
    let es_sig = URL_SAFE_NO_PAD
        .decode(valid[4].1.rsplit('.').next().unwrap_or_default())
        .expect("sig");
    let high_s = {
        let mut s = es_sig[..32].to_vec();
        s.extend(sub_be(&P256_N, &es_sig[32..]));
        let base = valid[4].1.rsplit_once('.').expect("dot").0;
        format!("{base}.{}", URL_SAFE_NO_PAD.encode(s))
    };
    let near: Vec<(&str, String)> = vec![
        (
            "alg-none-empty-sig",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "kid": "rsa-cognito"})),
                b64(&id)
            ),
        ),
        (
            "alg-none-with-sig",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "none", "kid": "rsa-cognito"})),
                b64(&id),
                parts[2]
            ),
        ),
        (
            "hs256-pem-confusion",
            hs_pem.authenticate(claims(&id)).expect("hs"),
        ),
        (
            "hs256-der-confusion",
            hs_der.authenticate(claims(&id)).expect("hs"),
        ),
        (
            "hs256-n-confusion",
            hs_n.authenticate(claims(&id)).expect("hs"),
        ),
        (
            "forged-groups-original-sig",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(&with(id.clone(), "cognito:groups", json!(["root"]))),
                parts[2]
            ),
        ),
        (
            "kid-swapped-original-sig",
            format!(
                "{}.{}.{}",
                b64(&json!({"kid": "rsa-any", "alg": "RS256"})),
                parts[1],
                parts[2]
            ),
        ),
        (
            "alg-swapped-ps256-original-sig",
            format!(
                "{}.{}.{}",
                b64(&json!({"kid": "rsa-any", "alg": "PS256"})),
                parts[1],
                parts[2]
            ),
        ),
        (
            "other-key-same-kid",
            sign_rs256(&cognito_header, &id, &other_rsa),
        ),
        (
            "expired-signed",
            sign_rs256(
                &cognito_header,
                &with(id.clone(), "exp", json!(NOW - 3600)),
                &rsa,
            ),
        ),
        (
            "nbf-future-signed",
            sign_rs256(
                &cognito_header,
                &with(id.clone(), "nbf", json!(NOW + 3600)),
                &rsa,
            ),
        ),
        (
            "crit-signed",
            sign_rs256(
                &json!({"kid": "rsa-cognito", "alg": "RS256", "crit": ["exp"]}),
                &id,
                &rsa,
            ),
        ),
        (
            "b64-false-signed",
            sign_rs256(
                &json!({"kid": "rsa-cognito", "alg": "RS256", "b64": false}),
                &id,
                &rsa,
            ),
        ),
        (
            "jku-x5u-jwk-signed-by-other",
            sign_rs256(
                &json!({"kid": "rsa-cognito", "alg": "RS256", "jku": "https://evil.example/jwks.json",
                        "x5u": "https://evil.example/cert", "jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}),
                &id,
                &other_rsa,
            ),
        ),
        (
            "duplicate-sub-signed",
            sign_rs256_raw(
                &b64(&cognito_header),
                &URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"evil",{}"#, &id.to_string()[1..])),
                &rsa,
            ),
        ),
        (
            "wrong-client-signed",
            sign_rs256(
                &cognito_header,
                &with(id.clone(), "aud", json!("someone-else")),
                &rsa,
            ),
        ),
        (
            "refresh-token-use-signed",
            sign_rs256(
                &cognito_header,
                &with(id.clone(), "token_use", json!("refresh")),
                &rsa,
            ),
        ),
        (
            "es256-on-rsa-kid",
            format!(
                "{}.{}.{}",
                b64(&json!({"kid": "rsa-cognito", "alg": "ES256"})),
                parts[1],
                valid[4].1.rsplit('.').next().unwrap_or_default()
            ),
        ),
        ("es256-high-s", high_s.clone()),
        ("padded", format!("{valid_id}==")),
        ("bearer-prefixed", format!("Bearer {valid_id}")),
        ("four-parts", format!("{valid_id}.{}", parts[2])),
        (
            "standard-base64-sig",
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                STANDARD.encode(URL_SAFE_NO_PAD.decode(parts[2]).expect("sig"))
            ),
        ),
        (
            "deep-nesting",
            format!(
                "{}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD.encode(format!("{}{}", "[".repeat(200), "]".repeat(200))),
                parts[2]
            ),
        ),
        (
            "exp-float",
            sign_rs256(
                &cognito_header,
                &with(id.clone(), "exp", json!(1.8e9)),
                &rsa,
            ),
        ),
        (
            "exp-u64-max",
            sign_rs256(
                &cognito_header,
                &with(id.clone(), "exp", json!(u64::MAX)),
                &rsa,
            ),
        ),
        (
            "unicode-escapes-in-header",
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(r#"{"kid":"rsa-cognito","alg":"RS\u0032\u00356"}"#),
                parts[1],
                parts[2]
            ),
        ),
    ];
    let high_s_ok = inspect(&high_s, &config)
        .and_then(|u| verify_signature(u, &keys.keys, &config, NOW, &NoHostCrypto))
        .is_ok();
    eprintln!("ES256 high-S twin of a valid signature verifies: {high_s_ok}");

    // ---- write ------------------------------------------------------------------------------
    write(&fixtures, "jwks.json", format!("{jwks_text}\n"));
    write(&fixtures, "token_config.json", config_text);
    let mut list = String::new();
    for (_, t) in &valid {
        list.push_str(t);
        list.push('\n');
    }
    write(&fixtures, "valid_tokens.txt", list);
    for (name, t) in valid.iter().chain(near.iter()) {
        write(&token_dir, &format!("raw-{name}"), t);
        if !name.starts_with("bearer") && !name.starts_with("padded") {
            write(&token_dir, &format!("structured-{name}"), structured(t));
        }
    }

    // JWKS seeds: real-looking sets, and every kind of unusable key next to a good one.
    let other_c = other_rsa.public_key().to_components();
    let other_n = URL_SAFE_NO_PAD.encode(&other_c.n);
    let cognito_two = json!({"keys": [
        {"alg": "RS256", "e": e, "kid": "rsa-cognito", "kty": "RSA", "n": n, "use": "sig"},
        {"alg": "RS256", "e": "AQAB", "kid": "rsa-cognito-2", "kty": "RSA", "n": other_n, "use": "sig"}
    ]});
    let good = jwks["keys"][0].clone();
    let sets: Vec<(&str, Value)> = vec![
        ("fixture", jwks.clone()),
        ("cognito-two-rsa", cognito_two),
        ("ec-p256-only", json!({"keys": [jwks["keys"][2]]})),
        ("ec-p384-only", json!({"keys": [jwks["keys"][3]]})),
        ("okp-only", json!({"keys": [jwks["keys"][4]]})),
        ("rsa-no-alg-no-use", json!({"keys": [jwks["keys"][1]]})),
        (
            "unusable-mixed",
            json!({"keys": [
                good,
                {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0", "alg": "HS256"},
                {"kty": "RSA", "kid": "weak", "n": URL_SAFE_NO_PAD.encode([0xc5u8; 128]), "e": "AQAB"},
                {"kty": "RSA", "kid": "enc", "use": "enc", "n": n, "e": e},
                {"kty": "RSA", "kid": "rsa-es", "alg": "ES256", "n": n, "e": e},
                {"kty": "RSA", "n": n, "e": e},
                {"kty": "RSA", "kid": "", "n": n, "e": e},
                {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
                {"kty": "EC", "kid": "short", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
                {"kty": "EC", "kid": "offcurve", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])},
                {"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": URL_SAFE_NO_PAD.encode([9u8; 32])},
                {"kty": "OKP", "kid": "ed-short", "crv": "Ed25519", "x": "AAAA"},
                {"kty": "RSA", "kid": "e-huge", "n": n, "e": URL_SAFE_NO_PAD.encode([0xffu8; 64])},
                {"kty": "RSA", "kid": "e-zero", "n": n, "e": "AA"},
                {"kty": "RSA", "kid": "e-one", "n": n, "e": "AQ"},
                {"kty": "RSA", "kid": "n-even", "n": URL_SAFE_NO_PAD.encode([0xc4u8; 256]), "e": "AQAB"},
                {"kty": "RSA", "kid": "n-leading-zeros", "n": URL_SAFE_NO_PAD.encode([&[0u8; 8][..], &rc.n[..]].concat()), "e": e},
                {"kty": "RSA", "kid": "padded-b64", "n": format!("{n}=="), "e": "AQAB"},
                {"kty": "RSA", "kid": "std-b64", "n": STANDARD.encode(&rc.n), "e": "AQAB"},
                {"kty": "RSA", "kid": 7, "n": n, "e": e},
                "not an object",
                null
            ]}),
        ),
        (
            "duplicate-kids",
            json!({"keys": [jwks["keys"][0], jwks["keys"][0], jwks["keys"][2]]}),
        ),
        ("empty", json!({"keys": []})),
        ("no-keys-member", json!({"kid": "x"})),
        (
            "extra-members",
            json!({"keys": [jwks["keys"][4]], "extra": {"nested": [1, 2, 3]}}),
        ),
    ];
    for (name, set) in sets {
        write(&jwks_dir, name, serde_json::to_vec(&set).expect("json"));
    }
    write(&jwks_dir, "not-json", b"<html>502 Bad Gateway</html>");
    write(
        &jwks_dir,
        "truncated",
        &jwks_text.as_bytes()[..jwks_text.len() / 2],
    );
    eprintln!(
        "wrote {} valid tokens, {} near misses, fixtures in {}",
        valid.len(),
        near.len(),
        fixtures.display()
    );
}

/// The `token` target's configuration: README "Configuration reference"'s pool, plus an explicit non-Cognito issuer.
fn token_config() -> String {
    let c = json!({
        "user_pools": [
            {
                "name": "main",
                "user_pool_id": POOL,
                "client_ids": [CLIENT],
                "token_use": ["id", "access"],
                "jwks_cluster": "cognito_jwks",
                "issuer": ISS,
                "jwks_uri": format!("{ISS}/.well-known/jwks.json")
            },
            {
                "name": "oidc",
                "user_pool_id": "eu-west-1_Oidc1",
                "client_ids": [OIDC_AUD],
                "token_use": null,
                "jwks_cluster": "oidc_jwks",
                "issuer": OIDC_ISS,
                "jwks_uri": "https://login.example.com/keys"
            }
        ],
        "clock_skew_seconds": 60,
        "max_token_bytes": 8192
    });
    format!("{}\n", serde_json::to_string_pretty(&c).expect("json"))
}
