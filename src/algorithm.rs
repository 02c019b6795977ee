//! The JWS algorithms the filter knows, and which of them this build carries.
//!
//! RSA (RS256/384/512, PS256/384/512) is always built in: Cognito user pools sign RS256, and
//! most OIDC issuers do too. ECDSA (ES256/384) and EdDSA are cargo features (`ecdsa`,
//! `eddsa`, both in `all-algorithms`): each adds its curve arithmetic to every sidecar's
//! module. A token whose algorithm the build does not carry is refused as invalid, and a JWKS
//! key that only such an algorithm could use is skipped with a warning.

/// The asymmetric JWS algorithms the filter accepts. `none` and `HS*` are not representable:
/// an HMAC "verified" with a public key is the classic algorithm-confusion forgery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// The digest an algorithm signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    pub const RSA: [Algorithm; 6] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ];

    /// Exact, case-sensitive JOSE names only (`rs256` is not `RS256`).
    pub fn parse(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// Whether this build can verify the algorithm inside the module.
    pub fn is_built_in(self) -> bool {
        let (ecdsa, eddsa) = (cfg!(feature = "ecdsa"), cfg!(feature = "eddsa"));
        match self {
            Algorithm::ES256 | Algorithm::ES384 => ecdsa,
            Algorithm::EdDSA => eddsa,
            _ => true,
        }
    }

    /// The algorithms this build carries, comma-separated (for the start-up log).
    pub fn built_in_names() -> String {
        Algorithm::ALL
            .into_iter()
            .filter(|a| a.is_built_in())
            .map(Algorithm::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The digest signed by the algorithm (EdDSA hashes internally: SHA-512).
    pub fn digest(self) -> DigestKind {
        match self {
            Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 => DigestKind::Sha256,
            Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => DigestKind::Sha384,
            Algorithm::RS512 | Algorithm::PS512 | Algorithm::EdDSA => DigestKind::Sha512,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::parse(a.as_str()), Some(a));
        }
        assert_eq!(Algorithm::parse("rs256"), None);
        assert_eq!(Algorithm::parse("HS256"), None);
        assert_eq!(Algorithm::parse("none"), None);
        assert_eq!(Algorithm::parse("Ed25519"), None);
    }

    #[test]
    fn rsa_is_always_built_in_and_the_rest_follows_the_features() {
        for a in Algorithm::RSA {
            assert!(a.is_built_in());
        }
        assert_eq!(Algorithm::ES256.is_built_in(), cfg!(feature = "ecdsa"));
        assert_eq!(Algorithm::ES384.is_built_in(), cfg!(feature = "ecdsa"));
        assert_eq!(Algorithm::EdDSA.is_built_in(), cfg!(feature = "eddsa"));
        assert!(Algorithm::built_in_names().starts_with("RS256, RS384, RS512, PS256"));
    }
}
