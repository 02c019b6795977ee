//! Cognito's own rules: what a user pool id looks like, the issuer and JWKS URI derived from
//! it, `token_use`, and which claim names the app client.

use crate::json::Member;

/// A user pool id split into its region and local part (`us-east-1_AbCdEf123`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolId<'a> {
    pub region: &'a str,
    pub local: &'a str,
}

impl<'a> PoolId<'a> {
    /// Parses `<region>_<id>`. The region must look like an AWS region (`us-east-1`,
    /// `us-gov-west-1`) and the id must be alphanumeric, because both end up in URLs.
    pub fn parse(pool_id: &'a str) -> Result<Self, String> {
        let (region, local) = pool_id
            .split_once('_')
            .ok_or_else(|| format!("{pool_id:?} is not of the form <region>_<id>"))?;
        let region_ok = {
            let parts: Vec<&str> = region.split('-').collect();
            parts.len() >= 3
                && parts.iter().all(|p| {
                    !p.is_empty()
                        && p.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
                && parts
                    .last()
                    .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
        };
        if !region_ok {
            return Err(format!(
                "{pool_id:?}: {region:?} is not an AWS region (expected e.g. us-east-1_AbCdEf123)"
            ));
        }
        if local.is_empty() || local.len() > 64 || !local.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(format!(
                "{pool_id:?}: the part after the region must be 1 to 64 letters or digits"
            ));
        }
        Ok(PoolId { region, local })
    }

    /// The `iss` of every token the pool issues.
    pub fn issuer(&self) -> String {
        format!(
            "https://cognito-idp.{}.amazonaws.com/{}_{}",
            self.region, self.region, self.local
        )
    }
}

/// The JWKS URI of an issuer, as Cognito (and OIDC discovery) publishes it.
pub fn jwks_uri_for_issuer(issuer: &str) -> String {
    format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/'))
}

/// Where to fetch a JWKS: the `:authority` and `:path` of the callout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksLocation {
    pub authority: String,
    pub path: String,
}

impl JwksLocation {
    /// Splits `https://host[:port]/path`. The scheme only documents intent: TLS is the
    /// cluster's business in Envoy.
    pub fn parse(uri: &str) -> Result<Self, String> {
        let rest = uri
            .strip_prefix("https://")
            .or_else(|| uri.strip_prefix("http://"))
            .ok_or_else(|| format!("{uri:?} must start with https:// or http://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let valid = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if authority.is_empty() || !valid(authority) || authority.contains('@') {
            return Err(format!("{uri:?} has no valid host"));
        }
        if !valid(path) {
            return Err(format!(
                "{uri:?} has spaces or control characters in its path"
            ));
        }
        Ok(JwksLocation {
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }
}

/// Cognito's two kinds of token (`token_use` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenUse {
    Id,
    Access,
}

impl TokenUse {
    pub fn parse(value: &str) -> Option<TokenUse> {
        match value {
            "id" => Some(TokenUse::Id),
            "access" => Some(TokenUse::Access),
            _ => None,
        }
    }
}

/// The app client a token was issued to.
///
/// Cognito puts it in `aud` for id tokens and in `client_id` for access tokens (which have no
/// `aud`). For a generic OIDC issuer (no `token_use`), `aud` is used, else `client_id`.
/// Returns every candidate value: `aud` may be a list, and any listed client may match.
pub fn client_candidates<'m>(
    aud: Option<&'m Member<'_>>,
    client_id: Option<&'m Member<'_>>,
    token_use: Option<TokenUse>,
) -> Result<Vec<&'m str>, &'static str> {
    match token_use {
        Some(TokenUse::Id) => aud.map_or(Ok(Vec::new()), from_aud),
        Some(TokenUse::Access) => client_id.map_or(Ok(Vec::new()), from_client_id),
        None => match aud {
            Some(aud) => from_aud(aud),
            None => client_id.map_or(Ok(Vec::new()), from_client_id),
        },
    }
}

fn from_aud<'m>(aud: &'m Member<'_>) -> Result<Vec<&'m str>, &'static str> {
    match aud {
        Member::Str(_) | Member::Strings(_) => Ok(aud.strings()),
        _ => Err("aud"),
    }
}

fn from_client_id<'m>(v: &'m Member<'_>) -> Result<Vec<&'m str>, &'static str> {
    v.as_str().map(|s| vec![s]).ok_or("client_id")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn pool_id_derives_cognito_issuer_and_jwks_uri() {
        let id = PoolId::parse("us-east-1_AbCdEf123").unwrap();
        assert_eq!(id.region, "us-east-1");
        assert_eq!(
            id.issuer(),
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbCdEf123"
        );
        assert_eq!(
            jwks_uri_for_issuer(&id.issuer()),
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbCdEf123/.well-known/jwks.json"
        );
    }

    #[test]
    fn pool_id_accepts_govcloud_and_moto_style_ids() {
        assert!(PoolId::parse("us-gov-west-1_abc").is_ok());
        assert!(PoolId::parse("eu-central-1_0123456789abcdef0123456789abcdef").is_ok());
    }

    #[test]
    fn the_part_after_the_region_is_at_most_64_characters() {
        let at_most = format!("us-east-1_{}", "a".repeat(64));
        assert!(PoolId::parse(&at_most).is_ok());
        assert!(PoolId::parse(&format!("{at_most}b")).is_err());
    }

    #[test]
    fn pool_id_without_region_or_with_url_characters_is_refused() {
        for bad in [
            "nounderscore",
            "_abc",
            "us-east-1_",
            "useast1_abc",
            "us-east-x_abc",
            "us-east-1_ab/c",
            "us-east-1_ab.c",
            "US-EAST-1_abc",
            "us-east-1_a_b",
        ] {
            assert!(PoolId::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn jwks_location_splits_authority_and_path() {
        let loc = JwksLocation::parse(
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_X/.well-known/jwks.json",
        )
        .unwrap();
        assert_eq!(loc.authority, "cognito-idp.us-east-1.amazonaws.com");
        assert_eq!(loc.path, "/us-east-1_X/.well-known/jwks.json");
        assert_eq!(JwksLocation::parse("http://h:8080").unwrap().path, "/");
        assert!(JwksLocation::parse("ftp://h/x").is_err());
        assert!(JwksLocation::parse("https:///x").is_err());
        assert!(JwksLocation::parse("https://user@h/x").is_err());
        assert!(JwksLocation::parse("https://h/a b").is_err());
    }

    #[test]
    fn client_comes_from_aud_for_id_tokens_and_client_id_for_access_tokens() {
        let id = json!({"aud": "c1", "client_id": "ignored"});
        let access = json!({"client_id": "c2", "aud": "ignored"});
        // The token's `aud` and `client_id` members, read as `verify::inspect` reads them.
        let candidates = |v: &Value, token_use| {
            let member = |name: &str| -> Option<Member<'static>> {
                let text = v.get(name)?.to_string();
                Some(serde_json::from_str::<Member>(&text).unwrap().into_owned())
            };
            let (aud, client_id) = (member("aud"), member("client_id"));
            client_candidates(aud.as_ref(), client_id.as_ref(), token_use)
                .map(|c| c.into_iter().map(str::to_string).collect::<Vec<_>>())
        };
        assert_eq!(candidates(&id, Some(TokenUse::Id)).unwrap(), vec!["c1"]);
        assert_eq!(
            candidates(&access, Some(TokenUse::Access)).unwrap(),
            vec!["c2"]
        );
        let oidc = json!({"aud": ["a", "b"]});
        assert_eq!(candidates(&oidc, None).unwrap(), vec!["a", "b"]);
        let oidc_m2m = json!({"client_id": "m2m"});
        assert_eq!(candidates(&oidc_m2m, None).unwrap(), vec!["m2m"]);
        let bad = json!({"aud": 5});
        assert_eq!(candidates(&bad, Some(TokenUse::Id)), Err("aud"));
    }
}
