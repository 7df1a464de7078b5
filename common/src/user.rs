//! The OpenCRVS 2.0 user model (`packages/commons/src/users/User.ts`) with its wire names, and
//! the checks OpenCRVS applies to a user: username shape, a contact (email or mobile), name
//! parts; plus an OpenCRVS-style username generator (`j.doe`, `j.doe2`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::Issue;
use crate::event::UserType;
use crate::limits::{
    USER_EMAIL_BYTES_MAX, USER_MOBILE_DIGITS_MAX, USER_MOBILE_DIGITS_MIN, USER_NAME_PART_CHARS_MAX,
    USERNAME_CHARS_MAX, USERNAME_CHARS_MIN,
};

/// The pattern OpenCRVS's `CreateUserInputInternal` checks usernames against, as its messages
/// print it.
pub const USERNAME_PATTERN: &str = r"/^[a-z0-9][a-z0-9.\-]*[a-z0-9]$/";

/// A user's name: OpenCRVS's `NameFieldValue` without `middlename`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserName {
    /// Given name(s).
    pub firstname: String,
    /// Family name.
    pub surname: String,
}

/// Account status. `pending` users have been invited and not yet set a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// May log in.
    Active,
    /// Switched off by an administrator.
    Deactivated,
    /// Created, waiting for the user to set credentials.
    Pending,
}

fn user_type_user() -> UserType {
    UserType::User
}

/// A person's account, as OpenCRVS's `User` schema spells it. Absent optional fields are
/// omitted on output (OpenCRVS drops nulls); `null` is accepted on input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct User {
    /// User id.
    pub id: Uuid,
    /// The user's name.
    pub name: UserName,
    /// Role id (see [`crate::role::RoleSet`]).
    pub role: String,
    /// Storage path of the avatar image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// Storage path of the signature image (registrars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The office the user works at.
    pub primary_office_id: Uuid,
    /// The administrative area of that office.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub administrative_area_id: Option<Uuid>,
    /// Device description recorded at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Name with honorific, printed on certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_honorific_name: Option<String>,
    /// Always `user` (a system client is not a `User`); defaults to it when absent.
    #[serde(rename = "type", default = "user_type_user")]
    pub user_type: UserType,
    /// Mobile number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Account status.
    pub status: UserStatus,
    /// Country-defined extra fields (field id → value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
}

/// A user with their login credentials, as node and central store them.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// The user, as OpenCRVS spells it.
    pub user: User,
    /// Login name.
    pub username: String,
    /// argon2id PHC string; empty while the user has no password (`pending`).
    pub password_hash: String,
}

/// One reason a user or username was refused. `Display` gives `field: message`; the message
/// alone follows zod's wording, as OpenCRVS reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// A string is shorter than allowed.
    #[error("{field}: Too small: expected string to have >={min} characters")]
    TooShort {
        /// The field, e.g. `username`.
        field: &'static str,
        /// Fewest characters allowed.
        min: usize,
    },
    /// A string is longer than allowed.
    #[error("{field}: Too big: expected string to have <={max} characters")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Most characters allowed.
        max: usize,
    },
    /// A username outside `[a-z0-9.-]`, or starting or ending with `.`/`-`.
    #[error("username: Invalid string: must match pattern {USERNAME_PATTERN}")]
    UsernamePattern,
    /// An email that is not `local@domain.tld`.
    #[error("email: Invalid email address")]
    InvalidEmail,
    /// A mobile number that is not `+` and digits, or digits, of plausible length.
    #[error("mobile: Invalid mobile number")]
    InvalidMobile,
    /// Neither email nor mobile.
    #[error("email: Either email or mobile is required")]
    MissingContact,
    /// `type` is not `user`.
    #[error("type: Invalid input: expected \"user\"")]
    NotAUser,
}

impl UserError {
    /// The offending field's path (`username`, `name.firstname`, `email`, ...).
    pub fn field(&self) -> &'static str {
        match self {
            Self::TooShort { field, .. } | Self::TooLong { field, .. } => field,
            Self::UsernamePattern => "username",
            Self::InvalidEmail | Self::MissingContact => "email",
            Self::InvalidMobile => "mobile",
            Self::NotAUser => "type",
        }
    }

    /// The message without the field, e.g. `Invalid email address`.
    pub fn message(&self) -> String {
        let full = self.to_string();
        match full.split_once(": ") {
            Some((_, message)) => message.to_owned(),
            None => full,
        }
    }

    /// zod's issue code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "too_small",
            Self::TooLong { .. } => "too_big",
            Self::UsernamePattern | Self::InvalidEmail => "invalid_format",
            Self::InvalidMobile | Self::MissingContact => "custom",
            Self::NotAUser => "invalid_value",
        }
    }

    /// As an issue of the error envelope.
    pub fn to_issue(&self) -> Issue {
        Issue {
            code: self.code().to_owned(),
            message: self.message(),
            path: self.field().split('.').map(str::to_owned).collect(),
        }
    }
}

/// Checks a username: 5–30 characters of `[a-z0-9.-]`, starting and ending with a letter or
/// digit.
pub fn validate_username(username: &str) -> Result<(), UserError> {
    let len = username.chars().count();
    if len < USERNAME_CHARS_MIN {
        return Err(UserError::TooShort {
            field: "username",
            min: USERNAME_CHARS_MIN,
        });
    }
    if len > USERNAME_CHARS_MAX {
        return Err(UserError::TooLong {
            field: "username",
            max: USERNAME_CHARS_MAX,
        });
    }
    let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = username.as_bytes();
    let inner_ok = bytes.iter().all(|&b| edge_ok(b) || b == b'.' || b == b'-');
    let ends_ok =
        bytes.first().copied().is_some_and(edge_ok) && bytes.last().copied().is_some_and(edge_ok);
    if inner_ok && ends_ok {
        Ok(())
    } else {
        Err(UserError::UsernamePattern)
    }
}

/// Checks an email's shape: `local@domain.tld`, ASCII without spaces, at most 254 bytes, the
/// domain two or more non-empty labels of letters, digits and hyphens, the last one letters.
pub fn validate_email(email: &str) -> Result<(), UserError> {
    let plausible = email.len() <= USER_EMAIL_BYTES_MAX
        && email.split_once('@').is_some_and(|(local, domain)| {
            let local_ok = !local.is_empty()
                && local
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"@\"(),:;<>[\\]".contains(&b));
            let labels: Vec<&str> = domain.split('.').collect();
            let labels_ok = labels.len() >= 2
                && labels.iter().all(|label| {
                    !label.is_empty()
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            let tld_ok = labels
                .last()
                .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
            local_ok && labels_ok && tld_ok
        });
    if plausible {
        Ok(())
    } else {
        Err(UserError::InvalidEmail)
    }
}

/// Checks a mobile number: an optional leading `+` (then the first digit is not 0) and 7–15
/// ASCII digits, nothing else (`+260911111111`, `0911111111`).
pub fn validate_mobile(mobile: &str) -> Result<(), UserError> {
    let (international, digits) = match mobile.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, mobile),
    };
    let ok = (USER_MOBILE_DIGITS_MIN..=USER_MOBILE_DIGITS_MAX).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !(international && digits.starts_with('0'));
    if ok {
        Ok(())
    } else {
        Err(UserError::InvalidMobile)
    }
}

fn validate_name_part(field: &'static str, part: &str) -> Result<(), UserError> {
    if part.trim().is_empty() {
        return Err(UserError::TooShort { field, min: 1 });
    }
    if part.chars().count() > USER_NAME_PART_CHARS_MAX {
        return Err(UserError::TooLong {
            field,
            max: USER_NAME_PART_CHARS_MAX,
        });
    }
    Ok(())
}

/// Checks both name parts: not blank, at most [`USER_NAME_PART_CHARS_MAX`] characters.
pub fn validate_name(name: &UserName) -> Vec<UserError> {
    [
        validate_name_part("name.firstname", &name.firstname),
        validate_name_part("name.surname", &name.surname),
    ]
    .into_iter()
    .filter_map(Result::err)
    .collect()
}

/// Checks a contact pair: at least one present, each present one well formed.
pub fn validate_contact(email: Option<&str>, mobile: Option<&str>) -> Vec<UserError> {
    let mut errors = Vec::new();
    if email.is_none() && mobile.is_none() {
        errors.push(UserError::MissingContact);
    }
    if let Some(Err(e)) = email.map(validate_email) {
        errors.push(e);
    }
    if let Some(Err(e)) = mobile.map(validate_mobile) {
        errors.push(e);
    }
    errors
}

impl User {
    /// Every problem with this user (name, contact, type), in field order; empty when valid.
    /// The role and office are not checked here: they need the role set and the locations.
    pub fn problems(&self) -> Vec<UserError> {
        let mut errors = validate_name(&self.name);
        if self.user_type != UserType::User {
            errors.push(UserError::NotAUser);
        }
        errors.extend(validate_contact(
            self.email.as_deref(),
            self.mobile.as_deref(),
        ));
        errors
    }
}

/// Lowercase ASCII letters and digits of `text`, other characters dropped.
fn ascii_alnum(text: &str) -> String {
    text.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// An OpenCRVS-style username: the initials of the first name(s), a dot and the surname, its
/// words joined by `-`, lowercase ASCII (other characters are dropped), then `suffix` if given
/// (the caller picks it to make the name unique: `j.doe`, `j.doe2`). When the initials leave it
/// shorter than [`USERNAME_CHARS_MIN`], the whole first name is used (`Li Na` → `li.na`); the
/// surname is cut so the result fits [`USERNAME_CHARS_MAX`]. The result always passes
/// [`validate_username`]; a name with too few ASCII letters is refused.
pub fn username_from_name(
    firstname: &str,
    surname: &str,
    suffix: Option<u32>,
) -> Result<String, UserError> {
    let given: Vec<String> = firstname
        .split_whitespace()
        .map(ascii_alnum)
        .filter(|w| !w.is_empty())
        .collect();
    let family = surname
        .split(|c: char| c.is_whitespace() || c == '-')
        .map(ascii_alnum)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let suffix = suffix.map(|n| n.to_string()).unwrap_or_default();
    let initials: String = given.iter().filter_map(|w| w.chars().next()).collect();
    let build = |first: &str| -> String {
        let room = USERNAME_CHARS_MAX.saturating_sub(suffix.len());
        let mut base = match (first.is_empty(), family.is_empty()) {
            (_, true) => first.to_owned(),
            (true, false) => family.clone(),
            (false, false) => format!("{first}.{family}"),
        };
        base.truncate(room);
        let trimmed = base.trim_end_matches(['.', '-']);
        format!("{trimmed}{suffix}")
    };
    let mut username = build(&initials);
    if username.len() < USERNAME_CHARS_MIN {
        username = build(&given.concat());
    }
    validate_username(&username)?;
    Ok(username)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> User {
        User {
            id: Uuid::from_u128(1),
            name: UserName {
                firstname: "Kalusha".to_owned(),
                surname: "Bwalya".to_owned(),
            },
            role: "HOSPITAL_CLERK".to_owned(),
            avatar: None,
            signature: None,
            primary_office_id: Uuid::from_u128(2),
            administrative_area_id: None,
            device: None,
            full_honorific_name: None,
            user_type: UserType::User,
            mobile: Some("+260911111111".to_owned()),
            email: None,
            status: UserStatus::Active,
            data: None,
        }
    }

    #[test]
    fn wire_names_and_dropped_nulls() {
        let value = serde_json::to_value(sample()).unwrap();
        assert_eq!(
            value,
            json!({
                "id": "00000000-0000-0000-0000-000000000001",
                "name": {"firstname": "Kalusha", "surname": "Bwalya"},
                "role": "HOSPITAL_CLERK",
                "primaryOfficeId": "00000000-0000-0000-0000-000000000002",
                "type": "user",
                "mobile": "+260911111111",
                "status": "active"
            })
        );
        let full = json!({
            "id": "00000000-0000-0000-0000-000000000001",
            "name": {"firstname": "Kalusha", "surname": "Bwalya"},
            "role": "LOCAL_REGISTRAR",
            "avatar": "avatar.png",
            "signature": "signature.png",
            "primaryOfficeId": "00000000-0000-0000-0000-000000000002",
            "administrativeAreaId": "00000000-0000-0000-0000-000000000003",
            "device": "Nokia",
            "fullHonorificName": "Mr. Kalusha Bwalya",
            "type": "user",
            "mobile": "+260911111111",
            "email": "kb@example.org",
            "status": "pending",
            "data": {"user.nid": "123"}
        });
        let user: User = serde_json::from_value(full.clone()).unwrap();
        assert_eq!(user.status, UserStatus::Pending);
        assert_eq!(serde_json::to_value(&user).unwrap(), full);
    }

    #[test]
    fn input_nulls_and_missing_type_are_accepted() {
        let user: User = serde_json::from_value(json!({
            "id": "00000000-0000-0000-0000-000000000001",
            "name": {"firstname": "A", "surname": "B"},
            "role": "HOSPITAL_CLERK",
            "primaryOfficeId": "00000000-0000-0000-0000-000000000002",
            "signature": null,
            "administrativeAreaId": null,
            "email": "a@b.co",
            "status": "deactivated"
        }))
        .unwrap();
        assert_eq!(user.user_type, UserType::User);
        assert_eq!(user.signature, None);
        assert!(user.problems().is_empty());
    }

    #[test]
    fn wire_refusals() {
        for (patch, why) in [
            (json!({"status": "disabled"}), "unknown status"),
            (json!({"name": {"firstname": "A"}}), "surname missing"),
            (
                json!({"name": [{"use": "en", "given": ["A"], "family": "B"}]}),
                "v1 name",
            ),
            (json!({"primaryOfficeId": "office-1"}), "not a uuid"),
            (json!({"colour": "red"}), "unknown field"),
        ] {
            let mut value = serde_json::to_value(sample()).unwrap();
            for (k, v) in patch.as_object().unwrap() {
                value[k] = v.clone();
            }
            assert!(serde_json::from_value::<User>(value).is_err(), "{why}");
        }
    }

    #[test]
    fn usernames() {
        let too_short = Err(UserError::TooShort {
            field: "username",
            min: 5,
        });
        let too_long = Err(UserError::TooLong {
            field: "username",
            max: 30,
        });
        let cases: &[(&str, Result<(), UserError>)] = &[
            ("k.bwalya", Ok(())),
            ("j.doe", Ok(())),
            ("j.doe2", Ok(())),
            ("mary-ann.van-der-berg", Ok(())),
            ("12345", Ok(())),
            (&"a".repeat(30), Ok(())),
            ("j.do", too_short.clone()),
            ("", too_short),
            (&"a".repeat(31), too_long),
            ("J.Doe", Err(UserError::UsernamePattern)),
            (".jdoe", Err(UserError::UsernamePattern)),
            ("jdoe.", Err(UserError::UsernamePattern)),
            ("j-doe-", Err(UserError::UsernamePattern)),
            ("j_doe", Err(UserError::UsernamePattern)),
            ("j doe", Err(UserError::UsernamePattern)),
            ("jöhn.doe", Err(UserError::UsernamePattern)),
        ];
        for (input, want) in cases {
            assert_eq!(&validate_username(input), want, "{input:?}");
        }
    }

    #[test]
    fn emails() {
        let long = format!("{}@example.org", "a".repeat(250));
        let cases: &[(&str, bool)] = &[
            ("kb@example.org", true),
            ("first.last+tag@mail.example.co.zm", true),
            ("o'brien@example.ie", true),
            ("a@b.co", true),
            ("", false),
            ("plain", false),
            ("@example.org", false),
            ("kb@", false),
            ("kb@localhost", false),
            ("kb@example.c", false),
            ("kb@example.123", false),
            ("kb@-example.org", false),
            ("kb@exa_mple.org", false),
            ("kb@example..org", false),
            ("k b@example.org", false),
            ("kb@@example.org", false),
            ("kb@exämple.org", false),
            (&long, false),
        ];
        for (input, ok) in cases {
            let got = validate_email(input);
            assert_eq!(got.is_ok(), *ok, "{input:?}: {got:?}");
            if !ok {
                assert_eq!(got, Err(UserError::InvalidEmail));
            }
        }
    }

    #[test]
    fn mobiles() {
        let cases: &[(&str, bool)] = &[
            ("+260911111111", true),
            ("0911111111", true),
            ("+12025550123", true),
            ("1234567", true),
            ("123456789012345", true),
            ("+123456789012345", true),
            ("123456", false),
            ("1234567890123456", false),
            ("+0911111111", false),
            ("+", false),
            ("", false),
            ("+260 911 111 111", false),
            ("+260-911111111", false),
            ("09111111a1", false),
            ("++260911111111", false),
            ("٠٩١١١١١١١١", false),
        ];
        for (input, ok) in cases {
            let got = validate_mobile(input);
            assert_eq!(got.is_ok(), *ok, "{input:?}: {got:?}");
        }
    }

    #[test]
    fn user_problems() {
        type Patch = fn(&mut User);
        let cases: &[(&str, Patch, &[&str])] = &[
            ("valid", |_| {}, &[]),
            (
                "email only",
                |u| {
                    u.mobile = None;
                    u.email = Some("kb@example.org".to_owned());
                },
                &[],
            ),
            (
                "no contact",
                |u| u.mobile = None,
                &["email: Either email or mobile is required"],
            ),
            (
                "bad email and mobile",
                |u| {
                    u.email = Some("nope".to_owned());
                    u.mobile = Some("12".to_owned());
                },
                &[
                    "email: Invalid email address",
                    "mobile: Invalid mobile number",
                ],
            ),
            (
                "blank names",
                |u| {
                    u.name.firstname = "  ".to_owned();
                    u.name.surname = String::new();
                },
                &[
                    "name.firstname: Too small: expected string to have >=1 characters",
                    "name.surname: Too small: expected string to have >=1 characters",
                ],
            ),
            (
                "long surname",
                |u| u.name.surname = "x".repeat(101),
                &["name.surname: Too big: expected string to have <=100 characters"],
            ),
            (
                "system type",
                |u| u.user_type = UserType::System,
                &["type: Invalid input: expected \"user\""],
            ),
        ];
        for (name, patch, want) in cases {
            let mut user = sample();
            patch(&mut user);
            let got: Vec<String> = user.problems().iter().map(ToString::to_string).collect();
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn errors_as_issues() {
        let issue = UserError::TooShort {
            field: "name.firstname",
            min: 1,
        }
        .to_issue();
        assert_eq!(issue.code, "too_small");
        assert_eq!(
            issue.message,
            "Too small: expected string to have >=1 characters"
        );
        assert_eq!(issue.path, ["name", "firstname"]);
        let issue = UserError::UsernamePattern.to_issue();
        assert_eq!(issue.code, "invalid_format");
        assert_eq!(
            issue.message,
            r"Invalid string: must match pattern /^[a-z0-9][a-z0-9.\-]*[a-z0-9]$/"
        );
        assert_eq!(UserError::InvalidEmail.message(), "Invalid email address");
        assert_eq!(UserError::MissingContact.field(), "email");
    }

    #[test]
    fn generated_usernames() {
        type Case = (
            &'static str,
            &'static str,
            Option<u32>,
            Result<&'static str, UserError>,
        );
        let cases: &[Case] = &[
            ("John", "Doe", None, Ok("j.doe")),
            ("John", "Doe", Some(2), Ok("j.doe2")),
            ("Kalusha", "Bwalya", None, Ok("k.bwalya")),
            ("Mary Ann", "van der Berg", None, Ok("ma.van-der-berg")),
            ("Jean-Luc", "O'Brien", None, Ok("j.obrien")),
            ("  JOHN  ", "  DOE-SMITH ", None, Ok("j.doe-smith")),
            ("Zoë", "Ångström", None, Ok("z.ngstrm")),
            // Initials alone are too short: the whole first name is used.
            ("Li", "Na", None, Ok("li.na")),
            ("Bo", "Li", None, Ok("bo.li")),
            ("Bo", "Li", Some(7), Ok("b.li7")),
            ("Tom", "Li", None, Ok("tom.li")),
            // No usable surname: the first name alone.
            ("Chanda", "Ñ", None, Ok("chanda")),
            // Cut to 30 with the suffix kept, no dangling separator.
            (
                "A",
                "Abcdefghijklmnopqrstuvwxyz-abcdefghij",
                Some(12),
                Ok("a.abcdefghijklmnopqrstuvwxyz12"),
            ),
            (
                "A",
                "Bcdefghijklmnopqrstuvwxyzabc-d",
                None,
                Ok("a.bcdefghijklmnopqrstuvwxyzabc"),
            ),
            (
                "Li",
                "",
                None,
                Err(UserError::TooShort {
                    field: "username",
                    min: 5,
                }),
            ),
            (
                "李",
                "王",
                Some(1),
                Err(UserError::TooShort {
                    field: "username",
                    min: 5,
                }),
            ),
        ];
        for (first, last, suffix, want) in cases {
            let got = username_from_name(first, last, *suffix);
            assert_eq!(got.as_deref(), want.as_ref().map(|s| *s), "{first} {last}");
            if let Ok(name) = &got {
                assert_eq!(validate_username(name), Ok(()));
            }
        }
    }
}
