//! Fetching a pool's JWKS, step by step, as pure transitions of the VM's state: which VM
//! fetches (the lease), what a callout answer means (JWKS-answer classification), and what
//! it changes here and for the other VMs (publication, schedule). The glue only dispatches
//! the callout and logs what these steps report.

use crate::jwks::parse_jwks;
use crate::keys::encode_envelope;
use crate::shared_keys::SharedData;
use crate::vm::VmState;

/// Where and how to fetch a document: a pool's JWKS, or a revocation source's document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The pool (JWKS) or revocation source.
    pub index: usize,
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
}

impl FetchRequest {
    /// The callout's request headers.
    pub fn headers(&self) -> Vec<(&str, &str)> {
        vec![
            (":method", "GET"),
            (":path", &self.path),
            (":authority", &self.authority),
            ("accept", "application/json"),
            ("user-agent", "cognito-authorizer"),
        ]
    }
}

/// For the log: `via cluster <cluster>: <authority><path>`.
impl std::fmt::Display for FetchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (cluster, authority, path) = (&self.cluster, &self.authority, &self.path);
        write!(f, "via cluster {cluster}: {authority}{path}")
    }
}

/// What a JWKS callout answer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchResult {
    /// A valid key set, published for every VM and installed here.
    Loaded {
        kids: Vec<String>,
        /// The kids differ from the previous set's (worth an info line).
        changed: bool,
        /// Keys of the set that are unusable (logged, not fatal).
        skipped: Vec<String>,
    },
    /// Not usable: the previous keys (if any) stay; retried with backoff.
    Failed { why: String, keeping_keys: bool },
}

/// The body of a callout's answer, which the host keeps until the answer is handled: read
/// in pieces, so that a large document is never copied whole into the VM.
pub trait CalloutBody {
    /// The `len` bytes from `start`, or `None` if they are not all there.
    fn read(&self, start: usize, len: usize) -> Option<Vec<u8>>;
}

/// A body already in memory (tests, and anything read whole).
impl<T: AsRef<[u8]>> CalloutBody for T {
    fn read(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        let end = start.checked_add(len)?;
        self.as_ref().get(start..end).map(<[u8]>::to_vec)
    }
}

/// The callout's answer as the glue read it.
#[derive(Debug, Clone, Copy)]
pub struct CalloutAnswer<'a> {
    /// `:status`, `None` when the callout failed (timeout, connection refused, reset).
    pub status: Option<&'a str>,
    pub body_size: usize,
}

impl<S: SharedData> VmState<S> {
    /// At configure time: the shared schedule entries exist before any tick can take a lease
    /// (see `shared_keys`), keys published by other VMs (or before a reload) are picked up,
    /// and a shorter refresh period than the one that scheduled the next fetch applies now.
    pub fn start(&mut self, now_ms: u64) {
        for slot in &self.pools {
            slot.shared.ensure_schedule();
        }
        self.sync_pools();
        for slot in &self.pools {
            slot.shared.fit_refresh(&slot.keys, now_ms, &self.timing);
        }
    }

    /// The fetches this VM must start now: due, and the lease won by compare-and-swap.
    pub fn claim_due_fetches(&mut self, now_ms: u64) -> Vec<FetchRequest> {
        let (timing, vm_id) = (self.timing, self.vm_id);
        let mut claimed = Vec::new();
        for (pool, slot) in self.pools.iter_mut().enumerate() {
            let won = slot
                .shared
                .claim_fetch(&mut slot.keys, now_ms, &timing, vm_id);
            if let (true, Some(p)) = (won, self.config.pools.get(pool)) {
                claimed.push(FetchRequest {
                    index: pool,
                    cluster: p.jwks_cluster.clone(),
                    authority: p.jwks.authority.clone(),
                    path: p.jwks.path.clone(),
                    timeout_ms: self.config.jwks_timeout_ms,
                });
            }
        }
        claimed
    }

    /// Whether an answer's body is worth reading (a 200 within `max_jwks_bytes`).
    pub fn wants_body(&self, answer: CalloutAnswer<'_>) -> bool {
        answer.status == Some("200") && answer.body_size <= self.config.max_jwks_bytes
    }

    /// The answer to this VM's fetch for `pool` (`body`: read only if [`Self::wants_body`]).
    /// A valid key set is published for every VM, then the lease released; anything else
    /// keeps the previous keys and schedules a retry with backoff (`jitter`: any u64).
    pub fn jwks_answer(
        &mut self,
        pool: usize,
        now_ms: u64,
        answer: CalloutAnswer<'_>,
        body: &[u8],
        jitter: u64,
    ) -> FetchResult {
        let max = self.config.max_jwks_bytes;
        let parsed = match answer.status {
            None => Err("no answer (timeout or connection failure)".to_string()),
            Some(status) if status != "200" => Err(format!("status {status}")),
            Some(_) if answer.body_size > max => Err(format!(
                "body of {} bytes is over max_jwks_bytes ({max})",
                answer.body_size
            )),
            Some(_) => parse_jwks(body, max),
        };
        match parsed {
            Ok(parsed) => {
                let timing = self.timing;
                let Some(slot) = self.pools.get_mut(pool) else {
                    return FetchResult::Failed {
                        why: "no such pool".into(),
                        keeping_keys: false,
                    };
                };
                // Publish first, then release the lease: other workers pick the set up.
                let cas = slot.shared.publish(&encode_envelope(now_ms, body));
                slot.shared.fetch_succeeded(&mut slot.keys, now_ms, &timing);
                let kids: Vec<String> = parsed.keys.kids().into_iter().map(String::from).collect();
                let changed = slot
                    .keys
                    .keys()
                    .is_none_or(|old| old.kids() != parsed.keys.kids());
                self.install_keys(pool, parsed.keys, now_ms, cas);
                FetchResult::Loaded {
                    kids,
                    changed,
                    skipped: parsed.skipped,
                }
            }
            Err(why) => {
                let keeping_keys = self.fetch_failed(pool, now_ms, jitter);
                FetchResult::Failed { why, keeping_keys }
            }
        }
    }

    /// A fetch of `pool` failed (or could not even be dispatched): retry with backoff.
    /// True when keys from before are kept.
    pub fn fetch_failed(&mut self, pool: usize, now_ms: u64, jitter: u64) -> bool {
        self.pools
            .get_mut(pool)
            .is_some_and(|slot| slot.shared.fetch_failed(&mut slot.keys, now_ms, jitter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::jwks::tests::rsa_jwk;
    use crate::shared_keys::tests::FakeSharedData;
    use jwt_simple::prelude::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000_000;

    fn key() -> &'static RS256KeyPair {
        crate::jwks::tests::test_key(0)
    }

    fn jwks(kids: &[&str]) -> Vec<u8> {
        let keys: Vec<_> = kids
            .iter()
            .map(|k| rsa_jwk(key(), k, Some("RS256")))
            .collect();
        json!({ "keys": keys }).to_string().into_bytes()
    }

    /// Two VMs of one process (one store).
    fn two_vms() -> (VmState<FakeSharedData>, VmState<FakeSharedData>) {
        let json = r#"{"user_pools":[{"name":"main","user_pool_id":"us-east-1_AbCdEf123","jwks_cluster":"cognito"}],"max_jwks_bytes":4096}"#;
        let store = FakeSharedData::default();
        let config = || Config::parse(json.as_bytes()).unwrap().0;
        let mut a = VmState::new(config(), store.clone(), 0x10);
        let mut b = VmState::new(config(), store, 0x20);
        a.start(NOW);
        b.start(NOW);
        (a, b)
    }

    fn ok(size: usize) -> CalloutAnswer<'static> {
        CalloutAnswer {
            status: Some("200"),
            body_size: size,
        }
    }

    #[test]
    fn one_vm_of_the_process_claims_the_first_fetch() {
        let (mut a, mut b) = two_vms();
        let claimed = a.claim_due_fetches(NOW);
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].cluster, "cognito");
        assert_eq!(
            claimed[0].path,
            "/us-east-1_AbCdEf123/.well-known/jwks.json"
        );
        b.sync_pools();
        assert!(b.claim_due_fetches(NOW).is_empty());
    }

    #[test]
    fn a_valid_answer_is_published_and_the_other_vm_picks_it_up() {
        let (mut a, mut b) = two_vms();
        a.claim_due_fetches(NOW);
        let body = jwks(&["k1"]);
        let result = a.jwks_answer(0, NOW + 50, ok(body.len()), &body, 0);
        assert_eq!(
            result,
            FetchResult::Loaded {
                kids: vec!["k1".into()],
                changed: true,
                skipped: vec![]
            }
        );
        assert_eq!(a.take_key_counts(), [(0, 1)]);
        b.sync_pools();
        assert!(b.pools[0]
            .keys
            .keys()
            .is_some_and(|k| k.get("k1").is_some()));
        // Next fetch: one refresh period later, for whoever claims it first.
        assert!(b.claim_due_fetches(NOW + 60_000).is_empty());
        assert_eq!(b.claim_due_fetches(NOW + 50 + 3_600_000).len(), 1);
    }

    #[test]
    fn bad_answers_keep_the_previous_keys_and_back_off() {
        let (mut a, _) = two_vms();
        a.claim_due_fetches(NOW);
        let body = jwks(&["k1"]);
        a.jwks_answer(0, NOW, ok(body.len()), &body, 0);
        let big = vec![b' '; 5000];
        let cases: [(CalloutAnswer<'_>, &[u8], &str); 4] = [
            (
                CalloutAnswer {
                    status: Some("503"),
                    body_size: 3,
                },
                b"err",
                "status 503",
            ),
            (
                CalloutAnswer {
                    status: None,
                    body_size: 0,
                },
                b"",
                "no answer (timeout or connection failure)",
            ),
            (ok(big.len()), &big, "over max_jwks_bytes"),
            (ok(9), b"not json!", ""),
        ];
        for (i, (answer, body, why_part)) in cases.into_iter().enumerate() {
            let now = NOW + 3_600_000 + i as u64 * 100_000;
            assert_eq!(a.claim_due_fetches(now).len(), 1, "case {i}");
            assert_eq!(
                a.wants_body(answer),
                answer.status == Some("200") && body.len() <= 4096
            );
            match a.jwks_answer(0, now, answer, body, 0) {
                FetchResult::Failed { why, keeping_keys } => {
                    assert!(why.contains(why_part), "{why}");
                    assert!(keeping_keys);
                }
                other => panic!("case {i}: {other:?}"),
            }
            assert!(a.pools[0]
                .keys
                .keys()
                .is_some_and(|k| k.get("k1").is_some()));
            // Backed off: not due again at once.
            assert!(a.claim_due_fetches(now + 1).is_empty());
        }
    }

    #[test]
    fn a_vm_that_ends_mid_fetch_lets_another_fetch_at_once() {
        let (mut a, mut b) = two_vms();
        assert_eq!(a.claim_due_fetches(NOW).len(), 1);
        b.sync_pools();
        assert!(b.claim_due_fetches(NOW + 10).is_empty());
        a.abandon([crate::fetch::Fetch::Jwks(0)]);
        b.sync_pools();
        assert_eq!(b.claim_due_fetches(NOW + 20).len(), 1);
        // A's late release does not take B's lease away.
        a.abandon([crate::fetch::Fetch::Jwks(0)]);
        a.sync_pools();
        assert!(a.claim_due_fetches(NOW + 30).is_empty());
    }
}
