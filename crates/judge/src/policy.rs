//! What counts as a bad release, and how sure the judge must be: the policy a user writes.
//! Parsing of human units ("1%", "90s") lives here too, so config files and backtests agree.

use serde::{Deserialize, Deserializer, Serialize};

/// The judge's policy. Every field has a default; a config sets only what it changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Error-rate increase over the baseline that makes a release bad ("1%" = one point).
    pub error_rate_increase: Fraction,
    /// Error-rate increase small enough to be noise, never a fault ("0.3%").
    pub error_rate_increase_tolerated: Fraction,
    /// p95 latency over the baseline's by this factor makes a release bad.
    pub p95_ratio: f64,
    /// p95 latency ratio small enough to be noise, never a fault.
    pub p95_ratio_tolerated: f64,
    /// After a deploy, extra errors and latency this long are warm-up, not a fault
    /// (only a gross failure is acted on sooner).
    pub warmup: Seconds,
    /// Episodes of extra errors or latency up to this long that end by themselves are
    /// transients: no single one of them can trigger a rollback.
    pub transient: Seconds,
    /// Strength of evidence needed to roll back, in nats (natural log of the likelihood
    /// ratio); 10 means the data are e^10 (about 22 000) times likelier under "bad".
    pub evidence_nats: f64,
    /// A gross failure: the candidate's error rate above the baseline's by at least this
    /// much (with 95 % confidence, and at least `gross_min_errors` failures) rolls back at once,
    /// warm-up or not.
    pub gross_error_rate_increase: Fraction,
    /// At least this many failed requests before a gross failure is declared.
    pub gross_min_errors: u64,
    /// How far back the judge looks, at most.
    pub lookback: Seconds,
    /// Absolute limits, off unless set: error rate over `limits_for` above this rolls back.
    /// They ignore the baseline, so they also fire on outages that hit every release.
    pub max_error_rate: Option<Fraction>,
    /// Absolute limit on the p95 latency over `limits_for` ("2s", "800ms").
    pub max_p95: Option<Millis>,
    /// Absolute floor on availability (1 - error rate) over `limits_for`.
    pub min_availability: Option<Fraction>,
    /// How long an absolute limit must be exceeded (`for:` is accepted too).
    #[serde(alias = "for")]
    pub limits_for: Seconds,
    /// Absolute limits need at least this many requests in `limits_for`.
    pub min_requests: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            error_rate_increase: Fraction(0.01),
            error_rate_increase_tolerated: Fraction(0.003),
            p95_ratio: 1.25,
            p95_ratio_tolerated: 1.08,
            warmup: Seconds(40),
            transient: Seconds(15),
            evidence_nats: 10.0,
            gross_error_rate_increase: Fraction(0.4),
            gross_min_errors: 5,
            lookback: Seconds(3600),
            max_error_rate: None,
            max_p95: None,
            min_availability: None,
            limits_for: Seconds(60),
            min_requests: 100,
        }
    }
}

impl Policy {
    /// Every problem with the policy, so a config reports them all at once.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, message: &str| {
            if !ok {
                problems.push(message.to_string());
            }
        };
        check(
            self.error_rate_increase_tolerated.0 < self.error_rate_increase.0,
            "error_rate_increase_tolerated must be below error_rate_increase",
        );
        check(
            self.error_rate_increase.0 > 0.0,
            "error_rate_increase must be above 0%",
        );
        check(
            1.0 <= self.p95_ratio_tolerated && self.p95_ratio_tolerated < self.p95_ratio,
            "p95_ratio_tolerated must be at least 1 and below p95_ratio",
        );
        check(
            self.evidence_nats >= 1.0,
            "evidence_nats must be at least 1",
        );
        check(
            self.gross_error_rate_increase.0 > self.error_rate_increase.0,
            "gross_error_rate_increase must be above error_rate_increase",
        );
        check(
            self.gross_min_errors >= 1,
            "gross_min_errors must be at least 1",
        );
        check(
            self.lookback.0 > self.transient.0,
            "lookback must be longer than transient",
        );
        check(self.limits_for.0 >= 1, "limits_for must be at least 1s");
        problems
    }
}

/// A fraction in [0, 1], written as a number (`0.05`) or a percentage (`"5%"`).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize)]
pub struct Fraction(pub f64);

impl Fraction {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let value = match text.strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
            None => text.parse::<f64>(),
        }
        .map_err(|_| format!("expected a fraction like 0.05 or \"5%\", got {text:?}"))?;
        Self::checked(value)
    }

    fn checked(value: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!(
                "expected a fraction between 0 and 1 (0% to 100%), got {value}"
            ))
        }
    }
}

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match NumberOrText::deserialize(deserializer)? {
            NumberOrText::Number(n) => Self::checked(n),
            NumberOrText::Text(t) => Self::parse(&t),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// A duration in whole seconds, written as a number of seconds or `"90s"`, `"5m"`, `"1h30m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Seconds(pub u64);

impl Seconds {
    /// Parses `"500ms"`, `"90s"`, `"5m"`, `"1h30m"` or a bare number of seconds;
    /// sub-second parts round up.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().parse::<u64>() {
            Ok(seconds) => Ok(Self(seconds)),
            Err(_) => parse_millis(text).map(|ms| Self(ms.div_ceil(1000))),
        }
    }
}

/// A duration in milliseconds, written as a number of milliseconds or `"800ms"`, `"2s"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Millis(pub u64);

impl Millis {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().parse::<u64>() {
            Ok(ms) => Ok(Self(ms)),
            Err(_) => parse_millis(text).map(Self),
        }
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        whole_or_text(deserializer, "milliseconds", Self, Self::parse)
    }
}

/// Milliseconds in `"500ms"`, `"90s"`, `"5m"`, `"1h30m"`. Written by hand to keep the judge
/// free of dependencies beyond serde.
fn parse_millis(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let invalid = || {
        format!("expected a duration like \"800ms\", \"90s\", \"5m\" or \"1h30m\", got {text:?}")
    };
    if text.is_empty() {
        return Err(invalid());
    }
    let mut millis: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        let value: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_millis = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(invalid()),
        };
        millis = value
            .checked_mul(unit_millis)
            .and_then(|m| millis.checked_add(m))
            .ok_or_else(invalid)?;
        rest = &rest[unit_len..];
    }
    Ok(millis)
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        whole_or_text(deserializer, "seconds", Self, Self::parse)
    }
}

/// A whole number of `unit`s, or text for `parse` ("90s").
fn whole_or_text<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    unit: &str,
    from_whole: fn(u64) -> T,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    match NumberOrText::deserialize(deserializer)? {
        NumberOrText::Number(n) if n >= 0.0 && n.fract() == 0.0 => Ok(from_whole(n as u64)),
        NumberOrText::Number(n) => Err(format!("expected whole {unit}, got {n}")),
        NumberOrText::Text(t) => parse(&t),
    }
    .map_err(serde::de::Error::custom)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(f64),
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_read_as_numbers_or_percentages() {
        assert_eq!(Fraction::parse("5%").unwrap(), Fraction(0.05));
        assert_eq!(Fraction::parse("0.3 %").unwrap().0, 0.003);
        assert_eq!(Fraction::parse("0.25").unwrap(), Fraction(0.25));
        assert!(Fraction::parse("150%").is_err());
        assert!(Fraction::parse("five").is_err());
    }

    #[test]
    fn durations_read_in_human_units() {
        assert_eq!(Seconds::parse("90").unwrap(), Seconds(90));
        assert_eq!(Seconds::parse("90s").unwrap(), Seconds(90));
        assert_eq!(Seconds::parse("1h30m").unwrap(), Seconds(5400));
        assert_eq!(Seconds::parse("1500ms").unwrap(), Seconds(2));
        assert_eq!(Millis::parse("1s500ms").unwrap(), Millis(1500));
        assert_eq!(Millis::parse("250").unwrap(), Millis(250));
        for bad in ["", "5 minutes", "m5", "1.5m", "-3s"] {
            assert!(Seconds::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn default_policy_has_no_problems_and_bad_one_lists_all() {
        assert!(Policy::default().problems().is_empty());
        let bad = Policy {
            error_rate_increase_tolerated: Fraction(0.02),
            p95_ratio_tolerated: 2.0,
            ..Policy::default()
        };
        assert_eq!(bad.problems().len(), 2, "{:?}", bad.problems());
    }
}
