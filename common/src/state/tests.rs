//! Table-driven tests of status, flags and the allowed-actions table (every row and column).

use serde_json::json;

use super::*;
use crate::event::{UserType, format_timestamp_ms};

fn action(n: u128, t: ActionType, s: ActionStatus) -> ActionDocument {
    ActionDocument {
        id: uuid::Uuid::from_u128(n),
        action_type: t,
        transaction_id: format!("tx{n}"),
        status: s,
        created_by: "u".into(),
        created_by_user_type: UserType::User,
        created_by_role: None,
        created_at_location: None,
        created_at: format_timestamp_ms(n as u64 * 1000),
        declaration: Some(Declaration::new()),
        annotation: None,
        original_action_id: None,
        content: None,
        registration_number: None,
        request_id: None,
        assigned_to: None,
        custom_action_type: None,
    }
}

fn accepted(types: &[ActionType]) -> Vec<ActionDocument> {
    types
        .iter()
        .enumerate()
        .map(|(i, t)| action(i as u128 + 1, *t, ActionStatus::Accepted))
        .collect()
}

use ActionType as A;
use EventStatus as S;

/// Every row of OpenCRVS's table, against every action type: allowed iff listed.
#[test]
fn allowed_actions_table_every_cell() {
    let table: &[(S, &[A])] = &[
        (
            S::Created,
            &[A::Read, A::Declare, A::Notify, A::Delete, A::Custom],
        ),
        (
            S::Notified,
            &[
                A::Read,
                A::Edit,
                A::MarkAsDuplicate,
                A::Archive,
                A::Reject,
                A::Custom,
            ],
        ),
        (
            S::Declared,
            &[
                A::Read,
                A::Register,
                A::MarkAsDuplicate,
                A::Archive,
                A::Reject,
                A::Custom,
                A::Edit,
            ],
        ),
        (
            S::Registered,
            &[
                A::Read,
                A::PrintCertificate,
                A::RequestCorrection,
                A::ApproveCorrection,
                A::RejectCorrection,
                A::Custom,
            ],
        ),
        (S::Archived, &[A::Read, A::Custom]),
    ];
    for (status, listed) in table {
        for t in ActionType::ALL {
            let expected = listed.contains(&t) || matches!(t, A::Assign | A::Unassign);
            assert_eq!(is_allowed(t, *status, &[]), expected, "{status} / {t}");
        }
    }
}

#[test]
fn flag_overrides() {
    let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // rejected: READ, NOTIFY, CUSTOM, EDIT, ARCHIVE whatever the status (except ARCHIVED).
    for status in [S::Notified, S::Declared, S::Registered] {
        let got = allowed_actions(status, &f(&["rejected"]));
        assert_eq!(
            got,
            vec![A::Read, A::Notify, A::Custom, A::Edit, A::Archive],
            "{status}"
        );
    }
    assert_eq!(
        allowed_actions(S::Archived, &f(&["rejected"])),
        vec![A::Read, A::Custom]
    );
    // edit-in-progress: NOTIFY, DECLARE, REGISTER (+READ).
    assert_eq!(
        allowed_actions(S::Declared, &f(&["edit-in-progress"])),
        vec![A::Read, A::Notify, A::Declare, A::Register]
    );
    // any *:requested blocks everything but READ.
    assert_eq!(
        allowed_actions(S::Declared, &f(&["register:requested"])),
        vec![A::Read]
    );
    // potential-duplicate blocks REGISTER and EDIT.
    let got = allowed_actions(S::Declared, &f(&["potential-duplicate"]));
    assert!(!got.contains(&A::Register) && !got.contains(&A::Edit));
    assert!(got.contains(&A::MarkAsDuplicate) && got.contains(&A::MarkAsNotDuplicate));
}

#[test]
fn status_folds_accepted_actions_only() {
    let cases: &[(&[A], S)] = &[
        (&[A::Create], S::Created),
        (&[A::Create, A::Assign, A::Read], S::Created),
        (&[A::Create, A::Notify], S::Notified),
        (&[A::Create, A::Notify, A::Declare], S::Declared),
        (&[A::Create, A::Declare, A::Custom], S::Declared),
        (&[A::Create, A::Declare, A::Register], S::Registered),
        (
            &[A::Create, A::Declare, A::Register, A::PrintCertificate],
            S::Registered,
        ),
        (&[A::Create, A::Declare, A::Archive], S::Archived),
    ];
    for (types, status) in cases {
        assert_eq!(derive_status(&accepted(types)), *status, "{types:?}");
    }
    // A Requested REGISTER does not register.
    let mut actions = accepted(&[A::Create, A::Declare]);
    actions.push(action(10, A::Register, ActionStatus::Requested));
    assert_eq!(derive_status(&actions), S::Declared);
    assert_eq!(
        derive_flags(&actions),
        vec!["register:requested".to_string()]
    );
}

#[test]
fn flags_table() {
    let cases: &[(&[A], &[&str])] = &[
        (&[A::Create], &[]),
        (&[A::Create, A::Notify], &["incomplete"]),
        (&[A::Create, A::Notify, A::Declare], &[]),
        (
            &[A::Create, A::Notify, A::Reject],
            &["incomplete", "rejected"],
        ),
        (&[A::Create, A::Declare, A::Reject], &["rejected"]),
        (&[A::Create, A::Declare, A::Reject, A::Declare], &[]),
        (&[A::Create, A::Declare, A::Edit], &["edit-in-progress"]),
        (
            &[A::Create, A::Declare, A::Edit, A::Read],
            &["edit-in-progress"],
        ),
        (&[A::Create, A::Declare, A::Edit, A::Declare], &[]),
        (
            &[A::Create, A::Declare, A::DuplicateDetected],
            &["potential-duplicate"],
        ),
        (
            &[
                A::Create,
                A::Declare,
                A::DuplicateDetected,
                A::MarkAsNotDuplicate,
            ],
            &[],
        ),
        (
            &[A::Create, A::Declare, A::Register, A::RequestCorrection],
            &["correction-requested"],
        ),
        (
            &[
                A::Create,
                A::Declare,
                A::Register,
                A::RequestCorrection,
                A::ApproveCorrection,
            ],
            &[],
        ),
        (
            &[
                A::Create,
                A::Declare,
                A::Register,
                A::RequestCorrection,
                A::RejectCorrection,
            ],
            &[],
        ),
        (&[A::Create, A::Notify, A::Archive], &[]),
    ];
    for (types, flags) in cases {
        let got = derive_flags(&accepted(types));
        let want: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "{types:?}");
    }
}

/// The index columns other than the declaration derive from actions' metadata only: copies
/// without their data (`ActionDocument::metadata`, what central derives a new event from) give
/// the same index, whatever the actions are and whatever they carry.
#[test]
fn the_index_derives_from_action_metadata_alone() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = proptest::collection::vec(
        (
            0..ActionType::ALL.len(),
            proptest::sample::select(vec![
                ActionStatus::Requested,
                ActionStatus::Accepted,
                ActionStatus::Rejected,
            ]),
        ),
        1..10,
    );
    runner
        .run(&strategy, |picks| {
            let actions: Vec<ActionDocument> = picks
                .iter()
                .enumerate()
                .map(|(i, (t, status))| {
                    let mut a = action(i as u128 + 1, ActionType::ALL[*t], *status);
                    a.declaration = Some(
                        json!({"child.dob": "2024-01-0{i}"})
                            .as_object()
                            .cloned()
                            .unwrap(),
                    );
                    a.annotation = Some(json!({"note": i}).as_object().cloned().unwrap());
                    a.content = Some(json!({"reason": "r", "duplicates": [i]}));
                    a.registration_number = (i % 3 == 0).then(|| format!("R{i}"));
                    a.assigned_to = (i % 2 == 0).then(|| "u2".to_owned());
                    a.custom_action_type = (a.action_type == ActionType::Custom)
                        .then(|| CUSTOM_VALIDATE_DECLARATION.to_owned());
                    a
                })
                .collect();
            let doc = |actions: Vec<ActionDocument>| EventDocument {
                id: uuid::Uuid::from_u128(99),
                event_type: "birth".into(),
                created_at: format_timestamp_ms(0),
                updated_at: format_timestamp_ms(0),
                actions,
                tracking_id: "T1".into(),
            };
            let declaration = aggregate_declaration(&actions);
            let metadata = actions.iter().map(ActionDocument::metadata).collect();
            proptest::prop_assert_eq!(
                EventIndex::from_document_with(&doc(metadata), declaration.clone(), Vec::new()),
                EventIndex::from_document_with(&doc(actions), declaration, Vec::new())
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn custom_validate_declaration_clears_rejected_and_validates() {
    let mut actions = accepted(&[A::Create, A::Declare, A::Reject]);
    let mut v = action(9, A::Custom, ActionStatus::Accepted);
    v.custom_action_type = Some(CUSTOM_VALIDATE_DECLARATION.into());
    actions.push(v);
    assert_eq!(derive_flags(&actions), vec!["validated".to_string()]);
}

#[test]
fn health_notify_flow_matches_opencrvs() {
    // CREATE(Accepted), NOTIFY(Requested), NOTIFY(Accepted, originalActionId) → NOTIFIED, [incomplete].
    let create = action(1, A::Create, ActionStatus::Accepted);
    let mut req = action(2, A::Notify, ActionStatus::Requested);
    req.declaration = Some(
        json!({"child.name": {"firstname": "Liam", "surname": "Banda"}})
            .as_object()
            .unwrap()
            .clone(),
    );
    let mut acc = action(3, A::Notify, ActionStatus::Accepted);
    acc.original_action_id = Some(req.id);
    let actions = vec![create, req, acc];
    assert_eq!(derive_status(&actions), S::Notified);
    assert_eq!(derive_flags(&actions), vec!["incomplete".to_string()]);
    let decl = aggregate_declaration(&actions);
    assert_eq!(decl["child.name"]["surname"], "Banda");
    assert!(!is_allowed(A::Notify, S::Notified, &derive_flags(&actions)));
    assert_eq!(
        not_allowed_message(A::Notify, S::Notified, &["incomplete".into()]),
        "Action 'NOTIFY' cannot be performed on an event in 'NOTIFIED' state with [incomplete] flags. \
         Available actions: READ, EDIT, MARK_AS_DUPLICATE, ARCHIVE, REJECT, CUSTOM"
    );
}

#[test]
fn aggregation_null_clears_and_corrections() {
    let mut a1 = action(1, A::Declare, ActionStatus::Accepted);
    a1.declaration = Some(json!({"a": 1, "b": 2}).as_object().unwrap().clone());
    let mut a2 = action(2, A::Edit, ActionStatus::Accepted);
    a2.declaration = Some(json!({"b": null, "c": 3}).as_object().unwrap().clone());
    let mut req = action(3, A::RequestCorrection, ActionStatus::Accepted);
    req.declaration = Some(json!({"a": 9}).as_object().unwrap().clone());
    let decl = aggregate_declaration(&[a1.clone(), a2.clone(), req.clone()]);
    assert_eq!(serde_json::Value::Object(decl), json!({"a": 1, "c": 3}));
    let mut approve = action(4, A::ApproveCorrection, ActionStatus::Accepted);
    approve.request_id = Some(req.id.to_string());
    let decl = aggregate_declaration(&[a1, a2, req, approve]);
    assert_eq!(serde_json::Value::Object(decl), json!({"a": 9, "c": 3}));
}

/// As a node records it: the request's values on its Requested action, `requestId` naming the
/// Accepted action that confirms it.
#[test]
fn approval_takes_the_values_of_the_requested_action_it_confirms() {
    let mut a1 = action(1, A::Declare, ActionStatus::Accepted);
    a1.declaration = Some(json!({"a": 1}).as_object().unwrap().clone());
    let mut requested = action(2, A::RequestCorrection, ActionStatus::Requested);
    requested.declaration = Some(json!({"a": 7}).as_object().unwrap().clone());
    let mut confirmed = action(3, A::RequestCorrection, ActionStatus::Accepted);
    confirmed.original_action_id = Some(requested.id);
    let mut approve = action(4, A::ApproveCorrection, ActionStatus::Accepted);
    approve.request_id = Some(confirmed.id.to_string());
    let decl = aggregate_declaration(&[a1, requested, confirmed, approve]);
    assert_eq!(serde_json::Value::Object(decl), json!({"a": 7}));
}

#[test]
fn assignment_follows_last_assign() {
    let mut a = action(2, A::Assign, ActionStatus::Accepted);
    a.assigned_to = Some("u1".into());
    let mut actions = vec![action(1, A::Create, ActionStatus::Accepted), a];
    assert_eq!(assigned_to(&actions), Some("u1".into()));
    actions.push(action(3, A::Unassign, ActionStatus::Accepted));
    assert_eq!(assigned_to(&actions), None);
}
