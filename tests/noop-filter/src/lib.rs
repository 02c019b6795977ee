//! A proxy-wasm filter that does nothing but what its configuration names: the reference
//! points of `make bench`. Never shipped.
//!
//! - no configuration (or any other text: the push tests change it only to make Envoy
//!   replace the filter): every request continues untouched ("no-op wasm"). The difference
//!   between it and Envoy without any filter is what the Wasm runtime costs by itself;
//! - `read-headers`: reads the request headers in one host call, the one the authorizer
//!   makes (`get_map_bytes`: the whole map, serialised), and continues: the floor of any
//!   filter that looks at a request (the "header-read ceiling");
//! - `verify <hash> <hex SPKI DER> <hex signature> <hex text>`: reads the headers, then asks
//!   Envoy's `verify_signature` foreign function about that fixed signature, as the
//!   authorizer asks it about a fresh token's, and continues when it holds (500 otherwise):
//!   the floor of a filter that must verify a signature with host crypto (the "verify
//!   ceiling").

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { reader: None }) });
}}

struct Root {
    /// `None`: the no-op filter. Otherwise the header-reading filter, with the protobuf
    /// `VerifySignatureArguments` it sends on every request when it also verifies.
    reader: Option<Rc<Option<Vec<u8>>>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        let text = String::from_utf8_lossy(&raw);
        let words: Vec<&str> = text.split_whitespace().collect();
        self.reader = match words.as_slice() {
            ["read-headers"] => Some(Rc::new(None)),
            ["verify", hash, key, signature, message] => {
                let (Some(key), Some(signature), Some(message)) =
                    (hex(key), hex(signature), hex(message))
                else {
                    return false;
                };
                Some(Rc::new(Some(verify_arguments(
                    hash, &key, &signature, &message,
                ))))
            }
            _ => None,
        };
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        match &self.reader {
            // No allocation beyond the no-op filter's own: the reference stays what it was.
            None => Some(Box::new(Noop)),
            Some(verify) => Some(Box::new(Reader {
                verify: Rc::clone(verify),
            })),
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
}

struct Reader {
    verify: Rc<Option<Vec<u8>>>,
}

impl Context for Reader {}

impl HttpContext for Reader {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        std::hint::black_box(hostcalls::get_map_bytes(MapType::HttpRequestHeaders).ok());
        if let Some(arguments) = self.verify.as_ref() {
            let answer = hostcalls::call_foreign_function("verify_signature", Some(arguments));
            // VerifySignatureResult { bool result = 1; ... }: true is 08 01.
            if !matches!(answer, Ok(Some(bytes)) if bytes.starts_with(&[0x08, 0x01])) {
                self.send_http_response(500, vec![], Some(b"verify ceiling: signature refused"));
                return Action::Pause;
            }
        }
        Action::Continue
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect()
}

/// `VerifySignatureArguments { string hash_function = 1; bytes public_key = 2;
/// bytes signature = 3; bytes text = 4; }` as protobuf bytes.
fn verify_arguments(hash: &str, key: &[u8], signature: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (field, value) in [(1u8, hash.as_bytes()), (2, key), (3, signature), (4, text)] {
        out.push((field << 3) | 2);
        let mut len = value.len();
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(value);
    }
    out
}
