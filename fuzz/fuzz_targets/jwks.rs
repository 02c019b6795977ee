//! A fetched JWKS body through `parse_jwks` (the body comes from the network: a compromised or
//! broken endpoint must not be able to crash the filter).
//!
//! Invariants: no panic; over `max_bytes` is refused; an accepted set is non-empty, every key
//! has a non-empty `kid` findable by it and at least one algorithm; and a fixed RS256 token
//! (signed with a key the fuzzer never sees) never verifies against the parsed keys — unless
//! the set really contains the public key it was signed with (the seeds do).
#![no_main]

#[allow(unused_macros)]
#[macro_use]
#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cognito_authorizer::config::Config;
use cognito_authorizer::jwks::{parse_jwks, Algorithm};
use cognito_authorizer::signature::NoHostCrypto;
use cognito_authorizer::verify::{inspect, verify_signature, UnverifiedToken};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const MAX: usize = 65536;
const NOW: u64 = 1_800_000_000;

struct Fixture {
    config: Config,
    /// The valid seed tokens of the `token` target, inspected once.
    tokens: Vec<UnverifiedToken<'static>>,
    /// Public key material of the fixture JWKS (`n` and `x`, decoded, without leading zeros).
    material: Vec<Vec<u8>>,
}

fn decoded(s: &str) -> Option<Vec<u8>> {
    let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    Some(bytes[skip..].to_vec())
}

/// Every string anywhere in a JSON value.
fn strings<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Object(m) => m.values().for_each(|i| strings(i, out)),
        _ => {}
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (config, _) =
            Config::parse(include_bytes!("../fixtures/token_config.json")).expect("fixture config");
        let tokens = include_str!("../fixtures/valid_tokens.txt")
            .lines()
            .filter(|l| !l.is_empty())
            .map(|t| inspect(t, &config).expect("fixture token passes inspect"))
            .collect();
        let jwks: Value =
            serde_json::from_slice(include_bytes!("../fixtures/jwks.json")).expect("fixture jwks");
        let material = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter_map(|k| k.get("n").or_else(|| k.get("x")))
            .filter_map(|v| v.as_str().and_then(decoded))
            .collect();
        Fixture {
            config,
            tokens,
            material,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX {
        assert!(parse_jwks(data, MAX).is_err());
        return;
    }
    // The bound is checked before parsing.
    if !data.is_empty() {
        assert!(parse_jwks(data, data.len() - 1).is_err());
    }
    let parsed = match parse_jwks(data, MAX) {
        Ok(p) => p,
        Err(why) => {
            assert!(!why.is_empty());
            return;
        }
    };
    let keys = &parsed.keys;
    assert!(!keys.is_empty());
    assert_eq!(keys.kids().len(), keys.len());
    for kid in keys.kids() {
        assert!(!kid.is_empty());
        let jwk = keys.get(kid).expect("listed kid is findable");
        assert_eq!(jwk.kid, kid);
        assert!(
            Algorithm::ALL.iter().any(|a| jwk.allows(*a)),
            "key {kid:?} serves no algorithm"
        );
    }

    // Signed seeds verify only against a set that holds their real public key.
    let f = fixture();
    let verified = f
        .tokens
        .iter()
        .filter(|u| verify_signature((*u).clone(), keys, &f.config, NOW, &NoHostCrypto).is_ok())
        .count();
    if verified > 0 {
        let json: Value = serde_json::from_slice(data).expect("an accepted JWKS is JSON");
        let mut all = Vec::new();
        strings(&json, &mut all);
        assert!(
            all.iter()
                .filter_map(|s| decoded(s))
                .any(|d| f.material.contains(&d)),
            "{verified} seed token(s) verified against a JWKS without their key: {:?}",
            String::from_utf8_lossy(data)
        );
    }
});
