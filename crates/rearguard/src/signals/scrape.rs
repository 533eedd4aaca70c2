//! Signals read from each serving version's own `/metrics` page (the Prometheus text
//! format), every step: its request counter and latency histogram, turned into per-step
//! increases. For a service behind a traffic mover that counts nothing (the platform's own
//! routing, say) and no Prometheus.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rearguard_judge::Span;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{Ask, Buckets, MetricNames, Reading, SignalError, SignalSource};
use crate::config::Flaw;

/// A page must arrive within this long; a slower instance is skipped for the step.
const FETCH_WITHIN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// The page's path on each instance.
    #[serde(default = "default_path")]
    pub path: String,
    /// The components whose instances are read (default: every one that listens).
    #[serde(default)]
    pub components: Vec<String>,
    /// How often the pages are read: the judge's step.
    #[serde(default = "default_every")]
    pub every: Span,
    /// The metrics' names, when they are not the usual ones.
    #[serde(default)]
    pub metrics: MetricNames,
}

fn default_path() -> String {
    "/metrics".into()
}

fn default_every() -> Span {
    Span::from_secs(1)
}

impl ScrapeConfig {
    pub fn problems(&self, listening: &[String]) -> Vec<Flaw> {
        let mut problems = Vec::new();
        if !self.path.starts_with('/') || self.path.chars().any(char::is_whitespace) {
            problems.push(Flaw::at(
                &["signals", "path"],
                "path must start with / and hold no spaces",
            ));
        }
        problems.extend(Flaw::if_not_whole_seconds(
            &["signals", "every"],
            self.every,
        ));
        for component in &self.components {
            if !listening.contains(component) {
                problems.push(Flaw::at(
                    &["signals", "components"],
                    format!("component {component} does not listen"),
                ));
            }
        }
        problems
    }
}

/// One page's counters, as read.
#[derive(Debug, Clone, Default)]
struct Totals {
    requests: f64,
    errors: f64,
    latency: Buckets,
}

impl Totals {
    fn read(page: &str, names: &MetricNames) -> Result<Self, String> {
        let samples = rearguard_exposition::parse(page).map_err(|e| e.to_string())?;
        let bucket = format!("{}_bucket", names.latency);
        let mut totals = Totals::default();
        for sample in samples.iter().filter(|s| s.value.is_finite()) {
            if sample.name == names.requests {
                totals.requests += sample.value;
                if sample
                    .label(&names.status_label)
                    .is_some_and(super::is_server_error)
                {
                    totals.errors += sample.value;
                }
            } else if sample.name == bucket
                && let Some(le) = sample.label("le")
            {
                totals.latency.add(le, sample.value);
            }
        }
        Ok(totals)
    }

    /// What was served since `before` (a counter that went down restarted from zero).
    fn since(&self, before: &Totals) -> (f64, f64, Buckets) {
        let reset = self.requests < before.requests;
        let base = |b: f64| if reset { 0.0 } else { b };
        (
            self.requests - base(before.requests),
            super::increase(base(before.errors), self.errors),
            self.latency.increase_since(&before.latency),
        )
    }
}

pub struct Scrape {
    config: ScrapeConfig,
    client: reqwest::Client,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The end of the last step read.
    last_t: i64,
    /// The last page read from each instance, by version and address.
    last: BTreeMap<(String, SocketAddr), Totals>,
}

impl Scrape {
    pub fn new(config: ScrapeConfig) -> Self {
        Self {
            config,
            client: crate::http_client(FETCH_WITHIN).unwrap_or_default(),
            state: Mutex::new(State::default()),
        }
    }

    async fn fetch(&self, address: SocketAddr) -> Result<Totals, String> {
        let url = format!("http://{address}{}", self.config.path);
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("{url}: {e}"))?;
        let page = response.text().await.map_err(|e| format!("{url}: {e}"))?;
        Totals::read(&page, &self.config.metrics).map_err(|e| format!("{url}: {e}"))
    }
}

#[async_trait::async_trait]
impl SignalSource for Scrape {
    fn step_seconds(&self) -> u32 {
        self.config.every.whole_seconds().max(1) as u32
    }

    fn reads_instances(&self) -> bool {
        true
    }

    async fn take(&self, ask: &Ask<'_>) -> Result<Vec<Reading>, SignalError> {
        let step = i64::from(self.step_seconds());
        let t = ask.now - ask.now.rem_euclid(step);
        let mut state = self.state.lock().await;
        if t <= state.last_t {
            return Ok(Vec::new());
        }
        let targets: Vec<(String, SocketAddr)> = ask
            .serving
            .iter()
            .flat_map(|instances| {
                instances
                    .endpoints
                    .iter()
                    .filter(|(component, _)| {
                        self.config.components.is_empty()
                            || self.config.components.contains(component)
                    })
                    .map(|(_, address)| (instances.version.clone(), *address))
            })
            .collect();
        let pages =
            futures_util::future::join_all(targets.iter().map(|(_, address)| self.fetch(*address)))
                .await;
        let mut reading = Reading {
            t,
            counts: BTreeMap::new(),
        };
        let mut failures = Vec::new();
        let mut last = BTreeMap::new();
        for (target, page) in targets.into_iter().zip(pages) {
            let totals = match page {
                Ok(totals) => totals,
                Err(why) => {
                    failures.push(why);
                    continue;
                }
            };
            // An instance seen for the first time is a starting point: what it served
            // before (perhaps for hours, before a guard restart) is no evidence now.
            if let Some(before) = state.last.get(&target) {
                let (requests, errors, latency) = totals.since(before);
                reading
                    .counts
                    .entry(target.0.clone())
                    .or_default()
                    .add(&super::counts(requests, errors, &latency));
            }
            last.insert(target, totals);
        }
        if last.is_empty() && !failures.is_empty() {
            return Err(SignalError {
                source_name: "the instances' metrics".into(),
                why: failures.join("; "),
            });
        }
        for why in failures {
            tracing::warn!(app = %ask.app, error = %why, "cannot read an instance's metrics; skipped this step");
        }
        state.last = last;
        state.last_t = t;
        Ok(vec![reading])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# TYPE http_requests counter\n\
        http_requests_total{version=\"v1\",code=\"200\"} 90\n\
        http_requests_total{version=\"v1\",code=\"500\"} 10\n\
        http_requests_total{version=\"v1\",code=\"503\"} 2\n\
        http_request_duration_seconds_bucket{version=\"v1\",le=\"0.01\"} 50\n\
        http_request_duration_seconds_bucket{version=\"v1\",le=\"0.1\"} 100\n\
        http_request_duration_seconds_bucket{version=\"v1\",le=\"+Inf\"} 102\n\
        http_request_duration_seconds_count{version=\"v1\"} 102\n";

    #[test]
    fn a_page_gives_requests_errors_and_latency() {
        let totals = Totals::read(PAGE, &MetricNames::default()).unwrap();
        assert_eq!((totals.requests, totals.errors), (102.0, 12.0));
        let counts = super::super::counts(
            totals.requests,
            totals.errors,
            &totals.latency.increase_since(&Buckets::default()),
        );
        assert_eq!(counts.latency.cumulative[1], 50);
        assert_eq!(counts.latency.cumulative[4], 100);
        assert_eq!(counts.latency.total(), 102);
    }

    #[test]
    fn increases_between_pages_and_after_a_restart() {
        let names = MetricNames::default();
        let before = Totals::read(PAGE, &names).unwrap();
        let later = Totals::read(&PAGE.replace("} 90", "} 120"), &names).unwrap();
        let (requests, errors, _) = later.since(&before);
        assert_eq!((requests, errors), (30.0, 0.0));
        let restarted = Totals::read(
            "http_requests_total{code=\"500\"} 3\nhttp_requests_total{code=\"200\"} 4\n",
            &names,
        )
        .unwrap();
        let (requests, errors, _) = restarted.since(&before);
        assert_eq!((requests, errors), (7.0, 3.0));
    }
}
