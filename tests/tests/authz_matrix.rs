//! The authorization matrix of the routes people use at a node, generated from Farajaland's
//! roles (`common/config/default-roles.json`): every role × every user route (read, search,
//! assign, declare, validate, register, reject, archive, edit, print-certificate,
//! request-correction) × records in and out of the user's jurisdiction × the user's own records
//! and other people's. The expected answer of each cell comes from an oracle written here from
//! the scope strings alone (OpenCRVS's `ACTION_SCOPE_MAP` and the jurisdiction options
//! `event`, `placeOfEvent`, `declaredIn`, `declaredBy`, `registeredIn`, `registeredBy`,
//! `customActionTypes`), never from `crvs_common::access`.
//!
//! Setup: central makes one user per role (the hospital clerk at the Ibombo District Hospital,
//! everyone else at the Ibombo District Office) and a helper national registrar; one node
//! enrolled at the hospital (`two_factor = false`) receives them and a tracking-id lease, and
//! central is stopped. Records are made by the node's health client (create, or create and
//! notify), by the helper (who declares records created by the health client) and by each user
//! (own drafts, own declarations). A record's place of event is `child.birthLocationId` (the
//! health client also creates it there), in the hospital, in the office (same district) or in
//! the Isamba District Hospital (another district).
//!
//! Each action cell uses a record in a state where the action is allowed, assigned first to the
//! acting user, so the answer is about authorization only: 403 (missing scope type, or no
//! jurisdiction for the action), 404 (the user may not read the record), or 200. Print and
//! correction need REGISTERED records, which a node does not hold yet, so for those only
//! "denied" (403/404) versus "not denied" is checked. Search is checked per record (visible or
//! not) and over every result: nothing outside the caller's search jurisdiction may show.
//!
//! "Declared" and "registered" are OpenCRVS's `legalStatuses` (`getLegalStatuses`): the latest
//! DECLARE (a NOTIFY is not a declaration), and only an Accepted REGISTER (central's), so a
//! record whose registration is only requested at the node is not registered anywhere.
//!
//! Disagreements are collected and all reported at the end.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use crvs_tests::central::{CentralProcess, eventually};
use crvs_tests::users::{add_user, claims, login, node_with_config, wait_for_user};
use crvs_tests::{
    Api, HOSPITAL_ID, NodeProcess, OFFICE_ID, Reply, new_transaction_id, sample_birth_declaration,
};
use serde_json::{Value, json};

/// Farajaland's roles, as the node and central load them.
const ROLES_JSON: &str = include_str!("../../common/config/default-roles.json");

/// Isamba District Hospital: a facility in another district (Isamba).
const ISAMBA_HOSPITAL_ID: &str = "7b8d2f30-0002-4000-8000-000000000013";
/// The administrative areas of the demo locations.
const IBOMBO_AREA: &str = "6a7c1e2f-0001-4000-8000-000000000002";
const ISAMBA_AREA: &str = "6a7c1e2f-0001-4000-8000-000000000003";
const CENTRAL_PROVINCE: &str = "6a7c1e2f-0001-4000-8000-000000000001";

/// Tracking ids the test may use (one lease from central is 1,000).
const TRACKING_IDS_NEEDED: u64 = 600;
const LEASE_TIMEOUT: Duration = Duration::from_secs(60);

// ----------------------------------------------------------------------------------------------
// The oracle: scopes parsed and evaluated here, from the scope strings.

/// One scope: its type and options (comma-separated values).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ScopeSpec {
    kind: String,
    options: BTreeMap<String, Vec<String>>,
}

fn parse_scope(s: &str) -> ScopeSpec {
    let mut kind = None;
    let mut options = BTreeMap::new();
    for part in s.split('&') {
        let (key, value) = part
            .split_once('=')
            .unwrap_or_else(|| panic!("scope {s:?}: part {part:?} is not key=value"));
        if key == "type" {
            kind = Some(value.to_owned());
        } else {
            options.insert(
                key.to_owned(),
                value.split(',').map(str::to_owned).collect::<Vec<_>>(),
            );
        }
    }
    ScopeSpec {
        kind: kind.unwrap_or_else(|| panic!("scope {s:?} has no type")),
        options,
    }
}

/// The places records are put in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Place {
    /// Ibombo District Hospital (Ibombo district): the node's own facility.
    Hospital,
    /// Ibombo District Office (Ibombo district).
    Office,
    /// Isamba District Hospital (Isamba district).
    Isamba,
}

const PLACES: [Place; 3] = [Place::Hospital, Place::Office, Place::Isamba];

impl Place {
    fn id(self) -> &'static str {
        match self {
            Self::Hospital => HOSPITAL_ID,
            Self::Office => OFFICE_ID,
            Self::Isamba => ISAMBA_HOSPITAL_ID,
        }
    }

    fn of_id(id: &str) -> Self {
        PLACES
            .into_iter()
            .find(|p| p.id() == id)
            .unwrap_or_else(|| panic!("unknown location {id}"))
    }

    /// The administrative areas holding the location, nearest first.
    fn areas(self) -> [&'static str; 2] {
        match self {
            Self::Hospital | Self::Office => [IBOMBO_AREA, CENTRAL_PROVINCE],
            Self::Isamba => [ISAMBA_AREA, CENTRAL_PROVINCE],
        }
    }

    fn is_facility(self) -> bool {
        self != Self::Office
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hospital => "Ibombo District Hospital",
            Self::Office => "Ibombo District Office",
            Self::Isamba => "Isamba District Hospital (other district)",
        })
    }
}

/// What the oracle knows of a record.
#[derive(Debug, Clone)]
struct Facts {
    /// The place of the event.
    place: Place,
    /// The declaration as OpenCRVS's `legalStatuses.DECLARED` has it (`getLegalStatuses`): the
    /// latest DECLARE, by whom and where; a NOTIFY is not a declaration.
    declared: Option<(String, Place)>,
}

/// The acting user as the oracle sees them.
struct Person<'a> {
    id: &'a str,
    office: Place,
    scopes: &'a [ScopeSpec],
}

/// A `placeOfEvent`/`declaredIn`/`registeredIn` value: the user's office itself, anything in
/// the administrative area holding it, or everything.
fn within(value: &str, place: Place, office: Place) -> bool {
    match value {
        "all" => true,
        "location" => place == office,
        "administrativeArea" => place.areas().contains(&office.areas()[0]),
        _ => false,
    }
}

/// Whether `scope` grants `kind` (with custom action `custom`) on `record` to `person`: every
/// option the scope sets must hold (any of its values); an absent option means "all".
fn scope_grants(
    scope: &ScopeSpec,
    kind: &str,
    custom: Option<&str>,
    person: &Person<'_>,
    record: &Facts,
) -> bool {
    if scope.kind != kind {
        return false;
    }
    let holds = |name: &str, check: &dyn Fn(&str) -> bool| -> bool {
        scope
            .options
            .get(name)
            .is_none_or(|values| values.iter().any(|v| check(v)))
    };
    let custom_ok = custom.is_none_or(|c| {
        scope
            .options
            .get("customActionTypes")
            .is_some_and(|types| types.iter().any(|t| t == c))
    });
    custom_ok
        && holds("event", &|e| e == "birth")
        && holds("placeOfEvent", &|v| within(v, record.place, person.office))
        && holds("declaredIn", &|v| {
            record
                .declared
                .as_ref()
                .is_some_and(|(_, at)| within(v, *at, person.office))
        })
        && holds("declaredBy", &|v| {
            v == "user"
                && record
                    .declared
                    .as_ref()
                    .is_some_and(|(by, _)| by == person.id)
        })
        // `legalStatuses.REGISTERED` needs an Accepted REGISTER, which only central writes: a
        // registration filter never holds at a node.
        && holds("registeredIn", &|_| false)
        && holds("registeredBy", &|_| false)
}

fn grants(person: &Person<'_>, kinds: &[&str], custom: Option<&str>, record: &Facts) -> bool {
    person.scopes.iter().any(|scope| {
        kinds
            .iter()
            .any(|kind| scope_grants(scope, kind, custom, person, record))
    })
}

fn has_kind(person: &Person<'_>, kinds: &[&str]) -> bool {
    person
        .scopes
        .iter()
        .any(|s| kinds.contains(&s.kind.as_str()))
}

/// The user routes of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Read,
    Search,
    Assign,
    Declare,
    Validate,
    Register,
    Reject,
    Archive,
    Edit,
    Print,
    RequestCorrection,
}

const ROUTES: [Route; 11] = [
    Route::Read,
    Route::Search,
    Route::Assign,
    Route::Declare,
    Route::Validate,
    Route::Register,
    Route::Reject,
    Route::Archive,
    Route::Edit,
    Route::Print,
    Route::RequestCorrection,
];

impl Route {
    fn segment(self) -> &'static str {
        match self {
            Self::Read | Self::Search => "",
            Self::Assign => "assign",
            Self::Declare => "declare",
            Self::Validate => "validate",
            Self::Register => "register",
            Self::Reject => "reject",
            Self::Archive => "archive",
            Self::Edit => "edit",
            Self::Print => "print-certificate",
            Self::RequestCorrection => "request-correction",
        }
    }

    fn label(self) -> String {
        match self {
            Self::Read => "GET /api/events/events/{id}".to_owned(),
            Self::Search => "POST /api/events/events/search".to_owned(),
            _ => format!("POST /api/events/events/{{id}}/{}", self.segment()),
        }
    }

    /// OpenCRVS's `ACTION_SCOPE_MAP`: the scope types that allow the action (any of them).
    /// Empty: always allowed to whoever may read the record (ASSIGN).
    fn kinds(self) -> &'static [&'static str] {
        match self {
            Self::Read => &["record.read"],
            Self::Search => &["record.search"],
            Self::Assign => &[],
            Self::Declare => &["record.declare", "record.register"],
            Self::Validate => &["record.custom-action"],
            Self::Register => &["record.register"],
            Self::Reject => &["record.reject"],
            Self::Archive => &["record.archive"],
            Self::Edit => &["record.edit"],
            Self::Print => &["record.print-certified-copies"],
            Self::RequestCorrection => &["record.request-correction", "record.correct"],
        }
    }

    fn custom(self) -> Option<&'static str> {
        (self == Self::Validate).then_some("VALIDATE_DECLARATION")
    }

    /// Whether the record is prepared in a state that allows the action, so an allowed cell
    /// must answer 200 (print and correction need REGISTERED records: only "not denied").
    fn strict(self) -> bool {
        !matches!(self, Self::Print | Self::RequestCorrection)
    }

    fn body(self, place: Place) -> Value {
        let tx = new_transaction_id();
        match self {
            Self::Declare => json!({"transactionId": tx, "declaration": declaration_at(place)}),
            Self::Reject => json!({"transactionId": tx, "content": {"reason": "Missing details"}}),
            Self::Archive => json!({"transactionId": tx, "content": {"reason": "Duplicate"}}),
            Self::Edit => json!({
                "transactionId": tx,
                "declaration": {"child.name": {"firstname": "Liam", "surname": "Edited"}}
            }),
            Self::RequestCorrection => json!({
                "transactionId": tx,
                "declaration": {"child.name": {"firstname": "Liam", "surname": "Corrected"}}
            }),
            _ => json!({"transactionId": tx}),
        }
    }
}

/// What the oracle expects of one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// 200 (or, for print/correction, anything but 400/401/403/404).
    Allowed,
    /// 403: no scope of the action's type, or no jurisdiction for the action.
    Forbidden,
    /// 404: the user may not read the record.
    NotFound,
    /// Search: the record is in the results.
    Visible,
    /// Search: the record is not in the results.
    Hidden,
}

/// The oracle for every route but search.
fn expect(person: &Person<'_>, route: Route, record: &Facts) -> Expect {
    let can_read = grants(person, &["record.read"], None, record);
    match route {
        Route::Search => unreachable!("search cells are judged on the result list"),
        Route::Assign => {
            if can_read {
                Expect::Allowed
            } else {
                Expect::NotFound
            }
        }
        _ => {
            let kinds = route.kinds();
            if !has_kind(person, kinds) {
                Expect::Forbidden
            } else if !can_read {
                Expect::NotFound
            } else if route != Route::Read && !grants(person, kinds, route.custom(), record) {
                Expect::Forbidden
            } else {
                Expect::Allowed
            }
        }
    }
}

fn search_visible(person: &Person<'_>, record: &Facts) -> bool {
    grants(person, &["record.search"], None, record)
}

/// Whether an answer matches: denials by their exact status, allowed by 200 (or "not denied").
fn matches_expect(expected: Expect, route: Route, status: u16) -> bool {
    match expected {
        Expect::Allowed if route.strict() => status == 200,
        Expect::Allowed => !matches!(status, 400 | 401 | 403 | 404) && status < 500,
        Expect::Forbidden => status == 403,
        Expect::NotFound => status == 404,
        Expect::Visible | Expect::Hidden => unreachable!("search cells compare visibility"),
    }
}

// ----------------------------------------------------------------------------------------------
// The world: users, records and the cells.

/// The declaration of a birth at `place` (`child.birthLocationId` is the place of the event).
fn declaration_at(place: Place) -> Value {
    let mut declaration = sample_birth_declaration();
    let fields = declaration.as_object_mut().expect("an object");
    if place.is_facility() {
        fields.insert("child.birthLocation".into(), json!(place.id()));
    } else {
        fields.remove("child.birthLocation");
        fields.insert("child.placeOfBirth".into(), json!("OTHER"));
    }
    fields.insert("child.birthLocationId".into(), json!(place.id()));
    declaration
}

struct User {
    role: String,
    id: String,
    office: Place,
    scopes: Vec<ScopeSpec>,
    api: Api,
}

impl User {
    fn person(&self) -> Person<'_> {
        Person {
            id: &self.id,
            office: self.office,
            scopes: &self.scopes,
        }
    }

    fn has(&self, kind: &str) -> bool {
        self.scopes.iter().any(|s| s.kind == kind)
    }

    /// Can make drafts of their own.
    fn can_draft(&self) -> bool {
        self.has("record.create")
    }

    /// Can make records declared by themselves.
    fn can_own(&self) -> bool {
        self.can_draft() && (self.has("record.declare") || self.has("record.register"))
    }
}

/// How a record was made (records of one kind are interchangeable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// Created by the health client at the place (CREATED, no declaration).
    Created(Place),
    /// Created and notified by the health client at the place (NOTIFIED).
    Notified(Place),
    /// Created by the health client at the place, declared by the helper (DECLARED).
    HelperDeclared(Place),
    /// A draft of user `n` (CREATED at their office).
    Draft(usize),
    /// Created and declared by user `n`, born at the place (DECLARED).
    Own(usize, Place),
    /// Declared by user `n` at their office's place, then edited and declared again by another
    /// user (the registration agent, or the registrar for the agent's records): the latest
    /// declaration is the other user's.
    Redeclared(usize),
    /// Declared by the helper, then registration requested by the helper (DECLARED with
    /// `register:requested`: not registered until central accepts).
    RegisterRequested(Place),
}

impl Kind {
    fn describe(self, users: &[User], acting: usize) -> String {
        let whose = |n: usize| {
            if n == acting {
                "own".to_owned()
            } else {
                format!("{}'s", users[n].role)
            }
        };
        match self {
            Self::Created(p) => format!("other (health client's CREATED draft) at {p}"),
            Self::Notified(p) => format!("other (health client's NOTIFIED) at {p}"),
            Self::HelperDeclared(p) => {
                format!("other (DECLARED by another NATIONAL_REGISTRAR) at {p}")
            }
            Self::Draft(n) => format!("{} CREATED draft at {}", whose(n), users[n].office),
            Self::Own(n, p) => format!("{} DECLARED record at {p}", whose(n)),
            Self::Redeclared(n) => format!(
                "{} DECLARED record at {}, then edited and re-declared by another user",
                whose(n),
                users[n].office
            ),
            Self::RegisterRequested(p) => format!(
                "other (DECLARED and REGISTER Requested by another NATIONAL_REGISTRAR) at {p}"
            ),
        }
    }
}

#[derive(Debug)]
struct Mismatch {
    role: String,
    route: String,
    record: String,
    event_id: String,
    expected: String,
    got: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} | {} | {} [{}] | expected {} | got {}",
            self.role, self.route, self.record, self.event_id, self.expected, self.got
        )
    }
}

struct World {
    health: Api,
    helper: User,
    users: Vec<User>,
    /// Every record the test made, with what the oracle knows of it.
    facts: HashMap<String, Facts>,
    /// Records not changed since they were made, by kind.
    pool: HashMap<Kind, Vec<String>>,
    mismatches: Vec<Mismatch>,
    cells: usize,
}

fn short(reply: &Reply) -> String {
    let message: String = reply.message().chars().take(160).collect();
    format!("{} {message}", reply.status)
}

async fn act(api: &Api, event_id: &str, segment: &str, body: &Value) -> Reply {
    api.post(&format!("/api/events/events/{event_id}/{segment}"), body)
        .await
        .expect("action request")
}

fn event_id_of(reply: &Reply, what: &str) -> String {
    assert_eq!(reply.status, 200, "{what}: {}", reply.body);
    reply.body["id"].as_str().expect("an id").to_owned()
}

impl World {
    /// A record of `kind`, unchanged since it was made (a fresh one if none is left).
    async fn take(&mut self, kind: Kind) -> String {
        if let Some(id) = self.pool.get_mut(&kind).and_then(Vec::pop) {
            return id;
        }
        self.make(kind).await
    }

    /// Puts back a record that a cell left as it was.
    fn give_back(&mut self, kind: Kind, id: String) {
        self.pool.entry(kind).or_default().push(id);
    }

    async fn make(&mut self, kind: Kind) -> String {
        let (id, facts) = match kind {
            Kind::Created(place) => {
                let reply = self
                    .health
                    .create("birth", &new_transaction_id(), place.id())
                    .await
                    .expect("create");
                let id = event_id_of(&reply, "health client's create");
                (
                    id,
                    Facts {
                        place,
                        declared: None,
                    },
                )
            }
            Kind::Notified(place) => {
                let reply = self
                    .health
                    .create_and_notify(
                        "birth",
                        &new_transaction_id(),
                        place.id(),
                        &declaration_at(place),
                    )
                    .await
                    .expect("create and notify");
                let id = event_id_of(&reply, "health client's notify");
                (
                    id,
                    Facts {
                        place,
                        declared: None,
                    },
                )
            }
            Kind::HelperDeclared(place) => {
                let reply = self
                    .health
                    .create("birth", &new_transaction_id(), place.id())
                    .await
                    .expect("create");
                let id = event_id_of(&reply, "health client's create");
                let helper = &self.helper;
                let assigned = act(&helper.api, &id, "assign", &Route::Assign.body(place)).await;
                assert_eq!(assigned.status, 200, "helper assigns: {}", assigned.body);
                let declared = act(&helper.api, &id, "declare", &Route::Declare.body(place)).await;
                assert_eq!(declared.status, 200, "helper declares: {}", declared.body);
                (
                    id,
                    Facts {
                        place,
                        declared: Some((helper.id.clone(), helper.office)),
                    },
                )
            }
            Kind::Draft(n) => {
                let user = &self.users[n];
                let reply = user
                    .api
                    .create_by_user("birth", &new_transaction_id())
                    .await;
                let id = event_id_of(&reply, &format!("{} creates a draft", user.role));
                // A new draft is assigned to its creator; cells assign it again themselves.
                let unassigned = act(
                    &user.api,
                    &id,
                    "unassign",
                    &json!({"transactionId": new_transaction_id()}),
                )
                .await;
                assert_eq!(
                    unassigned.status, 200,
                    "{} unassigns: {}",
                    user.role, unassigned.body
                );
                (
                    id,
                    Facts {
                        place: user.office,
                        declared: None,
                    },
                )
            }
            Kind::Redeclared(n) => {
                let first = self.users[n].office;
                let id = Box::pin(self.make(Kind::Own(n, first))).await;
                let editor = self
                    .users
                    .iter()
                    .position(|u| u.role == "REGISTRATION_AGENT")
                    .filter(|e| *e != n)
                    .or_else(|| self.users.iter().position(|u| u.role == "LOCAL_REGISTRAR"))
                    .expect("an editor");
                let api = self.users[editor].api.clone();
                let assigned = act(&api, &id, "assign", &Route::Assign.body(first)).await;
                assert_eq!(assigned.status, 200, "editor assigns: {}", assigned.body);
                let mut edit = Route::Edit.body(first);
                edit["keepAssignment"] = json!(true);
                let edited = act(&api, &id, "edit", &edit).await;
                assert_eq!(edited.status, 200, "editor edits: {}", edited.body);
                let declared = act(&api, &id, "declare", &Route::Declare.body(first)).await;
                assert_eq!(
                    declared.status, 200,
                    "editor re-declares: {}",
                    declared.body
                );
                let by = (self.users[editor].id.clone(), self.users[editor].office);
                self.facts.get_mut(&id).expect("known").declared = Some(by);
                return id;
            }
            Kind::RegisterRequested(place) => {
                let id = Box::pin(self.make(Kind::HelperDeclared(place))).await;
                let helper = &self.helper;
                let assigned = act(&helper.api, &id, "assign", &Route::Assign.body(place)).await;
                assert_eq!(assigned.status, 200, "helper assigns: {}", assigned.body);
                let registered =
                    act(&helper.api, &id, "register", &Route::Register.body(place)).await;
                assert_eq!(
                    registered.status, 200,
                    "helper registers: {}",
                    registered.body
                );
                return id;
            }
            Kind::Own(n, place) => {
                let user = &self.users[n];
                let reply = user
                    .api
                    .create_by_user("birth", &new_transaction_id())
                    .await;
                let id = event_id_of(&reply, &format!("{} creates a draft", user.role));
                let declared = act(&user.api, &id, "declare", &Route::Declare.body(place)).await;
                assert_eq!(
                    declared.status, 200,
                    "{} declares own draft born at {place}: {}",
                    user.role, declared.body
                );
                (
                    id,
                    Facts {
                        place,
                        declared: Some((user.id.clone(), user.office)),
                    },
                )
            }
        };
        self.facts.insert(id.clone(), facts);
        id
    }

    /// The record kinds a route is tried on for user `n`.
    fn kinds_for(&self, route: Route, n: usize) -> Vec<Kind> {
        let user = &self.users[n];
        let own = |kinds: &mut Vec<Kind>| {
            if user.can_own() {
                kinds.extend(PLACES.map(|p| Kind::Own(n, p)));
            }
        };
        let mut kinds = Vec::new();
        match route {
            Route::Declare => {
                kinds.extend(PLACES.map(Kind::Created));
                if user.can_draft() {
                    kinds.push(Kind::Draft(n));
                }
            }
            Route::Register => {
                kinds.extend(PLACES.map(Kind::HelperDeclared));
                own(&mut kinds);
            }
            _ => {
                kinds.extend(PLACES.map(Kind::Notified));
                kinds.extend(PLACES.map(Kind::HelperDeclared));
                own(&mut kinds);
            }
        }
        if user.can_own() && route != Route::Declare {
            kinds.push(Kind::Redeclared(n));
        }
        // Only reads and the routes checked for "denied or not" take a record whose
        // registration is pending (everything else is a 409 for its state).
        if matches!(
            route,
            Route::Read | Route::Assign | Route::Print | Route::RequestCorrection
        ) {
            kinds.extend(PLACES.map(Kind::RegisterRequested));
        }
        kinds
    }

    fn mismatch(
        &mut self,
        n: usize,
        route: Route,
        kind: Kind,
        id: &str,
        expected: String,
        got: String,
    ) {
        let record = kind.describe(&self.users, n);
        self.mismatches.push(Mismatch {
            role: self.users[n].role.clone(),
            route: route.label(),
            record,
            event_id: id.to_owned(),
            expected,
            got,
        });
    }

    /// One cell of a route other than search.
    async fn cell(&mut self, n: usize, route: Route, kind: Kind) {
        let id = self.take(kind).await;
        let facts = self.facts[&id].clone();
        let expected = expect(&self.users[n].person(), route, &facts);
        let api = self.users[n].api.clone();
        let got = match route {
            Route::Read => api.read(&id).await.expect("read"),
            Route::Assign => act(&api, &id, "assign", &route.body(facts.place)).await,
            _ => {
                // Assigned first, as people do: the answer is then about authorization.
                let assign = act(&api, &id, "assign", &Route::Assign.body(facts.place)).await;
                let reply = act(&api, &id, route.segment(), &route.body(facts.place)).await;
                if !(200..300).contains(&reply.status) && assign.status == 200 {
                    self.unassign(&api, &id).await;
                }
                reply
            }
        };
        self.cells += 1;
        if !matches_expect(expected, route, got.status) {
            let expected = match expected {
                Expect::Allowed if route.strict() => "200 (allowed)".to_owned(),
                Expect::Allowed => "not denied (allowed; 409 expected for the state)".to_owned(),
                Expect::Forbidden => "403 (denied)".to_owned(),
                Expect::NotFound => "404 (may not read)".to_owned(),
                other => format!("{other:?}"),
            };
            self.mismatch(n, route, kind, &id, expected, short(&got));
        }
        let changed =
            (200..300).contains(&got.status) && !matches!(route, Route::Read | Route::Assign);
        if route == Route::Assign && got.status == 200 {
            self.unassign(&api, &id).await;
        }
        if changed {
            if route == Route::Declare {
                let user = &self.users[n];
                let declared = Some((user.id.clone(), user.office));
                self.facts.get_mut(&id).expect("known").declared = declared;
            }
        } else {
            self.give_back(kind, id);
        }
    }

    async fn unassign(&self, api: &Api, id: &str) {
        let reply = act(
            api,
            id,
            "unassign",
            &json!({"transactionId": new_transaction_id()}),
        )
        .await;
        assert_eq!(reply.status, 200, "unassign {id}: {}", reply.body);
    }

    /// Every result of a search for births, page by page.
    async fn search_all(api: &Api) -> Result<Vec<Value>, Reply> {
        let mut results = Vec::new();
        loop {
            let reply = api
                .search(&json!({
                    "query": {"type": "and", "clauses": [{"eventType": {"type": "exact", "term": "birth"}}]},
                    "limit": 100,
                    "offset": results.len()
                }))
                .await
                .expect("search");
            if reply.status != 200 {
                return Err(reply);
            }
            let page = reply.body["results"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = reply.body["total"].as_u64().unwrap_or_default();
            let done = page.is_empty();
            results.extend(page);
            if done || results.len() as u64 >= total {
                return Ok(results);
            }
        }
    }

    /// The search cells of user `n` (one per record kind), and no result outside jurisdiction.
    async fn search_cells(&mut self, n: usize, probes: &[(Kind, String)]) {
        let api = self.users[n].api.clone();
        let may_search = self.users[n].has("record.search");
        let found = Self::search_all(&api).await;
        match found {
            Err(reply) => {
                for (kind, id) in probes {
                    self.cells += 1;
                    if may_search || reply.status != 403 {
                        let expected = if may_search {
                            "200 with results"
                        } else {
                            "403"
                        };
                        self.mismatch(n, Route::Search, *kind, id, expected.into(), short(&reply));
                    }
                }
            }
            Ok(results) => {
                let ids: Vec<String> = results
                    .iter()
                    .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
                    .collect();
                for (kind, id) in probes {
                    self.cells += 1;
                    let person = self.users[n].person();
                    let expected = if !may_search {
                        None
                    } else if search_visible(&person, &self.facts[id]) {
                        Some(Expect::Visible)
                    } else {
                        Some(Expect::Hidden)
                    };
                    let got = if ids.contains(id) {
                        Expect::Visible
                    } else {
                        Expect::Hidden
                    };
                    if expected != Some(got) {
                        let expected = match expected {
                            None => "403 (no record.search scope)".to_owned(),
                            Some(e) => format!("{e:?} in the results"),
                        };
                        self.mismatch(
                            n,
                            Route::Search,
                            *kind,
                            id,
                            expected,
                            format!("200, {got:?} in the results"),
                        );
                    }
                }
                // Over every result: nothing outside the caller's search jurisdiction.
                let mut outside = Vec::new();
                for id in &ids {
                    let person = self.users[n].person();
                    match self.facts.get(id) {
                        Some(facts) if may_search && search_visible(&person, facts) => {}
                        Some(facts) => outside.push(format!("{id} (born at {})", facts.place)),
                        None => outside.push(format!("{id} (a record this test did not make)")),
                    }
                }
                if !outside.is_empty() {
                    let sample: Vec<_> = outside.iter().take(4).cloned().collect();
                    self.mismatches.push(Mismatch {
                        role: self.users[n].role.clone(),
                        route: Route::Search.label(),
                        record: format!("{} of {} results", outside.len(), ids.len()),
                        event_id: sample.join(", "),
                        expected: "only records within the caller's record.search jurisdiction"
                            .into(),
                        got: "results outside it".into(),
                    });
                }
            }
        }
    }
}

async fn logged_in(node: &NodeProcess, made: &Value, scopes: Vec<ScopeSpec>) -> User {
    let username = made["username"].as_str().expect("username");
    let password = made["password"].as_str().expect("password");
    let role = made["role"].as_str().expect("role").to_owned();
    let token = login(node, username, password, "000000").await;
    // The node signs the role's scopes into the token: the oracle's scopes are the same.
    let mut in_token: Vec<ScopeSpec> = claims(&token)["scope"]
        .as_array()
        .expect("scope claim")
        .iter()
        .map(|s| parse_scope(s.as_str().expect("a scope string")))
        .collect();
    let mut expected = scopes.clone();
    in_token.sort();
    expected.sort();
    assert_eq!(
        in_token, expected,
        "{role}: the token's scopes are the role's"
    );
    User {
        role,
        id: made["userId"].as_str().expect("userId").to_owned(),
        office: Place::of_id(if made["role"] == "HOSPITAL_CLERK" {
            HOSPITAL_ID
        } else {
            OFFICE_ID
        }),
        scopes,
        api: node.api(&token),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_on_every_user_route_matches_the_scope_oracle() {
    let roles: Value = serde_json::from_str(ROLES_JSON).expect("default-roles.json");
    let roles: Vec<(String, Vec<ScopeSpec>)> = roles
        .as_array()
        .expect("a list of roles")
        .iter()
        .map(|r| {
            let scopes = r["scopes"]
                .as_array()
                .expect("scopes")
                .iter()
                .map(|s| parse_scope(s.as_str().expect("a scope string")))
                .collect();
            (r["id"].as_str().expect("id").to_owned(), scopes)
        })
        .collect();
    assert_eq!(roles.len(), 10, "Farajaland has ten roles");

    let started = std::time::Instant::now();
    let mut central = CentralProcess::start().unwrap();
    let made: Vec<Value> = roles
        .iter()
        .enumerate()
        .map(|(i, (role, _))| {
            let office = if role == "HOSPITAL_CLERK" {
                HOSPITAL_ID
            } else {
                OFFICE_ID
            };
            add_user(&central, "Matrix", &format!("User{i}"), role, office)
        })
        .collect();
    let helper_made = add_user(
        &central,
        "Helper",
        "Registrar",
        "NATIONAL_REGISTRAR",
        OFFICE_ID,
    );
    eprintln!("users made at central after {:?}", started.elapsed());
    let node = node_with_config(&central, HOSPITAL_ID, "two_factor = false\n");
    eprintln!("node up after {:?}", started.elapsed());
    for user in made.iter().chain([&helper_made]) {
        wait_for_user(&node, user["username"].as_str().unwrap(), "active").await;
    }
    eventually("a tracking-id lease", LEASE_TIMEOUT, || async {
        Ok((node.status()?.pool_free >= TRACKING_IDS_NEEDED).then_some(()))
    })
    .await
    .expect("lease");
    // Everything the test needs is at the node now.
    central.kill9().unwrap();

    eprintln!("users at the node after {:?}", started.elapsed());
    let mut users = Vec::new();
    for (user, (_, scopes)) in made.iter().zip(&roles) {
        users.push(logged_in(&node, user, scopes.clone()).await);
    }
    let helper_scopes = roles
        .iter()
        .find(|(id, _)| id == "NATIONAL_REGISTRAR")
        .expect("NATIONAL_REGISTRAR")
        .1
        .clone();
    let helper = logged_in(&node, &helper_made, helper_scopes).await;
    let mut world = World {
        health: node.health_api().await.unwrap(),
        helper,
        users,
        facts: HashMap::new(),
        pool: HashMap::new(),
        mismatches: Vec::new(),
        cells: 0,
    };

    eprintln!("logged in after {:?}", started.elapsed());
    // Probes for search: one unchanged record of every kind, made before anything else.
    let mut probes = Vec::new();
    let mut probe_kinds: Vec<Kind> = PLACES
        .iter()
        .flat_map(|p| [Kind::Notified(*p), Kind::HelperDeclared(*p)])
        .collect();
    probe_kinds.extend(PLACES.map(Kind::RegisterRequested));
    for n in 0..world.users.len() {
        if world.users[n].can_own() {
            probe_kinds.extend(PLACES.map(|p| Kind::Own(n, p)));
            probe_kinds.push(Kind::Redeclared(n));
        }
    }
    for kind in probe_kinds {
        let id = world.make(kind).await;
        probes.push((kind, id));
    }

    for route in ROUTES {
        for n in 0..world.users.len() {
            if route == Route::Search {
                continue;
            }
            for kind in world.kinds_for(route, n) {
                world.cell(n, route, kind).await;
            }
        }
    }
    eprintln!("action cells done after {:?}", started.elapsed());
    // Search last, when every record of the test exists in its final state.
    for n in 0..world.users.len() {
        world.search_cells(n, &probes).await;
    }

    let cells = world.cells;
    let report: Vec<String> = world.mismatches.iter().map(ToString::to_string).collect();
    eprintln!(
        "authorization matrix: {cells} cells, {} mismatches",
        report.len()
    );
    assert!(
        report.is_empty(),
        "{} of {cells} cells disagree with the scope oracle:\n{}",
        report.len(),
        report.join("\n")
    );
}
