//! Human login bookkeeping, sans-IO (OpenCRVS §3.5): the per-username attempt limit and the
//! pending second-factor codes behind `POST /auth/authenticate` → `POST /auth/verifyCode`.
//! Time (ms) and randomness come from the caller, so both are deterministic under test.

use std::collections::{HashMap, VecDeque};

use crate::limits::{
    LOGIN_ATTEMPT_WINDOW_MS, LOGIN_ATTEMPTS_PER_WINDOW, LOGIN_ATTEMPTS_TRACKED_MAX,
    LOGIN_CODE_ATTEMPTS_MAX, LOGIN_CODE_RESENDS_MAX, LOGIN_CODE_TTL_MS, LOGIN_PENDING_MAX,
};

/// The code every login accepts when two-factor authentication is off (OpenCRVS's
/// `TWO_FA_ENABLED=false` does the same), documented as the quick start's demo mode.
pub const DEMO_CODE: &str = "000000";

/// Per-username sliding window of login attempts: at most [`LOGIN_ATTEMPTS_PER_WINDOW`] in
/// any [`LOGIN_ATTEMPT_WINDOW_MS`]; the next one is refused (HTTP 429). Usernames are keyed
/// lowercase, so spelling a name differently does not buy more attempts. At most
/// [`LOGIN_ATTEMPTS_TRACKED_MAX`] usernames are tracked; when full, names whose window has
/// passed are forgotten first, and if none has, the attempt is refused (fail closed).
#[derive(Debug, Default)]
pub struct AttemptLimiter {
    recent: HashMap<String, VecDeque<u64>>,
}

impl AttemptLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one attempt for `username` at `now_ms`; `false` if it is over the limit (then it
    /// is not counted, so a client that waits gets its attempts back on time).
    pub fn try_attempt(&mut self, username: &str, now_ms: u64) -> bool {
        let key = username.to_lowercase();
        // An attempt at `t` counts while `now < t + window`.
        let counts = |t: u64| t.saturating_add(LOGIN_ATTEMPT_WINDOW_MS) > now_ms;
        if !self.recent.contains_key(&key) && self.recent.len() >= LOGIN_ATTEMPTS_TRACKED_MAX {
            self.recent
                .retain(|_, times| times.back().is_some_and(|&t| counts(t)));
            if self.recent.len() >= LOGIN_ATTEMPTS_TRACKED_MAX {
                return false;
            }
        }
        let times = self.recent.entry(key).or_default();
        while times.front().is_some_and(|&t| !counts(t)) {
            times.pop_front();
        }
        if times.len() >= LOGIN_ATTEMPTS_PER_WINDOW {
            return false;
        }
        times.push_back(now_ms);
        true
    }
}

/// A login waiting for its second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLogin {
    /// The user who passed the password check.
    pub user_id: String,
    /// The 6-digit code that was sent.
    pub code: String,
    /// When the code stops being accepted.
    pub expires_ms: u64,
    /// Wrong codes tried so far.
    pub wrong_codes: u32,
    /// Codes sent again for this login ([`PendingLogins::resend`]).
    pub resends: u32,
}

/// What [`PendingLogins::verify`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeVerdict {
    /// The code matched: log this user in. The nonce is spent.
    Accepted {
        /// The user id.
        user_id: String,
    },
    /// Unknown, spent or expired nonce.
    UnknownNonce,
    /// Wrong code; the nonce stays usable until [`LOGIN_CODE_ATTEMPTS_MAX`] wrong codes.
    WrongCode,
}

/// Nonce → pending login, at most [`LOGIN_PENDING_MAX`] (the oldest to expire is dropped to
/// make room), each valid for [`LOGIN_CODE_TTL_MS`] and one successful use.
#[derive(Debug, Default)]
pub struct PendingLogins {
    by_nonce: HashMap<String, PendingLogin>,
}

impl PendingLogins {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a login that passed its password check. `nonce` and `code` come from the
    /// caller's randomness ([`code_from_random`]).
    pub fn start(&mut self, nonce: String, user_id: String, code: String, now_ms: u64) {
        self.by_nonce.retain(|_, p| p.expires_ms > now_ms);
        if self.by_nonce.len() >= LOGIN_PENDING_MAX
            && let Some(oldest) = self
                .by_nonce
                .iter()
                .min_by_key(|(_, p)| p.expires_ms)
                .map(|(n, _)| n.clone())
        {
            self.by_nonce.remove(&oldest);
        }
        self.by_nonce.insert(
            nonce,
            PendingLogin {
                user_id,
                code,
                expires_ms: now_ms.saturating_add(LOGIN_CODE_TTL_MS),
                wrong_codes: 0,
                resends: 0,
            },
        );
    }

    /// Replaces the code of a valid `nonce` with `code` (sent again), keeping its count of wrong
    /// codes and its expiry; `false` for an unknown nonce or past [`LOGIN_CODE_RESENDS_MAX`]
    /// resends (each one is a message someone pays for).
    pub fn resend(&mut self, nonce: &str, code: String, now_ms: u64) -> bool {
        match self.by_nonce.get_mut(nonce) {
            Some(p) if p.expires_ms > now_ms && p.resends < LOGIN_CODE_RESENDS_MAX => {
                p.code = code;
                p.resends += 1;
                true
            }
            _ => false,
        }
    }

    /// The pending login of `nonce`, if it is still valid (for resending its code).
    pub fn get(&self, nonce: &str, now_ms: u64) -> Option<&PendingLogin> {
        self.by_nonce.get(nonce).filter(|p| p.expires_ms > now_ms)
    }

    /// Checks `code` for `nonce`. With `demo` on, [`DEMO_CODE`] is accepted as well.
    pub fn verify(&mut self, nonce: &str, code: &str, demo: bool, now_ms: u64) -> CodeVerdict {
        let Some(pending) = self.by_nonce.get_mut(nonce) else {
            return CodeVerdict::UnknownNonce;
        };
        if pending.expires_ms <= now_ms {
            self.by_nonce.remove(nonce);
            return CodeVerdict::UnknownNonce;
        }
        if constant_time_eq(pending.code.as_bytes(), code.as_bytes()) || (demo && code == DEMO_CODE)
        {
            let user_id = pending.user_id.clone();
            self.by_nonce.remove(nonce);
            return CodeVerdict::Accepted { user_id };
        }
        pending.wrong_codes += 1;
        if pending.wrong_codes >= LOGIN_CODE_ATTEMPTS_MAX {
            self.by_nonce.remove(nonce);
        }
        CodeVerdict::WrongCode
    }

    /// Pending logins held.
    pub fn len(&self) -> usize {
        self.by_nonce.len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.by_nonce.is_empty()
    }
}

/// A 6-digit code in `100000..=999999` (as OpenCRVS's `randomInt(100000, 999999)`) from random
/// bytes, without modulo bias worth the name (64 bits into 900,000 values).
pub fn code_from_random(random: [u8; 8]) -> String {
    let n = u64::from_le_bytes(random) % 900_000;
    (100_000 + n).to_string()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a forgotten-credentials recovery is for (OpenCRVS's `retrieveFlow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetrieveFlow {
    /// A forgotten username: sent once the security question is answered.
    Username,
    /// A forgotten password: a code to the user's phone or email, the security question, then a
    /// new password.
    Password,
}

/// Where a recovery stands (OpenCRVS's `RetrievalSteps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryStep {
    /// A code was sent; `verifyNumber` comes next.
    WaitingForCode,
    /// The contact is proven; the security question comes next.
    NumberVerified,
    /// The question was answered; the password can be changed or the username sent.
    SecurityQuestionVerified,
}

/// One recovery in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The user recovering.
    pub user_id: String,
    /// Username or password.
    pub flow: RetrieveFlow,
    /// Where it stands.
    pub step: RecoveryStep,
    /// The security question asked.
    pub question_key: String,
    code: String,
    expires_ms: u64,
    wrong: u32,
}

/// Why a recovery step was refused (all answered 401, as OpenCRVS does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryError {
    /// Unknown, expired or used nonce, or a step out of order.
    UnknownNonce,
    /// Wrong code or answer; the nonce stays usable until [`LOGIN_CODE_ATTEMPTS_MAX`] of them.
    Wrong,
}

/// Nonce → recovery, bounded and expiring like [`PendingLogins`]; every step moves it on
/// ([`RecoveryStep`]), and wrong codes or answers are counted against it.
#[derive(Debug, Default)]
pub struct Recoveries {
    by_nonce: HashMap<String, Recovery>,
}

impl Recoveries {
    /// Starts a recovery: with a `code`, waiting for it; without, at the security question.
    pub fn start(
        &mut self,
        nonce: String,
        user_id: String,
        flow: RetrieveFlow,
        question_key: String,
        code: Option<String>,
        now_ms: u64,
    ) {
        self.by_nonce.retain(|_, r| r.expires_ms > now_ms);
        if self.by_nonce.len() >= LOGIN_PENDING_MAX
            && let Some(oldest) = self
                .by_nonce
                .iter()
                .min_by_key(|(_, r)| r.expires_ms)
                .map(|(n, _)| n.clone())
        {
            self.by_nonce.remove(&oldest);
        }
        let step = if code.is_some() {
            RecoveryStep::WaitingForCode
        } else {
            RecoveryStep::NumberVerified
        };
        self.by_nonce.insert(
            nonce,
            Recovery {
                user_id,
                flow,
                step,
                question_key,
                code: code.unwrap_or_default(),
                expires_ms: now_ms.saturating_add(LOGIN_CODE_TTL_MS),
                wrong: 0,
            },
        );
    }

    /// The recovery of `nonce` if it is valid and at `step`.
    pub fn at(&self, nonce: &str, step: RecoveryStep, now_ms: u64) -> Option<&Recovery> {
        self.by_nonce
            .get(nonce)
            .filter(|r| r.expires_ms > now_ms && r.step == step)
    }

    /// Checks the code sent by `start`; with `demo`, [`DEMO_CODE`] is accepted too. On success
    /// the recovery moves to [`RecoveryStep::NumberVerified`].
    pub fn verify_code(
        &mut self,
        nonce: &str,
        code: &str,
        demo: bool,
        now_ms: u64,
    ) -> Result<Recovery, RecoveryError> {
        if self
            .at(nonce, RecoveryStep::WaitingForCode, now_ms)
            .is_none()
        {
            return Err(RecoveryError::UnknownNonce);
        }
        let ok = self.by_nonce.get(nonce).is_some_and(|r| {
            constant_time_eq(r.code.as_bytes(), code.as_bytes()) || (demo && code == DEMO_CODE)
        });
        self.settle(nonce, ok, RecoveryStep::NumberVerified)
    }

    /// Records the verdict on the security answer. A match moves the recovery to
    /// [`RecoveryStep::SecurityQuestionVerified`]; a miss asks `next_question` from now on.
    pub fn answered(
        &mut self,
        nonce: &str,
        matched: bool,
        next_question: String,
        now_ms: u64,
    ) -> Result<Recovery, RecoveryError> {
        if self
            .at(nonce, RecoveryStep::NumberVerified, now_ms)
            .is_none()
        {
            return Err(RecoveryError::UnknownNonce);
        }
        if !matched && let Some(r) = self.by_nonce.get_mut(nonce) {
            r.question_key = next_question;
        }
        self.settle(nonce, matched, RecoveryStep::SecurityQuestionVerified)
    }

    /// Ends the recovery of `nonce` if it has reached [`RecoveryStep::SecurityQuestionVerified`]
    /// (the last step runs once).
    pub fn finish(&mut self, nonce: &str, now_ms: u64) -> Option<Recovery> {
        self.at(nonce, RecoveryStep::SecurityQuestionVerified, now_ms)?;
        self.by_nonce.remove(nonce)
    }

    fn settle(
        &mut self,
        nonce: &str,
        ok: bool,
        next: RecoveryStep,
    ) -> Result<Recovery, RecoveryError> {
        let Some(r) = self.by_nonce.get_mut(nonce) else {
            return Err(RecoveryError::UnknownNonce);
        };
        if ok {
            r.step = next;
            return Ok(r.clone());
        }
        r.wrong += 1;
        if r.wrong >= LOGIN_CODE_ATTEMPTS_MAX {
            self.by_nonce.remove(nonce);
        }
        Err(RecoveryError::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_attempts_per_minute_then_refused_then_back() {
        let mut limiter = AttemptLimiter::new();
        for i in 0..LOGIN_ATTEMPTS_PER_WINDOW as u64 {
            assert!(limiter.try_attempt("k.bwalya", 1_000 + i));
        }
        assert!(!limiter.try_attempt("k.bwalya", 2_000));
        assert!(
            !limiter.try_attempt("K.Bwalya", 2_000),
            "case does not help"
        );
        assert!(
            limiter.try_attempt("j.campbell", 2_000),
            "others unaffected"
        );
        // The first attempt leaves the window one minute after it was made.
        assert!(limiter.try_attempt("k.bwalya", 1_000 + LOGIN_ATTEMPT_WINDOW_MS));
        assert!(!limiter.try_attempt("k.bwalya", 1_000 + LOGIN_ATTEMPT_WINDOW_MS));
    }

    #[test]
    fn a_full_limiter_forgets_stale_names_and_otherwise_fails_closed() {
        let mut limiter = AttemptLimiter::new();
        for i in 0..LOGIN_ATTEMPTS_TRACKED_MAX {
            assert!(limiter.try_attempt(&format!("user{i}"), 0));
        }
        assert!(!limiter.try_attempt("newcomer", 10), "full, nothing stale");
        assert!(limiter.try_attempt("user1", 10), "known names still count");
        assert!(limiter.try_attempt("newcomer", LOGIN_ATTEMPT_WINDOW_MS + 1));
    }

    #[test]
    fn a_code_is_accepted_once_and_not_after_expiry() {
        let mut pending = PendingLogins::new();
        pending.start("n1".into(), "u1".into(), "123456".into(), 0);
        assert_eq!(
            pending.verify("n1", "654321", false, 1),
            CodeVerdict::WrongCode
        );
        assert_eq!(
            pending.verify("n1", "123456", false, 2),
            CodeVerdict::Accepted {
                user_id: "u1".into()
            }
        );
        assert_eq!(
            pending.verify("n1", "123456", false, 3),
            CodeVerdict::UnknownNonce
        );
        pending.start("n2".into(), "u2".into(), "111111".into(), 0);
        assert_eq!(
            pending.verify("n2", "111111", false, LOGIN_CODE_TTL_MS),
            CodeVerdict::UnknownNonce
        );
    }

    #[test]
    fn demo_mode_also_accepts_the_demo_code() {
        let mut pending = PendingLogins::new();
        pending.start("n".into(), "u".into(), "123456".into(), 0);
        assert_eq!(
            pending.verify("n", DEMO_CODE, false, 1),
            CodeVerdict::WrongCode
        );
        assert_eq!(
            pending.verify("n", DEMO_CODE, true, 1),
            CodeVerdict::Accepted {
                user_id: "u".into()
            }
        );
    }

    #[test]
    fn too_many_wrong_codes_spend_the_nonce() {
        let mut pending = PendingLogins::new();
        pending.start("n".into(), "u".into(), "123456".into(), 0);
        for _ in 0..LOGIN_CODE_ATTEMPTS_MAX {
            assert_eq!(
                pending.verify("n", "000001", false, 1),
                CodeVerdict::WrongCode
            );
        }
        assert_eq!(
            pending.verify("n", "123456", false, 1),
            CodeVerdict::UnknownNonce
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let mut pending = PendingLogins::new();
        for i in 0..=LOGIN_PENDING_MAX as u64 {
            pending.start(format!("n{i}"), "u".into(), "123456".into(), i);
        }
        assert_eq!(pending.len(), LOGIN_PENDING_MAX);
        assert!(pending.get("n0", 1).is_none(), "the oldest went first");
        assert!(pending.get(&format!("n{LOGIN_PENDING_MAX}"), 1).is_some());
    }

    #[test]
    fn codes_have_six_digits() {
        for seed in [[0u8; 8], [0xff; 8], [7; 8]] {
            let code = code_from_random(seed);
            assert_eq!(code.len(), 6);
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
            assert_ne!(code, DEMO_CODE);
        }
    }

    #[test]
    fn recovery_steps_run_in_order_once() {
        let mut book = Recoveries::default();
        book.start(
            "n".into(),
            "u".into(),
            RetrieveFlow::Password,
            "BIRTH_TOWN".into(),
            Some("123456".into()),
            0,
        );
        // Out of order: the answer before the code.
        assert_eq!(
            book.answered("n", true, "X".into(), 1),
            Err(RecoveryError::UnknownNonce)
        );
        assert_eq!(
            book.verify_code("n", "000000", false, 1),
            Err(RecoveryError::Wrong)
        );
        let r = book.verify_code("n", "123456", false, 2).unwrap();
        assert_eq!(r.step, RecoveryStep::NumberVerified);
        assert!(book.finish("n", 3).is_none());
        let r = book.answered("n", false, "FAVORITE_FOOD".into(), 3);
        assert_eq!(r, Err(RecoveryError::Wrong));
        assert_eq!(
            book.at("n", RecoveryStep::NumberVerified, 3)
                .unwrap()
                .question_key,
            "FAVORITE_FOOD"
        );
        book.answered("n", true, String::new(), 4).unwrap();
        assert_eq!(book.finish("n", 5).unwrap().user_id, "u");
        assert!(book.finish("n", 5).is_none());
    }

    #[test]
    fn recoveries_expire_and_give_up_after_wrong_answers() {
        let mut book = Recoveries::default();
        book.start(
            "a".into(),
            "u".into(),
            RetrieveFlow::Username,
            "K".into(),
            None,
            0,
        );
        assert!(
            book.at("a", RecoveryStep::NumberVerified, LOGIN_CODE_TTL_MS)
                .is_none()
        );
        book.start(
            "b".into(),
            "u".into(),
            RetrieveFlow::Username,
            "K".into(),
            None,
            0,
        );
        for _ in 0..LOGIN_CODE_ATTEMPTS_MAX {
            assert_eq!(
                book.answered("b", false, "K".into(), 1),
                Err(RecoveryError::Wrong)
            );
        }
        assert_eq!(
            book.answered("b", true, "K".into(), 1),
            Err(RecoveryError::UnknownNonce)
        );
    }
}
