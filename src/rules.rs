//! Route rules (README "rules entries" and "Paths"): compiled once at configure time, matched first-wins per request.
//!
//! Matching works on every reading of the path (see `path::readings`) so that `//admin`,
//! `/public/../admin`, `/%61dmin` or `/admin/..;/x` cannot slip past a rule written for
//! `/admin`, whichever way the upstream reads them.

use crate::cognito::TokenUse;
use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{ConfigError, Unmet};
use crate::extract::query_values;
use crate::path;
use crate::request::folded_header_name;
use crate::request::{header_name, RequestHeaders};

/// A route rule as written in the configuration; compiled by [`RouteRule::compile`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRule {
    #[serde(rename = "match")]
    pub matcher: WireMatch,
    #[serde(default)]
    pub allow: Option<bool>,
    #[serde(default)]
    pub require: Option<WireRequire>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireMatch {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub path_template: Option<String>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRequire {
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub scopes_all: Option<Vec<String>>,
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    #[serde(default)]
    pub groups_all: Option<Vec<String>>,
    #[serde(default)]
    pub claims: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    pub token_use: Option<String>,
}

/// One compiled rule: which requests it covers and what it asks of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    path: PathMatch,
    /// Upper-case methods (`HEAD` with `GET`); empty means any method.
    methods: Vec<String>,
    /// Header name (folded: lower case, `_` read as `-`) and value, all of which must be
    /// present in a [`HeaderReading`].
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

/// What a request offers to the matcher.
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// The `:path` as sent: the matcher reads it in every plausible way (`path::readings`).
    pub path: &'a str,
    pub headers: &'a RequestHeaders,
}

/// What the rules ask of a request, over every reading of its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'r> {
    /// Every reading of the path falls under an `allow` rule: no token needed.
    Anonymous,
    /// A valid token is needed, and it must meet each of these requirements (one per distinct
    /// rule that some reading selects; none: any valid token).
    Token(Vec<&'r Requirement>),
    /// The path cannot be read within the bounds of `path::readings`: refused (400).
    UnreadablePath(path::Unreadable),
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
                // Servers route HEAD to the GET handler: a rule for GET covers HEAD.
                if methods.iter().any(|m| m == "GET") && !methods.iter().any(|m| m == "HEAD") {
                    methods.push("HEAD".to_string());
                }
                methods
            }
        };
        let mut headers = Vec::new();
        for (name, value) in m.headers.unwrap_or_default() {
            let name = header_name(&name, &format!("{path}.match.headers.{name}"))?;
            headers.push((folded_header_name(&name), value));
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

    /// Whether the rule covers `path` (one reading of the request's path) with `method` and
    /// `headers` (one reading of each).
    fn matches(&self, method: &str, path: &str, headers: &HeaderReading<'_>) -> bool {
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == method) {
            return false;
        }
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
                .all(|(name, wanted)| headers.has(name, wanted))
    }
}

/// At most this many [`HeaderReading`]s of one request: more (many values of the headers
/// that rules match on) and the request is refused as unreadable (400).
pub const MAX_HEADER_READINGS: usize = 16;

/// One way the upstream may read the headers that rules match on: for each name (folded), the
/// one value it takes (`None`: absent) and whether it compares it ignoring ASCII case.
///
/// Servers disagree here too: a header sent twice may be read as its first or its last value,
/// a list (`acme, other`) as one value or as its elements, a name with `_` as the same name
/// with `-` (CGI, WSGI, Rack, PHP), a value case-sensitively or not. Every combination is a
/// reading, and the rules are matched on each ([`route`]), so that no reading can pick a more
/// lenient rule than another.
#[derive(Debug, Clone, Default)]
pub struct HeaderReading<'a> {
    values: Vec<(&'a str, Option<(&'a str, bool)>)>,
}

impl HeaderReading<'_> {
    fn has(&self, name: &str, wanted: &str) -> bool {
        self.values.iter().any(|(n, value)| {
            *n == name
                && match value {
                    Some((v, false)) => *v == wanted,
                    Some((v, true)) => v.eq_ignore_ascii_case(wanted),
                    None => false,
                }
        })
    }
}

/// Every [`HeaderReading`] of `headers` for the names `rules` match on (one, empty, when no
/// rule looks at a header), or `None` past [`MAX_HEADER_READINGS`].
pub fn header_readings<'a>(
    rules: &'a [RouteRule],
    headers: &'a RequestHeaders,
) -> Option<Vec<HeaderReading<'a>>> {
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in rules.iter().flat_map(|r| &r.headers) {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    let mut readings = vec![HeaderReading::default()];
    for name in names {
        let mut values: Vec<Option<(&str, bool)>> = Vec::new();
        for value in headers.values_folded(name) {
            for item in std::iter::once(value.trim()).chain(value.split(',').map(str::trim)) {
                for fold in [false, true] {
                    if !values.contains(&Some((item, fold))) {
                        values.push(Some((item, fold)));
                    }
                }
            }
        }
        // A server that does not fold names sees none of `x_tenant`, `X-Tenant ` ...
        if headers.first(name).is_none() {
            values.push(None);
        }
        if readings.len() * values.len() > MAX_HEADER_READINGS {
            return None;
        }
        readings = readings
            .iter()
            .flat_map(|reading| {
                values.iter().map(move |value| {
                    let mut next = reading.clone();
                    next.values.push((name, *value));
                    next
                })
            })
            .collect();
    }
    Some(readings)
}

/// The first rule that covers one reading of the request, or `None` (the default: any valid
/// token).
fn first_match<'r>(
    rules: &'r [RouteRule],
    method: &str,
    path: &str,
    headers: &HeaderReading<'_>,
) -> Option<&'r RouteRule> {
    rules.iter().find(|r| r.matches(method, path, headers))
}

/// What the rules ask of a request. The first matching rule decides for each reading of the
/// path, of the method ([`method_readings`]) and of the headers ([`HeaderReading`]); when
/// readings disagree, the
/// strictest outcome wins: anonymous only if every reading is allowed anonymously, otherwise a
/// token that meets every requirement any reading selects. Never the most permissive reading:
/// the upstream may read the request another way than Envoy.
pub fn route<'r>(rules: &'r [RouteRule], req: &RequestFacts<'_>) -> Route<'r> {
    if rules.is_empty() {
        return Route::Token(Vec::new());
    }
    let readings = match path::readings(req.path) {
        Ok(readings) => readings,
        Err(why) => return Route::UnreadablePath(why),
    };
    let methods = if rules.iter().any(|r| !r.methods.is_empty()) {
        method_readings(req)
    } else {
        vec![req.method.to_string()]
    };
    let Some(header_readings) = header_readings(rules, req.headers) else {
        return Route::UnreadablePath(path::Unreadable::TooManyReadings);
    };
    let mut anonymous = true;
    let mut requirements: Vec<&'r Requirement> = Vec::new();
    for headers in &header_readings {
        for method in &methods {
            for reading in &readings {
                match first_match(rules, method, reading, headers).map(|r| &r.action) {
                    Some(RuleAction::Allow) => {}
                    Some(RuleAction::Require(requirement)) => {
                        anonymous = false;
                        if !requirements.iter().any(|r| std::ptr::eq(*r, requirement)) {
                            requirements.push(requirement);
                        }
                    }
                    None => anonymous = false,
                }
            }
        }
    }
    if anonymous {
        Route::Anonymous
    } else {
        Route::Token(requirements)
    }
}

/// Method-override headers that frameworks honour (Express's `method-override`, Symfony,
/// Laravel, ASP.NET, Google APIs), and the query parameter some read (`_method`).
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];
pub const METHOD_OVERRIDE_PARAMETER: &str = "_method";

/// Every method the upstream may act on: the method as sent and upper-cased (a server may
/// fold `delete` into `DELETE`, or not), and every method-override header's or `_method`
/// parameter's value, likewise. A form field `_method` in the body is not seen (README
/// "Rules").
pub fn method_readings(req: &RequestFacts<'_>) -> Vec<String> {
    let mut methods: Vec<String> = Vec::new();
    let overrides = METHOD_OVERRIDE_HEADERS
        .iter()
        .flat_map(|name| req.headers.values_folded(name))
        .map(str::to_string)
        .chain(query_values(req.path, METHOD_OVERRIDE_PARAMETER));
    for method in std::iter::once(req.method.to_string()).chain(overrides) {
        let method = method.trim();
        for reading in [method.to_string(), method.to_ascii_uppercase()] {
            if !methods.contains(&reading) {
                methods.push(reading);
            }
        }
    }
    methods
}

fn absolute(p: &str, path: &str) -> Result<String, ConfigError> {
    if let Some(problem) = path::rule_path_problem(p) {
        return Err(ConfigError::new(path, format!("{p:?} {problem}")));
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
    pub fn check(&self, token: &impl TokenFacts) -> Result<(), Unmet> {
        if let Some(required) = self.token_use {
            if token.token_use() != Some(required) {
                return Err(Unmet::TokenUse);
            }
        }
        if self.scopes_imply_access && token.token_use() == Some(TokenUse::Id) {
            return Err(Unmet::TokenUse);
        }
        if !holds(token.scopes(), &self.scopes_any, &self.scopes_all) {
            return Err(Unmet::Scopes);
        }
        if !holds(token.groups(), &self.groups_any, &self.groups_all) {
            return Err(Unmet::Groups);
        }
        for (claim, accepted) in &self.claims {
            let values = token.claim_values(claim);
            if !values.iter().any(|v| accepted.iter().any(|a| a == v)) {
                return Err(Unmet::Claims);
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

/// Checks a token against every requirement a route asks for; the first that fails, and why.
pub fn check_all<'r>(
    requirements: &[&'r Requirement],
    token: &impl TokenFacts,
) -> Result<(), (Unmet, &'r Requirement)> {
    for requirement in requirements {
        requirement
            .check(token)
            .map_err(|why| (why, *requirement))?;
    }
    Ok(())
}

fn holds(have: &[String], any: &[String], all: &[String]) -> bool {
    (any.is_empty() || any.iter().any(|a| have.contains(a))) && all.iter().all(|a| have.contains(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> Result<RouteRule, ConfigError> {
        let wire: WireRule = serde_json::from_str(json).unwrap();
        RouteRule::compile(wire, "rules[0]")
    }

    fn headers(pairs: &[(&str, &str)]) -> RequestHeaders {
        RequestHeaders::new(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Whether the rule covers the path as the request spells it (one reading, no decoding).
    fn matches(r: &RouteRule, method: &str, raw_path: &str) -> bool {
        let h = headers(&[("x-tenant", "acme")]);
        let path = raw_path.split(['?', '#']).next().unwrap();
        let rules = std::slice::from_ref(r);
        header_readings(rules, &h)
            .unwrap()
            .iter()
            .all(|reading| r.matches(method, path, reading))
    }

    fn rules(json: &str) -> Vec<RouteRule> {
        let wires: Vec<WireRule> = serde_json::from_str(json).unwrap();
        wires
            .into_iter()
            .enumerate()
            .map(|(i, w)| RouteRule::compile(w, &format!("rules[{i}]")).unwrap())
            .collect()
    }

    /// The demo's shape: an anonymous health check and public area, admins only under /admin.
    const DEMO: &str = r#"[
        {"match":{"exact":"/healthz"},"allow":true},
        {"match":{"prefix":"/public"},"allow":true},
        {"match":{"prefix":"/admin"},"require":{"groups":["admins"]}}
    ]"#;

    #[derive(Debug, PartialEq)]
    enum Outcome {
        Anonymous,
        AnyToken,
        Admins,
        Unreadable,
    }

    fn outcome(rules: &[RouteRule], raw_path: &str) -> Outcome {
        outcome_with(rules, raw_path, &headers(&[]))
    }

    fn outcome_with(rules: &[RouteRule], raw_path: &str, h: &RequestHeaders) -> Outcome {
        outcome_of(rules, "GET", raw_path, h)
    }

    fn outcome_of(
        rules: &[RouteRule],
        method: &str,
        raw_path: &str,
        h: &RequestHeaders,
    ) -> Outcome {
        let facts = RequestFacts {
            method,
            path: raw_path,
            headers: h,
        };
        match route(rules, &facts) {
            Route::Anonymous => Outcome::Anonymous,
            Route::Token(reqs) if reqs.iter().any(|r| r.groups_any == ["admins"]) => {
                Outcome::Admins
            }
            Route::Token(_) => Outcome::AnyToken,
            Route::UnreadablePath(_) => Outcome::Unreadable,
        }
    }

    #[test]
    fn dot_segments_into_a_public_path_do_not_make_admin_anonymous() {
        let r = rules(DEMO);
        // The upstream may receive and route the raw path (Envoy's defaults).
        assert_eq!(outcome(&r, "/admin/../healthz"), Outcome::Admins);
        assert_eq!(outcome(&r, "/admin/%2e%2e/healthz"), Outcome::Admins);
        assert_eq!(outcome(&r, "/public/../admin"), Outcome::Admins);
        assert_eq!(outcome(&r, "/public/./../admin/x"), Outcome::Admins);
    }

    #[test]
    fn path_parameters_are_read_both_cut_and_kept() {
        let r = rules(DEMO);
        // Tomcat reads /x, Express reads /admin/..;/x under /admin: admins either way.
        assert_eq!(outcome(&r, "/admin/..;/x"), Outcome::Admins);
        assert_eq!(outcome(&r, "/public/..;/admin"), Outcome::Admins);
        assert_eq!(outcome(&r, "/admin;jsessionid=1"), Outcome::Admins);
        assert_eq!(outcome(&r, "/healthz;x"), Outcome::AnyToken);
    }

    #[test]
    fn encoded_slashes_and_backslashes_are_read_decoded_and_not() {
        let r = rules(DEMO);
        assert_eq!(
            outcome(&r, "/admin/42%2F..%2F..%2Fhealthz"),
            Outcome::Admins
        );
        assert_eq!(outcome(&r, "/public%2F..%2Fadmin"), Outcome::Admins);
        assert_eq!(outcome(&r, "/public\\..\\admin"), Outcome::Admins);
        assert_eq!(outcome(&r, "/public%2Fx"), Outcome::AnyToken);
        // Both readings stay under /public: still anonymous.
        assert_eq!(outcome(&r, "/public/a%2Fb"), Outcome::Anonymous);
    }

    #[test]
    fn double_encoding_is_seen() {
        let r = rules(DEMO);
        assert_eq!(outcome(&r, "/public/%252e%252e/admin"), Outcome::Admins);
        assert_eq!(outcome(&r, "/%2561dmin"), Outcome::Admins);
        assert_eq!(outcome(&r, "/public/%2%65%2%65/admin"), Outcome::Admins);
        assert_eq!(outcome(&r, "/%%36%31dmin"), Outcome::Admins);
    }

    #[test]
    fn windows_readings_are_weighed() {
        let r = rules(DEMO);
        for p in [
            "/ADMIN",
            "/Admin/x",
            "/admin.",
            "/admin%20",
            "/%u0061dmin",
            "/admin./x",
        ] {
            assert_eq!(outcome(&r, p), Outcome::Admins, "{p}");
        }
        // A case variant of an anonymous path needs a token (its literal reading is not public).
        assert_eq!(outcome(&r, "/HEALTHZ"), Outcome::AnyToken);
    }

    #[test]
    fn genuine_paths_keep_their_rule() {
        let r = rules(DEMO);
        assert_eq!(outcome(&r, "/healthz"), Outcome::Anonymous);
        assert_eq!(outcome(&r, "/healthz?x=/admin"), Outcome::Anonymous);
        assert_eq!(outcome(&r, "/public/a/../b"), Outcome::Anonymous);
        assert_eq!(outcome(&r, "/admin/x"), Outcome::Admins);
        assert_eq!(outcome(&r, "/other"), Outcome::AnyToken);
        assert_eq!(outcome(&r, "/administrator"), Outcome::AnyToken);
    }

    #[test]
    fn no_rules_means_any_valid_token_without_reading_the_path() {
        let facts = RequestFacts {
            method: "GET",
            path: &"/%2e".repeat(100_000),
            headers: &headers(&[]),
        };
        assert_eq!(route(&[], &facts), Route::Token(Vec::new()));
    }

    #[test]
    fn a_path_with_too_many_readings_is_unreadable() {
        let r = rules(DEMO);
        let raw = "/A%2561;x/%u0062.\\%2e%2e//C;y/%252F..%5C.;z/D ./".repeat(4);
        assert_eq!(outcome(&r, &raw), Outcome::Unreadable);
    }

    #[test]
    fn every_requirement_a_reading_selects_must_hold() {
        let r = rules(
            r#"[
            {"match":{"prefix":"/admin"},"require":{"groups":["admins"]}},
            {"match":{"prefix":"/x"},"require":{"scopes":["api/x"]}}
        ]"#,
        );
        let h = headers(&[]);
        let facts = RequestFacts {
            method: "GET",
            path: "/admin/..;/x",
            headers: &h,
        };
        let Route::Token(reqs) = route(&r, &facts) else {
            panic!("needs a token")
        };
        assert_eq!(reqs.len(), 2);
    }

    #[test]
    fn repeated_header_values_never_widen_an_allow_rule() {
        let r = rules(
            r#"[
            {"match":{"prefix":"/","headers":{"x-tenant":"acme"}},"allow":true}
        ]"#,
        );
        let one = headers(&[("x-tenant", "acme")]);
        assert_eq!(outcome_with(&r, "/x", &one), Outcome::Anonymous);
        let twice_same = headers(&[("x-tenant", "acme"), ("x-tenant", "acme")]);
        assert_eq!(outcome_with(&r, "/x", &twice_same), Outcome::Anonymous);
        for disagreeing in [
            headers(&[("x-tenant", "other"), ("x-tenant", "acme")]),
            headers(&[("x-tenant", "acme"), ("x-tenant", "other")]),
            headers(&[("x-tenant", "acme,other")]),
        ] {
            assert_eq!(outcome_with(&r, "/x", &disagreeing), Outcome::AnyToken);
        }
    }

    #[test]
    fn repeated_header_values_apply_a_require_rule_if_any_value_matches() {
        let r = rules(
            r#"[
            {"match":{"prefix":"/","headers":{"x-tenant":"acme"}},"require":{"groups":["admins"]}},
            {"match":{"prefix":"/"},"allow":true}
        ]"#,
        );
        assert_eq!(outcome_with(&r, "/x", &headers(&[])), Outcome::Anonymous);
        for h in [
            headers(&[("x-tenant", "other"), ("x-tenant", "acme")]),
            headers(&[("x-tenant", "acme"), ("x-tenant", "other")]),
            headers(&[("x-tenant", "other, acme")]),
            headers(&[("x-tenant", "acme")]),
        ] {
            assert_eq!(outcome_with(&r, "/x", &h), Outcome::Admins, "{h:?}");
        }
        assert_eq!(
            outcome_with(&r, "/x", &headers(&[("x-tenant", "other")])),
            Outcome::Anonymous
        );
    }

    /// Exact and template routes for admins, a prefix with a `k`, the rest anonymous.
    const EXACT: &str = r#"[
        {"match":{"exact":"/admin"},"require":{"groups":["admins"]}},
        {"match":{"path_template":"/users/{id}"},"require":{"groups":["admins"]}},
        {"match":{"prefix":"/keys"},"require":{"groups":["admins"]}},
        {"match":{"prefix":"/"},"allow":true}
    ]"#;

    #[test]
    fn chained_decoding_and_resolving_is_weighed() {
        // A hop that resolves but keeps `%2F` makes this `/public/..%2Fadmin/`, which a
        // decode-then-resolve server serves as `/admin/`.
        let r = rules(DEMO);
        assert_eq!(
            outcome(&r, "/public/..%2Fadmin/..%2F..%2Fpublic%2Fz/.."),
            Outcome::Admins
        );
    }

    #[test]
    fn a_trailing_slash_or_a_suffix_does_not_dodge_an_exact_or_template_rule() {
        let r = rules(EXACT);
        for p in ["/admin/", "/users/42/", "/admin.json", "/users/42.json"] {
            assert_eq!(outcome(&r, p), Outcome::Admins, "{p}");
        }
        assert_eq!(outcome(&r, "/other/"), Outcome::Anonymous);
        assert_eq!(outcome(&r, "/users/42/x"), Outcome::Anonymous);
    }

    #[test]
    fn decoded_query_fragment_and_nul_end_the_path() {
        let r = rules(DEMO);
        for p in ["/admin%3Fx", "/admin%23x", "/admin%00", "/admin%3F"] {
            assert_eq!(outcome(&r, p), Outcome::Admins, "{p}");
        }
    }

    #[test]
    fn non_ascii_letters_that_fold_into_a_rule_path_are_weighed() {
        let r = rules(DEMO);
        assert_eq!(outcome(&r, "/adm%C4%B1n"), Outcome::Admins);
        assert_eq!(outcome(&r, "/ADM%C4%B0N/x"), Outcome::Admins);
        assert_eq!(outcome(&rules(EXACT), "/%E2%84%AAeys"), Outcome::Admins);
    }

    #[test]
    fn rule_header_names_fold_and_require_values_ignore_case() {
        let r = rules(
            r#"[
            {"match":{"prefix":"/","headers":{"x-tenant":"acme"}},"require":{"groups":["admins"]}},
            {"match":{"prefix":"/","headers":{"X_Region":"eu"}},"allow":true}
        ]"#,
        );
        // WSGI and CGI servers read `x_tenant` as `X-Tenant` (HTTP_X_TENANT).
        for h in [
            headers(&[("x_tenant", "acme")]),
            headers(&[("x-tenant", "ACME")]),
            headers(&[("x_tenant", "other"), ("x-tenant", "Acme")]),
        ] {
            assert_eq!(outcome_with(&r, "/x", &h), Outcome::Admins, "{h:?}");
        }
        assert_eq!(
            outcome_with(&r, "/x", &headers(&[("x-region", "eu")])),
            Outcome::Anonymous
        );
        // An allow rule wants every value, in every spelling, to be exactly its own.
        for h in [
            headers(&[("x-region", "eu"), ("x_region", "us")]),
            headers(&[("x-region", "EU")]),
        ] {
            assert_eq!(outcome_with(&r, "/x", &h), Outcome::AnyToken, "{h:?}");
        }
    }

    #[test]
    fn a_header_read_another_way_cannot_pick_a_more_lenient_rule() {
        // Tenant acme needs acme's claim, any other tenant needs tenant-admins. `ACME` is acme
        // to a server that folds case and another tenant to one that does not: both rules.
        let r = rules(
            r#"[
            {"match":{"prefix":"/","headers":{"x-tenant":"acme"}},"require":{"claims":{"custom:tenant":["acme"]}}},
            {"match":{"prefix":"/"},"require":{"groups":["tenant-admins"]}}
        ]"#,
        );
        for h in [
            headers(&[("x-tenant", "ACME")]),
            headers(&[("x_tenant", "acme")]),
            headers(&[("x-tenant", "acme, other")]),
            headers(&[("x-tenant", "acme"), ("x-tenant", "other")]),
        ] {
            let facts = RequestFacts {
                method: "GET",
                path: "/x",
                headers: &h,
            };
            let Route::Token(reqs) = route(&r, &facts) else {
                panic!("needs a token")
            };
            assert_eq!(reqs.len(), 2, "{h:?}");
        }
        let many: Vec<(String, String)> = (0..9)
            .map(|i| ("x-tenant".to_string(), format!("t{i}")))
            .collect();
        let h = RequestHeaders::new(many);
        assert_eq!(outcome_with(&r, "/x", &h), Outcome::Unreadable);
    }

    #[test]
    fn methods_fold_case_cover_head_and_see_overrides() {
        let r = rules(
            r#"[
            {"match":{"prefix":"/","methods":["GET"]},"require":{"groups":["admins"]}},
            {"match":{"prefix":"/","methods":["DELETE"]},"require":{"groups":["admins"]}},
            {"match":{"prefix":"/","methods":["OPTIONS"]},"allow":true}
        ]"#,
        );
        let none = headers(&[]);
        let admins = |method: &str, path: &str, h: &RequestHeaders| {
            outcome_of(&r, method, path, h) == Outcome::Admins
        };
        assert!(admins("HEAD", "/x", &none));
        assert!(admins("delete", "/x", &none));
        assert!(admins("get", "/x", &none));
        for name in METHOD_OVERRIDE_HEADERS {
            assert!(
                admins("POST", "/x", &headers(&[(name, "DELETE")])),
                "{name}"
            );
        }
        assert!(admins(
            "POST",
            "/x",
            &headers(&[("x_http_method_override", "delete")])
        ));
        assert!(admins("POST", "/x?_method=DELETE", &none));
        assert!(!admins("POST", "/x", &none));
        // An allow rule for a method covers only that spelling of it.
        assert_eq!(outcome_of(&r, "OPTIONS", "/x", &none), Outcome::Anonymous);
        assert_eq!(outcome_of(&r, "options", "/x", &none), Outcome::AnyToken);
    }

    #[test]
    fn prefix_matches_whole_segments_only() {
        let r = rule(r#"{"match":{"prefix":"/admin"},"require":{}}"#).unwrap();
        assert!(matches(&r, "GET", "/admin"));
        assert!(matches(&r, "GET", "/admin/users"));
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
    fn only_a_rule_for_get_covers_head() {
        let post = rule(r#"{"match":{"prefix":"/","methods":["POST"]},"allow":true}"#).unwrap();
        assert!(matches(&post, "POST", "/x"));
        assert!(!matches(&post, "HEAD", "/x"));
        let get = rule(r#"{"match":{"prefix":"/","methods":["get"]},"allow":true}"#).unwrap();
        assert!(matches(&get, "HEAD", "/x"));
        let head = rule(r#"{"match":{"prefix":"/","methods":["HEAD"]},"allow":true}"#).unwrap();
        assert!(!matches(&head, "GET", "/x"));
    }

    #[test]
    fn header_readings_are_bounded_at_exactly_the_maximum() {
        let r = rules(r#"[{"match":{"prefix":"/","headers":{"x-tenant":"acme"}},"allow":true}]"#);
        // The whole value and its seven items, each as sent and folded: 16 readings.
        let at = headers(&[("x-tenant", "a,b,c,d,e,f,g")]);
        assert_eq!(
            header_readings(&r, &at).map(|v| v.len()),
            Some(MAX_HEADER_READINGS)
        );
        // Under a spelling only folding servers read, "no header" is a reading too: 17.
        let over = headers(&[("x_tenant", "a,b,c,d,e,f,g")]);
        assert!(header_readings(&r, &over).is_none());
    }

    #[test]
    fn template_parameter_names_may_hold_underscores() {
        let r = rule(r#"{"match":{"path_template":"/users/{user_id}"},"require":{}}"#).unwrap();
        assert!(matches(&r, "GET", "/users/42"));
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
                r#"{"match":{"prefix":"/"},"require":{"scopes_all":["a"],"token_use":"id"}}"#,
                "rules[0].require.token_use",
            ),
            (
                r#"{"match":{"prefix":"/","methods":[""]},"allow":true}"#,
                "rules[0].match.methods[0]",
            ),
            (
                r#"{"match":{"prefix":"/","methods":["GET","PO ST"]},"allow":true}"#,
                "rules[0].match.methods[1]",
            ),
            (
                r#"{"match":{"path_template":"/a/{}"},"require":{}}"#,
                "rules[0].match.path_template",
            ),
            (
                r#"{"match":{"path_template":"/a/{b-c}"},"require":{}}"#,
                "rules[0].match.path_template",
            ),
            (
                r#"{"match":{"path_template":"/a/{bc"},"require":{}}"#,
                "rules[0].match.path_template",
            ),
            (
                r#"{"match":{"path_template":"/a/bc}"},"require":{}}"#,
                "rules[0].match.path_template",
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
        assert_eq!(any.check(&access(&["other"], &[])), Err(Unmet::Scopes));
        let all = requirement(r#"{"scopes_all":["api/read","api/write"]}"#);
        assert_eq!(all.check(&access(&["api/read"], &[])), Err(Unmet::Scopes));
        assert_eq!(all.check(&access(&["api/write", "api/read"], &[])), Ok(()));
        assert_eq!(any.scope_hint(), "api/read api/write");
    }

    #[test]
    fn scopes_imply_an_access_token() {
        let r = requirement(r#"{"scopes":["api/read"]}"#);
        let mut id = access(&["api/read"], &[]);
        id.token_use = Some(TokenUse::Id);
        assert_eq!(r.check(&id), Err(Unmet::TokenUse));
    }

    #[test]
    fn scopes_of_a_non_cognito_token_count_without_token_use() {
        let r = requirement(r#"{"scopes":["reports/read"]}"#);
        let mut oidc = access(&["reports/read"], &[]);
        oidc.token_use = None;
        assert_eq!(r.check(&oidc), Ok(()));
        let explicit = requirement(r#"{"token_use":"access"}"#);
        assert_eq!(explicit.check(&oidc), Err(Unmet::TokenUse));
    }

    #[test]
    fn groups_and_claims_are_checked_together() {
        let r = requirement(r#"{"groups":["admins","ops"],"claims":{"custom:tenant":["acme"]}}"#);
        assert_eq!(r.check(&access(&[], &["ops"])), Ok(()));
        assert_eq!(r.check(&access(&[], &["users"])), Err(Unmet::Groups));
        let mut other_tenant = access(&[], &["admins"]);
        other_tenant.tenant = vec!["globex"];
        assert_eq!(r.check(&other_tenant), Err(Unmet::Claims));
        let all = requirement(r#"{"groups_all":["admins","ops"]}"#);
        assert_eq!(all.check(&access(&[], &["admins"])), Err(Unmet::Groups));
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
        let h = HeaderReading::default();
        assert_eq!(
            first_match(&rules, "GET", "/healthz", &h).map(|r| &r.action),
            Some(&RuleAction::Allow)
        );
        assert!(matches!(
            first_match(&rules, "GET", "/other", &h).map(|r| &r.action),
            Some(RuleAction::Require(_))
        ));
        assert!(first_match(&[], "GET", "/other", &h).is_none());
    }
}
