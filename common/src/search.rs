//! OpenCRVS's search query (`POST /events/search`, §2.5) parsed and evaluated over derived index
//! entries: pure, shared by node and central. Clauses: and/or nesting; `id`, `eventType`,
//! `status`, `trackingId`, `createdBy`, `createdByUserType`, `assignedTo`, `createdAtLocation`
//! (exact/anyOf); `createdAt`/`updatedAt` (exact/range); `flags` (anyOf/noneOf/allOf); `data`
//! by field id (exact/anyOf); `legalStatuses.{DECLARED,REGISTERED}.{createdAtLocation,
//! createdByRole}` and `legalStatuses.REGISTERED.registrationNumber` (exact/anyOf),
//! `legalStatuses.*.acceptedAt` (exact/range). Fuzzy, within-location and time-period clauses
//! are refused with a clear 400 until the national index answers them, never silently ignored.

use serde::Deserialize;
use serde_json::Value;

use crate::config::EventConfigSet;
use crate::error::{ErrorCode, ErrorEnvelope, Issue};
use crate::limits::{SEARCH_CLAUSES_MAX, SEARCH_LIMIT_DEFAULT, SEARCH_LIMIT_MAX};
use crate::state::EventIndex;

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
        let mut request = Self {
            query,
            limit,
            offset: input.offset.unwrap_or(0),
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
        entries: Vec<EventIndex>,
        visible: impl Fn(&EventIndex) -> bool,
    ) -> (Vec<EventIndex>, u64) {
        let mut hits: Vec<EventIndex> = entries
            .into_iter()
            .filter(|e| visible(e) && self.query.matches(e))
            .collect();
        let key = |e: &EventIndex| match self.sort_field {
            SortField::CreatedAt => e.created_at.clone(),
            SortField::UpdatedAt => e.updated_at.clone(),
            SortField::TrackingId => e.tracking_id.clone(),
        };
        hits.sort_by(|a, b| {
            let ord = key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id));
            if self.descending { ord.reverse() } else { ord }
        });
        let total = hits.len() as u64;
        let page = hits
            .into_iter()
            .skip(self.offset as usize)
            .take(self.limit as usize)
            .collect();
        (page, total)
    }
}

/// A parsed query.
#[derive(Debug)]
pub struct Query(QueryNode);

impl Query {
    /// Whether an index entry matches.
    pub fn matches(&self, e: &EventIndex) -> bool {
        self.0.matches(e)
    }

    /// A tracking id every match must have (lets a store narrow its scan).
    pub fn required_tracking_id(&self) -> Option<&str> {
        self.0.required_tracking_id()
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
    CreatedAt(DateMatch),
    UpdatedAt(DateMatch),
    Flags {
        any_of: Vec<String>,
        none_of: Vec<String>,
        all_of: Vec<String>,
    },
    Data(String, Terms),
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
}

fn bad(message: impl Into<String>) -> ErrorEnvelope {
    input_issue("custom", message, "query")
}

fn unsupported(what: &str) -> ErrorEnvelope {
    ErrorEnvelope::new(
        ErrorCode::BadRequest,
        format!(
            "Search clause '{what}' is not supported at a node; it is answered by central's national search"
        ),
    )
}

struct Parser<'a> {
    clauses: usize,
    events: &'a EventConfigSet,
}

impl Parser<'_> {
    fn query(&mut self, v: &Value, depth: usize) -> Result<QueryNode, ErrorEnvelope> {
        if depth > 8 {
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
                if v.get("type").and_then(Value::as_str) == Some("within") {
                    return Err(unsupported("createdAtLocation within"));
                }
                Cond::CreatedAtLocation(terms(v, key)?)
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
                    match clause.get("type").and_then(Value::as_str) {
                        Some("exact" | "anyOf") => {
                            out.push(Cond::Data(field.clone(), terms(clause, field)?))
                        }
                        Some(other @ ("fuzzy" | "range" | "within" | "timePeriod")) => {
                            return Err(unsupported(other));
                        }
                        _ => {
                            return Err(bad(format!(
                                "Unknown clause type for data field '{field}'"
                            )));
                        }
                    }
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
                if v.get("type").and_then(Value::as_str) == Some("within") {
                    return Err(unsupported("within"));
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
        Some(other @ ("fuzzy" | "range" | "within" | "timePeriod")) => Err(unsupported(other)),
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
        Some("timePeriod") => Err(unsupported("timePeriod")),
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

fn date_matches(value: &str, m: &DateMatch) -> bool {
    match m {
        DateMatch::Exact(t) => value == t || value.starts_with(t.as_str()),
        DateMatch::Range { gte, lte } => {
            // ISO timestamps compare as strings; a bare date bound covers its whole day.
            gte.as_ref().is_none_or(|g| value >= g.as_str())
                && lte
                    .as_ref()
                    .is_none_or(|l| value <= l.as_str() || value.starts_with(l.as_str()))
        }
    }
}

impl QueryNode {
    fn matches(&self, e: &EventIndex) -> bool {
        match self {
            Self::And(qs) => qs.iter().all(|q| q.matches(e)),
            Self::Or(qs) => qs.iter().any(|q| q.matches(e)),
            Self::Expr(conds) => conds.iter().all(|c| c.matches(e)),
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

impl Cond {
    fn matches(&self, e: &EventIndex) -> bool {
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
            Self::CreatedAt(m) => date_matches(&e.created_at, m),
            Self::UpdatedAt(m) => date_matches(&e.updated_at, m),
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
                legal(e, *registered).is_some_and(|l| date_matches(&l.accepted_at, date))
            }
        }
    }
}
