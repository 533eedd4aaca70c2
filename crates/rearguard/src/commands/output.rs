//! How commands talk to people: progress that is a spinner on a terminal and plain lines
//! anywhere else (a log file, CI), and tables with borders only on a terminal, so what a
//! script or a log keeps is plain text.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};

use crate::clock::Stopwatch;

/// Progress on stderr.
pub enum Status {
    Spinner(ProgressBar),
    /// Not a terminal: the last line shown and when, so a changing status is printed at
    /// most every `LINE_EVERY`.
    Lines(Mutex<(String, Option<Stopwatch>)>),
}

/// A status that keeps changing is printed this often at most when not on a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

impl Status {
    /// A spinner (with the elapsed time when `elapsed`) on a terminal, lines elsewhere.
    pub fn new(elapsed: bool) -> Self {
        if !std::io::stderr().is_terminal() || crate::telemetry::json_stderr() {
            return Status::Lines(Mutex::new((String::new(), None)));
        }
        let template = if elapsed {
            "{spinner} {elapsed} {msg}"
        } else {
            "{spinner} {msg}"
        };
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
        bar.enable_steady_tick(Duration::from_millis(120));
        Status::Spinner(bar)
    }

    /// A line that stays.
    pub fn say(&self, line: &str) {
        match self {
            Status::Spinner(bar) => bar.println(line),
            Status::Lines(_) => crate::say!("{line}"),
        }
    }

    /// What is going on now (replaces the previous status).
    pub fn show(&self, text: &str) {
        match self {
            Status::Spinner(bar) => bar.set_message(text.to_string()),
            Status::Lines(last) => {
                let mut last = last.lock().expect("lock");
                let due = last.1.is_none_or(|shown| shown.elapsed() >= LINE_EVERY);
                if last.0 != text && due {
                    crate::say!("{text}");
                    *last = (text.to_string(), Some(Stopwatch::start()));
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Status::Spinner(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// A table with `header`: borders on a terminal, plain columns anywhere else.
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    let preset = if std::io::stdout().is_terminal() {
        comfy_table::presets::UTF8_FULL_CONDENSED
    } else {
        comfy_table::presets::NOTHING
    };
    table.load_preset(preset).set_header(header);
    table
}
