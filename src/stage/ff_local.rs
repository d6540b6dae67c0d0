//! A locally connected Forward-Forward layer (paper §3.2 and §4): the layer is a map of
//! positions, and each unit sees only a square field of the map below, with weights of its
//! own (no sharing across positions).
//!
//! ```text
//! x̂ = x / rms(x)                     the whole input row, as in ff_dense
//! y[p, c] = max(0, x̂[field p]·W[p][:, c] + b[p, c])
//! ```
//!
//! The goodness, objective, peer normalization and optimizers are those of every FF stage
//! ([`super::core`]): goodness over the whole layer, one Matlab direction per unit, and the
//! gradient of position `p`'s weights `x̂[field p]ᵀ·D[p]`. A unit's weights on the part of its
//! field off the map are zero and stay zero (no input ever reaches them), so the layer is
//! exactly a dense layer with its weights masked to the fields (tested).
//!
//! Each position is one small product of the gathered patch `(rows, K·K·C)` with its units'
//! weight rows `(channels, K·K·C)` ([`crate::dots`]: a gemm wastes most of the machine on so
//! few outputs); with `threads > 1` the positions are shared out among the stage's pool.

use ndarray::iter::AxisChunksIterMut;
use ndarray::{s, Array1, Array2, ArrayView2, ArrayViewMut2, Axis, Ix1, Ix2};
use rayon::prelude::*;

use super::core::{learning_direction, peer_normalize, row_goodness, FfSettings, Restorer, Tensors};
use super::Stage;
use crate::dots::{field_backward, field_forward, Lanes};
use crate::error::{RestoreError, StageError};
use crate::ff::fields::{Fields, MapShape, Run};
use crate::ff::normalize::{normalize_rows, normalize_rows_in_place};
use crate::ff::objective::Objective;
use crate::ff::optim::ParamOptimizer;
use crate::matmul::{gemm, StagePool, Threads};
use crate::packet::{Packet, Purpose, StageState};
use crate::rng::Rng;

/// Everything that defines one locally connected FF layer.
#[derive(Clone, Debug)]
pub struct FfLocalConfig {
    /// The stage's name, e.g. `layer2`.
    pub name: String,
    /// 1-based layer index.
    pub layer: usize,
    /// The map below and how the fields cover it.
    pub fields: Fields,
    /// Units per position.
    pub channels: usize,
    /// The FF step's settings.
    pub ff: FfSettings,
}

impl FfLocalConfig {
    /// The map this layer makes, or `None` when its field does not fit the map below.
    pub fn output(&self) -> Option<MapShape> {
        let (height, width) = self.fields.grid()?;
        Some(MapShape::new(height, width, self.channels))
    }

    /// Builds the layer: on-map weights `N(0, 1)/√(the unit's fan-in)`, off-map weights 0, `b = 0`.
    pub fn build(self) -> Result<FfLocal, StageError> {
        let output = self.output().ok_or_else(|| StageError::Topology {
            stage: self.name.clone(),
            reason: format!(
                "its {size}x{size} fields (stride {stride}, padding {padding}) do not fit the {input} map below",
                size = self.fields.size,
                stride = self.fields.stride,
                padding = self.fields.padding,
                input = self.fields.input
            ),
        })?;
        let ff = &self.ff;
        let (patch, channels) = (self.fields.patch_len(), self.channels);
        let runs: Vec<Vec<Run>> = (0..output.height)
            .flat_map(|fy| (0..output.width).map(move |fx| (fy, fx)))
            .map(|(fy, fx)| self.fields.runs(fy, fx))
            .collect();
        let mut rng = Rng::derive(ff.seed, "ff_local.init", self.layer as u64);
        let mut weights = Array2::zeros((runs.len() * channels, patch));
        for (p, field) in runs.iter().enumerate() {
            let scale = 1.0 / (field.iter().map(|r| r.len).sum::<usize>().max(1) as f32).sqrt();
            for c in 0..channels {
                let mut unit = weights.row_mut(p * channels + c);
                for run in field {
                    unit.slice_mut(s![run.to..run.to + run.len]).iter_mut().for_each(|w| *w = rng.normal() * scale);
                }
            }
        }
        let units = output.len();
        Ok(FfLocal {
            weight_optimizer: ParamOptimizer::new(ff.rule, ff.lr, ff.weight_cost, Ix2(runs.len() * channels, patch)),
            bias_optimizer: ParamOptimizer::new(ff.rule, ff.lr, 0.0, Ix1(units)),
            pairs: runs
                .iter()
                .map(|field| {
                    field
                        .iter()
                        .flat_map(|r| (0..r.len).map(move |k| ((r.from + k) as u32, (r.to + k) as u32)))
                        .collect()
                })
                .collect(),
            runs,
            weights,
            bias: Array1::zeros(units),
            peer_means: Array1::from_elem(units, 0.5),
            pending: None,
            pool: StagePool::new(&self.name, ff.threads),
            objective: ff.objective(units),
            output,
            config: self,
        })
    }
}

/// A locally connected FF layer; owns its weights and optimizer state.
pub struct FfLocal {
    config: FfLocalConfig,
    output: MapShape,
    objective: Objective,
    /// The on-map runs of each position's field.
    runs: Vec<Vec<Run>>,
    /// Each position's field as `(input, weight)` index pairs, in patch order.
    pairs: Vec<Vec<(u32, u32)>>,
    /// `(units, patch)`: unit `c` of position `p` is row `p·channels + c`, its weights on its
    /// field in patch order.
    weights: Array2<f32>,
    /// `(positions · channels,)`, in the layer's output order.
    bias: Array1<f32>,
    /// Running mean activity per unit on positive rows (peer normalization), init 0.5.
    peer_means: Array1<f32>,
    weight_optimizer: ParamOptimizer<Ix2>,
    bias_optimizer: ParamOptimizer<Ix1>,
    pending: Option<Pending>,
    pool: StagePool,
}

/// An update computed from a packet, applied after the packet has been sent on.
struct Pending {
    /// The normalized inputs `(rows, inputs)`; the first rows are the learning rows.
    inputs: Array2<f32>,
    /// `(learning rows, units)`.
    direction: Array2<f32>,
    cases: usize,
    epoch: u32,
}

/// From this many units a position on, its products go through gemm on a gathered patch (E2's
/// 128 units a position: 18 ms a packet against 36 ms in the lanes kernel); below it, through
/// the lanes kernel (E7's 3 units: 65 ms against 205 ms in gemm).
const WIDE: usize = 16;

/// Runs `each(position, its block)` over `blocks` (one per position), on the stage's pool when
/// it has more than one thread.
fn by_position<'a, F>(pool: &StagePool, blocks: AxisChunksIterMut<'a, f32, Ix2>, each: F)
where
    F: Fn(usize, ArrayViewMut2<'a, f32>) + Sync + Send,
{
    match pool.threads() {
        1 => blocks.enumerate().for_each(|(p, b)| each(p, b)),
        _ => pool.install(|| blocks.into_par_iter().enumerate().for_each(|(p, b)| each(p, b))),
    }
}

impl FfLocal {
    /// The map this layer makes.
    pub fn output(&self) -> MapShape {
        self.output
    }

    /// The weights `(units, patch)`: each unit's field (tests and pictures read them).
    pub fn weights(&self) -> &Array2<f32> {
        &self.weights
    }

    /// The same weights as a dense `(inputs, units)` matrix, zero off the fields.
    pub fn dense_weights(&self) -> Array2<f32> {
        let channels = self.config.channels;
        let mut dense = Array2::zeros((self.config.fields.input.len(), self.output.len()));
        for (p, field) in self.runs.iter().enumerate() {
            for r in field {
                for k in 0..r.len {
                    for c in 0..channels {
                        dense[[r.from + k, p * channels + c]] = self.weights[[p * channels + c, r.to + k]];
                    }
                }
            }
        }
        dense
    }

    /// Position `p`'s field of every row of `x`, gathered `(rows, patch)` (zero off the map).
    fn patch(&self, x: &ArrayView2<f32>, p: usize) -> Array2<f32> {
        let mut patch = Array2::zeros((x.nrows(), self.config.fields.patch_len()));
        for (row, mut out) in x.outer_iter().zip(patch.outer_iter_mut()) {
            for &(i, k) in &self.pairs[p] {
                out[k as usize] = row[i as usize];
            }
        }
        patch
    }

    /// `y = relu(x̂[fields]·W + b)` for normalized input rows `(rows, inputs)` → `(rows, units)`.
    pub fn activities(&self, normalized: &Array2<f32>) -> Array2<f32> {
        let rows = normalized.nrows();
        let channels = self.config.channels;
        let mut y = Array2::from_shape_fn((rows, self.output.len()), |(_, j)| self.bias[j]);
        let (pairs, weights) = (&self.pairs, &self.weights);
        let columns = y.axis_chunks_iter_mut(Axis(1), channels);
        if channels >= WIDE {
            let x = normalized.view();
            by_position(&self.pool, columns, |p, mut out| {
                let w = weights.slice(s![p * channels..(p + 1) * channels, ..]);
                gemm(1.0, &self.patch(&x, p).view(), &w.t(), 1.0, &mut out, Threads::One);
            });
        } else {
            let x = Lanes::of(&normalized.view());
            by_position(&self.pool, columns, |p, mut out| {
                let w = weights.slice(s![p * channels..(p + 1) * channels, ..]);
                field_forward(&x, &pairs[p], &w, &mut out);
            });
        }
        debug_assert_eq!(y.ncols(), self.output.positions() * channels);
        y.mapv_inplace(|v| v.max(0.0));
        y
    }

    /// One gradient per position `x̂[field]ᵀ·D[position]` into the optimizer, one step.
    fn apply(&mut self, pending: Pending) {
        let Pending { inputs, direction, cases, epoch } = pending;
        let (alpha, beta) = self.weight_optimizer.gradient_target(cases);
        let learning = direction.nrows();
        let channels = self.config.channels;
        let x = inputs.slice(s![..learning, ..]);
        // The optimizer's buffer is taken out while the positions fill it, so `self` (its
        // fields) can be read beside it.
        let mut buffer = std::mem::take(self.weight_optimizer.buffer_mut());
        let blocks = buffer.axis_chunks_iter_mut(Axis(0), channels);
        if channels >= WIDE {
            by_position(&self.pool, blocks, |p, mut grad| {
                let d = direction.slice(s![.., p * channels..(p + 1) * channels]);
                gemm(alpha, &d.t(), &self.patch(&x, p).view(), beta, &mut grad, Threads::One);
            });
        } else {
            let (x, d, pairs) = (Lanes::of(&x), Lanes::of(&direction.view()), &self.pairs);
            by_position(&self.pool, blocks, |p, mut grad| {
                field_backward(alpha, &d, p * channels, &x, &pairs[p], beta, &mut grad);
            });
        }
        *self.weight_optimizer.buffer_mut() = buffer;
        let bias_sum = direction.sum_axis(Axis(0));
        self.bias_optimizer.buffer_mut().zip_mut_with(&bias_sum, |v, &g| *v = beta * *v + alpha * g);
        let gain = self.config.ff.schedule.gain(epoch, self.config.ff.epochs);
        self.weight_optimizer.apply(&mut self.weights, gain);
        self.bias_optimizer.apply(&mut self.bias, gain);
    }
}

impl Stage for FfLocal {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn process(&mut self, mut packet: Packet) -> Result<Packet, StageError> {
        self.learn();
        let inputs = self.config.fields.input.len();
        if packet.x.ncols() != inputs {
            return Err(StageError::Width { stage: self.config.name.clone(), expected: inputs, got: packet.x.ncols() });
        }
        let observed = packet.observed();
        let mut x = std::mem::take(&mut packet.x);
        normalize_rows_in_place(&mut x);
        let y = self.activities(&x);
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
            let mut direction = learning_direction(&self.objective, &y, &goodness, packet.positives, packet.negatives);
            let lambda = self.config.ff.peer_normalization;
            peer_normalize(&mut self.peer_means, lambda, &y, packet.positives, &mut direction);
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
