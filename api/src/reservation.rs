//! `PeakReservation`: a window of time in which some or all of a pool stays internal.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::names::Name;
use crate::pool::Share;
use crate::time_zone::TimeZone;
use crate::units::{LocalTime, Timestamp};

/// Keeps some or all of a pool internal during a one-off window ("Nov 20 – Dec 2: pool web
/// 100 % internal") or a weekly recurring one ("weekdays 08:00–20:00 Europe/Berlin: keep
/// 70 %"). Spot leases are reclaimed early enough that their notice runs out when the
/// window starts; Reserved leases are admitted only if they fit around every window.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "offpeak.dev",
    version = "v1alpha1",
    kind = "PeakReservation",
    plural = "peakreservations",
    status = "PeakReservationStatus",
    derive = "PartialEq",
    shortname = "peak",
    category = "offpeak",
    doc = "A one-off or weekly window in which some or all of a capacity pool is kept for internal use.",
    printcolumn(name = "Pool", type_ = "string", json_path = ".spec.pool"),
    printcolumn(name = "Active", type_ = "boolean", json_path = ".status.active"),
    printcolumn(name = "Next Start", type_ = "string", json_path = ".status.nextStart"),
    printcolumn(name = "Next End", type_ = "string", json_path = ".status.nextEnd"),
    printcolumn(name = "Holds", type_ = "integer", json_path = ".status.nodesHeld"),
    printcolumn(
        name = "Zone",
        type_ = "string",
        json_path = ".spec.timeZone",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("has(self.window) != has(self.recurring)")
        .message("set exactly one of spec.window (a one-off start and end) or spec.recurring (days of the week with local start and end times)"),
    validation = Rule::new("!has(self.recurring) || has(self.timeZone)")
        .message("spec.timeZone is required with spec.recurring: the IANA time zone of its local times, such as Europe/Berlin")
        .field_path(".timeZone")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.validFrom) || !has(self.validUntil) || self.validUntil > self.validFrom")
        .message("spec.validUntil must be after spec.validFrom")
        .field_path(".validUntil"),
)]
#[serde(rename_all = "camelCase")]
pub struct PeakReservationSpec {
    /// Name of the CapacityPool the reservation keeps internal.
    pub pool: Name,
    /// How much of the pool stays internal during the window: percent (0 to 100, 100 keeps
    /// the whole pool) or a number of nodes. Exactly one.
    pub keep: Share,
    /// A one-off window, from start to end. Set this or recurring, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// A weekly window in local time. Set this or window, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurring: Option<Recurring>,
    /// IANA time zone of recurring's local times, such as Europe/Berlin; required with
    /// recurring. Daylight-saving changes keep the local wall-clock times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<TimeZone>,
    /// First instant the reservation applies (RFC 3339); from creation when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<Timestamp>,
    /// First instant it no longer applies (RFC 3339); for ever when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Timestamp>,
}

/// A one-off window.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.end > self.start")
    .message("spec.window.end must be after spec.window.start")
    .field_path(".end"))]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// When the window starts, RFC 3339 with an offset, such as 2026-11-20T00:00:00+01:00.
    pub start: Timestamp,
    /// When it ends, after start.
    pub end: Timestamp,
}

/// A weekly window: on each listed day, from startTime to endTime local time. An endTime
/// earlier than startTime runs overnight into the next day.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.startTime != self.endTime")
    .message("spec.recurring.endTime must differ from startTime (an endTime earlier than startTime runs overnight; for all day use 00:00 to 23:59)")
    .field_path(".endTime"))]
#[serde(rename_all = "camelCase")]
pub struct Recurring {
    /// Days of the week the window starts on, each at most once, such as [Monday, Tuesday,
    /// Wednesday, Thursday, Friday].
    #[schemars(length(min = 1, max = 7), extend("x-kubernetes-list-type" = "set"))]
    pub days: Vec<Weekday>,
    /// Local start time, 24-hour HH:MM, such as 08:00.
    pub start_time: LocalTime,
    /// Local end time, 24-hour HH:MM, such as 20:00.
    pub end_time: LocalTime,
}

/// A day of the week.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// What the operator reports about a reservation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeakReservationStatus {
    /// Whether a window is in force now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// When the next (or current) window starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_start: Option<Timestamp>,
    /// When that window ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_end: Option<Timestamp>,
    /// How many of the pool's nodes the reservation keeps internal during its windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub nodes_held: Option<i32>,
    /// Ready and the like, with reasons and messages for people.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}
