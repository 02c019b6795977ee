//! A request (method, `:path`, one header) through `normalize_path` and `first_match` on a
//! fixed rule set compiled by `Config::parse`.
//!
//! Input: `METHOD \n PATH \n X-TENANT` (UTF-8, lossily); without a newline the whole input is
//! the path of a GET.
//!
//! Invariants: the normalised path starts with `/`, has no `//`, no `.` or `..` segment, no
//! `?` or `#`; normalising it again changes nothing; the query string never changes the match;
//! an ambiguous path (encoded slash, backslash) never gets anonymous access.
#![no_main]

#[macro_use]
#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use cognito_authorizer::config::Config;
use cognito_authorizer::rules::{first_match, normalize_path, RequestFacts, RouteRule, RuleAction};
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

/// Index of the first matching rule.
fn decide(
    method: &str,
    path: &cognito_authorizer::rules::NormalizedPath,
    tenant: Option<&str>,
) -> Option<usize> {
    let facts = RequestFacts {
        method,
        path,
        header: |name: &str| {
            if name == "x-tenant" {
                tenant.map(str::to_string)
            } else {
                None
            }
        },
    };
    let rules = rules();
    first_match(rules, &facts).and_then(|m| rules.iter().position(|r| std::ptr::eq(r, m)))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.splitn(3, '\n');
    let (method, raw, tenant) = match (fields.next(), fields.next(), fields.next()) {
        (Some(p), None, _) => ("GET", p, None),
        (Some(m), Some(p), t) => (m, p, t),
        _ => return,
    };

    let n = normalize_path(raw);
    let p = n.as_str();
    assert!(p.starts_with('/'), "{raw:?} -> {p:?}: not absolute");
    assert!(!p.contains("//"), "{raw:?} -> {p:?}: empty segment");
    assert!(
        !p.split('/').any(|s| s == "." || s == ".."),
        "{raw:?} -> {p:?}: dot segment left"
    );
    assert!(
        !p.contains(['?', '#']),
        "{raw:?} -> {p:?}: query or fragment left"
    );

    let again = normalize_path(p);
    let issue = if p.is_ascii() {
        "path-idempotence"
    } else {
        "path-nonascii"
    };
    check!(
        issue,
        again.as_str() == p,
        "not idempotent: {raw:?} -> {p:?} -> {:?}",
        again.as_str()
    );

    let chosen = decide(method, &n, tenant);
    if let Some(i) = chosen {
        assert!(
            !(n.ambiguous && rules()[i].action == RuleAction::Allow),
            "ambiguous path {raw:?} got anonymous access by rule {i}"
        );
    }
    // What the upstream would see after one more normalisation must not be decided otherwise.
    if again.as_str() != p {
        let twice = decide(method, &again, tenant);
        check!(
            "path-idempotence-decision",
            twice == chosen,
            "{raw:?}: rule {chosen:?} for {p:?}, rule {twice:?} for {:?}",
            again.as_str()
        );
    }
    // The query string never changes the decision.
    if !raw.contains(['?', '#']) {
        let with_query = normalize_path(&format!("{raw}?x=/../admin%2F#/public"));
        assert_eq!(with_query, n, "{raw:?}: the query string changed the path");
    }
});
