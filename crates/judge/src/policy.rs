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
    pub warmup: Span,
    /// Episodes of extra errors or latency up to this long that end by themselves are
    /// transients: no single one of them can trigger a rollback.
    pub transient: Span,
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
    pub lookback: Span,
    /// Absolute limits, off unless set: error rate over `limits_for` above this rolls back.
    /// They ignore the baseline, so they also fire on outages that hit every release.
    pub max_error_rate: Option<Fraction>,
    /// Absolute limit on the p95 latency over `limits_for` ("2s", "800ms"; a bare number is
    /// seconds).
    pub max_p95: Option<Span>,
    /// Absolute floor on availability (1 - error rate) over `limits_for`.
    pub min_availability: Option<Fraction>,
    /// How long an absolute limit must be exceeded (`for:` is accepted too).
    #[serde(alias = "for")]
    pub limits_for: Span,
    /// Absolute limits need at least this many requests in `limits_for`.
    pub min_requests: u64,
    /// Absolute limit on the CPU of the release's instances, in cores, over `limits_for`.
    pub max_cpu: Option<f64>,
    /// Absolute limit on the memory of the release's instances over `limits_for` ("512MiB",
    /// "2GB"; a bare number is bytes).
    pub max_memory: Option<Bytes>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            error_rate_increase: Fraction(0.01),
            error_rate_increase_tolerated: Fraction(0.003),
            p95_ratio: 1.25,
            p95_ratio_tolerated: 1.08,
            warmup: Span::from_secs(40),
            transient: Span::from_secs(15),
            evidence_nats: 10.0,
            gross_error_rate_increase: Fraction(0.4),
            gross_min_errors: 5,
            lookback: Span::from_secs(3600),
            max_error_rate: None,
            max_p95: None,
            min_availability: None,
            limits_for: Span::from_secs(60),
            min_requests: 100,
            max_cpu: None,
            max_memory: None,
        }
    }
}

impl Policy {
    /// Every problem with the policy, each with the keys it is about (the first is the
    /// likelier culprit), so a config reports them all at once, where they are.
    pub fn problems(&self) -> Vec<(&'static [&'static str], String)> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, keys: &'static [&'static str], message: &str| {
            if !ok {
                problems.push((keys, message.to_string()));
            }
        };
        check(
            self.error_rate_increase_tolerated.0 < self.error_rate_increase.0,
            &["error_rate_increase_tolerated", "error_rate_increase"],
            "error_rate_increase_tolerated must be below error_rate_increase",
        );
        check(
            self.error_rate_increase.0 > 0.0,
            &["error_rate_increase"],
            "error_rate_increase must be above 0%",
        );
        check(
            1.0 <= self.p95_ratio_tolerated && self.p95_ratio_tolerated < self.p95_ratio,
            &["p95_ratio_tolerated", "p95_ratio"],
            "p95_ratio_tolerated must be at least 1 and below p95_ratio",
        );
        check(
            self.max_cpu.is_none_or(|cores| cores > 0.0),
            &["max_cpu"],
            "max_cpu must be above 0 cores",
        );
        check(
            self.evidence_nats >= 1.0,
            &["evidence_nats"],
            "evidence_nats must be at least 1",
        );
        check(
            self.gross_error_rate_increase.0 > self.error_rate_increase.0,
            &["gross_error_rate_increase", "error_rate_increase"],
            "gross_error_rate_increase must be above error_rate_increase",
        );
        check(
            self.gross_min_errors >= 1,
            &["gross_min_errors"],
            "gross_min_errors must be at least 1",
        );
        check(
            self.lookback.whole_seconds() > self.transient.whole_seconds(),
            &["lookback", "transient"],
            "lookback must be longer than transient",
        );
        check(
            self.limits_for.as_millis() >= 1000,
            &["limits_for"],
            "limits_for must be at least 1s",
        );
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

/// A length of time, kept in milliseconds: a bare number is seconds (`90`, `0.5`); text
/// gives the unit (`"300ms"`, `"90s"`, `"5m"`, `"1h30m"`, `"1.5s"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    millis: u64,
}

impl Span {
    pub const fn from_secs(seconds: u64) -> Self {
        Self {
            millis: seconds * 1000,
        }
    }

    pub const fn from_millis(millis: u64) -> Self {
        Self { millis }
    }

    pub fn as_millis(self) -> u64 {
        self.millis
    }

    pub fn as_secs_f64(self) -> f64 {
        self.millis as f64 / 1000.0
    }

    /// Whole seconds, rounded up: `t - deploy_at < span` holds for whole-second times
    /// exactly when `t - deploy_at < span.whole_seconds()`, so the judge's comparisons lose
    /// nothing by it.
    pub fn whole_seconds(self) -> i64 {
        self.millis.div_ceil(1000) as i64
    }

    pub fn std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.millis)
    }

    /// Parses `"300ms"`, `"90s"`, `"1.5s"`, `"5m"`, `"1h30m"`, `"2d"` or a bare number of
    /// seconds (`"90"`, `"0.5"`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        match text.parse::<f64>() {
            Ok(seconds) => Self::from_seconds_f64(seconds),
            Err(_) => parse_millis(text).map(Self::from_millis),
        }
    }

    fn from_seconds_f64(seconds: f64) -> Result<Self, String> {
        if (0.0..1e12).contains(&seconds) {
            Ok(Self::from_millis((seconds * 1000.0).round() as u64))
        } else {
            Err(format!(
                "expected a duration of at least 0 seconds, got {seconds}"
            ))
        }
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.millis.is_multiple_of(1000) {
            write!(f, "{}s", self.millis / 1000)
        } else {
            write!(f, "{}ms", self.millis)
        }
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match NumberOrText::deserialize(deserializer)? {
            NumberOrText::Number(seconds) => Self::from_seconds_f64(seconds),
            NumberOrText::Text(text) => Self::parse(&text),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// Milliseconds in `"500ms"`, `"1.5s"`, `"5m"`, `"1h30m"`. Written by hand to keep the
/// judge free of dependencies beyond serde.
fn parse_millis(text: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "expected a duration like \"300ms\", \"90s\", \"5m\" or \"1h30m\" (a bare number is seconds), got {text:?}"
        )
    };
    if text.is_empty() {
        return Err(invalid());
    }
    let mut millis: f64 = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&n| n > 0)
            .ok_or_else(invalid)?;
        let value: f64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_millis = match &rest[..unit_len] {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            _ => return Err(invalid()),
        };
        millis += value * unit_millis;
        rest = &rest[unit_len..];
    }
    if millis >= 1e15 {
        return Err(invalid());
    }
    Ok(millis.round() as u64)
}

/// A size in bytes: `"512MiB"`, `"1.5GiB"`, `"500MB"`, `"64kB"`, or a bare number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Bytes(pub u64);

impl Bytes {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("expected a size like \"512MiB\" or \"2GB\", got {text:?}"))?;
        let scale: f64 = match unit.trim() {
            "" | "B" => 1.0,
            "kB" | "KB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            other => {
                return Err(format!(
                    "unknown size unit {other:?}: use B, kB, MB, GB, KiB, MiB or GiB"
                ));
            }
        };
        Ok(Bytes((number * scale).round() as u64))
    }
}

impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0} MiB", self.0 as f64 / (1024.0 * 1024.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match NumberOrText::deserialize(deserializer)? {
            NumberOrText::Number(bytes) if bytes >= 0.0 => Ok(Bytes(bytes.round() as u64)),
            NumberOrText::Number(bytes) => Err(format!("a size cannot be negative, got {bytes}")),
            NumberOrText::Text(text) => Self::parse(&text),
        }
        .map_err(serde::de::Error::custom)
    }
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
    fn durations_read_in_human_units_and_a_bare_number_is_seconds() {
        let ms = |text: &str| Span::parse(text).unwrap().as_millis();
        assert_eq!(ms("90"), 90_000);
        assert_eq!(ms("0.5"), 500);
        assert_eq!(ms("90s"), 90_000);
        assert_eq!(ms("1h30m"), 5_400_000);
        assert_eq!(ms("300ms"), 300, "not rounded up to a second");
        assert_eq!(ms("1s500ms"), 1500);
        assert_eq!(ms("1.5s"), 1500);
        assert_eq!(ms("1.5m"), 90_000);
        for bad in ["", "5 minutes", "m5", "-3s", "3x", "-1", "1e30"] {
            assert!(Span::parse(bad).is_err(), "{bad:?} should not parse");
        }
        let from_yaml = |n: f64| -> Span { serde_json::from_value(serde_json::json!(n)).unwrap() };
        assert_eq!(
            from_yaml(2.0).as_millis(),
            2000,
            "max_p95: 2 is two seconds"
        );
        assert_eq!(Span::from_millis(300).whole_seconds(), 1);
        assert_eq!(Span::from_millis(300).to_string(), "300ms");
        assert_eq!(Span::from_secs(90).to_string(), "90s");
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
