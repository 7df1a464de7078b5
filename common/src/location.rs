//! Locations as OpenCRVS 2.0 models them: administrative areas (the jurisdiction tree) and
//! leaf locations (offices, health facilities), plus the file format that seeds them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An administrative area: a node of the jurisdiction tree (province, district, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdministrativeArea {
    /// Deployment-specific UUID.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// The country's own code for it.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Parent area; `None` at the root.
    #[serde(default)]
    pub parent_id: Option<Uuid>,
    /// End of validity (ISO datetime); `None` means active.
    #[serde(default)]
    pub valid_until: Option<String>,
}

/// A leaf location: an office or a health facility. Serialised exactly as
/// `GET /api/events/locations` returns it, including explicit `null`s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Location {
    /// Deployment-specific UUID.
    pub id: Uuid,
    /// Display name; integrators look facilities up by it, so it must be stable.
    pub name: String,
    /// The country's own code.
    #[serde(default)]
    pub external_id: Option<String>,
    /// The administrative area it sits in.
    #[serde(default)]
    pub administrative_area_id: Option<Uuid>,
    /// End of validity (ISO datetime); `None` means active.
    #[serde(default)]
    pub valid_until: Option<String>,
    /// Free-form since 2.0; conventionally `CRVS_OFFICE` or `HEALTH_FACILITY`.
    #[serde(default)]
    pub location_type: Option<String>,
}

/// The locations file: what `node init` (and later central) loads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocationSet {
    /// The jurisdiction tree.
    pub administrative_areas: Vec<AdministrativeArea>,
    /// Offices and facilities.
    pub locations: Vec<Location>,
}

/// Why a locations file is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    /// The same UUID is used twice (areas and locations share one id space).
    #[error("duplicate location id {0}")]
    DuplicateId(Uuid),
    /// A parent or area reference points nowhere.
    #[error("{child} refers to unknown administrative area {parent}")]
    UnknownParent {
        /// The referring id.
        child: Uuid,
        /// The missing area.
        parent: Uuid,
    },
    /// The parent chain loops.
    #[error("administrative area {0} is its own ancestor")]
    Cycle(Uuid),
    /// The JSON does not parse.
    #[error("locations file: {0}")]
    Parse(String),
}

impl LocationSet {
    /// Parses and checks a locations file.
    pub fn from_json(text: &str) -> Result<Self, LocationError> {
        let set: Self =
            serde_json::from_str(text).map_err(|e| LocationError::Parse(e.to_string()))?;
        set.check()?;
        Ok(set)
    }

    /// Checks id uniqueness, references and the absence of cycles.
    pub fn check(&self) -> Result<(), LocationError> {
        let mut seen = std::collections::HashSet::new();
        let ids = self
            .administrative_areas
            .iter()
            .map(|a| a.id)
            .chain(self.locations.iter().map(|l| l.id));
        for id in ids {
            if !seen.insert(id) {
                return Err(LocationError::DuplicateId(id));
            }
        }
        let parents: HashMap<Uuid, Option<Uuid>> = self
            .administrative_areas
            .iter()
            .map(|a| (a.id, a.parent_id))
            .collect();
        for area in &self.administrative_areas {
            if let Some(parent) = area.parent_id
                && !parents.contains_key(&parent)
            {
                return Err(LocationError::UnknownParent {
                    child: area.id,
                    parent,
                });
            }
            let mut cursor = area.parent_id;
            let mut steps = 0usize;
            while let Some(p) = cursor {
                steps += 1;
                if p == area.id || steps > parents.len() {
                    return Err(LocationError::Cycle(area.id));
                }
                cursor = parents.get(&p).copied().flatten();
            }
        }
        for location in &self.locations {
            if let Some(area) = location.administrative_area_id
                && !parents.contains_key(&area)
            {
                return Err(LocationError::UnknownParent {
                    child: location.id,
                    parent: area,
                });
            }
        }
        Ok(())
    }

    /// The areas holding `location` (an office or facility), its own area first, then that
    /// area's ancestors up to the root. Empty for an unknown location or one without an area.
    pub fn location_chain(&self, location: Uuid) -> Vec<Uuid> {
        let area = self
            .locations
            .iter()
            .find(|l| l.id == location)
            .and_then(|l| l.administrative_area_id);
        let mut chain = area.map(|a| self.area_hierarchy(a)).unwrap_or_default();
        chain.reverse();
        chain
    }

    /// The ancestors of an administrative area, root first, ending with the area itself.
    pub fn area_hierarchy(&self, area: Uuid) -> Vec<Uuid> {
        let parents: HashMap<Uuid, Option<Uuid>> = self
            .administrative_areas
            .iter()
            .map(|a| (a.id, a.parent_id))
            .collect();
        let mut chain = Vec::new();
        let mut cursor = Some(area);
        while let Some(id) = cursor {
            if chain.contains(&id) || !parents.contains_key(&id) {
                break;
            }
            chain.push(id);
            cursor = parents.get(&id).copied().flatten();
        }
        chain.reverse();
        chain
    }
}

/// The query filters of `GET /locations` (§7), as sent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocationQuery {
    /// Keep only this `locationType`.
    pub location_type: Option<String>,
    /// `true` or `false`: keep only active (or inactive) locations.
    pub is_active: Option<String>,
    /// Keep only this `externalId`.
    pub external_id: Option<String>,
    /// Comma-separated UUIDs.
    pub location_ids: Option<String>,
}

impl LocationQuery {
    /// Checks the filters and keeps the locations that pass them. `now` is an ISO timestamp in
    /// the format of `validUntil` (those compare as strings).
    pub fn apply(
        &self,
        all: Vec<Location>,
        now: &str,
    ) -> Result<Vec<Location>, crate::error::ErrorEnvelope> {
        let issue = |code: &str, message: String, path: &str| {
            crate::error::ErrorEnvelope::input_validation(vec![crate::error::Issue {
                code: code.to_owned(),
                message,
                path: vec![path.to_owned()],
            }])
        };
        let is_active = match self.is_active.as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => {
                return Err(issue(
                    "invalid_type",
                    "isActive must be true or false".into(),
                    "isActive",
                ));
            }
        };
        let ids: Option<Vec<Uuid>> = match self.location_ids.as_deref() {
            None => None,
            Some(list) => {
                let ids = list
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.trim().parse::<Uuid>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| issue("invalid_string", "Invalid uuid".into(), "locationIds"))?;
                if ids.len() > crate::limits::LOCATION_IDS_FILTER_MAX {
                    return Err(issue(
                        "too_big",
                        format!(
                            "At most {} location ids",
                            crate::limits::LOCATION_IDS_FILTER_MAX
                        ),
                        "locationIds",
                    ));
                }
                Some(ids)
            }
        };
        Ok(all
            .into_iter()
            .filter(|l| {
                self.location_type
                    .as_ref()
                    .is_none_or(|t| l.location_type.as_ref() == Some(t))
            })
            .filter(|l| {
                self.external_id
                    .as_ref()
                    .is_none_or(|x| l.external_id.as_ref() == Some(x))
            })
            .filter(|l| ids.as_ref().is_none_or(|ids| ids.contains(&l.id)))
            .filter(|l| {
                let active = l
                    .valid_until
                    .as_ref()
                    .is_none_or(|until| until.as_str() > now);
                is_active.is_none_or(|want| want == active)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn location_serialises_with_explicit_nulls() {
        let l = Location {
            id: id(1),
            name: "Ibombo District Office".into(),
            external_id: Some("JWMRGwDBXK".into()),
            administrative_area_id: Some(id(2)),
            valid_until: None,
            location_type: Some("CRVS_OFFICE".into()),
        };
        let v = serde_json::to_value(&l).unwrap();
        assert!(v.get("validUntil").unwrap().is_null());
        assert_eq!(v["locationType"], "CRVS_OFFICE");
    }

    #[test]
    fn checks_references_and_cycles() {
        let area = |i, p| AdministrativeArea {
            id: id(i),
            name: format!("a{i}"),
            external_id: None,
            parent_id: p,
            valid_until: None,
        };
        let ok = LocationSet {
            administrative_areas: vec![area(1, None), area(2, Some(id(1)))],
            locations: vec![],
        };
        ok.check().unwrap();
        assert_eq!(ok.area_hierarchy(id(2)), vec![id(1), id(2)]);
        let cycle = LocationSet {
            administrative_areas: vec![area(1, Some(id(2))), area(2, Some(id(1)))],
            locations: vec![],
        };
        assert!(matches!(cycle.check(), Err(LocationError::Cycle(_))));
        let dangling = LocationSet {
            administrative_areas: vec![area(1, Some(id(9)))],
            locations: vec![],
        };
        assert!(matches!(
            dangling.check(),
            Err(LocationError::UnknownParent { .. })
        ));
        let dup = LocationSet {
            administrative_areas: vec![area(1, None), area(1, None)],
            locations: vec![],
        };
        assert!(matches!(dup.check(), Err(LocationError::DuplicateId(_))));
    }
}
