//! The config file (`rearguard.yaml`): apps, their backend, traffic, signals, checks and
//! policy.
//! Parsing, `${ENV}` interpolation and validation live here; every problem is reported at
//! once, each with file:line:column. Nothing here starts or touches anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rearguard_judge::{Fraction, Mode, Policy, Span};
use serde::{Deserialize, Serialize};

use crate::UsageError;
use crate::backends::BackendConfig;
use crate::checks::CheckConfig;
use crate::names;
use crate::notify::NotificationsConfig;
use crate::signals::SignalsConfig;
use crate::traffic::TrafficConfig;

/// The whole config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for the ledger database and the rollback log, relative to the config
    /// file. Default: `.rearguard`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Database URL. Default: `sqlite://<data_dir>/rearguard.db`.
    #[serde(default)]
    pub database: Option<String>,
    /// The rollback log, one JSON line per rollback. Default: `rollback-metrics.jsonl`
    /// beside the database.
    #[serde(default)]
    pub rollback_log: Option<PathBuf>,
    /// The apps to guard, by name.
    pub apps: BTreeMap<String, AppConfig>,
    /// Who is told about incidents, how and when (none by default).
    #[serde(default)]
    pub notifications: NotificationsConfig,
    /// Alertmanager's webhook receiver: a firing alert rolls the app's watched release
    /// back (none by default).
    #[serde(default)]
    pub alertmanager: Option<crate::signals::alertmanager::AlertmanagerConfig>,
    /// How the guard itself runs.
    #[serde(default)]
    pub guard: GuardSettings,
}

/// How the guard itself runs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuardSettings {
    /// How often each app's reconciler looks ("1s", the default). A deploy or rollback
    /// someone asks for waits up to one tick; thousands of apps on one guard cost less with
    /// longer ticks ("10s", as long as the signals' step; 1s to 60s).
    #[serde(default = "default_tick")]
    pub tick: Span,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            tick: default_tick(),
        }
    }
}

fn default_tick() -> Span {
    Span::from_secs(1)
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".rearguard")
}

/// One app: components released together under one version.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// `bluegreen`: the new release takes all traffic at once; `canary`: it takes
    /// `canary_weight` of it while the previous release serves the rest.
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Canary mode: the share of traffic the new release takes ("10%").
    #[serde(default = "default_canary_weight")]
    pub canary_weight: Fraction,
    /// How long a release must stay healthy to become the known-good one ("10m").
    #[serde(default = "default_bake")]
    pub bake: Span,
    /// How versions run (and their components are defined): `kind` and its settings.
    pub backend: BackendConfig,
    /// How requests move between running versions: `kind` and its settings.
    pub traffic: TrafficConfig,
    /// Where the judge's traffic data comes from (default: the traffic mover's counts).
    #[serde(default)]
    pub signals: SignalsConfig,
    /// Health checks run against each new release.
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
    /// When a release counts as bad (see the judge's policy keys).
    #[serde(default)]
    pub policy: Policy,
}

impl AppConfig {
    /// The component checks look at unless they name one: the first that takes traffic,
    /// else the first that listens.
    pub fn served_component(&self) -> Option<String> {
        self.traffic
            .components()
            .into_iter()
            .next()
            .or_else(|| self.backend.listening_components().into_iter().next())
    }
}

fn default_mode() -> Mode {
    Mode::BlueGreen
}

fn default_canary_weight() -> Fraction {
    Fraction(0.1)
}

fn default_bake() -> Span {
    Span::from_secs(600)
}

/// What a command needs of the `${NAME}` values the config refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Every value: commands that run the app or tell people (guard, `deploy --watch`,
    /// demo, validate). A variable that is not set is an error.
    Everything,
    /// Only where the records live (`data_dir`, `database`, `rollback_log`): commands that
    /// read or record (`versions`, `status`, `incidents`, ...) need not hold the app's
    /// secrets. Elsewhere, a variable that is not set leaves `${NAME}` as written.
    Records,
}

/// Reads, interpolates and validates the config at `path`.
pub fn load(path: &Path, needs: Needs) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UsageError(format!(
            "cannot read config {}: {e} (write one, see README.md, or pass --config)",
            path.display()
        ))
    })?;
    parse(path, &text, &|name| std::env::var(name).ok(), needs).map_err(|problems| {
        let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        UsageError(shown.join("\n")).into()
    })
}

/// A problem in the config, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// A problem a part of the config finds in itself: the keys below the part that lead to
/// it, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flaw {
    pub at: Vec<String>,
    pub message: String,
}

impl Flaw {
    pub fn at(keys: &[&str], message: impl Into<String>) -> Self {
        Self {
            at: keys.iter().map(|k| k.to_string()).collect(),
            message: message.into(),
        }
    }

    /// "KEY must be whole seconds, at least 1s" when `span`, at `keys`, is not.
    pub fn if_not_whole_seconds(keys: &[&str], span: Span) -> Option<Self> {
        let key = keys.last().copied().unwrap_or_default();
        let millis = span.as_millis();
        (millis == 0 || !millis.is_multiple_of(1000))
            .then(|| Self::at(keys, format!("{key} must be whole seconds, at least 1s")))
    }

    /// "KEY must be above 0s" when `span`, at `keys`, is zero.
    pub fn if_zero(keys: &[&str], span: Span) -> Option<Self> {
        let key = keys.last().copied().unwrap_or_default();
        (span.as_millis() == 0).then(|| Self::at(keys, format!("{key} must be above 0s")))
    }
}

/// Parses config text; `env` answers `${NAME}` look-ups. Returns every problem found.
///
/// Three passes: the text against the config's types (syntax, unknown keys and bad values,
/// located by serde-saphyr); `${NAME}` in every string of the document (located by key);
/// the typed config from the interpolated document. serde-saphyr's own interpolation is not
/// used: it skips quoted strings (or, in its Compose mode, turns an unset variable into an
/// empty string), and it cannot leave the variables a command does not need unresolved.
pub fn parse(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    needs: Needs,
) -> Result<Config, Vec<Problem>> {
    let file = path.display().to_string();
    let located = |error: serde_saphyr::Error| {
        let error = error.without_snippet();
        let location = error.location();
        vec![Problem {
            file: file.clone(),
            line: location.as_ref().map_or(1, |l| l.line()),
            column: location.as_ref().map_or(1, |l| l.column()),
            message: first_line(&error.to_string()),
        }]
    };
    // A value written as `${NAME}` gets its type once it is replaced: with `${` in the
    // text, a type error waits for the third pass, which reports it where this one found
    // it (serde places errors inside tagged blocks at the block).
    let deferred = match serde_saphyr::from_str::<Config>(text) {
        Ok(_) => None,
        Err(error) => {
            let problem = located(error).remove(0);
            if !text.contains("${") {
                return Err(vec![problem]);
            }
            Some(problem)
        }
    };
    let mut document: serde_json::Value = serde_saphyr::from_str(text).map_err(located)?;
    let locate = Locator { file: &file, text };
    let mut problems = Vec::new();
    interpolate(
        &mut document,
        &mut Vec::new(),
        env,
        needs,
        &locate,
        &mut problems,
    );
    // Re-read as YAML, not from the JSON tree, so scalars convert as in the first pass.
    let config: Config = serde_saphyr::to_string(&document)
        .map_err(|e| e.to_string())
        .and_then(|yaml| {
            serde_saphyr::from_str(&yaml).map_err(|e| first_line(&e.without_snippet().to_string()))
        })
        .map_err(|message| {
            let mut problems = problems.clone();
            let (line, column) = deferred.as_ref().map_or((1, 1), |p| (p.line, p.column));
            problems.push(Problem {
                file: file.clone(),
                line,
                column,
                message: format!("after replacing ${{NAME}} with its value: {message}"),
            });
            problems
        })?;
    validate(&config, &locate, &mut problems);
    if problems.is_empty() {
        let mut config = config;
        for app in config.apps.values_mut() {
            let served = app.served_component();
            for check in &mut app.checks {
                check.default_component(served.as_deref());
            }
        }
        Ok(config)
    } else {
        problems.sort_by_key(|p| (p.line, p.column));
        Err(problems)
    }
}

/// serde-saphyr's messages may repeat the location and add hints on later lines; keep
/// the message itself.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message).trim();
    line.split_once(" at line ")
        .map_or(line, |(head, _)| head)
        .to_string()
}

/// The top-level keys that say where the records live: every command needs their values.
const RECORD_KEYS: [&str; 3] = ["data_dir", "database", "rollback_log"];

/// Replaces `${NAME}` in every string of the document (mapping keys excepted).
fn interpolate(
    value: &mut serde_json::Value,
    path: &mut Vec<String>,
    env: &dyn Fn(&str) -> Option<String>,
    needs: Needs,
    locate: &Locator,
    problems: &mut Vec<Problem>,
) {
    match value {
        serde_json::Value::String(text) => match expand_env(text, env) {
            Ok(expanded) => *text = expanded,
            Err(name) => {
                let needed = needs == Needs::Everything
                    || path
                        .first()
                        .is_some_and(|k| RECORD_KEYS.contains(&k.as_str()));
                if needed {
                    let keys: Vec<&str> = path.iter().map(String::as_str).collect();
                    problems.push(locate.problem(
                        &keys,
                        format!("environment variable {name} is not set (or give a default: ${{{name}:-value}})"),
                    ));
                }
            }
        },
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                interpolate(item, path, env, needs, locate, problems);
                path.pop();
            }
        }
        serde_json::Value::Object(entries) => {
            for (key, item) in entries.iter_mut() {
                path.push(key.clone());
                interpolate(item, path, env, needs, locate, problems);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Expands `${NAME}`, `${NAME:-default}` (the default when unset or empty) and
/// `${NAME-default}` (the default when unset); `$${` stays a literal `${`. Returns the name
/// of a variable that is not set and has no default.
pub fn expand_env(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let Some(len) = rest[start + 2..].find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let reference = &rest[start + 2..start + 2 + len];
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some((default, true))),
            None => match reference.split_once('-') {
                Some((name, default)) => (name, Some((default, false))),
                None => (reference, None),
            },
        };
        let value = match (env(name), default) {
            (Some(value), Some((default, true))) if value.is_empty() => default.to_string(),
            (Some(value), _) => value,
            (None, Some((default, _))) => default.to_string(),
            (None, None) => return Err(name.to_string()),
        };
        out.push_str(&value);
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

fn validate(config: &Config, locate: &Locator, problems: &mut Vec<Problem>) {
    let mut add = |path: &[&str], message: String| problems.push(locate.problem(path, message));
    if let Some(database) = &config.database
        && !database.starts_with("sqlite:")
    {
        add(
            &["database"],
            "only SQLite databases are supported so far (sqlite://PATH); PostgreSQL is not yet"
                .into(),
        );
    }
    if !(1_000..=60_000).contains(&config.guard.tick.as_millis()) {
        add(
            &["guard", "tick"],
            format!("tick {} is out of range: 1s to 60s", config.guard.tick),
        );
    }
    if config.apps.is_empty() {
        add(
            &["apps"],
            "no apps defined: add at least one under `apps:`".into(),
        );
    }
    let mut addresses: BTreeMap<std::net::SocketAddr, String> = BTreeMap::new();
    for (app_name, app) in &config.apps {
        let app_path = ["apps", app_name.as_str()];
        let mut add_under = |prefix: &[&str], flaw: Flaw| {
            let keys: Vec<&str> = app_path
                .iter()
                .copied()
                .chain(prefix.iter().copied())
                .chain(flaw.at.iter().map(String::as_str))
                .collect();
            add(&keys, flaw.message);
        };
        if let Err(e) = names::check_name(app_name) {
            add_under(&[], Flaw::at(&[], format!("app name {e}")));
        }
        if app.mode == Mode::Canary && !(app.canary_weight.0 > 0.0 && app.canary_weight.0 < 1.0) {
            add_under(
                &[],
                Flaw::at(
                    &["canary_weight"],
                    "canary_weight must be between 0% and 100%, exclusive",
                ),
            );
        }
        for (keys, message) in app.policy.problems() {
            // At the key that is written, when only one of those concerned is.
            let key = keys
                .iter()
                .find(|key| {
                    locate
                        .find_exactly(&["apps", app_name, "policy", key])
                        .is_some()
                })
                .unwrap_or(&keys[0]);
            add_under(&["policy"], Flaw::at(&[key], message));
        }
        for flaw in app.backend.problems() {
            add_under(&[], flaw);
        }
        let listening = app.backend.listening_components();
        for flaw in app.traffic.problems(&listening) {
            add_under(&[], flaw);
        }
        for flaw in app.signals.problems(&listening) {
            add_under(&[], flaw);
        }
        for (component, address) in app.traffic.addresses() {
            if let Some(other) = addresses.insert(address, format!("{app_name}/{component}")) {
                add_under(
                    &[],
                    Flaw::at(
                        &["traffic", "listen", &component],
                        format!("{address} is already served for {other}"),
                    ),
                );
            }
        }
        for (i, check) in app.checks.iter().enumerate() {
            let index = i.to_string();
            for flaw in check.problems(&listening) {
                add_under(&["checks", &index], flaw);
            }
        }
    }
    for flaw in config
        .alertmanager
        .iter()
        .flat_map(|alertmanager| alertmanager.problems())
    {
        let keys: Vec<&str> = flaw.at.iter().map(String::as_str).collect();
        add(&keys, flaw.message);
    }
    for flaw in crate::notify::problems(&config.notifications) {
        let keys: Vec<&str> = std::iter::once("notifications")
            .chain(flaw.at.iter().map(String::as_str))
            .collect();
        add(&keys, flaw.message);
    }
}

/// Finds where a key path sits in the YAML text, so semantic problems carry a location too.
/// Written by hand because serde-saphyr exposes its path map only to validator crates: it
/// walks block-style mappings by indentation, which is how config files are written; a path
/// it cannot follow reports the deepest key it found.
struct Locator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Locator<'_> {
    fn problem(&self, path: &[&str], message: String) -> Problem {
        let (line, column) = self.find(path);
        Problem {
            file: self.file.to_string(),
            line,
            column,
            message,
        }
    }

    /// Where `path` is, when every key of it is written.
    fn find_exactly(&self, path: &[&str]) -> Option<(u64, u64)> {
        let (at, depth) = self.walk(path);
        (depth == path.len()).then_some(at)
    }

    /// Where `path` is, or the deepest part of it that is written.
    fn find(&self, path: &[&str]) -> (u64, u64) {
        self.walk(path).0
    }

    /// The location of the deepest key of `path` found, and how many keys were found.
    fn walk(&self, path: &[&str]) -> ((u64, u64), usize) {
        let lines: Vec<Line> = self.text.lines().map(Line::read).collect();
        let mut found = ((1, 1), 0);
        // The block searched: lines from `from` whose key sits at `min_indent` or deeper,
        // ended early by a sibling of the list item it is inside (`item_dash`).
        let (mut from, mut min_indent, mut item_dash) = (0usize, 0usize, None::<usize>);
        for segment in path {
            let wanted_index: Option<usize> = segment.parse().ok();
            let mut items_seen = 0usize;
            let mut child_indent = None;
            let mut next = None;
            for (i, line) in lines.iter().enumerate().skip(from) {
                let Some(key_indent) = line.key_indent else {
                    continue;
                };
                let ends_item = i > from && line.dash.is_some() && line.dash == item_dash;
                if key_indent < min_indent || ends_item {
                    break;
                }
                match wanted_index {
                    Some(n) if line.dash.is_some() => {
                        // Items of the list: those at the first dash indent met.
                        if *child_indent.get_or_insert(line.dash.unwrap_or(0))
                            != line.dash.unwrap_or(0)
                        {
                            continue;
                        }
                        if items_seen == n {
                            next = Some((i, key_indent, line.dash));
                            break;
                        }
                        items_seen += 1;
                    }
                    _ => {
                        // Keys of the mapping: those at the first indent met.
                        if *child_indent.get_or_insert(key_indent) != key_indent {
                            continue;
                        }
                        if line.key == *segment {
                            next = Some((i, key_indent, None));
                            break;
                        }
                    }
                }
            }
            let Some((i, indent, dash)) = next else { break };
            found = (((i + 1) as u64, (indent + 1) as u64), found.1 + 1);
            match dash {
                // Inside an item: its first key is on the dash's own line.
                Some(_) => (from, min_indent, item_dash) = (i, indent, dash),
                None => (from, min_indent, item_dash) = (i + 1, indent + 1, None),
            }
        }
        found
    }
}

/// One line of YAML as the locator sees it.
struct Line<'a> {
    /// Column of the line's key or value (past a `- `); None for blank and comment lines.
    key_indent: Option<usize>,
    /// Column of the `- ` of a list item.
    dash: Option<usize>,
    /// The mapping key on the line, if any.
    key: &'a str,
}

impl<'a> Line<'a> {
    fn read(text: &'a str) -> Self {
        let content = text.trim_start();
        if content.is_empty() || content.starts_with('#') {
            return Self {
                key_indent: None,
                dash: None,
                key: "",
            };
        }
        let indent = text.len() - content.len();
        let (dash, content, key_indent) = match content.strip_prefix("- ") {
            Some(rest) => {
                let rest_trimmed = rest.trim_start();
                let offset = 2 + rest.len() - rest_trimmed.len();
                (Some(indent), rest_trimmed, indent + offset)
            }
            None => (None, content, indent),
        };
        let key = content.split_once(':').map_or("", |(key, _)| {
            key.trim().trim_matches('"').trim_matches('\'')
        });
        Self {
            key_indent: Some(key_indent),
            dash,
            key,
        }
    }
}

/// Reads a YAML file holding only policy keys (as under an app's `policy:`).
pub fn read_policy_file(path: &Path) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read policy {}: {e}", path.display())))?;
    let policy: Policy = serde_saphyr::from_str(&text).map_err(|error| {
        let error = error.without_snippet();
        let (line, column) = error.location().map_or((1, 1), |l| (l.line(), l.column()));
        UsageError(format!(
            "{}:{line}:{column}: {}",
            path.display(),
            first_line(&error.to_string())
        ))
    })?;
    let problems: Vec<String> = policy.problems().into_iter().map(|(_, p)| p).collect();
    if !problems.is_empty() {
        return Err(UsageError(format!("{}: {}", path.display(), problems.join("; "))).into());
    }
    Ok(policy)
}

impl Config {
    /// The directory everything relative in the config is taken from.
    pub fn resolve(&self, config_path: &Path, relative: &Path) -> PathBuf {
        let base = config_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let path: PathBuf = base
            .join(relative)
            .components()
            .filter(|c| *c != std::path::Component::CurDir)
            .collect();
        // `./.` cleans to an empty path, which no process can run in.
        if path.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            path
        }
    }

    pub fn data_dir(&self, config_path: &Path) -> PathBuf {
        self.resolve(config_path, &self.data_dir)
    }

    pub fn database_url(&self, config_path: &Path) -> String {
        self.database.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.data_dir(config_path).join("rearguard.db").display()
            )
        })
    }

    pub fn rollback_log(&self, config_path: &Path) -> PathBuf {
        match &self.rollback_log {
            Some(path) => self.resolve(config_path, path),
            None => self.data_dir(config_path).join("rollback-metrics.jsonl"),
        }
    }

    pub fn app(&self, name: &str) -> Result<&AppConfig, UsageError> {
        self.apps.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.apps.keys().map(String::as_str).collect();
            UsageError(format!(
                "unknown app {name:?}; the config defines: {}",
                known.join(", ")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            "DATA" => Some("/srv/rg".into()),
            _ => None,
        }
    }

    fn parse_text(text: &str) -> Result<Config, Vec<Problem>> {
        parse(Path::new("r.yaml"), text, &env, Needs::Everything)
    }

    fn parse_for_records(text: &str) -> Result<Config, Vec<Problem>> {
        parse(Path::new("r.yaml"), text, &env, Needs::Records)
    }

    /// The problems' messages, each as `line: message`.
    fn problems(text: &str) -> Vec<String> {
        parse_text(text)
            .unwrap_err()
            .iter()
            .map(|p| format!("{}: {}", p.line, p.message))
            .collect()
    }

    const GOOD: &str = "apps:
  shop:
    traffic:
      kind: router
      listen:
        web: 8080
    backend:
      components:
        web:
          command: [\"./shop\", \"--port\", \"{port}\"]
          env:
            API_TOKEN: \"${TOKEN}\"
      kind: process
";

    fn process(config: &Config) -> &crate::backends::process::ProcessConfig {
        match &config.apps["shop"].backend {
            crate::backends::BackendConfig::Process(process) => process,
            other => panic!("not a process backend: {other:?}"),
        }
    }

    #[test]
    fn a_good_config_parses_and_interpolates() {
        let config = parse_text(GOOD).unwrap();
        let web = &process(&config).components["web"];
        assert_eq!(web.env["API_TOKEN"], "s3cret");
        assert_eq!(config.apps["shop"].bake, Span::from_secs(600));
    }

    #[test]
    fn the_guards_tick_defaults_to_a_second_and_is_kept_within_a_minute() {
        assert_eq!(parse_text(GOOD).unwrap().guard.tick, Span::from_secs(1));
        let ten = format!("guard:\n  tick: 10s\n{GOOD}");
        assert_eq!(parse_text(&ten).unwrap().guard.tick, Span::from_secs(10));
        for (tick, shown) in [("500ms", "500ms"), ("2m", "120s")] {
            let text = format!("guard:\n  tick: {tick}\n{GOOD}");
            assert_eq!(
                problems(&text),
                vec![format!("2: tick {shown} is out of range: 1s to 60s")]
            );
        }
    }

    #[test]
    fn unknown_keys_are_errors_with_a_location() {
        let text = GOOD.replace("    backend:", "    colour: blue\n    backend:");
        let problems = parse_text(&text).unwrap_err();
        assert_eq!(problems.len(), 1);
        let p = &problems[0];
        assert_eq!((p.line, p.file.as_str()), (7, "r.yaml"), "{p}");
        assert!(p.message.contains("colour"), "{p}");
    }

    #[test]
    fn every_semantic_problem_is_reported_with_its_line() {
        let text = GOOD.replace("${TOKEN}", "${MISSING}").replace(
            "kind: process",
            "kind: process\n    policy:\n      p95_ratio: 0.5",
        );
        let problems = parse_text(&text).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].to_string().starts_with("r.yaml:12:"),
            "{}",
            problems[0]
        );
        assert!(problems[0].message.contains("MISSING"));
        assert!(
            problems[1].to_string().starts_with("r.yaml:15:"),
            "at p95_ratio, not its parent: {}",
            problems[1]
        );
    }

    #[test]
    fn the_example_config_in_the_repository_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/rearguard.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        // Every variable it names is set (to its own name, for the test).
        let env = |name: &str| Some(name.to_lowercase());
        let config = parse(&path, &text, &env, Needs::Everything)
            .unwrap_or_else(|problems| panic!("{problems:?}"));
        let shop = &config.apps["shop"];
        assert_eq!(shop.bake, Span::from_secs(600));
        assert_eq!(
            shop.policy,
            rearguard_judge::Policy::default(),
            "the example shows the defaults"
        );
    }

    #[test]
    fn the_readme_starts_with_its_two_commands_and_reproduces_the_example_config() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let example = std::fs::read_to_string(root.join("examples/rearguard.yaml")).unwrap();
        assert!(
            readme.contains(&format!("```yaml\n{example}```")),
            "README.md must reproduce examples/rearguard.yaml verbatim"
        );
        let first_block = readme.split("```sh\n").nth(1).unwrap();
        let commands: Vec<&str> = first_block.lines().take(2).collect();
        assert!(
            commands[0].starts_with("cargo run --release -- demo"),
            "{commands:?}"
        );
        assert!(commands[1].starts_with("scripts/test.sh"), "{commands:?}");
    }

    #[test]
    fn the_platform_examples_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        // Every variable without a default is set; those with one take it.
        let env = |name: &str| {
            (!["DEMO_PORT", "DEMO_IMAGE", "KUBECONFIG"].contains(&name))
                .then(|| format!("<{name}>"))
        };
        for example in [
            "hooks/vercel.yaml",
            "hooks/github-actions.yaml",
            "hooks/kubectl.yaml",
            "compose/rearguard.yaml",
            "kubernetes/rearguard.yaml",
        ] {
            let path = root.join(example);
            let text = std::fs::read_to_string(&path).unwrap();
            parse(&path, &text, &env, Needs::Everything)
                .unwrap_or_else(|problems| panic!("{example}: {problems:?}"));
        }
    }

    #[test]
    fn paths_resolve_beside_the_config_even_when_it_is_relative() {
        let config = parse_text(GOOD).unwrap();
        assert_eq!(
            config.resolve(Path::new("rearguard.yaml"), Path::new(".")),
            PathBuf::from(".")
        );
        assert_eq!(
            config.data_dir(Path::new("rearguard.yaml")),
            PathBuf::from(".rearguard")
        );
        assert_eq!(
            config.data_dir(Path::new("/srv/shop/rearguard.yaml")),
            PathBuf::from("/srv/shop/.rearguard")
        );
    }

    #[test]
    fn env_expansion_handles_defaults_escapes_and_missing_names() {
        assert_eq!(expand_env("x${TOKEN}y", &env).unwrap(), "xs3crety");
        assert_eq!(expand_env("$${TOKEN}", &env).unwrap(), "${TOKEN}");
        assert_eq!(expand_env("${B}", &env).unwrap_err(), "B");
        assert_eq!(expand_env("${B:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand_env("${B-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand_env("${EMPTY:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(expand_env("${EMPTY-dflt}", &env).unwrap(), "");
        assert_eq!(expand_env("${TOKEN:-dflt}", &env).unwrap(), "s3cret");
    }

    #[test]
    fn every_string_field_interpolates_including_where_the_records_live() {
        let text = format!(
            "data_dir: \"${{DATA}}/state\"\n{}",
            GOOD.replace("./shop", "${BIN:-./shop}").replace(
                "          env:",
                "          ready_path: ${READY:-/health}\n          env:"
            )
        );
        let config = parse_text(&text).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/srv/rg/state"));
        let web = &process(&config).components["web"];
        assert_eq!(web.command[0], "./shop");
        assert_eq!(web.ready_path.as_deref(), Some("/health"));
    }

    #[test]
    fn a_typed_value_may_come_from_the_environment_and_a_bad_one_is_located() {
        let text = GOOD.replace("web: 8080", "web: \"${PORT:-8081}\"");
        let config = parse_text(&text).unwrap();
        assert_eq!(
            config.apps["shop"].traffic.addresses()[0].1,
            "127.0.0.1:8081".parse().unwrap()
        );
        let text = GOOD.replace("web: 8080", "web: \"${PORT:-eighty}\"");
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("4: after replacing ${NAME} with its value: expected a port"),
            "{found:?}"
        );
    }

    #[test]
    fn commands_that_only_read_records_do_not_need_the_apps_secrets() {
        let text = GOOD.replace("${TOKEN}", "${SHOP_SECRET}");
        let config = parse_for_records(&text).unwrap();
        assert_eq!(
            process(&config).components["web"].env["API_TOKEN"],
            "${SHOP_SECRET}",
            "left as written"
        );
        assert_eq!(
            problems(&text),
            [
                "12: environment variable SHOP_SECRET is not set (or give a default: ${SHOP_SECRET:-value})"
            ]
        );
        // Where the records live, every command needs the value.
        let text = format!("data_dir: ${{NOWHERE}}\n{GOOD}");
        assert_eq!(parse_for_records(&text).unwrap_err()[0].line, 1);
    }

    #[test]
    fn semantic_problems_point_at_the_offending_key() {
        let text = GOOD.replace(
            "kind: process",
            "kind: process\n      ready_timeout: 0s\n    policy:\n      warmup: 10s\n      p95_ratio: 0.5\n    checks:\n      - kind: http\n        name: health\n        path: health\n        warn_above_ms: 500",
        );
        let found = problems(&text);
        assert!(
            found.contains(&"14: ready_timeout must be above 0s".to_string()),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("17: p95_ratio_tolerated")),
            "the policy key, not `policy:`: {found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("21: check health: path")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("22: check health: warn_above_ms is now warn_above")),
            "{found:?}"
        );
    }

    #[test]
    fn a_bare_number_is_seconds_and_milliseconds_are_kept() {
        let text = GOOD.replace(
            "kind: process",
            "kind: process\n      stop_grace: 300ms\n    policy:\n      max_p95: 2\n    checks:\n      - {kind: http, name: h, timeout: 0.25, warn_above: 150ms}",
        );
        let config = parse_text(&text).unwrap();
        let shop = &config.apps["shop"];
        assert_eq!(
            shop.policy.max_p95,
            Some(Span::from_secs(2)),
            "2 seconds, not 2 ms"
        );
        assert_eq!(
            process(&config).stop_grace,
            Span::from_millis(300),
            "not rounded up to 1 s"
        );
        let crate::checks::CheckConfig::Http(check) = &shop.checks[0] else {
            panic!("an http check")
        };
        assert_eq!(
            (check.timeout, check.warn_above),
            (Span::from_millis(250), Some(Span::from_millis(150)))
        );
    }

    #[test]
    fn a_postgres_database_is_refused_until_it_is_supported() {
        let text = format!("database: postgres://rg@db/rg\n{GOOD}");
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("1: only SQLite"), "{found:?}");
    }

    #[test]
    fn notifications_that_would_page_no_one_are_problems() {
        let text = format!(
            "{GOOD}notifications:
  channels:
    slack: {{kind: slack, url: \"http://x\"}}
    unused: {{kind: webhook, url: \"http://y\"}}
  escalation:
    - after: 0m
      channels: [slack, pager]
  templates:
    resolved: \"{{{{ app | nosuchfilter }}}}\"
    rollback_doen: \"typo\"
    escalated: \"{{% if %}}\"
"
        );
        let found = problems(&text);
        for (line, expected) in [
            (17, "channel unused is in no escalation level"),
            (20, "escalation level 1: unknown channel \"pager\""),
            (22, "template resolved does not render"),
            (23, "unknown template \"rollback_doen\""),
            (24, "template escalated does not render"),
        ] {
            assert!(
                found
                    .iter()
                    .any(|p| p.starts_with(&format!("{line}: {expected}"))),
                "{expected:?} at line {line} in {found:#?}"
            );
        }
        assert_eq!(found.len(), 5, "{found:#?}");
    }
}
