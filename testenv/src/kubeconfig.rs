//! Kubeconfig files for the admin, the components and test users, and clients made from them.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::{Error, Result, io};
use crate::pki::CertPair;

/// A kubeconfig for `user` authenticated by a client certificate, written to `path`.
pub fn write(path: &Path, server: &str, ca_pem: &str, user: &str, cert: &CertPair) -> Result<()> {
    let yaml = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: offpeak-testenv
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: {user}@offpeak-testenv
  context:
    cluster: offpeak-testenv
    user: {user}
current-context: {user}@offpeak-testenv
",
        ca = STANDARD.encode(ca_pem),
        cert = STANDARD.encode(&cert.cert_pem),
        key = STANDARD.encode(&cert.key_pem),
    );
    std::fs::write(path, yaml).map_err(io(format!("cannot write kubeconfig {}", path.display())))
}

/// A client for the kubeconfig at `path`.
pub async fn client(path: &Path) -> Result<kube::Client> {
    let fail = |cause: String| Error::Kubeconfig {
        path: PathBuf::from(path),
        cause,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| fail(e.to_string()))
}

/// A client for any HTTPS server signed by our CA (the controllers' health ports),
/// authenticated as the kubeconfig's user.
pub async fn client_for_server(path: &Path, server: &str) -> Result<kube::Client> {
    let fail = |cause: String| Error::Kubeconfig {
        path: PathBuf::from(path),
        cause,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| fail(e.to_string()))?;
    config.cluster_url = server
        .parse()
        .map_err(|e: http::uri::InvalidUri| fail(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| fail(e.to_string()))
}
