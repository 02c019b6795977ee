//! The proxy-wasm glue: the only code that talks to the host. It decides nothing: it reads
//! the request, the clock and callout results, hands them to the pure core (`authorize`,
//! `fetch`, `vm`) and carries out what the core decided.
//!
//! - `root`: configuration; on each tick, shared data, due fetches and waiting requests.
//! - `http`: one request: read, decide (`authorize`), apply.
//! - `host`: metrics, properties, clock, headers, host crypto — counted host calls.
//! - `shared`: the host's shared data behind the pure `shared_keys` protocol.
//! - `fault`: test-only hooks (cargo feature `fault-injection`, never shipped).

#[cfg(feature = "fault-injection")]
mod fault;
mod host;
mod http;
mod root;
mod shared;

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::types::LogLevel;

use crate::vm::VmState;

proxy_wasm::main! {{
    // Until the host's level is read in on_configure: nothing below info is formatted.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(root::Root::new(context_id)));
}}

/// One VM (one thread): the core's state and the host handles that go with it. Shared by
/// the root context and the HTTP contexts; never borrowed across a host call that could
/// re-enter the VM.
pub(crate) struct Vm {
    pub core: VmState<shared::HostSharedData>,
    pub metrics: host::Metrics,
    /// Signature checks by the host, where its self-test passed.
    pub host_crypto: host::HostCrypto,
}

impl Vm {
    /// Publishes the key-count gauges of the pools whose key set changed.
    pub fn report_key_counts(&mut self) {
        for (pool, count) in self.core.take_key_counts() {
            self.metrics.set_keys(pool, count);
        }
    }
}

pub(crate) type SharedState = Rc<RefCell<Vm>>;
