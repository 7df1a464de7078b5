//! Registration numbers: the format central issues them in, from configuration. A format is
//! literal text with tokens: `{year}` (the registration's year), `{seq:N}` (a counter, N digits,
//! zero-padded, counted per year and text: unique by construction) and `{random:N}` (N
//! characters of `[0-9A-Z]`, as Farajaland's 12-character numbers; unique by the database
//! constraint, redrawn on a clash). The default, `{year}{seq:8}`, gives 12 characters.
//! Pure: the counter value and the random characters come from the caller.

/// The default format: year and an 8-digit counter (`202600000001`).
pub const DEFAULT_FORMAT: &str = "{year}{seq:8}";

/// Longest registration number a format may produce, in characters.
pub const REGISTRATION_NUMBER_CHARS_MAX: usize = 32;

/// The characters of `{random:N}`.
const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Year,
    Seq(usize),
    Random(usize),
}

/// A parsed registration number format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationFormat {
    parts: Vec<Part>,
}

/// Why a format was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("registration number format {format:?}: {reason}")]
pub struct FormatError {
    format: String,
    reason: String,
}

impl Default for RegistrationFormat {
    fn default() -> Self {
        Self::parse(DEFAULT_FORMAT).unwrap_or(Self {
            parts: vec![Part::Year, Part::Seq(8)],
        })
    }
}

impl RegistrationFormat {
    /// Parses a format. It needs exactly one `{seq:N}` or at least 8 random characters in all,
    /// and may produce at most [`REGISTRATION_NUMBER_CHARS_MAX`] characters of `[0-9A-Z-/]`.
    pub fn parse(format: &str) -> Result<Self, FormatError> {
        let fail = |reason: &str| FormatError {
            format: format.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = Vec::new();
        let mut rest = format;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let end = after.find('}').ok_or_else(|| fail("unclosed {"))?;
                let token = &after[..end];
                rest = &after[end + 1..];
                let width = |name: &str| -> Result<usize, FormatError> {
                    let n: usize = token[name.len()..]
                        .parse()
                        .map_err(|_| fail(&format!("{{{token}}}: the width must be a number")))?;
                    if (1..=REGISTRATION_NUMBER_CHARS_MAX).contains(&n) {
                        Ok(n)
                    } else {
                        Err(fail(&format!("{{{token}}}: width out of range")))
                    }
                };
                parts.push(match token {
                    "year" => Part::Year,
                    t if t.starts_with("seq:") => Part::Seq(width("seq:")?),
                    t if t.starts_with("random:") => Part::Random(width("random:")?),
                    other => return Err(fail(&format!("unknown token {{{other}}}"))),
                });
            } else {
                let end = rest.find('{').unwrap_or(rest.len());
                let text = &rest[..end];
                if !text
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'/')
                {
                    return Err(fail("literal text may hold only 0-9, A-Z, - and /"));
                }
                parts.push(Part::Text(text.to_owned()));
                rest = &rest[end..];
            }
        }
        let seqs = parts.iter().filter(|p| matches!(p, Part::Seq(_))).count();
        let random: usize = parts
            .iter()
            .map(|p| if let Part::Random(n) = p { *n } else { 0 })
            .sum();
        if seqs > 1 {
            return Err(fail("at most one {seq:N}"));
        }
        if seqs == 0 && random < 8 {
            return Err(fail("needs a {seq:N} or at least 8 random characters"));
        }
        let len: usize = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.len(),
                Part::Year => 4,
                Part::Seq(n) | Part::Random(n) => *n,
            })
            .sum();
        if len > REGISTRATION_NUMBER_CHARS_MAX {
            return Err(fail("the numbers would be too long"));
        }
        Ok(Self { parts })
    }

    /// Whether numbers come from a counter (else from random characters only).
    pub fn counted(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Seq(_)))
    }

    /// The largest counter value the format can write.
    pub fn seq_max(&self) -> u64 {
        self.parts
            .iter()
            .find_map(|p| match p {
                Part::Seq(n) => {
                    Some(10u64.saturating_pow(u32::try_from(*n).unwrap_or(u32::MAX)) - 1)
                }
                _ => None,
            })
            .unwrap_or(0)
    }

    /// What the counter is counted per: the format with the year filled in.
    pub fn counter_scope(&self, year: i32) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Year => format!("{year:04}"),
                Part::Seq(n) => format!("{{seq:{n}}}"),
                Part::Random(n) => format!("{{random:{n}}}"),
            })
            .collect()
    }

    /// The number for `year` and counter value `seq` (ignored without `{seq:N}`); each random
    /// character is drawn from `random` (any byte; reduced to the alphabet). `None` when `seq`
    /// does not fit its width.
    pub fn render(&self, year: i32, seq: u64, mut random: impl FnMut() -> u8) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Year => out.push_str(&format!("{year:04}")),
                Part::Seq(n) => {
                    let digits = format!("{seq:0n$}", n = *n);
                    if digits.len() > *n {
                        return None;
                    }
                    out.push_str(&digits);
                }
                Part::Random(n) => {
                    for _ in 0..*n {
                        // 256 = 7 * 36 + 4: the first 252 values map evenly; the rest redraw.
                        let mut b = random();
                        while b >= 252 {
                            b = random();
                        }
                        out.push(char::from(ALPHABET[usize::from(b % 36)]));
                    }
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_year_and_an_eight_digit_counter() {
        let f = RegistrationFormat::default();
        assert!(f.counted());
        assert_eq!(f.seq_max(), 99_999_999);
        assert_eq!(f.counter_scope(2026), "2026{seq:8}");
        assert_eq!(f.render(2026, 42, || 0).unwrap(), "202600000042");
        assert_eq!(f.render(2026, 100_000_000, || 0), None);
    }

    #[test]
    fn farajaland_style_random_numbers() {
        let f = RegistrationFormat::parse("{random:12}").unwrap();
        assert!(!f.counted());
        let mut bytes = (0u8..=255).cycle().skip(250);
        let n = f.render(2026, 0, || bytes.next().unwrap_or(0)).unwrap();
        assert_eq!(n.len(), 12);
        assert!(n.bytes().all(|b| ALPHABET.contains(&b)), "{n}");
    }

    #[test]
    fn text_and_tokens_mix_and_bad_formats_are_refused() {
        let f = RegistrationFormat::parse("B-{year}/{seq:6}").unwrap();
        assert_eq!(f.render(2027, 7, || 0).unwrap(), "B-2027/000007");
        for bad in [
            "{year}",
            "{random:4}",
            "{seq:4}{seq:4}",
            "{seq:x}",
            "{seq:0}",
            "{when}",
            "{seq:4",
            "abc{seq:4}",
            "{random:40}",
        ] {
            assert!(RegistrationFormat::parse(bad).is_err(), "{bad}");
        }
    }
}
