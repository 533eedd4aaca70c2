//! Running a configured command (an argv, no shell) the way every kind that runs one does:
//! a clean environment (PATH and the variables its config names), bounded in time, killed
//! when abandoned, its output kept with those variables' values redacted.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use rearguard_judge::Span;

use crate::telemetry;

/// How a command ended.
pub struct Ran {
    /// Its exit code; `None` when it did not run, did not end in time or was killed.
    pub code: Option<i32>,
    /// "exit status: 1", "no end within 5s", "cannot run ...".
    pub outcome: String,
    /// Its stdout then stderr, the named variables' values redacted.
    pub output: String,
}

impl Ran {
    pub fn succeeded(&self) -> bool {
        self.code == Some(0)
    }

    /// The last line it wrote, for a one-line reason.
    pub fn last_line(&self) -> &str {
        self.output.trim().lines().last().unwrap_or("")
    }
}

/// Runs `args` in `dir` with PATH, `env` and `more` as its whole environment, for at most
/// `timeout`.
pub async fn run(
    args: &[String],
    env: &BTreeMap<String, String>,
    more: &[(&str, &str)],
    dir: &Path,
    timeout: Span,
) -> Ran {
    let Some((program, rest)) = args.split_first() else {
        return Ran {
            code: None,
            outcome: "no command".into(),
            output: String::new(),
        };
    };
    let run = tokio::process::Command::new(program)
        .args(rest)
        .env_clear()
        .envs(std::env::var_os("PATH").map(|path| ("PATH", path)))
        .envs(env)
        .envs(more.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let (code, outcome, output) = match tokio::time::timeout(timeout.std(), run).await {
        Err(_) => (None, format!("no end within {timeout}"), String::new()),
        Ok(Err(e)) => (None, format!("cannot run {program:?}: {e}"), String::new()),
        Ok(Ok(output)) => (
            output.status.code(),
            output.status.to_string(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        ),
    };
    let secrets: Vec<&str> = env.values().map(String::as_str).collect();
    Ran {
        code,
        outcome,
        output: telemetry::redact_secrets(&output, &secrets),
    }
}
