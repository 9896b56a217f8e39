//! Where the pinned Kubernetes programs are: tools/build.sh builds them into
//! `.cache/tools/<name>-<version>/` at the versions in tools/versions.env.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const VERSIONS: &str = include_str!("../../tools/versions.env");

/// The version pinned for `key` (e.g. `KUBERNETES_VERSION`) in tools/versions.env.
pub fn pinned_version(key: &str) -> Option<&'static str> {
    VERSIONS.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// Paths of the binaries this control plane runs.
#[derive(Clone, Debug)]
pub struct Tools {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kubectl: PathBuf,
    pub kwok: PathBuf,
    pub helm: PathBuf,
}

impl Tools {
    /// Finds every binary, or names the first one missing and how to build it.
    pub fn locate() -> Result<Tools> {
        let dir = cache_dir();
        let kubernetes = dir.join(format!("kubernetes-{}", version("KUBERNETES_VERSION")?));
        let tools = Tools {
            etcd: dir
                .join(format!("etcd-{}", version("ETCD_VERSION")?))
                .join("etcd"),
            kube_apiserver: kubernetes.join("kube-apiserver"),
            kube_controller_manager: kubernetes.join("kube-controller-manager"),
            kube_scheduler: kubernetes.join("kube-scheduler"),
            kubectl: kubernetes.join("kubectl"),
            kwok: dir
                .join(format!("kwok-{}", version("KWOK_VERSION")?))
                .join("kwok"),
            helm: dir
                .join(format!("helm-{}", version("HELM_VERSION")?))
                .join("helm"),
        };
        for (component, path) in [
            ("etcd", &tools.etcd),
            ("kube-apiserver", &tools.kube_apiserver),
            ("kube-controller-manager", &tools.kube_controller_manager),
            ("kube-scheduler", &tools.kube_scheduler),
            ("kubectl", &tools.kubectl),
            ("kwok", &tools.kwok),
        ] {
            require(component, path)?;
        }
        Ok(tools)
    }

    /// helm is only needed by chart tests, so it is checked when asked for.
    pub fn helm(&self) -> Result<&Path> {
        require("helm", &self.helm)?;
        Ok(&self.helm)
    }
}

fn require(component: &str, path: &Path) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        Err(Error::ToolMissing {
            component: component.into(),
            path: path.to_path_buf(),
        })
    }
}

fn version(key: &str) -> Result<&'static str> {
    pinned_version(key)
        .ok_or_else(|| Error::Usage(format!("tools/versions.env does not pin {key}")))
}

/// `$OFFPEAK_TOOLS_DIR`, or the repository's git-ignored `.cache/tools`.
pub fn cache_dir() -> PathBuf {
    let dir = std::env::var_os("OFFPEAK_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/tools"));
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_file_pins_every_tool() {
        for key in [
            "KUBERNETES_VERSION",
            "ETCD_VERSION",
            "KWOK_VERSION",
            "HELM_VERSION",
        ] {
            let v = pinned_version(key).unwrap_or_else(|| panic!("{key} not pinned"));
            assert!(v.starts_with('v'), "{key}={v} should look like vX.Y.Z");
        }
        assert_eq!(pinned_version("NOT_A_TOOL"), None);
    }

    #[test]
    fn kubernetes_minor_matches_k8s_openapi_feature() {
        // Cargo.toml enables k8s-openapi's v1_34: the programs must be that minor.
        let v = pinned_version("KUBERNETES_VERSION").unwrap_or_default();
        assert!(
            v.starts_with("v1.34."),
            "KUBERNETES_VERSION {v} is not 1.34.x"
        );
    }
}
