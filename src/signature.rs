//! Signature verification backends. The module verifies every algorithm it carries itself
//! (`jwks::KeyMaterial`: RSA by `rsa`, the optional curves by RustCrypto / ed25519-compact);
//! a host may offer a faster one. Envoy registers the
//! foreign function `verify_signature` (BoringSSL `EVP_DigestVerify`), about 50 times faster
//! than RSA emulated in wasm32, which can check RSA PKCS#1 v1.5 (RS256/384/512) and ECDSA
//! (ES256/384, with the JOSE `r‖s` signature converted to DER).
//!
//! This module holds the pure parts: the DER public keys (built once per key at key-load
//! time), the signature conversion, the host's start-up self-test ([`HostSupport`]) and
//! the protobuf messages of Envoy's function
//! (`VerifySignatureArguments{hash_function=1, public_key=2, signature=3, text=4}`,
//! `VerifySignatureResult{result=1, error=2}`). The glue performs the call.

use crate::algorithm::Algorithm;

/// A public key in the form a host crypto library imports: DER SubjectPublicKeyInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    pub kind: HostKeyKind,
    pub spki_der: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyKind {
    Rsa,
    EcP256,
    EcP384,
}

/// What a host backend is asked to check.
#[derive(Debug, Clone, Copy)]
pub struct HostCheck<'a> {
    /// Digest name as Envoy's crypto utility knows it.
    pub hash: &'static str,
    pub key: &'a HostKey,
    /// Signature in the encoding the host expects (DER for ECDSA).
    pub signature: &'a [u8],
    pub text: &'a [u8],
}

/// A signature backend other than the module's own (a host's crypto).
pub trait SignatureBackend {
    /// `Some(valid)`, or `None` when it cannot decide (not offered, failed): then the
    /// module's own verifier decides. It must never answer `Some(true)` for a signature it did not check.
    fn verify(&self, check: &HostCheck<'_>) -> Option<bool>;
}

/// No host crypto: the module verifies everything.
pub struct NoHostCrypto;

impl SignatureBackend for NoHostCrypto {
    fn verify(&self, _check: &HostCheck<'_>) -> Option<bool> {
        None
    }
}

/// The digest the host must use for `alg` with `key`, when the host can check it at all.
/// PS* (RSA-PSS) and EdDSA are not offered: Envoy's function uses the key's default padding
/// and a digest, which fits neither.
pub fn host_hash(alg: Algorithm, key: &HostKey) -> Option<&'static str> {
    match (alg, key.kind) {
        (Algorithm::RS256, HostKeyKind::Rsa) => Some("sha256"),
        (Algorithm::RS384, HostKeyKind::Rsa) => Some("sha384"),
        (Algorithm::RS512, HostKeyKind::Rsa) => Some("sha512"),
        (Algorithm::ES256, HostKeyKind::EcP256) => Some("sha256"),
        (Algorithm::ES384, HostKeyKind::EcP384) => Some("sha384"),
        _ => None,
    }
}

// --- DER -----------------------------------------------------------------------------------

fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or(&[]);
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
}

fn der(tag: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    der_len(content.len(), out);
    out.extend_from_slice(content);
}

/// A non-negative INTEGER from big-endian bytes: minimal, with a 0 byte when the top bit is set.
fn der_uint(bytes: &[u8], out: &mut Vec<u8>) {
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let trimmed = bytes.get(skip..).unwrap_or(&[]);
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der(0x02, &content, out);
}

const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

fn spki(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bit_string = Vec::with_capacity(key.len() + 1);
    bit_string.push(0); // no unused bits
    bit_string.extend_from_slice(key);
    let mut body = Vec::with_capacity(algorithm.len() + bit_string.len() + 8);
    der(0x30, algorithm, &mut body);
    der(0x03, &bit_string, &mut body);
    let mut out = Vec::with_capacity(body.len() + 4);
    der(0x30, &body, &mut out);
    out
}

/// SubjectPublicKeyInfo of an RSA key from its JWK `n` and `e`.
pub fn rsa_host_key(n: &[u8], e: &[u8]) -> HostKey {
    let mut algorithm = Vec::new();
    der(0x06, OID_RSA_ENCRYPTION, &mut algorithm);
    algorithm.extend_from_slice(&[0x05, 0x00]); // NULL parameters
    let mut ints = Vec::with_capacity(n.len() + e.len() + 8);
    der_uint(n, &mut ints);
    der_uint(e, &mut ints);
    let mut key = Vec::with_capacity(ints.len() + 4);
    der(0x30, &ints, &mut key);
    HostKey {
        kind: HostKeyKind::Rsa,
        spki_der: spki(&algorithm, &key),
    }
}

/// SubjectPublicKeyInfo of an EC key from its uncompressed SEC1 point (`04‖x‖y`).
pub fn ec_host_key(kind: HostKeyKind, sec1_point: &[u8]) -> Option<HostKey> {
    let curve = match kind {
        HostKeyKind::EcP256 => OID_P256,
        HostKeyKind::EcP384 => OID_P384,
        HostKeyKind::Rsa => return None,
    };
    let mut algorithm = Vec::new();
    der(0x06, OID_EC_PUBLIC_KEY, &mut algorithm);
    der(0x06, curve, &mut algorithm);
    Some(HostKey {
        kind,
        spki_der: spki(&algorithm, sec1_point),
    })
}

/// A JOSE ECDSA signature (`r‖s`, each exactly the curve size) as DER
/// `SEQUENCE { INTEGER r, INTEGER s }`. `None` when the length does not fit the curve.
pub fn ecdsa_signature_to_der(raw: &[u8], kind: HostKeyKind) -> Option<Vec<u8>> {
    let size = match kind {
        HostKeyKind::EcP256 => 32,
        HostKeyKind::EcP384 => 48,
        HostKeyKind::Rsa => return None,
    };
    if raw.len() != 2 * size {
        return None;
    }
    let (r, s) = raw.split_at(size);
    let mut ints = Vec::with_capacity(raw.len() + 8);
    der_uint(r, &mut ints);
    der_uint(s, &mut ints);
    let mut out = Vec::with_capacity(ints.len() + 3);
    der(0x30, &ints, &mut out);
    Some(out)
}

// --- protobuf ------------------------------------------------------------------------------

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(field: u64, value: &[u8], out: &mut Vec<u8>) {
    varint((field << 3) | 2, out);
    varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

/// `VerifySignatureArguments` as protobuf bytes.
pub fn encode_verify_arguments(check: &HostCheck<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        check.key.spki_der.len() + check.signature.len() + check.text.len() + 32,
    );
    bytes_field(1, check.hash.as_bytes(), &mut out);
    bytes_field(2, &check.key.spki_der, &mut out);
    bytes_field(3, check.signature, &mut out);
    bytes_field(4, check.text, &mut out);
    out
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// `VerifySignatureResult.result` from protobuf bytes. Absent means false (proto3
/// default); anything malformed is `None` (undecided).
pub fn decode_verify_result(bytes: &[u8]) -> Option<bool> {
    let mut pos = 0;
    let mut result = false;
    while pos < bytes.len() {
        let key = read_varint(bytes, &mut pos)?;
        match (key >> 3, key & 7) {
            (1, 0) => result = read_varint(bytes, &mut pos)? == 1,
            (_, 0) => {
                read_varint(bytes, &mut pos)?;
            }
            (_, 2) => {
                let len = usize::try_from(read_varint(bytes, &mut pos)?).ok()?;
                pos = pos.checked_add(len).filter(|end| *end <= bytes.len())?;
            }
            _ => return None,
        }
    }
    Some(result)
}

/// The key kinds a host backend passed its known-answer self-test for: only those are
/// checked by the host, the others by the module.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostSupport {
    pub rsa: bool,
    pub ec: bool,
}

impl HostSupport {
    /// Runs the self-test through `verify` (the host's function): it must accept each known
    /// signature and refuse it with one bit flipped. A host without the function (another
    /// proxy, an older Envoy) or one that answers wrongly is not used.
    pub fn detect(verify: impl Fn(&HostCheck<'_>) -> Option<bool>) -> HostSupport {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap_or_default();
        let passes = |key: Option<HostKey>, signature: Vec<u8>| {
            let Some(key) = key else { return false };
            let check = |signature: &[u8]| {
                verify(&HostCheck {
                    hash: "sha256",
                    key: &key,
                    signature,
                    text: self_test::MESSAGE,
                })
            };
            let mut flipped = signature.clone();
            if let Some(last) = flipped.last_mut() {
                *last ^= 1;
            }
            check(&signature) == Some(true) && check(&flipped) == Some(false)
        };
        let rsa_key = rsa_host_key(&b64(self_test::RSA_N), &b64(self_test::RSA_E));
        let mut point = vec![4];
        point.extend(b64(self_test::EC_X));
        point.extend(b64(self_test::EC_Y));
        let ec_signature = ecdsa_signature_to_der(&b64(self_test::EC_SIG), HostKeyKind::EcP256);
        HostSupport {
            rsa: passes(Some(rsa_key), b64(self_test::RSA_SIG)),
            ec: passes(
                ec_host_key(HostKeyKind::EcP256, &point),
                ec_signature.unwrap_or_default(),
            ),
        }
    }

    /// Whether the host checks keys of this kind.
    pub fn checks(self, kind: HostKeyKind) -> bool {
        match kind {
            HostKeyKind::Rsa => self.rsa,
            HostKeyKind::EcP256 | HostKeyKind::EcP384 => self.ec,
        }
    }

    /// Who checks which signatures, for the start-up log.
    pub fn summary(self) -> String {
        let by = |host: bool| if host { "host crypto" } else { "the module" };
        let ecdsa = if Algorithm::ES256.is_built_in() {
            format!("by {}", by(self.ec))
        } else {
            "not built in".to_string()
        };
        format!(
            "RSA by {}, ECDSA {ecdsa}, others by the module (built in: {})",
            by(self.rsa),
            Algorithm::built_in_names()
        )
    }
}

/// A host's signature function (`verify`) as a backend: asked only about the key kinds its
/// self-test passed; the module verifies the others.
#[derive(Debug, Clone, Copy)]
pub struct HostBackend<F> {
    pub support: HostSupport,
    verify: F,
}

impl<F: Fn(&HostCheck<'_>) -> Option<bool>> HostBackend<F> {
    /// Self-tests `verify` when `use_host` (configuration `signature_backend: auto`);
    /// otherwise the host is never asked.
    pub fn new(verify: F, use_host: bool) -> Self {
        let support = if use_host {
            HostSupport::detect(&verify)
        } else {
            HostSupport::default()
        };
        HostBackend { support, verify }
    }
}

impl<F: Fn(&HostCheck<'_>) -> Option<bool>> SignatureBackend for HostBackend<F> {
    fn verify(&self, check: &HostCheck<'_>) -> Option<bool> {
        if self.support.checks(check.key.kind) {
            (self.verify)(check)
        } else {
            None
        }
    }
}

/// Known answers for the start-up self-test of a host backend: a key, a message and a valid
/// signature per kind (generated once with OpenSSL). The host is used only if it accepts
/// these and refuses them with one bit flipped.
pub mod self_test {
    pub const MESSAGE: &[u8] = b"cognito-authorizer host crypto self-test";
    pub const RSA_N: &str = "vTlx6YPpim0KhqFgtixUzw8-oID3dBSwZjXWVkErBU6ptDm11QDqQGXANgowGESTTKea_gHOSTTeOQf3-gTM-V9b4vkNC0E52UpKSt39bgtZM-8Ix5eHTFNFTqBDRTV4awxjJO9hAuDeYVydQnpBxv3icPn91yb7BPFcCILmx4xmpq1FUQ77Lm-3vpPWI0X3_JY0DFiC-zGZ_N6quA2CroJ-zLEaA5-T3IuK2V6Fecci2kL5OcreqbpjBuLpEP_1L9-4cg4hpkdgUCi0fh5jWhGi1hVG60myQQ1caffBfz6A5vcE8nGMybTmVgLWH3slj5mH4tTfQ8oubbDex6OYtw";
    pub const RSA_E: &str = "AQAB";
    /// RS256 over MESSAGE.
    pub const RSA_SIG: &str = "AFQa4h_4PKC-PAojmB4PyQ2Fsw31-XgF22EmYx9MRNr0Q_nJK-Z8VZ1ogv61xID2YDpZWcDcYstDdgYwDbEsjFWfeBAtjYPtjT_29X_ULqGkVQSJb4LzcCb6AjL8JKS2tVK4EhQjFKxJSkDTJJqzzXDGmDtQpvooAV0R-O-JaRuV8Gan4BZNySwQLsO3gUxAvytp03pICZ0o-5kwLAaHivjgcRootag__IyEw-UgityMCDEUCpcfGpSUKsjY4gNe_YJwy_prYoUnDlHt3Kqf5ZyVp7vFErG4Sh10dvRhFplr4jxg-fsPZU4V8ygoen9qQyOBdLXaJKUyK66cJsXT2A";
    pub const EC_X: &str = "4FksN_XIRmSdSbeND8Qt2seNsCX-AMO_lM5D9cSBZbk";
    pub const EC_Y: &str = "eYL3gsM_syodFJm0Abyt3qiS2ZXF_PnpnOgLAP0UGH0";
    /// ES256 (`r‖s`) over MESSAGE.
    pub const EC_SIG: &str =
        "8EW-bDyHsSi0AOG1kGj0a15n0AH7mV2iD1JQaeC1JzOdDj-OrPV3jq2qe_XziOeLwKZH3ESLpBz-wC7MJEsJkg";
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn b64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    // DER SubjectPublicKeyInfo of the self-test keys, as OpenSSL exports them.
    const RSA_SPKI: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAvTlx6YPpim0KhqFgtixUzw8-oID3dBSwZjXWVkErBU6ptDm11QDqQGXANgowGESTTKea_gHOSTTeOQf3-gTM-V9b4vkNC0E52UpKSt39bgtZM-8Ix5eHTFNFTqBDRTV4awxjJO9hAuDeYVydQnpBxv3icPn91yb7BPFcCILmx4xmpq1FUQ77Lm-3vpPWI0X3_JY0DFiC-zGZ_N6quA2CroJ-zLEaA5-T3IuK2V6Fecci2kL5OcreqbpjBuLpEP_1L9-4cg4hpkdgUCi0fh5jWhGi1hVG60myQQ1caffBfz6A5vcE8nGMybTmVgLWH3slj5mH4tTfQ8oubbDex6OYtwIDAQAB";
    const EC_SPKI: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4FksN_XIRmSdSbeND8Qt2seNsCX-AMO_lM5D9cSBZbl5gveCwz-zKh0UmbQBvK3eqJLZlcX8-emc6AsA_RQYfQ";

    #[test]
    fn rsa_key_der_is_what_openssl_exports() {
        let key = rsa_host_key(&b64(self_test::RSA_N), &b64(self_test::RSA_E));
        assert_eq!(key.spki_der, b64(RSA_SPKI));
    }

    #[test]
    fn ec_key_der_is_what_openssl_exports() {
        let mut point = vec![4];
        point.extend(b64(self_test::EC_X));
        point.extend(b64(self_test::EC_Y));
        let key = ec_host_key(HostKeyKind::EcP256, &point).unwrap();
        assert_eq!(key.spki_der, b64(EC_SPKI));
    }

    #[test]
    fn ecdsa_raw_signature_becomes_minimal_der() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r has its top bit set: needs a 0 byte
        raw[63] = 0x01; // s = 1: leading zeros trimmed
        let der = ecdsa_signature_to_der(&raw, HostKeyKind::EcP256).unwrap();
        assert_eq!(&der[..4], &[0x30, 2 + 33 + 3, 0x02, 33]);
        assert_eq!(der[4], 0);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x01]);
        assert!(ecdsa_signature_to_der(&raw[..63], HostKeyKind::EcP256).is_none());
        assert!(ecdsa_signature_to_der(&raw, HostKeyKind::EcP384).is_none());
        let big = vec![0xffu8; 96];
        let der = ecdsa_signature_to_der(&big, HostKeyKind::EcP384).unwrap();
        assert_eq!(&der[..4], &[0x30, 2 * (2 + 49), 0x02, 49]);
    }

    #[test]
    fn protobuf_arguments_and_result_round_trip() {
        let key = HostKey {
            kind: HostKeyKind::Rsa,
            spki_der: vec![1; 300],
        };
        let args = encode_verify_arguments(&HostCheck {
            hash: "sha256",
            key: &key,
            signature: &[2; 3],
            text: b"abc",
        });
        assert_eq!(&args[..8], &[0x0a, 6, b's', b'h', b'a', b'2', b'5', b'6']);
        assert_eq!(&args[8..11], &[0x12, 0xac, 0x02]); // field 2, length 300 as varint
        assert!(args.ends_with(&[0x1a, 3, 2, 2, 2, 0x22, 3, b'a', b'b', b'c']));
        assert_eq!(decode_verify_result(&[0x08, 0x01]), Some(true));
        assert_eq!(decode_verify_result(&[0x08, 0x00]), Some(false));
        assert_eq!(decode_verify_result(&[]), Some(false));
        assert_eq!(
            decode_verify_result(&[0x12, 0x03, b'b', b'a', b'd']),
            Some(false)
        );
        assert_eq!(decode_verify_result(&[0x08, 0x01, 0x12, 0x09, b'x']), None);
        assert_eq!(decode_verify_result(&[0x0d, 0, 0, 0, 0]), None);
    }

    /// A host that checks signatures correctly, as far as the self-test can tell: it
    /// accepts exactly the known signatures (`rsa`/`ec`: whether it offers that kind).
    fn honest_host(rsa: bool, ec: bool) -> impl Fn(&HostCheck<'_>) -> Option<bool> {
        let rsa_sig = b64(self_test::RSA_SIG);
        let ec_sig = ecdsa_signature_to_der(&b64(self_test::EC_SIG), HostKeyKind::EcP256).unwrap();
        move |check: &HostCheck<'_>| match check.key.kind {
            HostKeyKind::Rsa => rsa.then(|| check.signature == rsa_sig.as_slice()),
            _ => ec.then(|| check.signature == ec_sig.as_slice()),
        }
    }

    #[test]
    fn self_test_uses_a_host_that_accepts_good_and_refuses_flipped_signatures() {
        let support = HostSupport::detect(honest_host(true, true));
        assert_eq!(
            support,
            HostSupport {
                rsa: true,
                ec: true
            }
        );
        assert!(support.checks(HostKeyKind::EcP384));
    }

    #[test]
    fn self_test_uses_the_host_only_for_the_kinds_it_offers() {
        let support = HostSupport::detect(honest_host(true, false));
        assert_eq!(
            support,
            HostSupport {
                rsa: true,
                ec: false
            }
        );
        assert!(support.checks(HostKeyKind::Rsa));
        assert!(!support.checks(HostKeyKind::EcP256));
        assert!(support.summary().starts_with("RSA by host crypto, ECDSA "));
    }

    #[test]
    fn self_test_refuses_a_host_without_the_function() {
        assert_eq!(HostSupport::detect(|_| None), HostSupport::default());
    }

    #[test]
    fn self_test_refuses_a_host_that_accepts_every_signature() {
        assert_eq!(HostSupport::detect(|_| Some(true)), HostSupport::default());
        assert_eq!(HostSupport::detect(|_| Some(false)), HostSupport::default());
    }

    #[test]
    fn a_host_backend_is_asked_only_about_the_kinds_it_passed() {
        let asked = std::cell::Cell::new(0);
        let host = honest_host(true, false);
        let backend = HostBackend::new(
            |check: &HostCheck<'_>| {
                asked.set(asked.get() + 1);
                host(check)
            },
            true,
        );
        let self_test_calls = asked.get();
        let rsa = rsa_host_key(&b64(self_test::RSA_N), &b64(self_test::RSA_E));
        let mut point = vec![4];
        point.extend(b64(self_test::EC_X));
        point.extend(b64(self_test::EC_Y));
        let ec = ec_host_key(HostKeyKind::EcP256, &point).unwrap();
        let check = |key| HostCheck {
            hash: "sha256",
            key,
            signature: &[1, 2, 3],
            text: b"t",
        };
        assert_eq!(backend.verify(&check(&rsa)), Some(false));
        assert_eq!(backend.verify(&check(&ec)), None, "the module decides");
        assert_eq!(asked.get(), self_test_calls + 1);
        let off = HostBackend::new(|_: &HostCheck<'_>| Some(true), false);
        assert_eq!(off.support, HostSupport::default());
        assert_eq!(off.verify(&check(&rsa)), None);
    }

    #[test]
    fn self_test_checks_sha256_over_the_known_message() {
        let seen = std::cell::RefCell::new(Vec::new());
        HostSupport::detect(|check| {
            seen.borrow_mut().push((check.hash, check.text.to_vec()));
            None
        });
        let seen = seen.into_inner();
        assert_eq!(
            seen.len(),
            2,
            "one check per kind, stopping at the first non-answer"
        );
        assert!(seen
            .iter()
            .all(|(hash, text)| *hash == "sha256" && text == self_test::MESSAGE));
    }

    #[test]
    fn host_is_offered_only_pkcs1_rsa_and_ecdsa() {
        let rsa = rsa_host_key(&b64(self_test::RSA_N), &b64(self_test::RSA_E));
        assert_eq!(host_hash(Algorithm::RS256, &rsa), Some("sha256"));
        assert_eq!(host_hash(Algorithm::RS512, &rsa), Some("sha512"));
        assert_eq!(host_hash(Algorithm::PS256, &rsa), None);
        assert_eq!(host_hash(Algorithm::ES256, &rsa), None);
        assert_eq!(host_hash(Algorithm::EdDSA, &rsa), None);
    }
}
