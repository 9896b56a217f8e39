//! A real, local Kubernetes control plane for Offpeak's tests and demo: etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler and kwok (simulated nodes whose
//! pods turn Running), the programs pinned in `tools/versions.env` and built by
//! `tools/build.sh`. Nothing here fakes the API server.
//!
//! ```no_run
//! # async fn demo() -> offpeak_testenv::Result<()> {
//! let plane = offpeak_testenv::ControlPlane::shared().await?; // one per test binary
//! let client = plane.client().await?;                          // admin
//! let alice = plane.user_client("alice", &["tenant-acme"]).await?;
//! # Ok(()) }
//! ```
//!
//! Every component runs on free loopback ports with its own temporary folder, so several
//! test binaries can run at once. Dropping a [`ControlPlane`] stops it; if the process
//! dies first, a watcher process stops the components and deletes the folder.
//!
//! [`TempPostgres`] is a throwaway PostgreSQL server (a ledger for the operator), which a
//! test can stop and start again.

mod cluster;
mod control_plane;
mod error;
mod kubeconfig;
mod pki;
mod ports;
mod postgres;
mod process;
mod tools;

pub use cluster::NodeSpec;
pub use control_plane::{ControlPlane, KWOK_ANNOTATION, Options, StartupReport};
pub use error::{Error, Result};
pub use kubeconfig::client as client_from_kubeconfig;
pub use pki::CertPair;
pub use postgres::TempPostgres;
pub use tools::{Tools, cache_dir as tools_dir, pinned_version};

static SHARED: tokio::sync::OnceCell<std::result::Result<ControlPlane, String>> =
    tokio::sync::OnceCell::const_new();

impl ControlPlane {
    /// The control plane shared by every test of this test binary, started on first use.
    /// It lives until the process exits, when the watcher stops it. A failed start is
    /// remembered, so every test reports it at once instead of starting again.
    pub async fn shared() -> Result<&'static ControlPlane> {
        let started = SHARED
            .get_or_init(|| async {
                match ControlPlane::start().await {
                    Ok(plane) => {
                        eprintln!(
                            "testenv: control plane at {} ready: {} (folder {})",
                            plane.server(),
                            plane.startup(),
                            plane.dir().display()
                        );
                        Ok(plane)
                    }
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
        started
            .as_ref()
            .map_err(|e| Error::Usage(format!("the shared control plane did not start: {e}")))
    }
}
