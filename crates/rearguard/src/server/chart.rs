//! The dashboard's charts: error rate, p95 and traffic per version over the last minutes,
//! from the per-second counts in the ledger, as SVG polylines (hand-written: three lines
//! of arithmetic need no plotting crate), with deploy and rollback markers.

use std::collections::BTreeMap;

use rearguard_judge::Counts;
use serde::Serialize;

use crate::ledger::{Ledger, LedgerError, Release, Rollback};

/// How far back the charts look at most.
const MINUTES: i64 = 15;
/// The shortest span charted, in seconds: a new app's first minute fills the width.
const MIN_SPAN: i64 = 60;
/// Points per line at most: seconds are summed into this many buckets.
const POINTS: i64 = 90;
const WIDTH: f64 = 360.0;
const HEIGHT: f64 = 120.0;
/// Versions charted: the most recent releases'.
const VERSIONS: usize = 4;
const COLOURS: [&str; VERSIONS] = ["#1a7f37", "#9a6700", "#8250df", "#0969da"];

#[derive(Serialize)]
pub struct Chart {
    minutes: i64,
    width: f64,
    height: f64,
    versions: Vec<Legend>,
    markers: Vec<Marker>,
    panels: Vec<Panel>,
}

#[derive(Serialize)]
struct Legend {
    version: String,
    colour: &'static str,
}

#[derive(Serialize)]
struct Marker {
    x: String,
    colour: &'static str,
    label: String,
}

#[derive(Serialize)]
struct Panel {
    title: &'static str,
    max_label: String,
    lines: Vec<Line>,
}

#[derive(Serialize)]
struct Line {
    colour: &'static str,
    /// Runs of points without a gap, each "x,y x,y ..." (numbers only): a version that
    /// took no traffic for a while is not drawn as if it had.
    runs: Vec<String>,
}

/// One panel's quantity from a bucket's counts and its length in seconds.
type Measure = fn(&Counts, f64) -> Option<f64>;
/// A panel: its title, what it measures, how its maximum reads.
type PanelSpec = (&'static str, Measure, fn(f64) -> String);

impl Chart {
    pub async fn load(
        ledger: &Ledger,
        app: &str,
        releases: &[Release],
        rollbacks: &[Rollback],
    ) -> Result<Self, LedgerError> {
        let to = ledger.now() / 1000;
        let mut versions: Vec<&str> = Vec::new();
        for release in releases {
            if versions.len() < VERSIONS && !versions.contains(&release.version.as_str()) {
                versions.push(&release.version);
            }
        }
        let mut steps = Vec::new();
        for version in &versions {
            steps.push(ledger.steps(app, version, to - MINUTES * 60, to).await?);
        }
        // From the oldest data shown, so a short history is not squeezed into a corner.
        let oldest = steps.iter().flatten().map(|s| s.t).min().unwrap_or(to);
        let from = oldest.min(to - MIN_SPAN);
        let bucket_seconds = ((to - from) / POINTS).max(1);
        let x = |t: i64| format!("{:.1}", (t - from) as f64 / (to - from) as f64 * WIDTH);
        let buckets: Vec<BTreeMap<i64, Counts>> = steps
            .iter()
            .map(|steps| {
                let mut by_bucket: BTreeMap<i64, Counts> = BTreeMap::new();
                for step in steps {
                    let bucket = step.t - step.t.rem_euclid(bucket_seconds);
                    by_bucket.entry(bucket).or_default().add(&step.counts);
                }
                by_bucket
            })
            .collect();
        let panels: [PanelSpec; 3] = [
            (
                "error rate",
                |c, _| c.error_rate().map(|r| r * 100.0),
                |v| format!("{v:.1}%"),
            ),
            (
                "p95 latency",
                |c, _| c.latency.quantile_ms(0.95),
                |v| format!("{v:.0} ms"),
            ),
            (
                "traffic",
                |c, seconds| Some(c.requests as f64 / seconds),
                |v| format!("{v:.1} req/s"),
            ),
        ];
        let panels = panels
            .into_iter()
            .map(|(title, measure, label)| {
                let values: Vec<Vec<(i64, f64)>> = buckets
                    .iter()
                    .map(|by_bucket| {
                        by_bucket
                            .iter()
                            .filter_map(|(t, counts)| {
                                Some((*t, measure(counts, bucket_seconds as f64)?))
                            })
                            .collect()
                    })
                    .collect();
                let max = values
                    .iter()
                    .flatten()
                    .map(|(_, v)| *v)
                    .fold(0.0_f64, f64::max)
                    .max(f64::MIN_POSITIVE);
                let lines = values
                    .iter()
                    .zip(COLOURS)
                    .map(|(points, colour)| Line {
                        colour,
                        runs: points
                            .chunk_by(|(a, _), (b, _)| b - a <= bucket_seconds)
                            .map(|run| {
                                let y = |v: f64| HEIGHT - 2.0 - v / max * (HEIGHT - 4.0);
                                let xy: Vec<String> = run
                                    .iter()
                                    .map(|(t, v)| format!("{},{:.1}", x(*t), y(*v)))
                                    .collect();
                                xy.join(" ")
                            })
                            .collect(),
                    })
                    .collect();
                Panel {
                    title,
                    max_label: label(max),
                    lines,
                }
            })
            .collect();
        let in_window = |ms: i64| (from..=to).contains(&(ms / 1000));
        let mut markers: Vec<Marker> = releases
            .iter()
            .filter_map(|r| {
                r.watch_started_at
                    .filter(|&at| in_window(at))
                    .map(|at| (r, at))
            })
            .map(|(r, at)| Marker {
                x: x(at / 1000),
                colour: "#2563eb",
                label: format!("{} deployed", r.version),
            })
            .collect();
        markers.extend(
            rollbacks
                .iter()
                .filter_map(|r| r.finished_at.filter(|&at| in_window(at)).map(|at| (r, at)))
                .map(|(r, at)| Marker {
                    x: x(at / 1000),
                    colour: "#cf222e",
                    label: format!("rolled back {} -> {}", r.from_version, r.to_version),
                }),
        );
        Ok(Self {
            minutes: (to - from + 59) / 60,
            width: WIDTH,
            height: HEIGHT,
            versions: versions
                .iter()
                .zip(COLOURS)
                .map(|(v, colour)| Legend {
                    version: v.to_string(),
                    colour,
                })
                .collect(),
            markers,
            panels,
        })
    }
}
