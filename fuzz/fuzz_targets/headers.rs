//! Claim values as upstream header values: `header_value` on claim values built from the bytes
//! (the bytes as JSON, as a string, as a list of strings) and `sanitize` on the bytes.
//!
//! Invariants: no output contains CR, LF, NUL or any other control character (a claim must
//! never split or end a header); outputs have no surrounding whitespace; sanitising is
//! idempotent; only `null` gives no header.
#![no_main]

#[macro_use]
#[path = "common.rs"]
mod common;

use cognito_authorizer::claims::{ClaimValue, ListItem};
use cognito_authorizer::identity::{header_value, sanitize};
use libfuzzer_sys::fuzz_target;

fn check_header(out: &str, from: &dyn std::fmt::Debug) {
    assert!(
        !out.contains(['\r', '\n', '\0']),
        "CR, LF or NUL in header value {out:?} from {from:?}"
    );
    assert!(
        !out.chars().any(char::is_control),
        "control character in header value {out:?} from {from:?}"
    );
    check!(
        "header-whitespace",
        out.trim() == out,
        "surrounding whitespace in {out:?} from {from:?}"
    );
    assert_eq!(sanitize(out), out, "sanitize is not idempotent on {out:?}");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_header(&sanitize(&text), &text);

    let values = [
        serde_json::from_slice::<ClaimValue>(data).ok(),
        Some(ClaimValue::String(text.to_string())),
        Some(ClaimValue::List(
            text.split(',')
                .map(|s| ListItem::String(s.to_string()))
                .collect(),
        )),
    ];
    for value in values.into_iter().flatten() {
        match header_value(&value) {
            Some(out) => check_header(&out, &value),
            None => assert!(value == ClaimValue::Null, "no header for {value:?}"),
        }
    }
});
