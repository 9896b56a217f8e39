//! The confinement guard: Offpeak lends nodes only while the objects that confine tenant
//! pods (the priority class, the policies and their bindings, the webhooks) are in the
//! cluster as Offpeak applies them. It watches them; one deleted, or edited so that it no
//! longer says what Offpeak applied, is applied again by the leading replica, and until it
//! is back every pool admits no lease (its `Confined` condition says which and why).
//!
//! An object "says what Offpeak applied" when every field Offpeak sets has the value it
//! sets: fields the API server defaults, and metadata (labels a Helm release adds), are not
//! compared, so a steady cluster is never re-applied.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, watcher};
use serde_json::Value;
use tokio::sync::watch;

use super::ClusterObject;
use crate::names::FIELD_MANAGER;
use crate::plan::pool::Confinement;
use crate::telemetry::Metrics;

/// The confinement objects as the cluster has them, by (kind, name).
pub type Observed = BTreeMap<(String, String), Value>;

/// How often a repair that failed is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// The objects of `desired` that `live` lacks, or has with a field Offpeak sets changed.
pub fn drifted<'a>(desired: &'a [ClusterObject], live: &Observed) -> Vec<&'a ClusterObject> {
    desired
        .iter()
        .filter(|object| {
            live.get(&key(object))
                .is_none_or(|found| difference(found, &object.body).is_some())
        })
        .collect()
}

/// The first field of `want`, outside its identity, metadata and status, that `live` lacks
/// or holds with another value.
pub fn difference(live: &Value, want: &Value) -> Option<String> {
    let Value::Object(want) = want else {
        return (live != want).then(String::new);
    };
    want.iter()
        .filter(|(field, _)| {
            !matches!(
                field.as_str(),
                "apiVersion" | "kind" | "metadata" | "status"
            )
        })
        .find_map(|(field, value)| match live.get(field) {
            None => (!empty(value)).then(|| field.clone()),
            Some(l) => differs(l, value, field),
        })
}

/// What the API server leaves out of an object it returns (Go's `omitempty`).
fn empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Where `live` stops holding `want`: the same scalars, every field of an object (more may
/// be set: the API server's defaults), and lists of the same length item by item.
fn differs(live: &Value, want: &Value, path: &str) -> Option<String> {
    match (live, want) {
        (_, Value::Null) => None,
        (Value::Object(live), Value::Object(want)) => want.iter().find_map(|(field, value)| {
            let path = format!("{path}.{field}");
            match live.get(field) {
                None => (!empty(value)).then_some(path),
                Some(l) => differs(l, value, &path),
            }
        }),
        (Value::Array(live), Value::Array(want)) if live.len() == want.len() => live
            .iter()
            .zip(want)
            .enumerate()
            .find_map(|(i, (l, w))| differs(l, w, &format!("{path}[{i}]"))),
        _ => (live != want).then(|| path.to_string()),
    }
}

fn key(object: &ClusterObject) -> (String, String) {
    (object.resource.kind.clone(), object.name.clone())
}

/// What the pools are told: in place, or since when what is missing and why.
fn confinement(
    drifted: &[&ClusterObject],
    live: &Observed,
    since: DateTime<Utc>,
    error: Option<&str>,
) -> Confinement {
    if drifted.is_empty() {
        return Confinement::InPlace;
    }
    let objects: Vec<String> = drifted
        .iter()
        .map(|o| {
            let state = match live.get(&key(o)) {
                Some(found) => format!(
                    "changed ({})",
                    difference(found, &o.body).unwrap_or_default()
                ),
                None => "missing".to_string(),
            };
            format!("{} {} {state}", o.resource.kind, o.name)
        })
        .collect();
    let mut message = objects.join(", ");
    if let Some(error) = error {
        message.push_str(&format!("; cannot apply it again: {error}"));
    }
    Confinement::Broken { since, message }
}

/// Watches the confinement objects, publishes whether they are in place, and applies
/// again those that are not while this replica leads. `state` is `None` until every kind
/// has been listed once.
pub async fn run(
    client: kube::Client,
    desired: Vec<ClusterObject>,
    leader: watch::Receiver<bool>,
    state: watch::Sender<Option<Confinement>>,
    metrics: Arc<Metrics>,
) {
    let kinds: BTreeMap<String, kube::core::ApiResource> = desired
        .iter()
        .map(|o| (o.resource.kind.clone(), o.resource.clone()))
        .collect();
    let names: BTreeSet<(String, String)> = desired.iter().map(key).collect();
    let streams = kinds.values().map(|resource| {
        let kind = resource.kind.clone();
        watcher(
            Api::<DynamicObject>::all_with(client.clone(), resource),
            watcher::Config::default(),
        )
        .default_backoff()
        .map(move |event| (kind.clone(), event))
        .boxed()
    });
    let mut events = futures::stream::select_all(streams);
    let mut live = Observed::new();
    let mut listing: BTreeMap<String, Observed> = BTreeMap::new();
    let mut listed: BTreeSet<String> = BTreeSet::new();
    let mut broken_since: Option<DateTime<Utc>> = None;
    let mut error: Option<String> = None;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "offpeak".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            next = events.next() => {
                let Some((kind, event)) = next else { return };
                let event = match event {
                    Ok(event) => event,
                    Err(e) => {
                        tracing::warn!(error = %e, kind, "confinement watch error; retrying");
                        continue;
                    }
                };
                let ours = |o: &DynamicObject| {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    names.contains(&(kind.clone(), name.clone())).then_some((kind.clone(), name))
                };
                let as_value = |o: &DynamicObject| serde_json::to_value(o).unwrap_or_default();
                match event {
                    watcher::Event::Apply(o) => {
                        if let Some(k) = ours(&o) { live.insert(k, as_value(&o)); }
                    }
                    watcher::Event::Delete(o) => {
                        if let Some(k) = ours(&o) { live.remove(&k); }
                    }
                    watcher::Event::Init => { listing.insert(kind.clone(), Observed::new()); }
                    watcher::Event::InitApply(o) => {
                        if let Some(k) = ours(&o) {
                            listing.entry(kind.clone()).or_default().insert(k, as_value(&o));
                        }
                    }
                    watcher::Event::InitDone => {
                        // A relist replaces what was known of this kind.
                        live.retain(|(k, _), _| *k != kind);
                        live.extend(listing.remove(&kind).unwrap_or_default());
                        listed.insert(kind.clone());
                    }
                }
                if listed.len() < kinds.len() {
                    continue;
                }
            }
            _ = retry.tick() => {
                if listed.len() < kinds.len() || broken_since.is_none() {
                    continue;
                }
            }
        }
        let drift = drifted(&desired, &live);
        if drift.is_empty() {
            if broken_since.take().is_some() {
                tracing::info!("tenant confinement is in place again; pools admit leases");
            }
            error = None;
        } else {
            broken_since.get_or_insert_with(Utc::now);
        }
        metrics.confined.set(i64::from(drift.is_empty()));
        let since = broken_since.unwrap_or_else(Utc::now);
        // The pools stop admitting before the repair is tried.
        publish(&state, confinement(&drift, &live, since, error.as_deref()));
        if !drift.is_empty() && *leader.borrow() {
            error = repair(&client, &recorder, &drift, &live, &metrics).await;
            publish(&state, confinement(&drift, &live, since, error.as_deref()));
        }
    }
}

/// Tells the pools, when it changed.
fn publish(state: &watch::Sender<Option<Confinement>>, next: Confinement) {
    state.send_if_modified(|current| {
        let changed = current.as_ref() != Some(&next);
        if changed {
            if let Confinement::Broken { message, .. } = &next {
                tracing::warn!(%message, "tenant confinement is not in place; pools admit no lease until it is");
            }
            *current = Some(next);
        }
        changed
    });
}

/// Applies the drifted objects again; the first error, if any.
async fn repair(
    client: &kube::Client,
    recorder: &Recorder,
    drift: &[&ClusterObject],
    live: &Observed,
    metrics: &Metrics,
) -> Option<String> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut first_error = None;
    for object in drift {
        let api = Api::<DynamicObject>::all_with(client.clone(), &object.resource);
        match api
            .patch(&object.name, &params, &Patch::Apply(&object.body))
            .await
        {
            Ok(_) => {
                metrics
                    .confinement_repairs
                    .with_label_values(&[object.name.as_str()])
                    .inc();
                metrics.write("confinement", "ok");
                let was = if live.contains_key(&key(object)) {
                    "changed"
                } else {
                    "missing"
                };
                tracing::warn!(kind = %object.resource.kind, name = %object.name, was, "a tenant confinement object was not as Offpeak applied it; applied it again");
                let event = Event {
                    type_: EventType::Warning,
                    reason: "ConfinementRestored".into(),
                    note: Some(format!(
                        "{} {} was {was}; Offpeak applied it again (no lease was admitted meanwhile)",
                        object.resource.kind, object.name
                    )),
                    action: "Restore".into(),
                    secondary: None,
                };
                let reference = ObjectReference {
                    api_version: Some(object.resource.api_version.clone()),
                    kind: Some(object.resource.kind.clone()),
                    name: Some(object.name.clone()),
                    ..Default::default()
                };
                if let Err(e) = recorder.publish(&event, &reference).await {
                    tracing::warn!(error = %e, "cannot publish event");
                }
            }
            Err(e) => {
                metrics.write("confinement", "error");
                tracing::warn!(kind = %object.resource.kind, name = %object.name, error = %e, "cannot apply a tenant confinement object again");
                first_error.get_or_insert_with(|| {
                    format!("{} {}: {e}", object.resource.kind, object.name)
                });
            }
        }
    }
    first_error
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{cluster_objects, policy::WebhookEndpoint};

    fn desired() -> Vec<ClusterObject> {
        cluster_objects(&WebhookEndpoint::Url("https://127.0.0.1:9443".into()), "CA")
    }

    /// The cluster as the API server keeps what Offpeak applied: its fields, plus defaults
    /// and metadata of its own.
    fn as_applied(objects: &[ClusterObject]) -> Observed {
        objects
            .iter()
            .map(|o| {
                let mut body = o.body.clone();
                // Items of a list come without their kind.
                if let Some(fields) = body.as_object_mut() {
                    fields.remove("apiVersion");
                    fields.remove("kind");
                }
                body["metadata"]["resourceVersion"] = "7".into();
                body["metadata"]["labels"] =
                    serde_json::json!({"app.kubernetes.io/managed-by": "Helm"});
                if let Some(webhooks) = body.get_mut("webhooks").and_then(Value::as_array_mut) {
                    for hook in webhooks {
                        hook["matchPolicy"] = "Equivalent".into();
                        hook["objectSelector"] = serde_json::json!({});
                    }
                }
                body["status"] = serde_json::json!({"observedGeneration": 1});
                (key(o), body)
            })
            .collect()
    }

    fn names(drift: &[&ClusterObject]) -> Vec<String> {
        drift.iter().map(|o| o.name.clone()).collect()
    }

    #[test]
    fn objects_as_applied_with_defaults_and_other_labels_are_in_place() {
        let desired = desired();
        let mut live = as_applied(&desired);
        // The API server leaves out what is false.
        live.get_mut(&("PriorityClass".to_string(), "offpeak-tenant".to_string()))
            .and_then(Value::as_object_mut)
            .map(|o| o.remove("globalDefault"));
        assert!(drifted(&desired, &live).is_empty());
        assert_eq!(
            confinement(&[], &live, Utc::now(), None),
            Confinement::InPlace
        );
    }

    #[test]
    fn a_deleted_policy_is_missing_and_named() {
        let desired = desired();
        let mut live = as_applied(&desired);
        live.remove(&(
            "ValidatingAdmissionPolicy".to_string(),
            "offpeak-tenant-confinement".to_string(),
        ));
        let drift = drifted(&desired, &live);
        assert_eq!(names(&drift), ["offpeak-tenant-confinement"]);
        let since = "2026-12-01T20:00:00Z".parse().unwrap();
        assert_eq!(
            confinement(&drift, &live, since, Some("forbidden")),
            Confinement::Broken {
                since,
                message: "ValidatingAdmissionPolicy offpeak-tenant-confinement missing; \
                          cannot apply it again: forbidden"
                    .to_string()
            }
        );
    }

    #[test]
    fn a_policy_with_a_rule_removed_or_a_webhook_turned_lenient_has_changed() {
        let desired = desired();
        let mut live = as_applied(&desired);
        let policy = live
            .get_mut(&(
                "ValidatingAdmissionPolicy".to_string(),
                "offpeak-tenant-confinement".to_string(),
            ))
            .unwrap();
        policy["spec"]["validations"].as_array_mut().unwrap().pop();
        let hook = live
            .get_mut(&(
                "MutatingWebhookConfiguration".to_string(),
                "offpeak-tenant-pods".to_string(),
            ))
            .unwrap();
        hook["webhooks"][0]["failurePolicy"] = "Ignore".into();
        let drift = drifted(&desired, &live);
        assert_eq!(
            names(&drift),
            ["offpeak-tenant-confinement", "offpeak-tenant-pods"]
        );
        assert_eq!(
            confinement(&drift, &live, Utc::now(), None)
                .message()
                .unwrap_or_default(),
            "ValidatingAdmissionPolicy offpeak-tenant-confinement changed (spec.validations), \
             MutatingWebhookConfiguration offpeak-tenant-pods changed (webhooks[0].failurePolicy)"
        );
    }
}
