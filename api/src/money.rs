//! Money: decimal strings with a currency, never floating point.
//!
//! Amounts are strings so that `4.50` stays `4.50` from the YAML a person writes to the
//! bill the operator computes. The precision a currency allows is checked with CEL
//! on the object holding both the amount and its currency, since one depends on the other.

use kube::core::{Reason, Rule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::{string, string_newtype, string_schema};

/// ISO 4217 currencies Offpeak bills in, with their minor-unit digits. The billing crate
/// keeps the same list: a currency it cannot round correctly is refused here, at `kubectl
/// apply`, rather than when the first bill is made.
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

/// The minor-unit digits of an ISO 4217 code Offpeak knows.
pub fn minor_units(code: &str) -> Option<u32> {
    CURRENCIES
        .iter()
        .find(|(known, _)| *known == code)
        .map(|&(_, digits)| digits)
}

/// A non-negative decimal amount: digits, optionally a point and 1 to 12 more digits
/// (`"4.50"`, `"0"`, `"1200"`). No sign, exponent, or leading zeros.
pub(crate) const MONEY: &str = "^(0|[1-9][0-9]{0,14})(\\.[0-9]{1,12})?$";
/// Like [`MONEY`], optionally negative (a correction or a credit on a bill).
pub(crate) const SIGNED_MONEY: &str = "^-?(0|[1-9][0-9]{0,14})(\\.[0-9]{1,12})?$";

/// A non-negative decimal amount of money as a string, e.g. `"4.50"`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(pub String);

string_newtype!(Money);
string_schema!(Money, "Money", string(MONEY, 28, &[]));

/// A decimal amount of money that may be negative, e.g. `"-12.00"` for a credit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SignedMoney(pub String);

string_newtype!(SignedMoney);
string_schema!(SignedMoney, "SignedMoney", string(SIGNED_MONEY, 29, &[]));

/// An ISO 4217 currency code, upper case (`USD`, `EUR`, `JPY`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Currency(pub String);

string_newtype!(Currency);
string_schema!(Currency, "Currency", {
    let mut schema = string("^[A-Z]{3}$", 3, &[]);
    schema.insert(
        "enum".into(),
        serde_json::Value::from(CURRENCIES.iter().map(|(code, _)| *code).collect::<Vec<_>>()),
    );
    schema
});

impl Currency {
    /// Its minor-unit digits (2 for USD, 0 for JPY), if Offpeak knows the code.
    pub fn minor_units(&self) -> Option<u32> {
        minor_units(&self.0)
    }
}

/// An amount with its currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Amount {
    /// The amount, a decimal string such as "12.50".
    pub amount: SignedMoney,
    /// ISO 4217 currency code of the amount, such as USD.
    pub currency: Currency,
}

/// CEL: the minor-unit digits of the currency code `currency` (a CEL expression).
pub(crate) fn minor_units_cel(currency: &str) -> String {
    let with = |digits: u32| {
        CURRENCIES
            .iter()
            .filter(|(_, d)| *d == digits)
            .map(|(code, _)| format!("'{code}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "({currency} in [{}] ? 0 : {currency} in [{}] ? 3 : 2)",
        with(0),
        with(3)
    )
}

/// CEL: the number of digits after the point of the decimal string `amount`.
pub(crate) fn decimals_cel(amount: &str) -> String {
    format!("({amount}.indexOf('.') < 0 ? 0 : size({amount}) - {amount}.indexOf('.') - 1)")
}

/// A rule, placed on the object that holds them, that the decimal string at
/// `self.<field>` has no more digits after the point than the currency at
/// `self.<currency>` allows, or than `self.<precision>` when that optional field is given
/// and set. `label` is how the message names the amount.
///
/// The message is static: the API server's cost estimator refuses a messageExpression
/// that formats the digits it counted (its string conversions are not bounded).
pub(crate) fn precision_rule(
    field: &str,
    currency: &str,
    precision: Option<&str>,
    label: &str,
) -> Rule {
    let amount = format!("self.{field}");
    let digits = decimals_cel(&amount);
    let minor = minor_units_cel(&format!("self.{currency}"));
    let codes = |digits: u32| {
        CURRENCIES
            .iter()
            .filter(|(_, d)| *d == digits)
            .map(|(code, _)| *code)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let currency_rule = format!(
        "the minor unit of its currency: 0 for {}, 3 for {}, 2 for the others",
        codes(0),
        codes(3)
    );
    let (allowed, what) = match precision {
        Some(p) => (
            format!("(has(self.{p}) ? self.{p} : {minor})"),
            format!("spec.{p} when set, otherwise {currency_rule}"),
        ),
        None => (minor, currency_rule),
    };
    Rule::new(format!(
        "!has({amount}) || !{amount}.matches('{MONEY_CEL}') || {digits} <= {allowed}"
    ))
    .message(format!("{label} has more decimal places than allowed: at most {what}").as_str())
    .field_path(format!(".{field}"))
    .reason(Reason::FieldValueInvalid)
}

/// [`SIGNED_MONEY`] without backslashes, to sit inside a CEL string literal.
const MONEY_CEL: &str = "^-?(0|[1-9][0-9]{0,14})([.][0-9]{1,12})?$";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_are_sorted_unique_iso_codes() {
        for pair in CURRENCIES.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
        }
        for (code, digits) in CURRENCIES {
            assert!(code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase()));
            assert!(*digits <= 3);
        }
        assert_eq!(minor_units("USD"), Some(2));
        assert_eq!(minor_units("JPY"), Some(0));
        assert_eq!(minor_units("KWD"), Some(3));
        assert_eq!(minor_units("XXX"), None);
    }
}
