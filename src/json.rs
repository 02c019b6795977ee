//! Reading a token's JSON without `serde_json::Value` (README "Behaviour"): the base64url
//! segments, objects whose member names are unique, the typed reading of a member's value
//! ([`Member`]), which also reads, strictly, the members nothing needs ([`skip`]).
//!
//! Strict means as strict as reading the value whole: every string of the object is
//! checked as UTF-8 with valid escapes and every number in range, skipped or not, so a token
//! is refused for exactly the same malformed JSON as when it was read into a `Value` (serde's
//! `IgnoredAny` would skim over what it skips).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

use crate::error::AuthError;

pub fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// base64url (no padding, canonical) → bytes.
pub fn decode_segment(segment: &str) -> Result<Vec<u8>, AuthError> {
    if segment.is_empty() || !segment.bytes().all(is_base64url) {
        return Err(AuthError::Malformed);
    }
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Malformed)
}

/// Reads `bytes` as one JSON object with `visitor` (which reads its members with
/// [`each_member`]): a repeated member name is [`AuthError::DuplicateClaim`], anything else
/// that is not a JSON object alone is [`AuthError::Malformed`].
pub fn read_object<'b, V: Visitor<'b>>(bytes: &'b [u8], visitor: V) -> Result<V::Value, AuthError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let object = de.deserialize_map(visitor).map_err(|e| {
        if e.to_string().starts_with(DUPLICATE) {
            AuthError::DuplicateClaim
        } else {
            AuthError::Malformed
        }
    })?;
    de.end().map_err(|_| AuthError::Malformed)?;
    Ok(object)
}

const DUPLICATE: &str = "duplicate member";

/// Walks an object's members, refusing a repeated name (serde_json would keep the last one,
/// while other parsers — the upstream's — may keep the first): `member` reads each value.
pub fn each_member<'de, A: MapAccess<'de>>(
    mut access: A,
    mut member: impl FnMut(&str, &mut A) -> Result<(), A::Error>,
) -> Result<(), A::Error> {
    let mut seen: BTreeSet<Cow<'de, str>> = BTreeSet::new();
    while let Some(Name(name)) = access.next_key()? {
        if !seen.insert(name.clone()) {
            return Err(A::Error::custom(format_args!("{DUPLICATE} {name:?}")));
        }
        member(&name, &mut access)?;
    }
    Ok(())
}

/// A member name, borrowed from the bytes unless it has escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor).map(Name)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_string()))
    }
}

/// A member value as the token checks read it: its JSON type, and the text of a string or a
/// list of strings (borrowed from the bytes unless escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member<'de> {
    Null,
    True,
    Str(Cow<'de, str>),
    /// A non-negative integer.
    Unsigned(u64),
    /// A list whose every item is a string.
    Strings(Vec<Cow<'de, str>>),
    /// Anything else: `false`, a negative or fractional number, an object, a list holding
    /// something other than strings.
    Other,
}

impl<'de> Member<'de> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Member::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Member::Unsigned(n) => Some(*n),
            _ => None,
        }
    }

    /// A string is one value, a list of strings many, anything else none.
    pub fn strings(&self) -> Vec<&str> {
        match self {
            Member::Str(s) => vec![s],
            Member::Strings(items) => items.iter().map(|s| s.as_ref()).collect(),
            _ => Vec::new(),
        }
    }

    /// The same reading, owning its text.
    pub fn into_owned(self) -> Member<'static> {
        match self {
            Member::Null => Member::Null,
            Member::True => Member::True,
            Member::Str(s) => Member::Str(Cow::Owned(s.into_owned())),
            Member::Unsigned(n) => Member::Unsigned(n),
            Member::Strings(items) => Member::Strings(
                items
                    .into_iter()
                    .map(|s| Cow::Owned(s.into_owned()))
                    .collect(),
            ),
            Member::Other => Member::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Member<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MemberVisitor)
    }
}

struct MemberVisitor;

impl<'de> Visitor<'de> for MemberVisitor {
    type Value = Member<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Member::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(if b { Member::True } else { Member::Other })
    }
    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Member::Unsigned(n))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Member::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Member::Other)
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Member::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Member::Str(Cow::Owned(s.to_string())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        let mut all_strings = true;
        while let Some(item) = seq.next_element::<Item<'de>>()? {
            match item {
                Item::Str(s) if all_strings => items.push(s),
                Item::Str(_) => {}
                Item::NotStr => all_strings = false,
            }
        }
        Ok(if all_strings {
            Member::Strings(items)
        } else {
            Member::Other
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<Name, Member>()?.is_some() {}
        Ok(Member::Other)
    }
}

/// A list item: a string, or anything else (read strictly, kept as nothing).
enum Item<'de> {
    Str(Cow<'de, str>),
    NotStr,
}

impl<'de> Deserialize<'de> for Item<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Member::deserialize(deserializer)? {
            Member::Str(s) => Item::Str(s),
            _ => Item::NotStr,
        })
    }
}

/// Reads a member value nobody needs, as strictly as any other (see the module docs), and
/// drops it.
pub fn skip<'de, A: MapAccess<'de>>(access: &mut A) -> Result<(), A::Error> {
    access.next_value::<Member>().map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(json: &str) -> Member<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn members_are_read_by_type_and_borrow_their_text() {
        assert_eq!(member("null"), Member::Null);
        assert_eq!(member("true"), Member::True);
        assert_eq!(member("false"), Member::Other);
        assert_eq!(member("7"), Member::Unsigned(7));
        for other in ["-1", "1.5", "-0", "1e3", r#"{"a":1}"#, r#"["a",1]"#, "[[]]"] {
            assert_eq!(member(other), Member::Other, "{other}");
        }
        assert!(matches!(
            member(r#""plain""#),
            Member::Str(Cow::Borrowed("plain"))
        ));
        assert_eq!(member(r#""a\nb""#).as_str(), Some("a\nb"));
        assert_eq!(member(r#"["a","b"]"#).strings(), ["a", "b"]);
        assert_eq!(member("[]"), Member::Strings(Vec::new()));
        assert_eq!(member(r#""a""#).strings(), ["a"]);
        assert!(member("5").strings().is_empty());
    }

    /// Skipped or read, a member is refused for what a `serde_json::Value` refuses.
    #[test]
    fn skipping_is_as_strict_as_reading() {
        let bad = [
            "1e400",
            "-1e400",
            r#""\ud800""#,
            r#""\x""#,
            "[1,]",
            r#"{"a":}"#,
            "tru",
            "01",
        ];
        for json in bad {
            assert!(
                serde_json::from_str::<serde_json::Value>(json).is_err(),
                "{json}"
            );
            assert!(serde_json::from_str::<Member>(json).is_err(), "{json}");
            let nested = format!(r#"{{"a":[{{"b":{json}}}]}}"#);
            assert!(serde_json::from_str::<Member>(&nested).is_err(), "{nested}");
        }
        let invalid_utf8 = b"\"\xff\"";
        assert!(serde_json::from_slice::<serde_json::Value>(invalid_utf8).is_err());
        assert!(serde_json::from_slice::<Member>(invalid_utf8).is_err());
        assert!(serde_json::from_slice::<Member>(b"{\"\xff\":1}").is_err());
        assert!(serde_json::from_slice::<serde::de::IgnoredAny>(invalid_utf8).is_ok());
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(serde_json::from_str::<Member>(&deep).is_err());
    }
}
