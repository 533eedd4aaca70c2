//! The config file (`rearguard.yaml`): apps, their components, backend, checks and policy.
//! Parsing, `${ENV}` interpolation and validation live here; every problem is reported at
//! once, each with file:line:column. Nothing here starts or touches anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rearguard_judge::{Fraction, Mode, Policy, Seconds};
use serde::{Deserialize, Serialize};

use crate::UsageError;
use crate::backends::BackendConfig;
use crate::checks::CheckConfig;
use crate::names;
use crate::notify::NotificationsConfig;

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
    pub bake: Seconds,
    /// The app's parts, by name; each runs at the same version.
    pub components: BTreeMap<String, ComponentConfig>,
    /// How versions are deployed and rolled back.
    pub backend: BackendConfig,
    /// Health checks run against each new release.
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
    /// When a release counts as bad (see the judge's policy keys).
    #[serde(default)]
    pub policy: Policy,
}

fn default_mode() -> Mode {
    Mode::BlueGreen
}

fn default_canary_weight() -> Fraction {
    Fraction(0.1)
}

fn default_bake() -> Seconds {
    Seconds(600)
}

/// One component of an app.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// Port on 127.0.0.1 where the built-in router serves this component (its public
    /// port). Omit for components that take no HTTP traffic.
    #[serde(default)]
    pub public_port: Option<u16>,
    /// Process backend: the command running one instance, as a list (no shell).
    /// Placeholders: `{port}`, `{version}`, `{component}`, `{app}`.
    #[serde(default)]
    pub command: Vec<String>,
    /// Extra environment for the command; values may use `${ENV}`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// HTTP path polled until it answers 2xx before an instance takes traffic; without it,
    /// a TCP connect to the port is enough.
    #[serde(default)]
    pub ready_path: Option<String>,
}

/// Reads, interpolates and validates the config at `path`.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UsageError(format!(
            "cannot read config {}: {e} (write one, see README.md, or pass --config)",
            path.display()
        ))
    })?;
    parse(path, &text, &|name| std::env::var(name).ok()).map_err(|problems| {
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

/// Parses config text; `env` answers `${NAME}` look-ups. Returns every problem found.
pub fn parse(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<Problem>> {
    let file = path.display().to_string();
    let mut config: Config = serde_saphyr::from_str(text).map_err(|error| {
        let error = error.without_snippet();
        let location = error.location();
        vec![Problem {
            file: file.clone(),
            line: location.as_ref().map_or(1, |l| l.line()),
            column: location.as_ref().map_or(1, |l| l.column()),
            message: first_line(&error.to_string()),
        }]
    })?;
    let locate = Locator { file: &file, text };
    let mut problems = Vec::new();
    interpolate(&mut config, env, &locate, &mut problems);
    validate(&config, &locate, &mut problems);
    if problems.is_empty() {
        Ok(config)
    } else {
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

/// Replaces `${NAME}` in the fields that may carry secrets or host-specific values.
/// Notification secrets are left for the guard (`resolve_notification_secrets`): other
/// commands need not hold them.
fn interpolate(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
    locate: &Locator,
    problems: &mut Vec<Problem>,
) {
    let mut expand = |value: &mut String, path: &[&str]| match expand_env(value, env) {
        Ok(expanded) => *value = expanded,
        Err(name) => {
            problems.push(locate.problem(path, format!("environment variable {name} is not set")))
        }
    };
    if let Some(database) = config.database.as_mut() {
        expand(database, &["database"]);
    }

    for (app_name, app) in config.apps.iter_mut() {
        for (component_name, component) in app.components.iter_mut() {
            for arg in component.command.iter_mut() {
                expand(
                    arg,
                    &["apps", app_name, "components", component_name, "command"],
                );
            }
            for (key, value) in component.env.iter_mut() {
                expand(
                    value,
                    &["apps", app_name, "components", component_name, "env", key],
                );
            }
        }
    }
}

/// Expands `${NAME}` occurrences; `$${` stays a literal `${`. Returns the missing name.
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
        let name = &rest[start + 2..start + 2 + len];
        out.push_str(&env(name).ok_or_else(|| name.to_string())?);
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

fn validate(config: &Config, locate: &Locator, problems: &mut Vec<Problem>) {
    let mut add = |path: &[&str], message: String| problems.push(locate.problem(path, message));
    if config.apps.is_empty() {
        add(
            &["apps"],
            "no apps defined: add at least one under `apps:`".into(),
        );
    }
    let mut public_ports: BTreeMap<u16, String> = BTreeMap::new();
    for (app_name, app) in &config.apps {
        let app_path = ["apps", app_name.as_str()];
        let under = |key: &'static str| [app_path[0], app_path[1], key];
        if let Err(e) = names::check_name(app_name) {
            add(&app_path, format!("app name {e}"));
        }
        if app.components.is_empty() {
            add(
                &under("components"),
                "an app needs at least one component".into(),
            );
        }
        if app.mode == Mode::Canary && !(app.canary_weight.0 > 0.0 && app.canary_weight.0 < 1.0) {
            add(
                &under("canary_weight"),
                "canary_weight must be between 0% and 100%, exclusive".into(),
            );
        }
        for problem in app.policy.problems() {
            add(&under("policy"), problem);
        }
        for (component_name, component) in &app.components {
            let component_path = ["apps", app_name, "components", component_name];
            let field = |key: &'static str| {
                [
                    component_path[0],
                    component_path[1],
                    component_path[2],
                    component_path[3],
                    key,
                ]
            };
            if let Err(e) = names::check_name(component_name) {
                add(&component_path, format!("component name {e}"));
            }
            if let Some(port) = component.public_port
                && let Some(other) =
                    public_ports.insert(port, format!("{app_name}/{component_name}"))
            {
                add(
                    &field("public_port"),
                    format!("public_port {port} is already used by {other}"),
                );
            }
            if let Some(ready) = component
                .ready_path
                .as_ref()
                .filter(|path| !path.starts_with('/'))
            {
                add(
                    &field("ready_path"),
                    format!("ready_path must start with '/', got {ready:?}"),
                );
            }
        }
        for problem in app.backend.problems(app) {
            add(&under("backend"), problem);
        }
        for (i, check) in app.checks.iter().enumerate() {
            let index = i.to_string();
            for problem in check.problems(app) {
                add(&[app_path[0], app_path[1], "checks", &index], problem);
            }
        }
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

    fn find(&self, path: &[&str]) -> (u64, u64) {
        let lines: Vec<&str> = self.text.lines().collect();
        let (mut found, mut from, mut min_indent) = ((1, 1), 0usize, 0usize);
        for segment in path {
            let mut next = None;
            let mut list_index = 0usize;
            let wanted_index: Option<usize> = segment.parse().ok();
            for (i, line) in lines.iter().enumerate().skip(from) {
                let indent = line.len() - line.trim_start().len();
                let content = line.trim_start();
                if content.is_empty() || content.starts_with('#') {
                    continue;
                }
                if indent < min_indent
                    || (i > from && indent == min_indent.saturating_sub(1) && min_indent > 0)
                {
                    break;
                }
                let is_item = content.starts_with("- ");
                let key = content
                    .trim_start_matches("- ")
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches('"');
                let matches = match wanted_index {
                    Some(n) if is_item => {
                        list_index += 1;
                        list_index - 1 == n
                    }
                    _ => key == *segment && content.trim_start_matches("- ").contains(':'),
                };
                if matches {
                    next = Some((i, indent + if is_item { 2 } else { 0 }));
                    break;
                }
            }
            let Some((i, indent)) = next else { break };
            found = ((i + 1) as u64, (indent + 1) as u64);
            from = i + 1;
            min_indent = indent + 1;
        }
        found
    }
}

/// Expands `${NAME}` in the notification channels' secrets; the names of missing variables
/// otherwise.
pub fn resolve_notification_secrets(
    config: &mut NotificationsConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Vec<String>> {
    let mut missing = Vec::new();
    for (name, channel) in config.channels.iter_mut() {
        for secret in channel.secrets_mut() {
            match expand_env(secret.expose(), env) {
                Ok(value) => *secret.expose_mut() = value,
                Err(variable) => missing.push(format!(
                    "channel {name}: environment variable {variable} is not set"
                )),
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
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
    let problems = policy.problems();
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

    fn parse_text(text: &str) -> Result<Config, Vec<Problem>> {
        parse(Path::new("r.yaml"), text, &|name| {
            (name == "TOKEN").then(|| "s3cret".to_string())
        })
    }

    const GOOD: &str = "apps:
  shop:
    components:
      web:
        public_port: 8080
        command: [\"./shop\", \"--port\", \"{port}\"]
        env:
          API_TOKEN: \"${TOKEN}\"
    backend:
      kind: process
";

    #[test]
    fn a_good_config_parses_and_interpolates() {
        let config = parse_text(GOOD).unwrap();
        let web = &config.apps["shop"].components["web"];
        assert_eq!(web.env["API_TOKEN"], "s3cret");
        assert_eq!(config.apps["shop"].bake, Seconds(600));
    }

    #[test]
    fn unknown_keys_are_errors_with_a_location() {
        let text = GOOD.replace("    backend:", "    colour: blue\n    backend:");
        let problems = parse_text(&text).unwrap_err();
        assert_eq!(problems.len(), 1);
        let p = &problems[0];
        assert_eq!((p.line, p.file.as_str()), (9, "r.yaml"), "{p}");
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
            problems[0].to_string().starts_with("r.yaml:8:"),
            "{}",
            problems[0]
        );
        assert!(problems[0].message.contains("MISSING"));
        assert!(
            problems[1].to_string().starts_with("r.yaml:11:"),
            "{}",
            problems[1]
        );
    }

    #[test]
    fn the_example_config_in_the_repository_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/rearguard.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let env = |name: &str| (name == "SHOP_API_TOKEN").then(|| "t0ken".to_string());
        let config = parse(&path, &text, &env).unwrap_or_else(|problems| panic!("{problems:?}"));
        let shop = &config.apps["shop"];
        assert_eq!(shop.bake, Seconds(600));
        assert_eq!(
            shop.policy,
            rearguard_judge::Policy::default(),
            "the example shows the defaults"
        );
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
    fn env_expansion_handles_escapes_and_missing_names() {
        let env = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(expand_env("x${A}y", &env).unwrap(), "x1y");
        assert_eq!(expand_env("$${A}", &env).unwrap(), "${A}");
        assert_eq!(expand_env("${B}", &env).unwrap_err(), "B");
    }
}
