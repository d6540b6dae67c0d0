//! The feed-forward FF layer every connectivity shares: normalization, activities, goodness,
//! the Matlab direction, peer normalization and the optimizer step ([`FfLayer`]). A kind of
//! feed-forward stage (`ff_dense`, `ff_local`) is a [`Connectivity`]: how its units see their
//! inputs, and nothing else.

use ndarray::{s, Array1, Array2, ArrayView2, Ix1, Ix2};

use super::core::{
    learning_direction_into, leave_for_sink, peer_normalize, row_goodness_into, sum_rows, FfSettings, Restorer, Tensors,
};
use super::shared_rows::SharedRows;
use super::Stage;
use crate::error::{RestoreError, StageError};
use crate::ff::normalize::{normalize_rows_in_place, normalize_rows_in_place_scales};
use crate::ff::objective::Objective;
use crate::ff::optim::ParamOptimizer;
use crate::matmul::StagePool;
use crate::packet::{Packet, Purpose, StageState};
use crate::rng::Rng;

/// How a layer's units connect to its inputs: the one thing a kind of feed-forward FF stage
/// adds to the step every FF stage takes ([`FfLayer`]).
pub trait Connectivity: Send {
    /// Values a row of the layer's input holds.
    fn inputs(&self) -> usize;
    /// Units of the layer.
    fn units(&self) -> usize;
    /// The name of the random stream its weights are drawn from (with the layer's index).
    fn init_purpose(&self) -> &'static str;
    /// Weights drawn from `rng` in the connectivity's own layout: `N(0, 1)/√fan-in` on the
    /// inputs each unit sees, where a unit also gets `extra_fan_in` inputs through another
    /// connectivity (a recurrent layer's top-down weights), zero where it sees nothing.
    fn draw_weights(&self, rng: &mut Rng, extra_fan_in: usize) -> Array2<f32>;
    /// The inputs a unit sees (the most, where fields are cut by the map's border).
    fn fan_in(&self) -> usize;
    /// Whether rows of one frame may share their product ([`super::shared_rows`]): only where
    /// the weights are laid out `(inputs, units)`, one row an input, as a dense layer's are.
    fn shares_rows(&self) -> bool {
        false
    }
    /// The initial weights of layer `layer` alone.
    fn initial_weights(&self, seed: u64, layer: usize) -> Array2<f32> {
        self.draw_weights(&mut Rng::derive(seed, self.init_purpose(), layer as u64), 0)
    }
    /// `y += x̂·W`: the total inputs of normalized rows `x` `(rows, inputs)` into `y` `(rows, units)`.
    fn forward(&self, pool: &StagePool, weights: &Array2<f32>, x: &Array2<f32>, y: &mut Array2<f32>);
    /// `buffer = beta·buffer + alpha·x̂ᵀD`, in the weights' layout, for the learning rows `x`
    /// `(rows, inputs)` and their direction `d` `(rows, units)`.
    fn gradient(
        &self,
        pool: &StagePool,
        x: &ArrayView2<f32>,
        d: &Array2<f32>,
        alpha: f32,
        beta: f32,
        buffer: &mut Array2<f32>,
    );
}

/// A feed-forward FF layer with the connectivity `C`: owns its weights and optimizer state.
///
/// ```text
/// x̂ = x / rms(x)            length normalization of the input (paper §2, Matlab ffnormrows)
/// y = max(0, x̂·W + b)       (rows, units), W as the connectivity has it
/// G = ±Σy² (or ±mean y²)    goodness per row, on the unnormalized y
/// p = σ((G − θ) / T)        probability that the row is positive
/// ```
///
/// On a training packet it then follows the Matlab direction (see [`crate::ff::objective`]):
/// `(1−p)·y` on positive rows plus the peer-normalization term, `−p·y` on negative rows, summed
/// into one gradient `x̂ᵀ·D` and applied by the stage's own optimizer. Positive and negative rows
/// travel in the same packet, so both see the same weights, exactly as in `ffnew.m`.
///
/// The update is applied after the packet's output has been sent on ([`Stage::learn`]): the
/// forward pass is all the next stage waits for, and the weights still change before this
/// stage sees its next packet, so the rule is unchanged.
pub struct FfLayer<C> {
    name: String,
    ff: FfSettings,
    connectivity: C,
    objective: Objective,
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
    /// Buffers the stage has finished with, reused by the next packet so that steady state
    /// allocates no arrays of its own ([`Buffers`]).
    buffers: Buffers,
    /// Which rows of the packet in flight share one product (connectivities that
    /// [`Connectivity::shares_rows`]).
    shared: SharedRows,
}

/// What a layer reuses from packet to packet: the input array of the last update (its
/// allocation becomes the next packet's activities, which travel on downstream), the
/// direction, the goodness and a units-long scratch row.
#[derive(Default)]
struct Buffers {
    spare: Array2<f32>,
    direction: Array2<f32>,
    goodness: Vec<f32>,
    units: Array1<f32>,
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
    /// Whether the forward pass shared rows ([`SharedRows`]): the gradient then does too.
    shared: bool,
}

impl<C: Connectivity> FfLayer<C> {
    /// The layer `name` (the `layer`-th) with `connectivity`, its weights initialized by it.
    pub fn new(name: &str, layer: usize, connectivity: C, ff: FfSettings) -> FfLayer<C> {
        let weights = connectivity.initial_weights(ff.seed, layer);
        let units = connectivity.units();
        FfLayer {
            weight_optimizer: ParamOptimizer::new(ff.rule, ff.lr, ff.weight_cost, weights.raw_dim()),
            bias_optimizer: ParamOptimizer::new(ff.rule, ff.lr, 0.0, Ix1(units)),
            weights,
            bias: Array1::zeros(units),
            peer_means: Array1::from_elem(units, 0.5),
            pending: None,
            pool: StagePool::new(name, ff.threads),
            buffers: Buffers::default(),
            shared: SharedRows::default(),
            objective: ff.objective(units),
            name: name.to_string(),
            connectivity,
            ff,
        }
    }

    /// The connectivity.
    pub fn connectivity(&self) -> &C {
        &self.connectivity
    }

    /// The layer's weights, in the connectivity's layout (tests and benchmarks read them).
    pub fn weights(&self) -> &Array2<f32> {
        &self.weights
    }

    /// The layer's objective.
    pub fn objective(&self) -> &Objective {
        &self.objective
    }

    /// `y = relu(x̂·W + b)` for normalized input rows `(rows, inputs)` → `(rows, units)`.
    pub fn activities(&self, normalized: &Array2<f32>) -> Array2<f32> {
        self.activities_in(normalized, Array2::zeros((0, 0)))
    }

    /// [`Self::activities`] in `buffer`'s allocation where it is large enough.
    fn activities_in(&self, normalized: &Array2<f32>, buffer: Array2<f32>) -> Array2<f32> {
        relu_of_total(&self.bias, buffer, normalized.nrows(), |y| {
            self.connectivity.forward(&self.pool, &self.weights, normalized, y)
        })
    }

    /// The ascent direction on the total inputs of the learning rows (the first
    /// `positives + negatives` rows of `y`), with the peer-normalization term on positives,
    /// in the direction buffer's allocation.
    fn direction(&mut self, y: &Array2<f32>, goodness: &[f32], positives: usize, negatives: usize) -> Array2<f32> {
        let mut direction = std::mem::take(&mut self.buffers.direction);
        learning_direction_into(&self.objective, y, goodness, positives, negatives, &mut direction);
        let lambda = self.ff.peer_normalization;
        peer_normalize(&mut self.peer_means, lambda, y, positives, &mut direction, &mut self.buffers.units);
        direction
    }

    /// Applies a pending update: one gradient `x̂ᵀ·D` into the optimizer, one step; its arrays
    /// go back to the buffers.
    fn apply(&mut self, pending: Pending) {
        let Pending { inputs, direction, cases, epoch, shared } = pending;
        let (alpha, beta) = self.weight_optimizer.gradient_target(cases);
        let x = inputs.slice(s![..direction.nrows(), ..]);
        let buffer = self.weight_optimizer.buffer_mut();
        if shared {
            self.shared.gradient(&self.pool, (&x, &direction), (alpha, beta), buffer);
        } else {
            self.connectivity.gradient(&self.pool, &x, &direction, alpha, beta, buffer);
        }
        sum_rows(&direction.view(), &mut self.buffers.units);
        let bias_sum = &self.buffers.units;
        self.bias_optimizer.buffer_mut().zip_mut_with(bias_sum, |v, &g| *v = beta * *v + alpha * g);
        let gain = self.ff.schedule.gain(epoch, self.ff.epochs);
        self.weight_optimizer.apply(&mut self.weights, gain);
        self.bias_optimizer.apply(&mut self.bias, gain);
        self.buffers.spare = inputs;
        self.buffers.direction = direction;
    }
}

/// `y = max(0, b + total)` for `rows` rows in `buffer`'s allocation where it is large enough,
/// `add_total` adding the rows' total inputs `x̂·W` to the bias in `y`.
fn relu_of_total(
    bias: &Array1<f32>,
    buffer: Array2<f32>,
    rows: usize,
    add_total: impl FnOnce(&mut Array2<f32>),
) -> Array2<f32> {
    let mut y = crate::recycle::reshaped(buffer, (rows, bias.len()));
    y.rows_mut().into_iter().for_each(|mut row| row.assign(bias));
    add_total(&mut y);
    y.mapv_inplace(|v| v.max(0.0));
    y
}

impl<C: Connectivity> Stage for FfLayer<C> {
    fn name(&self) -> &str {
        &self.name
    }

    fn process(&mut self, mut packet: Packet) -> Result<Packet, StageError> {
        // A caller that did not call `learn` still gets the synchronous rule.
        self.learn();
        let inputs = self.connectivity.inputs();
        if packet.x.ncols() != inputs {
            return Err(StageError::Width { stage: self.name.clone(), expected: inputs, got: packet.x.ncols() });
        }
        // Paper §2: normalize so this layer cannot read the goodness of the one below.
        // Which rows feed the readout or probes: known only while `packet.x` still has its rows.
        let observed = packet.observed();
        let mut x = std::mem::take(&mut packet.x);
        // Rows of one frame that differ only in their first values (a first layer's positive,
        // negative and candidate rows) share the product of the rest.
        let shared = self.connectivity.shares_rows() && self.shared.find(&x, &packet.frame);
        let spare = std::mem::take(&mut self.buffers.spare);
        let y = if shared {
            normalize_rows_in_place_scales(&mut x, self.shared.scales_mut());
            let (pool, weights, rows) = (&self.pool, &self.weights, &mut self.shared);
            relu_of_total(&self.bias, spare, x.nrows(), |y| rows.forward(pool, weights, &x, y))
        } else {
            normalize_rows_in_place(&mut x); // (rows, inputs)
            self.activities_in(&x, spare) // (rows, units)
        };
        let mut goodness = std::mem::take(&mut self.buffers.goodness);
        row_goodness_into(&self.objective, &y, &mut goodness);
        if self.ff.counts_for_goodness {
            packet.goodness.iter_mut().zip(&goodness).for_each(|(sum, g)| *sum += g);
        }
        if !goodness.iter().all(|g| g.is_finite()) {
            return Err(StageError::NonFinite { stage: self.name.clone(), seq: packet.seq, epoch: packet.epoch });
        }
        leave_for_sink(&mut packet, &y, &goodness, observed, self.ff.feeds_readout);
        let learning = packet.positives + packet.negatives;
        if packet.purpose == Purpose::Train && learning > 0 {
            // Only the cheap part now; the gradient product waits until the output has gone
            // downstream (`learn`), so the next stage starts one product earlier.
            let direction = self.direction(&y, &goodness, packet.positives, packet.negatives);
            let cases = packet.positives.max(packet.negatives);
            self.pending = Some(Pending { inputs: x, direction, cases, epoch: packet.epoch, shared });
        } else {
            self.buffers.spare = x;
        }
        self.buffers.goodness = goodness;
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
        Tensors::new(&self.name)
            .learned("weights", &self.weights, &self.weight_optimizer)
            .learned("bias", &self.bias, &self.bias_optimizer)
            .plain("peer_means", &self.peer_means)
            .finish(self.weight_optimizer.steps())
    }

    fn restore(&mut self, state: &StageState) -> Result<(), RestoreError> {
        let tensors = Restorer::new(state, &self.name);
        tensors.learned("weights", &mut self.weights, &mut self.weight_optimizer)?;
        tensors.learned("bias", &mut self.bias, &mut self.bias_optimizer)?;
        tensors.plain("peer_means", &mut self.peer_means)
    }
}
