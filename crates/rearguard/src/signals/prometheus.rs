//! Signals from a Prometheus server: three PromQL queries (requests, errors, latency
//! buckets) evaluated at each step's end by `query_range`, their counters turned into
//! per-step increases series by series, then summed per version. The same range query
//! gives a fresh guard its baseline's history.
//!
//! At scale, apps share queries: a template without `{app}` is one query for every app of
//! the guard (grouped `by (app, version, ...)`), asked once per step and split by the app
//! label; a template with `{app}` is asked per app.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rearguard_judge::{Counts, Span};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{Ask, Buckets, Reading, SignalError, SignalSource};
use crate::config::Flaw;
use crate::secret::Secret;

/// Seconds of history a fresh guard reads (the judge's baseline history).
const HISTORY_SECONDS: i64 = crate::guard::HISTORY_SECONDS;
/// Steps asked in one `query_range` of every app's series at most.
const STEPS_PER_QUERY: i64 = 10;
/// Steps of every app's series kept for all apps to share: what a guardian asks each tick
/// (its steps since the last, and the one before them). Older steps, a fresh guard's
/// history, are asked for each app alone.
const SHARED_STEPS: i64 = 6;
/// Apps whose history is asked at once: 10,000 fresh guardians would otherwise open as
/// many connections to the server.
const HISTORIES_AT_ONCE: usize = 16;
/// A query must be answered within this long.
const QUERY_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// The server, for example `http://127.0.0.1:9090`.
    pub url: String,
    /// The judge's step: the queries are evaluated at multiples of it. At least the
    /// scrape interval.
    #[serde(default = "default_step")]
    pub step: Span,
    #[serde(default)]
    pub queries: Queries,
    /// The label carrying the app's name (in queries without `{app}`).
    #[serde(default = "default_app_label")]
    pub app_label: String,
    /// The label carrying the version.
    #[serde(default = "default_version_label")]
    pub version_label: String,
    /// `bearer: TOKEN` or `basic: {username, password}`; write secrets as `${NAME}`.
    #[serde(default)]
    pub auth: Option<Auth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

/// PromQL returning counters (never rates): each series' increase between steps is taken
/// here, so a restarted instance is counted right. `{app}` is replaced by the app's name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Queries {
    #[serde(default = "default_requests")]
    pub requests: String,
    #[serde(default = "default_errors")]
    pub errors: String,
    /// Cumulative bucket counters, with their `le` label, in seconds.
    #[serde(default = "default_latency")]
    pub latency: String,
}

impl Default for Queries {
    fn default() -> Self {
        Self {
            requests: default_requests(),
            errors: default_errors(),
            latency: default_latency(),
        }
    }
}

fn default_step() -> Span {
    Span::from_secs(15)
}

fn default_app_label() -> String {
    "app".into()
}

fn default_version_label() -> String {
    "version".into()
}

fn default_requests() -> String {
    "sum by (app, version, instance) (http_requests_total)".into()
}

fn default_errors() -> String {
    r#"sum by (app, version, instance) (http_requests_total{code=~"5.."})"#.into()
}

fn default_latency() -> String {
    "sum by (app, version, instance, le) (http_request_duration_seconds_bucket)".into()
}

impl Queries {
    fn all(&self) -> [(&'static str, &str); 3] {
        [
            ("requests", &self.requests),
            ("errors", &self.errors),
            ("latency", &self.latency),
        ]
    }
}

impl PrometheusConfig {
    pub fn problems(&self) -> Vec<Flaw> {
        let mut problems = Vec::new();
        match reqwest::Url::parse(&self.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => problems.push(Flaw::at(
                &["signals", "url"],
                format!("{:?} is no http(s) URL", self.url),
            )),
        }
        problems.extend(Flaw::if_not_whole_seconds(&["signals", "step"], self.step));
        for (name, template) in self.queries.all() {
            if let Err(e) = promql_parser::parser::parse(&render(template, "app")) {
                problems.push(Flaw::at(
                    &["signals", "queries", name],
                    format!("not PromQL: {}", e.trim()),
                ));
            }
        }
        problems
    }
}

fn render(template: &str, app: &str) -> String {
    template.replace("{app}", app)
}

/// The Prometheus servers the guard reads, shared by every app's source.
#[derive(Clone, Default)]
pub struct Servers {
    servers: Arc<std::sync::Mutex<BTreeMap<String, Arc<Server>>>>,
}

impl Servers {
    pub fn source(&self, config: &PrometheusConfig) -> PrometheusSignals {
        let key = format!(
            "{} {} {} {:?}",
            config.url,
            config.step.as_millis(),
            config.app_label,
            config.auth.as_ref().map(auth_key)
        );
        let server = self
            .servers
            .lock()
            .expect("lock")
            .entry(key)
            .or_insert_with(|| Arc::new(Server::new(config)))
            .clone();
        PrometheusSignals {
            config: config.clone(),
            server,
        }
    }
}

fn auth_key(auth: &Auth) -> String {
    match auth {
        Auth::Bearer(token) => token.expose().to_string(),
        Auth::Basic { username, password } => format!("{username}:{}", password.expose()),
    }
}

/// One series' value at one step; the series' labels are shared by all its values.
#[derive(Debug, Clone)]
struct Point {
    /// The labels as the server wrote them (a JSON object), read when an app's step is
    /// taken: held parsed, 10,000 apps' series took 115 MiB more (a third of the signal
    /// path's memory, bench/signals_at_scale.sh).
    labels: Arc<str>,
    value: f64,
}

/// A query's answers, by step end and by the app label's value (so each app finds its own
/// points without looking at the others'), and which step ends were asked (a step may
/// have none).
#[derive(Default)]
struct Answers {
    points: BTreeMap<i64, HashMap<Arc<str>, Vec<Point>>>,
    asked: BTreeSet<i64>,
    /// Every series' labels once, shared by all its points across answers (each answer
    /// repeats them: 10,000 apps' series re-allocated every step grew by 56 MiB a step),
    /// with the app they belong to.
    series: HashMap<Arc<str>, Arc<str>>,
    owners: HashSet<Arc<str>>,
}

impl Answers {
    /// Adds what the server answered, filed by the series' `app_label` (step ends already
    /// asked keep their earlier answer).
    fn add(&mut self, answer: Vec<Series>, app_label: &str) -> Result<(), String> {
        for series in answer {
            let text = series.metric.get();
            let (labels, owner) = match self.series.get_key_value(text) {
                Some((labels, owner)) => (labels.clone(), owner.clone()),
                None => {
                    let parsed = parse_labels(text)
                        .map_err(|e| format!("a series' labels are not names and values: {e}"))?;
                    let owner = parsed.get(app_label).map_or("", String::as_str);
                    let owner = match self.owners.get(owner) {
                        Some(owner) => owner.clone(),
                        None => {
                            let owner: Arc<str> = Arc::from(owner);
                            self.owners.insert(owner.clone());
                            owner
                        }
                    };
                    let labels: Arc<str> = Arc::from(text);
                    self.series.insert(labels.clone(), owner.clone());
                    (labels, owner)
                }
            };
            for (t, Sample(value)) in series.values {
                let t = t as i64;
                if self.asked.contains(&t) || !value.is_finite() {
                    continue;
                }
                self.points
                    .entry(t)
                    .or_default()
                    .entry(owner.clone())
                    .or_default()
                    .push(Point {
                        labels: labels.clone(),
                        value,
                    });
            }
        }
        Ok(())
    }

    /// The points from `from` to `to`: `app`'s, or all when `None`.
    fn of(&self, app: Option<&str>, from: i64, to: i64) -> BTreeMap<i64, Vec<Point>> {
        self.points
            .range(from..=to)
            .map(|(t, by_app)| {
                let points = match app {
                    Some(app) => by_app.get(app).cloned().unwrap_or_default(),
                    None => by_app.values().flatten().cloned().collect(),
                };
                (*t, points)
            })
            .collect()
    }

    fn forget_before(&mut self, t: i64) {
        let steps = self.points.len();
        self.points = self.points.split_off(&t);
        self.asked = self.asked.split_off(&t);
        if self.points.len() < steps {
            // Series no point refers to any more (their app or version is gone).
            self.series
                .retain(|labels, _| Arc::strong_count(labels) > 1);
            self.owners.retain(|owner| Arc::strong_count(owner) > 1);
        }
    }
}

struct Server {
    url: String,
    step: i64,
    app_label: String,
    auth: Option<Auth>,
    client: reqwest::Client,
    answers: Mutex<BTreeMap<String, Answers>>,
    histories: tokio::sync::Semaphore,
}

#[derive(Deserialize)]
struct Response<'a> {
    status: String,
    #[serde(default, borrow)]
    data: Option<Matrix<'a>>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Matrix<'a> {
    #[serde(borrow)]
    result: Vec<Series<'a>>,
}

#[derive(Deserialize)]
struct Series<'a> {
    /// The labels' text, borrowed from the answer: a series already known is not parsed
    /// again (10,000 apps' series parsed from every answer were its reader's peak memory).
    #[serde(borrow)]
    metric: &'a serde_json::value::RawValue,
    values: Vec<(f64, Sample)>,
}

/// A sample value, which Prometheus writes as a string ("12", "NaN", "+Inf"): read straight
/// into a number (millions of short-lived strings were most of a history answer's memory).
#[derive(Debug, Clone, Copy)]
struct Sample(f64);

impl<'de> Deserialize<'de> for Sample {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse()
            .map(Sample)
            .map_err(|_| serde::de::Error::custom(format!("not a sample value: {text:?}")))
    }
}

impl Server {
    fn new(config: &PrometheusConfig) -> Self {
        Self {
            url: config.url.trim_end_matches('/').to_string(),
            step: config.step.whole_seconds().max(1),
            app_label: config.app_label.clone(),
            auth: config.auth.clone(),
            client: crate::http_client(QUERY_WITHIN).unwrap_or_default(),
            answers: Mutex::new(BTreeMap::new()),
            histories: tokio::sync::Semaphore::new(HISTORIES_AT_ONCE),
        }
    }

    /// The points of `query` at each step end from `from` to `to` (those labelled as
    /// `app`'s, when given). The last `SHARED_STEPS` come from answers shared by every app
    /// (asking the server only for the step ends no app asked before); older ones, a fresh
    /// guard's history, are asked for `app` alone, so 10,000 apps' 10 minutes are never
    /// held at once (they were twice the memory of a steady guard while it started).
    async fn points(
        &self,
        query: &str,
        app: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<BTreeMap<i64, Vec<Point>>, String> {
        let shared_from = to - SHARED_STEPS * self.step;
        let (mut points, from) = match app {
            Some(app) if from < shared_from => {
                let history = self
                    .history(query, app, from, shared_from - self.step)
                    .await?;
                (history, shared_from)
            }
            _ => (BTreeMap::new(), from),
        };
        let mut all = self.answers.lock().await;
        let answers = all.entry(query.to_string()).or_default();
        let missing = (from..=to)
            .step_by(self.step as usize)
            .find(|t| !answers.asked.contains(t));
        if let Some(first) = missing {
            // In parts (a template with `{app}` asks its app's whole history here): each
            // answer stays small.
            let part = self.step * STEPS_PER_QUERY;
            let mut start = first;
            while start <= to {
                let end = (start + part - self.step).min(to);
                self.query_range(query, start, end, answers).await?;
                answers
                    .asked
                    .extend((start..=end).step_by(self.step as usize));
                start = end + self.step;
            }
            // Once a step, when a new one came: what no app asks for again goes.
            answers.forget_before(from.min(shared_from - 2 * self.step));
        }
        points.extend(answers.of(app, from, to));
        Ok(points)
    }

    /// `app`'s points of `query` from `from` to `to`, asked for it alone: `query` with the
    /// app's label matched in each of its selectors (as `{app}` in a template would).
    async fn history(
        &self,
        query: &str,
        app: &str,
        from: i64,
        to: i64,
    ) -> Result<BTreeMap<i64, Vec<Point>>, String> {
        let _permit = self.histories.acquire().await.map_err(|e| e.to_string())?;
        let mut answers = Answers::default();
        self.query_range(
            &only_app(query, &self.app_label, app),
            from,
            to,
            &mut answers,
        )
        .await?;
        Ok(answers.of(Some(app), from, to))
    }

    /// Asks `query` from `from` to `to` and adds the answer to `answers`.
    async fn query_range(
        &self,
        query: &str,
        from: i64,
        to: i64,
        answers: &mut Answers,
    ) -> Result<(), String> {
        let url = format!("{}/api/v1/query_range", self.url);
        let mut request = self.client.get(&url).query(&[
            ("query", query),
            ("start", &from.to_string()),
            ("end", &to.to_string()),
            ("step", &format!("{}s", self.step)),
        ]);
        request = match &self.auth {
            Some(Auth::Bearer(token)) => request.bearer_auth(token.expose()),
            Some(Auth::Basic { username, password }) => {
                request.basic_auth(username, Some(password.expose()))
            }
            None => request,
        };
        let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let no_answer = |e: &dyn std::fmt::Display| {
            format!("{url} answered {status} with no Prometheus answer: {e}")
        };
        let body = response.bytes().await.map_err(|e| no_answer(&e))?;
        let answer: Response = serde_json::from_slice(&body).map_err(|e| no_answer(&e))?;
        if answer.status != "success" {
            return Err(format!(
                "{url} refused {query:?}: {}",
                answer.error.unwrap_or_else(|| status.to_string())
            ));
        }
        let series = answer.data.map(|d| d.result).unwrap_or_default();
        answers
            .add(series, &self.app_label)
            .map_err(|e| no_answer(&e))
    }
}

/// `query` with `label="app"` matched in each of its selectors. The query was checked as
/// PromQL when the config loaded; were it not PromQL it is left as it is, and the app's
/// series are still picked from the answer by their label.
fn only_app(query: &str, label: &str, app: &str) -> String {
    use promql_parser::label::{MatchOp, Matcher};
    use promql_parser::parser::{self, Expr};
    fn narrow(expr: &mut Expr, matcher: &Matcher) {
        match expr {
            Expr::VectorSelector(selector) => add(selector, matcher),
            Expr::MatrixSelector(matrix) => add(&mut matrix.vs, matcher),
            Expr::Aggregate(aggregate) => narrow(&mut aggregate.expr, matcher),
            Expr::Unary(unary) => narrow(&mut unary.expr, matcher),
            Expr::Paren(paren) => narrow(&mut paren.expr, matcher),
            Expr::Subquery(subquery) => narrow(&mut subquery.expr, matcher),
            Expr::Binary(binary) => {
                narrow(&mut binary.lhs, matcher);
                narrow(&mut binary.rhs, matcher);
            }
            Expr::Call(call) => {
                for arg in &mut call.args.args {
                    narrow(arg, matcher);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
    fn add(selector: &mut parser::VectorSelector, matcher: &Matcher) {
        selector.matchers.matchers.push(matcher.clone());
        for alternative in &mut selector.matchers.or_matchers {
            alternative.push(matcher.clone());
        }
    }
    match parser::parse(query) {
        Ok(mut expr) => {
            narrow(&mut expr, &Matcher::new(MatchOp::Equal, label, app));
            expr.to_string()
        }
        Err(_) => query.to_string(),
    }
}

/// A step's values by version and series (see [`PrometheusSignals::by_series`]).
type Grouped = BTreeMap<(String, SeriesKey), Vec<Value>>;

/// The values of step `t` (none when Prometheus had none).
fn at(steps: &BTreeMap<i64, Grouped>, t: i64) -> &Grouped {
    static NONE: Grouped = BTreeMap::new();
    steps.get(&t).unwrap_or(&NONE)
}

pub struct PrometheusSignals {
    config: PrometheusConfig,
    server: Arc<Server>,
}

/// A series' identity within its version: every label but the bucket bound.
type SeriesKey = BTreeMap<String, String>;

/// A series' labels from the JSON object the server wrote.
fn parse_labels(text: &str) -> serde_json::Result<BTreeMap<String, String>> {
    serde_json::from_str(text)
}

/// A point's value with its bucket bound (`le`), if it has one.
type Value = (Option<String>, f64);

impl PrometheusSignals {
    /// The points' values by version and series (without `le`). Each step's labels are
    /// read once, though a step is both the end of one and the start of the next.
    fn by_series(&self, points: &[Point]) -> Grouped {
        let mut mine = Grouped::new();
        for point in points {
            // Read once already, when the answer came.
            let Ok(mut key) = parse_labels(&point.labels) else {
                continue;
            };
            let Some(version) = key.get(&self.config.version_label).cloned() else {
                continue;
            };
            let le = key.remove("le");
            mine.entry((version, key))
                .or_default()
                .push((le, point.value));
        }
        mine
    }

    /// Each version's increase of a counter query from `before` to `after`.
    fn increases(&self, before: &Grouped, after: &Grouped) -> BTreeMap<String, f64> {
        let mut sums = BTreeMap::new();
        for (series, points) in after {
            let was = before
                .get(series)
                .and_then(|p| p.first())
                .map_or(0.0, |&(_, value)| value);
            let value = points.first().map_or(0.0, |&(_, value)| value);
            *sums.entry(series.0.clone()).or_default() += super::increase(was, value);
        }
        sums
    }

    /// Each version's latency buckets' increase from `before` to `after`.
    fn bucket_increases(&self, before: &Grouped, after: &Grouped) -> BTreeMap<String, Buckets> {
        let buckets = |values: &[Value]| {
            let mut buckets = Buckets::default();
            for (le, value) in values {
                if let Some(le) = le {
                    buckets.add(le, *value);
                }
            }
            buckets
        };
        let mut sums: BTreeMap<String, Buckets> = BTreeMap::new();
        for (series, points) in after {
            let now = buckets(points);
            let was = before.get(series).map(|p| buckets(p)).unwrap_or_default();
            let sum = sums.entry(series.0.clone()).or_default();
            for (bound, count) in now.increase_since(&was).0 {
                *sum.0.entry(bound).or_default() += count;
            }
        }
        sums
    }
}

#[async_trait::async_trait]
impl SignalSource for PrometheusSignals {
    fn step_seconds(&self) -> u32 {
        self.server.step as u32
    }

    async fn take(&self, ask: &Ask<'_>) -> Result<Vec<Reading>, SignalError> {
        let step = self.server.step;
        let align = |t: i64| t - t.rem_euclid(step);
        // A step is read once Prometheus has scraped past its end (a scrape interval up to
        // the step later).
        let ready = align(ask.now - step);
        let first = (ask.recorded_until + step).max(align(ask.now - HISTORY_SECONDS));
        let first = align(first + step - 1);
        if first > ready {
            return Ok(Vec::new());
        }
        let error = |why: String| SignalError {
            source_name: format!("Prometheus at {}", self.server.url),
            why,
        };
        let mut answers = Vec::new();
        for (_, template) in self.config.queries.all() {
            // A query of every app's series is split by the app label; one asked for this
            // app alone is all its own.
            let (query, only) = if template.contains("{app}") {
                (render(template, ask.app), None)
            } else {
                (template.to_string(), Some(ask.app))
            };
            let points = self
                .server
                .points(&query, only, first - step, ready)
                .await
                .map_err(error)?;
            let steps: BTreeMap<i64, Grouped> = points
                .iter()
                .map(|(t, points)| (*t, self.by_series(points)))
                .collect();
            answers.push(steps);
        }
        let [requests, errors, latency] = [&answers[0], &answers[1], &answers[2]];
        let mut readings = Vec::new();
        for t in (first..=ready).step_by(step as usize) {
            let requests = self.increases(at(requests, t - step), at(requests, t));
            let mut errors = self.increases(at(errors, t - step), at(errors, t));
            let mut latency = self.bucket_increases(at(latency, t - step), at(latency, t));
            let counts: BTreeMap<String, Counts> = requests
                .into_iter()
                .map(|(version, requests)| {
                    let errors = errors.remove(&version).unwrap_or(0.0);
                    let latency = latency.remove(&version).unwrap_or_default();
                    (version, super::counts(requests, errors, &latency))
                })
                .collect();
            readings.push(Reading { t, counts });
        }
        Ok(readings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(queries: Queries) -> PrometheusConfig {
        PrometheusConfig {
            url: "http://127.0.0.1:9090".into(),
            step: Span::from_secs(15),
            queries,
            app_label: default_app_label(),
            version_label: default_version_label(),
            auth: None,
        }
    }

    #[test]
    fn queries_are_checked_as_promql() {
        assert!(config(Queries::default()).problems().is_empty());
        let bad = Queries {
            errors: "sum by (version (x".into(),
            ..Queries::default()
        };
        let problems = config(bad).problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].at, ["signals", "queries", "errors"]);
        let per_app = Queries {
            requests: r#"sum by (version) (http_requests_total{job="{app}"})"#.into(),
            ..Queries::default()
        };
        assert!(config(per_app).problems().is_empty());
    }

    #[test]
    fn a_history_is_asked_with_the_app_matched_in_every_selector() {
        let defaults = Queries::default();
        assert_eq!(
            only_app(&defaults.errors, "app", "web"),
            r#"sum by (app, version, instance) (http_requests_total{app="web",code=~"5.."})"#
        );
        let two = r#"sum by (app, version) (rate(a_total[1m])) + sum by (app, version) (b{x="1" or y="2"})"#;
        let narrowed = only_app(two, "service", r#"we"b"#);
        let parsed = promql_parser::parser::parse(&narrowed).expect("still PromQL");
        assert_eq!(parsed.to_string(), narrowed);
        assert_eq!(
            narrowed.matches(r#"service="we\"b""#).count(),
            3,
            "{narrowed}"
        );
        assert_eq!(only_app("not promql (", "app", "web"), "not promql (");
    }

    /// A series as Prometheus writes it in a matrix answer.
    fn series(labels: &[(&str, &str)], values: &[(i64, f64)]) -> serde_json::Value {
        let metric: BTreeMap<_, _> = labels.iter().copied().collect();
        let values: Vec<_> = values
            .iter()
            .map(|(t, v)| serde_json::json!([t, v.to_string()]))
            .collect();
        serde_json::json!({ "metric": metric, "values": values })
    }

    /// Adds a matrix answer of `series` to `answers`, read as the server's text is.
    fn answer(answers: &mut Answers, series: Vec<serde_json::Value>) {
        let text =
            serde_json::json!({ "status": "success", "data": { "result": series } }).to_string();
        let answer: Response = serde_json::from_str(&text).unwrap();
        answers.add(answer.data.unwrap().result, "app").unwrap();
    }

    #[test]
    fn increases_are_taken_per_series_then_summed_per_version_of_each_app() {
        let source = Servers::default().source(&config(Queries::default()));
        let increases = |points: &BTreeMap<i64, Vec<Point>>, from: i64, to: i64| {
            let step = |t: i64| source.by_series(points.get(&t).map_or(&[], Vec::as_slice));
            source.increases(&step(from), &step(to))
        };
        let mut answers = Answers::default();
        answer(
            &mut answers,
            vec![
                // a served 10; b restarted and served 5; a new instance d served 3.
                series(
                    &[("app", "web"), ("version", "v1"), ("instance", "a")],
                    &[(0, 100.0), (15, 110.0)],
                ),
                series(
                    &[("app", "web"), ("version", "v1"), ("instance", "b")],
                    &[(0, 50.0), (15, 5.0)],
                ),
                series(
                    &[("app", "web"), ("version", "v2"), ("instance", "d")],
                    &[(15, 3.0)],
                ),
                series(
                    &[("app", "api"), ("version", "v1"), ("instance", "c")],
                    &[(0, 7.0), (15, 9.0)],
                ),
            ],
        );
        let web = answers.of(Some("web"), 0, 15);
        assert_eq!(
            increases(&web, 0, 15),
            BTreeMap::from([("v1".to_string(), 15.0), ("v2".to_string(), 3.0)])
        );
        let api = answers.of(Some("api"), 0, 15);
        assert_eq!(
            increases(&api, 0, 15),
            BTreeMap::from([("v1".to_string(), 2.0)])
        );
        assert_eq!(answers.of(None, 15, 15)[&15].len(), 4);
        // A later answer's series are those known, not new ones.
        answer(
            &mut answers,
            vec![series(
                &[("app", "api"), ("version", "v1"), ("instance", "c")],
                &[(30, 12.0)],
            )],
        );
        assert_eq!(answers.series.len(), 4);
        let api = answers.of(Some("api"), 15, 30);
        assert_eq!(
            increases(&api, 15, 30),
            BTreeMap::from([("v1".to_string(), 3.0)])
        );
    }
}
