//! The reservation calendar: which stretches of time a `PeakReservation` keeps capacity
//! internal, as UTC intervals. Needed for Reserved admission (every window in a lease's
//! term) and for reclaim (the next window's start).
//!
//! Recurring windows are local times in an IANA zone. Across daylight-saving changes a
//! window keeps its local wall-clock times: a start that falls in the spring-forward gap
//! moves to the first valid minute after it, and an ambiguous autumn time starts at its
//! first occurrence and ends at its last, so a window is never shortened. A window whose
//! end time is not after its start runs overnight into the next day.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;

/// A half-open UTC interval `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Interval {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Interval { start, end }
    }

    pub fn overlaps(&self, other: &Interval) -> bool {
        self.start < other.end && other.start < self.end
    }

    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }

    fn clip(&self, to: &Interval) -> Option<Interval> {
        let start = self.start.max(to.start);
        let end = self.end.min(to.end);
        (start < end).then_some(Interval { start, end })
    }
}

/// When a reservation applies.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// One window.
    Once {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    /// Every listed weekday, from `start` to `end` local time in `zone`.
    Recurring {
        days: Vec<Weekday>,
        start: NaiveTime,
        end: NaiveTime,
        zone: Tz,
    },
}

/// A reservation's schedule and the instants it is valid between: windows are cut to
/// `[valid_from, valid_until)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Calendar {
    pub schedule: Schedule,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
}

impl Calendar {
    /// The reservation's windows that overlap `range`, clipped to it, sorted and merged.
    pub fn windows(&self, range: Interval) -> Vec<Interval> {
        self.whole_windows(range)
            .into_iter()
            .filter_map(|w| w.clip(&range))
            .collect()
    }

    /// The reservation's windows that overlap `range`, whole (cut only to the reservation's
    /// validity), sorted and merged.
    pub fn whole_windows(&self, range: Interval) -> Vec<Interval> {
        let mut windows: Vec<Interval> = match &self.schedule {
            Schedule::Once { start, end } => {
                let valid = self.validity();
                Interval::new(*start, *end)
                    .clip(&valid)
                    .filter(|w| w.overlaps(&range))
                    .into_iter()
                    .collect()
            }
            Schedule::Recurring {
                days,
                start,
                end,
                zone,
            } => {
                let valid = self.validity();
                // A window that starts the day before `range` may run into it overnight.
                let first = range.start.with_timezone(zone).date_naive() - Duration::days(1);
                let last = range.end.with_timezone(zone).date_naive();
                first
                    .iter_days()
                    .take_while(|d| *d <= last)
                    .filter(|d| days.contains(&d.weekday()))
                    .filter_map(|date| {
                        let start_at = earliest(zone, date.and_time(*start));
                        let end_date = if end > start {
                            date
                        } else {
                            date + Duration::days(1)
                        };
                        let end_at = latest(zone, end_date.and_time(*end));
                        Interval::new(start_at, end_at)
                            .clip(&valid)
                            .filter(|w| w.overlaps(&range))
                    })
                    .collect()
            }
        };
        windows.sort();
        merge(windows)
    }

    /// The first window that starts at or after `at`, looking `horizon` ahead. A window
    /// already under way at `at` does not count.
    pub fn next_start(&self, at: DateTime<Utc>, horizon: Duration) -> Option<DateTime<Utc>> {
        // Look from well before `at`, so that clipping never makes a running window seem
        // to start at `at`.
        self.windows(Interval::new(at - Duration::days(2), at + horizon))
            .into_iter()
            .map(|w| w.start)
            .find(|s| *s >= at)
    }

    fn validity(&self) -> Interval {
        Interval::new(
            self.valid_from.unwrap_or(DateTime::<Utc>::MIN_UTC),
            self.valid_until.unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }
}

/// The first instant a local time names; in a spring-forward gap, the first valid minute after.
fn earliest(zone: &Tz, local: NaiveDateTime) -> DateTime<Utc> {
    resolve(zone, local, true)
}

/// The last instant a local time names; in a gap, the first valid minute after.
fn latest(zone: &Tz, local: NaiveDateTime) -> DateTime<Utc> {
    resolve(zone, local, false)
}

fn resolve(zone: &Tz, local: NaiveDateTime, first: bool) -> DateTime<Utc> {
    let mut probe = local;
    // Gaps are at most a few hours in every zone; step minute by minute to leave them.
    for _ in 0..(24 * 60) {
        match zone.from_local_datetime(&probe) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(a, b) => {
                return if first { a.min(b) } else { a.max(b) }.with_timezone(&Utc);
            }
            LocalResult::None => probe += Duration::minutes(1),
        }
    }
    // No zone has a day-long gap; fall back to reading the time as UTC.
    Utc.from_utc_datetime(&local)
}

fn merge(sorted: Vec<Interval>) -> Vec<Interval> {
    let mut merged: Vec<Interval> = Vec::with_capacity(sorted.len());
    for w in sorted {
        match merged.last_mut() {
            Some(last) if w.start <= last.end => last.end = last.end.max(w.end),
            _ => merged.push(w),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn range(a: &str, b: &str) -> Interval {
        Interval::new(utc(a), utc(b))
    }

    fn weekdays_8_to_20_berlin() -> Calendar {
        Calendar {
            schedule: Schedule::Recurring {
                days: vec![
                    Weekday::Mon,
                    Weekday::Tue,
                    Weekday::Wed,
                    Weekday::Thu,
                    Weekday::Fri,
                ],
                start: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
                end: NaiveTime::from_hms_opt(20, 0, 0).unwrap(),
                zone: chrono_tz::Europe::Berlin,
            },
            valid_from: None,
            valid_until: None,
        }
    }

    #[test]
    fn a_one_off_window_is_clipped_to_the_range() {
        let cal = Calendar {
            schedule: Schedule::Once {
                start: utc("2026-11-20T00:00:00Z"),
                end: utc("2026-12-02T00:00:00Z"),
            },
            valid_from: None,
            valid_until: None,
        };
        assert_eq!(
            cal.windows(range("2026-11-19T12:00:00Z", "2026-11-21T00:00:00Z")),
            vec![range("2026-11-20T00:00:00Z", "2026-11-21T00:00:00Z")]
        );
        assert!(
            cal.windows(range("2026-12-02T00:00:00Z", "2026-12-03T00:00:00Z"))
                .is_empty()
        );
    }

    #[test]
    fn weekday_windows_follow_the_local_clock() {
        // Fri 2026-11-20 to Tue 2026-11-24 (CET, UTC+1): Fri, Mon and Tue windows.
        let windows = weekdays_8_to_20_berlin()
            .windows(range("2026-11-20T00:00:00Z", "2026-11-25T00:00:00Z"));
        assert_eq!(
            windows,
            vec![
                range("2026-11-20T07:00:00Z", "2026-11-20T19:00:00Z"),
                range("2026-11-23T07:00:00Z", "2026-11-23T19:00:00Z"),
                range("2026-11-24T07:00:00Z", "2026-11-24T19:00:00Z"),
            ]
        );
    }

    #[test]
    fn summer_time_moves_the_utc_window() {
        // Mon 2026-06-15, CEST (UTC+2).
        let windows = weekdays_8_to_20_berlin()
            .windows(range("2026-06-15T00:00:00Z", "2026-06-16T00:00:00Z"));
        assert_eq!(
            windows,
            vec![range("2026-06-15T06:00:00Z", "2026-06-15T18:00:00Z")]
        );
    }

    #[test]
    fn a_start_in_the_spring_gap_moves_to_the_first_valid_minute() {
        // Berlin skips 02:00-03:00 on Sun 2026-03-29.
        let cal = Calendar {
            schedule: Schedule::Recurring {
                days: vec![Weekday::Sun],
                start: NaiveTime::from_hms_opt(2, 30, 0).unwrap(),
                end: NaiveTime::from_hms_opt(6, 0, 0).unwrap(),
                zone: chrono_tz::Europe::Berlin,
            },
            valid_from: None,
            valid_until: None,
        };
        let windows = cal.windows(range("2026-03-29T00:00:00Z", "2026-03-30T00:00:00Z"));
        // 03:00 CEST = 01:00Z; 06:00 CEST = 04:00Z.
        assert_eq!(
            windows,
            vec![range("2026-03-29T01:00:00Z", "2026-03-29T04:00:00Z")]
        );
    }

    #[test]
    fn an_ambiguous_autumn_end_takes_its_last_occurrence() {
        // Berlin repeats 02:00-03:00 on Sun 2026-10-25.
        let cal = Calendar {
            schedule: Schedule::Recurring {
                days: vec![Weekday::Sun],
                start: NaiveTime::from_hms_opt(0, 0, 0).unwrap(),
                end: NaiveTime::from_hms_opt(2, 30, 0).unwrap(),
                zone: chrono_tz::Europe::Berlin,
            },
            valid_from: None,
            valid_until: None,
        };
        let windows = cal.windows(range("2026-10-24T00:00:00Z", "2026-10-26T00:00:00Z"));
        // 00:00 CEST = 22:00Z the day before; the second 02:30 (CET) = 01:30Z.
        assert_eq!(
            windows,
            vec![range("2026-10-24T22:00:00Z", "2026-10-25T01:30:00Z")]
        );
    }

    fn nightly_berlin(start: u32, end: u32) -> Calendar {
        Calendar {
            schedule: Schedule::Recurring {
                days: vec![Weekday::Sun],
                start: NaiveTime::from_hms_opt(start, 0, 0).unwrap(),
                end: NaiveTime::from_hms_opt(end, 0, 0).unwrap(),
                zone: chrono_tz::Europe::Berlin,
            },
            valid_from: None,
            valid_until: None,
        }
    }

    #[test]
    fn a_window_on_the_night_clocks_go_forward_is_as_short_as_the_wall_clock_says() {
        // 01:00 to 05:00 on Sun 2026-03-29: the clock skips 02:00-03:00, so three hours.
        let windows =
            nightly_berlin(1, 5).windows(range("2026-03-28T12:00:00Z", "2026-03-30T00:00:00Z"));
        assert_eq!(
            windows,
            vec![range("2026-03-29T00:00:00Z", "2026-03-29T03:00:00Z")]
        );
        assert_eq!(windows[0].end - windows[0].start, Duration::hours(3));
    }

    #[test]
    fn a_window_on_the_night_clocks_go_back_is_as_long_as_the_wall_clock_says() {
        // 01:00 to 05:00 on Sun 2026-10-25: the clock repeats 02:00-03:00, so five hours.
        let windows =
            nightly_berlin(1, 5).windows(range("2026-10-24T12:00:00Z", "2026-10-26T00:00:00Z"));
        assert_eq!(
            windows,
            vec![range("2026-10-24T23:00:00Z", "2026-10-25T04:00:00Z")]
        );
        assert_eq!(windows[0].end - windows[0].start, Duration::hours(5));
        // A start inside the repeated hour takes its first occurrence (the window is never
        // shortened): 02:30 CEST = 00:30Z.
        let repeated = Calendar {
            schedule: Schedule::Recurring {
                days: vec![Weekday::Sun],
                start: NaiveTime::from_hms_opt(2, 30, 0).unwrap(),
                end: NaiveTime::from_hms_opt(4, 0, 0).unwrap(),
                zone: chrono_tz::Europe::Berlin,
            },
            valid_from: None,
            valid_until: None,
        };
        assert_eq!(
            repeated.windows(range("2026-10-24T12:00:00Z", "2026-10-26T00:00:00Z")),
            vec![range("2026-10-25T00:30:00Z", "2026-10-25T03:00:00Z")]
        );
    }

    #[test]
    fn overnight_windows_run_into_the_next_day_and_merge() {
        let cal = Calendar {
            schedule: Schedule::Recurring {
                days: vec![Weekday::Mon, Weekday::Tue],
                start: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
                end: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
                zone: chrono_tz::UTC,
            },
            valid_from: None,
            valid_until: None,
        };
        // Mon 22:00 to Tue 22:00, and Tue 22:00 to Wed 22:00: one merged stretch.
        let windows = cal.windows(range("2026-11-23T00:00:00Z", "2026-11-26T00:00:00Z"));
        assert_eq!(
            windows,
            vec![range("2026-11-23T22:00:00Z", "2026-11-25T22:00:00Z")]
        );
    }

    #[test]
    fn validity_dates_bound_recurring_windows() {
        let mut cal = weekdays_8_to_20_berlin();
        cal.valid_from = Some(utc("2026-11-23T00:00:00+01:00"));
        cal.valid_until = Some(utc("2026-11-24T00:00:00+01:00"));
        let windows = cal.windows(range("2026-11-20T00:00:00Z", "2026-11-28T00:00:00Z"));
        assert_eq!(
            windows,
            vec![range("2026-11-23T07:00:00Z", "2026-11-23T19:00:00Z")]
        );
    }

    #[test]
    fn next_start_looks_ahead() {
        let cal = weekdays_8_to_20_berlin();
        // Saturday noon: the next window is Monday 08:00 CET.
        assert_eq!(
            cal.next_start(utc("2026-11-21T12:00:00Z"), Duration::days(7)),
            Some(utc("2026-11-23T07:00:00Z"))
        );
        // Inside a window the current one does not count as starting.
        assert_eq!(
            cal.next_start(utc("2026-11-23T12:00:00Z"), Duration::days(1)),
            Some(utc("2026-11-24T07:00:00Z"))
        );
    }
}
