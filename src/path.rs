//! How a request path may be read by Envoy's router and by the server behind it.
//!
//! Servers disagree on what a path names: Envoy forwards `/admin/../healthz` as it is unless
//! `normalize_path` is on; Tomcat cuts `;jsessionid=1` and reads `/admin/..;/x` as `/x`;
//! Express keeps `;`; some servers decode `%2F` into a slash, some decode twice (`%252e`),
//! IIS decodes `%u0061`, folds case and drops trailing dots and spaces. A rule decided on one
//! reading while the upstream serves another is an authorization bypass.
//!
//! So the filter never picks one reading: [`readings`] lists every distinct path a plausible
//! combination of those behaviours yields, the rules are matched on each, and the request
//! must satisfy the strictest outcome (see `rules::route`). A path with no special characters
//! has exactly one reading (two when it has upper-case letters), so the common case costs one
//! copy of the path.

/// More distinct readings than this, or more bytes in all of them, and the path is refused
/// as unreadable (400): a bound on the work an attacker can ask for with one request.
pub const MAX_READINGS: usize = 64;
pub const MAX_READING_BYTES: usize = 256 * 1024;

/// The path cannot be read within [`MAX_READINGS`] / [`MAX_READING_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyReadings;

/// Every distinct reading of `raw` (a `:path`, query and fragment included), the request's
/// own spelling first. Each reading is a path without query or fragment.
pub fn readings(raw: &str) -> Result<Vec<String>, TooManyReadings> {
    let path = without_query(raw);
    let mut set = Readings {
        paths: vec![path.to_string()],
        bytes: path.len(),
    };
    let plain = !path
        .bytes()
        .any(|b| matches!(b, b'%' | b'\\' | b';' | b' '));
    if plain && !has_structure(path) {
        // The common case: nothing to decode, cut or resolve; only the letter case may vary.
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            set.add(path.to_ascii_lowercase())?;
        }
        return Ok(set.paths);
    }
    // Each stage keeps every reading it got and adds what its behaviour makes of each one.
    if path.contains("%u") || path.contains("%U") {
        set.stage(|p| Some(decode_percent_u(p)))?;
    }
    if path.contains('%') {
        set.stage_many(|p| {
            [
                decode_once(p, Decode::Unreserved),
                decode_once(p, Decode::All),
                decode_fixpoint(p),
            ]
        })?;
    }
    set.stage(|p| p.contains('\\').then(|| p.replace('\\', "/")))?;
    set.stage(|p| p.contains(';').then(|| cut_parameters(p)))?;
    set.stage(|p| Some(windows_name(p)))?;
    set.stage_many(|p| [resolve_dots(p, false), resolve_dots(p, true)])?;
    Ok(set.paths)
}

/// Why `path` cannot be a rule's path, if it cannot. Rules are written in the plain form
/// that every server reads alike: absolute, printable ASCII, no query or fragment, nothing
/// encoded (`%`), no `\\` or `;`, no `//`, no `.` or `..` segment. Requests spelled otherwise
/// are matched through their [`readings`].
pub fn rule_path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        Some("must start with '/'")
    } else if !path.bytes().all(|b| b.is_ascii_graphic()) {
        Some("must be printable ASCII without spaces")
    } else if path.contains(['?', '#']) {
        Some("must not have a query or fragment")
    } else if path.contains(['%', '\\', ';']) {
        Some("must not hold '%', '\\\\' or ';' (write the decoded path; requests are matched in every spelling)")
    } else if path.contains("//") || path.split('/').any(|s| s == "." || s == "..") {
        Some("must not hold '//' or dot segments")
    } else {
        None
    }
}

struct Readings {
    paths: Vec<String>,
    bytes: usize,
}

impl Readings {
    fn add(&mut self, path: String) -> Result<(), TooManyReadings> {
        if self.paths.contains(&path) {
            return Ok(());
        }
        self.bytes += path.len();
        if self.paths.len() >= MAX_READINGS || self.bytes > MAX_READING_BYTES {
            return Err(TooManyReadings);
        }
        self.paths.push(path);
        Ok(())
    }

    fn stage(&mut self, read: impl Fn(&str) -> Option<String>) -> Result<(), TooManyReadings> {
        self.stage_many(|p| [read(p).unwrap_or_default()])
    }

    fn stage_many<const N: usize>(
        &mut self,
        read: impl Fn(&str) -> [String; N],
    ) -> Result<(), TooManyReadings> {
        let before = self.paths.len();
        for i in 0..before {
            let Some(path) = self.paths.get(i) else {
                break;
            };
            for reading in read(path) {
                // An empty result means "this behaviour changes nothing here".
                if !reading.is_empty() {
                    self.add(reading)?;
                }
            }
        }
        Ok(())
    }
}

fn without_query(raw: &str) -> &str {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    raw.get(..end).unwrap_or(raw)
}

/// `//`, a `.` or `..` segment, or a segment ending in `.` (Windows drops it).
fn has_structure(path: &str) -> bool {
    path.contains("//") || path.split('/').any(|s| s.ends_with('.'))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Decode {
    /// Only unreserved characters (`%61` → `a`, `%2E` → `.`), as Envoy's `normalize_path` does.
    Unreserved,
    /// Every escape, `%2F` and `%25` included, as most servers' URL decoders do.
    All,
}

/// One round of percent-decoding. Decoded bytes that are not UTF-8 become U+FFFD, which no
/// rule names.
fn decode_once(path: &str, which: Decode) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|c| hex(*c)),
                bytes.get(i + 2).and_then(|c| hex(*c)),
            ) {
                let c = h * 16 + l;
                if which == Decode::All || c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                    out.push(c);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decoded again and again until nothing changes: a server (or a proxy and a server) that
/// decodes more than once. Each round shortens the path, so this ends.
fn decode_fixpoint(path: &str) -> String {
    let mut current = decode_once(path, Decode::All);
    loop {
        let next = decode_once(&current, Decode::All);
        if next == current {
            return current;
        }
        current = next;
    }
}

/// IIS's `%uXXXX` escapes (`%u0061` → `a`).
fn decode_percent_u(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let digits = from
            .get(2..6)
            .filter(|_| from.get(1..2).is_some_and(|u| u.eq_ignore_ascii_case("u")));
        let decoded = digits
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .and_then(char::from_u32);
        match decoded {
            Some(c) => {
                out.push(c);
                rest = from.get(6..).unwrap_or_default();
            }
            None => {
                out.push('%');
                rest = from.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

/// Path parameters cut from every segment (`/admin;jsessionid=1/x` → `/admin/x`,
/// `/admin/..;/x` → `/admin/../x`), as servlet containers do before routing.
fn cut_parameters(path: &str) -> String {
    path.split('/')
        .map(|segment| segment.split(';').next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("/")
}

/// The name a Windows server (IIS) resolves: case folded, and trailing dots and spaces
/// dropped from each segment (`/Admin.` and `/admin%20` are `/admin`).
fn windows_name(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            let trimmed = segment.trim_end_matches(' ');
            // `.` and `..` stay dot segments; `admin.` loses its dots.
            if trimmed.bytes().all(|b| b == b'.') {
                trimmed.to_string()
            } else {
                trimmed.trim_end_matches(['.', ' ']).to_ascii_lowercase()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Dot segments resolved (RFC 3986 §5.2.4; never above the root), and with `merge` empty
/// segments dropped first (`//` read as `/`, Envoy's `merge_slashes`).
fn resolve_dots(path: &str, merge: bool) -> String {
    let Some(rest) = path.strip_prefix('/') else {
        return path.to_string();
    };
    let mut out: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in rest.split('/') {
        trailing_slash = false;
        match segment {
            "." => trailing_slash = true,
            ".." => {
                out.pop();
                trailing_slash = true;
            }
            "" if merge => trailing_slash = true,
            s => out.push(s),
        }
    }
    let mut resolved = String::with_capacity(path.len());
    for segment in &out {
        resolved.push('/');
        resolved.push_str(segment);
    }
    if resolved.is_empty() || (trailing_slash && !resolved.ends_with('/')) {
        resolved.push('/');
    }
    resolved
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

    fn all(raw: &str) -> Vec<String> {
        readings(raw).unwrap()
    }

    fn has(raw: &str, reading: &str) -> bool {
        all(raw).iter().any(|r| r == reading)
    }

    #[test]
    fn plain_path_has_one_reading_and_no_query() {
        assert_eq!(all("/api/users/42?x=/admin#f"), ["/api/users/42"]);
        assert_eq!(all("/"), ["/"]);
    }

    #[test]
    fn upper_case_adds_the_case_folded_reading() {
        assert_eq!(all("/Admin/X"), ["/Admin/X", "/admin/x"]);
    }

    #[test]
    fn dot_segments_keep_the_literal_reading_beside_the_resolved_one() {
        let r = all("/admin/../healthz");
        assert_eq!(r.first().map(String::as_str), Some("/admin/../healthz"));
        assert!(r.iter().any(|p| p == "/healthz"));
    }

    #[test]
    fn repeated_slashes_are_read_merged_and_not() {
        assert!(has("//admin", "//admin"));
        assert!(has("//admin", "/admin"));
        // Resolving without merging differs from merging first.
        assert!(has("/a//../b", "/a/b"));
        assert!(has("/a//../b", "/b"));
    }

    #[test]
    fn path_parameters_are_read_cut_and_kept() {
        assert!(has("/admin/..;/x", "/admin/..;/x"));
        assert!(has("/admin/..;/x", "/x"));
        assert!(has("/admin;jsessionid=1", "/admin"));
    }

    #[test]
    fn encoded_slashes_are_read_decoded_and_not() {
        let raw = "/admin/42%2F..%2F..%2Fx";
        assert!(has(raw, raw));
        assert!(has(raw, "/x"));
        assert!(has("/public%2F..%2Fadmin", "/admin"));
        assert!(has("/public\\..\\admin", "/admin"));
        assert!(has("/public%5C..%5Cadmin", "/admin"));
    }

    #[test]
    fn double_encoding_is_read_decoded_once_and_twice() {
        assert!(has("/public/%252e%252e/admin", "/public/%2e%2e/admin"));
        assert!(has("/public/%252e%252e/admin", "/admin"));
        assert!(has("/%2561dmin", "/%61dmin"));
        assert!(has("/%2561dmin", "/admin"));
    }

    #[test]
    fn unreserved_only_decoding_keeps_encoded_slashes() {
        assert!(has("/%61dmin%2Fx", "/admin%2Fx"));
    }

    #[test]
    fn iis_readings_decode_percent_u_fold_case_and_trim_dots_and_spaces() {
        assert!(has("/%u0061dmin", "/admin"));
        assert!(has("/ADMIN./x", "/admin/x"));
        assert!(has("/admin%20/x", "/admin/x"));
        assert!(has("/admin.", "/admin"));
        // Dot segments are not names: `..` keeps its meaning.
        assert!(has("/admin/..", "/"));
    }

    #[test]
    fn pathological_paths_are_bounded() {
        let raw = "/A%2561;x/%u0062.\\%2e%2e//C;y/%252F..%5C.;z/D ./".repeat(4);
        assert_eq!(readings(&raw), Err(TooManyReadings));
        let long = format!("/{}%2e%2e/Admin", "a".repeat(200_000));
        assert_eq!(readings(&long), Err(TooManyReadings));
    }

    #[test]
    fn every_reading_of_an_ordinary_messy_path_is_listed_once() {
        let r = all("/Public/../Admin%2Fx");
        let mut unique = r.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), r.len());
        assert!(r.len() <= MAX_READINGS);
        assert!(has("/Public/../Admin%2Fx", "/admin/x"));
        assert!(has("/Public/../Admin%2Fx", "/Public/../Admin%2Fx"));
    }

    #[test]
    fn rule_paths_must_be_plain() {
        for ok in [
            "/",
            "/admin",
            "/a/b/",
            "/users/{id}",
            "/files/**",
            "/v1:batch",
            "/a.json",
        ] {
            assert_eq!(rule_path_problem(ok), None, "{ok}");
        }
        for bad in [
            "admin", "/a b", "/a?x", "/a#x", "/%61", "/a\\b", "/a;b", "//a", "/a/./b", "/a/..",
        ] {
            assert!(rule_path_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn triple_encoding_reaches_the_fixpoint() {
        assert!(has("/%%36%31dmin", "/admin"));
        assert!(has("/%25%36%31dmin", "/admin"));
    }

    #[test]
    fn resolving_never_climbs_above_the_root() {
        assert_eq!(resolve_dots("/../../x", true), "/x");
        assert_eq!(resolve_dots("/..", false), "/");
    }
}
