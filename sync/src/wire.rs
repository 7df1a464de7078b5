//! The sync protocol's messages and their byte codec: versioned, hand-written, bounded.
//!
//! A frame on a QUIC stream is `u32 BE length || message`; a message is `u8 type || body`.
//! Integers are big-endian; byte strings and lists carry a `u32` length checked against a named
//! bound before anything is allocated. Log entries travel in their own signed encoding
//! ([`LogEntry::encode`]); a batch of entries is deflate-compressed (a notification's JSON
//! compresses several-fold, and on a 200 kbit/s link bytes matter as much as round trips).

use std::cell::RefCell;

use crvs_common::log::{EntryHash, LogEntry, LogHead, NodeId};

/// Largest frame (one message) in bytes, either direction.
pub const FRAME_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most log entries in one `Entries` or `Down` message.
pub const BATCH_ENTRIES_MAX: usize = 512;

/// Most uncompressed bytes of entries in one batch: bounds memory on a 1 GB board and what a cut
/// can force to be re-sent.
pub const BATCH_BYTES_MAX: usize = 1024 * 1024;

/// Most rejects reported in one `Ack`.
pub const REJECTS_MAX: usize = 64;

/// Longest free-text reason, in bytes.
pub const REASON_BYTES_MAX: usize = 1024;

/// Message type bytes.
mod tag {
    pub(super) const HELLO: u8 = 1;
    pub(super) const WELCOME: u8 = 2;
    pub(super) const ENTRIES: u8 = 3;
    pub(super) const ACK: u8 = 4;
    pub(super) const DOWN: u8 = 5;
    pub(super) const DOWN_ACK: u8 = 6;
    pub(super) const GOODBYE: u8 = 7;
}

/// A protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Node → central: opens (or re-opens) a round with the node's position and health.
    Hello(Hello),
    /// Central → node: what central holds of the node's log, and the first downstream batch.
    Welcome(Welcome),
    /// Node → central: log entries after what central acknowledged.
    Entries(Entries),
    /// Central → node: entries durably applied (and any rejected).
    Ack(Ack),
    /// Central → node: more downstream entries.
    Down(Down),
    /// Node → central: downstream entries durably applied up to a cursor.
    DownAck(DownAck),
    /// Either side: the session ends, with a reason.
    Goodbye(Goodbye),
}

/// Opening message of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Wire version the node speaks.
    pub version: u16,
    /// The node's identity (must match its TLS identity).
    pub node_id: NodeId,
    /// The node's log head.
    pub head: LogHead,
    /// Position in central's feed up to which the node has applied downstream entries.
    pub down_cursor: u64,
    /// Free tracking ids at the node.
    pub pool_free: u32,
    /// Entries not yet acknowledged by central, as the node sees it.
    pub backlog_entries: u64,
    /// Bytes of those entries.
    pub backlog_bytes: u64,
    /// Age of the oldest unacknowledged entry, ms.
    pub oldest_unacked_ms: u64,
    /// Smoothed round-trip time the node measures, ms.
    pub rtt_ms: u32,
}

/// Central's answer to `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The last entry of this node that central has durably applied.
    pub acked: LogHead,
    /// First downstream batch (possibly empty).
    pub down: Down,
}

/// A batch of the node's log entries, contiguous from `entries[0].seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entries {
    /// The entries.
    pub entries: Vec<LogEntry>,
}

/// Central's acknowledgement of entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Highest contiguous entry durably applied.
    pub acked: LogHead,
    /// Entries refused, with the reason.
    pub rejects: Vec<Reject>,
}

/// An entry central refused and why (machine-readable reason + detail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The entry's sequence number.
    pub seq: u64,
    /// Reason code, e.g. `bad-signature`, `gap`, `fork`.
    pub reason: String,
    /// Human-readable detail.
    pub detail: String,
}

/// A batch of central's signed entries for this node, continuing from `from_cursor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    /// The cursor these items continue from; a node ignores a batch that does not start at its cursor.
    pub from_cursor: u64,
    /// The node's cursor after applying these items.
    pub to_cursor: u64,
    /// Central's entries (each has its own `seq` in central's log).
    pub items: Vec<LogEntry>,
    /// Whether more items are waiting after `to_cursor`.
    pub more: bool,
}

/// The node durably applied downstream entries up to `cursor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownAck {
    /// New cursor.
    pub cursor: u64,
}

/// End of session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goodbye {
    /// Machine-readable reason, e.g. `revoked`, `quarantined`, `unknown-node`, `version`.
    pub reason: String,
    /// Detail for humans.
    pub detail: String,
}

/// Why bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Ran out of bytes.
    #[error("truncated message")]
    Truncated,
    /// Bytes left after the message.
    #[error("{0} trailing bytes after message")]
    Trailing(usize),
    /// Unknown message type.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// A length or count over its bound.
    #[error("{what} of {got} exceeds the bound {max}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// Its size.
        got: usize,
        /// The bound.
        max: usize,
    },
    /// An embedded log entry does not decode.
    #[error("bad entry: {0}")]
    Entry(String),
    /// Compressed data is corrupt.
    #[error("bad compression: {0}")]
    Compression(String),
    /// Text is not UTF-8.
    #[error("text is not utf-8")]
    Utf8,
    /// Entries in a batch are not contiguous.
    #[error("entries in a batch must be contiguous")]
    NotContiguous,
}

/// How hard entry batches are compressed (deflate). Decoding does not depend on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Packing {
    /// Level 6: ~20% smaller than [`Self::Fast`] on batches of notifications, for ~30 µs of CPU
    /// per entry; for clinic uplinks, where bytes are the bottleneck. Level 9 saves 3% more for
    /// three times the CPU.
    #[default]
    Small,
    /// Level 1: for fast links, where the sender's CPU is the bottleneck, not the bytes.
    Fast,
}

impl Packing {
    fn level(self) -> flate2::Compression {
        match self {
            Self::Small => flate2::Compression::default(),
            Self::Fast => flate2::Compression::fast(),
        }
    }
}

struct Out(Vec<u8>, Packing);

impl Out {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn head(&mut self, h: &LogHead) {
        self.u64(h.seq);
        self.0.extend_from_slice(&h.hash.0);
    }
    fn text(&mut self, s: &str) {
        let cut = truncate_utf8(s, REASON_BYTES_MAX);
        self.bytes(cut.as_bytes());
    }
    /// Entries as `count || deflate(len-prefixed encodings)`.
    fn entries(&mut self, entries: &[LogEntry]) {
        let raw_len = entries.iter().map(|e| 4 + e.encoded_len()).sum();
        let mut raw = Vec::with_capacity(raw_len);
        for e in entries {
            raw.extend_from_slice(&(e.encoded_len() as u32).to_be_bytes());
            e.encode_to(&mut raw);
        }
        let compressed = deflate(&raw, self.1);
        self.u32(entries.len() as u32);
        self.u32(raw.len() as u32);
        self.bytes(&compressed);
    }
}

thread_local! {
    /// This thread's deflate state for each [`Packing`], reset between batches: a new one
    /// allocates (and the kernel zeroes) a few hundred KiB per batch.
    static DEFLATERS: RefCell<[Option<flate2::Compress>; 2]> = const { RefCell::new([None, None]) };
    /// This thread's inflate state, reset between batches (a new one is about 40 KiB).
    static INFLATER: RefCell<Option<flate2::Decompress>> = const { RefCell::new(None) };
}

/// `raw` as a raw deflate stream at `packing`'s level.
fn deflate(raw: &[u8], packing: Packing) -> Vec<u8> {
    DEFLATERS.with(|cell| {
        // Taken out while in use and put back only once its stream ended, so a state left
        // mid-stream (by a panic) is dropped, never reused.
        let slot = packing as usize;
        let mut z = cell.borrow_mut()[slot]
            .take()
            .unwrap_or_else(|| flate2::Compress::new(packing.level(), false));
        z.reset();
        // Room for incompressible input: level 1 writes only fixed-Huffman blocks (up to 9 bits
        // a byte), level 6 stored blocks (5 bytes per 16 KiB); grown if ever short.
        let mut out = Vec::with_capacity(raw.len() + raw.len() / 8 + 64);
        loop {
            let consumed = z.total_in() as usize;
            match z.compress_vec(&raw[consumed..], &mut out, flate2::FlushCompress::Finish) {
                Ok(flate2::Status::StreamEnd) => break,
                // Out of room: more, and go on.
                Ok(_) => out.reserve(out.capacity().max(64)),
                // Compressing into memory cannot fail; if it ever did, refuse to send garbage.
                Err(e) => unreachable!("deflate into memory failed: {e}"),
            }
        }
        cell.borrow_mut()[slot] = Some(z);
        out
    })
}

/// Inflates a raw deflate stream that must hold exactly `raw_len` bytes and nothing after them.
/// The output buffer is allocated once at `raw_len` and a byte (bounded by the caller): a stream
/// claiming more (a decompression bomb) stops there and is refused.
fn inflate(compressed: &[u8], raw_len: usize) -> Result<Vec<u8>, WireError> {
    INFLATER.with(|cell| {
        let mut state = cell.borrow_mut();
        let z = state.get_or_insert_with(|| flate2::Decompress::new(false));
        z.reset(false);
        // One byte of room more than expected: the stream's end is read (not left pending for
        // want of room), and a longer stream shows as one byte too many.
        let mut raw = Vec::with_capacity(raw_len + 1);
        let status = z
            .decompress_vec(compressed, &mut raw, flate2::FlushDecompress::Finish)
            .map_err(|e| WireError::Compression(e.to_string()))?;
        if status != flate2::Status::StreamEnd || raw.len() != raw_len {
            return Err(WireError::Compression(format!(
                "expected a stream of {raw_len} bytes, got {} and {}",
                raw.len(),
                if status == flate2::Status::StreamEnd {
                    "its end"
                } else {
                    "no end"
                }
            )));
        }
        if z.total_in() as usize != compressed.len() {
            return Err(WireError::Compression(format!(
                "{} bytes after the end of the stream",
                compressed.len() - z.total_in() as usize
            )));
        }
        Ok(raw)
    })
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct In<'a>(&'a [u8]);

impl In<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn bytes(&mut self, what: &'static str, max: usize) -> Result<&[u8], WireError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(WireError::TooLarge { what, got: n, max });
        }
        self.take(n)
    }
    fn hash(&mut self) -> Result<EntryHash, WireError> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(EntryHash(a))
    }
    fn head(&mut self) -> Result<LogHead, WireError> {
        Ok(LogHead {
            seq: self.u64()?,
            hash: self.hash()?,
        })
    }
    fn text(&mut self) -> Result<String, WireError> {
        let b = self.bytes("text", REASON_BYTES_MAX)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError::Utf8)
    }
    fn entries(&mut self) -> Result<Vec<LogEntry>, WireError> {
        let count = self.u32()? as usize;
        if count > BATCH_ENTRIES_MAX {
            return Err(WireError::TooLarge {
                what: "entry count",
                got: count,
                max: BATCH_ENTRIES_MAX,
            });
        }
        let raw_len = self.u32()? as usize;
        if raw_len > BATCH_BYTES_MAX + count * 8 {
            return Err(WireError::TooLarge {
                what: "batch bytes",
                got: raw_len,
                max: BATCH_BYTES_MAX,
            });
        }
        let compressed = self.bytes("compressed batch", FRAME_BYTES_MAX)?;
        let raw = inflate(compressed, raw_len)?;
        let mut input = In(&raw);
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let enc = input.bytes("entry", crvs_common::log::ENTRY_BYTES_MAX)?;
            out.push(LogEntry::decode(enc).map_err(|e| WireError::Entry(e.to_string()))?);
        }
        if !input.0.is_empty() {
            return Err(WireError::Trailing(input.0.len()));
        }
        Ok(out)
    }
}

fn encode_down(out: &mut Out, d: &Down) {
    out.u64(d.from_cursor);
    out.u64(d.to_cursor);
    out.u8(u8::from(d.more));
    out.entries(&d.items);
}

fn decode_down(input: &mut In<'_>) -> Result<Down, WireError> {
    Ok(Down {
        from_cursor: input.u64()?,
        to_cursor: input.u64()?,
        more: input.u8()? != 0,
        items: input.entries()?,
    })
}

impl Message {
    /// Encodes the message (without the frame length), entry batches packed
    /// [`Packing::Small`].
    pub fn encode(&self) -> Vec<u8> {
        self.encode_packed(Packing::Small)
    }

    /// [`Self::encode`] with entry batches packed as `packing` says.
    pub fn encode_packed(&self, packing: Packing) -> Vec<u8> {
        let mut out = Out(Vec::with_capacity(128), packing);
        match self {
            Self::Hello(h) => {
                out.u8(tag::HELLO);
                out.u16(h.version);
                out.0.extend_from_slice(h.node_id.as_bytes());
                out.head(&h.head);
                out.u64(h.down_cursor);
                out.u32(h.pool_free);
                out.u64(h.backlog_entries);
                out.u64(h.backlog_bytes);
                out.u64(h.oldest_unacked_ms);
                out.u32(h.rtt_ms);
            }
            Self::Welcome(w) => {
                out.u8(tag::WELCOME);
                out.head(&w.acked);
                encode_down(&mut out, &w.down);
            }
            Self::Entries(e) => {
                out.u8(tag::ENTRIES);
                out.entries(&e.entries);
            }
            Self::Ack(a) => {
                out.u8(tag::ACK);
                out.head(&a.acked);
                let rejects = &a.rejects[..a.rejects.len().min(REJECTS_MAX)];
                out.u32(rejects.len() as u32);
                for r in rejects {
                    out.u64(r.seq);
                    out.text(&r.reason);
                    out.text(&r.detail);
                }
            }
            Self::Down(d) => {
                out.u8(tag::DOWN);
                encode_down(&mut out, d);
            }
            Self::DownAck(d) => {
                out.u8(tag::DOWN_ACK);
                out.u64(d.cursor);
            }
            Self::Goodbye(g) => {
                out.u8(tag::GOODBYE);
                out.text(&g.reason);
                out.text(&g.detail);
            }
        }
        out.0
    }

    /// Decodes one message; every length is checked against its bound first.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() > FRAME_BYTES_MAX {
            return Err(WireError::TooLarge {
                what: "frame",
                got: bytes.len(),
                max: FRAME_BYTES_MAX,
            });
        }
        let mut input = In(bytes);
        let msg = match input.u8()? {
            tag::HELLO => {
                let version = input.u16()?;
                let mut id = [0u8; 32];
                id.copy_from_slice(input.take(32)?);
                Self::Hello(Hello {
                    version,
                    node_id: NodeId::from_bytes(id),
                    head: input.head()?,
                    down_cursor: input.u64()?,
                    pool_free: input.u32()?,
                    backlog_entries: input.u64()?,
                    backlog_bytes: input.u64()?,
                    oldest_unacked_ms: input.u64()?,
                    rtt_ms: input.u32()?,
                })
            }
            tag::WELCOME => Self::Welcome(Welcome {
                acked: input.head()?,
                down: decode_down(&mut input)?,
            }),
            tag::ENTRIES => {
                let entries = input.entries()?;
                if entries
                    .windows(2)
                    .any(|w| w[1].seq != w[0].seq + 1 || w[1].node_id != w[0].node_id)
                {
                    return Err(WireError::NotContiguous);
                }
                Self::Entries(Entries { entries })
            }
            tag::ACK => {
                let acked = input.head()?;
                let n = input.u32()? as usize;
                if n > REJECTS_MAX {
                    return Err(WireError::TooLarge {
                        what: "rejects",
                        got: n,
                        max: REJECTS_MAX,
                    });
                }
                let mut rejects = Vec::with_capacity(n);
                for _ in 0..n {
                    rejects.push(Reject {
                        seq: input.u64()?,
                        reason: input.text()?,
                        detail: input.text()?,
                    });
                }
                Self::Ack(Ack { acked, rejects })
            }
            tag::DOWN => Self::Down(decode_down(&mut input)?),
            tag::DOWN_ACK => Self::DownAck(DownAck {
                cursor: input.u64()?,
            }),
            tag::GOODBYE => Self::Goodbye(Goodbye {
                reason: input.text()?,
                detail: input.text()?,
            }),
            other => return Err(WireError::UnknownType(other)),
        };
        if !input.0.is_empty() {
            return Err(WireError::Trailing(input.0.len()));
        }
        Ok(msg)
    }

    /// Encodes with the `u32` frame length in front.
    pub fn encode_frame(&self) -> Vec<u8> {
        self.encode_frame_packed(Packing::Small)
    }

    /// [`Self::encode_frame`] with entry batches packed as `packing` says.
    pub fn encode_frame_packed(&self, packing: Packing) -> Vec<u8> {
        let body = self.encode_packed(packing);
        let mut out = Vec::with_capacity(body.len() + 4);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }
}

#[cfg(test)]
mod tests {
    use crvs_common::hlc::Hlc;
    use crvs_common::log::NodeSecretKey;
    use proptest::prelude::*;

    use super::*;

    fn entries(n: u64) -> Vec<LogEntry> {
        let key = NodeSecretKey::from_bytes(&[3; 32]);
        let mut prev = EntryHash::GENESIS;
        (1..=n)
            .map(|seq| {
                let e = LogEntry::sign(
                    &key,
                    seq,
                    prev,
                    Hlc {
                        wall_ms: seq,
                        counter: 0,
                    },
                    uuid::Uuid::from_u128(u128::from(seq)),
                    format!("{{\"n\":{seq},\"pad\":\"{}\"}}", "x".repeat(200)).into_bytes(),
                    Some(vec![1, 2, 3]),
                )
                .unwrap();
                prev = e.hash();
                e
            })
            .collect()
    }

    fn samples() -> Vec<Message> {
        let head = LogHead {
            seq: 7,
            hash: EntryHash([9; 32]),
        };
        vec![
            Message::Hello(Hello {
                version: 1,
                node_id: NodeId::from_bytes([5; 32]),
                head,
                down_cursor: 42,
                pool_free: 300,
                backlog_entries: 3,
                backlog_bytes: 4000,
                oldest_unacked_ms: 1500,
                rtt_ms: 840,
            }),
            Message::Welcome(Welcome {
                acked: head,
                down: Down {
                    from_cursor: 1,
                    to_cursor: 9,
                    items: entries(2),
                    more: true,
                },
            }),
            Message::Entries(Entries {
                entries: entries(5),
            }),
            Message::Ack(Ack {
                acked: head,
                rejects: vec![Reject {
                    seq: 8,
                    reason: "gap".into(),
                    detail: "expected 8".into(),
                }],
            }),
            Message::Down(Down {
                from_cursor: 0,
                to_cursor: 0,
                items: vec![],
                more: false,
            }),
            Message::DownAck(DownAck { cursor: 77 }),
            Message::Goodbye(Goodbye {
                reason: "revoked".into(),
                detail: "node revoked".into(),
            }),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
            // However its entries were packed, a message decodes the same.
            let fast = m.encode_packed(Packing::Fast);
            assert_eq!(Message::decode(&fast).unwrap(), m);
            assert_eq!(
                m.encode_frame_packed(Packing::Fast)[4..],
                fast[..],
                "a frame is the length and the body"
            );
        }
    }

    #[test]
    fn hello_and_empty_welcome_are_small() {
        // The no-op sync is one Hello and one empty Welcome: both well under 512 bytes together.
        let samples = samples();
        let hello = samples[0].encode().len() + 4;
        let welcome = Message::Welcome(Welcome {
            acked: LogHead::GENESIS,
            down: Down {
                from_cursor: 5,
                to_cursor: 5,
                items: vec![],
                more: false,
            },
        })
        .encode()
        .len()
            + 4;
        assert!(hello + welcome <= 512, "{hello} + {welcome}");
    }

    #[test]
    fn batches_compress() {
        let m = Message::Entries(Entries {
            entries: entries(50),
        });
        let raw: usize = entries(50).iter().map(|e| e.encode().len()).sum();
        assert!(m.encode().len() < raw, "{} vs {raw}", m.encode().len());
    }

    #[test]
    fn rejects_bad_frames() {
        assert_eq!(Message::decode(&[]), Err(WireError::Truncated));
        assert_eq!(Message::decode(&[99]), Err(WireError::UnknownType(99)));
        let mut bytes = samples()[5].encode();
        bytes.push(0);
        assert_eq!(Message::decode(&bytes), Err(WireError::Trailing(1)));
        // A count over the bound is refused before allocating.
        let mut bomb = vec![tag::ENTRIES];
        bomb.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Message::decode(&bomb),
            Err(WireError::TooLarge { .. })
        ));
        // Non-contiguous entries.
        let mut es = entries(3);
        es.remove(1);
        let m = Message::Entries(Entries { entries: es }).encode();
        assert_eq!(Message::decode(&m), Err(WireError::NotContiguous));
    }

    #[test]
    fn compressed_batches_must_hold_exactly_what_they_claim() {
        let raw: Vec<u8> = (0..5000u32).flat_map(|i| (i % 251).to_be_bytes()).collect();
        for packing in [Packing::Small, Packing::Fast] {
            // Reused per thread: the same state twice gives the same bytes.
            let once = deflate(&raw, packing);
            assert_eq!(deflate(&raw, packing), once);
            assert_eq!(inflate(&once, raw.len()).unwrap(), raw);
            // A stream longer or shorter than claimed; bytes after its end; a cut stream.
            assert!(inflate(&once, raw.len() - 1).is_err());
            assert!(inflate(&once, raw.len() + 1).is_err());
            assert!(inflate(&[once.as_slice(), &[0]].concat(), raw.len()).is_err());
            assert!(inflate(&once[..once.len() / 2], raw.len()).is_err());
            // Still usable after a refusal; empty and incompressible input.
            assert_eq!(inflate(&once, raw.len()).unwrap(), raw);
            assert_eq!(
                inflate(&deflate(&[], packing), 0).unwrap(),
                Vec::<u8>::new()
            );
            // Incompressible input (splitmix64 output) grows; it still round-trips.
            let noise: Vec<u8> = (0..70_000u64)
                .map(|i| {
                    let mut z = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                    (z ^ (z >> 31)) as u8
                })
                .collect();
            let packed = deflate(&noise, packing);
            assert!(packed.len() > noise.len(), "{packing:?}: {}", packed.len());
            assert_eq!(inflate(&packed, noise.len()).unwrap(), noise);
        }
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn truncations_are_refused(cut in 0usize..200) {
            for m in samples() {
                let bytes = m.encode();
                if cut < bytes.len() {
                    prop_assert!(Message::decode(&bytes[..cut]).is_err());
                }
            }
        }
    }
}
