//! Reads an event document's first change straight from its bytes, without automerge: the fast
//! path of [`super::EventCrdt::fresh_state`], which central runs for every new event a node sends.
//!
//! automerge parses a change twice over (its columns, then the legacy op form) and allocates for
//! every op; for the one shape a node gives an event's first change that was about a fifth of
//! central's CPU while draining a backlog. This reader walks the change's columns once, borrowing
//! keys and values, and accepts **only** that shape in a strict, canonical encoding:
//!
//! - an uncompressed change chunk whose checksum holds and which has no dependencies, no message,
//!   no other actors, no extra bytes, `seq` 1 and `start_op` 1;
//! - only the op columns automerge writes, in ascending order, none deflated or empty, every one
//!   holding exactly one value per op with nothing left over, LEB128 numbers in their shortest
//!   form;
//! - ops that make the `actions` and `decl` maps at the root, once each and both, then put
//!   string values into them, each key once, with no predecessors.
//!
//! Anything else gives `None`, and the caller asks automerge. So the reader may refuse what
//! automerge accepts, never the reverse: whatever it accepts, applying the change to an empty
//! document gives the same declaration (a property test holds it to that, on real and on
//! corrupted changes).

use std::collections::HashSet;

use crvs_common::event::Declaration;
use sha2::{Digest as _, Sha256};

/// The bytes every automerge chunk starts with.
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk type of an uncompressed change.
const CHUNK_CHANGE: u8 = 1;
/// Most ops a first change read here may hold: a bound on the walk whatever the bytes say
/// (a log entry's change is at most `crvs_common::log::ENTRY_CRDT_BYTES_MAX` bytes anyway).
const OPS_MAX: u64 = 10_000;

/// Op column specifications (`id << 4 | type`), in the ascending order automerge writes them.
const OBJ_ACTOR: u64 = 0x01;
const OBJ_CTR: u64 = 0x02;
const KEY_ACTOR: u64 = 0x11;
const KEY_CTR: u64 = 0x13;
const KEY_STR: u64 = 0x15;
const INSERT: u64 = 0x34;
const ACTION: u64 = 0x42;
const VAL_META: u64 = 0x56;
const VAL_RAW: u64 = 0x57;
const PRED_GROUP: u64 = 0x70;
const PRED_ACTOR: u64 = 0x71;
const PRED_CTR: u64 = 0x73;
const EXPAND: u64 = 0x94;
const MARK_NAME: u64 = 0xa5;
const COLUMNS: [u64; 14] = [
    OBJ_ACTOR, OBJ_CTR, KEY_ACTOR, KEY_CTR, KEY_STR, INSERT, ACTION, VAL_META, VAL_RAW, PRED_GROUP,
    PRED_ACTOR, PRED_CTR, EXPAND, MARK_NAME,
];

/// Op actions: make a map, put a value.
const ACTION_MAKE_MAP: u64 = 0;
const ACTION_PUT: u64 = 1;
/// Value metadata types (the low four bits; the length is above them).
const VALUE_NULL: u64 = 0;
const VALUE_STRING: u64 = 6;

/// The declaration of a document holding only `change`, when `change` is a node's first change
/// of an event in the shape above; `actions` and `decl` are the names of the two maps.
pub(super) fn read(change: &[u8], actions: &str, decl: &str) -> Option<Declaration> {
    let data = chunk_data(change)?;
    let mut header = Reader(data);
    // No dependencies; the actor (any); seq 1; start op 1; a timestamp; no message; no other
    // actors. Ops then name the change's own actor as actor 0.
    if header.uleb()? != 0 {
        return None;
    }
    let actor_len = header.uleb()?;
    header.take(usize::try_from(actor_len).ok()?)?;
    if header.uleb()? != 1 || header.uleb()? != 1 {
        return None;
    }
    header.sleb()?;
    if header.uleb()? != 0 || header.uleb()? != 0 {
        return None;
    }
    let columns = Columns::read(&mut header)?;
    read_ops(&columns, actions, decl)
}

/// The data of `change`'s chunk: magic bytes, a valid checksum, the change type, a length that
/// covers exactly the rest.
fn chunk_data(change: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(change);
    if r.take(4)? != MAGIC {
        return None;
    }
    let checksum = r.take(4)?;
    // The hash covers the chunk type, the length and the data: everything after the checksum.
    let hashed = r.0;
    if r.byte()? != CHUNK_CHANGE {
        return None;
    }
    let len = r.uleb()?;
    if usize::try_from(len).ok()? != r.0.len() || Sha256::digest(hashed)[..4] != *checksum {
        return None;
    }
    Some(r.0)
}

/// The op columns of a change, each empty when absent.
struct Columns<'a> {
    by_spec: [&'a [u8]; COLUMNS.len()],
}

impl<'a> Columns<'a> {
    /// Reads the column table and the column data after it; the data must end the change.
    fn read(r: &mut Reader<'a>) -> Option<Self> {
        let count = r.uleb()?;
        if count > COLUMNS.len() as u64 {
            return None;
        }
        let mut lens = [0usize; COLUMNS.len()];
        let mut next = 0; // index into COLUMNS: strictly ascending, known specs only
        for _ in 0..count {
            let spec = r.uleb()?;
            let len = usize::try_from(r.uleb()?).ok()?;
            // automerge never writes an empty column, and reads some differently from absent
            // ones (an empty pred actor column alone breaks the pred group).
            if len == 0 {
                return None;
            }
            let at = next + COLUMNS[next..].iter().position(|&known| known == spec)?;
            lens[at] = len;
            next = at + 1;
        }
        let mut by_spec = [&[][..]; COLUMNS.len()];
        for (column, len) in by_spec.iter_mut().zip(lens) {
            *column = r.take(len)?;
        }
        // No extra bytes after the ops.
        r.0.is_empty().then_some(Self { by_spec })
    }

    fn get(&self, spec: u64) -> &'a [u8] {
        let at = COLUMNS
            .iter()
            .position(|&known| known == spec)
            .expect("a known column");
        self.by_spec[at]
    }
}

/// Walks the ops, checking the shape, and collects the declaration.
fn read_ops(columns: &Columns<'_>, actions: &str, decl: &str) -> Option<Declaration> {
    let mut action = Rle::new(columns.get(ACTION), Reader::uleb);
    let mut obj_actor = Rle::new(columns.get(OBJ_ACTOR), Reader::uleb);
    let mut obj_ctr = Rle::new(columns.get(OBJ_CTR), Reader::uleb);
    let mut key_str = Rle::new(columns.get(KEY_STR), Reader::str);
    let mut val_meta = Rle::new(columns.get(VAL_META), Reader::uleb);
    let mut val_raw = Reader(columns.get(VAL_RAW));
    let mut pred_group = Rle::new(columns.get(PRED_GROUP), Reader::uleb);
    // Map keys only (no key op ids), no predecessors, nothing marked: those columns are absent
    // or all null. (Inserted and expanded flags are checked at the end.)
    let mut key_actor = Rle::new(columns.get(KEY_ACTOR), Reader::uleb);
    let mut key_ctr = Rle::new(columns.get(KEY_CTR), Reader::sleb);
    let mut mark_name = Rle::new(columns.get(MARK_NAME), Reader::str);
    if !columns.get(PRED_ACTOR).is_empty() || !columns.get(PRED_CTR).is_empty() {
        return None;
    }
    let obj_absent = obj_actor.is_finished() && obj_ctr.is_finished();

    let mut actions_map: Option<u64> = None;
    let mut decl_map: Option<u64> = None;
    let mut action_keys: HashSet<&str> = HashSet::new();
    let mut declaration = Declaration::new();
    let mut ops: u64 = 0;
    while !action.is_finished() {
        ops += 1;
        if ops > OPS_MAX {
            return None;
        }
        let counter = ops; // start op 1
        let op_action = action.next()??;
        let obj = if obj_absent {
            None
        } else {
            match (obj_actor.next()?, obj_ctr.next()?) {
                (None, None) => None,
                (Some(0), Some(ctr)) => Some(ctr),
                _ => return None,
            }
        };
        let key = key_str.next()??;
        if key.is_empty()
            || pred_group.next()?? != 0
            || key_actor.next_null_or_absent()?
            || key_ctr.next_null_or_absent()?
            || mark_name.next_null_or_absent()?
        {
            return None;
        }
        let meta = val_meta.next()??;
        let value_len = usize::try_from(meta >> 4).ok()?;
        match (op_action, meta & 0x0f, obj) {
            (ACTION_MAKE_MAP, VALUE_NULL, None) if value_len == 0 => {
                let made = if key == actions {
                    &mut actions_map
                } else if key == decl {
                    &mut decl_map
                } else {
                    return None;
                };
                if made.replace(counter).is_some() {
                    return None;
                }
            }
            (ACTION_PUT, VALUE_STRING, Some(made)) => {
                let text = std::str::from_utf8(val_raw.take(value_len)?).ok()?;
                if Some(made) == actions_map {
                    if !action_keys.insert(key) {
                        return None;
                    }
                } else if Some(made) == decl_map {
                    let value = serde_json::from_str(text).ok()?;
                    if declaration.insert(key.to_owned(), value).is_some() {
                        return None;
                    }
                } else {
                    return None;
                }
            }
            _ => return None,
        }
    }
    // Every column held exactly one value per op, and the insert column says "not inserted"
    // for all of them (one run of `ops` false values), as does the expand column when present.
    let all_false = |column: &[u8]| {
        let mut r = Reader(column);
        r.uleb() == Some(ops) && r.0.is_empty()
    };
    let expand = columns.get(EXPAND);
    let done = (obj_absent || (obj_actor.is_finished() && obj_ctr.is_finished()))
        && key_str.is_finished()
        && key_actor.is_finished()
        && key_ctr.is_finished()
        && val_meta.is_finished()
        && val_raw.0.is_empty()
        && pred_group.is_finished()
        && mark_name.is_finished()
        && all_false(columns.get(INSERT))
        && (expand.is_empty() || all_false(expand));
    // Both maps made, as `record` always makes them.
    (done && actions_map.is_some() && decl_map.is_some()).then_some(declaration)
}

/// A cursor over bytes.
#[derive(Clone, Copy)]
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// An unsigned LEB128 in its shortest form that fits in 64 bits.
    fn uleb(&mut self) -> Option<u64> {
        let before = self.0.len();
        let mut value: u64 = 0;
        let mut shift = 0;
        loop {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return None;
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
        (before - self.0.len() == uleb_len(value)).then_some(value)
    }

    /// A signed LEB128 in its shortest form that fits in 64 bits.
    fn sleb(&mut self) -> Option<i64> {
        let before = self.0.len();
        let mut value: i64 = 0;
        let mut shift = 0;
        loop {
            let byte = self.byte()?;
            let bits = i64::from(byte & 0x7f);
            if shift == 63 && bits != 0 && bits != 0x7f {
                return None;
            }
            value |= bits << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                if shift < 64 && byte & 0x40 != 0 {
                    value |= -1 << shift;
                }
                break;
            }
            if shift > 63 {
                return None;
            }
        }
        (before - self.0.len() == sleb_len(value)).then_some(value)
    }

    /// A UTF-8 string: unsigned LEB128 length, then the bytes.
    fn str(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.uleb()?).ok()?;
        std::str::from_utf8(self.take(len)?).ok()
    }
}

/// Bytes of `value`'s shortest unsigned LEB128.
fn uleb_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

/// Bytes of `value`'s shortest signed LEB128.
fn sleb_len(mut value: i64) -> usize {
    let mut len = 1;
    while !(-0x40..0x40).contains(&value) {
        value >>= 7;
        len += 1;
    }
    len
}

/// automerge's run-length encoding of a column of optional values: a signed count, then a run
/// of one repeated value (count > 0), `-count` literal values (count < 0), or an unsigned count
/// of nulls (count 0).
struct Rle<'a, T> {
    r: Reader<'a>,
    read: fn(&mut Reader<'a>) -> Option<T>,
    left: u64,
    value: Option<T>,
    literal: bool,
    /// Whether a value was asked for (an absent column stays unstarted).
    started: bool,
}

impl<'a, T: Copy> Rle<'a, T> {
    fn new(bytes: &'a [u8], read: fn(&mut Reader<'a>) -> Option<T>) -> Self {
        Self {
            r: Reader(bytes),
            read,
            left: 0,
            value: None,
            literal: false,
            started: false,
        }
    }

    /// The next value (`Some(None)` for a null); `None` when the column is malformed or ran out.
    fn next(&mut self) -> Option<Option<T>> {
        if self.left == 0 {
            let count = self.r.sleb()?;
            self.literal = count < 0;
            self.value = None;
            self.left = if count > 0 {
                self.value = Some((self.read)(&mut self.r)?);
                count.unsigned_abs()
            } else if count < 0 {
                count.unsigned_abs()
            } else {
                self.r.uleb()?
            };
            if self.left == 0 {
                return None;
            }
        }
        self.left -= 1;
        if self.literal {
            Some(Some((self.read)(&mut self.r)?))
        } else {
            Some(self.value)
        }
    }

    /// Whether the next value is there and holds something (`Some(true)`); `Some(false)` for a
    /// null, or for any value of a column that is absent altogether (all null).
    fn next_null_or_absent(&mut self) -> Option<bool> {
        if self.is_finished() && !self.started {
            return Some(false);
        }
        self.started = true;
        Some(self.next()?.is_some())
    }

    /// Whether every value was read.
    fn is_finished(&self) -> bool {
        self.left == 0 && self.r.0.is_empty()
    }
}

/// Rewriting a change's columns (for tests here and in other crates).
#[cfg(any(test, feature = "testing"))]
pub(crate) mod surgery {
    use super::{CHUNK_CHANGE, MAGIC, OBJ_CTR, Reader, Rle};
    use sha2::{Digest as _, Sha256};

    /// A change split into the part of its data before the column table, and its columns.
    pub(crate) struct Parts {
        pub(crate) header: Vec<u8>,
        pub(crate) columns: Vec<(u64, Vec<u8>)>,
    }

    pub(crate) fn uleb(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    /// Splits an uncompressed change chunk (panics on anything else: test input).
    pub(crate) fn split(change: &[u8]) -> Parts {
        let mut r = Reader(&change[9..]);
        r.uleb().expect("chunk length");
        let data = r.0;
        let mut r = Reader(data);
        let deps = r.uleb().expect("deps");
        r.take(32 * deps as usize).expect("dependency hashes");
        let actor_len = r.uleb().expect("actor length") as usize;
        r.take(actor_len).expect("actor");
        r.uleb().expect("seq");
        r.uleb().expect("start op");
        r.sleb().expect("time");
        assert_eq!(r.uleb(), Some(0), "a change without message");
        assert_eq!(r.uleb(), Some(0), "a change without other actors");
        let header = data[..data.len() - r.0.len()].to_vec();
        let count = r.uleb().expect("column count");
        let specs: Vec<(u64, usize)> = (0..count)
            .map(|_| {
                let spec = r.uleb().expect("column spec");
                (spec, r.uleb().expect("column length") as usize)
            })
            .collect();
        let columns = specs
            .into_iter()
            .map(|(spec, len)| (spec, r.take(len).expect("column data").to_vec()))
            .collect();
        assert!(r.0.is_empty(), "no extra bytes");
        Parts { header, columns }
    }

    /// The change chunk of `parts`, with its length and checksum.
    pub(crate) fn join(parts: &Parts) -> Vec<u8> {
        let mut data = parts.header.clone();
        uleb(parts.columns.len() as u64, &mut data);
        for (spec, bytes) in &parts.columns {
            uleb(*spec, &mut data);
            uleb(bytes.len() as u64, &mut data);
        }
        for (_, bytes) in &parts.columns {
            data.extend_from_slice(bytes);
        }
        let mut chunk = MAGIC.to_vec();
        chunk.extend_from_slice(&[0; 4]);
        chunk.push(CHUNK_CHANGE);
        uleb(data.len() as u64, &mut chunk);
        chunk.extend_from_slice(&data);
        let hash = Sha256::digest(&chunk[8..]);
        chunk[4..8].copy_from_slice(&hash[..4]);
        chunk
    }

    /// `change` (uncompressed, as `EventCrdt::record` returns it) with every op that is not at
    /// the root moved into the object made by op `counter` of the change's actor: an object no
    /// replica holds when `counter` is past every op, on which automerge 0.12 panics.
    pub fn with_objects_at(change: &[u8], counter: u64) -> Vec<u8> {
        let mut parts = split(change);
        let column = parts
            .columns
            .iter_mut()
            .find(|(spec, _)| *spec == OBJ_CTR)
            .expect("a change with ops below the root");
        let mut values = Rle::new(&column.1, Reader::uleb);
        let mut rewritten = Vec::new();
        while !values.is_finished() {
            // One run of length one per value: a null run, or a run of `counter`.
            match values.next().expect("an object counter column") {
                None => rewritten.extend_from_slice(&[0x00, 0x01]),
                Some(_) => {
                    rewritten.push(0x01);
                    uleb(counter, &mut rewritten);
                }
            }
        }
        column.1 = rewritten;
        join(&parts)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::surgery::{Parts, join, split, with_objects_at};
    use super::*;
    use crate::merge::{ACTIONS, DECLARATION, EventCrdt, actor_for};

    fn first_change() -> Vec<u8> {
        let delta = json!({"child.dob": "2024-06-03", "child.name": {"firstname": "Liam"}});
        EventCrdt::new(actor_for(&[1; 32]))
            .record(&[], delta.as_object().unwrap(), 7)
            .unwrap()
    }

    fn fast(change: &[u8]) -> Option<Declaration> {
        read(change, ACTIONS, DECLARATION)
    }

    /// The fast read refuses `change`; whatever automerge's decoding path reads from it is what
    /// applying it gives; none of it panics (automerge does on some of these, which `EventCrdt`
    /// catches).
    fn refused(change: &[u8], why: &str) {
        assert_eq!(fast(change), None, "{why}");
        let decoded = EventCrdt::fresh_state(change);
        let mut doc = EventCrdt::new(actor_for(&[9; 32]));
        match doc.apply_complete_change(change) {
            Ok(()) => {
                let state = doc.state().expect(why);
                if let Some(declaration) = decoded {
                    assert_eq!(state, (declaration, Vec::new()), "{why}");
                }
            }
            Err(_) => assert_eq!(decoded, None, "{why}"),
        }
    }

    fn with_column(change: &[u8], spec: u64, bytes: Option<Vec<u8>>) -> Vec<u8> {
        let mut parts = split(change);
        parts.columns.retain(|(s, _)| *s != spec);
        if let Some(bytes) = bytes {
            parts.columns.push((spec, bytes));
            parts.columns.sort_by_key(|(s, _)| *s);
        }
        join(&parts)
    }

    proptest::proptest! {
        /// Edits inside the columns (bytes replaced, inserted, removed; columns dropped or
        /// added), with lengths and checksum made right: whatever the fast read accepts, applying
        /// the change gives the same declaration.
        #[test]
        fn column_edits_are_refused_or_read_as_automerge_reads_them(
            edits in proptest::collection::vec(
                (proptest::num::usize::ANY, proptest::num::usize::ANY, proptest::num::u8::ANY, 0..5u8),
                1..4,
            ),
        ) {
            let mut parts = split(&first_change());
            for (column, at, byte, how) in edits {
                let spec = COLUMNS[column % COLUMNS.len()];
                let Some(index) = parts.columns.iter().position(|(s, _)| *s == spec) else {
                    parts.columns.push((spec, vec![byte]));
                    parts.columns.sort_by_key(|(s, _)| *s);
                    continue;
                };
                let bytes = &mut parts.columns[index].1;
                let at = at % (bytes.len() + 1);
                match how {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    2 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    3 => {
                        parts.columns.remove(index);
                    }
                    _ if at < bytes.len() => bytes[at] ^= 1 << (byte % 8),
                    _ => {}
                }
            }
            let change = join(&parts);
            if let Some(read) = fast(&change) {
                let mut doc = EventCrdt::new(actor_for(&[9; 32]));
                proptest::prop_assert!(doc.apply_complete_change(&change).is_ok());
                proptest::prop_assert_eq!(doc.state().unwrap(), (read, Vec::new()));
            }
        }
    }

    #[test]
    fn hand_built_changes_outside_the_shape_are_refused() {
        let change = first_change();
        assert_eq!(join(&split(&change)), change, "split and join round-trip");
        assert_eq!(fast(&change).map(|d| d.len()), Some(2));

        // An empty column, which automerge never writes: a lone empty pred actor column breaks
        // automerge's pred group, so the change is not one at all.
        refused(
            &with_column(&change, PRED_ACTOR, Some(Vec::new())),
            "empty pred actor",
        );
        refused(
            &with_column(&change, PRED_CTR, Some(Vec::new())),
            "empty pred counter",
        );
        refused(
            &with_column(&change, EXPAND, Some(Vec::new())),
            "empty expand",
        );
        // No ops at all (a lone raw value column, or nothing but the insert flags).
        let zero_ops = Parts {
            header: split(&change).header,
            columns: vec![(INSERT, vec![0]), (VAL_RAW, vec![0x22, 0x22])],
        };
        refused(&join(&zero_ops), "no ops, lone raw values");
        let zero_ops = Parts {
            header: split(&change).header,
            columns: vec![(INSERT, vec![0])],
        };
        refused(&join(&zero_ops), "no ops");
        // Only one of the two maps made.
        let one_map = Parts {
            header: split(&change).header,
            columns: vec![
                (KEY_STR, vec![0x7f, 0x04, b'd', b'e', b'c', b'l']),
                (INSERT, vec![1]),
                (ACTION, vec![0x01, 0x00]),
                (VAL_META, vec![0x01, 0x00]),
                (PRED_GROUP, vec![0x01, 0x00]),
            ],
        };
        refused(&join(&one_map), "one map");
        // Ops naming an actor the change does not list (index 1): obj, then key.
        refused(
            &with_column(&change, OBJ_ACTOR, Some(vec![0x00, 0x02, 0x02, 0x01])),
            "obj actor 1",
        );
        refused(
            &with_column(&change, KEY_ACTOR, Some(vec![0x04, 0x01])),
            "key actor 1",
        );
        // Puts into an object nobody made (automerge panics applying it).
        refused(&with_objects_at(&change, 99), "object 99");
        // A put into a map made later in the change (counter 3 is a put, not a make).
        refused(
            &with_column(&change, OBJ_CTR, Some(vec![0x00, 0x02, 0x02, 0x03])),
            "put before make",
        );
        // A null value with a length; an overlong run count; a run that ends early; trailing
        // bytes in a column; a deflated column.
        refused(
            &with_column(
                &change,
                VAL_META,
                Some(vec![0x7f, 0x10, 0x7e, 0xc6, 0x01, 0xc6, 0x02]),
            ),
            "null with length",
        );
        refused(
            &with_column(&change, PRED_GROUP, Some(vec![0x84, 0x00, 0x00])),
            "overlong count",
        );
        refused(
            &with_column(&change, PRED_GROUP, Some(vec![0x03, 0x00])),
            "pred column short",
        );
        refused(
            &with_column(&change, PRED_GROUP, Some(vec![0x04, 0x00, 0x00])),
            "pred column long",
        );
        refused(
            &with_column(&change, INSERT, Some(vec![0x03, 0x01])),
            "one op inserted",
        );
        let mut deflated = split(&change);
        for (spec, _) in &mut deflated.columns {
            if *spec == VAL_RAW {
                *spec |= 0x08;
            }
        }
        refused(&join(&deflated), "deflated raw values");
    }
}
