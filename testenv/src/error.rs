use std::path::PathBuf;
use std::time::Duration;

/// Everything that can stop a control plane from starting or serving a test. Each variant
/// names the component and the cause, and points at the component's log where there is one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{component}: no binary at {path}; run `make tools` (tools/build.sh) to build the \
         Kubernetes programs pinned in tools/versions.env"
    )]
    ToolMissing { component: String, path: PathBuf },

    #[error(
        "{component} did not become healthy: {cause}\n  log: {log}\n--- last lines of {component}'s log ---\n{tail}"
    )]
    Component {
        component: String,
        cause: String,
        log: PathBuf,
        tail: String,
        /// The log says the port was taken: a fresh set of ports may succeed.
        port_in_use: bool,
    },

    #[error("cannot make certificates: {0}")]
    Certificates(#[from] rcgen::Error),

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },

    #[error("kubeconfig {path}: {cause}")]
    Kubeconfig { path: PathBuf, cause: String },

    #[error("timed out after {:.0?} waiting for {what}", timeout)]
    Timeout { what: String, timeout: Duration },

    #[error("PostgreSQL: {0}")]
    Postgres(String),

    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

pub(crate) fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}
