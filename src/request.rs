//! The request headers as the filter reads them: once per request, in one host call, with
//! every value of a repeated header kept in arrival order; and what a valid header name is.

use crate::error::ConfigError;

/// An HTTP token (RFC 9110 §5.6.2): what a header name, or a method, is made of.
pub fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header name from the configuration (`path`: its JSON path) as Envoy sees it:
/// HTTP token characters, lower-cased.
pub fn header_name(name: &str, path: &str) -> Result<String, ConfigError> {
    if !is_token(name) {
        return Err(ConfigError::new(
            path,
            format!("{name:?} is not a valid HTTP header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// A header name as servers that map headers to variables read it: case folded and `_`
/// read as `-` (CGI, WSGI, Rack and PHP give `x_cognito_sub` and `x-cognito-sub` one name).
pub fn folded_header_name(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'_' => '-',
            b => char::from(b.to_ascii_lowercase()),
        })
        .collect()
}

/// Whether header `name` (as sent) is `folded` ([`folded_header_name`]) once folded.
pub fn folds_to(name: &str, folded: &str) -> bool {
    name.len() == folded.len()
        && name.bytes().zip(folded.bytes()).all(|(n, f)| {
            f == if n == b'_' {
                b'-'
            } else {
                n.to_ascii_lowercase()
            }
        })
}

/// Request headers, names lower-case (as Envoy gives them), pseudo-headers (`:path`,
/// `:method`) included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHeaders {
    entries: Vec<(String, String)>,
}

impl RequestHeaders {
    pub fn new(entries: Vec<(String, String)>) -> Self {
        RequestHeaders { entries }
    }

    /// Headers as the host gives them: values are bytes and may carry obs-text (0x80-0xFF)
    /// that is not UTF-8. Invalid bytes become U+FFFD, so a token carrying them is simply
    /// invalid (never a panic, which would take the VM down).
    pub fn from_bytes(entries: Vec<(String, Vec<u8>)>) -> Self {
        let entries = entries
            .into_iter()
            .map(|(name, value)| match String::from_utf8(value) {
                Ok(value) => (name, value),
                Err(e) => (name, String::from_utf8_lossy(e.as_bytes()).into_owned()),
            })
            .collect();
        RequestHeaders { entries }
    }

    /// The first value of `name`.
    pub fn first<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.values(name).next()
    }

    /// Every value of `name`, in arrival order (none when absent).
    pub fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.entries
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of every header whose name folds to `folded` ([`folds_to`]): `x_tenant`
    /// and `X-Tenant` are one header to CGI, WSGI, Rack and PHP servers.
    pub fn values_folded<'a, 'n>(
        &'a self,
        folded: &'n str,
    ) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.entries
            .iter()
            .filter(move |(n, _)| folds_to(n, folded))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, collected (the token extraction's view; nothing copied).
    pub fn all_values(&self, name: &str) -> Vec<&str> {
        self.values(name).collect()
    }

    /// Drops every header whose name `drop` selects (after the filter removed it upstream).
    pub fn remove(&mut self, drop: impl Fn(&str) -> bool) {
        self.entries.retain(|(name, _)| !drop(name));
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    pub fn method(&self) -> &str {
        self.first(":method").unwrap_or_default()
    }

    /// The request target as sent (`:path`, query included).
    pub fn path(&self) -> &str {
        self.first(":path").unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_headers_keep_every_value_in_order() {
        let h = RequestHeaders::new(vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/x?y".into()),
            ("x-tenant".into(), "other".into()),
            ("x-tenant".into(), "acme".into()),
        ]);
        assert_eq!(h.values("x-tenant").collect::<Vec<_>>(), ["other", "acme"]);
        assert_eq!(h.first("x-tenant"), Some("other"));
        assert_eq!(h.method(), "GET");
        assert_eq!(h.path(), "/x?y");
        assert_eq!(h.values("absent").count(), 0);
    }

    #[test]
    fn bytes_that_are_not_utf8_become_replacement_characters() {
        let h = RequestHeaders::from_bytes(vec![
            ("authorization".into(), b"Bearer a\xffb".to_vec()),
            ("x-plain".into(), b"caf\xc3\xa9".to_vec()),
        ]);
        assert_eq!(h.first("authorization"), Some("Bearer a\u{fffd}b"));
        assert_eq!(h.first("x-plain"), Some("caf\u{e9}"));
    }
}
