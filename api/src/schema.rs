//! Helpers for hand-written schemas of string newtypes: a string with a pattern, a length
//! bound (so the API server's CEL cost estimator can bound every rule that reads it) and,
//! where a pattern cannot say it, CEL rules with messages that say what is allowed.

use kube::core::Rule;
use serde_json::{Value, json};

/// `{type: string, pattern, maxLength}` plus any CEL rules.
pub(crate) fn string(pattern: &str, max_length: u32, rules: &[Rule]) -> schemars::Schema {
    let mut schema = json!({
        "type": "string",
        "pattern": pattern,
        "maxLength": max_length,
    });
    if !rules.is_empty() {
        schema["x-kubernetes-validations"] = Value::Array(
            rules
                .iter()
                .map(|rule| serde_json::to_value(rule).unwrap_or(Value::Null))
                .collect(),
        );
    }
    schemars::Schema::try_from(schema).unwrap_or_default()
}

/// Implements `JsonSchema` for a string newtype, inlined at every use.
macro_rules! string_schema {
    ($ty:ty, $name:literal, $body:expr) => {
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                $body
            }
        }
    };
}
pub(crate) use string_schema;

/// Implements the traits every string newtype shares: construction, `Display`, `AsRef`.
macro_rules! string_newtype {
    ($ty:ident) => {
        impl $ty {
            /// Wraps a string without checking it; the API server checks it on the way in.
            pub fn new(value: impl Into<String>) -> Self {
                $ty(value.into())
            }

            /// The string as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $ty {
            fn from(value: &str) -> Self {
                $ty(value.to_string())
            }
        }

        impl From<String> for $ty {
            fn from(value: String) -> Self {
                $ty(value)
            }
        }
    };
}
pub(crate) use string_newtype;
