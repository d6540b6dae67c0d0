//! A fully connected Forward-Forward layer as a pipeline stage.
//!
//! ```text
//! x̂ = x / rms(x)            length normalization of the input (paper §2, Matlab ffnormrows)
//! y = max(0, x̂·W + b)       (rows, units)
//! G = ±Σy² (or ±mean y²)    goodness per row, on the unnormalized y
//! p = σ((G − θ) / T)        probability that the row is positive
//! ```
//!
//! On a training packet it then follows the Matlab direction (see [`crate::ff::objective`]):
//! `(1−p)·y` on positive rows plus the peer-normalization term, `−p·y` on negative rows, summed
//! into one gradient `x̂ᵀ·D` and applied by the stage's own optimizer. Positive and negative rows
//! travel in the same packet, so both see the same weights, exactly as in `ffnew.m`.
//!
//! The update is applied after the packet's output has been sent on ([`Stage::learn`]): the
//! forward pass is all the next stage waits for, and the weights still change before this
//! stage sees its next packet, so the rule is unchanged.

use ndarray::{s, Array1, Array2, Axis, Ix1, Ix2};

use super::core::{learning_direction, peer_normalize, row_goodness, FfSettings, Restorer, Tensors};
use super::Stage;
use crate::error::{RestoreError, StageError};
use crate::ff::normalize::{normalize_rows, normalize_rows_in_place};
use crate::ff::objective::Objective;
use crate::ff::optim::ParamOptimizer;
use crate::matmul::StagePool;
use crate::packet::{Packet, Purpose, StageState};
use crate::rng::Rng;

/// Everything that defines one FF layer.
#[derive(Clone, Debug)]
pub struct FfDenseConfig {
    /// The stage's name, e.g. `layer2`.
    pub name: String,
    /// 1-based layer index (the first hidden layer is 1).
    pub layer: usize,
    /// Input width.
    pub inputs: usize,
    /// Number of ReLUs.
    pub units: usize,
    /// The FF step's settings.
    pub ff: FfSettings,
}

impl FfDenseConfig {
    /// Builds the layer with Matlab's initialization: `W ~ N(0, 1)/√fan-in`, `b = 0`.
    pub fn build(self) -> FfDense {
        let ff = &self.ff;
        let mut rng = Rng::derive(ff.seed, "ff_dense.init", self.layer as u64);
        let scale = 1.0 / (self.inputs as f32).sqrt();
        let weights = Array2::from_shape_simple_fn((self.inputs, self.units), || rng.normal() * scale);
        let objective = ff.objective(self.units);
        FfDense {
            weight_optimizer: ParamOptimizer::new(ff.rule, ff.lr, ff.weight_cost, Ix2(self.inputs, self.units)),
            bias_optimizer: ParamOptimizer::new(ff.rule, ff.lr, 0.0, Ix1(self.units)),
            weights,
            bias: Array1::zeros(self.units),
            peer_means: Array1::from_elem(self.units, 0.5),
            pending: None,
            pool: StagePool::new(&self.name, ff.threads),
            objective,
            config: self,
        }
    }
}

/// A fully connected FF layer; owns its weights and optimizer state.
pub struct FfDense {
    config: FfDenseConfig,
    objective: Objective,
    /// `(inputs, units)`.
    weights: Array2<f32>,
    /// `(units,)`.
    bias: Array1<f32>,
    /// Running mean activity per unit on positive rows (peer normalization), init 0.5.
    peer_means: Array1<f32>,
    weight_optimizer: ParamOptimizer<Ix2>,
    bias_optimizer: ParamOptimizer<Ix1>,
    /// The update of the last training packet, until [`Stage::learn`] applies it.
    pending: Option<Pending>,
    /// The threads of its products.
    pool: StagePool,
}

impl FfDense {
    /// The layer's weights `(inputs, units)` (tests and benchmarks read them).
    pub fn weights(&self) -> &Array2<f32> {
        &self.weights
    }

    /// The layer's objective.
    pub fn objective(&self) -> &Objective {
        &self.objective
    }

    /// `y = relu(x̂·W + b)` for normalized input rows.
    ///
    /// # Shapes
    /// `normalized: (rows, inputs)` → `(rows, units)`.
    pub fn activities(&self, normalized: &Array2<f32>) -> Array2<f32> {
        let mut y = Array2::from_shape_fn((normalized.nrows(), self.config.units), |(_, j)| self.bias[j]);
        self.pool.gemm(1.0, &normalized.view(), &self.weights.view(), 1.0, &mut y.view_mut());
        y.mapv_inplace(|v| v.max(0.0));
        y
    }

    /// The ascent direction on the total inputs of the learning rows (the first
    /// `positives + negatives` rows of `y`), with the peer-normalization term on positives.
    ///
    /// # Shapes
    /// `y: (rows, units)` → `(positives + negatives, units)`.
    fn direction(&mut self, y: &Array2<f32>, goodness: &[f32], positives: usize, negatives: usize) -> Array2<f32> {
        let mut direction = learning_direction(&self.objective, y, goodness, positives, negatives);
        peer_normalize(&mut self.peer_means, self.config.ff.peer_normalization, y, positives, &mut direction);
        direction
    }

    /// Applies a pending update: one gradient `x̂ᵀ·D` into the optimizer, one step.
    fn apply(&mut self, pending: Pending) {
        let Pending { inputs, direction, cases, epoch } = pending;
        let (alpha, beta) = self.weight_optimizer.gradient_target(cases);
        let learning = direction.nrows();
        let x = inputs.slice(s![..learning, ..]);
        let buffer = &mut self.weight_optimizer.buffer_mut().view_mut();
        self.pool.gemm(alpha, &x.t(), &direction.view(), beta, buffer);
        let bias_sum = direction.sum_axis(Axis(0));
        self.bias_optimizer.buffer_mut().zip_mut_with(&bias_sum, |v, &g| *v = beta * *v + alpha * g);
        let gain = self.config.ff.schedule.gain(epoch, self.config.ff.epochs);
        self.weight_optimizer.apply(&mut self.weights, gain);
        self.bias_optimizer.apply(&mut self.bias, gain);
    }
}

/// An update computed from a packet but applied after the packet has been sent on.
struct Pending {
    /// The normalized inputs of the packet `(rows, inputs)`; the first rows are the learning rows.
    inputs: Array2<f32>,
    /// `(learning rows, units)`.
    direction: Array2<f32>,
    /// Matlab divides the summed positive and negative gradients by the number of cases.
    cases: usize,
    epoch: u32,
}

impl Stage for FfDense {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn process(&mut self, mut packet: Packet) -> Result<Packet, StageError> {
        // A caller that did not call `learn` still gets the synchronous rule.
        self.learn();
        if packet.x.ncols() != self.config.inputs {
            return Err(StageError::Width {
                stage: self.config.name.clone(),
                expected: self.config.inputs,
                got: packet.x.ncols(),
            });
        }
        // Paper §2: normalize so this layer cannot read the goodness of the one below.
        // Which rows feed the readout or probes: known only while `packet.x` still has its rows.
        let observed = packet.observed();
        let mut x = std::mem::take(&mut packet.x);
        normalize_rows_in_place(&mut x); // (rows, inputs)
        let y = self.activities(&x); // (rows, units)
        let goodness = row_goodness(&self.objective, &y);
        if self.config.ff.counts_for_goodness {
            packet.goodness.iter_mut().zip(&goodness).for_each(|(sum, g)| *sum += g);
        }
        if !goodness.iter().all(|g| g.is_finite()) {
            return Err(StageError::NonFinite {
                stage: self.config.name.clone(),
                seq: packet.seq,
                epoch: packet.epoch,
            });
        }
        if packet.purpose.is_evaluation() {
            packet.layer_goodness.push(goodness.clone());
        }
        if self.config.ff.feeds_readout && !observed.is_empty() {
            packet.features.push(normalize_rows(&y.slice(s![observed, ..])));
        }
        let learning = packet.positives + packet.negatives;
        if packet.purpose == Purpose::Train && learning > 0 {
            // Only the cheap part now; the gradient product waits until the output has gone
            // downstream (`learn`), so the next stage starts one product earlier.
            let direction = self.direction(&y, &goodness, packet.positives, packet.negatives);
            let cases = packet.positives.max(packet.negatives);
            self.pending = Some(Pending { inputs: x, direction, cases, epoch: packet.epoch });
        }
        packet.x = y;
        Ok(packet)
    }

    fn learn(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.apply(pending);
        }
    }

    fn snapshot(&self) -> StageState {
        assert!(self.pending.is_none(), "snapshot with an update pending: call learn() first");
        Tensors::new(&self.config.name)
            .learned("weights", &self.weights, &self.weight_optimizer)
            .learned("bias", &self.bias, &self.bias_optimizer)
            .plain("peer_means", &self.peer_means)
            .finish(self.weight_optimizer.steps())
    }

    fn restore(&mut self, state: &StageState) -> Result<(), RestoreError> {
        let tensors = Restorer::new(state, &self.config.name);
        tensors.learned("weights", &mut self.weights, &mut self.weight_optimizer)?;
        tensors.learned("bias", &mut self.bias, &mut self.bias_optimizer)?;
        tensors.plain("peer_means", &mut self.peer_means)
    }
}
