//! Shared by the fuzz targets (each includes it with
//! `#[macro_use] #[path = "common.rs"] mod common;`).
#![allow(dead_code)]

use std::sync::OnceLock;

/// Findings already reported and not yet fixed in `src/` can be tolerated by name, so that a
/// run can look past them for new ones: `FUZZ_TOLERATE=path-idempotence,token-whitespace`.
/// By default nothing is tolerated: every violated invariant is a crash.
pub fn tolerated(issue: &str) -> bool {
    static LIST: OnceLock<Vec<String>> = OnceLock::new();
    LIST.get_or_init(|| {
        std::env::var("FUZZ_TOLERATE")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .iter()
    .any(|t| t == issue)
}

/// Asserts `ok` unless `issue` is tolerated (include with `#[macro_use]`).
macro_rules! check {
    ($issue:expr, $ok:expr, $($msg:tt)+) => {
        if !$ok && !common::tolerated($issue) {
            panic!("[{}] {}", $issue, format!($($msg)+));
        }
    };
}
