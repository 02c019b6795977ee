//! CORS (README "Browser apps (CORS)"): what a preflight is, the filter's own answer to one
//! (`cors_preflight: "answer"`), and the headers that let a browser app read a local reply.

use crate::config::{Config, TokenSource};
use crate::request::{is_token, RequestHeaders};

/// How long a browser may keep the filter's answer to a preflight, in seconds.
pub const PREFLIGHT_MAX_AGE: &str = "600";

/// A CORS preflight as browsers send it: `OPTIONS` with an `Origin` and an
/// `Access-Control-Request-Method` that is a method (an HTTP token). Anything else is an
/// ordinary request and needs a token where the route does.
pub fn is_preflight(headers: &RequestHeaders) -> bool {
    headers.method() == "OPTIONS"
        && headers.first("origin").is_some()
        && headers
            .first("access-control-request-method")
            .is_some_and(is_token)
}

/// The CORS headers for a local reply when the request's `Origin` is allowed.
pub fn cors_headers(origin: Option<&str>, allowed: &[String]) -> Vec<(&'static str, String)> {
    let Some(origin) = origin else {
        return Vec::new();
    };
    if allowed.iter().any(|a| a == "*" || a == origin) {
        vec![
            ("access-control-allow-origin", origin.to_string()),
            ("vary", "origin".to_string()),
        ]
    } else {
        Vec::new()
    }
}

/// The filter's own answer to a preflight: for an origin in `cors_allow_origins`, the method
/// and headers it asks for (the request that follows still needs a valid token), and
/// credentials when a cookie may carry that token and the origin is listed by name; for any
/// other origin no CORS header, so the browser refuses the request.
pub fn preflight_headers(request: &RequestHeaders, config: &Config) -> Vec<(&'static str, String)> {
    let origin = request.first("origin");
    let mut headers = cors_headers(origin, &config.cors_allow_origins);
    if headers.is_empty() {
        return headers;
    }
    if let Some(method) = request.first("access-control-request-method") {
        headers.push(("access-control-allow-methods", method.to_string()));
    }
    let asked: Vec<&str> = request
        .values("access-control-request-headers")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    if !asked.is_empty() && asked.iter().all(|h| is_token(h)) {
        headers.push(("access-control-allow-headers", asked.join(", ")));
    }
    let cookie = config
        .token_sources
        .iter()
        .any(|s| matches!(s, TokenSource::Cookie { .. }));
    if cookie
        && config
            .cors_allow_origins
            .iter()
            .any(|a| Some(a.as_str()) == origin)
    {
        headers.push(("access-control-allow-credentials", "true".to_string()));
    }
    headers.push(("access-control-max-age", PREFLIGHT_MAX_AGE.to_string()));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)]) -> RequestHeaders {
        RequestHeaders::new(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn config(extra: &str) -> Config {
        let json = format!(
            r#"{{"user_pools":[{{"user_pool_id":"us-east-1_Abc123","jwks_cluster":"c","client_ids":["c"]}}]{extra}}}"#
        );
        Config::parse(json.as_bytes()).unwrap().0
    }

    const APP: &str = "https://app.example.com";

    #[test]
    fn a_preflight_names_a_method_that_is_a_token() {
        let base = [(":method", "OPTIONS"), ("origin", APP)];
        let with = |method: &str| {
            let mut pairs = base.to_vec();
            pairs.push(("access-control-request-method", method));
            is_preflight(&request(&pairs))
        };
        assert!(with("GET"));
        assert!(with("PROPFIND"));
        for bad in ["", "GET POST", "GET\r\nX: y", "G(T", "\u{e9}"] {
            assert!(!with(bad), "{bad:?}");
        }
        assert!(!is_preflight(&request(&base)));
        assert!(!is_preflight(&request(&[
            (":method", "GET"),
            ("origin", APP),
            ("access-control-request-method", "GET"),
        ])));
    }

    #[test]
    fn cors_headers_only_for_allowed_origins() {
        let allowed = vec!["https://app.example.com".to_string()];
        assert_eq!(cors_headers(Some("https://evil.example"), &allowed), vec![]);
        assert_eq!(cors_headers(None, &allowed), vec![]);
        assert_eq!(
            cors_headers(Some("https://app.example.com"), &allowed),
            vec![
                (
                    "access-control-allow-origin",
                    "https://app.example.com".to_string()
                ),
                ("vary", "origin".to_string())
            ]
        );
        assert_eq!(cors_headers(Some("https://x"), &["*".to_string()]).len(), 2);
    }

    #[test]
    fn the_filters_answer_grants_a_listed_origin_what_it_asks() {
        let asking = |origin: &str, asked_headers: &str| {
            request(&[
                (":method", "OPTIONS"),
                ("origin", origin),
                ("access-control-request-method", "DELETE"),
                ("access-control-request-headers", asked_headers),
            ])
        };
        let c = config(&format!(r#","cors_allow_origins":["{APP}"]"#));
        let h = preflight_headers(&asking(APP, "authorization, content-type"), &c);
        let get = |name: &str| h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("access-control-allow-origin"), Some(APP));
        assert_eq!(get("access-control-allow-methods"), Some("DELETE"));
        assert_eq!(
            get("access-control-allow-headers"),
            Some("authorization, content-type")
        );
        assert_eq!(get("access-control-max-age"), Some(PREFLIGHT_MAX_AGE));
        assert_eq!(get("access-control-allow-credentials"), None);
        // Another origin gets nothing: the browser refuses.
        assert!(preflight_headers(&asking("https://evil.example", "x"), &c).is_empty());
        // Headers that are not tokens are not echoed.
        let h = preflight_headers(&asking(APP, "a b"), &c);
        assert!(!h.iter().any(|(n, _)| *n == "access-control-allow-headers"));
        // A cookie source and an origin listed by name: credentials.
        let c = config(&format!(
            r#","cors_allow_origins":["{APP}"],"token_sources":[{{"cookie":"id_token"}}]"#
        ));
        let h = preflight_headers(&asking(APP, "x"), &c);
        assert!(h.contains(&("access-control-allow-credentials", "true".to_string())));
        let c = config(r#","cors_allow_origins":["*"],"token_sources":[{"cookie":"id_token"}]"#);
        let h = preflight_headers(&asking(APP, "x"), &c);
        assert!(!h
            .iter()
            .any(|(n, _)| *n == "access-control-allow-credentials"));
    }
}
