//! # cognito-authorizer
//!
//! A proxy-wasm HTTP filter that does for Envoy and Istio what API Gateway's Cognito user pool
//! authorizer does for an API: a request reaches the upstream only with a valid Cognito JWT,
//! otherwise Envoy answers it locally (400, 401, 403, 503) with API Gateway's bodies.
//!
//! Request flow (`authorize`, called by `filter::http` with the headers it read):
//! 1. set client copies of identity headers aside (`identity`); 2. the strictest route rule
//!    over every reading of the path (`rules`, `path`): `allow` continues; 3. extract the
//!    token (`extract`); 4. cached? (`cache`) else check it without keys (`verify::inspect`),
//!    get the pool's keys (`keys`, `jwks`, fetched by `fetch`) and verify the signature
//!    (`verify::verify_signature`, `signature`); 5. revocations (`revocation`), then the
//!    route's requirements (`rules`); 6. claim headers (`identity`) and continue. Any refusal is
//!    answered by `decision`.
//!
//! Everything except `filter` is pure logic with no proxy-wasm dependency, unit tested natively.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod algorithm;
pub mod authorize;
pub mod cache;
pub mod claims;
pub mod cognito;
pub mod config;
pub mod cors;
pub mod decision;
pub mod error;
pub mod extract;
pub mod fetch;
pub mod identity;
pub mod json;
pub mod json_path;
pub mod jwks;
pub mod key_fetch;
pub mod keys;
pub mod metrics;
pub mod path;
pub mod request;
pub mod revocation;
pub mod revocation_fetch;
pub mod rsa;
pub mod rules;
pub mod shared_keys;
pub mod signature;
pub mod verify;
pub mod vm;

#[cfg(target_arch = "wasm32")]
mod filter;
