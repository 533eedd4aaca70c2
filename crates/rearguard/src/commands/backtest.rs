//! `rearguard backtest`: replay recorded traffic through the same judge the guard uses.
//! Reading and checking the CSV lives here; the decision is entirely the judge's.

use std::path::Path;

use anyhow::Context;
use rearguard_judge::{
    BUCKETS, Counts, Judge, Judgement, LatencyHistogram, Mode, Policy, Setup, Step, Verdict,
    bucket_name,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::BacktestArgs;
use crate::{Outcome, UsageError};

/// The scenario's metadata file.
#[derive(Debug, Deserialize, Serialize)]
pub struct Meta {
    pub mode: Mode,
    pub deploy_at: i64,
    #[serde(default = "one_second")]
    pub step_seconds: u32,
}

fn one_second() -> u32 {
    1
}

pub async fn run(config_path: &Path, args: BacktestArgs) -> anyhow::Result<Outcome> {
    let (meta, steps, policy, source) = match (&args.csv, &args.meta, &args.app, &args.release) {
        (Some(csv), Some(meta), None, None) => (
            read_meta(meta)?,
            read_steps(csv)?,
            Policy::default(),
            csv.display().to_string(),
        ),
        (None, _, Some(app), Some(version)) => {
            let (meta, steps, policy) = from_ledger(config_path, app, version).await?;
            (meta, steps, policy, format!("{app} {version}"))
        }
        _ => {
            return Err(
                UsageError("give a CSV file and --meta, or --app and --release".into()).into(),
            );
        }
    };
    let policy = match &args.policy {
        Some(path) => crate::config::read_policy_file(path)?,
        None => policy,
    };
    if let (Some(dir), Some(app), Some(version)) = (&args.export, &args.app, &args.release) {
        export(dir, &format!("{app}-{version}"), &meta, &steps)?;
    }
    let setup = Setup {
        mode: meta.mode,
        deploy_at: meta.deploy_at,
        step_seconds: meta.step_seconds,
    };
    let mut judge = Judge::new(policy, setup);
    let mut story = Story::default();
    let mut decision = None;
    for step in steps {
        let judgement = judge
            .observe(step)
            .map_err(|e| UsageError(format!("{source}: {e}")))?;
        if !args.json {
            story.tell(step.t, &judgement);
        }
        if let Verdict::Rollback(finding) = judgement.verdict {
            decision = Some((step.t, finding));
            break;
        }
    }
    match (&decision, args.json) {
        (Some((t, finding)), true) => println!(
            "{}",
            json!({"verdict": "rollback", "decided_at": t, "reason": finding.reason, "rule": finding.rule,
                   "metric": finding.metric, "tier": finding.tier, "evidence": finding.evidence})
        ),
        (None, true) => println!(
            "{}",
            json!({"verdict": "keep", "decided_at": null, "reason": null, "evidence": null})
        ),
        (Some((t, finding)), false) => {
            println!(
                "t={t}: ROLLBACK ({} tier): {}",
                finding.tier.as_str(),
                finding.reason
            );
            println!(
                "evidence: {}",
                serde_json::to_string_pretty(&finding.evidence)?
            );
        }
        (None, false) => {
            println!("end of data: KEEP, the release was never found materially worse")
        }
    }
    // The exit code gates a pipeline; with --json the verdict is data (scorers read it
    // whatever it is).
    Ok(match (&decision, args.json) {
        (Some(_), false) => Outcome::RolledBack,
        _ => Outcome::Success,
    })
}

/// The steps a release was judged on, rebuilt from the ledger as the guard's watch is: the
/// baseline's history before the deploy, then both versions' counts after it.
async fn from_ledger(
    config_path: &Path,
    app: &str,
    version: &str,
) -> anyhow::Result<(Meta, Vec<Step>, Policy)> {
    let workspace = super::Workspace::open(config_path).await?;
    workspace.check_app(app)?;
    let policy = workspace.config.app(app)?.policy.clone();
    let ledger = &workspace.ledger;
    let release = ledger
        .releases(app)
        .await?
        .into_iter()
        .rev()
        .find(|r| r.version == version)
        .ok_or_else(|| UsageError(format!("{app} has no release {version}")))?;
    let watch = release.watch.clone().ok_or_else(|| {
        UsageError(format!(
            "{app} {version} was never watched: nothing to replay"
        ))
    })?;
    let deploy_at = watch.judged_from.div_euclid(1000);
    let mut steps: std::collections::BTreeMap<i64, Step> = std::collections::BTreeMap::new();
    let mut add = |t: i64, counts: &Counts, candidate: bool| {
        let step = steps.entry(t).or_insert(Step {
            t,
            ..Step::default()
        });
        if candidate {
            step.candidate.add(counts);
        } else {
            step.baseline.add(counts);
        }
    };
    let history_from = deploy_at - crate::guard::HISTORY_SECONDS;
    if let Some(baseline) = &watch.baseline_version {
        // Before the deploy the baseline's traffic is the history; after it, only a
        // canary's baseline serves beside the candidate.
        let until = match watch.mode {
            Mode::BlueGreen => deploy_at - 1,
            Mode::Canary => i64::MAX,
        };
        for step in ledger.steps(app, baseline, history_from, until).await? {
            add(step.t, &step.counts, false);
        }
    }
    for step in ledger.steps(app, version, deploy_at, i64::MAX).await? {
        add(step.t, &step.counts, true);
    }
    if !steps.values().any(|s| s.t >= deploy_at) {
        return Err(UsageError(format!(
            "the ledger holds no traffic of {app} {version} (steps are kept for the policy's lookback)"
        ))
        .into());
    }
    let step_seconds = steps
        .keys()
        .zip(steps.keys().skip(1))
        .map(|(a, b)| b - a)
        .min()
        .unwrap_or(1)
        .max(1) as u32;
    let meta = Meta {
        mode: watch.mode,
        deploy_at,
        step_seconds,
    };
    Ok((meta, steps.into_values().collect(), policy))
}

/// Writes `steps` as `DIR/NAME.csv` and its metadata as `DIR/NAME.json`, times counted
/// from the first step (as the scenario sets are).
fn export(dir: &Path, name: &str, meta: &Meta, steps: &[Step]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let origin = steps.first().map_or(meta.deploy_at, |s| s.t);
    let csv_path = dir.join(format!("{name}.csv"));
    let mut writer = csv::Writer::from_path(&csv_path)
        .with_context(|| format!("cannot write {}", csv_path.display()))?;
    let header: Vec<String> = COLUMNS_BEFORE_BUCKETS
        .iter()
        .map(|c| c.to_string())
        .chain((0..BUCKETS).map(bucket_name))
        .collect();
    writer.write_record(&header)?;
    for step in steps {
        for (version, counts) in [("baseline", &step.baseline), ("candidate", &step.candidate)] {
            let row: Vec<String> = [
                (step.t - origin).to_string(),
                version.to_string(),
                counts.requests.to_string(),
                counts.errors.to_string(),
            ]
            .into_iter()
            .chain(counts.latency.cumulative.iter().map(u64::to_string))
            .collect();
            writer.write_record(&row)?;
        }
    }
    writer.flush()?;
    let relative = Meta {
        deploy_at: meta.deploy_at - origin,
        ..*meta
    };
    let meta_path = dir.join(format!("{name}.json"));
    std::fs::write(&meta_path, serde_json::to_string_pretty(&relative)?)
        .with_context(|| format!("cannot write {}", meta_path.display()))?;
    crate::say!("wrote {} and {}", csv_path.display(), meta_path.display());
    Ok(())
}

/// A readable account of how the decision formed: phase changes and evidence milestones.
#[derive(Default)]
struct Story {
    last_phase: Option<String>,
    last_quarter: i64,
}

impl Story {
    fn tell(&mut self, t: i64, judgement: &Judgement) {
        let phase = match &judgement.verdict {
            Verdict::Keep => "keep: healthy so far".to_string(),
            Verdict::Wait { why } => format!("wait: {}", why.describe()),
            Verdict::Rollback(_) => return,
        };
        if self.last_phase.as_deref() != Some(phase.as_str()) {
            println!("t={t}: {phase}");
            self.last_phase = Some(phase);
        }
        let s = &judgement.snapshot;
        let evidence = s.error_evidence.max(s.latency_evidence);
        // Tell when evidence reaches a new quarter of what a rollback needs, or falls back
        // by half of it; smaller wobbles are noise to a reader.
        let quarter = (evidence * 4.0).floor() as i64;
        if quarter > self.last_quarter || quarter <= self.last_quarter - 2 {
            println!(
                "t={t}: evidence at {:.0}% of a rollback (errors {:.0}%, latency {:.0}%); last minute: error rate {} vs baseline {}, p95 {} vs {}",
                100.0 * evidence,
                100.0 * s.error_evidence,
                100.0 * s.latency_evidence,
                show_rate(s.candidate_error_rate),
                show_rate(s.baseline_error_rate),
                show_ms(s.candidate_p95_ms),
                show_ms(s.baseline_p95_ms),
            );
            self.last_quarter = quarter;
        }
    }
}

fn show_rate(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".into(), |r| format!("{:.2}%", 100.0 * r))
}

fn show_ms(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".into(), |ms| format!("{ms:.0}ms"))
}

pub fn read_meta(path: &Path) -> anyhow::Result<Meta> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let meta: Meta = serde_json::from_str(&text).map_err(|e| {
        UsageError(format!(
            "{}:{}:{}: {e} (expected {{\"mode\": \"bluegreen\"|\"canary\", \"deploy_at\": SECONDS, \"step_seconds\": 1}})",
            path.display(),
            e.line(),
            e.column()
        ))
    })?;
    if meta.step_seconds == 0 {
        return Err(UsageError(format!(
            "{}: step_seconds must be at least 1",
            path.display()
        ))
        .into());
    }
    Ok(meta)
}

const COLUMNS_BEFORE_BUCKETS: [&str; 4] = ["t", "version", "requests", "errors"];

/// Reads the CSV into steps, one per distinct `t`, refusing anything malformed with the
/// line it is on.
pub fn read_steps(path: &Path) -> anyhow::Result<Vec<Step>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(file);
    let headers = reader
        .headers()
        .map_err(|e| UsageError(format!("{}: {e}", path.display())))?
        .clone();
    let expected: Vec<String> = COLUMNS_BEFORE_BUCKETS
        .iter()
        .map(|c| c.to_string())
        .chain((0..BUCKETS).map(bucket_name))
        .collect();
    let column = |name: &str| headers.iter().position(|h| h == name);
    let missing: Vec<&str> = expected
        .iter()
        .filter(|c| column(c).is_none())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(UsageError(format!(
            "{}:1: missing column(s) {}; expected {}",
            path.display(),
            missing.join(", "),
            expected.join(",")
        ))
        .into());
    }
    let index: Vec<usize> = expected
        .iter()
        .map(|c| column(c).expect("checked above"))
        .collect();
    let mut steps: Vec<Step> = Vec::new();
    for (row_number, record) in reader.records().enumerate() {
        let line = row_number + 2;
        let at = |message: String| UsageError(format!("{}:{line}: {message}", path.display()));
        let record = record.map_err(|e| at(e.to_string()))?;
        let cell = |i: usize| record.get(index[i]).unwrap_or("");
        let number = |i: usize| -> Result<u64, UsageError> {
            cell(i).parse::<u64>().map_err(|_| {
                at(format!(
                    "column {} must be a whole number, got {:?}",
                    expected[i],
                    cell(i)
                ))
            })
        };
        let t: i64 = cell(0).parse().map_err(|_| {
            at(format!(
                "column t must be a whole number, got {:?}",
                cell(0)
            ))
        })?;
        let requests = number(2)?;
        let errors = number(3)?;
        let mut cumulative = [0u64; BUCKETS];
        for (b, slot) in cumulative.iter_mut().enumerate() {
            *slot = number(4 + b)?;
        }
        let latency =
            LatencyHistogram::try_from_cumulative(cumulative).map_err(|e| at(e.to_string()))?;
        if errors > requests {
            return Err(at(format!("errors ({errors}) exceed requests ({requests})")).into());
        }
        if latency.total() != requests {
            return Err(at(format!(
                "le_inf ({}) must equal requests ({requests})",
                latency.total()
            ))
            .into());
        }
        let counts = Counts {
            requests,
            errors,
            latency,
        };
        match steps.last() {
            Some(last) if t < last.t => {
                return Err(at(format!("time goes backwards: t={t} after t={}", last.t)).into());
            }
            Some(last) if t == last.t => {}
            _ => steps.push(Step {
                t,
                ..Step::default()
            }),
        }
        let step = steps.last_mut().expect("pushed above");
        match cell(1) {
            "baseline" => step.baseline.add(&counts),
            "candidate" => step.candidate.add(&counts),
            other => {
                return Err(at(format!(
                    "version must be baseline or candidate, got {other:?}"
                ))
                .into());
            }
        }
    }
    Ok(steps)
}
