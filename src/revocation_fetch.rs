//! Fetching a revocation document, step by step, as pure transitions of the VM's state —
//! the same lease and schedule as the JWKS (`key_fetch`): which VM fetches, what a callout
//! answer means, and what it changes here and for the other VMs. The glue only dispatches
//! the callout and logs what these steps report.

use crate::key_fetch::{CalloutAnswer, CalloutBody, FetchRequest};
use crate::revocation::{Digest, RevocationList, Stamp, PIECE_BYTES};
use crate::shared_keys::SharedData;
use crate::vm::{SourceSlot, VmState};

/// What a revocation callout answer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationResult {
    /// A new document, published for every VM and in force here.
    Loaded {
        generated_at: u64,
        bytes: usize,
        revoked_ids: usize,
        signed_out_users: usize,
        dropped_expired: usize,
    },
    /// The very document already in force (same digest): only its age is renewed.
    Unchanged,
    /// Not usable: the previous list (if any) stays; retried with backoff.
    Failed { why: String, keeping_list: bool },
}

/// A callout body of `size` bytes, read from the host [`PIECE_BYTES`] at a time.
struct Pieces<'a> {
    body: &'a dyn CalloutBody,
    size: usize,
    at: usize,
}

impl<'a> Pieces<'a> {
    fn new(body: &'a dyn CalloutBody, size: usize) -> Self {
        Pieces { body, size, at: 0 }
    }

    /// The next piece; `None` at the end, or when the host cannot give it (then `at` tells
    /// the bytes read short of `size`).
    fn next(&mut self) -> Option<Vec<u8>> {
        let len = PIECE_BYTES.min(self.size.saturating_sub(self.at));
        if len == 0 {
            return None;
        }
        let piece = self.body.read(self.at, len)?;
        self.at += piece.len();
        Some(piece)
    }
}

/// [`crate::revocation::document_digest`] of a body of `size` bytes, read in pieces.
fn body_digest(body: &dyn CalloutBody, size: usize) -> Option<u64> {
    let mut digest = Digest::new(size);
    let mut pieces = Pieces::new(body, size);
    while let Some(piece) = pieces.next() {
        digest.update(&piece);
    }
    (pieces.at == size).then(|| digest.finish())
}

impl<S: SharedData + Clone> VmState<S> {
    /// The revocation fetches this VM must start now: due, and the lease won by CAS.
    pub fn claim_due_revocation_fetches(&mut self, now_ms: u64) -> Vec<FetchRequest> {
        let vm_id = self.vm_id;
        let mut claimed = Vec::new();
        for (index, slot) in self.sources.iter_mut().enumerate() {
            let won = slot
                .shared
                .entries
                .claim_fetch(&mut slot.list, now_ms, &slot.timing, vm_id);
            if let (true, Some(src)) = (won, self.config.revocation_sources.get(index)) {
                claimed.push(FetchRequest {
                    index,
                    cluster: src.cluster.clone(),
                    authority: src.location.authority.clone(),
                    path: src.location.path.clone(),
                    timeout_ms: src.timeout_ms,
                });
            }
        }
        claimed
    }

    /// Whether a revocation answer's body is worth reading (a 200 within `max_bytes`).
    pub fn wants_revocation_body(&self, source: usize, answer: CalloutAnswer<'_>) -> bool {
        let max = self.config.revocation_sources.get(source).map_or(0, |src| {
            src.limits(self.config.clock_skew_seconds).max_bytes
        });
        answer.status == Some("200") && answer.body_size <= max
    }

    /// The answer to this VM's fetch of revocation source `source` (`body`: read only if
    /// [`Self::wants_revocation_body`]). A valid document's list is published for every VM,
    /// then the lease released; a malformed, oversized or other-version one never replaces
    /// the list in force.
    pub fn revocation_answer(
        &mut self,
        source: usize,
        now_ms: u64,
        answer: CalloutAnswer<'_>,
        body: &dyn CalloutBody,
        jitter: u64,
    ) -> RevocationResult {
        let Some(limits) = self
            .config
            .revocation_sources
            .get(source)
            .map(|src| src.limits(self.config.clock_skew_seconds))
        else {
            return RevocationResult::Failed {
                why: "no such source".into(),
                keeping_list: false,
            };
        };
        let known_digest = self.sources.get(source).and_then(SourceSlot::digest);
        let parsed = match answer.status {
            None => Err("no answer (timeout or connection failure)".to_string()),
            Some(status) if status != "200" => Err(format!("status {status}")),
            Some(_) if answer.body_size > limits.max_bytes => Err(format!(
                "body of {} bytes is over max_bytes ({})",
                answer.body_size, limits.max_bytes
            )),
            Some(_) => {
                // Two passes over the host's copy, in pieces: the digest, then (for a new
                // document) the streaming parse.
                let size = answer.body_size;
                match body_digest(body, size) {
                    None => Err(format!("body of {size} bytes could not be read")),
                    // The very document in use: validated already, nothing to parse.
                    Some(digest) if Some(digest) == known_digest => Ok((digest, None)),
                    Some(digest) => {
                        let mut pieces = Pieces::new(body, size);
                        let mut next = || pieces.next();
                        let now = now_ms / 1000;
                        RevocationList::parse_pieces(&mut next, size, digest, &limits, now)
                            .map(|list| (digest, Some(list)))
                            .map_err(|e| e.to_string())
                    }
                }
            }
        };
        let Some(slot) = self.sources.get_mut(source) else {
            return RevocationResult::Failed {
                why: "no such source".into(),
                keeping_list: false,
            };
        };
        let timing = slot.timing;
        match parsed {
            Ok((digest, list)) => {
                // Publish first, then release the lease: other workers pick it up. What is
                // published is the list (its compact form), never the document.
                let stamp = Stamp {
                    fetched_at_ms: now_ms,
                    digest,
                };
                let published = list.as_ref().or(slot.list.keys().map(|rc| &**rc));
                let encoded = published.map_or(&[][..], RevocationList::encoded);
                slot.stamp_cas = slot.shared.publish(encoded, stamp);
                slot.shared
                    .entries
                    .fetch_succeeded(&mut slot.list, now_ms, &timing);
                match list {
                    Some(list) => {
                        let loaded = RevocationResult::Loaded {
                            generated_at: list.generated_at(),
                            bytes: answer.body_size,
                            revoked_ids: list.revoked_ids(),
                            signed_out_users: list.signed_out_users(),
                            dropped_expired: list.dropped_expired(),
                        };
                        slot.list.set_keys(list, now_ms);
                        loaded
                    }
                    None => {
                        slot.list.refreshed(now_ms);
                        RevocationResult::Unchanged
                    }
                }
            }
            Err(why) => {
                let keeping_list = self.revocation_fetch_failed(source, now_ms, jitter);
                RevocationResult::Failed { why, keeping_list }
            }
        }
    }

    /// A revocation fetch failed (or could not be dispatched): retry with backoff. True when
    /// a list from before stays in force.
    pub fn revocation_fetch_failed(&mut self, source: usize, now_ms: u64, jitter: u64) -> bool {
        self.sources.get_mut(source).is_some_and(|slot| {
            let list = &mut slot.list;
            slot.shared.entries.fetch_failed(list, now_ms, jitter)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared_keys::tests::FakeSharedData;

    const NOW: u64 = 1_800_000_000_000;

    /// Two VMs of one process (one store), one revocation source.
    fn two_vms() -> (VmState<FakeSharedData>, VmState<FakeSharedData>) {
        let json = r#"{"user_pools":[{"user_pool_id":"us-east-1_Rev0ked1","jwks_cluster":"c",
            "revocations":{"cluster":"r","uri":"http://r/doc.json","refresh_seconds":10}}]}"#;
        crate::vm::tests::two_vms(json, NOW)
    }

    fn doc(sessions: &str) -> Vec<u8> {
        format!(
            r#"{{"version":1,"generated_at":7,"max_token_lifetime_seconds":86400,"revoked_jti":{{{sessions}}},"signed_out":{{}}}}"#
        )
        .into_bytes()
    }

    fn ok(body: &[u8]) -> CalloutAnswer<'static> {
        CalloutAnswer {
            status: Some("200"),
            body_size: body.len(),
        }
    }

    #[test]
    fn one_vm_of_the_process_claims_a_due_revocation_fetch() {
        let (mut a, mut b) = two_vms();
        let claimed = a.claim_due_revocation_fetches(NOW);
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            (claimed[0].cluster.as_str(), claimed[0].path.as_str()),
            ("r", "/doc.json")
        );
        b.sync_pools();
        assert!(b.claim_due_revocation_fetches(NOW).is_empty());
    }

    #[test]
    fn a_valid_document_loads_then_the_same_bytes_are_only_a_refresh() {
        let (mut a, _) = two_vms();
        a.claim_due_revocation_fetches(NOW);
        let body = doc(r#""s1":99999999999"#);
        let loaded = a.revocation_answer(0, NOW, ok(&body), &body, 0);
        assert_eq!(
            loaded,
            RevocationResult::Loaded {
                generated_at: 7,
                bytes: body.len(),
                revoked_ids: 1,
                signed_out_users: 0,
                dropped_expired: 0
            }
        );
        // Next refresh, 10 s later: the same document is not parsed again.
        assert_eq!(a.claim_due_revocation_fetches(NOW + 10_000).len(), 1);
        let again = a.revocation_answer(0, NOW + 10_000, ok(&body), &body, 0);
        assert_eq!(again, RevocationResult::Unchanged);
    }

    #[test]
    fn a_malformed_or_failed_answer_keeps_the_list_and_backs_off() {
        let (mut a, _) = two_vms();
        a.claim_due_revocation_fetches(NOW);
        let body = doc(r#""s1":99999999999"#);
        a.revocation_answer(0, NOW, ok(&body), &body, 0);
        let now = NOW + 10_000;
        assert_eq!(a.claim_due_revocation_fetches(now).len(), 1);
        let bad = b"{\"version\":2}".to_vec();
        assert!(a.wants_revocation_body(0, ok(&bad)));
        match a.revocation_answer(0, now, ok(&bad), &bad, 0) {
            RevocationResult::Failed { keeping_list, .. } => assert!(keeping_list),
            other => panic!("{other:?}"),
        }
        assert!(
            a.claim_due_revocation_fetches(now + 1).is_empty(),
            "backed off"
        );
        let failed = CalloutAnswer {
            status: Some("503"),
            body_size: 0,
        };
        assert!(!a.wants_revocation_body(0, failed));
        assert!(a.sources[0]
            .list
            .keys()
            .is_some_and(|l| l.revoked_ids() == 1));
    }

    #[test]
    fn a_vm_that_ends_mid_fetch_releases_only_its_own_revocation_lease() {
        let (mut a, mut b) = two_vms();
        assert_eq!(a.claim_due_revocation_fetches(NOW).len(), 1);
        a.abandon([crate::fetch::Fetch::Revocations(0)]);
        b.sync_pools();
        assert_eq!(b.claim_due_revocation_fetches(NOW + 10).len(), 1);
        a.abandon([crate::fetch::Fetch::Revocations(0)]);
        a.sync_pools();
        assert!(a.claim_due_revocation_fetches(NOW + 20).is_empty());
    }
}
