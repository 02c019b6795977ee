//! RS256 verification timed inside Envoy's V8: the authorizer's own verifier (feature `own`)
//! or RustCrypto's `rsa` (feature `rustcrypto`), at most one per build; `digest` hashes the
//! message only, and no feature verifies nothing (the rig's fixed cost).
//!
//! Keys are imported once, at VM start (the authorizer imports them at JWKS load), and
//! checked there: the fixed signature must verify and a tampered message or signature must
//! not, or the VM refuses to start. Each request verifies the fixed signature `x-verify-count`
//! times (default 1) with the `x-key-bits` key (2048, the default, or 4096) and answers a
//! local reply: 200 with the elapsed time measured in the module (the host clock before and
//! after) in `x-verify-ns-total` / `x-verify-us-total`, or 500 if any verification failed.

use std::hint::black_box;
use std::rc::Rc;
use std::time::SystemTime;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

#[cfg(any(
    all(feature = "own", feature = "rustcrypto"),
    all(feature = "own", feature = "digest"),
    all(feature = "rustcrypto", feature = "digest"),
))]
compile_error!("enable at most one of the features own, rustcrypto, digest");

#[allow(dead_code)]
mod fixtures;

#[cfg(feature = "own")]
#[allow(dead_code)]
#[path = "../../../src/algorithm.rs"]
mod algorithm;

#[cfg(feature = "own")]
#[allow(dead_code)]
#[path = "../../../src/rsa.rs"]
mod rsa;

/// One verifier behind the same three calls.
#[cfg(feature = "own")]
mod verifier {
    use crate::algorithm::DigestKind;
    pub const NAME: &str = "own";
    pub type Key = crate::rsa::RsaPublicKey;
    pub fn limb_bits() -> u32 {
        32
    }
    pub fn import(n: &[u8], e: &[u8]) -> Option<Key> {
        Key::new(n, e).ok()
    }
    /// As src/jwks.rs calls it: the signing input, hashed inside.
    pub fn verify(key: &Key, message: &[u8], signature: &[u8]) -> bool {
        key.verify_pkcs1v15(DigestKind::Sha256, message, signature)
    }
}

#[cfg(feature = "rustcrypto")]
mod verifier {
    use rsa::{BoxedUint, Pkcs1v15Sign, PublicKey};
    use sha2::{Digest, Sha256};
    pub const NAME: &str = "rustcrypto";
    pub type Key = PublicKey;
    /// crypto-bigint's limb width in this build (cpubits: 64 on wasm32 unless overridden).
    pub fn limb_bits() -> u32 {
        BoxedUint::one().bits_precision()
    }
    pub fn import(n: &[u8], e: &[u8]) -> Option<Key> {
        let n = BoxedUint::from_be_slice_vartime(n);
        let e = BoxedUint::from_be_slice_vartime(e);
        PublicKey::new(n, e).ok()
    }
    pub fn verify(key: &Key, message: &[u8], signature: &[u8]) -> bool {
        let hashed = Sha256::digest(message);
        key.verify(Pkcs1v15Sign::new::<Sha256>(), &hashed, signature)
            .is_ok()
    }
}

#[cfg(feature = "digest")]
mod verifier {
    use sha2::{Digest, Sha256};
    pub const NAME: &str = "digest";
    /// The message's SHA-256, computed once at start; each "verification" recomputes it.
    pub type Key = Vec<u8>;
    pub fn limb_bits() -> u32 {
        0
    }
    pub fn import(_n: &[u8], _e: &[u8]) -> Option<Key> {
        Some(Sha256::digest(crate::fixtures::MESSAGE).to_vec())
    }
    pub fn verify(key: &Key, message: &[u8], _signature: &[u8]) -> bool {
        Sha256::digest(message).as_slice() == key.as_slice()
    }
}

#[cfg(not(any(feature = "own", feature = "rustcrypto", feature = "digest")))]
mod verifier {
    pub const NAME: &str = "none";
    pub type Key = ();
    pub fn limb_bits() -> u32 {
        0
    }
    pub fn import(_n: &[u8], _e: &[u8]) -> Option<Key> {
        Some(())
    }
    pub fn verify(_key: &Key, message: &[u8], signature: &[u8]) -> bool {
        !message.is_empty() && !signature.is_empty()
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { keys: None }) });
}}

/// A key with the signature it must accept, and how long importing it took.
struct Fixture {
    bits: u32,
    key: verifier::Key,
    signature: &'static [u8],
    import_ns: u128,
}

struct Keys {
    k2048: Fixture,
    k4096: Fixture,
}

fn now() -> SystemTime {
    proxy_wasm::hostcalls::get_current_time().unwrap_or(SystemTime::UNIX_EPOCH)
}

fn elapsed_ns(start: SystemTime, end: SystemTime) -> u128 {
    end.duration_since(start).map(|d| d.as_nanos()).unwrap_or(0)
}

fn load(bits: u32, n: &[u8], signature: &'static [u8]) -> Result<Fixture, String> {
    let start = now();
    let key = verifier::import(n, &fixtures::E).ok_or(format!("{bits}-bit key refused"))?;
    let import_ns = elapsed_ns(start, now());
    if !verifier::verify(&key, fixtures::MESSAGE, signature) {
        return Err(format!("{bits}-bit signature not accepted"));
    }
    if verifier::NAME != "none" {
        let mut message = fixtures::MESSAGE.to_vec();
        message[100] ^= 1;
        if verifier::verify(&key, &message, signature) {
            return Err(format!("{bits}-bit: a tampered message verified"));
        }
    }
    if verifier::NAME != "none" && verifier::NAME != "digest" {
        let mut sig = signature.to_vec();
        sig[17] ^= 0x40;
        if verifier::verify(&key, fixtures::MESSAGE, &sig) {
            return Err(format!("{bits}-bit: a tampered signature verified"));
        }
    }
    Ok(Fixture { bits, key, signature, import_ns })
}

struct Root {
    keys: Option<Rc<Keys>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        let keys = load(2048, &fixtures::N_2048, &fixtures::SIG_2048)
            .and_then(|k2048| Ok((k2048, load(4096, &fixtures::N_4096, &fixtures::SIG_4096)?)));
        match keys {
            Ok((k2048, k4096)) => {
                log::info!(
                    "rsa-compare: verifier {}, limb bits {}, key import {} / {} ns (2048 / 4096)",
                    verifier::NAME,
                    verifier::limb_bits(),
                    k2048.import_ns,
                    k4096.import_ns
                );
                self.keys = Some(Rc::new(Keys { k2048, k4096 }));
                true
            }
            Err(why) => {
                log::error!("rsa-compare: {why}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http { keys: self.keys.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    keys: Option<Rc<Keys>>,
}

impl Context for Http {}

impl Http {
    fn reply(&self, status: u32, headers: Vec<(&str, String)>, body: &str) -> Action {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.send_http_response(status, headers, Some(body.as_bytes()));
        Action::Pause
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(keys) = self.keys.clone() else {
            return self.reply(500, vec![], "no keys\n");
        };
        let count: u32 = match self.get_http_request_header("x-verify-count") {
            None => 1,
            Some(v) => match v.parse() {
                Ok(n) if (1..=100_000).contains(&n) => n,
                _ => return self.reply(400, vec![], "x-verify-count: 1 to 100000\n"),
            },
        };
        let fixture = match self.get_http_request_header("x-key-bits").as_deref() {
            None | Some("2048") => &keys.k2048,
            Some("4096") => &keys.k4096,
            Some(_) => return self.reply(400, vec![], "x-key-bits: 2048 or 4096\n"),
        };
        let mut failures = 0u32;
        let start = now();
        for _ in 0..count {
            let ok = verifier::verify(
                &fixture.key,
                black_box(fixtures::MESSAGE),
                black_box(fixture.signature),
            );
            if !black_box(ok) {
                failures += 1;
            }
        }
        let ns = elapsed_ns(start, now());
        let headers = vec![
            ("x-verifier", verifier::NAME.to_string()),
            ("x-limb-bits", verifier::limb_bits().to_string()),
            ("x-key-bits", fixture.bits.to_string()),
            ("x-verify-count", count.to_string()),
            ("x-verify-failures", failures.to_string()),
            ("x-verify-ns-total", ns.to_string()),
            ("x-verify-us-total", format!("{:.3}", ns as f64 / 1000.0)),
            ("x-import-ns", fixture.import_ns.to_string()),
        ];
        if failures > 0 {
            return self.reply(500, headers, "a verification failed\n");
        }
        self.reply(200, headers, "ok\n")
    }
}
