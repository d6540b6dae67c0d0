//! The run folder every trainer writes and resumes from.
//!
//! It holds `pipeline.toml` (resolved), `meta.json` (commit, versions, machine),
//! `metrics.jsonl`, `checkpoint.json` and `checkpoint/` (the last finished epoch: one shard
//! per stage and one for the sink, see [`crate::checkpoint`]), `state.json` (the
//! curve so far) and, at the end, `record.json`. `--resume RUN` reads them back and continues
//! with the next epoch: the data order and negatives of an epoch depend only on the seed and
//! the epoch, so a resumed run sees exactly the stream the killed one would have.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::config::PipelineConfig;
use crate::live::LiveView;
use crate::matmul::Threads;
use crate::metrics::{rates, Latency, Progress, StageRates, StageStats, StageTotals};
use crate::packet::StageState;
use crate::record::{CurvePoint, Metrics, Record};
use crate::reporter::Reporter;

/// How to run (flags, not pipeline settings).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// Where new run folders go.
    pub runs_dir: PathBuf,
    /// Resume this run folder instead of starting a new one.
    pub resume: Option<PathBuf>,
    /// No progress: no live line, no per-epoch events.
    pub quiet: bool,
    /// Where the live line goes (the binary's terminal line); none: no live line.
    pub live: Option<Arc<dyn LiveView>>,
    /// Also write the record to `<results>/<experiment>/seed<N>.json`.
    pub results_dir: Option<PathBuf>,
    /// Replace a record there even when it is of another experiment (other settings).
    pub replace_record: bool,
    /// The `--set` overrides (for the record).
    pub overrides: Vec<String>,
    /// The pipeline as the command named it (a name or a file; for a speedrun's command line).
    pub pipeline: Option<String>,
    /// Set by Ctrl-C.
    pub stop: Option<Arc<AtomicBool>>,
    /// Threads for the backprop twin's products (0: all cores). FF stages always use one
    /// thread each: the stages themselves are the parallelism.
    pub threads: usize,
    /// Serve the run's counters for Prometheus at this address (`--metrics-addr`).
    pub metrics_addr: Option<String>,
    /// Run only this part (0-based) of the file's `[placement]` (`--part`, 1-based).
    pub part: Option<usize>,
    /// With `resume` and `part`: the epoch to resume from (every part resumes at the sink
    /// part's last checkpoint, which may be one behind this part's own).
    pub resume_epoch: Option<u32>,
    /// The run folder's time stamp (the parts of one launch share one); none: now.
    pub stamp: Option<u64>,
}

impl RunOptions {
    /// The live view to draw on: none when `quiet`.
    pub fn live_view(&self) -> Option<Arc<dyn LiveView>> {
        if self.quiet {
            None
        } else {
            self.live.clone()
        }
    }
}

/// What a run folder remembers between epochs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunState {
    /// Epochs finished and checkpointed.
    pub epochs_done: u32,
    /// Curve so far.
    pub curve: Vec<CurvePoint>,
    /// Wall seconds of the work kept so far: up to the last checkpointed epoch, over every
    /// session of the run (time a killed session spent after its last checkpoint is lost work
    /// and not counted).
    pub seconds: f64,
    /// The `--set` overrides the run was started with (kept for the record across resumes).
    #[serde(default)]
    pub overrides: Vec<String>,
    /// The commit of every session of the run, in order (a resume may run newer code).
    #[serde(default)]
    pub commits: Vec<String>,
    /// Final metrics, once the last epoch is done.
    pub metrics: Metrics,
    /// Other measured facts of the run (video: source counters, latency, memory by epoch).
    #[serde(default)]
    pub details: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The outcome of [`crate::session::run`].
#[derive(Debug)]
pub struct Outcome {
    /// The run folder.
    pub run_dir: PathBuf,
    /// The record (also written to the run folder).
    pub record: Record,
    /// Whether the stream ran to its end (false after Ctrl-C).
    pub completed: bool,
    /// The per-stage summary table.
    pub table: String,
    /// Pictures of what the stages learned (frame streams; the stages that draw as images).
    pub fields: Vec<PathBuf>,
}

/// The current git commit: `$FFSTREAM_COMMIT` if set (a copy of the tree without `.git`),
/// else `git rev-parse HEAD`, else "unknown".
pub fn git_commit() -> String {
    if let Some(commit) = std::env::var_os("FFSTREAM_COMMIT") {
        return commit.to_string_lossy().into_owned();
    }
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn machine() -> String {
    crate::bench::machine_name()
}

/// Makes epoch `epoch` durable: a shard for each state still in memory (the sink's; every
/// stage's in a run without a store at the barrier), then the manifest naming those and the
/// `written` shards the stages left themselves (metadata: experiment, seed, run state), then
/// `state.json` saying the epoch is done. Every trainer ends its epochs here.
pub(crate) fn save_epoch(
    dir: &Path,
    states: &[StageState],
    written: &[checkpoint::Shard],
    config: &PipelineConfig,
    state: &mut RunState,
    epoch: u32,
    keep_epochs: u32,
) -> Result<()> {
    // A non-finite weight (a NaN the ReLUs hid from the goodness check) never becomes a
    // checkpoint or a finished run: the last good checkpoint stays, the run stops here.
    for s in states {
        if let Some((name, _, _)) = s.tensors.iter().find(|(_, _, values)| values.iter().any(|v| !v.is_finite())) {
            anyhow::bail!(
                "stage `{}`: tensor `{name}` is not finite after epoch {epoch}; the last good checkpoint (epoch {}) \
                 is kept",
                s.stage,
                state.epochs_done
            );
        }
    }
    state.epochs_done = epoch;
    let store = checkpoint::ShardStore::new(dir);
    let mut shards = written.to_vec();
    for s in states {
        shards.push(store.write(epoch, s)?);
    }
    // The run state travels inside the manifest too: a kill between the two writes below
    // leaves a checkpoint newer than state.json, and the resume takes the checkpoint's.
    let meta = [
        ("experiment", config.name.clone()),
        ("seed", config.seed.to_string()),
        ("run_state", serde_json::to_string(state)?),
    ];
    store.commit_keeping(epoch, &shards, &meta, keep_epochs)?;
    save_state(dir, state)
}

/// Creates `runs/<base>`, or `runs/<base>-2`, `-3`, … when a run started in the same second
/// already has it: `create_dir` fails on an existing folder, so two runs never share one.
fn new_run_folder(runs: &Path, base: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(runs).with_context(|| format!("cannot create the runs folder {}", runs.display()))?;
    let mut n = 1u32;
    loop {
        let dir = if n == 1 { runs.join(base) } else { runs.join(format!("{base}-{n}")) };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 10_000 => n += 1,
            Err(e) => return Err(e).with_context(|| format!("cannot create run folder {}", dir.display())),
        }
    }
}

pub(crate) fn save_state(dir: &Path, state: &RunState) -> Result<()> {
    let text = serde_json::to_string_pretty(state)?;
    checkpoint::write_atomic(&dir.join("state.json"), text.as_bytes())
        .with_context(|| format!("cannot write {}", dir.join("state.json").display()))
}

/// The run state of `dir` as it was at the end of `epoch` (from that epoch's kept checkpoint);
/// epoch 0: the run from its start, with `now`'s overrides and commits.
fn state_at(dir: &Path, epoch: u32, now: RunState) -> Result<RunState> {
    if epoch == 0 {
        return Ok(RunState { overrides: now.overrides, commits: now.commits, ..RunState::default() });
    }
    let metadata = checkpoint::run_metadata_at(dir, epoch)
        .with_context(|| format!("{} keeps no checkpoint of epoch {epoch} to resume from", dir.display()))?;
    let text = metadata
        .get("run_state")
        .with_context(|| format!("epoch {epoch}'s checkpoint in {} has no run state", dir.display()))?;
    serde_json::from_str(text).with_context(|| format!("epoch {epoch}'s run state in {} is damaged", dir.display()))
}

/// Prepares the run folder; returns it with the state to continue from.
pub(crate) fn open_run(config: &PipelineConfig, options: &RunOptions) -> Result<(PathBuf, RunState)> {
    if let Some(dir) = &options.resume {
        let state: RunState = serde_json::from_str(
            &std::fs::read_to_string(dir.join("state.json"))
                .with_context(|| format!("`{}` is not a run folder (no state.json)", dir.display()))?,
        )
        .with_context(|| format!("{}/state.json is damaged", dir.display()))?;
        // A kill between the checkpoint's write and state.json's leaves the checkpoint ahead.
        let saved = checkpoint::run_metadata(dir)
            .ok()
            .and_then(|m| m.get("run_state").and_then(|t| serde_json::from_str::<RunState>(t).ok()));
        // The checkpoint rules either way: behind it, state.json was not yet rewritten; ahead
        // of it, state.json describes epochs whose weights are not on disk.
        if let Some(epoch) = options.resume_epoch {
            return Ok((dir.clone(), state_at(dir, epoch, state)?));
        }
        let state = match saved {
            Some(saved) if saved.epochs_done != state.epochs_done => {
                if state.epochs_done > saved.epochs_done {
                    tracing::warn!(
                        "{}/state.json says {} epochs are done but the checkpoint holds {}: resuming from the checkpoint",
                        dir.display(),
                        state.epochs_done,
                        saved.epochs_done
                    );
                }
                saved
            }
            _ => state,
        };
        return Ok((dir.clone(), state));
    }
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let stamp = options.stamp.unwrap_or_else(now);
    let part = options.part.map(|i| format!("-part{}", i + 1)).unwrap_or_default();
    let dir = new_run_folder(&options.runs_dir, &format!("{}-seed{}{part}-{stamp}", config.name, config.seed))?;
    std::fs::write(dir.join("pipeline.toml"), toml::to_string(config)?)?;
    let meta = serde_json::json!({
        "commit": git_commit(), "machine": machine(), "matmul": crate::matmul::backend_name(),
        "ffstream": env!("CARGO_PKG_VERSION"), "overrides": options.overrides,
    });
    std::fs::write(dir.join("meta.json"), serde_json::to_string_pretty(&meta)?)?;
    let state = RunState { overrides: options.overrides.clone(), ..Default::default() };
    save_state(&dir, &state)?;
    Ok((dir, state))
}

pub(crate) fn whole_run_rates(stats: &[Arc<StageStats>], wall: f64) -> Vec<StageRates> {
    stats.iter().map(|s| rates(&s.name, &StageTotals::default(), &s.totals(), wall)).collect()
}

/// The live view and `metrics.jsonl` of a run's `stats` (with the pipeline's end-to-end
/// `latency`, if it has one), starting at the next epoch.
pub(crate) fn start_reporter(
    stats: Vec<Arc<StageStats>>,
    latency: Option<Arc<Latency>>,
    config: &PipelineConfig,
    state: &RunState,
    dir: &Path,
    options: &RunOptions,
) -> Result<(Arc<Progress>, Reporter)> {
    let progress = Arc::new(Progress::default());
    if let Some(latency) = latency {
        let _ = progress.latency.set(latency);
    }
    progress.epoch.store(state.epochs_done + 1, Ordering::Relaxed);
    progress.epochs.store(config.data.epochs, Ordering::Relaxed);
    let endpoint = options
        .metrics_addr
        .as_deref()
        .map(|addr| crate::metrics_endpoint::MetricsEndpoint::start(addr, stats.clone(), Arc::clone(&progress)))
        .transpose()?;
    let mut reporter = Reporter::start(
        stats,
        Arc::clone(&progress),
        Duration::from_secs(1),
        Some(dir.join("metrics.jsonl")),
        options.live_view(),
    )
    .context("cannot start the reporter thread")?;
    if let Some(endpoint) = endpoint {
        reporter.keep(Box::new(endpoint));
    }
    Ok((progress, reporter))
}

/// Adds the seconds the head spent awake and asleep to the run's details (summed over the
/// sessions of a resumed run, like the frames): frames / `awake_s` is the throughput while
/// awake, to set against an interleaved run's.
pub(crate) fn add_phase_times(config: &PipelineConfig, progress: &Progress, state: &mut RunState) {
    if config.schedule == crate::schedule::PhaseSchedule::Interleaved {
        return;
    }
    let (awake, asleep) = progress.phase.durations();
    for (key, value) in [("awake_s", awake), ("asleep_s", asleep)] {
        let total = state.details.get(key).and_then(|v| v.as_f64()).unwrap_or(0.0) + value;
        state.details.insert(key.into(), serde_json::json!(total));
    }
    if let Some((switches, mean_ms, max_ms)) = progress.phase.switch_waits() {
        // This session's switches (a resumed run's earlier sessions had their own).
        state.details.insert(
            "switch_to_sleep_wait_ms".into(),
            serde_json::json!({ "switches": switches, "mean": mean_ms, "max": max_ms }),
        );
    }
    let stored = state.details.get("sleep_storage_bytes").and_then(|v| v.as_u64()).unwrap_or(0);
    state.details.insert("sleep_storage_bytes".into(), serde_json::json!(stored.max(progress.phase.storage_bytes())));
}

/// The threads the backprop twin's products use (`--threads`, 0: every core).
pub(crate) fn backprop_threads(options: &RunOptions) -> Threads {
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    if threads > 1 {
        Threads::Pool(threads)
    } else {
        Threads::One
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_runs_started_in_the_same_second_get_folders_of_their_own() {
        let runs = tempfile::tempdir().unwrap();
        let first = new_run_folder(runs.path(), "mnist-quick-seed0-1700000000").unwrap();
        let second = new_run_folder(runs.path(), "mnist-quick-seed0-1700000000").unwrap();
        assert_ne!(first, second);
        assert!(second.ends_with("mnist-quick-seed0-1700000000-2") && first.is_dir() && second.is_dir());
    }

    #[test]
    fn a_stage_with_a_nan_weight_is_not_checkpointed() {
        // Issue 12: NaN weights passed as a finished run (ReLU hides NaN from the goodness).
        let dir = tempfile::tempdir().unwrap();
        let config = PipelineConfig::parse(include_str!("../pipeline/mnist-quick.toml"), "q.toml", &[]).unwrap();
        let mut state = RunState::default();
        let good =
            StageState { stage: "layer1".into(), tensors: vec![("layer1.weights".into(), vec![2], vec![0.5, 1.0])] };
        save_epoch(dir.path(), std::slice::from_ref(&good), &[], &config, &mut state, 1, 1).unwrap();
        let mut bad = good.clone();
        bad.tensors[0].2[1] = f32::NAN;
        let err = save_epoch(dir.path(), &[bad], &[], &config, &mut state, 2, 1).unwrap_err().to_string();
        assert!(err.contains("layer1") && err.contains("layer1.weights") && err.contains("epoch 1"), "{err}");
        assert_eq!(state.epochs_done, 1);
        assert_eq!(checkpoint::load_run(dir.path()).unwrap().state.tensors, good.tensors, "the good epoch stays");
    }
}
