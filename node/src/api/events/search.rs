//! `POST /events/search` over the node's own records: OpenCRVS's query shape (§2.5) with the
//! clause types a clinic needs offline (tracking id, id, type, status, flags, dates, creator and
//! exact/anyOf on any declaration field). Fuzzy, within-location and registration-number search
//! belong to central's index; here they are refused with a clear 400, never silently ignored.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use crvs_common::limits::{SEARCH_CLAUSES_MAX, SEARCH_LIMIT_DEFAULT, SEARCH_LIMIT_MAX};
use crvs_common::state::EventIndex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::{ApiError, AppState, Caller, body};

/// Search body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchInput {
    /// The query (an object, or the same as a JSON string).
    query: Value,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    sort: Option<Vec<SortInput>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SortInput {
    field: String,
    #[serde(default)]
    direction: Option<String>,
}

/// Search answer.
#[derive(Debug, Serialize)]
pub(crate) struct SearchOutput {
    results: Vec<EventIndex>,
    total: u64,
}

#[derive(Debug)]
enum Query {
    And(Vec<Self>),
    Or(Vec<Self>),
    /// All conditions of one expression object must hold.
    Expr(Vec<Cond>),
}

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

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::input_one("custom", message, &["query"])
}

fn unsupported(what: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Search clause '{what}' is not supported at a node; it is answered by central's national search"
    ))
}

struct Parser<'a> {
    clauses: usize,
    state: &'a AppState,
}

impl Parser<'_> {
    fn query(&mut self, v: &Value, depth: usize) -> Result<Query, ApiError> {
        if depth > 8 {
            return Err(bad("Query nests too deeply"));
        }
        let obj = v.as_object().ok_or_else(|| bad("Expected an object"))?;
        if obj.contains_key("clauses") {
            let kind = obj
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("Query type must be 'and' or 'or'"))?;
            if let Some(k) = obj.keys().find(|k| *k != "type" && *k != "clauses") {
                return Err(ApiError::input_one(
                    "unrecognized_keys",
                    format!("Unrecognized key(s) in object: '{k}'"),
                    &["query"],
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
                "and" => Ok(Query::And(parsed)),
                "or" => Ok(Query::Or(parsed)),
                _ => Err(bad("Query type must be 'and' or 'or'")),
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
        Ok(Query::Expr(conds))
    }

    fn expression(&mut self, key: &str, v: &Value) -> Result<Vec<Cond>, ApiError> {
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
                let list = |k: &str| -> Result<Vec<String>, ApiError> {
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
                        .state
                        .config
                        .events
                        .events()
                        .iter()
                        .any(|e| e.field(field).is_some());
                    if !known {
                        let issue =
                            serde_json::json!([{"message": "Unexpected field", "id": field}]);
                        return Err(ApiError::bad_request(issue.to_string()));
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
            "updatedAtLocation"
            | "legalStatuses.DECLARED.createdAtLocation"
            | "legalStatuses.REGISTERED.createdAtLocation"
            | "legalStatuses.REGISTERED.registrationNumber"
            | "legalStatuses.REGISTERED.acceptedAt"
            | "legalStatuses.DECLARED.createdByRole"
            | "legalStatuses.REGISTERED.createdByRole"
            | "updatedBy"
            | "updatedByUserRole" => return Err(unsupported(key)),
            other => {
                return Err(ApiError::input_one(
                    "unrecognized_keys",
                    format!("Unrecognized key(s) in object: '{other}'"),
                    &["query"],
                ));
            }
        }])
    }
}

fn terms(v: &Value, key: &str) -> Result<Terms, ApiError> {
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

fn date_match(v: &Value, key: &str) -> Result<DateMatch, ApiError> {
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

impl Query {
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
                    crvs_common::event::UserType::User => "user",
                    crvs_common::event::UserType::System => "system",
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
        }
    }
}

/// `POST /events/search`.
pub(crate) async fn search(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<SearchOutput>, ApiError> {
    caller.require_kind("record.search")?;
    let input: SearchInput = body::json(body)?;
    let query_value = match &input.query {
        Value::String(s) => serde_json::from_str(s).map_err(|_| bad("query is not valid JSON"))?,
        other => other.clone(),
    };
    let mut parser = Parser {
        clauses: 0,
        state: &state,
    };
    let query = parser.query(&query_value, 0)?;
    let limit = input.limit.unwrap_or(SEARCH_LIMIT_DEFAULT);
    if limit == 0 || limit > SEARCH_LIMIT_MAX {
        return Err(ApiError::input_one(
            "too_big",
            format!("limit must be 1 to {SEARCH_LIMIT_MAX}"),
            &["limit"],
        ));
    }
    let offset = input.offset.unwrap_or(0);
    let mut sort_desc = true;
    let mut sort_field = "createdAt".to_owned();
    if let Some(sort) = input.sort.as_ref().and_then(|s| s.first()) {
        if !matches!(
            sort.field.as_str(),
            "createdAt" | "updatedAt" | "trackingId"
        ) {
            return Err(ApiError::input_one(
                "custom",
                format!("Cannot sort by '{}'", sort.field),
                &["sort"],
            ));
        }
        sort_field = sort.field.clone();
        sort_desc = match sort.direction.as_deref() {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(_) => {
                return Err(ApiError::input_one(
                    "invalid_enum_value",
                    "direction must be asc or desc",
                    &["sort"],
                ));
            }
        };
    }
    let prefilter = query.required_tracking_id().map(str::to_owned);
    let entries = state
        .store
        .read(move |r| r.index_entries(prefilter.as_deref()))
        .await?;
    let mut hits: Vec<EventIndex> = entries
        .into_iter()
        .filter(|e| caller.scopes.allows("record.search", &e.event_type))
        .filter(|e| query.matches(e))
        .collect();
    let key = |e: &EventIndex| match sort_field.as_str() {
        "updatedAt" => e.updated_at.clone(),
        "trackingId" => e.tracking_id.clone(),
        _ => e.created_at.clone(),
    };
    hits.sort_by(|a, b| {
        let ord = key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id));
        if sort_desc { ord.reverse() } else { ord }
    });
    let total = hits.len() as u64;
    let mut results: Vec<EventIndex> = hits
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .collect();
    // Secured fields never leave through search (OpenCRVS `removeSecuredFields`).
    for e in &mut results {
        if let Some(config) = state.config.events.get(&e.event_type) {
            for field in config.secured_field_ids() {
                e.declaration.remove(field);
            }
        }
    }
    Ok(axum::Json(SearchOutput { results, total }))
}
