//! OpenCRVS user roles and the scopes each grants, loaded from the JSON the country config
//! serves at `GET /config/roles`; the built-in default is Farajaland's ten roles
//! (`common/config/default-roles.json`).
//!
//! The default file follows Farajaland's 2.0 `src/data-seeding/roles/roles.ts` scope for scope,
//! written in the 2.0 query-string spelling. Where Farajaland still listed a user-management
//! scope twice (a v1.9 `user.create[role=A|B]` next to `type=user.create&accessLevel=...`), the
//! file holds the single merged 2.0 scope (`type=user.create&accessLevel=...&role=A,B`), which
//! is what OpenCRVS's legacy-scope migration and later country configs produce.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::{ROLE_ID_CHARS_MAX, ROLE_SCOPES_MAX, ROLES_MAX};
use crate::scope::{ScopeError, ScopeSet};

/// The embedded default roles (`common/config/default-roles.json`): Farajaland's.
pub const BUILTIN_ROLES_JSON: &str = include_str!("../config/default-roles.json");

/// A role's id as OpenCRVS spells it (`HOSPITAL_CLERK`); users carry it in `role`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoleId(String);

impl RoleId {
    /// Wraps an id. Ids are checked when a [`RoleSet`] is built, not here.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RoleId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// One role: its id, a display label and the scopes a user holding it gets in their token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// The role id.
    pub id: RoleId,
    /// Display label (OpenCRVS's `label.defaultMessage` when the source gives a message object).
    pub label: String,
    /// The scopes the role grants, in file order.
    pub scopes: ScopeSet,
}

/// Why a roles file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// The text is not JSON of the expected shape.
    #[error("roles file: {0}")]
    Parse(String),
    /// A role has an empty id (`index` is its position in the file, from 0).
    #[error("role #{index} has an empty id")]
    EmptyId {
        /// Position in the file.
        index: usize,
    },
    /// A role id is longer than [`ROLE_ID_CHARS_MAX`].
    #[error("role id {0:?} is too long")]
    IdTooLong(String),
    /// Two roles share an id.
    #[error("role {0} is defined twice")]
    Duplicate(String),
    /// More roles than [`ROLES_MAX`].
    #[error("too many roles (at most {ROLES_MAX})")]
    TooManyRoles,
    /// A role lists more scopes than [`ROLE_SCOPES_MAX`].
    #[error("role {0} has too many scopes (at most {ROLE_SCOPES_MAX})")]
    TooManyScopes(String),
    /// A scope string of the role does not parse.
    #[error("role {role}: {source}")]
    Scope {
        /// The role id.
        role: String,
        /// The scope parser's verdict.
        #[source]
        source: ScopeError,
    },
}

/// A label as OpenCRVS serves it: a react-intl message descriptor, or plain text.
#[derive(Deserialize)]
#[serde(untagged)]
enum WireLabel {
    Text(String),
    Message {
        #[serde(rename = "defaultMessage")]
        default_message: String,
    },
}

#[derive(Deserialize)]
struct WireRole {
    id: String,
    label: WireLabel,
    scopes: Vec<String>,
}

/// The roles of a deployment, in file order; ids are unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSet {
    roles: Vec<Role>,
}

impl RoleSet {
    /// Builds a set from roles, refusing empty or overlong ids, duplicates and oversized input.
    pub fn new(roles: impl IntoIterator<Item = Role>) -> Result<Self, RoleError> {
        let mut checked: Vec<Role> = Vec::new();
        for (index, role) in roles.into_iter().enumerate() {
            if checked.len() == ROLES_MAX {
                return Err(RoleError::TooManyRoles);
            }
            let id = role.id.as_str();
            if id.trim().is_empty() {
                return Err(RoleError::EmptyId { index });
            }
            if id.chars().count() > ROLE_ID_CHARS_MAX {
                return Err(RoleError::IdTooLong(id.to_owned()));
            }
            if role.scopes.scopes().len() > ROLE_SCOPES_MAX {
                return Err(RoleError::TooManyScopes(id.to_owned()));
            }
            if checked.iter().any(|r| r.id == role.id) {
                return Err(RoleError::Duplicate(id.to_owned()));
            }
            checked.push(role);
        }
        Ok(Self { roles: checked })
    }

    /// Parses `[{"id", "label", "scopes": [...]}]`, the shape of `GET /config/roles`. `label`
    /// may be plain text or a message descriptor (`{"defaultMessage", ...}`); every scope must
    /// be one [`crate::scope::Scope`] accepts.
    pub fn from_json(json: &str) -> Result<Self, RoleError> {
        let wire: Vec<WireRole> =
            serde_json::from_str(json).map_err(|e| RoleError::Parse(e.to_string()))?;
        if wire.len() > ROLES_MAX {
            return Err(RoleError::TooManyRoles);
        }
        let mut roles = Vec::with_capacity(wire.len());
        for (index, w) in wire.into_iter().enumerate() {
            if w.id.trim().is_empty() {
                return Err(RoleError::EmptyId { index });
            }
            if w.scopes.len() > ROLE_SCOPES_MAX {
                return Err(RoleError::TooManyScopes(w.id));
            }
            let scopes = match ScopeSet::parse_all(&w.scopes) {
                Ok(scopes) => scopes,
                Err(source) => return Err(RoleError::Scope { role: w.id, source }),
            };
            let label = match w.label {
                WireLabel::Text(text) => text,
                WireLabel::Message { default_message } => default_message,
            };
            roles.push(Role {
                id: RoleId(w.id),
                label,
                scopes,
            });
        }
        Self::new(roles)
    }

    /// The built-in Farajaland roles.
    pub fn default_set() -> Self {
        // The embedded file is a build input checked by the tests below, so failing here is a
        // build defect, not a runtime condition.
        Self::from_json(BUILTIN_ROLES_JSON).expect("embedded default-roles.json is valid")
    }

    /// The role with this id.
    pub fn get(&self, id: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.id.as_str() == id)
    }

    /// The scopes of the role with this id; `None` for an unknown role.
    pub fn scopes_of(&self, id: &str) -> Option<&ScopeSet> {
        self.get(id).map(|r| &r.scopes)
    }

    /// The roles, in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, Role> {
        self.roles.iter()
    }

    /// The role ids, in file order.
    pub fn ids(&self) -> impl Iterator<Item = &RoleId> + '_ {
        self.roles.iter().map(|r| &r.id)
    }

    /// How many roles there are.
    pub fn len(&self) -> usize {
        self.roles.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }
}

impl<'a> IntoIterator for &'a RoleSet {
    type Item = &'a Role;
    type IntoIter = std::slice::Iter<'a, Role>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FARAJALAND_ROLES: [&str; 10] = [
        "REGISTRATION_AGENT",
        "LOCAL_REGISTRAR",
        "LOCAL_SYSTEM_ADMIN",
        "NATIONAL_SYSTEM_ADMIN",
        "PERFORMANCE_MANAGER",
        "NATIONAL_REGISTRAR",
        "PROVINCIAL_REGISTRAR",
        "HOSPITAL_CLERK",
        "COMMUNITY_LEADER",
        "EMBASSY_OFFICIAL",
    ];

    #[test]
    fn default_set_has_the_ten_farajaland_roles() {
        let set = RoleSet::default_set();
        assert_eq!(set.len(), FARAJALAND_ROLES.len());
        for id in FARAJALAND_ROLES {
            let role = set.get(id).unwrap_or_else(|| panic!("{id} missing"));
            assert!(!role.label.is_empty(), "{id} has no label");
            assert!(!role.scopes.scopes().is_empty(), "{id} has no scopes");
        }
        assert_eq!(
            set.ids().map(RoleId::as_str).collect::<Vec<_>>(),
            FARAJALAND_ROLES
        );
        assert!(set.get("FIELD_AGENT").is_none());
        assert!(set.scopes_of("FIELD_AGENT").is_none());
    }

    #[test]
    fn default_file_is_in_canonical_v2_spelling() {
        // Every scope in the shipped file is already written the way `Scope` prints it, up to
        // option order; this keeps legacy `a[b=c|d]` spellings out of the default.
        let raw: serde_json::Value = serde_json::from_str(BUILTIN_ROLES_JSON).unwrap();
        for role in raw.as_array().unwrap() {
            for scope in role["scopes"].as_array().unwrap() {
                let text = scope.as_str().unwrap();
                assert!(text.starts_with("type="), "{text} is not a v2 scope");
                assert!(!text.contains('['), "{text} uses the v1.9 bracket form");
            }
        }
    }

    #[test]
    fn hospital_clerk_matches_farajaland() {
        let set = RoleSet::default_set();
        let scopes = set.scopes_of("HOSPITAL_CLERK").unwrap();
        for kind in [
            "record.create",
            "record.read",
            "record.declare",
            "record.notify",
            "record.search",
        ] {
            let scope = scopes
                .scopes()
                .iter()
                .find(|s| s.kind() == kind)
                .unwrap_or_else(|| panic!("HOSPITAL_CLERK lacks {kind}"));
            assert_eq!(
                scope.option("placeOfEvent"),
                Some(&["location".to_owned()][..]),
                "{kind}"
            );
            assert!(scopes.allows(kind, "birth"), "{kind}");
        }
        let edit = scopes
            .scopes()
            .iter()
            .find(|s| s.kind() == "record.edit")
            .unwrap();
        assert_eq!(edit.option("declaredBy"), Some(&["user".to_owned()][..]));
        assert_eq!(
            edit.option("placeOfEvent"),
            Some(&["location".to_owned()][..])
        );
        for absent in ["record.register", "record.reject", "record.custom-action"] {
            assert!(!scopes.has_kind(absent), "HOSPITAL_CLERK has {absent}");
        }
    }

    #[test]
    fn who_may_register_and_validate() {
        let set = RoleSet::default_set();
        let scopes = |id| set.scopes_of(id).unwrap();
        let custom_actions = |id, event| -> Vec<String> {
            scopes(id)
                .matching("record.custom-action", event)
                .flat_map(|s| s.option("customActionTypes").unwrap_or_default().to_vec())
                .collect()
        };
        for id in ["LOCAL_REGISTRAR", "NATIONAL_REGISTRAR"] {
            assert!(scopes(id).allows("record.register", "birth"), "{id}");
            assert!(scopes(id).allows("record.register", "death"), "{id}");
        }
        assert!(scopes("PROVINCIAL_REGISTRAR").allows("record.register", "birth"));
        for id in [
            "REGISTRATION_AGENT",
            "HOSPITAL_CLERK",
            "COMMUNITY_LEADER",
            "EMBASSY_OFFICIAL",
            "PERFORMANCE_MANAGER",
            "LOCAL_SYSTEM_ADMIN",
            "NATIONAL_SYSTEM_ADMIN",
        ] {
            assert!(!scopes(id).has_kind("record.register"), "{id}");
        }
        // Farajaland validates through the VALIDATE_DECLARATION custom action, which only the
        // registration agent holds (registrars register directly).
        for event in ["birth", "death"] {
            assert!(
                custom_actions("REGISTRATION_AGENT", event)
                    .contains(&"VALIDATE_DECLARATION".to_owned()),
                "{event}"
            );
        }
        assert!(
            custom_actions("NATIONAL_REGISTRAR", "death")
                .contains(&"APPROVE_DECLARATION".to_owned())
        );
        // Only the national admin may create integrations (reference §8).
        let integrators: Vec<&str> = set
            .iter()
            .filter(|r| r.scopes.has_kind("integration.create"))
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(integrators, ["NATIONAL_SYSTEM_ADMIN"]);
    }

    #[test]
    fn accepts_plain_and_message_labels() {
        let set = RoleSet::from_json(
            r#"[
                {"id": "A", "label": "Plain", "scopes": ["type=record.read"]},
                {"id": "B", "label": {"id": "userRole.b", "defaultMessage": "Msg",
                                      "description": "d"}, "scopes": []}
            ]"#,
        )
        .unwrap();
        assert_eq!(set.get("A").unwrap().label, "Plain");
        assert_eq!(set.get("B").unwrap().label, "Msg");
        assert!(set.scopes_of("B").unwrap().scopes().is_empty());
        assert_eq!((&set).into_iter().count(), 2);
    }

    #[test]
    fn refuses_bad_files() {
        let cases: &[(&str, &str)] = &[
            ("not json", "roles file:"),
            (r#"{"id": "A"}"#, "roles file:"),
            (r#"[{"id": "A", "scopes": []}]"#, "roles file:"),
            (r#"[{"id": "A", "label": 3, "scopes": []}]"#, "roles file:"),
            (
                r#"[{"id": "", "label": "x", "scopes": []}]"#,
                "role #0 has an empty id",
            ),
            (
                r#"[{"id": "A", "label": "x", "scopes": []},
                    {"id": " ", "label": "y", "scopes": []}]"#,
                "role #1 has an empty id",
            ),
            (
                r#"[{"id": "A", "label": "x", "scopes": []},
                    {"id": "A", "label": "y", "scopes": []}]"#,
                "role A is defined twice",
            ),
            (
                r#"[{"id": "CLERK", "label": "x", "scopes": ["type=record.teleport"]}]"#,
                "role CLERK: scope \"type=record.teleport\" has an unknown type",
            ),
            (
                r#"[{"id": "CLERK", "label": "x",
                     "scopes": ["type=record.notify&declaredBy=user"]}]"#,
                "role CLERK: scope \"type=record.notify&declaredBy=user\" has an unknown option \"declaredBy\"",
            ),
        ];
        for (json, want) in cases {
            let err = RoleSet::from_json(json).unwrap_err().to_string();
            assert!(err.starts_with(want), "{json}: got {err:?}, want {want:?}");
        }
        let err =
            RoleSet::from_json(r#"[{"id": "X", "label": "x", "scopes": ["nope"]}]"#).unwrap_err();
        assert!(matches!(err, RoleError::Scope { ref role, .. } if role == "X"));
    }

    #[test]
    fn refuses_oversized_input() {
        let long_id = "R".repeat(ROLE_ID_CHARS_MAX + 1);
        let json = format!(r#"[{{"id": "{long_id}", "label": "x", "scopes": []}}]"#);
        assert_eq!(
            RoleSet::from_json(&json),
            Err(RoleError::IdTooLong(long_id))
        );

        let scopes = vec!["type=record.read"; ROLE_SCOPES_MAX + 1];
        let json = serde_json::json!([{"id": "A", "label": "x", "scopes": scopes}]).to_string();
        assert_eq!(
            RoleSet::from_json(&json),
            Err(RoleError::TooManyScopes("A".to_owned()))
        );

        let roles: Vec<_> = (0..=ROLES_MAX)
            .map(|i| serde_json::json!({"id": format!("R{i}"), "label": "x", "scopes": []}))
            .collect();
        let json = serde_json::Value::Array(roles).to_string();
        assert_eq!(RoleSet::from_json(&json), Err(RoleError::TooManyRoles));
    }

    #[test]
    fn new_checks_programmatic_roles() {
        let role = |id: &str| Role {
            id: RoleId::new(id),
            label: id.to_owned(),
            scopes: ScopeSet::default(),
        };
        assert!(RoleSet::new([role("A"), role("B")]).is_ok());
        assert_eq!(
            RoleSet::new([role("A"), role("A")]),
            Err(RoleError::Duplicate("A".to_owned()))
        );
        assert_eq!(
            RoleSet::new([role("")]),
            Err(RoleError::EmptyId { index: 0 })
        );
        assert_eq!(RoleId::new("X").to_string(), "X");
    }
}
