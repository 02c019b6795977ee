//! Token extraction from fake request headers, with header, prefixed header, query and cookie
//! sources (as `Config::parse` builds them), and the removal helpers used by
//! `forward_token: false`.
//!
//! Input: NUL-separated values of `authorization`, `x-token`, `:path`, `cookie` (UTF-8,
//! lossily; an empty value is an absent header).
//!
//! Invariants: no panic; a token found is non-empty with no ASCII whitespace at its ends, and
//! every source it is attributed to yields that same token on its own; refusals are only
//! `NoToken` or `AmbiguousToken`; after `path_without_query_param` / `cookie_header_without`
//! the query / cookie source finds no token, and removing twice changes nothing more.
#![no_main]

#[macro_use]
#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use cognito_authorizer::config::{Config, TokenSource};
use cognito_authorizer::error::AuthError;
use cognito_authorizer::extract::{cookie_header_without, extract_token, path_without_query_param};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"{
  "user_pools": [{"user_pool_id": "us-east-1_AbCdEf123", "jwks_cluster": "cognito_jwks"}],
  "token_sources": [
    {"header": "authorization"},
    {"header": "x-token", "prefix": "Token "},
    {"query": "access_token"},
    {"cookie": "jwt"}
  ]
}"#;

const NAMES: [&str; 4] = ["authorization", "x-token", ":path", "cookie"];
const QUERY: &str = "access_token";
const COOKIE: &str = "jwt";

fn sources() -> &'static [TokenSource] {
    static S: OnceLock<Vec<TokenSource>> = OnceLock::new();
    S.get_or_init(|| {
        Config::parse(CONFIG.as_bytes())
            .expect("valid configuration")
            .0
            .token_sources
    })
}

/// Every value of a header (the filter reads repeated headers as several values).
fn lookup<'a>(headers: &'a [(&'static str, String)]) -> impl Fn(&str) -> Vec<&'a str> + 'a {
    move |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// `%XX` decoded (and `+` as space), as most servers decode query parameters.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hexval = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hexval(b[i + 1]), hexval(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every value an upstream might read for query parameter `name`: names and values
/// percent-decoded (Django, Rails, Express, Go all do), and PHP's reading of a name with `.`,
/// ` ` or `[` as `_`; the fragment never sent.
fn upstream_query_values(path: &str, name: &str) -> Vec<String> {
    let path = path.split('#').next().unwrap_or_default();
    let Some((_, query)) = path.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k);
            let php = k.replace(['.', ' ', '['], "_");
            (k == name || php == name).then(|| percent_decode(v))
        })
        .filter(|v| !v.trim().is_empty())
        .collect()
}

/// Every value an upstream might read for cookie `name`: names and values trimmed, as
/// RFC 6265 §5.2 and most server parsers (Python's http.cookies, Django, Werkzeug, Node's
/// `cookie`) do, surrounding double quotes removed.
fn upstream_cookie_values(cookies: &str, name: &str) -> Vec<String> {
    cookies
        .split(';')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .unwrap_or(v);
            (k.trim() == name).then(|| v.to_string())
        })
        .filter(|v| !v.trim().is_empty())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let headers: Vec<(&'static str, String)> = NAMES
        .iter()
        .zip(text.split('\0'))
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| (*n, v.to_string()))
        .collect();
    let sources = sources();

    match extract_token(sources, lookup(&headers)) {
        Ok(found) => {
            let t = found.token.as_str();
            assert!(!t.is_empty(), "empty token from {headers:?}");
            check!(
                "token-whitespace",
                !t.starts_with(|c: char| c.is_ascii_whitespace())
                    && !t.ends_with(|c: char| c.is_ascii_whitespace()),
                "token {t:?} has whitespace at an end, from {headers:?}"
            );
            assert!(!found.sources.is_empty());
            assert!(found.sources.windows(2).all(|w| w[0] < w[1]));
            for &i in &found.sources {
                let one = std::slice::from_ref(&sources[i]);
                let alone = extract_token(one, lookup(&headers));
                assert_eq!(
                    alone.as_ref().map(|f| f.token.as_str()),
                    Ok(t),
                    "source {i} alone disagrees, from {headers:?}"
                );
            }
            // Whatever an upstream parsing leniently reads from the query or the cookie must
            // be the token the filter checked: else it reads a token nobody verified.
            // (Only for a token that can pass `inspect` at all: others are refused anyway.)
            let verifiable = t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            let path = lookup(&headers)(":path")
                .into_iter()
                .next()
                .unwrap_or_default();
            let cookie = lookup(&headers)("cookie").join("; ");
            for v in upstream_query_values(&path, QUERY)
                .into_iter()
                .chain(upstream_cookie_values(&cookie, COOKIE))
            {
                check!(
                    "token-smuggling",
                    !verifiable || v.trim() == t,
                    "the filter checked {t:?} but an upstream may read {v:?}, from {headers:?}"
                );
            }
        }
        Err(AuthError::NoToken | AuthError::AmbiguousToken) => {}
        Err(other) => panic!("unexpected refusal {other:?} from {headers:?}"),
    }

    let query_only = std::slice::from_ref(&sources[2]);
    let cookie_only = std::slice::from_ref(&sources[3]);
    if let Some((_, path)) = headers.iter().find(|(n, _)| *n == ":path") {
        let stripped = path_without_query_param(path, QUERY);
        let rest = [(":path", stripped.clone())];
        let left = extract_token(query_only, lookup(&rest));
        check!(
            "query-fragment",
            left == Err(AuthError::NoToken),
            "{path:?} -> {stripped:?} still carries a token: {left:?}"
        );
        let again = path_without_query_param(&stripped, QUERY);
        check!(
            "query-fragment",
            again == stripped,
            "removal is not idempotent on {path:?}: {stripped:?} -> {again:?}"
        );
        let before = |p: &str| p.split(['?', '#']).next().unwrap_or_default().to_string();
        assert_eq!(
            before(path),
            before(&stripped),
            "{path:?}: the path itself changed"
        );
    }
    if let Some((_, cookie)) = headers.iter().find(|(n, _)| *n == "cookie") {
        match cookie_header_without(cookie, COOKIE) {
            Some(stripped) => {
                let rest = [("cookie", stripped.clone())];
                assert_eq!(
                    extract_token(cookie_only, lookup(&rest)),
                    Err(AuthError::NoToken),
                    "{cookie:?} -> {stripped:?} still carries the token"
                );
                assert_eq!(
                    cookie_header_without(&stripped, COOKIE).as_deref(),
                    Some(stripped.as_str()),
                    "removal is not idempotent on {cookie:?}"
                );
            }
            None => {}
        }
    }
});
