//! A request (method, `:path`, one header) through `path::readings` and `rules::route` on a
//! fixed rule set compiled by `Config::parse`.
//!
//! Input: `METHOD \n PATH \n X-TENANT` (UTF-8, lossily); without a newline the whole input is
//! the path of a GET.
//!
//! Invariants: readings are distinct and hold no query or fragment; the query string never
//! changes them; the request's own spelling is the first reading; a request that gets
//! anonymous access gets it under every one of its readings read again (an upstream that
//! decodes or resolves once more than the filter assumed still serves an anonymous route);
//! the outcome needs a token whenever some reading selects a `require` rule.
#![no_main]

#[macro_use]
#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use cognito_authorizer::config::Config;
use cognito_authorizer::path::{readings, readings_counted, Work, WORK_BOUND};
use cognito_authorizer::request::RequestHeaders;
use cognito_authorizer::rules::{route, RequestFacts, Route, RouteRule};
use libfuzzer_sys::fuzz_target;

const RULES: &str = r#"{
  "user_pools": [{"user_pool_id": "us-east-1_AbCdEf123", "jwks_cluster": "cognito_jwks"}],
  "rules": [
    {"match": {"exact": "/healthz"}, "allow": true},
    {"match": {"prefix": "/public"}, "allow": true},
    {"match": {"prefix": "/admin", "methods": ["POST", "DELETE"]},
     "require": {"scopes": ["api/admin"], "groups": ["admins"], "token_use": "access"}},
    {"match": {"prefix": "/admin"}, "require": {"groups": ["admins"]}},
    {"match": {"path_template": "/users/{id}"}, "require": {"claims": {"custom:tenant": ["acme"]}}},
    {"match": {"path_template": "/files/**"}, "allow": true},
    {"match": {"path_template": "/api/{version}/items/**", "headers": {"x-tenant": "acme"}},
     "require": {"scopes_all": ["api/read", "api/write"]}},
    {"match": {"prefix": "/static/"}, "allow": true},
    {"match": {"exact": "/"}, "allow": true}
  ]
}"#;

fn rules() -> &'static [RouteRule] {
    static R: OnceLock<Vec<RouteRule>> = OnceLock::new();
    R.get_or_init(|| {
        Config::parse(RULES.as_bytes())
            .expect("the rule set is a valid configuration")
            .0
            .rules
    })
}

fn decide<'r>(method: &str, path: &str, headers: &RequestHeaders) -> Route<'r> {
    route(
        rules(),
        &RequestFacts {
            method,
            path,
            headers,
        },
    )
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.splitn(3, '\n');
    let (method, raw, tenant) = match (fields.next(), fields.next(), fields.next()) {
        (Some(p), None, _) => ("GET", p, None),
        (Some(m), Some(p), t) => (m, p, t),
        _ => return,
    };
    let headers = RequestHeaders::new(
        tenant
            .map(|t| vec![("x-tenant".to_string(), t.to_string())])
            .unwrap_or_default(),
    );

    let mut work = Work::default();
    let read = readings_counted(raw, &mut work);
    assert!(
        work.bytes <= WORK_BOUND,
        "{raw:?}: {} bytes read",
        work.bytes
    );
    let all = match read {
        Ok(all) => all,
        Err(why) => {
            assert_eq!(decide(method, raw, &headers), Route::UnreadablePath(why));
            return;
        }
    };
    let own = raw.split(['?', '#']).next().unwrap_or_default();
    assert_eq!(all.first().map(String::as_str), Some(own), "{raw:?}");
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        all.len(),
        "{raw:?}: a reading is listed twice"
    );
    if !raw.contains(['?', '#']) {
        let with_query = readings(&format!("{raw}?x=/../admin%2F#/public"));
        assert_eq!(
            with_query.as_ref(),
            Ok(&all),
            "{raw:?}: the query changed the readings"
        );
    }

    let outcome = decide(method, raw, &headers);
    if outcome == Route::Anonymous {
        for reading in &all {
            let again = decide(method, reading, &headers);
            check!(
                "path-reread",
                matches!(again, Route::Anonymous | Route::UnreadablePath(_)),
                "{raw:?} is anonymous, but its reading {reading:?} read again is {again:?}"
            );
        }
    }
});
