//! The pool controller: each pass observes one pool from the watch caches
//! ([`observe::view`]), plans every write as a pure function of that view and now
//! ([`crate::plan::pool::plan`]), and applies the plan ([`apply::apply`]), each lease's
//! writes on their own so that one lease's failure never holds up the rest of the pool.
//! A pass is triggered by any change the caches map to the pool, and runs again at the next
//! instant the plan names.

mod apply;
mod observe;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::ResourceExt;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use offpeak_api::CapacityPool;

pub use self::apply::Memory;
use super::{Context, drive, retry_after};
use crate::error::{Error, Result};

pub async fn run(
    ctx: Arc<Context>,
    triggers: futures::channel::mpsc::UnboundedReceiver<ObjectRef<CapacityPool>>,
) {
    // Pools come through the shared caches' triggers only (no watch of its own).
    let own = futures::stream::pending::<Result<CapacityPool, kube::runtime::watcher::Error>>();
    drive(
        Controller::for_stream(own, ctx.stores.pools.clone())
            .reconcile_on(triggers)
            .run(reconcile, error_policy, ctx),
    )
    .await;
}

fn error_policy(pool: Arc<CapacityPool>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_after(
        &ctx,
        "pool",
        &pool.name_any(),
        error,
        Duration::from_secs(2),
    )
}

#[tracing::instrument(skip_all, fields(pool = %pool.name_any()))]
async fn reconcile(pool: Arc<CapacityPool>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("pool");
    let phase = |name: &str, started: std::time::Instant| {
        ctx.metrics
            .pass_seconds
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
    };
    let now = Utc::now();
    let started = std::time::Instant::now();
    let view = observe::view(&ctx, &pool, now);
    phase("observe", started);
    let started = std::time::Instant::now();
    let plan = crate::plan::pool::plan(&view, now, &ctx.settings.plan);
    phase("plan", started);
    ctx.metrics
        .plan_writes
        .with_label_values(&["pool"])
        .observe(plan.writes() as f64);
    let wake_at = plan.wake_at;
    let started = std::time::Instant::now();
    let outcome = apply::apply(&ctx, &view, plan, now).await;
    phase("apply", started);
    // Plan the next pass from caches that show this pass's writes, never from older ones.
    let started = std::time::Instant::now();
    apply::caught_up(&ctx, &outcome.written).await;
    phase("catch_up", started);
    let wake = if outcome.conflicts > 0 {
        Duration::from_millis(200)
    } else {
        wake_at.map_or(Duration::from_secs(300), |at| {
            (at - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100)
        })
    };
    Ok(Action::requeue(wake))
}
