//! Token revocation: the revocation document (a small versioned JSON file that a producer
//! writes from Cognito's `RevokeToken` and global sign-out events), its validated compact
//! form [`RevocationList`], the per-request check, and the `revocations` configuration block.
//!
//! Cognito's own APIs refuse revoked and signed-out tokens, but a JWT verifier cannot see the
//! revocation in the token: without this list, those tokens keep working until `exp`.
//!
//! The document (README, "Revocation"):
//!
//! ```json
//! {"version": 1, "generated_at": 1767225600, "max_token_lifetime_seconds": 86400,
//!  "revoked_jti": {"<jti or origin_jti>": <until, epoch seconds>},
//!  "signed_out": {"<sub>": <sign-out instant, epoch seconds>}}
//! ```
//!
//! Loading is all or nothing: an oversized or malformed document is an error and never a
//! partial list, so the caller keeps its previous good list. Entries that can no longer
//! match a token the filter would accept are dropped at load.
//!
//! The list is one byte string, the same in every VM: the VM that fetched the document
//! parses it as it reads it in pieces from Envoy's copy (a small streaming JSON reader;
//! entries are hashed as they are read) and publishes these bytes to shared data; the other
//! VMs use the bytes they read back as their list, without parsing or rebuilding anything,
//! so no VM holds the document whole (README "Revocation"). Little-endian:
//!
//! ```text
//! 0   8   magic and format version (LIST_MAGIC)
//! 8   8   digest of the document it came from (document_digest)
//! 16  16  SipHash-2-4 key (k0, k1): random per document
//! 32  8   generated_at            40  8   entries dropped as expired at load
//! 48  4   R, revoked ids          52  4   S, signed-out users
//! 56  8R  keyed hashes of the revoked jti / origin_jti values, strictly ascending
//! ..  16S (keyed hash of sub, sign-out instant), hashes strictly ascending
//! ```
//!
//! A lookup is a binary search (17 probes for 100,000 entries). Identifiers are only kept
//! as 64-bit keyed hashes. Collision policy: two identifiers with one hash are one entry,
//! so a collision can only make an unlisted token look listed — refused, never accepted —
//! and two sign-outs of one hash keep the later instant (the one that revokes more). With a
//! random key per document, nobody outside the process can aim a collision at a given
//! identifier. The key lives only in the list, so in Envoy's shared data and the VMs'
//! memory; it is never logged (`Debug` prints counts). Decoding is strict: a value of
//! another length, magic or order is no list.
//!
//! Nothing here reads a clock: the caller passes `now` (Unix seconds).

use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};

use serde::Deserialize;

use crate::cognito::JwksLocation;
use crate::error::ConfigError;
use crate::keys::{Availability, KeyTiming};

/// The only document version this filter reads. A new version is a new format: refused,
/// never half-read.
pub const DOCUMENT_VERSION: u64 = 1;

/// Identifiers longer than this are refused (Cognito's are 36-character UUIDs).
pub const MAX_ID_BYTES: usize = 512;

/// `max_token_lifetime_seconds` may not exceed a year (Cognito's id and access tokens live
/// at most one day).
pub const MAX_TOKEN_LIFETIME_SECONDS: u64 = 366 * 86400;

/// First bytes of a compact list; the last one is the format version.
pub const LIST_MAGIC: [u8; 8] = *b"cgarevl\x01";

const HEADER_BYTES: usize = 56;

/// How much of a document is read at a time (from the host's copy of a callout body).
pub const PIECE_BYTES: usize = 64 << 10;

/// What the check needs to know about a verified token, as plain values (claims absent from
/// the token are `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenFacts<'a> {
    pub jti: Option<&'a str>,
    /// Cognito: the refresh token (sign-in session) every access and id token came from.
    pub origin_jti: Option<&'a str>,
    pub sub: Option<&'a str>,
    pub iat: Option<u64>,
    /// Cognito: when the user authenticated; kept by tokens obtained with a refresh token.
    pub auth_time: Option<u64>,
}

/// Why a token is revoked (for the debug log; every variant is the refusal reason `revoked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Its `jti` is listed.
    Jti,
    /// Its `origin_jti` is listed: the refresh token it came from was revoked.
    OriginJti,
    /// Its `sub` signed out after the token's `auth_time` (or `iat`).
    SignedOut,
}

impl Revoked {
    /// The refusal reason (filter state, report mode, metric `denied_revoked`).
    pub const REASON: &'static str = "revoked";
    /// `error_description` of the 401's `www-authenticate` (RFC 6750 `invalid_token`).
    pub const ERROR_DESCRIPTION: &'static str = "The access token has been revoked";

    /// A short stable name for the debug log (`reason=revoked detail=...`).
    pub fn detail(self) -> &'static str {
        match self {
            Revoked::Jti => "revoked_jti",
            Revoked::OriginJti => "revoked_origin_jti",
            Revoked::SignedOut => "signed_out",
        }
    }
}

/// Why a fetched document is not used. The previous good list stays in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentError {
    /// Larger than the configured `max_bytes`: refused before parsing.
    TooLarge { bytes: usize, max_bytes: usize },
    /// A `version` this filter does not read.
    UnsupportedVersion(u64),
    /// Not a valid version-1 document: JSON syntax, types, missing or unknown keys, bounds.
    Malformed(String),
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocumentError::TooLarge { bytes, max_bytes } => write!(
                f,
                "revocation document refused: {bytes} bytes is more than max_bytes ({max_bytes})"
            ),
            DocumentError::UnsupportedVersion(v) => write!(
                f,
                "revocation document refused: version {v} is not supported (expected {DOCUMENT_VERSION})"
            ),
            DocumentError::Malformed(why) => write!(f, "revocation document refused: {why}"),
        }
    }
}

impl std::error::Error for DocumentError {}

/// Bounds applied when loading a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentLimits {
    pub max_bytes: usize,
    /// The filter's `clock_skew_seconds`: an entry is kept this long past its expiry, as
    /// long as a token it revokes can still be accepted.
    pub clock_skew_seconds: u64,
}

/// A validated revocation list in its compact form (module documentation): the bytes it is
/// published as, searched in place.
#[derive(Clone, PartialEq, Eq)]
pub struct RevocationList {
    bytes: Vec<u8>,
    revoked: usize,
    signed_out: usize,
}

/// Counts only: the key never leaves shared data.
impl fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RevocationList({} + {})", self.revoked, self.signed_out)
    }
}

impl RevocationList {
    /// Parses and validates a fetched document. All or nothing: any error leaves no list.
    pub fn parse(
        bytes: &[u8],
        limits: &DocumentLimits,
        now: u64,
    ) -> Result<RevocationList, DocumentError> {
        let mut pieces = bytes.chunks(PIECE_BYTES);
        let mut next = || pieces.next().map(<[u8]>::to_vec);
        let digest = document_digest(bytes);
        RevocationList::parse_pieces(&mut next, bytes.len(), digest, limits, now)
    }

    /// [`Self::parse`] of a document of `len` bytes whose [`document_digest`] is `digest`,
    /// read in pieces as it is parsed (`next`: the next piece, `None` at the end), so that
    /// the document is never held whole.
    pub fn parse_pieces(
        next: &mut dyn FnMut() -> Option<Vec<u8>>,
        len: usize,
        digest: u64,
        limits: &DocumentLimits,
        now: u64,
    ) -> Result<RevocationList, DocumentError> {
        if len > limits.max_bytes {
            return Err(DocumentError::TooLarge {
                bytes: len,
                max_bytes: limits.max_bytes,
            });
        }
        let random = RandomState::new();
        let key = (random.hash_one(0u8), random.hash_one(1u8));
        let mut reader = Reader {
            next,
            piece: Vec::new(),
            at: 0,
            before: 0,
        };
        let skew = limits.clock_skew_seconds;
        let fields =
            read_document(&mut reader, key, now, skew).map_err(DocumentError::Malformed)?;
        if reader.offset() != len {
            let read = reader.offset();
            return Err(DocumentError::Malformed(format!(
                "{read} bytes read, not the {len} of the document"
            )));
        }
        let Parsed {
            mut revoked,
            mut signed_out,
            generated_at,
            max_token_lifetime,
            mut dropped_expired,
        } = fields.validate()?;
        heapsort(&mut revoked);
        heapsort(&mut signed_out);
        // Sign-out entries expire with the longest-lived token they can revoke; the lifetime
        // may come after them in the document, so they are pruned once it is read.
        let keep_until = |instant: u64| {
            instant
                .saturating_add(max_token_lifetime)
                .saturating_add(limits.clock_skew_seconds)
        };
        // The header's fields are known once the sections are written.
        let mut out = vec![0; HEADER_BYTES];
        out.reserve_exact(8 * revoked.len() + 16 * signed_out.len());
        // Duplicates are one entry: an identifier listed twice stays listed, and a user
        // signed out twice keeps the later instant (it revokes more: sorted, the last one).
        let mut previous = None;
        for hash in revoked {
            if previous != Some(hash) {
                out.extend_from_slice(&hash.to_le_bytes());
            }
            previous = Some(hash);
        }
        let revoked = (out.len() - HEADER_BYTES) / 8;
        let mut entries = signed_out.iter().peekable();
        while let Some(&(hash, instant)) = entries.next() {
            if entries.peek().is_some_and(|next| next.0 == hash) {
                continue;
            }
            if now <= keep_until(instant) {
                out.extend_from_slice(&hash.to_le_bytes());
                out.extend_from_slice(&instant.to_le_bytes());
            } else {
                dropped_expired += 1;
            }
        }
        let signed_out = (out.len() - HEADER_BYTES - 8 * revoked) / 16;
        // At most 64 MiB of document: fewer than 2^32 entries of each kind.
        let counts = revoked as u64 | (signed_out as u64) << 32;
        let magic = u64::from_le_bytes(LIST_MAGIC);
        let header = [
            magic,
            digest,
            key.0,
            key.1,
            generated_at,
            dropped_expired as u64,
            counts,
        ];
        for (place, word) in out.chunks_exact_mut(8).zip(header) {
            place.copy_from_slice(&word.to_le_bytes());
        }
        Ok(RevocationList {
            bytes: out,
            revoked,
            signed_out,
        })
    }

    /// A list from its compact form (as another VM published it). `None` unless the bytes
    /// are exactly one list of this format: length, magic and strict order are checked, so
    /// every lookup is in bounds and a foreign or damaged value is no list.
    pub fn decode(bytes: Vec<u8>) -> Option<RevocationList> {
        if bytes.get(..8)? != LIST_MAGIC {
            return None;
        }
        let count = |at: usize| -> Option<usize> {
            let b = bytes.get(at..at + 4)?;
            Some(u32::from_le_bytes(b.try_into().ok()?) as usize)
        };
        let (revoked, signed_out) = (count(48)?, count(52)?);
        let sections = revoked
            .checked_mul(8)?
            .checked_add(signed_out.checked_mul(16)?)?;
        if bytes.len() != HEADER_BYTES.checked_add(sections)? {
            return None;
        }
        let list = RevocationList {
            bytes,
            revoked,
            signed_out,
        };
        let ascending = |start: usize, stride: usize, n: usize| {
            let mut previous = None;
            (0..n).all(|i| {
                let hash = list.word(start + i * stride);
                let fine = hash.is_some() && (previous.is_none() || previous < hash);
                previous = hash;
                fine
            })
        };
        let signed_start = HEADER_BYTES + 8 * revoked;
        (ascending(HEADER_BYTES, 8, revoked) && ascending(signed_start, 16, signed_out))
            .then_some(list)
    }

    /// The compact form: what is published to shared data.
    pub fn encoded(&self) -> &[u8] {
        &self.bytes
    }

    /// [`document_digest`] of the document this list came from.
    pub fn digest(&self) -> u64 {
        self.header(8)
    }

    /// Whether a verified token has been revoked: at most three hashes and three binary
    /// searches.
    ///
    /// A sign-out at instant `T` revokes the user's tokens authenticated strictly before `T`:
    /// `auth_time < T`, or `iat < T` when the token has no `auth_time`. Cognito keeps
    /// `auth_time` when tokens are refreshed, so a session refreshed after the sign-out (a
    /// race with the revocation) is still caught. A token with neither claim cannot be placed
    /// in time and is treated as revoked. No clock skew is applied: `T` and the token's times
    /// come from the same issuer's clock.
    pub fn check(&self, facts: &TokenFacts<'_>) -> Result<(), Revoked> {
        if self.revoked > 0 {
            let listed = |id: Option<&str>| {
                id.is_some_and(|id| {
                    self.search(HEADER_BYTES, 8, self.revoked, self.hash(id))
                        .is_some()
                })
            };
            if listed(facts.jti) {
                return Err(Revoked::Jti);
            }
            if listed(facts.origin_jti) {
                return Err(Revoked::OriginJti);
            }
        }
        if self.signed_out > 0 {
            let start = HEADER_BYTES + 8 * self.revoked;
            let instant = facts.sub.and_then(|sub| {
                let at = self.search(start, 16, self.signed_out, self.hash(sub))?;
                self.word(at + 8)
            });
            if let Some(instant) = instant {
                match facts.auth_time.or(facts.iat) {
                    Some(issued) if issued >= instant => {}
                    _ => return Err(Revoked::SignedOut),
                }
            }
        }
        Ok(())
    }

    /// `generated_at` of the document (Unix seconds), for logs: a producer that stopped
    /// shows as an old value.
    pub fn generated_at(&self) -> u64 {
        self.header(32)
    }

    /// Revoked `jti` / `origin_jti` entries in force.
    pub fn revoked_ids(&self) -> usize {
        self.revoked
    }

    /// Users with a sign-out in force.
    pub fn signed_out_users(&self) -> usize {
        self.signed_out
    }

    /// Entries the document listed that had expired at load (not kept).
    pub fn dropped_expired(&self) -> usize {
        self.header(40) as usize
    }

    /// The little-endian u64 at byte `at`, if the list holds one there.
    fn word(&self, at: usize) -> Option<u64> {
        let bytes = self.bytes.get(at..at.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    /// A header field (decoding checked that the header is there).
    fn header(&self, at: usize) -> u64 {
        self.word(at).unwrap_or_default()
    }

    /// The offset of the entry whose hash is `hash` among `n` entries of `stride` bytes from
    /// `start` (sorted, as decoding checked).
    fn search(&self, start: usize, stride: usize, n: usize, hash: u64) -> Option<usize> {
        let (mut low, mut high) = (0, n);
        while low < high {
            let middle = low + (high - low) / 2;
            let at = start + middle * stride;
            match self.word(at)?.cmp(&hash) {
                Ordering::Less => low = middle + 1,
                Ordering::Greater => high = middle,
                Ordering::Equal => return Some(at),
            }
        }
        None
    }

    fn hash(&self, id: &str) -> u64 {
        keyed_hash((self.header(16), self.header(24)), id)
    }
}

/// Sorts in place, in O(n log n) and a few hundred bytes of Wasm (std's `sort_unstable` costs
/// kilobytes per element type).
fn heapsort<T: Ord + Copy>(v: &mut [T]) {
    let len = v.len();
    for root in (0..len / 2).rev() {
        sift_down(v, root, len);
    }
    for end in (1..len).rev() {
        v.swap(0, end);
        sift_down(v, 0, end);
    }
}

/// Restores the max-heap order of `v[..end]` below `root`.
fn sift_down<T: Ord + Copy>(v: &mut [T], mut root: usize, end: usize) {
    loop {
        let mut child = 2 * root + 1;
        if child >= end {
            return;
        }
        if child + 1 < end && v.get(child) < v.get(child + 1) {
            child += 1;
        }
        if v.get(root) >= v.get(child) {
            return;
        }
        v.swap(root, child);
        root = child;
    }
}

/// SipHash-2-4 of an identifier's bytes under the list's key. std's `SipHasher` is the only
/// keyed SipHash in std whose key can be handed to another VM (`RandomState` keeps its key
/// to itself); it is deprecated only in favour of `DefaultHasher`, which takes no key.
#[allow(deprecated)]
fn keyed_hash(key: (u64, u64), id: &str) -> u64 {
    let mut hasher = std::hash::SipHasher::new_with_keys(key.0, key.1);
    hasher.write(id.as_bytes());
    hasher.finish()
}

// ---------------------------------------------------------------------------------------
// Streaming parser: the document is read in pieces and entries are hashed as they are read,
// so a 100,000-entry document exists neither whole nor as 100,000 strings.

/// The top-level members as read; checked by [`Fields::validate`] once the whole object is
/// in, because JSON members come in any order.
#[derive(Default)]
struct Fields {
    version: Option<u64>,
    generated_at: Option<u64>,
    max_token_lifetime: Option<u64>,
    revoked: Option<(Vec<u64>, usize)>,
    signed_out: Option<Vec<(u64, u64)>>,
    /// The first member this version does not define.
    unknown: Option<String>,
}

struct Parsed {
    revoked: Vec<u64>,
    signed_out: Vec<(u64, u64)>,
    generated_at: u64,
    max_token_lifetime: u64,
    dropped_expired: usize,
}

impl Fields {
    fn validate(self) -> Result<Parsed, DocumentError> {
        let missing = |key: &str| DocumentError::Malformed(format!("missing key {key:?}"));
        // The version first: a newer format is reported as such, whatever else it holds.
        match self.version {
            None => return Err(missing("version")),
            Some(DOCUMENT_VERSION) => {}
            Some(other) => return Err(DocumentError::UnsupportedVersion(other)),
        }
        if let Some(key) = self.unknown {
            return Err(DocumentError::Malformed(format!("unknown key {key:?}")));
        }
        let max_token_lifetime = self
            .max_token_lifetime
            .ok_or_else(|| missing("max_token_lifetime_seconds"))?;
        if max_token_lifetime == 0 || max_token_lifetime > MAX_TOKEN_LIFETIME_SECONDS {
            return Err(DocumentError::Malformed(format!(
                "max_token_lifetime_seconds {max_token_lifetime} is out of range (1 to {MAX_TOKEN_LIFETIME_SECONDS})"
            )));
        }
        let (revoked, dropped_expired) = self.revoked.unwrap_or_default();
        Ok(Parsed {
            revoked,
            signed_out: self.signed_out.unwrap_or_default(),
            generated_at: self.generated_at.ok_or_else(|| missing("generated_at"))?,
            max_token_lifetime,
            dropped_expired,
        })
    }
}

/// The list's SipHash key.
type Key = (u64, u64);

type Parse<T> = Result<T, String>;

/// A streaming JSON reader over a document delivered in pieces (`next`: `None` at the end),
/// for exactly what a revocation document needs: objects, strings and non-negative integers
/// (and skipping a member this version does not define). Only the current piece is held.
struct Reader<'a> {
    next: &'a mut dyn FnMut() -> Option<Vec<u8>>,
    piece: Vec<u8>,
    at: usize,
    /// Bytes of the pieces before the current one.
    before: usize,
}

impl Reader<'_> {
    fn peek(&mut self) -> Option<u8> {
        while self.at >= self.piece.len() {
            let piece = (self.next)()?;
            self.before += self.piece.len();
            self.piece = piece;
            self.at = 0;
        }
        self.piece.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    /// Bytes read so far.
    fn offset(&self) -> usize {
        self.before + self.at
    }

    fn error<T>(&self, what: &str) -> Parse<T> {
        Err(self.fail(what))
    }

    fn fail(&self, what: &str) -> String {
        format!("{what} at byte {}", self.offset())
    }

    /// The next byte after whitespace, not consumed (`None`: the end).
    fn skip_ws(&mut self) -> Option<u8> {
        while let Some(byte) = self.peek() {
            if !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(byte);
            }
            self.at += 1;
        }
        None
    }

    /// Consumes `byte` after whitespace, or fails with `expected`.
    fn expect(&mut self, byte: u8, expected: &str) -> Parse<()> {
        match self.skip_ws() {
            Some(b) if b == byte => {
                self.at += 1;
                Ok(())
            }
            None => self.error("EOF while parsing"),
            Some(_) => self.error(expected),
        }
    }

    /// An object (`expected`: the error if there is none), each member handed to `member`
    /// with its key (the reader then at its value).
    fn object(
        &mut self,
        expected: &str,
        member: &mut dyn FnMut(&mut Self, String) -> Parse<()>,
    ) -> Parse<()> {
        self.expect(b'{', expected)?;
        if self.skip_ws() == Some(b'}') {
            self.at += 1;
            return Ok(());
        }
        loop {
            if self.skip_ws() != Some(b'"') {
                return self.error("expected a key");
            }
            let key = self.string()?;
            self.expect(b':', "expected ':'")?;
            member(self, key)?;
            match self.skip_ws() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(());
                }
                None => return self.error("EOF while parsing"),
                Some(_) => return self.error("expected ',' or '}'"),
            }
        }
    }

    /// A string (the reader at its opening quote), unescaped.
    fn string(&mut self) -> Parse<String> {
        self.at += 1;
        let mut out = Vec::new();
        loop {
            // The plain run in this piece at once.
            let rest = self.piece.get(self.at..).unwrap_or_default();
            let plain = rest
                .iter()
                .take_while(|&&b| b != b'"' && b != b'\\' && b >= 0x20);
            let plain = plain.count();
            out.extend_from_slice(rest.get(..plain).unwrap_or_default());
            self.at += plain;
            match self.bump() {
                None => return self.error("EOF while parsing"),
                Some(b'"') => break,
                Some(b'\\') => {
                    let unescaped = match self.bump() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => self.unicode_escape()?,
                        _ => return self.error("invalid escape"),
                    };
                    let mut utf8 = [0; 4];
                    out.extend_from_slice(unescaped.encode_utf8(&mut utf8).as_bytes());
                }
                Some(byte) if byte < 0x20 => {
                    return self.error("control character");
                }
                Some(byte) => out.push(byte),
            }
        }
        String::from_utf8(out).or_else(|_| self.error("invalid UTF-8"))
    }

    /// The character of a `\u` escape (the reader after the `u`), surrogate pairs joined; a
    /// lone surrogate is no character.
    fn unicode_escape(&mut self) -> Parse<char> {
        let mut code = self.hex4()?;
        if (0xD800..0xDC00).contains(&code)
            && (self.bump(), self.bump()) == (Some(b'\\'), Some(b'u'))
        {
            let low = self.hex4()?;
            if (0xDC00..0xE000).contains(&low) {
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
            }
        }
        char::from_u32(code).map_or_else(|| self.error("invalid \\u escape"), Ok)
    }

    fn hex4(&mut self) -> Parse<u32> {
        let mut value = 0;
        for _ in 0..4 {
            let digit = self.bump().and_then(|b| char::from(b).to_digit(16));
            let Some(digit) = digit else {
                return self.error("invalid \\u escape");
            };
            value = value * 16 + digit;
        }
        Ok(value)
    }

    /// A non-negative integer.
    fn integer(&mut self) -> Parse<u64> {
        let invalid = |r: &Self| r.error("expected a non-negative integer");
        if !self.skip_ws().is_some_and(|b| b.is_ascii_digit()) {
            return invalid(self);
        }
        let mut value: u64 = 0;
        let mut digits = 0;
        while let Some(digit) = self.peek().filter(u8::is_ascii_digit) {
            self.at += 1;
            digits += 1;
            let next = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(digit - b'0')));
            match next {
                Some(v) if value > 0 || digits == 1 => value = v,
                _ => return invalid(self),
            }
        }
        // A leading zero was caught above (`0` then a digit); a fraction or exponent here.
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return invalid(self);
        }
        Ok(value)
    }

    /// The value of a member this version does not define, skipped to its end: strings are
    /// read (a quoted bracket or comma is no structure) and brackets counted. Not checked
    /// further: such a member refuses the whole document anyway (`unknown key`, or the
    /// version it comes with).
    fn skip_value(&mut self) -> Parse<()> {
        let mut depth = 0usize;
        loop {
            match self.skip_ws() {
                None => return self.error("EOF while parsing"),
                Some(b'"') => drop(self.string()?),
                Some(b'{' | b'[') => {
                    depth += 1;
                    self.at += 1;
                }
                Some(b',' | b'}' | b']') if depth == 0 => return Ok(()),
                Some(b'}' | b']') => {
                    depth -= 1;
                    self.at += 1;
                }
                Some(_) => self.at += 1,
            }
        }
    }

    /// An identifier (the key of a `revoked_jti` or `signed_out` entry), hashed.
    fn identifier(&self, id: &str, key: Key) -> Parse<u64> {
        if id.is_empty() || id.len() > MAX_ID_BYTES {
            return self.error("an identifier must have 1 to 512 bytes");
        }
        Ok(keyed_hash(key, id))
    }
}

/// Reads a whole document into [`Fields`]. `revoked_jti` entries past `until` + skew are
/// dropped as they are read: no token carrying them can pass the `exp` check any more. A
/// duplicate identifier is not an error (the list keeps it once: the safe reading).
fn read_document(reader: &mut Reader<'_>, key: Key, now: u64, skew: u64) -> Parse<Fields> {
    let mut fields = Fields::default();
    reader.object(
        "expected a revocation document (a JSON object)",
        &mut |r: &mut Reader<'_>, name: String| {
            let fresh = match name.as_str() {
                "version" => fields.version.replace(r.integer()?).is_none(),
                "generated_at" => fields.generated_at.replace(r.integer()?).is_none(),
                "max_token_lifetime_seconds" => {
                    fields.max_token_lifetime.replace(r.integer()?).is_none()
                }
                "revoked_jti" => {
                    let (mut hashes, mut dropped) = (Vec::new(), 0);
                    let expected =
                        "expected revoked_jti: an object of identifier → until (Unix seconds)";
                    r.object(expected, &mut |r, id| {
                        let hash = r.identifier(&id, key)?;
                        let until = r.integer()?;
                        if now <= until.saturating_add(skew) {
                            hashes.push(hash);
                        } else {
                            dropped += 1;
                        }
                        Ok(())
                    })?;
                    fields.revoked.replace((hashes, dropped)).is_none()
                }
                "signed_out" => {
                    let mut entries = Vec::new();
                    let expected =
                        "expected signed_out: an object of sub → sign-out instant (Unix seconds)";
                    r.object(expected, &mut |r, sub| {
                        let hash = r.identifier(&sub, key)?;
                        entries.push((hash, r.integer()?));
                        Ok(())
                    })?;
                    fields.signed_out.replace(entries).is_none()
                }
                _ => {
                    r.skip_value()?;
                    if fields.unknown.is_none() {
                        fields.unknown = Some(name.clone());
                    }
                    true
                }
            };
            if fresh {
                Ok(())
            } else {
                r.error(&format!("key {name:?} appears twice"))
            }
        },
    )?;
    if reader.skip_ws().is_some() {
        return reader.error("trailing characters");
    }
    Ok(fields)
}

// ---------------------------------------------------------------------------------------
// The `revocations` block of a user pool's configuration.

/// What requests get when no usable document is available (never fetched, or older than
/// `max_stale_seconds` while refreshes fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    /// 503 with `retry-after`, like missing keys: a revoked token must not pass because the
    /// list could not be read.
    Deny,
    /// Verify tokens without revocation checks (fail open).
    Allow,
}

/// The `revocations` block as written. Unknown keys are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRevocationSource {
    pub cluster: String,
    pub uri: String,
    #[serde(default = "default_refresh_seconds")]
    pub refresh_seconds: u64,
    #[serde(default = "default_max_stale_seconds")]
    pub max_stale_seconds: u64,
    #[serde(default = "default_on_unavailable")]
    pub on_unavailable: OnUnavailable,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// Default `refresh_seconds`: a revocation takes effect within this period (+ 1 s).
pub const DEFAULT_REFRESH_SECONDS: u64 = 30;
/// Default `max_stale_seconds`: how long the last good document is used while refreshes fail.
pub const DEFAULT_MAX_STALE_SECONDS: u64 = 300;
/// Default `max_bytes`: about 150,000 entries of Cognito UUIDs.
pub const DEFAULT_MAX_BYTES: u64 = 8 << 20;
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

fn default_refresh_seconds() -> u64 {
    DEFAULT_REFRESH_SECONDS
}
fn default_max_stale_seconds() -> u64 {
    DEFAULT_MAX_STALE_SECONDS
}
fn default_on_unavailable() -> OnUnavailable {
    OnUnavailable::Deny
}
fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// A validated revocation source. Equal sources (same cluster, URI and settings) are one
/// source: pools that name the same one share its fetches and its list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationSource {
    pub cluster: String,
    pub uri: String,
    /// `:authority` and `:path` of the callout.
    pub location: JwksLocation,
    pub refresh_seconds: u64,
    pub max_stale_seconds: u64,
    pub on_unavailable: OnUnavailable,
    pub max_bytes: usize,
    pub timeout_ms: u64,
}

impl RevocationSource {
    /// Validates a parsed block; `path` is its JSON path (`user_pools[0].revocations`), so
    /// that errors name the key at fault.
    pub fn validate(wire: WireRevocationSource, path: &str) -> Result<Self, ConfigError> {
        if wire.cluster.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.cluster"),
                "must name the Envoy cluster that serves the revocation document",
            ));
        }
        let location = JwksLocation::parse(&wire.uri)
            .map_err(|e| ConfigError::new(format!("{path}.uri"), e))?;
        let bounded = |value: u64, min: u64, max: u64, key: &str| {
            if value < min || value > max {
                Err(ConfigError::new(
                    format!("{path}.{key}"),
                    format!("{value} is out of range ({min} to {max})"),
                ))
            } else {
                Ok(value)
            }
        };
        let refresh_seconds = bounded(wire.refresh_seconds, 1, 3600, "refresh_seconds")?;
        let max_stale_seconds = bounded(wire.max_stale_seconds, 0, 7 * 86400, "max_stale_seconds")?;
        let max_bytes = bounded(wire.max_bytes, 1024, 64 << 20, "max_bytes")?;
        let timeout_ms = bounded(wire.timeout_ms, 100, 60_000, "timeout_ms")?;
        if timeout_ms >= refresh_seconds.saturating_mul(1000) {
            return Err(ConfigError::new(
                format!("{path}.timeout_ms"),
                format!(
                    "{timeout_ms} ms must be shorter than refresh_seconds ({refresh_seconds} s)"
                ),
            ));
        }
        Ok(RevocationSource {
            cluster: wire.cluster,
            uri: wire.uri,
            location,
            refresh_seconds,
            max_stale_seconds,
            on_unavailable: wire.on_unavailable,
            max_bytes: max_bytes as usize,
            timeout_ms,
        })
    }

    /// Parses a block on its own (the embedding configuration parses it as one of its keys).
    pub fn parse(json: &[u8], path: &str) -> Result<Self, ConfigError> {
        let wire: WireRevocationSource = crate::json_path::from_slice(json, path)?;
        RevocationSource::validate(wire, path)
    }

    /// The limits a fetched document is loaded with.
    pub fn limits(&self, clock_skew_seconds: u64) -> DocumentLimits {
        DocumentLimits {
            max_bytes: self.max_bytes,
            clock_skew_seconds,
        }
    }
}

impl RevocationSource {
    /// Fetch timing of this source, in the form the shared fetch schedule uses (the same
    /// machinery as the JWKS: lease, backoff, stale bound).
    pub fn timing(&self) -> KeyTiming {
        KeyTiming {
            refresh_ms: self.refresh_seconds.saturating_mul(1000),
            // Only the JWKS refetches on demand (unknown `kid`); a document is only refreshed.
            min_refetch_ms: 0,
            max_stale_ms: self.max_stale_seconds.saturating_mul(1000),
            timeout_ms: self.timeout_ms,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The filter's side: facts from verified claims, the per-request decision, and the small
// stamp that tells worker VMs a new document was published.

/// The facts [`RevocationList::check`] needs, from a verified token's claims. A time claim
/// that is not a non-negative integer counts as absent (a signed-out user's token without a
/// usable time is then revoked, never passed).
pub fn token_facts(claims: &crate::claims::Claims) -> TokenFacts<'_> {
    TokenFacts {
        jti: claims.jti.as_deref(),
        origin_jti: claims.origin_jti.as_deref(),
        sub: claims.sub.as_deref(),
        iat: claims.iat,
        auth_time: claims.auth_time,
    }
}

/// What a request with a verified token gets from its pool's revocation source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Not revoked (or no usable document under `on_unavailable: "allow"`).
    Pass,
    Revoked(Revoked),
    /// The first document is on its way: wait for it (bounded by the request's deadline).
    Wait,
    /// No usable document under `on_unavailable: "deny"`: 503, retry after this many seconds.
    Unavailable {
        retry_after_s: u64,
    },
}

/// Decides one request: `availability` of the source's document in this VM, whether the
/// request's wait deadline has passed, and the verified token's facts.
pub fn gate(
    availability: &Availability<RevocationList>,
    on_unavailable: OnUnavailable,
    deadline_passed: bool,
    facts: &TokenFacts<'_>,
) -> Gate {
    match availability {
        Availability::Ready(list) => match list.check(facts) {
            Ok(()) => Gate::Pass,
            Err(why) => Gate::Revoked(why),
        },
        Availability::Wait if !deadline_passed => Gate::Wait,
        _ if on_unavailable == OnUnavailable::Allow => Gate::Pass,
        Availability::Wait => Gate::Unavailable { retry_after_s: 1 },
        Availability::Unavailable { retry_after_s } => Gate::Unavailable {
            retry_after_s: *retry_after_s,
        },
    }
}

/// A digest of a document's bytes: a refresh that brings the same bytes is not parsed or
/// copied again. Deterministic (the same in every VM of the module).
pub fn document_digest(body: &[u8]) -> u64 {
    let mut digest = Digest::new(body.len());
    digest.update(body);
    digest.finish()
}

/// [`document_digest`] of a document read in pieces: the same value.
pub struct Digest(std::hash::DefaultHasher);

impl Digest {
    pub fn new(len: usize) -> Digest {
        let mut h = std::hash::DefaultHasher::new();
        h.write_usize(len);
        Digest(h)
    }

    pub fn update(&mut self, piece: &[u8]) {
        self.0.write(piece);
    }

    pub fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// The small shared-data entry published with each fetched document:
/// `<fetched_at_ms> <digest>`. Workers read it every tick (the document itself only when
/// the digest changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub fetched_at_ms: u64,
    pub digest: u64,
}

impl Stamp {
    pub fn encode(&self) -> String {
        format!("{} {:016x}", self.fetched_at_ms, self.digest)
    }

    pub fn decode(bytes: &[u8]) -> Option<Stamp> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (at, digest) = text.split_once(' ')?;
        Some(Stamp {
            fetched_at_ms: at.parse().ok()?,
            digest: u64::from_str_radix(digest, 16).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
    const LIMITS: DocumentLimits = DocumentLimits {
        max_bytes: 1 << 20,
        clock_skew_seconds: 60,
    };

    fn load(json: &str) -> RevocationList {
        RevocationList::parse(json.as_bytes(), &LIMITS, NOW).unwrap()
    }

    fn refused(json: &str) -> DocumentError {
        match RevocationList::parse(json.as_bytes(), &LIMITS, NOW) {
            Ok(_) => panic!("document should be refused: {json}"),
            Err(e) => e,
        }
    }

    fn doc(revoked: &str, signed_out: &str) -> String {
        format!(
            r#"{{"version":1,"generated_at":{NOW},"max_token_lifetime_seconds":3600,"revoked_jti":{{{revoked}}},"signed_out":{{{signed_out}}}}}"#
        )
    }

    /// An access token of alice: signed in at NOW - 600, refreshed at NOW - 100.
    fn alice<'a>() -> TokenFacts<'a> {
        TokenFacts {
            jti: Some("jti-access-2"),
            origin_jti: Some("origin-1"),
            sub: Some("sub-alice"),
            iat: Some(NOW - 100),
            auth_time: Some(NOW - 600),
        }
    }

    #[test]
    fn token_not_listed_passes() {
        let list = load(&doc(r#""other":9999999999"#, r#""sub-bob":1767225000"#));
        assert_eq!(list.check(&alice()), Ok(()));
        assert_eq!(list.revoked_ids(), 1);
        assert_eq!(list.signed_out_users(), 1);
        assert_eq!(list.generated_at(), NOW);
    }

    #[test]
    fn listed_jti_is_revoked() {
        let list = load(&doc(r#""jti-access-2":9999999999"#, ""));
        assert_eq!(list.check(&alice()), Err(Revoked::Jti));
    }

    #[test]
    fn listed_origin_jti_revokes_every_token_of_that_session() {
        let list = load(&doc(r#""origin-1":9999999999"#, ""));
        assert_eq!(list.check(&alice()), Err(Revoked::OriginJti));
        let id_token = TokenFacts {
            jti: Some("jti-id-7"),
            ..alice()
        };
        assert_eq!(list.check(&id_token), Err(Revoked::OriginJti));
        let other_session = TokenFacts {
            origin_jti: Some("origin-2"),
            ..alice()
        };
        assert_eq!(list.check(&other_session), Ok(()));
    }

    #[test]
    fn sign_out_revokes_tokens_authenticated_before_it() {
        let list = load(&doc("", &format!(r#""sub-alice":{}"#, NOW - 50)));
        assert_eq!(list.check(&alice()), Err(Revoked::SignedOut));
    }

    #[test]
    fn sign_out_uses_auth_time_so_a_refresh_after_it_is_still_revoked() {
        // Refreshed (iat) after the sign-out instant, but authenticated before it.
        let list = load(&doc("", &format!(r#""sub-alice":{}"#, NOW - 200)));
        assert_eq!(list.check(&alice()), Err(Revoked::SignedOut));
    }

    #[test]
    fn sign_in_at_or_after_the_sign_out_instant_passes() {
        let instant = NOW - 600;
        let list = load(&doc("", &format!(r#""sub-alice":{instant}"#)));
        // auth_time == instant: the boundary second belongs to the new session.
        assert_eq!(list.check(&alice()), Ok(()));
        let later = TokenFacts {
            auth_time: Some(instant + 1),
            ..alice()
        };
        assert_eq!(list.check(&later), Ok(()));
        let earlier = TokenFacts {
            auth_time: Some(instant - 1),
            ..alice()
        };
        assert_eq!(list.check(&earlier), Err(Revoked::SignedOut));
    }

    #[test]
    fn sign_out_falls_back_to_iat_without_auth_time() {
        let list = load(&doc("", &format!(r#""sub-alice":{}"#, NOW - 50)));
        let no_auth_time = TokenFacts {
            auth_time: None,
            ..alice()
        };
        assert_eq!(list.check(&no_auth_time), Err(Revoked::SignedOut));
        let issued_after = TokenFacts {
            auth_time: None,
            iat: Some(NOW - 50),
            ..alice()
        };
        assert_eq!(list.check(&issued_after), Ok(()));
    }

    #[test]
    fn signed_out_user_token_without_any_time_is_revoked() {
        let list = load(&doc("", &format!(r#""sub-alice":{}"#, NOW - 50)));
        let timeless = TokenFacts {
            auth_time: None,
            iat: None,
            ..alice()
        };
        assert_eq!(list.check(&timeless), Err(Revoked::SignedOut));
    }

    #[test]
    fn sign_out_of_another_user_does_not_touch_this_one() {
        let list = load(&doc("", &format!(r#""sub-bob":{NOW}"#)));
        assert_eq!(list.check(&alice()), Ok(()));
        let no_sub = TokenFacts {
            sub: None,
            ..alice()
        };
        assert_eq!(list.check(&no_sub), Ok(()));
    }

    #[test]
    fn expired_revoked_entries_are_dropped_at_load_after_the_skew() {
        // until + skew < now → dropped; until + skew == now → kept.
        let list = load(&doc(
            &format!(
                r#""gone":{},"edge":{},"live":{}"#,
                NOW - 61,
                NOW - 60,
                NOW + 10
            ),
            "",
        ));
        assert_eq!(list.revoked_ids(), 2);
        assert_eq!(list.dropped_expired(), 1);
        let gone = TokenFacts {
            jti: Some("gone"),
            ..Default::default()
        };
        assert_eq!(list.check(&gone), Ok(()));
        let edge = TokenFacts {
            jti: Some("edge"),
            ..Default::default()
        };
        assert_eq!(list.check(&edge), Err(Revoked::Jti));
    }

    #[test]
    fn sign_outs_older_than_the_token_lifetime_are_dropped_even_if_listed_first() {
        // Lifetime 3600, skew 60: an instant older than now - 3660 can revoke nothing.
        let json = format!(
            r#"{{"signed_out":{{"old":{},"edge":{}}},"version":1,"generated_at":{NOW},"max_token_lifetime_seconds":3600}}"#,
            NOW - 3661,
            NOW - 3660
        );
        let list = load(&json);
        assert_eq!(list.signed_out_users(), 1);
        assert_eq!(list.dropped_expired(), 1);
    }

    #[test]
    fn duplicate_entries_keep_the_most_revoking_value() {
        let list = load(&doc(
            "",
            &format!(r#""sub-alice":{},"sub-alice":{}"#, NOW - 700, NOW - 50),
        ));
        assert_eq!(list.signed_out_users(), 1);
        assert_eq!(list.check(&alice()), Err(Revoked::SignedOut));
        let list = load(&doc(
            &format!(r#""x":{},"x":{}"#, NOW + 100, NOW - 1000),
            "",
        ));
        assert_eq!(list.revoked_ids(), 1);
    }

    #[test]
    fn empty_sections_may_be_omitted() {
        let list = load(&format!(
            r#"{{"version":1,"generated_at":{NOW},"max_token_lifetime_seconds":86400}}"#
        ));
        assert_eq!(list.check(&alice()), Ok(()));
        assert_eq!(list.revoked_ids() + list.signed_out_users(), 0);
    }

    #[test]
    fn oversized_document_is_refused_before_parsing() {
        let json = doc(r#""a":1"#, "");
        let limits = DocumentLimits {
            max_bytes: json.len() - 1,
            ..LIMITS
        };
        assert_eq!(
            RevocationList::parse(json.as_bytes(), &limits, NOW).unwrap_err(),
            DocumentError::TooLarge {
                bytes: json.len(),
                max_bytes: json.len() - 1
            }
        );
        let limits = DocumentLimits {
            max_bytes: json.len(),
            ..LIMITS
        };
        assert!(RevocationList::parse(json.as_bytes(), &limits, NOW).is_ok());
    }

    #[test]
    fn other_versions_are_refused_as_unsupported() {
        let json =
            format!(r#"{{"version":2,"generated_at":{NOW},"max_token_lifetime_seconds":3600}}"#);
        assert_eq!(refused(&json), DocumentError::UnsupportedVersion(2));
        assert!(refused(&json).to_string().contains("version 2"));
    }

    #[test]
    fn malformed_documents_are_refused_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "EOF"),
            ("[]", "expected a revocation document (a JSON object)"),
            ("not json", "expected"),
            (
                r#"{"generated_at":1,"max_token_lifetime_seconds":1}"#,
                "version",
            ),
            (
                r#"{"version":1,"max_token_lifetime_seconds":1}"#,
                "generated_at",
            ),
            (
                r#"{"version":1,"generated_at":1}"#,
                "max_token_lifetime_seconds",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":0}"#,
                "out of range",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"extra":1}"#,
                "unknown key \"extra\"",
            ),
            (
                r#"{"version":1,"version":1,"generated_at":1,"max_token_lifetime_seconds":1}"#,
                "appears twice",
            ),
            (
                r#"{"version":"1","generated_at":1,"max_token_lifetime_seconds":1}"#,
                "expected a non-negative integer",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"revoked_jti":{"a":1.5}}"#,
                "expected a non-negative integer",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"revoked_jti":{"a":-1}}"#,
                "expected a non-negative integer",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"revoked_jti":{"":1}}"#,
                "an identifier must have 1 to 512 bytes",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"signed_out":["a"]}"#,
                "expected signed_out: an object of sub",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"signed_out":{"a":null}}"#,
                "expected a non-negative integer",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1} {}"#,
                "trailing characters",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"revoked_jti":{"a":1"#,
                "EOF",
            ),
            (
                r#"{"version":01,"generated_at":1,"max_token_lifetime_seconds":1}"#,
                "expected a non-negative integer",
            ),
            (
                r#"{"version":1e0,"generated_at":1,"max_token_lifetime_seconds":1}"#,
                "expected a non-negative integer",
            ),
            (
                r#"{"version":18446744073709551616,"generated_at":1,"max_token_lifetime_seconds":1}"#,
                "expected a non-negative integer",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"revoked_jti":{"a\q":1}}"#,
                "invalid escape",
            ),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"revoked_jti":{"\ud800":1}}"#,
                "invalid \\u escape",
            ),
            (
                "{\"version\":1,\"generated_at\":1,\"max_token_lifetime_seconds\":1,\"revoked_jti\":{\"a\tb\":1}}",
                "control character",
            ),
            (
                r#"{"version":1,"generated_at":1 "max_token_lifetime_seconds":1}"#,
                "expected ',' or '}'",
            ),
            (r#"{"version":1,}"#, "expected a key"),
            (
                r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"x":[1,{"a":"]"}"#,
                "EOF",
            ),
            (r#"{"version" 1}"#, "expected ':'"),
        ];
        for (json, reason) in cases {
            let e = refused(json);
            assert!(
                matches!(e, DocumentError::Malformed(_)),
                "{json}: {e:?} should be Malformed"
            );
            assert!(
                e.to_string().contains(reason),
                "{json}: {e} lacks {reason:?}"
            );
        }
    }

    #[test]
    fn unknown_members_of_any_kind_are_skipped_then_refused_by_name() {
        let value = r#"{"a":[1,-2.5e+3,true,false,null,"s\"]},\u00e9"],"b":{}}"#;
        let json = format!(
            r#"{{"version":1,"extra":{value},"generated_at":1,"max_token_lifetime_seconds":1}}"#
        );
        assert!(refused(&json).to_string().contains("unknown key \"extra\""));
        // Whatever else it holds, a newer version is reported as such.
        let json = r#"{"future":[1,2],"version":2,"generated_at":1}"#;
        assert_eq!(refused(json), DocumentError::UnsupportedVersion(2));
    }

    #[test]
    fn identifiers_must_be_utf8_and_escapes_decode_to_the_same_identifier() {
        let mut json = doc(r#""ab":9999999999"#, "").into_bytes();
        let at = json.windows(2).position(|w| w == b"ab").unwrap();
        json[at] = 0xff;
        let e = RevocationList::parse(&json, &LIMITS, NOW).unwrap_err();
        assert!(e.to_string().contains("invalid UTF-8"), "{e}");
        let list = load(&doc(r#""\u00e9\ud83d\ude00\n":9999999999"#, ""));
        let facts = TokenFacts {
            jti: Some("é😀\n"),
            ..Default::default()
        };
        assert_eq!(list.check(&facts), Err(Revoked::Jti));
    }

    #[test]
    fn a_document_read_in_pieces_of_any_size_loads_the_same() {
        let json = doc(
            r#""j1":9999999999, "j2" : 9999999999"#,
            &format!(r#""sub-alice":{}"#, NOW - 50),
        );
        for size in [1, 2, 3, 5, 64] {
            let mut pieces = json.as_bytes().chunks(size);
            let mut next = || pieces.next().map(<[u8]>::to_vec);
            let digest = document_digest(json.as_bytes());
            let list =
                RevocationList::parse_pieces(&mut next, json.len(), digest, &LIMITS, NOW).unwrap();
            assert_eq!((list.revoked_ids(), list.signed_out_users()), (2, 1));
            assert_eq!(list.check(&alice()), Err(Revoked::SignedOut));
        }
        // The pieces end early (the host could not give the rest): refused.
        let mut pieces = json.as_bytes().chunks(8).take(3);
        let mut next = || pieces.next().map(<[u8]>::to_vec);
        let short = RevocationList::parse_pieces(&mut next, json.len(), 0, &LIMITS, NOW);
        assert!(short.unwrap_err().to_string().contains("EOF"));
        // More bytes than announced: refused.
        let mut whole = Some(json.clone().into_bytes());
        let mut next = || whole.take();
        let long = RevocationList::parse_pieces(&mut next, json.len() - 1, 0, &LIMITS, NOW);
        assert!(long.unwrap_err().to_string().contains("not the"));
    }

    #[test]
    fn revoked_jti_must_be_an_object() {
        let e = refused(
            r#"{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"revoked_jti":[]}"#,
        );
        assert!(
            e.to_string()
                .contains("expected revoked_jti: an object of identifier"),
            "{e}"
        );
    }

    #[test]
    fn the_longest_token_lifetime_accepted_is_a_year() {
        let at = |lifetime: u64| {
            format!(
                r#"{{"version":1,"generated_at":{NOW},"max_token_lifetime_seconds":{lifetime}}}"#
            )
        };
        assert!(
            RevocationList::parse(at(MAX_TOKEN_LIFETIME_SECONDS).as_bytes(), &LIMITS, NOW).is_ok()
        );
        let e = refused(&at(MAX_TOKEN_LIFETIME_SECONDS + 1));
        assert!(e.to_string().contains("31622400"), "{e}");
    }

    #[test]
    fn overlong_identifier_is_refused() {
        let long = "a".repeat(MAX_ID_BYTES + 1);
        let e = refused(&doc(&format!(r#""{long}":9999999999"#), ""));
        assert!(e.to_string().contains("1 to 512 bytes"), "{e}");
        let ok = "a".repeat(MAX_ID_BYTES);
        assert_eq!(
            load(&doc(&format!(r#""{ok}":9999999999"#), "")).revoked_ids(),
            1
        );
    }

    #[test]
    fn escaped_identifiers_match_their_decoded_value() {
        let list = load(&doc(r#""origin\u002d1":9999999999"#, ""));
        assert_eq!(list.check(&alice()), Err(Revoked::OriginJti));
    }

    #[test]
    fn large_document_loads_every_entry() {
        let mut revoked = String::new();
        let mut signed_out = String::new();
        for i in 0..50_000u64 {
            if i > 0 {
                revoked.push(',');
                signed_out.push(',');
            }
            revoked.push_str(&format!(r#""jti-{i:08}":{}"#, NOW + i));
            signed_out.push_str(&format!(r#""sub-{i:08}":{}"#, NOW - 10));
        }
        let json = doc(&revoked, &signed_out);
        let limits = DocumentLimits {
            max_bytes: json.len(),
            ..LIMITS
        };
        let list = RevocationList::parse(json.as_bytes(), &limits, NOW).unwrap();
        assert_eq!(list.revoked_ids(), 50_000);
        assert_eq!(list.signed_out_users(), 50_000);
        let listed = TokenFacts {
            jti: Some("jti-00049999"),
            ..Default::default()
        };
        assert_eq!(list.check(&listed), Err(Revoked::Jti));
        let user = TokenFacts {
            sub: Some("sub-00012345"),
            auth_time: Some(NOW - 11),
            ..Default::default()
        };
        assert_eq!(list.check(&user), Err(Revoked::SignedOut));
        let unlisted = TokenFacts {
            jti: Some("jti-00050000"),
            sub: Some("sub-00050000"),
            auth_time: Some(0),
            ..Default::default()
        };
        assert_eq!(list.check(&unlisted), Ok(()));
    }

    // --- compact form ---

    /// A list of every kind of entry, as the fetching VM publishes it.
    fn mixed() -> RevocationList {
        load(&doc(
            r#""j1":9999999999,"j2":9999999999,"o1":9999999999"#,
            &format!(r#""sub-alice":{},"sub-bob":{}"#, NOW - 50, NOW - 10),
        ))
    }

    #[test]
    fn the_compact_form_round_trips_and_answers_alike() {
        let list = mixed();
        let bytes = list.encoded().to_vec();
        assert_eq!(bytes.len(), HEADER_BYTES + 3 * 8 + 2 * 16);
        assert_eq!(bytes.get(..8), Some(&LIST_MAGIC[..]));
        let copy = RevocationList::decode(bytes).unwrap();
        assert_eq!(copy, list);
        assert_eq!((copy.revoked_ids(), copy.signed_out_users()), (3, 2));
        assert_eq!(copy.generated_at(), NOW);
        assert_eq!(copy.digest(), list.digest());
        assert_eq!(copy.check(&alice()), Err(Revoked::SignedOut));
        let j2 = TokenFacts {
            jti: Some("j2"),
            ..Default::default()
        };
        assert_eq!(copy.check(&j2), Err(Revoked::Jti));
    }

    #[test]
    fn the_digest_is_the_documents() {
        let json = doc(r#""j1":9999999999"#, "");
        assert_eq!(load(&json).digest(), document_digest(json.as_bytes()));
        let mut whole = Some(json.clone().into_bytes());
        let mut next = || whole.take();
        let digested =
            RevocationList::parse_pieces(&mut next, json.len(), 42, &LIMITS, NOW).unwrap();
        assert_eq!(digested.digest(), 42);
    }

    #[test]
    fn a_digest_taken_in_pieces_is_the_digest_of_the_whole() {
        let json = doc(r#""j1":9999999999,"j2":9999999999"#, r#""s":1"#);
        for piece in [1, 7, 8, 64, json.len()] {
            let mut digest = Digest::new(json.len());
            for chunk in json.as_bytes().chunks(piece) {
                digest.update(chunk);
            }
            assert_eq!(digest.finish(), document_digest(json.as_bytes()), "{piece}");
        }
    }

    #[test]
    fn heapsort_sorts() {
        let mut rng = Rng(7);
        for len in [0, 1, 2, 3, 10, 257, 1000] {
            let mut v: Vec<u64> = (0..len).map(|_| rng.next() % 50).collect();
            let mut expected = v.clone();
            expected.sort();
            heapsort(&mut v);
            assert_eq!(v, expected, "{len}");
        }
    }

    #[test]
    fn every_truncation_and_any_extra_byte_is_refused() {
        let bytes = mixed().encoded().to_vec();
        for n in 0..bytes.len() {
            assert_eq!(
                RevocationList::decode(bytes[..n].to_vec()),
                None,
                "{n} bytes"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(RevocationList::decode(longer), None);
        let empty = load(&doc("", ""));
        assert_eq!(empty.encoded().len(), HEADER_BYTES);
        assert!(RevocationList::decode(empty.encoded().to_vec()).is_some());
    }

    #[test]
    fn another_magic_or_format_version_is_refused() {
        let bytes = mixed().encoded().to_vec();
        for at in 0..8 {
            let mut other = bytes.clone();
            other[at] ^= 1;
            assert_eq!(RevocationList::decode(other), None, "byte {at}");
        }
        // A document (what earlier modules published) is not a list.
        let json = doc(r#""j1":9999999999"#, "");
        assert_eq!(RevocationList::decode(json.into_bytes()), None);
    }

    #[test]
    fn counts_that_disagree_with_the_length_are_refused() {
        let bytes = mixed().encoded().to_vec();
        for (at, value) in [
            (48, 2u32),
            (48, 4),
            (52, 1),
            (52, 3),
            (48, u32::MAX),
            (52, u32::MAX),
        ] {
            let mut other = bytes.clone();
            other[at..at + 4].copy_from_slice(&value.to_le_bytes());
            assert_eq!(
                RevocationList::decode(other),
                None,
                "count at {at} = {value}"
            );
        }
    }

    /// Overwrites the u64 at byte `at`.
    fn set_word(bytes: &mut [u8], at: usize, value: u64) {
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    fn word(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn entries_out_of_order_or_repeated_are_refused() {
        let bytes = mixed().encoded().to_vec();
        let revoked = |i: usize| HEADER_BYTES + 8 * i;
        let signed = |i: usize| HEADER_BYTES + 8 * 3 + 16 * i;
        assert!(word(&bytes, revoked(0)) < word(&bytes, revoked(1)));
        assert!(word(&bytes, revoked(1)) < word(&bytes, revoked(2)));
        assert!(word(&bytes, signed(0)) < word(&bytes, signed(1)));
        // Swapped, or one entry repeated, in either section.
        let mut swapped = bytes.clone();
        let (a, b) = (word(&bytes, revoked(0)), word(&bytes, revoked(1)));
        set_word(&mut swapped, revoked(0), b);
        set_word(&mut swapped, revoked(1), a);
        assert_eq!(RevocationList::decode(swapped), None);
        let mut repeated = bytes.clone();
        set_word(&mut repeated, revoked(2), word(&bytes, revoked(1)));
        assert_eq!(RevocationList::decode(repeated), None);
        let mut swapped = bytes.clone();
        let (a, b) = (word(&bytes, signed(0)), word(&bytes, signed(1)));
        set_word(&mut swapped, signed(0), b);
        set_word(&mut swapped, signed(1), a);
        assert_eq!(RevocationList::decode(swapped), None);
        let mut repeated = bytes.clone();
        set_word(&mut repeated, signed(1), word(&bytes, signed(0)));
        assert_eq!(RevocationList::decode(repeated), None);
        // The instants are values, in any order.
        let mut instants = bytes.clone();
        set_word(&mut instants, signed(0) + 8, u64::MAX);
        set_word(&mut instants, signed(1) + 8, 0);
        assert!(RevocationList::decode(instants).is_some());
    }

    #[test]
    fn each_document_gets_its_own_key_and_the_key_is_not_printed() {
        let json = doc(r#""j1":9999999999"#, "");
        let (a, b) = (load(&json), load(&json));
        assert_ne!(a.encoded()[16..32], b.encoded()[16..32]);
        assert_ne!(a.encoded()[56..64], b.encoded()[56..64]);
        let key = word(a.encoded(), 16);
        let printed = format!("{a:?}");
        assert!(!printed.contains(&key.to_string()), "{printed}");
        assert!(!printed.contains(&format!("{key:x}")), "{printed}");
    }

    /// A small deterministic generator (xorshift), so the test needs no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn lookups_answer_as_sets_of_the_identifiers_would() {
        use std::collections::{HashMap, HashSet};
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..20 {
            let id = |rng: &mut Rng| format!("id-{}", rng.next() % 3000);
            let (mut revoked, mut signed_out) = (Vec::new(), Vec::new());
            let mut listed = HashSet::new();
            let mut sign_outs: HashMap<String, u64> = HashMap::new();
            for _ in 0..(rng.next() % 800) {
                let jti = id(&mut rng);
                // Some expired on arrival: dropped, unless listed live as well.
                let until = if rng.next().is_multiple_of(4) {
                    NOW - 61
                } else {
                    NOW + 10
                };
                if until == NOW + 10 {
                    listed.insert(jti.clone());
                }
                revoked.push(format!(r#""{jti}":{until}"#));
            }
            for _ in 0..(rng.next() % 800) {
                let sub = id(&mut rng);
                let instant = NOW - rng.next() % 7200;
                signed_out.push(format!(r#""{sub}":{instant}"#));
                let entry = sign_outs.entry(sub).or_insert(instant);
                *entry = (*entry).max(instant);
            }
            sign_outs.retain(|_, instant| NOW <= *instant + 3600 + 60);
            let list = load(&doc(&revoked.join(","), &signed_out.join(",")));
            let list = RevocationList::decode(list.encoded().to_vec()).unwrap();
            assert_eq!(list.revoked_ids(), listed.len(), "round {round}");
            assert_eq!(list.signed_out_users(), sign_outs.len(), "round {round}");
            for n in 0..3000 {
                let name = format!("id-{n}");
                let issued = NOW - rng.next() % 7200;
                let facts = TokenFacts {
                    jti: Some(&name),
                    ..Default::default()
                };
                assert_eq!(
                    list.check(&facts).is_err(),
                    listed.contains(&name),
                    "{name}"
                );
                let origin = TokenFacts {
                    origin_jti: Some(&name),
                    ..Default::default()
                };
                assert_eq!(
                    list.check(&origin).is_err(),
                    listed.contains(&name),
                    "{name}"
                );
                let user = TokenFacts {
                    sub: Some(&name),
                    auth_time: Some(issued),
                    ..Default::default()
                };
                let expected = sign_outs.get(&name).is_some_and(|t| issued < *t);
                assert_eq!(list.check(&user).is_err(), expected, "{name} at {issued}");
            }
        }
    }

    // --- configuration block ---

    fn source(json: &str) -> Result<RevocationSource, ConfigError> {
        RevocationSource::parse(json.as_bytes(), "user_pools[0].revocations")
    }

    #[test]
    fn minimal_source_gets_documented_defaults() {
        let s = source(
            r#"{"cluster":"revocations","uri":"https://bucket.s3.amazonaws.com/revocations.json"}"#,
        )
        .unwrap();
        assert_eq!(s.location.authority, "bucket.s3.amazonaws.com");
        assert_eq!(s.location.path, "/revocations.json");
        assert_eq!(s.refresh_seconds, 30);
        assert_eq!(s.max_stale_seconds, 300);
        assert_eq!(s.on_unavailable, OnUnavailable::Deny);
        assert_eq!(s.max_bytes, 8 << 20);
        assert_eq!(s.timeout_ms, 5000);
        assert_eq!(
            s.limits(60),
            DocumentLimits {
                max_bytes: 8 << 20,
                clock_skew_seconds: 60
            }
        );
    }

    #[test]
    fn complete_source_is_accepted() {
        let s = source(
            r#"{"cluster":"c","uri":"http://revocations.internal:8080/v1/doc.json","refresh_seconds":5,
                "max_stale_seconds":0,"on_unavailable":"allow","max_bytes":1024,"timeout_ms":1000}"#,
        )
        .unwrap();
        assert_eq!(s.on_unavailable, OnUnavailable::Allow);
        assert_eq!(s.location.authority, "revocations.internal:8080");
        assert_eq!(s.max_stale_seconds, 0);
    }

    #[test]
    fn source_bounds_are_inclusive() {
        let with = |key: &str, value: u64| {
            source(&format!(
                r#"{{"cluster":"c","uri":"https://h/p","timeout_ms":100,"{key}":{value}}}"#
            ))
        };
        for (key, max) in [
            ("refresh_seconds", 3600),
            ("max_stale_seconds", 7 * 86400),
            ("max_bytes", 64 << 20),
        ] {
            assert!(with(key, max).is_ok(), "{key} = {max}");
            assert!(with(key, max + 1).is_err(), "{key} = {max} + 1");
        }
    }

    fn source_error(json: &str) -> ConfigError {
        match source(json) {
            Ok(s) => panic!("source should be refused: {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn source_errors_name_their_json_path() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"uri":"https://h/p"}"#,
                "user_pools[0].revocations.cluster",
            ),
            (r#"{"cluster":"c"}"#, "user_pools[0].revocations.uri"),
            (
                r#"{"cluster":"","uri":"https://h/p"}"#,
                "user_pools[0].revocations.cluster",
            ),
            (
                r#"{"cluster":"c","uri":"ftp://h/p"}"#,
                "user_pools[0].revocations.uri",
            ),
            (
                r#"{"cluster":"c","uri":"https://h/p","refresh_seconds":0}"#,
                "user_pools[0].revocations.refresh_seconds",
            ),
            (
                r#"{"cluster":"c","uri":"https://h/p","refresh_seconds":"30"}"#,
                "user_pools[0].revocations.refresh_seconds",
            ),
            (
                r#"{"cluster":"c","uri":"https://h/p","max_bytes":100}"#,
                "user_pools[0].revocations.max_bytes",
            ),
            (
                r#"{"cluster":"c","uri":"https://h/p","on_unavailable":"open"}"#,
                "user_pools[0].revocations.on_unavailable",
            ),
            (
                r#"{"cluster":"c","uri":"https://h/p","refresh_seconds":1,"timeout_ms":1000}"#,
                "user_pools[0].revocations.timeout_ms",
            ),
            (
                r#"{"cluster":"c","uri":"https://h/p","max_stale_seconds":-1}"#,
                "user_pools[0].revocations.max_stale_seconds",
            ),
        ];
        for (json, path) in cases {
            assert_eq!(&source_error(json).path, path, "{json}");
        }
        let e = source_error(r#"{"cluster":"c","uri":"https://h/p","refresh":30}"#);
        assert!(e.to_string().contains("refresh"), "{e}");
        assert!(e.path.starts_with("user_pools[0].revocations"), "{e}");
    }

    #[test]
    fn equal_sources_compare_equal_so_pools_can_share_one() {
        let a = source(r#"{"cluster":"c","uri":"https://h/p"}"#).unwrap();
        let b = source(r#"{"uri":"https://h/p","cluster":"c","refresh_seconds":30}"#).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn revoked_reason_and_description_are_stable() {
        assert_eq!(Revoked::REASON, "revoked");
        assert_eq!(
            Revoked::ERROR_DESCRIPTION,
            "The access token has been revoked"
        );
        assert_eq!(Revoked::OriginJti.detail(), "revoked_origin_jti");
    }

    /// The claims a verified token with this payload keeps.
    fn claims(json: &str) -> crate::claims::Claims {
        crate::claims::Payload::read(json.as_bytes(), &[])
            .unwrap()
            .into_claims(None)
    }

    #[test]
    fn token_facts_come_from_the_verified_claims() {
        let c =
            claims(r#"{"sub":"u1","jti":"j1","origin_jti":"o1","iat":10,"auth_time":5,"exp":99}"#);
        assert_eq!(
            token_facts(&c),
            TokenFacts {
                jti: Some("j1"),
                origin_jti: Some("o1"),
                sub: Some("u1"),
                iat: Some(10),
                auth_time: Some(5),
            }
        );
        // Times that are not integers count as absent: a signed-out user's token is refused.
        let c = claims(r#"{"sub":"alice-sub","iat":"late","auth_time":-3}"#);
        let facts = token_facts(&c);
        assert_eq!((facts.iat, facts.auth_time, facts.jti), (None, None, None));
        let list = load(&doc("", &format!(r#""alice-sub":{}"#, NOW - 10)));
        assert_eq!(list.check(&facts), Err(Revoked::SignedOut));
    }

    fn ready(json: &str) -> Availability<RevocationList> {
        Availability::Ready(std::rc::Rc::new(load(json)))
    }

    #[test]
    fn gate_checks_a_ready_list() {
        let list = ready(&doc(r#""j1":99999999999"#, ""));
        let listed = TokenFacts {
            jti: Some("j1"),
            ..TokenFacts::default()
        };
        let other = TokenFacts {
            jti: Some("j2"),
            ..TokenFacts::default()
        };
        for on in [OnUnavailable::Deny, OnUnavailable::Allow] {
            assert_eq!(gate(&list, on, false, &listed), Gate::Revoked(Revoked::Jti));
            assert_eq!(gate(&list, on, true, &listed), Gate::Revoked(Revoked::Jti));
            assert_eq!(gate(&list, on, false, &other), Gate::Pass);
        }
    }

    #[test]
    fn gate_without_a_list_waits_then_applies_on_unavailable() {
        let facts = TokenFacts::default();
        let deny = OnUnavailable::Deny;
        let allow = OnUnavailable::Allow;
        assert_eq!(gate(&Availability::Wait, deny, false, &facts), Gate::Wait);
        assert_eq!(gate(&Availability::Wait, allow, false, &facts), Gate::Wait);
        assert_eq!(
            gate(&Availability::Wait, deny, true, &facts),
            Gate::Unavailable { retry_after_s: 1 }
        );
        assert_eq!(gate(&Availability::Wait, allow, true, &facts), Gate::Pass);
        let down = Availability::Unavailable { retry_after_s: 7 };
        assert_eq!(
            gate(&down, deny, false, &facts),
            Gate::Unavailable { retry_after_s: 7 }
        );
        assert_eq!(gate(&down, allow, false, &facts), Gate::Pass);
    }

    #[test]
    fn a_stale_list_is_used_up_to_the_bound_then_unavailable() {
        use crate::keys::{FetchSchedule, PoolKeys};
        let src = source(
            r#"{"cluster":"c","uri":"https://h/p","refresh_seconds":10,"max_stale_seconds":20}"#,
        )
        .unwrap();
        let timing = src.timing();
        let mut state: PoolKeys<RevocationList> = PoolKeys::new();
        state.set_keys(load(&doc("", "")), 1_000);
        // Refreshes fail from then on: the list serves until 1 s + 10 s + 20 s.
        let mut failing = FetchSchedule::default();
        failing.fetch_failed(11_000, 0);
        state.observe(failing);
        assert!(matches!(
            state.availability(31_000, &timing),
            Availability::Ready(_)
        ));
        assert!(matches!(
            state.availability(31_001, &timing),
            Availability::Unavailable { .. }
        ));
        // The same bytes again: only the age moves.
        state.refreshed(30_000);
        assert!(matches!(
            state.availability(59_000, &timing),
            Availability::Ready(_)
        ));
    }

    #[test]
    fn stamps_round_trip_and_digests_tell_documents_apart() {
        let a = document_digest(br#"{"version":1}"#);
        assert_eq!(a, document_digest(br#"{"version":1}"#));
        assert_ne!(a, document_digest(br#"{"version":2}"#));
        let stamp = Stamp {
            fetched_at_ms: 1_767_225_600_123,
            digest: a,
        };
        assert_eq!(Stamp::decode(stamp.encode().as_bytes()), Some(stamp));
        assert_eq!(Stamp::decode(b"12"), None);
        assert_eq!(Stamp::decode(b"x 00"), None);
    }
}
