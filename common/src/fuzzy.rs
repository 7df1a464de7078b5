//! Fuzzy name matching for search, pure: names are normalised (transliterated to Latin ASCII,
//! lowercased, split into alphanumeric tokens), and a term token matches a name token when their
//! optimal-string-alignment (Damerau–Levenshtein with adjacent transpositions) distance is within
//! OpenCRVS's `AUTO:4,7` fuzziness of the term's length, or when they share a Double Metaphone
//! key. Every term token must match some token of the value.
//!
//! The national index finds candidates without a scan through [`vocabulary_keys`] (each distinct
//! indexed token's deletion variants and phonetic keys) and [`term_keys`] (the same for a term
//! token): any token within the fuzziness shares a deletion variant with the term (symmetric
//! deletion), any token with an equal phonetic key shares that key; [`token_matches`] then
//! decides exactly.

use std::collections::BTreeSet;

use rphonetic::DoubleMetaphone;
use serde_json::Value;

/// A term token shorter than this must match exactly (OpenCRVS `AUTO:4,7`, low bound).
pub const FUZZY_ONE_EDIT_FROM_CHARS: usize = 4;
/// A term token this long or longer may be two edits away (OpenCRVS `AUTO:4,7`, high bound).
pub const FUZZY_TWO_EDITS_FROM_CHARS: usize = 7;
/// Tokens of one value or term that are looked at; the rest is ignored (a name has a few).
pub const FUZZY_TOKENS_MAX: usize = 8;
/// Characters of a token that are kept (longer tokens are cut; bounds the deletion variants).
pub const FUZZY_TOKEN_CHARS_MAX: usize = 32;
/// Shortest token given phonetic keys: shorter ones have keys shared by too many names, and
/// must match exactly as `AUTO:4,7` says.
pub const PHONETIC_FROM_CHARS: usize = FUZZY_ONE_EDIT_FROM_CHARS;

/// Vocabulary key prefix of a deletion variant.
const DELETION_KEY: &str = "x|";
/// Vocabulary key prefix of a phonetic key.
const PHONETIC_KEY: &str = "p|";

/// Edits allowed for a term token of `chars` characters.
pub fn max_edits(chars: usize) -> usize {
    if chars < FUZZY_ONE_EDIT_FROM_CHARS {
        0
    } else if chars < FUZZY_TWO_EDITS_FROM_CHARS {
        1
    } else {
        2
    }
}

/// Deletion depth an indexed token of `chars` characters needs so that every term token whose
/// fuzziness reaches it shares a variant: a one-edit term has at least 4 characters (so reaches
/// tokens of 3 or more), a two-edit term at least 7 (so reaches tokens of 5 or more).
fn indexed_depth(chars: usize) -> usize {
    if chars + 1 < FUZZY_ONE_EDIT_FROM_CHARS {
        0
    } else if chars + 2 < FUZZY_TWO_EDITS_FROM_CHARS {
        1
    } else {
        2
    }
}

/// Lowercase Latin ASCII tokens of a text: transliterated (`José` → `jose`, `Łukasz` →
/// `lukasz`), split on anything not a letter or digit.
pub fn tokens(text: &str) -> Vec<String> {
    deunicode::deunicode(text)
        .to_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .take(FUZZY_TOKENS_MAX)
        .map(|t| t.chars().take(FUZZY_TOKEN_CHARS_MAX).collect())
        .collect()
}

/// The tokens of a declaration value: a text, or a name object (`{firstname, middlename,
/// surname}`, every text part). Other values, and texts that are ids (locations), have none.
pub fn value_tokens(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) if s.parse::<uuid::Uuid>().is_ok() => Vec::new(),
        Value::String(s) => tokens(s),
        Value::Object(map) => {
            let text: Vec<&str> = ["firstname", "middlename", "surname"]
                .iter()
                .filter_map(|k| map.get(*k).and_then(Value::as_str))
                .collect();
            tokens(&text.join(" "))
        }
        _ => Vec::new(),
    }
}

/// The Double Metaphone keys (primary and alternate) of an alphabetic token long enough to have
/// meaningful ones; none otherwise.
pub fn phonetic_keys(token: &str) -> Vec<String> {
    if token.len() < PHONETIC_FROM_CHARS || !token.chars().all(|c| c.is_ascii_alphabetic()) {
        return Vec::new();
    }
    let result = DoubleMetaphone::default().double_metaphone(token);
    let mut keys = vec![result.primary()];
    let alternate = result.alternate();
    if alternate != keys[0] {
        keys.push(alternate);
    }
    keys.retain(|k| !k.is_empty());
    keys
}

/// Whether a term token matches a value token (both from [`tokens`]).
pub fn token_matches(term: &str, value: &str) -> bool {
    if term == value {
        return true;
    }
    let allowed = max_edits(term.len());
    if allowed > 0
        && term.len().abs_diff(value.len()) <= allowed
        && strsim::osa_distance(term, value) <= allowed
    {
        return true;
    }
    let term_keys = phonetic_keys(term);
    !term_keys.is_empty() && phonetic_keys(value).iter().any(|k| term_keys.contains(k))
}

/// Whether `value` matches the fuzzy `term`: every token of the term matches a token of the
/// value. A term without tokens matches nothing.
pub fn fuzzy_matches(value: &Value, term_tokens: &[String]) -> bool {
    if term_tokens.is_empty() {
        return false;
    }
    let values = value_tokens(value);
    term_tokens
        .iter()
        .all(|t| values.iter().any(|v| token_matches(t, v)))
}

/// Every string made by deleting up to `depth` characters of `token` (itself included).
fn deletions(token: &str, depth: usize) -> BTreeSet<String> {
    let mut out = BTreeSet::from([token.to_owned()]);
    let mut frontier = vec![token.to_owned()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for word in &frontier {
            for i in 0..word.len() {
                let mut shorter = word.clone();
                shorter.remove(i);
                if !shorter.is_empty() && out.insert(shorter.clone()) {
                    next.push(shorter);
                }
            }
        }
        frontier = next;
    }
    out
}

/// The vocabulary keys of an indexed token: its deletion variants (as deep as any matching
/// term's fuzziness needs) and its phonetic keys.
pub fn vocabulary_keys(token: &str) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = deletions(token, indexed_depth(token.len()))
        .into_iter()
        .map(|d| format!("{DELETION_KEY}{d}"))
        .collect();
    keys.extend(
        phonetic_keys(token)
            .into_iter()
            .map(|k| format!("{PHONETIC_KEY}{k}")),
    );
    keys
}

/// The vocabulary keys to look up for a term token: every indexed token it matches has one of
/// them among its [`vocabulary_keys`].
pub fn term_keys(term: &str) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = deletions(term, max_edits(term.len()))
        .into_iter()
        .map(|d| format!("{DELETION_KEY}{d}"))
        .collect();
    keys.extend(
        phonetic_keys(term)
            .into_iter()
            .map(|k| format!("{PHONETIC_KEY}{k}")),
    );
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn name(first: &str, last: &str) -> Value {
        json!({"firstname": first, "surname": last})
    }

    fn matches(value: &Value, term: &str) -> bool {
        fuzzy_matches(value, &tokens(term))
    }

    #[test]
    fn normalises_case_diacritics_and_separators() {
        assert_eq!(tokens("José  María-GARCÍA"), ["jose", "maria", "garcia"]);
        assert_eq!(tokens("Łukasz Żółć"), ["lukasz", "zolc"]);
        assert_eq!(tokens("  "), Vec::<String>::new());
        assert_eq!(
            value_tokens(&json!({"firstname": "Ama", "middlename": "", "surname": "Doe"})),
            ["ama", "doe"]
        );
        assert!(value_tokens(&json!(42)).is_empty());
    }

    #[test]
    fn fuzziness_follows_auto_4_7() {
        assert_eq!(max_edits(3), 0);
        assert_eq!(max_edits(4), 1);
        assert_eq!(max_edits(6), 1);
        assert_eq!(max_edits(7), 2);
    }

    #[test]
    fn finds_misspellings_and_transliterations() {
        assert!(matches(&name("John", "Smith"), "Jonh"));
        assert!(matches(&name("Muhammad", "Ali"), "Mohammed"));
        assert!(matches(&name("Abenaa", "Mensah"), "Abena"));
        assert!(matches(&name("Jose", "Garcia"), "José García"));
        assert!(matches(&name("José", "García"), "jose garcia"));
        assert!(matches(&name("Katherine", "Doe"), "Catherine"));
        assert!(matches(&json!("Kwame Nkrumah"), "nkrumah kwame"));
    }

    #[test]
    fn refuses_other_names() {
        assert!(!matches(&name("John", "Smith"), "Mary"));
        assert!(!matches(&name("John", "Smith"), "John Brown"));
        // Three letters or fewer: no edit allowed, and no phonetic key (Ama, Amo: AM).
        assert!(!matches(&name("Ama", "Doe"), "Amo"));
        assert!(!matches(&name("Kofi", "Boateng"), "Kojo"));
        assert!(!matches(&name("Kofi", "Boateng"), ""));
        assert!(!matches(&json!(7), "7"));
    }

    #[test]
    fn index_keys_find_every_token_the_matcher_accepts() {
        let vocabulary = [
            "john",
            "jon",
            "joan",
            "johnny",
            "muhammad",
            "mohamed",
            "abenaa",
            "ab",
            "abena",
            "catherine",
            "katherine",
            "kathryn",
            "smith",
            "smyth",
            "mensah",
            "kwame",
            "kwami",
        ];
        let terms = [
            "jonh",
            "mohammed",
            "abena",
            "catherine",
            "smith",
            "kwame",
            "ab",
            "zzz",
        ];
        for term in terms {
            let keys = term_keys(term);
            for token in vocabulary {
                let shares = vocabulary_keys(token).iter().any(|k| keys.contains(k));
                if token_matches(term, token) {
                    assert!(shares, "{term} matches {token} but shares no key");
                }
            }
        }
    }
}
