//! `POST /events/search` over the node's own records, using the shared query evaluator
//! (`crvs_common::search`): fuzzy, within-location and time-period clauses belong to central's
//! national index and are refused here with a clear 400.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use std::collections::HashMap;

use crvs_common::access::{grants, index_facts};
use crvs_common::event::UserType;
use crvs_common::search::{SearchInput, SearchRequest};
use crvs_common::state::EventIndex;
use serde::Serialize;
use uuid::Uuid;

use super::super::{ApiError, AppState, Caller, body};

/// Search answer.
#[derive(Debug, Serialize)]
pub(crate) struct SearchOutput {
    results: Vec<EventIndex>,
    total: u64,
}

/// `POST /events/search`.
pub(crate) async fn search(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<SearchOutput>, ApiError> {
    caller.require_kind("record.search")?;
    let raw = body::bytes(body)?;
    let input: SearchInput = body::parse(&raw)?;
    let request =
        SearchRequest::parse(&input, &state.config.events).map_err(ApiError::from_envelope)?;
    let acting = super::actions::acting(&state, &caller).await?;
    let prefilter = request.query.required_tracking_id().map(str::to_owned);
    // A person sees only records of their jurisdiction (the options of their record.search
    // scopes); the check needs each record's place in the area hierarchy, looked up once per
    // location.
    let jurisdiction = (acting.actor.user_type == UserType::User).then(|| {
        let place_fields: HashMap<String, Option<String>> = state
            .config
            .events
            .events()
            .iter()
            .map(|c| {
                (
                    c.id().to_owned(),
                    c.place_of_event_field().map(|f| f.id.clone()),
                )
            })
            .collect();
        (place_fields, acting.facts.clone(), caller.scopes.clone())
    });
    let entries = state
        .store
        .read(move |r| {
            let entries = r.index_entries(prefilter.as_deref())?;
            let Some((place_fields, user, scopes)) = jurisdiction else {
                return Ok(entries);
            };
            let mut areas: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
            Ok(entries
                .into_iter()
                .filter(|e| {
                    let place_field = place_fields.get(&e.event_type).cloned().flatten();
                    let facts = index_facts(e, place_field.as_deref(), |location| {
                        areas
                            .entry(location)
                            .or_insert_with(|| r.area_chain(location).unwrap_or_default())
                            .clone()
                    });
                    grants(&scopes, &["record.search"], None, &user, &facts)
                })
                .collect())
        })
        .await?;
    let (mut results, total) = request.run(entries, |e| {
        caller.scopes.allows("record.search", &e.event_type)
    });
    // Every search is audited: who, where, and the query.
    let audit = super::actions::audit_entry(
        &acting.actor,
        "record.search",
        None,
        Some(String::from_utf8_lossy(&raw).into_owned()),
    );
    state.store.write(move |ctx| ctx.audit(&audit)).await?;
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
