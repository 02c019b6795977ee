//! One request: read it, let the core decide (`authorize`), carry the decision out. The
//! root context calls [`decide`] again for a request that waited for keys. Trailers, when a
//! request has them, lose the client's copies of identity headers too.

use log::debug;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action as HostAction;

use super::host::{self, request_headers, set_property, set_request_header};
use super::SharedState;
use crate::authorize::{authorize, Action, Attempt, Decision};
use crate::identity::forged_headers;
use crate::request::RequestHeaders;

pub struct Filter {
    context_id: u32,
    state: SharedState,
}

impl Filter {
    pub fn new(context_id: u32, state: SharedState) -> Self {
        Filter { context_id, state }
    }

    fn forget_waiter(&self) {
        if let Ok(mut s) = self.state.try_borrow_mut() {
            s.core.forget_waiter(self.context_id);
        }
    }
}

impl Context for Filter {
    fn on_done(&mut self) -> bool {
        self.forget_waiter();
        true
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        self.forget_waiter();
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> HostAction {
        host::take_host_calls();
        let headers = request_headers();
        #[cfg(feature = "fault-injection")]
        if let Some(action) = super::fault::hook(&self.state, &headers) {
            return action;
        }
        let action = decide(&self.state, Attempt::first(self.context_id), headers);
        // The per-request budget (README "Benchmarks"), for the tests that check it.
        debug!("host calls: {}", host::take_host_calls());
        action
    }

    /// Only for a request that carries trailers: the client's copies of identity headers are
    /// removed from them as from its headers, whatever the decision was (README "Identity for
    /// the upstream").
    fn on_http_request_trailers(&mut self, _trailers: usize) -> HostAction {
        let trailers = host::request_trailers();
        let protected = &self.state.borrow().core.config.protected_headers;
        for name in forged_headers(trailers.names(), protected) {
            host::remove_request_trailer(name);
        }
        HostAction::Continue
    }
}

/// Decides the host's current request and carries the decision out. `Continue`: let it
/// through (headers already changed). `Pause`: answered locally, or waiting for keys.
pub fn decide(state: &SharedState, attempt: Attempt, headers: RequestHeaders) -> HostAction {
    let decision = {
        let mut guard = state.borrow_mut();
        let vm = &mut *guard;
        let decision = authorize(
            &mut vm.core,
            headers,
            host::now_ms,
            attempt,
            &vm.host_crypto,
        );
        vm.report_key_counts();
        decision
    };
    apply(state, decision)
}

fn apply(state: &SharedState, decision: Decision) -> HostAction {
    {
        let vm = state.borrow();
        for count in &decision.counters {
            vm.metrics.count(*count);
        }
    }
    for (name, value) in decision.header_changes() {
        set_request_header(name, value);
    }
    if let Some(refused) = &decision.refused {
        // Described only when debug lines are printed (the macro evaluates nothing else).
        debug!("refused: {}", refused.describe(&state.borrow().core.config));
    }
    for (name, value) in &decision.properties {
        set_property(name, value);
    }
    match decision.action {
        Action::Continue { .. } => HostAction::Continue,
        Action::Reply {
            status,
            body,
            headers,
        } => {
            host::send_local_reply(status, &headers, body);
            HostAction::Pause
        }
        Action::Wait { tick } => {
            host::set_tick_period(tick);
            HostAction::Pause
        }
    }
}
