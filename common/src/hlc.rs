//! Hybrid logical clock: timestamps that order actions across nodes whose wall clocks disagree.
//!
//! An [`Hlc`] is a wall-clock reading in milliseconds plus a logical counter. A node keeps one
//! [`HlcClock`]; every local action takes [`HlcClock::now`], and every timestamp received from a
//! peer goes through [`HlcClock::observe`]. Both return a value strictly greater than anything the
//! clock has issued or observed before, even when the clinic's wall clock jumps backwards, so the
//! order of actions survives skewed and reset clocks (Kulkarni et al., "Logical Physical Clocks").
//!
//! The clock reads no time itself: the shell passes the wall clock in as `wall_ms`, which keeps
//! this module deterministic and testable.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The furthest a remote timestamp may be ahead of our own wall clock before
/// [`HlcClock::observe`] refuses it: 24 hours, in milliseconds.
///
/// Why a bound at all: an HLC never goes backwards, so one peer with a clock set years ahead would
/// drag every clock that observes it into the future for good ("HLC poisoning").
///
/// Why 24 hours: clinic boards run for months without a link, often without an RTC battery or
/// NTP, and are set by hand. A time-zone mistake (local time entered as UTC) is off by up to 14
/// hours, and crystal drift of about 20 ppm adds about 10 minutes a year; a bound of one day accepts
/// all of that, while capping how far a bad clock can drag everyone else at one day. A larger skew
/// is a misconfigured clock that ops must fix, and is reported as [`HlcError::Drift`] instead of
/// being silently absorbed. A local clock that is *behind* is never refused: the HLC absorbs it.
pub const HLC_DRIFT_MS_MAX: u64 = 24 * 60 * 60 * 1000;

/// A hybrid logical clock timestamp: wall-clock milliseconds since the Unix epoch, then a
/// counter that orders events within the same millisecond.
///
/// Ordering is by `wall_ms`, then by `counter` (field order of the derive).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch (possibly ahead of the local wall clock).
    pub wall_ms: u64,
    /// Logical counter, reset to 0 whenever `wall_ms` advances.
    pub counter: u32,
}

/// Errors of [`HlcClock::observe`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HlcError {
    /// The remote timestamp is further ahead of our wall clock than [`HLC_DRIFT_MS_MAX`].
    #[error(
        "remote clock {remote_wall_ms} ms is more than {drift_ms_max} ms ahead of local wall clock {wall_ms} ms"
    )]
    Drift {
        /// The remote timestamp's wall-clock part.
        remote_wall_ms: u64,
        /// Our wall clock when the remote timestamp was observed.
        wall_ms: u64,
        /// The bound that was exceeded ([`HLC_DRIFT_MS_MAX`]).
        drift_ms_max: u64,
    },
}

/// A node's hybrid logical clock: remembers the last timestamp it issued or observed.
///
/// The shell persists [`HlcClock::last`] (it is also the `hlc` of the node's newest log entry)
/// and restores the clock with [`HlcClock::new`] after a restart, so timestamps stay monotonic
/// across restarts too.
#[derive(Clone, Debug, Default)]
pub struct HlcClock {
    last: Hlc,
}

impl Hlc {
    /// The largest timestamp; [`HlcClock`] saturates here (unreachable with a sane wall clock).
    pub const MAX: Self = Self {
        wall_ms: u64::MAX,
        counter: u32::MAX,
    };

    /// The smallest timestamp strictly greater than `self`, or `self` if it is [`Hlc::MAX`].
    ///
    /// A counter overflow (4 billion events in one millisecond) carries into `wall_ms`, so the
    /// result is still strictly greater.
    fn successor(self) -> Self {
        match self.counter.checked_add(1) {
            Some(counter) => Self {
                wall_ms: self.wall_ms,
                counter,
            },
            None => match self.wall_ms.checked_add(1) {
                Some(wall_ms) => Self {
                    wall_ms,
                    counter: 0,
                },
                None => Self::MAX,
            },
        }
    }
}

impl fmt::Display for Hlc {
    /// Formats as `wall_ms.counter` with the counter zero-padded to 4 digits,
    /// e.g. `1732600000000.0003`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:04}", self.wall_ms, self.counter)
    }
}

impl HlcClock {
    /// A clock that will only issue timestamps greater than `last`.
    pub fn new(last: Hlc) -> Self {
        Self { last }
    }

    /// The last timestamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A timestamp for a local event at wall-clock time `wall_ms`.
    ///
    /// Strictly greater than every timestamp issued or observed so far, even if `wall_ms` went
    /// backwards. The one exception is the unreachable [`Hlc::MAX`], where the clock saturates.
    pub fn now(&mut self, wall_ms: u64) -> Hlc {
        let next = if wall_ms > self.last.wall_ms {
            Hlc {
                wall_ms,
                counter: 0,
            }
        } else {
            self.last.successor()
        };
        self.last = next;
        next
    }

    /// Merges a timestamp received from a peer (the HLC receive rule) at wall-clock time `wall_ms`.
    ///
    /// The result is strictly greater than `remote` and than everything issued or observed so far
    /// (except at the unreachable [`Hlc::MAX`]). A `remote` more than [`HLC_DRIFT_MS_MAX`] ahead
    /// of `wall_ms` is refused with [`HlcError::Drift`] and leaves the clock unchanged.
    pub fn observe(&mut self, remote: Hlc, wall_ms: u64) -> Result<Hlc, HlcError> {
        if remote.wall_ms > wall_ms.saturating_add(HLC_DRIFT_MS_MAX) {
            return Err(HlcError::Drift {
                remote_wall_ms: remote.wall_ms,
                wall_ms,
                drift_ms_max: HLC_DRIFT_MS_MAX,
            });
        }
        let wall_ms_max = self.last.wall_ms.max(remote.wall_ms);
        let next = if wall_ms > wall_ms_max {
            Hlc {
                wall_ms,
                counter: 0,
            }
        } else {
            // The greater of `last` and `remote` carries the largest wall_ms, and among equal
            // wall_ms the largest counter: its successor beats both.
            self.last.max(remote).successor()
        };
        self.last = next;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn hlc(wall_ms: u64, counter: u32) -> Hlc {
        Hlc { wall_ms, counter }
    }

    #[test]
    fn order_is_wall_then_counter() {
        assert!(hlc(1, 5) < hlc(2, 0));
        assert!(hlc(2, 0) < hlc(2, 1));
        assert_eq!(Hlc::default(), hlc(0, 0));
        assert!(hlc(u64::MAX, 0) < Hlc::MAX);
    }

    #[test]
    fn display_pads_counter() {
        assert_eq!(hlc(1_732_600_000_000, 3).to_string(), "1732600000000.0003");
        assert_eq!(hlc(7, 123_456).to_string(), "7.123456");
    }

    #[test]
    fn serde_shape() {
        let json = serde_json::to_string(&hlc(10, 2)).unwrap();
        assert_eq!(json, r#"{"wall_ms":10,"counter":2}"#);
        assert_eq!(serde_json::from_str::<Hlc>(&json).unwrap(), hlc(10, 2));
    }

    #[test]
    fn now_follows_wall_clock_when_it_advances() {
        let mut clock = HlcClock::new(Hlc::default());
        assert_eq!(clock.now(100), hlc(100, 0));
        assert_eq!(clock.now(100), hlc(100, 1));
        assert_eq!(clock.now(101), hlc(101, 0));
        assert_eq!(clock.last(), hlc(101, 0));
    }

    #[test]
    fn now_is_monotonic_when_wall_clock_goes_back() {
        let mut clock = HlcClock::new(hlc(1_000, 4));
        assert_eq!(clock.now(10), hlc(1_000, 5));
        assert_eq!(clock.now(0), hlc(1_000, 6));
        assert_eq!(clock.now(1_001), hlc(1_001, 0));
    }

    #[test]
    fn counter_overflow_carries_into_wall() {
        let mut clock = HlcClock::new(hlc(50, u32::MAX));
        assert_eq!(clock.now(50), hlc(51, 0));
        let mut clock = HlcClock::new(hlc(50, u32::MAX));
        assert_eq!(clock.observe(hlc(50, u32::MAX), 10), Ok(hlc(51, 0)));
    }

    #[test]
    fn saturates_at_max() {
        let mut clock = HlcClock::new(Hlc::MAX);
        assert_eq!(clock.now(u64::MAX), Hlc::MAX);
        assert_eq!(clock.observe(Hlc::MAX, u64::MAX), Ok(Hlc::MAX));
    }

    #[test]
    fn observe_receive_rule() {
        // (last, remote, wall_ms, expected)
        let cases = [
            // Wall clock ahead of both: take it, counter 0.
            (hlc(10, 3), hlc(20, 7), 30, hlc(30, 0)),
            // Remote ahead: continue after remote.
            (hlc(10, 3), hlc(20, 7), 15, hlc(20, 8)),
            // Local ahead: continue after local.
            (hlc(25, 3), hlc(20, 7), 15, hlc(25, 4)),
            // Same wall on both sides: after the larger counter.
            (hlc(20, 3), hlc(20, 7), 15, hlc(20, 8)),
            (hlc(20, 9), hlc(20, 7), 20, hlc(20, 10)),
            // Wall clock equal to the max wall: still a successor.
            (hlc(20, 9), hlc(10, 0), 20, hlc(20, 10)),
        ];
        for (last, remote, wall_ms, expected) in cases {
            let mut clock = HlcClock::new(last);
            assert_eq!(
                clock.observe(remote, wall_ms),
                Ok(expected),
                "{last} {remote} {wall_ms}"
            );
            assert_eq!(clock.last(), expected);
        }
    }

    #[test]
    fn observe_refuses_remote_too_far_ahead() {
        let wall_ms = 1_000_000;
        let mut clock = HlcClock::new(hlc(5, 5));
        let at_bound = hlc(wall_ms + HLC_DRIFT_MS_MAX, 0);
        assert_eq!(
            clock.clone().observe(at_bound, wall_ms),
            Ok(hlc(at_bound.wall_ms, 1))
        );
        let beyond = hlc(wall_ms + HLC_DRIFT_MS_MAX + 1, 0);
        assert_eq!(
            clock.observe(beyond, wall_ms),
            Err(HlcError::Drift {
                remote_wall_ms: beyond.wall_ms,
                wall_ms,
                drift_ms_max: HLC_DRIFT_MS_MAX
            })
        );
        assert_eq!(
            clock.last(),
            hlc(5, 5),
            "a refused timestamp leaves the clock unchanged"
        );
        // No overflow near the top of the range.
        assert!(clock.observe(Hlc::MAX, u64::MAX - 1).is_ok());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Now { wall_ms: u64 },
        Observe { remote: Hlc, wall_ms: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        // Small ranges so that equal wall clocks and counter collisions actually happen.
        let wall = 0u64..50;
        prop_oneof![
            4 => wall.clone().prop_map(|wall_ms| Op::Now { wall_ms }),
            4 => (0u64..60, 0u32..5, wall.clone()).prop_map(|(remote_wall_ms, counter, wall_ms)| {
                Op::Observe { remote: hlc(remote_wall_ms, counter), wall_ms }
            }),
            // Now and then a remote far ahead, within and beyond the drift bound.
            1 => (0u64..2 * HLC_DRIFT_MS_MAX, wall).prop_map(|(remote_wall_ms, wall_ms)| {
                Op::Observe { remote: hlc(remote_wall_ms, 0), wall_ms }
            }),
        ]
    }

    proptest! {
        #[test]
        fn strictly_monotonic(start in (0u64..50, 0u32..5), ops in prop::collection::vec(op(), 1..100)) {
            let mut clock = HlcClock::new(hlc(start.0, start.1));
            let mut previous = clock.last();
            for op in ops {
                let next = match op {
                    Op::Now { wall_ms } => {
                        let next = clock.now(wall_ms);
                        prop_assert!(next.wall_ms >= wall_ms);
                        next
                    }
                    Op::Observe { remote, wall_ms } => match clock.observe(remote, wall_ms) {
                        Ok(next) => {
                            prop_assert!(next > remote);
                            prop_assert!(next.wall_ms >= wall_ms);
                            next
                        }
                        Err(HlcError::Drift { .. }) => {
                            prop_assert!(remote.wall_ms > wall_ms + HLC_DRIFT_MS_MAX);
                            continue;
                        }
                    },
                };
                prop_assert!(next > previous, "{next} not after {previous}");
                prop_assert_eq!(clock.last(), next);
                previous = next;
            }
        }

        #[test]
        fn wall_clock_moving_forward_resets_counter(last_wall in 0u64..1_000, counter in any::<u32>(), ahead in 1u64..1_000) {
            let mut clock = HlcClock::new(hlc(last_wall, counter));
            prop_assert_eq!(clock.now(last_wall + ahead), hlc(last_wall + ahead, 0));
        }
    }
}
