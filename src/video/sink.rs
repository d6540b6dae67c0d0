//! The video sink: what each stage has learned, measured while the stream flows.
//!
//! - Separation (every stream): on the held-out validation packets, per stage, the share of
//!   positive windows whose goodness in that layer beats their own negative's, and the mean
//!   goodness gap. A stage that has learned nothing sits at 50%.
//! - Live probe (labelled streams with one label per frame): per stage, a linear softmax on
//!   the stage's normalized activities of the positive rows, scored *before* it learns from
//!   each packet (test-then-train), so its running error is an honest online estimate. The
//!   probe reads the activities; nothing flows back into any stage.

use std::collections::BTreeMap;

use ndarray::{Array2, Axis};

use crate::data::mnist::CLASSES;
use crate::matmul::{gemm, Threads};
use crate::packet::{Packet, Prediction, Purpose, StageState, NEUTRAL};
use crate::runtime::{EpochReport, Sink};
use crate::sink::{argmax, softmax};

/// Per-stage scores gathered over one epoch.
#[derive(Clone, Debug, Default)]
struct Scores {
    probe_seen: usize,
    probe_wrong: usize,
    pairs: usize,
    pairs_won: usize,
    gap_sum: f64,
}

/// Scores learning on a video stream.
pub struct VideoSink {
    /// Training pairs seen this epoch, and those whose positive's total goodness won.
    stream_pairs: (usize, usize),
    names: Vec<String>,
    /// Per observed stage: `(units, classes)` probe weights.
    probes: Vec<Array2<f32>>,
    lr: f32,
    scores: Vec<Scores>,
}

impl VideoSink {
    /// A sink for stages `names` (in order) whose observed widths are `units`; `probe_lr` is
    /// the live probe's step size.
    pub fn new(names: Vec<String>, units: &[usize], probe_lr: f32) -> VideoSink {
        VideoSink {
            stream_pairs: (0, 0),
            scores: vec![Scores::default(); names.len()],
            probes: units.iter().map(|&u| Array2::zeros((u, CLASSES))).collect(),
            names,
            lr: probe_lr,
        }
    }

    /// Restores the probes from a checkpoint (resume).
    pub fn restore(&mut self, states: &[StageState]) -> Result<(), crate::error::RestoreError> {
        for (name, probe) in self.names.iter().zip(&mut self.probes) {
            let key = format!("probe.{name}");
            let Some((_, _, values)) = states.iter().flat_map(|s| &s.tensors).find(|(n, _, _)| n == &key) else {
                continue; // an older checkpoint without probes: they start again
            };
            if values.len() != probe.len() {
                return Err(crate::error::RestoreError::Size {
                    name: key,
                    got: values.len(),
                    expected: probe.len(),
                    element: "probe",
                });
            }
            probe.iter_mut().zip(values).for_each(|(a, &b)| *a = b);
        }
        Ok(())
    }

    fn probe(&mut self, packet: &Packet) {
        let rows = packet.observed();
        let truth = &packet.truth[rows.clone()];
        if truth.is_empty() || truth.iter().any(|&t| t == NEUTRAL || t as usize >= CLASSES) {
            return;
        }
        for ((features, probe), scores) in packet.features.iter().zip(&mut self.probes).zip(&mut self.scores) {
            let mut logits = Array2::zeros((features.nrows(), CLASSES));
            gemm(1.0, &features.view(), &probe.view(), 0.0, &mut logits.view_mut(), Threads::One);
            let mut direction = softmax(&logits);
            for (mut row, &t) in direction.axis_iter_mut(Axis(0)).zip(truth) {
                let guess = argmax(row.iter().copied());
                scores.probe_wrong += (guess != t as usize) as usize;
                row.mapv_inplace(|p| -p);
                row[t as usize] += 1.0;
            }
            scores.probe_seen += truth.len();
            // Normalized step: rows are RMS-normalized, so ‖f‖² is the width; dividing by it
            // makes `lr` the same fraction of the error corrected per step at any width.
            let step = self.lr / (truth.len() * features.ncols()) as f32;
            gemm(step, &features.t(), &direction.view(), 1.0, &mut probe.view_mut(), Threads::One);
        }
    }

    fn separate(&mut self, packet: &Packet) {
        let n = packet.positives.min(packet.negatives);
        for (goodness, scores) in packet.layer_goodness.iter().zip(&mut self.scores) {
            for i in 0..n {
                let (pos, neg) = (goodness[i], goodness[packet.positives + i]);
                scores.pairs += 1;
                scores.pairs_won += (pos > neg) as usize;
                scores.gap_sum += (pos - neg) as f64;
            }
        }
    }
}

impl Sink for VideoSink {
    fn consume(&mut self, packet: &Packet) -> Option<Prediction> {
        match packet.purpose {
            Purpose::Train => {
                // The FF objective itself on the stream, before each update: does a positive's
                // goodness (summed over the counted layers) beat its own negative's?
                let n = packet.positives.min(packet.negatives);
                self.stream_pairs.0 += n;
                self.stream_pairs.1 +=
                    (0..n).filter(|&i| packet.goodness[i] > packet.goodness[packet.positives + i]).count();
                self.probe(packet)
            }
            Purpose::Validate | Purpose::Test => self.separate(packet),
            Purpose::Predict | Purpose::Dream | Purpose::TrainEval => {}
        }
        None
    }

    fn restore(&mut self, state: &StageState) -> Result<(), crate::error::RestoreError> {
        VideoSink::restore(self, std::slice::from_ref(state))
    }

    fn end_epoch(&mut self, epoch: u32, mut states: Vec<StageState>) -> EpochReport {
        let mut measures = BTreeMap::new();
        for (name, scores) in self.names.iter().zip(std::mem::take(&mut self.scores)) {
            if scores.probe_seen > 0 {
                let error = 100.0 * scores.probe_wrong as f64 / scores.probe_seen as f64;
                measures.insert(format!("live_probe.{name}"), error);
            }
            if scores.pairs > 0 {
                let error = 100.0 * (scores.pairs - scores.pairs_won) as f64 / scores.pairs as f64;
                measures.insert(format!("separation.{name}"), error);
                measures.insert(format!("gap.{name}"), scores.gap_sum / scores.pairs as f64);
            }
        }
        self.scores = vec![Scores::default(); self.names.len()];
        let (pairs, won) = std::mem::take(&mut self.stream_pairs);
        if pairs > 0 {
            measures.insert("stream_separation".into(), 100.0 * (pairs - won) as f64 / pairs as f64);
        }
        let tensors = self
            .names
            .iter()
            .zip(&self.probes)
            .map(|(name, p)| (format!("probe.{name}"), p.shape().to_vec(), p.iter().copied().collect()))
            .collect();
        states.push(StageState { stage: "probe".into(), tensors });
        EpochReport { epoch, states, shards: Vec::new(), measures }
    }
}
