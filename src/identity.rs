//! Identity for the upstream (README "Identity for the upstream"): claim values as header values.

use crate::claims::{ClaimValue, ListItem};
use crate::config::ClaimHeader;
use crate::request::{folds_to, RequestHeaders};
use crate::verify::VerifiedToken;

/// The request headers (by their name as sent) that a client must not set: every header whose
/// folded name is one the filter sets for the upstream (`protected`, already folded).
pub fn forged_headers<'a>(
    names: impl Iterator<Item = &'a str>,
    protected: &[String],
) -> Vec<&'a str> {
    let mut forged: Vec<&str> = Vec::new();
    for name in names {
        let hit = name.len() >= 2 && protected.iter().any(|p| folds_to(name, p));
        if hit && !forged.contains(&name) {
            forged.push(name);
        }
    }
    forged
}

/// Removes the client's copies of identity headers from `headers` ([`forged_headers`]) and
/// returns their names as sent, for the glue to remove upstream.
pub fn strip_forged(headers: &mut RequestHeaders, protected: &[String]) -> Vec<String> {
    let forged: Vec<String> = forged_headers(headers.names(), protected)
        .into_iter()
        .map(str::to_string)
        .collect();
    if !forged.is_empty() {
        headers.remove(|name| forged.iter().any(|f| f == name));
    }
    forged
}

/// The claim headers to add for a verified token: (header, value), in configuration order.
/// Claims the token lacks (or that are `null`) produce no header.
pub fn claim_headers(mapping: &[ClaimHeader], token: &VerifiedToken) -> Vec<(String, String)> {
    mapping
        .iter()
        .filter_map(|m| {
            let value = token.claims.named(&m.claim)?;
            header_value(value).map(|v| (m.header.clone(), v))
        })
        .collect()
}

/// Strings as they are, arrays joined with `,`, numbers, booleans and objects as JSON.
/// Control characters (CR and LF above all) are removed: a claim must never split a header.
pub fn header_value(value: &ClaimValue) -> Option<String> {
    let raw = match value {
        ClaimValue::Null => return None,
        ClaimValue::String(text) | ClaimValue::Json(text) => return Some(sanitize(text)),
        ClaimValue::Unsigned(n) => n.to_string(),
        ClaimValue::List(items) => items
            .iter()
            .map(|item| match item {
                ListItem::String(text) | ListItem::Json(text) => text.as_str(),
            })
            .collect::<Vec<_>>()
            .join(","),
    };
    Some(sanitize(&raw))
}

/// Removes control characters and surrounding whitespace.
pub fn sanitize(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::folded_header_name;
    use serde_json::{json, Value};

    /// [`super::header_value`] of a claim with this JSON value.
    fn header_value(value: &Value) -> Option<String> {
        super::header_value(&serde_json::from_str(&value.to_string()).unwrap())
    }

    #[test]
    fn forged_identity_headers_are_found_in_every_spelling() {
        let protected = vec![
            folded_header_name("x-cognito-sub"),
            folded_header_name("x-cognito-authorizer-decision"),
        ];
        let sent = [
            ":path",
            "x-cognito-sub",
            "x_cognito_sub",
            "X_Cognito_Sub",
            "x-cognito_authorizer-decision",
            "x-cognito-subject",
            "x-cognito-sub",
            "host",
        ];
        assert_eq!(
            forged_headers(sent.into_iter(), &protected),
            [
                "x-cognito-sub",
                "x_cognito_sub",
                "X_Cognito_Sub",
                "x-cognito_authorizer-decision"
            ]
        );
        assert!(forged_headers(["host", "x-other"].into_iter(), &protected).is_empty());
    }

    #[test]
    fn the_core_reads_the_request_without_the_stripped_headers() {
        let protected = vec![folded_header_name("x-cognito-sub")];
        let entry = |n: &str, v: &str| (n.to_string(), v.to_string());
        let mut headers = RequestHeaders::new(vec![
            entry(":path", "/"),
            entry("x_cognito_sub", "forged"),
            entry("host", "api"),
        ]);
        assert_eq!(strip_forged(&mut headers, &protected), ["x_cognito_sub"]);
        assert_eq!(headers.first("x_cognito_sub"), None);
        assert_eq!(headers.first("host"), Some("api"));
        let mut clean = RequestHeaders::new(vec![entry("host", "api")]);
        assert!(strip_forged(&mut clean, &protected).is_empty());
        assert_eq!(clean.first("host"), Some("api"));
    }

    #[test]
    fn values_are_rendered_as_spec_says() {
        assert_eq!(header_value(&json!("alice")), Some("alice".into()));
        assert_eq!(
            header_value(&json!(["admins", "ops"])),
            Some("admins,ops".into())
        );
        assert_eq!(header_value(&json!(42)), Some("42".into()));
        assert_eq!(header_value(&json!(true)), Some("true".into()));
        assert_eq!(header_value(&json!([1, "a"])), Some("1,a".into()));
        assert_eq!(header_value(&json!({"a": 1})), Some(r#"{"a":1}"#.into()));
        assert_eq!(header_value(&json!(null)), None);
    }

    #[test]
    fn control_characters_never_reach_a_header() {
        assert_eq!(
            header_value(&json!("alice\r\nx-admin: true")),
            Some("alicex-admin: true".into())
        );
        assert_eq!(header_value(&json!(["a\n", "\u{0}b"])), Some("a,b".into()));
        assert_eq!(header_value(&json!("tab\there")), Some("tabhere".into()));
        assert_eq!(header_value(&json!("ünïcode")), Some("ünïcode".into()));
    }
}
