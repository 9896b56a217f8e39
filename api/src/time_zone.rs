//! IANA time zones, from the tz database that chrono-tz compiles in: the names the
//! operator can resolve are exactly the names the API server accepts.

use kube::core::{Reason, Rule};
use serde::{Deserialize, Serialize};

use crate::schema::{string, string_newtype, string_schema};

/// Every IANA time zone name the operator knows, sorted (`Africa/Abidjan` … `Zulu`),
/// including the tz database's backward-compatible links such as `US/Pacific`.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// An IANA time zone name, such as `Europe/Berlin`, `America/New_York` or `UTC`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimeZone(pub String);

string_newtype!(TimeZone);
string_schema!(
    TimeZone,
    "TimeZone",
    string("^[A-Za-z][A-Za-z0-9_+/-]*$", 40, &[membership()])
);

/// A CEL membership test rather than an OpenAPI enum: the API server's message for a
/// failed enum lists every allowed value (about 600 here), where this one says what a
/// time zone looks like.
fn membership() -> Rule {
    let list = names()
        .iter()
        .map(|name| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(",");
    Rule::new(format!("self in [{list}]"))
        .message("must be an IANA time zone name such as Europe/Berlin, America/New_York or UTC (case matters)")
        .reason(Reason::FieldValueInvalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_holds_common_zones_and_only_safe_characters() {
        let names = names();
        assert!(names.len() > 400, "{} zones", names.len());
        for zone in ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"] {
            assert!(names.contains(&zone), "{zone} missing");
        }
        for name in &names {
            assert!(
                name.len() <= 40
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_+/-".contains(c)),
                "{name} would break the pattern or the CEL list"
            );
        }
    }
}
