//! What the API tests share: the control plane with Offpeak's CRDs installed, a namespace
//! per test, and applying manifests the way `kubectl apply --server-side` does.

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::Status;
use kube::{Client, Resource};
use offpeak_api::{CapacityLease, CapacityPool, PeakReservation, RateCard, Tenant, UsageBill};
use offpeak_testenv::ControlPlane;

/// The field manager of every apply the tests make.
pub const MANAGER: &str = "offpeak-api-tests";

static CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// The shared control plane, with the CRDs installed once per test binary.
pub async fn plane() -> anyhow::Result<&'static ControlPlane> {
    let plane = ControlPlane::shared().await?;
    CRDS.get_or_try_init(|| async {
        // Applied here first so that a refused CRD reports each cause on its own line.
        let crds: Api<CustomResourceDefinition> = Api::all(plane.client().await?);
        let params = PatchParams::apply(MANAGER).force();
        let mut refused = Vec::new();
        for crd in offpeak_api::crds() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            if let Err(kube::Error::Api(status)) =
                crds.patch(&name, &params, &Patch::Apply(&crd)).await
            {
                refused.extend(
                    causes(&status)
                        .into_iter()
                        .map(|(field, message)| format!("{name}: {field}: {message}")),
                );
            }
        }
        anyhow::ensure!(
            refused.is_empty(),
            "the API server refused Offpeak's CRDs:\n{}",
            refused.join("\n")
        );
        plane
            .install_crds(&offpeak_api::crds())
            .await
            .context("installing Offpeak's CRDs")
    })
    .await?;
    Ok(plane)
}

/// An admin client and a fresh namespace for one test.
pub async fn namespace(plane: &ControlPlane, name: &str) -> anyhow::Result<Client> {
    plane.create_namespace(name).await?;
    Ok(plane.client().await?)
}

/// The folder of this package (`tests/`).
pub fn package_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The repository's `examples/`.
pub fn examples_dir() -> PathBuf {
    package_dir().join("../examples")
}

/// The API resource of an Offpeak kind, and whether it is namespaced.
pub fn resource_of(kind: &str) -> anyhow::Result<(ApiResource, bool)> {
    fn of<K: Resource<DynamicType = ()>>(namespaced: bool) -> (ApiResource, bool) {
        (ApiResource::erase::<K>(&()), namespaced)
    }
    Ok(match kind {
        "Tenant" => of::<Tenant>(false),
        "CapacityPool" => of::<CapacityPool>(false),
        "PeakReservation" => of::<PeakReservation>(false),
        "CapacityLease" => of::<CapacityLease>(true),
        "RateCard" => of::<RateCard>(false),
        "UsageBill" => of::<UsageBill>(true),
        other => anyhow::bail!("not an Offpeak kind: {other}"),
    })
}

/// Reads a manifest (one YAML document).
pub fn read_manifest(path: &Path) -> anyhow::Result<DynamicObject> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The API for `object`'s kind; namespaced kinds go to `namespace`.
pub fn api_for(
    client: &Client,
    object: &DynamicObject,
    namespace: &str,
) -> anyhow::Result<Api<DynamicObject>> {
    let kind = object
        .types
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or_default();
    let (resource, namespaced) = resource_of(&kind)?;
    Ok(if namespaced {
        Api::namespaced_with(client.clone(), namespace, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    })
}

/// Applies `object` as `kubectl apply --server-side` does, unknown fields refused; a
/// namespaced object lands in `namespace` whatever its manifest says.
pub async fn apply(
    client: &Client,
    mut object: DynamicObject,
    namespace: &str,
) -> anyhow::Result<kube::Result<DynamicObject>> {
    let api = api_for(client, &object, namespace)?;
    let kind = object
        .types
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or_default();
    if resource_of(&kind)?.1 {
        object.metadata.namespace = Some(namespace.to_string());
    } else {
        object.metadata.namespace = None;
    }
    let name = object
        .metadata
        .name
        .clone()
        .context("the manifest has no metadata.name")?;
    let params = PatchParams::apply(MANAGER).force().validation_strict();
    Ok(api.patch(&name, &params, &Patch::Apply(&object)).await)
}

/// The refusal of a request the API server should have refused.
pub fn refusal<T: std::fmt::Debug>(result: kube::Result<T>, what: &str) -> anyhow::Result<Status> {
    match result {
        Err(kube::Error::Api(status)) => Ok(*status),
        Ok(accepted) => anyhow::bail!("{what}: the API server accepted it: {accepted:?}"),
        Err(other) => anyhow::bail!("{what}: the request failed another way: {other}"),
    }
}

/// `field: message` for every cause of a refusal, as a person reads them.
pub fn causes(status: &Status) -> Vec<(String, String)> {
    status
        .details
        .as_ref()
        .map(|d| {
            d.causes
                .iter()
                .map(|c| (c.field.clone(), c.message.clone()))
                .collect()
        })
        .unwrap_or_default()
}
