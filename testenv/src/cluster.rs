//! What tests and the demo put into a fresh control plane: kwok nodes, namespaces, CRDs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Namespace, Node, NodeSpec as K8sNodeSpec, NodeStatus, ServiceAccount, Taint,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};

use crate::control_plane::{ControlPlane, KWOK_ANNOTATION};
use crate::error::{Error, Result, kube};
use crate::tools::pinned_version;

/// A set of simulated nodes: `count` nodes named `<name_prefix>-<i>`, all alike.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name_prefix: String,
    pub count: usize,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// Capacity and allocatable, as Kubernetes quantities.
    pub cpu: String,
    pub memory: String,
    pub pods: String,
    /// `nvidia.com/gpu` count, if any.
    pub gpus: Option<String>,
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec {
            name_prefix: "node".into(),
            count: 1,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            cpu: "16".into(),
            memory: "64Gi".into(),
            pods: "110".into(),
            gpus: None,
        }
    }
}

impl NodeSpec {
    fn node(&self, name: &str) -> Node {
        let mut labels = self.labels.clone();
        labels.insert("type".into(), "kwok".into());
        labels.insert("kubernetes.io/hostname".into(), name.into());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert("kubernetes.io/arch".into(), "amd64".into());
        let mut resources = BTreeMap::from([
            ("cpu".to_string(), Quantity(self.cpu.clone())),
            ("memory".to_string(), Quantity(self.memory.clone())),
            ("pods".to_string(), Quantity(self.pods.clone())),
        ]);
        if let Some(gpus) = &self.gpus {
            resources.insert("nvidia.com/gpu".into(), Quantity(gpus.clone()));
        }
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([(
                    KWOK_ANNOTATION.0.to_string(),
                    KWOK_ANNOTATION.1.to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(K8sNodeSpec {
                taints: (!self.taints.is_empty()).then(|| self.taints.clone()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                allocatable: Some(resources.clone()),
                capacity: Some(resources),
                node_info: Some(k8s_openapi::api::core::v1::NodeSystemInfo {
                    architecture: "amd64".into(),
                    operating_system: "linux".into(),
                    kubelet_version: pinned_version("KUBERNETES_VERSION")
                        .unwrap_or("v1.34.0")
                        .into(),
                    kube_proxy_version: String::new(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

impl ControlPlane {
    /// Creates the nodes and waits until kwok reports every one Ready. Returns their names.
    pub async fn create_nodes(&self, spec: &NodeSpec) -> Result<Vec<String>> {
        let nodes: Api<Node> = Api::all(self.client().await?);
        let names: Vec<String> = (0..spec.count)
            .map(|i| format!("{}-{i}", spec.name_prefix))
            .collect();
        for name in &names {
            nodes
                .create(&PostParams::default(), &spec.node(name))
                .await
                .map_err(kube(format!("cannot create node {name}")))?;
        }
        let timeout = Duration::from_secs(60);
        let start = Instant::now();
        loop {
            let mut ready = 0;
            for name in &names {
                if nodes
                    .get_opt(name)
                    .await
                    .map_err(kube("cannot read nodes"))?
                    .as_ref()
                    .is_some_and(is_ready)
                {
                    ready += 1;
                }
            }
            if ready == names.len() {
                return Ok(names);
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!(
                        "kwok to mark {} of {} nodes `{}-*` Ready (kwok log: {})",
                        names.len() - ready,
                        names.len(),
                        spec.name_prefix,
                        self.dir().join("logs/kwok.log").display()
                    ),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Creates a namespace and waits for its `default` service account, without which the
    /// API server refuses pods.
    pub async fn create_namespace(&self, name: &str) -> Result<()> {
        let client = self.client().await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(kube(format!("cannot create namespace {name}")))?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client, name);
        let timeout = Duration::from_secs(30);
        tokio::time::timeout(timeout, async {
            while accounts.get_opt("default").await.ok().flatten().is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .map_err(|_| Error::Timeout {
            what: format!(
                "the controller-manager to create namespace {name}'s default service account"
            ),
            timeout,
        })
    }

    /// Installs CRDs by server-side apply and waits until the API server serves each.
    pub async fn install_crds(&self, crds: &[CustomResourceDefinition]) -> Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client().await?);
        let params = PatchParams::apply("offpeak-testenv").force();
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.patch(&name, &params, &Patch::Apply(crd))
                .await
                .map_err(kube(format!("cannot install CRD {name}")))?;
        }
        let timeout = Duration::from_secs(30);
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            tokio::time::timeout(
                timeout,
                await_condition(api.clone(), &name, conditions::is_crd_established()),
            )
            .await
            .map_err(|_| Error::Timeout {
                what: format!("CRD {name} to be established"),
                timeout,
            })?
            .map_err(|e| Error::Usage(format!("watching CRD {name}: {e}")))?;
        }
        Ok(())
    }
}
