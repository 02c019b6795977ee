//! The only place a refusal becomes an HTTP answer (README "Behaviour" table): status, body,
//! `www-authenticate`, `retry-after`, the metric and the reason name.
//!
//! Bodies are byte-compatible with API Gateway's, and never say more than API Gateway does:
//! the precise reason goes to the debug log and to metrics, not to the client.

use crate::error::{AuthError, Refusal};
use crate::metrics::Counter;
use crate::revocation::Revoked;

/// A local reply, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub body: &'static str,
    pub headers: Vec<(&'static str, String)>,
}

pub const CONTENT_TYPE_JSON: &str = "application/json";

impl Refusal {
    pub fn status(self) -> u32 {
        match self {
            Refusal::Missing | Refusal::Invalid | Refusal::Expired | Refusal::Revoked => 401,
            Refusal::Forbidden => 403,
            Refusal::Unavailable => 503,
            Refusal::BadRequest => 400,
        }
    }

    pub fn body(self) -> &'static str {
        match self {
            Refusal::Missing | Refusal::Invalid | Refusal::Revoked => {
                r#"{"message":"Unauthorized"}"#
            }
            Refusal::Expired => r#"{"message":"The incoming token has expired"}"#,
            Refusal::Forbidden => r#"{"message":"Forbidden"}"#,
            Refusal::Unavailable => r#"{"message":"Service Unavailable"}"#,
            Refusal::BadRequest => r#"{"message":"Bad Request"}"#,
        }
    }

    pub fn counter(self) -> Counter {
        match self {
            Refusal::Missing => Counter::DeniedMissing,
            Refusal::Invalid => Counter::DeniedInvalid,
            Refusal::Expired => Counter::DeniedExpired,
            Refusal::Forbidden => Counter::DeniedForbidden,
            Refusal::Unavailable => Counter::Unavailable,
            Refusal::BadRequest => Counter::DeniedBadRequest,
            Refusal::Revoked => Counter::DeniedRevoked,
        }
    }

    /// The reason in filter state, logs and report mode: the metric name without `denied_`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Invalid => "invalid",
            Refusal::Expired => "expired",
            Refusal::Forbidden => "forbidden",
            Refusal::Unavailable => "unavailable",
            Refusal::BadRequest => "bad_request",
            Refusal::Revoked => Revoked::REASON,
        }
    }
}

/// Builds the reply for a refusal. `scope_hint` names the scopes a failed route requirement
/// asked for (empty when none); `retry_after` is used for 503s.
pub fn local_reply(
    error: &AuthError,
    realm: &str,
    scope_hint: &str,
    retry_after: u64,
) -> LocalReply {
    let refusal = error.refusal();
    let www_authenticate = match refusal {
        Refusal::Missing => Some(format!(r#"Bearer realm="{realm}""#)),
        Refusal::Invalid => Some(format!(r#"Bearer realm="{realm}", error="invalid_token""#)),
        Refusal::Expired => Some(format!(
            r#"Bearer realm="{realm}", error="invalid_token", error_description="The token has expired""#
        )),
        Refusal::Revoked => Some(format!(
            r#"Bearer realm="{realm}", error="invalid_token", error_description="{}""#,
            Revoked::ERROR_DESCRIPTION
        )),
        Refusal::Forbidden if scope_hint.is_empty() => Some(format!(
            r#"Bearer realm="{realm}", error="insufficient_scope""#
        )),
        Refusal::Forbidden => Some(format!(
            r#"Bearer realm="{realm}", error="insufficient_scope", scope="{scope_hint}""#
        )),
        Refusal::Unavailable | Refusal::BadRequest => None,
    };
    let mut headers = vec![("content-type", CONTENT_TYPE_JSON.to_string())];
    if let Some(w) = www_authenticate {
        headers.push(("www-authenticate", w));
    }
    if refusal == Refusal::Unavailable {
        headers.push(("retry-after", retry_after.max(1).to_string()));
    }
    LocalReply {
        status: refusal.status(),
        body: refusal.body(),
        headers,
    }
}

/// Header added upstream in `"mode": "report"` with the decision's reason; client copies
/// are always removed.
pub const DECISION_HEADER: &str = "x-cognito-authorizer-decision";

/// Reason names for requests that continue.
pub const REASON_ALLOWED: &str = "allowed";
pub const REASON_ALLOW_RULE: &str = "allow_rule";
pub const REASON_CORS_PREFLIGHT: &str = "cors_preflight";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Unmet;

    fn header<'a>(r: &'a LocalReply, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn missing_token_reply() {
        let r = local_reply(&AuthError::NoToken, "api", "", 0);
        assert_eq!(r.status, 401);
        assert_eq!(r.body, r#"{"message":"Unauthorized"}"#);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some(r#"Bearer realm="api""#)
        );
        assert_eq!(header(&r, "content-type"), Some("application/json"));
    }

    #[test]
    fn invalid_token_reply() {
        for e in [
            AuthError::BadSignature,
            AuthError::UnknownIssuer,
            AuthError::AmbiguousToken,
        ] {
            let r = local_reply(&e, "api", "", 0);
            assert_eq!(r.status, 401);
            assert_eq!(r.body, r#"{"message":"Unauthorized"}"#);
            assert_eq!(
                header(&r, "www-authenticate"),
                Some(r#"Bearer realm="api", error="invalid_token""#)
            );
        }
    }

    #[test]
    fn expired_token_reply() {
        let r = local_reply(&AuthError::Expired, "shop", "", 0);
        assert_eq!(r.status, 401);
        assert_eq!(r.body, r#"{"message":"The incoming token has expired"}"#);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some(
                r#"Bearer realm="shop", error="invalid_token", error_description="The token has expired""#
            )
        );
    }

    #[test]
    fn forbidden_reply_names_scopes_only_when_required() {
        let r = local_reply(
            &AuthError::RequirementNotMet(Unmet::Scopes),
            "api",
            "api/admin",
            0,
        );
        assert_eq!(r.status, 403);
        assert_eq!(r.body, r#"{"message":"Forbidden"}"#);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some(r#"Bearer realm="api", error="insufficient_scope", scope="api/admin""#)
        );
        let r = local_reply(&AuthError::RequirementNotMet(Unmet::Groups), "api", "", 0);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some(r#"Bearer realm="api", error="insufficient_scope""#)
        );
    }

    #[test]
    fn unavailable_reply_has_retry_after_and_no_challenge() {
        let r = local_reply(&AuthError::KeysUnavailable, "api", "", 7);
        assert_eq!(r.status, 503);
        assert_eq!(r.body, r#"{"message":"Service Unavailable"}"#);
        assert_eq!(header(&r, "www-authenticate"), None);
        assert_eq!(header(&r, "retry-after"), Some("7"));
        let r = local_reply(&AuthError::KeysUnavailable, "api", "", 0);
        assert_eq!(header(&r, "retry-after"), Some("1"));
    }

    #[test]
    fn revoked_token_reply() {
        let r = local_reply(&AuthError::Revoked, "api", "", 0);
        assert_eq!(r.status, 401);
        assert_eq!(r.body, r#"{"message":"Unauthorized"}"#);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some(
                r#"Bearer realm="api", error="invalid_token", error_description="The access token has been revoked""#
            )
        );
        assert_eq!(header(&r, "retry-after"), None);
        let refusal = AuthError::Revoked.refusal();
        assert_eq!(refusal.counter(), Counter::DeniedRevoked);
        assert_eq!(refusal.reason(), "revoked");
        assert_eq!(
            refusal.counter().name(),
            format!("denied_{}", refusal.reason())
        );
    }

    #[test]
    fn revocations_unavailable_is_a_503_like_missing_keys() {
        let r = local_reply(&AuthError::RevocationsUnavailable, "api", "", 4);
        assert_eq!(r, local_reply(&AuthError::KeysUnavailable, "api", "", 4));
        assert_eq!(
            AuthError::RevocationsUnavailable.refusal().reason(),
            "unavailable"
        );
    }
}
