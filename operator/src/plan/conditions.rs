//! Status conditions by the Kubernetes convention: `lastTransitionTime` moves only when a
//! condition's status flips, so the same state always writes the same bytes and a steady
//! cluster causes no writes.

use chrono::{DateTime, Utc};
use offpeak_api::{Condition, ConditionStatus};

use crate::observe::timestamp;

/// `conditions` with `type_` set to the given status, reason and message.
pub fn set(
    conditions: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let status = if status {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    let previous = conditions.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => timestamp(now),
    };
    let mut out: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != type_)
        .cloned()
        .collect();
    out.push(Condition {
        type_: type_.to_string(),
        status,
        observed_generation: generation,
        last_transition_time,
        reason: reason.to_string(),
        message: message.to_string(),
    });
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_flips() {
        let first = set(
            &[],
            "Admitted",
            false,
            "InsufficientCapacity",
            "short",
            Some(1),
            utc("2026-11-22T20:00:00Z"),
        );
        let again = set(
            &first,
            "Admitted",
            false,
            "Headroom",
            "capped",
            Some(1),
            utc("2026-11-22T20:05:00Z"),
        );
        assert_eq!(
            again[0].last_transition_time.as_str(),
            "2026-11-22T20:00:00Z"
        );
        assert_eq!(again[0].reason, "Headroom");
        let flipped = set(
            &again,
            "Admitted",
            true,
            "Admitted",
            "bound",
            Some(1),
            utc("2026-11-22T20:06:00Z"),
        );
        assert_eq!(
            flipped[0].last_transition_time.as_str(),
            "2026-11-22T20:06:00Z"
        );
        // The same state, the same bytes.
        assert_eq!(
            set(
                &flipped,
                "Admitted",
                true,
                "Admitted",
                "bound",
                Some(1),
                utc("2026-11-22T21:00:00Z")
            ),
            flipped
        );
    }
}
