//! The proxy-wasm glue: the only code that talks to the host. Kept thin: every decision is
//! made by the pure modules of the crate; this layer reads headers, the clock and callout
//! results, and carries out what the core decided.
//!
//! - `root`: configuration, JWKS fetches and refreshes, waking requests that wait for keys.
//! - `http`: one request: the decision flow of SPEC §1.
//! - `host`: metrics, properties, clock — small wrappers over host calls.

mod host;
mod http;
mod root;

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::types::LogLevel;

use crate::cache::TokenCache;
use crate::config::Config;
use crate::keys::{KeyTiming, PoolKeys};
use crate::verify::VerifiedToken;

proxy_wasm::main! {{
    // Until the host's level is read in on_configure: nothing below info is formatted.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(root::Root::new(context_id)));
}}

/// State of one VM, shared by its root context and its HTTP contexts (one thread per VM).
/// Never borrowed across a host call that could re-enter the VM.
pub(crate) struct VmState {
    pub config: Rc<Config>,
    pub timing: KeyTiming,
    /// One entry per configured pool, same order as `config.pools`.
    pub pools: Vec<PoolKeys>,
    pub cache: TokenCache<Rc<Verified>>,
    pub waiters: Vec<Waiter>,
    /// The root ticks fast (see `http::BUSY_TICK`) while requests wait.
    pub busy_tick: bool,
    pub metrics: host::Metrics,
}

pub(crate) type SharedState = Rc<RefCell<VmState>>;

/// A verified token and the claim headers it yields, computed once and reused from the cache.
#[derive(Debug)]
pub(crate) struct Verified {
    pub token: VerifiedToken,
    pub claim_headers: Vec<(String, String)>,
}

/// A request paused until its pool's keys arrive (or its deadline passes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waiter {
    pub context_id: u32,
    pub pool: usize,
    pub deadline_ms: u64,
    /// It already waited for an unknown-`kid` refetch: it gets no second one.
    pub kid_refetched: bool,
}
