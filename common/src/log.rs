//! The ed25519-signed, hash-chained action log: node identities, entries, their canonical byte
//! encoding, and the chain verifier that classifies incoming entries.
//!
//! Every state change at a node (and at central) is one [`LogEntry`]. Each node's entries form a
//! chain: `seq` runs 1, 2, 3, ... without gaps and each entry's `prev_hash` is the [`EntryHash`] of
//! the previous one ([`EntryHash::GENESIS`] for seq 1). The signature covers (the digest of) a
//! hand-written, versioned, domain-separated byte encoding, never re-serialised JSON, so every implementation
//! signs and verifies exactly the same bytes; the shells store [`LogEntry::encode`] as is.
//!
//! Byte layout (all integers big-endian):
//!
//! ```text
//! signing bytes = DOMAIN_SEP_LOG_ENTRY || SHA-256(body)
//!                 (logs written before v2: DOMAIN_SEP_LOG_ENTRY_V1 || body, still verified)
//! encoding      = body || signature (64)
//! entry hash    = SHA-256(encoding)
//! body          = version (u8) || node_id (32) || seq (u64) || prev_hash (32)
//!                 || hlc.wall_ms (u64) || hlc.counter (u32) || event_id (16)
//!                 || action_len (u32) || action
//!                 || crdt_tag (u8: 0 none, 1 some) || [crdt_len (u32) || crdt_change]
//! ```
//!
//! The signature covers the body's SHA-256 rather than the body, so checking an entry hashes its
//! body once: the same pass, continued over the signature, gives the entry hash (ed25519 would
//! otherwise hash the whole body again with SHA-512, about 5 µs for a 4 KiB entry).
//!
//! [`LogEntry::decode`] accepts exactly the encodings that [`LogEntry::encode`] produces, so an
//! entry's bytes, its hash and its signature are all unambiguous. [`ChainVerifier`] applies the
//! chain rules (gap, fork, duplicate, bad prev hash, wrong node); whether a node's key is known
//! and unrevoked is the caller's knowledge ([`VerifyError::UnknownKey`], [`VerifyError::RevokedKey`]).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::hlc::Hlc;

/// Domain separator prefixed to every log entry's signing bytes, so a log-entry signature can
/// never be replayed as a signature over any other kind of message, and vice versa.
pub const DOMAIN_SEP_LOG_ENTRY: &[u8] = b"crvs-edge log-entry v2";

/// Domain separator of the first signing scheme, whose signature covers
/// `DOMAIN_SEP_LOG_ENTRY_V1 || body` (the whole body). Entries signed that way, in logs written
/// before v2, still verify (same body layout, same hash); nothing signs that way any more. A
/// signature valid under neither scheme is refused; one valid under either proves the key's
/// holder signed exactly this body.
pub const DOMAIN_SEP_LOG_ENTRY_V1: &[u8] = b"crvs-edge log-entry v1";

/// Version byte of the entry encoding; bumped on any change to the byte layout.
pub const ENTRY_FORMAT_VERSION: u8 = 1;

/// Largest `action` payload of one entry, in bytes: 512 KiB.
///
/// An HTTP request body is capped at 256 KiB, and an action's JSON is that body plus metadata
/// (ids, creator, location, timestamps, annotation). Twice the body cap leaves room for that
/// while bounding what one entry costs a 1 GB node to hold, hash and send.
pub const ENTRY_ACTION_BYTES_MAX: usize = 512 * 1024;

/// Largest `crdt_change` payload of one entry, in bytes: 1 MiB.
///
/// The automerge change for an action carries the action's content again plus per-operation
/// metadata; twice [`ENTRY_ACTION_BYTES_MAX`] bounds it with room to spare.
pub const ENTRY_CRDT_BYTES_MAX: usize = 1024 * 1024;

/// Bytes of an encoding besides the `action` and `crdt_change` payloads, with the crdt tag and
/// length present: version, node id, seq, prev hash, hlc, event id, action length, crdt tag,
/// crdt length and signature.
const ENTRY_OVERHEAD_BYTES: usize = 1 + 32 + 8 + 32 + 8 + 4 + 16 + 4 + 1 + 4 + SIGNATURE_BYTES;

/// Largest [`LogEntry::encode`] output, in bytes: both payloads at their bounds plus the fixed
/// fields. Framing and batch bounds elsewhere can be derived from it.
pub const ENTRY_BYTES_MAX: usize =
    ENTRY_OVERHEAD_BYTES + ENTRY_ACTION_BYTES_MAX + ENTRY_CRDT_BYTES_MAX;

const SIGNATURE_BYTES: usize = 64;

/// Number of hex characters printed by the `fmt_short` methods and short `Debug` output.
const SHORT_HEX_CHARS: usize = 10;

/// A node's identity: its ed25519 public key.
///
/// Text form (`Display`, `FromStr`, serde) is exactly 64 lowercase hex characters, so each
/// identity has one spelling in logs, configs and database keys.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId([u8; 32]);

/// A node's ed25519 signing key.
///
/// `Debug` prints `NodeSecretKey(..)`; there is no `Display`, `Clone` or serde; the key is
/// zeroized when dropped. The caller generates the 32 random bytes (this crate draws no
/// randomness) and stores them; see [`Self::to_bytes`].
#[derive(ZeroizeOnDrop)]
pub struct NodeSecretKey(SigningKey);

/// SHA-256 of an entry's full encoding ([`LogEntry::encode`], signature included).
///
/// Text form (`Display`, `FromStr`, serde) is 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryHash(pub [u8; 32]);

/// One signed action of one node.
///
/// Fields are public for the shells' convenience; entries built by [`LogEntry::sign`] or
/// [`LogEntry::decode`] respect the bounds, and [`LogEntry::verify_signature`] re-checks them.
#[derive(Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The signing node.
    pub node_id: NodeId,
    /// Position in the node's log: starts at 1, no gaps.
    pub seq: u64,
    /// Hash of the node's entry at `seq - 1`, or [`EntryHash::GENESIS`] for seq 1.
    pub prev_hash: EntryHash,
    /// Capture time of the action, as the node's hybrid logical clock saw it.
    pub hlc: Hlc,
    /// The event (record) the action belongs to.
    pub event_id: uuid::Uuid,
    /// The action, opaque to the log (the shells put the action's JSON here). The signature
    /// covers these exact bytes. At most [`ENTRY_ACTION_BYTES_MAX`].
    pub action: Vec<u8>,
    /// The event document's CRDT change for this action, if any. At most [`ENTRY_CRDT_BYTES_MAX`].
    pub crdt_change: Option<Vec<u8>>,
    /// ed25519 signature by `node_id` over the signing bytes (see the module docs).
    pub signature: [u8; 64],
}

/// A position in one node's log: the last entry's `seq` and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogHead {
    /// `seq` of the last entry, 0 for an empty log.
    pub seq: u64,
    /// Hash of the last entry, [`EntryHash::GENESIS`] for an empty log.
    pub hash: EntryHash,
}

/// How [`ChainVerifier`] classified a valid entry.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The next entry of the chain: apply it, then store it and the new head.
    Append,
    /// An entry already accepted, delivered again: acknowledge it, change nothing.
    Duplicate,
}

/// Tracks one node's log head and classifies that node's incoming entries.
///
/// The verifier holds only the head; for an entry at or below the head the caller passes the
/// hash it stored for that `seq` (see [`Self::check`]).
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    node_id: NodeId,
    head: LogHead,
}

/// An entry whose bounds and signature were checked ahead of its place in the chain (a shell may
/// do this on other threads while earlier entries are applied). Only [`Self::check`] builds one;
/// [`ChainVerifier::accept_checked`] then classifies it exactly as [`ChainVerifier::accept`]
/// would the bare entry.
#[derive(Clone, Debug)]
pub struct CheckedEntry {
    entry: LogEntry,
    hash: EntryHash,
    signature: Result<(), VerifyError>,
}

/// Builds a node's own log: signs the next entry on top of the current head.
///
/// [`Self::next_entry`] does not move the head; [`Self::commit`] does, once the shell has made
/// the entry durable. Not committing (a failed transaction) rolls the writer back for free.
#[derive(Debug)]
pub struct LogWriter {
    key: NodeSecretKey,
    head: LogHead,
}

/// Errors parsing the hex text form of a [`NodeId`] or an [`EntryHash`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseHexError {
    /// The text is not 64 characters long.
    #[error("expected {expected} hex characters, got {got}")]
    WrongLength {
        /// The required number of characters.
        expected: usize,
        /// The number of bytes in the input.
        got: usize,
    },
    /// A character that is not `0-9` or `a-f` (upper case is refused: one spelling per value).
    #[error("invalid character at index {index}: expected lowercase hex")]
    InvalidChar {
        /// Byte index of the first offending character.
        index: usize,
    },
}

/// Errors building an entry ([`LogEntry::sign`], [`LogWriter::next_entry`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A payload exceeds its bound.
    #[error("{field} is {bytes} bytes, more than the {bytes_max} allowed")]
    TooLarge {
        /// `"action"` or `"crdt_change"`.
        field: &'static str,
        /// The payload's length.
        bytes: usize,
        /// Its bound.
        bytes_max: usize,
    },
    /// `seq` 0 is not a valid log position (logs start at 1).
    #[error("seq 0 is not a valid log position")]
    SeqZero,
    /// The log already holds `u64::MAX` entries.
    #[error("log seq space exhausted")]
    SeqOverflow,
}

/// Errors decoding an entry's bytes ([`LogEntry::decode`]); each is a distinct kind of malformation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The version byte is not [`ENTRY_FORMAT_VERSION`].
    #[error("unsupported entry format version {got}")]
    UnsupportedVersion {
        /// The version byte found.
        got: u8,
    },
    /// The input ends inside a field.
    #[error("entry truncated in {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// Bytes follow the signature.
    #[error("{count} trailing bytes after the entry")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A length prefix exceeds its bound (checked before reading the payload).
    #[error("{field} length {bytes} exceeds the {bytes_max} allowed")]
    TooLarge {
        /// `"action"` or `"crdt_change"`.
        field: &'static str,
        /// The length found (saturated at `usize::MAX`).
        bytes: usize,
        /// Its bound.
        bytes_max: usize,
    },
    /// The crdt tag is neither 0 (none) nor 1 (some).
    #[error("invalid crdt tag {tag}")]
    BadCrdtTag {
        /// The tag byte found.
        tag: u8,
    },
    /// `seq` is 0 (logs start at 1).
    #[error("seq 0 is not a valid log position")]
    SeqZero,
}

/// Why an entry was rejected; [`Self::reason`] gives a stable machine-readable code for storage,
/// metrics and the ops page.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature does not verify (strictly) under the entry's `node_id`.
    #[error("bad signature on entry {seq}")]
    BadSignature {
        /// The entry's seq.
        seq: u64,
    },
    /// The node's key is not known to the verifier's caller.
    #[error("unknown node key {node_id}")]
    UnknownKey {
        /// The unknown node.
        node_id: NodeId,
    },
    /// The node's key has been revoked.
    #[error("revoked node key {node_id}")]
    RevokedKey {
        /// The revoked node.
        node_id: NodeId,
    },
    /// The entry's seq is not the next one expected: entries are taken in order, without holes.
    #[error("expected seq {expected}, got {got}")]
    Gap {
        /// The seq expected next.
        expected: u64,
        /// The seq received.
        got: u64,
    },
    /// A validly signed entry at an already accepted seq with a different hash: evidence of
    /// tampering or a cloned node.
    #[error("fork at seq {seq}")]
    Fork {
        /// The contested seq.
        seq: u64,
    },
    /// The entry's `prev_hash` is not the hash of the previous entry.
    #[error("entry {seq} does not chain to the previous entry")]
    BadPrevHash {
        /// The entry's seq.
        seq: u64,
    },
    /// The entry belongs to another node's log (cross-node replay).
    #[error("entry of node {got} offered as node {expected}")]
    WrongNode {
        /// The node whose log is being verified.
        expected: NodeId,
        /// The node named in the entry.
        got: NodeId,
    },
    /// The entry's bytes (or in-memory fields) are malformed.
    #[error("malformed entry: {0}")]
    Malformed(#[from] DecodeError),
    /// The caller did not supply its stored hash for an entry below the head, so duplicate and
    /// fork cannot be told apart. A caller bug (the store lost an accepted entry), not peer fault.
    #[error("no stored hash supplied for already accepted seq {seq}")]
    MissingStoredHash {
        /// The entry's seq.
        seq: u64,
    },
}

impl NodeId {
    /// The identity with these public key bytes (not checked to be a valid curve point; an
    /// invalid key simply verifies no signature).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The public key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 10 hex characters, for logs and UIs.
    pub fn fmt_short(&self) -> String {
        fmt_short_hex(&self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.fmt_short())
    }
}

impl FromStr for NodeId {
    type Err = ParseHexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s).map(Self)
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl NodeSecretKey {
    /// The key with these secret bytes (an ed25519 seed).
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(bytes))
    }

    /// The secret bytes, for storing the key; zeroized when the returned value is dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The identity (public key) of this key.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.0.verifying_key().to_bytes())
    }

    /// Signs `message`, which must begin with a `DOMAIN_SEP_*` constant. Crate-private so that
    /// only the typed, domain-separated encodings of this crate are ever signed.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for NodeSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeSecretKey(..)")
    }
}

impl EntryHash {
    /// The `prev_hash` of seq 1 and the hash of an empty log's head: all zeros.
    pub const GENESIS: Self = Self([0; 32]);

    /// The first 10 hex characters, for logs and UIs.
    pub fn fmt_short(&self) -> String {
        fmt_short_hex(&self.0)
    }
}

impl fmt::Display for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({})", self.fmt_short())
    }
}

impl FromStr for EntryHash {
    type Err = ParseHexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s).map(Self)
    }
}

impl Serialize for EntryHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EntryHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl LogHead {
    /// The head of an empty log: seq 0, [`EntryHash::GENESIS`].
    pub const GENESIS: Self = Self {
        seq: 0,
        hash: EntryHash::GENESIS,
    };
}

impl LogEntry {
    /// Builds and signs an entry with `key`; `node_id` is `key`'s identity.
    ///
    /// Refuses payloads over [`ENTRY_ACTION_BYTES_MAX`] / [`ENTRY_CRDT_BYTES_MAX`] and seq 0.
    /// Chaining (`seq`, `prev_hash`) is the caller's job; [`LogWriter`] does it.
    pub fn sign(
        key: &NodeSecretKey,
        seq: u64,
        prev_hash: EntryHash,
        hlc: Hlc,
        event_id: uuid::Uuid,
        action: Vec<u8>,
        crdt_change: Option<Vec<u8>>,
    ) -> Result<Self, EncodeError> {
        if seq == 0 {
            return Err(EncodeError::SeqZero);
        }
        check_bounds(&action, crdt_change.as_deref()).map_err(|(field, bytes, bytes_max)| {
            EncodeError::TooLarge {
                field,
                bytes,
                bytes_max,
            }
        })?;
        let mut entry = Self {
            node_id: key.node_id(),
            seq,
            prev_hash,
            hlc,
            event_id,
            action,
            crdt_change,
            signature: [0; SIGNATURE_BYTES],
        };
        entry.signature = key.sign(&entry.signing_bytes());
        Ok(entry)
    }

    /// The wire and storage encoding: the body (see the module docs) followed by the signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body_len() + SIGNATURE_BYTES);
        self.encode_to(&mut out);
        out
    }

    /// Appends [`Self::encode`] to `out`.
    pub fn encode_to(&self, out: &mut Vec<u8>) {
        self.write_body(out);
        out.extend_from_slice(&self.signature);
    }

    /// Length of [`Self::encode`], without encoding.
    pub fn encoded_len(&self) -> usize {
        self.body_len() + SIGNATURE_BYTES
    }

    /// Parses an encoding, accepting exactly what [`Self::encode`] produces.
    ///
    /// Length prefixes are checked against their bounds before anything is read, so a hostile
    /// input cannot make this allocate more than its own size. The signature is not checked here;
    /// see [`Self::verify_signature`] and [`ChainVerifier`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader { bytes };
        let version = reader.u8("version")?;
        if version != ENTRY_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion { got: version });
        }
        let node_id = NodeId(reader.array("node_id")?);
        let seq = reader.u64("seq")?;
        if seq == 0 {
            return Err(DecodeError::SeqZero);
        }
        let prev_hash = EntryHash(reader.array("prev_hash")?);
        let wall_ms = reader.u64("hlc.wall_ms")?;
        let counter = reader.u32("hlc.counter")?;
        let event_id = uuid::Uuid::from_bytes(reader.array("event_id")?);
        let action = reader.payload("action", ENTRY_ACTION_BYTES_MAX)?.to_vec();
        let crdt_change = match reader.u8("crdt_tag")? {
            0 => None,
            1 => Some(
                reader
                    .payload("crdt_change", ENTRY_CRDT_BYTES_MAX)?
                    .to_vec(),
            ),
            tag => return Err(DecodeError::BadCrdtTag { tag }),
        };
        let signature = reader.array("signature")?;
        if !reader.bytes.is_empty() {
            return Err(DecodeError::TrailingBytes {
                count: reader.bytes.len(),
            });
        }
        Ok(Self {
            node_id,
            seq,
            prev_hash,
            hlc: Hlc { wall_ms, counter },
            event_id,
            action,
            crdt_change,
            signature,
        })
    }

    /// SHA-256 of [`Self::encode`]: the entry's identity in the chain.
    pub fn hash(&self) -> EntryHash {
        EntryHash(Sha256::digest(self.encode()).into())
    }

    /// Checks the bounds and strictly verifies the signature under `node_id` (non-canonical
    /// signatures and small-order keys are refused). Says nothing about the chain or the key's
    /// standing: see [`ChainVerifier`].
    pub fn verify_signature(&self) -> Result<(), VerifyError> {
        let key = VerifyingKey::from_bytes(&self.node_id.0).ok();
        let mut body = Vec::with_capacity(self.body_len());
        self.write_body(&mut body);
        self.verify_signature_under(
            key.as_ref(),
            &signing_message(&Sha256::digest(&body)),
            &body,
        )
    }

    /// [`Self::verify_signature`] with `node_id`'s key already decompressed (`None`: not a valid
    /// key), the signing bytes already built and the body they digest.
    fn verify_signature_under(
        &self,
        key: Option<&VerifyingKey>,
        signing_bytes: &[u8],
        body: &[u8],
    ) -> Result<(), VerifyError> {
        if self.seq == 0 {
            return Err(DecodeError::SeqZero.into());
        }
        check_bounds(&self.action, self.crdt_change.as_deref()).map_err(
            |(field, bytes, bytes_max)| DecodeError::TooLarge {
                field,
                bytes,
                bytes_max,
            },
        )?;
        let signature = Signature::from_bytes(&self.signature);
        let signed = key.is_some_and(|key| {
            key.verify_strict(signing_bytes, &signature).is_ok()
                // An entry of a log written before v2 (rare: the second check runs only for a
                // signature the current scheme refuses).
                || key
                    .verify_strict(&[DOMAIN_SEP_LOG_ENTRY_V1, body].concat(), &signature)
                    .is_ok()
        });
        if signed {
            Ok(())
        } else {
            Err(VerifyError::BadSignature { seq: self.seq })
        }
    }

    /// `DOMAIN_SEP_LOG_ENTRY || SHA-256(body)`: what the signature covers.
    fn signing_bytes(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.body_len());
        self.write_body(&mut body);
        signing_message(&Sha256::digest(&body))
    }

    fn body_len(&self) -> usize {
        let crdt_len = self.crdt_change.as_ref().map_or(0, |crdt| 4 + crdt.len());
        ENTRY_OVERHEAD_BYTES - SIGNATURE_BYTES - 4 + self.action.len() + crdt_len
    }

    fn write_body(&self, out: &mut Vec<u8>) {
        out.push(ENTRY_FORMAT_VERSION);
        out.extend_from_slice(&self.node_id.0);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.prev_hash.0);
        out.extend_from_slice(&self.hlc.wall_ms.to_be_bytes());
        out.extend_from_slice(&self.hlc.counter.to_be_bytes());
        out.extend_from_slice(self.event_id.as_bytes());
        write_payload(out, &self.action);
        match &self.crdt_change {
            None => out.push(0),
            Some(crdt) => {
                out.push(1);
                write_payload(out, crdt);
            }
        }
    }
}

/// The signing bytes of an entry whose body hashes to `body_digest`.
fn signing_message(body_digest: &[u8]) -> Vec<u8> {
    [DOMAIN_SEP_LOG_ENTRY, body_digest].concat()
}

impl fmt::Debug for LogEntry {
    /// Prints payload lengths rather than payloads, and short hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogEntry")
            .field("node_id", &self.node_id)
            .field("seq", &self.seq)
            .field("prev_hash", &self.prev_hash)
            .field("hlc", &self.hlc)
            .field("event_id", &self.event_id)
            .field("action_len", &self.action.len())
            .field("crdt_change_len", &self.crdt_change.as_ref().map(Vec::len))
            .field(
                "signature",
                &format_args!("{}", fmt_short_hex(&self.signature)),
            )
            .finish()
    }
}

impl CheckedEntry {
    /// Checks `entry`'s bounds and signature ([`LogEntry::verify_signature`]) and hashes it.
    /// A failed check is kept, not returned: the chain verifier reports it in its own order.
    pub fn check(entry: LogEntry) -> Self {
        let key = VerifyingKey::from_bytes(&entry.node_id.0).ok();
        Self::check_under(entry, key.as_ref())
    }

    /// [`Self::check`] with the entry's key already decompressed. The body is encoded and
    /// hashed once: the hash of the body (signed) continues over the signature into the entry
    /// hash.
    fn check_under(entry: LogEntry, key: Option<&VerifyingKey>) -> Self {
        let mut body = Vec::with_capacity(entry.body_len());
        entry.write_body(&mut body);
        let body_hash = Sha256::new().chain_update(&body);
        let signing_bytes = signing_message(&body_hash.clone().finalize());
        let signature = entry.verify_signature_under(key, &signing_bytes, &body);
        let hash = EntryHash(body_hash.chain_update(entry.signature).finalize().into());
        Self {
            entry,
            hash,
            signature,
        }
    }

    /// [`Self::check`] of every entry, in order; a node's key is decompressed once for a run of
    /// its entries.
    pub fn check_all(entries: Vec<LogEntry>) -> Vec<Self> {
        let mut key: Option<(NodeId, Option<VerifyingKey>)> = None;
        entries
            .into_iter()
            .map(|entry| {
                if key.as_ref().is_none_or(|(id, _)| *id != entry.node_id) {
                    key = Some((
                        entry.node_id,
                        VerifyingKey::from_bytes(&entry.node_id.0).ok(),
                    ));
                }
                let verifying = key.as_ref().and_then(|(_, k)| k.as_ref());
                Self::check_under(entry, verifying)
            })
            .collect()
    }

    /// The entry.
    pub fn entry(&self) -> &LogEntry {
        &self.entry
    }

    /// The entry, giving up the check.
    pub fn into_entry(self) -> LogEntry {
        self.entry
    }

    /// [`LogEntry::hash`], computed by the check.
    pub fn hash(&self) -> EntryHash {
        self.hash
    }

    /// Whether the signature checked out (bounds included).
    pub fn is_signed(&self) -> bool {
        self.signature.is_ok()
    }
}

impl ChainVerifier {
    /// A verifier for `node_id`'s log whose accepted entries end at `head`
    /// ([`LogHead::GENESIS`] for a node not heard from yet).
    pub fn new(node_id: NodeId, head: LogHead) -> Self {
        Self { node_id, head }
    }

    /// The node whose log this verifies.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The last accepted position.
    pub fn head(&self) -> LogHead {
        self.head
    }

    /// Classifies `entry` without changing the head.
    ///
    /// Checks, in order: the entry is this node's ([`VerifyError::WrongNode`]); bounds and
    /// signature ([`VerifyError::Malformed`], [`VerifyError::BadSignature`]), so that only
    /// genuinely signed entries can count as duplicates or forks; then its position:
    ///
    /// - `seq <= head.seq`: [`Verdict::Duplicate`] if its hash equals the accepted one, else
    ///   [`VerifyError::Fork`]. For `seq == head.seq` the head's own hash is used; below it, the
    ///   caller passes the hash it stored for that seq as `stored_hash_at_seq`
    ///   ([`VerifyError::MissingStoredHash`] if `None`).
    /// - `seq == head.seq + 1`: [`Verdict::Append`] if `prev_hash == head.hash`, else
    ///   [`VerifyError::BadPrevHash`].
    /// - `seq > head.seq + 1`: [`VerifyError::Gap`].
    pub fn check(
        &self,
        entry: &LogEntry,
        stored_hash_at_seq: Option<EntryHash>,
    ) -> Result<Verdict, VerifyError> {
        self.classify(entry, stored_hash_at_seq)
            .map(|(verdict, _)| verdict)
    }

    /// Like [`Self::check`], and on [`Verdict::Append`] moves the head to `entry`.
    ///
    /// Call it only once the caller will certainly keep the entry (or keep a clone of the
    /// verifier to roll back), so the head never runs ahead of what is stored.
    pub fn accept(
        &mut self,
        entry: &LogEntry,
        stored_hash_at_seq: Option<EntryHash>,
    ) -> Result<Verdict, VerifyError> {
        let (verdict, hash) = self.classify(entry, stored_hash_at_seq)?;
        if verdict == Verdict::Append {
            self.head = LogHead {
                seq: entry.seq,
                hash,
            };
        }
        Ok(verdict)
    }

    /// [`Self::accept`] for an entry whose signature [`CheckedEntry::check`] already checked:
    /// the same checks in the same order, with the same verdicts and errors.
    pub fn accept_checked(
        &mut self,
        checked: &CheckedEntry,
        stored_hash_at_seq: Option<EntryHash>,
    ) -> Result<Verdict, VerifyError> {
        let entry = &checked.entry;
        let verdict = self.classify_signed(
            entry,
            checked.hash,
            checked.signature.clone(),
            stored_hash_at_seq,
        )?;
        if verdict == Verdict::Append {
            self.head = LogHead {
                seq: entry.seq,
                hash: checked.hash,
            };
        }
        Ok(verdict)
    }

    /// [`Self::check`], also returning the entry's hash so `accept` hashes once.
    fn classify(
        &self,
        entry: &LogEntry,
        stored_hash_at_seq: Option<EntryHash>,
    ) -> Result<(Verdict, EntryHash), VerifyError> {
        if entry.node_id != self.node_id {
            return Err(VerifyError::WrongNode {
                expected: self.node_id,
                got: entry.node_id,
            });
        }
        entry.verify_signature()?;
        let hash = entry.hash();
        let verdict = self.classify_signed(entry, hash, Ok(()), stored_hash_at_seq)?;
        Ok((verdict, hash))
    }

    /// The checks of [`Self::classify`] given the outcome of the signature check and the hash.
    fn classify_signed(
        &self,
        entry: &LogEntry,
        hash: EntryHash,
        signature: Result<(), VerifyError>,
        stored_hash_at_seq: Option<EntryHash>,
    ) -> Result<Verdict, VerifyError> {
        if entry.node_id != self.node_id {
            return Err(VerifyError::WrongNode {
                expected: self.node_id,
                got: entry.node_id,
            });
        }
        signature?;
        if entry.seq <= self.head.seq {
            let accepted_hash = if entry.seq == self.head.seq {
                self.head.hash
            } else {
                stored_hash_at_seq.ok_or(VerifyError::MissingStoredHash { seq: entry.seq })?
            };
            return if hash == accepted_hash {
                Ok(Verdict::Duplicate)
            } else {
                Err(VerifyError::Fork { seq: entry.seq })
            };
        }
        // `entry.seq > head.seq`, so `head.seq < u64::MAX` and this cannot overflow.
        let expected = self.head.seq + 1;
        if entry.seq != expected {
            return Err(VerifyError::Gap {
                expected,
                got: entry.seq,
            });
        }
        if entry.prev_hash != self.head.hash {
            return Err(VerifyError::BadPrevHash { seq: entry.seq });
        }
        Ok(Verdict::Append)
    }
}

impl LogWriter {
    /// A writer that signs with `key` on top of `head` (the node's last durable entry, or
    /// [`LogHead::GENESIS`] for a fresh node).
    pub fn new(key: NodeSecretKey, head: LogHead) -> Self {
        Self { key, head }
    }

    /// The writing node.
    pub fn node_id(&self) -> NodeId {
        self.key.node_id()
    }

    /// The last committed position.
    pub fn head(&self) -> LogHead {
        self.head
    }

    /// Signs the entry at `head.seq + 1` chained to `head.hash`; the head does not move until
    /// [`Self::commit`].
    pub fn next_entry(
        &self,
        hlc: Hlc,
        event_id: uuid::Uuid,
        action: Vec<u8>,
        crdt_change: Option<Vec<u8>>,
    ) -> Result<LogEntry, EncodeError> {
        let seq = self
            .head
            .seq
            .checked_add(1)
            .ok_or(EncodeError::SeqOverflow)?;
        LogEntry::sign(
            &self.key,
            seq,
            self.head.hash,
            hlc,
            event_id,
            action,
            crdt_change,
        )
    }

    /// Moves the head to `entry` once it is durably stored, and returns the new head.
    ///
    /// Refuses an entry that is not the writer's next one (another node's, a stale one from an
    /// earlier `next_entry`, or one chained elsewhere), leaving the head unchanged.
    pub fn commit(&mut self, entry: &LogEntry) -> Result<LogHead, VerifyError> {
        let node_id = self.node_id();
        if entry.node_id != node_id {
            return Err(VerifyError::WrongNode {
                expected: node_id,
                got: entry.node_id,
            });
        }
        let expected = self.head.seq.saturating_add(1);
        if entry.seq != expected {
            return Err(VerifyError::Gap {
                expected,
                got: entry.seq,
            });
        }
        if entry.prev_hash != self.head.hash {
            return Err(VerifyError::BadPrevHash { seq: entry.seq });
        }
        self.head = LogHead {
            seq: entry.seq,
            hash: entry.hash(),
        };
        Ok(self.head)
    }
}

impl VerifyError {
    /// A stable, machine-readable code for this rejection (stored with rejects, used as a
    /// metrics label): `bad-signature`, `unknown-key`, `revoked-key`, `gap`, `fork`,
    /// `bad-prev-hash`, `wrong-node`, `malformed` or `missing-stored-hash`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadSignature { .. } => "bad-signature",
            Self::UnknownKey { .. } => "unknown-key",
            Self::RevokedKey { .. } => "revoked-key",
            Self::Gap { .. } => "gap",
            Self::Fork { .. } => "fork",
            Self::BadPrevHash { .. } => "bad-prev-hash",
            Self::WrongNode { .. } => "wrong-node",
            Self::Malformed(_) => "malformed",
            Self::MissingStoredHash { .. } => "missing-stored-hash",
        }
    }
}

/// Verifies a whole log from genesis: `entries[i]` must be `node_id`'s entry at seq `i + 1`,
/// validly signed and chained. Returns the head after the last entry ([`LogHead::GENESIS`] for
/// no entries).
///
/// A repeated entry is refused as [`VerifyError::Gap`] (it is not the next seq), a different
/// entry at a repeated seq as [`VerifyError::Fork`].
pub fn verify_chain(node_id: NodeId, entries: &[LogEntry]) -> Result<LogHead, VerifyError> {
    let mut verifier = ChainVerifier::new(node_id, LogHead::GENESIS);
    for entry in entries {
        let head = verifier.head();
        // Every entry below the head is `entries[seq - 1]`, already accepted.
        let stored_hash = if entry.seq < head.seq {
            usize::try_from(entry.seq - 1)
                .ok()
                .and_then(|index| entries.get(index))
                .map(LogEntry::hash)
        } else {
            None
        };
        match verifier.accept(entry, stored_hash)? {
            Verdict::Append => {}
            Verdict::Duplicate => {
                return Err(VerifyError::Gap {
                    expected: head.seq.saturating_add(1),
                    got: entry.seq,
                });
            }
        }
    }
    Ok(verifier.head())
}

/// Cursor over an encoding being decoded; every read checks the remaining length first.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < len {
            return Err(DecodeError::Truncated { field });
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N, field)?);
        Ok(array)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.array::<1>(field).map(|[byte]| byte)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_be_bytes)
    }

    /// A u32 length prefix, checked against `bytes_max`, then that many bytes.
    fn payload(&mut self, field: &'static str, bytes_max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(field)?;
        let bytes = usize::try_from(len).unwrap_or(usize::MAX);
        if bytes > bytes_max {
            return Err(DecodeError::TooLarge {
                field,
                bytes,
                bytes_max,
            });
        }
        self.take(bytes, field)
    }
}

/// Writes a u32 length prefix and the payload.
fn write_payload(out: &mut Vec<u8>, payload: &[u8]) {
    // Entries from `sign` and `decode` are within bounds far below `u32::MAX`. A hand-built
    // entry over 4 GiB would get a prefix that disagrees with its bytes: its encoding then never
    // decodes and `verify_signature` refuses it, so this fails closed.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// The first payload over its bound, as `(field, bytes, bytes_max)`.
fn check_bounds(
    action: &[u8],
    crdt_change: Option<&[u8]>,
) -> Result<(), (&'static str, usize, usize)> {
    if action.len() > ENTRY_ACTION_BYTES_MAX {
        return Err(("action", action.len(), ENTRY_ACTION_BYTES_MAX));
    }
    if let Some(crdt) = crdt_change
        && crdt.len() > ENTRY_CRDT_BYTES_MAX
    {
        return Err(("crdt_change", crdt.len(), ENTRY_CRDT_BYTES_MAX));
    }
    Ok(())
}

fn fmt_short_hex(bytes: &[u8]) -> String {
    let mut text = hex::encode(&bytes[..SHORT_HEX_CHARS.div_ceil(2).min(bytes.len())]);
    text.truncate(SHORT_HEX_CHARS);
    text
}

/// Parses exactly 64 lowercase hex characters.
fn parse_hex32(text: &str) -> Result<[u8; 32], ParseHexError> {
    let expected = 64;
    if text.len() != expected {
        return Err(ParseHexError::WrongLength {
            expected,
            got: text.len(),
        });
    }
    if let Some(index) = text
        .bytes()
        .position(|c| !matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(ParseHexError::InvalidChar { index });
    }
    let mut bytes = [0; 32];
    hex::decode_to_slice(text, &mut bytes).map_err(|_| ParseHexError::InvalidChar { index: 0 })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(seed: u8) -> NodeSecretKey {
        NodeSecretKey::from_bytes(&[seed; 32])
    }

    fn event_id(n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(n)
    }

    fn hlc(wall_ms: u64, counter: u32) -> Hlc {
        Hlc { wall_ms, counter }
    }

    /// A genuine log of `n` entries of the node with key seed `seed`.
    fn build_log(seed: u8, n: u64) -> Vec<LogEntry> {
        let mut writer = LogWriter::new(key(seed), LogHead::GENESIS);
        (1..=n)
            .map(|i| {
                let crdt = (i % 2 == 0).then(|| vec![i as u8; i as usize]);
                let action = format!(r#"{{"type":"DECLARE","n":{i}}}"#).into_bytes();
                let entry = writer
                    .next_entry(hlc(1_000 + i, 0), event_id(u128::from(i)), action, crdt)
                    .unwrap();
                writer.commit(&entry).unwrap();
                entry
            })
            .collect()
    }

    fn sample_entry(crdt_change: Option<Vec<u8>>) -> LogEntry {
        LogEntry::sign(
            &key(7),
            3,
            EntryHash([0xab; 32]),
            hlc(1_732_600_000_000, 2),
            event_id(0x0102_0304),
            br#"{"type":"NOTIFY"}"#.to_vec(),
            crdt_change,
        )
        .unwrap()
    }

    /// Decodes an encoding and classifies it against `verifier`, as central does on receipt.
    fn receive(verifier: &ChainVerifier, bytes: &[u8]) -> Result<Verdict, VerifyError> {
        let entry = LogEntry::decode(bytes)?;
        verifier.check(&entry, None)
    }

    /// A pre-checked entry is classified exactly as the bare entry: same verdicts, same errors,
    /// same head movement, for appends, duplicates, forks, gaps, bad links, forged signatures,
    /// altered payloads and entries of another node.
    #[test]
    fn accept_checked_matches_accept() {
        let log = build_log(3, 6);
        let other = build_log(4, 2);
        let mut forged = log[2].clone();
        forged.signature[5] ^= 1;
        let mut altered = log[3].clone();
        altered.action = br#"{"type":"DECLARE","n":99}"#.to_vec();
        let mut fork_writer = LogWriter::new(key(3), LogHead::GENESIS);
        let fork = fork_writer
            .next_entry(hlc(5, 0), event_id(77), b"{}".to_vec(), None)
            .unwrap();
        fork_writer.commit(&fork).unwrap();
        let bad_link = fork_writer
            .next_entry(hlc(6, 0), event_id(78), b"{}".to_vec(), None)
            .unwrap();
        let stored = |seq: u64| log.get(seq as usize - 1).map(LogEntry::hash);
        let cases: Vec<(LogHead, LogEntry)> = vec![
            (LogHead::GENESIS, log[0].clone()),
            (LogHead::GENESIS, log[1].clone()),
            (head_of(&log[1]), log[2].clone()),
            (head_of(&log[3]), log[1].clone()),
            (head_of(&log[3]), log[3].clone()),
            (head_of(&log[3]), fork),
            (head_of(&log[1]), forged),
            (head_of(&log[2]), altered),
            (head_of(&log[0]), other[1].clone()),
            (head_of(&log[2]), log[4].clone()),
            (head_of(&log[0]), bad_link),
        ];
        // Checking a run at once (a node's key decompressed once for its entries) judges each
        // entry as checking it alone does.
        let all = CheckedEntry::check_all(cases.iter().map(|(_, e)| e.clone()).collect());
        for ((_, entry), checked) in cases.iter().zip(&all) {
            let one = CheckedEntry::check(entry.clone());
            assert_eq!(checked.hash(), entry.hash());
            assert_eq!(one.hash(), entry.hash());
            assert_eq!(checked.is_signed(), one.is_signed());
            assert_eq!(checked.is_signed(), entry.verify_signature().is_ok());
        }
        for (head, entry) in cases {
            let mut plain = ChainVerifier::new(key(3).node_id(), head);
            let mut pre = plain.clone();
            let expected = plain.accept(&entry, stored(entry.seq));
            assert_eq!(entry.encoded_len(), entry.encode().len());
            let checked = CheckedEntry::check(entry.clone());
            assert_eq!(checked.hash(), entry.hash());
            assert_eq!(pre.accept_checked(&checked, stored(entry.seq)), expected);
            assert_eq!(pre.head(), plain.head());
            assert_eq!(checked.into_entry(), entry);
        }
    }

    fn head_of(entry: &LogEntry) -> LogHead {
        LogHead {
            seq: entry.seq,
            hash: entry.hash(),
        }
    }

    // ---- identities and hashes -------------------------------------------------------------

    #[test]
    fn node_id_text_forms() {
        let node_id = key(1).node_id();
        let text = node_id.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<NodeId>(), Ok(node_id));
        assert_eq!(node_id.fmt_short(), text[..10]);
        assert_eq!(format!("{node_id:?}"), format!("NodeId({})", &text[..10]));
        assert_eq!(NodeId::from_bytes(*node_id.as_bytes()), node_id);

        let json = serde_json::to_string(&node_id).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<NodeId>(&json).unwrap(), node_id);
        assert!(serde_json::from_str::<NodeId>("\"abc\"").is_err());
        assert!(serde_json::from_str::<NodeId>("42").is_err());
    }

    #[test]
    fn hex_parse_errors() {
        let valid = "0123456789abcdef".repeat(4);
        assert!(valid.parse::<NodeId>().is_ok());
        assert_eq!(
            valid[..63].parse::<NodeId>(),
            Err(ParseHexError::WrongLength {
                expected: 64,
                got: 63
            })
        );
        assert_eq!(
            format!("{valid}0").parse::<EntryHash>(),
            Err(ParseHexError::WrongLength {
                expected: 64,
                got: 65
            })
        );
        assert_eq!(
            "".parse::<NodeId>(),
            Err(ParseHexError::WrongLength {
                expected: 64,
                got: 0
            })
        );
        assert_eq!(
            valid.to_uppercase().parse::<NodeId>(),
            Err(ParseHexError::InvalidChar { index: 10 })
        );
        let with_g = format!("{}g", &valid[..63]);
        assert_eq!(
            with_g.parse::<EntryHash>(),
            Err(ParseHexError::InvalidChar { index: 63 })
        );
        // 64 bytes but multi-byte characters: still refused, never a panic.
        let multibyte = format!("é{}", &valid[..62]);
        assert_eq!(
            multibyte.parse::<NodeId>(),
            Err(ParseHexError::InvalidChar { index: 0 })
        );
    }

    #[test]
    fn entry_hash_text_forms() {
        let hash = build_log(1, 1)[0].hash();
        let text = hash.to_string();
        assert_eq!(text.parse::<EntryHash>(), Ok(hash));
        assert_eq!(format!("{hash:?}"), format!("EntryHash({})", &text[..10]));
        assert_eq!(hash.fmt_short(), text[..10]);
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(serde_json::from_str::<EntryHash>(&json).unwrap(), hash);
        assert_eq!(EntryHash::GENESIS.to_string(), "0".repeat(64));
        assert_eq!(
            LogHead::GENESIS,
            LogHead {
                seq: 0,
                hash: EntryHash([0; 32])
            }
        );
        let head_json = serde_json::to_string(&LogHead::GENESIS).unwrap();
        assert_eq!(
            head_json,
            format!(r#"{{"seq":0,"hash":"{}"}}"#, "0".repeat(64))
        );
        assert_eq!(
            serde_json::from_str::<LogHead>(&head_json).unwrap(),
            LogHead::GENESIS
        );
    }

    #[test]
    fn secret_key_is_redacted_and_round_trips() {
        fn zeroized_on_drop<T: ZeroizeOnDrop>() {}
        zeroized_on_drop::<NodeSecretKey>();
        let secret = key(9);
        assert_eq!(format!("{secret:?}"), "NodeSecretKey(..)");
        let bytes = secret.to_bytes();
        assert_eq!(*bytes, [9; 32]);
        assert_eq!(
            NodeSecretKey::from_bytes(&bytes).node_id(),
            secret.node_id()
        );
        assert_ne!(key(1).node_id(), key(2).node_id());
        let writer = LogWriter::new(key(9), LogHead::GENESIS);
        assert!(!format!("{writer:?}").contains(&hex::encode([9u8; 32])));
    }

    // ---- encoding ---------------------------------------------------------------------------

    #[test]
    fn encoding_layout_is_exact() {
        let entry = sample_entry(Some(vec![0xc1, 0xc2]));
        let mut body = vec![ENTRY_FORMAT_VERSION];
        body.extend_from_slice(key(7).node_id().as_bytes());
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3]);
        body.extend_from_slice(&[0xab; 32]);
        body.extend_from_slice(&1_732_600_000_000u64.to_be_bytes());
        body.extend_from_slice(&[0, 0, 0, 2]);
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        body.extend_from_slice(&[0, 0, 0, 17]);
        body.extend_from_slice(br#"{"type":"NOTIFY"}"#);
        body.extend_from_slice(&[1, 0, 0, 0, 2, 0xc1, 0xc2]);

        let mut signing = DOMAIN_SEP_LOG_ENTRY.to_vec();
        signing.extend_from_slice(&Sha256::digest(&body));
        assert_eq!(entry.signing_bytes(), signing);
        let verifying = VerifyingKey::from_bytes(key(7).node_id().as_bytes()).unwrap();
        assert!(
            verifying
                .verify_strict(&signing, &Signature::from_bytes(&entry.signature))
                .is_ok(),
            "the signature covers DOMAIN_SEP_LOG_ENTRY || SHA-256(body)"
        );

        let mut encoded = body.clone();
        encoded.extend_from_slice(&entry.signature);
        assert_eq!(entry.encode(), encoded);
        assert_eq!(entry.hash(), EntryHash(Sha256::digest(&encoded).into()));

        // Without a crdt change the tag is 0 and no length follows.
        let bare = sample_entry(None);
        let bare_encoded = bare.encode();
        assert_eq!(bare_encoded[body.len() - 7], 0);
        assert_eq!(bare_encoded.len(), body.len() - 6 + SIGNATURE_BYTES);
    }

    #[test]
    fn signature_is_domain_separated() {
        let entry = sample_entry(None);
        let key = key(7);
        let body = &entry.encode()[..entry.encode().len() - SIGNATURE_BYTES];
        let digest = Sha256::digest(body);
        // The body or its digest signed without a domain separator, or under another one.
        for message in [
            body.to_vec(),
            digest.to_vec(),
            [b"crvs-edge central-record v1".as_slice(), &digest].concat(),
            [DOMAIN_SEP_LOG_ENTRY_V1, &digest].concat(),
            [DOMAIN_SEP_LOG_ENTRY, body].concat(),
        ] {
            let forged = LogEntry {
                signature: key.sign(&message),
                ..entry.clone()
            };
            assert_eq!(
                forged.verify_signature(),
                Err(VerifyError::BadSignature { seq: 3 })
            );
            assert!(!CheckedEntry::check(forged).is_signed());
        }
        assert_eq!(entry.verify_signature(), Ok(()));
        // An entry of a log written before v2 (the whole body signed under the v1 separator)
        // still verifies, with the same hash.
        let v1 = LogEntry {
            signature: key.sign(&[DOMAIN_SEP_LOG_ENTRY_V1, body].concat()),
            ..entry.clone()
        };
        assert_eq!(v1.verify_signature(), Ok(()));
        let checked = CheckedEntry::check(v1.clone());
        assert!(checked.is_signed());
        assert_eq!(checked.hash(), v1.hash());
    }

    #[test]
    fn round_trip_and_debug() {
        for crdt in [None, Some(vec![]), Some(vec![1, 2, 3])] {
            let entry = sample_entry(crdt);
            let encoded = entry.encode();
            let decoded = LogEntry::decode(&encoded).unwrap();
            assert_eq!(decoded, entry);
            assert_eq!(decoded.encode(), encoded);
            assert_eq!(decoded.verify_signature(), Ok(()));
        }
        assert_ne!(sample_entry(None).hash(), sample_entry(Some(vec![])).hash());

        let big = LogEntry::sign(
            &key(1),
            1,
            EntryHash::GENESIS,
            hlc(1, 0),
            event_id(1),
            vec![b'x'; 10_000],
            Some(vec![b'y'; 10_000]),
        )
        .unwrap();
        let debug = format!("{big:?}");
        assert!(debug.contains("action_len: 10000"), "{debug}");
        assert!(debug.contains("crdt_change_len: Some(10000)"), "{debug}");
        assert!(debug.len() < 400, "{debug}");
    }

    #[test]
    fn sign_enforces_bounds() {
        let sign = |seq, action: usize, crdt: Option<usize>| {
            LogEntry::sign(
                &key(1),
                seq,
                EntryHash::GENESIS,
                hlc(1, 0),
                event_id(1),
                vec![0; action],
                crdt.map(|len| vec![0; len]),
            )
        };
        let largest = sign(1, ENTRY_ACTION_BYTES_MAX, Some(ENTRY_CRDT_BYTES_MAX)).unwrap();
        let encoded = largest.encode();
        assert_eq!(encoded.len(), ENTRY_BYTES_MAX);
        assert_eq!(LogEntry::decode(&encoded), Ok(largest));

        assert_eq!(
            sign(1, ENTRY_ACTION_BYTES_MAX + 1, None),
            Err(EncodeError::TooLarge {
                field: "action",
                bytes: ENTRY_ACTION_BYTES_MAX + 1,
                bytes_max: ENTRY_ACTION_BYTES_MAX
            })
        );
        assert_eq!(
            sign(1, 0, Some(ENTRY_CRDT_BYTES_MAX + 1)),
            Err(EncodeError::TooLarge {
                field: "crdt_change",
                bytes: ENTRY_CRDT_BYTES_MAX + 1,
                bytes_max: ENTRY_CRDT_BYTES_MAX
            })
        );
        assert_eq!(sign(0, 0, None), Err(EncodeError::SeqZero));
    }

    #[test]
    fn verify_signature_rechecks_hand_built_entries() {
        let entry = sample_entry(None);
        let oversize = LogEntry {
            action: vec![0; ENTRY_ACTION_BYTES_MAX + 1],
            ..entry.clone()
        };
        assert_eq!(
            oversize.verify_signature(),
            Err(VerifyError::Malformed(DecodeError::TooLarge {
                field: "action",
                bytes: ENTRY_ACTION_BYTES_MAX + 1,
                bytes_max: ENTRY_ACTION_BYTES_MAX
            }))
        );
        let seq_zero = LogEntry {
            seq: 0,
            ..entry.clone()
        };
        assert_eq!(
            seq_zero.verify_signature(),
            Err(VerifyError::Malformed(DecodeError::SeqZero))
        );
        // A node id that is not a curve point verifies nothing, without panicking.
        let not_a_key = LogEntry {
            node_id: NodeId::from_bytes([0xff; 32]),
            ..entry
        };
        assert_eq!(
            not_a_key.verify_signature(),
            Err(VerifyError::BadSignature { seq: 3 })
        );
    }

    // ---- decoding malformed input -------------------------------------------------------------

    /// Offsets into the encoding of `sample_entry(Some(..))` with a 17-byte action.
    const SEQ_AT: usize = 1 + 32;
    const ACTION_LEN_AT: usize = 1 + 32 + 8 + 32 + 8 + 4 + 16;
    const CRDT_TAG_AT: usize = ACTION_LEN_AT + 4 + 17;

    #[test]
    fn decode_rejects_each_malformation() {
        let encoded = sample_entry(Some(vec![5; 3])).encode();
        let patched = |at: usize, bytes: &[u8]| {
            let mut copy = encoded.clone();
            copy[at..at + bytes.len()].copy_from_slice(bytes);
            LogEntry::decode(&copy)
        };
        let cases: Vec<(&str, Result<LogEntry, DecodeError>, DecodeError)> = vec![
            (
                "empty",
                LogEntry::decode(&[]),
                DecodeError::Truncated { field: "version" },
            ),
            (
                "version 0",
                patched(0, &[0]),
                DecodeError::UnsupportedVersion { got: 0 },
            ),
            (
                "version 2",
                patched(0, &[2]),
                DecodeError::UnsupportedVersion { got: 2 },
            ),
            ("seq 0", patched(SEQ_AT, &[0; 8]), DecodeError::SeqZero),
            (
                "action length over bound",
                patched(
                    ACTION_LEN_AT,
                    &(ENTRY_ACTION_BYTES_MAX as u32 + 1).to_be_bytes(),
                ),
                DecodeError::TooLarge {
                    field: "action",
                    bytes: ENTRY_ACTION_BYTES_MAX + 1,
                    bytes_max: ENTRY_ACTION_BYTES_MAX,
                },
            ),
            (
                "action length u32::MAX",
                patched(ACTION_LEN_AT, &[0xff; 4]),
                DecodeError::TooLarge {
                    field: "action",
                    bytes: u32::MAX as usize,
                    bytes_max: ENTRY_ACTION_BYTES_MAX,
                },
            ),
            (
                "action length within bound but past the end",
                patched(
                    ACTION_LEN_AT,
                    &(ENTRY_ACTION_BYTES_MAX as u32).to_be_bytes(),
                ),
                DecodeError::Truncated { field: "action" },
            ),
            (
                "crdt length over bound",
                patched(
                    CRDT_TAG_AT + 1,
                    &(ENTRY_CRDT_BYTES_MAX as u32 + 1).to_be_bytes(),
                ),
                DecodeError::TooLarge {
                    field: "crdt_change",
                    bytes: ENTRY_CRDT_BYTES_MAX + 1,
                    bytes_max: ENTRY_CRDT_BYTES_MAX,
                },
            ),
            (
                "crdt tag 2",
                patched(CRDT_TAG_AT, &[2]),
                DecodeError::BadCrdtTag { tag: 2 },
            ),
            (
                "crdt tag 255",
                patched(CRDT_TAG_AT, &[255]),
                DecodeError::BadCrdtTag { tag: 255 },
            ),
            (
                "crdt tag 1 read as 0 leaves bytes",
                patched(CRDT_TAG_AT, &[0]),
                DecodeError::TrailingBytes { count: 7 },
            ),
            (
                "one trailing byte",
                LogEntry::decode(&[encoded.as_slice(), &[0]].concat()),
                DecodeError::TrailingBytes { count: 1 },
            ),
            (
                "a second entry appended",
                LogEntry::decode(&[encoded.as_slice(), &encoded].concat()),
                DecodeError::TrailingBytes {
                    count: encoded.len(),
                },
            ),
            (
                "signature cut short",
                LogEntry::decode(&encoded[..encoded.len() - 1]),
                DecodeError::Truncated { field: "signature" },
            ),
        ];
        for (name, got, expected) in cases {
            assert_eq!(got, Err(expected), "{name}");
        }
    }

    #[test]
    fn every_truncation_is_rejected() {
        for entry in [sample_entry(None), sample_entry(Some(vec![1, 2, 3]))] {
            let encoded = entry.encode();
            for len in 0..encoded.len() {
                assert!(
                    matches!(
                        LogEntry::decode(&encoded[..len]),
                        Err(DecodeError::Truncated { .. })
                    ),
                    "prefix of {len} bytes"
                );
            }
        }
    }

    /// Flips one bit and checks the result is refused by decoding, the signature, or the chain.
    fn assert_flip_rejected(verifier: &ChainVerifier, encoded: &[u8], bit: usize) {
        let mut flipped = encoded.to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let decoded = LogEntry::decode(&flipped);
        if let Ok(entry) = &decoded {
            assert!(
                entry.verify_signature().is_err(),
                "bit {bit} still verifies"
            );
        }
        assert!(
            receive(verifier, &flipped).is_err(),
            "bit {bit} accepted by the chain"
        );
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let log = build_log(3, 3);
        let empty_action = LogEntry::sign(
            &key(3),
            4,
            log[2].hash(),
            hlc(9_999, 9),
            event_id(u128::MAX),
            vec![],
            Some(vec![]),
        )
        .unwrap();
        let node_id = key(3).node_id();
        // (entry, head it would extend)
        let cases = [
            (&log[0], LogHead::GENESIS),
            (
                &log[1],
                LogHead {
                    seq: 1,
                    hash: log[0].hash(),
                },
            ),
            (
                &log[2],
                LogHead {
                    seq: 2,
                    hash: log[1].hash(),
                },
            ),
            (
                &empty_action,
                LogHead {
                    seq: 3,
                    hash: log[2].hash(),
                },
            ),
        ];
        let mut flips = 0;
        for (entry, head) in cases {
            let verifier = ChainVerifier::new(node_id, head);
            let encoded = entry.encode();
            assert_eq!(receive(&verifier, &encoded), Ok(Verdict::Append));
            for bit in 0..encoded.len() * 8 {
                assert_flip_rejected(&verifier, &encoded, bit);
                flips += 1;
            }
        }
        assert!(flips > 4_000, "{flips}");
    }

    // ---- chain verification ---------------------------------------------------------------------

    #[test]
    fn chain_append_and_duplicate() {
        let log = build_log(1, 4);
        let node_id = key(1).node_id();
        let mut verifier = ChainVerifier::new(node_id, LogHead::GENESIS);
        assert_eq!(verifier.node_id(), node_id);
        assert_eq!(verifier.check(&log[0], None), Ok(Verdict::Append));
        assert_eq!(
            verifier.head(),
            LogHead::GENESIS,
            "check does not move the head"
        );
        for entry in &log {
            assert_eq!(verifier.accept(entry, None), Ok(Verdict::Append));
            assert_eq!(
                verifier.head(),
                LogHead {
                    seq: entry.seq,
                    hash: entry.hash()
                }
            );
        }
        let head = verifier.head();
        // Re-delivery of the head entry: no stored hash needed.
        assert_eq!(verifier.accept(&log[3], None), Ok(Verdict::Duplicate));
        // Re-delivery of an older entry: the caller supplies what it stored.
        assert_eq!(
            verifier.accept(&log[1], Some(log[1].hash())),
            Ok(Verdict::Duplicate)
        );
        assert_eq!(
            verifier.accept(&log[1], None),
            Err(VerifyError::MissingStoredHash { seq: 2 })
        );
        assert_eq!(verifier.head(), head, "duplicates do not move the head");
        assert_eq!(verify_chain(node_id, &log), Ok(head));
        assert_eq!(verify_chain(node_id, &[]), Ok(LogHead::GENESIS));
    }

    #[test]
    fn chain_fork() {
        let log = build_log(1, 3);
        let node_id = key(1).node_id();
        let mut verifier = ChainVerifier::new(node_id, LogHead::GENESIS);
        for entry in &log {
            assert_eq!(verifier.accept(entry, None), Ok(Verdict::Append));
        }
        // The same key signs a different entry at an accepted seq: a cloned node.
        let other_at_2 = LogEntry::sign(
            &key(1),
            2,
            log[0].hash(),
            hlc(5, 5),
            event_id(99),
            b"other".to_vec(),
            None,
        )
        .unwrap();
        assert_eq!(
            verifier.check(&other_at_2, Some(log[1].hash())),
            Err(VerifyError::Fork { seq: 2 })
        );
        let other_at_head = LogEntry::sign(
            &key(1),
            3,
            log[1].hash(),
            hlc(5, 5),
            event_id(99),
            b"other".to_vec(),
            None,
        )
        .unwrap();
        assert_eq!(
            verifier.check(&other_at_head, None),
            Err(VerifyError::Fork { seq: 3 })
        );
        // An unsigned look-alike is not evidence of a fork: anyone could make it.
        let forged = LogEntry {
            action: b"forged".to_vec(),
            ..log[1].clone()
        };
        assert_eq!(
            verifier.check(&forged, Some(log[1].hash())),
            Err(VerifyError::BadSignature { seq: 2 })
        );
        // Inside one submitted log.
        let forked_log = [log[0].clone(), log[1].clone(), other_at_2];
        assert_eq!(
            verify_chain(node_id, &forked_log),
            Err(VerifyError::Fork { seq: 2 })
        );
    }

    #[test]
    fn chain_gap_and_order() {
        let log = build_log(1, 4);
        let node_id = key(1).node_id();
        let verifier = ChainVerifier::new(
            node_id,
            LogHead {
                seq: 1,
                hash: log[0].hash(),
            },
        );
        assert_eq!(
            verifier.check(&log[3], None),
            Err(VerifyError::Gap {
                expected: 2,
                got: 4
            })
        );
        let at_genesis = ChainVerifier::new(node_id, LogHead::GENESIS);
        assert_eq!(
            at_genesis.check(&log[1], None),
            Err(VerifyError::Gap {
                expected: 1,
                got: 2
            })
        );

        let missing = [log[0].clone(), log[2].clone()];
        assert_eq!(
            verify_chain(node_id, &missing),
            Err(VerifyError::Gap {
                expected: 2,
                got: 3
            })
        );
        let swapped = [log[1].clone(), log[0].clone()];
        assert_eq!(
            verify_chain(node_id, &swapped),
            Err(VerifyError::Gap {
                expected: 1,
                got: 2
            })
        );
        let repeated = [log[0].clone(), log[1].clone(), log[1].clone()];
        assert_eq!(
            verify_chain(node_id, &repeated),
            Err(VerifyError::Gap {
                expected: 3,
                got: 2
            })
        );
        let repeated_old = [log[0].clone(), log[1].clone(), log[0].clone()];
        assert_eq!(
            verify_chain(node_id, &repeated_old),
            Err(VerifyError::Gap {
                expected: 3,
                got: 1
            })
        );
    }

    #[test]
    fn chain_bad_prev_hash() {
        let log = build_log(1, 2);
        let node_id = key(1).node_id();
        let unchained = LogEntry::sign(
            &key(1),
            2,
            EntryHash([0x11; 32]),
            hlc(1, 0),
            event_id(1),
            vec![],
            None,
        )
        .unwrap();
        let verifier = ChainVerifier::new(
            node_id,
            LogHead {
                seq: 1,
                hash: log[0].hash(),
            },
        );
        assert_eq!(
            verifier.check(&unchained, None),
            Err(VerifyError::BadPrevHash { seq: 2 })
        );
        assert_eq!(
            verify_chain(node_id, &[log[0].clone(), unchained]),
            Err(VerifyError::BadPrevHash { seq: 2 })
        );
        // Seq 1 must chain to genesis.
        let first_unchained = LogEntry::sign(
            &key(1),
            1,
            log[0].hash(),
            hlc(1, 0),
            event_id(1),
            vec![],
            None,
        )
        .unwrap();
        assert_eq!(
            verify_chain(node_id, &[first_unchained]),
            Err(VerifyError::BadPrevHash { seq: 1 })
        );
    }

    #[test]
    fn chain_wrong_node_and_cross_node_replay() {
        let node_a = key(1).node_id();
        let node_b = key(2).node_id();
        let log_b = build_log(2, 1);
        let verifier_a = ChainVerifier::new(node_a, LogHead::GENESIS);
        // B's genuine entry offered on A's log.
        assert_eq!(
            verifier_a.check(&log_b[0], None),
            Err(VerifyError::WrongNode {
                expected: node_a,
                got: node_b
            })
        );
        assert_eq!(
            verify_chain(node_a, &log_b),
            Err(VerifyError::WrongNode {
                expected: node_a,
                got: node_b
            })
        );
        // B's entry relabelled as A's: the signature no longer matches.
        let relabelled = LogEntry {
            node_id: node_a,
            ..log_b[0].clone()
        };
        assert_eq!(
            verifier_a.check(&relabelled, None),
            Err(VerifyError::BadSignature { seq: 1 })
        );
        // A's entry re-signed by B under A's name.
        let log_a = build_log(1, 1);
        let mut resigned = log_a[0].clone();
        resigned.signature = key(2).sign(&resigned.signing_bytes());
        assert_eq!(
            verifier_a.check(&resigned, None),
            Err(VerifyError::BadSignature { seq: 1 })
        );
    }

    #[test]
    fn verify_error_reasons_are_distinct() {
        let node_id = key(1).node_id();
        let errors = [
            VerifyError::BadSignature { seq: 1 },
            VerifyError::UnknownKey { node_id },
            VerifyError::RevokedKey { node_id },
            VerifyError::Gap {
                expected: 1,
                got: 2,
            },
            VerifyError::Fork { seq: 1 },
            VerifyError::BadPrevHash { seq: 1 },
            VerifyError::WrongNode {
                expected: node_id,
                got: node_id,
            },
            VerifyError::Malformed(DecodeError::SeqZero),
            VerifyError::MissingStoredHash { seq: 1 },
        ];
        let mut reasons: Vec<_> = errors.iter().map(VerifyError::reason).collect();
        assert_eq!(reasons[0], "bad-signature");
        assert_eq!(reasons[7], "malformed");
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), errors.len());
        assert_eq!(
            VerifyError::from(DecodeError::BadCrdtTag { tag: 9 }).to_string(),
            "malformed entry: invalid crdt tag 9"
        );
    }

    // ---- writer ------------------------------------------------------------------------------

    #[test]
    fn writer_commit_and_rollback() {
        let mut writer = LogWriter::new(key(4), LogHead::GENESIS);
        let node_id = writer.node_id();
        assert_eq!(node_id, key(4).node_id());
        let first = writer
            .next_entry(hlc(1, 0), event_id(1), b"a".to_vec(), None)
            .unwrap();
        // The transaction failed: nothing committed, the next attempt reuses seq 1.
        let retry = writer
            .next_entry(hlc(2, 0), event_id(1), b"a".to_vec(), None)
            .unwrap();
        assert_eq!((first.seq, retry.seq), (1, 1));
        assert_eq!(writer.head(), LogHead::GENESIS);

        let head = writer.commit(&retry).unwrap();
        assert_eq!(
            head,
            LogHead {
                seq: 1,
                hash: retry.hash()
            }
        );
        assert_eq!(writer.head(), head);
        // The stale entry from before can no longer be committed.
        assert_eq!(
            writer.commit(&first),
            Err(VerifyError::Gap {
                expected: 2,
                got: 1
            })
        );
        let foreign = build_log(5, 2);
        assert_eq!(
            writer.commit(&foreign[1]),
            Err(VerifyError::WrongNode {
                expected: node_id,
                got: key(5).node_id()
            })
        );
        let second = writer
            .next_entry(hlc(3, 0), event_id(2), b"b".to_vec(), None)
            .unwrap();
        assert_eq!(second.prev_hash, head.hash);
        let unchained = LogEntry {
            prev_hash: EntryHash::GENESIS,
            ..second.clone()
        };
        assert_eq!(
            writer.commit(&unchained),
            Err(VerifyError::BadPrevHash { seq: 2 })
        );
        writer.commit(&second).unwrap();
        assert_eq!(verify_chain(node_id, &[retry, second]), Ok(writer.head()));

        let full = LogWriter::new(
            key(4),
            LogHead {
                seq: u64::MAX,
                hash: EntryHash::GENESIS,
            },
        );
        assert_eq!(
            full.next_entry(hlc(1, 0), event_id(1), vec![], None),
            Err(EncodeError::SeqOverflow)
        );
        assert_eq!(
            writer.next_entry(
                hlc(1, 0),
                event_id(1),
                vec![0; ENTRY_ACTION_BYTES_MAX + 1],
                None
            ),
            Err(EncodeError::TooLarge {
                field: "action",
                bytes: ENTRY_ACTION_BYTES_MAX + 1,
                bytes_max: ENTRY_ACTION_BYTES_MAX
            })
        );
    }

    // ---- properties --------------------------------------------------------------------------

    #[derive(Clone, Debug)]
    struct Draft {
        hlc: Hlc,
        event_id: u128,
        action: Vec<u8>,
        crdt_change: Option<Vec<u8>>,
    }

    fn draft() -> impl Strategy<Value = Draft> {
        (
            any::<u64>(),
            any::<u32>(),
            any::<u128>(),
            prop::collection::vec(any::<u8>(), 0..200),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
        )
            .prop_map(|(wall_ms, counter, event_id, action, crdt_change)| Draft {
                hlc: hlc(wall_ms, counter),
                event_id,
                action,
                crdt_change,
            })
    }

    fn write_log(seed: u8, drafts: Vec<Draft>) -> Vec<LogEntry> {
        let mut writer = LogWriter::new(key(seed), LogHead::GENESIS);
        drafts
            .into_iter()
            .map(|draft| {
                let entry = writer
                    .next_entry(
                        draft.hlc,
                        event_id(draft.event_id),
                        draft.action,
                        draft.crdt_change,
                    )
                    .unwrap();
                writer.commit(&entry).unwrap();
                entry
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn genuine_logs_verify(seed in any::<u8>(), drafts in prop::collection::vec(draft(), 0..12)) {
            let log = write_log(seed, drafts);
            let node_id = key(seed).node_id();
            let head = verify_chain(node_id, &log).unwrap();
            prop_assert_eq!(head.seq, log.len() as u64);
            // Through the wire encoding too, entry by entry, with re-deliveries.
            let mut verifier = ChainVerifier::new(node_id, LogHead::GENESIS);
            for entry in &log {
                let decoded = LogEntry::decode(&entry.encode()).unwrap();
                prop_assert_eq!(&decoded, entry);
                prop_assert_eq!(verifier.accept(&decoded, None), Ok(Verdict::Append));
                prop_assert_eq!(verifier.accept(&decoded, None), Ok(Verdict::Duplicate));
            }
            prop_assert_eq!(verifier.head(), head);
        }

        #[test]
        fn round_trip(seed in any::<u8>(), seq in 1u64.., prev in any::<[u8; 32]>(), draft in draft()) {
            let entry = LogEntry::sign(
                &key(seed),
                seq,
                EntryHash(prev),
                draft.hlc,
                event_id(draft.event_id),
                draft.action,
                draft.crdt_change,
            )
            .unwrap();
            let encoded = entry.encode();
            let decoded = LogEntry::decode(&encoded).unwrap();
            prop_assert_eq!(decoded.encode(), encoded);
            prop_assert_eq!(decoded.hash(), entry.hash());
            prop_assert_eq!(decoded, entry);
        }

        #[test]
        fn single_bit_flips_are_rejected(seed in any::<u8>(), draft in draft(), bit in any::<prop::sample::Index>()) {
            let log = write_log(seed, vec![draft]);
            let verifier = ChainVerifier::new(key(seed).node_id(), LogHead::GENESIS);
            let encoded = log[0].encode();
            assert_flip_rejected(&verifier, &encoded, bit.index(encoded.len() * 8));
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = LogEntry::decode(&bytes);
        }
    }
}
