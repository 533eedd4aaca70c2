//! Command check: a program (argv, no shell) judges the release, as monitoring plugins do:
//! exit 0 passes, 1 warns, anything else (or no end in time) fails.

use std::collections::BTreeMap;

use rearguard_judge::Span;
use serde::{Deserialize, Serialize};

use super::{Check, Health, Subject, component_problem, default_failures, default_timeout};
use crate::config::Flaw;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandCheck {
    pub name: String,
    /// The argv. Placeholders: `{app}`, `{version}`, `{address}` (the component's
    /// `IP:PORT`).
    pub command: Vec<String>,
    /// The component `{address}` names (default: the first that has a public port).
    #[serde(default)]
    pub component: Option<String>,
    /// Its whole environment beside PATH (write secrets as `${NAME}`: their values are
    /// redacted from what it prints).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    #[serde(default = "default_failures")]
    pub failures: u32,
}

const PLACEHOLDERS: [&str; 3] = ["{app}", "{version}", "{address}"];

#[async_trait::async_trait]
impl Check for CommandCheck {
    common_check_methods!(component);

    fn problems(&self, listening: &[String]) -> Vec<Flaw> {
        let name = &self.name;
        let mut problems: Vec<Flaw> = component_problem(name, self.component.as_ref(), listening)
            .into_iter()
            .collect();
        if self.command.is_empty() {
            problems.push(Flaw::at(
                &["command"],
                format!("check {name}: give the command as a list: [program, arg, ...]"),
            ));
        }
        for arg in &self.command {
            let mut rest = arg.as_str();
            while let Some(start) = rest.find('{') {
                let Some(end) = rest[start..].find('}') else {
                    break;
                };
                let placeholder = &rest[start..start + end + 1];
                if !PLACEHOLDERS.contains(&placeholder) {
                    problems.push(Flaw::at(
                        &["command"],
                        format!(
                            "check {name}: unknown placeholder {placeholder}; use {}",
                            PLACEHOLDERS.join(", ")
                        ),
                    ));
                }
                rest = &rest[start + end + 1..];
            }
        }
        problems
    }

    async fn look(&self, subject: &Subject<'_>) -> (Health, String) {
        let address = super::endpoint(self.component.as_deref(), subject)
            .map(|a| a.to_string())
            .unwrap_or_default();
        // Versions and app names are a closed alphabet (checked before they are recorded),
        // and no shell reads the argv: nothing can be injected.
        let args: Vec<String> = self
            .command
            .iter()
            .map(|arg| {
                arg.replace("{app}", subject.app)
                    .replace("{version}", &subject.instances.version)
                    .replace("{address}", &address)
            })
            .collect();
        let ran = crate::argv::run(&args, &self.env, &[], subject.config_dir, self.timeout).await;
        let detail = match ran.last_line() {
            "" => ran.outcome.clone(),
            line => format!("{}: {line}", ran.outcome),
        };
        let health = match ran.code {
            Some(0) => Health::Pass,
            Some(1) => Health::Warn,
            _ => Health::Fail,
        };
        (health, detail)
    }
}
