//! OpenCRVS scopes: query-string encoded strings such as `type=record.notify&event=birth`,
//! parsed into a typed form, plus the legacy spellings OpenCRVS still rewrites at issue time.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Record scope types that take the `event` option (OpenCRVS `RecordScopeTypeV2`).
pub const RECORD_SCOPE_TYPES: &[&str] = &[
    "record.search",
    "record.create",
    "record.read",
    "record.declare",
    "record.notify",
    "record.edit",
    "record.reject",
    "record.archive",
    "record.review-duplicates",
    "record.register",
    "record.print-certified-copies",
    "record.request-correction",
    "record.correct",
    "record.unassign-others",
    "record.custom-action",
];

/// Scopes without options that OpenCRVS knows.
pub const PLAIN_SCOPE_TYPES: &[&str] = &[
    "bypassratelimit",
    "record.reindex",
    "user.data-seeding",
    "integration.create",
    "record.import",
    "config.update-all",
    "attachment.upload",
    "profile.electronic-signature",
    "user.read-only-my-audit",
    "performance.read",
    "performance.read-dashboards",
    "performance.vital-statistics-export",
    "record.confirm-registration",
    "record.reject-registration",
];

/// Other scope types that take options.
pub const CONFIGURABLE_SCOPE_TYPES: &[&str] = &[
    "organisation.read-locations",
    "user.read",
    "user.search",
    "user.create",
    "user.edit",
    "workqueue",
    "dashboard.view",
];

/// One parsed scope: its type and its options (each a list, comma separated on the wire).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    kind: String,
    options: BTreeMap<String, Vec<String>>,
}

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// No `type=` part.
    #[error("scope {0:?} has no type")]
    MissingType(String),
    /// The type is not an OpenCRVS scope type.
    #[error("scope {0:?} has an unknown type")]
    UnknownType(String),
    /// A part is not `key=value`, or a key repeats.
    #[error("scope {0:?} is malformed")]
    Malformed(String),
    /// An option this scope type does not take.
    #[error("scope {scope:?} has an unknown option {option:?}")]
    UnknownOption {
        /// The scope string.
        scope: String,
        /// The offending option.
        option: String,
    },
}

impl Scope {
    /// The scope type, e.g. `record.notify`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The values of an option, if the scope sets it.
    pub fn option(&self, name: &str) -> Option<&[String]> {
        self.options.get(name).map(Vec::as_slice)
    }

    /// Whether this scope covers `event_type`: an absent `event` option means every event.
    pub fn covers_event(&self, event_type: &str) -> bool {
        match self.option("event") {
            None => true,
            Some(events) => events.iter().any(|e| e == event_type),
        }
    }

    /// The options each type takes. OpenCRVS nests them: every record scope takes `event` and
    /// `placeOfEvent`; the ones that act after DECLARE add `declaredIn`/`declaredBy`; the ones
    /// that act after REGISTER (and custom actions and printing) add `registeredIn`/`registeredBy`
    /// on top. Farajaland's roles rely on this (`type=record.edit&placeOfEvent=location&
    /// declaredBy=user`, `type=record.custom-action&...&declaredIn=administrativeArea`).
    fn allowed_options(kind: &str) -> &'static [&'static str] {
        const PLACE: &[&str] = &["event", "placeOfEvent"];
        const DECLARED: &[&str] = &["event", "placeOfEvent", "declaredIn", "declaredBy"];
        const FULL: &[&str] = &[
            "event",
            "placeOfEvent",
            "declaredIn",
            "declaredBy",
            "registeredIn",
            "registeredBy",
        ];
        match kind {
            "record.create" | "record.declare" | "record.notify" => PLACE,
            "record.edit"
            | "record.reject"
            | "record.archive"
            | "record.review-duplicates"
            | "record.register" => DECLARED,
            "record.search"
            | "record.read"
            | "record.request-correction"
            | "record.correct"
            | "record.unassign-others" => FULL,
            "record.print-certified-copies" => &[
                "event",
                "placeOfEvent",
                "declaredIn",
                "declaredBy",
                "registeredIn",
                "registeredBy",
                "templates",
            ],
            "record.custom-action" => &[
                "event",
                "placeOfEvent",
                "declaredIn",
                "declaredBy",
                "registeredIn",
                "registeredBy",
                "customActionTypes",
            ],
            "organisation.read-locations" | "user.read" | "user.search" => &["accessLevel"],
            "user.create" | "user.edit" => &["accessLevel", "role"],
            "workqueue" | "dashboard.view" => &["ids"],
            _ => &[],
        }
    }

    fn known_kind(kind: &str) -> bool {
        RECORD_SCOPE_TYPES.contains(&kind)
            || PLAIN_SCOPE_TYPES.contains(&kind)
            || CONFIGURABLE_SCOPE_TYPES.contains(&kind)
    }

    /// Parses a v1.9 legacy spelling: a bare type (`record.notify`) or the bracket form
    /// (`record.create[event=birth|death]`). OpenCRVS rewrites these at token issue time.
    fn parse_legacy(s: &str) -> Result<Self, ScopeError> {
        let mapped = match s {
            "notification-api" => "record.notify",
            "recordsearch" => "record.search",
            other => other,
        };
        let (kind, rest) = match mapped.split_once('[') {
            None => (mapped, None),
            Some((kind, rest)) => {
                let inner = rest
                    .strip_suffix(']')
                    .ok_or_else(|| ScopeError::Malformed(s.to_owned()))?;
                (kind, Some(inner))
            }
        };
        let mut options = BTreeMap::new();
        if let Some(inner) = rest {
            for part in inner.split(',').filter(|p| !p.is_empty()) {
                let (key, values) = part
                    .split_once('=')
                    .ok_or_else(|| ScopeError::Malformed(s.to_owned()))?;
                let values = values.split('|').map(str::to_owned).collect();
                if options.insert(key.to_owned(), values).is_some() {
                    return Err(ScopeError::Malformed(s.to_owned()));
                }
            }
        }
        Self::checked(s, kind.to_owned(), options)
    }

    fn checked(
        original: &str,
        kind: String,
        options: BTreeMap<String, Vec<String>>,
    ) -> Result<Self, ScopeError> {
        if !Self::known_kind(&kind) {
            return Err(ScopeError::UnknownType(original.to_owned()));
        }
        let allowed = Self::allowed_options(&kind);
        for key in options.keys() {
            if !allowed.contains(&key.as_str()) {
                return Err(ScopeError::UnknownOption {
                    scope: original.to_owned(),
                    option: key.clone(),
                });
            }
        }
        for values in options.values() {
            if values.is_empty() || values.iter().any(String::is_empty) {
                return Err(ScopeError::Malformed(original.to_owned()));
            }
        }
        Ok(Self { kind, options })
    }
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !s.contains('=') || s.contains('[') {
            return Self::parse_legacy(s);
        }
        let mut kind = None;
        let mut options = BTreeMap::new();
        for part in s.split('&') {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| ScopeError::Malformed(s.to_owned()))?;
            if key == "type" {
                if kind.replace(value.to_owned()).is_some() {
                    return Err(ScopeError::Malformed(s.to_owned()));
                }
            } else {
                let values = value.split(',').map(str::to_owned).collect();
                if options.insert(key.to_owned(), values).is_some() {
                    return Err(ScopeError::Malformed(s.to_owned()));
                }
            }
        }
        let kind = kind.ok_or_else(|| ScopeError::MissingType(s.to_owned()))?;
        Self::checked(s, kind, options)
    }
}

impl fmt::Display for Scope {
    /// The canonical v2 encoding: `type=...` first, then options in name order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "type={}", self.kind)?;
        for (key, values) in &self.options {
            write!(f, "&{key}={}", values.join(","))?;
        }
        Ok(())
    }
}

/// The scopes a caller holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(Vec<Scope>);

impl ScopeSet {
    /// Parses every scope string; the first bad one is the error.
    pub fn parse_all<S: AsRef<str>>(scopes: &[S]) -> Result<Self, ScopeError> {
        scopes
            .iter()
            .map(|s| s.as_ref().parse())
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// The scopes, in the order given.
    pub fn scopes(&self) -> &[Scope] {
        &self.0
    }

    /// Canonical v2 strings, in the order given (what goes into a token's `scope` claim).
    pub fn encode(&self) -> Vec<String> {
        self.0.iter().map(Scope::to_string).collect()
    }

    /// Whether some scope of type `kind` covers `event_type`.
    pub fn allows(&self, kind: &str, event_type: &str) -> bool {
        self.0
            .iter()
            .any(|s| s.kind == kind && s.covers_event(event_type))
    }

    /// Whether some scope of type `kind` exists at all (for any event).
    pub fn has_kind(&self, kind: &str) -> bool {
        self.0.iter().any(|s| s.kind == kind)
    }

    /// The scopes of type `kind` that cover `event_type`.
    pub fn matching<'a>(
        &'a self,
        kind: &'a str,
        event_type: &'a str,
    ) -> impl Iterator<Item = &'a Scope> + 'a {
        self.0
            .iter()
            .filter(move |s| s.kind == kind && s.covers_event(event_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expect: &str) {
        let scope: Scope = input.parse().unwrap();
        assert_eq!(scope.to_string(), expect);
    }

    #[test]
    fn parses_v2_and_legacy_spellings() {
        check(
            "type=record.notify&event=birth",
            "type=record.notify&event=birth",
        );
        check(
            "type=record.search&event=birth,death&placeOfEvent=all",
            "type=record.search&event=birth,death&placeOfEvent=all",
        );
        check(
            "type=record.custom-action&event=birth&customActionTypes=VALIDATE_DECLARATION,ESCALATE",
            "type=record.custom-action&customActionTypes=VALIDATE_DECLARATION,ESCALATE&event=birth",
        );
        check(
            "type=workqueue&ids=assigned-to-you,recent",
            "type=workqueue&ids=assigned-to-you,recent",
        );
        check("record.notify", "type=record.notify");
        check("notification-api", "type=record.notify");
        check("recordsearch", "type=record.search");
        check(
            "record.create[event=birth|death]",
            "type=record.create&event=birth,death",
        );
        check("type=record.import", "type=record.import");
    }

    #[test]
    fn rejects_bad_scopes() {
        for bad in [
            "type=record.nope",
            "event=birth",
            "type=record.notify&event=",
            "type=record.notify&event=birth&event=death",
            "type=record.notify&colour=red",
            "type=record.notify&oops",
            "record.create[event=birth",
            "",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn options_nest_as_opencrvs_defines_them() {
        for ok in [
            "type=record.edit&placeOfEvent=location&declaredBy=user",
            "type=record.register&declaredIn=administrativeArea",
            "type=record.archive&placeOfEvent=administrativeArea",
            "type=record.read&declaredBy=user&registeredIn=location",
            "type=record.print-certified-copies&templates=a,b&registeredIn=location",
            "type=record.custom-action&event=death&customActionTypes=VALIDATE_DECLARATION&declaredIn=administrativeArea",
            "type=record.custom-action&event=birth&customActionTypes=ISSUE_CERTIFIED_COPY&registeredIn=location",
        ] {
            assert!(ok.parse::<Scope>().is_ok(), "{ok} should parse");
        }
        for bad in [
            // create/declare/notify happen before DECLARE: no declared*/registered* filters.
            "type=record.notify&declaredBy=user",
            "type=record.create&registeredIn=location",
            // edit and friends happen before REGISTER.
            "type=record.edit&registeredBy=user",
            // templates and customActionTypes belong to one type each.
            "type=record.read&templates=a",
            "type=record.print-certified-copies&customActionTypes=X",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn event_coverage() {
        let set =
            ScopeSet::parse_all(&["type=record.notify&event=birth", "type=record.read"]).unwrap();
        assert!(set.allows("record.notify", "birth"));
        assert!(!set.allows("record.notify", "death"));
        assert!(set.allows("record.read", "death"));
        assert!(!set.allows("record.create", "birth"));
        assert!(set.has_kind("record.notify"));
    }
}
