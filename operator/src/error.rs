//! The operator's one error type. Transient errors (the API server, conflicts) are retried
//! with backoff; spec errors wait for the object to change.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("{object}: {message}")]
    Spec { object: String, message: String },

    #[error("encoding: {0}")]
    Encoding(#[from] serde_json::Error),

    #[error("{0}")]
    Finalizer(String),
}

impl Error {
    /// A short, stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "Conflict",
            Error::Kube(_) => "Kube",
            Error::Spec { .. } => "Spec",
            Error::Encoding(_) => "Encoding",
            Error::Finalizer(_) => "Finalizer",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
