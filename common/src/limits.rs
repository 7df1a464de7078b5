//! Named bounds shared by node and central: every body, page and list the API takes has one.

/// Largest HTTP request body, in bytes. A birth notification is ~1 KiB; OpenCRVS's gateway allows
/// 2 MB but files go through a separate upload route, so 256 KiB leaves two orders of magnitude
/// of headroom while keeping a hostile client from pinning memory on a 1 GB board.
pub const REQUEST_BODY_BYTES_MAX: usize = 256 * 1024;

/// Longest `transactionId` accepted, in characters. OpenCRVS clients send UUIDs (36) or
/// `"<uuid>:create"` (43); 200 leaves room for integrators' own schemes.
pub const TRANSACTION_ID_CHARS_MAX: usize = 200;

/// Largest page of search results (`limit`). OpenCRVS's default page is 100.
pub const SEARCH_LIMIT_MAX: u64 = 100;

/// Default page size when a search names none.
pub const SEARCH_LIMIT_DEFAULT: u64 = 10;

/// Deepest result a search can page to (`offset + limit`): Elasticsearch's default
/// `max_result_window`, which OpenCRVS's search runs under. Keeps a search's working set bounded
/// however many records match.
pub const SEARCH_WINDOW_MAX: u64 = 10_000;

/// Most clauses in one search query (all nesting levels together).
pub const SEARCH_CLAUSES_MAX: usize = 64;

/// Most field ids asked for in one "record data by tracking id" read.
pub const FIELD_IDS_PER_READ_MAX: usize = 100;

/// Most ids in a `locationIds` filter of `GET /locations`.
pub const LOCATION_IDS_FILTER_MAX: usize = 200;

/// Most scopes one system client may hold.
pub const CLIENT_SCOPES_MAX: usize = 64;

/// Longest free-text string anywhere in an action's non-declaration content (reasons, comments).
pub const CONTENT_TEXT_CHARS_MAX: usize = 10_000;

/// Most roles one roles file may define. Farajaland ships 10; countries add a handful.
pub const ROLES_MAX: usize = 256;

/// Most scopes one role may grant. Farajaland's largest role has 21; a token carries them all.
pub const ROLE_SCOPES_MAX: usize = 256;

/// Longest role id, in characters (`NATIONAL_SYSTEM_ADMIN` is 21).
pub const ROLE_ID_CHARS_MAX: usize = 64;

/// How long an invitation (temporary password) or username reminder waits in the outbox for
/// its transport before it is dropped unsent, ms (7 days).
pub const INVITE_TTL_MS: u64 = 7 * 24 * 3_600_000;

/// Times a login's code may be sent again (`resendAuthenticationCode`).
pub const LOGIN_CODE_RESENDS_MAX: u32 = 3;

/// How long sent and expired notifications stay in the outbox table (their text is already
/// gone), ms: 7 days, then the rows are deleted.
pub const OUTBOX_KEEP_MS: u64 = 7 * 24 * 3_600_000;

/// Security answers one user may keep.
pub const SECURITY_ANSWERS_MAX: usize = 10;

/// Longest security question key or answer, in characters.
pub const SECURITY_TEXT_CHARS_MAX: usize = 200;

/// Largest avatar a user may set (a stored file's path or a small data URL), bytes.
pub const AVATAR_BYTES_MAX: usize = 256 * 1024;

/// Shortest username, in characters (OpenCRVS `MIN_USERNAME_LENGTH`).
pub const USERNAME_CHARS_MIN: usize = 5;

/// Longest username, in characters.
pub const USERNAME_CHARS_MAX: usize = 30;

/// Longest first name or surname of a user, in characters.
pub const USER_NAME_PART_CHARS_MAX: usize = 100;

/// Longest user email address, in bytes (RFC 5321 path limit).
pub const USER_EMAIL_BYTES_MAX: usize = 254;

/// Fewest digits in a user's mobile number (national numbers are rarely shorter).
pub const USER_MOBILE_DIGITS_MIN: usize = 7;

/// Most digits in a user's mobile number (E.164 allows 15).
pub const USER_MOBILE_DIGITS_MAX: usize = 15;

/// Login attempts allowed per username in [`LOGIN_ATTEMPT_WINDOW_MS`] (OpenCRVS rate-limits
/// `/auth/*` to 10 a minute).
pub const LOGIN_ATTEMPTS_PER_WINDOW: usize = 10;

/// The login attempt window, ms.
pub const LOGIN_ATTEMPT_WINDOW_MS: u64 = 60_000;

/// Usernames whose recent attempts are remembered at once.
pub const LOGIN_ATTEMPTS_TRACKED_MAX: usize = 10_000;

/// Logins waiting for their second-factor code at once.
pub const LOGIN_PENDING_MAX: usize = 10_000;

/// How long a second-factor code is accepted, ms (OpenCRVS `CONFIG_SMS_CODE_EXPIRY_SECONDS`).
pub const LOGIN_CODE_TTL_MS: u64 = 600_000;

/// Wrong codes that spend a nonce (the user must log in again).
pub const LOGIN_CODE_ATTEMPTS_MAX: u32 = 5;

/// Longest password accepted, in bytes (argon2 runs on every attempt; long inputs buy nothing).
pub const PASSWORD_BYTES_MAX: usize = 256;

/// Shortest password a user may set.
pub const PASSWORD_CHARS_MIN: usize = 8;

/// Notifications (login codes) waiting in the outbox; past this, logins are refused with 503
/// rather than queueing codes no transport is taking.
pub const OUTBOX_PENDING_MAX: u64 = 10_000;

/// Most clauses (operators and matchers together) in one deduplication rule tree. Farajaland's
/// birth rules have about 40.
pub const DEDUP_CLAUSES_MAX: usize = 256;

/// Deepest nesting of a deduplication rule tree (the root counts as 1). Farajaland's birth
/// rules nest 4 deep (`or` → `and` → `or` → `not` → matcher is 5).
pub const DEDUP_CLAUSE_DEPTH_MAX: usize = 16;

/// Widest `dateRange` window, in days either side (100 years).
pub const DEDUP_DATE_RANGE_DAYS_MAX: i64 = 36_525;

/// Most existing records one candidate is reported to duplicate. OpenCRVS reports one
/// Elasticsearch page (10 hits); the flag is raised all the same, the list is for the registrar.
pub const DEDUP_MATCHES_MAX: usize = 10;

/// Most words of one value a fuzzy or strict matcher compares; later words are ignored (a name
/// has a handful; this bounds the pairwise comparison of long text values).
pub const DEDUP_TOKENS_MAX: usize = 32;

/// Longest word, in characters, compared with an edit distance; longer words must be equal
/// (bounds the quadratic distance computation on hostile input).
pub const DEDUP_FUZZY_TOKEN_CHARS_MAX: usize = 64;

/// Oldest age, in years, an AGE value may give for deriving a date of birth; larger ages derive
/// no date (and so match no `dateRange`).
pub const DEDUP_AGE_YEARS_MAX: u64 = 150;

/// `text` cut to at most `max` bytes, on a character boundary (for bounded error texts and
/// audit details).
pub fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
