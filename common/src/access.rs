//! Who may act on which record: OpenCRVS's record scopes with their jurisdiction options
//! (`event`, `placeOfEvent`, `declaredIn`, `declaredBy`, `registeredIn`, `registeredBy`,
//! `customActionTypes`) evaluated against facts about the user and the record. Pure: the shells
//! look the facts up (locations, the record's actions) and ask.

use uuid::Uuid;

use crate::event::{ActionDocument, ActionStatus, ActionType};
use crate::scope::{Scope, ScopeSet};

/// Where something happened: a location and the administrative areas holding it, nearest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    /// The location (facility or office).
    pub location: Option<Uuid>,
    /// Its administrative area, that area's parent, and so on up to the country.
    pub areas: Vec<Uuid>,
}

/// Who did an action, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Act {
    /// User (or client) id.
    pub by: String,
    /// Where.
    pub at: Place,
}

/// The acting user: id and primary office (with the office's areas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFacts {
    /// User id.
    pub id: String,
    /// The primary office and its areas.
    pub office: Place,
}

/// What jurisdiction options are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFacts {
    /// Event type (`birth`, `death`).
    pub event_type: String,
    /// The place of the event (for birth, the birth facility; else where it was created).
    pub place: Place,
    /// The last declaration (DECLARE, or NOTIFY for an incomplete one).
    pub declared: Option<Act>,
    /// The registration, if any (Requested counts: it was made there).
    pub registered: Option<Act>,
}

/// A `placeOfEvent`/`declaredIn`/`registeredIn` value: `location` (the user's office itself),
/// `administrativeArea` (within the area holding the user's office) or `all`.
fn within(option: &str, place: &Place, office: &Place) -> bool {
    match option {
        "all" => true,
        "location" => place.location.is_some() && place.location == office.location,
        "administrativeArea" => office
            .areas
            .first()
            .is_some_and(|area| place.areas.contains(area)),
        _ => false,
    }
}

/// Every value of `name` in `scope` must hold for the record (an absent option is "all").
/// A scope lists one value per option in practice; several mean any of them.
fn option_holds(scope: &Scope, name: &str, mut check: impl FnMut(&str) -> bool) -> bool {
    match scope.option(name) {
        None => true,
        Some(values) => values.iter().any(|v| check(v)),
    }
}

/// Whether one scope grants `kind` on this record to this user.
pub fn scope_grants(
    scope: &Scope,
    kind: &str,
    custom_action: Option<&str>,
    user: &UserFacts,
    record: &RecordFacts,
) -> bool {
    if scope.kind() != kind || !scope.covers_event(&record.event_type) {
        return false;
    }
    let custom_ok = match custom_action {
        Some(custom) => scope
            .option("customActionTypes")
            .is_some_and(|types| types.iter().any(|t| t == custom)),
        None => true,
    };
    custom_ok
        && option_holds(scope, "placeOfEvent", |v| {
            within(v, &record.place, &user.office)
        })
        && option_holds(scope, "declaredIn", |v| {
            record
                .declared
                .as_ref()
                .is_some_and(|d| within(v, &d.at, &user.office))
        })
        && option_holds(scope, "declaredBy", |v| {
            v == "user" && record.declared.as_ref().is_some_and(|d| d.by == user.id)
        })
        && option_holds(scope, "registeredIn", |v| {
            record
                .registered
                .as_ref()
                .is_some_and(|r| within(v, &r.at, &user.office))
        })
        && option_holds(scope, "registeredBy", |v| {
            v == "user" && record.registered.as_ref().is_some_and(|r| r.by == user.id)
        })
}

/// Whether any scope of any of `kinds` grants the action.
pub fn grants(
    scopes: &ScopeSet,
    kinds: &[&str],
    custom_action: Option<&str>,
    user: &UserFacts,
    record: &RecordFacts,
) -> bool {
    scopes.scopes().iter().any(|scope| {
        kinds
            .iter()
            .any(|kind| scope_grants(scope, kind, custom_action, user, record))
    })
}

/// OpenCRVS's `ACTION_SCOPE_MAP`: the scope kinds that allow an action type (any one of them).
/// Empty: always allowed (ASSIGN, UNASSIGN of oneself).
pub fn scope_kinds_for(action: ActionType) -> &'static [&'static str] {
    match action {
        ActionType::Read => &["record.read"],
        ActionType::Create => &["record.create"],
        ActionType::Notify => &["record.notify"],
        ActionType::Declare => &["record.declare", "record.register"],
        ActionType::Edit => &["record.edit"],
        ActionType::Register => &["record.register"],
        ActionType::PrintCertificate => &["record.print-certified-copies"],
        ActionType::RequestCorrection => &["record.request-correction", "record.correct"],
        ActionType::ApproveCorrection | ActionType::RejectCorrection => &["record.correct"],
        ActionType::Archive => &["record.archive"],
        ActionType::Reject => &["record.reject"],
        ActionType::MarkAsDuplicate | ActionType::MarkAsNotDuplicate => {
            &["record.review-duplicates"]
        }
        ActionType::Custom | ActionType::Validate => &["record.custom-action"],
        ActionType::Delete => &["record.declare", "record.create"],
        ActionType::Assign | ActionType::Unassign | ActionType::DuplicateDetected => &[],
    }
}

/// Who did something and where, before the place is resolved into its areas.
type RawAct = Option<(String, Option<Uuid>)>;

/// Builds the facts, placing each location in its areas with `areas_of`.
fn facts(
    event_type: &str,
    place: Option<Uuid>,
    declared: RawAct,
    registered: RawAct,
    mut areas_of: impl FnMut(Uuid) -> Vec<Uuid>,
) -> RecordFacts {
    let mut place_at = |location: Option<Uuid>| Place {
        location,
        areas: location.map(&mut areas_of).unwrap_or_default(),
    };
    let mut act = |raw: RawAct| {
        raw.map(|(by, at)| Act {
            by,
            at: place_at(at),
        })
    };
    let declared = act(declared);
    let registered = act(registered);
    RecordFacts {
        event_type: event_type.to_owned(),
        place: place_at(place),
        declared,
        registered,
    }
}

/// The facts of a record from its actions, given a way to place a location in its areas.
/// "Declared" is the last DECLARE (Requested or Accepted); "registered" the last Accepted
/// REGISTER (as OpenCRVS's legal status: a requested registration is not one yet).
pub fn record_facts(
    event_type: &str,
    actions: &[ActionDocument],
    place_of_event: Option<Uuid>,
    areas_of: impl FnMut(Uuid) -> Vec<Uuid>,
) -> RecordFacts {
    let created_at = actions
        .iter()
        .find(|a| a.action_type == ActionType::Create)
        .and_then(|a| a.created_at_location);
    let last = |t: ActionType, accepted_only: bool| {
        actions
            .iter()
            .rev()
            .find(|a| {
                a.action_type == t
                    && if accepted_only {
                        a.status == ActionStatus::Accepted
                    } else {
                        a.status != ActionStatus::Rejected
                    }
            })
            .map(|a| (a.created_by.clone(), a.created_at_location))
    };
    facts(
        event_type,
        place_of_event.or(created_at),
        last(ActionType::Declare, false),
        last(ActionType::Register, true),
        areas_of,
    )
}

/// The same facts from a record's index (what search scans): the place of the event is the
/// value of `place_field` in the declaration when it names a location, else where the record
/// was created; declared and registered come from its legal statuses.
pub fn index_facts(
    index: &crate::state::EventIndex,
    place_field: Option<&str>,
    areas_of: impl FnMut(Uuid) -> Vec<Uuid>,
) -> RecordFacts {
    let place = place_field
        .and_then(|f| index.declaration.get(f))
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok())
        .or(index.created_at_location);
    let act = |status: &Option<crate::state::LegalStatus>| {
        status
            .as_ref()
            .map(|s| (s.created_by.clone(), s.created_at_location))
    };
    facts(
        &index.event_type,
        place,
        act(&index.legal_statuses.declared),
        act(&index.legal_statuses.registered),
        areas_of,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFICE: u128 = 1;
    const HOSPITAL: u128 = 2;
    const ELSEWHERE: u128 = 3;
    const DISTRICT: u128 = 10;
    const OTHER_DISTRICT: u128 = 11;
    const PROVINCE: u128 = 20;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn place(location: u128, areas: &[u128]) -> Place {
        Place {
            location: Some(id(location)),
            areas: areas.iter().map(|a| id(*a)).collect(),
        }
    }

    fn user() -> UserFacts {
        UserFacts {
            id: "me".into(),
            office: place(OFFICE, &[DISTRICT, PROVINCE]),
        }
    }

    fn record(at: Place, declared_by: Option<&str>) -> RecordFacts {
        RecordFacts {
            event_type: "birth".into(),
            place: at.clone(),
            declared: declared_by.map(|by| Act {
                by: by.into(),
                at: at.clone(),
            }),
            registered: None,
        }
    }

    fn scope(s: &str) -> ScopeSet {
        ScopeSet::parse_all(&[s]).unwrap()
    }

    #[test]
    fn jurisdiction_options_table() {
        let at_office = place(OFFICE, &[DISTRICT, PROVINCE]);
        let in_district = place(HOSPITAL, &[DISTRICT, PROVINCE]);
        let elsewhere = place(ELSEWHERE, &[OTHER_DISTRICT, PROVINCE]);
        let cases: &[(&str, &str, &Place, Option<&str>, bool)] = &[
            ("type=record.read", "record.read", &elsewhere, None, true),
            (
                "type=record.read&event=death",
                "record.read",
                &at_office,
                None,
                false,
            ),
            (
                "type=record.read&placeOfEvent=all",
                "record.read",
                &elsewhere,
                None,
                true,
            ),
            (
                "type=record.read&placeOfEvent=location",
                "record.read",
                &at_office,
                None,
                true,
            ),
            (
                "type=record.read&placeOfEvent=location",
                "record.read",
                &in_district,
                None,
                false,
            ),
            (
                "type=record.read&placeOfEvent=administrativeArea",
                "record.read",
                &in_district,
                None,
                true,
            ),
            (
                "type=record.read&placeOfEvent=administrativeArea",
                "record.read",
                &elsewhere,
                None,
                false,
            ),
            (
                "type=record.edit&placeOfEvent=location&declaredBy=user",
                "record.edit",
                &at_office,
                Some("me"),
                true,
            ),
            (
                "type=record.edit&placeOfEvent=location&declaredBy=user",
                "record.edit",
                &at_office,
                Some("other"),
                false,
            ),
            (
                "type=record.archive&declaredIn=administrativeArea",
                "record.archive",
                &in_district,
                Some("x"),
                true,
            ),
            (
                "type=record.archive&declaredIn=administrativeArea",
                "record.archive",
                &elsewhere,
                Some("x"),
                false,
            ),
            (
                "type=record.archive&declaredIn=administrativeArea",
                "record.archive",
                &in_district,
                None,
                false,
            ),
            (
                "type=record.read",
                "record.declare",
                &at_office,
                None,
                false,
            ),
        ];
        for (s, kind, at, declared_by, expected) in cases {
            let granted = grants(
                &scope(s),
                &[kind],
                None,
                &user(),
                &record((*at).clone(), *declared_by),
            );
            assert_eq!(
                granted, *expected,
                "{s} for {kind} at {at:?} declared by {declared_by:?}"
            );
        }
    }

    #[test]
    fn custom_actions_need_their_type_listed() {
        let s = scope(
            "type=record.custom-action&event=birth&customActionTypes=VALIDATE_DECLARATION,ESCALATE",
        );
        let r = record(place(OFFICE, &[DISTRICT]), None);
        let kinds = scope_kinds_for(ActionType::Custom);
        assert!(grants(&s, kinds, Some("VALIDATE_DECLARATION"), &user(), &r));
        assert!(grants(&s, kinds, Some("ESCALATE"), &user(), &r));
        assert!(!grants(&s, kinds, Some("REVOKE_REGISTRATION"), &user(), &r));
    }

    #[test]
    fn facts_come_from_the_actions() {
        use crate::event::{ActionDocument, UserType};
        let action = |t: ActionType, status: ActionStatus, by: &str, at: u128| ActionDocument {
            id: Uuid::new_v4(),
            action_type: t,
            transaction_id: "t".into(),
            status,
            created_by: by.into(),
            created_by_user_type: UserType::User,
            created_by_role: None,
            created_at_location: Some(id(at)),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            declaration: None,
            annotation: None,
            original_action_id: None,
            content: None,
            registration_number: None,
            request_id: None,
            assigned_to: None,
            custom_action_type: None,
        };
        let actions = vec![
            action(
                ActionType::Create,
                ActionStatus::Accepted,
                "clerk",
                HOSPITAL,
            ),
            action(
                ActionType::Declare,
                ActionStatus::Accepted,
                "clerk",
                HOSPITAL,
            ),
            action(
                ActionType::Register,
                ActionStatus::Accepted,
                "registrar",
                OFFICE,
            ),
        ];
        let requested_only = [
            actions[0].clone(),
            action(
                ActionType::Register,
                ActionStatus::Requested,
                "registrar",
                OFFICE,
            ),
        ];
        let facts = record_facts("birth", &requested_only, None, |_| Vec::new());
        assert!(
            facts.registered.is_none(),
            "a requested registration is not one yet"
        );
        let areas = |l: Uuid| {
            if l == id(ELSEWHERE) {
                vec![id(OTHER_DISTRICT)]
            } else {
                vec![id(DISTRICT), id(PROVINCE)]
            }
        };
        let facts = record_facts("birth", &actions, None, areas);
        assert_eq!(facts.place, place(HOSPITAL, &[DISTRICT, PROVINCE]));
        assert_eq!(facts.declared.as_ref().unwrap().by, "clerk");
        assert_eq!(
            facts.registered.as_ref().unwrap().at,
            place(OFFICE, &[DISTRICT, PROVINCE])
        );
        let facts = record_facts("birth", &actions, Some(id(ELSEWHERE)), areas);
        assert_eq!(facts.place, place(ELSEWHERE, &[OTHER_DISTRICT]));
    }
}
