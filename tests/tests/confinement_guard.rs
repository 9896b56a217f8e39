//! Confinement stays in place while the operator runs, on the real control plane: a
//! policy deleted, or a webhook made lenient, by someone else is applied again within
//! seconds, with a Warning Event and a metric. (That no lease is admitted meanwhile is
//! the pool plan's, tested without a cluster: the window here lasts milliseconds.)
//!
//! Its own test binary, so its own control plane: other tests' tenants are never
//! unconfined for those milliseconds.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy,
};
use kube::api::{Api, Patch, PatchParams};
use offpeak_api::{CapacityPool, ConditionStatus};
use offpeak_testenv::ControlPlane;
use offpeak_tests::fixtures::*;
use serde_json::json;

const POLICY: &str = "offpeak-tenant-confinement";
const WEBHOOK: &str = "offpeak-tenant-pods";

fn failure_policy(hook: &MutatingWebhookConfiguration) -> Option<String> {
    hook.webhooks.as_ref()?.first()?.failure_policy.clone()
}

#[tokio::test]
async fn a_deleted_policy_and_a_lenient_webhook_are_applied_again_with_an_event_and_a_metric()
-> anyhow::Result<()> {
    let plane = ControlPlane::shared().await?;
    let operator =
        offpeak::local::start(plane, offpeak::local::settings(Duration::from_secs(5))).await?;
    pool_with_nodes(plane, "guarded", 1).await?;
    let admin = plane.client().await?;
    let pools: Api<CapacityPool> = Api::all(admin.clone());
    eventually("pool guarded to say its tenants are confined", || async {
        Ok(pools.get("guarded").await?.status.is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Confined"
                    && c.status == ConditionStatus::True
                    && c.reason == "ConfinementInPlace"
            })
        }))
    })
    .await?;

    let policies: Api<ValidatingAdmissionPolicy> = Api::all(admin.clone());
    let before = policies.get(POLICY).await?;
    policies.delete(POLICY, &Default::default()).await?;
    let back = eventually_value("the deleted policy to be applied again", || async {
        Ok(policies.get_opt(POLICY).await?)
    })
    .await?;
    assert_ne!(back.metadata.uid, before.metadata.uid, "not deleted");
    assert_eq!(back.spec, before.spec);

    // Someone turns the tenant pod webhook lenient: an unreachable operator would then let
    // unmutated pods through.
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    hooks
        .patch(
            WEBHOOK,
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(json!([
                {"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}
            ]))?),
        )
        .await?;
    eventually("the webhook to fail closed again", || async {
        Ok(failure_policy(&hooks.get(WEBHOOK).await?).as_deref() == Some("Fail"))
    })
    .await?;

    // Cluster-scoped objects' Events are in the default namespace.
    let restored = |name: &'static str, was: &'static str, kind: &'static str| {
        let admin = admin.clone();
        async move {
            eventually(&format!("an Event saying {name} was restored"), || async {
                Ok(events_of(&admin, "default", name).await?.contains(&(
                    "ConfinementRestored".to_string(),
                    format!(
                        "{kind} {name} was {was}; Offpeak applied it again (no lease was \
                         admitted meanwhile)"
                    ),
                )))
            })
            .await
        }
    };
    restored(POLICY, "missing", "ValidatingAdmissionPolicy").await?;
    restored(WEBHOOK, "changed", "MutatingWebhookConfiguration").await?;
    let metrics = scrape(operator.metrics).await?;
    for line in [
        format!("offpeak_confinement_repairs_total{{object=\"{POLICY}\"}} 1"),
        format!("offpeak_confinement_repairs_total{{object=\"{WEBHOOK}\"}} 1"),
        "offpeak_confinement_in_place 1".to_string(),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
    Ok(())
}
