//! Quantities, durations and instants as the strings people write: `128`, `512Gi`, `8h`,
//! `2026-11-23T06:00:00Z`, `08:00`.

use kube::core::{Reason, Rule};
use serde::{Deserialize, Serialize};

use crate::schema::{string, string_newtype, string_schema};

/// A Kubernetes quantity without sign or exponent: `128`, `500m`, `0.5`, `512Gi`, `2T`.
pub(crate) const QUANTITY: &str = "^[0-9]{1,9}([.][0-9]{1,6})?(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$";

/// An amount of a resource, as Kubernetes writes it: `128` or `500m` cores, `512Gi` of
/// memory, `4` GPUs. Never a float: `0.5` is written as a string.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(pub String);

string_newtype!(Quantity);
string_schema!(Quantity, "Quantity", string(QUANTITY, 20, &[]));

/// CEL: `self` is not a well-formed quantity, so the pattern reports it and the quantity
/// rules stay quiet instead of failing to evaluate.
fn malformed_quantity() -> String {
    format!("!self.matches('{QUANTITY}')")
}

/// A quantity field is more than zero.
pub(crate) fn positive(what: &str) -> Rule {
    Rule::new(format!(
        "{} || quantity(self).isGreaterThan(quantity('0'))",
        malformed_quantity()
    ))
    .message(format!("{what} must be more than 0").as_str())
}

/// A quantity field is at most `max` (a quantity literal); `words` says it for people.
pub(crate) fn at_most(what: &str, max: &str, words: &str) -> Rule {
    Rule::new(format!(
        "{} || quantity(self).compareTo(quantity('{max}')) <= 0",
        malformed_quantity()
    ))
    .message(format!("{what} must be at most {words}").as_str())
}

/// A quantity field is a whole number.
pub(crate) fn whole(what: &str) -> Rule {
    Rule::new(format!(
        "{} || quantity(self).isInteger()",
        malformed_quantity()
    ))
    .message(format!("{what} must be a whole number").as_str())
}

/// A Go duration of hours, minutes and seconds, largest unit first: `8h`, `90m`, `1h30m`,
/// `120s`.
pub(crate) const DURATION: &str = "^([0-9]{1,5}h)?([0-9]{1,5}m)?([0-9]{1,5}s)?$";

/// A length of time: hours, minutes and seconds, largest first, such as `8h`, `1h30m` or
/// `120s`. Parse it with `kube::core::Duration`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GoDuration(pub String);

string_newtype!(GoDuration);
string_schema!(GoDuration, "Duration", {
    let mut schema = string(DURATION, 20, &[]);
    schema.insert("minLength".into(), 2.into());
    schema
});

/// A CEL rule for a duration field: between `min` and `max` (Go duration literals).
pub(crate) fn duration_range(what: &str, min: &str, max: &str, words: &str) -> Rule {
    Rule::new(format!(
        "size(self) < 2 || !self.matches('{DURATION}') || (duration(self) >= duration('{min}') && duration(self) <= duration('{max}'))"
    ))
    .message(format!("{what} must be {words}").as_str())
    .reason(Reason::FieldValueInvalid)
}

/// RFC 3339 with an explicit offset (`Z` or `+01:00`), which the API server's `date-time`
/// format alone does not require.
pub(crate) const RFC3339: &str = "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$";

/// An instant, RFC 3339 with its offset: `2026-11-23T06:00:00Z` or
/// `2026-11-23T07:00:00+01:00`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub String);

string_newtype!(Timestamp);
string_schema!(Timestamp, "Timestamp", {
    let mut schema = string(RFC3339, 35, &[]);
    schema.insert("format".into(), "date-time".into());
    schema
});

/// A wall-clock time of day, 24-hour `HH:MM`: `08:00`, `20:30`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LocalTime(pub String);

string_newtype!(LocalTime);
string_schema!(
    LocalTime,
    "LocalTime",
    string("^([01][0-9]|2[0-3]):[0-5][0-9]$", 5, &[])
);
