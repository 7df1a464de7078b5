//! Test fixtures shared by the crate's unit tests: a central in a temporary directory with
//! locations, enrolled node keys, and signed node entries that create and notify events.

use crvs_common::event::{
    ActionDocument, ActionStatus, ActionType, Declaration, EntryPayload, UserType,
    format_timestamp_ms,
};
use crvs_common::feed::CentralRecord;
use crvs_common::hlc::Hlc;
use crvs_common::location::{AdministrativeArea, Location, LocationSet};
use crvs_common::log::{EntryHash, LogEntry, LogHead, NodeId, NodeSecretKey};
use crvs_sync::merge::{EventCrdt, actor_for};
use uuid::Uuid;

use crate::config::{Config, ConfigFile};
use crate::store::Store;

/// Root area P with districts D1 and D2; facilities F1 (in D1), F2 (in D2) and FP (in P).
pub(crate) fn area(n: u128) -> Uuid {
    Uuid::from_u128(0xa000 + n)
}

/// A facility id: 1 → F1, 2 → F2, 0 → FP.
pub(crate) fn facility(n: u128) -> Uuid {
    Uuid::from_u128(0xf000 + n)
}

pub(crate) fn locations() -> LocationSet {
    let a = |id, parent| AdministrativeArea {
        id: area(id),
        name: format!("area {id}"),
        external_id: None,
        parent_id: parent,
        valid_until: None,
    };
    let f = |id, in_area| Location {
        id: facility(id),
        name: format!("facility {id}"),
        external_id: None,
        administrative_area_id: Some(area(in_area)),
        valid_until: None,
        location_type: Some("HEALTH_FACILITY".into()),
    };
    LocationSet {
        administrative_areas: vec![a(0, None), a(1, Some(area(0))), a(2, Some(area(0)))],
        locations: vec![f(0, 0), f(1, 1), f(2, 2)],
    }
}

/// A central initialised in a temporary directory (dropped with the `TempDir`).
pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: Config,
    pub(crate) store: Store,
}

pub(crate) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let file = ConfigFile {
        data_dir: dir.path().to_path_buf(),
        pool_lease_size: 20,
        pool_low_water: 5,
        ..ConfigFile::default()
    };
    let config = file.validate().unwrap();
    crate::init(&config, Some(&locations())).unwrap();
    let store = crate::open_store(&config).unwrap();
    Fixture { dir, config, store }
}

pub(crate) fn node_key(n: u8) -> NodeSecretKey {
    NodeSecretKey::from_bytes(&[n; 32])
}

/// Enrolls node key `n` at facility `at` (certificate issued by the fixture's CA).
pub(crate) fn enroll(fx: &Fixture, n: u8, at: Uuid) -> crate::admin::EnrollmentBundle {
    crate::admin::enroll_node(
        &fx.config,
        &fx.store,
        &crate::admin::EnrollRequest {
            node_id: node_key(n).node_id(),
            location_id: at,
            name: format!("node {n}"),
        },
    )
    .unwrap()
}

/// Leases tracking ids to the node and returns them.
pub(crate) fn lease(fx: &Fixture, node: NodeId, count: u32) -> Vec<String> {
    let head = fx.store.read(|r| r.central_head()).unwrap();
    fx.store
        .write(|w| w.lease_tracking_ids(node, count))
        .unwrap();
    let entries = fx.store.read(|r| r.central_entries(head.seq, 10)).unwrap();
    match serde_json::from_slice(&entries[0].action).unwrap() {
        CentralRecord::PoolGrant { tracking_ids, .. } => tracking_ids,
        other => panic!("expected a pool grant, got {other:?}"),
    }
}

fn action(action_type: ActionType, at: Uuid, decl: Option<Declaration>, t: u64) -> ActionDocument {
    ActionDocument {
        id: Uuid::new_v4(),
        action_type,
        transaction_id: Uuid::new_v4().to_string(),
        status: ActionStatus::Accepted,
        created_by: "client".into(),
        created_by_user_type: UserType::System,
        created_by_role: None,
        created_at_location: Some(at),
        created_at: format_timestamp_ms(t),
        declaration: decl,
        annotation: None,
        original_action_id: None,
        content: None,
        registration_number: None,
        request_id: None,
        assigned_to: None,
        custom_action_type: None,
    }
}

/// Writes a node's entries the way a node does: one signed entry per write, carrying the
/// event's automerge change.
pub(crate) struct NodeWriter {
    pub(crate) key: NodeSecretKey,
    pub(crate) head: LogHead,
    pub(crate) facility: Uuid,
    docs: std::collections::HashMap<Uuid, EventCrdt>,
    clock_ms: u64,
}

/// The facts of an event the writer created.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) id: Uuid,
    pub(crate) tracking_id: String,
}

impl NodeWriter {
    pub(crate) fn new(n: u8, facility: Uuid) -> Self {
        Self {
            key: node_key(n),
            head: LogHead::GENESIS,
            facility,
            docs: Default::default(),
            clock_ms: 1_782_896_400_000,
        }
    }

    pub(crate) fn node_id(&self) -> NodeId {
        self.key.node_id()
    }

    fn sign(
        &mut self,
        event: &Event,
        actions: Vec<ActionDocument>,
        delta: &Declaration,
    ) -> LogEntry {
        self.sign_altered(event, actions, delta, <[u8]>::to_vec)
    }

    /// [`Self::sign`], the change recorded passing through `alter` before it is signed.
    fn sign_altered(
        &mut self,
        event: &Event,
        actions: Vec<ActionDocument>,
        delta: &Declaration,
        alter: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> LogEntry {
        self.clock_ms += 1000;
        let actor = actor_for(self.key.node_id().as_bytes());
        let crdt = self
            .docs
            .entry(event.id)
            .or_insert_with(|| EventCrdt::new(actor));
        let change = alter(&crdt.record(&actions, delta, self.clock_ms as i64).unwrap());
        let payload = EntryPayload {
            event_id: event.id,
            event_type: "birth".into(),
            tracking_id: event.tracking_id.clone(),
            event_created_at: format_timestamp_ms(1_782_896_400_000),
            actions,
        };
        let entry = LogEntry::sign(
            &self.key,
            self.head.seq + 1,
            self.head.hash,
            Hlc {
                wall_ms: self.clock_ms,
                counter: 0,
            },
            event.id,
            serde_json::to_vec(&payload).unwrap(),
            Some(change),
        )
        .unwrap();
        self.head = LogHead {
            seq: entry.seq,
            hash: entry.hash(),
        };
        entry
    }

    /// An entry creating an event with `tracking_id`.
    pub(crate) fn create(&mut self, tracking_id: &str) -> (Event, LogEntry) {
        let event = Event {
            id: Uuid::new_v4(),
            tracking_id: tracking_id.to_owned(),
        };
        let create = action(ActionType::Create, self.facility, None, self.clock_ms);
        let entry = self.sign(&event, vec![create], &Declaration::new());
        (event, entry)
    }

    /// One entry creating an event with `tracking_id` and notifying it with `decl`, as a node
    /// records a health system's notification.
    pub(crate) fn create_and_notify(
        &mut self,
        tracking_id: &str,
        decl: serde_json::Value,
    ) -> (Event, LogEntry) {
        self.create_and_notify_times(tracking_id, decl, 1)
    }

    /// [`Self::create_and_notify`] whose payload carries its NOTIFY twice (the same action id):
    /// only the first copy is stored.
    pub(crate) fn create_and_notify_twice(
        &mut self,
        tracking_id: &str,
        decl: serde_json::Value,
    ) -> (Event, LogEntry) {
        self.create_and_notify_times(tracking_id, decl, 2)
    }

    /// A CREATE and `copies` copies of one NOTIFY with `decl`, in one entry.
    fn create_and_notify_times(
        &mut self,
        tracking_id: &str,
        decl: serde_json::Value,
        copies: usize,
    ) -> (Event, LogEntry) {
        let event = Event {
            id: Uuid::new_v4(),
            tracking_id: tracking_id.to_owned(),
        };
        let decl: Declaration = decl.as_object().cloned().unwrap();
        let create = action(ActionType::Create, self.facility, None, self.clock_ms);
        let notify = action(
            ActionType::Notify,
            self.facility,
            Some(decl.clone()),
            self.clock_ms,
        );
        let mut actions = vec![create];
        actions.extend(std::iter::repeat_n(notify, copies));
        let entry = self.sign(&event, actions, &decl);
        (event, entry)
    }

    /// An entry notifying `event` with `decl`.
    pub(crate) fn notify(&mut self, event: &Event, decl: serde_json::Value) -> LogEntry {
        self.notify_altered(event, decl, <[u8]>::to_vec)
    }

    /// An entry notifying `event` with `decl` whose change (signed as it is) puts into an object
    /// nobody made: automerge 0.12 panics applying it.
    pub(crate) fn notify_into_nothing(
        &mut self,
        event: &Event,
        decl: serde_json::Value,
    ) -> LogEntry {
        self.notify_altered(event, decl, |change| {
            crvs_sync::merge::testing::with_objects_at(change, 999)
        })
    }

    /// [`Self::notify`], its change passing through `alter` before it is signed.
    fn notify_altered(
        &mut self,
        event: &Event,
        decl: serde_json::Value,
        alter: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> LogEntry {
        let decl: Declaration = decl.as_object().cloned().unwrap();
        let notify = action(
            ActionType::Notify,
            self.facility,
            Some(decl.clone()),
            self.clock_ms,
        );
        self.sign_altered(event, vec![notify], &decl, alter)
    }

    /// An entry asking central to register `event` (a Requested REGISTER, as a node records it).
    pub(crate) fn request_registration(&mut self, event: &Event) -> LogEntry {
        let mut register = action(ActionType::Register, self.facility, None, self.clock_ms);
        register.status = ActionStatus::Requested;
        self.sign(event, vec![register], &Declaration::new())
    }

    /// An entry archiving `event`.
    pub(crate) fn archive(&mut self, event: &Event) -> LogEntry {
        let archive = action(ActionType::Archive, self.facility, None, self.clock_ms);
        self.sign(event, vec![archive], &Declaration::new())
    }

    /// An entry in which the node answers a registration itself (only central may).
    pub(crate) fn forge_registration(&mut self, event: &Event, number: &str) -> LogEntry {
        let mut register = action(ActionType::Register, self.facility, None, self.clock_ms);
        register.registration_number = Some(number.to_owned());
        self.sign(event, vec![register], &Declaration::new())
    }

    /// Applies `change` of another replica to this writer's copy of the event (a relay).
    pub(crate) fn observe(&mut self, event: &Event, entry: &LogEntry) {
        let actor = actor_for(self.key.node_id().as_bytes());
        let crdt = self
            .docs
            .entry(event.id)
            .or_insert_with(|| EventCrdt::new(actor));
        crdt.apply_change(entry.crdt_change.as_deref().unwrap())
            .unwrap();
    }

    /// A copy of the head's hash, for building forks.
    pub(crate) fn head_hash(&self) -> EntryHash {
        self.head.hash
    }
}
