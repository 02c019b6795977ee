//! Root context: configures the VM; on each tick brings it up to date with shared data,
//! dispatches the fetches the core claims and re-runs the requests it wakes; hands callout
//! answers to the core (`fetch`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use log::{debug, info};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use super::host::{self, now_ms, request_headers, HostCrypto, Metrics};
use super::http;
use super::shared::HostSharedData;
use super::{SharedState, Vm};
use crate::config::SignatureBackendChoice;
use crate::fetch::Fetch;
use crate::key_fetch::{CalloutAnswer, CalloutBody};
use crate::vm::{Tick, VmState};

pub struct Root {
    context_id: u32,
    state: Option<SharedState>,
    /// Callout token → what it fetches, for fetches this VM started.
    fetches: HashMap<u32, Fetch>,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            state: None,
            fetches: HashMap::new(),
        }
    }

    /// Starts the fetches that are due and whose lease this VM wins.
    fn dispatch_due_fetches(&mut self, state: &SharedState) {
        let now = now_ms();
        let claimed = state.borrow_mut().core.claim_due(now);
        for (fetch, request) in claimed {
            let timeout = Duration::from_millis(request.timeout_ms);
            let headers = request.headers();
            match self.dispatch_http_call(&request.cluster, headers, None, vec![], timeout) {
                Ok(token) => {
                    debug!("{fetch}: fetching {} {request}", fetch.document());
                    self.fetches.insert(token, fetch);
                }
                Err(status) => {
                    let why = format!("{status:?}");
                    let mut vm = state.borrow_mut();
                    let jitter = host::jitter();
                    let count = vm.core.dispatch_failed(fetch, &request, &why, now, jitter);
                    vm.metrics.count(count);
                }
            }
        }
    }

    /// Re-runs the waiting requests the core says are due (their pool moved on, or their
    /// deadline passed).
    fn wake_waiters(&mut self, state: &SharedState) {
        let due = state.borrow_mut().core.due_waiters(now_ms());
        for waiter in due {
            // The request may be gone (client closed): then there is nothing to do.
            if hostcalls::set_effective_context(waiter.context_id).is_err() {
                continue;
            }
            if http::decide(state, waiter.into(), request_headers()) == Action::Continue {
                let _ = hostcalls::resume_http_request();
            }
        }
        let _ = hostcalls::set_effective_context(self.context_id);
        let period = state.borrow_mut().core.settle_tick();
        host::set_tick_period(period);
    }
}

impl Context for Root {
    /// A VM going away mid-fetch hands its leases back, so another worker fetches at once.
    fn on_done(&mut self) -> bool {
        if let Some(state) = &self.state {
            state.borrow().core.abandon(self.fetches.values().copied());
        }
        self.fetches.clear();
        true
    }

    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        let (Some(fetch), Some(state)) = (self.fetches.remove(&token), self.state.clone()) else {
            return;
        };
        let now = now_ms();
        let status = host::callout_response_header(":status");
        let answer = CalloutAnswer {
            status: status.as_deref(),
            body_size,
        };
        let wanted = state.borrow().core.wants_answer_body(fetch, answer);
        let body: &dyn CalloutBody = if wanted {
            &host::CalloutResponseBody
        } else {
            &[]
        };
        {
            let mut vm = state.borrow_mut();
            let jitter = host::jitter();
            let count = vm
                .core
                .take_answer(fetch, now, answer, body, jitter, now_ms);
            vm.metrics.count(count);
            vm.report_key_counts();
        }
        self.wake_waiters(&state);
    }
}

impl RootContext for Root {
    #[cfg(feature = "fault-injection")]
    fn on_vm_start(&mut self, _size: usize) -> bool {
        let failing = super::fault::vm_start_fails(self.get_vm_configuration().as_deref());
        if failing {
            log::error!("fault injection: on_vm_start fails");
        }
        !failing
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        // Debug lines are only formatted when the host would print them.
        proxy_wasm::set_log_level(hostcalls::get_log_level().unwrap_or(LogLevel::Info));
        let started_ms = now_ms();
        let raw = self.get_plugin_configuration().unwrap_or_default();
        // The jitter tells this VM's fetch leases from other VMs'.
        let Some(core) = VmState::configure(&raw, HostSharedData, host::jitter(), started_ms)
        else {
            return false;
        };
        let parsed_ms = now_ms();
        let use_host = core.config.signature_backend == SignatureBackendChoice::Auto;
        let host_crypto = HostCrypto::new(host::verify_signature, use_host);
        debug!(
            "cold start: configuration parsed in {} ms, signature backend self-test {} ms",
            parsed_ms.saturating_sub(started_ms),
            now_ms().saturating_sub(parsed_ms)
        );
        info!("signatures: {}", host_crypto.support.summary());
        let metrics = Metrics::define(&core.config);
        let mut vm = Vm {
            core,
            metrics,
            host_crypto,
        };
        vm.report_key_counts();
        self.state = Some(Rc::new(RefCell::new(vm)));
        self.fetches.clear();
        host::set_tick_period(Some(Tick::FIRST));
        true
    }

    fn on_tick(&mut self) {
        let Some(state) = self.state.clone() else {
            return;
        };
        let period = {
            let mut vm = state.borrow_mut();
            vm.core.sync_pools();
            vm.core.sync_sources();
            vm.report_key_counts();
            vm.core.ticked()
        };
        host::set_tick_period(period);
        self.dispatch_due_fetches(&state);
        self.wake_waiters(&state);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let state = self.state.clone()?;
        Some(Box::new(http::Filter::new(context_id, state)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
