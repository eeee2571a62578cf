//! Validated names ("parse, don't validate"): a value of these types is known to be well formed,
//! so nothing past the edge re-checks it.

use crate::error::Error;
use std::fmt;

/// A short machine name: tenant, environment, project keys. Lowercase ASCII letters, digits and
/// `-`, starting with a letter, 1–63 characters (a DNS label, so it fits Kubernetes names too).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slug(String);

impl Slug {
    /// Parses `value` as the field named `field`, so the error can point at it.
    pub fn parse(field: &str, value: &str) -> Result<Slug, Error> {
        let ok_len = (1..=63).contains(&value.len());
        let mut chars = value.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let end_ok = !value.ends_with('-');
        if ok_len && first_ok && rest_ok && end_ok {
            Ok(Slug(value.to_owned()))
        } else {
            Err(Error::invalid(
                field,
                format!(
                    "{field} must be 1-63 characters of a-z, 0-9 and '-', start with a letter and not end with '-' (got {value:?})"
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, ok: bool) {
        assert_eq!(Slug::parse("name", input).is_ok(), ok, "{input:?}");
    }

    #[test]
    fn slugs() {
        for good in ["prod", "a", "stage-2", "x1-y2", &"a".repeat(63)] {
            check(good, true);
        }
        for bad in [
            "",
            "Prod",
            "1abc",
            "-a",
            "a-",
            "a_b",
            "a b",
            "ä",
            &"a".repeat(64),
        ] {
            check(bad, false);
        }
    }

    #[test]
    fn error_names_the_field() {
        let err = Slug::parse("environment", "Bad Name").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("environment"));
    }
}
