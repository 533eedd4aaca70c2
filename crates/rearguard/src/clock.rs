//! The only place that reads the system clock. Everything else takes a `Clock`, so tests
//! can drive time and the guard's decisions can be replayed.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock time in milliseconds since the Unix epoch, and a monotonic stopwatch.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

pub type SharedClock = Arc<dyn Clock>;

pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that moves only when told to.
#[derive(Default)]
pub struct FakeClock {
    now_ms: AtomicI64,
}

impl FakeClock {
    pub fn at(now_ms: i64) -> Arc<Self> {
        Arc::new(Self {
            now_ms: AtomicI64::new(now_ms),
        })
    }

    pub fn advance(&self, by: Duration) {
        self.now_ms
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// Measures elapsed time for latency figures (monotonic, not affected by clock changes).
#[derive(Clone, Copy)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    #[allow(clippy::disallowed_methods)]
    pub fn start() -> Self {
        Self(Instant::now())
    }

    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// Epoch-millisecond timestamps as RFC 3339 text with milliseconds in JSON, both ways
/// (`#[serde(with = "clock::json_time")]`): the API's answers read back by the CLI.
pub mod json_time {
    use serde::Deserialize;

    pub fn serialize<S: serde::Serializer>(ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        match jiff::Timestamp::from_millisecond(*ms) {
            Ok(t) => serializer.collect_str(&t),
            Err(_) => serializer.serialize_i64(*ms),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Time {
            Text(String),
            Millis(i64),
        }
        match Time::deserialize(deserializer)? {
            Time::Millis(ms) => Ok(ms),
            Time::Text(text) => text
                .parse::<jiff::Timestamp>()
                .map(|t| t.as_millisecond())
                .map_err(serde::de::Error::custom),
        }
    }
}

/// [`json_time`] for optional timestamps.
pub mod json_time_opt {
    use serde::Deserialize;

    pub fn serialize<S: serde::Serializer>(
        ms: &Option<i64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => super::json_time::serialize(ms, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<i64>, D::Error> {
        #[derive(Deserialize)]
        struct Time(#[serde(with = "super::json_time")] i64);
        Ok(Option::<Time>::deserialize(deserializer)?.map(|t| t.0))
    }
}

/// RFC 3339 text for an epoch-millisecond timestamp, to the second, for people.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(
        |_| ms.to_string(),
        |t| {
            t.round(jiff::Unit::Second)
                .map_or_else(|_| t.to_string(), |t| t.to_string())
        },
    )
}
