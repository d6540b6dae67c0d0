//! A run: a run folder ([`crate::run_folder`]), the data, the trainer (FF through the
//! pipeline, or the backprop twin), a checkpoint after every epoch, the live view, and the
//! final record. Labelled data (MNIST, Aesop) is trained here; frame streams in
//! [`crate::video::run`].

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::backprop::Backprop;
use crate::boring_video::{Join, Repeat};
use crate::checkpoint;
use crate::config::{PipelineConfig, Trainer};
use crate::data::{aesop, Labelled, Split};
use crate::metrics::{summary_table, Progress, Reporter, StageRates, StageStats};
use crate::packet::StageState;
use crate::record::{CurvePoint, Record, Throughput};
use crate::runtime::{self, EpochReport, Mode, PipelineStats, Wiring};
use crate::stage::Stage;

pub use crate::config::build::{
    build_backprop, build_backprop_for, build_head, build_sink, build_stages, build_stages_for, row_shape,
};
use crate::run_folder::{
    add_phase_times, backprop_threads, machine, open_run, save_epoch, save_state, start_reporter, whole_run_rates,
};
pub use crate::run_folder::{git_commit, Outcome, RunOptions, RunState};

type TrainerResult = Result<(bool, Vec<StageRates>, u64)>;
use crate::head::LabelledHead;
use crate::sink::{Classify, Tally};
use crate::source::DatasetSource;

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
        let feed = crate::video::open::open(config, options.data_dir.as_deref(), Arc::clone(&stop))?;
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
            let folder = results.join(&config.name);
            std::fs::create_dir_all(&folder)?;
            std::fs::write(folder.join(format!("seed{}.json", config.seed)), serde_json::to_string_pretty(&record)?)?;
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
) -> Result<()> {
    let tally = |k: &str| Tally::errors_from(&report.measures, k).map(|(g, s)| errors(Some(g), Some(s)));
    let val = tally("validation").unwrap_or_default();
    let stream = errors(None, Tally::errors_from(&report.measures, "stream").map(|(_, s)| s));
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
        state.metrics.test_error_pct = t;
    }
    if let Some(t) = tally("train") {
        state.metrics.train_error_pct = t;
    }
    save_epoch(dir, &report.states, config, state, report.epoch)?;
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
        tracing::info!("{line}");
    }
    Ok(())
}

/// Runs labelled data through the stages. A recurrent net sees every batch as a boring video
/// ([`crate::boring_video`]): the head plays it for every step, the sink sees it joined.
pub fn run_labelled(
    config: &PipelineConfig,
    head: &mut LabelledHead,
    stages: Vec<Box<dyn Stage>>,
    sink: &mut Classify,
    wiring: Wiring,
    stats: &PipelineStats,
    on_epoch: &mut runtime::OnEpoch<'_>,
) -> Result<(Vec<Box<dyn Stage>>, bool), runtime::PipelineError> {
    if !config.is_recurrent() {
        return runtime::run(head, stages, sink, wiring, stats, on_epoch);
    }
    let recurrent = config.recurrent_settings();
    let [from, to] = recurrent.goodness_steps;
    let mut head = Repeat::new(head, recurrent.steps());
    let mut sink = Join::new(sink, from..=to);
    runtime::run(&mut head, stages, &mut sink, wiring, stats, on_epoch)
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
    // Invariant: `PipelineConfig::parse` rejects an ff pipeline without [pipeline].
    let settings = config.pipeline.clone().expect("validated");
    let mut head = build_head(config, Arc::clone(data), state.epochs_done + 1, stop);
    let stats = PipelineStats::new(&config.stage_names());
    let (progress, reporter) = start_reporter(&stats, config, state, dir, options)?;
    head.publish_to(Arc::clone(&progress));
    let offset = state.seconds;
    let mut on_epoch = |report: EpochReport| {
        progress.epoch.store(report.epoch + 1, Ordering::Relaxed);
        finish_epoch(&report, dir, state, config, offset + started.elapsed().as_secs_f64(), options.quiet)
    };
    let (_, completed) = run_labelled(config, &mut head, stages, &mut sink, settings.wiring(), &stats, &mut on_epoch)?;
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
        options.live_view(),
    )?;
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
            tracing::info!(
                "epoch {epoch:>3}/{} {:>7.1}s  stream: backprop {:.2}%{val}{test}",
                config.data.epochs,
                point.seconds,
                point.stream_error_pct["backprop"]
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
        reports.push(r.measures);
        Ok(())
    };
    let mut wiring = Wiring::new(Mode::Lockstep, 1);
    wiring.feedback_delay = config.pipeline.as_ref().map_or(1, |p| p.feedback_delay);
    run_labelled(&config, &mut head, stages, &mut sink, wiring, &stats, &mut on_epoch)?;
    let mut out = format!("{} (epoch {epoch}):", run_dir.display());
    for measures in reports {
        for k in ["test", "train", "validation"] {
            if let Some((goodness, softmax)) = Tally::errors_from(&measures, k) {
                out += &format!(" {k}: goodness {goodness:.2}%, softmax {softmax:.2}%;");
            }
        }
    }
    Ok(out)
}
