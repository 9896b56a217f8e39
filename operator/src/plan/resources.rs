//! Amounts of capacity in whole integer units (millicores, bytes, GPUs), parsed from
//! Kubernetes quantity strings. Integer arithmetic keeps admission exact: a node either
//! covers a request or it does not, with no rounding in between.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// CPU, memory and GPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub gpus: i64,
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu_millis: 0,
        memory_bytes: 0,
        gpus: 0,
    };

    pub fn new(cpu_millis: i64, memory_bytes: i64, gpus: i64) -> Self {
        Resources {
            cpu_millis,
            memory_bytes,
            gpus,
        }
    }

    /// Parses Kubernetes quantities; a missing amount is zero.
    pub fn parse(
        cpu: Option<&str>,
        memory: Option<&str>,
        gpus: Option<&str>,
    ) -> Result<Self, QuantityError> {
        Ok(Resources {
            cpu_millis: cpu
                .map(|q| parse_quantity(q, Unit::Milli))
                .transpose()?
                .unwrap_or(0),
            memory_bytes: memory
                .map(|q| parse_quantity(q, Unit::Whole))
                .transpose()?
                .unwrap_or(0),
            gpus: gpus
                .map(|q| parse_quantity(q, Unit::Whole))
                .transpose()?
                .unwrap_or(0),
        })
    }

    /// Every dimension of `self` is at least that of `other`.
    pub fn covers(&self, other: &Resources) -> bool {
        self.cpu_millis >= other.cpu_millis
            && self.memory_bytes >= other.memory_bytes
            && self.gpus >= other.gpus
    }

    pub fn is_zero(&self) -> bool {
        *self == Resources::ZERO
    }

    /// What is left of `self` after `other`, never below zero in any dimension.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: (self.cpu_millis - other.cpu_millis).max(0),
            memory_bytes: (self.memory_bytes - other.memory_bytes).max(0),
            gpus: (self.gpus - other.gpus).max(0),
        }
    }

    /// The dimensions in which `self` falls short of `need`, by how much.
    pub fn shortfall(&self, need: &Resources) -> Resources {
        need.saturating_sub(self)
    }

    /// How much of `request` this amount covers, as the smallest fraction over the
    /// dimensions the request asks for (1.0 or more covers it).
    pub fn coverage_of(&self, request: &Resources) -> f64 {
        let ratio = |have: i64, need: i64| {
            if need > 0 {
                have as f64 / need as f64
            } else {
                f64::INFINITY
            }
        };
        ratio(self.cpu_millis, request.cpu_millis)
            .min(ratio(self.memory_bytes, request.memory_bytes))
            .min(ratio(self.gpus, request.gpus))
    }

    pub fn to_quantities(&self) -> (String, String, String) {
        (
            format_cpu(self.cpu_millis),
            format_bytes(self.memory_bytes),
            self.gpus.to_string(),
        )
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis + o.cpu_millis,
            memory_bytes: self.memory_bytes + o.memory_bytes,
            gpus: self.gpus + o.gpus,
        }
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, o: Resources) {
        *self = *self + o;
    }
}

impl Sub for Resources {
    type Output = Resources;
    fn sub(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis - o.cpu_millis,
            memory_bytes: self.memory_bytes - o.memory_bytes,
            gpus: self.gpus - o.gpus,
        }
    }
}

impl std::iter::Sum for Resources {
    fn sum<I: Iterator<Item = Resources>>(iter: I) -> Resources {
        iter.fold(Resources::ZERO, Add::add)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.cpu_millis != 0 {
            parts.push(format!("cpu {}", format_cpu(self.cpu_millis)));
        }
        if self.memory_bytes != 0 {
            parts.push(format!("memory {}", format_bytes(self.memory_bytes)));
        }
        if self.gpus != 0 {
            parts.push(format!("gpu {}", self.gpus));
        }
        if parts.is_empty() {
            parts.push("nothing".into());
        }
        write!(f, "{}", parts.join(", "))
    }
}

/// `2`, `1500m`.
pub fn format_cpu(millis: i64) -> String {
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// The largest binary suffix that divides the amount exactly: `64Gi`, `1536Mi`, `100`.
pub fn format_bytes(bytes: i64) -> String {
    for (suffix, factor) in [
        ("Ti", 1i64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes != 0 && bytes % factor == 0 {
            return format!("{}{suffix}", bytes / factor);
        }
    }
    bytes.to_string()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Thousandths (CPU in millicores).
    Milli,
    /// Whole units (bytes, GPUs); fractions round up, as Kubernetes does for requests.
    Whole,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{quantity:?} is not a Kubernetes quantity: {reason}")]
pub struct QuantityError {
    pub quantity: String,
    pub reason: &'static str,
}

/// Parses a Kubernetes quantity (`500m`, `2`, `1.5`, `64Gi`, `1e9`, `512M`) into whole
/// `unit`s, rounding fractions up.
pub fn parse_quantity(text: &str, unit: Unit) -> Result<i64, QuantityError> {
    let fail = |reason| QuantityError {
        quantity: text.to_string(),
        reason,
    };
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() {
        return Err(fail("it has no number"));
    }
    let value: Decimal = number
        .parse()
        .map_err(|_| fail("the number is malformed"))?;
    if value.is_sign_negative() && !value.is_zero() {
        return Err(fail("it is negative"));
    }
    let multiplier: Decimal = match suffix {
        "" => Decimal::ONE,
        "n" => Decimal::new(1, 9),
        "u" => Decimal::new(1, 6),
        "m" => Decimal::new(1, 3),
        "k" => Decimal::from(1_000u64),
        "M" => Decimal::from(1_000_000u64),
        "G" => Decimal::from(1_000_000_000u64),
        "T" => Decimal::from(1_000_000_000_000u64),
        "P" => Decimal::from(1_000_000_000_000_000u64),
        "E" => Decimal::from(1_000_000_000_000_000_000u64),
        "Ki" => Decimal::from(1u64 << 10),
        "Mi" => Decimal::from(1u64 << 20),
        "Gi" => Decimal::from(1u64 << 30),
        "Ti" => Decimal::from(1u64 << 40),
        "Pi" => Decimal::from(1u64 << 50),
        "Ei" => Decimal::from(1u64 << 60),
        s if s.starts_with(['e', 'E']) => {
            let exponent: u32 = s[1..]
                .parse()
                .map_err(|_| fail("the exponent is malformed"))?;
            if exponent > 18 {
                return Err(fail("the exponent is too large"));
            }
            Decimal::from(10u64.pow(exponent))
        }
        _ => {
            return Err(fail(
                "the suffix is not one of n u m k M G T P E Ki Mi Gi Ti Pi Ei",
            ));
        }
    };
    let scaled = value
        .checked_mul(multiplier)
        .and_then(|v| {
            if unit == Unit::Milli {
                v.checked_mul(Decimal::from(1000))
            } else {
                Some(v)
            }
        })
        .ok_or_else(|| fail("it is too large"))?;
    scaled
        .ceil()
        .to_i64()
        .ok_or_else(|| fail("it is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_parse_to_millicores() {
        for (text, millis) in [
            ("2", 2000),
            ("500m", 500),
            ("1.5", 1500),
            ("0.1", 100),
            ("128", 128_000),
            ("1k", 1_000_000),
        ] {
            assert_eq!(parse_quantity(text, Unit::Milli), Ok(millis), "{text}");
        }
        // Below a millicore rounds up, as the API server does for requests.
        assert_eq!(parse_quantity("1u", Unit::Milli), Ok(1));
    }

    #[test]
    fn memory_quantities_parse_to_bytes() {
        for (text, bytes) in [
            ("64Gi", 64i64 << 30),
            ("512Mi", 512 << 20),
            ("1e9", 1_000_000_000),
            ("1G", 1_000_000_000),
            ("1.5Gi", 3 << 29),
            ("100", 100),
        ] {
            assert_eq!(parse_quantity(text, Unit::Whole), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn malformed_quantities_say_why() {
        let err = |t| parse_quantity(t, Unit::Whole).err().map(|e| e.reason);
        assert_eq!(err("Gi"), Some("it has no number"));
        assert_eq!(
            err("12Qi"),
            Some("the suffix is not one of n u m k M G T P E Ki Mi Gi Ti Pi Ei")
        );
        assert_eq!(err("-1"), Some("it is negative"));
        assert_eq!(err("1.2.3"), Some("the number is malformed"));
        assert_eq!(err("1e99"), Some("the exponent is too large"));
        assert_eq!(err("99999999999Ei"), Some("it is too large"));
    }

    #[test]
    fn formatting_round_trips() {
        for millis in [0, 500, 1000, 1500, 128_000] {
            assert_eq!(parse_quantity(&format_cpu(millis), Unit::Milli), Ok(millis));
        }
        for bytes in [0, 100, 1 << 10, 3 << 29, 64 << 30, 5 << 40] {
            assert_eq!(parse_quantity(&format_bytes(bytes), Unit::Whole), Ok(bytes));
        }
    }

    #[test]
    fn covers_and_shortfall_work_per_dimension() {
        let node = Resources::new(16_000, 64 << 30, 0);
        assert!(node.covers(&Resources::new(16_000, 64 << 30, 0)));
        assert!(!node.covers(&Resources::new(1000, 1, 1)));
        assert_eq!(
            node.shortfall(&Resources::new(20_000, 1, 2)),
            Resources::new(4000, 0, 2)
        );
        assert_eq!(
            Resources::new(32_000, 0, 0).coverage_of(&Resources::new(16_000, 0, 0)),
            2.0
        );
    }
}
