//! Tenant isolation at admission: the webhook server (tenant pods' placement and Pod
//! Security defaults, new leases' finalizer, internal pods steered off lent nodes) and the
//! cluster objects that wire it up and enforce the rules that need no lookup
//! (ValidatingAdmissionPolicies: see [`policy`]).

pub mod confine;
pub mod guard;
pub mod policy;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, ConvertAdmissionReviewError,
};
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, reflector};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::names::{FIELD_MANAGER, FINALIZER, TENANT};
use crate::telemetry::Metrics;

/// The webhook's serving certificate, key and the CA that signed it (the `caBundle`).
#[derive(Clone)]
pub struct WebhookTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

#[derive(Clone)]
struct WebhookState {
    client: kube::Client,
    namespaces: Store<Namespace>,
    nodes: Store<Node>,
}

/// One cluster-wide object that confines tenants: its API resource and its body.
pub struct ClusterObject {
    pub resource: ApiResource,
    pub name: String,
    pub body: serde_json::Value,
}

fn cluster_object<K>(object: K) -> ClusterObject
where
    K: kube::Resource<DynamicType = ()> + serde::Serialize,
{
    ClusterObject {
        resource: ApiResource::erase::<K>(&()),
        name: object.meta().name.clone().unwrap_or_default(),
        body: serde_json::to_value(&object).unwrap_or_default(),
    }
}

/// The confinement objects in the order they are applied: the priority class, each policy
/// before its binding, and the policies before the webhooks that rely on them. The Helm
/// chart carries the same objects (its files/tenancy.yaml is generated from this list, and
/// a test keeps it so).
pub fn cluster_objects(endpoint: &policy::WebhookEndpoint, ca_pem: &str) -> Vec<ClusterObject> {
    vec![
        cluster_object(policy::tenant_priority_class()),
        cluster_object(policy::confinement_policy()),
        cluster_object(policy::confinement_binding()),
        cluster_object(policy::services_policy()),
        cluster_object(policy::services_binding()),
        cluster_object(policy::internal_pods_policy()),
        cluster_object(policy::internal_pods_binding()),
        cluster_object(policy::internal_pods_webhook(endpoint, ca_pem)),
        cluster_object(policy::confinement_webhook(endpoint, ca_pem)),
        cluster_object(policy::lease_webhook(endpoint, ca_pem)),
    ]
}

/// Applies the confinement objects under Offpeak's field manager, in their order.
pub async fn install(
    client: &kube::Client,
    endpoint: &policy::WebhookEndpoint,
    ca_pem: &str,
) -> Result<(), kube::Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for object in cluster_objects(endpoint, ca_pem) {
        Api::<DynamicObject>::all_with(client.clone(), &object.resource)
            .patch(&object.name, &params, &Patch::Apply(&object.body))
            .await?;
    }
    Ok(())
}

/// Watches namespaces and nodes into caches and serves the webhook with them.
pub async fn run(
    addr: SocketAddr,
    tls: &WebhookTls,
    client: kube::Client,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let (namespaces, namespace_writer) = reflector::store();
    let (nodes, node_writer) = reflector::store();
    let namespace_watch = reflector(
        namespace_writer,
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .applied_objects()
    .for_each(|_| futures::future::ready(()));
    let node_watch = reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .applied_objects()
    .for_each(|_| futures::future::ready(()));
    tokio::select! {
        result = serve(addr, tls, client, namespaces, nodes, metrics) => result,
        () = namespace_watch => anyhow::bail!("the namespace watch ended"),
        () = node_watch => anyhow::bail!("the node watch ended"),
    }
}

/// Serves the pod webhook over TLS until the process ends.
pub async fn serve(
    addr: SocketAddr,
    tls: &WebhookTls,
    client: kube::Client,
    namespaces: Store<Namespace>,
    nodes: Store<Node>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let certs =
        CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let app = Router::new()
        .route(policy::MUTATE_PODS_PATH, post(mutate_pod))
        .route(policy::MUTATE_LEASES_PATH, post(mutate_lease))
        .route(policy::STEER_INTERNAL_PODS_PATH, post(steer_internal_pod))
        // Only the routes above are timed: a stray path cannot add a label value.
        .route_layer(axum::middleware::from_fn_with_state(metrics, timed))
        .with_state(WebhookState {
            client,
            namespaces,
            nodes,
        });
    tracing::info!(%addr, "serving the tenant pod webhook");
    axum_server::bind_rustls(
        addr,
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config)),
    )
    .serve(app.into_make_service())
    .await?;
    Ok(())
}

/// Records how long the webhook took to answer, by path.
async fn timed(
    State(metrics): State<Arc<Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = request.uri().path().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics
        .webhook_seconds
        .with_label_values(&[path.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The request an admission review carries, or the answer to a malformed one.
fn request_of<K: kube::Resource>(
    review: AdmissionReview<K>,
) -> Result<AdmissionRequest<K>, Box<AdmissionResponse>> {
    review.try_into().map_err(|e: ConvertAdmissionReviewError| {
        tracing::warn!(error = %e, "malformed admission review");
        Box::new(AdmissionResponse::invalid(e.to_string()))
    })
}

async fn mutate_pod(
    State(state): State<WebhookState>,
    Json(review): Json<AdmissionReview<Pod>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let request = match request_of(review) {
        Ok(request) => request,
        Err(answer) => return Json(answer.into_review()),
    };
    Json(review_pod(&state, &request).await.into_review())
}

/// An internal pod that tolerates the lent nodes' taint gets the node affinity that keeps
/// it off them. The API server sends only such pods (the webhook's match condition); the
/// test is made again here, so a pod sent by mistake is admitted unchanged.
async fn steer_internal_pod(
    Json(review): Json<AdmissionReview<Pod>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let request = match request_of(review) {
        Ok(request) => request,
        Err(answer) => return Json(answer.into_review()),
    };
    let response = AdmissionResponse::from(&request);
    let Some(pod) = &request.object else {
        return Json(response.into_review());
    };
    if !confine::needs_steering(pod) {
        return Json(response.into_review());
    }
    let steered = confine::steer(pod);
    Json(
        match confine::patch(pod, &steered).map(|patch| response.clone().with_patch(patch)) {
            Ok(Ok(patched)) => patched.into_review(),
            Ok(Err(e)) => response
                .deny(format!("cannot encode the steering patch: {e}"))
                .into_review(),
            Err(e) => response
                .deny(format!("cannot encode the pod: {e}"))
                .into_review(),
        },
    )
}

/// A new lease gets the finalizer that makes its nodes come back before it goes.
async fn mutate_lease(
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let request = match request_of(review) {
        Ok(request) => request,
        Err(answer) => return Json(answer.into_review()),
    };
    let response = AdmissionResponse::from(&request);
    let Some(lease) = &request.object else {
        return Json(response.into_review());
    };
    let finalizers = lease.metadata.finalizers.clone().unwrap_or_default();
    if finalizers.iter().any(|f| f == FINALIZER) {
        return Json(response.into_review());
    }
    let op = if lease.metadata.finalizers.is_none() {
        json_patch::PatchOperation::Add(json_patch::AddOperation {
            path: json_patch::jsonptr::PointerBuf::parse("/metadata/finalizers")
                .unwrap_or_default(),
            value: serde_json::json!([FINALIZER]),
        })
    } else {
        json_patch::PatchOperation::Add(json_patch::AddOperation {
            path: json_patch::jsonptr::PointerBuf::parse("/metadata/finalizers/-")
                .unwrap_or_default(),
            value: serde_json::json!(FINALIZER),
        })
    };
    match response.clone().with_patch(json_patch::Patch(vec![op])) {
        Ok(patched) => Json(patched.into_review()),
        Err(e) => Json(
            response
                .deny(format!("cannot encode the finalizer patch: {e}"))
                .into_review(),
        ),
    }
}

async fn review_pod(state: &WebhookState, request: &AdmissionRequest<Pod>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let (Some(pod), Some(namespace)) = (&request.object, &request.namespace) else {
        return response;
    };
    let tenant = match tenant_of(state, namespace).await {
        Ok(Some(tenant)) => tenant,
        // Not a tenant namespace after all (the label went away): nothing to do.
        Ok(None) => return response,
        Err(e) => return response.deny(format!("cannot read namespace {namespace}: {e}")),
    };
    let tenant_nodes: BTreeSet<String> = state
        .nodes
        .state()
        .iter()
        .filter(|n| n.metadata.labels.as_ref().and_then(|l| l.get(TENANT)) == Some(&tenant))
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    if let Some(why) = confine::refusal(pod, &tenant, &tenant_nodes) {
        return response.deny(why);
    }
    let confined = confine::confine(pod, &tenant);
    match confine::patch(pod, &confined).map(|patch| response.clone().with_patch(patch)) {
        Ok(Ok(patched)) => patched,
        Ok(Err(e)) => response.deny(format!("cannot encode the placement patch: {e}")),
        Err(e) => response.deny(format!("cannot encode the pod: {e}")),
    }
}

/// The tenant owning `namespace`: from the watch cache, or from the API when the cache has
/// not seen the namespace yet (it was created moments ago).
async fn tenant_of(state: &WebhookState, namespace: &str) -> Result<Option<String>, kube::Error> {
    let label = |ns: &Namespace| {
        ns.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(TENANT).cloned())
    };
    if let Some(ns) = state.namespaces.get(&ObjectRef::new(namespace)) {
        return Ok(label(&ns));
    }
    let ns = Api::<Namespace>::all(state.client.clone())
        .get(namespace)
        .await?;
    Ok(label(&ns))
}
