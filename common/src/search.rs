//! OpenCRVS's search query (`POST /events/search`, §2.5) parsed and evaluated over derived index
//! entries: pure, shared by node and central. Clauses: and/or nesting; `id`, `eventType`,
//! `status`, `trackingId`, `createdBy`, `createdByUserType`, `assignedTo` (exact/anyOf);
//! `createdAtLocation` and `legalStatuses.{DECLARED,REGISTERED}.createdAtLocation` (exact/anyOf,
//! or `within`: the location or any administrative area holding it); `createdAt`/`updatedAt`/
//! `legalStatuses.*.acceptedAt` (exact/range/timePeriod); `flags` (anyOf/noneOf/allOf);
//! `legalStatuses.*.createdByRole` and `legalStatuses.REGISTERED.registrationNumber`
//! (exact/anyOf); `data` by field id (exact/anyOf, `fuzzy` through [`crate::fuzzy`], range and
//! timePeriod on dates, `within` on locations). `updatedAtLocation`, `updatedBy` and
//! `updatedByUserRole` are refused with a clear 400 (the index does not derive them).
//!
//! Evaluation takes a [`SearchEnv`]: the current time (for `timePeriod`) and the location
//! hierarchy (for `within`). [`Query::plan`] tells an index which lookups bound the matches, and
//! [`index_keys`] which keys an entry is filed under; a store that intersects those lookups and
//! then runs [`Query::matches`] on the candidates answers exactly what a scan would.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::config::EventConfigSet;
use crate::error::{ErrorCode, ErrorEnvelope, Issue};
use crate::event::format_timestamp_ms;
use crate::fuzzy;
use crate::limits::{
    SEARCH_CLAUSES_MAX, SEARCH_LIMIT_DEFAULT, SEARCH_LIMIT_MAX, SEARCH_WINDOW_MAX,
};
use crate::state::EventIndex;

/// Milliseconds in a day (for `timePeriod`).
const DAY_MS: u64 = 86_400_000;
/// Deepest nesting of and/or query nodes.
const QUERY_DEPTH_MAX: usize = 8;
/// Index key prefix: a token of a name or text field (`t|<field>|<token>`).
const KEY_TOKEN: &str = "t|";
/// Index key prefix: a location field's location or an area holding it (`l|<field>|<id>`).
const KEY_LOCATION: &str = "l|";
/// Index key prefix: a date field's value (`d|<field>|<value>`), ordered, for ranges.
const KEY_DATE: &str = "d|";
/// Index key prefix: a registration number (`r|<number>`).
const KEY_REGISTRATION: &str = "r|";
/// Sorts after every character of an ISO date or timestamp: closes a key range over a day.
const KEY_DAY_END: char = '~';
/// The top-level location fields `within` applies to, as named in index keys.
const CREATED_AT_LOCATION: &str = "createdAtLocation";
/// The date fields of the entry itself, as named in index keys.
const CREATED_AT: &str = "createdAt";
/// See [`CREATED_AT`].
const UPDATED_AT: &str = "updatedAt";

/// What evaluation needs from outside `common`: the time and the location hierarchy.
pub struct SearchEnv<'a> {
    /// Now, in milliseconds since the epoch (for `timePeriod`).
    pub now_ms: u64,
    /// The administrative areas holding a location or area, nearest first (itself excluded);
    /// empty for an unknown id.
    pub ancestors: &'a dyn Fn(Uuid) -> Vec<Uuid>,
}

impl std::fmt::Debug for SearchEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchEnv")
            .field("now_ms", &self.now_ms)
            .finish_non_exhaustive()
    }
}

impl SearchEnv<'_> {
    fn within(&self, location: Uuid, target: Uuid) -> bool {
        location == target || (self.ancestors)(location).contains(&target)
    }
}

fn input_issue(code: &str, message: impl Into<String>, path: &str) -> ErrorEnvelope {
    ErrorEnvelope::input_validation(vec![Issue {
        code: code.to_owned(),
        message: message.into(),
        path: vec![path.to_owned()],
    }])
}

/// The search body as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchInput {
    /// The query (an object, or the same as a JSON string).
    pub query: Value,
    /// Page size.
    #[serde(default)]
    pub limit: Option<u64>,
    /// Page start.
    #[serde(default)]
    pub offset: Option<u64>,
    /// Sort order (first entry used).
    #[serde(default)]
    pub sort: Option<Vec<SortInput>>,
}

/// One sort key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SortInput {
    /// `createdAt`, `updatedAt` or `trackingId`.
    pub field: String,
    /// `asc` or `desc` (default).
    #[serde(default)]
    pub direction: Option<String>,
}

/// A checked search request.
#[derive(Debug)]
pub struct SearchRequest {
    /// The parsed query.
    pub query: Query,
    limit: u64,
    offset: u64,
    sort_field: SortField,
    descending: bool,
}

#[derive(Debug, Clone, Copy)]
enum SortField {
    CreatedAt,
    UpdatedAt,
    TrackingId,
}

impl SearchRequest {
    /// Checks a search body against the event configuration.
    pub fn parse(input: &SearchInput, events: &EventConfigSet) -> Result<Self, ErrorEnvelope> {
        let query_value = match &input.query {
            Value::String(s) => {
                serde_json::from_str(s).map_err(|_| bad("query is not valid JSON"))?
            }
            other => other.clone(),
        };
        let mut parser = Parser { clauses: 0, events };
        let query = Query(parser.query(&query_value, 0)?);
        let limit = input.limit.unwrap_or(SEARCH_LIMIT_DEFAULT);
        if limit == 0 || limit > SEARCH_LIMIT_MAX {
            return Err(input_issue(
                "too_big",
                format!("limit must be 1 to {SEARCH_LIMIT_MAX}"),
                "limit",
            ));
        }
        let offset = input.offset.unwrap_or(0);
        if offset.saturating_add(limit) > SEARCH_WINDOW_MAX {
            return Err(input_issue(
                "too_big",
                format!("offset + limit must be at most {SEARCH_WINDOW_MAX}"),
                "offset",
            ));
        }
        let mut request = Self {
            query,
            limit,
            offset,
            sort_field: SortField::CreatedAt,
            descending: true,
        };
        if let Some(sort) = input.sort.as_ref().and_then(|s| s.first()) {
            request.sort_field = match sort.field.as_str() {
                "createdAt" => SortField::CreatedAt,
                "updatedAt" => SortField::UpdatedAt,
                "trackingId" => SortField::TrackingId,
                other => {
                    return Err(input_issue(
                        "custom",
                        format!("Cannot sort by '{other}'"),
                        "sort",
                    ));
                }
            };
            request.descending = match sort.direction.as_deref() {
                None | Some("desc") => true,
                Some("asc") => false,
                Some(_) => {
                    return Err(input_issue(
                        "invalid_enum_value",
                        "direction must be asc or desc",
                        "sort",
                    ));
                }
            };
        }
        Ok(request)
    }

    /// Filters, sorts (ties broken by id, so pages are stable) and pages `entries`; returns the
    /// page and the total number of matches. `visible` says whether the caller may see an entry.
    pub fn run(
        &self,
        entries: impl IntoIterator<Item = EventIndex>,
        env: &SearchEnv<'_>,
        mut visible: impl FnMut(&EventIndex) -> bool,
    ) -> (Vec<EventIndex>, u64) {
        let mut page = self.page();
        for e in entries {
            if self.query.matches(&e, env) && visible(&e) {
                page.push(e);
            }
        }
        page.finish()
    }

    /// An empty page for this request's sort, offset and limit, to [`Page::push`] matches into.
    pub fn page(&self) -> Page {
        Page {
            hits: Vec::new(),
            total: 0,
            window: (self.offset + self.limit) as usize,
            offset: self.offset as usize,
            sort_field: self.sort_field,
            descending: self.descending,
        }
    }
}

/// The matches of one search as they are found: their count and the best `offset + limit` of
/// them in sort order (at most [`SEARCH_WINDOW_MAX`], however many match).
#[derive(Debug)]
pub struct Page {
    hits: Vec<EventIndex>,
    total: u64,
    window: usize,
    offset: usize,
    sort_field: SortField,
    descending: bool,
}

impl Page {
    fn order(&self, a: &EventIndex, b: &EventIndex) -> Ordering {
        let key = |e: &EventIndex| match self.sort_field {
            SortField::CreatedAt => e.created_at.clone(),
            SortField::UpdatedAt => e.updated_at.clone(),
            SortField::TrackingId => e.tracking_id.clone(),
        };
        let ord = key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id));
        if self.descending { ord.reverse() } else { ord }
    }

    fn compact(&mut self) {
        let mut hits = std::mem::take(&mut self.hits);
        hits.sort_by(|a, b| self.order(a, b));
        hits.truncate(self.window);
        self.hits = hits;
    }

    /// Counts a match and keeps it if it may be on the page.
    pub fn push(&mut self, e: EventIndex) {
        self.total += 1;
        self.hits.push(e);
        if self.hits.len() >= self.window.saturating_mul(2).max(64) {
            self.compact();
        }
    }

    /// The page and the total number of matches.
    pub fn finish(mut self) -> (Vec<EventIndex>, u64) {
        self.compact();
        let page = self.hits.into_iter().skip(self.offset).collect();
        (page, self.total)
    }
}

/// A parsed query.
#[derive(Debug)]
pub struct Query(QueryNode);

impl Query {
    /// Whether an index entry matches.
    pub fn matches(&self, e: &EventIndex, env: &SearchEnv<'_>) -> bool {
        self.0.matches(e, env)
    }

    /// A tracking id every match must have (lets a store narrow its scan).
    pub fn required_tracking_id(&self) -> Option<&str> {
        self.0.required_tracking_id()
    }

    /// Whether evaluation looks at the location hierarchy (a `within` clause).
    pub fn uses_locations(&self) -> bool {
        self.0.uses_locations()
    }

    /// The index lookups that bound the matches ([`Plan::Scan`] when none does), for a store
    /// to intersect before it evaluates the query on what they return.
    pub fn plan(&self, now_ms: u64) -> Plan {
        self.0.plan(now_ms).simplify()
    }
}

/// Which entries may match a query, as index lookups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing indexed bounds the matches: every entry must be looked at.
    Scan,
    /// The entries one lookup returns.
    Lookup(Lookup),
    /// Entries every sub-plan returns.
    And(Vec<Self>),
    /// Entries any sub-plan returns.
    Or(Vec<Self>),
}

/// One index lookup. Exact lookups (ids, tracking id, registration number) return a handful of
/// entries; [`Lookup::Fuzzy`] a name's worth; [`Lookup::Within`] and [`Lookup::Keys`] ranges may
/// return many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Entries with one of these ids.
    Ids(Vec<String>),
    /// The entry with this tracking id.
    TrackingId(String),
    /// Entries filed under any of these index keys (see [`index_keys`]).
    Keys(Vec<String>),
    /// Entries with a token of `field` matching every term token (one set of tokens per term
    /// token: the store expands each through [`fuzzy::term_keys`]).
    Fuzzy {
        /// Data field id.
        field: String,
        /// Normalised term tokens.
        tokens: Vec<String>,
    },
    /// Entries filed under a key in `from..=to` (a date range; both include the prefix).
    Range {
        /// Lowest key.
        from: String,
        /// Highest key.
        to: String,
    },
}

impl Lookup {
    /// Rough cost class: lower is more selective. A planner joins only the cheapest class.
    fn cost(&self) -> u8 {
        match self {
            Self::Ids(_) | Self::TrackingId(_) => 0,
            Self::Keys(keys) if keys.iter().all(|k| k.starts_with(KEY_REGISTRATION)) => 0,
            Self::Fuzzy { .. } => 1,
            Self::Keys(_) | Self::Range { .. } => 2,
        }
    }
}

impl Plan {
    fn cost(&self) -> u8 {
        match self {
            Self::Scan => u8::MAX,
            Self::Lookup(l) => l.cost(),
            Self::And(ps) => ps.iter().map(Self::cost).min().unwrap_or(u8::MAX),
            Self::Or(ps) => ps.iter().map(Self::cost).max().unwrap_or(u8::MAX),
        }
    }

    /// An And keeps only its cheapest class of sub-plans (the evaluator checks the rest);
    /// an Or with a Scan is a Scan; single children are unwrapped.
    fn simplify(self) -> Self {
        match self {
            Self::And(ps) => {
                let ps: Vec<Self> = ps
                    .into_iter()
                    .map(Self::simplify)
                    .filter(|p| *p != Self::Scan)
                    .collect();
                let Some(best) = ps.iter().map(Self::cost).min() else {
                    return Self::Scan;
                };
                let mut kept: Vec<Self> = ps.into_iter().filter(|p| p.cost() == best).collect();
                if kept.len() == 1 {
                    kept.remove(0)
                } else {
                    Self::And(kept)
                }
            }
            Self::Or(ps) => {
                let mut ps: Vec<Self> = ps.into_iter().map(Self::simplify).collect();
                if ps.is_empty() || ps.contains(&Self::Scan) {
                    Self::Scan
                } else if ps.len() == 1 {
                    ps.remove(0)
                } else {
                    Self::Or(ps)
                }
            }
            other => other,
        }
    }
}

#[derive(Debug)]
enum QueryNode {
    /// All must match.
    And(Vec<Self>),
    /// Any must match.
    Or(Vec<Self>),
    /// All conditions of one expression object must hold.
    Expr(Vec<Cond>),
}

/// One condition of an expression.
#[derive(Debug)]
enum Cond {
    Id(Terms),
    EventType(Terms),
    Status(Terms),
    TrackingId(String),
    CreatedBy(Terms),
    CreatedByUserType(Terms),
    AssignedTo(Terms),
    CreatedAtLocation(Terms),
    CreatedAtWithin(Uuid),
    CreatedAt(DateMatch),
    UpdatedAt(DateMatch),
    Flags {
        any_of: Vec<String>,
        none_of: Vec<String>,
        all_of: Vec<String>,
    },
    Data(String, Terms),
    /// A fuzzy clause on a data field: its normalised term tokens.
    DataFuzzy {
        field: String,
        tokens: Vec<String>,
    },
    /// A date clause on a data field (its value must be a date).
    DataDate {
        field: String,
        date: DateMatch,
    },
    /// A data field's location is this one or inside it.
    DataWithin(String, Uuid),
    /// `legalStatuses.*.createdAtLocation` within a location.
    LegalWithin {
        registered: bool,
        location: Uuid,
    },
    /// A field of `legalStatuses.DECLARED` (`declared`) or `.REGISTERED`.
    Legal {
        registered: bool,
        field: LegalField,
        terms: Terms,
    },
    /// `legalStatuses.*.acceptedAt`.
    LegalAcceptedAt {
        registered: bool,
        date: DateMatch,
    },
}

#[derive(Debug, Clone, Copy)]
enum LegalField {
    CreatedAtLocation,
    CreatedByRole,
    RegistrationNumber,
}

#[derive(Debug)]
enum Terms {
    Exact(Value),
    AnyOf(Vec<Value>),
}

#[derive(Debug)]
enum DateMatch {
    /// Same calendar day (`YYYY-MM-DD` prefix) or the same instant.
    Exact(String),
    Range {
        gte: Option<String>,
        lte: Option<String>,
    },
    /// The last so many days up to now.
    TimePeriod(u64),
}

fn bad(message: impl Into<String>) -> ErrorEnvelope {
    input_issue("custom", message, "query")
}

fn unsupported(what: &str) -> ErrorEnvelope {
    ErrorEnvelope::new(
        ErrorCode::BadRequest,
        format!("Search clause '{what}' is not supported: the index does not derive it"),
    )
}

/// The location of a `{type: "within", location}` clause.
fn within_location(v: &Value, key: &str) -> Result<Uuid, ErrorEnvelope> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad(format!("'{key}' takes {{type: 'within', location}}")))?;
    if let Some(k) = obj.keys().find(|k| *k != "type" && *k != "location") {
        return Err(bad(format!("Unknown key '{k}' in '{key}' within clause")));
    }
    obj.get("location")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("'{key}' within needs a location id (uuid)")))
}

fn clause_type(v: &Value) -> Option<&str> {
    v.get("type").and_then(Value::as_str)
}

struct Parser<'a> {
    clauses: usize,
    events: &'a EventConfigSet,
}

impl Parser<'_> {
    fn query(&mut self, v: &Value, depth: usize) -> Result<QueryNode, ErrorEnvelope> {
        if depth > QUERY_DEPTH_MAX {
            return Err(bad("QueryNode nests too deeply"));
        }
        let obj = v.as_object().ok_or_else(|| bad("Expected an object"))?;
        if obj.contains_key("clauses") {
            let kind = obj
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("QueryNode type must be 'and' or 'or'"))?;
            if let Some(k) = obj.keys().find(|k| *k != "type" && *k != "clauses") {
                return Err(input_issue(
                    "unrecognized_keys",
                    format!("Unrecognized key(s) in object: '{k}'"),
                    "query",
                ));
            }
            let clauses = obj["clauses"]
                .as_array()
                .ok_or_else(|| bad("clauses must be an array"))?;
            if clauses.is_empty() {
                return Err(bad("clauses must not be empty"));
            }
            let parsed = clauses
                .iter()
                .map(|c| self.query(c, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            return match kind {
                "and" => Ok(QueryNode::And(parsed)),
                "or" => Ok(QueryNode::Or(parsed)),
                _ => Err(bad("QueryNode type must be 'and' or 'or'")),
            };
        }
        if obj.is_empty() {
            return Err(bad("A clause needs at least one key"));
        }
        let mut conds = Vec::new();
        for (key, value) in obj {
            self.clauses += 1;
            if self.clauses > SEARCH_CLAUSES_MAX {
                return Err(bad(format!("At most {SEARCH_CLAUSES_MAX} clauses")));
            }
            conds.extend(self.expression(key, value)?);
        }
        Ok(QueryNode::Expr(conds))
    }

    fn expression(&mut self, key: &str, v: &Value) -> Result<Vec<Cond>, ErrorEnvelope> {
        Ok(vec![match key {
            "id" => Cond::Id(terms(v, key)?),
            "eventType" => Cond::EventType(terms(v, key)?),
            "status" => Cond::Status(terms(v, key)?),
            "trackingId" => match terms(v, key)? {
                Terms::Exact(Value::String(s)) => Cond::TrackingId(s),
                _ => return Err(bad("trackingId takes {type: 'exact', term: string}")),
            },
            "createdBy" => Cond::CreatedBy(terms(v, key)?),
            "createdByUserType" => Cond::CreatedByUserType(terms(v, key)?),
            "assignedTo" => Cond::AssignedTo(terms(v, key)?),
            "createdAtLocation" => {
                if clause_type(v) == Some("within") {
                    Cond::CreatedAtWithin(within_location(v, key)?)
                } else {
                    Cond::CreatedAtLocation(terms(v, key)?)
                }
            }
            "createdAt" => Cond::CreatedAt(date_match(v, key)?),
            "updatedAt" => Cond::UpdatedAt(date_match(v, key)?),
            "flags" => {
                let obj = v
                    .as_object()
                    .ok_or_else(|| bad("flags takes {anyOf?, noneOf?, allOf?}"))?;
                let list = |k: &str| -> Result<Vec<String>, ErrorEnvelope> {
                    match obj.get(k) {
                        None => Ok(Vec::new()),
                        Some(Value::Array(a)) => a
                            .iter()
                            .map(|x| {
                                x.as_str()
                                    .map(str::to_owned)
                                    .ok_or_else(|| bad("flags must be strings"))
                            })
                            .collect(),
                        Some(_) => Err(bad("flags lists must be arrays")),
                    }
                };
                if let Some(k) = obj
                    .keys()
                    .find(|k| !matches!(k.as_str(), "anyOf" | "noneOf" | "allOf"))
                {
                    return Err(bad(format!("Unknown flags key '{k}'")));
                }
                Cond::Flags {
                    any_of: list("anyOf")?,
                    none_of: list("noneOf")?,
                    all_of: list("allOf")?,
                }
            }
            "data" => {
                let obj = v
                    .as_object()
                    .ok_or_else(|| bad("data takes {fieldId: clause}"))?;
                let mut out = Vec::new();
                for (field, clause) in obj {
                    let known = self
                        .events
                        .events()
                        .iter()
                        .any(|e| e.field(field).is_some());
                    if !known {
                        let issue =
                            serde_json::json!([{"message": "Unexpected field", "id": field}]);
                        return Err(ErrorEnvelope::new(ErrorCode::BadRequest, issue.to_string()));
                    }
                    out.push(match clause_type(clause) {
                        Some("exact" | "anyOf") => Cond::Data(field.clone(), terms(clause, field)?),
                        Some("fuzzy") => {
                            let obj = clause.as_object().ok_or_else(|| bad("fuzzy clause"))?;
                            if let Some(k) = obj.keys().find(|k| *k != "type" && *k != "term") {
                                return Err(bad(format!(
                                    "Unknown key '{k}' in fuzzy clause for '{field}'"
                                )));
                            }
                            let term =
                                obj.get("term").and_then(Value::as_str).ok_or_else(|| {
                                    bad(format!("fuzzy clause for '{field}' needs a string term"))
                                })?;
                            let tokens = fuzzy::tokens(term);
                            if tokens.is_empty() {
                                return Err(bad(format!(
                                    "fuzzy term for '{field}' has no letters or digits"
                                )));
                            }
                            Cond::DataFuzzy {
                                field: field.clone(),
                                tokens,
                            }
                        }
                        Some("range" | "timePeriod") => Cond::DataDate {
                            field: field.clone(),
                            date: date_match(clause, field)?,
                        },
                        Some("within") => {
                            Cond::DataWithin(field.clone(), within_location(clause, field)?)
                        }
                        _ => {
                            return Err(bad(format!(
                                "Unknown clause type for data field '{field}'"
                            )));
                        }
                    });
                }
                return Ok(out);
            }
            "legalStatuses.DECLARED.acceptedAt" | "legalStatuses.REGISTERED.acceptedAt" => {
                Cond::LegalAcceptedAt {
                    registered: key.contains("REGISTERED"),
                    date: date_match(v, key)?,
                }
            }
            "legalStatuses.DECLARED.createdAtLocation"
            | "legalStatuses.REGISTERED.createdAtLocation"
            | "legalStatuses.REGISTERED.registrationNumber"
            | "legalStatuses.DECLARED.createdByRole"
            | "legalStatuses.REGISTERED.createdByRole" => {
                if clause_type(v) == Some("within") {
                    if !key.ends_with("createdAtLocation") {
                        return Err(bad(format!("'{key}' takes exact or anyOf")));
                    }
                    return Ok(vec![Cond::LegalWithin {
                        registered: key.contains("REGISTERED"),
                        location: within_location(v, key)?,
                    }]);
                }
                let field = if key.ends_with("createdAtLocation") {
                    LegalField::CreatedAtLocation
                } else if key.ends_with("createdByRole") {
                    LegalField::CreatedByRole
                } else {
                    LegalField::RegistrationNumber
                };
                Cond::Legal {
                    registered: key.contains("REGISTERED"),
                    field,
                    terms: terms(v, key)?,
                }
            }
            "updatedAtLocation" | "updatedBy" | "updatedByUserRole" => {
                return Err(unsupported(key));
            }
            other => {
                return Err(input_issue(
                    "unrecognized_keys",
                    format!("Unrecognized key(s) in object: '{other}'"),
                    "query",
                ));
            }
        }])
    }
}

fn terms(v: &Value, key: &str) -> Result<Terms, ErrorEnvelope> {
    // Plain strings are accepted as exact terms (OpenCRVS allows them for ids and types).
    if v.is_string() {
        return Ok(Terms::Exact(v.clone()));
    }
    let obj = v
        .as_object()
        .ok_or_else(|| bad(format!("'{key}' takes {{type, term}}")))?;
    match obj.get("type").and_then(Value::as_str) {
        Some("exact") => obj
            .get("term")
            .cloned()
            .map(Terms::Exact)
            .ok_or_else(|| bad(format!("'{key}' needs a term"))),
        Some("anyOf") => match obj.get("terms") {
            Some(Value::Array(a)) if !a.is_empty() => Ok(Terms::AnyOf(a.clone())),
            _ => Err(bad(format!("'{key}' anyOf needs a non-empty terms array"))),
        },
        Some(other @ ("fuzzy" | "range" | "within" | "timePeriod")) => {
            Err(bad(format!("'{key}' does not take a {other} clause")))
        }
        _ => Err(bad(format!("Unknown clause type for '{key}'"))),
    }
}

fn date_match(v: &Value, key: &str) -> Result<DateMatch, ErrorEnvelope> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad(format!("'{key}' takes {{type, ...}}")))?;
    let s = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
    match obj.get("type").and_then(Value::as_str) {
        Some("exact") => s("term")
            .map(DateMatch::Exact)
            .ok_or_else(|| bad(format!("'{key}' needs a term"))),
        Some("range") => {
            let (gte, lte) = (s("gte"), s("lte"));
            if gte.is_none() && lte.is_none() {
                return Err(bad(format!("'{key}' range needs gte or lte")));
            }
            Ok(DateMatch::Range { gte, lte })
        }
        Some("timePeriod") => {
            let days = match obj.get("term").and_then(Value::as_str) {
                Some("last7Days") => 7,
                Some("last30Days") => 30,
                Some("last90Days") => 90,
                Some("last365Days") => 365,
                _ => {
                    return Err(bad(format!(
                        "'{key}' timePeriod term must be last7Days, last30Days, last90Days or last365Days"
                    )));
                }
            };
            Ok(DateMatch::TimePeriod(days))
        }
        _ => Err(bad(format!("Unknown clause type for '{key}'"))),
    }
}

fn value_matches(value: Option<&Value>, terms: &Terms) -> bool {
    let Some(value) = value else { return false };
    match terms {
        Terms::Exact(t) => exact_match(value, t),
        Terms::AnyOf(ts) => ts.iter().any(|t| exact_match(value, t)),
    }
}

/// Equal JSON values, or for a name object, the term equals its parts joined by spaces.
fn exact_match(value: &Value, term: &Value) -> bool {
    if value == term {
        return true;
    }
    match (value, term) {
        (Value::Object(map), Value::String(term)) => {
            let part = |k: &str| map.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
            let full: Vec<&str> = [part("firstname"), part("middlename"), part("surname")]
                .into_iter()
                .flatten()
                .collect();
            let short: Vec<&str> = [part("firstname"), part("surname")]
                .into_iter()
                .flatten()
                .collect();
            !full.is_empty() && (full.join(" ") == *term || short.join(" ") == *term)
        }
        _ => false,
    }
}

/// Day-granular when either side is a bare `YYYY-MM-DD` date (a date bound covers its whole
/// day; a date value is on its day), else ISO strings compare as instants.
fn date_cmp(value: &str, bound: &str) -> Ordering {
    const DAY_CHARS: usize = "YYYY-MM-DD".len();
    if value.len() == DAY_CHARS || bound.len() == DAY_CHARS {
        let day = |s: &str| s.get(..DAY_CHARS).unwrap_or(s).to_owned();
        day(value).cmp(&day(bound))
    } else {
        value.cmp(bound)
    }
}

impl DateMatch {
    /// `(gte, lte)` bounds of this match at `now_ms`.
    fn bounds(&self, now_ms: u64) -> (Option<String>, Option<String>) {
        match self {
            Self::Exact(t) => (Some(t.clone()), Some(t.clone())),
            Self::Range { gte, lte } => (gte.clone(), lte.clone()),
            Self::TimePeriod(days) => (
                Some(format_timestamp_ms(now_ms.saturating_sub(days * DAY_MS))),
                Some(format_timestamp_ms(now_ms)),
            ),
        }
    }

    fn matches(&self, value: &str, now_ms: u64) -> bool {
        if let Self::Exact(t) = self {
            return value == t || value.starts_with(t.as_str());
        }
        let (gte, lte) = self.bounds(now_ms);
        gte.as_deref()
            .is_none_or(|g| date_cmp(value, g) != Ordering::Less)
            && lte
                .as_deref()
                .is_none_or(|l| date_cmp(value, l) != Ordering::Greater)
    }

    /// The index key range of this match on `field` (day-granular, so a superset).
    fn key_range(&self, field: &str, now_ms: u64) -> Lookup {
        let (gte, lte) = self.bounds(now_ms);
        let day = |s: &str| s.get(..10).unwrap_or(s).to_owned();
        let from = format!(
            "{KEY_DATE}{field}|{}",
            gte.as_deref().map(day).unwrap_or_default()
        );
        let to = format!(
            "{KEY_DATE}{field}|{}{KEY_DAY_END}",
            lte.as_deref()
                .map(day)
                .unwrap_or_else(|| KEY_DAY_END.to_string())
        );
        Lookup::Range { from, to }
    }
}

/// Whether a value is a date or timestamp (`YYYY-MM-DD...`): only those answer date clauses on
/// data fields, and only those are filed under their date.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
}

fn location_key(field: &str, id: Uuid) -> String {
    format!("{KEY_LOCATION}{field}|{id}")
}

fn legal_location_field(registered: bool) -> &'static str {
    if registered {
        "legalStatuses.REGISTERED.createdAtLocation"
    } else {
        "legalStatuses.DECLARED.createdAtLocation"
    }
}

fn legal_accepted_field(registered: bool) -> &'static str {
    if registered {
        "legalStatuses.REGISTERED.acceptedAt"
    } else {
        "legalStatuses.DECLARED.acceptedAt"
    }
}

/// The index keys an entry is filed under (besides its id and tracking id): the tokens of its
/// data values ([`fuzzy::value_tokens`]), its locations (top-level, legal statuses, and data
/// values that are ids) with every area holding them, its dates (top-level and data values that
/// are dates), its registration number. A store files the entry under exactly these, so
/// [`Query::plan`]'s lookups find it.
pub fn index_keys(e: &EventIndex, ancestors: &dyn Fn(Uuid) -> Vec<Uuid>) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let location = |keys: &mut BTreeSet<String>, field: &str, id: Uuid| {
        keys.insert(location_key(field, id));
        for area in ancestors(id) {
            keys.insert(location_key(field, area));
        }
    };
    if let Some(l) = e.created_at_location {
        location(&mut keys, CREATED_AT_LOCATION, l);
    }
    keys.insert(format!("{KEY_DATE}{CREATED_AT}|{}", e.created_at));
    keys.insert(format!("{KEY_DATE}{UPDATED_AT}|{}", e.updated_at));
    for registered in [false, true] {
        let Some(status) = legal(e, registered) else {
            continue;
        };
        if let Some(l) = status.created_at_location {
            location(&mut keys, legal_location_field(registered), l);
        }
        keys.insert(format!(
            "{KEY_DATE}{}|{}",
            legal_accepted_field(registered),
            status.accepted_at
        ));
        if let Some(number) = &status.registration_number {
            keys.insert(format!("{KEY_REGISTRATION}{number}"));
        }
    }
    for (field, value) in &e.declaration {
        for token in fuzzy::value_tokens(value) {
            keys.insert(token_key(field, &token));
        }
        let Some(text) = value.as_str() else {
            continue;
        };
        if is_date(text) {
            keys.insert(format!("{KEY_DATE}{field}|{text}"));
        }
        if let Ok(id) = text.parse::<Uuid>() {
            location(&mut keys, field, id);
        }
    }
    keys
}

/// The index key of a data field's token (what [`Lookup::Fuzzy`] resolves to per token).
pub fn token_key(field: &str, token: &str) -> String {
    format!("{KEY_TOKEN}{field}|{token}")
}

/// The tokens of an entry's token-indexed fields (a store keeps them in its vocabulary).
pub fn indexed_tokens(keys: &BTreeSet<String>) -> BTreeSet<String> {
    keys.iter()
        .filter_map(|k| k.strip_prefix(KEY_TOKEN))
        .filter_map(|rest| rest.rsplit_once('|').map(|(_, token)| token.to_owned()))
        .collect()
}

impl QueryNode {
    fn matches(&self, e: &EventIndex, env: &SearchEnv<'_>) -> bool {
        match self {
            Self::And(qs) => qs.iter().all(|q| q.matches(e, env)),
            Self::Or(qs) => qs.iter().any(|q| q.matches(e, env)),
            Self::Expr(conds) => conds.iter().all(|c| c.matches(e, env)),
        }
    }

    fn uses_locations(&self) -> bool {
        match self {
            Self::And(qs) | Self::Or(qs) => qs.iter().any(Self::uses_locations),
            Self::Expr(conds) => conds.iter().any(|c| {
                matches!(
                    c,
                    Cond::CreatedAtWithin(_) | Cond::DataWithin(..) | Cond::LegalWithin { .. }
                )
            }),
        }
    }

    fn plan(&self, now_ms: u64) -> Plan {
        match self {
            Self::And(qs) => Plan::And(qs.iter().map(|q| q.plan(now_ms)).collect()),
            Self::Or(qs) => Plan::Or(qs.iter().map(|q| q.plan(now_ms)).collect()),
            Self::Expr(conds) => Plan::And(conds.iter().map(|c| c.plan(now_ms)).collect()),
        }
    }

    /// A tracking id every match must have, to narrow the scan.
    fn required_tracking_id(&self) -> Option<&str> {
        match self {
            Self::And(qs) => qs.iter().find_map(Self::required_tracking_id),
            Self::Or(qs) if qs.len() == 1 => qs[0].required_tracking_id(),
            Self::Or(_) => None,
            Self::Expr(conds) => conds.iter().find_map(|c| match c {
                Cond::TrackingId(t) => Some(t.as_str()),
                _ => None,
            }),
        }
    }
}

fn legal(e: &EventIndex, registered: bool) -> Option<&crate::state::LegalStatus> {
    if registered {
        e.legal_statuses.registered.as_ref()
    } else {
        e.legal_statuses.declared.as_ref()
    }
}

fn string_terms(terms: &Terms) -> Option<Vec<String>> {
    let list = match terms {
        Terms::Exact(t) => std::slice::from_ref(t),
        Terms::AnyOf(ts) => ts.as_slice(),
    };
    list.iter().map(|t| t.as_str().map(str::to_owned)).collect()
}

impl Cond {
    fn plan(&self, now_ms: u64) -> Plan {
        let lookup = match self {
            Self::Id(t) => string_terms(t).map(Lookup::Ids),
            Self::TrackingId(t) => Some(Lookup::TrackingId(t.clone())),
            Self::Legal {
                registered: true,
                field: LegalField::RegistrationNumber,
                terms,
            } => string_terms(terms).map(|ns| {
                Lookup::Keys(
                    ns.iter()
                        .map(|n| format!("{KEY_REGISTRATION}{n}"))
                        .collect(),
                )
            }),
            Self::DataFuzzy { field, tokens } => Some(Lookup::Fuzzy {
                field: field.clone(),
                tokens: tokens.clone(),
            }),
            Self::CreatedAtWithin(l) => {
                Some(Lookup::Keys(vec![location_key(CREATED_AT_LOCATION, *l)]))
            }
            Self::DataWithin(field, l) => Some(Lookup::Keys(vec![location_key(field, *l)])),
            Self::LegalWithin {
                registered,
                location,
            } => Some(Lookup::Keys(vec![location_key(
                legal_location_field(*registered),
                *location,
            )])),
            Self::CreatedAt(d) => Some(d.key_range(CREATED_AT, now_ms)),
            Self::UpdatedAt(d) => Some(d.key_range(UPDATED_AT, now_ms)),
            Self::LegalAcceptedAt { registered, date } => {
                Some(date.key_range(legal_accepted_field(*registered), now_ms))
            }
            Self::DataDate { field, date } => Some(date.key_range(field, now_ms)),
            _ => None,
        };
        lookup.map_or(Plan::Scan, Plan::Lookup)
    }

    fn matches(&self, e: &EventIndex, env: &SearchEnv<'_>) -> bool {
        let s = |x: &str| Value::String(x.to_owned());
        match self {
            Self::Id(t) => value_matches(Some(&s(&e.id.to_string())), t),
            Self::EventType(t) => value_matches(Some(&s(&e.event_type)), t),
            Self::Status(t) => value_matches(Some(&s(e.status.as_str())), t),
            Self::TrackingId(t) => e.tracking_id == *t,
            Self::CreatedBy(t) => value_matches(Some(&s(&e.created_by)), t),
            Self::CreatedByUserType(t) => {
                let ut = match e.created_by_user_type {
                    crate::event::UserType::User => "user",
                    crate::event::UserType::System => "system",
                };
                value_matches(Some(&s(ut)), t)
            }
            Self::AssignedTo(t) => value_matches(e.assigned_to.as_deref().map(s).as_ref(), t),
            Self::CreatedAtLocation(t) => {
                value_matches(e.created_at_location.map(|l| s(&l.to_string())).as_ref(), t)
            }
            Self::CreatedAtWithin(target) => e
                .created_at_location
                .is_some_and(|l| env.within(l, *target)),
            Self::CreatedAt(m) => m.matches(&e.created_at, env.now_ms),
            Self::UpdatedAt(m) => m.matches(&e.updated_at, env.now_ms),
            Self::Flags {
                any_of,
                none_of,
                all_of,
            } => {
                let has = |f: &String| e.flags.contains(f);
                (any_of.is_empty() || any_of.iter().any(has))
                    && !none_of.iter().any(has)
                    && all_of.iter().all(has)
            }
            Self::Data(field, t) => value_matches(e.declaration.get(field), t),
            Self::DataFuzzy { field, tokens } => e
                .declaration
                .get(field)
                .is_some_and(|v| fuzzy::fuzzy_matches(v, tokens)),
            Self::DataDate { field, date } => e
                .declaration
                .get(field)
                .and_then(Value::as_str)
                .is_some_and(|v| is_date(v) && date.matches(v, env.now_ms)),
            Self::DataWithin(field, target) => e
                .declaration
                .get(field)
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<Uuid>().ok())
                .is_some_and(|l| env.within(l, *target)),
            Self::LegalWithin {
                registered,
                location,
            } => legal(e, *registered)
                .and_then(|l| l.created_at_location)
                .is_some_and(|l| env.within(l, *location)),
            Self::Legal {
                registered,
                field,
                terms,
            } => {
                let status = legal(e, *registered);
                let value = status.and_then(|l| match field {
                    LegalField::CreatedAtLocation => {
                        l.created_at_location.map(|x| s(&x.to_string()))
                    }
                    LegalField::CreatedByRole => l.created_by_role.as_deref().map(s),
                    LegalField::RegistrationNumber => l.registration_number.as_deref().map(s),
                });
                value_matches(value.as_ref(), terms)
            }
            Self::LegalAcceptedAt { registered, date } => {
                legal(e, *registered).is_some_and(|l| date.matches(&l.accepted_at, env.now_ms))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    const COUNTRY: u128 = 1;
    const DISTRICT_A: u128 = 10;
    const DISTRICT_B: u128 = 11;
    const FACILITY_A: u128 = 100;
    const FACILITY_B: u128 = 101;
    /// 2025-01-31T00:00:00Z.
    const NOW_MS: u64 = 1_738_281_600_000;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn hierarchy() -> HashMap<Uuid, Vec<Uuid>> {
        HashMap::from([
            (id(DISTRICT_A), vec![id(COUNTRY)]),
            (id(DISTRICT_B), vec![id(COUNTRY)]),
            (id(FACILITY_A), vec![id(DISTRICT_A), id(COUNTRY)]),
            (id(FACILITY_B), vec![id(DISTRICT_B), id(COUNTRY)]),
        ])
    }

    /// A registered birth at `facility`, created `created_at`, with this child.
    fn entry(
        n: u128,
        first: &str,
        last: &str,
        dob: &str,
        facility: u128,
        created: &str,
    ) -> EventIndex {
        let legal = json!({
            "createdAt": created, "createdBy": "u1", "createdAtLocation": id(facility),
            "createdByUserType": "user", "createdByRole": "REGISTRATION_AGENT",
            "acceptedAt": created,
        });
        let mut registered = legal.clone();
        registered["registrationNumber"] = json!(format!("2025{n:08}"));
        registered["createdByRole"] = json!("LOCAL_REGISTRAR");
        serde_json::from_value(json!({
            "id": id(n), "type": "birth", "status": "REGISTERED",
            "trackingId": format!("T{n:05}"), "flags": [], "createdAt": created,
            "createdBy": "u1", "createdByUserType": "user", "createdAtLocation": id(facility),
            "updatedAt": created,
            "legalStatuses": {"DECLARED": legal, "REGISTERED": registered},
            "declaration": {
                "child.name": {"firstname": first, "surname": last},
                "child.dob": dob,
                "child.birthLocation": id(facility).to_string(),
            },
        }))
        .unwrap()
    }

    fn records() -> Vec<EventIndex> {
        vec![
            entry(
                1,
                "John",
                "Smith",
                "2024-03-01",
                FACILITY_A,
                "2024-03-02T08:00:00.000Z",
            ),
            entry(
                2,
                "Muhammad",
                "Ali",
                "2024-06-15",
                FACILITY_B,
                "2025-01-29T09:00:00.000Z",
            ),
            entry(
                3,
                "Abenaa",
                "Mensah",
                "2023-12-31",
                FACILITY_A,
                "2025-01-10T10:00:00.000Z",
            ),
            entry(
                4,
                "José",
                "García",
                "2024-01-01",
                FACILITY_B,
                "2024-12-01T11:00:00.000Z",
            ),
            entry(
                5,
                "Mary",
                "Smith",
                "2024-03-01",
                FACILITY_A,
                "2024-03-05T12:00:00.000Z",
            ),
        ]
    }

    fn request(body: Value) -> Result<SearchRequest, ErrorEnvelope> {
        let input: SearchInput = serde_json::from_value(body).unwrap();
        SearchRequest::parse(&input, &EventConfigSet::builtin())
    }

    /// The numbers of the records matching `query`, in the default order.
    fn search(query: Value) -> Vec<u128> {
        let request = request(json!({"query": query, "limit": 100})).unwrap();
        let map = hierarchy();
        let ancestors = |l: Uuid| map.get(&l).cloned().unwrap_or_default();
        let env = SearchEnv {
            now_ms: NOW_MS,
            ancestors: &ancestors,
        };
        let (page, total) = request.run(records(), &env, |_| true);
        assert_eq!(total as usize, page.len());
        page.iter().map(|e| e.id.as_u128()).collect()
    }

    fn fuzzy(term: &str) -> Value {
        json!({"data": {"child.name": {"type": "fuzzy", "term": term}}})
    }

    fn sorted(mut v: Vec<u128>) -> Vec<u128> {
        v.sort_unstable();
        v
    }

    #[test]
    fn fuzzy_finds_misspellings_transliterations_and_no_others() {
        assert_eq!(search(fuzzy("Jonh")), [1]);
        assert_eq!(search(fuzzy("Mohammed")), [2]);
        assert_eq!(search(fuzzy("Abena")), [3]);
        assert_eq!(search(fuzzy("Jose Garcia")), [4]);
        assert_eq!(search(fuzzy("josé")), [4]);
        assert_eq!(sorted(search(fuzzy("Smyth"))), [1, 5]);
        assert_eq!(search(fuzzy("Jonh Smith")), [1]);
        assert!(search(fuzzy("Peter")).is_empty());
        assert!(search(fuzzy("John Mensah")).is_empty());
    }

    #[test]
    fn exact_and_any_of_clauses() {
        assert_eq!(
            search(json!({"trackingId": {"type": "exact", "term": "T00003"}})),
            [3]
        );
        assert_eq!(
            search(
                json!({"legalStatuses.REGISTERED.registrationNumber": {"type": "exact", "term": "202500000002"}})
            ),
            [2]
        );
        assert_eq!(
            sorted(search(
                json!({"id": {"type": "anyOf", "terms": [id(1).to_string(), id(4).to_string()]}})
            )),
            [1, 4]
        );
        assert_eq!(
            sorted(search(
                json!({"data": {"child.dob": {"type": "exact", "term": "2024-03-01"}}})
            )),
            [1, 5]
        );
        assert_eq!(
            search(json!({"status": {"type": "anyOf", "terms": ["DECLARED"]}})),
            Vec::<u128>::new()
        );
        assert_eq!(
            search(
                json!({"flags": {"noneOf": ["x"]}, "trackingId": {"type": "exact", "term": "T00001"}})
            ),
            [1]
        );
    }

    #[test]
    fn range_and_time_period_on_dates() {
        let dob = |gte: &str, lte: &str| json!({"data": {"child.dob": {"type": "range", "gte": gte, "lte": lte}}});
        assert_eq!(sorted(search(dob("2024-01-01", "2024-03-01"))), [1, 4, 5]);
        assert_eq!(search(dob("2024-06-01", "2024-12-31")), [2]);
        assert_eq!(
            sorted(search(
                json!({"createdAt": {"type": "range", "gte": "2025-01-01"}})
            )),
            [2, 3]
        );
        // A bare date bound covers its whole day.
        assert_eq!(
            search(json!({"createdAt": {"type": "range", "lte": "2024-03-02"}})),
            [1]
        );
        // 2025-01-31 now: the last 7 days hold record 2 only, the last 90 days 2, 3 and 4.
        let period = |term: &str| json!({"updatedAt": {"type": "timePeriod", "term": term}});
        assert_eq!(search(period("last7Days")), [2]);
        assert_eq!(sorted(search(period("last90Days"))), [2, 3, 4]);
        assert_eq!(
            search(
                json!({"legalStatuses.REGISTERED.acceptedAt": {"type": "timePeriod", "term": "last30Days"}})
            ),
            [2, 3]
        );
        // Born within the year before 2025-01-31: not record 3 (2023-12-31) nor 4 (2024-01-01).
        assert_eq!(
            sorted(search(
                json!({"data": {"child.dob": {"type": "timePeriod", "term": "last365Days"}}})
            )),
            [1, 2, 5]
        );
    }

    #[test]
    fn within_matches_the_location_or_any_area_holding_it() {
        let within = |field: &str, n: u128| json!({field: {"type": "within", "location": id(n)}});
        assert_eq!(
            sorted(search(within("createdAtLocation", DISTRICT_A))),
            [1, 3, 5]
        );
        assert_eq!(
            sorted(search(within("createdAtLocation", DISTRICT_B))),
            [2, 4]
        );
        assert_eq!(search(within("createdAtLocation", COUNTRY)).len(), 5);
        assert_eq!(
            sorted(search(within("createdAtLocation", FACILITY_B))),
            [2, 4]
        );
        assert_eq!(
            sorted(search(within(
                "legalStatuses.DECLARED.createdAtLocation",
                DISTRICT_B
            ))),
            [2, 4]
        );
        assert_eq!(
            sorted(search(
                json!({"data": {"child.birthLocation": {"type": "within", "location": id(DISTRICT_A)}}})
            )),
            [1, 3, 5]
        );
        assert!(search(within("createdAtLocation", 999)).is_empty());
    }

    #[test]
    fn and_or_combine_clauses() {
        let query = json!({"type": "and", "clauses": [
            fuzzy("Smith"),
            {"data": {"child.dob": {"type": "range", "gte": "2024-01-01", "lte": "2024-12-31"}}},
            {"createdAtLocation": {"type": "within", "location": id(DISTRICT_A)}},
        ]});
        assert_eq!(sorted(search(query)), [1, 5]);
        let query = json!({"type": "or", "clauses": [fuzzy("Jonh"), fuzzy("Abena")]});
        assert_eq!(sorted(search(query)), [1, 3]);
    }

    #[test]
    fn pages_are_stable_and_sorted_with_ties_broken_by_id() {
        let map = hierarchy();
        let ancestors = |l: Uuid| map.get(&l).cloned().unwrap_or_default();
        let env = SearchEnv {
            now_ms: NOW_MS,
            ancestors: &ancestors,
        };
        let mut all = records();
        // Same creation time for every record: only the id orders them.
        for e in &mut all {
            e.created_at = "2024-01-01T00:00:00.000Z".into();
        }
        let page = |offset: u64| {
            let r = request(json!({"query": {"createdAtLocation": {"type": "within", "location": id(COUNTRY)}},
                "limit": 2, "offset": offset, "sort": [{"field": "createdAt", "direction": "asc"}]}))
            .unwrap();
            let (p, total) = r.run(all.clone(), &env, |_| true);
            assert_eq!(total, 5);
            p.iter().map(|e| e.id.as_u128()).collect::<Vec<_>>()
        };
        assert_eq!([page(0), page(2), page(4)].concat(), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn bad_queries_are_refused_with_the_envelope() {
        let refused = |query: Value| {
            let err = request(json!({"query": query})).unwrap_err();
            assert!(!err.message.is_empty());
            err
        };
        let err = refused(json!({"data": {"child.nope": {"type": "exact", "term": "x"}}}));
        assert!(err.message.contains("Unexpected field"), "{}", err.message);
        refused(json!({"data": {"child.name": {"type": "fuzzy"}}}));
        refused(json!({"data": {"child.name": {"type": "fuzzy", "term": "--"}}}));
        refused(json!({"data": {"child.name": {"type": "similar", "term": "x"}}}));
        refused(json!({"data": {"child.name": "John"}}));
        refused(json!({"createdAtLocation": {"type": "within", "location": "not-a-uuid"}}));
        refused(json!({"createdAtLocation": {"type": "within", "location": id(1), "x": 1}}));
        refused(json!({"createdAt": {"type": "timePeriod", "term": "last2Days"}}));
        refused(json!({"createdAt": {"type": "range"}}));
        refused(json!({"trackingId": {"type": "fuzzy", "term": "T1"}}));
        refused(json!({"nope": {"type": "exact", "term": "x"}}));
        refused(json!({"type": "xor", "clauses": [{"status": "DECLARED"}]}));
        refused(json!({"type": "and", "clauses": []}));
        refused(json!({"updatedAtLocation": {"type": "within", "location": id(1)}}));
        assert!(
            request(json!({"query": {"status": "DECLARED"}, "offset": SEARCH_WINDOW_MAX})).is_err()
        );
    }

    #[test]
    fn plans_pick_the_most_selective_lookups() {
        let plan = |query: Value| request(json!({"query": query})).unwrap().query.plan(NOW_MS);
        assert_eq!(
            plan(json!({"trackingId": {"type": "exact", "term": "T00001"}, "status": "DECLARED"})),
            Plan::Lookup(Lookup::TrackingId("T00001".into()))
        );
        let fuzzy_and_more = plan(json!({"type": "and", "clauses": [
            fuzzy("Jonh Smith"),
            {"data": {"child.dob": {"type": "range", "gte": "2024-01-01", "lte": "2024-12-31"}}},
            {"createdAtLocation": {"type": "within", "location": id(DISTRICT_A)}},
        ]}));
        assert_eq!(
            fuzzy_and_more,
            Plan::Lookup(Lookup::Fuzzy {
                field: "child.name".into(),
                tokens: vec!["jonh".into(), "smith".into()]
            })
        );
        assert_eq!(plan(json!({"status": "DECLARED"})), Plan::Scan);
        assert_eq!(
            plan(json!({"type": "or", "clauses": [fuzzy("Jonh"), {"status": "DECLARED"}]})),
            Plan::Scan
        );
        assert_eq!(
            plan(json!({"createdAt": {"type": "range", "gte": "2024-01-01T10:00:00Z"}})),
            Plan::Lookup(Lookup::Range {
                from: "d|createdAt|2024-01-01".into(),
                to: "d|createdAt|~~".into()
            })
        );
    }

    /// An index built from [`index_keys`] and answering [`Query::plan`]'s lookups finds every
    /// record the scan finds, for every clause type.
    #[test]
    fn index_keys_cover_every_planned_lookup() {
        let map = hierarchy();
        let ancestors = |l: Uuid| map.get(&l).cloned().unwrap_or_default();
        let filed: Vec<(u128, BTreeSet<String>)> = records()
            .iter()
            .map(|e| (e.id.as_u128(), index_keys(e, &ancestors)))
            .collect();
        let lookup = |l: &Lookup| -> BTreeSet<u128> {
            filed
                .iter()
                .filter(|(n, keys)| match l {
                    Lookup::Ids(ids) => ids.contains(&id(*n).to_string()),
                    Lookup::TrackingId(t) => *t == format!("T{n:05}"),
                    Lookup::Keys(ks) => ks.iter().any(|k| keys.contains(k)),
                    Lookup::Range { from, to } => keys
                        .iter()
                        .any(|k| k.as_str() >= from.as_str() && k.as_str() <= to.as_str()),
                    Lookup::Fuzzy { field, tokens } => tokens.iter().all(|t| {
                        let wanted = fuzzy::term_keys(t);
                        indexed_tokens(keys).iter().any(|v| {
                            keys.contains(&token_key(field, v))
                                && fuzzy::vocabulary_keys(v).iter().any(|k| wanted.contains(k))
                        })
                    }),
                })
                .map(|(n, _)| *n)
                .collect()
        };
        fn run(plan: &Plan, lookup: &dyn Fn(&Lookup) -> BTreeSet<u128>) -> Option<BTreeSet<u128>> {
            match plan {
                Plan::Scan => None,
                Plan::Lookup(l) => Some(lookup(l)),
                Plan::And(ps) => ps
                    .iter()
                    .filter_map(|p| run(p, lookup))
                    .reduce(|a, b| &a & &b),
                Plan::Or(ps) => ps
                    .iter()
                    .map(|p| run(p, lookup))
                    .collect::<Option<Vec<_>>>()
                    .map(|sets| sets.into_iter().flatten().collect()),
            }
        }
        let queries = [
            fuzzy("Jonh"),
            fuzzy("Mohammed"),
            fuzzy("Jose Garcia"),
            fuzzy("Smyth"),
            json!({"trackingId": {"type": "exact", "term": "T00003"}}),
            json!({"legalStatuses.REGISTERED.registrationNumber": {"type": "exact", "term": "202500000002"}}),
            json!({"createdAtLocation": {"type": "within", "location": id(DISTRICT_A)}}),
            json!({"legalStatuses.REGISTERED.createdAtLocation": {"type": "within", "location": id(COUNTRY)}}),
            json!({"data": {"child.birthLocation": {"type": "within", "location": id(DISTRICT_B)}}}),
            json!({"data": {"child.dob": {"type": "range", "gte": "2024-01-01", "lte": "2024-03-01"}}}),
            json!({"updatedAt": {"type": "timePeriod", "term": "last90Days"}}),
            json!({"legalStatuses.DECLARED.acceptedAt": {"type": "exact", "term": "2024-03-02"}}),
            json!({"type": "or", "clauses": [fuzzy("Jonh"), {"createdAt": {"type": "range", "lte": "2024-12-31"}}]}),
        ];
        for query in queries {
            let plan = request(json!({"query": query})).unwrap().query.plan(NOW_MS);
            let candidates = run(&plan, &lookup).expect("indexable");
            let found: BTreeSet<u128> = search(query.clone()).into_iter().collect();
            assert!(!found.is_empty(), "{query}");
            assert!(
                found.is_subset(&candidates),
                "{query}: {found:?} not in {candidates:?}"
            );
        }
    }
}
