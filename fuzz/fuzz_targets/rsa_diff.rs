//! Differential check of the module's own RSA verifier (`cognito_authorizer::rsa`) against
//! RustCrypto's `rsa` crate (0.10, on crypto-bigint), on signatures made with real private keys.
//!
//! Keys: the fixed TEST-ONLY key pairs of `fixtures/rsa_test_keys.json` (their private halves
//! are stored on purpose and sign nothing real; `fixtures/rsa_test_keys.py` regenerates them):
//! two 2048-bit, one 3072, one 4096, and two whose size is not a multiple of 8 bits (2049:
//! k = emLen + 1 for PSS; 3077: four unused top bits of EM).
//!
//! Input (hand-parsed, missing bytes read as 0): `key, hash, scheme, mode, variant, mlen`, then
//! `mlen` message bytes, then the tail, which the mode reads parameters from. A PSS salt comes
//! first wherever a PSS signature or encoding is made: a length byte, then that many bytes, cut
//! or zero-padded to hLen (so that seeds stay short: every byte of a short input is likelier to
//! be mutated, and this target runs slowly). Modes:
//!
//! - `valid` (0): the `rsa` crate signs properly (PKCS#1 v1.5 is deterministic; PSS with the
//!   tail's salt, salt length = hash length). Both verifiers must accept.
//! - `mutated` (1): a valid signature, then up to 8 edits from the tail: a bit flipped, a byte
//!   set, truncated at either end, extended, leading zeros added or removed, or the message
//!   changed.
//! - `crafted` (2): an encoded message EM built by hand (independently of both verifiers) and
//!   raised to `d` mod n with `rsa::hazmat::rsa_decrypt` (or, when EM ≥ n, EM itself as the
//!   signature). PKCS#1 v1.5: the exact EM (a control: both must accept), trailing garbage after
//!   a shorter 0xff run, non-0xff filler, a missing 00 separator, BER long-form lengths in the
//!   DigestInfo, no NULL parameters, a wrong hash OID or another algorithm's whole DigestInfo,
//!   the hash of another message, a wrong block type / leading byte, a short or long hash, and
//!   arbitrary byte edits. PSS: the exact EM (control), another trailer, salt lengths 0, h−1,
//!   h+1, max or any, nonzero top bits (or a nonzero extra top byte when k > emLen), emBits off
//!   by one, MGF1 or H of another hash, a broken separator or zero padding, another message's
//!   hash, edits before or after masking, and a whole valid encoding under another hash.
//! - `raw` (3): s = n, n + j, n − 1, all-0xff, 0, 1, a valid signature + n, a valid signature
//!   one byte short (leading byte dropped) or long (leading 00), the tail as-is, empty.
//!
//! Invariants (panic names, see `FUZZ_TOLERATE` in fuzz/README.md):
//! - `rsa-disagreement`: ours and the `rsa` crate give the same answer for every (key, hash,
//!   scheme, message, signature). The `rsa` crate is mapped strictly: PSS through
//!   `Pss::new_with_salt::<D>(hLen)` (a fixed salt length, never the auto-detected one that
//!   `salt_len: None` would give), PKCS#1 v1.5 through `Pkcs1v15Sign::new::<D>()` (the
//!   DigestInfo prefix of the hash).
//! - `rsa-length`: ours refuses every signature that is not exactly k bytes (RFC 8017 §8.2.2
//!   step 1, §8.1.2 step 1; JWS gives no other rule). This one is checked on its own so that it
//!   holds whatever the other side does.
//! - `rsa-valid-refused`: `valid` signatures and the crafted exact encodings verify with both
//!   (the harness is not vacuous).
//!
//! Known differences: none excluded. `rsa` 0.10 refuses any signature that is not k bytes long
//! and any s ≥ n, like ours, so every input is compared (`rsa` 0.9.10 differed here: its PSS path
//! checked the length but not s < n, so s + n verified like s; 0.10 checks both).
#![no_main]

#[allow(unused_macros)]
#[macro_use]
#[path = "common.rs"]
mod common;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use cognito_authorizer::algorithm::DigestKind;
use cognito_authorizer::rsa::{digest as hash, RsaPublicKey as OurKey};
use libfuzzer_sys::fuzz_target;
use rsa::hazmat::rsa_decrypt;
use rsa::rand_core::{TryCryptoRng, TryRng};
use rsa::sha2::{Digest, Sha256, Sha384, Sha512};
use rsa::traits::PublicKeyParts;
use rsa::{BoxedUint, Pkcs1v15Sign, PrivateKey, Pss, PublicKey};
use serde_json::Value;

struct Key {
    name: String,
    bits: usize,
    /// Modulus length in bytes: the length of every signature.
    k: usize,
    /// Modulus, `k` big-endian bytes.
    n: Vec<u8>,
    private: PrivateKey,
    public: PublicKey,
    ours: OurKey,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("fixture hex"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn keys() -> &'static [Key] {
    static KEYS: OnceLock<Vec<Key>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let json: Value = serde_json::from_slice(include_bytes!("../fixtures/rsa_test_keys.json"))
            .expect("fixture json");
        json["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| {
                let field = |f: &str| unhex(k[f].as_str().expect("hex field"));
                let uint = |f: &str| BoxedUint::from_be_slice_vartime(&field(f));
                let private = PrivateKey::from_components(
                    uint("n"),
                    uint("e"),
                    uint("d"),
                    vec![uint("p"), uint("q")],
                )
                .expect("fixture key");
                let bits = k["bits"].as_u64().expect("bits") as usize;
                let k_len = private.size();
                let n = left_pad(&field("n"), k_len);
                let ours = OurKey::new(&n, &field("e")).expect("our verifier takes the key");
                assert_eq!(ours.bits(), bits);
                assert_eq!(k_len, bits.div_ceil(8));
                Key {
                    name: k["name"].as_str().expect("name").to_string(),
                    bits,
                    k: k_len,
                    n,
                    public: private.to_public_key(),
                    private,
                    ours,
                }
            })
            .collect()
    })
}

fn left_pad(b: &[u8], len: usize) -> Vec<u8> {
    let skip = b.len().saturating_sub(len);
    let b = &b[skip..];
    let mut out = vec![0u8; len - b.len()];
    out.extend_from_slice(b);
    out
}

fn h_len(kind: DigestKind) -> usize {
    match kind {
        DigestKind::Sha256 => 32,
        DigestKind::Sha384 => 48,
        DigestKind::Sha512 => 64,
    }
}

const KINDS: [DigestKind; 3] = [DigestKind::Sha256, DigestKind::Sha384, DigestKind::Sha512];

/// The last byte of the hash's OID (2.16.840.1.101.3.4.2.x).
fn oid_last(kind: DigestKind) -> u8 {
    match kind {
        DigestKind::Sha256 => 1,
        DigestKind::Sha384 => 2,
        DigestKind::Sha512 => 3,
    }
}

/// One of the two other hashes.
fn other_kind(kind: DigestKind, pick: u8) -> DigestKind {
    let others: Vec<DigestKind> = KINDS.into_iter().filter(|k| *k != kind).collect();
    others[usize::from(pick & 1)]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scheme {
    Pkcs1v15,
    Pss,
}

/// Fuzzer bytes, read front to back; exhausted input reads as zeros.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> usize {
        usize::from(self.byte()) << 8 | usize::from(self.byte())
    }
    /// Up to `n` bytes (fewer when the input ends).
    fn up_to(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    /// Exactly `n` bytes, zero-padded.
    fn exactly(&mut self, n: usize) -> Vec<u8> {
        let mut v = self.up_to(n).to_vec();
        v.resize(n, 0);
        v
    }
    /// A PSS salt of `h_len` bytes: a length byte, then up to that many bytes (cut or
    /// zero-padded).
    fn salt(&mut self, h_len: usize) -> Vec<u8> {
        let n = usize::from(self.byte());
        let mut s = self.up_to(n).to_vec();
        s.resize(h_len, 0);
        s
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// Gives the PSS salt (the first fill) from the input, then a fixed stream (unused: signing
/// is unblinded, but the rng must not be a trap if that changes).
struct SaltRng {
    salt: Vec<u8>,
    used: bool,
    state: u64,
}

impl TryRng for SaltRng {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        if !self.used && dst.len() == self.salt.len() {
            self.used = true;
            dst.copy_from_slice(&self.salt);
            return Ok(());
        }
        for b in dst {
            // xorshift64*
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            *b = (self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
        }
        Ok(())
    }
}

impl TryCryptoRng for SaltRng {}

/// Private operations are the cost of this target (tens of ms under ASan and coverage for a
/// 4096-bit key, where verifying is well under one): their results are remembered by their
/// inputs (both are deterministic), so that mutations away from the message and salt or the
/// encoded message cost no new one. Bounded: forgotten all at once when full.
fn memo(id: Vec<u8>, make: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
    static MEMO: OnceLock<Mutex<HashMap<Vec<u8>, Vec<u8>>>> = OnceLock::new();
    let memo = MEMO.get_or_init(Default::default);
    if let Some(sig) = memo.lock().expect("memo").get(&id) {
        return sig.clone();
    }
    let sig = make();
    let mut memo = memo.lock().expect("memo");
    if memo.len() >= 4096 {
        memo.clear();
    }
    memo.insert(id, sig.clone());
    sig
}

/// A valid signature by the `rsa` crate.
fn sign_valid(key: &Key, kind: DigestKind, scheme: Scheme, msg: &[u8], salt: &[u8]) -> Vec<u8> {
    let mut id = format!("valid {} {kind:?} {scheme:?} {}:", key.name, msg.len()).into_bytes();
    id.extend(msg);
    id.extend(salt);
    memo(id, || sign_valid_now(key, kind, scheme, msg, salt))
}

fn sign_valid_now(key: &Key, kind: DigestKind, scheme: Scheme, msg: &[u8], salt: &[u8]) -> Vec<u8> {
    let h = hash(kind, &[msg]);
    let mut rng = SaltRng {
        salt: salt.to_vec(),
        used: false,
        state: 0x9e37_79b9_7f4a_7c15,
    };
    fn pss<D: Digest>(h: usize) -> Pss<D> {
        let mut p = Pss::<D>::new_with_salt(h);
        p.blinded = false;
        p
    }
    let hl = h_len(kind);
    let sig = match (scheme, kind) {
        (Scheme::Pkcs1v15, DigestKind::Sha256) => {
            key.private.sign(Pkcs1v15Sign::new::<Sha256>(), &h)
        }
        (Scheme::Pkcs1v15, DigestKind::Sha384) => {
            key.private.sign(Pkcs1v15Sign::new::<Sha384>(), &h)
        }
        (Scheme::Pkcs1v15, DigestKind::Sha512) => {
            key.private.sign(Pkcs1v15Sign::new::<Sha512>(), &h)
        }
        (Scheme::Pss, DigestKind::Sha256) => {
            key.private.sign_with_rng(&mut rng, pss::<Sha256>(hl), &h)
        }
        (Scheme::Pss, DigestKind::Sha384) => {
            key.private.sign_with_rng(&mut rng, pss::<Sha384>(hl), &h)
        }
        (Scheme::Pss, DigestKind::Sha512) => {
            key.private.sign_with_rng(&mut rng, pss::<Sha512>(hl), &h)
        }
    }
    .expect("the rsa crate signs");
    assert!(scheme == Scheme::Pkcs1v15 || rng.used, "PSS salt not taken");
    sig
}

/// `em^d mod n` as k bytes; EM itself when it is not below n (no signature maps to it).
fn raw_sign(key: &Key, em: &[u8]) -> Vec<u8> {
    let mut id = format!("raw {}:", key.name).into_bytes();
    id.extend(em);
    memo(id, || raw_sign_now(key, em))
}

fn raw_sign_now(key: &Key, em: &[u8]) -> Vec<u8> {
    assert_eq!(em.len(), key.k);
    let c = BoxedUint::from_be_slice(em, key.private.n_bits_precision()).expect("k bytes fit");
    if c >= *key.private.n().as_ref() {
        return em.to_vec();
    }
    let m = rsa_decrypt(None::<&mut SaltRng>, &key.private, &c).expect("raw private op");
    left_pad(&m.to_be_bytes(), key.k)
}

fn ours(key: &Key, kind: DigestKind, scheme: Scheme, msg: &[u8], sig: &[u8]) -> bool {
    match scheme {
        Scheme::Pkcs1v15 => key.ours.verify_pkcs1v15(kind, msg, sig),
        Scheme::Pss => key.ours.verify_pss(kind, msg, sig),
    }
}

/// The `rsa` crate, mapped strictly: PSS salt length exactly hLen, PKCS#1 v1.5 with the hash's
/// DigestInfo prefix.
fn theirs(key: &Key, kind: DigestKind, scheme: Scheme, msg: &[u8], sig: &[u8]) -> bool {
    let h = hash(kind, &[msg]);
    let hl = h_len(kind);
    let p = &key.public;
    match (scheme, kind) {
        (Scheme::Pkcs1v15, DigestKind::Sha256) => p.verify(Pkcs1v15Sign::new::<Sha256>(), &h, sig),
        (Scheme::Pkcs1v15, DigestKind::Sha384) => p.verify(Pkcs1v15Sign::new::<Sha384>(), &h, sig),
        (Scheme::Pkcs1v15, DigestKind::Sha512) => p.verify(Pkcs1v15Sign::new::<Sha512>(), &h, sig),
        (Scheme::Pss, DigestKind::Sha256) => p.verify(Pss::<Sha256>::new_with_salt(hl), &h, sig),
        (Scheme::Pss, DigestKind::Sha384) => p.verify(Pss::<Sha384>::new_with_salt(hl), &h, sig),
        (Scheme::Pss, DigestKind::Sha512) => p.verify(Pss::<Sha512>::new_with_salt(hl), &h, sig),
    }
    .is_ok()
}

// ---- PKCS#1 v1.5 encodings -------------------------------------------------------------

/// A DER length, or its BER long form (`81 len`) when `long`.
fn der_len(len: usize, long: bool) -> Vec<u8> {
    let len = len as u8;
    if long {
        vec![0x81, len]
    } else {
        vec![len]
    }
}

/// `DigestInfo { AlgorithmIdentifier { OID 2.16.840.1.101.3.4.2.<oid_last>, NULL? }, OCTET
/// STRING hash }`; `long` bit 0..3: long-form length of the outer SEQUENCE, the
/// AlgorithmIdentifier, the OID, the OCTET STRING.
fn digest_info(oid_last: u8, null: bool, long: u8, hash: &[u8]) -> Vec<u8> {
    let oid_body = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, oid_last];
    let mut oid = vec![0x06];
    oid.extend(der_len(oid_body.len(), long & 4 != 0));
    oid.extend(oid_body);
    let mut alg_body = oid;
    if null {
        alg_body.extend([0x05, 0x00]);
    }
    let mut alg = vec![0x30];
    alg.extend(der_len(alg_body.len(), long & 2 != 0));
    alg.extend(alg_body);
    let mut octet = vec![0x04];
    octet.extend(der_len(hash.len(), long & 8 != 0));
    octet.extend(hash);
    let mut body = alg;
    body.extend(octet);
    let mut out = vec![0x30];
    out.extend(der_len(body.len(), long & 1 != 0));
    out.extend(body);
    out
}

/// `00 01 FF… 00 T garbage`, k bytes (the 0xff run absorbs the length).
fn pkcs1_em(k: usize, t: &[u8], garbage: &[u8]) -> Vec<u8> {
    let ff = k - 3 - t.len() - garbage.len();
    let mut em = vec![0x00, 0x01];
    em.resize(2 + ff, 0xff);
    em.push(0x00);
    em.extend(t);
    em.extend(garbage);
    em
}

/// Crafted PKCS#1 v1.5 EM; `true` for the exact encoding (a control).
fn craft_pkcs1(
    key: &Key,
    kind: DigestKind,
    msg: &[u8],
    variant: u8,
    t: &mut Cursor,
) -> (Vec<u8>, bool) {
    let k = key.k;
    let h = hash(kind, &[msg]);
    let exact_t = digest_info(oid_last(kind), true, 0, &h);
    let exact = pkcs1_em(k, &exact_t, &[]);
    let ff_len = k - 3 - exact_t.len();
    let em = match variant % 11 {
        0 => return (exact, true),
        // Trailing garbage after the hash, the 0xff run shorter.
        1 => {
            let g = 1 + usize::from(t.byte() % 16);
            let garbage = t.exactly(g);
            pkcs1_em(k, &exact_t, &garbage)
        }
        // A filler byte that is not 0xff.
        2 => {
            let mut em = exact;
            let pos = 2 + t.u16() % ff_len;
            let v = t.byte();
            em[pos] = if v == 0xff { 0xfe } else { v };
            em
        }
        // No 00 separator.
        3 => {
            let mut em = exact;
            let v = t.byte();
            em[2 + ff_len] = if v == 0 { 0xff } else { v };
            em
        }
        // BER long-form lengths.
        4 => {
            let long = 1 + t.byte() % 15;
            pkcs1_em(k, &digest_info(oid_last(kind), true, long, &h), &[])
        }
        // No NULL parameters.
        5 => pkcs1_em(k, &digest_info(oid_last(kind), false, 0, &h), &[]),
        // Wrong OID: another hash's OID over this hash, or another algorithm's whole DigestInfo.
        6 => {
            let pick = t.byte();
            let other = other_kind(kind, pick);
            if pick & 2 == 0 {
                let v = t.byte();
                let last = if v == oid_last(kind) {
                    oid_last(other)
                } else {
                    v
                };
                pkcs1_em(k, &digest_info(last, true, 0, &h), &[])
            } else {
                let oh = hash(other, &[msg]);
                pkcs1_em(k, &digest_info(oid_last(other), true, 0, &oh), &[])
            }
        }
        // The hash of another message.
        7 => {
            let mut other = t.rest().to_vec();
            if other == msg {
                other.push(0);
            }
            pkcs1_em(
                k,
                &digest_info(oid_last(kind), true, 0, &hash(kind, &[&other])),
                &[],
            )
        }
        // Wrong block type, a nonzero leading byte, or the whole EM shifted right by a 00.
        8 => match t.byte() % 3 {
            0 => {
                let mut em = exact;
                let v = t.byte();
                em[1] = if v == 1 { 2 } else { v };
                em
            }
            1 => {
                let mut em = exact;
                em[0] = t.byte() | 1;
                em
            }
            _ => {
                let mut em = vec![0x00];
                em.extend(&exact[..k - 1]);
                em
            }
        },
        // A hash one byte short or long (the OCTET STRING length matching it).
        9 => {
            let mut hh = h.clone();
            if t.byte() & 1 == 0 {
                hh.pop();
            } else {
                hh.push(t.byte());
            }
            pkcs1_em(k, &digest_info(oid_last(kind), true, 0, &hh), &[])
        }
        // Arbitrary byte edits.
        _ => {
            let mut em = exact;
            for _ in 0..1 + t.byte() % 4 {
                let pos = t.u16() % k;
                em[pos] ^= t.byte().max(1);
            }
            em
        }
    };
    (em, false)
}

// ---- PSS encodings -----------------------------------------------------------------------

fn mgf1(kind: DigestKind, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut counter = 0u32;
    while out.len() < len {
        out.extend(hash(kind, &[seed, &counter.to_be_bytes()]));
        counter += 1;
    }
    out.truncate(len);
    out
}

/// EMSA-PSS-ENCODE (RFC 8017 §9.1.1) with every parameter open to damage.
struct PssEnc {
    /// Hash of H.
    h_kind: DigestKind,
    mgf_kind: DigestKind,
    m_hash: Vec<u8>,
    salt: Vec<u8>,
    em_bits: usize,
    clear_top: bool,
    trailer: u8,
    separator: u8,
    /// XOR into DB before masking: (position, value).
    db_xor: Vec<(usize, u8)>,
    /// XOR into the finished k-byte EM.
    em_xor: Vec<(usize, u8)>,
    /// OR into the first byte of maskedDB after the top bits are cleared.
    top_or: u8,
    /// The byte above emLen when k > emLen (0 in a valid encoding).
    extra_top: u8,
}

impl PssEnc {
    fn new(kind: DigestKind, key: &Key, msg: &[u8], salt: Vec<u8>) -> PssEnc {
        PssEnc {
            h_kind: kind,
            mgf_kind: kind,
            m_hash: hash(kind, &[msg]),
            salt,
            em_bits: key.bits - 1,
            clear_top: true,
            trailer: 0xbc,
            separator: 0x01,
            db_xor: Vec::new(),
            em_xor: Vec::new(),
            top_or: 0,
            extra_top: 0,
        }
    }

    fn em_len(&self) -> usize {
        self.em_bits.div_ceil(8)
    }

    /// The longest salt that fits.
    fn max_salt(&self) -> usize {
        self.em_len() - h_len(self.h_kind) - 2
    }

    /// k bytes.
    fn encode(&self, k: usize) -> Vec<u8> {
        let em_len = self.em_len();
        let hl = h_len(self.h_kind);
        let salt = &self.salt[..self.salt.len().min(self.max_salt())];
        let h = hash(self.h_kind, &[&[0u8; 8], &self.m_hash, salt]);
        let db_len = em_len - hl - 1;
        let mut db = vec![0u8; db_len - salt.len() - 1];
        db.push(self.separator);
        db.extend(salt);
        for &(pos, x) in &self.db_xor {
            db[pos % db_len] ^= x;
        }
        for (d, m) in db.iter_mut().zip(mgf1(self.mgf_kind, &h, db_len)) {
            *d ^= m;
        }
        if self.clear_top {
            db[0] &= 0xff >> (8 * em_len - self.em_bits);
        }
        db[0] |= self.top_or;
        let mut em = vec![0u8; k - em_len];
        if let Some(first) = em.first_mut() {
            *first = self.extra_top;
        }
        em.extend(db);
        em.extend(h);
        em.push(self.trailer);
        for &(pos, x) in &self.em_xor {
            em[pos % k] ^= x;
        }
        em
    }
}

/// Crafted PSS EM; `true` for the exact encoding (a control).
fn craft_pss(
    key: &Key,
    kind: DigestKind,
    msg: &[u8],
    variant: u8,
    t: &mut Cursor,
) -> (Vec<u8>, bool) {
    let k = key.k;
    let hl = h_len(kind);
    let salt = t.salt(hl);
    let mut e = PssEnc::new(kind, key, msg, salt);
    let unused = 8 * e.em_len() - e.em_bits;
    match variant % 13 {
        0 => return (e.encode(k), true),
        // Another trailer byte.
        1 => {
            let v = t.byte();
            e.trailer = if v == 0xbc { 0xbd } else { v };
        }
        // Salt lengths other than hLen.
        2 => {
            let len = match t.byte() % 5 {
                0 => 0,
                1 => hl - 1,
                2 => hl + 1,
                3 => e.max_salt(),
                _ => usize::from(t.byte()),
            };
            let len = if len == hl { hl + 1 } else { len };
            e.salt = t.exactly(len);
        }
        // A nonzero unused top bit, or a nonzero extra top byte when there is none (k > emLen).
        3 => {
            let pick = t.byte();
            if unused > 0 {
                e.top_or = 0x80 >> (usize::from(pick) % unused);
            } else {
                e.extra_top = pick | 1;
            }
        }
        // emBits off by one (either way): the top-bit mask and, for 2049 bits, the layout move.
        4 => {
            e.em_bits = if t.byte() & 1 == 0 {
                (key.bits).min(8 * k)
            } else {
                key.bits - 2
            };
        }
        // MGF1 with another hash.
        5 => e.mgf_kind = other_kind(kind, t.byte()),
        // H with another hash (of the right length or not).
        6 => e.h_kind = other_kind(kind, t.byte()),
        // Broken separator.
        7 => {
            let v = t.byte();
            e.separator = if v == 1 { 0 } else { v };
        }
        // Nonzero zero padding.
        8 => {
            let ps_len = e.em_len() - hl - hl - 2;
            let pos = t.u16() % ps_len;
            e.db_xor.push((pos, t.byte().max(1)));
        }
        // Another message's hash.
        9 => {
            let mut other = t.rest().to_vec();
            if other == msg {
                other.push(0);
            }
            e.m_hash = hash(kind, &[&other]);
        }
        // Edits before masking.
        10 => {
            for _ in 0..1 + t.byte() % 4 {
                let pos = t.u16();
                e.db_xor.push((pos, t.byte().max(1)));
            }
        }
        // Edits of the finished EM.
        11 => {
            for _ in 0..1 + t.byte() % 4 {
                let pos = t.u16();
                e.em_xor.push((pos, t.byte().max(1)));
            }
        }
        // A whole valid encoding under another hash (PS384 presented as PS256, ...).
        _ => {
            let other = other_kind(kind, t.byte());
            e.h_kind = other;
            e.mgf_kind = other;
            e.m_hash = hash(other, &[msg]);
            e.salt.resize(h_len(other), 0x5a);
        }
    }
    (e.encode(k), false)
}

// ---- raw values and mutations ------------------------------------------------------------

/// Big-endian `a + b` (b small), one byte longer on carry.
fn add_small(a: &[u8], b: u16) -> Vec<u8> {
    add(a, &b.to_be_bytes())
}

/// Big-endian `a + b`, one byte longer on carry.
fn add(a: &[u8], b: &[u8]) -> Vec<u8> {
    let len = a.len().max(b.len());
    let a = left_pad(a, len);
    let b = left_pad(b, len);
    let mut out = vec![0u8; len];
    let mut carry = 0u16;
    for i in (0..len).rev() {
        let s = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = s as u8;
        carry = s >> 8;
    }
    if carry != 0 {
        out.insert(0, carry as u8);
    }
    out
}

fn raw(
    key: &Key,
    variant: u8,
    valid: impl FnOnce(&mut Cursor) -> Vec<u8>,
    t: &mut Cursor,
) -> Vec<u8> {
    let k = key.k;
    let one = left_pad(&[1], k);
    match variant % 12 {
        0 => key.n.clone(),
        1 => add_small(&key.n, 1 + u16::from(t.byte())),
        2 => vec![0xff; k],
        3 => vec![0; k],
        4 => one,
        // n − 1: n is odd, so only the last byte changes.
        5 => {
            let mut s = key.n.clone();
            s[k - 1] -= 1;
            s
        }
        6 => add(&valid(t), &key.n),
        7 => valid(t)[1..].to_vec(),
        8 => {
            let mut s = vec![0];
            s.extend(valid(t));
            s
        }
        9 => t.rest().to_vec(),
        10 => Vec::new(),
        // The tail as a k-byte value.
        _ => left_pad(t.rest(), k),
    }
}

fn mutate(sig: &mut Vec<u8>, msg: &mut Vec<u8>, t: &mut Cursor) {
    for _ in 0..8 {
        if t.is_empty() {
            return;
        }
        let op = t.byte() % 8;
        match op {
            0 if !sig.is_empty() => {
                let pos = t.u16() % sig.len();
                sig[pos] ^= 1 << (t.byte() % 8);
            }
            1 if !sig.is_empty() => {
                let pos = t.u16() % sig.len();
                sig[pos] = t.byte();
            }
            2 => {
                let n = 1 + usize::from(t.byte() % 4);
                sig.truncate(sig.len().saturating_sub(n));
            }
            3 => {
                let n = (1 + usize::from(t.byte() % 4)).min(sig.len());
                sig.drain(..n);
            }
            4 => sig.push(t.byte()),
            5 => {
                for _ in 0..1 + t.byte() % 2 {
                    sig.insert(0, 0);
                }
            }
            6 => {
                let zeros = sig.iter().take_while(|b| **b == 0).count();
                sig.drain(..zeros.max(1).min(sig.len()));
            }
            7 => {
                if msg.is_empty() {
                    msg.push(t.byte());
                } else {
                    let pos = t.u16() % msg.len();
                    msg[pos] ^= 1 << (t.byte() % 8);
                }
            }
            _ => {}
        }
    }
}

const MODES: [&str; 4] = ["valid", "mutated", "crafted", "raw"];

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let mut c = Cursor(data);
    let key = &keys[usize::from(c.byte()) % keys.len()];
    let kind = KINDS[usize::from(c.byte()) % 3];
    let scheme = if c.byte() & 1 == 0 {
        Scheme::Pkcs1v15
    } else {
        Scheme::Pss
    };
    let mode = c.byte() % 4;
    let variant = c.byte();
    let mlen = usize::from(c.byte());
    let mut msg = c.up_to(mlen).to_vec();
    let t = &mut c;
    // The PSS salt comes first wherever a valid signature is made.
    let hl = h_len(kind);
    let salt = |t: &mut Cursor| match scheme {
        Scheme::Pkcs1v15 => Vec::new(),
        Scheme::Pss => t.salt(hl),
    };

    let mut control = false;
    let sig = match mode {
        0 => {
            let salt = salt(t);
            control = true;
            sign_valid(key, kind, scheme, &msg, &salt)
        }
        1 => {
            let salt = salt(t);
            let mut sig = sign_valid(key, kind, scheme, &msg, &salt);
            mutate(&mut sig, &mut msg, t);
            sig
        }
        2 => {
            let (em, exact) = match scheme {
                Scheme::Pkcs1v15 => craft_pkcs1(key, kind, &msg, variant, t),
                Scheme::Pss => craft_pss(key, kind, &msg, variant, t),
            };
            control = exact;
            raw_sign(key, &em)
        }
        _ => {
            let m = msg.clone();
            let valid = |t: &mut Cursor| {
                let salt = salt(t);
                sign_valid(key, kind, scheme, &m, &salt)
            };
            raw(key, variant, valid, t)
        }
    };

    let ours = ours(key, kind, scheme, &msg, &sig);
    let theirs = theirs(key, kind, scheme, &msg, &sig);
    let what = || {
        format!(
            "key {} ({} bits, k={}), {scheme:?}, {kind:?}, mode {} variant {}: ours={ours} \
             theirs={theirs}; signature {} bytes {}…{}; message {} bytes {}",
            key.name,
            key.bits,
            key.k,
            MODES[usize::from(mode)],
            variant,
            sig.len(),
            hex(&sig[..sig.len().min(16)]),
            hex(&sig[sig.len().saturating_sub(8)..]),
            msg.len(),
            hex(&msg[..msg.len().min(32)]),
        )
    };
    check!("rsa-length", sig.len() == key.k || !ours, "{}", what());
    check!("rsa-disagreement", ours == theirs, "{}", what());
    if control {
        check!("rsa-valid-refused", ours && theirs, "{}", what());
    }
});
