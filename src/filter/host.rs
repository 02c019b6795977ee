//! Small wrappers over host calls: clock, metrics, properties, request headers and trailers.
//! Every host call a request makes goes through here (or `shared.rs`) and is counted, so that
//! the per-request budget (README "Benchmarks") is measured, not assumed.

use std::cell::Cell;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType};

use crate::config::Config;
use crate::key_fetch::CalloutBody;
use crate::metrics::{self, Count, Gauge, MetricIds};
use crate::request::RequestHeaders;
use crate::signature::{decode_verify_result, encode_verify_arguments, HostBackend, HostCheck};

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

/// Host wall-clock time since the Unix epoch (zero if the host cannot tell).
fn host_time() -> std::time::Duration {
    counted(hostcalls::get_current_time())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default()
}

/// Host wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    u64::try_from(host_time().as_millis()).unwrap_or(u64::MAX)
}

/// Cheap entropy for backoff jitter: the host clock's nanoseconds.
pub fn jitter() -> u64 {
    u64::from(host_time().subsec_nanos()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Every request header, in one host call, read as bytes (`RequestHeaders::from_bytes`: the
/// SDK's string getters panic on obs-text). Envoy has already joined repeated
/// `authorization` headers into one.
pub fn request_headers() -> RequestHeaders {
    RequestHeaders::from_bytes(
        counted(hostcalls::get_map_bytes(MapType::HttpRequestHeaders)).unwrap_or_default(),
    )
}

/// The request's trailers (HTTP/2, or chunked HTTP/1.1 with `enable_trailers`), read as bytes
/// like its headers.
pub fn request_trailers() -> RequestHeaders {
    RequestHeaders::from_bytes(
        counted(hostcalls::get_map_bytes(MapType::HttpRequestTrailers)).unwrap_or_default(),
    )
}

/// Removes a request trailer.
pub fn remove_request_trailer(name: &str) {
    let map = MapType::HttpRequestTrailers;
    let _ = counted(hostcalls::set_map_value(map, name, None));
}

/// A header of the JWKS callout's response, read as bytes like the request's.
pub fn callout_response_header(name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
        .ok()
        .flatten()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// The body of the callout answer being handled, read from the host in pieces.
pub struct CalloutResponseBody;

impl CalloutBody for CalloutResponseBody {
    fn read(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, start, len);
        body.ok().flatten().filter(|bytes| bytes.len() == len)
    }
}

/// Sets (or, with `None`, removes) a request header.
pub fn set_request_header(name: &str, value: Option<&str>) {
    let map = MapType::HttpRequestHeaders;
    let _ = counted(hostcalls::set_map_value(map, name, value));
}

/// Publishes `cognito_authorizer.<key>` as a property (Envoy filter state `wasm.<key>`).
pub fn set_property(key: &str, value: &str) {
    let _ = counted(hostcalls::set_property(vec![key], Some(value.as_bytes())));
}

/// The filter's metrics (`metrics`), defined once per VM at configure time.
#[derive(Debug)]
pub struct Metrics(MetricIds);

impl Metrics {
    pub fn define(config: &Config) -> Metrics {
        let names = config.pools.iter().map(|p| p.name.as_str());
        Metrics(MetricIds::define(names, |kind, name| {
            let kind = match kind {
                metrics::MetricType::Counter => MetricType::Counter,
                metrics::MetricType::Gauge => MetricType::Gauge,
            };
            hostcalls::define_metric(kind, name).ok()
        }))
    }

    /// Records how many usable keys the pool's current set has.
    pub fn set_keys(&self, pool: usize, count: usize) {
        if let Some(id) = self.0.gauge(Gauge::Keys, pool) {
            let _ = counted(hostcalls::record_metric(id, count as u64));
        }
    }

    /// Counts once globally and, when the pool is known, once for the pool.
    pub fn count(&self, (counter, pool): Count) {
        for id in self.0.counter(counter, pool).into_iter().flatten() {
            let _ = counted(hostcalls::increment_metric(id, 1));
        }
    }
}

/// Envoy's `verify_signature` foreign function (the host crypto of `signature`).
pub type HostCrypto = HostBackend<fn(&HostCheck<'_>) -> Option<bool>>;

pub fn verify_signature(check: &HostCheck<'_>) -> Option<bool> {
    let arguments = encode_verify_arguments(check);
    match counted(hostcalls::call_foreign_function(
        "verify_signature",
        Some(&arguments),
    )) {
        Ok(result) => decode_verify_result(&result.unwrap_or_default()),
        Err(_) => None,
    }
}

/// Answers the current request locally.
pub fn send_local_reply(status: u32, headers: &[(&str, String)], body: &str) {
    let headers = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let body = Some(body.as_bytes());
    let _ = counted(hostcalls::send_http_response(status, headers, body));
}

/// Sets the root context's tick period, when the core changed it.
pub fn set_tick_period(period: Option<std::time::Duration>) {
    if let Some(period) = period {
        let _ = counted(hostcalls::set_tick_period(period));
    }
}
