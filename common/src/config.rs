//! Event configuration (OpenCRVS `EventConfig`) and declaration validation.
//!
//! An [`EventConfigSet`] is parsed once from JSON ([`EventConfigSet::from_json`], or
//! [`EventConfigSet::builtin`] for the embedded `config/default-events.json`). Loading checks the
//! structure (unique ids, options on SELECT fields, field references that resolve) and builds a
//! per-event index, so that [`EventConfig::validate_declaration`] does O(1) field lookups on the
//! notify hot path.
//!
//! The types serialise back to the shape OpenCRVS serves at `GET /api/events/config`: camelCase
//! keys, `{"$$field": ..}` field references, defaults (`required: false`, empty `options`)
//! omitted. OpenCRVS properties this module does not interpret (`conditionals`, `validation`,
//! `defaultValue`, `flags`, ...) are kept verbatim in `extra` maps and served unchanged. An
//! action's `deduplication` rules are typed ([`crate::dedup`]) and checked against the event's
//! fields at load.
//!
//! Validation follows `packages/commons/src/conditionals/validate.ts` and the NOTIFY middleware:
//! the error list is what OpenCRVS JSON-stringifies into the 400 `message`, e.g.
//! `[{"message":"Unexpected field","id":"foo.bar","value":"x"}]`.
//!
//! Decisions that differ from, or go beyond, OpenCRVS:
//! - Conditionals (SHOW/ENABLE) are not evaluated. A field that is only conditionally required
//!   in Farajaland is `required: false` in the builtin configuration.
//! - Display-only fields (see [`FieldType::is_display_only`]) reject any non-null value with
//!   `Unexpected field`: they are not data fields, so their id is not a valid declaration key.
//! - Field ids must be unique within an event, also across conditionally exclusive variants
//!   (Farajaland's `getIdentityFields` helper defines `<prefix>.idType` twice; we refuse that).
//! - Strings are bounded by [`TEXT_CHARS_MAX`], maps by [`DECLARATION_FIELDS_MAX`] keys.
//!
//! This module does no IO: the shells read files and pass strings in.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::dedup::{DEDUPLICATED_ACTIONS, DedupConfigError, DeduplicationConfig};

/// Most keys accepted in one declaration or annotation map, and most declaration fields one
/// event configuration may define.
///
/// The builtin birth form defines 73 fields; 500 leaves room for richer country forms while
/// bounding the work one request can cause.
pub const DECLARATION_FIELDS_MAX: usize = 500;

/// Longest accepted string, in characters, anywhere inside a field value (text, name parts,
/// address parts, file names).
///
/// The longest legitimate value is a TEXTAREA comment; 10 000 characters is several pages.
pub const TEXT_CHARS_MAX: usize = 10_000;

/// Most files accepted in one FILE_WITH_OPTIONS value.
pub const FILES_PER_FIELD_MAX: usize = 50;

/// Most keys accepted in an address's `streetLevelDetails` object.
pub const STREET_LEVEL_DETAILS_MAX: usize = 50;

/// Longest accepted EMAIL value, in bytes (RFC 5321 path limit).
const EMAIL_BYTES_MAX: usize = 254;

/// The embedded default configuration (`common/config/default-events.json`).
pub const BUILTIN_EVENTS_JSON: &str = include_str!("../config/default-events.json");

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why an event configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not JSON of the expected shape (this includes unknown field types, which
    /// read as "unknown field type `FOO`").
    #[error("invalid event configuration JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Two events share an id.
    #[error("duplicate event id `{event}`")]
    DuplicateEvent {
        /// The repeated event id.
        event: String,
    },
    /// An event id is empty.
    #[error("an event has an empty id")]
    EmptyEventId,
    /// An event's declaration has no page.
    #[error("event `{event}`: the declaration has no pages")]
    NoPages {
        /// The event id.
        event: String,
    },
    /// Two pages of one declaration share an id, or a page id is empty.
    #[error("event `{event}`: duplicate or empty page id `{page}`")]
    InvalidPageId {
        /// The event id.
        event: String,
        /// The offending page id.
        page: String,
    },
    /// A field id is empty or contains `_` (OpenCRVS `FieldId` forbids underscores).
    #[error("event `{event}`: invalid field id `{field}` (must be non-empty, without `_`)")]
    InvalidFieldId {
        /// The event id.
        event: String,
        /// The offending field id.
        field: String,
    },
    /// Two fields of one declaration (or of one review form) share an id.
    #[error("event `{event}`: duplicate field id `{field}`")]
    DuplicateField {
        /// The event id.
        event: String,
        /// The repeated field id.
        field: String,
    },
    /// A SELECT or RADIO_GROUP field has no options.
    #[error("event `{event}`: field `{field}` of type {field_type} has no options")]
    MissingOptions {
        /// The event id.
        event: String,
        /// The field id.
        field: String,
        /// The field's type.
        field_type: FieldType,
    },
    /// The declaration defines more fields than [`DECLARATION_FIELDS_MAX`].
    #[error("event `{event}`: {count} declaration fields, more than the maximum {max}")]
    TooManyFields {
        /// The event id.
        event: String,
        /// How many fields the declaration defines.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// `dateOfEvent` or `placeOfEvent` names a field the declaration does not define.
    #[error("event `{event}`: {property} refers to unknown field `{field}`")]
    UnknownFieldReference {
        /// The event id.
        event: String,
        /// `dateOfEvent` or `placeOfEvent`.
        property: &'static str,
        /// The referenced field id.
        field: String,
    },
    /// `dateOfEvent` names a field that is not a DATE.
    #[error("event `{event}`: dateOfEvent field `{field}` is {field_type}, not DATE")]
    DateOfEventNotDate {
        /// The event id.
        event: String,
        /// The referenced field id.
        field: String,
        /// Its type.
        field_type: FieldType,
    },
    /// Two action configurations share a type (CUSTOM actions may repeat).
    #[error("event `{event}`: duplicate action `{action_type}`")]
    DuplicateAction {
        /// The event id.
        event: String,
        /// The repeated action type.
        action_type: String,
    },
    /// An action's `deduplication` rules do not fit the event's declaration.
    #[error("event `{event}`: {action_type} deduplication: {source}")]
    Deduplication {
        /// The event id.
        event: String,
        /// The action carrying the rules.
        action_type: String,
        /// What is wrong with them.
        source: DedupConfigError,
    },
    /// `deduplication` on an action other than DECLARE, VALIDATE or REGISTER.
    #[error(
        "event `{event}`: {action_type} cannot carry deduplication rules (only DECLARE, VALIDATE and REGISTER)"
    )]
    DeduplicationNotAllowed {
        /// The event id.
        event: String,
        /// The action type.
        action_type: String,
    },
}

/// A field type name that is not one of OpenCRVS's [`FieldType`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown field type `{0}`")]
pub struct UnknownFieldType(pub String);

// ---------------------------------------------------------------------------------------------
// Field types
// ---------------------------------------------------------------------------------------------

/// Defines [`FieldType`] with its OpenCRVS wire names in one place.
macro_rules! field_types {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// An OpenCRVS field type (`packages/commons/src/events/FieldType.ts`), serialised with its
        /// SCREAMING_SNAKE name. Unknown names fail to deserialise.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum FieldType {
            $($(#[doc = $doc])* $variant,)*
        }

        impl FieldType {
            /// Every field type, in OpenCRVS's declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The OpenCRVS wire name, e.g. `"FILE_WITH_OPTIONS"`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }

        impl FromStr for FieldType {
            type Err = UnknownFieldType;

            fn from_str(name: &str) -> Result<Self, Self::Err> {
                match name {
                    $($name => Ok(Self::$variant),)*
                    _ => Err(UnknownFieldType(name.to_owned())),
                }
            }
        }
    };
}

field_types! {
    /// A person's name: `{firstname, surname, middlename?}`.
    Name => "NAME",
    /// A phone number (string).
    Phone => "PHONE",
    /// An identity document number (string).
    Id => "ID",
    /// A DOMESTIC or INTERNATIONAL address object.
    Address => "ADDRESS",
    /// Single-line text.
    Text => "TEXT",
    /// A JSON number.
    Number => "NUMBER",
    /// `{numericValue, unit}`.
    NumberWithUnit => "NUMBER_WITH_UNIT",
    /// Multi-line text.
    Textarea => "TEXTAREA",
    /// An email address.
    Email => "EMAIL",
    /// A calendar date `YYYY-MM-DD`.
    Date => "DATE",
    /// `{age, asOfDateRef}`.
    Age => "AGE",
    /// `{start, end}` dates, or one date.
    DateRange => "DATE_RANGE",
    /// A named range such as `last7Days`.
    SelectDateRange => "SELECT_DATE_RANGE",
    /// A time of day `HH:mm`.
    Time => "TIME",
    /// Display only: an image.
    ImageView => "IMAGE_VIEW",
    /// Display only: a paragraph of text.
    Paragraph => "PARAGRAPH",
    /// Display only: a heading.
    Heading => "HEADING",
    /// Display only: a page header.
    PageHeader => "PAGE_HEADER",
    /// One of `options` (string), shown as radio buttons.
    RadioGroup => "RADIO_GROUP",
    /// A group of sub-values (object).
    FieldGroup => "FIELD_GROUP",
    /// An uploaded file `{path, originalFilename, type}`.
    File => "FILE",
    /// A list of uploaded files, each with an `option`.
    FileWithOptions => "FILE_WITH_OPTIONS",
    /// Display only: a bullet list.
    BulletList => "BULLET_LIST",
    /// A boolean.
    Checkbox => "CHECKBOX",
    /// One of `options` (string); membership is not checked, as in OpenCRVS.
    Select => "SELECT",
    /// A country code (string, ISO 3166-1 alpha-3 by convention).
    Country => "COUNTRY",
    /// A location UUID.
    Location => "LOCATION",
    /// Display only: a divider line.
    Divider => "DIVIDER",
    /// An administrative area UUID.
    AdministrativeArea => "ADMINISTRATIVE_AREA",
    /// A health facility UUID (deprecated in OpenCRVS, use LOCATION).
    Facility => "FACILITY",
    /// A CRVS office UUID (deprecated in OpenCRVS, use LOCATION).
    Office => "OFFICE",
    /// A signature image, shaped like FILE.
    Signature => "SIGNATURE",
    /// Display only: a summary of other fields' values.
    Data => "DATA",
    /// A button; its value is a click counter (number).
    Button => "BUTTON",
    /// `{label, value}`.
    Autocomplete => "AUTOCOMPLETE",
    /// A search request's state, shaped like HTTP.
    Search => "SEARCH",
    /// Display only: a print button.
    AlphaPrintButton => "ALPHA_PRINT_BUTTON",
    /// An HTTP request's state `{loading?, error?, data?}`.
    Http => "HTTP",
    /// Display only: a link.
    LinkButton => "LINK_BUTTON",
    /// `verified`, `authenticated`, `failed` or `pending`.
    VerificationStatus => "VERIFICATION_STATUS",
    /// Query parameters read from the URL: `{data: {key: string}}`.
    QueryParamReader => "QUERY_PARAM_READER",
    /// A scanned QR code: `{data}`.
    QrReader => "QR_READER",
    /// A read identity document: `{data}`.
    IdReader => "ID_READER",
    /// Display only: a loading indicator.
    Loader => "LOADER",
    /// A hidden, derived string (e.g. `child.birthLocationId`).
    AlphaHidden => "ALPHA_HIDDEN",
    /// A user role id (string).
    UserRole => "USER_ROLE",
    /// A country-defined component; its value is not checked.
    Custom => "CUSTOM",
}

/// What a field type's value must look like; private, derived from [`FieldType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    /// Display only: no value accepted.
    DisplayOnly,
    Text,
    Uuid,
    Email,
    Date,
    Time,
    Number,
    Boolean,
    Name,
    Address,
    Age,
    File,
    FileWithOptions,
    DateRange,
    SelectDateRange,
    NumberWithUnit,
    Http,
    QueryParamReader,
    DataReader,
    VerificationStatus,
    Autocomplete,
    Object,
    Any,
}

impl FieldType {
    /// True for types that only display something (PARAGRAPH, HEADING, PAGE_HEADER, DIVIDER,
    /// BULLET_LIST, IMAGE_VIEW, DATA, ALPHA_PRINT_BUTTON, LINK_BUTTON, LOADER): they never
    /// carry a value, so a non-null value for them is `Unexpected field`.
    pub const fn is_display_only(self) -> bool {
        matches!(self.value_kind(), ValueKind::DisplayOnly)
    }

    /// The value-shape table of opencrvs-api.md §5.1 (`FieldTypeMapping.ts`).
    const fn value_kind(self) -> ValueKind {
        match self {
            Self::Name => ValueKind::Name,
            Self::Phone
            | Self::Id
            | Self::Text
            | Self::Textarea
            | Self::RadioGroup
            | Self::Select
            | Self::Country
            | Self::AlphaHidden
            | Self::UserRole => ValueKind::Text,
            Self::Address => ValueKind::Address,
            Self::Number | Self::Button => ValueKind::Number,
            Self::NumberWithUnit => ValueKind::NumberWithUnit,
            Self::Email => ValueKind::Email,
            Self::Date => ValueKind::Date,
            Self::Age => ValueKind::Age,
            Self::DateRange => ValueKind::DateRange,
            Self::SelectDateRange => ValueKind::SelectDateRange,
            Self::Time => ValueKind::Time,
            Self::ImageView
            | Self::Paragraph
            | Self::Heading
            | Self::PageHeader
            | Self::BulletList
            | Self::Divider
            | Self::Data
            | Self::AlphaPrintButton
            | Self::LinkButton
            | Self::Loader => ValueKind::DisplayOnly,
            Self::FieldGroup => ValueKind::Object,
            Self::File | Self::Signature => ValueKind::File,
            Self::FileWithOptions => ValueKind::FileWithOptions,
            Self::Checkbox => ValueKind::Boolean,
            Self::Location | Self::AdministrativeArea | Self::Facility | Self::Office => {
                ValueKind::Uuid
            }
            Self::Autocomplete => ValueKind::Autocomplete,
            Self::Search | Self::Http => ValueKind::Http,
            Self::VerificationStatus => ValueKind::VerificationStatus,
            Self::QueryParamReader => ValueKind::QueryParamReader,
            Self::QrReader | Self::IdReader => ValueKind::DataReader,
            Self::Custom => ValueKind::Any,
        }
    }

    /// True for types whose configuration must list `options`.
    const fn needs_options(self) -> bool {
        matches!(self, Self::Select | Self::RadioGroup)
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FieldType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FieldType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration types
// ---------------------------------------------------------------------------------------------

/// A translatable message (OpenCRVS `TranslationConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TranslationConfig {
    /// Message id, e.g. `event.birth.label`.
    pub id: String,
    /// The message in the default language.
    pub default_message: String,
    /// A note for translators (and, in the builtin configuration, for integrators).
    #[serde(default)]
    pub description: String,
}

/// A reference to a declaration field, serialised as OpenCRVS's `field('child.dob')`:
/// `{"$$field": "child.dob"}` (with an optional `$$subfield` path into an object value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldReference {
    /// The referenced field id.
    #[serde(rename = "$$field")]
    pub field: String,
    /// Path inside the field's object value, e.g. `["administrativeArea"]`.
    #[serde(rename = "$$subfield", default, skip_serializing_if = "Vec::is_empty")]
    pub subfield: Vec<String>,
}

/// One option of a SELECT, RADIO_GROUP or FILE_WITH_OPTIONS field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectOption {
    /// The value stored in the declaration, e.g. `"HEALTH_FACILITY"`.
    pub value: String,
    /// What the user sees.
    pub label: TranslationConfig,
}

/// One form field (OpenCRVS `FieldConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldConfig {
    /// Field id; the dots are part of the name, not nesting (`child.birthLocation.other`).
    pub id: String,
    /// The field type, which fixes the shape of its value.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// The field's label.
    pub label: TranslationConfig,
    /// Must have a value for DECLARE (ignored for NOTIFY).
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    /// Excluded from search results.
    #[serde(default, skip_serializing_if = "is_false")]
    pub secured: bool,
    /// Choices of a SELECT / RADIO_GROUP / FILE_WITH_OPTIONS field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<SelectOption>,
    /// Type-specific settings, opaque here (e.g. `{"locationTypes": ["HEALTH_FACILITY"]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<Value>,
    /// Other OpenCRVS properties (`conditionals`, `validation`, `defaultValue`, ...), kept
    /// verbatim and not interpreted.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One page of the declaration form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageConfig {
    /// Page id, e.g. `child`.
    pub id: String,
    /// `FORM` (the default in OpenCRVS) or `VERIFICATION`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub page_type: Option<PageType>,
    /// The page title.
    pub title: TranslationConfig,
    /// The page's fields, in display order.
    pub fields: Vec<FieldConfig>,
    /// Other OpenCRVS properties (`conditionals`, `actions`, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The kind of a declaration page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PageType {
    /// An ordinary form page.
    Form,
    /// A page where the user verifies documents.
    Verification,
}

/// The declaration form of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeclarationConfig {
    /// The form's label.
    pub label: TranslationConfig,
    /// The pages, in order; at least one.
    pub pages: Vec<PageConfig>,
}

/// The review form of an action (its annotation fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewConfig {
    /// The review page title.
    pub title: TranslationConfig,
    /// The annotation fields, e.g. `review.comment` and `review.signature`.
    pub fields: Vec<FieldConfig>,
}

/// The configuration of one action type of an event (OpenCRVS `ActionConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionConfig {
    /// The action type, e.g. `DECLARE` (OpenCRVS `ActionType`).
    #[serde(rename = "type")]
    pub action_type: String,
    /// The action's label.
    pub label: TranslationConfig,
    /// The review form; its fields are the action's annotation fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewConfig>,
    /// Duplicate detection rules (DECLARE, VALIDATE and REGISTER only), checked against the
    /// declaration's fields at load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduplication: Option<DeduplicationConfig>,
    /// Other OpenCRVS properties (`flags`, `conditionals`, `customActionType`, ...), kept
    /// verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The wire form of an [`EventConfig`]; private so that every `EventConfig` has its index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventConfigWire {
    id: String,
    label: TranslationConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<TranslationConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    date_of_event: Option<FieldReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    place_of_event: Option<FieldReference>,
    declaration: DeclarationConfig,
    #[serde(default)]
    actions: Vec<ActionConfig>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// Where a declaration field sits in the pages.
#[derive(Debug, Clone, Copy)]
struct FieldPosition {
    page_idx: usize,
    field_idx: usize,
}

/// Lookup tables built once at load time; never serialised.
#[derive(Debug, Clone, Default)]
struct EventIndex {
    /// Declaration field id → position.
    fields: HashMap<String, FieldPosition>,
    /// Required declaration fields, in configuration order.
    required_fields: Vec<FieldPosition>,
    /// Action type → index in `actions` (first one for repeated CUSTOM actions).
    actions: HashMap<String, usize>,
    /// Per action (parallel to `actions`): review field id → index in `review.fields`.
    review_fields: Vec<HashMap<String, usize>>,
    date_of_event: Option<FieldPosition>,
    place_of_event: Option<FieldPosition>,
}

/// The configuration of one event type (OpenCRVS `EventConfig`), with its lookup index.
///
/// Only obtainable through loading (serde or [`EventConfigSet::from_json`]), which checks the
/// structure; the fields are read-only so the index stays valid.
#[derive(Debug, Clone)]
pub struct EventConfig {
    wire: EventConfigWire,
    index: EventIndex,
}

/// All configured event types.
#[derive(Debug, Clone, Default)]
pub struct EventConfigSet {
    events: Vec<EventConfig>,
    by_id: HashMap<String, usize>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

impl EventConfigSet {
    /// Parses a JSON array of event configurations (the `GET /api/events/config` body) and
    /// checks it: unique event ids, at least one page per event, unique page and field ids,
    /// options on SELECT / RADIO_GROUP fields, `dateOfEvent` / `placeOfEvent` resolvable.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let wires: Vec<EventConfigWire> = serde_json::from_str(json)?;
        let events = wires
            .into_iter()
            .map(EventConfig::from_wire)
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_events(events)
    }

    /// Builds a set from already loaded events; fails on a duplicate event id.
    pub fn from_events(events: Vec<EventConfig>) -> Result<Self, ConfigError> {
        let mut by_id = HashMap::with_capacity(events.len());
        for (event_idx, event) in events.iter().enumerate() {
            if by_id.insert(event.id().to_owned(), event_idx).is_some() {
                return Err(ConfigError::DuplicateEvent {
                    event: event.id().to_owned(),
                });
            }
        }
        Ok(Self { events, by_id })
    }

    /// The embedded default configuration (`birth` and `death`, Farajaland field ids).
    pub fn builtin() -> Self {
        // The embedded file is a build input checked by the `builtin_*` tests, so failing here
        // is a build defect, not a runtime condition.
        Self::from_json(BUILTIN_EVENTS_JSON).expect("embedded default-events.json is valid")
    }

    /// The configuration of `event_type` (e.g. `"birth"`).
    pub fn get(&self, event_type: &str) -> Option<&EventConfig> {
        self.by_id
            .get(event_type)
            .map(|&event_idx| &self.events[event_idx])
    }

    /// All events, in file order.
    pub fn events(&self) -> &[EventConfig] {
        &self.events
    }
}

impl Serialize for EventConfigSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.events.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for EventConfigSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let events = Vec::<EventConfig>::deserialize(deserializer)?;
        Self::from_events(events).map_err(de::Error::custom)
    }
}

impl Serialize for EventConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.wire.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for EventConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = EventConfigWire::deserialize(deserializer)?;
        Self::from_wire(wire).map_err(de::Error::custom)
    }
}

impl PartialEq for EventConfig {
    fn eq(&self, other: &Self) -> bool {
        // The index is derived from the wire form.
        self.wire == other.wire
    }
}

impl EventConfig {
    /// Checks one event and builds its index.
    fn from_wire(wire: EventConfigWire) -> Result<Self, ConfigError> {
        let event = wire.id.as_str();
        if event.is_empty() {
            return Err(ConfigError::EmptyEventId);
        }
        if wire.declaration.pages.is_empty() {
            return Err(ConfigError::NoPages {
                event: event.to_owned(),
            });
        }

        let mut index = EventIndex::default();
        let mut page_ids = HashSet::new();
        for (page_idx, page) in wire.declaration.pages.iter().enumerate() {
            if page.id.is_empty() || !page_ids.insert(page.id.as_str()) {
                return Err(ConfigError::InvalidPageId {
                    event: event.to_owned(),
                    page: page.id.clone(),
                });
            }
            for (field_idx, field) in page.fields.iter().enumerate() {
                check_field(event, field)?;
                let position = FieldPosition {
                    page_idx,
                    field_idx,
                };
                if index.fields.insert(field.id.clone(), position).is_some() {
                    return Err(ConfigError::DuplicateField {
                        event: event.to_owned(),
                        field: field.id.clone(),
                    });
                }
                if field.required {
                    index.required_fields.push(position);
                }
            }
        }
        if index.fields.len() > DECLARATION_FIELDS_MAX {
            return Err(ConfigError::TooManyFields {
                event: event.to_owned(),
                count: index.fields.len(),
                max: DECLARATION_FIELDS_MAX,
            });
        }

        for (action_idx, action) in wire.actions.iter().enumerate() {
            let first = index.actions.insert(action.action_type.clone(), action_idx);
            if let Some(first_idx) = first {
                if action.action_type != "CUSTOM" {
                    return Err(ConfigError::DuplicateAction {
                        event: event.to_owned(),
                        action_type: action.action_type.clone(),
                    });
                }
                // Repeated CUSTOM actions: lookups by type keep the first one.
                index.actions.insert(action.action_type.clone(), first_idx);
            }
            let review_fields = action.review.as_ref().map_or(&[][..], |r| &r.fields);
            let mut ids = HashMap::with_capacity(review_fields.len());
            for (field_idx, field) in review_fields.iter().enumerate() {
                check_field(event, field)?;
                if ids.insert(field.id.clone(), field_idx).is_some() {
                    return Err(ConfigError::DuplicateField {
                        event: event.to_owned(),
                        field: field.id.clone(),
                    });
                }
            }
            index.review_fields.push(ids);
        }

        index.date_of_event =
            resolve_reference(event, &index, wire.date_of_event.as_ref(), "dateOfEvent")?;
        index.place_of_event =
            resolve_reference(event, &index, wire.place_of_event.as_ref(), "placeOfEvent")?;
        let config = Self { wire, index };
        if let Some(field) = config.date_of_event_field()
            && field.field_type != FieldType::Date
        {
            return Err(ConfigError::DateOfEventNotDate {
                event: config.id().to_owned(),
                field: field.id.clone(),
                field_type: field.field_type,
            });
        }
        for action in config.actions() {
            let Some(dedup) = &action.deduplication else {
                continue;
            };
            if !DEDUPLICATED_ACTIONS.contains(&action.action_type.as_str()) {
                return Err(ConfigError::DeduplicationNotAllowed {
                    event: config.id().to_owned(),
                    action_type: action.action_type.clone(),
                });
            }
            dedup
                .validate(&config)
                .map_err(|source| ConfigError::Deduplication {
                    event: config.id().to_owned(),
                    action_type: action.action_type.clone(),
                    source,
                })?;
        }
        Ok(config)
    }

    /// The event type id, e.g. `"birth"`.
    pub fn id(&self) -> &str {
        &self.wire.id
    }

    /// The event's label.
    pub fn label(&self) -> &TranslationConfig {
        &self.wire.label
    }

    /// The record title template, e.g. `{child.name.firstname} {child.name.surname}`.
    pub fn title(&self) -> Option<&TranslationConfig> {
        self.wire.title.as_ref()
    }

    /// The declaration form.
    pub fn declaration(&self) -> &DeclarationConfig {
        &self.wire.declaration
    }

    /// The action configurations, in file order.
    pub fn actions(&self) -> &[ActionConfig] {
        &self.wire.actions
    }

    /// The configuration of `action_type` (the first one for CUSTOM).
    pub fn action(&self, action_type: &str) -> Option<&ActionConfig> {
        let &action_idx = self.index.actions.get(action_type)?;
        Some(&self.wire.actions[action_idx])
    }

    /// The declaration field `id` (any type, display-only included). O(1).
    pub fn field(&self, id: &str) -> Option<&FieldConfig> {
        self.index
            .fields
            .get(id)
            .map(|&position| self.field_at(position))
    }

    /// All declaration fields, page by page, in configuration order.
    pub fn declaration_fields(&self) -> impl Iterator<Item = &FieldConfig> {
        self.wire
            .declaration
            .pages
            .iter()
            .flat_map(|page| page.fields.iter())
    }

    /// The annotation (review) fields of `action_type`. NOTIFY without a review of its own
    /// uses DECLARE's, as in OpenCRVS. Empty if the action has no review form.
    pub fn review_fields(&self, action_type: &str) -> &[FieldConfig] {
        match self.review_action(action_type) {
            Some(action_idx) => self.wire.actions[action_idx]
                .review
                .as_ref()
                .map_or(&[][..], |review| &review.fields),
            None => &[],
        }
    }

    /// Ids of the declaration fields marked `secured` (kept out of search results).
    pub fn secured_field_ids(&self) -> impl Iterator<Item = &str> {
        self.declaration_fields()
            .filter(|field| field.secured)
            .map(|field| field.id.as_str())
    }

    /// The field `dateOfEvent` refers to (a DATE), if configured.
    pub fn date_of_event_field(&self) -> Option<&FieldConfig> {
        self.index
            .date_of_event
            .map(|position| self.field_at(position))
    }

    /// The field `placeOfEvent` refers to, if configured.
    pub fn place_of_event_field(&self) -> Option<&FieldConfig> {
        self.index
            .place_of_event
            .map(|position| self.field_at(position))
    }

    fn field_at(&self, position: FieldPosition) -> &FieldConfig {
        &self.wire.declaration.pages[position.page_idx].fields[position.field_idx]
    }

    /// Index of the action whose review form holds `action_type`'s annotation fields.
    fn review_action(&self, action_type: &str) -> Option<usize> {
        let own = self
            .index
            .actions
            .get(action_type)
            .copied()
            .filter(|&action_idx| self.wire.actions[action_idx].review.is_some());
        match own {
            Some(action_idx) => Some(action_idx),
            None if action_type == "NOTIFY" => self.index.actions.get("DECLARE").copied(),
            None => None,
        }
    }
}

/// Checks one field's own configuration.
fn check_field(event: &str, field: &FieldConfig) -> Result<(), ConfigError> {
    if field.id.is_empty() || field.id.contains('_') {
        return Err(ConfigError::InvalidFieldId {
            event: event.to_owned(),
            field: field.id.clone(),
        });
    }
    if field.field_type.needs_options() && field.options.is_empty() {
        return Err(ConfigError::MissingOptions {
            event: event.to_owned(),
            field: field.id.clone(),
            field_type: field.field_type,
        });
    }
    Ok(())
}

fn resolve_reference(
    event: &str,
    index: &EventIndex,
    reference: Option<&FieldReference>,
    property: &'static str,
) -> Result<Option<FieldPosition>, ConfigError> {
    let Some(reference) = reference else {
        return Ok(None);
    };
    match index.fields.get(&reference.field) {
        Some(&position) => Ok(Some(position)),
        None => Err(ConfigError::UnknownFieldReference {
            event: event.to_owned(),
            property,
            field: reference.field.clone(),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// How strictly a declaration is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationMode {
    /// NOTIFY: partial data; `required` is ignored.
    Notify,
    /// DECLARE (and later complete-record actions): `required` is enforced. Pass the declaration
    /// as it stands after the action (earlier accepted data merged with this action's).
    Declare,
}

/// The message of a [`FieldIssue`], with OpenCRVS's exact wording (`validate.ts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueMessage {
    /// The key is not a (data) field of the form.
    UnexpectedField,
    /// The value does not have the shape the field type needs.
    InvalidInput,
    /// A required field is missing, null or empty (DECLARE only).
    Required,
    /// A DATE value that is not a real `YYYY-MM-DD` calendar date.
    InvalidDate,
    /// An EMAIL value that is not a plausible address.
    InvalidEmail,
}

impl IssueMessage {
    /// The wire text, e.g. `"Unexpected field"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnexpectedField => "Unexpected field",
            Self::InvalidInput => "Invalid input",
            Self::Required => "Required",
            Self::InvalidDate => "Invalid date field",
            Self::InvalidEmail => "Invalid email address",
        }
    }
}

impl fmt::Display for IssueMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One validation failure, serialised exactly as OpenCRVS does:
/// `{"message":"Unexpected field","id":"foo.bar","value":"x"}`. A null `value` means "absent"
/// and is omitted (as for `Required`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldIssue {
    /// The error text (see [`IssueMessage`]).
    pub message: String,
    /// The field id (or `declaration` / `annotation` for a map that is too large).
    pub id: String,
    /// The offending value; `Value::Null` when there is none.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub value: Value,
}

impl FieldIssue {
    /// An issue with `message` for field `id`.
    pub fn new(message: IssueMessage, id: impl Into<String>, value: Value) -> Self {
        Self {
            message: message.as_str().to_owned(),
            id: id.into(),
            value,
        }
    }

    /// The JSON array OpenCRVS puts, as a string, in the 400 error body's `message`.
    pub fn list_to_json(issues: &[Self]) -> String {
        // Serialising strings and `Value`s (whose map keys are strings) cannot fail.
        serde_json::to_string(issues).expect("field issues serialise to JSON")
    }
}

impl EventConfig {
    /// Validates a declaration (a flat `{fieldId: value}` map) as OpenCRVS does for NOTIFY
    /// ([`ValidationMode::Notify`]) or DECLARE ([`ValidationMode::Declare`]).
    ///
    /// Every key must be a declaration field; every non-null value must match its field type;
    /// `null` clears a value and is always accepted, except that in Declare mode required
    /// fields must end up non-empty. Issues come in the map's iteration order (serde_json's
    /// `Map`, sorted unless its `preserve_order` feature is on), then `Required` issues in
    /// configuration order. SELECT option membership is not checked.
    pub fn validate_declaration(
        &self,
        declaration: &Map<String, Value>,
        mode: ValidationMode,
    ) -> Result<(), Vec<FieldIssue>> {
        let required = self
            .index
            .required_fields
            .iter()
            .map(|&position| self.field_at(position));
        validate_values(
            "declaration",
            declaration,
            |id| self.field(id),
            required,
            mode,
        )
    }

    /// Validates an action's annotation: keys must be the review fields of `action_type`
    /// (DECLARE's for NOTIFY), values are checked as in [`Self::validate_declaration`].
    pub fn validate_annotation(
        &self,
        action_type: &str,
        annotation: &Map<String, Value>,
        mode: ValidationMode,
    ) -> Result<(), Vec<FieldIssue>> {
        let review_action = self.review_action(action_type);
        let fields = self.review_fields(action_type);
        let lookup = |id: &str| {
            let action_idx = review_action?;
            let &field_idx = self.index.review_fields[action_idx].get(id)?;
            fields.get(field_idx)
        };
        let required = fields.iter().filter(|field| field.required);
        validate_values("annotation", annotation, lookup, required, mode)
    }
}

/// The shared loop of declaration and annotation validation.
fn validate_values<'a>(
    map_name: &str,
    values: &Map<String, Value>,
    lookup: impl Fn(&str) -> Option<&'a FieldConfig>,
    required: impl Iterator<Item = &'a FieldConfig>,
    mode: ValidationMode,
) -> Result<(), Vec<FieldIssue>> {
    if values.len() > DECLARATION_FIELDS_MAX {
        let key_count = Value::from(values.len());
        return Err(vec![FieldIssue::new(
            IssueMessage::InvalidInput,
            map_name,
            key_count,
        )]);
    }

    let mut issues = Vec::new();
    for (id, value) in values {
        let outcome = match lookup(id) {
            None => Err(IssueMessage::UnexpectedField),
            Some(field) => check_value(field.field_type.value_kind(), value),
        };
        if let Err(message) = outcome {
            issues.push(FieldIssue::new(message, id.clone(), value.clone()));
        }
    }

    if mode == ValidationMode::Declare {
        let invalid_ids: HashSet<&str> = issues.iter().map(|issue| issue.id.as_str()).collect();
        let mut missing = Vec::new();
        for field in required {
            let value = values.get(&field.id);
            if !invalid_ids.contains(field.id.as_str())
                && is_empty_value(field.field_type.value_kind(), value)
            {
                missing.push(FieldIssue::new(
                    IssueMessage::Required,
                    field.id.clone(),
                    Value::Null,
                ));
            }
        }
        issues.extend(missing);
    }

    if issues.is_empty() {
        Ok(())
    } else {
        Err(issues)
    }
}

/// Structural check of one non-absent value against its field's value kind.
fn check_value(kind: ValueKind, value: &Value) -> Result<(), IssueMessage> {
    use IssueMessage::{InvalidDate, InvalidEmail, InvalidInput, UnexpectedField};

    if value.is_null() {
        return Ok(());
    }
    match kind {
        ValueKind::DisplayOnly => Err(UnexpectedField),
        ValueKind::Text => text(value).map(drop),
        ValueKind::Uuid => uuid(value),
        ValueKind::Email => {
            let address = text(value)?;
            if is_plausible_email(address) {
                Ok(())
            } else {
                Err(InvalidEmail)
            }
        }
        ValueKind::Date => {
            let date = text(value)?;
            if is_calendar_date(date) {
                Ok(())
            } else {
                Err(InvalidDate)
            }
        }
        ValueKind::Time => {
            let time = text(value)?;
            if is_time_of_day(time) {
                Ok(())
            } else {
                Err(InvalidInput)
            }
        }
        ValueKind::Number => number(value),
        ValueKind::Boolean => {
            if value.is_boolean() {
                Ok(())
            } else {
                Err(InvalidInput)
            }
        }
        ValueKind::Name => check_name(value),
        ValueKind::Address => check_address(value),
        ValueKind::Age => {
            let age = object_with_keys(value, &["age", "asOfDateRef"])?;
            number(field_value(age, "age"))?;
            text(field_value(age, "asOfDateRef")).map(drop)
        }
        ValueKind::File => check_file(value, false),
        ValueKind::FileWithOptions => {
            let files = value.as_array().ok_or(InvalidInput)?;
            if files.len() > FILES_PER_FIELD_MAX {
                return Err(InvalidInput);
            }
            files.iter().try_for_each(|file| check_file(file, true))
        }
        ValueKind::DateRange => check_date_range(value),
        ValueKind::SelectDateRange => one_of(
            value,
            &["last7Days", "last30Days", "last90Days", "last365Days"],
        ),
        ValueKind::NumberWithUnit => {
            let number_with_unit = object_with_keys(value, &["numericValue", "unit"])?;
            optional(number_with_unit.get("numericValue"), number)?;
            optional(number_with_unit.get("unit"), |unit| text(unit).map(drop))
        }
        ValueKind::Http => check_http(value),
        ValueKind::QueryParamReader => {
            let reader = object_with_keys(value, &["data"])?;
            let params = field_value(reader, "data")
                .as_object()
                .ok_or(InvalidInput)?;
            if params.len() > STREET_LEVEL_DETAILS_MAX {
                return Err(InvalidInput);
            }
            params.values().try_for_each(|param| text(param).map(drop))
        }
        ValueKind::DataReader => object_with_keys(value, &["data"]).map(drop),
        ValueKind::VerificationStatus => {
            one_of(value, &["verified", "authenticated", "failed", "pending"])
        }
        ValueKind::Autocomplete => {
            let choice = object_with_keys(value, &["label", "value"])?;
            text(field_value(choice, "label"))?;
            text(field_value(choice, "value")).map(drop)
        }
        ValueKind::Object => {
            if value.is_object() {
                Ok(())
            } else {
                Err(InvalidInput)
            }
        }
        ValueKind::Any => Ok(()),
    }
}

/// Declare mode: whether a required field's value counts as missing.
fn is_empty_value(kind: ValueKind, value: Option<&Value>) -> bool {
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return true;
    };
    match kind {
        ValueKind::Text
        | ValueKind::Uuid
        | ValueKind::Email
        | ValueKind::Date
        | ValueKind::Time
        | ValueKind::SelectDateRange
        | ValueKind::VerificationStatus => is_blank(value),
        ValueKind::Name => ["firstname", "surname"]
            .iter()
            .any(|part| value.get(part).is_none_or(is_blank)),
        ValueKind::Address => {
            let domestic = value.get("addressType").and_then(Value::as_str) == Some("DOMESTIC");
            value.get("country").is_none_or(is_blank)
                || (domestic && value.get("administrativeArea").is_none_or(is_blank))
        }
        ValueKind::FileWithOptions => value.as_array().is_some_and(Vec::is_empty),
        ValueKind::DisplayOnly
        | ValueKind::Number
        | ValueKind::Boolean
        | ValueKind::Age
        | ValueKind::File
        | ValueKind::DateRange
        | ValueKind::NumberWithUnit
        | ValueKind::Http
        | ValueKind::QueryParamReader
        | ValueKind::DataReader
        | ValueKind::Autocomplete
        | ValueKind::Object
        | ValueKind::Any => false,
    }
}

/// Null, or a string of only whitespace (OpenCRVS `NonEmptyTextValue` trims).
fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => text.trim().is_empty(),
        _ => false,
    }
}

/// `value[key]`, or `Null` when absent.
fn field_value<'a>(object: &'a Map<String, Value>, key: &str) -> &'a Value {
    object.get(key).unwrap_or(&Value::Null)
}

/// A string of at most [`TEXT_CHARS_MAX`] characters.
fn text(value: &Value) -> Result<&str, IssueMessage> {
    let text = value.as_str().ok_or(IssueMessage::InvalidInput)?;
    // Characters never outnumber bytes, so the count is only needed for long strings.
    if text.len() > TEXT_CHARS_MAX && text.chars().count() > TEXT_CHARS_MAX {
        return Err(IssueMessage::InvalidInput);
    }
    Ok(text)
}

fn number(value: &Value) -> Result<(), IssueMessage> {
    if value.is_number() {
        Ok(())
    } else {
        Err(IssueMessage::InvalidInput)
    }
}

/// A hyphenated UUID string (`8-4-4-4-12` hex digits; version and variant not checked).
fn uuid(value: &Value) -> Result<(), IssueMessage> {
    let text = text(value)?;
    // uuid's parser also takes the simple, braced and URN forms; only the 36-character form is
    // hyphenated.
    if text.len() == 36 && uuid::Uuid::try_parse(text).is_ok() {
        Ok(())
    } else {
        Err(IssueMessage::InvalidInput)
    }
}

/// Applies `check` to a present, non-null value.
fn optional(
    value: Option<&Value>,
    check: impl FnOnce(&Value) -> Result<(), IssueMessage>,
) -> Result<(), IssueMessage> {
    match value {
        None | Some(Value::Null) => Ok(()),
        Some(value) => check(value),
    }
}

fn one_of(value: &Value, allowed: &[&str]) -> Result<(), IssueMessage> {
    let text = text(value)?;
    if allowed.contains(&text) {
        Ok(())
    } else {
        Err(IssueMessage::InvalidInput)
    }
}

/// An object whose keys are all in `allowed`.
fn object_with_keys<'a>(
    value: &'a Value,
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, IssueMessage> {
    let object = value.as_object().ok_or(IssueMessage::InvalidInput)?;
    if object.keys().all(|key| allowed.contains(&key.as_str())) {
        Ok(object)
    } else {
        Err(IssueMessage::InvalidInput)
    }
}

/// NAME, update form: `{firstname?, surname?, middlename?}`, each part a string or null.
fn check_name(value: &Value) -> Result<(), IssueMessage> {
    let name = object_with_keys(value, &["firstname", "surname", "middlename"])?;
    name.values()
        .try_for_each(|part| optional(Some(part), |part| text(part).map(drop)))
}

/// ADDRESS, update form: DOMESTIC `{addressType, country?, administrativeArea?,
/// streetLevelDetails?}` or INTERNATIONAL (no `administrativeArea`).
fn check_address(value: &Value) -> Result<(), IssueMessage> {
    let object = value.as_object().ok_or(IssueMessage::InvalidInput)?;
    let domestic = match field_value(object, "addressType").as_str() {
        Some("DOMESTIC") => true,
        Some("INTERNATIONAL") => false,
        _ => return Err(IssueMessage::InvalidInput),
    };
    let allowed: &[&str] = if domestic {
        &[
            "addressType",
            "country",
            "administrativeArea",
            "streetLevelDetails",
        ]
    } else {
        &["addressType", "country", "streetLevelDetails"]
    };
    let address = object_with_keys(value, allowed)?;
    optional(address.get("country"), |country| text(country).map(drop))?;
    optional(address.get("administrativeArea"), uuid)?;
    optional(address.get("streetLevelDetails"), |details| {
        let details = details.as_object().ok_or(IssueMessage::InvalidInput)?;
        if details.len() > STREET_LEVEL_DETAILS_MAX {
            return Err(IssueMessage::InvalidInput);
        }
        details
            .values()
            .try_for_each(|detail| optional(Some(detail), |detail| text(detail).map(drop)))
    })
}

/// FILE / SIGNATURE `{path, originalFilename, type}`, plus `option` inside FILE_WITH_OPTIONS.
fn check_file(value: &Value, with_option: bool) -> Result<(), IssueMessage> {
    let allowed: &[&str] = if with_option {
        &["path", "originalFilename", "type", "option"]
    } else {
        &["path", "originalFilename", "type"]
    };
    let file = object_with_keys(value, allowed)?;
    if file.len() != allowed.len() {
        return Err(IssueMessage::InvalidInput);
    }
    let path = text(field_value(file, "path"))?;
    if !is_document_path(path) {
        return Err(IssueMessage::InvalidInput);
    }
    text(field_value(file, "originalFilename"))?;
    text(field_value(file, "type"))?;
    if with_option {
        text(field_value(file, "option"))?;
    }
    Ok(())
}

/// A relative document path such as `events/<eventId>/<uuid>.png`: non-empty, not absolute,
/// no `.`/`..` segments, no backslashes or control characters. The shells resolve these
/// against a storage root, so anything that could escape it is refused.
fn is_document_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.chars().any(char::is_control)
        && path
            .split('/')
            .all(|segment| segment != "." && segment != "..")
}

/// DATE_RANGE: `{start, end}` dates, or one date.
fn check_date_range(value: &Value) -> Result<(), IssueMessage> {
    let date = |value: &Value| {
        let date = text(value)?;
        if is_calendar_date(date) {
            Ok(())
        } else {
            Err(IssueMessage::InvalidDate)
        }
    };
    if value.is_string() {
        return date(value);
    }
    let range = object_with_keys(value, &["start", "end"])?;
    date(field_value(range, "start"))?;
    date(field_value(range, "end"))
}

/// HTTP / SEARCH, update form: `{loading?, error?, data?}`.
fn check_http(value: &Value) -> Result<(), IssueMessage> {
    let http = object_with_keys(value, &["loading", "error", "data"])?;
    optional(http.get("loading"), |loading| {
        if loading.is_boolean() {
            Ok(())
        } else {
            Err(IssueMessage::InvalidInput)
        }
    })?;
    optional(http.get("error"), |error| {
        let error = object_with_keys(error, &["statusCode", "message"])?;
        number(field_value(error, "statusCode"))?;
        text(field_value(error, "message")).map(drop)
    })
}

/// A real calendar date in exactly the form `YYYY-MM-DD` (proleptic Gregorian, as zod's
/// `iso.date()`).
fn is_calendar_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return false;
    }
    let (Some(year), Some(month), Some(day)) = (
        parse_digits(&bytes[0..4]),
        parse_digits(&bytes[5..7]),
        parse_digits(&bytes[8..10]),
    ) else {
        return false;
    };
    (1..=12).contains(&month) && (1..=days_in_month(year, month)).contains(&day)
}

/// `HH:mm`, 00:00 to 23:59.
fn is_time_of_day(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() != 5 || bytes[2] != b':' {
        return false;
    }
    match (parse_digits(&bytes[0..2]), parse_digits(&bytes[3..5])) {
        (Some(hours), Some(minutes)) => hours < 24 && minutes < 60,
        _ => false,
    }
}

/// The decimal value of a short run of ASCII digits; `None` if any byte is not a digit.
fn parse_digits(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0_u32, |acc, &byte| {
        byte.is_ascii_digit()
            .then(|| acc * 10 + u32::from(byte - b'0'))
    })
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The address shape zod's `z.email()` accepts: `local@domain.tld` where the local part uses
/// `A-Z a-z 0-9 _ ' + - .` (no leading, trailing or doubled dot, no trailing `'`), the domain
/// has at least two dot-separated labels of letters, digits and hyphens (not starting with a
/// hyphen) and the last label is two or more letters.
fn is_plausible_email(text: &str) -> bool {
    if text.len() > EMAIL_BYTES_MAX || text.contains("..") {
        return false;
    }
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && !local.starts_with('.')
        && local
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"_'+-.".contains(&byte))
        && local
            .bytes()
            .last()
            .is_some_and(|byte| byte.is_ascii_alphanumeric() || b"_+-".contains(&byte));
    if !local_ok {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let labels_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            label
                .bytes()
                .next()
                .is_some_and(|byte| byte.is_ascii_alphanumeric())
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        });
    labels_ok
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|byte| byte.is_ascii_alphabetic()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FACILITY: &str = "5a0b3c6e-2b1f-4e7a-9d3c-1f2e3d4c5b6a";
    const OFFICE: &str = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f";

    fn builtin_event(event_type: &str) -> EventConfig {
        EventConfigSet::builtin().get(event_type).unwrap().clone()
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    /// `"ok"`, or the issue list exactly as it goes on the wire.
    fn outcome(result: Result<(), Vec<FieldIssue>>) -> String {
        match result {
            Ok(()) => "ok".to_owned(),
            Err(issues) => FieldIssue::list_to_json(&issues),
        }
    }

    fn validate(config: &EventConfig, declaration: Value, mode: ValidationMode) -> String {
        outcome(config.validate_declaration(&object(declaration), mode))
    }

    /// `"ok"`, or the messages of the issues for a one-key Notify declaration.
    fn messages(config: &EventConfig, id: &str, value: &Value) -> String {
        let declaration = Map::from_iter([(id.to_owned(), value.clone())]);
        match config.validate_declaration(&declaration, ValidationMode::Notify) {
            Ok(()) => "ok".to_owned(),
            Err(issues) => {
                for issue in &issues {
                    assert_eq!(issue.id, id);
                    assert_eq!(&issue.value, value);
                }
                let messages: Vec<&str> =
                    issues.iter().map(|issue| issue.message.as_str()).collect();
                messages.join(", ")
            }
        }
    }

    fn file(path: &str) -> Value {
        json!({"path": path, "originalFilename": "birth.png", "type": "image/png"})
    }

    fn domestic_address() -> Value {
        json!({
            "country": "FAR",
            "addressType": "DOMESTIC",
            "administrativeArea": FACILITY,
            "streetLevelDetails": {"town": "Ibombo", "street": null}
        })
    }

    /// The declaration of opencrvs-api.md §10.1 (`submit-test-notification.ts`).
    fn sample_notify_declaration() -> Value {
        json!({
            "child.name": { "firstname": "Liam", "surname": "Banda" },
            "child.gender": "male",
            "child.dob": "2024-06-03",
            "child.placeOfBirth": "HEALTH_FACILITY",
            "child.birthLocation": FACILITY,
            "informant.relation": "MOTHER",
            "informant.email": "liam.banda@example.com",
            "mother.detailsNotAvailable": false,
            "mother.name": { "firstname": "Grace", "surname": "Banda" }
        })
    }

    /// One field of every [`FieldType`], id `t.<name in kebab case>`.
    fn all_types_config_json() -> Value {
        let fields: Vec<Value> = FieldType::ALL
            .iter()
            .map(|field_type| {
                let mut field = json!({
                    "id": type_field_id(*field_type),
                    "type": field_type.as_str(),
                    "label": {"id": "l", "defaultMessage": "L", "description": ""}
                });
                if field_type.needs_options() {
                    field["options"] = json!([
                        {"value": "A", "label": {"id": "a", "defaultMessage": "A", "description": ""}}
                    ]);
                }
                field
            })
            .collect();
        json!([{
            "id": "all-types",
            "label": {"id": "all", "defaultMessage": "All", "description": ""},
            "declaration": {
                "label": {"id": "d", "defaultMessage": "D", "description": ""},
                "pages": [{
                    "id": "p",
                    "title": {"id": "t", "defaultMessage": "T", "description": ""},
                    "fields": fields
                }]
            },
            "actions": []
        }])
    }

    fn type_field_id(field_type: FieldType) -> String {
        format!("t.{}", field_type.as_str().to_lowercase().replace('_', "-"))
    }

    fn all_types_event() -> EventConfig {
        let set = EventConfigSet::from_json(&all_types_config_json().to_string()).unwrap();
        set.get("all-types").unwrap().clone()
    }

    /// A small valid event to mutate in the bad-configuration cases.
    fn minimal_event(id: &str) -> Value {
        json!({
            "id": id,
            "label": {"id": "e", "defaultMessage": "E", "description": ""},
            "dateOfEvent": {"$$field": "a.date"},
            "declaration": {
                "label": {"id": "d", "defaultMessage": "D", "description": ""},
                "pages": [
                    {"id": "one", "title": {"id": "t", "defaultMessage": "T"}, "fields": [
                        {"id": "a.date", "type": "DATE", "label": {"id": "l", "defaultMessage": "L"}},
                        {"id": "a.select", "type": "SELECT", "label": {"id": "l", "defaultMessage": "L"},
                         "options": [{"value": "X", "label": {"id": "x", "defaultMessage": "X"}}]}
                    ]},
                    {"id": "two", "title": {"id": "t", "defaultMessage": "T"}, "fields": [
                        {"id": "b.text", "type": "TEXT", "label": {"id": "l", "defaultMessage": "L"}}
                    ]}
                ]
            },
            "actions": [
                {"type": "DECLARE", "label": {"id": "a", "defaultMessage": "A"}, "review": {
                    "title": {"id": "r", "defaultMessage": "R"},
                    "fields": [{"id": "review.comment", "type": "TEXTAREA",
                                "label": {"id": "l", "defaultMessage": "L"}}]
                }}
            ]
        })
    }

    #[test]
    fn builtin_loads_birth_and_death() {
        let set = EventConfigSet::builtin();
        let ids: Vec<&str> = set.events().iter().map(EventConfig::id).collect();
        assert_eq!(ids, ["birth", "death"]);
        assert!(set.get("marriage").is_none());

        let birth = set.get("birth").unwrap();
        let pages: Vec<&str> = birth
            .declaration()
            .pages
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(
            pages,
            [
                "introduction",
                "child",
                "informant",
                "mother",
                "father",
                "documents"
            ]
        );
        let death = set.get("death").unwrap();
        let pages: Vec<&str> = death
            .declaration()
            .pages
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(
            pages,
            ["deceased", "eventDetails", "informant", "documents"]
        );
    }

    #[test]
    fn builtin_birth_matches_the_farajaland_field_table() {
        use FieldType::*;
        let birth = builtin_event("birth");
        // (id, type, required, secured), opencrvs-api.md §5.2. Conditionally required fields
        // are not required here (no conditionals).
        let mut table: Vec<(String, FieldType, bool, bool)> = [
            ("child.nid", Text, false, false),
            ("child.name", Name, true, false),
            ("child.gender", Select, true, false),
            ("child.dob", Date, true, true),
            ("child.reason", Text, false, false),
            ("child.placeOfBirth", Select, true, true),
            ("child.birthLocation", Location, false, true),
            ("child.birthLocation.privateHome", Address, false, true),
            ("child.birthLocation.other", Address, false, true),
            ("child.birthLocationId", AlphaHidden, false, true),
            ("child.attendantAtBirth", Select, false, false),
            ("child.birthType", Select, false, false),
            ("child.weightAtBirth", Number, false, false),
            ("informant.relation", Select, true, false),
            ("informant.other.relation", Text, false, false),
            ("informant.name", Name, false, false),
            ("informant.dob", Date, false, false),
            ("informant.dobUnknown", Checkbox, false, false),
            ("informant.age", Age, false, false),
            ("informant.nationality", Country, false, false),
            ("informant.idType", Select, false, false),
            ("informant.nid", Id, false, false),
            ("informant.passport", Text, false, false),
            ("informant.brn", Text, false, false),
            ("informant.address", Address, false, false),
            ("informant.phoneNo", Phone, false, false),
            ("informant.email", Email, true, false),
            ("mother.previousBirths", Number, false, false),
            ("father.addressSameAs", RadioGroup, false, false),
            ("documents.proofOfBirth", File, false, false),
            ("documents.proofOfMother", FileWithOptions, false, false),
            ("documents.proofOfFather", FileWithOptions, false, false),
            ("documents.proofOfInformant", FileWithOptions, false, false),
            ("documents.proofOther", FileWithOptions, false, false),
        ]
        .into_iter()
        .map(|(id, field_type, required, secured)| (id.to_owned(), field_type, required, secured))
        .collect();
        for parent in ["mother", "father"] {
            for (suffix, field_type) in [
                ("detailsNotAvailable", Checkbox),
                ("reason", Text),
                ("name", Name),
                ("dob", Date),
                ("dobUnknown", Checkbox),
                ("age", Age),
                ("nationality", Country),
                ("idType", Select),
                ("nid", Id),
                ("passport", Text),
                ("brn", Text),
                ("address", Address),
                ("maritalStatus", Select),
                ("educationalAttainment", Select),
                ("occupation", Text),
            ] {
                table.push((format!("{parent}.{suffix}"), field_type, false, false));
            }
        }
        assert!(birth.field("father.previousBirths").is_none());

        for (id, field_type, required, secured) in &table {
            let field = birth.field(id).unwrap_or_else(|| panic!("missing {id}"));
            assert_eq!(
                (field.field_type, field.required, field.secured),
                (*field_type, *required, *secured),
                "{id}"
            );
        }
        // Every data field of the builtin birth form is in the table: nothing extra.
        let data_fields = birth
            .declaration_fields()
            .filter(|field| !field.field_type.is_display_only())
            .count();
        assert_eq!(data_fields, table.len());

        let option_values = |id: &str| -> Vec<String> {
            birth
                .field(id)
                .unwrap()
                .options
                .iter()
                .map(|o| o.value.clone())
                .collect()
        };
        assert_eq!(option_values("child.gender"), ["male", "female", "unknown"]);
        assert_eq!(
            option_values("child.placeOfBirth"),
            ["HEALTH_FACILITY", "PRIVATE_HOME", "OTHER"]
        );
        assert_eq!(
            option_values("child.attendantAtBirth"),
            [
                "PHYSICIAN",
                "NURSE",
                "MIDWIFE",
                "OTHER_PARAMEDICAL_PERSONNEL",
                "LAYPERSON",
                "TRADITIONAL_BIRTH_ATTENDANT",
                "NONE"
            ]
        );
        assert_eq!(
            option_values("child.birthType"),
            [
                "SINGLE",
                "TWIN",
                "TRIPLET",
                "QUADRUPLET",
                "HIGHER_MULTIPLE_DELIVERY"
            ]
        );
        assert_eq!(
            option_values("informant.relation"),
            [
                "MOTHER",
                "FATHER",
                "OTHER",
                "GRANDFATHER",
                "GRANDMOTHER",
                "BROTHER",
                "SISTER",
                "LEGAL_GUARDIAN"
            ]
        );
        assert_eq!(
            option_values("informant.idType"),
            [
                "NATIONAL_ID",
                "PASSPORT",
                "BIRTH_REGISTRATION_NUMBER",
                "NONE"
            ]
        );
        // Conditionally required fields say why they are not required.
        let reason = birth.field("child.reason").unwrap();
        assert!(reason.label.description.contains("Conditionally required"));
        assert_eq!(
            birth.field("child.birthLocation").unwrap().configuration,
            Some(json!({"locationTypes": ["HEALTH_FACILITY"]}))
        );
    }

    #[test]
    fn builtin_death_has_the_deceased_fields() {
        use FieldType::*;
        let death = builtin_event("death");
        let table = [
            ("deceased.name", Name, true, false),
            ("deceased.gender", Select, true, false),
            ("deceased.dob", Date, false, false),
            ("deceased.dobUnknown", Checkbox, false, false),
            ("deceased.age", Age, false, false),
            ("deceased.nationality", Country, true, false),
            ("deceased.idType", Select, false, false),
            ("deceased.nid", Id, false, false),
            ("deceased.passport", Text, false, false),
            ("deceased.brn", Text, false, false),
            ("deceased.maritalStatus", Select, false, false),
            ("deceased.address", Address, true, false),
            ("eventDetails.date", Date, true, true),
            (
                "eventDetails.causeOfDeathEstablished",
                Checkbox,
                false,
                false,
            ),
            ("eventDetails.causeOfDeath", Select, false, false),
            ("eventDetails.description", Textarea, false, false),
            ("eventDetails.placeOfDeath", Select, true, false),
            ("eventDetails.deathLocation", Location, false, false),
            ("eventDetails.deathLocation.other", Address, false, false),
            ("eventDetails.deathLocationId", AlphaHidden, false, false),
            ("informant.relation", Select, true, false),
            ("informant.other.relation", Text, false, false),
            ("informant.name", Name, false, false),
            ("informant.dob", Date, false, false),
            ("informant.idType", Select, false, false),
            ("informant.nid", Id, false, false),
            ("informant.address", Address, false, false),
            ("informant.phoneNo", Phone, false, false),
            ("informant.email", Email, true, false),
            ("documents.proofOfDeath", File, false, false),
            ("documents.proofOfDeceased", FileWithOptions, false, false),
            ("documents.proofOfInformant", FileWithOptions, false, false),
            ("documents.proofOther", FileWithOptions, false, false),
        ];
        for (id, field_type, required, secured) in table {
            let field = death.field(id).unwrap_or_else(|| panic!("missing {id}"));
            assert_eq!(
                (field.field_type, field.required, field.secured),
                (field_type, required, secured),
                "{id}"
            );
        }
        let relations: Vec<&str> = death
            .field("informant.relation")
            .unwrap()
            .options
            .iter()
            .map(|option| option.value.as_str())
            .collect();
        assert_eq!(&relations[..3], ["SPOUSE", "SON", "DAUGHTER"]);
        let places: Vec<&str> = death
            .field("eventDetails.placeOfDeath")
            .unwrap()
            .options
            .iter()
            .map(|option| option.value.as_str())
            .collect();
        assert_eq!(
            places,
            ["HEALTH_FACILITY", "DECEASED_USUAL_RESIDENCE", "OTHER"]
        );
    }

    #[test]
    fn lookups() {
        let set = EventConfigSet::builtin();
        let birth = set.get("birth").unwrap();
        assert_eq!(
            birth.field("child.dob").unwrap().field_type,
            FieldType::Date
        );
        assert!(birth.field("review.comment").is_none());
        assert!(birth.field("child").is_none());
        assert_eq!(birth.date_of_event_field().unwrap().id, "child.dob");
        assert_eq!(
            birth.place_of_event_field().unwrap().id,
            "child.birthLocationId"
        );
        assert_eq!(
            birth.secured_field_ids().collect::<Vec<_>>(),
            [
                "child.dob",
                "child.placeOfBirth",
                "child.birthLocation",
                "child.birthLocation.privateHome",
                "child.birthLocation.other",
                "child.birthLocationId"
            ]
        );
        assert_eq!(
            birth.title().unwrap().default_message,
            "{child.name.firstname} {child.name.surname}"
        );

        let review_ids = |action: &str| -> Vec<&str> {
            birth
                .review_fields(action)
                .iter()
                .map(|field| field.id.as_str())
                .collect()
        };
        assert_eq!(
            review_ids("DECLARE"),
            ["review.comment", "review.signature"]
        );
        assert_eq!(review_ids("NOTIFY"), ["review.comment", "review.signature"]);
        assert!(review_ids("REGISTER").is_empty());
        assert!(review_ids("NO_SUCH_ACTION").is_empty());
        assert!(
            birth
                .review_fields("DECLARE")
                .iter()
                .all(|field| !field.required)
        );
        assert_eq!(
            birth.review_fields("DECLARE")[1].field_type,
            FieldType::Signature
        );

        let custom = birth.action("CUSTOM").unwrap();
        assert_eq!(custom.extra["customActionType"], "VALIDATE_DECLARATION");
        assert_eq!(
            birth.action("NOTIFY").unwrap().label.default_message,
            "Send incomplete"
        );

        let death = set.get("death").unwrap();
        assert_eq!(death.date_of_event_field().unwrap().id, "eventDetails.date");
        assert_eq!(
            death.place_of_event_field().unwrap().id,
            "eventDetails.deathLocationId"
        );
        assert_eq!(
            death.secured_field_ids().collect::<Vec<_>>(),
            ["eventDetails.date"]
        );
    }

    #[test]
    fn serialises_back_to_the_file_shape() {
        let set = EventConfigSet::builtin();
        let served = serde_json::to_value(&set).unwrap();
        let file: Value = serde_json::from_str(BUILTIN_EVENTS_JSON).unwrap();
        assert_eq!(served, file);

        let reparsed = EventConfigSet::from_json(&served.to_string()).unwrap();
        assert_eq!(reparsed.events(), set.events());
        let via_serde: EventConfigSet = serde_json::from_value(served).unwrap();
        assert_eq!(via_serde.events(), set.events());

        // Defaults are dropped, unknown OpenCRVS properties are kept verbatim.
        let mut event = minimal_event("x");
        event["declaration"]["pages"][1]["fields"][0]["required"] = json!(false);
        event["declaration"]["pages"][1]["fields"][0]["conditionals"] =
            json!([{"type": "SHOW", "conditional": {"type": "object"}}]);
        let set = EventConfigSet::from_json(&json!([event]).to_string()).unwrap();
        let field = &serde_json::to_value(&set).unwrap()[0]["declaration"]["pages"][1]["fields"][0];
        assert_eq!(
            field,
            &json!({
                "id": "b.text",
                "type": "TEXT",
                "label": {"id": "l", "defaultMessage": "L", "description": ""},
                "conditionals": [{"type": "SHOW", "conditional": {"type": "object"}}]
            })
        );
        assert_eq!(
            serde_json::to_value(&set).unwrap()[0]["dateOfEvent"],
            json!({"$$field": "a.date"})
        );
    }

    #[test]
    fn field_type_names_round_trip() {
        assert_eq!(FieldType::ALL.len(), 47);
        let names: HashSet<&str> = FieldType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names.len(), FieldType::ALL.len());
        for &field_type in FieldType::ALL {
            assert_eq!(field_type.as_str().parse::<FieldType>(), Ok(field_type));
            let wire = serde_json::to_string(&field_type).unwrap();
            assert_eq!(wire, format!("\"{field_type}\""));
            assert_eq!(
                serde_json::from_str::<FieldType>(&wire).unwrap(),
                field_type
            );
        }
        assert_eq!(FieldType::FileWithOptions.as_str(), "FILE_WITH_OPTIONS");
        assert_eq!(
            FieldType::AdministrativeArea.as_str(),
            "ADMINISTRATIVE_AREA"
        );
        assert_eq!(
            "name".parse::<FieldType>(),
            Err(UnknownFieldType("name".to_owned()))
        );
        let display_only: Vec<&str> = FieldType::ALL
            .iter()
            .filter(|t| t.is_display_only())
            .map(|t| t.as_str())
            .collect();
        assert_eq!(
            display_only,
            [
                "IMAGE_VIEW",
                "PARAGRAPH",
                "HEADING",
                "PAGE_HEADER",
                "BULLET_LIST",
                "DIVIDER",
                "DATA",
                "ALPHA_PRINT_BUTTON",
                "LINK_BUTTON",
                "LOADER"
            ]
        );
    }

    #[test]
    fn sample_notify_declarations_validate() {
        let birth = builtin_event("birth");
        assert_eq!(
            validate(&birth, sample_notify_declaration(), ValidationMode::Notify),
            "ok"
        );

        // Farajaland's e2e: an option value that is not in the list, plus the derived id.
        let mut e2e = sample_notify_declaration();
        e2e["child.placeOfBirth"] = json!("Health Institution");
        e2e["child.birthLocationId"] = json!(FACILITY);
        assert_eq!(validate(&birth, e2e, ValidationMode::Notify), "ok");

        // §10.2: two fields only.
        let minimal =
            json!({"child.name": {"firstname": "A", "surname": "B"}, "child.dob": "2026-06-30"});
        assert_eq!(validate(&birth, minimal, ValidationMode::Notify), "ok");
        assert_eq!(validate(&birth, json!({}), ValidationMode::Notify), "ok");
    }

    #[test]
    fn issue_lists_serialise_exactly_as_opencrvs() {
        let birth = builtin_event("birth");
        let cases = [
            (
                json!({"foo.bar": "x"}),
                r#"[{"message":"Unexpected field","id":"foo.bar","value":"x"}]"#,
            ),
            (
                json!({"child.name": {"surname": 12345}}),
                r#"[{"message":"Invalid input","id":"child.name","value":{"surname":12345}}]"#,
            ),
            (
                json!({"child.dob": "2024-02-30"}),
                r#"[{"message":"Invalid date field","id":"child.dob","value":"2024-02-30"}]"#,
            ),
            (
                json!({"informant.email": "nope"}),
                r#"[{"message":"Invalid email address","id":"informant.email","value":"nope"}]"#,
            ),
            (json!({"child.name": {"surname": "X"}}), "ok"),
        ];
        for (declaration, expected) in cases {
            assert_eq!(
                validate(&birth, declaration.clone(), ValidationMode::Notify),
                expected,
                "{declaration}"
            );
        }

        let required = FieldIssue::new(IssueMessage::Required, "child.name", Value::Null);
        assert_eq!(
            FieldIssue::list_to_json(std::slice::from_ref(&required)),
            r#"[{"message":"Required","id":"child.name"}]"#
        );
        let parsed: FieldIssue =
            serde_json::from_str(r#"{"message":"Required","id":"child.name"}"#).unwrap();
        assert_eq!(parsed, required);
        assert_eq!(FieldIssue::list_to_json(&[]), "[]");
    }

    #[test]
    fn values_are_checked_per_field_type() {
        let birth = builtin_event("birth");
        let long_text = Value::String("x".repeat(TEXT_CHARS_MAX + 1));
        let longest_text = Value::String("é".repeat(TEXT_CHARS_MAX));
        let file_with_option = |option: &str| {
            let mut file = file("events/e1/id.png");
            file["option"] = json!(option);
            file
        };
        let too_many_files = Value::Array(vec![file_with_option("OTHER"); FILES_PER_FIELD_MAX + 1]);
        let cases: Vec<(&str, Value, &str)> = vec![
            // Strings: TEXT, ID, PHONE, SELECT, RADIO_GROUP, COUNTRY, ALPHA_HIDDEN.
            ("child.nid", json!("123"), "ok"),
            ("child.nid", json!(""), "ok"),
            ("child.nid", json!(123), "Invalid input"),
            ("child.nid", json!(true), "Invalid input"),
            ("child.nid", json!({}), "Invalid input"),
            ("child.nid", longest_text, "ok"),
            ("child.nid", long_text, "Invalid input"),
            ("informant.nid", json!(["1"]), "Invalid input"),
            ("informant.phoneNo", json!("0712345678"), "ok"),
            ("informant.phoneNo", json!(712345678), "Invalid input"),
            ("child.placeOfBirth", json!("Health Institution"), "ok"),
            ("child.gender", json!(1), "Invalid input"),
            ("father.addressSameAs", json!("YES"), "ok"),
            ("father.addressSameAs", json!(false), "Invalid input"),
            ("informant.nationality", json!("FAR"), "ok"),
            ("informant.nationality", json!(["FAR"]), "Invalid input"),
            ("child.birthLocationId", json!(FACILITY), "ok"),
            ("child.birthLocationId", json!(1), "Invalid input"),
            // LOCATION: a hyphenated UUID.
            ("child.birthLocation", json!(FACILITY), "ok"),
            ("child.birthLocation", json!(FACILITY.to_uppercase()), "ok"),
            (
                "child.birthLocation",
                json!("Ibombo District Hospital"),
                "Invalid input",
            ),
            ("child.birthLocation", json!(""), "Invalid input"),
            (
                "child.birthLocation",
                json!(FACILITY.replace('-', "")),
                "Invalid input",
            ),
            (
                "child.birthLocation",
                json!(format!("{{{FACILITY}}}")),
                "Invalid input",
            ),
            ("child.birthLocation", json!(42), "Invalid input"),
            // EMAIL.
            ("informant.email", json!("liam.banda@example.com"), "ok"),
            ("informant.email", json!("a+tag@sub.example.co"), "ok"),
            (
                "informant.email",
                json!("not-an-email"),
                "Invalid email address",
            ),
            ("informant.email", json!("a@b"), "Invalid email address"),
            ("informant.email", json!("a@b.c"), "Invalid email address"),
            (
                "informant.email",
                json!("a@@b.com"),
                "Invalid email address",
            ),
            (
                "informant.email",
                json!("a b@c.com"),
                "Invalid email address",
            ),
            (
                "informant.email",
                json!(".a@b.com"),
                "Invalid email address",
            ),
            (
                "informant.email",
                json!("a.@b.com"),
                "Invalid email address",
            ),
            (
                "informant.email",
                json!("a..b@c.com"),
                "Invalid email address",
            ),
            (
                "informant.email",
                json!("a@-b.com"),
                "Invalid email address",
            ),
            ("informant.email", json!(""), "Invalid email address"),
            ("informant.email", json!(42), "Invalid input"),
            // NUMBER.
            ("child.weightAtBirth", json!(3.2), "ok"),
            ("child.weightAtBirth", json!(-1), "ok"),
            ("child.weightAtBirth", json!("3.2"), "Invalid input"),
            ("mother.previousBirths", json!(0), "ok"),
            // CHECKBOX.
            ("mother.detailsNotAvailable", json!(false), "ok"),
            (
                "mother.detailsNotAvailable",
                json!("false"),
                "Invalid input",
            ),
            ("mother.detailsNotAvailable", json!(0), "Invalid input"),
            // NAME, update form.
            (
                "child.name",
                json!({"firstname": "Liam", "surname": "Banda"}),
                "ok",
            ),
            (
                "child.name",
                json!({"firstname": "Liam", "middlename": "K", "surname": "Banda"}),
                "ok",
            ),
            ("child.name", json!({"surname": "X"}), "ok"),
            (
                "child.name",
                json!({"firstname": null, "surname": "B"}),
                "ok",
            ),
            ("child.name", json!({}), "ok"),
            ("child.name", json!({"surname": 12345}), "Invalid input"),
            (
                "child.name",
                json!({"surname": "X", "nickname": "Y"}),
                "Invalid input",
            ),
            ("child.name", json!({"middlename": ["a"]}), "Invalid input"),
            ("child.name", json!("Liam Banda"), "Invalid input"),
            // ADDRESS.
            ("informant.address", domestic_address(), "ok"),
            (
                "informant.address",
                json!({"addressType": "DOMESTIC"}),
                "ok",
            ),
            (
                "informant.address",
                json!({"country": "KEN", "addressType": "INTERNATIONAL", "streetLevelDetails": {"city": "Nairobi"}}),
                "ok",
            ),
            (
                "informant.address",
                json!({"country": "FAR"}),
                "Invalid input",
            ),
            (
                "informant.address",
                json!({"country": "FAR", "addressType": "MARS"}),
                "Invalid input",
            ),
            (
                "informant.address",
                json!({"country": "FAR", "addressType": "DOMESTIC", "administrativeArea": "Central"}),
                "Invalid input",
            ),
            (
                "informant.address",
                json!({"country": "KEN", "addressType": "INTERNATIONAL", "administrativeArea": FACILITY}),
                "Invalid input",
            ),
            (
                "informant.address",
                json!({"country": "FAR", "addressType": "DOMESTIC", "streetLevelDetails": {"town": 1}}),
                "Invalid input",
            ),
            (
                "informant.address",
                json!({"country": "FAR", "addressType": "DOMESTIC", "line1": "x"}),
                "Invalid input",
            ),
            ("informant.address", json!("Ibombo"), "Invalid input"),
            // AGE.
            (
                "informant.age",
                json!({"age": 30, "asOfDateRef": "child.dob"}),
                "ok",
            ),
            (
                "informant.age",
                json!({"age": "30", "asOfDateRef": "child.dob"}),
                "Invalid input",
            ),
            ("informant.age", json!({"age": 30}), "Invalid input"),
            (
                "informant.age",
                json!({"age": 30, "asOfDateRef": "child.dob", "x": 1}),
                "Invalid input",
            ),
            ("informant.age", json!(30), "Invalid input"),
            // FILE.
            ("documents.proofOfBirth", file("events/e1/f.png"), "ok"),
            ("documents.proofOfBirth", file("f.png"), "ok"),
            (
                "documents.proofOfBirth",
                json!({"path": "f.png", "originalFilename": "f.png"}),
                "Invalid input",
            ),
            (
                "documents.proofOfBirth",
                file("/etc/passwd"),
                "Invalid input",
            ),
            (
                "documents.proofOfBirth",
                file("events/../../x"),
                "Invalid input",
            ),
            ("documents.proofOfBirth", file("events\\x"), "Invalid input"),
            ("documents.proofOfBirth", file(""), "Invalid input"),
            (
                "documents.proofOfBirth",
                file_with_option("OTHER"),
                "Invalid input",
            ),
            (
                "documents.proofOfBirth",
                json!("events/e1/f.png"),
                "Invalid input",
            ),
            // FILE_WITH_OPTIONS.
            (
                "documents.proofOfMother",
                json!([file_with_option("NATIONAL_ID")]),
                "ok",
            ),
            (
                "documents.proofOfMother",
                json!([file_with_option("NOT_AN_OPTION")]),
                "ok",
            ),
            ("documents.proofOfMother", json!([]), "ok"),
            (
                "documents.proofOfMother",
                json!([file("events/e1/f.png")]),
                "Invalid input",
            ),
            (
                "documents.proofOfMother",
                file_with_option("OTHER"),
                "Invalid input",
            ),
            ("documents.proofOfMother", too_many_files, "Invalid input"),
            // Display-only fields and unknown keys.
            ("child.divider1", json!("x"), "Unexpected field"),
            ("documents.helper", json!("text"), "Unexpected field"),
            ("introduction.bullets", json!(["a"]), "Unexpected field"),
            ("child.divider1", Value::Null, "ok"),
            ("foo.bar", json!("x"), "Unexpected field"),
            ("foo.bar", Value::Null, "Unexpected field"),
            ("child", json!({"name": "x"}), "Unexpected field"),
            ("review.comment", json!("x"), "Unexpected field"),
        ];
        for (id, value, expected) in cases {
            assert_eq!(messages(&birth, id, &value), expected, "{id} = {value}");
        }
    }

    #[test]
    fn values_of_the_other_field_types() {
        let config = all_types_event();
        let cases: Vec<(FieldType, Value, &str)> = vec![
            (FieldType::Time, json!("09:30"), "ok"),
            (FieldType::Time, json!("23:59"), "ok"),
            (FieldType::Time, json!("24:00"), "Invalid input"),
            (FieldType::Time, json!("9:30"), "Invalid input"),
            (FieldType::Time, json!(930), "Invalid input"),
            (
                FieldType::DateRange,
                json!({"start": "2024-01-01", "end": "2024-02-01"}),
                "ok",
            ),
            (FieldType::DateRange, json!("2024-01-01"), "ok"),
            (
                FieldType::DateRange,
                json!({"start": "2024-01-01"}),
                "Invalid input",
            ),
            (
                FieldType::DateRange,
                json!({"start": "2024-02-30", "end": "2024-03-01"}),
                "Invalid date field",
            ),
            (FieldType::DateRange, json!("soon"), "Invalid date field"),
            (FieldType::SelectDateRange, json!("last7Days"), "ok"),
            (
                FieldType::SelectDateRange,
                json!("last8Days"),
                "Invalid input",
            ),
            (
                FieldType::NumberWithUnit,
                json!({"numericValue": 3, "unit": "kg"}),
                "ok",
            ),
            (FieldType::NumberWithUnit, json!({"unit": "kg"}), "ok"),
            (
                FieldType::NumberWithUnit,
                json!({"numericValue": "3"}),
                "Invalid input",
            ),
            (FieldType::NumberWithUnit, json!(3), "Invalid input"),
            (
                FieldType::Http,
                json!({"loading": false, "data": {"x": 1}}),
                "ok",
            ),
            (
                FieldType::Http,
                json!({"error": {"statusCode": 500, "message": "down"}}),
                "ok",
            ),
            (FieldType::Http, json!({"loading": "no"}), "Invalid input"),
            (
                FieldType::Http,
                json!({"error": {"statusCode": "500", "message": "down"}}),
                "Invalid input",
            ),
            (FieldType::Search, json!({"data": null}), "ok"),
            (FieldType::Search, json!({"results": []}), "Invalid input"),
            (
                FieldType::QueryParamReader,
                json!({"data": {"code": "abc"}}),
                "ok",
            ),
            (
                FieldType::QueryParamReader,
                json!({"data": {"code": 1}}),
                "Invalid input",
            ),
            (FieldType::QueryParamReader, json!({}), "Invalid input"),
            (
                FieldType::QrReader,
                json!({"data": {"anything": [1]}}),
                "ok",
            ),
            (FieldType::QrReader, json!("qr"), "Invalid input"),
            (FieldType::IdReader, json!({"data": "x"}), "ok"),
            (
                FieldType::IdReader,
                json!({"data": "x", "more": 1}),
                "Invalid input",
            ),
            (FieldType::Button, json!(3), "ok"),
            (FieldType::Button, json!("3"), "Invalid input"),
            (FieldType::VerificationStatus, json!("verified"), "ok"),
            (FieldType::VerificationStatus, json!("ok"), "Invalid input"),
            (
                FieldType::Autocomplete,
                json!({"label": "A", "value": "a"}),
                "ok",
            ),
            (
                FieldType::Autocomplete,
                json!({"label": "A"}),
                "Invalid input",
            ),
            (FieldType::FieldGroup, json!({"a": 1}), "ok"),
            (FieldType::FieldGroup, json!([1]), "Invalid input"),
            (FieldType::Custom, json!([1, {"x": null}]), "ok"),
            (FieldType::UserRole, json!("LOCAL_REGISTRAR"), "ok"),
            (FieldType::UserRole, json!(1), "Invalid input"),
            (FieldType::AdministrativeArea, json!(OFFICE), "ok"),
            (
                FieldType::AdministrativeArea,
                json!("Central"),
                "Invalid input",
            ),
            (FieldType::Facility, json!(FACILITY), "ok"),
            (FieldType::Office, json!(OFFICE), "ok"),
            (FieldType::Office, json!("HQ"), "Invalid input"),
            (FieldType::Signature, file("sig/abc.png"), "ok"),
            (
                FieldType::Signature,
                json!("data:image/png;base64,AAAA"),
                "Invalid input",
            ),
            (FieldType::Textarea, json!("a\nb"), "ok"),
            (FieldType::Select, json!("not-an-option"), "ok"),
        ];
        for (field_type, value, expected) in cases {
            let id = type_field_id(field_type);
            assert_eq!(messages(&config, &id, &value), expected, "{id} = {value}");
        }
        // Display-only types take no value; every type takes null.
        for &field_type in FieldType::ALL {
            let id = type_field_id(field_type);
            if field_type.is_display_only() {
                assert_eq!(
                    messages(&config, &id, &json!("x")),
                    "Unexpected field",
                    "{id}"
                );
            }
            assert_eq!(messages(&config, &id, &Value::Null), "ok", "{id}");
        }
    }

    #[test]
    fn dates_must_be_real_calendar_days() {
        let birth = builtin_event("birth");
        let cases = [
            ("2024-06-03", "ok"),
            ("2024-02-29", "ok"),
            ("2000-02-29", "ok"),
            ("0001-01-01", "ok"),
            ("2024-12-31", "ok"),
            ("2024-02-30", "Invalid date field"),
            ("2023-02-29", "Invalid date field"),
            ("1900-02-29", "Invalid date field"),
            ("2024-13-01", "Invalid date field"),
            ("2024-00-10", "Invalid date field"),
            ("2024-04-31", "Invalid date field"),
            ("2024-01-00", "Invalid date field"),
            ("yesterday", "Invalid date field"),
            ("2024-1-01", "Invalid date field"),
            ("24-01-01", "Invalid date field"),
            ("2024/01/01", "Invalid date field"),
            ("2024-01-01T00:00:00Z", "Invalid date field"),
            (" 2024-01-01", "Invalid date field"),
            ("２０２４-01-01", "Invalid date field"),
            ("", "Invalid date field"),
        ];
        for (date, expected) in cases {
            assert_eq!(
                messages(&birth, "child.dob", &json!(date)),
                expected,
                "{date:?}"
            );
        }
        assert_eq!(
            messages(&birth, "child.dob", &json!(20240101)),
            "Invalid input"
        );
    }

    #[test]
    fn null_clears_any_field() {
        for event_type in ["birth", "death"] {
            let config = builtin_event(event_type);
            let all_null: Map<String, Value> = config
                .declaration_fields()
                .map(|field| (field.id.clone(), Value::Null))
                .collect();
            assert_eq!(
                outcome(config.validate_declaration(&all_null, ValidationMode::Notify)),
                "ok"
            );

            // In Declare mode the same map only lacks the required fields.
            let expected: Vec<FieldIssue> = config
                .declaration_fields()
                .filter(|field| field.required)
                .map(|field| FieldIssue::new(IssueMessage::Required, field.id.clone(), Value::Null))
                .collect();
            assert_eq!(
                config.validate_declaration(&all_null, ValidationMode::Declare),
                Err(expected)
            );
        }
    }

    #[test]
    fn declare_mode_reports_each_missing_required_field() {
        let birth = builtin_event("birth");
        assert_eq!(
            validate(&birth, json!({}), ValidationMode::Declare),
            concat!(
                r#"[{"message":"Required","id":"child.name"},"#,
                r#"{"message":"Required","id":"child.gender"},"#,
                r#"{"message":"Required","id":"child.dob"},"#,
                r#"{"message":"Required","id":"child.placeOfBirth"},"#,
                r#"{"message":"Required","id":"informant.relation"},"#,
                r#"{"message":"Required","id":"informant.email"}]"#
            )
        );
        let death = builtin_event("death");
        let required: Vec<String> = death
            .validate_declaration(&Map::new(), ValidationMode::Declare)
            .unwrap_err()
            .into_iter()
            .map(|issue| issue.id)
            .collect();
        assert_eq!(
            required,
            [
                "deceased.name",
                "deceased.gender",
                "deceased.nationality",
                "deceased.address",
                "eventDetails.date",
                "eventDetails.placeOfDeath",
                "informant.relation",
                "informant.email"
            ]
        );

        // The §10.1 sample completes to a valid DECLARE.
        let mut complete = sample_notify_declaration();
        assert_eq!(
            validate(&birth, complete.clone(), ValidationMode::Declare),
            "ok"
        );
        // Blank, partial and null values of required fields are missing.
        let cases = [
            ("child.gender", json!("  "), "child.gender"),
            ("child.name", json!({"surname": "Banda"}), "child.name"),
            (
                "child.name",
                json!({"firstname": "", "surname": "Banda"}),
                "child.name",
            ),
            ("child.dob", Value::Null, "child.dob"),
            ("informant.relation", json!(""), "informant.relation"),
        ];
        for (id, value, missing) in cases {
            let mut declaration = sample_notify_declaration();
            declaration[id] = value.clone();
            assert_eq!(
                validate(&birth, declaration, ValidationMode::Declare),
                format!(r#"[{{"message":"Required","id":"{missing}"}}]"#),
                "{id} = {value}"
            );
        }
        // An invalid value is reported once, as invalid, not also as missing.
        complete["child.name"] = json!({"surname": 12});
        assert_eq!(
            validate(&birth, complete, ValidationMode::Declare),
            r#"[{"message":"Invalid input","id":"child.name","value":{"surname":12}}]"#
        );
        // Required addresses need a country and, for DOMESTIC, an administrative area.
        let death = builtin_event("death");
        let mut declaration = json!({
            "deceased.name": {"firstname": "A", "surname": "B"},
            "deceased.gender": "female",
            "deceased.nationality": "FAR",
            "deceased.address": domestic_address(),
            "eventDetails.date": "2026-01-02",
            "eventDetails.placeOfDeath": "HEALTH_FACILITY",
            "eventDetails.deathLocation": FACILITY,
            "eventDetails.deathLocationId": FACILITY,
            "informant.relation": "SPOUSE",
            "informant.email": "a@example.org"
        });
        assert_eq!(
            validate(&death, declaration.clone(), ValidationMode::Declare),
            "ok"
        );
        declaration["deceased.address"] = json!({"country": "FAR", "addressType": "DOMESTIC"});
        assert_eq!(
            validate(&death, declaration.clone(), ValidationMode::Declare),
            r#"[{"message":"Required","id":"deceased.address"}]"#
        );
        declaration["deceased.address"] = json!({"country": "KEN", "addressType": "INTERNATIONAL"});
        assert_eq!(validate(&death, declaration, ValidationMode::Declare), "ok");
    }

    #[test]
    fn issues_follow_key_order_then_configuration_order() {
        let birth = builtin_event("birth");
        let declaration = object(json!({
            "zeta.unknown": 1,
            "child.dob": "bad",
            "alpha.unknown": true,
            "child.weightAtBirth": "heavy"
        }));
        let issues = birth
            .validate_declaration(&declaration, ValidationMode::Declare)
            .unwrap_err();
        let key_ids: Vec<&str> = declaration.keys().map(String::as_str).collect();
        let issue_ids: Vec<&str> = issues.iter().map(|issue| issue.id.as_str()).collect();
        assert_eq!(issue_ids[..4], key_ids[..]);
        assert_eq!(
            issue_ids[4..],
            [
                "child.name",
                "child.gender",
                "child.placeOfBirth",
                "informant.relation",
                "informant.email"
            ]
        );
        // Same input, same output.
        assert_eq!(
            birth.validate_declaration(&declaration, ValidationMode::Declare),
            Err(issues)
        );
    }

    #[test]
    fn annotations_are_checked_against_the_review_fields() {
        let birth = builtin_event("birth");
        let signature = file("events/e1/signature.png");
        let cases = [
            (
                "DECLARE",
                json!({"review.comment": "ok", "review.signature": signature}),
                "ok",
            ),
            (
                "NOTIFY",
                json!({"review.comment": "ok", "review.signature": signature}),
                "ok",
            ),
            ("NOTIFY", json!({}), "ok"),
            ("NOTIFY", json!({"review.comment": null}), "ok"),
            (
                "NOTIFY",
                json!({"review.foo": 1}),
                r#"[{"message":"Unexpected field","id":"review.foo","value":1}]"#,
            ),
            (
                "DECLARE",
                json!({"child.name": {"surname": "X"}}),
                r#"[{"message":"Unexpected field","id":"child.name","value":{"surname":"X"}}]"#,
            ),
            (
                "REGISTER",
                json!({"review.comment": "x"}),
                r#"[{"message":"Unexpected field","id":"review.comment","value":"x"}]"#,
            ),
            (
                "DECLARE",
                json!({"review.comment": 5}),
                r#"[{"message":"Invalid input","id":"review.comment","value":5}]"#,
            ),
            (
                "DECLARE",
                json!({"review.signature": "base64"}),
                r#"[{"message":"Invalid input","id":"review.signature","value":"base64"}]"#,
            ),
        ];
        for (action, annotation, expected) in cases {
            for mode in [ValidationMode::Notify, ValidationMode::Declare] {
                let result = birth.validate_annotation(action, &object(annotation.clone()), mode);
                assert_eq!(outcome(result), expected, "{action} {annotation} {mode:?}");
            }
        }
        // Required review fields are enforced in Declare mode only.
        let mut event = minimal_event("x");
        event["actions"][0]["review"]["fields"][0]["required"] = json!(true);
        let set = EventConfigSet::from_json(&json!([event]).to_string()).unwrap();
        let config = set.get("x").unwrap();
        assert_eq!(
            outcome(config.validate_annotation("DECLARE", &Map::new(), ValidationMode::Notify)),
            "ok"
        );
        assert_eq!(
            outcome(config.validate_annotation("NOTIFY", &Map::new(), ValidationMode::Declare)),
            r#"[{"message":"Required","id":"review.comment"}]"#
        );
    }

    #[test]
    fn oversized_maps_are_refused_whole() {
        let birth = builtin_event("birth");
        let too_many: Map<String, Value> = (0..=DECLARATION_FIELDS_MAX)
            .map(|key_idx| (format!("x.f{key_idx}"), Value::Null))
            .collect();
        assert_eq!(
            outcome(birth.validate_declaration(&too_many, ValidationMode::Notify)),
            format!(
                r#"[{{"message":"Invalid input","id":"declaration","value":{}}}]"#,
                DECLARATION_FIELDS_MAX + 1
            )
        );
        assert_eq!(
            outcome(birth.validate_annotation("DECLARE", &too_many, ValidationMode::Notify)),
            format!(
                r#"[{{"message":"Invalid input","id":"annotation","value":{}}}]"#,
                DECLARATION_FIELDS_MAX + 1
            )
        );
        let at_bound: Map<String, Value> =
            too_many.into_iter().take(DECLARATION_FIELDS_MAX).collect();
        let issues = birth
            .validate_declaration(&at_bound, ValidationMode::Notify)
            .unwrap_err();
        assert_eq!(issues.len(), DECLARATION_FIELDS_MAX);
    }

    #[test]
    fn bad_configurations_are_refused() {
        fn load(events: Value) -> Result<EventConfigSet, ConfigError> {
            EventConfigSet::from_json(&events.to_string())
        }
        type Mutation = fn(&mut Value);
        let cases: Vec<(&str, Mutation, &str)> = vec![
            ("valid", |_| {}, "ok"),
            (
                "duplicate field in one page",
                |e| e["declaration"]["pages"][0]["fields"][1]["id"] = json!("a.date"),
                "event `x`: duplicate field id `a.date`",
            ),
            (
                "duplicate field across pages",
                |e| e["declaration"]["pages"][1]["fields"][0]["id"] = json!("a.select"),
                "event `x`: duplicate field id `a.select`",
            ),
            (
                "duplicate review field",
                |e| {
                    let field = e["actions"][0]["review"]["fields"][0].clone();
                    e["actions"][0]["review"]["fields"]
                        .as_array_mut()
                        .unwrap()
                        .push(field);
                },
                "event `x`: duplicate field id `review.comment`",
            ),
            (
                "unknown field type",
                |e| e["declaration"]["pages"][1]["fields"][0]["type"] = json!("HOLOGRAM"),
                "unknown field type `HOLOGRAM`",
            ),
            (
                "lower-case field type",
                |e| e["declaration"]["pages"][1]["fields"][0]["type"] = json!("text"),
                "unknown field type `text`",
            ),
            (
                "select without options",
                |e| e["declaration"]["pages"][0]["fields"][1]["options"] = json!([]),
                "event `x`: field `a.select` of type SELECT has no options",
            ),
            (
                "radio group without options",
                |e| e["declaration"]["pages"][1]["fields"][0]["type"] = json!("RADIO_GROUP"),
                "event `x`: field `b.text` of type RADIO_GROUP has no options",
            ),
            (
                "review select without options",
                |e| e["actions"][0]["review"]["fields"][0]["type"] = json!("SELECT"),
                "event `x`: field `review.comment` of type SELECT has no options",
            ),
            (
                "no pages",
                |e| e["declaration"]["pages"] = json!([]),
                "event `x`: the declaration has no pages",
            ),
            (
                "empty event id",
                |e| e["id"] = json!(""),
                "an event has an empty id",
            ),
            (
                "duplicate page id",
                |e| e["declaration"]["pages"][1]["id"] = json!("one"),
                "event `x`: duplicate or empty page id `one`",
            ),
            (
                "underscore in field id",
                |e| e["declaration"]["pages"][1]["fields"][0]["id"] = json!("b_text"),
                "event `x`: invalid field id `b_text` (must be non-empty, without `_`)",
            ),
            (
                "empty field id",
                |e| e["declaration"]["pages"][1]["fields"][0]["id"] = json!(""),
                "event `x`: invalid field id `` (must be non-empty, without `_`)",
            ),
            (
                "dateOfEvent to an unknown field",
                |e| e["dateOfEvent"] = json!({"$$field": "a.nope"}),
                "event `x`: dateOfEvent refers to unknown field `a.nope`",
            ),
            (
                "placeOfEvent to an unknown field",
                |e| e["placeOfEvent"] = json!({"$$field": "review.comment"}),
                "event `x`: placeOfEvent refers to unknown field `review.comment`",
            ),
            (
                "dateOfEvent to a non-date",
                |e| e["dateOfEvent"] = json!({"$$field": "b.text"}),
                "event `x`: dateOfEvent field `b.text` is TEXT, not DATE",
            ),
            (
                "duplicate action",
                |e| {
                    let action = e["actions"][0].clone();
                    e["actions"].as_array_mut().unwrap().push(action);
                },
                "event `x`: duplicate action `DECLARE`",
            ),
            (
                "repeated CUSTOM actions",
                |e| {
                    let custom =
                        json!({"type": "CUSTOM", "label": {"id": "c", "defaultMessage": "C"}});
                    e["actions"]
                        .as_array_mut()
                        .unwrap()
                        .extend([custom.clone(), custom]);
                },
                "ok",
            ),
            (
                "missing label",
                |e| {
                    e.as_object_mut()
                        .unwrap()
                        .remove("label")
                        .map(drop)
                        .unwrap_or_default()
                },
                "missing field `label`",
            ),
            (
                "options that are not objects",
                |e| e["declaration"]["pages"][0]["fields"][1]["options"] = json!(["X"]),
                "invalid type",
            ),
            (
                "too many fields",
                |e| {
                    let fields: Vec<Value> = (0..DECLARATION_FIELDS_MAX)
                        .map(|n| {
                            json!({"id": format!("c.f{n}"), "type": "TEXT",
                                        "label": {"id": "l", "defaultMessage": "L"}})
                        })
                        .collect();
                    e["declaration"]["pages"][1]["fields"] = json!(fields);
                },
                "event `x`: 502 declaration fields, more than the maximum 500",
            ),
        ];
        for (name, mutate, expected) in cases {
            let mut event = minimal_event("x");
            mutate(&mut event);
            let result = load(json!([event]))
                .map(drop)
                .map_err(|error| error.to_string());
            match result {
                Ok(()) => assert_eq!("ok", expected, "{name}"),
                Err(error) => assert!(error.contains(expected), "{name}: {error}"),
            }
        }

        let duplicate = load(json!([minimal_event("x"), minimal_event("x")])).unwrap_err();
        assert!(matches!(&duplicate, ConfigError::DuplicateEvent { event } if event == "x"));
        assert!(matches!(
            load(json!({"id": "x"})),
            Err(ConfigError::Json(_))
        ));
        assert!(matches!(
            EventConfigSet::from_json("[{"),
            Err(ConfigError::Json(_))
        ));
        assert!(matches!(
            load(json!([{"id": "x"}])).unwrap_err(),
            ConfigError::Json(error) if error.to_string().contains("missing field")
        ));
        let mut no_options = minimal_event("x");
        no_options["declaration"]["pages"][0]["fields"][1]
            .as_object_mut()
            .unwrap()
            .remove("options");
        assert!(matches!(
            load(json!([no_options])).unwrap_err(),
            ConfigError::MissingOptions {
                field_type: FieldType::Select,
                ..
            }
        ));

        // Deserialising through serde applies the same checks.
        let duplicate_json = json!([minimal_event("x"), minimal_event("x")]).to_string();
        let error = serde_json::from_str::<EventConfigSet>(&duplicate_json).unwrap_err();
        assert!(
            error.to_string().contains("duplicate event id `x`"),
            "{error}"
        );
        assert_eq!(load(json!([])).unwrap().events().len(), 0);
    }

    #[test]
    fn all_field_types_load_and_round_trip() {
        let json = all_types_config_json();
        let set = EventConfigSet::from_json(&json.to_string()).unwrap();
        assert_eq!(
            set.events()[0].declaration_fields().count(),
            FieldType::ALL.len()
        );
        assert_eq!(serde_json::to_value(&set).unwrap(), json);
    }

    proptest::proptest! {
        #[test]
        fn date_check_agrees_with_the_calendar(year in 0_u32..10_000, month in 0_u32..14, day in 0_u32..33) {
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
            let real = (1..=12).contains(&month)
                && day >= 1
                && day <= month_days[(month - 1) as usize];
            let text = format!("{year:04}-{month:02}-{day:02}");
            proptest::prop_assert_eq!(is_calendar_date(&text), real, "{}", text);
        }

        #[test]
        fn any_value_gets_a_deterministic_answer(value in json_value(), type_idx in 0..FieldType::ALL.len()) {
            let config = all_types_event();
            let id = type_field_id(FieldType::ALL[type_idx]);
            let declaration = Map::from_iter([(id, value)]);
            for mode in [ValidationMode::Notify, ValidationMode::Declare] {
                let first = config.validate_declaration(&declaration, mode);
                proptest::prop_assert_eq!(first.clone(), config.validate_declaration(&declaration, mode));
                if let Err(issues) = first {
                    proptest::prop_assert_eq!(issues.len(), 1);
                }
            }
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let text = proptest::collection::vec(
            prop_oneof![
                Just('a'),
                Just('-'),
                Just('@'),
                Just('.'),
                Just('0'),
                Just('9'),
                any::<char>()
            ],
            0..12,
        )
        .prop_map(String::from_iter);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text.clone().prop_map(Value::from),
            Just(Value::from(FACILITY)),
            Just(Value::from("2024-02-29")),
            Just(Value::from("DOMESTIC")),
        ];
        let key = prop_oneof![
            Just("firstname".to_owned()),
            Just("surname".to_owned()),
            Just("addressType".to_owned()),
            Just("path".to_owned()),
            Just("data".to_owned()),
            text,
        ];
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map(key.clone(), inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }
}
