//! Internal load that ebbs and flows: a day's curve of the company's own web tier,
//! compressed into the demo's run. Quiet at night (most of the pool idle, ready to lend),
//! a morning ramp that wants its machines back, a busy afternoon, an evening ebb.

use std::time::Duration;

/// Share of the general pool's pods the web tier wants at each simulated hour (0 to 24),
/// as (hour, share) points joined by straight lines.
const CURVE: &[(f64, f64)] = &[
    (0.0, 0.10),
    (6.0, 0.10),
    (9.0, 0.80),
    (13.0, 0.90),
    (17.0, 0.85),
    (20.0, 0.30),
    (22.0, 0.12),
    (24.0, 0.10),
];

/// The demo's clock: one simulated day lasts `day` of real time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub day: Duration,
}

impl Clock {
    /// The simulated hour of the day, 0 to 24, `elapsed` into the run.
    pub fn hour(&self, elapsed: Duration) -> f64 {
        let day = self.day.as_secs_f64().max(1.0);
        (elapsed.as_secs_f64() % day) / day * 24.0
    }

    /// Simulated hours since the start (past 24 on a run longer than a day).
    pub fn hour_of(&self, elapsed: Duration) -> f64 {
        elapsed.as_secs_f64() / self.day.as_secs_f64().max(1.0) * 24.0
    }

    /// `HH:MM` of the simulated day.
    pub fn label(&self, elapsed: Duration) -> String {
        let hour = self.hour(elapsed);
        format!("{:02}:{:02}", hour as u32, ((hour.fract()) * 60.0) as u32)
    }
}

/// How many web pods the company runs at `hour`, of `capacity` pods the pool holds.
pub fn web_replicas(hour: f64, capacity: usize) -> i32 {
    let hour = hour.rem_euclid(24.0);
    let share = CURVE
        .windows(2)
        .find(|w| hour >= w[0].0 && hour <= w[1].0)
        .map(|w| {
            let (a, b) = (w[0], w[1]);
            a.1 + (b.1 - a.1) * (hour - a.0) / (b.0 - a.0)
        })
        .unwrap_or(CURVE[0].1);
    (share * capacity as f64).round() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_is_quiet_at_night_and_busy_in_the_afternoon() {
        assert_eq!(web_replicas(3.0, 160), 16);
        assert_eq!(web_replicas(13.0, 160), 144);
        assert_eq!(web_replicas(7.5, 160), 72, "halfway up the morning ramp");
        let clock = Clock {
            day: Duration::from_secs(300),
        };
        assert_eq!(clock.label(Duration::from_secs(150)), "12:00");
        assert_eq!(clock.hour(Duration::from_secs(375)), 6.0, "the next day");
    }
}
