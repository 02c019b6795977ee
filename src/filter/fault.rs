//! Test-only request hooks, compiled in only with the cargo feature `fault-injection`
//! (`make build-fault`; never in `make build`). The end-to-end tests use them to reach paths
//! a well-formed request cannot:
//!
//! - `x-cognito-authorizer-fault: panic` makes the VM panic (the filter must fail closed);
//! - `x-cognito-authorizer-fault: verify` is a signature probe. It imports the JWK in
//!   `x-fault-jwk` (base64url JSON) with the module's JWKS parser, then checks the signature
//!   `x-fault-sig` over the message `x-fault-msg` (both base64url) under `x-fault-alg` exactly
//!   as a token's signature is checked (`verify::signature_valid` with the VM's host crypto),
//!   and answers 200 with `{"host": true|false|null, "module": true|false, "filter":
//!   true|false}`: the host's answer (`null` when the filter does not ask the host), the
//!   module's own verifier's, and the decision. A key the parser refuses is answered
//!   `{"key": "<why>"}`. The tests run public test vectors through it (tests/e2e/tokens/
//!   test_signature_vectors.py).
//!
//! And one start-up hook: `on_vm_start` fails when the VM's configuration
//! (`vm_config.configuration`) is [`FAIL_VM_START`], as a VM that cannot start would
//! (tests/e2e/operations/test_module_fails_to_start.py).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proxy_wasm::types::Action as HostAction;
use serde_json::{json, Value};

use super::{host, SharedState};
use crate::algorithm::Algorithm;
use crate::jwks::parse_jwks;
use crate::request::RequestHeaders;
use crate::signature::NoHostCrypto;
use crate::verify::{host_answer, signature_valid};

/// The VM configuration that makes `on_vm_start` fail.
pub const FAIL_VM_START: &[u8] = b"fault: fail on_vm_start";

/// Whether `on_vm_start` must fail for this VM configuration.
pub fn vm_start_fails(vm_configuration: Option<&[u8]>) -> bool {
    vm_configuration == Some(FAIL_VM_START)
}

/// Runs the hook the request names, if any: `Some` when the request was answered here.
#[allow(clippy::panic)]
pub fn hook(state: &SharedState, headers: &RequestHeaders) -> Option<HostAction> {
    match headers.first("x-cognito-authorizer-fault")? {
        "panic" => panic!("fault injection: x-cognito-authorizer-fault: panic"),
        "verify" => {
            let (status, body) = match verify_probe(state, headers) {
                Ok(answer) => (200, answer),
                Err(why) => (400, json!({ "probe": why })),
            };
            let headers = [("content-type", "application/json".to_string())];
            host::send_local_reply(status, &headers, &body.to_string());
            Some(HostAction::Pause)
        }
        _ => None,
    }
}

fn verify_probe(state: &SharedState, headers: &RequestHeaders) -> Result<Value, String> {
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let value = headers.first(name).ok_or(format!("no {name}"))?;
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| format!("{name} is not base64url"))
    };
    let alg = headers
        .first("x-fault-alg")
        .and_then(Algorithm::parse)
        .ok_or("x-fault-alg is not an algorithm")?;
    let (jwk, message, signature) = (
        field("x-fault-jwk")?,
        field("x-fault-msg")?,
        field("x-fault-sig")?,
    );
    let mut body = br#"{"keys":["#.to_vec();
    body.extend_from_slice(&jwk);
    body.extend_from_slice(b"]}");
    let keys = match parse_jwks(&body, usize::MAX) {
        Ok(parsed) => parsed.keys,
        Err(why) => return Ok(json!({ "key": why })),
    };
    let key = keys
        .kids()
        .first()
        .and_then(|kid| keys.get(kid))
        .ok_or("no key")?;
    let vm = state.borrow();
    let crypto = &vm.host_crypto;
    Ok(json!({
        "host": host_answer(key, alg, &message, &signature, crypto),
        "module": signature_valid(key, alg, &message, &signature, &NoHostCrypto),
        "filter": signature_valid(key, alg, &message, &signature, crypto),
    }))
}
