//! Deduplication rules: OpenCRVS's `DeduplicationConfig` as data, checked against an event
//! configuration, and the pure matcher central runs before it lets a declaration through.
//!
//! A rule tree is `and` / `or` / `not` over three matchers, in OpenCRVS's JSON shape
//! (`packages/commons/src/events/DeduplicationConfig.ts`, built by the toolkit's
//! `field('child.name').fuzzyMatches()` and friends), so a country's configuration deserialises
//! unchanged:
//!
//! ```json
//! {"id": "birth-deduplication", "label": {"id": "..", "defaultMessage": ".."},
//!  "query": {"type": "or", "clauses": [
//!    {"type": "and", "clauses": [
//!      {"type": "fuzzy", "fieldId": "child.name"},
//!      {"type": "dateRange", "fieldId": "child.dob", "options": {"days": 5}},
//!      {"type": "not", "clause": {"type": "strict", "fieldId": "mother.idType"}}]}]}}
//! ```
//!
//! It rides on the DECLARE, VALIDATE or REGISTER action configuration as `deduplication`
//! ([`crate::config::ActionConfig::deduplication`]); loading the event configuration checks it
//! with [`DeduplicationConfig::validate`]. The builtin birth event carries Farajaland's rules
//! (opencrvs-api.md §5.3). A match makes central append DUPLICATE_DETECTED (flag
//! `potential-duplicate`) instead of registering; a registrar resolves it with
//! MARK_AS_DUPLICATE or MARK_AS_NOT_DUPLICATE.
//!
//! Semantics of [`matches()`] (OpenCRVS builds an Elasticsearch query instead; where the two
//! differ, this says so):
//! - Two-valued logic. A `fuzzy` or `strict` matcher never matches when the value is missing
//!   (absent, `null`, or no words after normalisation) on either side, so `not(strict(x))` holds
//!   when either side lacks `x`. That is what Farajaland's "mother's id matches if given" means;
//!   Elasticsearch instead drops a clause whose *candidate* value is missing.
//! - `matchAgainst` names the existing record's field compared with the candidate's `fieldId`
//!   (default: the same field).
//! - `fuzzy`: values are normalised (Unicode NFD, combining marks dropped, lower case,
//!   apostrophes removed, split into words at anything not a letter or digit). Two words are
//!   similar when their restricted Damerau–Levenshtein (optimal string alignment) distance is
//!   within the fuzziness: `AUTO:low,high` (default `AUTO:4,7`) allows 0 edits for words
//!   shorter than `low` characters, 1 below `high`, 2 from `high` on (Elasticsearch's rule),
//!   counted on the shorter word so the test is symmetric. For NAME values at least one given
//!   name (first or middle) must be similar to one of the other side's, and the surnames' words
//!   must be similar one way round (every word of one surname similar to a word of the other);
//!   other text compares like a surname. Numbers and booleans must be equal.
//! - `strict`: equal after the same normalisation (names part by part); with `options.value`,
//!   both records must hold that value.
//! - `dateRange`: both dates known and at most `days` apart. A DATE value is `YYYY-MM-DD`; an
//!   AGE value `{age, asOfDateRef}` stands for the date of birth it implies, `age` whole years
//!   before the declaration's `asOfDateRef` date (OpenCRVS indexes the same derived date), so
//!   `mother.dob` and `mother.age` compare with each other through `matchAgainst`.
//! - `boost` and `pivot` only rank Elasticsearch hits; a pair either matches or not here, so
//!   they are kept (and served back) and checked, not used.
//!
//! In Farajaland's rules (two-valued, as here) rule 1 (similar child within 5 days, same
//! mother) implies rule 2 (same mother within 270 days); it only adds score in Elasticsearch.
//! Rule 2 flags twins, as it does in OpenCRVS: the registrar marks them not duplicate.
//!
//! Matching is symmetric for every rule that does not use `matchAgainst` one way only, so the
//! order in which clinics' records reach central does not change which pairs are flagged.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::config::{EventConfig, FieldType, TranslationConfig};
use crate::event::Declaration;
use crate::limits::{
    DEDUP_AGE_YEARS_MAX, DEDUP_CLAUSE_DEPTH_MAX, DEDUP_CLAUSES_MAX, DEDUP_DATE_RANGE_DAYS_MAX,
    DEDUP_FUZZY_TOKEN_CHARS_MAX, DEDUP_MATCHES_MAX, DEDUP_TOKENS_MAX,
};

/// Action types whose configuration may carry `deduplication` (OpenCRVS runs the query after
/// DECLARE is accepted and before REGISTER; VALIDATE is 1.9's step between them).
pub const DEDUPLICATED_ACTIONS: &[&str] = &["DECLARE", "VALIDATE", "REGISTER"];

/// Elasticsearch's plain `AUTO` fuzziness: `AUTO:3,6`.
const AUTO_DEFAULT: (u8, u8) = (3, 6);

/// OpenCRVS's default fuzziness, `AUTO:4,7`.
const AUTO_OPENCRVS: (u8, u8) = (4, 7);

/// Most edits any fuzziness allows (Elasticsearch's limit).
const FUZZY_EDITS_MAX: u8 = 2;

// ---------------------------------------------------------------------------------------------
// Configuration types
// ---------------------------------------------------------------------------------------------

/// One deduplication configuration (OpenCRVS `DeduplicationConfig`), as carried by an action
/// configuration's `deduplication` property.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeduplicationConfig {
    /// The configuration's id, e.g. `birth-deduplication`.
    pub id: String,
    /// What the UI calls the check.
    pub label: TranslationConfig,
    /// The rule tree: a record is a duplicate of another when it matches.
    pub query: Clause,
}

/// A node of a rule tree: an operator or a matcher, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Clause {
    /// Every clause matches (at least one clause required).
    And {
        /// The operands.
        clauses: Vec<Self>,
    },
    /// At least one clause matches (at least one clause required).
    Or {
        /// The operands.
        clauses: Vec<Self>,
    },
    /// The clause does not match.
    Not {
        /// The negated clause.
        clause: Box<Self>,
    },
    /// Similar text or names.
    Fuzzy(FuzzyMatcher),
    /// Equal values (or both equal to a constant).
    Strict(StrictMatcher),
    /// Dates at most some days apart.
    DateRange(DateRangeMatcher),
}

/// `{"type": "fuzzy", "fieldId", "options"?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FuzzyMatcher {
    /// The candidate's field.
    pub field_id: String,
    /// Options; omitted in the toolkit's output when none are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<FuzzyOptions>,
}

/// Options of a `fuzzy` matcher.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FuzzyOptions {
    /// Edits allowed per word; `AUTO:4,7` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuzziness: Option<Fuzziness>,
    /// Ranking weight in OpenCRVS (default 1); checked, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boost: Option<f64>,
    /// The existing record's field to compare with (default: `fieldId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_against: Option<String>,
}

/// `{"type": "strict", "fieldId", "options"?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrictMatcher {
    /// The candidate's field.
    pub field_id: String,
    /// Options; omitted in the toolkit's output when none are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<StrictOptions>,
}

/// Options of a `strict` matcher.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrictOptions {
    /// A constant both records must hold (e.g. `mother.idType` = `NONE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Ranking weight in OpenCRVS (default 1); checked, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boost: Option<f64>,
    /// The existing record's field to compare with (default: `fieldId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_against: Option<String>,
}

/// `{"type": "dateRange", "fieldId", "options": {"days", ..}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DateRangeMatcher {
    /// The candidate's field (DATE or AGE).
    pub field_id: String,
    /// Options (required: `days`).
    pub options: DateRangeOptions,
}

/// Options of a `dateRange` matcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DateRangeOptions {
    /// Most days between the two dates, inclusive (0 to
    /// [`DEDUP_DATE_RANGE_DAYS_MAX`]).
    pub days: i64,
    /// Elasticsearch's distance-score pivot in days; checked, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pivot: Option<i64>,
    /// Ranking weight in OpenCRVS (default 1); checked, not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boost: Option<f64>,
    /// The existing record's field to compare with (default: `fieldId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_against: Option<String>,
}

/// Edits allowed per word, in Elasticsearch's notation: a number (0, 1, 2, or the same as a
/// string) or `AUTO` / `AUTO:low,high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fuzziness {
    /// 0 edits below `low` characters, 1 below `high`, 2 from `high` on.
    Auto {
        /// First word length allowed one edit.
        low: u8,
        /// First word length allowed two edits.
        high: u8,
    },
    /// A fixed number of edits (at most 2).
    Edits(u8),
}

impl Default for Fuzziness {
    /// OpenCRVS's default, `AUTO:4,7`.
    fn default() -> Self {
        Self::Auto {
            low: AUTO_OPENCRVS.0,
            high: AUTO_OPENCRVS.1,
        }
    }
}

impl Fuzziness {
    /// Edits allowed between two words whose shorter one has `chars` characters.
    pub fn max_edits(self, chars: usize) -> usize {
        match self {
            Self::Auto { low, .. } if chars < usize::from(low) => 0,
            Self::Auto { high, .. } if chars < usize::from(high) => 1,
            Self::Auto { .. } => usize::from(FUZZY_EDITS_MAX),
            Self::Edits(edits) => usize::from(edits),
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        let bad =
            || format!("invalid fuzziness `{text}` (expected 0, 1, 2, AUTO or AUTO:low,high)");
        if text == "AUTO" {
            return Ok(Self::Auto {
                low: AUTO_DEFAULT.0,
                high: AUTO_DEFAULT.1,
            });
        }
        if let Some(bounds) = text.strip_prefix("AUTO:") {
            let (low, high) = bounds.split_once(',').ok_or_else(bad)?;
            let low: u8 = low.trim().parse().map_err(|_| bad())?;
            let high: u8 = high.trim().parse().map_err(|_| bad())?;
            return if low <= high {
                Ok(Self::Auto { low, high })
            } else {
                Err(bad())
            };
        }
        match text.parse::<u8>() {
            Ok(edits) if edits <= FUZZY_EDITS_MAX => Ok(Self::Edits(edits)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Fuzziness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto { low, high } => write!(f, "AUTO:{low},{high}"),
            Self::Edits(edits) => write!(f, "{edits}"),
        }
    }
}

impl Serialize for Fuzziness {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto { .. } => serializer.collect_str(self),
            Self::Edits(edits) => serializer.serialize_u8(*edits),
        }
    }
}

impl<'de> Deserialize<'de> for Fuzziness {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(text) => Self::parse(&text).map_err(de::Error::custom),
            Value::Number(number) => match number.as_u64() {
                Some(edits) if edits <= u64::from(FUZZY_EDITS_MAX) => Ok(Self::Edits(edits as u8)),
                _ => Err(de::Error::custom(format!(
                    "invalid fuzziness {number} (at most {FUZZY_EDITS_MAX} edits)"
                ))),
            },
            other => Err(de::Error::custom(format!(
                "invalid fuzziness {other} (expected a number or a string)"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors and validation
// ---------------------------------------------------------------------------------------------

/// Why a deduplication configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum DedupConfigError {
    /// Not JSON of the expected shape: unknown matcher type, unknown property, missing `days`,
    /// a bad fuzziness, ...
    #[error("invalid deduplication configuration JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The configuration's `id` is empty.
    #[error("the deduplication configuration has an empty id")]
    EmptyId,
    /// An `and` or `or` without clauses (an empty `and` would flag every record).
    #[error("an `{operator}` clause has no clauses")]
    EmptyClauses {
        /// `and` or `or`.
        operator: &'static str,
    },
    /// The tree nests deeper than [`DEDUP_CLAUSE_DEPTH_MAX`].
    #[error("the rule tree nests deeper than {max} levels")]
    TooDeep {
        /// The bound.
        max: usize,
    },
    /// The tree has more than [`DEDUP_CLAUSES_MAX`] clauses.
    #[error("the rule tree has more than {max} clauses")]
    TooManyClauses {
        /// The bound.
        max: usize,
    },
    /// A matcher names a field (`fieldId` or `matchAgainst`) the declaration does not define.
    #[error("{matcher} matcher refers to unknown field `{field}`")]
    UnknownField {
        /// `fuzzy`, `strict` or `dateRange`.
        matcher: &'static str,
        /// The field id.
        field: String,
    },
    /// A matcher is used on a field whose values it cannot compare (e.g. `dateRange` on a NAME).
    #[error("{matcher} matcher cannot compare field `{field}` of type {field_type}")]
    UnsupportedField {
        /// `fuzzy`, `strict` or `dateRange`.
        matcher: &'static str,
        /// The field id.
        field: String,
        /// Its type.
        field_type: FieldType,
    },
    /// `matchAgainst` names a field whose values are not comparable with `fieldId`'s.
    #[error(
        "{matcher} matcher compares `{field}` ({field_type}) with `{against}` ({against_type}), whose values differ in kind"
    )]
    IncomparableFields {
        /// `fuzzy`, `strict` or `dateRange`.
        matcher: &'static str,
        /// `fieldId`.
        field: String,
        /// Its type.
        field_type: FieldType,
        /// `matchAgainst`.
        against: String,
        /// Its type.
        against_type: FieldType,
    },
    /// `days` is negative or above [`DEDUP_DATE_RANGE_DAYS_MAX`].
    #[error("dateRange matcher on `{field}`: days must be between 0 and {max}, got {days}")]
    DaysOutOfRange {
        /// The field id.
        field: String,
        /// The configured value.
        days: i64,
        /// The bound.
        max: i64,
    },
    /// `boost` is not a finite number ≥ 0, or `pivot` is negative.
    #[error("{matcher} matcher on `{field}`: `{option}` must be a non-negative number")]
    BadOption {
        /// `fuzzy`, `strict` or `dateRange`.
        matcher: &'static str,
        /// The field id.
        field: String,
        /// `boost` or `pivot`.
        option: &'static str,
    },
}

/// What kind of value a field holds, as far as matching goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueClass {
    /// `{firstname, middlename?, surname}`.
    Name,
    /// A string compared word by word.
    Text,
    /// A `YYYY-MM-DD` string.
    Date,
    /// `{age, asOfDateRef}`: a derived date of birth.
    Age,
    /// A number or a boolean.
    Scalar,
}

fn value_class(field_type: FieldType) -> Option<ValueClass> {
    match field_type {
        FieldType::Name => Some(ValueClass::Name),
        FieldType::Text
        | FieldType::Textarea
        | FieldType::Id
        | FieldType::Phone
        | FieldType::Email
        | FieldType::Select
        | FieldType::RadioGroup
        | FieldType::Country
        | FieldType::AlphaHidden
        | FieldType::UserRole
        | FieldType::Location
        | FieldType::AdministrativeArea
        | FieldType::Facility
        | FieldType::Office
        | FieldType::VerificationStatus => Some(ValueClass::Text),
        FieldType::Date => Some(ValueClass::Date),
        FieldType::Age => Some(ValueClass::Age),
        FieldType::Number | FieldType::Checkbox => Some(ValueClass::Scalar),
        _ => None,
    }
}

impl DeduplicationConfig {
    /// Parses one configuration from JSON (strict: unknown properties and matcher types are
    /// refused). Use [`Self::validate`] to check it against an event.
    pub fn from_json(json: &str) -> Result<Self, DedupConfigError> {
        Ok(serde_json::from_str(json)?)
    }

    /// Checks the configuration against `event`: a non-empty id, bounded size and depth,
    /// non-empty `and`/`or`, every `fieldId` and `matchAgainst` a declaration field of a type
    /// the matcher can compare (`fuzzy`: NAME or text; `strict`: NAME, text, DATE, NUMBER,
    /// CHECKBOX; `dateRange`: DATE or AGE, which compare with each other), `days` within
    /// 0..=[`DEDUP_DATE_RANGE_DAYS_MAX`], `boost` and `pivot` non-negative.
    pub fn validate(&self, event: &EventConfig) -> Result<(), DedupConfigError> {
        if self.id.is_empty() {
            return Err(DedupConfigError::EmptyId);
        }
        let mut count = 0;
        check_clause(&self.query, event, 1, &mut count)
    }
}

fn check_clause(
    clause: &Clause,
    event: &EventConfig,
    depth: usize,
    count: &mut usize,
) -> Result<(), DedupConfigError> {
    *count += 1;
    if *count > DEDUP_CLAUSES_MAX {
        return Err(DedupConfigError::TooManyClauses {
            max: DEDUP_CLAUSES_MAX,
        });
    }
    if depth > DEDUP_CLAUSE_DEPTH_MAX {
        return Err(DedupConfigError::TooDeep {
            max: DEDUP_CLAUSE_DEPTH_MAX,
        });
    }
    match clause {
        Clause::And { clauses } | Clause::Or { clauses } => {
            if clauses.is_empty() {
                return Err(DedupConfigError::EmptyClauses {
                    operator: clause.operator_name(),
                });
            }
            clauses
                .iter()
                .try_for_each(|child| check_clause(child, event, depth + 1, count))
        }
        Clause::Not { clause } => check_clause(clause, event, depth + 1, count),
        Clause::Fuzzy(m) => {
            let options = m.options.as_ref();
            check_boost("fuzzy", &m.field_id, options.and_then(|o| o.boost))?;
            check_fields(
                "fuzzy",
                event,
                &m.field_id,
                options.and_then(|o| o.match_against.as_deref()),
                &[ValueClass::Name, ValueClass::Text],
            )
        }
        Clause::Strict(m) => {
            let options = m.options.as_ref();
            check_boost("strict", &m.field_id, options.and_then(|o| o.boost))?;
            check_fields(
                "strict",
                event,
                &m.field_id,
                options.and_then(|o| o.match_against.as_deref()),
                &[
                    ValueClass::Name,
                    ValueClass::Text,
                    ValueClass::Date,
                    ValueClass::Scalar,
                ],
            )
        }
        Clause::DateRange(m) => {
            let options = &m.options;
            if !(0..=DEDUP_DATE_RANGE_DAYS_MAX).contains(&options.days) {
                return Err(DedupConfigError::DaysOutOfRange {
                    field: m.field_id.clone(),
                    days: options.days,
                    max: DEDUP_DATE_RANGE_DAYS_MAX,
                });
            }
            if options.pivot.is_some_and(|pivot| pivot < 0) {
                return Err(DedupConfigError::BadOption {
                    matcher: "dateRange",
                    field: m.field_id.clone(),
                    option: "pivot",
                });
            }
            check_boost("dateRange", &m.field_id, options.boost)?;
            check_fields(
                "dateRange",
                event,
                &m.field_id,
                options.match_against.as_deref(),
                &[ValueClass::Date, ValueClass::Age],
            )
        }
    }
}

fn check_boost(
    matcher: &'static str,
    field: &str,
    boost: Option<f64>,
) -> Result<(), DedupConfigError> {
    match boost {
        Some(boost) if !(boost.is_finite() && boost >= 0.0) => Err(DedupConfigError::BadOption {
            matcher,
            field: field.to_owned(),
            option: "boost",
        }),
        _ => Ok(()),
    }
}

/// Checks `fieldId` (and `matchAgainst`) exist, have a class in `allowed`, and compare with
/// each other (same class, or DATE with AGE).
fn check_fields(
    matcher: &'static str,
    event: &EventConfig,
    field_id: &str,
    match_against: Option<&str>,
    allowed: &[ValueClass],
) -> Result<(), DedupConfigError> {
    let lookup = |id: &str| -> Result<(FieldType, ValueClass), DedupConfigError> {
        let field = event
            .field(id)
            .ok_or_else(|| DedupConfigError::UnknownField {
                matcher,
                field: id.to_owned(),
            })?;
        match value_class(field.field_type) {
            Some(class) if allowed.contains(&class) => Ok((field.field_type, class)),
            _ => Err(DedupConfigError::UnsupportedField {
                matcher,
                field: id.to_owned(),
                field_type: field.field_type,
            }),
        }
    };
    let (field_type, class) = lookup(field_id)?;
    let Some(against) = match_against else {
        return Ok(());
    };
    let (against_type, against_class) = lookup(against)?;
    let dates = [ValueClass::Date, ValueClass::Age];
    let comparable =
        class == against_class || (dates.contains(&class) && dates.contains(&against_class));
    if comparable {
        Ok(())
    } else {
        Err(DedupConfigError::IncomparableFields {
            matcher,
            field: field_id.to_owned(),
            field_type,
            against: against.to_owned(),
            against_type,
        })
    }
}

impl Clause {
    fn operator_name(&self) -> &'static str {
        match self {
            Self::And { .. } => "and",
            Self::Or { .. } => "or",
            Self::Not { .. } => "not",
            Self::Fuzzy(_) => "fuzzy",
            Self::Strict(_) => "strict",
            Self::DateRange(_) => "dateRange",
        }
    }
}

/// The deduplication configuration of `action_type` in `event`, if it has one (central runs
/// DECLARE's after accepting a declaration, REGISTER's before registering).
pub fn for_action<'a>(
    event: &'a EventConfig,
    action_type: &str,
) -> Option<&'a DeduplicationConfig> {
    event.action(action_type)?.deduplication.as_ref()
}

// ---------------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------------

/// True if `candidate` is a potential duplicate of `existing` under `config` (see the module
/// documentation for each matcher). Pure and deterministic; expects a validated configuration.
pub fn matches(
    config: &DeduplicationConfig,
    candidate: &Declaration,
    existing: &Declaration,
) -> bool {
    eval(&config.query, candidate, existing)
}

/// The ids of the existing records `candidate` potentially duplicates, in iteration order, at
/// most [`DEDUP_MATCHES_MAX`]. The caller leaves the candidate's own record out of `existing`
/// and should iterate in a stable order (e.g. by creation), so the reported list is the same
/// on every run.
pub fn find_duplicates<'a, Id>(
    config: &DeduplicationConfig,
    candidate: &Declaration,
    existing: impl IntoIterator<Item = (Id, &'a Declaration)>,
) -> Vec<Id> {
    existing
        .into_iter()
        .filter(|(_, declaration)| matches(config, candidate, declaration))
        .map(|(id, _)| id)
        .take(DEDUP_MATCHES_MAX)
        .collect()
}

fn eval(clause: &Clause, candidate: &Declaration, existing: &Declaration) -> bool {
    match clause {
        Clause::And { clauses } => clauses.iter().all(|c| eval(c, candidate, existing)),
        Clause::Or { clauses } => clauses.iter().any(|c| eval(c, candidate, existing)),
        Clause::Not { clause } => !eval(clause, candidate, existing),
        Clause::Fuzzy(m) => {
            let options = m.options.as_ref();
            let against = options.and_then(|o| o.match_against.as_deref());
            let fuzziness = options.and_then(|o| o.fuzziness).unwrap_or_default();
            fuzzy_values(
                present(candidate, &m.field_id),
                present(existing, against.unwrap_or(&m.field_id)),
                fuzziness,
            )
        }
        Clause::Strict(m) => {
            let options = m.options.as_ref();
            let against = options.and_then(|o| o.match_against.as_deref());
            let left = present(candidate, &m.field_id);
            let right = present(existing, against.unwrap_or(&m.field_id));
            match options.and_then(|o| o.value.as_deref()) {
                Some(constant) => {
                    let constant = Value::String(constant.to_owned());
                    let constant = Some(&constant);
                    strict_values(left, constant) && strict_values(right, constant)
                }
                None => strict_values(left, right),
            }
        }
        Clause::DateRange(m) => {
            let against = m.options.match_against.as_deref().unwrap_or(&m.field_id);
            match (
                date_days(candidate, &m.field_id),
                date_days(existing, against),
            ) {
                (Some(a), Some(b)) => (a - b).abs() <= m.options.days,
                _ => false,
            }
        }
    }
}

/// The field's value, unless absent or `null`.
fn present<'a>(declaration: &'a Declaration, field_id: &str) -> Option<&'a Value> {
    declaration.get(field_id).filter(|value| !value.is_null())
}

/// A value split for comparison: a name's given words and surname words, or plain words.
enum Words {
    Name {
        given: Vec<String>,
        surname: Vec<String>,
    },
    Text(Vec<String>),
}

fn words(value: &Value) -> Option<Words> {
    match value {
        Value::String(text) => Some(Words::Text(normalise(text))),
        Value::Object(name) if name.contains_key("surname") || name.contains_key("firstname") => {
            let part = |key: &str| name.get(key).and_then(Value::as_str).map(normalise);
            let mut given = part("firstname").unwrap_or_default();
            given.extend(part("middlename").unwrap_or_default());
            given.truncate(DEDUP_TOKENS_MAX);
            Some(Words::Name {
                given,
                surname: part("surname").unwrap_or_default(),
            })
        }
        _ => None,
    }
}

/// Lower-case words without diacritics or apostrophes; at most [`DEDUP_TOKENS_MAX`].
fn normalise(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for ch in text.nfd() {
        if is_combining_mark(ch) || matches!(ch, '\'' | '\u{2019}' | '\u{2018}' | '`') {
            continue;
        }
        if ch.is_alphanumeric() {
            word.extend(ch.to_lowercase().filter(|c| !is_combining_mark(*c)));
        } else if !word.is_empty() {
            out.push(std::mem::take(&mut word));
            if out.len() == DEDUP_TOKENS_MAX {
                return out;
            }
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn strict_values(left: Option<&Value>, right: Option<&Value>) -> bool {
    let (Some(left), Some(right)) = (left, right) else {
        return false;
    };
    match (left, right) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Bool(a), Value::Bool(b)) => a == b,
        _ => match (words(left), words(right)) {
            (Some(Words::Text(a)), Some(Words::Text(b))) => !a.is_empty() && a == b,
            (
                Some(Words::Name {
                    given: given_a,
                    surname: surname_a,
                }),
                Some(Words::Name {
                    given: given_b,
                    surname: surname_b,
                }),
            ) => {
                !(given_a.is_empty() && surname_a.is_empty())
                    && given_a == given_b
                    && surname_a == surname_b
            }
            _ => false,
        },
    }
}

fn fuzzy_values(left: Option<&Value>, right: Option<&Value>, fuzziness: Fuzziness) -> bool {
    let (Some(left), Some(right)) = (left, right) else {
        return false;
    };
    match (left, right) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Bool(a), Value::Bool(b)) => a == b,
        _ => match (words(left), words(right)) {
            (Some(Words::Text(a)), Some(Words::Text(b))) => covers(&a, &b, fuzziness),
            (
                Some(Words::Name {
                    given: given_a,
                    surname: surname_a,
                }),
                Some(Words::Name {
                    given: given_b,
                    surname: surname_b,
                }),
            ) => {
                given_a
                    .iter()
                    .any(|a| given_b.iter().any(|b| similar(a, b, fuzziness)))
                    && covers(&surname_a, &surname_b, fuzziness)
            }
            _ => false,
        },
    }
}

/// Both non-empty, and every word of one side is similar to some word of the other (either
/// way round).
fn covers(a: &[String], b: &[String], fuzziness: Fuzziness) -> bool {
    let within = |xs: &[String], ys: &[String]| {
        xs.iter()
            .all(|x| ys.iter().any(|y| similar(x, y, fuzziness)))
    };
    !a.is_empty() && !b.is_empty() && (within(a, b) || within(b, a))
}

/// Two normalised words within the allowed edits.
fn similar(a: &str, b: &str, fuzziness: Fuzziness) -> bool {
    if a == b {
        return true;
    }
    let (len_a, len_b) = (a.chars().count(), b.chars().count());
    let allowed = fuzziness.max_edits(len_a.min(len_b));
    if allowed == 0 || len_a.abs_diff(len_b) > allowed {
        return false;
    }
    if len_a.max(len_b) > DEDUP_FUZZY_TOKEN_CHARS_MAX {
        return false;
    }
    strsim::osa_distance(a, b) <= allowed
}

// ---------------------------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------------------------

/// The date a DATE or AGE field stands for in `declaration`, as `YYYY-MM-DD`: the date itself,
/// or for `{age, asOfDateRef}` the date of birth `age` whole years before the declaration's
/// `asOfDateRef` date (29 February falls back to the 28th). `None` when missing or malformed.
/// This is the value central indexes for [`DateWindow`] lookups.
pub fn field_date(declaration: &Declaration, field_id: &str) -> Option<String> {
    date_days(declaration, field_id).map(format_date)
}

/// [`field_date`] as days since 1970-01-01.
fn date_days(declaration: &Declaration, field_id: &str) -> Option<i64> {
    match present(declaration, field_id)? {
        Value::String(text) => parse_date(text).map(|(y, m, d)| days_from_civil(y, m, d)),
        Value::Object(age) => {
            let years = age.get("age")?.as_f64()?;
            if !(years.is_finite() && (0.0..=DEDUP_AGE_YEARS_MAX as f64).contains(&years)) {
                return None;
            }
            let as_of_ref = age.get("asOfDateRef")?.as_str()?;
            let as_of = present(declaration, as_of_ref)?.as_str()?;
            let (year, month, day) = parse_date(as_of)?;
            let year = year - years.trunc() as i64;
            Some(days_from_civil(
                year,
                month,
                day.min(days_in_month(year, month)),
            ))
        }
        _ => None,
    }
}

/// A real calendar date `YYYY-MM-DD`.
fn parse_date(text: &str) -> Option<(i64, u32, u32)> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = &text[range];
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let year = i64::from(year);
    ((1..=12).contains(&month) && (1..=days_in_month(year, month)).contains(&day))
        .then_some((year, month, day))
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year.rem_euclid(4) == 0
            && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0) =>
        {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of days since 1970-01-01, clamped to years 0000..=9999.
fn format_date(days: i64) -> String {
    let min = days_from_civil(0, 1, 1);
    let max = days_from_civil(9999, 12, 31);
    let z = days.clamp(min, max) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

// ---------------------------------------------------------------------------------------------
// Candidate prefilter
// ---------------------------------------------------------------------------------------------

/// What an existing record must satisfy to possibly match, derived from the rule tree alone:
/// central asks its index for these records of the candidate's event type, then runs
/// [`matches()`] on each. Sound, not exact: every matching record passes; some that pass do not
/// match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prefilter {
    /// Some branch of the rules can match without any `dateRange` (or only under `not`), so
    /// every record of the event type is a candidate.
    AllRecords,
    /// A record can match only if it falls in at least one window. A window whose candidate
    /// date is missing admits no record (its `dateRange` clauses cannot hold).
    Windows(Vec<DateWindow>),
}

/// The existing record's `existing_field` date lies within `days` of the candidate's
/// `candidate_field` date.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateWindow {
    /// The candidate's field the window is centred on (the matcher's `fieldId`).
    pub candidate_field: String,
    /// The existing record's field that must fall in the window (`matchAgainst`, else
    /// `fieldId`); for an AGE field, its derived date of birth ([`field_date`]).
    pub existing_field: String,
    /// Half-width, days.
    pub days: i64,
}

impl DateWindow {
    /// The inclusive `YYYY-MM-DD` bounds the existing record's date must lie in, or `None` when
    /// the candidate has no date for `candidate_field`.
    pub fn bounds(&self, candidate: &Declaration) -> Option<(String, String)> {
        let centre = date_days(candidate, &self.candidate_field)?;
        Some((
            format_date(centre - self.days),
            format_date(centre + self.days),
        ))
    }
}

/// The candidate prefilter of `config`: for an `or`, the union of its branches' windows (the
/// widest window per pair of fields); for an `and`, the narrowest of its operands' conditions
/// (fewest windows, then smallest widest window), since every operand must hold; a `dateRange`
/// is its own window; `fuzzy`, `strict` and `not` bound nothing. If any branch of an `or`
/// bounds nothing, the result is [`Prefilter::AllRecords`].
///
/// For Farajaland's birth rules this is one window: `child.dob` within 1,095 days.
pub fn prefilter(config: &DeduplicationConfig) -> Prefilter {
    match windows(&config.query) {
        Some(windows) => Prefilter::Windows(windows.into_values().collect()),
        None => Prefilter::AllRecords,
    }
}

type WindowKey = (String, String);

/// `None` = unbounded; otherwise windows keyed by (candidate field, existing field).
fn windows(clause: &Clause) -> Option<BTreeMap<WindowKey, DateWindow>> {
    match clause {
        Clause::DateRange(m) => {
            let window = DateWindow {
                candidate_field: m.field_id.clone(),
                existing_field: m
                    .options
                    .match_against
                    .clone()
                    .unwrap_or_else(|| m.field_id.clone()),
                days: m.options.days,
            };
            let key = (
                window.candidate_field.clone(),
                window.existing_field.clone(),
            );
            Some(BTreeMap::from([(key, window)]))
        }
        Clause::Fuzzy(_) | Clause::Strict(_) | Clause::Not { .. } => None,
        Clause::Or { clauses } => {
            let mut union: BTreeMap<WindowKey, DateWindow> = BTreeMap::new();
            for child in clauses {
                for (key, window) in windows(child)? {
                    let entry = union.entry(key).or_insert_with(|| window.clone());
                    entry.days = entry.days.max(window.days);
                }
            }
            Some(union)
        }
        Clause::And { clauses } => clauses.iter().filter_map(windows).min_by_key(|set| {
            let widest = set.values().map(|w| w.days).max().unwrap_or(0);
            (set.len(), widest)
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::{BUILTIN_EVENTS_JSON, ConfigError, EventConfigSet};

    fn birth() -> EventConfig {
        EventConfigSet::builtin()
            .get("birth")
            .expect("builtin birth")
            .clone()
    }

    fn farajaland() -> DeduplicationConfig {
        for_action(&birth(), "DECLARE")
            .expect("builtin birth DECLARE carries deduplication")
            .clone()
    }

    /// A complete record: John Banda born 2024-06-03 to Grace Banda (born 1994-02-11, national
    /// id 1234567890).
    fn base() -> Declaration {
        let value = json!({
            "child.name": {"firstname": "John", "surname": "Banda"},
            "child.gender": "male",
            "child.dob": "2024-06-03",
            "mother.name": {"firstname": "Grace", "surname": "Banda"},
            "mother.dob": "1994-02-11",
            "mother.idType": "NATIONAL_ID",
            "mother.nid": "1234567890",
        });
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    /// `base()` with some fields replaced (`null` removes the field).
    fn with(changes: Value) -> Declaration {
        let mut declaration = base();
        let Value::Object(changes) = changes else {
            panic!("changes must be an object");
        };
        for (key, value) in changes {
            if value.is_null() {
                declaration.remove(&key);
            } else {
                declaration.insert(key, value);
            }
        }
        declaration
    }

    /// Which of the top-level `or`'s branches (numbered from 1) match.
    fn fired_rules(config: &DeduplicationConfig, a: &Declaration, b: &Declaration) -> Vec<usize> {
        let Clause::Or { clauses } = &config.query else {
            panic!("Farajaland's rules are an or");
        };
        clauses
            .iter()
            .enumerate()
            .filter(|(_, clause)| eval(clause, a, b))
            .map(|(rule, _)| rule + 1)
            .collect()
    }

    struct Pair {
        reason: &'static str,
        candidate: Declaration,
        existing: Declaration,
        /// The Farajaland rules that fire (1: similar child within 5 days, 2: same mother within
        /// 270 days, 3: same child name within 3 years); empty = no match.
        rules: &'static [usize],
    }

    fn pairs() -> Vec<Pair> {
        let other_mother = json!({
            "mother.name": {"firstname": "Esther", "surname": "Phiri"},
            "mother.dob": "1988-09-30",
            "mother.nid": "9876543210",
        });
        let mut other_mother_30_days = other_mother.clone();
        other_mother_30_days["child.name"] = json!({"firstname": "Peter", "surname": "Phiri"});
        other_mother_30_days["child.dob"] = json!("2024-07-03");
        vec![
            Pair {
                reason: "the same record twice: every rule fires",
                candidate: base(),
                existing: base(),
                rules: &[1, 2, 3],
            },
            Pair {
                reason: "child's first name misspelled Jonh/John: one transposition, allowed for a 4-letter word; not exact, so rule 3 does not fire",
                candidate: with(json!({"child.name": {"firstname": "Jonh", "surname": "Banda"}})),
                existing: base(),
                rules: &[1, 2],
            },
            Pair {
                reason: "child's first name Abenaa/Abena: one extra letter",
                candidate: with(json!({"child.name": {"firstname": "Abenaa", "surname": "Banda"}})),
                existing: with(json!({"child.name": {"firstname": "Abena", "surname": "Banda"}})),
                rules: &[1, 2],
            },
            Pair {
                reason: "diacritics and case: Abéna BÁNDA / Abena Banda, Grâce / Grace normalise to the same words, so even the exact-name rule fires",
                candidate: with(json!({
                    "child.name": {"firstname": "Abéna", "surname": "BÁNDA"},
                    "mother.name": {"firstname": "Grâce", "surname": "Banda"},
                })),
                existing: with(json!({"child.name": {"firstname": "Abena", "surname": "Banda"}})),
                rules: &[1, 2, 3],
            },
            Pair {
                reason: "child's date of birth 3 days apart: within rule 1's 5 days",
                candidate: with(json!({"child.dob": "2024-06-06"})),
                existing: base(),
                rules: &[1, 2, 3],
            },
            Pair {
                reason: "30 days apart, different child name, same mother: rule 2 (one mother cannot give birth twice within 270 days)",
                candidate: with(json!({
                    "child.dob": "2024-07-03",
                    "child.name": {"firstname": "Peter", "surname": "Banda"},
                })),
                existing: base(),
                rules: &[2],
            },
            Pair {
                reason: "30 days apart, different child name, different mother: nothing in common",
                candidate: with(other_mother_30_days),
                existing: base(),
                rules: &[],
            },
            Pair {
                reason: "twins (same mother, same day, Kofi/Kwame): rule 2 flags them, as in OpenCRVS (the rules do not read child.birthType); a registrar marks them not duplicate",
                candidate: with(json!({"child.name": {"firstname": "Kofi", "surname": "Banda"}})),
                existing: with(json!({"child.name": {"firstname": "Kwame", "surname": "Banda"}})),
                rules: &[2],
            },
            Pair {
                reason: "same mother, a different child born 2 years later: outside 270 days, and the names differ",
                candidate: with(json!({
                    "child.dob": "2026-06-10",
                    "child.name": {"firstname": "Mary", "surname": "Banda"},
                })),
                existing: base(),
                rules: &[],
            },
            Pair {
                reason: "same mother, the same child name 2 years later: rule 3 (the age-fraud check, 1,095 days)",
                candidate: with(json!({"child.dob": "2026-06-10"})),
                existing: base(),
                rules: &[3],
            },
            Pair {
                reason: "same child name and date of birth, different mother: every rule needs a similar mother",
                candidate: with(other_mother),
                existing: base(),
                rules: &[],
            },
            Pair {
                reason: "mother's national id given on both and different: not the same mother",
                candidate: with(json!({"mother.nid": "1234567899"})),
                existing: base(),
                rules: &[],
            },
            Pair {
                reason: "mother's id types differ (national id / passport): the ids cannot be compared, so they do not block",
                candidate: with(
                    json!({"mother.idType": "PASSPORT", "mother.nid": null, "mother.passport": "P123"}),
                ),
                existing: base(),
                rules: &[1, 2, 3],
            },
            Pair {
                reason: "mother's id type NONE on both: strict value NONE",
                candidate: with(json!({"mother.idType": "NONE", "mother.nid": null})),
                existing: with(json!({"mother.idType": "NONE", "mother.nid": null})),
                rules: &[1, 2, 3],
            },
            Pair {
                reason: "mother's id missing on the candidate (a partial notification): the id matches if given",
                candidate: with(json!({"mother.idType": null, "mother.nid": null})),
                existing: base(),
                rules: &[1, 2, 3],
            },
            Pair {
                reason: "mother's age (30 at the child's birth → born 1994-06-03) against a date of birth 1994-02-11: 113 days, within 365, cross-matched",
                candidate: with(json!({
                    "mother.dob": null,
                    "mother.age": {"age": 30, "asOfDateRef": "child.dob"},
                })),
                existing: base(),
                rules: &[1, 2, 3],
            },
            Pair {
                reason: "mother's dates of birth 4 years apart: not a similar-aged mother",
                candidate: with(json!({"mother.dob": "1990-01-01"})),
                existing: base(),
                rules: &[],
            },
            Pair {
                reason: "child's date of birth missing on one side: every rule needs it, and a missing value never matches",
                candidate: with(json!({"child.dob": null})),
                existing: base(),
                rules: &[],
            },
            Pair {
                reason: "mother's name missing on one side",
                candidate: base(),
                existing: with(json!({"mother.name": null})),
                rules: &[],
            },
            Pair {
                reason: "mother's name has a surname only: a fuzzy name needs a similar given name",
                candidate: with(json!({"mother.name": {"surname": "Banda"}})),
                existing: base(),
                rules: &[],
            },
            Pair {
                reason: "mother's age and date of birth both missing: no similar-aged mother",
                candidate: with(json!({"mother.dob": null})),
                existing: base(),
                rules: &[],
            },
            Pair {
                reason: "child's surname double-barrelled on one side (Banda Phiri / Banda): one surname covers the other",
                candidate: with(
                    json!({"child.name": {"firstname": "John", "surname": "Banda Phiri"}}),
                ),
                existing: base(),
                rules: &[1, 2],
            },
        ]
    }

    #[test]
    fn farajaland_pairs_table() {
        let config = farajaland();
        for pair in pairs() {
            let fired = fired_rules(&config, &pair.candidate, &pair.existing);
            assert_eq!(fired, pair.rules, "{}", pair.reason);
            assert_eq!(
                matches(&config, &pair.candidate, &pair.existing),
                !pair.rules.is_empty(),
                "{}",
                pair.reason
            );
            // Arrival order at central must not matter.
            assert_eq!(
                matches(&config, &pair.existing, &pair.candidate),
                !pair.rules.is_empty(),
                "reversed: {}",
                pair.reason
            );
        }
    }

    #[test]
    fn prefilter_admits_every_matching_pair() {
        let config = farajaland();
        let Prefilter::Windows(windows) = prefilter(&config) else {
            panic!("Farajaland's rules are bounded by date windows");
        };
        for pair in pairs().into_iter().filter(|pair| !pair.rules.is_empty()) {
            let admitted = windows.iter().any(|window| {
                let (Some((low, high)), Some(date)) = (
                    window.bounds(&pair.candidate),
                    field_date(&pair.existing, &window.existing_field),
                ) else {
                    return false;
                };
                low <= date && date <= high
            });
            assert!(admitted, "prefilter drops a match: {}", pair.reason);
        }
    }

    #[test]
    fn builtin_birth_carries_farajaland_rules() {
        let config = farajaland();
        assert_eq!(config.id, "birth-deduplication");
        let Clause::Or { clauses } = &config.query else {
            panic!("an or of three rules");
        };
        assert_eq!(clauses.len(), 3);
        config.validate(&birth()).unwrap();
        // Only DECLARE carries rules in the builtin configuration, and death has none.
        assert!(for_action(&birth(), "REGISTER").is_none());
        let set = EventConfigSet::builtin();
        let death = set.get("death").unwrap();
        assert!(death.actions().iter().all(|a| a.deduplication.is_none()));

        // The JSON form in the file is what the type serialises back to.
        let file: Value = serde_json::from_str(BUILTIN_EVENTS_JSON).unwrap();
        let declare = file[0]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["type"] == "DECLARE")
            .unwrap();
        assert_eq!(
            serde_json::to_value(&config).unwrap(),
            declare["deduplication"]
        );
        let reparsed = DeduplicationConfig::from_json(&declare["deduplication"].to_string());
        assert_eq!(reparsed.unwrap(), config);
    }

    /// Farajaland's current rules as the toolkit serialises them (`options` omitted when none
    /// are given, `matchAgainst` for the age/date-of-birth cross-match).
    const FARAJALAND_TOOLKIT_JSON: &str = r#"{
      "id": "birth-deduplication",
      "label": {"id": "event.birth.action.detect-duplicate.label", "defaultMessage": "Detect duplicate", "description": ""},
      "query": {"type": "or", "clauses": [
        {"type": "and", "clauses": [
          {"type": "fuzzy", "fieldId": "child.name"},
          {"type": "or", "clauses": [
            {"type": "dateRange", "fieldId": "child.dob", "options": {"days": 5}},
            {"type": "dateRange", "fieldId": "child.dob", "options": {"days": 1095}}]},
          {"type": "fuzzy", "fieldId": "mother.name"},
          {"type": "or", "clauses": [
            {"type": "dateRange", "fieldId": "mother.dob", "options": {"days": 365}},
            {"type": "dateRange", "fieldId": "mother.age", "options": {"days": 365}},
            {"type": "dateRange", "fieldId": "mother.dob", "options": {"days": 365, "matchAgainst": "mother.age"}},
            {"type": "dateRange", "fieldId": "mother.age", "options": {"days": 365, "matchAgainst": "mother.dob"}}]}]},
        {"type": "and", "clauses": [
          {"type": "fuzzy", "fieldId": "mother.name", "options": {"fuzziness": "AUTO:4,7", "boost": 1}},
          {"type": "dateRange", "fieldId": "child.dob", "options": {"days": 270, "pivot": 180}}]},
        {"type": "and", "clauses": [
          {"type": "strict", "fieldId": "child.name"},
          {"type": "dateRange", "fieldId": "child.dob", "options": {"days": 1095}},
          {"type": "not", "clause": {"type": "strict", "fieldId": "mother.idType", "options": {"value": "NONE"}}}]}]}
    }"#;

    #[test]
    fn toolkit_json_parses_and_validates() {
        let config = DeduplicationConfig::from_json(FARAJALAND_TOOLKIT_JSON).unwrap();
        config.validate(&birth()).unwrap();
        let Clause::Or { clauses } = &config.query else {
            panic!("an or");
        };
        let Clause::And { clauses: rule2 } = &clauses[1] else {
            panic!("an and");
        };
        let Clause::Fuzzy(fuzzy) = &rule2[0] else {
            panic!("a fuzzy matcher");
        };
        let options = fuzzy.options.as_ref().unwrap();
        assert_eq!(options.fuzziness, Some(Fuzziness::Auto { low: 4, high: 7 }));
        assert_eq!(options.boost, Some(1.0));
        // Omitted options stay omitted when served back.
        let served = serde_json::to_value(&config).unwrap();
        assert!(
            served["query"]["clauses"][0]["clauses"][0]
                .get("options")
                .is_none()
        );
        assert_eq!(
            prefilter(&config),
            Prefilter::Windows(vec![DateWindow {
                candidate_field: "child.dob".into(),
                existing_field: "child.dob".into(),
                days: 1095,
            }])
        );
    }

    fn config_with(query: Value) -> Result<DeduplicationConfig, DedupConfigError> {
        let json = json!({
            "id": "test",
            "label": {"id": "x", "defaultMessage": "x"},
            "query": query,
        });
        let config = DeduplicationConfig::from_json(&json.to_string())?;
        config.validate(&birth())?;
        Ok(config)
    }

    fn nested(depth: usize) -> Value {
        (1..depth).fold(
            json!({"type": "fuzzy", "fieldId": "child.name"}),
            |inner, _| json!({"type": "not", "clause": inner}),
        )
    }

    #[test]
    fn bad_configs_are_refused_with_clear_errors() {
        let fuzzy_name = json!({"type": "fuzzy", "fieldId": "child.name"});
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"type": "fuzzy", "fieldId": "child.nickname"}),
                "fuzzy matcher refers to unknown field `child.nickname`",
            ),
            (
                json!({"type": "strict", "fieldId": "child.name", "options": {"matchAgainst": "child.alias"}}),
                "strict matcher refers to unknown field `child.alias`",
            ),
            (
                json!({"type": "soundex", "fieldId": "child.name"}),
                "unknown variant `soundex`, expected one of `and`, `or`, `not`, `fuzzy`, `strict`, `dateRange`",
            ),
            (
                json!({"type": "dateRange", "fieldId": "child.dob", "options": {"days": -5}}),
                "dateRange matcher on `child.dob`: days must be between 0 and 36525, got -5",
            ),
            (
                json!({"type": "dateRange", "fieldId": "child.dob", "options": {"days": 40000}}),
                "days must be between 0 and 36525, got 40000",
            ),
            (
                json!({"type": "dateRange", "fieldId": "child.dob"}),
                "missing field `options`",
            ),
            (
                json!({"type": "dateRange", "fieldId": "child.dob", "options": {"dayz": 5}}),
                "unknown field `dayz`",
            ),
            (
                json!({"type": "and", "clauses": [fuzzy_name.clone()], "operator": "AND"}),
                "unknown field `operator`",
            ),
            (
                json!({"type": "fuzzy", "fieldId": "child.name", "options": {"fuzziness": 3}}),
                "invalid fuzziness 3 (at most 2 edits)",
            ),
            (
                json!({"type": "fuzzy", "fieldId": "child.name", "options": {"fuzziness": "AUTO:7,4"}}),
                "invalid fuzziness `AUTO:7,4`",
            ),
            (
                json!({"type": "dateRange", "fieldId": "child.name", "options": {"days": 5}}),
                "dateRange matcher cannot compare field `child.name` of type NAME",
            ),
            (
                json!({"type": "fuzzy", "fieldId": "child.dob"}),
                "fuzzy matcher cannot compare field `child.dob` of type DATE",
            ),
            (
                json!({"type": "strict", "fieldId": "documents.proofOfBirth"}),
                "strict matcher cannot compare field `documents.proofOfBirth` of type FILE",
            ),
            (
                json!({"type": "strict", "fieldId": "child.name", "options": {"matchAgainst": "mother.nid"}}),
                "strict matcher compares `child.name` (NAME) with `mother.nid` (ID), whose values differ in kind",
            ),
            (
                json!({"type": "and", "clauses": []}),
                "an `and` clause has no clauses",
            ),
            (
                json!({"type": "or", "clauses": []}),
                "an `or` clause has no clauses",
            ),
            (
                json!({"type": "fuzzy", "fieldId": "child.name", "options": {"boost": -1}}),
                "fuzzy matcher on `child.name`: `boost` must be a non-negative number",
            ),
            (
                json!({"type": "dateRange", "fieldId": "child.dob", "options": {"days": 5, "pivot": -1}}),
                "`pivot` must be a non-negative number",
            ),
            (
                nested(DEDUP_CLAUSE_DEPTH_MAX + 1),
                "the rule tree nests deeper than 16 levels",
            ),
            (
                json!({"type": "or", "clauses": vec![fuzzy_name; DEDUP_CLAUSES_MAX]}),
                "the rule tree has more than 256 clauses",
            ),
        ];
        for (query, expected) in cases {
            let error = config_with(query.clone()).expect_err(expected).to_string();
            assert!(
                error.contains(expected),
                "{query}: got `{error}`, expected `{expected}`"
            );
        }
        // The bounds themselves are accepted.
        config_with(nested(DEDUP_CLAUSE_DEPTH_MAX)).unwrap();
        let many = vec![json!({"type": "fuzzy", "fieldId": "child.name"}); DEDUP_CLAUSES_MAX - 1];
        config_with(json!({"type": "or", "clauses": many})).unwrap();

        let empty_id = r#"{"id": "", "label": {"id": "x", "defaultMessage": "x"},
            "query": {"type": "fuzzy", "fieldId": "child.name"}}"#;
        let error = DeduplicationConfig::from_json(empty_id)
            .unwrap()
            .validate(&birth())
            .unwrap_err();
        assert!(matches!(error, DedupConfigError::EmptyId), "{error}");
    }

    /// Loads the builtin configuration with the birth DECLARE action's `deduplication` replaced.
    fn load_with(action_type: &str, deduplication: Value) -> Result<EventConfigSet, ConfigError> {
        let mut events: Value = serde_json::from_str(BUILTIN_EVENTS_JSON).unwrap();
        for action in events[0]["actions"].as_array_mut().unwrap() {
            if let Value::Object(action) = action {
                action.remove("deduplication");
                if action["type"] == action_type {
                    action.insert("deduplication".into(), deduplication.clone());
                }
            }
        }
        EventConfigSet::from_json(&events.to_string())
    }

    #[test]
    fn event_configuration_checks_its_deduplication() {
        let mut rules: Value = serde_json::to_value(farajaland()).expect("serialisable rules");
        load_with("REGISTER", rules.clone()).unwrap();

        let error = load_with("PRINT_CERTIFICATE", rules.clone()).unwrap_err();
        assert!(
            matches!(&error, ConfigError::DeduplicationNotAllowed { action_type, .. } if action_type == "PRINT_CERTIFICATE"),
            "{error}"
        );

        // Farajaland's older rules compare `mother.verified`, which the builtin form lacks.
        rules["query"]["clauses"][0]["clauses"][0] = json!({"type": "strict", "fieldId": "mother.verified", "options": {"value": "authenticated"}});
        let error = load_with("DECLARE", rules).unwrap_err();
        assert_eq!(
            error.to_string(),
            "event `birth`: DECLARE deduplication: strict matcher refers to unknown field `mother.verified`"
        );

        let error = load_with(
            "DECLARE",
            json!({"id": "x", "label": {"id": "x", "defaultMessage": "x"},
            "query": {"type": "fuzzy", "fieldId": "child.name"}, "enabled": true}),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown field `enabled`"),
            "{error}"
        );
    }

    #[test]
    fn fuzzy_words_follow_auto_4_7() {
        let auto = Fuzziness::default();
        let cases = [
            ("john", "jonh", true, "4 letters: 1 edit (a transposition)"),
            ("abena", "abenaa", true, "5 letters: 1 edit"),
            ("ama", "amy", false, "3 letters: exact only"),
            ("jo", "joe", false, "shorter word has 2 letters: exact only"),
            ("mensah", "mensha", true, "6 letters: 1 edit"),
            ("mensah", "mansha", false, "6 letters: 2 edits is too many"),
            ("christopher", "kristopher", true, "10+ letters: 2 edits"),
            ("christopher", "kristofer", false, "3 edits"),
            ("banda", "banda", true, "equal"),
        ];
        for (a, b, expected, reason) in cases {
            assert_eq!(similar(a, b, auto), expected, "{a}/{b}: {reason}");
            assert_eq!(similar(b, a, auto), expected, "{b}/{a}: {reason}");
        }
        let table = [(0, 0), (3, 0), (4, 1), (6, 1), (7, 2), (30, 2)];
        for (chars, edits) in table {
            assert_eq!(auto.max_edits(chars), edits, "{chars} characters");
        }
        let long = "a".repeat(DEDUP_FUZZY_TOKEN_CHARS_MAX + 1);
        let long_typo = format!("b{}", &long[1..]);
        assert!(
            !similar(&long, &long_typo, auto),
            "over-long words must be equal"
        );
        assert!(similar(&long, &long, auto));
    }

    #[test]
    fn fuzziness_spellings() {
        let parse = |value: Value| serde_json::from_value::<Fuzziness>(value);
        assert_eq!(
            parse(json!("AUTO")).unwrap(),
            Fuzziness::Auto { low: 3, high: 6 }
        );
        assert_eq!(parse(json!("AUTO:4,7")).unwrap(), Fuzziness::default());
        assert_eq!(parse(json!(1)).unwrap(), Fuzziness::Edits(1));
        assert_eq!(parse(json!("2")).unwrap(), Fuzziness::Edits(2));
        for bad in [
            json!(3),
            json!(-1),
            json!(1.5),
            json!("AUTO:4"),
            json!("fuzzy"),
            json!(null),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::to_value(Fuzziness::default()).unwrap(),
            json!("AUTO:4,7")
        );
        assert_eq!(serde_json::to_value(Fuzziness::Edits(1)).unwrap(), json!(1));
        let edits = Fuzziness::Edits(1);
        assert_eq!((edits.max_edits(2), edits.max_edits(20)), (1, 1));
    }

    #[test]
    fn normalisation_folds_case_diacritics_and_punctuation() {
        assert_eq!(
            normalise("  Abéna-Akua  O'Brien "),
            ["abena", "akua", "obrien"]
        );
        assert_eq!(normalise("ÇAĞRI Nguyễn"), ["cagri", "nguyen"]);
        assert!(normalise(" - ").is_empty());
        let many = "a ".repeat(DEDUP_TOKENS_MAX * 2);
        assert_eq!(normalise(&many).len(), DEDUP_TOKENS_MAX);
    }

    #[test]
    fn strict_and_fuzzy_on_plain_values() {
        let config = config_with(json!({"type": "and", "clauses": [
            {"type": "strict", "fieldId": "child.weightAtBirth"},
            {"type": "strict", "fieldId": "informant.email"},
            {"type": "fuzzy", "fieldId": "informant.other.relation"},
        ]}))
        .unwrap();
        let record = |weight: Value, email: &str, relation: &str| -> Declaration {
            let value = json!({
                "child.weightAtBirth": weight,
                "informant.email": email,
                "informant.other.relation": relation,
            });
            serde_json::from_value(value).unwrap()
        };
        let a = record(json!(3.2), "Grace@Example.com", "Aunt of mother");
        assert!(matches(
            &config,
            &a,
            &record(json!(3.2), "grace@example.com", "aunt")
        ));
        assert!(!matches(
            &config,
            &a,
            &record(json!(3.3), "grace@example.com", "aunt")
        ));
        assert!(!matches(
            &config,
            &a,
            &record(json!("3.2"), "grace@example.com", "aunt")
        ));
        assert!(!matches(
            &config,
            &a,
            &record(json!(3.2), "grace@example.org", "aunt")
        ));
        assert!(!matches(
            &config,
            &a,
            &record(json!(3.2), "grace@example.com", "uncle")
        ));
        assert!(!matches(
            &config,
            &a,
            &record(json!(3.2), "grace@example.com", " ")
        ));
    }

    #[test]
    fn not_of_a_missing_value_holds() {
        let config = config_with(json!({"type": "not", "clause":
            {"type": "strict", "fieldId": "mother.idType"}}))
        .unwrap();
        let none = with(json!({"mother.idType": null}));
        assert!(matches(&config, &none, &base()));
        assert!(matches(&config, &base(), &none));
        assert!(!matches(&config, &base(), &base()));
        let strict_none = config_with(json!({"type": "strict", "fieldId": "mother.idType",
            "options": {"value": "NONE"}}))
        .unwrap();
        let id_none = with(json!({"mother.idType": "NONE"}));
        assert!(matches(&strict_none, &id_none, &id_none));
        assert!(
            !matches(&strict_none, &id_none, &base()),
            "both must hold the value"
        );
    }

    #[test]
    fn find_duplicates_keeps_order_and_bound() {
        let config = farajaland();
        let stranger = with(json!({"mother.name": {"firstname": "Esther", "surname": "Phiri"}}));
        let existing = [
            ("a", base()),
            ("b", stranger.clone()),
            ("c", with(json!({"child.dob": "2024-06-05"}))),
        ];
        let found = find_duplicates(&config, &base(), existing.iter().map(|(id, d)| (*id, d)));
        assert_eq!(found, ["a", "c"]);
        assert!(find_duplicates(&config, &base(), [(1, &stranger)]).is_empty());

        let many: Vec<Declaration> = vec![base(); DEDUP_MATCHES_MAX + 2];
        let found = find_duplicates(&config, &base(), many.iter().enumerate());
        assert_eq!(found, (0..DEDUP_MATCHES_MAX).collect::<Vec<_>>());
    }

    #[test]
    fn prefilter_shapes() {
        let windows = |query: Value| prefilter(&config_with(query).unwrap());
        let window = |candidate: &str, existing: &str, days| DateWindow {
            candidate_field: candidate.into(),
            existing_field: existing.into(),
            days,
        };
        assert_eq!(
            prefilter(&farajaland()),
            Prefilter::Windows(vec![window("child.dob", "child.dob", 1095)])
        );
        assert_eq!(
            windows(json!({"type": "or", "clauses": [
                {"type": "fuzzy", "fieldId": "child.name"},
                {"type": "dateRange", "fieldId": "child.dob", "options": {"days": 5}}]})),
            Prefilter::AllRecords,
            "a branch without a date window"
        );
        assert_eq!(
            windows(json!({"type": "and", "clauses": [
                {"type": "fuzzy", "fieldId": "child.name"},
                {"type": "not", "clause":
                    {"type": "dateRange", "fieldId": "child.dob", "options": {"days": 5}}}]})),
            Prefilter::AllRecords,
            "a negated window bounds nothing"
        );
        assert_eq!(
            windows(json!({"type": "or", "clauses": [
                {"type": "dateRange", "fieldId": "child.dob", "options": {"days": 5}},
                {"type": "and", "clauses": [
                    {"type": "fuzzy", "fieldId": "mother.name"},
                    {"type": "dateRange", "fieldId": "mother.dob",
                        "options": {"days": 365, "matchAgainst": "mother.age"}}]},
                {"type": "dateRange", "fieldId": "child.dob", "options": {"days": 30}}]})),
            Prefilter::Windows(vec![
                window("child.dob", "child.dob", 30),
                window("mother.dob", "mother.age", 365),
            ])
        );

        let wide = window("child.dob", "child.dob", 1095);
        assert_eq!(
            wide.bounds(&base()),
            Some(("2021-06-04".to_owned(), "2027-06-03".to_owned()))
        );
        assert_eq!(wide.bounds(&with(json!({"child.dob": null}))), None);
        assert_eq!(wide.bounds(&with(json!({"child.dob": "2024-13-01"}))), None);
        let edge = window("child.dob", "child.dob", DEDUP_DATE_RANGE_DAYS_MAX);
        assert_eq!(
            edge.bounds(&with(json!({"child.dob": "0010-01-01"})))
                .unwrap()
                .0,
            "0000-01-01",
            "clamped to four-digit years"
        );
    }

    #[test]
    fn dates_and_derived_dates_of_birth() {
        let record = |value: Value| -> Declaration { serde_json::from_value(value).unwrap() };
        let leap = record(json!({
            "child.dob": "2024-02-29",
            "mother.age": {"age": 30, "asOfDateRef": "child.dob"},
            "father.age": {"age": 30, "asOfDateRef": "father.dob"},
            "informant.age": {"age": 400, "asOfDateRef": "child.dob"},
            "mother.dob": "2023-02-29",
        }));
        assert_eq!(
            field_date(&leap, "child.dob").as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(
            field_date(&leap, "mother.age").as_deref(),
            Some("1994-02-28")
        );
        assert_eq!(
            field_date(&leap, "father.age"),
            None,
            "reference date missing"
        );
        assert_eq!(field_date(&leap, "informant.age"), None, "implausible age");
        assert_eq!(field_date(&leap, "mother.dob"), None, "not a calendar date");
        for (y, m, d) in [
            (1970, 1, 1),
            (2000, 2, 29),
            (1899, 12, 31),
            (9999, 12, 31),
            (0, 1, 1),
        ] {
            let days = days_from_civil(y, m, d);
            assert_eq!(format_date(days), format!("{y:04}-{m:02}-{d:02}"));
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(
            days_from_civil(2024, 3, 1) - days_from_civil(2024, 2, 28),
            2
        );
    }
}
