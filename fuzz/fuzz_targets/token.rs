//! A token from a request through `inspect` and, when that passes, `verify_signature`, against
//! a fixed configuration (README "Configuration reference"'s pool plus a non-Cognito issuer) and a fixed JWKS (RSA with
//! and without `alg`, EC P-256, EC P-384, OKP Ed25519; fixtures/, made by seedgen).
//!
//! Input forms:
//! - raw: the bytes are the token, as a header would carry it;
//! - structured (starts with `{`): `header JSON \n payload JSON \n signature`, encoded here, so
//!   mutations reach the claim checks instead of breaking base64.
//!
//! Invariants: nothing panics; nothing verifies unless it is one of the valid seed tokens
//! (fixtures/valid_tokens.txt) or the ECDSA `(r, n - s)` twin of one (malleability, accepted:
//! see fuzz/README.md); whatever verifies satisfies every claim rule of README "Behaviour".
#![no_main]

#[allow(unused_macros)]
#[macro_use]
#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cognito_authorizer::config::Config;
use cognito_authorizer::jwks::{parse_jwks, KeySet};
use cognito_authorizer::signature::NoHostCrypto;
use cognito_authorizer::verify::{inspect, verify_signature};
use libfuzzer_sys::fuzz_target;

/// The fixed clock: every valid seed is valid at this instant.
const NOW: u64 = 1_800_000_000;

struct Fixture {
    config: Config,
    keys: KeySet,
    /// Tokens that may verify: the seeds and their ECDSA twins.
    accepted: Vec<String>,
}

const P256_N: &[u8] = &[
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];
const P384_N: &[u8] = &[
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xC7, 0x63, 0x4D, 0x81, 0xF4, 0x37, 0x2D, 0xDF,
    0x58, 0x1A, 0x0D, 0xB2, 0x48, 0xB0, 0xA7, 0x7A, 0xEC, 0xEC, 0x19, 0x6A, 0xCC, 0xC5, 0x29, 0x73,
];

/// `a - b` for equal-length big-endian numbers with `a > b`.
fn sub_be(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; a.len()];
    let mut borrow = 0i16;
    for i in (0..a.len()).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    out
}

/// `(r, n - s)`: the other signature ECDSA accepts for the same message and key.
fn ecdsa_twin(token: &str) -> Option<String> {
    let (input, sig_b64) = token.rsplit_once('.')?;
    let sig = URL_SAFE_NO_PAD.decode(sig_b64).ok()?;
    let n = match sig.len() {
        64 => P256_N,
        96 => P384_N,
        _ => return None,
    };
    let (r, s) = sig.split_at(n.len());
    let mut twin = r.to_vec();
    twin.extend(sub_be(n, s));
    Some(format!("{input}.{}", URL_SAFE_NO_PAD.encode(twin)))
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (config, _) = Config::parse(include_bytes!("../fixtures/token_config.json"))
            .expect("fixtures/token_config.json is a valid configuration");
        let keys = parse_jwks(include_bytes!("../fixtures/jwks.json"), 65536)
            .expect("fixtures/jwks.json is a valid JWKS");
        assert!(
            keys.skipped.is_empty(),
            "fixture keys skipped: {:?}",
            keys.skipped
        );
        let seeds: Vec<String> = include_str!("../fixtures/valid_tokens.txt")
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        // The harness is only meaningful if its seeds verify: guard against fixture rot.
        for seed in &seeds {
            let u = inspect(seed, &config).unwrap_or_else(|e| panic!("seed: {e}: {seed}"));
            verify_signature(u, &keys.keys, &config, NOW, &NoHostCrypto)
                .unwrap_or_else(|e| panic!("seed: {e}: {seed}"));
        }
        let mut accepted = seeds.clone();
        accepted.extend(seeds.iter().filter_map(|s| ecdsa_twin(s)));
        Fixture {
            config,
            keys: keys.keys,
            accepted,
        }
    })
}

/// `{header}\n{payload}\n{signature}` → compact JWS.
fn from_structured(data: &[u8]) -> Option<String> {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let header = parts.next()?;
    let payload = parts.next()?;
    let signature = std::str::from_utf8(parts.next()?).ok()?;
    Some(format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload),
        signature
    ))
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let token = if data.first() == Some(&b'{') {
        match from_structured(data) {
            Some(t) => t,
            None => return,
        }
    } else {
        match std::str::from_utf8(data) {
            Ok(t) => t.to_string(),
            Err(_) => return,
        }
    };
    let unverified = match inspect(&token, &f.config) {
        Ok(u) => u,
        Err(e) => {
            // Every refusal maps to a reply class and a name (decision.rs relies on both).
            let _ = e.reason.refusal();
            assert!(!e.reason.name().is_empty());
            assert!(e.pool.is_none_or(|p| p < f.config.pools.len()));
            return;
        }
    };
    assert!(token.len() <= f.config.max_token_bytes);
    assert!(unverified.pool < f.config.pools.len());
    match verify_signature(unverified, &f.keys, &f.config, NOW, &NoHostCrypto) {
        Ok(v) => {
            assert!(
                f.accepted.iter().any(|a| *a == token),
                "a token that is not a signed seed verified: {token:?} (input {data:?})"
            );
            let pool = &f.config.pools[v.pool];
            // The claims as the token has them (the verified token keeps only what later
            // requests read).
            let payload: serde_json::Value = token
                .split('.')
                .nth(1)
                .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .expect("a verified token's payload is JSON");
            assert_eq!(
                payload.get("iss").and_then(|i| i.as_str()),
                Some(pool.issuer.as_str())
            );
            let skew = f.config.clock_skew_seconds;
            assert!(NOW <= v.exp.saturating_add(skew), "expired token verified");
            for claim in ["nbf", "iat"] {
                if let Some(t) = payload.get(claim) {
                    let t = t.as_u64().expect("time claims are integers");
                    assert!(
                        t <= NOW.saturating_add(skew),
                        "{claim} in the future verified"
                    );
                }
            }
            // What later requests read is what the token says.
            assert_eq!(v.sub(), payload.get("sub").and_then(|s| s.as_str()));
            assert_eq!(v.claims.iat, payload.get("iat").and_then(|t| t.as_u64()));
            if let Some(client) = v.client_id() {
                assert!(pool.client_ids.is_empty() || pool.client_ids.iter().any(|c| c == client));
            }
        }
        Err(e) => {
            let _ = e.refusal();
        }
    }
});
