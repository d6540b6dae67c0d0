//! What crosses a queue: packets of rows and the in-band markers between them.
//!
//! A [`Packet`] is one micro-batch. Its rows are laid out in four contiguous groups, so every
//! stage does one matrix product per packet whatever its purpose:
//!
//! ```text
//! [ positives | negatives | candidates | neutral ]
//!   learn ↑     learn ↓     observe      observe, feed the readout (label 0.1 × 10)
//! ```
//!
//! Stages learn from the first two groups only. Candidate rows carry one label each for the
//! goodness test; neutral rows carry the neutral label, and their normalized activities are
//! collected for the softmax readout. Each stage adds its goodness to `goodness` (layers from
//! `goodness_from` on) and appends its normalized activities of the neutral rows to `features`
//! (layers from `readout_from` on).

use std::time::Instant;

use ndarray::Array2;

/// Why a packet was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Training: stages learn from its positive and negative rows.
    Train,
    /// Neutral-label rows only, sent ahead so hard negatives can be chosen (no FF learning).
    Predict,
    /// Neutral-label rows of text the network is generating itself (sequence data): the
    /// readout predicts the next character and sends it back, nothing learns.
    Dream,
    /// Validation rows (no learning).
    Validate,
    /// Test rows (no learning), once at the end.
    Test,
    /// A subset of the training set, measured without learning.
    TrainEval,
}

impl Purpose {
    /// Evaluation packets never change any weight, the readout's included.
    pub fn is_evaluation(self) -> bool {
        matches!(self, Purpose::Validate | Purpose::Test | Purpose::TrainEval)
    }
}

/// The label written into a row's label pixels: a class, or the neutral 0.1 in every slot.
pub const NEUTRAL: u8 = u8::MAX;

/// Which rows' normalized activities the stages append to [`Packet::features`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Observe {
    /// The neutral rows (the supervised readout).
    #[default]
    Neutral,
    /// The positive rows (the video probes read the real frames as they are learned from).
    Positives,
}

/// One micro-batch of rows.
#[derive(Clone, Debug)]
pub struct Packet {
    /// Position in the stream, counted by the head from 0.
    pub seq: u64,
    /// The 1-based epoch (learning-rate schedule).
    pub epoch: u32,
    /// Why it was made.
    pub purpose: Purpose,
    /// `(rows, features)`: raw activities of the stage before (the image for stage 1).
    pub x: Array2<f32>,
    /// Leading rows with positive polarity.
    pub positives: usize,
    /// Rows after those with negative polarity.
    pub negatives: usize,
    /// Trailing rows with the neutral label whose features feed the readout.
    pub neutral: usize,
    /// Per row: the source frame (image index in its split).
    pub frame: Vec<u32>,
    /// Per row: the frame's true class.
    pub truth: Vec<u8>,
    /// Per row: the label embedded in the row ([`NEUTRAL`] for none).
    pub embedded: Vec<u8>,
    /// Number of distinct source frames carried (for frames/s).
    pub frames: usize,
    /// Per row: goodness summed over the layers that count for the goodness test.
    pub goodness: Vec<f32>,
    /// Per readout layer: `(observed rows, units)` normalized activities.
    pub features: Vec<Array2<f32>>,
    /// Which rows [`Packet::features`] holds.
    pub observe: Observe,
    /// Per stage in order: each row's goodness in that layer alone (separation per stage).
    pub layer_goodness: Vec<Vec<f32>>,
    /// The time step of this packet's rows, 0-based: a recurrent net sees a static image as a
    /// "boring video" (paper §3.4), the same rows once per step; feed-forward nets see step 0.
    pub step: u32,
    /// How many steps the head plays of these rows (1 for feed-forward nets).
    pub steps: u32,
    /// When the head made the packet.
    pub stamp: Instant,
    /// When the oldest of its frames left the source (end-to-end latency is measured from
    /// here; the head's own time for datasets).
    pub captured: Instant,
}

/// The per-row and per-stage vectors of a packet, kept with their capacity between packets
/// ([`crate::recycle`]).
#[derive(Debug, Default)]
pub struct RowBuffers {
    frame: Vec<u32>,
    truth: Vec<u8>,
    embedded: Vec<u8>,
    goodness: Vec<f32>,
    features: Vec<Array2<f32>>,
    layer_goodness: Vec<Vec<f32>>,
}

impl RowBuffers {
    /// Rows the per-row vectors hold without growing.
    pub fn row_capacity(&self) -> usize {
        self.frame.capacity()
    }

    /// Room for `stages` entries in the per-stage lists.
    pub fn reserve_stages(&mut self, stages: usize) {
        self.features.reserve(stages);
        self.layer_goodness.reserve(stages);
    }
}

impl Packet {
    /// A packet of `x`'s rows, all of them positives of step 0 of 1, stamped now; the head
    /// sets the row groups and metadata it needs.
    pub fn new(seq: u64, epoch: u32, purpose: Purpose, x: Array2<f32>) -> Packet {
        Packet::on_buffers(RowBuffers::default(), seq, epoch, purpose, x)
    }

    /// [`Packet::new`] on `buffers`' allocations.
    pub fn on_buffers(buffers: RowBuffers, seq: u64, epoch: u32, purpose: Purpose, x: Array2<f32>) -> Packet {
        let rows = x.nrows();
        let now = Instant::now();
        let RowBuffers { mut frame, mut truth, mut embedded, mut goodness, mut features, mut layer_goodness } = buffers;
        frame.clear();
        frame.resize(rows, 0);
        for (v, value) in [(&mut truth, 0), (&mut embedded, NEUTRAL)] {
            v.clear();
            v.resize(rows, value);
        }
        goodness.clear();
        goodness.resize(rows, 0.0);
        features.clear();
        layer_goodness.clear();
        Packet {
            seq,
            epoch,
            purpose,
            x,
            positives: rows,
            negatives: 0,
            neutral: 0,
            frame,
            truth,
            embedded,
            frames: rows,
            goodness,
            features,
            observe: Observe::default(),
            layer_goodness,
            step: 0,
            steps: 1,
            stamp: now,
            captured: now,
        }
    }

    /// Takes the packet apart: its rows array and the arrays the stages left on it go to
    /// `array`, each stage's goodness rows to `values`, and its vectors come back (emptied, with
    /// their capacity) for [`Packet::on_buffers`].
    pub fn into_buffers(self, mut array: impl FnMut(Array2<f32>), mut values: impl FnMut(Vec<f32>)) -> RowBuffers {
        let Packet { x, frame, truth, embedded, goodness, mut features, mut layer_goodness, .. } = self;
        array(x);
        features.drain(..).for_each(&mut array);
        layer_goodness.drain(..).for_each(&mut values);
        RowBuffers { frame, truth, embedded, goodness, features, layer_goodness }
    }

    /// Whether this is the last step the head plays of these rows.
    pub fn last_step(&self) -> bool {
        self.step + 1 >= self.steps
    }

    /// Total rows.
    pub fn rows(&self) -> usize {
        self.x.nrows()
    }

    /// The first neutral row.
    pub fn neutral_start(&self) -> usize {
        self.rows() - self.neutral
    }

    /// The candidate rows (goodness test): after the learning rows, before the neutral ones.
    pub fn candidates(&self) -> std::ops::Range<usize> {
        self.positives + self.negatives..self.neutral_start()
    }

    /// The rows whose normalized activities go to [`Packet::features`].
    pub fn observed(&self) -> std::ops::Range<usize> {
        match self.observe {
            Observe::Neutral => self.neutral_start()..self.rows(),
            Observe::Positives => 0..self.positives,
        }
    }
}

/// The named tensors of one stage, as a checkpoint stores them.
#[derive(Clone, Debug, Default)]
pub struct StageState {
    /// The stage's name (prefix of its tensor names).
    pub stage: String,
    /// `(name, shape, values)`.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// The sink's answer for a packet's neutral rows, sent back to the head along the predictions
/// edge (hard negatives, dreams).
#[derive(Clone, Debug)]
pub struct Prediction {
    /// `(neutral rows, classes)`.
    pub logits: Array2<f32>,
}

/// A stage's state sent to the stage below along a feedback edge (recurrent nets): the
/// stage's activities for the rows of one packet.
#[derive(Clone, Debug, Default)]
pub struct TopDown {
    /// The packet the state was computed for (a stage tells a stale state from a fresh one).
    pub seq: u64,
    /// Its step.
    pub step: u32,
    /// `(rows, units)` raw activities; `None` for the neutral state a feedback edge starts
    /// with (no top-down input yet).
    pub state: Option<Array2<f32>>,
}

impl TopDown {
    /// The neutral state: no input from above.
    pub fn neutral() -> TopDown {
        TopDown::default()
    }
}

/// What flows through the queues. End of stream is the upstream sender being dropped.
// `Data` is nearly every message; boxing it would add an allocation per packet to save a
// 200-byte move.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Message {
    /// Rows to process.
    Data(Packet),
    /// The end of an epoch. Every stage leaves a copy of its state at the runtime's checkpoint
    /// barrier as the marker passes, so the sink can write one consistent checkpoint without
    /// any stage's weights travelling down the edges.
    EpochEnd {
        /// The 1-based epoch just finished.
        epoch: u32,
        /// When the head sent the marker.
        stamp: Instant,
    },
}
