//! Billing periods: one bill per tenant per period. Periods are in UTC (FOCUS dates
//! are UTC too), half-open `[start, end)`, and labelled so a person can type them:
//! `2026-11` (monthly, the default), `2026-W48` (ISO week), `2026-11-23` (daily).

use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use serde::{Deserialize, Serialize};

use crate::error::{BillingError, Result};

/// How long a billing period is.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "camelCase")]
pub enum BillingCycle {
    /// Calendar months, UTC.
    #[default]
    Monthly,
    /// ISO weeks, Monday 00:00 UTC to the next Monday.
    Weekly,
    /// Calendar days, UTC.
    Daily,
}

impl BillingCycle {
    /// The name used in messages and in the ledger.
    pub fn name(self) -> &'static str {
        match self {
            BillingCycle::Monthly => "monthly",
            BillingCycle::Weekly => "weekly",
            BillingCycle::Daily => "daily",
        }
    }

    /// Parses a name written by [`BillingCycle::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "monthly" => Some(BillingCycle::Monthly),
            "weekly" => Some(BillingCycle::Weekly),
            "daily" => Some(BillingCycle::Daily),
            _ => None,
        }
    }
}

impl fmt::Display for BillingCycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One billing period `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    /// Inclusive start.
    pub start: DateTime<Utc>,
    /// Exclusive end.
    pub end: DateTime<Utc>,
    /// The cycle it belongs to.
    pub cycle: BillingCycle,
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date.and_time(chrono::NaiveTime::MIN))
}

fn first_of_month(year: i32, month: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(year, month, 1)
}

fn next_month(date: NaiveDate) -> Option<NaiveDate> {
    if date.month() == 12 {
        first_of_month(date.year() + 1, 1)
    } else {
        first_of_month(date.year(), date.month() + 1)
    }
}

impl Period {
    /// The period of `cycle` that contains instant `at`.
    pub fn containing(cycle: BillingCycle, at: DateTime<Utc>) -> Period {
        let date = at.date_naive();
        let (start, end) = match cycle {
            BillingCycle::Monthly => {
                let start = date.with_day(1).unwrap_or(date);
                (start, next_month(start).unwrap_or(NaiveDate::MAX))
            }
            BillingCycle::Weekly => {
                let start = date - Duration::days(i64::from(date.weekday().num_days_from_monday()));
                (start, start + Duration::days(7))
            }
            BillingCycle::Daily => (date, date + Duration::days(1)),
        };
        Period {
            start: midnight(start),
            end: midnight(end),
            cycle,
        }
    }

    /// Parses a label (`2026-11`, `2026-W48`, `2026-11-23`) for `cycle`.
    pub fn parse(cycle: BillingCycle, label: &str) -> Result<Period> {
        let invalid = || BillingError::InvalidPeriod {
            label: label.to_string(),
            cycle: cycle.name(),
            expected: match cycle {
                BillingCycle::Monthly => "YYYY-MM, e.g. 2026-11",
                BillingCycle::Weekly => "YYYY-Www (ISO week), e.g. 2026-W48",
                BillingCycle::Daily => "YYYY-MM-DD, e.g. 2026-11-23",
            },
        };
        let start = match cycle {
            BillingCycle::Monthly => {
                let (year, month) = label.split_once('-').ok_or_else(invalid)?;
                if year.len() != 4 || month.len() != 2 {
                    return Err(invalid());
                }
                let year: i32 = year.parse().map_err(|_| invalid())?;
                let month: u32 = month.parse().map_err(|_| invalid())?;
                first_of_month(year, month).ok_or_else(invalid)?
            }
            BillingCycle::Weekly => {
                let (year, week) = label.split_once("-W").ok_or_else(invalid)?;
                if year.len() != 4 || week.len() != 2 {
                    return Err(invalid());
                }
                let year: i32 = year.parse().map_err(|_| invalid())?;
                let week: u32 = week.parse().map_err(|_| invalid())?;
                NaiveDate::from_isoywd_opt(year, week, Weekday::Mon).ok_or_else(invalid)?
            }
            BillingCycle::Daily => {
                if label.len() != 10 {
                    return Err(invalid());
                }
                NaiveDate::parse_from_str(label, "%Y-%m-%d").map_err(|_| invalid())?
            }
        };
        Ok(Period::containing(cycle, midnight(start)))
    }

    /// The label a person types: `2026-11`, `2026-W48` or `2026-11-23`.
    pub fn label(&self) -> String {
        match self.cycle {
            BillingCycle::Monthly => self.start.format("%Y-%m").to_string(),
            BillingCycle::Weekly => self.start.format("%G-W%V").to_string(),
            BillingCycle::Daily => self.start.format("%Y-%m-%d").to_string(),
        }
    }

    /// The period right after this one.
    pub fn next(&self) -> Period {
        Period::containing(self.cycle, self.end)
    }

    /// The period right before this one.
    pub fn previous(&self) -> Period {
        Period::containing(self.cycle, self.start - Duration::seconds(1))
    }

    /// Whether `at` lies in `[start, end)`.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn monthly_periods_are_calendar_months() {
        let p = Period::parse(BillingCycle::Monthly, "2026-11").unwrap();
        assert_eq!(p.start, t("2026-11-01T00:00:00Z"));
        assert_eq!(p.end, t("2026-12-01T00:00:00Z"));
        assert_eq!(p.label(), "2026-11");
        assert_eq!(p.next().label(), "2026-12");
        assert_eq!(p.next().next().label(), "2027-01");
        assert_eq!(p.previous().label(), "2026-10");
        assert_eq!(
            Period::containing(BillingCycle::Monthly, t("2026-12-31T23:59:59Z")).label(),
            "2026-12"
        );
    }

    #[test]
    fn weekly_and_daily_periods() {
        let w = Period::parse(BillingCycle::Weekly, "2026-W48").unwrap();
        assert_eq!(w.start, t("2026-11-23T00:00:00Z"));
        assert_eq!(w.end, t("2026-11-30T00:00:00Z"));
        assert_eq!(w.label(), "2026-W48");
        let d = Period::parse(BillingCycle::Daily, "2026-11-23").unwrap();
        assert_eq!(d.end, t("2026-11-24T00:00:00Z"));
        assert_eq!(d.previous().label(), "2026-11-22");
    }

    #[test]
    fn bad_labels_say_what_is_expected() {
        let err = Period::parse(BillingCycle::Monthly, "2026-13").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid period \"2026-13\" for a monthly cycle: expected YYYY-MM, e.g. 2026-11"
        );
        assert!(Period::parse(BillingCycle::Monthly, "2026-1").is_err());
        assert!(Period::parse(BillingCycle::Daily, "2026-11").is_err());
        assert!(Period::parse(BillingCycle::Weekly, "2026-W54").is_err());
    }
}
