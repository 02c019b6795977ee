//! The host's shared data behind the pure `shared_keys` protocol.

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use crate::shared_keys::{SetError, SharedData};

/// Envoy's proxy-wasm shared data (one store per `vm_id`, shared by every VM of the process).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostSharedData;

impl SharedData for HostSharedData {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match super::host::counted(hostcalls::get_shared_data(key)) {
            Ok((Some(bytes), Some(cas))) => Some((bytes, cas)),
            _ => None,
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match super::host::counted(hostcalls::set_shared_data(key, Some(value), cas)) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Failed),
        }
    }
}
