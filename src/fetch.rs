//! The documents a VM fetches, of both kinds — a pool's JWKS (`key_fetch`) and a revocation
//! document (`revocation_fetch`) — behind one set of steps for the glue: claim the due
//! fetches, take a callout's answer, take a dispatch failure, abandon. Each step logs what it
//! did and names the counter to bump, so the glue only dispatches callouts and moves bytes.

use log::{debug, info, warn};

use crate::key_fetch::{CalloutAnswer, CalloutBody, FetchRequest, FetchResult};
use crate::metrics::{Count, Counter};
use crate::revocation_fetch::RevocationResult;
use crate::shared_keys::SharedData;
use crate::vm::VmState;

/// What a failed fetch leaves in force, for the log.
fn keeping(kept: bool, what: &str) -> String {
    if kept {
        format!("keeping the previous {what}")
    } else {
        format!("no {what} yet")
    }
}

/// What one fetch fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// A pool's JWKS (pool index).
    Jwks(usize),
    /// A revocation document (source index).
    Revocations(usize),
}

impl Fetch {
    /// What is fetched, for the log.
    pub fn document(self) -> &'static str {
        match self {
            Fetch::Jwks(_) => "JWKS",
            Fetch::Revocations(_) => "revocation document",
        }
    }
}

/// Whose fetch, for the log: `pool #0`, `revocations #0`.
impl std::fmt::Display for Fetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fetch::Jwks(pool) => write!(f, "pool #{pool}"),
            Fetch::Revocations(source) => write!(f, "revocations #{source}"),
        }
    }
}

impl<S: SharedData + Clone> VmState<S> {
    /// Every fetch this VM must start now (JWKS first, then revocation documents): due, and
    /// the lease won by compare-and-swap.
    pub fn claim_due(&mut self, now_ms: u64) -> Vec<(Fetch, FetchRequest)> {
        let jwks = self.claim_due_fetches(now_ms);
        let revocations = self.claim_due_revocation_fetches(now_ms);
        jwks.into_iter()
            .map(|f| (Fetch::Jwks(f.index), f))
            .chain(
                revocations
                    .into_iter()
                    .map(|f| (Fetch::Revocations(f.index), f)),
            )
            .collect()
    }

    /// Whether the answer's body is worth reading (a 200 within the document's size limit).
    pub fn wants_answer_body(&self, fetch: Fetch, answer: CalloutAnswer<'_>) -> bool {
        match fetch {
            Fetch::Jwks(_) => self.wants_body(answer),
            Fetch::Revocations(source) => self.wants_revocation_body(source, answer),
        }
    }

    /// The answer to a fetch this VM started (`body`: read only if
    /// [`Self::wants_answer_body`]: a JWKS whole, a revocation document in pieces);
    /// `clock` times the parse for the log. Logs what the answer did and returns the counter
    /// to bump.
    pub fn take_answer(
        &mut self,
        fetch: Fetch,
        now_ms: u64,
        answer: CalloutAnswer<'_>,
        body: &dyn CalloutBody,
        jitter: u64,
        clock: impl Fn() -> u64,
    ) -> Count {
        match fetch {
            Fetch::Jwks(pool) => {
                let body = body.read(0, answer.body_size).unwrap_or_default();
                self.take_jwks_answer(pool, now_ms, answer, &body, jitter)
            }
            Fetch::Revocations(source) => {
                self.take_revocation_answer(source, now_ms, answer, body, jitter, clock)
            }
        }
    }

    fn take_jwks_answer(
        &mut self,
        pool: usize,
        now_ms: u64,
        answer: CalloutAnswer<'_>,
        body: &[u8],
        jitter: u64,
    ) -> Count {
        let name = self.config.pools.get(pool).map(|p| p.name.clone());
        let name = name.unwrap_or_default();
        match self.jwks_answer(pool, now_ms, answer, body, jitter) {
            FetchResult::Loaded {
                kids,
                changed,
                skipped,
            } => {
                for skipped in &skipped {
                    warn!("pool {name}: JWKS key skipped: {skipped}");
                }
                let kids = kids.join(",");
                if changed {
                    info!("pool {name}: loaded JWKS with kids [{kids}]");
                } else {
                    debug!("pool {name}: JWKS refreshed, kids [{kids}]");
                }
                (Counter::JwksFetchOk, Some(pool))
            }
            FetchResult::Failed { why, keeping_keys } => {
                let keeping = keeping(keeping_keys, "keys");
                warn!("pool {name}: JWKS fetch failed ({why}); {keeping}");
                (Counter::JwksFetchFailed, Some(pool))
            }
        }
    }

    fn take_revocation_answer(
        &mut self,
        source: usize,
        now_ms: u64,
        answer: CalloutAnswer<'_>,
        body: &dyn CalloutBody,
        jitter: u64,
        clock: impl Fn() -> u64,
    ) -> Count {
        match self.revocation_answer(source, now_ms, answer, body, jitter) {
            RevocationResult::Loaded {
                generated_at,
                bytes,
                revoked_ids,
                signed_out_users,
                dropped_expired,
            } => {
                let took_ms = clock().saturating_sub(now_ms);
                info!(
                    "revocations #{source}: loaded document generated_at {generated_at} ({bytes} bytes, read in {took_ms} ms): {revoked_ids} revoked ids, {signed_out_users} signed-out users ({dropped_expired} expired entries dropped)"
                );
                (Counter::RevocationFetchOk, None)
            }
            RevocationResult::Unchanged => {
                debug!("revocations #{source}: refreshed, unchanged");
                (Counter::RevocationFetchOk, None)
            }
            RevocationResult::Failed { why, keeping_list } => {
                let keeping = keeping(keeping_list, "list");
                warn!("revocations #{source}: fetch failed ({why}); {keeping}");
                (Counter::RevocationFetchFailed, None)
            }
        }
    }

    /// The host refused to start the callout (`why`; typically the cluster does not exist
    /// yet): retried with backoff, like a failed fetch. Returns the counter to bump.
    pub fn dispatch_failed(
        &mut self,
        fetch: Fetch,
        request: &FetchRequest,
        why: &str,
        now_ms: u64,
        jitter: u64,
    ) -> Count {
        let (cluster, document) = (&request.cluster, fetch.document());
        warn!("{fetch}: cannot call cluster {cluster:?} for the {document}: {why}");
        match fetch {
            Fetch::Jwks(pool) => {
                self.fetch_failed(pool, now_ms, jitter);
                (Counter::JwksFetchFailed, Some(pool))
            }
            Fetch::Revocations(source) => {
                self.revocation_fetch_failed(source, now_ms, jitter);
                (Counter::RevocationFetchFailed, None)
            }
        }
    }

    /// This VM goes away with these fetches unanswered: the leases it still holds are
    /// released, so another VM fetches at once (a lease taken since by another VM stays).
    pub fn abandon(&self, fetches: impl IntoIterator<Item = Fetch>) {
        for fetch in fetches {
            let entries = match fetch {
                Fetch::Jwks(pool) => self.pools.get(pool).map(|slot| &slot.shared),
                Fetch::Revocations(source) => {
                    self.sources.get(source).map(|slot| &slot.shared.entries)
                }
            };
            if let Some(entries) = entries {
                entries.abandon_fetch(self.vm_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared_keys::tests::FakeSharedData;

    const NOW: u64 = 1_800_000_000_000;

    /// Two VMs of one process (one store): a pool with a revocation source.
    fn two_vms() -> (VmState<FakeSharedData>, VmState<FakeSharedData>) {
        let json = r#"{"user_pools":[{"user_pool_id":"us-east-1_Rev0ked1","jwks_cluster":"c",
            "revocations":{"cluster":"r","uri":"http://r/doc.json"}}]}"#;
        crate::vm::tests::two_vms(json, NOW)
    }

    const DOC: &[u8] = br#"{"version":1,"generated_at":7,"max_token_lifetime_seconds":86400,"revoked_jti":{},"signed_out":{}}"#;

    fn answer<'a>(status: Option<&'a str>, body: &[u8]) -> CalloutAnswer<'a> {
        CalloutAnswer {
            status,
            body_size: body.len(),
        }
    }

    #[test]
    fn both_kinds_of_due_fetch_are_claimed_by_one_vm_only() {
        let (mut a, mut b) = two_vms();
        let claimed = a.claim_due(NOW);
        let kinds: Vec<Fetch> = claimed.iter().map(|(f, _)| *f).collect();
        assert_eq!(kinds, [Fetch::Jwks(0), Fetch::Revocations(0)]);
        assert_eq!(claimed[0].1.cluster, "c");
        assert_eq!(claimed[1].1.cluster, "r");
        assert_eq!(claimed[1].1.path, "/doc.json");
        b.sync_pools();
        b.sync_sources();
        assert!(b.claim_due(NOW).is_empty());
    }

    #[test]
    fn an_answer_names_its_counter_by_kind_and_outcome() {
        let (mut a, _) = two_vms();
        a.claim_due(NOW);
        let rev = Fetch::Revocations(0);
        assert!(a.wants_answer_body(rev, answer(Some("200"), DOC)));
        assert!(!a.wants_answer_body(rev, answer(Some("404"), DOC)));
        let counted = a.take_answer(rev, NOW, answer(Some("200"), DOC), &DOC, 0, || NOW);
        assert_eq!(counted, (Counter::RevocationFetchOk, None));
        let counted = a.take_answer(Fetch::Jwks(0), NOW, answer(None, b""), &b"", 0, || NOW);
        assert_eq!(counted, (Counter::JwksFetchFailed, Some(0)));
        assert!(a.pools[0].keys.keys().is_none());
    }

    #[test]
    fn a_fetch_the_host_cannot_dispatch_backs_off_like_a_failed_one() {
        let (mut a, mut b) = two_vms();
        let claimed = a.claim_due(NOW);
        for (fetch, request) in claimed {
            let (counter, _) = a.dispatch_failed(fetch, &request, "BadArgument", NOW, 0);
            assert!(matches!(
                counter,
                Counter::JwksFetchFailed | Counter::RevocationFetchFailed
            ));
        }
        // The lease is released and the retry is scheduled later, for every VM.
        b.sync_pools();
        b.sync_sources();
        assert!(b.claim_due(NOW + 10).is_empty());
        assert!(a.claim_due(NOW + 10).is_empty());
        assert_eq!(b.claim_due(NOW + 60_000).len(), 2);
    }

    #[test]
    fn a_vm_that_goes_away_mid_fetch_lets_another_fetch_at_once() {
        let (mut a, mut b) = two_vms();
        let claimed: Vec<Fetch> = a.claim_due(NOW).into_iter().map(|(f, _)| f).collect();
        b.sync_pools();
        b.sync_sources();
        assert!(b.claim_due(NOW + 1).is_empty());
        a.abandon(claimed);
        b.sync_pools();
        b.sync_sources();
        assert_eq!(b.claim_due(NOW + 1).len(), 2);
    }

    #[test]
    fn fetches_are_named_for_the_log() {
        assert_eq!(Fetch::Jwks(0).to_string(), "pool #0");
        assert_eq!(Fetch::Revocations(1).to_string(), "revocations #1");
        assert_eq!(Fetch::Revocations(1).document(), "revocation document");
    }
}
