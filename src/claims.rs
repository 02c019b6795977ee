//! A token's payload (README "Behaviour"): read once, straight from its decoded bytes, into
//! the claims the checks read ([`Payload`]: typed, borrowed) and the configured claims the
//! claim headers and rules read ([`ClaimValue`], whole); then kept, once verified, in the
//! compact owned form later requests of the same token need ([`Claims`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::AuthError;
use crate::json::{each_member, read_object, skip, Member};

/// The payload members the checks read, typed, and the configured ones, whole.
#[derive(Debug, Default)]
pub struct Payload<'b> {
    pub iss: Option<Member<'b>>,
    pub sub: Option<Member<'b>>,
    pub aud: Option<Member<'b>>,
    pub exp: Option<Member<'b>>,
    pub nbf: Option<Member<'b>>,
    pub iat: Option<Member<'b>>,
    pub auth_time: Option<Member<'b>>,
    pub token_use: Option<Member<'b>>,
    pub client_id: Option<Member<'b>>,
    pub scope: Option<Member<'b>>,
    pub scp: Option<Member<'b>>,
    pub groups: Option<Member<'b>>,
    pub jti: Option<Member<'b>>,
    pub origin_jti: Option<Member<'b>>,
    pub nonce: Option<Member<'b>>,
    /// The members named in `named` (claim headers, rule claims), in token order.
    pub named: Vec<(String, ClaimValue)>,
}

impl<'b> Payload<'b> {
    /// Reads the decoded payload; `named`: the claims to keep whole
    /// (`Config::named_claims`). Every member name must be unique.
    pub fn read(bytes: &'b [u8], named: &[String]) -> Result<Self, AuthError> {
        read_object(bytes, PayloadVisitor { named })
    }

    fn slot(&mut self, name: &str) -> Option<&mut Option<Member<'b>>> {
        Some(match name {
            "iss" => &mut self.iss,
            "sub" => &mut self.sub,
            "aud" => &mut self.aud,
            "exp" => &mut self.exp,
            "nbf" => &mut self.nbf,
            "iat" => &mut self.iat,
            "auth_time" => &mut self.auth_time,
            "token_use" => &mut self.token_use,
            "client_id" => &mut self.client_id,
            "scope" => &mut self.scope,
            "scp" => &mut self.scp,
            "cognito:groups" => &mut self.groups,
            "jti" => &mut self.jti,
            "origin_jti" => &mut self.origin_jti,
            "nonce" => &mut self.nonce,
            _ => return None,
        })
    }

    /// What later requests need of a verified token's payload; `client_id`: its app client.
    pub fn into_claims(self, client_id: Option<&str>) -> Claims {
        let text = |m: Option<Member<'_>>| m.and_then(|m| m.as_str().map(str::to_string));
        let time = |m: Option<Member<'_>>| m.and_then(|m| m.as_u64());
        Claims {
            client_id: client_id.map(str::to_string),
            sub: text(self.sub),
            jti: text(self.jti),
            origin_jti: text(self.origin_jti),
            iat: time(self.iat),
            auth_time: time(self.auth_time),
            named: self.named,
        }
    }
}

struct PayloadVisitor<'n> {
    named: &'n [String],
}

impl<'de> Visitor<'de> for PayloadVisitor<'_> {
    type Value = Payload<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Payload<'de>, A::Error> {
        let mut payload = Payload::default();
        each_member(access, |name, access| {
            if self.named.iter().any(|n| n == name) {
                // Kept whole for headers and rules; a claim the checks read too is read
                // from that copy.
                let value: ClaimValue = access.next_value()?;
                if let Some(slot) = payload.slot(name) {
                    *slot = Some(value.member());
                }
                payload.named.push((name.to_string(), value));
            } else if let Some(slot) = payload.slot(name) {
                *slot = Some(access.next_value()?);
            } else {
                skip(access)?;
            }
            Ok(())
        })?;
        Ok(payload)
    }
}

/// A verified token's claims as later requests read them: its identity, its revocation
/// facts and the configured claims (claim headers, rule claims).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub sub: Option<String>,
    /// The app client: `client_id` (access tokens) or the first `aud` (id tokens).
    pub client_id: Option<String>,
    pub jti: Option<String>,
    pub origin_jti: Option<String>,
    /// Non-negative integers only (anything else counts as absent).
    pub iat: Option<u64>,
    pub auth_time: Option<u64>,
    /// The configured claims the token carries (`Config::named_claims`).
    pub named: Vec<(String, ClaimValue)>,
}

impl Claims {
    /// A configured claim's value, if the token has it.
    pub fn named(&self, claim: &str) -> Option<&ClaimValue> {
        self.named
            .iter()
            .find(|(name, _)| name == claim)
            .map(|(_, value)| value)
    }
}

/// A configured claim, as much of its JSON as claim headers and rules read: strings as they
/// are, anything else as its compact JSON text (objects with their members in name order,
/// as `serde_json::Value` writes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimValue {
    Null,
    String(String),
    Unsigned(u64),
    List(Vec<ListItem>),
    /// A boolean, a negative or fractional number, an object.
    Json(String),
}

impl ClaimValue {
    /// Its string values: a string is one, a list of strings many (its other items none).
    pub fn strings(&self) -> Vec<&str> {
        match self {
            ClaimValue::String(s) => vec![s.as_str()],
            ClaimValue::List(items) => items
                .iter()
                .filter_map(|item| match item {
                    ListItem::String(s) => Some(s.as_str()),
                    ListItem::Json(_) => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// How the checks read it ([`Member`]; only a header's `b64` is ever `true`).
    fn member(&self) -> Member<'static> {
        match self {
            ClaimValue::Null => Member::Null,
            ClaimValue::String(s) => Member::Str(s.clone().into()),
            ClaimValue::Unsigned(n) => Member::Unsigned(*n),
            ClaimValue::List(items) => items
                .iter()
                .map(|item| match item {
                    ListItem::String(s) => Some(s.clone().into()),
                    ListItem::Json(_) => None,
                })
                .collect::<Option<Vec<_>>>()
                .map_or(Member::Other, Member::Strings),
            ClaimValue::Json(_) => Member::Other,
        }
    }
}

/// An item of a [`ClaimValue::List`]: a string, or the JSON text of anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListItem {
    String(String),
    Json(String),
}

impl ClaimValue {
    /// Its compact JSON text (a string's without quotes).
    fn text(self) -> String {
        match self {
            ClaimValue::Null => "null".to_string(),
            ClaimValue::String(text) | ClaimValue::Json(text) => text,
            ClaimValue::Unsigned(n) => n.to_string(),
            ClaimValue::List(items) => {
                let items: Vec<String> = items
                    .into_iter()
                    .map(|item| match item {
                        ListItem::String(s) => quoted(&s),
                        ListItem::Json(text) => text,
                    })
                    .collect();
                format!("[{}]", items.join(","))
            }
        }
    }
}

impl<'de> Deserialize<'de> for ClaimValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Reader(Depth::Claim))
    }
}

/// Where a value being read sits: a claim's own value, an item of its list, or inside
/// either (where everything is JSON text, strings quoted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Depth {
    Claim,
    Item,
    Inner,
}

/// Reads a value at a [`Depth`] into a [`ClaimValue`]: numbers and strings written as
/// serde_json writes them, an object's members in name order with the last of a repeated
/// name winning (a `serde_json::Map`'s order and rule).
struct Reader(Depth);

impl<'de> DeserializeSeed<'de> for Reader {
    type Value = ClaimValue;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<ClaimValue, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// A number that is not an integer, as serde_json writes it (a `Value` holds no non-finite
/// number: `null`).
fn float_text(n: f64) -> String {
    serde_json::Number::from_f64(n).map_or("null".to_string(), |n| n.to_string())
}

/// A string as a JSON string literal (writing to a `String` cannot fail).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

impl<'de> Visitor<'de> for Reader {
    type Value = ClaimValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<ClaimValue, E> {
        Ok(match self.0 {
            Depth::Claim => ClaimValue::Null,
            _ => ClaimValue::Json("null".to_string()),
        })
    }
    fn visit_bool<E>(self, b: bool) -> Result<ClaimValue, E> {
        Ok(ClaimValue::Json(b.to_string()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<ClaimValue, E> {
        Ok(match self.0 {
            Depth::Claim => ClaimValue::Unsigned(n),
            _ => ClaimValue::Json(n.to_string()),
        })
    }
    fn visit_i64<E>(self, n: i64) -> Result<ClaimValue, E> {
        Ok(ClaimValue::Json(n.to_string()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<ClaimValue, E> {
        Ok(ClaimValue::Json(float_text(n)))
    }
    fn visit_str<E>(self, s: &str) -> Result<ClaimValue, E> {
        Ok(match self.0 {
            Depth::Inner => ClaimValue::Json(quoted(s)),
            _ => ClaimValue::String(s.to_string()),
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ClaimValue, A::Error> {
        let inner = match self.0 {
            Depth::Claim => Depth::Item,
            _ => Depth::Inner,
        };
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Reader(inner))? {
            items.push(match item {
                ClaimValue::String(s) => ListItem::String(s),
                other => ListItem::Json(other.text()),
            });
        }
        let list = ClaimValue::List(items);
        Ok(match self.0 {
            Depth::Claim => list,
            _ => ClaimValue::Json(list.text()),
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClaimValue, A::Error> {
        let mut members = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value_seed(Reader(Depth::Inner))?;
            members.insert(name, value.text());
        }
        let members: Vec<String> = members
            .iter()
            .map(|(name, value)| format!("{}:{value}", quoted(name)))
            .collect();
        Ok(ClaimValue::Json(format!("{{{}}}", members.join(","))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn claim(v: &Value) -> ClaimValue {
        serde_json::from_str(&v.to_string()).unwrap()
    }

    #[test]
    fn a_claim_is_its_strings_or_the_json_that_value_writes() {
        assert_eq!(claim(&json!("a")), ClaimValue::String("a".into()));
        assert_eq!(claim(&json!(5)), ClaimValue::Unsigned(5));
        assert_eq!(claim(&json!(null)), ClaimValue::Null);
        assert_eq!(
            claim(&json!(["a", 1, null, ["b"]])),
            ClaimValue::List(vec![
                ListItem::String("a".into()),
                ListItem::Json("1".into()),
                ListItem::Json("null".into()),
                ListItem::Json(r#"["b"]"#.into()),
            ])
        );
        assert_eq!(claim(&json!(["a", 1])).strings(), ["a"]);
        assert!(claim(&json!(1)).strings().is_empty());
        // Everything else is the text serde_json's Value writes, from the token's own bytes.
        for text in [
            "true",
            "false",
            "-3",
            "-0",
            "1.5",
            "1e20",
            "1E-7",
            "123456789012345678901234567890",
            r#"{"b":1,"a":{"d":[1,"x\n"],"c":null},"b":2}"#,
            r#"{"é":"\u00e9\u0001\"\\/","":[]}"#,
            "{}",
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            let ours: ClaimValue = serde_json::from_str(text).unwrap();
            assert_eq!(ours, ClaimValue::Json(value.to_string()), "{text}");
        }
    }

    #[test]
    fn the_payload_reads_known_claims_typed_and_named_claims_whole() {
        let named = ["sub".to_string(), "custom:tenant".to_string()];
        let bytes = br#"{"sub":"u1","custom:tenant":{"id":7},"exp":9,"aud":["a","b"],"x":[1e2]}"#;
        let p = Payload::read(bytes, &named).unwrap();
        assert_eq!(p.sub.as_ref().and_then(Member::as_str), Some("u1"));
        assert_eq!(p.exp, Some(Member::Unsigned(9)));
        assert_eq!(p.aud.as_ref().map(Member::strings), Some(vec!["a", "b"]));
        assert_eq!(
            p.named,
            [
                ("sub".to_string(), ClaimValue::String("u1".into())),
                (
                    "custom:tenant".to_string(),
                    ClaimValue::Json(r#"{"id":7}"#.into())
                ),
            ]
        );
        let claims = p.into_claims(Some("a"));
        assert_eq!(claims.sub.as_deref(), Some("u1"));
        assert_eq!(claims.client_id.as_deref(), Some("a"));
        assert_eq!(claims.named("sub"), Some(&ClaimValue::String("u1".into())));
        assert_eq!(claims.named("exp"), None);
    }

    #[test]
    fn every_member_name_is_unique_known_named_or_neither() {
        for json in [
            r#"{"sub":"a","sub":"b"}"#,
            r#"{"x":1,"x":1}"#,
            r#"{"n":1,"n":2}"#,
            r#"{"x":1,"\u0078":1}"#,
        ] {
            let named = ["n".to_string()];
            assert_eq!(
                Payload::read(json.as_bytes(), &named).map(|_| ()),
                Err(AuthError::DuplicateClaim),
                "{json}"
            );
        }
        // Nested objects may repeat a name (the last one counts), as serde_json's Value.
        assert!(Payload::read(br#"{"x":{"a":1,"a":2}}"#, &[]).is_ok());
    }
}
