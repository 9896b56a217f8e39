//! References to other objects by name.

use serde::{Deserialize, Serialize};

use crate::schema::{string, string_newtype, string_schema};

/// DNS-1123 label: what Kubernetes allows for namespace names and label values Offpeak
/// derives from names (a node's `offpeak.dev/tenant` label carries a tenant's name).
pub(crate) const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// The name of another object (a pool, a tenant, a namespace, a node class): a DNS-1123
/// label, lower case letters, digits and `-`, at most 63 characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Name(pub String);

string_newtype!(Name);
string_schema!(Name, "Name", string(DNS_LABEL, 63, &[]));

/// A Kubernetes node name (DNS-1123 subdomain, at most 253 characters).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeName(pub String);

string_newtype!(NodeName);
string_schema!(
    NodeName,
    "NodeName",
    string(
        "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        253,
        &[]
    )
);

/// A user or group name as the API server authenticates it (a certificate's CN or O, an
/// OIDC claim): any non-empty string without control characters, at most 256 characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Subject(pub String);

string_newtype!(Subject);
string_schema!(
    Subject,
    "Subject",
    string("^[^\\x00-\\x1f\\x7f]+$", 256, &[])
);

/// A label value: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a
/// letter or digit, or empty.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LabelValue(pub String);

string_newtype!(LabelValue);
string_schema!(
    LabelValue,
    "LabelValue",
    string("^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", 63, &[])
);
