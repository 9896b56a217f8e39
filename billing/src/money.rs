//! Currencies and amounts. Money is `rust_decimal::Decimal`, never a float, and an
//! amount never travels without its currency.

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{BillingError, Result};

/// ISO 4217 codes this crate accepts, with their number of minor-unit digits
/// (the exponent of the ISO table). Kept short on purpose: a code we do not list is
/// refused rather than guessed, since a wrong exponent mis-rounds every line.
pub const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("USD", 2),
    ("VND", 0),
    ("ZAR", 2),
];

/// A national currency by its ISO 4217 code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    minor_units: u32,
}

impl Currency {
    /// Looks a code up (upper case, three letters). `context` says where the code was
    /// found, for the error message.
    pub fn from_code(code: &str, context: &str) -> Result<Self> {
        CURRENCIES
            .iter()
            .find(|(known, _)| *known == code)
            .map(|&(code, minor_units)| Currency { code, minor_units })
            .ok_or_else(|| BillingError::UnknownCurrency {
                code: code.to_string(),
                context: context.to_string(),
            })
    }

    /// The three-letter code, e.g. `USD`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Digits after the decimal point of the currency's minor unit (2 for USD, 0 for JPY).
    pub fn minor_units(&self) -> u32 {
        self.minor_units
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::from_code(&code, "currency field").map_err(serde::de::Error::custom)
    }
}

/// An amount in a currency.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Money {
    /// The amount, exact.
    pub amount: Decimal,
    /// Its currency.
    pub currency: Currency,
}

impl Money {
    /// An amount in a currency.
    pub fn new(amount: Decimal, currency: Currency) -> Self {
        Money { amount, currency }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// Rounds a line total to `dp` decimal places, half away from zero (the rule printed
/// on most invoices), and gives the result exactly `dp` places, so that 36 prints as
/// `36.00` beside `5.25` wherever it is shown or stored. A negative zero never shows.
pub fn round_line(amount: Decimal, dp: u32) -> Decimal {
    let mut rounded = amount.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
    if rounded.is_zero() {
        rounded = Decimal::ZERO;
    }
    // `round_dp` only ever lowers the scale; raising it is exact (trailing zeros).
    rounded.rescale(dp);
    rounded
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn known_and_unknown_codes() {
        assert_eq!(Currency::from_code("USD", "t").unwrap().minor_units(), 2);
        assert_eq!(Currency::from_code("JPY", "t").unwrap().minor_units(), 0);
        assert_eq!(Currency::from_code("KWD", "t").unwrap().minor_units(), 3);
        let err = Currency::from_code("XYZ", "rate card acme@1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown currency \"XYZ\" in rate card acme@1: expected an ISO 4217 code such as USD or EUR"
        );
        assert!(Currency::from_code("usd", "t").is_err());
    }

    #[test]
    fn rounding_is_half_away_from_zero_and_never_negative_zero() {
        let d = |s| Decimal::from_str(s).unwrap();
        assert_eq!(round_line(d("1.005"), 2).to_string(), "1.01");
        assert_eq!(round_line(d("-1.005"), 2).to_string(), "-1.01");
        assert_eq!(round_line(d("1.0049999"), 2).to_string(), "1.00");
        assert_eq!(round_line(d("-0.001"), 2).to_string(), "0.00");
        assert_eq!(round_line(d("2.5"), 0).to_string(), "3");
        // Every result has exactly `dp` places, however few the amount had.
        assert_eq!(round_line(d("36"), 2).to_string(), "36.00");
        assert_eq!(round_line(d("86.4"), 2).to_string(), "86.40");
        assert_eq!(round_line(d("-3.1"), 3).to_string(), "-3.100");
        assert_eq!(round_line(d("0"), 2).to_string(), "0.00");
        assert_eq!(round_line(d("-0.0001"), 3).to_string(), "0.000");
        assert_eq!(round_line(d("216.0000"), 2).to_string(), "216.00");
    }
}
