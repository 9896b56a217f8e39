//! Helpers shared by the integration tests in `tests/tests/` and the cluster benches in
//! `tests/benches/`: workloads to run and ways to wait for them.

pub mod fixtures;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams, ObjectMeta};

/// A Deployment of `replicas` pods labelled `app=<name>`, optionally pinned by a node selector.
pub fn deployment(
    name: &str,
    replicas: i32,
    node_selector: Option<BTreeMap<String, String>>,
) -> Deployment {
    let app = BTreeMap::from([("app".to_string(), name.to_string())]);
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(app.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(app),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    node_selector,
                    containers: vec![Container {
                        name: "main".into(),
                        image: Some(format!("registry.example/{name}:1")),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Polls `check` until it says yes; fails after `timeout` with `what` and the last error.
pub async fn eventually<F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    loop {
        let outcome = check().await;
        match outcome {
            Ok(true) => return Ok(start.elapsed()),
            Ok(false) if start.elapsed() > timeout => {
                anyhow::bail!("{what} did not happen within {timeout:?}")
            }
            Err(e) if start.elapsed() > timeout => {
                return Err(e.context(format!("waiting for {what}")));
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Polls `check` until it gives a value, for at most `timeout`, and returns it.
pub async fn eventually_value_within<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("waiting for {what}")));
            }
            _ if Instant::now() > deadline => {
                anyhow::bail!("{what} did not happen within {timeout:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits until exactly `count` pods matching `selector` are Running, and returns them.
pub async fn wait_running(
    pods: &Api<Pod>,
    selector: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Pod>> {
    let list = ListParams::default().labels(selector);
    let running = || async {
        let items = pods.list(&list).await?.items;
        anyhow::Ok(
            items
                .into_iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .collect::<Vec<Pod>>(),
        )
    };
    eventually(
        &format!("{count} running pods with {selector}"),
        timeout,
        || async { Ok(running().await?.len() == count) },
    )
    .await?;
    running().await
}

/// The node a pod runs on.
pub fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}
