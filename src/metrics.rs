//! Every metric name the filter publishes (README "Metrics"), in one list. Names are a public
//! contract: never rename one.

/// A counter, process-wide (`cognito_authorizer.<name>`) and, for request outcomes, per pool
/// (`cognito_authorizer.pool.<pool name>.<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    Allowed,
    DeniedMissing,
    DeniedInvalid,
    DeniedExpired,
    DeniedForbidden,
    Unavailable,
    JwksFetchOk,
    JwksFetchFailed,
    CacheHit,
    CacheMiss,
    /// Fetches started because a token named an unknown `kid` (rate-limited per pool).
    JwksRefetchUnknownKid,
    /// Requests verified with keys past their refresh time (refreshes keep failing).
    StaleKeysServed,
    /// Requests refused with 400 because their path has too many readings to weigh.
    DeniedBadRequest,
    /// Requests refused because their verified token is revoked (revocation document).
    DeniedRevoked,
    /// Revocation documents fetched and accepted (process-wide: a source may serve pools).
    RevocationFetchOk,
    /// Revocation fetches that failed or brought a document that was refused.
    RevocationFetchFailed,
}

impl Counter {
    pub const ALL: [Counter; 16] = [
        Counter::Allowed,
        Counter::DeniedMissing,
        Counter::DeniedInvalid,
        Counter::DeniedExpired,
        Counter::DeniedForbidden,
        Counter::Unavailable,
        Counter::JwksFetchOk,
        Counter::JwksFetchFailed,
        Counter::CacheHit,
        Counter::CacheMiss,
        Counter::JwksRefetchUnknownKid,
        Counter::StaleKeysServed,
        Counter::DeniedBadRequest,
        Counter::DeniedRevoked,
        Counter::RevocationFetchOk,
        Counter::RevocationFetchFailed,
    ];

    /// Whether the counter is also kept per pool (the cache is per VM, not per pool; a
    /// revocation source may serve several pools).
    pub fn per_pool(self) -> bool {
        !matches!(
            self,
            Counter::CacheHit
                | Counter::CacheMiss
                | Counter::RevocationFetchOk
                | Counter::RevocationFetchFailed
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Counter::Allowed => "allowed",
            Counter::DeniedMissing => "denied_missing",
            Counter::DeniedInvalid => "denied_invalid",
            Counter::DeniedExpired => "denied_expired",
            Counter::DeniedForbidden => "denied_forbidden",
            Counter::Unavailable => "unavailable",
            Counter::JwksFetchOk => "jwks_fetch_ok",
            Counter::JwksFetchFailed => "jwks_fetch_failed",
            Counter::CacheHit => "cache_hit",
            Counter::CacheMiss => "cache_miss",
            Counter::JwksRefetchUnknownKid => "jwks_refetch_unknown_kid",
            Counter::StaleKeysServed => "stale_keys_served",
            Counter::DeniedBadRequest => "denied_bad_request",
            Counter::DeniedRevoked => "denied_revoked",
            Counter::RevocationFetchOk => "revocation_fetch_ok",
            Counter::RevocationFetchFailed => "revocation_fetch_failed",
        }
    }

    /// `cognito_authorizer.<name>`
    pub fn global_name(self) -> String {
        format!("{PREFIX}.{}", self.name())
    }

    /// `cognito_authorizer.pool.<pool>.<name>`
    pub fn pool_name(self, pool: &str) -> String {
        format!("{PREFIX}.pool.{pool}.{}", self.name())
    }
}

pub const PREFIX: &str = "cognito_authorizer";

/// A gauge, per pool only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gauge {
    /// Usable keys in the pool's current key set (0 before the first successful fetch).
    Keys,
}

impl Gauge {
    pub const PER_POOL: [Gauge; 1] = [Gauge::Keys];

    pub fn name(self) -> &'static str {
        match self {
            Gauge::Keys => "keys",
        }
    }

    /// `cognito_authorizer.pool.<pool>.<name>`
    pub fn pool_name(self, pool: &str) -> String {
        format!("{PREFIX}.pool.{pool}.{}", self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_spec_names() {
        let names: Vec<String> = Counter::ALL.iter().map(|c| c.global_name()).collect();
        assert_eq!(
            names,
            [
                "cognito_authorizer.allowed",
                "cognito_authorizer.denied_missing",
                "cognito_authorizer.denied_invalid",
                "cognito_authorizer.denied_expired",
                "cognito_authorizer.denied_forbidden",
                "cognito_authorizer.unavailable",
                "cognito_authorizer.jwks_fetch_ok",
                "cognito_authorizer.jwks_fetch_failed",
                "cognito_authorizer.cache_hit",
                "cognito_authorizer.cache_miss",
                "cognito_authorizer.jwks_refetch_unknown_kid",
                "cognito_authorizer.stale_keys_served",
                "cognito_authorizer.denied_bad_request",
                "cognito_authorizer.denied_revoked",
                "cognito_authorizer.revocation_fetch_ok",
                "cognito_authorizer.revocation_fetch_failed",
            ]
        );
        assert_eq!(
            Counter::Allowed.pool_name("main"),
            "cognito_authorizer.pool.main.allowed"
        );
        assert_eq!(
            Gauge::Keys.pool_name("main"),
            "cognito_authorizer.pool.main.keys"
        );
    }
}
