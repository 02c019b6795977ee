//! Token sources (README "Configuration reference", token_sources): from the configured headers, query parameters and cookies to the
//! one token of the request — or why there is none.

use crate::config::TokenSource;
use crate::error::AuthError;

/// The token a request carries, and the sources (indices into `token_sources`) that held it,
/// so that `forward_token: false` can remove it from each of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundToken {
    pub token: String,
    pub sources: Vec<usize>,
}

/// Reads every configured source in order. The same token in several sources is fine;
/// different tokens are refused, because the upstream might read another one than we checked.
/// `header` returns every value of a request header by lower-case name (`:path` included):
/// a header sent twice is two values, and a second value must not smuggle a second token.
pub fn extract_token<'h>(
    sources: &[TokenSource],
    header: impl Fn(&str) -> Vec<&'h str>,
) -> Result<FoundToken, AuthError> {
    let mut found: Option<FoundToken> = None;
    for (index, source) in sources.iter().enumerate() {
        let Some(token) = read_source(source, &header)? else {
            continue;
        };
        match &mut found {
            None => {
                found = Some(FoundToken {
                    token,
                    sources: vec![index],
                })
            }
            Some(f) if f.token == token => f.sources.push(index),
            Some(_) => return Err(AuthError::AmbiguousToken),
        }
    }
    found.ok_or(AuthError::NoToken)
}

/// The sources (indices into `sources`) that hold something the filter would read as a
/// token, whether or not the request's tokens agree: what `forward_token: false` removes
/// from a request that continues without a verified token (anonymous routes, CORS
/// preflights, report mode).
pub fn token_locations<'h>(
    sources: &[TokenSource],
    header: impl Fn(&str) -> Vec<&'h str>,
) -> Vec<usize> {
    sources
        .iter()
        .enumerate()
        .filter(|(_, source)| !matches!(read_source(source, &header), Ok(None)))
        .map(|(index, _)| index)
        .collect()
}

fn read_source<'h>(
    source: &TokenSource,
    header: &impl Fn(&str) -> Vec<&'h str>,
) -> Result<Option<String>, AuthError> {
    match source {
        TokenSource::Header { name } => {
            let tokens = header(name).iter().map(|v| from_authorization(v)).collect();
            one_token(tokens)
        }
        TokenSource::HeaderWithPrefix { name, prefix } => {
            let tokens = header(name)
                .iter()
                .map(|v| {
                    v.strip_prefix(prefix.as_str())
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string)
                })
                .collect();
            one_token(tokens)
        }
        TokenSource::Query { name } => {
            let path = header(":path").into_iter().next().unwrap_or_default();
            single_value(query_pairs(path), &query_name(name))
        }
        TokenSource::Cookie { name } => {
            // Several cookie headers (HTTP/1.1 clients may send them) are one cookie list.
            let cookies = header("cookie").join("; ");
            single_value(cookie_pairs(&cookies), name)
        }
    }
}

/// The token of a header sent once or several times: every value that holds a token must
/// hold the same one.
fn one_token(tokens: Vec<Option<String>>) -> Result<Option<String>, AuthError> {
    let mut found: Option<String> = None;
    for token in tokens.into_iter().flatten() {
        match &found {
            None => found = Some(token),
            Some(t) if *t == token => {}
            Some(_) => return Err(AuthError::AmbiguousToken),
        }
    }
    Ok(found)
}

/// `Bearer <token>` (scheme in any case, RFC 6750) or a bare token (API Gateway REST accepts
/// it). Another scheme, or `Bearer` with nothing after it, is no token at all. A single word
/// without a `.` (`Basic`, `Negotiate`) is an authentication scheme without credentials
/// (RFC 7235), never a JWT, which always has two dots.
fn from_authorization(value: &str) -> Option<String> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    match value.split_once([' ', '\t']) {
        Some((scheme, rest)) => {
            if !scheme.eq_ignore_ascii_case("bearer") {
                return None;
            }
            // Whatever follows (even `a b`) is the token: if it is not one, verification says so.
            let token = rest.trim();
            (!token.is_empty()).then(|| token.to_string())
        }
        None if !value.contains('.') => None,
        None => Some(value.to_string()),
    }
}

/// The value of `name` among (name, value) pairs; several different values are ambiguous.
fn single_value(
    pairs: impl Iterator<Item = (String, String)>,
    name: &str,
) -> Result<Option<String>, AuthError> {
    let mut value: Option<String> = None;
    for (k, v) in pairs {
        if k != name || v.is_empty() {
            continue;
        }
        match &value {
            None => value = Some(v),
            Some(existing) if *existing == v => {}
            Some(_) => return Err(AuthError::AmbiguousToken),
        }
    }
    Ok(value)
}

/// The query of a `:path` (never the fragment: it is not sent, and may hold a `?`).
fn query_of(path: &str) -> &str {
    let path = path.split('#').next().unwrap_or_default();
    path.split_once('?').map_or("", |(_, q)| q)
}

/// Query pairs as servers read them: the name as [`query_name`] reads it (`access%5Ftoken`
/// and `access.token` are `access_token` to some upstream, so they must be to us too), the
/// value percent-decoded and trimmed like a header's.
fn query_pairs(path: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query_of(path).split('&').map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (
            query_name(&percent_decode(k)),
            percent_decode(v).trim().to_string(),
        )
    })
}

/// A query parameter's name as the most permissive server reads it: percent-decoded (by
/// the caller), with `.`, ` ` and `[` read as `_`, as PHP does (`access.token`, `access
/// token` and `access[token` all set `$_GET["access_token"]`).
fn query_name(decoded: &str) -> String {
    decoded.replace(['.', ' ', '['], "_")
}

/// Every value of the query parameter `name` (read as [`query_pairs`] reads names).
pub fn query_values<'p>(path: &'p str, name: &str) -> impl Iterator<Item = String> + 'p {
    let name = query_name(name);
    query_pairs(path).filter_map(move |(k, v)| (k == name).then_some(v))
}

/// Cookie pairs as servers read them (RFC 6265 §5.2): name and value trimmed.
fn cookie_pairs(cookies: &str) -> impl Iterator<Item = (String, String)> + '_ {
    cookies.split(';').map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k.trim().to_string(), v.trim().to_string())
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |j: usize| bytes.get(j).and_then(|c| (*c as char).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `:path` without the query parameter `name` (for `forward_token: false`).
pub fn path_without_query_param(path: &str, name: &str) -> String {
    let (before_fragment, fragment) = match path.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (path, None),
    };
    let Some((base, query)) = before_fragment.split_once('?') else {
        return path.to_string();
    };
    let name = query_name(name);
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            query_name(&percent_decode(
                pair.split_once('=').map_or(*pair, |(k, _)| k),
            )) != name
        })
        .filter(|pair| !pair.is_empty())
        .collect();
    let mut out = base.to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// The `cookie` header without the cookie `name`; `None` when nothing is left.
pub fn cookie_header_without(cookies: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = cookies
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.split_once('=').map_or(*c, |(k, _)| k).trim() != name)
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'h>(pairs: &'h [(&'h str, &'h str)]) -> impl Fn(&str) -> Vec<&'h str> {
        move |name: &str| {
            pairs
                .iter()
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| *v)
                .collect()
        }
    }

    #[test]
    fn a_header_sent_twice_cannot_smuggle_a_second_token() {
        let sources = vec![
            TokenSource::Header {
                name: "x-api-token".into(),
            },
            TokenSource::Cookie {
                name: "id_token".into(),
            },
        ];
        let twice = headers(&[("x-api-token", "a.b.c"), ("x-api-token", "x.y.z")]);
        assert_eq!(
            extract_token(&sources, twice),
            Err(AuthError::AmbiguousToken)
        );
        let same = headers(&[("x-api-token", "a.b.c"), ("x-api-token", "Bearer a.b.c")]);
        assert_eq!(
            extract_token(&sources, same).map(|f| f.token),
            Ok("a.b.c".into())
        );
        let cookies = headers(&[("cookie", "id_token=a.b.c"), ("cookie", "id_token=x.y.z")]);
        assert_eq!(
            extract_token(&sources, cookies),
            Err(AuthError::AmbiguousToken)
        );
        let split = headers(&[("cookie", "theme=dark"), ("cookie", "id_token=a.b.c")]);
        assert_eq!(
            extract_token(&sources, split).map(|f| f.token),
            Ok("a.b.c".into())
        );
    }

    fn default_sources() -> Vec<TokenSource> {
        vec![TokenSource::Header {
            name: "authorization".into(),
        }]
    }

    fn token_from(value: &str) -> Result<String, AuthError> {
        extract_token(&default_sources(), headers(&[("authorization", value)])).map(|f| f.token)
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in [
            "Bearer a.b.c",
            "bearer a.b.c",
            "BEARER a.b.c",
            "BeArEr   a.b.c  ",
        ] {
            assert_eq!(token_from(v), Ok("a.b.c".into()), "{v}");
        }
    }

    #[test]
    fn token_locations_name_every_source_holding_a_token_even_disagreeing_ones() {
        let sources = vec![
            TokenSource::Header {
                name: "authorization".into(),
            },
            TokenSource::Query {
                name: "access_token".into(),
            },
            TokenSource::Cookie { name: "t".into() },
        ];
        let h = headers(&[
            ("authorization", "Bearer a.b.c"),
            (":path", "/x?access_token=d.e.f"),
            ("cookie", "other=1"),
        ]);
        assert_eq!(extract_token(&sources, &h), Err(AuthError::AmbiguousToken));
        assert_eq!(token_locations(&sources, &h), [0, 1]);
        let basic = headers(&[("authorization", "Basic dXNlcjpwYXNz"), (":path", "/x")]);
        assert!(token_locations(&sources, basic).is_empty());
    }

    #[test]
    fn raw_token_is_accepted_like_api_gateway() {
        assert_eq!(token_from("a.b.c"), Ok("a.b.c".into()));
    }

    #[test]
    fn other_schemes_and_empty_bearer_are_no_token() {
        for v in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer   ",
            "",
            "   ",
            "Basic",
            "Negotiate",
            "NTLM",
            "bearer",
        ] {
            assert_eq!(token_from(v), Err(AuthError::NoToken), "{v:?}");
        }
        assert_eq!(
            extract_token(&default_sources(), headers(&[])),
            Err(AuthError::NoToken)
        );
    }

    #[test]
    fn joined_duplicate_headers_do_not_yield_a_clean_token() {
        // Envoy joins two Authorization headers as "a,b": that is not a token we could verify.
        assert_eq!(
            token_from("Bearer x.y.z,Bearer a.b.c"),
            Ok("x.y.z,Bearer a.b.c".into())
        );
    }

    #[test]
    fn sources_are_read_in_order_and_must_agree() {
        let sources = vec![
            TokenSource::Header {
                name: "authorization".into(),
            },
            TokenSource::HeaderWithPrefix {
                name: "x-token".into(),
                prefix: "Token ".into(),
            },
            TokenSource::Query {
                name: "access_token".into(),
            },
            TokenSource::Cookie { name: "jwt".into() },
        ];
        let same = extract_token(
            &sources,
            headers(&[
                ("authorization", "Bearer t1"),
                (":path", "/x?a=1&access_token=t1"),
                ("cookie", "a=b; jwt=t1"),
            ]),
        )
        .unwrap();
        assert_eq!(same.token, "t1");
        assert_eq!(same.sources, vec![0, 2, 3]);
        let different = extract_token(
            &sources,
            headers(&[("authorization", "Bearer t1"), ("cookie", "jwt=t2")]),
        );
        assert_eq!(different, Err(AuthError::AmbiguousToken));
        let prefixed = extract_token(&sources, headers(&[("x-token", "Token t3")])).unwrap();
        assert_eq!(prefixed.token, "t3");
        let wrong_prefix = extract_token(&sources, headers(&[("x-token", "Bearer t3")]));
        assert_eq!(wrong_prefix, Err(AuthError::NoToken));
    }

    #[test]
    fn repeated_query_parameter_or_cookie_with_different_values_is_ambiguous() {
        let q = vec![TokenSource::Query { name: "t".into() }];
        assert_eq!(
            extract_token(&q, headers(&[(":path", "/?t=a&t=b")])),
            Err(AuthError::AmbiguousToken)
        );
        assert_eq!(
            extract_token(&q, headers(&[(":path", "/?t=a&t=a#t=c")])).map(|f| f.token),
            Ok("a".into())
        );
        let c = vec![TokenSource::Cookie { name: "t".into() }];
        assert_eq!(
            extract_token(&c, headers(&[("cookie", "t=a; t=b")])),
            Err(AuthError::AmbiguousToken)
        );
    }

    #[test]
    fn query_token_is_never_read_from_the_fragment() {
        // fuzz/extract: "/x?t=a#f?t=b" -> removal -> "/x#f?t=b", where "b" was then found.
        let q = vec![TokenSource::Query { name: "t".into() }];
        let from = |path: &str| extract_token(&q, headers(&[(":path", path)])).map(|f| f.token);
        assert_eq!(from("/x#f?t=b"), Err(AuthError::NoToken));
        assert_eq!(from("/x?t=a#f?t=b"), Ok("a".into()));
        let stripped = path_without_query_param("/x?t=a#f?t=b", "t");
        assert_eq!(stripped, "/x#f?t=b");
        assert_eq!(path_without_query_param(&stripped, "t"), stripped);
        assert_eq!(from(&stripped), Err(AuthError::NoToken));
    }

    #[test]
    fn cookie_and_query_names_are_read_as_upstreams_read_them() {
        // fuzz/extract: the filter checked one token while an upstream that trims cookie
        // names (RFC 6265 §5.2, Python, Django) or decodes query names reads another one.
        let c = vec![TokenSource::Cookie { name: "jwt".into() }];
        let cookie = |v: &str| extract_token(&c, headers(&[("cookie", v)])).map(|f| f.token);
        assert_eq!(
            cookie("jwt=a.b.c; jwt =x.y.z"),
            Err(AuthError::AmbiguousToken)
        );
        assert_eq!(cookie("jwt= a.b.c "), Ok("a.b.c".into()));
        assert_eq!(
            cookie_header_without("jwt =x.y.z; a=1", "jwt"),
            Some("a=1".into())
        );
        let q = vec![TokenSource::Query {
            name: "access_token".into(),
        }];
        let query = |p: &str| extract_token(&q, headers(&[(":path", p)])).map(|f| f.token);
        assert_eq!(
            query("/x?access_token=a.b.c&access%5Ftoken=x.y.z"),
            Err(AuthError::AmbiguousToken)
        );
        assert_eq!(
            path_without_query_param("/x?access%5Ftoken=x.y.z&a=1", "access_token"),
            "/x?a=1"
        );
    }

    #[test]
    fn query_names_that_php_reads_as_the_parameter_are_the_parameter() {
        // PHP reads `access.token`, `access token` and `access[token` as `access_token`: a
        // second token under such a name is a second token, not an unrelated parameter.
        let q = vec![TokenSource::Query {
            name: "access_token".into(),
        }];
        let query = |p: &str| extract_token(&q, headers(&[(":path", p)])).map(|f| f.token);
        for forged in [
            "access.token",
            "access+token",
            "access%20token",
            "access[token",
        ] {
            assert_eq!(
                query(&format!("/x?access_token=a.b.c&{forged}=x.y.z")),
                Err(AuthError::AmbiguousToken),
                "{forged}"
            );
        }
        assert_eq!(query("/x?access.token=a.b.c"), Ok("a.b.c".into()));
        assert_eq!(
            query("/x?access_token=a.b.c&access.token=a.b.c"),
            Ok("a.b.c".into())
        );
        assert_eq!(
            path_without_query_param("/x?access.token=a&b=1&access_token=a", "access_token"),
            "/x?b=1"
        );
    }

    #[test]
    fn token_can_be_removed_from_query_and_cookie() {
        assert_eq!(
            path_without_query_param("/x?a=1&t=abc&b=2", "t"),
            "/x?a=1&b=2"
        );
        assert_eq!(path_without_query_param("/x?t=abc", "t"), "/x");
        assert_eq!(path_without_query_param("/x?t=abc#f", "t"), "/x#f");
        assert_eq!(path_without_query_param("/x", "t"), "/x");
        assert_eq!(
            cookie_header_without("a=1; t=abc; b=2", "t"),
            Some("a=1; b=2".into())
        );
        assert_eq!(cookie_header_without("t=abc", "t"), None);
    }
}
