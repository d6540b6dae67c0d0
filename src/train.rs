//! A run: a run folder, the data, the trainer (FF through the pipeline, or the backprop twin),
//! a checkpoint after every epoch, the live view, and the final record.
//!
//! The run folder holds `pipeline.toml` (resolved), `meta.json` (commit, versions, machine),
//! `metrics.jsonl`, `checkpoint.safetensors` (the last finished epoch), `state.json` (the
//! curve so far) and, at the end, `record.json`. `--resume RUN` reads them back and continues
//! with the next epoch: the data order and negatives of an epoch depend only on the seed and
//! the epoch, so a resumed run sees exactly the stream the killed one would have.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::backprop::{Backprop, BackpropConfig};
use crate::checkpoint;
use crate::config::{PipelineConfig, Trainer};
use crate::data::{aesop, mnist, Labelled, Split};
use crate::head::{Head, HeadConfig};
use crate::matmul::Threads;
use crate::metrics::{rates, summary_table, Progress, Reporter, StageRates, StageStats, StageTotals};
use crate::packet::StageState;
use crate::pipeline::{self, EpochReport, Mode, PipelineStats};
use crate::record::{CurvePoint, Metrics, Record, Throughput};
use crate::sink::{Classify, Readout, ReadoutConfig};
use crate::source::DatasetSource;
use crate::stage::{FfDenseConfig, Stage};

/// How to run (flags, not pipeline settings).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// Where new run folders go.
    pub runs_dir: PathBuf,
    /// Resume this run folder instead of starting a new one.
    pub resume: Option<PathBuf>,
    /// No live line.
    pub quiet: bool,
    /// Also write the record to `<results>/<experiment>/seed<N>.json`.
    pub results_dir: Option<PathBuf>,
    /// The `--set` overrides (for the record).
    pub overrides: Vec<String>,
    /// Set by Ctrl-C.
    pub stop: Option<Arc<AtomicBool>>,
    /// Threads for the backprop twin's products (0: all cores). FF stages always use one
    /// thread each: the stages themselves are the parallelism.
    pub threads: usize,
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

/// The outcome of [`run`].
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

/// `(row width, classes)` of a labelled dataset: MNIST images or Aesop windows.
pub fn row_shape(config: &PipelineConfig) -> (usize, usize) {
    match config.data.dataset.as_str() {
        "aesop" => (aesop::WIDTH, aesop::SYMBOLS),
        _ => (mnist::PIXELS, mnist::CLASSES),
    }
}

/// Loads MNIST or Aesop's rows and cuts the splits to the sizes the pipeline asks for.
pub fn load_data(config: &PipelineConfig, data_dir: Option<&Path>) -> Result<Arc<Labelled>> {
    let mut data = match config.data.dataset.as_str() {
        "aesop" => aesop::Aesop::load(data_dir)?.labelled(),
        _ => Labelled::mnist(data_dir)?,
    };
    let cut = |split: &mut Split, n: usize| {
        if n > 0 {
            *split = split.head(n);
        }
    };
    cut(&mut data.train, config.data.train_size);
    cut(&mut data.validation, config.data.validation_size);
    cut(&mut data.test, config.data.test_size);
    Ok(Arc::new(data))
}

/// The FF stages a pipeline file describes (labelled rows: MNIST or Aesop).
pub fn build_stages(config: &PipelineConfig) -> Vec<Box<dyn Stage>> {
    build_stages_for(config, row_shape(config).0)
}

/// The FF stages a pipeline file describes, the first reading rows of `inputs` values.
pub fn build_stages_for(config: &PipelineConfig, inputs: usize) -> Vec<Box<dyn Stage>> {
    let m = &config.model;
    let mut inputs = inputs;
    let mut stages: Vec<Box<dyn Stage>> = Vec::new();
    for (i, &units) in m.layers.iter().enumerate() {
        let layer = i + 1;
        stages.push(Box::new(
            FfDenseConfig {
                name: format!("layer{layer}"),
                layer,
                inputs,
                units,
                goodness: m.goodness,
                threshold: m.threshold,
                temperature: m.temperature,
                peer_normalization: m.peer_normalization,
                rule: config.optimizer.rule,
                lr: config.optimizer.lr,
                weight_cost: config.optimizer.weight_cost,
                schedule: config.optimizer.schedule,
                epochs: config.data.epochs,
                counts_for_goodness: layer >= m.goodness_from,
                feeds_readout: layer >= m.readout_from,
                seed: config.seed,
            }
            .build(),
        ));
        inputs = units;
    }
    stages
}

/// The sink a pipeline file describes.
pub fn build_sink(config: &PipelineConfig) -> Classify {
    let m = &config.model;
    let readout = config.readout.clone().expect("validated: ff pipelines have a readout");
    let features = m.layers.iter().skip(m.readout_from - 1).sum();
    let negatives = config.negatives.clone().expect("validated");
    Classify::new(
        Readout::new(ReadoutConfig {
            features,
            classes: row_shape(config).1,
            rule: config.optimizer.rule,
            lr: readout.lr,
            weight_cost: readout.weight_cost,
            schedule: config.optimizer.schedule,
            epochs: config.data.epochs,
        }),
        negatives.labels != crate::head::NegativeLabels::Random,
    )
}

/// The backprop twin a pipeline file describes.
pub fn build_backprop(config: &PipelineConfig) -> Backprop {
    build_backprop_for(config, row_shape(config).0)
}

/// The backprop twin a pipeline file describes, reading rows of `inputs` values.
pub fn build_backprop_for(config: &PipelineConfig, inputs: usize) -> Backprop {
    BackpropConfig {
        inputs,
        hidden: config.model.layers.clone(),
        classes: row_shape(config).1,
        rule: config.optimizer.rule,
        lr: config.optimizer.lr,
        weight_cost: config.optimizer.weight_cost,
        schedule: config.optimizer.schedule,
        epochs: config.data.epochs,
        normalize_input: config.model.normalize_input,
        seed: config.seed,
    }
    .build()
}

/// The head a pipeline file describes, starting at `first_epoch`.
pub fn build_head(config: &PipelineConfig, data: Arc<Labelled>, first_epoch: u32, stop: Arc<AtomicBool>) -> Head {
    let negatives = config.negatives.clone().expect("validated");
    Head::new(
        HeadConfig {
            source: DatasetSource { batch: config.data.batch, jitter: config.data.jitter, seed: config.seed },
            first_epoch,
            epochs: config.data.epochs,
            negatives: negatives.labels,
            prediction_delay: negatives.prediction_delay,
            label_strength: config.model.label_strength,
            eval_every: config.eval.every,
            eval_batch: config.eval.batch,
            train_eval_size: config.eval.train_size,
            test_at_end: config.eval.test,
            schedule: config.schedule,
            replay: negatives.replay,
            dream_strings: negatives.dream_strings,
        },
        data,
        stop,
    )
}

fn machine() -> String {
    crate::bench::machine_name()
}

fn errors(goodness: Option<f64>, softmax: Option<f64>) -> crate::record::ErrorsPct {
    let mut m = crate::record::ErrorsPct::new();
    if let Some(g) = goodness {
        m.insert("goodness".into(), g);
    }
    if let Some(s) = softmax {
        m.insert("softmax".into(), s);
    }
    m
}

/// Makes epoch `epoch` durable: the checkpoint of every state (metadata: epoch, experiment,
/// seed), then `state.json` saying the epoch is done. Every trainer ends its epochs here.
pub(crate) fn save_epoch(
    dir: &Path,
    states: &[StageState],
    config: &PipelineConfig,
    state: &mut RunState,
    epoch: u32,
) -> Result<()> {
    state.epochs_done = epoch;
    // The run state travels inside the checkpoint too: a kill between the two writes below
    // leaves a checkpoint newer than state.json, and the resume takes the checkpoint's.
    let meta = [
        ("epoch", epoch.to_string()),
        ("experiment", config.name.clone()),
        ("seed", config.seed.to_string()),
        ("run_state", serde_json::to_string(state)?),
    ];
    checkpoint::save(&dir.join("checkpoint.safetensors"), states, &meta)?;
    save_state(dir, state)
}

pub(crate) fn save_state(dir: &Path, state: &RunState) -> Result<()> {
    let text = serde_json::to_string_pretty(state)?;
    checkpoint::write_atomic(&dir.join("state.json"), text.as_bytes())
        .with_context(|| format!("cannot write {}", dir.join("state.json").display()))
}

/// Prepares the run folder; returns it with the state to continue from.
fn open_run(config: &PipelineConfig, options: &RunOptions) -> Result<(PathBuf, RunState)> {
    if let Some(dir) = &options.resume {
        let state: RunState = serde_json::from_str(
            &std::fs::read_to_string(dir.join("state.json"))
                .with_context(|| format!("`{}` is not a run folder (no state.json)", dir.display()))?,
        )
        .with_context(|| format!("{}/state.json is damaged", dir.display()))?;
        // A kill between the checkpoint's write and state.json's leaves the checkpoint ahead.
        let saved = checkpoint::metadata(&dir.join("checkpoint.safetensors"))
            .ok()
            .and_then(|m| m.get("run_state").and_then(|t| serde_json::from_str::<RunState>(t).ok()));
        let state = match saved {
            Some(saved) if saved.epochs_done > state.epochs_done => saved,
            _ => state,
        };
        return Ok((dir.clone(), state));
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let dir = options.runs_dir.join(format!("{}-seed{}-{stamp}", config.name, config.seed));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create run folder {}", dir.display()))?;
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

/// Runs a pipeline to its end (or to Ctrl-C), checkpointing every epoch.
pub fn run(config: &PipelineConfig, options: &RunOptions) -> Result<Outcome> {
    let (dir, mut state) = open_run(config, options)?;
    if state.epochs_done >= config.data.epochs {
        bail!("run {} already finished all {} epochs", dir.display(), config.data.epochs);
    }
    let commit = git_commit();
    if state.commits.last() != Some(&commit) {
        state.commits.push(commit);
    }
    let stop = options.stop.clone().unwrap_or_default();
    let started = Instant::now();
    let offset = state.seconds;
    let (completed, stage_rates, frames) = if config.is_frame_stream() {
        let feed = crate::video::feed::open(config, options.data_dir.as_deref(), Arc::clone(&stop))?;
        match config.trainer {
            Trainer::Ff => crate::video::run::run_frames(config, feed, &dir, &mut state, started, options, stop)?,
            Trainer::Backprop => {
                crate::video::run::run_frames_backprop(config, feed, &dir, &mut state, started, options, stop)?
            }
        }
    } else {
        let data = load_data(config, options.data_dir.as_deref())?;
        if config.data.dataset == "aesop" {
            // E8's first baseline: always predict the training strings' commonest character.
            let unigram = |split: &Split| aesop::unigram_error_pct(&data.train, split);
            state.details.insert(
                "unigram_error_pct".into(),
                serde_json::json!({ "validation": unigram(&data.validation), "test": unigram(&data.test) }),
            );
        }
        match config.trainer {
            Trainer::Ff => run_ff(config, &data, &dir, &mut state, started, options, stop)?,
            Trainer::Backprop => run_backprop(config, &data, &dir, &mut state, started, options, stop)?,
        }
    };
    let session = started.elapsed().as_secs_f64();
    let wall = offset + session;
    let record = Record {
        experiment: config.name.clone(),
        seed: config.seed,
        commit: state.commits.join("+"),
        machine: machine(),
        wall_time_s: wall,
        epochs: state.epochs_done,
        overrides: state
            .overrides
            .iter()
            .filter_map(|o| o.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        metrics: state.metrics.clone(),
        throughput: Throughput { frames_per_s: frames as f64 / session.max(1e-9), stages: stage_rates.clone() },
        curve: state.curve.clone(),
        pipeline: serde_json::to_value(config)?,
        details: state.details.clone(),
    };
    if completed {
        state.seconds = wall;
    }
    save_state(&dir, &state)?;
    if completed {
        std::fs::write(dir.join("record.json"), serde_json::to_string_pretty(&record)?)?;
        if let Some(results) = &options.results_dir {
            let path = results.join(&config.name).join(format!("seed{}.json", config.seed));
            std::fs::create_dir_all(path.parent().expect("has a parent"))?;
            std::fs::write(&path, serde_json::to_string_pretty(&record)?)?;
        }
    }
    Ok(Outcome { run_dir: dir, record, completed, table: summary_table(&stage_rates) })
}

/// Applies an epoch report: curve, final metrics, checkpoint, state file, one log line.
fn finish_epoch(
    report: &EpochReport,
    dir: &Path,
    state: &mut RunState,
    config: &PipelineConfig,
    seconds: f64,
    quiet: bool,
) -> Result<(), String> {
    let tally = |k: &str| report.tallies.get(k).filter(|t| t.images > 0);
    let val = tally("validation").map(|t| errors(Some(t.goodness_pct()), Some(t.softmax_pct()))).unwrap_or_default();
    let stream = errors(None, (report.stream.images > 0).then(|| report.stream.softmax_pct()));
    state.curve.push(CurvePoint {
        epoch: report.epoch,
        val_error_pct: val.clone(),
        stream_error_pct: stream.clone(),
        seconds,
    });
    state.seconds = seconds;
    if !val.is_empty() {
        state.metrics.val_error_pct = val.clone();
    }
    if let Some(t) = tally("test") {
        state.metrics.test_error_pct = errors(Some(t.goodness_pct()), Some(t.softmax_pct()));
    }
    if let Some(t) = tally("train") {
        state.metrics.train_error_pct = errors(Some(t.goodness_pct()), Some(t.softmax_pct()));
    }
    save_epoch(dir, &report.states, config, state, report.epoch).map_err(|e| format!("{e:#}"))?;
    if !quiet {
        let fmt =
            |m: &crate::record::ErrorsPct| m.iter().map(|(k, v)| format!("{k} {v:.2}%")).collect::<Vec<_>>().join(", ");
        let mut line =
            format!("epoch {:>3}/{} {:>7.1}s  stream: {}", report.epoch, config.data.epochs, seconds, fmt(&stream));
        if !val.is_empty() {
            line += &format!("  validation: {}", fmt(&val));
        }
        if !state.metrics.test_error_pct.is_empty() && report.epoch == config.data.epochs {
            line += &format!("  test: {}", fmt(&state.metrics.test_error_pct));
        }
        eprintln!("{line}");
    }
    Ok(())
}

pub(crate) fn whole_run_rates(stats: &[Arc<StageStats>], wall: f64) -> Vec<StageRates> {
    stats.iter().map(|s| rates(&s.name, &StageTotals::default(), &s.totals(), wall)).collect()
}

type TrainerResult = Result<(bool, Vec<StageRates>, u64)>;

/// The live view and `metrics.jsonl` of a pipeline run, starting at the next epoch.
pub(crate) fn start_reporter(
    stats: &PipelineStats,
    config: &PipelineConfig,
    state: &RunState,
    dir: &Path,
    quiet: bool,
) -> (Arc<Progress>, Reporter) {
    let progress = Arc::new(Progress::default());
    let _ = progress.latency.set(Arc::clone(&stats.latency));
    progress.epoch.store(state.epochs_done + 1, Ordering::Relaxed);
    progress.epochs.store(config.data.epochs, Ordering::Relaxed);
    let reporter = Reporter::start(
        stats.all(),
        Arc::clone(&progress),
        Duration::from_secs(1),
        Some(dir.join("metrics.jsonl")),
        quiet,
    );
    (progress, reporter)
}

fn run_ff(
    config: &PipelineConfig,
    data: &Arc<Labelled>,
    dir: &Path,
    state: &mut RunState,
    started: Instant,
    options: &RunOptions,
    stop: Arc<AtomicBool>,
) -> TrainerResult {
    let mut stages = build_stages(config);
    let mut sink = build_sink(config);
    if state.epochs_done > 0 {
        let loaded = checkpoint::load(&dir.join("checkpoint.safetensors"))?;
        for stage in stages.iter_mut() {
            stage.restore(&loaded.state).map_err(|e| anyhow::anyhow!("cannot resume {}: {e}", dir.display()))?;
        }
        sink.readout_mut()
            .restore(&loaded.state)
            .map_err(|e| anyhow::anyhow!("cannot resume {}: {e}", dir.display()))?;
    }
    let runtime = config.pipeline.clone().expect("validated");
    let mut head = build_head(config, Arc::clone(data), state.epochs_done + 1, stop);
    let stats = PipelineStats::new(&config.stage_names());
    let (progress, reporter) = start_reporter(&stats, config, state, dir, options.quiet);
    head.publish_to(Arc::clone(&progress));
    let offset = state.seconds;
    let mut on_epoch = |report: EpochReport| {
        progress.epoch.store(report.epoch + 1, Ordering::Relaxed);
        finish_epoch(&report, dir, state, config, offset + started.elapsed().as_secs_f64(), options.quiet)
    };
    let (_, completed) =
        pipeline::run(&mut head, stages, &mut sink, runtime.mode, runtime.queue_capacity, &stats, &mut on_epoch)?;
    drop(reporter);
    add_phase_times(config, &progress, state);
    if let Some(svg) = crate::plot::throughput_svg(&dir.join("metrics.jsonl")) {
        std::fs::write(dir.join("throughput.svg"), svg)?;
    }
    let wall = started.elapsed().as_secs_f64();
    let frames = stats.stages.last().map_or(0, |s| s.totals().frames);
    Ok((completed, whole_run_rates(&stats.all(), wall), frames))
}

fn run_backprop(
    config: &PipelineConfig,
    data: &Arc<Labelled>,
    dir: &Path,
    state: &mut RunState,
    started: Instant,
    options: &RunOptions,
    stop: Arc<AtomicBool>,
) -> TrainerResult {
    let mut net = build_backprop(config);
    net.set_threads(backprop_threads(options));
    if state.epochs_done > 0 {
        let loaded = checkpoint::load(&dir.join("checkpoint.safetensors"))?;
        net.restore(&loaded.state.tensors).map_err(|e| anyhow::anyhow!("cannot resume {}: {e}", dir.display()))?;
    }
    let stats = StageStats::new("backprop");
    let progress = Arc::new(Progress::default());
    progress.epochs.store(config.data.epochs, Ordering::Relaxed);
    let reporter = Reporter::start(
        vec![Arc::clone(&stats)],
        Arc::clone(&progress),
        Duration::from_secs(1),
        Some(dir.join("metrics.jsonl")),
        options.quiet,
    );
    let source = DatasetSource { batch: config.data.batch, jitter: config.data.jitter, seed: config.seed };
    let offset = state.seconds;
    let bp = |e: f64| crate::record::ErrorsPct::from([("backprop".to_string(), e)]);
    let mut completed = true;
    let mut frames = 0u64;
    for epoch in state.epochs_done + 1..=config.data.epochs {
        progress.epoch.store(epoch, Ordering::Relaxed);
        let (mut wrong_stream, mut seen) = (0.0, 0usize);
        let mut last = Instant::now();
        for batch in source.epoch_batches(&data.train, epoch) {
            if stop.load(Ordering::Relaxed) {
                completed = false;
                break;
            }
            let t0 = Instant::now();
            // The twin sees the same frames as FF, without label pixels (MNIST's first ten
            // pixels are background).
            let x = &batch.pixels;
            wrong_stream += net.error_pct(x, &batch.labels) * batch.labels.len() as f64 / 100.0;
            seen += batch.labels.len();
            let loss = net.train_step(x, &batch.labels, epoch);
            if !loss.is_finite() {
                bail!("backprop: the loss is not finite at epoch {epoch}; the last checkpoint is kept");
            }
            frames += batch.labels.len() as u64;
            stats.record(batch.labels.len(), batch.labels.len(), t0.elapsed(), t0 - last, Duration::ZERO, 0);
            last = Instant::now();
        }
        if !completed {
            break;
        }
        let last_epoch = epoch == config.data.epochs;
        let mut point = CurvePoint {
            epoch,
            val_error_pct: Default::default(),
            stream_error_pct: bp(100.0 * wrong_stream / seen.max(1) as f64),
            seconds: 0.0,
        };
        if epoch % config.eval.every == 0 || last_epoch {
            point.val_error_pct = bp(backprop_error_pct(&net, &data.validation));
            state.metrics.val_error_pct = point.val_error_pct.clone();
        }
        if last_epoch {
            if config.eval.test {
                state.metrics.test_error_pct = bp(backprop_error_pct(&net, &data.test));
            }
            if config.eval.train_size > 0 {
                state.metrics.train_error_pct = bp(backprop_error_pct(&net, &data.train.head(config.eval.train_size)));
            }
        }
        point.seconds = offset + started.elapsed().as_secs_f64();
        state.seconds = point.seconds;
        if !options.quiet {
            let val = point
                .val_error_pct
                .get("backprop")
                .map_or(String::new(), |v| format!("  validation: backprop {v:.2}%"));
            let test = if last_epoch {
                state
                    .metrics
                    .test_error_pct
                    .get("backprop")
                    .map_or(String::new(), |v| format!("  test: backprop {v:.2}%"))
            } else {
                String::new()
            };
            eprintln!(
                "epoch {epoch:>3}/{} {:>7.1}s  stream: backprop {:.2}%{val}{test}",
                config.data.epochs, point.seconds, point.stream_error_pct["backprop"]
            );
        }
        state.curve.push(point);
        let states = [StageState { stage: "backprop".into(), tensors: net.tensors() }];
        save_epoch(dir, &states, config, state, epoch)?;
    }
    drop(reporter);
    let wall = started.elapsed().as_secs_f64();
    Ok((completed, whole_run_rates(&[stats], wall), frames))
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

/// The backprop twin's error on a whole split, percent (unjittered, in stored order).
fn backprop_error_pct(net: &Backprop, split: &Split) -> f64 {
    let source = DatasetSource { batch: 1000, jitter: 0, seed: 0 };
    let wrong: f64 = source
        .ordered_batches(split, 1000)
        .map(|batch| net.error_pct(&batch.pixels, &batch.labels) * batch.labels.len() as f64 / 100.0)
        .sum();
    100.0 * wrong / split.len().max(1) as f64
}

/// Scores the checkpoint of a run folder on its validation and test splits.
pub fn evaluate(run_dir: &Path, data_dir: Option<&Path>) -> Result<String> {
    let text = std::fs::read_to_string(run_dir.join("pipeline.toml"))
        .with_context(|| format!("`{}` is not a run folder (no pipeline.toml)", run_dir.display()))?;
    let mut config = PipelineConfig::parse(&text, &run_dir.join("pipeline.toml").display().to_string(), &[])?;
    if config.is_frame_stream() {
        bail!(
            "`ffstream eval` scores MNIST runs; a frame-stream run is scored while it runs (see {})",
            run_dir.join("state.json").display()
        );
    }
    let loaded = checkpoint::load(&run_dir.join("checkpoint.safetensors"))?;
    let epoch: u32 = loaded.metadata.get("epoch").and_then(|e| e.parse().ok()).unwrap_or(0);
    let data = load_data(&config, data_dir)?;
    if config.trainer == Trainer::Backprop {
        let mut net = build_backprop(&config);
        net.restore(&loaded.state.tensors).map_err(|e| anyhow::anyhow!(e))?;
        let mut out = format!("{} (epoch {epoch}):", run_dir.display());
        for (name, split) in [("validation", &data.validation), ("test", &data.test)] {
            out += &format!(" {name} backprop {:.2}%", backprop_error_pct(&net, split));
        }
        return Ok(out);
    }
    // Evaluation only: one pass with no training epochs, then the test split.
    config.data.epochs = epoch.max(1);
    let mut stages = build_stages(&config);
    let mut sink = build_sink(&config);
    for stage in stages.iter_mut() {
        stage.restore(&loaded.state).map_err(|e| anyhow::anyhow!(e))?;
    }
    sink.readout_mut().restore(&loaded.state).map_err(|e| anyhow::anyhow!(e))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut head = build_head(&config, data, config.data.epochs, stop);
    head.evaluate_only();
    let stats = PipelineStats::new(&config.stage_names());
    let mut reports = Vec::new();
    let mut on_epoch = |r: EpochReport| {
        reports.push(r.tallies);
        Ok(())
    };
    pipeline::run(&mut head, stages, &mut sink, Mode::Lockstep, 1, &stats, &mut on_epoch)?;
    let mut out = format!("{} (epoch {epoch}):", run_dir.display());
    for tallies in reports {
        for (k, t) in tallies {
            out += &format!(" {k}: goodness {:.2}%, softmax {:.2}%;", t.goodness_pct(), t.softmax_pct());
        }
    }
    Ok(out)
}
