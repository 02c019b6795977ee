//! The plugin configuration (`Config::parse`) from arbitrary bytes.
//!
//! Invariants: no panic; a refusal names a JSON path and a problem; an accepted configuration
//! keeps the promises the rest of the filter relies on (bounded numbers, at least one pool and
//! one token source, distinct pool names and issuers, printable realm, identity headers never
//! a token source header, every pool findable by its issuer).
#![no_main]

#[allow(unused_macros)]
#[macro_use]
#[path = "common.rs"]
mod common;

use cognito_authorizer::config::{Config, TokenSource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (config, _warnings) = match Config::parse(data) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.problem.is_empty(), "refusal without a problem: {e:?}");
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(!config.pools.is_empty());
    assert!(!config.token_sources.is_empty());
    for (i, pool) in config.pools.iter().enumerate() {
        assert_eq!(config.pool_for_issuer(&pool.issuer), Some(i), "{pool:?}");
        assert!(!pool.name.is_empty() && !pool.jwks_cluster.is_empty());
        assert!(pool.client_ids.iter().all(|c| !c.is_empty()));
        assert!(!pool.jwks.authority.is_empty() && pool.jwks.path.starts_with('/'));
        for (j, other) in config.pools.iter().enumerate() {
            if i != j {
                assert_ne!(pool.name, other.name);
                assert_ne!(pool.issuer, other.issuer);
            }
        }
    }
    assert!(!config.realm.is_empty());
    assert!(config
        .realm
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'));
    assert!(config.clock_skew_seconds <= 3600);
    assert!((256..=1 << 20).contains(&config.max_token_bytes));
    assert!((1024..=16 << 20).contains(&config.max_jwks_bytes));
    assert!(config.token_cache_size <= 1 << 20);
    assert!(config.jwks_refresh_seconds >= 1);
    let source_headers: Vec<String> = config
        .token_sources
        .iter()
        .filter_map(|s| match s {
            TokenSource::Header { name } | TokenSource::HeaderWithPrefix { name, .. } => {
                Some(name.replace('_', "-"))
            }
            _ => None,
        })
        .collect();
    // Folded names (`_` read as `-`): what the filter strips from every request.
    let identity: Vec<&str> = config
        .protected_headers
        .iter()
        .map(String::as_str)
        .collect();
    for h in &identity {
        assert!(
            !source_headers.iter().any(|s| s == h),
            "identity header {h:?} is a token source"
        );
        assert!(
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()),
            "identity header {h:?} is not a lower-case header name"
        );
        assert!(
            !h.starts_with(':'),
            "identity header {h:?} is a pseudo-header"
        );
    }
    let mut sorted = identity.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        identity.len(),
        "an identity header is set twice"
    );
});
