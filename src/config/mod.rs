//! Pipeline files (`pipeline/*.toml`): what a run is, parsed strictly.
//!
//! Unknown keys and wrong types are errors that name the line (serde's `deny_unknown_fields`
//! through `toml`, which reports the position); values out of range are errors that name the
//! key and its line. `--set key=value` overrides apply on top of the file, with the same checks.

pub mod build;
mod legacy;
pub mod placement;
pub mod sections;
pub mod shipped;
pub mod stage;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use placement::{PartCut, PlacementConfig};
pub use sections::{
    Cifar10Source, FrameHeadSpec, FrameOrder, HeadSpec, IdxSource, LabelledHeadSpec, MnistSource, MovingMnistSettings,
    ProbeSettings, ReadoutSettings, Roles, SinkSpec, SoftmaxProbeSettings, SourceSpec,
};
pub use stage::{DenseSpec, LocalRecurrentSpec, LocalSpec, RecurrentConfig, RecurrentSpec, StageShape, StageSpec};

use crate::ff::fields::MapShape;
use crate::ff::goodness::Goodness;
use crate::ff::optim::{Rule, Schedule};
use crate::negative::NegativeKind;
use crate::runtime::{Mode, Wiring};

/// A pipeline file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read pipeline file `{path}`: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Syntax, unknown key or wrong type.
    #[error("{origin}: {message}")]
    Parse {
        /// The file, or the override.
        origin: String,
        /// What toml said, flattened to one line.
        message: String,
    },
    /// A value out of range.
    #[error("{origin}{}: `{key}` {message}", at_line(*line))]
    Value {
        /// The file.
        origin: String,
        /// 1-based line where the key is set (0 if only set by an override or a default).
        line: usize,
        /// The dotted key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// No shipped pipeline has this name and no file has this path.
    #[error("no pipeline file `{name}`; the shipped ones are {shipped}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The shipped names, comma-separated.
        shipped: String,
    },
    /// A `--set` argument is not `key=value`.
    #[error("override `{0}` is not of the form key=value")]
    Override(String),
}

/// Which trainer runs the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trainer {
    /// Forward-Forward through the stage pipeline.
    Ff,
    /// The backprop twin (same net, end to end, cross-entropy).
    Backprop,
}

/// What the paper reports for this experiment (shown by `ffstream list` and in RESULTS.md).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PaperClaim {
    /// The experiment id of PAPER.md (E3, E3b, ...).
    pub experiment: String,
    /// The paper section.
    pub section: String,
    /// The claim in a sentence.
    pub claim: String,
    /// The reported test error, percent.
    pub test_error_pct: Option<f64>,
}

/// The data stream.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Passes over the training split.
    pub epochs: u32,
    /// Frames per micro-batch.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Use only the first N training images (0: all 50,000).
    #[serde(default)]
    pub train_size: usize,
    /// Use only the first N validation images (0: all 10,000).
    #[serde(default)]
    pub validation_size: usize,
    /// Use only the first N test images (0: all 10,000).
    #[serde(default)]
    pub test_size: usize,
    /// Frames per epoch of a generated or live frame stream (a file's epoch is one pass;
    /// default 20,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_per_epoch: Option<u64>,
}

/// What a pipeline learns from: the `kind` of its `[source]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dataset {
    /// MNIST images, labelled rows (`../shared/data/mnist`).
    Mnist,
    /// CIFAR-10 images, labelled rows (`../shared/data/cifar10`).
    Cifar10,
    /// A folder of IDX files, labelled rows.
    Idx,
    /// Aesop's Fables, next-character rows (E8).
    Aesop,
    /// Moving MNIST generated from MNIST, a labelled frame stream.
    MovingMnist,
    /// A video file, device or network stream (`[source] kind = "video"`), through FFmpeg.
    Video,
}

impl Dataset {
    /// Its name in a pipeline file.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Mnist => "mnist",
            Dataset::Cifar10 => "cifar10",
            Dataset::Idx => "idx",
            Dataset::Aesop => "aesop",
            Dataset::MovingMnist => "moving_mnist",
            Dataset::Video => "video",
        }
    }

    /// Whether it is a frame stream (the video head and sink) rather than labelled rows.
    pub fn is_frame_stream(self) -> bool {
        matches!(self, Dataset::MovingMnist | Dataset::Video)
    }

    /// Whether its labelled rows are images, which a frames head can also play as still
    /// frames ([`crate::video::still`]).
    pub fn has_images(self) -> bool {
        matches!(self, Dataset::Mnist | Dataset::Cifar10 | Dataset::Idx)
    }
}

/// The optimizer of the quick backprop twin of a frame stream (`[sink.twin]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TwinSettings {
    /// Update rule.
    #[serde(default = "twin_rule")]
    pub rule: Rule,
    /// ε.
    #[serde(default = "twin_lr")]
    pub lr: f32,
    /// Weight cost.
    #[serde(default = "twin_weight_cost")]
    pub weight_cost: f32,
    /// Schedule over its one pass.
    #[serde(default = "twin_schedule")]
    pub schedule: Schedule,
}

fn twin_rule() -> Rule {
    Rule::Sgd { momentum: 0.9 }
}
fn twin_lr() -> f32 {
    0.02
}
fn twin_weight_cost() -> f32 {
    1e-4
}
fn twin_schedule() -> Schedule {
    Schedule::Constant
}

impl Default for TwinSettings {
    fn default() -> TwinSettings {
        TwinSettings { rule: twin_rule(), lr: twin_lr(), weight_cost: twin_weight_cost(), schedule: twin_schedule() }
    }
}

fn default_batch() -> usize {
    100
}

/// The network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Units per hidden layer: a chain of `ff_dense` stages (or, with `[[stage]]` tables, their
    /// units, filled in from the tables).
    #[serde(default)]
    pub layers: Vec<usize>,
    /// Goodness function.
    #[serde(default)]
    pub goodness: Goodness,
    /// θ (default: the goodness's own, Matlab: number of units).
    pub threshold: Option<f32>,
    /// T.
    #[serde(default = "one")]
    pub temperature: f32,
    /// λ of peer normalization (0: off).
    #[serde(default)]
    pub peer_normalization: f32,
    /// First layer (1-based) whose goodness counts in the goodness test.
    #[serde(default = "two")]
    pub goodness_from: usize,
    /// First layer (1-based) the readout reads.
    #[serde(default = "two")]
    pub readout_from: usize,
    /// Value of the label pixel.
    #[serde(default = "one")]
    pub label_strength: f32,
    /// Backprop twin only: RMS-normalize the input image as the FF net does.
    #[serde(default = "yes")]
    pub normalize_input: bool,
    /// Backprop trainer only: dropout on the hidden layers while training (0: none).
    #[serde(default, skip_serializing_if = "is_zero_f32")]
    pub dropout: f32,
}

fn is_zero_f32(x: &f32) -> bool {
    *x == 0.0
}

fn one() -> f32 {
    1.0
}
fn two() -> usize {
    2
}
fn yes() -> bool {
    true
}

/// The optimizer of the trained layers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Rule.
    pub rule: Rule,
    /// ε.
    pub lr: f32,
    /// Weight cost.
    #[serde(default)]
    pub weight_cost: f32,
    /// Schedule.
    #[serde(default)]
    pub schedule: Schedule,
}

/// How the stages run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Threaded or lockstep.
    pub mode: Mode,
    /// Messages each queue holds.
    #[serde(default = "default_capacity")]
    pub queue_capacity: usize,
    /// Packets between a recurrent stage's state and the stage below reading it (the
    /// feedback edges' delay d: 1 is the paper's synchronous rule, d >= 2 lets neighbouring
    /// stages work at the same time). Feed-forward nets have no feedback edge.
    #[serde(default = "default_feedback_delay")]
    pub feedback_delay: usize,
    /// Threaded mode: at most this many stages compute at once, each packet to its end
    /// (`runtime::tokens`); 0, the default, lets the OS share the cores among all stages.
    /// The results are the same either way; only the speed differs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub core_tokens: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn default_feedback_delay() -> usize {
    1
}

impl RuntimeConfig {
    /// How the runtime wires the stages.
    pub fn wiring(&self) -> Wiring {
        Wiring {
            mode: self.mode,
            capacity: self.queue_capacity.max(1),
            feedback_delay: self.feedback_delay,
            shards: None,
            core_tokens: self.core_tokens,
        }
    }
}

fn default_capacity() -> usize {
    2
}

/// Evaluation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Validate every N epochs (and after the last).
    pub every: u32,
    /// Images per evaluation packet.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Training images scored after the last epoch (0: none).
    #[serde(default)]
    pub train_size: usize,
    /// Score the test split once after the last epoch.
    #[serde(default = "yes")]
    pub test: bool,
    /// Frame streams: labelled frames of the final frozen-probe stream (0: no final probe).
    #[serde(default)]
    pub probe_frames: usize,
    /// How the probe stream samples its test-split sequences: every frame of each (`stream`,
    /// `probe_frames` frames), or one window from each of `probe_frames` sequences
    /// (`one_per_sequence`: as many distinct digits as windows, not one per 20 frames).
    #[serde(default, skip_serializing_if = "ProbeSampling::is_stream")]
    pub probe_sampling: ProbeSampling,
    /// Which held-out digits the final probes read: the test split (`test`, the default), or
    /// the last 10,000 MNIST training images (`validation`; the stages then learn from the
    /// first 50,000 only, and the probe errors are validation errors). Settings are chosen on
    /// `validation`, and the test split is read once with what was chosen.
    #[serde(default, skip_serializing_if = "ProbeSplit::is_test")]
    pub probe_split: ProbeSplit,
    /// Epochs after which the test split is scored as well (labelled FF runs): a speedrun's
    /// declared checkpoints, the only places it reads the test set besides the end (`test`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_at: Vec<u32>,
}

/// How the final probes draw their labelled frames from Moving MNIST's test sequences.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProbeSampling {
    /// Every frame of consecutive sequences, played as the training stream (a recurrent net
    /// carries its state through them). 20 near-duplicate frames per digit.
    #[default]
    Stream,
    /// One window per sequence, at a position that moves along the sequence from one to the
    /// next: each window a digit drawn afresh, at its own place on the canvas.
    OnePerSequence,
}

impl ProbeSampling {
    /// True for the default (kept out of serialized configs, so older records read the same).
    pub fn is_stream(&self) -> bool {
        *self == ProbeSampling::Stream
    }
}

/// Which held-out digits a Moving MNIST run's final probes read.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProbeSplit {
    /// MNIST's test images; the stages learn from all 60,000 training images.
    #[default]
    Test,
    /// MNIST's last 10,000 training images; the stages learn from the first 50,000.
    Validation,
}

impl ProbeSplit {
    /// True for the default (kept out of serialized configs, so older records read the same).
    pub fn is_test(&self) -> bool {
        *self == ProbeSplit::Test
    }
}

/// A speedrun (issue 11): how fast the run's test error first reaches a target, at the test
/// checkpoints `eval.test_at` declares. A recorded run also writes `results/speedrun/<name>.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpeedrunConfig {
    /// Test error, percent, that ends the clock.
    pub target_error_pct: f64,
    /// Which test procedure counts.
    #[serde(default)]
    pub readout: SpeedrunReadout,
}

/// The test procedure a speedrun's target is read from.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SpeedrunReadout {
    /// Goodness for every label.
    Goodness,
    /// The one-pass softmax readout.
    Softmax,
    /// Whichever of the two reaches the target first (each is an FF test procedure).
    #[default]
    Either,
}

impl SpeedrunReadout {
    /// Lower-case name, as in the pipeline file.
    pub fn name(self) -> &'static str {
        match self {
            SpeedrunReadout::Goodness => "goodness",
            SpeedrunReadout::Softmax => "softmax",
            SpeedrunReadout::Either => "either",
        }
    }
}

/// A whole pipeline file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The experiment name (record folder).
    pub name: String,
    /// FF or backprop.
    pub trainer: Trainer,
    /// The run's seed.
    pub seed: u64,
    /// The paper's claim.
    pub paper: Option<PaperClaim>,
    /// Data.
    pub data: DataConfig,
    /// What feeds the stages (`[source]`, kind-tagged).
    pub source: SourceSpec,
    /// What makes the packets (`[head]`, kind-tagged; FF only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadSpec>,
    /// What reads the features (`[sink]`, kind-tagged; FF only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkSpec>,
    /// Network.
    pub model: ModelConfig,
    /// Optimizer.
    pub optimizer: OptimizerConfig,
    /// Runtime (FF).
    pub pipeline: Option<RuntimeConfig>,
    /// Evaluation.
    pub eval: EvalConfig,
    /// Interleaved updates, or wake and sleep phases (issue 4).
    #[serde(default)]
    pub schedule: crate::schedule::PhaseSchedule,
    /// The network stage by stage (`[[stage]]` tables; see [`stage`]); empty: `model.layers`.
    #[serde(default, rename = "stage", skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageSpec>,
    /// How a recurrent net plays each batch (nets with `ff_recurrent` stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrent: Option<RecurrentConfig>,
    /// A speedrun's target (`[speedrun]`; see [`SpeedrunConfig`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speedrun: Option<SpeedrunConfig>,
    /// Which elements run in which process (`[placement]`; see [`placement`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementConfig>,
}

/// A finite number above zero (NaN is not).
fn positive(x: f32) -> bool {
    x.is_finite() && x > 0.0
}

/// A finite number of at least zero (NaN is not).
fn non_negative(x: f32) -> bool {
    x.is_finite() && x >= 0.0
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Sets `dotted` in `table` to `value` (parsed as TOML, else taken as a string).
/// An error names the table of an array (`stage.3`) that the file does not have.
fn set_key(table: &mut toml::Table, dotted: &str, value: &str) -> Result<(), String> {
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let last = parts.pop().unwrap_or(dotted);
    let mut node = table;
    let mut parts = parts.into_iter().peekable();
    while let Some(part) = parts.next() {
        let entry = node.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        // `stage.2.units`: the second `[[stage]]` table (1-based, as the stages are named).
        let index = match &*entry {
            toml::Value::Array(tables) => match parts.peek().and_then(|p| p.parse::<usize>().ok()) {
                Some(i) if i >= 1 && i <= tables.len() => Some(i),
                Some(i) => return Err(format!("`{part}.{i}`: the file has {} [[{part}]] tables", tables.len())),
                None => None,
            },
            _ => None,
        };
        let slot = match (entry, index) {
            (toml::Value::Array(tables), Some(i)) => {
                parts.next();
                &mut tables[i - 1]
            }
            (entry, _) => entry,
        };
        if !slot.is_table() {
            *slot = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(t) = slot else { return Ok(()) };
        node = t;
    }
    node.insert(last.to_string(), parsed);
    Ok(())
}

/// `--set model.layers=[...]` on a file that names its stages: the shorthand replaces the
/// chain when every `[[stage]]` table is a plain `ff_dense` layer (a kind and a width, nothing
/// of its own), so a quick run can resize or cut any shipped dense net; a stage with settings
/// of its own (another kind, its own goodness, threads, ...) is not silently dropped.
fn drop_plain_stages(table: &mut toml::Table) -> Result<(), String> {
    let Some(toml::Value::Array(stages)) = table.get("stage") else { return Ok(()) };
    let plain = |stage: &toml::Value| {
        stage.as_table().is_some_and(|t| {
            t.get("kind").and_then(|k| k.as_str()) == Some("ff_dense") && t.keys().all(|k| k == "kind" || k == "units")
        })
    };
    if let Some(i) = stages.iter().position(|s| !plain(s)) {
        return Err(format!(
            "`model.layers` would replace the file's [[stage]] tables, and stage {} has settings of its own: \
             set `stage.N.units` instead",
            i + 1
        ));
    }
    table.remove("stage");
    if let Some(toml::Value::Table(model)) = table.get_mut("model") {
        model.remove("layers");
    }
    Ok(())
}

/// `, line N` for a key set on line N, nothing for 0 (a key set by `--set` or left at its default).
fn at_line(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(", line {line}")
    }
}

/// The dotted key of the first nan or infinite number in a parsed file (with its overrides).
fn non_finite(table: &toml::Table, prefix: &str) -> Option<String> {
    fn walk(value: &toml::Value, key: String) -> Option<String> {
        match value {
            toml::Value::Float(f) if !f.is_finite() => Some(key),
            toml::Value::Table(t) => non_finite(t, &key),
            toml::Value::Array(a) => a.iter().enumerate().find_map(|(i, v)| walk(v, format!("{key}.{}", i + 1))),
            _ => None,
        }
    }
    let dotted = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    table.iter().find_map(|(k, v)| walk(v, dotted(k)))
}

/// The 1-based line where `dotted` is set in `text`, or 0.
pub fn line_of(text: &str, dotted: &str) -> usize {
    let (section, key) = dotted.rsplit_once('.').unwrap_or(("", dotted));
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_string();
            // A whole section (`head`): its `[head]` header.
            if current == dotted {
                return i + 1;
            }
            continue;
        }
        let Some((k, rest)) = line.split_once('=') else { continue };
        let k = k.trim();
        if current == section && k == key {
            return i + 1;
        }
        // `section = { key = ... }` on one line.
        if current.is_empty() && k == section && rest.contains(&format!("{key} ")) {
            return i + 1;
        }
    }
    0
}

impl PipelineConfig {
    /// Parses `text` (from `origin`), applies `overrides` (`key=value`), and validates.
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<PipelineConfig, ConfigError> {
        let parse_error = |origin: &str, e: toml::de::Error| ConfigError::Parse {
            origin: origin.to_string(),
            message: one_line(&e.to_string()),
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_error(origin, e))?;
        let old = legacy::upgrade(&mut table);
        if old {
            tracing::warn!(
                "{origin} uses the old sections ([data] dataset, [stream], [video], [moving_mnist], [negatives], \
                 [readout]); it is read as [source], [head] and [sink] (pipeline/README.md)"
            );
        }
        // Parsed from the text first, so an unknown key or a wrong type names its line.
        let mut config: PipelineConfig = if old {
            table.clone().try_into().map_err(|e| parse_error(origin, e))?
        } else {
            toml::from_str(text).map_err(|e| parse_error(origin, e))?
        };
        if !overrides.is_empty() {
            for o in overrides {
                let (key, value) = o.split_once('=').ok_or_else(|| ConfigError::Override(o.clone()))?;
                let set = |table: &mut toml::Table| {
                    if key.trim() == "model.layers" {
                        drop_plain_stages(table)?;
                    }
                    set_key(table, key.trim(), value.trim())
                };
                set(&mut table).map_err(|message| ConfigError::Parse { origin: format!("--set {o}"), message })?;
            }
            config = table
                .clone()
                .try_into()
                .map_err(|e| parse_error(&format!("{origin} with --set {}", overrides.join(" --set ")), e))?;
        }
        // A value out of range is named where it was set: the `--set` that set it, else its
        // line in the file (a default has neither).
        let value_error = |(key, message): (String, String)| {
            let set = overrides.iter().rev().find(|o| {
                o.split_once('=').is_some_and(|(k, _)| key == k.trim() || key.starts_with(&format!("{}.", k.trim())))
            });
            match set {
                Some(o) => ConfigError::Value { origin: format!("--set {o}"), line: 0, key, message },
                None => ConfigError::Value { origin: origin.to_string(), line: line_of(text, &key), key, message },
            }
        };
        non_finite(&table, "")
            .map_or(Ok(()), |key| Err(value_error((key, "must be a finite number (not nan or inf)".to_string()))))?;
        config.resolve_stages().map_err(value_error)?;
        config.validate().map_err(value_error)?;
        Ok(config)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<PipelineConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { path: path.display().to_string(), source })?;
        PipelineConfig::parse(&text, &path.display().to_string(), overrides)
    }

    /// With `[[stage]]` tables, `model.layers` becomes their units (a resolved file, written
    /// back, holds both, and they agree).
    fn resolve_stages(&mut self) -> Result<(), (String, String)> {
        if self.stages.is_empty() {
            return Ok(());
        }
        let units: Vec<usize> = self.stage_shapes()?.iter().map(|s| s.units).collect();
        if !self.model.layers.is_empty() && self.model.layers != units {
            return Err((
                "model.layers".into(),
                format!("says {:?} but the [[stage]] tables say {units:?}: keep one of the two", self.model.layers),
            ));
        }
        self.model.layers = units;
        Ok(())
    }

    /// The map the first stage reads: images and single frames (`head.window = 1`); none for
    /// text or windows of several frames.
    pub fn input_map(&self) -> Option<MapShape> {
        let window = self.frame_head().map_or(1, |h| h.window);
        let (height, width, channels) = self.image_shape().filter(|_| window == 1)?;
        Some(MapShape::new(height, width, channels))
    }

    /// Each stage's input map, units and map, bottom up; an error names the `[[stage]]` key.
    pub fn stage_shapes(&self) -> Result<Vec<StageShape>, (String, String)> {
        let mut below = self.input_map();
        let mut shapes = Vec::new();
        for (i, spec) in self.stage_specs().iter().enumerate() {
            let shape = spec.shape(below).map_err(|(key, message)| (format!("stage.{}.{key}", i + 1), message))?;
            below = shape.map;
            shapes.push(shape);
        }
        Ok(shapes)
    }

    /// [`Self::stage_shapes`] of a parsed file, which `parse` already checked.
    pub fn shapes(&self) -> Vec<StageShape> {
        // Invariant: `PipelineConfig::parse` resolved the shapes of the stages it accepted.
        self.stage_shapes().unwrap_or_else(|(key, message)| panic!("validated stages: `{key}` {message}"))
    }

    /// The stages in order: the `[[stage]]` tables, or `model.layers` as `ff_dense` stages.
    pub fn stage_specs(&self) -> Vec<StageSpec> {
        if self.stages.is_empty() {
            self.model.layers.iter().map(|&u| StageSpec::dense(u)).collect()
        } else {
            self.stages.clone()
        }
    }

    /// True for a net of `ff_recurrent` stages (the head plays every batch for several steps).
    pub fn is_recurrent(&self) -> bool {
        self.stages.iter().any(StageSpec::is_recurrent)
    }

    /// The recurrent settings (defaults where the file has no `[recurrent]` section).
    pub fn recurrent_settings(&self) -> RecurrentConfig {
        self.recurrent.clone().unwrap_or_default()
    }

    /// The top-down fields of the `i`-th (0-based) stage, an `ff_local_recurrent` one, on the
    /// map of the stage above: there must be one, with this stage's grid.
    fn validate_top_down(&self, i: usize, spec: &LocalRecurrentSpec) -> Result<(), (String, String)> {
        let key = |k: &str| format!("stage.{}.{k}", i + 1);
        let shapes = self.stage_shapes()?;
        let (Some(above), Some(map)) = (shapes.get(i + 1), shapes[i].map) else {
            return Ok(()); // the top stage: the label layer, dense
        };
        let Some(above_map) = above.map else {
            return Err((key("kind"), "needs a map above for its top-down fields: an ff_local_recurrent stage".into()));
        };
        let fields = spec.top_down_fields(above_map);
        if fields.size.is_multiple_of(2) || fields.grid() != Some((map.height, map.width)) {
            return Err((
                key("top_down_field"),
                format!(
                    "{0}x{0} centred top-down fields on the {above_map} map above must make this stage's {1}x{2} grid \
                     (an odd side, and a map above of the same grid)",
                    fields.size, map.height, map.width
                ),
            ));
        }
        Ok(())
    }

    /// Checks of the `[[stage]]` tables and `[recurrent]`, as `(dotted key, complaint)`.
    fn validate_stages(&self) -> Result<(), (String, String)> {
        let fail = |key: String, message: String| Err((key, message));
        for (i, spec) in self.stages.iter().enumerate() {
            let key = |k: &str| format!("stage.{}.{k}", i + 1);
            if !(1..=256).contains(&spec.threads()) {
                return fail(key("threads"), "must be between 1 and 256".into());
            }
            if let Some(damping) = spec.damping() {
                if !(damping.is_finite() && (0.0..1.0).contains(&damping)) {
                    return fail(key("damping"), "must be in [0, 1) (the share of the old state kept)".into());
                }
            }
            if let StageSpec::FfLocalRecurrent(r) = spec {
                self.validate_top_down(i, r)?;
            }
        }
        if self.is_recurrent() {
            if let Some(i) = self.stages.iter().position(|s| !s.is_recurrent()) {
                return fail(
                    format!("stage.{}.kind", i + 1),
                    "must be \"ff_recurrent\" or \"ff_local_recurrent\" like the other stages: a recurrent \
                     net has top-down input everywhere"
                        .into(),
                );
            }
            if !matches!(self.dataset(), Dataset::Mnist | Dataset::MovingMnist | Dataset::Cifar10 | Dataset::Idx) {
                return fail(
                    "source.kind".into(),
                    "must be mnist, cifar10, idx or moving_mnist for recurrent stages".into(),
                );
            }
            if self.trainer != Trainer::Ff {
                return fail("trainer".into(), "must be \"ff\" for ff_recurrent stages".into());
            }
            if self.schedule != crate::schedule::PhaseSchedule::Interleaved {
                return fail("schedule".into(), "must be interleaved for ff_recurrent stages (for now)".into());
            }
            if let Some((key, complaint)) = self.recurrent_settings().check() {
                return fail(key.into(), complaint);
            }
            if self.dataset() == Dataset::MovingMnist {
                self.validate_recurrent_video()?;
            }
        } else if self.recurrent.is_some() {
            return fail("recurrent".into(), "needs ff_recurrent stages ([[stage]] kind = \"ff_recurrent\")".into());
        }
        Ok(())
    }

    /// A recurrent net on a video: every frame is one step, and the net's state, carried from
    /// packet to packet, is the video's memory. That needs one frame per row (window 1) and
    /// the same stream in the same row of every packet (as many parallel streams as rows).
    fn validate_recurrent_video(&self) -> Result<(), (String, String)> {
        let fail = |key: &str, message: &str| Err((key.to_string(), message.to_string()));
        let recurrent = self.recurrent_settings();
        if !recurrent.carry_state {
            return fail("recurrent.carry_state", "must be true on a frame stream: the state is the video's memory");
        }
        let defaults = RecurrentConfig::default();
        if (recurrent.iterations, recurrent.learn_steps, recurrent.goodness_steps)
            != (defaults.iterations, defaults.learn_steps, defaults.goodness_steps)
        {
            return fail(
                "recurrent.iterations",
                "iterations, learn_steps and goodness_steps play a static image as a boring video; on a frame \
                 stream every frame is one step: leave them out",
            );
        }
        if self.frame_head().map_or(1, |h| h.window) != 1 {
            return fail("head.window", "must be 1 for ff_recurrent stages: the state carries the past frames");
        }
        let streams = self.moving_mnist().map_or(1, |m| m.streams);
        if streams != self.data.batch {
            return fail(
                "source.streams",
                &format!("must equal data.batch ({}) for ff_recurrent stages: row i is stream i", self.data.batch),
            );
        }
        Ok(())
    }

    /// A placement covers the chain, and the run is one whose every measure passes through the
    /// pipeline (a frame stream's final probes read every stage at once, in one process).
    fn validate_placement(&self) -> Result<(), (String, String)> {
        let Some(p) = &self.placement else { return Ok(()) };
        let fail = |message: String| Err(("placement".to_string(), message));
        if self.trainer != Trainer::Ff {
            return fail("places FF stages; a backprop twin runs in one process: remove it".into());
        }
        if self.is_frame_stream() {
            return fail(
                "a frame stream's final probes read every stage in one process; parts of one are not built yet".into(),
            );
        }
        if self.pipeline.as_ref().is_some_and(|r| r.mode == crate::runtime::Mode::Lockstep) {
            return fail("parts run threaded; pipeline.mode = \"lockstep\" runs in one thread: remove one".into());
        }
        p.check(&self.stage_names()).or_else(fail)
    }

    /// Range checks, as `(dotted key, complaint)`.
    fn validate(&self) -> Result<(), (String, String)> {
        let fail = |key: &str, message: &str| Err((key.to_string(), message.to_string()));
        // The name is a folder under results/ and runs/: one plain path component.
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if !self.name.starts_with(|c: char| c.is_ascii_alphanumeric()) || !self.name.chars().all(plain) {
            return fail("name", "must be letters, digits, '-', '_' or '.', starting with a letter or digit");
        }
        self.validate_stages()?;
        Roles::check(self)?;
        self.validate_placement()?;
        if self.trainer == Trainer::Backprop && self.pipeline.is_some() {
            return fail(
                "pipeline",
                "is read by the FF stages only; this pipeline trains the backprop twin: remove it",
            );
        }
        let frames = self.is_frame_stream();
        if matches!(&self.source, SourceSpec::Cifar10(c) if c.center) && frames {
            return fail("source.center", "centres labelled rows only (a labelled head or the backprop twin)");
        }
        match &self.source {
            SourceSpec::Video(v) => {
                if let Err(e) = v.validate() {
                    return fail("source", &e.to_string());
                }
            }
            SourceSpec::MovingMnist(m) => {
                if !(1..=2).contains(&m.digits) {
                    return fail("source.digits", "must be 1 or 2");
                }
                if !(1..=10_000).contains(&m.streams) {
                    return fail("source.streams", "must be 1 to 10000");
                }
                if m.order == FrameOrder::Shuffled {
                    if self.is_recurrent() {
                        return fail("source.order", "a recurrent net follows each video: shuffled frames have none");
                    }
                    if self.frame_head().is_some_and(|h| h.window > 1) {
                        return fail("source.order", "shuffled frames make no windows: set head.window = 1");
                    }
                }
            }
            SourceSpec::Mnist(m) => {
                if !(0..=4).contains(&m.jitter) {
                    return fail("source.jitter", "must be between 0 and 4 pixels");
                }
            }
            SourceSpec::Idx(s) => {
                if s.path.is_empty() {
                    return fail("source.path", "must name the folder of IDX files");
                }
                // Labels are bytes.
                if s.classes.is_some_and(|c| !(1..=256).contains(&c)) {
                    return fail("source.classes", "must be between 1 and 256");
                }
            }
            SourceSpec::Cifar10(_) | SourceSpec::Aesop(_) => {}
        }
        // A still-image stream's epoch is its training split, and its test is the softmax on
        // the splits, so the stream-only keys do not apply to it.
        let stream = self.dataset().is_frame_stream();
        if self.data.frames_per_epoch.is_some() && !stream {
            return fail("data.frames_per_epoch", "applies to frame streams (moving_mnist, video) only: remove it");
        }
        if self.data.frames_per_epoch == Some(0) {
            return fail("data.frames_per_epoch", "must be at least 1");
        }
        if self.eval.probe_frames != 0 && !stream {
            return fail("eval.probe_frames", "applies to frame streams (moving_mnist, video) only: remove it");
        }
        if !self.eval.probe_split.is_test() && !matches!(self.source, SourceSpec::MovingMnist(_)) {
            return fail("eval.probe_split", "validation probes hold out Moving MNIST's digits: remove it");
        }
        if !self.eval.probe_sampling.is_stream() {
            if !matches!(self.source, SourceSpec::MovingMnist(_)) {
                return fail("eval.probe_sampling", "one_per_sequence samples Moving MNIST's sequences: remove it");
            }
            if self.is_recurrent() {
                return fail(
                    "eval.probe_sampling",
                    "a recurrent net reads its probe frames as whole sequences (stream), not one window of each",
                );
            }
        }
        if let Some(h) = self.frame_head() {
            if h.window == 0 {
                return fail("head.window", "must be at least 1 frame");
            }
            if h.window == 1 && !matches!(h.negatives, NegativeKind::Hybrid | NegativeKind::AlignedHybrid) {
                return fail("head.negatives", "shuffle and cut need windows of 2 or more frames (head.window)");
            }
            // Each pass blurs the whole mask once: past a few dozen the mask is flat (and a
            // huge count only burns time before the first frame).
            if h.mask_blurs > 64 {
                return fail("head.mask_blurs", "must be at most 64 (the paper's masks blur a few times)");
            }
        }
        if self.is_still_stream() {
            if self.frame_head().is_some_and(|h| h.window != 1) {
                return fail("head.window", "must be 1 for still images (every image is its own frame)");
            }
            if matches!(&self.sink, Some(SinkSpec::Probes(p)) if p.backprop_twin) {
                return fail(
                    "sink.backprop_twin",
                    "applies to Moving MNIST; the backprop twin of an image dataset is a pipeline of its own (trainer = \"backprop\")",
                );
            }
        }
        if let Some(SinkSpec::Probes(p)) = &self.sink {
            let softmax = &p.softmax;
            if softmax.epochs == 0 || softmax.batch == 0 {
                return fail("sink.softmax.epochs", "and sink.softmax.batch must be at least 1");
            }
            if !positive(softmax.lr) {
                return fail("sink.softmax.lr", "must be positive");
            }
            if !non_negative(softmax.weight_cost) {
                return fail("sink.softmax.weight_cost", "must be zero or positive");
            }
            if softmax.from.is_some_and(|f| f < self.model.readout_from || f > self.model.layers.len()) {
                return fail("sink.softmax.from", "must be a stage from model.readout_from to the last");
            }
            if !positive(p.probe_lr) {
                return fail("sink.probe_lr", "must be positive");
            }
            if !positive(p.twin.lr) {
                return fail("sink.twin.lr", "must be positive");
            }
            if !non_negative(p.twin.weight_cost) {
                return fail("sink.twin.weight_cost", "must be zero or positive");
            }
        }
        if let Some(complaint) = self.schedule.check() {
            return fail("schedule", complaint);
        }
        // Sleep draws every negative from the replay memory, so it cannot be empty.
        if self.schedule != crate::schedule::PhaseSchedule::Interleaved {
            let replay = match &self.head {
                Some(HeadSpec::Frames(h)) => h.replay,
                Some(HeadSpec::Labelled(h)) => h.replay,
                None => 1,
            };
            if replay == 0 {
                return fail("head.replay", "must be at least 1 with wake and sleep phases");
            }
        }
        if self.data.epochs == 0 {
            return fail("data.epochs", "must be at least 1");
        }
        if self.data.batch == 0 {
            return fail("data.batch", "must be at least 1");
        }
        if let Some(h) = self.labelled_head() {
            let generated = h.labels == crate::head::NegativeLabels::Generated;
            if generated && self.dataset() != Dataset::Aesop {
                return fail("head.labels", "\"generated\" needs sequence data ([source] kind = \"aesop\")");
            }
            if generated && h.dream_strings == 0 {
                return fail("head.dream_strings", "must be at least 1");
            }
        }
        if self.model.layers.is_empty() || self.model.layers.contains(&0) {
            return fail("model.layers", "must list at least one layer, each with at least one unit");
        }
        let layers = self.model.layers.len();
        if self.trainer == Trainer::Ff {
            if self.model.goodness_from == 0 || self.model.goodness_from > layers {
                return fail("model.goodness_from", &format!("must be between 1 and {layers} (the number of layers)"));
            }
            if self.model.readout_from == 0 || self.model.readout_from > layers {
                return fail("model.readout_from", &format!("must be between 1 and {layers} (the number of layers)"));
            }
            if self.pipeline.is_none() {
                return fail("pipeline", "is required for the ff trainer");
            }
        }
        if frames && self.trainer == Trainer::Backprop && self.moving_mnist().is_none_or(|m| m.digits != 1) {
            return fail("trainer", "backprop on a frame stream needs labels: moving_mnist with digits = 1");
        }
        if !positive(self.model.temperature) {
            return fail("model.temperature", "must be positive");
        }
        if !non_negative(self.model.peer_normalization) {
            return fail("model.peer_normalization", "must be zero or positive");
        }
        if !(0.0..1.0).contains(&self.model.dropout) {
            return fail("model.dropout", "must be at least 0 and below 1");
        }
        if self.model.dropout > 0.0 && self.trainer != Trainer::Backprop {
            return fail("model.dropout", "is for the backprop trainer only (FF stages learn without it)");
        }
        // lr = 0 freezes the stages at their random initialization: the baseline of random
        // fixed hidden layers with a trained readout.
        if !non_negative(self.optimizer.lr) {
            return fail("optimizer.lr", "must be zero (frozen stages) or positive");
        }
        if !non_negative(self.optimizer.weight_cost) {
            return fail("optimizer.weight_cost", "must be zero or positive");
        }
        match self.optimizer.rule {
            Rule::Sgd { momentum } if !(0.0..1.0).contains(&momentum) => {
                return fail("optimizer.rule", "momentum must be in [0, 1)")
            }
            Rule::Adam { beta1, beta2, .. } if !((0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2)) => {
                return fail("optimizer.rule", "beta1 and beta2 must be in [0, 1)")
            }
            // eps = 0 divides by zero where a gradient is zero: NaN weights.
            Rule::Adam { eps, .. } if !positive(eps) => return fail("optimizer.rule", "eps must be positive"),
            _ => {}
        }
        if let Some(SinkSpec::Readout(r)) = &self.sink {
            if !positive(r.lr) {
                return fail("sink.lr", "must be positive");
            }
        }
        if let Some(p) = &self.pipeline {
            if p.queue_capacity == 0 {
                return fail("pipeline.queue_capacity", "must be at least 1");
            }
            // A cycle of bounded edges with no token in it waits for ever.
            if p.feedback_delay == 0 {
                return fail("pipeline.feedback_delay", "must be at least 1 (a feedback edge of delay 0 deadlocks)");
            }
        }
        if self.eval.every == 0 || self.eval.batch == 0 {
            return fail("eval.every", "and eval.batch must be at least 1");
        }
        self.validate_test_checkpoints()
    }

    /// `eval.test_at` and `[speedrun]`: epochs of the schedule, on the labelled FF pipeline
    /// (the only one that scores the test split mid-run).
    fn validate_test_checkpoints(&self) -> Result<(), (String, String)> {
        let fail = |key: &str, why: String| Err((key.to_string(), why));
        if !self.eval.test_at.is_empty() && (self.trainer != Trainer::Ff || self.is_frame_stream()) {
            return fail("eval.test_at", "is read by the FF pipeline on labelled rows only".into());
        }
        if let Some(&e) = self.eval.test_at.iter().find(|&&e| e == 0 || e > self.data.epochs) {
            return fail("eval.test_at", format!("epoch {e} is not one of the {} epochs", self.data.epochs));
        }
        if let Some(s) = &self.speedrun {
            if !(s.target_error_pct.is_finite() && s.target_error_pct > 0.0) {
                return fail("speedrun.target_error_pct", "must be a positive percentage".into());
            }
            if self.eval.test_at.is_empty() && !self.eval.test {
                return fail("speedrun", "needs test checkpoints: eval.test_at, or eval.test = true".into());
            }
        }
        Ok(())
    }

    /// True for what plays as an unsupervised frame stream: Moving MNIST, video, and labelled
    /// images through a frames head (still frames); false for labelled rows (MNIST, CIFAR-10,
    /// IDX and Aesop with a labelled head, and every backprop twin of them).
    pub fn is_frame_stream(&self) -> bool {
        self.dataset().is_frame_stream() || self.is_still_stream()
    }

    /// True for labelled images played as still frames through a frames head.
    pub fn is_still_stream(&self) -> bool {
        self.dataset().has_images() && matches!(self.head, Some(HeadSpec::Frames(_)))
    }

    /// The dataset the source reads.
    pub fn dataset(&self) -> Dataset {
        self.source.dataset()
    }

    /// `(height, width, channels)` of the source's images or frames, channels last: see
    /// [`SourceSpec::image_shape`].
    pub fn image_shape(&self) -> Option<(usize, usize, usize)> {
        self.source.image_shape()
    }

    /// The same pipeline with what only its data knows read in ([`SourceSpec::resolve`]): what
    /// a session runs, so the stages and the readout are built for an `idx` folder's images.
    pub fn resolved(&self, data_dir: Option<&Path>) -> Result<PipelineConfig, crate::data::DataError> {
        let mut config = self.clone();
        config.source.resolve(data_dir)?;
        Ok(config)
    }

    /// How the training, validation and test rows are played: batches of `data.batch`, the
    /// source's jitter and centring, the run's seed.
    pub fn dataset_source(&self) -> crate::source::DatasetSource {
        let center = matches!(&self.source, SourceSpec::Cifar10(c) if c.center);
        crate::source::DatasetSource { batch: self.data.batch, jitter: self.jitter(), seed: self.seed, center }
    }

    /// The MNIST shift (0 for other sources).
    pub fn jitter(&self) -> i32 {
        match &self.source {
            SourceSpec::Mnist(m) => m.jitter,
            _ => 0,
        }
    }

    /// The Moving MNIST settings, for that source.
    pub fn moving_mnist(&self) -> Option<&MovingMnistSettings> {
        match &self.source {
            SourceSpec::MovingMnist(m) => Some(m),
            _ => None,
        }
    }

    /// The frames head, for FF on a frame stream.
    pub fn frame_head(&self) -> Option<&FrameHeadSpec> {
        match &self.head {
            Some(HeadSpec::Frames(h)) => Some(h),
            _ => None,
        }
    }

    /// The labelled head, for FF on labelled rows.
    pub fn labelled_head(&self) -> Option<&LabelledHeadSpec> {
        match &self.head {
            Some(HeadSpec::Labelled(h)) => Some(h),
            _ => None,
        }
    }

    /// Frames per epoch of a generated or live stream.
    pub fn frames_per_epoch(&self) -> u64 {
        self.data.frames_per_epoch.unwrap_or(20_000)
    }

    /// The stage names, in order (`layer1`, `layer2`, ...).
    pub fn stage_names(&self) -> Vec<String> {
        (1..=self.model.layers.len()).map(|l| format!("layer{l}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
trainer = "ff"
seed = 1
[data]
epochs = 2
[source]
kind = "mnist"
[model]
layers = [20, 20]
[optimizer]
rule = { kind = "matlab" }
lr = 0.01
[sink]
kind = "readout"
lr = 0.1
[head]
kind = "labelled"
labels = "hard"
[pipeline]
mode = "threaded"
[eval]
every = 1
"#;

    #[test]
    fn unknown_key_names_its_line() {
        let text = MINIMAL.replace("epochs = 2", "epochs = 2\nbatchsize = 3");
        let err = PipelineConfig::parse(&text, "t.toml", &[]).unwrap_err().to_string();
        assert!(err.contains("line 7") && err.contains("batchsize"), "{err}");
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let text = MINIMAL.replace("lr = 0.01", "lr = -1.0");
        let err = PipelineConfig::parse(&text, "t.toml", &[]).unwrap_err().to_string();
        assert!(err.contains("line 13") && err.contains("optimizer.lr"), "{err}");
    }

    #[test]
    fn overrides_apply_and_are_checked() {
        let c = PipelineConfig::parse(MINIMAL, "t.toml", &["data.epochs=5".into(), "seed=9".into()]).unwrap();
        assert_eq!((c.data.epochs, c.seed), (5, 9));
        let err = PipelineConfig::parse(MINIMAL, "t.toml", &["data.epoch=5".into()]).unwrap_err().to_string();
        assert!(err.contains("epoch"), "{err}");
        assert!(PipelineConfig::parse(MINIMAL, "t.toml", &["nonsense".into()]).is_err());
    }
}
