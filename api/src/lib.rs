//! The `offpeak.dev/v1alpha1` API: the Rust types are the source of truth for `crds/`.
