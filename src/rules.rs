//! Route rules (SPEC §4): compiled once at configure time, matched first-wins per request.
//!
//! Matching works on a normalised path (see [`normalize_path`]) so that `//admin`,
//! `/public/../admin` or `/%61dmin` cannot slip past a rule written for `/admin`.

use crate::cognito::TokenUse;
use crate::config::{header_name, WireRequire, WireRule};
use crate::error::{ConfigError, Requirement as Failed};

/// One compiled rule: which requests it covers and what it asks of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    path: PathMatch,
    /// Upper-case methods; empty means any method.
    methods: Vec<String>,
    /// Lower-case header name and exact value, all of which must be present.
    headers: Vec<(String, String)>,
    pub action: RuleAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathMatch {
    /// The path is the prefix, or continues it with a new segment (`/admin` covers
    /// `/admin/x`, not `/administrator`).
    Prefix(String),
    Exact(String),
    Template(Vec<TemplateSegment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplateSegment {
    Literal(String),
    /// `{name}`: exactly one non-empty segment.
    Param,
    /// `**`: the rest of the path, zero or more segments (last segment only).
    Rest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAction {
    /// Anonymous access: the request continues without a token.
    Allow,
    Require(Requirement),
}

/// What a valid token must also hold on a route. `Default` is "any valid token".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirement {
    pub scopes_any: Vec<String>,
    pub scopes_all: Vec<String>,
    pub groups_any: Vec<String>,
    pub groups_all: Vec<String>,
    /// Claim name and accepted values: the claim must hold one of them.
    pub claims: Vec<(String, Vec<String>)>,
    /// `token_use` the rule names explicitly.
    pub token_use: Option<TokenUse>,
    /// Scopes are required: a Cognito id token (which never has scopes) fails as the wrong
    /// kind; tokens of a non-Cognito issuer (no `token_use`) are judged by their scopes.
    pub scopes_imply_access: bool,
}

/// What a request offers to the matcher. Header lookups go through the host only for rules
/// that match on headers.
pub struct RequestFacts<'a, H: Fn(&str) -> Option<String>> {
    pub method: &'a str,
    pub path: &'a NormalizedPath,
    pub header: H,
}

/// The facts about a verified token that requirements look at.
pub trait TokenFacts {
    fn token_use(&self) -> Option<TokenUse>;
    fn scopes(&self) -> &[String];
    fn groups(&self) -> &[String];
    /// The string values of a claim (a string is one value, a list of strings many).
    fn claim_values(&self, claim: &str) -> Vec<&str>;
}

impl RouteRule {
    pub fn compile(wire: WireRule, path: &str) -> Result<RouteRule, ConfigError> {
        let m = wire.matcher;
        let path_match = match (m.prefix, m.exact, m.path_template) {
            (Some(p), None, None) => {
                PathMatch::Prefix(absolute(&p, &format!("{path}.match.prefix"))?)
            }
            (None, Some(e), None) => {
                PathMatch::Exact(absolute(&e, &format!("{path}.match.exact"))?)
            }
            (None, None, Some(t)) => compile_template(&t, &format!("{path}.match.path_template"))?,
            _ => {
                return Err(ConfigError::new(
                    format!("{path}.match"),
                    "must have exactly one of \"prefix\", \"exact\", \"path_template\"",
                ))
            }
        };
        let methods = match m.methods {
            None => Vec::new(),
            Some(list) => {
                if list.is_empty() {
                    return Err(ConfigError::new(
                        format!("{path}.match.methods"),
                        "is empty (omit it to match any method)",
                    ));
                }
                let mut methods = Vec::with_capacity(list.len());
                for (i, method) in list.iter().enumerate() {
                    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                        return Err(ConfigError::new(
                            format!("{path}.match.methods[{i}]"),
                            format!("{method:?} is not an HTTP method"),
                        ));
                    }
                    methods.push(method.to_ascii_uppercase());
                }
                methods
            }
        };
        let mut headers = Vec::new();
        for (name, value) in m.headers.unwrap_or_default() {
            let name = header_name(&name, &format!("{path}.match.headers.{name}"))?;
            headers.push((name, value));
        }
        let action =
            match (wire.allow, wire.require) {
                (Some(true), None) => RuleAction::Allow,
                (None, Some(req)) => {
                    RuleAction::Require(compile_requirement(req, &format!("{path}.require"))?)
                }
                (Some(false), _) => return Err(ConfigError::new(
                    format!("{path}.allow"),
                    "only \"allow\": true is meaningful; use \"require\": {} for any valid token",
                )),
                _ => {
                    return Err(ConfigError::new(
                        path,
                        "must have either \"allow\": true or \"require\"",
                    ))
                }
            };
        Ok(RouteRule {
            path: path_match,
            methods,
            headers,
            action,
        })
    }

    fn matches<H: Fn(&str) -> Option<String>>(&self, req: &RequestFacts<'_, H>) -> bool {
        // An ambiguous path (encoded or back-slashes) never gets anonymous access: the
        // upstream might decode it into a path this rule was not written for.
        if req.path.ambiguous && self.action == RuleAction::Allow {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == req.method) {
            return false;
        }
        let path = req.path.as_str();
        let path_ok = match &self.path {
            PathMatch::Exact(e) => path == e,
            PathMatch::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (path.len() == p.len()
                        || p.ends_with('/')
                        || path.as_bytes().get(p.len()) == Some(&b'/'))
            }
            PathMatch::Template(segments) => template_matches(segments, path),
        };
        path_ok
            && self
                .headers
                .iter()
                .all(|(name, value)| (req.header)(name).as_deref() == Some(value.as_str()))
    }
}

/// The first rule that fits the request, or `None` (then the default applies: any valid token).
pub fn first_match<'r, H: Fn(&str) -> Option<String>>(
    rules: &'r [RouteRule],
    req: &RequestFacts<'_, H>,
) -> Option<&'r RouteRule> {
    rules.iter().find(|r| r.matches(req))
}

fn absolute(p: &str, path: &str) -> Result<String, ConfigError> {
    if !p.starts_with('/') || p.contains(['?', '#']) || !p.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new(
            path,
            format!("{p:?} must be a path starting with '/' without query or fragment"),
        ));
    }
    // Rules are written for normalised paths; a rule that normalisation changes could never match.
    let normalized = normalize_path(p);
    if normalized.as_str() != p {
        return Err(ConfigError::new(
            path,
            format!(
                "{p:?} is not in normal form (write {:?})",
                normalized.as_str()
            ),
        ));
    }
    Ok(p.to_string())
}

fn compile_template(t: &str, path: &str) -> Result<PathMatch, ConfigError> {
    absolute(t, path)?;
    let raw: Vec<&str> = t.split('/').skip(1).collect();
    let mut segments = Vec::with_capacity(raw.len());
    for (i, seg) in raw.iter().enumerate() {
        let segment = if *seg == "**" {
            if i + 1 != raw.len() {
                return Err(ConfigError::new(
                    path,
                    "\"**\" may only be the last segment",
                ));
            }
            TemplateSegment::Rest
        } else if seg.starts_with('{') && seg.ends_with('}') && seg.len() > 2 {
            let name = &seg[1..seg.len() - 1];
            if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ConfigError::new(
                    path,
                    format!("{{{name}}} is not a valid parameter name"),
                ));
            }
            TemplateSegment::Param
        } else if seg.contains(['{', '}', '*']) {
            return Err(ConfigError::new(
                path,
                format!("segment {seg:?}: use {{name}} for one segment or ** for the rest"),
            ));
        } else {
            TemplateSegment::Literal((*seg).to_string())
        };
        segments.push(segment);
    }
    Ok(PathMatch::Template(segments))
}

fn template_matches(segments: &[TemplateSegment], path: &str) -> bool {
    let mut parts = path.split('/').skip(1);
    for segment in segments {
        match segment {
            TemplateSegment::Rest => return true,
            TemplateSegment::Param => match parts.next() {
                Some(p) if !p.is_empty() => {}
                _ => return false,
            },
            TemplateSegment::Literal(l) => {
                if parts.next() != Some(l.as_str()) {
                    return false;
                }
            }
        }
    }
    parts.next().is_none()
}

fn compile_requirement(wire: WireRequire, path: &str) -> Result<Requirement, ConfigError> {
    let list = |v: Option<Vec<String>>, key: &str| -> Result<Vec<String>, ConfigError> {
        let v = v.unwrap_or_default();
        for (i, item) in v.iter().enumerate() {
            if item.is_empty() || item.contains(char::is_whitespace) {
                return Err(ConfigError::new(
                    format!("{path}.{key}[{i}]"),
                    "must be a non-empty value without spaces",
                ));
            }
        }
        Ok(v)
    };
    let scopes_any = list(wire.scopes, "scopes")?;
    let scopes_all = list(wire.scopes_all, "scopes_all")?;
    let groups_any = list(wire.groups, "groups")?;
    let groups_all = list(wire.groups_all, "groups_all")?;
    let mut claims = Vec::new();
    for (claim, values) in wire.claims.unwrap_or_default() {
        if values.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.claims.{claim}"),
                "must list at least one accepted value",
            ));
        }
        claims.push((claim, values));
    }
    let token_use = match wire.token_use.as_deref() {
        None => None,
        Some(u) => Some(TokenUse::parse(u).ok_or_else(|| {
            ConfigError::new(
                format!("{path}.token_use"),
                format!("{u:?} is neither \"id\" nor \"access\""),
            )
        })?),
    };
    let scopes_imply_access = !scopes_any.is_empty() || !scopes_all.is_empty();
    // Cognito puts OAuth scopes only in access tokens: requiring one implies an access token.
    if scopes_imply_access && token_use == Some(TokenUse::Id) {
        return Err(ConfigError::new(
            format!("{path}.token_use"),
            "scopes are only in access tokens, so \"id\" can never satisfy this rule",
        ));
    }
    Ok(Requirement {
        scopes_any,
        scopes_all,
        groups_any,
        groups_all,
        claims,
        token_use,
        scopes_imply_access,
    })
}

impl Requirement {
    /// Checks a verified token; the error names the first kind of requirement it fails.
    pub fn check(&self, token: &impl TokenFacts) -> Result<(), Failed> {
        if let Some(required) = self.token_use {
            if token.token_use() != Some(required) {
                return Err(Failed::TokenUse);
            }
        }
        if self.scopes_imply_access && token.token_use() == Some(TokenUse::Id) {
            return Err(Failed::TokenUse);
        }
        if !holds(token.scopes(), &self.scopes_any, &self.scopes_all) {
            return Err(Failed::Scopes);
        }
        if !holds(token.groups(), &self.groups_any, &self.groups_all) {
            return Err(Failed::Groups);
        }
        for (claim, accepted) in &self.claims {
            let values = token.claim_values(claim);
            if !values.iter().any(|v| accepted.iter().any(|a| a == v)) {
                return Err(Failed::Claims);
            }
        }
        Ok(())
    }

    /// The scopes to name in `www-authenticate` when this requirement fails (empty: none).
    pub fn scope_hint(&self) -> String {
        let mut all: Vec<&str> = self.scopes_all.iter().map(String::as_str).collect();
        for s in &self.scopes_any {
            if !all.contains(&s.as_str()) {
                all.push(s);
            }
        }
        all.join(" ")
    }
}

fn holds(have: &[String], any: &[String], all: &[String]) -> bool {
    (any.is_empty() || any.iter().any(|a| have.contains(a))) && all.iter().all(|a| have.contains(a))
}

/// A request path reduced to the form rules are written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    path: String,
    /// The raw path had `%2F`, `%5C` or `\`: servers disagree on what it names.
    pub ambiguous: bool,
}

impl NormalizedPath {
    pub fn as_str(&self) -> &str {
        &self.path
    }
}

/// Normalises a request path for matching, as Envoy's `normalize_path` + `merge_slashes` do:
/// drops query and fragment, decodes percent-encoded unreserved characters (`%61` → `a`,
/// `%2e` → `.`), merges repeated slashes and resolves `.` and `..` segments (RFC 3986 §5.2.4).
/// Encoded slashes and backslashes are decoded too, but mark the path ambiguous.
/// Decoding is repeated until nothing changes (`%%36%31` → `%61` → `a`): a path that needed
/// more than one round was double-encoded, and is ambiguous too, because a proxy or server
/// behind Envoy may decode it once more than Envoy did. The result is a fixed point:
/// normalising it again changes nothing.
pub fn normalize_path(raw: &str) -> NormalizedPath {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let raw = raw.get(..end).unwrap_or(raw);
    let mut ambiguous = raw.contains('\\');
    let mut decoded = decode_once(raw.as_bytes(), &mut ambiguous);
    loop {
        let next = decode_once(&decoded, &mut ambiguous);
        if next == decoded {
            break;
        }
        ambiguous = true;
        decoded = next;
    }
    // Bytes of a `str` copied as they are, plus ASCII: valid UTF-8 (lossy never replaces).
    let decoded = String::from_utf8_lossy(&decoded);
    // Resolve segments: empty and "." vanish, ".." pops (never above the root).
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        // Path parameters (`/admin;jsessionid=1`, `/..;/`) are cut off, as servlet containers
        // and others do before routing; such a path is ambiguous (never anonymous).
        let seg = match seg.split_once(';') {
            Some((before, _)) => {
                ambiguous = true;
                before
            }
            None => seg,
        };
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut path = String::with_capacity(decoded.len() + 1);
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || (trailing && !out.is_empty()) {
        path.push('/');
    }
    NormalizedPath { path, ambiguous }
}

/// One round of percent-decoding: unreserved characters (and `%3B`, `;`) decoded, `%2F` and `%5C` (and `\`)
/// become `/` and mark the path ambiguous, other escapes get upper-case hex. Every other byte,
/// UTF-8 included, is kept as it is.
fn decode_once(bytes: &[u8], ambiguous: &mut bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|c| hex(*c)),
                bytes.get(i + 2).and_then(|c| hex(*c)),
            ) {
                let c = h * 16 + l;
                if c.is_ascii_alphanumeric() || b"-._~;".contains(&c) {
                    out.push(c);
                } else if c == b'/' || c == b'\\' {
                    *ambiguous = true;
                    out.push(b'/');
                } else {
                    // Other escapes stay as they are, with upper-case hex (one spelling only).
                    out.extend_from_slice(&[b'%', upper_hex(h) as u8, upper_hex(l) as u8]);
                }
                i += 3;
                continue;
            }
        }
        out.push(if b == b'\\' { b'/' } else { b });
        i += 1;
    }
    out
}

fn upper_hex(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16)
        .unwrap_or('0')
        .to_ascii_uppercase()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> Result<RouteRule, ConfigError> {
        let wire: WireRule = serde_json::from_str(json).unwrap();
        RouteRule::compile(wire, "rules[0]")
    }

    fn facts<'a>(
        method: &'a str,
        path: &'a NormalizedPath,
    ) -> RequestFacts<'a, impl Fn(&str) -> Option<String>> {
        RequestFacts {
            method,
            path,
            header: |name: &str| (name == "x-tenant").then(|| "acme".to_string()),
        }
    }

    fn matches(r: &RouteRule, method: &str, raw_path: &str) -> bool {
        let p = normalize_path(raw_path);
        r.matches(&facts(method, &p))
    }

    #[test]
    fn normalize_path_resolves_the_usual_tricks() {
        let cases = [
            ("/admin", "/admin"),
            ("//admin", "/admin"),
            ("/public/../admin", "/admin"),
            ("/./admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/admin?x=/public", "/admin"),
            ("/admin#frag", "/admin"),
            ("/admin/", "/admin/"),
            ("/../../..", "/"),
            ("", "/"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb", "/a%3Fb"),
            ("/a/b/..", "/a/"),
        ];
        for (raw, want) in cases {
            let n = normalize_path(raw);
            assert_eq!(n.as_str(), want, "{raw}");
            assert!(!n.ambiguous, "{raw}");
        }
        for raw in ["/admin%2Fx", "/admin%5cx", "/admin\\x"] {
            let n = normalize_path(raw);
            assert!(n.ambiguous, "{raw}");
            assert_eq!(n.as_str(), "/admin/x", "{raw}");
        }
    }

    #[test]
    fn normalize_path_is_idempotent_and_double_encoding_is_ambiguous() {
        // fuzz/rules: "/%%36%31dmin" normalised to "/%61dmin", which normalises to "/admin".
        for raw in [
            "/%%36%31dmin",
            "/public/%2%65%2%65/admin",
            "/public/%%32%65%%32%65/admin",
            "/%2%46x",
            "/a%%33%66",
        ] {
            let once = normalize_path(raw);
            assert_eq!(
                normalize_path(once.as_str()).as_str(),
                once.as_str(),
                "{raw}"
            );
            assert!(once.ambiguous, "{raw}: double-encoded");
        }
        assert_eq!(normalize_path("/%%36%31dmin").as_str(), "/admin");
        // Non-ASCII is kept as it is (it was re-encoded as Latin-1 on every pass).
        let n = normalize_path("/caf\u{e9}/\u{1F600}");
        assert_eq!(n.as_str(), "/caf\u{e9}/\u{1F600}");
        assert_eq!(normalize_path(n.as_str()), n);
    }

    #[test]
    fn double_encoded_traversal_gets_no_anonymous_access() {
        // "/public/%2%65%2%65/admin" was "/public/%2e%2e/admin": under /public, allowed.
        let public = rule(r#"{"match":{"prefix":"/public"},"allow":true}"#).unwrap();
        assert!(!matches(&public, "GET", "/public/%2%65%2%65/admin"));
        assert!(!matches(&public, "GET", "/public/%%32%65%%32%65/x"));
        let admin =
            rule(r#"{"match":{"prefix":"/admin"},"require":{"groups":["admins"]}}"#).unwrap();
        assert!(matches(&admin, "GET", "/%%36%31dmin"));
    }

    #[test]
    fn path_parameters_are_cut_and_make_the_path_ambiguous() {
        for (raw, want) in [
            ("/admin;x=1", "/admin"),
            ("/public/..;/admin", "/admin"),
            ("/admin%3Bx", "/admin"),
            ("/a;b/c", "/a/c"),
        ] {
            let n = normalize_path(raw);
            assert_eq!(n.as_str(), want, "{raw}");
            assert!(n.ambiguous, "{raw}");
        }
        let public = rule(r#"{"match":{"prefix":"/public"},"allow":true}"#).unwrap();
        assert!(!matches(&public, "GET", "/public/..;/admin"));
        assert!(!matches(&public, "GET", "/public;x/y"));
        let admin =
            rule(r#"{"match":{"prefix":"/admin"},"require":{"groups":["admins"]}}"#).unwrap();
        assert!(matches(&admin, "GET", "/admin;x=1"));
    }

    #[test]
    fn prefix_matches_whole_segments_only() {
        let r = rule(r#"{"match":{"prefix":"/admin"},"require":{}}"#).unwrap();
        assert!(matches(&r, "GET", "/admin"));
        assert!(matches(&r, "GET", "/admin/users"));
        assert!(matches(&r, "GET", "//admin/users"));
        assert!(matches(&r, "GET", "/public/../admin/users"));
        assert!(!matches(&r, "GET", "/administrator"));
        assert!(!matches(&r, "GET", "/"));
    }

    #[test]
    fn exact_ignores_query_string() {
        let r = rule(r#"{"match":{"exact":"/healthz"},"allow":true}"#).unwrap();
        assert!(matches(&r, "GET", "/healthz"));
        assert!(matches(&r, "GET", "/healthz?verbose=1"));
        assert!(!matches(&r, "GET", "/healthz/"));
        assert!(!matches(&r, "GET", "/healthz/x"));
    }

    #[test]
    fn allow_rule_never_matches_ambiguous_paths() {
        let r = rule(r#"{"match":{"prefix":"/public"},"allow":true}"#).unwrap();
        assert!(matches(&r, "GET", "/public/x"));
        assert!(!matches(&r, "GET", "/public%2Fx"));
        let r = rule(r#"{"match":{"prefix":"/admin"},"require":{"groups":["admins"]}}"#).unwrap();
        assert!(
            matches(&r, "GET", "/admin%2Fx"),
            "require rules still match, decoded"
        );
    }

    #[test]
    fn path_template_params_and_rest() {
        let r = rule(r#"{"match":{"path_template":"/users/{id}"},"require":{}}"#).unwrap();
        assert!(matches(&r, "GET", "/users/42"));
        assert!(!matches(&r, "GET", "/users/"));
        assert!(!matches(&r, "GET", "/users"));
        assert!(!matches(&r, "GET", "/users/42/x"));
        let r = rule(r#"{"match":{"path_template":"/files/**"},"require":{}}"#).unwrap();
        assert!(matches(&r, "GET", "/files"));
        assert!(matches(&r, "GET", "/files/a/b/c"));
        assert!(!matches(&r, "GET", "/filesx"));
        let r = rule(r#"{"match":{"path_template":"/a/{x}/b/**"},"require":{}}"#).unwrap();
        assert!(matches(&r, "GET", "/a/1/b/2"));
        assert!(!matches(&r, "GET", "/a/1/c/2"));
    }

    #[test]
    fn methods_and_headers_narrow_a_rule() {
        let r = rule(r#"{"match":{"prefix":"/","methods":["post","DELETE"],"headers":{"X-Tenant":"acme"}},"require":{}}"#).unwrap();
        assert!(matches(&r, "POST", "/x"));
        assert!(matches(&r, "DELETE", "/x"));
        assert!(!matches(&r, "GET", "/x"));
        let r = rule(r#"{"match":{"prefix":"/","headers":{"x-tenant":"other"}},"require":{}}"#)
            .unwrap();
        assert!(!matches(&r, "GET", "/x"));
    }

    #[test]
    fn bad_rules_are_refused_with_their_path() {
        let cases = [
            (r#"{"match":{},"require":{}}"#, "rules[0].match"),
            (
                r#"{"match":{"prefix":"/a","exact":"/a"},"require":{}}"#,
                "rules[0].match",
            ),
            (
                r#"{"match":{"prefix":"admin"},"require":{}}"#,
                "rules[0].match.prefix",
            ),
            (
                r#"{"match":{"prefix":"//admin"},"require":{}}"#,
                "rules[0].match.prefix",
            ),
            (
                r#"{"match":{"path_template":"/a/**/b"},"require":{}}"#,
                "rules[0].match.path_template",
            ),
            (
                r#"{"match":{"path_template":"/a/x*"},"require":{}}"#,
                "rules[0].match.path_template",
            ),
            (r#"{"match":{"prefix":"/"}}"#, "rules[0]"),
            (
                r#"{"match":{"prefix":"/"},"allow":true,"require":{}}"#,
                "rules[0]",
            ),
            (
                r#"{"match":{"prefix":"/"},"allow":false}"#,
                "rules[0].allow",
            ),
            (
                r#"{"match":{"prefix":"/","methods":[]},"allow":true}"#,
                "rules[0].match.methods",
            ),
            (
                r#"{"match":{"prefix":"/"},"require":{"token_use":"refresh"}}"#,
                "rules[0].require.token_use",
            ),
            (
                r#"{"match":{"prefix":"/"},"require":{"scopes":["a"],"token_use":"id"}}"#,
                "rules[0].require.token_use",
            ),
            (
                r#"{"match":{"prefix":"/"},"require":{"claims":{"x":[]}}}"#,
                "rules[0].require.claims.x",
            ),
            (
                r#"{"match":{"prefix":"/"},"require":{"groups":["a b"]}}"#,
                "rules[0].require.groups[0]",
            ),
        ];
        for (json, path) in cases {
            match rule(json) {
                Ok(_) => panic!("{json} should be refused"),
                Err(e) => assert_eq!(e.path, path, "{json}: {e}"),
            }
        }
    }

    struct Facts {
        token_use: Option<TokenUse>,
        scopes: Vec<String>,
        groups: Vec<String>,
        tenant: Vec<&'static str>,
    }

    impl TokenFacts for Facts {
        fn token_use(&self) -> Option<TokenUse> {
            self.token_use
        }
        fn scopes(&self) -> &[String] {
            &self.scopes
        }
        fn groups(&self) -> &[String] {
            &self.groups
        }
        fn claim_values(&self, claim: &str) -> Vec<&str> {
            if claim == "custom:tenant" {
                self.tenant.clone()
            } else {
                Vec::new()
            }
        }
    }

    fn access(scopes: &[&str], groups: &[&str]) -> Facts {
        Facts {
            token_use: Some(TokenUse::Access),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            tenant: vec!["acme"],
        }
    }

    fn requirement(json: &str) -> Requirement {
        match rule(&format!(r#"{{"match":{{"prefix":"/"}},"require":{json}}}"#))
            .unwrap()
            .action
        {
            RuleAction::Require(r) => r,
            RuleAction::Allow => unreachable!(),
        }
    }

    #[test]
    fn scopes_any_needs_one_and_scopes_all_needs_every_one() {
        let any = requirement(r#"{"scopes":["api/read","api/write"]}"#);
        assert_eq!(any.check(&access(&["api/write"], &[])), Ok(()));
        assert_eq!(any.check(&access(&["other"], &[])), Err(Failed::Scopes));
        let all = requirement(r#"{"scopes_all":["api/read","api/write"]}"#);
        assert_eq!(all.check(&access(&["api/read"], &[])), Err(Failed::Scopes));
        assert_eq!(all.check(&access(&["api/write", "api/read"], &[])), Ok(()));
        assert_eq!(any.scope_hint(), "api/read api/write");
    }

    #[test]
    fn scopes_imply_an_access_token() {
        let r = requirement(r#"{"scopes":["api/read"]}"#);
        let mut id = access(&["api/read"], &[]);
        id.token_use = Some(TokenUse::Id);
        assert_eq!(r.check(&id), Err(Failed::TokenUse));
    }

    #[test]
    fn scopes_of_a_non_cognito_token_count_without_token_use() {
        let r = requirement(r#"{"scopes":["reports/read"]}"#);
        let mut oidc = access(&["reports/read"], &[]);
        oidc.token_use = None;
        assert_eq!(r.check(&oidc), Ok(()));
        let explicit = requirement(r#"{"token_use":"access"}"#);
        assert_eq!(explicit.check(&oidc), Err(Failed::TokenUse));
    }

    #[test]
    fn groups_and_claims_are_checked_together() {
        let r = requirement(r#"{"groups":["admins","ops"],"claims":{"custom:tenant":["acme"]}}"#);
        assert_eq!(r.check(&access(&[], &["ops"])), Ok(()));
        assert_eq!(r.check(&access(&[], &["users"])), Err(Failed::Groups));
        let mut other_tenant = access(&[], &["admins"]);
        other_tenant.tenant = vec!["globex"];
        assert_eq!(r.check(&other_tenant), Err(Failed::Claims));
        let all = requirement(r#"{"groups_all":["admins","ops"]}"#);
        assert_eq!(all.check(&access(&[], &["admins"])), Err(Failed::Groups));
        assert_eq!(all.check(&access(&[], &["ops", "admins"])), Ok(()));
    }

    #[test]
    fn empty_requirement_accepts_any_valid_token() {
        assert_eq!(Requirement::default().check(&access(&[], &[])), Ok(()));
    }

    #[test]
    fn first_matching_rule_wins() {
        let rules = vec![
            rule(r#"{"match":{"exact":"/healthz"},"allow":true}"#).unwrap(),
            rule(r#"{"match":{"prefix":"/"},"require":{"groups":["admins"]}}"#).unwrap(),
        ];
        let p = normalize_path("/healthz");
        assert_eq!(
            first_match(&rules, &facts("GET", &p)).map(|r| &r.action),
            Some(&RuleAction::Allow)
        );
        let p = normalize_path("/other");
        assert!(matches!(
            first_match(&rules, &facts("GET", &p)).map(|r| &r.action),
            Some(RuleAction::Require(_))
        ));
        assert!(first_match(&[], &facts("GET", &p)).is_none());
    }
}
