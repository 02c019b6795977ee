//! How a request path may be read by Envoy's router and by the server behind it.
//!
//! Servers disagree on what a path names: Envoy forwards `/admin/../healthz` as it is unless
//! `normalize_path` is on; Tomcat cuts `;jsessionid=1` and reads `/admin/..;/x` as `/x`;
//! Express keeps `;` and ignores one trailing slash; Spring may match `/admin.json` to
//! `/admin`; some servers decode `%2F` into a slash, some decode twice (`%252e`), some resolve
//! dot segments before decoding and again after; IIS decodes `%u0061`, folds case and drops
//! trailing dots and spaces; Java and .NET fold `ı`, `ſ` and the Kelvin sign into ASCII
//! letters. A rule decided on one reading while the upstream serves another is an
//! authorization bypass.
//!
//! So the filter never picks one reading: [`readings`] lists every distinct path that any
//! sequence of those behaviours ([`Step`]) yields, the rules are matched on each, and the
//! request must satisfy the strictest outcome (see `rules::route`). A path with no special
//! characters has exactly one reading, so the common case costs one copy of the path.
//!
//! The work is bounded whatever the path (README "Paths"): at most [`MAX_DECODES`] rounds of
//! decoding on any reading (a path that still decodes to something new after them is
//! refused), at most [`MAX_READINGS`] readings of at most [`MAX_READING_BYTES`] bytes in all,
//! and each reading goes through each step once. Every step is one pass over its input, so
//! the whole pass reads at most `2 × STEPS.len() × MAX_READING_BYTES` bytes ([`Work`]).

/// More distinct readings than this, or more bytes in all of them, and the path is refused
/// as unreadable (400): a bound on the work an attacker can ask for with one request. A path
/// (without its query) longer than [`MAX_READING_BYTES`] is refused for the same reason; the
/// servers behind refuse far shorter request lines (nginx, Apache and Tomcat at 8 KiB, Node.js
/// and IIS at 16 KiB), so a genuine path never comes near.
pub const MAX_READINGS: usize = 64;
pub const MAX_READING_BYTES: usize = 32 * 1024;
/// Decoding rounds (`%XX` or `%uXXXX`) any reading may take. Real clients encode once and
/// proxies may add a second round; a path that still decodes to something new after this many
/// is refused (400) rather than decoded on and on.
pub const MAX_DECODES: u8 = 4;

/// The path cannot be read within the bounds above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// More than [`MAX_READINGS`] readings, or more than [`MAX_READING_BYTES`] in all.
    TooManyReadings,
    /// A reading still decodes to a new one after [`MAX_DECODES`] rounds.
    TooManyDecodes,
}

impl Unreadable {
    /// For the debug log's `detail=`.
    pub fn name(self) -> &'static str {
        match self {
            Unreadable::TooManyReadings => "too_many_readings",
            Unreadable::TooManyDecodes => "too_many_decodes",
        }
    }
}

/// One behaviour of some server or proxy on the way, as a rewrite of one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// IIS's `%uXXXX` escapes (`%u0061` → `a`).
    DecodePercentU,
    /// Only unreserved characters (`%61` → `a`, `%2E` → `.`), as Envoy's `normalize_path` does.
    DecodeUnreserved,
    /// Every escape, `%2F` and `%25` included, as most servers' URL decoders do.
    DecodeAll,
    /// `\` read as `/` (IIS, some Java and Node servers).
    Backslash,
    /// Path parameters cut from every segment (`/admin;jsessionid=1/x` → `/admin/x`), as
    /// servlet containers do before routing.
    CutParameters,
    /// Case folded: ASCII, and the four non-ASCII letters whose simple case mapping is an
    /// ASCII one (`İ` `ı` → `i`, `ſ` → `s`, Kelvin `K` → `k`), as case-insensitive routing in
    /// Java, .NET and IIS compares them.
    FoldCase,
    /// Trailing dots and spaces dropped from each segment (`/admin.` and `/admin%20` are
    /// `/admin` on Windows).
    TrimNames,
    /// Dot segments resolved (RFC 3986 §5.2.4; never above the root).
    ResolveDots,
    /// The same after empty segments are dropped (`//` read as `/`, Envoy's `merge_slashes`).
    ResolveDotsMerged,
    /// A decoded `?`, `#` or NUL ends the path, as the raw `?` and `#` do.
    CutAtDelimiter,
    /// One trailing slash dropped (Express's and Spring's default routing).
    DropTrailingSlash,
    /// The last segment's extension dropped (`/admin.json` → `/admin`, Spring's suffix match).
    DropSuffix,
}

/// Every step, in the order each reading goes through them.
pub const STEPS: [Step; 12] = [
    Step::DecodePercentU,
    Step::DecodeUnreserved,
    Step::DecodeAll,
    Step::Backslash,
    Step::CutParameters,
    Step::FoldCase,
    Step::TrimNames,
    Step::ResolveDots,
    Step::ResolveDotsMerged,
    Step::CutAtDelimiter,
    Step::DropTrailingSlash,
    Step::DropSuffix,
];

impl Step {
    fn decodes(self) -> bool {
        matches!(
            self,
            Step::DecodePercentU | Step::DecodeUnreserved | Step::DecodeAll
        )
    }

    /// What the step makes of `path`, or `None` when it changes nothing.
    pub fn apply(self, path: &str) -> Option<String> {
        let out = match self {
            Step::DecodePercentU => {
                (path.contains("%u") || path.contains("%U")).then(|| decode_percent_u(path))
            }
            Step::DecodeUnreserved => path
                .contains('%')
                .then(|| decode_once(path, Decode::Unreserved)),
            Step::DecodeAll => path.contains('%').then(|| decode_once(path, Decode::All)),
            Step::Backslash => path.contains('\\').then(|| path.replace('\\', "/")),
            Step::CutParameters => path.contains(';').then(|| cut_parameters(path)),
            Step::FoldCase => needs_folding(path).then(|| fold_case(path)),
            Step::TrimNames => path
                .split('/')
                .any(|s| s.ends_with([' ', '.']))
                .then(|| trim_names(path)),
            Step::ResolveDots => has_dot_segment(path).then(|| resolve_dots(path, false)),
            Step::ResolveDotsMerged => {
                (has_dot_segment(path) || path.contains("//")).then(|| resolve_dots(path, true))
            }
            Step::CutAtDelimiter => path
                .find(['?', '#', '\0'])
                .and_then(|end| path.get(..end))
                .map(str::to_string),
            Step::DropTrailingSlash => path
                .strip_suffix('/')
                .filter(|p| !p.is_empty())
                .map(str::to_string),
            Step::DropSuffix => {
                let last = path.rfind('/').map_or(0, |i| i + 1);
                path.get(last..)
                    .filter(|segment| !segment.bytes().all(|b| b == b'.'))
                    .and_then(|segment| segment.get(1..)?.find('.'))
                    .and_then(|dot| path.get(..last + 1 + dot))
                    .map(str::to_string)
            }
        };
        out.filter(|o| o != path)
    }
}

/// The bytes a [`readings`] pass read: its steps' inputs and the fingerprints of their
/// outputs (for the tests that hold it to the stated bound).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    pub bytes: usize,
}

/// The bound on [`Work::bytes`] for any path: each kept reading (at most
/// [`MAX_READING_BYTES`] in all) is read once by each step, and each output once more to
/// fingerprint it.
pub const WORK_BOUND: usize = 2 * STEPS.len() * MAX_READING_BYTES;

/// Every distinct reading of `raw` (a `:path`, query and fragment included), the request's
/// own spelling first. Each reading is a path without query or fragment.
pub fn readings(raw: &str) -> Result<Vec<String>, Unreadable> {
    readings_counted(raw, &mut Work::default())
}

/// [`readings`], adding the bytes it read to `work`.
pub fn readings_counted(raw: &str, work: &mut Work) -> Result<Vec<String>, Unreadable> {
    let path = without_query(raw);
    if path.len() > MAX_READING_BYTES {
        return Err(Unreadable::TooManyReadings);
    }
    if is_plain(path) {
        // The common case, in one pass: no step changes anything.
        return Ok(vec![path.to_string()]);
    }
    let mut set = Readings::default();
    set.add(path.to_string(), 0)?;
    // Each reading, in the order found, goes through every step once; what a step makes of
    // it is a new reading that goes through them in turn, until no step finds anything new.
    let mut next = 0;
    while next < set.paths.len() {
        // Taken out while its steps run (no step yields its input, so the set need not hold
        // it to tell its outputs apart), and put back after.
        let current = set
            .paths
            .get_mut(next)
            .map(std::mem::take)
            .unwrap_or_default();
        let decodes = set.decodes.get(next).copied().unwrap_or_default();
        let outcome = set.step_all(&current, decodes, work);
        if let Some(slot) = set.paths.get_mut(next) {
            *slot = current;
        }
        outcome?;
        next += 1;
    }
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

#[derive(Default)]
struct Readings {
    paths: Vec<String>,
    /// The decoding rounds that led to each reading.
    decodes: Vec<u8>,
    /// Each reading's length and FNV-1a hash: a new reading is compared byte for byte only
    /// with those it may equal, so that telling it apart costs one pass, not one per reading.
    prints: Vec<(usize, u64)>,
    bytes: usize,
}

impl Readings {
    /// Adds `path` if it is new (`Ok(true)`).
    fn add(&mut self, path: String, decodes: u8) -> Result<bool, Unreadable> {
        let print = (path.len(), fnv1a(&path));
        let seen = self
            .prints
            .iter()
            .zip(&self.paths)
            .any(|(p, known)| *p == print && *known == path);
        if seen {
            return Ok(false);
        }
        self.bytes += path.len();
        if self.paths.len() >= MAX_READINGS || self.bytes > MAX_READING_BYTES {
            return Err(Unreadable::TooManyReadings);
        }
        self.paths.push(path);
        self.decodes.push(decodes);
        self.prints.push(print);
        Ok(true)
    }
}

impl Readings {
    /// Runs every step on `current` (reached in `decodes` rounds) and adds what they make
    /// of it, refusing as soon as a bound is passed.
    fn step_all(&mut self, current: &str, decodes: u8, work: &mut Work) -> Result<(), Unreadable> {
        for step in STEPS {
            work.bytes += current.len();
            let Some(reading) = step.apply(current) else {
                continue;
            };
            work.bytes += reading.len();
            let decodes = decodes + u8::from(step.decodes());
            if self.add(reading, decodes)? && decodes > MAX_DECODES {
                return Err(Unreadable::TooManyDecodes);
            }
        }
        Ok(())
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn without_query(raw: &str) -> &str {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    raw.get(..end).unwrap_or(raw)
}

/// No step changes `path`: lower-case ASCII letters, digits and the characters no step
/// looks at (no `%`, `\\`, `;`, space, `.`, NUL, upper case or non-ASCII), no `//` and no
/// trailing slash.
fn is_plain(path: &str) -> bool {
    path.bytes().all(|b| {
        b.is_ascii_graphic() && !b.is_ascii_uppercase() && !matches!(b, b'%' | b'\\' | b';' | b'.')
    }) && !path.contains("//")
        && (path.len() <= 1 || !path.ends_with('/'))
}

/// A `.` or `..` segment.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
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

/// Whether [`fold_case`] changes anything.
fn needs_folding(path: &str) -> bool {
    path.bytes().any(|b| b.is_ascii_uppercase())
        || (!path.is_ascii() && path.chars().any(|c| folds_to_ascii(c).is_some()))
}

/// The non-ASCII letters whose simple case mapping (Unicode's `UnicodeData.txt`) is an ASCII
/// letter; no other letter folds into a rule path, which is ASCII.
fn folds_to_ascii(c: char) -> Option<char> {
    match c {
        '\u{130}' | '\u{131}' => Some('i'),
        '\u{17F}' => Some('s'),
        '\u{212A}' => Some('k'),
        _ => None,
    }
}

fn fold_case(path: &str) -> String {
    path.chars()
        .map(|c| folds_to_ascii(c).unwrap_or(c.to_ascii_lowercase()))
        .collect()
}

/// Trailing dots and spaces dropped from each segment; `.` and `..` stay dot segments.
fn trim_names(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            let trimmed = segment.trim_end_matches(' ');
            if trimmed.bytes().all(|b| b == b'.') {
                trimmed
            } else {
                trimmed.trim_end_matches(['.', ' '])
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Dot segments resolved (RFC 3986 §5.2.4; never above the root), and with `merge` empty
/// segments dropped first.
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
    fn a_path_of_exactly_the_byte_bound_is_read() {
        let at = format!("/{}", "a".repeat(MAX_READING_BYTES - 1));
        assert_eq!(readings(&at), Ok(vec![at.clone()]));
        let over = format!("{at}a");
        assert_eq!(readings(&over), Err(Unreadable::TooManyReadings));
        assert_eq!(MAX_READING_BYTES, 32768);
    }

    #[test]
    fn only_decoding_steps_count_as_decodes() {
        // Five steps in a row, none of them decoding: a reading, not too many decodes.
        assert!(has("/A\\B;p/C./D/", "/a/b/c/d"));
    }

    #[test]
    fn a_segment_of_dots_has_no_suffix() {
        assert_eq!(Step::DropSuffix.apply("/x/.."), None);
        assert_eq!(Step::DropSuffix.apply("/x/..."), None);
        assert_eq!(
            Step::DropSuffix.apply("/x/a.json"),
            Some("/x/a".to_string())
        );
    }

    #[test]
    fn refusals_have_names_for_the_log() {
        assert_eq!(Unreadable::TooManyReadings.name(), "too_many_readings");
        assert_eq!(Unreadable::TooManyDecodes.name(), "too_many_decodes");
    }

    #[test]
    fn no_step_changes_a_plain_path() {
        for plain in [
            "/",
            "/api/users/42",
            "/a-b_c~d/e:f@g!h$i&j'k(l)m*n+o,p=q",
            "/x/y",
        ] {
            assert!(is_plain(plain), "{plain}");
            for step in STEPS {
                assert_eq!(step.apply(plain), None, "{step:?} {plain}");
            }
        }
        for messy in [
            "/A", "/a/", "/a.b", "/a//b", "/a%41", "/a;b", "/a b", "/\u{131}",
        ] {
            assert!(!is_plain(messy), "{messy}");
        }
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
        assert_eq!(readings(&raw), Err(Unreadable::TooManyReadings));
        let long = format!("/{}%2e%2e/Admin", "a".repeat(200_000));
        assert_eq!(readings(&long), Err(Unreadable::TooManyReadings));
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
    fn triple_encoding_is_decoded_round_by_round() {
        assert!(has("/%%36%31dmin", "/admin"));
        assert!(has("/%25%36%31dmin", "/admin"));
    }

    #[test]
    fn decoding_stops_after_the_bound_and_refuses_what_still_decodes() {
        // One level of `%25` per round: a server decoding on and on would reach `/admin`.
        assert!(has("/%25252561dmin", "/admin"));
        assert_eq!(
            readings("/%2525252561dmin"),
            Err(Unreadable::TooManyDecodes)
        );
        // The security review's reproduction (about 60 KB): refused after a few rounds (by
        // the byte bound before the decode bound), not decoded 30,000 times.
        let deep = format!("/%25{}61", "25".repeat(30_000));
        assert!(readings(&deep).is_err());
        let deep_u = format!("/%u0025{}61", "u0025".repeat(12_000));
        assert!(readings(&deep_u).is_err());
        let short_u = format!("/%u0025{}61dmin", "u0025".repeat(4));
        assert_eq!(readings(&short_u), Err(Unreadable::TooManyDecodes));
    }

    /// The shapes of `tests/worst_paths.txt` (each step, or all of them together, made to work
    /// hardest) at about `size` bytes: at 60 KiB (Envoy's default header limit, refused at
    /// once as too long), and just under the byte bound and half of it (the longest paths
    /// that are read at all).
    fn worst_paths(size: usize) -> Vec<(&'static str, String)> {
        include_str!("../tests/worst_paths.txt")
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                let [name, prefix, unit, suffix] = fields[..] else {
                    panic!("tests/worst_paths.txt: not four fields: {line:?}");
                };
                let path = format!("{prefix}{}{suffix}", unit.repeat(size / unit.len()));
                (name, path)
            })
            .collect()
    }

    #[test]
    fn the_worst_paths_cost_at_most_the_stated_work() {
        let sizes = [
            60 * 1024,
            MAX_READING_BYTES - 16,
            MAX_READING_BYTES / 2 - 16,
        ];
        for (name, raw) in sizes.into_iter().flat_map(worst_paths) {
            let mut work = Work::default();
            let started = std::time::Instant::now();
            let result = readings_counted(&raw, &mut work);
            // Printed, never asserted: the bound is on the bytes read, not the time.
            println!(
                "{name}: {} bytes, {:?}, {} bytes read (bound {WORK_BOUND}), {:?}",
                raw.len(),
                result.as_ref().map(Vec::len),
                work.bytes,
                started.elapsed()
            );
            assert!(
                work.bytes <= WORK_BOUND,
                "{name}: {} bytes read",
                work.bytes
            );
        }
    }

    #[test]
    fn steps_are_chained_in_every_order() {
        // Resolve the raw path (a hop that normalises but keeps `%2F`), then decode and
        // resolve again (nginx-style): `/admin/`, which no fixed order of steps reached.
        let raw = "/public/..%2Fadmin/..%2F..%2Fpublic%2Fz/..";
        assert!(has(raw, "/public/..%2Fadmin/"));
        assert!(has(raw, "/admin/"));
        // Decode, cut parameters, then decode again.
        assert!(has("/x/..%3B/%2561dmin", "/admin"));
    }

    #[test]
    fn a_trailing_slash_and_a_suffix_are_read_dropped() {
        assert!(has("/admin/", "/admin"));
        assert!(has("/users/42/", "/users/42"));
        assert!(has("/admin.json", "/admin"));
        assert!(has("/users/42.tar.gz", "/users/42"));
        assert!(!has("/a/.env", "/a/"));
        assert_eq!(all("/"), ["/"]);
    }

    #[test]
    fn decoded_delimiters_end_the_path() {
        assert!(has("/admin%3Fx", "/admin"));
        assert!(has("/admin%23x", "/admin"));
        assert!(has("/admin%00", "/admin"));
        assert!(has("/admin%00.json", "/admin"));
    }

    #[test]
    fn letters_that_fold_into_ascii_are_read_folded() {
        assert!(has("/adm%C4%B1n", "/admin"));
        assert!(has("/ADM%C4%B0N", "/admin"));
        assert!(has("/%C5%BFecret", "/secret"));
        assert!(has("/%E2%84%AAeys", "/keys"));
        assert!(has("/adm\u{131}n", "/admin"));
        // Other letters are left as they are: no rule names them.
        assert_eq!(all("/caf\u{e9}"), ["/caf\u{e9}"]);
    }

    #[test]
    fn the_fingerprint_is_fnv1a() {
        // FNV-1a 64-bit reference values (Fowler, Noll and Vo's test suite).
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn a_matching_fingerprint_alone_is_not_a_duplicate() {
        let mut set = Readings::default();
        assert_eq!(set.add("/a".to_string(), 0), Ok(true));
        assert_eq!(set.add("/a".to_string(), 0), Ok(false));
        // A collision: another reading with the same length and hash is still new.
        set.prints[0] = (2, fnv1a("/b"));
        assert_eq!(set.add("/b".to_string(), 0), Ok(true));
        assert_eq!(set.paths, ["/a", "/b"]);
    }

    #[test]
    fn readings_of_exactly_the_byte_bound_in_all_are_kept() {
        let half = |c: char| format!("/{}", c.to_string().repeat(MAX_READING_BYTES / 2 - 1));
        let mut set = Readings::default();
        assert_eq!(set.add(half('a'), 0), Ok(true));
        assert_eq!(set.add(half('b'), 0), Ok(true));
        assert_eq!(set.bytes, MAX_READING_BYTES);
        assert_eq!(
            set.add("/".to_string(), 0),
            Err(Unreadable::TooManyReadings)
        );
        // And exactly the count bound.
        let mut set = Readings::default();
        for i in 0..MAX_READINGS {
            assert_eq!(set.add(format!("/{i}"), 0), Ok(true));
        }
        assert_eq!(
            set.add("/new".to_string(), 0),
            Err(Unreadable::TooManyReadings)
        );
    }

    #[test]
    fn work_counts_every_steps_input_and_output() {
        // "/A" and then "/a" go through the 12 steps (2 bytes each); one output, "/a".
        let mut work = Work::default();
        assert_eq!(
            readings_counted("/A", &mut work),
            Ok(vec!["/A".into(), "/a".into()])
        );
        assert_eq!(work.bytes, 2 * 12 + 2 + 2 * 12);
    }

    #[test]
    fn dot_segments_are_whole_segments() {
        for dots in ["/.", "/..", "/a/./b", "/a/../b", "/a/.."] {
            assert!(has_dot_segment(dots), "{dots}");
        }
        for names in ["/a", "/.a", "/a.", "/..a/b", "/a/b..", "/..."] {
            assert!(!has_dot_segment(names), "{names}");
        }
    }

    #[test]
    fn one_decoding_round_per_call() {
        assert_eq!(decode_once("/%2561%41", Decode::All), "/%61A");
        assert_eq!(decode_once("/%2F%2e%41%7e", Decode::Unreserved), "/%2F.A~");
        assert_eq!(decode_once("/%2F%3f", Decode::All), "//?");
        // Incomplete or non-hex escapes stay as they are.
        assert_eq!(decode_once("/%zz%4%", Decode::All), "/%zz%4%");
        assert_eq!(decode_once("/a%4", Decode::All), "/a%4");
    }

    #[test]
    fn hex_digits_in_both_cases() {
        let digits: Vec<Option<u8>> = b"09afAFgG/:@`".iter().map(|c| hex(*c)).collect();
        assert_eq!(
            digits,
            [
                Some(0),
                Some(9),
                Some(10),
                Some(15),
                Some(10),
                Some(15),
                None,
                None,
                None,
                None,
                None,
                None
            ]
        );
    }

    #[test]
    fn folding_is_needed_for_upper_case_and_the_four_letters_only() {
        for folds in [
            "/A",
            "/aB",
            "/\u{130}",
            "/\u{131}",
            "/\u{17F}",
            "/\u{212A}",
            "/caf\u{e9}X",
        ] {
            assert!(needs_folding(folds), "{folds}");
        }
        for stays in ["/a", "/caf\u{e9}", "/\u{c9}", "/1-_~"] {
            assert!(!needs_folding(stays), "{stays}");
        }
    }

    #[test]
    fn names_lose_trailing_dots_and_spaces_but_dot_segments_stay() {
        assert_eq!(trim_names("/admin./x "), "/admin/x");
        assert_eq!(trim_names("/a. .. /b"), "/a/b");
        assert_eq!(trim_names("/a/../b/./c"), "/a/../b/./c");
        assert_eq!(trim_names("/.. /x/. "), "/../x/.");
        assert_eq!(trim_names("/.a./b"), "/.a/b");
    }

    #[test]
    fn resolving_never_climbs_above_the_root() {
        assert_eq!(resolve_dots("/../../x", true), "/x");
        assert_eq!(resolve_dots("/..", false), "/");
    }
}
