//! Structured logs and Prometheus metrics, and the plain-HTTP server that exposes
//! `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Log lines as text for people, or JSON for log pipelines. `RUST_LOG` overrides the level.
pub fn init_logging(json: bool) {
    // kube's client builder logs every refused connection as an error; callers report
    // what matters themselves.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        builder.init();
    }
}

/// Every metric the operator exports, in one registry.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_seconds: HistogramVec,
    pub leases: IntGaugeVec,
    pub pool_nodes: IntGaugeVec,
    pub writes: IntCounterVec,
    pub unreadable: IntCounterVec,
    pub plan_writes: HistogramVec,
    pub pass_seconds: HistogramVec,
    /// Time the webhook takes to answer the API server, by path.
    pub webhook_seconds: HistogramVec,
    pub facts_pending: prometheus::IntGauge,
    pub facts_written: prometheus::IntCounter,
    pub meter_refused: IntCounterVec,
    pub ledger_seconds: prometheus::Histogram,
    pub ledger_errors: prometheus::IntCounter,
    pub meter_last_success: prometheus::IntGauge,
    pub billed_seconds: IntGaugeVec,
    pub billed_amount: prometheus::GaugeVec,
    pub leader: prometheus::IntGauge,
    pub confined: prometheus::IntGauge,
    pub confinement_repairs: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("offpeak".into()), None)?;
        let reconciles = IntCounterVec::new(
            Opts::new("reconciles_total", "Reconciles run, by controller"),
            &["controller"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "reconcile_errors_total",
                "Reconciles that failed, by controller and error kind",
            ),
            &["controller", "error"],
        )?;
        let reconcile_seconds = HistogramVec::new(
            HistogramOpts::new(
                "reconcile_duration_seconds",
                "How long reconciles take, by controller",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["controller"],
        )?;
        let leases = IntGaugeVec::new(
            Opts::new("leases", "Capacity leases by phase and class"),
            &["phase", "class"],
        )?;
        let pool_nodes = IntGaugeVec::new(
            Opts::new(
                "pool_nodes",
                "Nodes per pool by state (total, lendable, lent, headroom)",
            ),
            &["pool", "state"],
        )?;
        let writes = IntCounterVec::new(
            Opts::new(
                "writes_total",
                "Writes to the API server, by what was written and how it went (ok, conflict, error)",
            ),
            &["kind", "outcome"],
        )?;
        let unreadable = IntCounterVec::new(
            Opts::new(
                "unreadable_objects_total",
                "Changes to Offpeak objects that could not be read and were skipped, by kind",
            ),
            &["kind"],
        )?;
        let plan_writes = HistogramVec::new(
            HistogramOpts::new("plan_writes", "Writes planned by one pass, by controller").buckets(
                vec![0.0, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0],
            ),
            &["controller"],
        )?;
        let pass_seconds = HistogramVec::new(
            HistogramOpts::new(
                "pool_pass_seconds",
                "Time a pool pass spends observing, planning, applying and waiting for its writes to show in the caches",
            )
            .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0]),
            &["phase"],
        )?;
        registry.register(Box::new(pass_seconds.clone()))?;
        let webhook_seconds = HistogramVec::new(
            HistogramOpts::new(
                "webhook_duration_seconds",
                "Time the webhook takes to answer an admission review, by path",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
            ]),
            &["path"],
        )?;
        registry.register(Box::new(webhook_seconds.clone()))?;
        let facts_pending = prometheus::IntGauge::new(
            "facts_pending",
            "Billing facts recorded in the cluster and not yet in the ledger",
        )?;
        let facts_written = prometheus::IntCounter::new(
            "facts_written_total",
            "Billing facts appended to the ledger for the first time",
        )?;
        let meter_refused = IntCounterVec::new(
            Opts::new(
                "meter_refused_total",
                "Objects whose billing facts could not be derived or were refused by the ledger, by kind",
            ),
            &["kind"],
        )?;
        let ledger_seconds = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "ledger_write_seconds",
                "How long an append to the ledger takes",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
        )?;
        let ledger_errors = prometheus::IntCounter::new(
            "ledger_errors_total",
            "Times the ledger could not be reached or written",
        )?;
        let meter_last_success = prometheus::IntGauge::new(
            "meter_last_success_timestamp_seconds",
            "When the meter last wrote every pending fact (Unix seconds)",
        )?;
        let billed_seconds = IntGaugeVec::new(
            Opts::new(
                "billed_seconds",
                "Lease-seconds of CPU on each tenant's open bill",
            ),
            &["tenant"],
        )?;
        let billed_amount = prometheus::GaugeVec::new(
            Opts::new("billed_amount", "The total of each tenant's open bill"),
            &["tenant", "currency"],
        )?;
        let leader = prometheus::IntGauge::new("leader", "1 while this replica leads (writes)")?;
        let confined = prometheus::IntGauge::new(
            "confinement_in_place",
            "1 while every object that confines tenant pods is in place; 0: no lease is admitted",
        )?;
        let confinement_repairs = IntCounterVec::new(
            Opts::new(
                "confinement_repairs_total",
                "Confinement objects found missing or changed and applied again, by name",
            ),
            &["object"],
        )?;
        for metric in [
            Box::new(leader.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(confined.clone()),
            Box::new(confinement_repairs.clone()),
            Box::new(facts_pending.clone()),
            Box::new(facts_written.clone()),
            Box::new(meter_refused.clone()),
            Box::new(ledger_seconds.clone()),
            Box::new(ledger_errors.clone()),
            Box::new(meter_last_success.clone()),
            Box::new(billed_seconds.clone()),
            Box::new(billed_amount.clone()),
        ] {
            registry.register(metric)?;
        }
        registry.register(Box::new(writes.clone()))?;
        registry.register(Box::new(unreadable.clone()))?;
        registry.register(Box::new(plan_writes.clone()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_seconds.clone()))?;
        registry.register(Box::new(leases.clone()))?;
        registry.register(Box::new(pool_nodes.clone()))?;
        Ok(Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_seconds,
            leases,
            pool_nodes,
            writes,
            unreadable,
            plan_writes,
            pass_seconds,
            webhook_seconds,
            facts_pending,
            facts_written,
            meter_refused,
            ledger_seconds,
            ledger_errors,
            meter_last_success,
            billed_seconds,
            billed_amount,
            leader,
            confined,
            confinement_repairs,
        })
    }

    /// Counts one write of `kind` that ended in `outcome` (ok, conflict, error).
    pub fn write(&self, kind: &str, outcome: &str) {
        self.writes.with_label_values(&[kind, outcome]).inc();
    }

    /// Counts a reconcile and observes its duration when the guard drops.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.reconciles.with_label_values(&[controller]).inc();
        ReconcileTimer {
            metrics: self,
            controller,
            start: Instant::now(),
        }
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buffer) {
            return format!("# metrics could not be encoded: {e}\n");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconcile_seconds
            .with_label_values(&[self.controller])
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// Whether the operator has synced its caches and may be sent traffic.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the process ends.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Readiness,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State((m, _)): State<(Arc<Metrics>, Readiness)>| async move { m.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(
                |State((_, r)): State<(Arc<Metrics>, Readiness)>| async move {
                    if r.is_ready() {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches are not synced yet")
                    }
                },
            ),
        )
        .with_state((metrics, readiness));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics and health");
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_in_prometheus_text_format() {
        let m = Metrics::new().unwrap();
        {
            let _timer = m.reconcile("lease");
        }
        m.leases.with_label_values(&["Active", "Spot"]).set(3);
        m.reconcile_errors
            .with_label_values(&["lease", "Kube"])
            .inc();
        let text = m.render();
        assert!(
            text.contains("offpeak_reconciles_total{controller=\"lease\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("offpeak_leases{class=\"Spot\",phase=\"Active\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("offpeak_reconcile_duration_seconds_count{controller=\"lease\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("offpeak_reconcile_errors_total{controller=\"lease\",error=\"Kube\"} 1"),
            "{text}"
        );
    }
}
