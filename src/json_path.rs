//! Reading a configuration document with errors that name the key at fault: the JSON path
//! (`user_pools[0].client_ids`, `.` for the root) of where serde's error occurred.
//!
//! The path is not tracked while deserialising (a tracking deserializer wraps every visitor of
//! every configuration type, and that generic code was a twentieth of the module). Instead,
//! on an error, the text is scanned once up to the byte where the parser stopped, and the
//! path is the one of the last key or value that began there or before. A missing key is
//! reported by serde at the end of its object: that error names the object's path plus the
//! key.

use serde::de::DeserializeOwned;

use crate::error::ConfigError;

/// Deserialises `json` (the whole text: anything after the value is refused) into `T`. An
/// error names the JSON path it occurred at, with `prefix` (a path, or empty) before it.
pub fn from_slice<T: DeserializeOwned>(json: &[u8], prefix: &str) -> Result<T, ConfigError> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    T::deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|e| {
            let offset = last_read(json, e.line(), e.column());
            let problem = e.to_string();
            let missing = problem
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next());
            let found = scan(json, offset);
            let mut segments = match missing {
                Some(_) => found.container,
                // `{"variant": ...}` for an enum: serde names the enum, not the variant.
                None if found.item_is_key && problem.starts_with("unknown variant") => {
                    found.container
                }
                None => found.item,
            };
            segments.extend(missing.map(|key| Segment::Key(key.to_string())));
            ConfigError::new(join(prefix, &segments), problem)
        })
}

/// One step of a path: a member of an object, or an element of an array.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// `prefix` then the segments, as `a.b[0].c`; `.` for the root without a prefix.
fn join(prefix: &str, segments: &[Segment]) -> String {
    let mut out = prefix.to_string();
    for segment in segments {
        match segment {
            Segment::Key(key) if out.is_empty() => out.push_str(key),
            Segment::Key(key) => {
                out.push('.');
                out.push_str(key);
            }
            Segment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// The byte offset serde_json's error at `line` (1-based) and `column` (bytes into that
/// line) is about: the last byte it had read, or the `[` or `{` it had only peeked at (a
/// container where another type belongs is refused before it is read).
fn last_read(json: &[u8], line: usize, column: usize) -> usize {
    let start_of_line = if line <= 1 {
        0
    } else {
        json.iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(line - 2)
            .map_or(json.len(), |(i, _)| i + 1)
    };
    let next = start_of_line.saturating_add(column);
    match json.get(next) {
        Some(b'[' | b'{') => next,
        _ => next.saturating_sub(1),
    }
}

/// What a position in the text is part of.
#[derive(Debug, Default)]
struct Found {
    /// The last key or value that began at or before the position.
    item: Vec<Segment>,
    /// Whether that was a key.
    item_is_key: bool,
    /// The innermost object or array open at the position (its closing bracket included).
    container: Vec<Segment>,
}

/// An object or array being read: its path, and where its members are.
struct Open {
    /// The length of the container's own path.
    depth: usize,
    /// For an array, the index of the next element; `None` for an object.
    next_index: Option<usize>,
    /// In an object: the next string is a key (after `{` or `,`), not a value (after `:`).
    expect_key: bool,
}

/// Scans `json` up to `offset`, tracking the path of each key and value.
fn scan(json: &[u8], offset: usize) -> Found {
    let mut path: Vec<Segment> = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    let mut found = Found::default();
    let mut i = 0;
    while i <= offset {
        let Some(&byte) = json.get(i) else { break };
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b':' => {
                if let Some(o) = open.last_mut() {
                    o.expect_key = false;
                }
                i += 1;
            }
            b',' => {
                if let Some(o) = open.last_mut() {
                    o.next_index = o.next_index.map(|n| n + 1);
                    o.expect_key = true;
                }
                i += 1;
            }
            b'}' | b']' => {
                let Some(o) = open.pop() else { break };
                path.truncate(o.depth);
                // The closing bracket is part of its container.
                found.container = path.clone();
                i += 1;
            }
            _ => {
                // A key, or the start of a value.
                found.item_is_key = false;
                match open.last() {
                    Some(o) if o.next_index.is_none() && o.expect_key => {
                        found.item_is_key = true;
                        path.truncate(o.depth);
                        path.push(Segment::Key(key_text(json, i)));
                    }
                    Some(o) => {
                        if let Some(index) = o.next_index {
                            path.truncate(o.depth);
                            path.push(Segment::Index(index));
                        }
                        // In an object, the value's key is already on the path.
                    }
                    None => {}
                }
                found.item = path.clone();
                found.container = open.last().map_or_else(Vec::new, |o| {
                    path.get(..o.depth)
                        .map_or_else(Vec::new, <[Segment]>::to_vec)
                });
                match byte {
                    b'"' => i = end_of_string(json, i),
                    b'{' | b'[' => {
                        open.push(Open {
                            depth: path.len(),
                            next_index: (byte == b'[').then_some(0),
                            expect_key: true,
                        });
                        found.container = path.clone();
                        i += 1;
                    }
                    _ => {
                        while json.get(i).is_some_and(|b| {
                            !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                        }) {
                            i += 1;
                        }
                    }
                }
            }
        }
    }
    found
}

/// The index just past the string that starts at `start` (the end of the text if unclosed).
fn end_of_string(json: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while let Some(&b) = json.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    json.len()
}

/// The text of the key string starting at `start`, unescaped as serde would read it
/// (a key with an escape that is not valid JSON is shown as written).
fn key_text(json: &[u8], start: usize) -> String {
    let end = end_of_string(json, start);
    let raw = json.get(start..end).unwrap_or_default();
    serde_json::from_slice::<String>(raw)
        .unwrap_or_else(|_| String::from_utf8_lossy(raw.get(1..).unwrap_or_default()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        #[serde(default)]
        items: Vec<Inner>,
        #[serde(default)]
        count: u64,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        id: String,
        #[serde(default)]
        tags: Vec<String>,
    }

    fn path_of(json: &str) -> String {
        match from_slice::<Outer>(json.as_bytes(), "") {
            Ok(v) => panic!("accepted {json}: {v:?}"),
            Err(e) => e.path,
        }
    }

    #[test]
    fn names_the_value_the_key_and_the_missing_key() {
        assert_eq!(path_of(r#"{"name":1}"#), "name");
        assert_eq!(path_of(r#"{"name":"n","count":"3"}"#), "count");
        assert_eq!(path_of(r#"{"name":"n","colour":1}"#), "colour");
        assert_eq!(path_of(r#"{"count":1}"#), "name");
        assert_eq!(
            path_of(r#"{"name":"n","items":[{"id":"a"},{"tags":[]}]}"#),
            "items[1].id"
        );
        assert_eq!(
            path_of(r#"{"name":"n","items":[{"id":"a","tags":["x",2]}]}"#),
            "items[0].tags[1]"
        );
        assert_eq!(path_of(r#"{"name":"n","items":"abc"}"#), "items");
        assert_eq!(
            path_of(r#"{"name":"n","items":[{"id":"a","x":{}}]}"#),
            "items[0].x"
        );
        assert_eq!(path_of("[]"), ".");
    }

    #[test]
    fn pretty_printed_text_is_read_across_lines() {
        let json =
            "{\n  \"name\": \"n\",\n  \"items\": [\n    {\"id\": \"a\"},\n    {\"id\": 7}\n  ]\n}";
        assert_eq!(path_of(json), "items[1].id");
        assert_eq!(
            path_of("{\n  \"name\": \"n\",\n  \"items\": [\n    {\"tags\": []}\n  ]\n}"),
            "items[0].id"
        );
    }

    #[test]
    fn escaped_keys_and_strings_with_brackets_are_read_as_json() {
        assert_eq!(path_of(r#"{"name":"{[\"]}","c\u006funt":"x"}"#), "count");
        assert_eq!(
            path_of(r#"{"name":"a,b:c","items":[{"id":"]","k\"ey":1}]}"#),
            "items[0].k\"ey"
        );
    }

    #[test]
    fn trailing_text_is_refused() {
        assert!(from_slice::<Outer>(br#"{"name":"n"} {"#, "").is_err());
        assert!(from_slice::<Outer>(br#"{"name":"n"}  "#, "").is_ok());
    }

    #[test]
    fn the_prefix_goes_before_the_path() {
        let e = from_slice::<Inner>(br#"{"id":"a","tags":1}"#, "user_pools[0].revocations")
            .unwrap_err();
        assert_eq!(e.path, "user_pools[0].revocations.tags");
        let e = from_slice::<Inner>(br#"{}"#, "p").unwrap_err();
        assert_eq!(e.path, "p.id");
        let e = from_slice::<Inner>(br#"[]"#, "p").unwrap_err();
        assert_eq!(e.path, "p");
    }
}
