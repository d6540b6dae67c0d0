//! What every kind of FF stage shares: its objective and optimizer settings, and Matlab's
//! peer normalization. A stage kind adds only its own connectivity (dense, recurrent, ...).

use std::ops::Range;

use ndarray::{s, Array, Array1, Array2, Axis, Dimension};

use crate::error::RestoreError;
use crate::ff::goodness::Goodness;
use crate::ff::normalize::normalize_rows;
use crate::ff::objective::{Objective, Polarity};
use crate::ff::optim::{ParamOptimizer, Rule, Schedule};
use crate::packet::{Packet, StageState};

/// The settings of the FF step, the same for every kind of stage.
#[derive(Clone, Debug)]
pub struct FfSettings {
    /// Goodness function.
    pub goodness: Goodness,
    /// θ; `None` for the goodness's default (Matlab: the number of units).
    pub threshold: Option<f32>,
    /// T.
    pub temperature: f32,
    /// λ of peer normalization (Matlab 0.03; 0 turns it off).
    pub peer_normalization: f32,
    /// Update rule.
    pub rule: Rule,
    /// ε.
    pub lr: f32,
    /// Weight cost on the weights (not on biases, as in Matlab).
    pub weight_cost: f32,
    /// Learning-rate schedule over `epochs`.
    pub schedule: Schedule,
    /// Total epochs (for the schedule).
    pub epochs: u32,
    /// Whether this layer's goodness counts in the goodness test (Matlab: layers 2..L).
    pub counts_for_goodness: bool,
    /// Whether the readout reads this layer (Matlab: layers 2..L).
    pub feeds_readout: bool,
    /// Seed for the initial weights.
    pub seed: u64,
    /// Threads of the stage's own pool for its products (1: the stage's thread only).
    pub threads: usize,
}

impl FfSettings {
    /// The logistic objective of a layer of `units`.
    pub fn objective(&self, units: usize) -> Objective {
        Objective {
            goodness: self.goodness,
            threshold: self.threshold.unwrap_or_else(|| self.goodness.default_threshold(units)),
            temperature: self.temperature,
        }
    }
}

/// Matlab's peer normalization, positive rows only: each unit's running mean activity
/// (`means`, started at 0.5) moves 10% towards its mean over the packet's `positives` rows, and
/// `λ·(mean over units − unit mean)` is added to every positive row's direction. Not gated by
/// the ReLU, so it can revive units that are always off. `scratch` (any length; resized to the
/// units) is the stage's own buffer, so a packet allocates nothing here.
pub fn peer_normalize(
    means: &mut Array1<f32>,
    lambda: f32,
    y: &Array2<f32>,
    positives: usize,
    direction: &mut Array2<f32>,
    scratch: &mut Array1<f32>,
) {
    if lambda <= 0.0 || positives == 0 {
        return;
    }
    // The batch mean as ndarray's `mean_axis` computes it: rows summed in order, then divided.
    sum_rows(&y.slice(s![..positives, ..]), scratch);
    let n = positives as f32;
    means.zip_mut_with(scratch, |m, &b| *m = 0.9 * *m + 0.1 * (b / n));
    let layer_mean = means.mean().unwrap_or(0.0);
    scratch.zip_mut_with(means, |push, &m| *push = lambda * (layer_mean - m));
    direction.slice_mut(s![..positives, ..]).axis_iter_mut(Axis(0)).for_each(|mut row| row += &*scratch);
}

/// `out = Σ rows of x`, in row order (as `sum_axis(Axis(0))`), into `out` resized to the columns.
pub fn sum_rows(x: &ndarray::ArrayView2<f32>, out: &mut Array1<f32>) {
    if out.len() != x.ncols() {
        *out = Array1::zeros(x.ncols());
    } else {
        out.fill(0.0);
    }
    for row in x.axis_iter(Axis(0)) {
        *out += &row;
    }
}

/// Each row's goodness of the `(rows, units)` activities `y`.
pub fn row_goodness(objective: &Objective, y: &Array2<f32>) -> Vec<f32> {
    let mut goodness = Vec::with_capacity(y.nrows());
    row_goodness_into(objective, y, &mut goodness);
    goodness
}

/// [`row_goodness`] into `out` (cleared first), so a stage reuses its buffer.
pub fn row_goodness_into(objective: &Objective, y: &Array2<f32>, out: &mut Vec<f32>) {
    out.clear();
    // Invariant: rows of a stage's own standard-layout activities are contiguous.
    out.extend(
        y.axis_iter(Axis(0)).map(|row| objective.goodness.of(row.as_slice().expect("activities are contiguous"))),
    );
}

/// The Matlab-form direction ([`Objective::direction_at`]) of the learning rows of `y`: the
/// first `positives` rows positive, the next `negatives` negative. `(positives + negatives, units)`.
pub fn learning_direction(
    objective: &Objective,
    y: &Array2<f32>,
    goodness: &[f32],
    positives: usize,
    negatives: usize,
) -> Array2<f32> {
    let mut direction = Array2::zeros((0, 0));
    learning_direction_into(objective, y, goodness, positives, negatives, &mut direction);
    direction
}

/// [`learning_direction`] into `direction`, reshaped (reallocated only when it is too small):
/// every element is written.
pub fn learning_direction_into(
    objective: &Objective,
    y: &Array2<f32>,
    goodness: &[f32],
    positives: usize,
    negatives: usize,
    direction: &mut Array2<f32>,
) {
    let shape = (positives + negatives, y.ncols());
    if direction.dim() != shape {
        *direction = crate::recycle::reshaped(std::mem::take(direction), shape);
    }
    for (r, mut row) in direction.axis_iter_mut(Axis(0)).enumerate() {
        let polarity = if r < positives { Polarity::Positive } else { Polarity::Negative };
        let activity = y.row(r);
        objective.direction_at(
            goodness[r],
            // Invariant: rows of standard-layout arrays made here and by the stage are contiguous.
            activity.as_slice().expect("activities are contiguous"),
            polarity,
            row.as_slice_mut().expect("direction is contiguous"),
        );
    }
}

/// What a stage leaves on `packet` for the sink, in pooled buffers ([`crate::recycle`]): on
/// evaluation packets each row's goodness in this layer (separation per stage), and where the
/// layer `feeds` the readout or the probes, the normalized activities of the `observed` rows.
pub fn leave_for_sink(packet: &mut Packet, y: &Array2<f32>, goodness: &[f32], observed: Range<usize>, feeds: bool) {
    if packet.purpose.is_evaluation() {
        let mut own = crate::recycle::take(goodness.len());
        own.copy_from_slice(goodness);
        packet.layer_goodness.push(own);
    }
    if feeds && !observed.is_empty() {
        packet.features.push(normalize_rows(&y.slice(s![observed, ..])));
    }
}

/// A stage's checkpoint tensors: each learned parameter as `<stage>.<param>`, its optimizer's
/// state as `<stage>.<param>.<key>`, and the optimizer's step count as `<stage>.steps`.
pub(crate) struct Tensors {
    stage: String,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl Tensors {
    /// The tensors of the stage named `stage`.
    pub(crate) fn new(stage: &str) -> Tensors {
        Tensors { stage: stage.to_string(), tensors: Vec::new() }
    }

    /// A parameter that no optimizer moves (peer normalization's running means).
    pub(crate) fn plain<D: Dimension>(mut self, param: &str, values: &Array<f32, D>) -> Tensors {
        self.tensors.push((
            format!("{}.{param}", self.stage),
            values.shape().to_vec(),
            values.iter().copied().collect(),
        ));
        self
    }

    /// A parameter and the state of its optimizer.
    pub(crate) fn learned<D: Dimension>(
        mut self,
        param: &str,
        values: &Array<f32, D>,
        optimizer: &ParamOptimizer<D>,
    ) -> Tensors {
        self = self.plain(param, values);
        for (key, t) in optimizer.state() {
            self.tensors.push((
                format!("{}.{param}.{key}", self.stage),
                t.shape().to_vec(),
                t.iter().copied().collect(),
            ));
        }
        self
    }

    /// The snapshot, with `steps` optimizer steps taken.
    pub(crate) fn finish(mut self, steps: u64) -> StageState {
        self.tensors.push((format!("{}.steps", self.stage), vec![1], vec![steps as f32]));
        StageState { stage: self.stage, tensors: self.tensors }
    }
}

/// Reads a stage's parameters back from the tensors [`Tensors`] wrote.
pub(crate) struct Restorer<'a> {
    state: &'a StageState,
    stage: &'a str,
    steps: u64,
}

impl<'a> Restorer<'a> {
    /// The tensors of `stage` in `state`.
    pub(crate) fn new(state: &'a StageState, stage: &'a str) -> Restorer<'a> {
        let mut restorer = Restorer { state, stage, steps: 0 };
        restorer.steps = restorer.find("steps").and_then(|v| v.first()).copied().unwrap_or(0.0) as u64;
        restorer
    }

    fn find(&self, key: &str) -> Option<&'a Vec<f32>> {
        let name = format!("{}.{key}", self.stage);
        self.state.tensors.iter().find(|(n, _, _)| *n == name).map(|(_, _, v)| v)
    }

    /// A parameter no optimizer moves; it must be there, with as many values.
    pub(crate) fn plain<D: Dimension>(&self, param: &str, values: &mut Array<f32, D>) -> Result<(), RestoreError> {
        // Invariant: a stage's own parameters are standard-layout arrays.
        let dst = values.as_slice_mut().expect("parameters are contiguous");
        copy_tensor(self.state, &format!("{}.{param}", self.stage), dst, "layer")
    }

    /// A parameter and whatever state of its optimizer the checkpoint holds.
    pub(crate) fn learned<D: Dimension>(
        &self,
        param: &str,
        values: &mut Array<f32, D>,
        optimizer: &mut ParamOptimizer<D>,
    ) -> Result<(), RestoreError> {
        self.plain(param, values)?;
        for key in ["buffer", "adam_m", "adam_v"] {
            if let Some(v) = self.find(&format!("{param}.{key}")) {
                optimizer.restore(key, v, self.steps);
            }
        }
        Ok(())
    }
}

/// Copies the tensor `name` of `state` into `dst`, which must hold as many values.
pub(crate) fn copy_tensor(
    state: &StageState,
    name: &str,
    dst: &mut [f32],
    element: &'static str,
) -> Result<(), RestoreError> {
    let src = state
        .tensors
        .iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, _, v)| v)
        .ok_or_else(|| RestoreError::Missing(name.to_string()))?;
    if src.len() != dst.len() {
        return Err(RestoreError::Size { name: name.to_string(), got: src.len(), expected: dst.len(), element });
    }
    dst.copy_from_slice(src);
    Ok(())
}
