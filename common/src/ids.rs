//! Identifiers: OpenCRVS tracking ids (6 characters `[0-9A-Z]`) and the event/action id aliases.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An event id: a UUID made where the event was created (at a node, without a round trip).
pub type EventId = uuid::Uuid;

/// An action id: a UUID made where the action was recorded.
pub type ActionId = uuid::Uuid;

/// The 36 symbols of a tracking id, in OpenCRVS's order (`0-9A-Z`).
pub const TRACKING_ID_ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Length of a tracking id in characters.
pub const TRACKING_ID_LEN: usize = 6;

/// Number of distinct tracking ids: 36^6.
pub const TRACKING_ID_SPACE: u64 = 36u64.pow(TRACKING_ID_LEN as u32);

/// A tracking id as OpenCRVS prints it: exactly 6 characters from `0-9A-Z`, e.g. `0XK5CT`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrackingId([u8; TRACKING_ID_LEN]);

/// Why a string is not a tracking id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tracking id must be {TRACKING_ID_LEN} characters from 0-9A-Z")]
pub struct TrackingIdError;

impl TrackingId {
    /// Maps a number to the id at that position of the id space (taken modulo 36^6).
    ///
    /// Shells pass a random `u64`; the modulo bias is below 2^-32 and irrelevant here.
    pub fn from_index(index: u64) -> Self {
        let mut value = index % TRACKING_ID_SPACE;
        let mut out = [0u8; TRACKING_ID_LEN];
        for slot in out.iter_mut().rev() {
            *slot = TRACKING_ID_ALPHABET[(value % 36) as usize];
            value /= 36;
        }
        Self(out)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        // The bytes are always drawn from the ASCII alphabet (constructor invariant).
        std::str::from_utf8(&self.0).unwrap_or("??????")
    }
}

impl FromStr for TrackingId {
    type Err = TrackingIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != TRACKING_ID_LEN {
            return Err(TrackingIdError);
        }
        let mut out = [0u8; TRACKING_ID_LEN];
        for (slot, b) in out.iter_mut().zip(bytes) {
            if !(b.is_ascii_digit() || b.is_ascii_uppercase()) {
                return Err(TrackingIdError);
            }
            *slot = *b;
        }
        Ok(Self(out))
    }
}

impl fmt::Display for TrackingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TrackingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrackingId({})", self.as_str())
    }
}

impl Serialize for TrackingId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TrackingId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_index_covers_the_alphabet_and_round_trips() {
        assert_eq!(TrackingId::from_index(0).as_str(), "000000");
        assert_eq!(TrackingId::from_index(35).as_str(), "00000Z");
        assert_eq!(
            TrackingId::from_index(TRACKING_ID_SPACE - 1).as_str(),
            "ZZZZZZ"
        );
        assert_eq!(TrackingId::from_index(TRACKING_ID_SPACE).as_str(), "000000");
        let id = TrackingId::from_index(123_456_789);
        assert_eq!(id.as_str().parse::<TrackingId>(), Ok(id));
    }

    #[test]
    fn parse_rejects_bad_ids() {
        for bad in ["", "ABCDE", "ABCDEFG", "abcdef", "ABC-EF", "ÄBCDE"] {
            assert_eq!(bad.parse::<TrackingId>(), Err(TrackingIdError), "{bad}");
        }
        assert!("0XK5CT".parse::<TrackingId>().is_ok());
    }
}
