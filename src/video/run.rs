//! A run of unsupervised FF on a frame stream: the feed, the stages, the video sink, a
//! checkpoint per epoch, and at the end the frozen-probe comparison with a random-init net
//! (and the backprop twin) on labelled streams.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use ndarray::Array2;

use super::feed::Feed;
use super::head::{VideoHead, VideoHeadConfig};
use super::probe::{probe_error_pct, stage_features};
use super::sink::VideoSink;
use super::Frame;
use crate::backprop::BackpropConfig;
use crate::checkpoint;
use crate::config::build::{build_backprop_for, build_stages_for};
use crate::config::{PipelineConfig, StreamConfig};
use crate::data::mnist::CLASSES;
use crate::matmul::Threads;
use crate::metrics::{Latency, StageRates};
use crate::record::{CurvePoint, ErrorsPct};
use crate::run_folder::{
    add_phase_times, backprop_threads, save_epoch, save_state, start_reporter, whole_run_rates, RunOptions, RunState,
};
use crate::runtime::{self, EpochReport, PipelineStats};

/// Rows of `window` consecutive frames of one sequence, with the last frame's labels.
pub fn windows_of(frames: &[Frame], window: usize, center: bool) -> (Array2<f32>, Vec<Vec<u8>>) {
    let mut rows: Vec<f32> = Vec::new();
    let mut labels = Vec::new();
    let mut width = 0;
    let mut windows = super::head::Windows::new(window);
    for frame in frames {
        let Some(span) = windows.push(frame) else { continue };
        for f in span {
            super::head::frame_values(&f.pixels, center, &mut rows);
        }
        width = span.iter().map(|f| f.pixels.len()).sum();
        labels.push(frame.labels.clone());
    }
    let n = labels.len();
    // Invariant: the frames come from one feed, all of its `FrameShape`, so every window has
    // `width` values.
    (Array2::from_shape_vec((n, width), rows).expect("rows of equal width"), labels)
}

/// Runs FF on a frame stream to its end (or Ctrl-C). Returns whether it completed, the
/// per-thread rates, and the frames that reached the last stage.
pub fn run_frames(
    config: &PipelineConfig,
    mut feed: Feed,
    dir: &Path,
    state: &mut RunState,
    started: Instant,
    options: &RunOptions,
    stop: Arc<AtomicBool>,
) -> Result<(bool, Vec<StageRates>, u64)> {
    let stream = config.stream.clone().unwrap_or_default();
    let shape = feed.shape;
    let inputs = stream.window * shape.len();
    let mut stages = build_stages_for(config, inputs);
    let observed: Vec<(String, usize)> = config
        .stage_names()
        .into_iter()
        .zip(config.model.layers.iter().copied())
        .skip(config.model.readout_from - 1)
        .collect();
    let mut sink = VideoSink::new(
        observed.iter().map(|(n, _)| n.clone()).collect(),
        &observed.iter().map(|&(_, u)| u).collect::<Vec<_>>(),
        stream.probe_lr,
    );
    if state.epochs_done > 0 {
        let loaded = checkpoint::load(&dir.join("checkpoint.safetensors"))?;
        for stage in stages.iter_mut() {
            stage.restore(&loaded.state).map_err(|e| anyhow::anyhow!("cannot resume {}: {e}", dir.display()))?;
        }
        sink.restore(std::slice::from_ref(&loaded.state))
            .map_err(|e| anyhow::anyhow!("cannot resume {}: {e}", dir.display()))?;
    }
    // Invariant: `PipelineConfig::parse` rejects an ff pipeline without [pipeline].
    let settings = config.pipeline.clone().expect("validated");
    let probe = feed.probe.take();
    let twin = feed.twin.take();
    let mut head = VideoHead::new(
        VideoHeadConfig {
            batch: config.data.batch,
            window: stream.window,
            frame_len: shape.len(),
            width: shape.width,
            height: shape.height,
            channels: shape.channels,
            negatives: stream.negatives,
            replay: stream.replay,
            mask_blurs: stream.mask_blurs,
            holdout_every: stream.holdout_every,
            eval_windows: stream.eval_windows,
            first_epoch: state.epochs_done + 1,
            epochs: config.data.epochs,
            seed: config.seed,
            center: stream.center,
            schedule: config.schedule,
        },
        feed.feed,
        stop,
    );
    let stats = PipelineStats::new(&config.stage_names());
    let (progress, reporter) = start_reporter(&stats, config, state, dir, options)?;
    let offset = state.seconds;
    let mut latency_before = stats.latency.counts();
    let mut on_epoch = |report: EpochReport| {
        progress.epoch.store(report.epoch + 1, Ordering::Relaxed);
        let now = stats.latency.counts();
        let p = |q| Latency::quantile(&latency_before, &now, q).map(|s| s * 1000.0);
        let (p50, p99) = (p(0.5), p(0.99));
        latency_before = now;
        let seconds = offset + started.elapsed().as_secs_f64();
        finish_epoch(&report, dir, state, config, seconds, options.quiet, (p50, p99))
    };
    head.report_to(Arc::clone(&progress));
    let (stages, completed) = runtime::run(&mut head, stages, &mut sink, settings.wiring(), &stats, &mut on_epoch)?;
    drop(reporter);
    if let Some(svg) = crate::plot::throughput_svg(&dir.join("metrics.jsonl")) {
        std::fs::write(dir.join("throughput.svg"), svg)?;
    }
    if let Some(error) = head.error() {
        bail!("{error}");
    }
    let counters = head.feed().counters();
    let wall = started.elapsed().as_secs_f64();
    let frames = stats.stages.last().map_or(0, |s| s.totals().frames);
    let all = stats.latency.counts();
    let zero = vec![0; all.len()];
    add_phase_times(config, &progress, state);
    state.details.insert("source".into(), serde_json::to_value(counters)?);
    state.details.insert(
        "latency_ms".into(),
        serde_json::json!({
            "p50": Latency::quantile(&zero, &all, 0.5).map(|s| s * 1000.0),
            "p99": Latency::quantile(&zero, &all, 0.99).map(|s| s * 1000.0),
        }),
    );
    if completed {
        let mut stages = stages;
        if let Some(frames) = probe {
            final_probes(config, &stream, inputs, &mut stages, &frames, twin.as_deref(), state, options.quiet)?;
            save_state(dir, state)?;
        }
    }
    Ok((completed, whole_run_rates(&stats.all(), wall), frames))
}

/// Scores the frozen trained stages, a random-init net of the same shape, and (if asked) the
/// backprop twin, on the labelled probe stream.
#[allow(clippy::too_many_arguments)]
fn final_probes(
    config: &PipelineConfig,
    stream: &StreamConfig,
    inputs: usize,
    stages: &mut [Box<dyn crate::stage::Stage>],
    frames: &[Frame],
    twin: Option<&[Frame]>,
    state: &mut RunState,
    quiet: bool,
) -> Result<()> {
    let started = Instant::now();
    let (x, labels) = windows_of(frames, stream.window, stream.center);
    let mut random = build_stages_for(config, inputs);
    let trained_features = stage_features(stages, x.clone(), 500)?;
    let random_features = stage_features(&mut random, x.clone(), 500)?;
    let names: Vec<String> = config.stage_names().into_iter().skip(config.model.readout_from - 1).collect();
    let mut test = ErrorsPct::new();
    for ((name, trained), random) in names.iter().zip(&trained_features).zip(&random_features) {
        test.insert(format!("probe.{name}"), probe_error_pct(trained, &labels));
        test.insert(format!("probe_random.{name}"), probe_error_pct(random, &labels));
    }
    // The raw pixels through the same probe: the floor any representation should beat.
    test.insert("probe.pixels".into(), probe_error_pct(&crate::ff::normalize::normalize_rows(&x.view()), &labels));
    if let Some(twin) = twin {
        test.insert("backprop".into(), backprop_twin(config, stream, inputs, twin, &x, &labels)?);
    }
    if !quiet {
        let line: Vec<String> = test.iter().map(|(k, v)| format!("{k} {v:.2}%")).collect();
        tracing::info!(
            "frozen probes ({:.0} s, {} frames): {}",
            started.elapsed().as_secs_f64(),
            x.nrows(),
            line.join(", ")
        );
    }
    state.metrics.test_error_pct = test;
    Ok(())
}

/// The backprop twin: the same layers with a softmax on top, trained end to end with the labels
/// on `twin` frames (one pass, the optimizer of `[stream.twin]`), then scored on the last
/// probe block (the frames the probes score last, unseen by all).
fn backprop_twin(
    config: &PipelineConfig,
    stream: &StreamConfig,
    inputs: usize,
    twin: &[Frame],
    probe_x: &Array2<f32>,
    probe_labels: &[Vec<u8>],
) -> Result<f64> {
    let (x, labels) = windows_of(twin, stream.window, stream.center);
    let single: Vec<u8> = labels.iter().map(|l| l.first().copied().unwrap_or(0)).collect();
    if labels.iter().any(|l| l.len() != 1) {
        bail!("the backprop twin needs one label per frame (moving_mnist.digits = 1)");
    }
    let mut net = BackpropConfig {
        inputs,
        hidden: config.model.layers.clone(),
        classes: CLASSES,
        rule: stream.twin.rule,
        lr: stream.twin.lr,
        weight_cost: stream.twin.weight_cost,
        schedule: stream.twin.schedule,
        epochs: 1,
        normalize_input: true,
        seed: config.seed,
    }
    .build();
    net.set_threads(Threads::One);
    for start in (0..x.nrows()).step_by(config.data.batch) {
        let end = (start + config.data.batch).min(x.nrows());
        let rows = x.slice(ndarray::s![start..end, ..]).to_owned();
        net.train_step(&rows, &single[start..end], 1);
    }
    let block = probe_x.nrows() / super::probe::BLOCKS;
    let last = probe_x.nrows() - block..probe_x.nrows();
    let truth: Vec<u8> = probe_labels[last.clone()].iter().map(|l| l[0]).collect();
    Ok(net.error_pct(&probe_x.slice(ndarray::s![last, ..]).to_owned(), &truth))
}

/// Applies an epoch report of a frame stream: curve, checkpoint, state, one log line.
fn finish_epoch(
    report: &EpochReport,
    dir: &Path,
    state: &mut RunState,
    config: &PipelineConfig,
    seconds: f64,
    quiet: bool,
    latency: (Option<f64>, Option<f64>),
) -> Result<()> {
    let pick = |prefix: &str| -> ErrorsPct {
        report.measures.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), *v)).collect()
    };
    let separation = pick("separation.");
    let mut live = pick("live_probe.");
    let stream_separation = pick("stream_separation");
    live.extend(stream_separation.clone());
    state.curve.push(CurvePoint {
        epoch: report.epoch,
        val_error_pct: separation.clone(),
        stream_error_pct: live.clone(),
        seconds,
    });
    if !separation.is_empty() {
        state.metrics.val_error_pct = separation.clone();
    }
    let rss = crate::metrics::rss_mib();
    let entry = state.details.entry("rss_mib_by_epoch".to_string()).or_insert_with(|| serde_json::json!([]));
    if let Some(list) = entry.as_array_mut() {
        list.push(serde_json::json!(rss));
    }
    state.seconds = seconds;
    save_epoch(dir, &report.states, config, state, report.epoch)?;
    if !quiet {
        let fmt = |m: &ErrorsPct| {
            m.iter()
                .map(|(k, v)| format!("{} {v:.1}%", k.rsplit('.').next().unwrap_or(k)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut line = format!("epoch {:>3}/{} {:>7.1}s", report.epoch, config.data.epochs, seconds);
        if !separation.is_empty() {
            line += &format!("  held-out separation error: {}", fmt(&separation));
        }
        if !stream_separation.is_empty() {
            line += &format!("  on the stream: {}", fmt(&stream_separation).replace("stream_separation", "separation"));
        }
        let probes: ErrorsPct = live.into_iter().filter(|(k, _)| k.starts_with("live_probe.")).collect();
        if !probes.is_empty() {
            line += &format!("  live probe error: {}", fmt(&probes));
        }
        if let (Some(p50), Some(p99)) = latency {
            line += &format!("  latency p50 {p50:.0} ms p99 {p99:.0} ms");
        }
        line += &format!("  rss {rss:.0} MiB");
        tracing::info!("{line}");
    }
    Ok(())
}

/// The backprop twin as a run of its own on a labelled frame stream: the same layers and a
/// softmax, trained end to end with cross-entropy on the same frames, epoch for epoch, as the
/// FF run sees them; scored after every epoch on the last block of the probe stream (the frames
/// the FF probes score last), which no net ever trains on.
pub fn run_frames_backprop(
    config: &PipelineConfig,
    mut feed: Feed,
    dir: &Path,
    state: &mut RunState,
    started: Instant,
    options: &RunOptions,
    stop: Arc<AtomicBool>,
) -> Result<(bool, Vec<StageRates>, u64)> {
    let stream = config.stream.clone().unwrap_or_default();
    let inputs = feed.shape.len();
    let mut net = build_backprop_for(config, inputs);
    net.set_threads(backprop_threads(options));
    if state.epochs_done > 0 {
        let loaded = checkpoint::load(&dir.join("checkpoint.safetensors"))?;
        net.restore(&loaded.state.tensors).map_err(|e| anyhow::anyhow!("cannot resume {}: {e}", dir.display()))?;
    }
    let Some(probe) = feed.probe.take() else { bail!("the backprop twin needs stream.probe_frames > 0") };
    let (px, plabels) = windows_of(&probe, 1, stream.center);
    let block = px.nrows() / super::probe::BLOCKS;
    let last = px.nrows() - block..px.nrows();
    let test_x = px.slice(ndarray::s![last.clone(), ..]).to_owned();
    let test_y: Vec<u8> = plabels[last].iter().map(|l| l[0]).collect();
    let stats = crate::metrics::StageStats::new("backprop");
    let progress = Arc::new(crate::metrics::Progress::default());
    progress.epochs.store(config.data.epochs, Ordering::Relaxed);
    let reporter = crate::metrics::Reporter::start(
        vec![Arc::clone(&stats)],
        Arc::clone(&progress),
        std::time::Duration::from_secs(1),
        Some(dir.join("metrics.jsonl")),
        options.live_view(),
    )?;
    let offset = state.seconds;
    let bp = |e: f64| ErrorsPct::from([("backprop".to_string(), e)]);
    let batch = config.data.batch;
    let (mut frames, mut completed) = (0u64, true);
    'epochs: for epoch in state.epochs_done + 1..=config.data.epochs {
        progress.epoch.store(epoch, Ordering::Relaxed);
        feed.feed.start_epoch(epoch)?;
        let (mut wrong, mut seen) = (0.0, 0usize);
        loop {
            let mut rows: Vec<f32> = Vec::with_capacity(batch * inputs);
            let mut labels = Vec::with_capacity(batch);
            while labels.len() < batch {
                let Some(frame) = feed.feed.next_frame()? else { break };
                super::head::frame_values(&frame.pixels, stream.center, &mut rows);
                labels.push(frame.labels[0]);
            }
            if labels.is_empty() {
                break;
            }
            if stop.load(Ordering::Relaxed) {
                completed = false;
                break 'epochs;
            }
            let t0 = Instant::now();
            // Invariant: every frame of the feed has `inputs` values (its `FrameShape`, window 1).
            let x = Array2::from_shape_vec((labels.len(), inputs), rows).expect("rows of the frame width");
            wrong += net.error_pct(&x, &labels) * labels.len() as f64 / 100.0;
            seen += labels.len();
            if !net.train_step(&x, &labels, epoch).is_finite() {
                bail!("backprop: the loss is not finite at epoch {epoch}; the last checkpoint is kept");
            }
            frames += labels.len() as u64;
            stats.record(labels.len(), labels.len(), t0.elapsed(), Default::default(), Default::default(), 0);
        }
        let error = net.error_pct(&test_x, &test_y);
        let seconds = offset + started.elapsed().as_secs_f64();
        state.curve.push(CurvePoint {
            epoch,
            val_error_pct: bp(error),
            stream_error_pct: bp(100.0 * wrong / seen.max(1) as f64),
            seconds,
        });
        state.metrics.test_error_pct = bp(error);
        let states = [crate::packet::StageState { stage: "backprop".into(), tensors: net.tensors() }];
        state.seconds = seconds;
        save_epoch(dir, &states, config, state, epoch)?;
        if !options.quiet {
            tracing::info!(
                "epoch {epoch:>3}/{} {seconds:>7.1}s  stream: backprop {:.2}%  probe frames (last block): backprop {error:.2}%",
                config.data.epochs,
                100.0 * wrong / seen.max(1) as f64
            );
        }
    }
    drop(reporter);
    let wall = started.elapsed().as_secs_f64();
    Ok((completed, whole_run_rates(&[stats], wall), frames))
}
