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
