//! Small wrappers over host calls: clock, metrics, properties, request headers. Every host
//! call a request makes goes through here (or `shared.rs`) and is counted, so that the
//! per-request budget (README "Benchmarks") is measured, not assumed.

use std::cell::Cell;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, MetricType};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::config::Config;
use crate::metrics::{Counter, Gauge};
use crate::request::RequestHeaders;
use crate::signature::{
    decode_verify_result, ec_host_key, ecdsa_signature_to_der, encode_verify_arguments,
    rsa_host_key, self_test, HostCheck, HostKeyKind, SignatureBackend,
};

thread_local! {
    /// Host calls since [`take_host_calls`] last read them (one VM is one thread).
    static HOST_CALLS: Cell<u32> = const { Cell::new(0) };
}

/// Counts one host call.
pub fn counted<T>(result: T) -> T {
    HOST_CALLS.with(|c| c.set(c.get().saturating_add(1)));
    result
}

/// The host calls counted since the last call, and starts counting anew.
pub fn take_host_calls() -> u32 {
    HOST_CALLS.with(|c| c.replace(0))
}

/// Host wall-clock time in milliseconds since the Unix epoch (0 if the host cannot tell).
pub fn now_ms() -> u64 {
    counted(hostcalls::get_current_time())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Cheap entropy for backoff jitter: the host clock's nanoseconds.
pub fn jitter() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| {
            u64::from(d.subsec_nanos()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        })
}

/// Every request header, in one host call. Read as bytes: header values may carry obs-text
/// (bytes 0x80-0xFF) that is not UTF-8, on which the SDK's string getters panic — one such
/// request would take the VM down. Invalid bytes become U+FFFD, so a token carrying them is
/// simply invalid. Envoy has already joined repeated `authorization` headers into one.
pub fn request_headers() -> RequestHeaders {
    RequestHeaders::new(
        counted(hostcalls::get_map_bytes(MapType::HttpRequestHeaders))
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
            .collect(),
    )
}

/// A header of the JWKS callout's response (same reason as [`request_header`]).
pub fn callout_response_header(name: &str) -> Option<String> {
    map_value(MapType::HttpCallResponseHeaders, name)
}

fn map_value(map: MapType, name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(map, name)
        .ok()
        .flatten()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

pub fn set_request_header(name: &str, value: Option<&str>) {
    let _ = counted(hostcalls::set_map_value(
        MapType::HttpRequestHeaders,
        name,
        value,
    ));
}

/// Publishes `cognito_authorizer.<key>` as a property (Envoy filter state `wasm.<key>`).
pub fn set_property(key: &str, value: &str) {
    let _ = counted(hostcalls::set_property(vec![key], Some(value.as_bytes())));
}

/// Metric ids, defined once per VM at configure time.
#[derive(Debug, Default)]
pub struct Metrics {
    global: Vec<(Counter, u32)>,
    /// Per pool, same order as `config.pools`.
    per_pool: Vec<Vec<(Counter, u32)>>,
    /// Per pool: the `keys` gauge.
    keys_gauge: Vec<Option<u32>>,
}

impl Metrics {
    pub fn define(config: &Config) -> Metrics {
        let define = |name: String| hostcalls::define_metric(MetricType::Counter, &name).ok();
        let global = Counter::ALL
            .iter()
            .filter_map(|c| define(c.global_name()).map(|id| (*c, id)))
            .collect();
        let per_pool = config
            .pools
            .iter()
            .map(|p| {
                Counter::ALL
                    .iter()
                    .filter(|c| c.per_pool())
                    .filter_map(|c| define(c.pool_name(&p.name)).map(|id| (*c, id)))
                    .collect()
            })
            .collect();
        let keys_gauge = config
            .pools
            .iter()
            .map(|p| {
                hostcalls::define_metric(MetricType::Gauge, &Gauge::Keys.pool_name(&p.name)).ok()
            })
            .collect();
        Metrics {
            global,
            per_pool,
            keys_gauge,
        }
    }

    /// Records how many usable keys the pool's current set has.
    pub fn set_keys(&self, pool: usize, count: usize) {
        if let Some(Some(id)) = self.keys_gauge.get(pool) {
            let _ = counted(hostcalls::record_metric(*id, count as u64));
        }
    }

    /// Counts once globally and, when the pool is known, once for the pool.
    pub fn count(&self, counter: Counter, pool: Option<usize>) {
        let bump = |ids: &[(Counter, u32)]| {
            if let Some((_, id)) = ids.iter().find(|(c, _)| *c == counter) {
                let _ = counted(hostcalls::increment_metric(*id, 1));
            }
        };
        bump(&self.global);
        if let Some(ids) = pool.and_then(|p| self.per_pool.get(p)) {
            bump(ids);
        }
    }
}

/// Envoy's `verify_signature` foreign function, per key kind, as the self-test found it.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostCrypto {
    pub rsa: bool,
    pub ec: bool,
}

impl HostCrypto {
    /// Known-answer self-test: the host must accept each test signature and refuse it with
    /// one bit flipped. A host without the function (another proxy, an older Envoy) or one
    /// that answers wrongly is not used.
    pub fn detect() -> HostCrypto {
        let probe = HostCrypto {
            rsa: true,
            ec: true,
        };
        let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap_or_default();
        let passes = |key: Option<crate::signature::HostKey>, sig: Vec<u8>| {
            let Some(key) = key else { return false };
            let hash = "sha256";
            let good = HostCheck {
                hash,
                key: &key,
                signature: &sig,
                text: self_test::MESSAGE,
            };
            let mut flipped = sig.clone();
            if let Some(last) = flipped.last_mut() {
                *last ^= 1;
            }
            let bad = HostCheck {
                hash,
                key: &key,
                signature: &flipped,
                text: self_test::MESSAGE,
            };
            probe.verify(&good) == Some(true) && probe.verify(&bad) == Some(false)
        };
        let rsa_key = Some(rsa_host_key(&b64(self_test::RSA_N), &b64(self_test::RSA_E)));
        let rsa = passes(rsa_key, b64(self_test::RSA_SIG));
        let mut point = vec![4];
        point.extend(b64(self_test::EC_X));
        point.extend(b64(self_test::EC_Y));
        let ec_key = ec_host_key(HostKeyKind::EcP256, &point);
        let ec_sig = ecdsa_signature_to_der(&b64(self_test::EC_SIG), HostKeyKind::EcP256)
            .unwrap_or_default();
        let ec = passes(ec_key, ec_sig);
        HostCrypto { rsa, ec }
    }
}

impl SignatureBackend for HostCrypto {
    fn verify(&self, check: &HostCheck<'_>) -> Option<bool> {
        let enabled = match check.key.kind {
            HostKeyKind::Rsa => self.rsa,
            HostKeyKind::EcP256 | HostKeyKind::EcP384 => self.ec,
        };
        if !enabled {
            return None;
        }
        let arguments = encode_verify_arguments(check);
        match counted(hostcalls::call_foreign_function(
            "verify_signature",
            Some(&arguments),
        )) {
            Ok(Some(result)) => decode_verify_result(&result),
            Ok(None) => decode_verify_result(&[]),
            Err(_) => None,
        }
    }
}

/// Answers the current request locally.
pub fn send_local_reply(status: u32, headers: &[(&str, String)], body: &str) {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let _ = counted(hostcalls::send_http_response(
        status,
        headers,
        Some(body.as_bytes()),
    ));
}

/// Sets the root context's tick period.
pub fn set_tick_period(period: std::time::Duration) {
    let _ = counted(hostcalls::set_tick_period(period));
}
