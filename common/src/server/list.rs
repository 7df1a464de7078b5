//! Listing records (OpenCRVS "list events": `GET /events`, tRPC `event.list`) the same way at
//! node and central: the query and its checks, the jurisdiction of a person (the records their
//! `record.search` scopes reach), the filters (status, flags, location, assignee, type), the
//! page, and secured fields removed. Each server reads its own index entries and audits the
//! listing in its own store.

use std::collections::HashMap;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::actions::Acting;
use super::{ApiError, Caller};
use crate::access::{UserFacts, grants, index_facts};
use crate::config::EventConfigSet;
use crate::event::UserType;
use crate::limits::SEARCH_LIMIT_MAX;
use crate::scope::ScopeSet;
use crate::state::EventIndex;

/// Default page of a listing.
pub const LIST_PAGE_DEFAULT: u32 = 20;

/// The statuses a listing may filter by.
const STATUSES: [&str; 5] = ["CREATED", "NOTIFIED", "DECLARED", "REGISTERED", "ARCHIVED"];

/// A page of index entries and how many matched in all (search and list answers).
#[derive(Debug, Serialize)]
pub struct SearchOutput {
    /// The page.
    pub results: Vec<EventIndex>,
    /// Matches in all.
    pub total: u64,
}

/// Filters and paging of `GET /events` (tRPC `event.list` passes them as JSON).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    /// Comma-separated statuses (any of them).
    status: Option<String>,
    /// Comma-separated flags (all of them).
    flags: Option<String>,
    /// Where the record was created or its event took place (a location id).
    location: Option<Uuid>,
    /// The assignee's user id, or `me`.
    assigned_to: Option<String>,
    /// Event type.
    #[serde(rename = "type")]
    event_type: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

/// A checked [`ListQuery`] for one caller.
#[derive(Debug)]
pub struct ListFilter {
    statuses: Option<Vec<String>>,
    flags: Vec<String>,
    location: Option<Uuid>,
    assignee: Option<String>,
    event_type: Option<String>,
    limit: usize,
    offset: usize,
}

impl ListQuery {
    /// The query of a `GET /events` request of `caller`: the scope kind first (403), then the
    /// query string's shape (400).
    pub fn from_request(
        caller: &Caller,
        query: Result<Query<Self>, QueryRejection>,
    ) -> Result<Self, ApiError> {
        caller.require_kind("record.search")?;
        let Query(query) =
            query.map_err(|e| ApiError::input_one("invalid_type", e.body_text(), &["query"]))?;
        Ok(query)
    }

    /// The query of a tRPC `event.list` call (`null` is no filter).
    pub fn from_trpc(input: Value) -> Result<Self, ApiError> {
        serde_json::from_value(if input.is_null() { json!({}) } else { input })
            .map_err(|e| ApiError::input_one("invalid_type", e.to_string(), &[]))
    }

    /// Checks the query for `caller` (`assignedTo=me` is the caller): the scope kind (403),
    /// the limit and statuses (400).
    pub fn check(&self, caller: &Caller) -> Result<ListFilter, ApiError> {
        caller.require_kind("record.search")?;
        let limit = self.limit.unwrap_or(LIST_PAGE_DEFAULT);
        if limit == 0 || u64::from(limit) > SEARCH_LIMIT_MAX {
            return Err(ApiError::input_one(
                "too_big",
                format!("limit must be between 1 and {SEARCH_LIMIT_MAX}"),
                &["limit"],
            ));
        }
        let statuses: Option<Vec<String>> = self
            .status
            .as_deref()
            .map(|s| s.split(',').map(|x| x.trim().to_uppercase()).collect());
        if let Some(bad) = statuses
            .iter()
            .flatten()
            .find(|s| !STATUSES.contains(&s.as_str()))
        {
            return Err(ApiError::input_one(
                "invalid_enum_value",
                format!("Invalid status '{bad}'"),
                &["status"],
            ));
        }
        let flags = self
            .flags
            .as_deref()
            .map(|s| {
                s.split(',')
                    .map(|x| x.trim().to_owned())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let assignee = match self.assigned_to.as_deref() {
            Some("me") => Some(caller.id.clone()),
            other => other.map(str::to_owned),
        };
        Ok(ListFilter {
            statuses,
            flags,
            location: self.location,
            assignee,
            event_type: self.event_type.clone(),
            limit: limit as usize,
            offset: self.offset.unwrap_or(0) as usize,
        })
    }

    /// The query as an audit row's detail.
    pub fn describe(&self) -> String {
        json!({
            "list": {
                "status": self.status, "flags": self.flags, "location": self.location,
                "assignedTo": self.assigned_to, "type": self.event_type,
                "limit": self.limit, "offset": self.offset,
            }
        })
        .to_string()
    }
}

impl ListFilter {
    fn matches(&self, e: &EventIndex) -> bool {
        self.event_type.as_deref().is_none_or(|t| e.event_type == t)
            && self
                .statuses
                .as_ref()
                .is_none_or(|list| list.iter().any(|s| s == e.status.as_str()))
            && self.flags.iter().all(|f| e.flags.contains(f))
            && self
                .assignee
                .as_ref()
                .is_none_or(|a| e.assigned_to.as_ref() == Some(a))
            && self.location.is_none_or(|loc| {
                e.created_at_location == Some(loc)
                    || e.declaration
                        .values()
                        .any(|v| v.as_str() == Some(&loc.to_string()))
            })
    }

    /// The page of `entries` (newest first, as read) the caller's scopes allow and the filters
    /// keep, secured fields removed, and how many matched in all.
    pub fn page(
        &self,
        entries: Vec<EventIndex>,
        scopes: &ScopeSet,
        events: &EventConfigSet,
    ) -> SearchOutput {
        let matching: Vec<EventIndex> = entries
            .into_iter()
            .filter(|e| scopes.allows("record.search", &e.event_type))
            .filter(|e| self.matches(e))
            .collect();
        let total = matching.len() as u64;
        let mut results: Vec<EventIndex> = matching
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect();
        remove_secured(&mut results, events);
        SearchOutput { results, total }
    }
}

/// Secured fields never leave through search or listing (OpenCRVS `removeSecuredFields`), nor
/// do their conflicting values.
pub fn remove_secured(results: &mut [EventIndex], events: &EventConfigSet) {
    for e in results {
        if let Some(config) = events.get(&e.event_type) {
            for field in config.secured_field_ids() {
                e.declaration.remove(field);
                e.conflicts.retain(|c| c.field != field);
            }
        }
    }
}

/// The records a person may search: those their `record.search` scopes' jurisdiction options
/// reach, judged from each record's index.
#[derive(Debug, Clone)]
pub struct Jurisdiction {
    place_fields: HashMap<String, Option<String>>,
    user: UserFacts,
    scopes: ScopeSet,
}

impl Jurisdiction {
    /// The jurisdiction of `acting`; `None` for a system client (its scopes' event types are
    /// checked on their own).
    pub fn of(events: &EventConfigSet, acting: &Acting, scopes: &ScopeSet) -> Option<Self> {
        (acting.actor.user_type == UserType::User).then(|| Self {
            place_fields: events
                .events()
                .iter()
                .map(|c| {
                    (
                        c.id().to_owned(),
                        c.place_of_event_field().map(|f| f.id.clone()),
                    )
                })
                .collect(),
            user: acting.facts.clone(),
            scopes: scopes.clone(),
        })
    }

    /// Whether the person may search `e`; `areas_of` gives the areas holding a location.
    pub fn allows(&self, e: &EventIndex, areas_of: impl FnMut(Uuid) -> Vec<Uuid>) -> bool {
        let place_field = self.place_fields.get(&e.event_type).cloned().flatten();
        let facts = index_facts(e, place_field.as_deref(), areas_of);
        grants(&self.scopes, &["record.search"], None, &self.user, &facts)
    }

    /// The entries within the jurisdiction; `areas_of` (a location's place in the area
    /// hierarchy) is asked once per location.
    pub fn filter(
        &self,
        entries: Vec<EventIndex>,
        mut areas_of: impl FnMut(Uuid) -> Vec<Uuid>,
    ) -> Vec<EventIndex> {
        let mut areas: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        entries
            .into_iter()
            .filter(|e| {
                self.allows(e, |location| {
                    areas
                        .entry(location)
                        .or_insert_with(|| areas_of(location))
                        .clone()
                })
            })
            .collect()
    }
}
