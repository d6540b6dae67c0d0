//! A frame stream (Moving MNIST, a video file or camera) as a workload: the video head
//! (windows of frames, negatives made from the stream, wake and sleep), the video sink
//! (separation, live probes), and at the end the frozen-probe comparison with a random-init
//! net and the backprop twin on labelled streams.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use ndarray::Array2;

use super::ff::{Play, Workload};
use super::twin::{self, Batch, TwinData};
use super::{RunOptions, RunState, Session};
use crate::backprop::{Backprop, BackpropConfig};
use crate::config::build::{build_backprop_for, build_stages_for};
use crate::config::{FrameHeadSpec, PipelineConfig, ProbeSettings, Roles, SoftmaxProbeSettings, TwinSettings};
use crate::data::mnist::CLASSES;
use crate::matmul::Threads;
use crate::metrics::Latency;
use crate::record::{CurvePoint, ErrorsPct};
use crate::runtime::{self, Ending, EpochReport, OnEpoch, PipelineError, PipelineStats, Sink};
use crate::stage::Stage;
use crate::video::feed::{Feed, FrameFeed, FrameShape};
use crate::video::head::{frame_values, VideoHead, VideoHeadConfig};
use crate::video::probe::{max_over_positions, probe_error_pct, stage_features, windows_of, BLOCKS};
use crate::video::sink::VideoSink;
use crate::video::softmax_probe::{self, Features};
use crate::video::Frame;

/// The workload of a frame stream.
pub struct Frames {
    /// The frames, until the head takes them.
    frames: Option<Box<dyn FrameFeed>>,
    shape: FrameShape,
    /// Labelled frames for the final probes, and for the one-pass backprop twin beside them.
    probe: Option<Vec<Frame>>,
    twin_frames: Option<Vec<Frame>>,
    /// The splits of a still-image stream, for the frozen softmax at the end.
    splits: Option<Arc<crate::data::Labelled>>,
    spec: FrameHeadSpec,
    probes: ProbeSettings,
    sink: VideoSink,
    /// The head, kept after the run for its error and the feed's counters.
    head: Option<VideoHead>,
    inputs: usize,
    /// `data.frames_per_epoch` (0: the epoch is the whole clip, of a length not known ahead).
    frames_per_epoch: u64,
}

impl Frames {
    /// Opens the feed the pipeline file describes.
    pub fn open(config: &PipelineConfig, options: &RunOptions, stop: Arc<AtomicBool>) -> Result<Frames> {
        let feed = crate::video::open::open(config, options.data_dir.as_deref(), stop)?;
        let Roles::FramesFf { head: spec, probes } = Roles::of(config) else {
            bail!("{} is not FF on a frame stream", config.name)
        };
        let (spec, probes) = (spec.clone(), probes.clone());
        let inputs = spec.window * feed.shape.len();
        // The sink watches the stages the readout reads (`model.readout_from` on).
        let (names, units): (Vec<String>, Vec<usize>) = config
            .stage_names()
            .into_iter()
            .zip(config.model.layers.iter().copied())
            .skip(config.model.readout_from - 1)
            .unzip();
        let sink = VideoSink::new(names, &units, probes.probe_lr);
        let Feed { feed: frames, shape, probe, twin: twin_frames, splits } = feed;
        let frames_per_epoch = config.data.frames_per_epoch.unwrap_or(0);
        Ok(Frames {
            frames: Some(frames),
            shape,
            probe,
            twin_frames,
            splits,
            spec,
            probes,
            sink,
            head: None,
            inputs,
            frames_per_epoch,
        })
    }
}

impl Workload for Frames {
    fn inputs(&self) -> usize {
        self.inputs
    }

    fn sink(&mut self) -> &mut dyn Sink {
        &mut self.sink
    }

    fn epoch_frames(&self) -> u64 {
        self.frames_per_epoch
    }

    fn play(
        &mut self,
        play: Play<'_>,
        stages: Vec<Box<dyn Stage>>,
        on_epoch: &mut OnEpoch<'_>,
    ) -> Result<(Vec<Box<dyn Stage>>, Ending), PipelineError> {
        let (config, spec, shape) = (play.config, &self.spec, self.shape);
        // Invariant: `Frames::open` made the feed, and a session plays it once.
        let frames = self.frames.take().expect("the feed is played once");
        let mut head = VideoHead::new(
            VideoHeadConfig {
                batch: config.data.batch,
                window: spec.window,
                frame_len: shape.len(),
                width: shape.width,
                height: shape.height,
                channels: shape.channels,
                negatives: spec.negatives,
                replay: spec.replay,
                mask_blurs: spec.mask_blurs,
                holdout_every: spec.holdout_every,
                eval_windows: self.probes.eval_windows,
                first_epoch: play.first_epoch,
                epochs: config.data.epochs,
                seed: config.seed,
                center: spec.center,
                schedule: config.schedule,
            },
            frames,
            play.stop,
        );
        head.report_to(Arc::clone(play.progress));
        let played = runtime::run(&mut head, stages, &mut self.sink, play.wiring, play.stats, on_epoch);
        self.head = Some(head);
        played
    }

    fn apply_epoch(report: &EpochReport, state: &mut RunState, _config: &PipelineConfig, seconds: f64) -> String {
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
            test_error_pct: ErrorsPct::new(),
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
        let fmt = |m: &ErrorsPct| {
            m.iter()
                .map(|(k, v)| format!("{} {v:.1}%", k.rsplit('.').next().unwrap_or(k)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut line = String::new();
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
        line + &format!("  rss {rss:.0} MiB")
    }

    fn finish(
        &mut self,
        session: &Session<'_>,
        mut stages: Vec<Box<dyn Stage>>,
        ending: Ending,
        stats: &PipelineStats,
        state: &mut RunState,
    ) -> Result<()> {
        if let Some(head) = &self.head {
            state.details.insert("source".into(), serde_json::to_value(head.feed().counters())?);
        }
        let all = stats.latency.counts();
        let zero = vec![0; all.len()];
        state.details.insert(
            "latency_ms".into(),
            serde_json::json!({
                "p50": Latency::quantile(&zero, &all, 0.5).map(|s| s * 1000.0),
                "p99": Latency::quantile(&zero, &all, 0.99).map(|s| s * 1000.0),
            }),
        );
        if let (Ending::Finished, Some(frames)) = (ending, self.probe.take()) {
            let twin = self.twin_frames.take();
            let quiet = session.options.quiet;
            final_probes(
                session.config,
                &self.spec,
                &self.probes.twin,
                self.inputs,
                &mut stages,
                &frames,
                twin.as_deref(),
                state,
                quiet,
            )?;
            crate::run_folder::save_state(session.dir, state)?;
        }
        if let (Ending::Finished, Some(data)) = (ending, self.splits.take()) {
            final_softmax(session.config, &self.spec, &self.probes.softmax, self.inputs, &mut stages, &data, state)?;
            crate::run_folder::save_state(session.dir, state)?;
        }
        Ok(())
    }
}

/// The still-image test (paper §3.2): a softmax trained on the frozen stages' normalized
/// activities of the training split, its epochs chosen on validation, scored once on the test
/// split: on the layers from `sink.softmax.from` (E1: 2-4), on those from `model.readout_from`
/// when that differs, on the same layers of a random-init net of the same shape, and on the raw
/// pixels.
fn final_softmax(
    config: &PipelineConfig,
    spec: &FrameHeadSpec,
    settings: &SoftmaxProbeSettings,
    inputs: usize,
    stages: &mut [Box<dyn Stage>],
    data: &crate::data::Labelled,
    state: &mut RunState,
) -> Result<()> {
    let started = Instant::now();
    let rows = |split: &crate::data::Split| {
        let mut values = Vec::with_capacity(split.len() * split.width());
        for i in 0..split.len() {
            frame_values(split.image(i), spec.center, &mut values);
        }
        // Invariant: `StillFeed::new` checked every split's width against the source's shape.
        Array2::from_shape_vec((split.len(), split.width()), values).expect("rows of the image width")
    };
    let splits = [rows(&data.train), rows(&data.validation), rows(&data.test)];
    let labels = [&data.train.labels[..], &data.validation.labels[..], &data.test.labels[..]];
    let first = config.model.readout_from;
    let last = config.model.layers.len();
    let from = settings.from.unwrap_or(first);
    let span = |from: usize| if from == last { format!("layer{last}") } else { format!("layers{from}-{last}") };
    let mut sets = vec![from];
    if first != from {
        sets.push(first);
    }
    let mut test = ErrorsPct::new();
    let mut validation = ErrorsPct::new();
    let mut fits = serde_json::Map::new();
    let mut score = |key: String, blocks: [&[Array2<f32>]; 3]| {
        let features = |k: usize| Features { blocks: blocks[k].iter().collect(), labels: labels[k] };
        let fit = softmax_probe::fit(settings, data.classes, config.seed, &features(0), &features(1), &features(2));
        test.insert(key.clone(), fit.test_pct);
        validation.insert(key.clone(), fit.validation_pct);
        fits.insert(key, serde_json::to_value(&fit).unwrap_or_default());
    };
    // The trained net, then a random one: one net's features of all three splits at a time.
    for (net, prefix) in [(None, "softmax"), (Some(build_stages_for(config, inputs)), "softmax_random")] {
        let mut net = net;
        let stages: &mut [Box<dyn Stage>] = match net.as_mut() {
            Some(random) => random,
            None => &mut *stages,
        };
        let features = splits.iter().map(|x| stage_features(stages, x.clone(), 500)).collect::<Result<Vec<_>, _>>()?;
        for &set in if prefix == "softmax" { &sets[..] } else { &sets[..1] } {
            let skip = set - first;
            score(
                format!("{prefix}.{}", span(set)),
                [&features[0][skip..], &features[1][skip..], &features[2][skip..]],
            );
        }
    }
    let pixels = splits.map(|x| crate::ff::normalize::normalize_rows(&x.view()));
    score(
        "softmax.pixels".into(),
        [std::slice::from_ref(&pixels[0]), std::slice::from_ref(&pixels[1]), std::slice::from_ref(&pixels[2])],
    );
    tracing::info!(
        "frozen softmax ({:.0} s; trained on {} images, epochs chosen on {}, tested on {}): {}",
        started.elapsed().as_secs_f64(),
        data.train.len(),
        data.validation.len(),
        data.test.len(),
        test.iter().map(|(k, v)| format!("{k} {v:.2}%")).collect::<Vec<_>>().join(", ")
    );
    state.details.insert("softmax".into(), serde_json::Value::Object(fits));
    state.metrics.val_error_pct.extend(validation);
    state.metrics.test_error_pct = test;
    Ok(())
}

/// Scores the frozen trained stages, a random-init net of the same shape, and (if asked) the
/// backprop twin, on the labelled probe stream.
#[allow(clippy::too_many_arguments)]
fn final_probes(
    config: &PipelineConfig,
    spec: &FrameHeadSpec,
    twin_settings: &TwinSettings,
    inputs: usize,
    stages: &mut [Box<dyn Stage>],
    frames: &[Frame],
    twin: Option<&[Frame]>,
    state: &mut RunState,
    quiet: bool,
) -> Result<()> {
    let started = Instant::now();
    let (x, labels) = windows_of(frames, spec.window, spec.center);
    let mut random = build_stages_for(config, inputs);
    // A recurrent net reads the probe frames as it was trained: the streams side by side, one
    // packet per step (`source.streams` = `data.batch` rows).
    let chunk = if config.is_recurrent() { config.data.batch } else { 500 };
    let trained_features = stage_features(stages, x.clone(), chunk)?;
    let random_features = stage_features(&mut random, x.clone(), chunk)?;
    let names: Vec<String> = config.stage_names().into_iter().skip(config.model.readout_from - 1).collect();
    let shapes = config.shapes();
    let maps = shapes.iter().skip(config.model.readout_from - 1).map(|s| s.map);
    let mut test = ErrorsPct::new();
    for (((name, trained), random), map) in names.iter().zip(&trained_features).zip(&random_features).zip(maps) {
        test.insert(format!("probe.{name}"), probe_error_pct(trained, &labels));
        test.insert(format!("probe_random.{name}"), probe_error_pct(random, &labels));
        // A map's units pooled over its positions: what a digit anywhere on the frame makes.
        if let Some(map) = map {
            test.insert(format!("probe_pooled.{name}"), probe_error_pct(&max_over_positions(trained, map), &labels));
            let random_pooled = max_over_positions(random, map);
            test.insert(format!("probe_random_pooled.{name}"), probe_error_pct(&random_pooled, &labels));
        }
    }
    // The raw pixels through the same probe: the floor any representation should beat.
    test.insert("probe.pixels".into(), probe_error_pct(&crate::ff::normalize::normalize_rows(&x.view()), &labels));
    if let Some(twin) = twin {
        test.insert("backprop".into(), one_pass_twin(config, spec, twin_settings, inputs, twin, &x, &labels)?);
    }
    if !quiet {
        let line: Vec<String> = test.iter().map(|(k, v)| format!("{k} {v:.2}%")).collect();
        tracing::info!(
            "frozen probes ({:.0} s, {} {} frames): {}",
            started.elapsed().as_secs_f64(),
            x.nrows(),
            match config.eval.probe_split {
                crate::config::ProbeSplit::Test => "test",
                crate::config::ProbeSplit::Validation => "validation",
            },
            line.join(", ")
        );
    }
    // Probes on validation digits are validation errors: the test split stays unread.
    match config.eval.probe_split {
        crate::config::ProbeSplit::Test => state.metrics.test_error_pct = test,
        crate::config::ProbeSplit::Validation => state.metrics.val_error_pct.extend(test),
    }
    Ok(())
}

/// The backprop twin beside the probes: the same layers with a softmax on top, trained end to
/// end with the labels on `twin` frames (one pass, the optimizer of `[sink.twin]`), then
/// scored on the last probe block (the frames the probes score last, unseen by all).
fn one_pass_twin(
    config: &PipelineConfig,
    spec: &FrameHeadSpec,
    settings: &TwinSettings,
    inputs: usize,
    twin: &[Frame],
    probe_x: &Array2<f32>,
    probe_labels: &[Vec<u8>],
) -> Result<f64> {
    let (x, labels) = windows_of(twin, spec.window, spec.center);
    let single: Vec<u8> = labels.iter().map(|l| l.first().copied().unwrap_or(0)).collect();
    if labels.iter().any(|l| l.len() != 1) {
        bail!("the backprop twin needs one label per frame ([source] digits = 1)");
    }
    let mut net = BackpropConfig {
        inputs,
        hidden: config.model.layers.clone(),
        local: Vec::new(),
        classes: CLASSES,
        rule: settings.rule,
        lr: settings.lr,
        weight_cost: settings.weight_cost,
        schedule: settings.schedule,
        epochs: 1,
        normalize_input: true,
        dropout: 0.0,
        seed: config.seed,
    }
    .build();
    net.set_threads(Threads::One);
    for start in (0..x.nrows()).step_by(config.data.batch) {
        let end = (start + config.data.batch).min(x.nrows());
        let rows = x.slice(ndarray::s![start..end, ..]).to_owned();
        net.train_step(&rows, &single[start..end], 1);
    }
    let (x, truth) = last_block(probe_x, probe_labels);
    Ok(net.error_pct(&x, &truth))
}

/// The last block of the probe rows and their (first) labels: the frames the frozen probes
/// score last, unseen by every net, on which the backprop twins are scored.
fn last_block(x: &Array2<f32>, labels: &[Vec<u8>]) -> (Array2<f32>, Vec<u8>) {
    let last = x.nrows() - x.nrows() / BLOCKS..x.nrows();
    let truth = labels[last.clone()].iter().map(|l| l[0]).collect();
    (x.slice(ndarray::s![last, ..]).to_owned(), truth)
}

/// The backprop twin on its own reads Moving MNIST frames as they are (it has no frames head
/// to subtract their mean brightness).
const TWIN_CENTER: bool = false;

/// The backprop twin as a run of its own on a labelled frame stream: the same frames, epoch
/// for epoch, as the FF run sees them; scored after every epoch on the last block of the
/// probe stream (the frames the FF probes score last), which no net ever trains on.
pub struct FramesTwin {
    feed: Box<dyn FrameFeed>,
    inputs: usize,
    config: PipelineConfig,
    test_x: Array2<f32>,
    test_y: Vec<u8>,
}

impl FramesTwin {
    /// Opens the feed the pipeline file describes, and its probe frames to score on.
    pub fn open(config: &PipelineConfig, options: &RunOptions, stop: Arc<AtomicBool>) -> Result<FramesTwin> {
        let feed = crate::video::open::open(config, options.data_dir.as_deref(), stop)?;
        let Some(probe) = feed.probe else { bail!("the backprop twin needs eval.probe_frames > 0") };
        let (px, plabels) = windows_of(&probe, 1, TWIN_CENTER);
        let (test_x, test_y) = last_block(&px, &plabels);
        Ok(FramesTwin { inputs: feed.shape.len(), feed: feed.feed, config: config.clone(), test_x, test_y })
    }
}

impl TwinData for FramesTwin {
    fn inputs(&self) -> usize {
        self.inputs
    }

    fn net(&self) -> Backprop {
        build_backprop_for(&self.config, self.inputs)
    }

    fn epoch(&mut self, epoch: u32) -> Result<Box<dyn Iterator<Item = Result<Batch>> + '_>> {
        self.feed.start_epoch(epoch)?;
        let (batch, inputs) = (self.config.data.batch, self.inputs);
        let center = TWIN_CENTER;
        let feed = &mut self.feed;
        Ok(Box::new(std::iter::from_fn(move || {
            let mut rows: Vec<f32> = Vec::with_capacity(batch * inputs);
            let mut labels = Vec::with_capacity(batch);
            while labels.len() < batch {
                match feed.next_frame() {
                    Ok(Some(frame)) => {
                        frame_values(&frame.pixels, center, &mut rows);
                        labels.push(frame.labels[0]);
                    }
                    Ok(None) => break,
                    Err(e) => return Some(Err(e.into())),
                }
            }
            if labels.is_empty() {
                return None;
            }
            // Invariant: every frame of the feed has `inputs` values (its `FrameShape`, window 1).
            let x = Array2::from_shape_vec((labels.len(), inputs), rows).expect("rows of the frame width");
            Some(Ok((x, labels)))
        })))
    }

    fn score(&mut self, net: &Backprop, _epoch: u32, _last: bool, state: &mut RunState) -> (ErrorsPct, String) {
        let error = net.error_pct(&self.test_x, &self.test_y);
        state.metrics.test_error_pct = twin::backprop(error);
        (twin::backprop(error), format!("  probe frames (last block): backprop {error:.2}%"))
    }
}
