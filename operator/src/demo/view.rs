//! The live view: redrawn in place on a terminal, plain lines otherwise. Time (real and
//! simulated), each pool's nodes as internal / leased / idle, the spot price, leases by
//! phase, and the last few things Offpeak did, in words.

use std::fmt::Write as _;
use std::time::Duration;

use super::load::Clock;
use super::record::Record;

/// A frame of the view.
pub fn frame(record: &Record, elapsed: Duration, run: Duration, clock: Clock, web: i32) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "offpeak demo   {:>4}s of {}s   simulated time {}   internal web pods: {web}",
        elapsed.as_secs(),
        run.as_secs(),
        clock.label(elapsed)
    );
    let _ = writeln!(out);
    if let Some(sample) = record.samples.last() {
        for (pool, c) in &sample.pools {
            let total = c.internal + c.leased + c.idle;
            let bar: String = std::iter::repeat_n('#', c.internal)
                .chain(std::iter::repeat_n('=', c.leased))
                .chain(std::iter::repeat_n('.', c.idle))
                .collect();
            let _ = writeln!(
                out,
                "  {pool:<8} {bar:<w$}  internal {:>2}  leased {:>2}  idle {:>2}  spot {}/core-h",
                c.internal,
                c.leased,
                c.idle,
                c.spot_per_core_hour.as_deref().unwrap_or("-"),
                w = total.max(10)
            );
        }
        let _ = writeln!(out, "           # internal   = leased   . idle");
    }
    let phases: Vec<String> = record
        .phases
        .iter()
        .map(|(p, n)| format!("{p} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "\n  leases: {}",
        if phases.is_empty() {
            "none yet".into()
        } else {
            phases.join(", ")
        }
    );
    let _ = writeln!(out, "\n  lately:");
    for (at, text) in record
        .events
        .iter()
        .rev()
        .take(6)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let _ = writeln!(out, "    {} {}", at.format("%H:%M:%S"), shorten(text, 140));
    }
    out
}

/// One line for a log: the same, when output is not a terminal.
pub fn line(record: &Record, elapsed: Duration, clock: Clock, web: i32) -> String {
    let pools: Vec<String> = record
        .samples
        .last()
        .map(|s| {
            s.pools
                .iter()
                .map(|(p, c)| {
                    format!(
                        "{p} internal {} leased {} idle {} spot {}",
                        c.internal,
                        c.leased,
                        c.idle,
                        c.spot_per_core_hour.as_deref().unwrap_or("-")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "[{:>4}s {}] web {web}; {}",
        elapsed.as_secs(),
        clock.label(elapsed),
        pools.join("; ")
    )
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max - 1).collect();
    format!("{cut}…")
}
