//! Labelled rows (MNIST, Aesop) as a workload: the rows head with its label pixels or label
//! layer and its negatives, the classifying sink (goodness for every label, the softmax
//! readout), and the twin on the same splits. A recurrent net sees every batch as a boring
//! video ([`crate::boring_video`]).

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::ff::{Play, Workload};
use super::twin::{self, Batch, TwinData};
use super::{RunOptions, RunState};
use crate::backprop::Backprop;
use crate::boring_video::{Join, Repeat};
use crate::checkpoint;
use crate::config::build::{build_backprop, build_head, build_sink, build_stages, load_data, row_shape};
use crate::config::{Dataset, PipelineConfig, Trainer};
use crate::data::{aesop, Labelled as Rows, Split};
use crate::head::LabelledHead;
use crate::record::{CurvePoint, ErrorsPct};
use crate::runtime::{self, Ending, EpochReport, Mode, OnEpoch, PipelineError, PipelineStats, Sink, Wiring};
use crate::sink::{Classify, Tally};
use crate::stage::Stage;

/// The workload of a labelled dataset.
pub struct Labelled {
    data: Arc<Rows>,
    sink: Classify,
    inputs: usize,
}

impl Labelled {
    /// Loads the data for the FF pipeline.
    pub fn open(config: &PipelineConfig, options: &RunOptions, state: &mut RunState) -> Result<Labelled> {
        let data = load_with_baseline(config, options, state)?;
        Ok(Labelled { sink: build_sink(config), data, inputs: row_shape(config).0 })
    }
}

/// Loads the data; Aesop's unigram baseline goes into the run's details.
fn load_with_baseline(config: &PipelineConfig, options: &RunOptions, state: &mut RunState) -> Result<Arc<Rows>> {
    let data = load_data(config, options.data_dir.as_deref())?;
    if config.dataset() == Dataset::Aesop {
        // E8's first baseline: always predict the training strings' commonest character.
        let unigram = |split: &Split| aesop::unigram_error_pct(&data.train, split);
        state.details.insert(
            "unigram_error_pct".into(),
            serde_json::json!({ "validation": unigram(&data.validation), "test": unigram(&data.test) }),
        );
    }
    Ok(data)
}

/// `name value%` pairs joined for a log line.
fn fmt_errors(m: &ErrorsPct) -> String {
    m.iter().map(|(k, v)| format!("{k} {v:.2}%")).collect::<Vec<_>>().join(", ")
}

fn errors(goodness: Option<f64>, softmax: Option<f64>) -> ErrorsPct {
    let mut m = ErrorsPct::new();
    if let Some(g) = goodness {
        m.insert("goodness".into(), g);
    }
    if let Some(s) = softmax {
        m.insert("softmax".into(), s);
    }
    m
}

impl Workload for Labelled {
    fn inputs(&self) -> usize {
        self.inputs
    }

    fn sink(&mut self) -> &mut dyn Sink {
        &mut self.sink
    }

    fn epoch_frames(&self) -> u64 {
        self.data.train.len() as u64
    }

    fn play(
        &mut self,
        play: Play<'_>,
        stages: Vec<Box<dyn Stage>>,
        on_epoch: &mut OnEpoch<'_>,
    ) -> Result<(Vec<Box<dyn Stage>>, Ending), PipelineError> {
        let mut head = build_head(play.config, Arc::clone(&self.data), play.first_epoch, play.stop);
        head.publish_to(Arc::clone(play.progress));
        let Some(part) = play.part else {
            return run_labelled(play.config, &mut head, stages, &mut self.sink, play.wiring, play.stats, on_epoch);
        };
        // One part of a pipeline spread over processes: the same head and sink as in one process.
        let config = play.config;
        as_played(config, &mut head, &mut self.sink, |head, sink| {
            let elements = super::parts::Elements { head, stages, sink };
            super::parts::run(config, part, elements, play.wiring, play.stats, on_epoch)
        })
    }

    fn apply_epoch(report: &EpochReport, state: &mut RunState, _config: &PipelineConfig, seconds: f64) -> String {
        let tally = |k: &str| Tally::errors_from(&report.measures, k).map(|(g, s)| errors(Some(g), Some(s)));
        let val = tally("validation").unwrap_or_default();
        let stream = errors(None, Tally::errors_from(&report.measures, "stream").map(|(_, s)| s));
        let test = tally("test").unwrap_or_default();
        state.curve.push(CurvePoint {
            epoch: report.epoch,
            val_error_pct: val.clone(),
            stream_error_pct: stream.clone(),
            test_error_pct: test.clone(),
            seconds,
        });
        if !val.is_empty() {
            state.metrics.val_error_pct = val.clone();
        }
        if !test.is_empty() {
            state.metrics.test_error_pct = test.clone();
        }
        if let Some(t) = tally("train") {
            state.metrics.train_error_pct = t;
        }
        let mut line = format!("  stream: {}", fmt_errors(&stream));
        if !val.is_empty() {
            line += &format!("  validation: {}", fmt_errors(&val));
        }
        if !test.is_empty() {
            line += &format!("  test: {}", fmt_errors(&test));
        }
        line
    }
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
    on_epoch: &mut OnEpoch<'_>,
) -> Result<(Vec<Box<dyn Stage>>, Ending), PipelineError> {
    as_played(config, head, sink, |head, sink| runtime::run(head, stages, sink, wiring, stats, on_epoch))
}

/// Calls `run` with the head and sink as `config`'s net plays them: as they are, or for a
/// recurrent net as a boring video ([`crate::boring_video`]), each batch played for every step
/// and joined at the sink. In one process or in a part of a pipeline spread over several.
pub fn as_played<R>(
    config: &PipelineConfig,
    head: &mut LabelledHead,
    sink: &mut Classify,
    run: impl FnOnce(&mut dyn runtime::Head, &mut dyn Sink) -> R,
) -> R {
    if !config.is_recurrent() {
        return run(head, sink);
    }
    let recurrent = config.recurrent_settings();
    let [from, to] = recurrent.goodness_steps;
    run(&mut Repeat::new(head, recurrent.steps()), &mut Join::new(sink, from..=to))
}

/// The backprop twin of a labelled dataset: the training split in the FF run's order and
/// jitter, without label pixels (MNIST's first ten pixels are background); validation every
/// `eval.every` epochs, the test split (and a train cut) at the end.
pub struct LabelledTwin {
    data: Arc<Rows>,
    config: PipelineConfig,
}

impl LabelledTwin {
    /// Loads the data for the twin.
    pub fn open(config: &PipelineConfig, options: &RunOptions, state: &mut RunState) -> Result<LabelledTwin> {
        Ok(LabelledTwin { data: load_with_baseline(config, options, state)?, config: config.clone() })
    }
}

impl TwinData for LabelledTwin {
    fn epoch_frames(&self) -> u64 {
        self.data.train.len() as u64
    }

    fn inputs(&self) -> usize {
        crate::config::build::row_shape(&self.config).0
    }

    fn net(&self) -> Backprop {
        build_backprop(&self.config)
    }

    fn epoch(&mut self, epoch: u32) -> Result<Box<dyn Iterator<Item = Result<Batch>> + '_>> {
        let source = self.config.dataset_source();
        Ok(Box::new(source.epoch_batches(&self.data.train, epoch).map(|b| Ok((b.pixels, b.labels)))))
    }

    fn score(&mut self, net: &Backprop, epoch: u32, last: bool, state: &mut RunState) -> (ErrorsPct, String) {
        let (config, data) = (&self.config, &self.data);
        let mut held_out = ErrorsPct::new();
        let mut said = String::new();
        if epoch.is_multiple_of(config.eval.every) || last {
            held_out = twin::backprop(backprop_error_pct(&self.config, net, &data.validation));
            said += &format!("  validation: backprop {:.2}%", held_out["backprop"]);
            state.metrics.val_error_pct = held_out.clone();
        }
        if last {
            if config.eval.test {
                let test = backprop_error_pct(&self.config, net, &data.test);
                said += &format!("  test: backprop {test:.2}%");
                state.metrics.test_error_pct = twin::backprop(test);
            }
            if config.eval.train_size > 0 {
                state.metrics.train_error_pct =
                    twin::backprop(backprop_error_pct(&self.config, net, &data.train.head(config.eval.train_size)));
            }
        }
        (held_out, said)
    }
}

/// The backprop twin's error on a whole split, percent (unjittered, in stored order).
fn backprop_error_pct(config: &PipelineConfig, net: &Backprop, split: &Split) -> f64 {
    let source = config.dataset_source();
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
    let mut config =
        PipelineConfig::parse(&text, &run_dir.join("pipeline.toml").display().to_string(), &[])?.resolved(data_dir)?;
    if config.is_frame_stream() {
        bail!(
            "`ffstream eval` scores MNIST runs; a frame-stream run is scored while it runs (see {})",
            run_dir.join("state.json").display()
        );
    }
    let loaded = checkpoint::load_run(run_dir)?;
    let epoch: u32 = loaded.metadata.get("epoch").and_then(|e| e.parse().ok()).unwrap_or(0);
    let data = load_data(&config, data_dir)?;
    if config.trainer == Trainer::Backprop {
        let mut net = build_backprop(&config);
        net.restore(&loaded.state.tensors).map_err(|e| anyhow::anyhow!(e))?;
        let mut out = format!("{} (epoch {epoch}):", run_dir.display());
        for (name, split) in [("validation", &data.validation), ("test", &data.test)] {
            out += &format!(" {name} backprop {:.2}%", backprop_error_pct(&config, &net, split));
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
    Sink::restore(&mut sink, &loaded.state).map_err(|e| anyhow::anyhow!(e))?;
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
