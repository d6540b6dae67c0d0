//! The sink at the end of the pipeline: the softmax readout and the two test procedures.
//!
//! - The readout is Matlab's linear softmax on the normalized activities of hidden layers
//!   2..L for neutral-label rows. It learns from every training and predict packet (weights
//!   start at zero, lr 0.1, weight cost 0.003, the same smoothed-gradient rule and schedule as
//!   the FF layers; the softmax bias is never applied, as in `ffnew.m`) and sends its logits
//!   back to the head, which draws hard negatives from them.
//! - The goodness test: for each image, the label whose row has the highest goodness summed
//!   over layers 2..L (the stages add it up on the way) is the prediction.
//! - The softmax test: the readout's argmax on the image's neutral row.

use std::collections::BTreeMap;

use ndarray::{s, Array2, Axis, Ix2};

use crate::error::RestoreError;
use crate::ff::optim::{ParamOptimizer, Rule, Schedule};
use crate::matmul::{gemm, Threads};
use crate::packet::{Packet, Prediction, Purpose, StageState};
use crate::runtime::EpochReport;

/// The readout's settings.
#[derive(Clone, Debug)]
pub struct ReadoutConfig {
    /// Width of the concatenated features.
    pub features: usize,
    /// Number of classes.
    pub classes: usize,
    /// Update rule.
    pub rule: Rule,
    /// ε (Matlab `epsilonsup` 0.1).
    pub lr: f32,
    /// Weight cost (Matlab `supwc` 0.003).
    pub weight_cost: f32,
    /// Schedule.
    pub schedule: Schedule,
    /// Total epochs.
    pub epochs: u32,
}

/// A linear softmax classifier on normalized activities.
pub struct Readout {
    config: ReadoutConfig,
    /// `(features, classes)`.
    weights: Array2<f32>,
    optimizer: ParamOptimizer<Ix2>,
    /// The learning direction's buffer, kept between packets.
    direction: Array2<f32>,
}

impl Readout {
    /// A zero-initialized readout (Matlab starts the softmax weights at zero).
    pub fn new(config: ReadoutConfig) -> Readout {
        Readout {
            weights: Array2::zeros((config.features, config.classes)),
            optimizer: ParamOptimizer::new(
                config.rule,
                config.lr,
                config.weight_cost,
                Ix2(config.features, config.classes),
            ),
            direction: Array2::zeros((0, 0)),
            config,
        }
    }

    /// Logits `(rows, classes)` from the per-layer feature blocks `(rows, units_l)`.
    pub fn logits(&self, features: &[Array2<f32>]) -> Array2<f32> {
        let rows = features.first().map_or(0, |f| f.nrows());
        // Pooled: the head gives a prediction's logits back once it has read them.
        let mut logits = crate::recycle::zeros((rows, self.config.classes));
        let mut offset = 0;
        for block in features {
            let w = self.weights.slice(s![offset..offset + block.ncols(), ..]);
            gemm(1.0, &block.view(), &w, 1.0, &mut logits.view_mut(), Threads::One);
            offset += block.ncols();
        }
        logits
    }

    /// One smoothed-gradient step towards the true classes, from logits already computed.
    pub fn learn(&mut self, features: &[Array2<f32>], logits: &Array2<f32>, truth: &[u8], epoch: u32) {
        let mut direction = std::mem::take(&mut self.direction);
        softmax_into(logits, &mut direction); // becomes targets − p
        for (mut row, &t) in direction.axis_iter_mut(Axis(0)).zip(truth) {
            row.mapv_inplace(|p| -p);
            row[t as usize] += 1.0;
        }
        let (alpha, beta) = self.optimizer.gradient_target(truth.len());
        let mut offset = 0;
        for block in features {
            let mut buffer = self.optimizer.buffer_mut().slice_mut(s![offset..offset + block.ncols(), ..]);
            gemm(alpha, &block.t(), &direction.view(), beta, &mut buffer, Threads::One);
            offset += block.ncols();
        }
        let gain = self.config.schedule.gain(epoch, self.config.epochs);
        self.optimizer.apply(&mut self.weights, gain);
        self.direction = direction;
    }

    /// A copy of the readout's state for a checkpoint.
    pub fn snapshot(&self) -> StageState {
        let mut tensors = vec![(
            "readout.weights".to_string(),
            self.weights.shape().to_vec(),
            self.weights.iter().copied().collect(),
        )];
        for (key, t) in self.optimizer.state() {
            tensors.push((format!("readout.weights.{key}"), t.shape().to_vec(), t.iter().copied().collect()));
        }
        tensors.push(("readout.steps".into(), vec![1], vec![self.optimizer.steps() as f32]));
        StageState { stage: "readout".into(), tensors }
    }

    /// Restores a state written by [`Readout::snapshot`].
    pub fn restore(&mut self, state: &StageState) -> Result<(), RestoreError> {
        let find = |name: &str| state.tensors.iter().find(|(n, _, _)| n == name).map(|(_, _, v)| v);
        let w = find("readout.weights").ok_or_else(|| RestoreError::Missing("readout.weights".into()))?;
        if w.len() != self.weights.len() {
            return Err(RestoreError::Size {
                name: "readout.weights".into(),
                got: w.len(),
                expected: self.weights.len(),
                element: "readout",
            });
        }
        self.weights.iter_mut().zip(w).for_each(|(a, &b)| *a = b);
        let steps = find("readout.steps").and_then(|v| v.first()).copied().unwrap_or(0.0) as u64;
        for key in ["buffer", "adam_m", "adam_v"] {
            if let Some(v) = find(&format!("readout.weights.{key}")) {
                self.optimizer.restore(key, v, steps);
            }
        }
        Ok(())
    }
}

/// Row-wise softmax, stable.
pub fn softmax(logits: &Array2<f32>) -> Array2<f32> {
    let mut p = Array2::zeros((0, 0));
    softmax_into(logits, &mut p);
    p
}

/// [`softmax`] into `p`'s allocation where it holds enough (the readout's per-packet buffer).
pub fn softmax_into(logits: &Array2<f32>, p: &mut Array2<f32>) {
    if p.dim() != logits.dim() {
        *p = crate::recycle::reshaped(std::mem::take(p), logits.dim());
    }
    p.assign(logits);
    for mut row in p.axis_iter_mut(Axis(0)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.mapv_inplace(|v| (v - max).exp());
        let total = row.sum();
        row.mapv_inplace(|v| v / total);
    }
}

/// The index of the largest value (the first of equals).
pub(crate) fn argmax(values: impl Iterator<Item = f32>) -> usize {
    values.enumerate().fold((0, f32::NEG_INFINITY), |best, (i, v)| if v > best.1 { (i, v) } else { best }).0
}

/// Errors counted for one purpose (validation, test, training subset).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tally {
    /// Images scored.
    pub images: usize,
    /// Wrong by the goodness test.
    pub goodness_wrong: usize,
    /// Wrong by the softmax test.
    pub softmax_wrong: usize,
}

impl Tally {
    /// Goodness-test error in percent.
    pub fn goodness_pct(&self) -> f64 {
        100.0 * self.goodness_wrong as f64 / self.images.max(1) as f64
    }

    /// Softmax-test error in percent.
    pub fn softmax_pct(&self) -> f64 {
        100.0 * self.softmax_wrong as f64 / self.images.max(1) as f64
    }
}

/// The classifying sink.
pub struct Classify {
    readout: Readout,
    send_predictions: bool,
    tallies: BTreeMap<&'static str, Tally>,
    /// Training-batch softmax errors on the neutral rows (Matlab's "trainerrors").
    train_seen: Tally,
}

fn purpose_key(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Validate => "validation",
        Purpose::Test => "test",
        Purpose::TrainEval => "train",
        Purpose::Train | Purpose::Predict | Purpose::Dream => "stream",
    }
}

impl Classify {
    /// A sink with `readout`; `send_predictions` when the head draws hard negatives.
    pub fn new(readout: Readout, send_predictions: bool) -> Classify {
        Classify { readout, send_predictions, tallies: BTreeMap::new(), train_seen: Tally::default() }
    }

    /// The readout (checkpoints).
    pub fn readout(&self) -> &Readout {
        &self.readout
    }

    /// The readout, mutable (resume).
    pub fn readout_mut(&mut self) -> &mut Readout {
        &mut self.readout
    }

    /// Consumes one packet; returns the prediction to send back to the head, if any.
    pub fn consume(&mut self, packet: &Packet) -> Option<Prediction> {
        let neutral = packet.neutral_start()..packet.rows();
        let logits = (packet.neutral > 0).then(|| self.readout.logits(&packet.features));
        if packet.purpose.is_evaluation() {
            let tally = self.tallies.entry(purpose_key(packet.purpose)).or_default();
            let candidates = packet.candidates();
            let classes = self.readout.config.classes;
            let images = candidates.len() / classes;
            for i in 0..images {
                let first = candidates.start + i * classes;
                let guess = argmax((0..classes).map(|l| packet.goodness[first + l]));
                tally.goodness_wrong += (packet.embedded[first + guess] != packet.truth[first]) as usize;
            }
            if let Some(logits) = &logits {
                for (row, r) in logits.axis_iter(Axis(0)).zip(neutral.clone()) {
                    tally.softmax_wrong += (argmax(row.iter().copied()) != packet.truth[r] as usize) as usize;
                }
            }
            tally.images += images.max(packet.neutral);
            if let Some(logits) = logits {
                crate::recycle::give_array(logits);
            }
            return None;
        }
        let logits = logits?;
        if packet.purpose == Purpose::Dream {
            // Generated text has no true next character to learn from.
            return self.send_predictions.then_some(Prediction { logits });
        }
        let truth = &packet.truth[neutral];
        for (row, &t) in logits.axis_iter(Axis(0)).zip(truth) {
            self.train_seen.softmax_wrong += (argmax(row.iter().copied()) != t as usize) as usize;
        }
        self.train_seen.images += truth.len();
        self.readout.learn(&packet.features, &logits, truth, packet.epoch);
        if self.send_predictions {
            return Some(Prediction { logits });
        }
        crate::recycle::give_array(logits);
        None
    }

    /// Takes the tallies gathered since the last call, keyed by purpose.
    pub fn take_tallies(&mut self) -> (BTreeMap<&'static str, Tally>, Tally) {
        (std::mem::take(&mut self.tallies), std::mem::take(&mut self.train_seen))
    }
}

impl Tally {
    /// The tally as named measures under `key`: `<key>.images`, `<key>.goodness` and
    /// `<key>.softmax` (errors in percent).
    pub fn measures(&self, key: &str, into: &mut BTreeMap<String, f64>) {
        into.insert(format!("{key}.images"), self.images as f64);
        into.insert(format!("{key}.goodness"), self.goodness_pct());
        into.insert(format!("{key}.softmax"), self.softmax_pct());
    }

    /// The tally stored under `key` by [`Tally::measures`], if it scored any image.
    pub fn errors_from(measures: &BTreeMap<String, f64>, key: &str) -> Option<(f64, f64)> {
        let get = |what: &str| measures.get(&format!("{key}.{what}")).copied();
        (get("images")? > 0.0).then_some((get("goodness")?, get("softmax")?))
    }
}

impl crate::runtime::Sink for Classify {
    fn consume(&mut self, packet: &Packet) -> Option<Prediction> {
        Classify::consume(self, packet)
    }

    fn end_epoch(&mut self, epoch: u32, mut states: Vec<StageState>) -> EpochReport {
        states.push(self.readout.snapshot());
        let (tallies, stream) = self.take_tallies();
        let mut measures = BTreeMap::new();
        for (key, tally) in tallies {
            tally.measures(key, &mut measures);
        }
        stream.measures("stream", &mut measures);
        EpochReport { epoch, states, shards: Vec::new(), measures }
    }

    fn restore(&mut self, state: &StageState) -> Result<(), RestoreError> {
        self.readout.restore(state)
    }
}
