//! Process-wide key state in proxy-wasm shared data (SPEC §6): every worker VM of the
//! process sees the same [`FetchSchedule`] and the same published key set per pool.
//!
//! - `cognito_authorizer.schedule|<pool identity>`: the schedule, changed only by
//!   compare-and-swap, so exactly one VM wins each fetch lease.
//! - `cognito_authorizer.jwks|<pool identity>`: the last valid JWKS, as an envelope with its
//!   fetch time. Written only by the VM that fetched it, after validation.
//!
//! The pool identity includes issuer, cluster and URI, so a configuration change never
//! picks up another pool's keys after a reload.

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use crate::config::Pool;
use crate::keys::FetchSchedule;

/// Shared-data keys of one pool.
#[derive(Debug, Clone)]
pub struct SharedKeys {
    schedule: String,
    envelope: String,
}

/// CAS retries before giving up for this tick (contention is between a handful of workers).
const CAS_ATTEMPTS: usize = 16;

impl SharedKeys {
    pub fn for_pool(pool: &Pool) -> Self {
        let identity = format!(
            "{}|{}|{}|{}",
            pool.name, pool.issuer, pool.jwks_cluster, pool.jwks_uri
        );
        SharedKeys {
            schedule: format!("cognito_authorizer.schedule|{identity}"),
            envelope: format!("cognito_authorizer.jwks|{identity}"),
        }
    }

    /// The current schedule (the default one — fetch now — when none is stored yet).
    pub fn schedule(&self) -> FetchSchedule {
        self.read_schedule().0
    }

    fn read_schedule(&self) -> (FetchSchedule, Option<u32>) {
        match hostcalls::get_shared_data(&self.schedule) {
            Ok((Some(bytes), cas)) => (FetchSchedule::decode(&bytes).unwrap_or_default(), cas),
            _ => (FetchSchedule::default(), None),
        }
    }

    /// Applies `change` atomically. `change` returns whether to write (its decision); the
    /// result is that decision and the schedule as stored afterwards. `None` when shared
    /// data keeps failing (the caller treats it as "not now").
    pub fn update(
        &self,
        mut change: impl FnMut(&mut FetchSchedule) -> bool,
    ) -> Option<(bool, FetchSchedule)> {
        for _ in 0..CAS_ATTEMPTS {
            let (mut schedule, cas) = self.read_schedule();
            if !change(&mut schedule) {
                return Some((false, schedule));
            }
            match hostcalls::set_shared_data(
                &self.schedule,
                Some(schedule.encode().as_bytes()),
                cas,
            ) {
                Ok(()) => return Some((true, schedule)),
                Err(Status::CasMismatch) => continue,
                Err(_) => return None,
            }
        }
        None
    }

    /// The published envelope and its CAS (which changes with every publication).
    pub fn envelope(&self) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(&self.envelope) {
            Ok((Some(bytes), Some(cas))) => Some((bytes, cas)),
            _ => None,
        }
    }

    /// Publishes a validated key set; returns its CAS.
    pub fn publish(&self, envelope: &[u8]) -> Option<u32> {
        hostcalls::set_shared_data(&self.envelope, Some(envelope), None).ok()?;
        self.envelope().map(|(_, cas)| cas)
    }
}
