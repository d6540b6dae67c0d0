//! `[source]`, `[head]` and `[sink]`: what feeds the stages, what makes their packets, and what
//! reads their features, each a `kind`-tagged table.
//!
//! ```toml
//! [source]
//! kind = "video"          # mnist | cifar10 | idx | aesop | moving_mnist | video, with the settings of that kind
//! input = "samples/cockatoo.mp4"
//!
//! [head]
//! kind = "frames"         # labelled (rows with labels: MNIST, CIFAR-10, IDX, Aesop) | frames (frame streams, or images as still frames)
//! window = 2
//!
//! [sink]
//! kind = "probes"         # readout (a softmax on labelled rows) | probes (frame streams)
//! ```
//!
//! Each kind is its own struct, so a setting of another kind (`window` on a labelled head,
//! `digits` on a video source) does not parse, and the line of its table is named. Which head
//! and sink go with which source is checked by [`Roles::of`], the one place that pairs them:
//! the session takes the typed [`Roles`] and never unwraps an absent section.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Dataset, PipelineConfig, Trainer, TwinSettings};
use crate::data::idx::{self, IdxShape};
use crate::data::{cifar10, moving_mnist, DataError};
use crate::head::NegativeLabels;
use crate::negative::NegativeKind;
use crate::source::video::VideoConfig;

/// What feeds the first stage (`[source]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceSpec {
    /// MNIST images, labelled rows (`../shared/data/mnist`).
    Mnist(MnistSource),
    /// CIFAR-10 images, labelled rows (`../shared/data/cifar10`), channels last.
    Cifar10(Cifar10Source),
    /// Any folder of the four MNIST-style IDX files, labelled rows.
    Idx(IdxSource),
    /// Aesop's Fables, next-character rows (E8).
    Aesop(AesopSource),
    /// Moving MNIST generated from MNIST, a labelled frame stream.
    MovingMnist(MovingMnistSettings),
    /// A video file, device or network stream, through FFmpeg.
    Video(VideoConfig),
}

/// `kind = "mnist"`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MnistSource {
    /// Maximum random shift in pixels (paper E4: 2).
    #[serde(default)]
    pub jitter: i32,
}

/// `kind = "cifar10"`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cifar10Source {
    /// Subtract each image's own mean (over its pixels and channels) before the stages see it:
    /// what is left is contrast, which RMS normalization then scales (an image standardized).
    #[serde(default)]
    pub center: bool,
}

/// `kind = "idx"`: a folder holding `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each plain or `.gz`
/// ([`crate::data::idx`]). The image size is the files' own; what only the files know is read by
/// [`SourceSpec::resolve`] before the stages are built.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdxSource {
    /// The folder: absolute, or relative to the working directory, else to the data folders
    /// (`--data-dir`, `$FFSTREAM_DATA`, the user cache).
    pub path: String,
    /// Number of classes (default: the largest label in the files + 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
    /// The last N training images are held out to validate (MNIST's 10,000 by default).
    #[serde(default = "default_idx_validation")]
    pub validation: usize,
    /// The folder's shape once read ([`SourceSpec::resolve`]); not a key of the file.
    #[serde(skip)]
    pub shape: Option<IdxShape>,
}

fn default_idx_validation() -> usize {
    10_000
}

/// `kind = "aesop"` (no settings of its own yet).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AesopSource {}

/// `kind = "moving_mnist"`: MMNIST-SM64 v1 (`../shared/samples/MOVING_MNIST.md`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MovingMnistSettings {
    /// Digits per sequence: 1 (a clean 10-way label per frame) or 2 (the standard set).
    #[serde(default = "one")]
    pub digits: usize,
    /// Sequences played side by side: row i of every packet is stream i's next frame, so a
    /// recurrent net's state carried from packet to packet is each video's memory (1: one
    /// stream, consecutive frames of consecutive sequences in a packet).
    #[serde(default = "one")]
    pub streams: usize,
    /// The order an epoch's frames play in: as the videos run (`stream`), or the same frames
    /// shuffled across the epoch (`shuffled`), to measure what learning from near-duplicate
    /// consecutive frames costs a streaming learner.
    #[serde(default, skip_serializing_if = "FrameOrder::is_stream")]
    pub order: FrameOrder,
}

/// The order of an epoch's Moving MNIST frames.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FrameOrder {
    /// As the sequences play (side by side with `streams` > 1).
    #[default]
    Stream,
    /// The epoch's frames in a random order (seeded by the run's seed and the epoch).
    Shuffled,
}

impl FrameOrder {
    /// True for the default (kept out of serialized configs, so older records read the same).
    pub fn is_stream(&self) -> bool {
        *self == FrameOrder::Stream
    }
}

impl SourceSpec {
    /// The dataset it reads.
    pub fn dataset(&self) -> Dataset {
        match self {
            SourceSpec::Mnist(_) => Dataset::Mnist,
            SourceSpec::Cifar10(_) => Dataset::Cifar10,
            SourceSpec::Idx(_) => Dataset::Idx,
            SourceSpec::Aesop(_) => Dataset::Aesop,
            SourceSpec::MovingMnist(_) => Dataset::MovingMnist,
            SourceSpec::Video(_) => Dataset::Video,
        }
    }

    /// `(height, width, channels)` of one image or frame the source emits, for a stage that
    /// reads its input as a map (channels last: value `(y * width + x) * channels + c`); `None`
    /// for a source of no images (Aesop), and for an `idx` folder not yet read ([`Self::resolve`]).
    /// A frames head with `window = k` puts k such frames side by side in a row.
    pub fn image_shape(&self) -> Option<(usize, usize, usize)> {
        match self {
            SourceSpec::Mnist(_) => Some((28, 28, 1)),
            SourceSpec::Cifar10(_) => Some((cifar10::SIDE, cifar10::SIDE, cifar10::CHANNELS)),
            SourceSpec::Idx(s) => s.shape.map(|shape| (shape.rows, shape.cols, 1)),
            SourceSpec::Aesop(_) => None,
            SourceSpec::MovingMnist(_) => Some((moving_mnist::CANVAS, moving_mnist::CANVAS, 1)),
            SourceSpec::Video(v) => Some((v.height, v.width, v.color.channels())),
        }
    }

    /// Reads what only the data knows into the source: an `idx` folder's image size and
    /// classes (from its headers and labels; the images are read when the data loads). Nothing
    /// for the other kinds, whose shape the file fixes.
    pub fn resolve(&mut self, data_dir: Option<&Path>) -> Result<(), DataError> {
        if let SourceSpec::Idx(s) = self {
            if s.shape.is_none() {
                s.shape = Some(idx::probe(&idx::locate(&s.path, data_dir)?, s.classes)?);
            }
        }
        Ok(())
    }
}

/// What turns the source's rows or frames into packets of positives and negatives (`[head]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HeadSpec {
    /// Labelled rows (MNIST, Aesop): the label in the row, wrong labels as negatives.
    Labelled(LabelledHeadSpec),
    /// Frame streams (Moving MNIST, video): windows of frames, made-up negatives.
    Frames(FrameHeadSpec),
}

/// `kind = "labelled"`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabelledHeadSpec {
    /// Wrong-label rule.
    pub labels: NegativeLabels,
    /// Batches between the neutral pass and the negatives it picks (0: exact Matlab order).
    #[serde(default)]
    pub prediction_delay: usize,
    /// Frames in the sleep replay memory (wake/sleep schedules only); with generated
    /// negatives, strings a dream may start from.
    #[serde(default = "default_labelled_replay")]
    pub replay: usize,
    /// Generated negatives: strings the network writes per dream (90 negatives each).
    #[serde(default = "default_dream_strings")]
    pub dream_strings: usize,
}

/// `kind = "frames"`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FrameHeadSpec {
    /// Consecutive frames per positive row (1: single frames).
    #[serde(default = "one")]
    pub window: usize,
    /// How negatives are made (hybrid, shuffle, cut).
    #[serde(default)]
    pub negatives: NegativeKind,
    /// Windows in the replay memory negatives draw partners from.
    #[serde(default = "default_frame_replay")]
    pub replay: usize,
    /// Blur passes of the hybrid masks (more: larger regions).
    #[serde(default = "default_blurs")]
    pub mask_blurs: usize,
    /// Hold every k-th window out of learning for the separation measure (0: none).
    #[serde(default = "default_holdout_every")]
    pub holdout_every: usize,
    /// Subtract each frame's mean brightness before the first stage (natural video).
    #[serde(default)]
    pub center: bool,
}

impl Default for FrameHeadSpec {
    fn default() -> FrameHeadSpec {
        FrameHeadSpec {
            window: 1,
            negatives: NegativeKind::default(),
            replay: default_frame_replay(),
            mask_blurs: default_blurs(),
            holdout_every: default_holdout_every(),
            center: false,
        }
    }
}

/// What reads the stages' features (`[sink]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SinkSpec {
    /// A softmax readout learning the labels from the features (labelled rows).
    Readout(ReadoutSettings),
    /// Held-out separation and linear probes per stage (frame streams).
    Probes(ProbeSettings),
}

/// `kind = "readout"`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReadoutSettings {
    /// ε.
    pub lr: f32,
    /// Weight cost.
    #[serde(default)]
    pub weight_cost: f32,
}

/// `kind = "probes"`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProbeSettings {
    /// Held-out windows measured after every epoch.
    #[serde(default = "default_eval_windows")]
    pub eval_windows: usize,
    /// Step size of the live test-then-train probes (labelled streams).
    #[serde(default = "default_probe_lr")]
    pub probe_lr: f32,
    /// Also train the backprop twin on the same frames with their labels, for comparison.
    #[serde(default)]
    pub backprop_twin: bool,
    /// The quick twin's optimizer (one pass over its frames).
    #[serde(default)]
    pub twin: TwinSettings,
    /// The softmax trained on the frozen stages at the end, for a still-image stream
    /// (MNIST, CIFAR-10, IDX through a frames head; paper §3.2).
    #[serde(default)]
    pub softmax: SoftmaxProbeSettings,
}

impl Default for ProbeSettings {
    fn default() -> ProbeSettings {
        ProbeSettings {
            eval_windows: default_eval_windows(),
            probe_lr: default_probe_lr(),
            backprop_twin: false,
            twin: TwinSettings::default(),
            softmax: SoftmaxProbeSettings::default(),
        }
    }
}

/// `[sink.softmax]`: the frozen softmax readout of a still-image stream.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SoftmaxProbeSettings {
    /// Passes over the training split (the best on validation is kept).
    #[serde(default = "default_epochs")]
    pub epochs: u32,
    /// ε of the smoothed-gradient rule (Matlab's softmax: 0.1).
    #[serde(default = "default_lr")]
    pub lr: f32,
    /// Weight cost (Matlab's softmax: 0.003).
    #[serde(default = "default_weight_cost")]
    pub weight_cost: f32,
    /// Rows per step.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// First stage (1-based) whose activities the readout reads, up to the last (paper E1: 2,
    /// layers 2-4; default `model.readout_from`). The readout from `model.readout_from` is
    /// scored too when it differs, to check the paper's claim that the first layer does not help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<usize>,
}

impl Default for SoftmaxProbeSettings {
    fn default() -> SoftmaxProbeSettings {
        SoftmaxProbeSettings {
            epochs: default_epochs(),
            lr: default_lr(),
            weight_cost: default_weight_cost(),
            batch: default_batch(),
            from: None,
        }
    }
}

fn default_epochs() -> u32 {
    20
}
fn default_lr() -> f32 {
    0.1
}
fn default_weight_cost() -> f32 {
    0.003
}
fn default_batch() -> usize {
    100
}

fn one() -> usize {
    1
}
fn default_labelled_replay() -> usize {
    1000
}
fn default_dream_strings() -> usize {
    20
}
fn default_frame_replay() -> usize {
    512
}
fn default_blurs() -> usize {
    8
}
fn default_holdout_every() -> usize {
    10
}
fn default_eval_windows() -> usize {
    500
}
fn default_probe_lr() -> f32 {
    0.5
}

/// The head and sink of a run, paired with its source: what the session runs.
#[derive(Clone, Copy, Debug)]
pub enum Roles<'a> {
    /// FF on labelled rows: a labelled head and a softmax readout.
    LabelledFf {
        /// The head's settings.
        head: &'a LabelledHeadSpec,
        /// The readout's settings.
        readout: &'a ReadoutSettings,
    },
    /// FF on a frame stream: a frames head and probes.
    FramesFf {
        /// The head's settings.
        head: &'a FrameHeadSpec,
        /// The probes' settings.
        probes: &'a ProbeSettings,
    },
    /// The backprop twin: no head, no sink.
    Backprop,
}

impl<'a> Roles<'a> {
    /// Pairs the head and sink with the source, or names the key that does not fit, as
    /// `(dotted key, complaint)`.
    pub fn check(config: &'a PipelineConfig) -> Result<Roles<'a>, (String, String)> {
        let fail = |key: &str, message: String| Err((key.to_string(), message));
        let dataset = config.source.dataset();
        let frames = dataset.is_frame_stream();
        // Labelled images also play as still frames, unlabelled, through a frames head (E1, E2).
        let stills = config.is_still_stream();
        let (head_kind, sink_kind) = if frames || stills { ("frames", "probes") } else { ("labelled", "readout") };
        match (config.trainer, &config.head, &config.sink) {
            (Trainer::Backprop, None, None) => Ok(Roles::Backprop),
            (Trainer::Backprop, Some(_), _) => {
                fail("head", "is read by the FF stages only; this pipeline trains the backprop twin: remove it".into())
            }
            (Trainer::Backprop, None, Some(_)) => {
                fail("sink", "is read by the FF stages only; this pipeline trains the backprop twin: remove it".into())
            }
            (Trainer::Ff, None, _) => {
                fail("head", format!("is required for the ff trainer: [head] kind = \"{head_kind}\""))
            }
            (Trainer::Ff, Some(_), None) => {
                fail("sink", format!("is required for the ff trainer: [sink] kind = \"{sink_kind}\""))
            }
            (Trainer::Ff, Some(head), Some(sink)) => match (head, sink, frames || stills) {
                (HeadSpec::Labelled(head), SinkSpec::Readout(readout), false) => {
                    Ok(Roles::LabelledFf { head, readout })
                }
                (HeadSpec::Frames(head), SinkSpec::Probes(probes), true) => Ok(Roles::FramesFf { head, probes }),
                (HeadSpec::Labelled(_), _, true) => {
                    fail("head.kind", format!("must be \"{head_kind}\" for the {} source", dataset.name()))
                }
                (HeadSpec::Frames(_), _, false) => fail(
                    "head.kind",
                    format!(
                        "must be \"labelled\" for the {} source (\"frames\" plays mnist, cifar10, idx, moving_mnist and video)",
                        dataset.name()
                    ),
                ),
                _ if stills => fail("sink.kind", "must be \"probes\" with a frames head (images as still frames)".into()),
                _ => fail("sink.kind", format!("must be \"{sink_kind}\" for the {} source", dataset.name())),
            },
        }
    }

    /// The pairing of a parsed file.
    pub fn of(config: &'a PipelineConfig) -> Roles<'a> {
        // Invariant: `PipelineConfig::parse` ran `check` and refused a file it rejects.
        Roles::check(config).unwrap_or_else(|(key, message)| panic!("validated pipeline: `{key}` {message}"))
    }
}
