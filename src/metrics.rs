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
    pub const fn per_pool(self) -> bool {
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

/// One count of a counter, with the pool when known (counted for the pool too when the
/// counter is kept per pool).
pub type Count = (Counter, Option<usize>);

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

/// A metric's type, as the host defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
}

/// Every metric of a configuration in one list, by index: the process-wide counters (in
/// [`Counter::ALL`] order), then for each pool its per-pool counters (same order) and its
/// gauges ([`Gauge::PER_POOL`]). The glue defines them once, in this order, and keeps the
/// host's ids by index.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pools: usize,
}

impl Layout {
    /// Per-pool counters, then per-pool gauges: one pool's block.
    fn per_pool_counters() -> usize {
        Counter::ALL.iter().filter(|c| c.per_pool()).count()
    }

    fn pool_block() -> usize {
        Self::per_pool_counters() + Gauge::PER_POOL.len()
    }

    pub fn new(pools: usize) -> Self {
        Layout { pools }
    }

    /// Type and full name of every metric, in index order (`pool_names`: the configured
    /// pools' names, in configuration order).
    pub fn metrics<'a>(
        &self,
        pool_names: impl Iterator<Item = &'a str>,
    ) -> Vec<(MetricType, String)> {
        let mut all: Vec<(MetricType, String)> = Counter::ALL
            .iter()
            .map(|c| (MetricType::Counter, c.global_name()))
            .collect();
        for pool in pool_names.take(self.pools) {
            let counters = Counter::ALL.iter().filter(|c| c.per_pool());
            all.extend(counters.map(|c| (MetricType::Counter, c.pool_name(pool))));
            all.extend(
                Gauge::PER_POOL
                    .iter()
                    .map(|g| (MetricType::Gauge, g.pool_name(pool))),
            );
        }
        all
    }

    /// Where a count of `counter` goes: its process-wide index and, when the pool is known
    /// and the counter is kept per pool, the pool's.
    pub fn counter(&self, counter: Counter, pool: Option<usize>) -> (usize, Option<usize>) {
        let global = counter as usize;
        let per_pool = pool
            .filter(|p| *p < self.pools && counter.per_pool())
            .map(|p| {
                let before = Counter::ALL.iter().take(global);
                let within = before.filter(|c| c.per_pool()).count();
                Counter::ALL.len() + p * Self::pool_block() + within
            });
        (global, per_pool)
    }

    /// The index of a pool's gauge.
    pub fn gauge(&self, gauge: Gauge, pool: usize) -> Option<usize> {
        let within = gauge as usize;
        (pool < self.pools).then(|| {
            Counter::ALL.len() + pool * Self::pool_block() + Self::per_pool_counters() + within
        })
    }
}

/// The host's ids of every metric of a configuration, by [`Layout`] index.
#[derive(Debug, Clone)]
pub struct MetricIds {
    layout: Layout,
    ids: Vec<Option<u32>>,
}

impl MetricIds {
    /// Defines every metric through `define` (the host's: an id, or `None` when it refused
    /// one, which is then never recorded). `pool_names`: in configuration order.
    pub fn define<'a>(
        pool_names: impl ExactSizeIterator<Item = &'a str>,
        mut define: impl FnMut(MetricType, &str) -> Option<u32>,
    ) -> Self {
        let layout = Layout::new(pool_names.len());
        let ids = layout
            .metrics(pool_names)
            .iter()
            .map(|(kind, name)| define(*kind, name))
            .collect();
        MetricIds { layout, ids }
    }

    fn id(&self, index: Option<usize>) -> Option<u32> {
        index.and_then(|i| self.ids.get(i).copied().flatten())
    }

    /// The ids one count of `counter` bumps: the process-wide one, and the pool's when the
    /// pool is known and the counter is kept per pool.
    pub fn counter(&self, counter: Counter, pool: Option<usize>) -> [Option<u32>; 2] {
        let (global, per_pool) = self.layout.counter(counter, pool);
        [self.id(Some(global)), self.id(per_pool)]
    }

    /// The id of a pool's gauge.
    pub fn gauge(&self, gauge: Gauge, pool: usize) -> Option<u32> {
        self.id(self.layout.gauge(gauge, pool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_finds_every_counter_and_gauge_under_its_own_name() {
        let layout = Layout::new(2);
        let metrics = layout.metrics(["a", "b"].into_iter());
        assert_eq!(metrics.len(), 16 + 2 * (12 + 1));
        for (i, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, i, "ALL is in declaration order");
            for (p, pool) in [(0, "a"), (1, "b")] {
                let (global, per_pool) = layout.counter(*counter, Some(p));
                assert_eq!(
                    metrics[global],
                    (MetricType::Counter, counter.global_name())
                );
                match per_pool {
                    Some(at) => {
                        assert!(counter.per_pool());
                        assert_eq!(metrics[at], (MetricType::Counter, counter.pool_name(pool)));
                    }
                    None => assert!(!counter.per_pool(), "{counter:?}"),
                }
            }
            assert_eq!(layout.counter(*counter, None).1, None);
            assert_eq!(layout.counter(*counter, Some(2)).1, None, "no such pool");
        }
        let at = layout.gauge(Gauge::Keys, 1).unwrap();
        assert_eq!(metrics[at], (MetricType::Gauge, Gauge::Keys.pool_name("b")));
        assert_eq!(layout.gauge(Gauge::Keys, 2), None);
    }

    #[test]
    fn ids_are_kept_by_name_and_a_refused_definition_is_never_recorded() {
        let mut defined = Vec::new();
        let ids = MetricIds::define(["main"].into_iter(), |kind, name| {
            defined.push((kind, name.to_string()));
            // The host refuses the per-pool `allowed` counter.
            (!name.ends_with("pool.main.allowed")).then_some(100 + defined.len() as u32 - 1)
        });
        let id_of = |name: &str| 100 + defined.iter().position(|(_, n)| n == name).unwrap() as u32;
        assert_eq!(
            ids.counter(Counter::Allowed, Some(0)),
            [Some(id_of("cognito_authorizer.allowed")), None]
        );
        assert_eq!(
            ids.counter(Counter::DeniedExpired, Some(0)),
            [
                Some(id_of("cognito_authorizer.denied_expired")),
                Some(id_of("cognito_authorizer.pool.main.denied_expired"))
            ]
        );
        assert_eq!(
            ids.counter(Counter::CacheHit, Some(0)),
            [Some(id_of("cognito_authorizer.cache_hit")), None]
        );
        assert_eq!(
            ids.gauge(Gauge::Keys, 0),
            Some(id_of("cognito_authorizer.pool.main.keys"))
        );
        assert_eq!(ids.gauge(Gauge::Keys, 1), None);
    }

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
