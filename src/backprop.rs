//! The backprop twin: a ReLU network trained end to end by backpropagation, as a baseline; its
//! hidden layers dense, or locally connected like `ff_local` stages (the paper's CIFAR-10 nets).
//!
//! Forward-Forward's claim is measured against what backpropagation reaches on the same data, so
//! this module trains an ordinary multilayer perceptron beside the FF pipeline: it reads the same
//! [`FrameBatch`] stream (same seed, same order, same jitter), uses the same optimizers and
//! schedule ([`crate::ff::optim`]) and the same matrix product ([`crate::matmul::gemm`]), and
//! optionally the same RMS normalization of the input rows ([`crate::ff::normalize`]). The only
//! difference left is the learning rule.
//!
//! ```text
//!   x ─(normalize?)─> [W₁,b₁] ─ReLU─> ... ─> [W_L,b_L] ─> logits ─softmax─> cross-entropy
//! ```
//!
//! The backward pass is written out by hand: with `P = softmax(Z)` and `Y` the one-hot labels,
//! `δ_L = P − Y`; for each layer `l` (top down) `∂W_l = a_{l−1}ᵀ·δ_l`, `∂b_l = Σ_rows δ_l`, and
//! `δ_{l−1} = (δ_l·W_lᵀ) ⊙ [a_{l−1} > 0]`. Hidden layers are plain ReLU, with no normalization
//! between them. The optimizers ascend, so they are fed `−∂` (the ascent direction of the
//! log-likelihood). Weight cost applies to weights only, as in the FF layers. A local layer
//! ([`Local`], the FF stages' own connectivity) computes the same three products through its
//! fields: its forward pass, its gradient `a_{l−1}ᵀ·δ_l` in its own weight layout, and
//! `δ_l·W_lᵀ` scattered back onto the inputs of each field ([`Local::backward_input`]).

use ndarray::{s, Array1, Array2, ArrayView2, Axis, Ix1, Ix2, Zip};

use crate::ff::normalize::normalize_rows_in_place;
use crate::ff::optim::{ParamOptimizer, Rule, Schedule};
use crate::matmul::{gemm, StagePool, Threads};
use crate::rng::Rng;
use crate::source::FrameBatch;
use crate::stage::ff_local::Local;
use crate::stage::layer::Connectivity;
use std::sync::Arc;

/// Rows per forward pass in the evaluation methods ([`Backprop::error_pct`], [`Backprop::loss`]),
/// to bound the memory of the activations on a whole test set.
const EVAL_CHUNK: usize = 1000;

/// The shape and training settings of a backprop twin.
#[derive(Clone, Debug, PartialEq)]
pub struct BackpropConfig {
    /// Width of an input row (784 for MNIST).
    pub inputs: usize,
    /// Widths of the hidden ReLU layers, bottom first; may be empty (softmax regression).
    pub hidden: Vec<usize>,
    /// The fields of the hidden layers that are locally connected, by hidden layer (bottom
    /// first; `None` or missing: dense). Each must read the level below's width and make the
    /// layer's.
    pub local: Vec<Option<Local>>,
    /// Number of classes (width of the logits).
    pub classes: usize,
    /// The update rule, shared by every tensor.
    pub rule: Rule,
    /// Learning rate ε.
    pub lr: f32,
    /// Weight cost (L2 decay) on the weights; biases get none.
    pub weight_cost: f32,
    /// Learning-rate schedule over epochs.
    pub schedule: Schedule,
    /// Number of epochs the schedule spans.
    pub epochs: u32,
    /// RMS-normalize each input row first, as the FF layers do.
    pub normalize_input: bool,
    /// Dropout on the hidden layers' outputs while training: each unit is kept with
    /// probability `1 − dropout` and scaled by `1 / (1 − dropout)` (inverted dropout, so the
    /// test-time net is the plain one). 0: none.
    pub dropout: f32,
    /// Seed of the initial weights (and of the dropout masks).
    pub seed: u64,
}

impl BackpropConfig {
    /// Builds the network: hidden weights `N(0,1)·√(2/fan_in)` (He; a local unit's fan-in is its
    /// field on the map), output weights `N(0,1)/√fan_in`, biases zero. Layer `l` (1-based)
    /// draws from `Rng::derive(seed, "backprop.init", l)`.
    ///
    /// # Panics
    /// If `inputs`, `classes` or a hidden width is zero, or a local layer does not fit its widths.
    pub fn build(self) -> Backprop {
        assert!(self.inputs > 0, "backprop: inputs must be positive");
        assert!(self.classes > 0, "backprop: classes must be positive");
        assert!(self.hidden.iter().all(|&h| h > 0), "backprop: hidden widths must be positive");
        let mut widths = vec![self.inputs];
        widths.extend(&self.hidden);
        widths.push(self.classes);
        let count = widths.len() - 1;
        let layers = (0..count)
            .map(|l| {
                let (fan_in, fan_out) = (widths[l], widths[l + 1]);
                let mut rng = Rng::derive(self.seed, "backprop.init", (l + 1) as u64);
                let local = self.local.get(l).cloned().flatten().filter(|_| l + 1 < count);
                let weights = match &local {
                    Some(fields) => {
                        assert_eq!((fields.inputs(), fields.units()), (fan_in, fan_out), "backprop: local layer {l}");
                        fields.draw_weights(&mut rng, 0) * std::f32::consts::SQRT_2
                    }
                    None => {
                        let scale =
                            if l + 1 < count { (2.0 / fan_in as f32).sqrt() } else { 1.0 / (fan_in as f32).sqrt() };
                        Array2::from_shape_simple_fn((fan_in, fan_out), || rng.normal() * scale)
                    }
                };
                Layer {
                    weight_optimizer: ParamOptimizer::new(self.rule, self.lr, self.weight_cost, weights.raw_dim()),
                    weights,
                    local,
                    bias: Array1::zeros(fan_out),
                    bias_optimizer: ParamOptimizer::new(self.rule, self.lr, 0.0, Ix1(fan_out)),
                }
            })
            .collect();
        Backprop { config: self, layers, threads: Threads::One, pool: Arc::new(StagePool::new("backprop", 1)) }
    }
}

/// One layer and the optimizer state of its two tensors.
#[derive(Clone, Debug)]
struct Layer {
    /// Dense: `(in, out)`, row-major; local: its fields' layout.
    weights: Array2<f32>,
    /// The fields of a locally connected layer.
    local: Option<Local>,
    /// `(out)`.
    bias: Array1<f32>,
    weight_optimizer: ParamOptimizer<Ix2>,
    bias_optimizer: ParamOptimizer<Ix1>,
}

/// A ReLU network trained with softmax cross-entropy by backpropagation.
#[derive(Clone, Debug)]
pub struct Backprop {
    config: BackpropConfig,
    layers: Vec<Layer>,
    threads: Threads,
    /// The same threads, for the local layers' products.
    pool: Arc<StagePool>,
}

impl Backprop {
    /// The configuration it was built from.
    pub fn config(&self) -> &BackpropConfig {
        &self.config
    }

    /// Threads each matrix product may use ([`Threads::One`] unless set; a twin running alone
    /// on the machine may take [`Threads::Pool`]).
    pub fn set_threads(&mut self, threads: Threads) {
        self.threads = threads;
        let n = match threads {
            Threads::One => 1,
            Threads::Pool(n) => n,
        };
        self.pool = Arc::new(StagePool::new("backprop", n));
    }

    /// Logits `(rows, classes)` for input rows `(rows, inputs)`. If `normalize_input`, the
    /// input rows are RMS-normalized first (as the FF net does); hidden layers are plain ReLU.
    ///
    /// # Panics
    /// If `x` does not have `inputs` columns.
    pub fn logits(&self, x: &Array2<f32>) -> Array2<f32> {
        // Invariant: `forward` returns the input and one activation per layer, never nothing.
        self.forward(x).pop().expect("at least the input")
    }

    /// One training step on a batch: forward, softmax cross-entropy, backward, and one
    /// optimizer step per tensor with the schedule's gain for 1-based `epoch`. Returns the mean
    /// cross-entropy of the batch (before the update).
    ///
    /// # Panics
    /// If the shapes disagree or a label is not below `classes`.
    pub fn train_step(&mut self, x: &Array2<f32>, labels: &[u8], epoch: u32) -> f32 {
        let rows = x.nrows();
        if rows == 0 {
            return 0.0;
        }
        let activations = self.forward_with(x, self.dropout_masks());
        // Invariant: `forward` returns the input and one activation per layer, never nothing.
        let logits = activations.last().expect("logits");
        // The ascent direction of the log-likelihood: Y − P = −δ_L.
        let (loss, mut direction) = softmax_cross_entropy(logits, labels);
        direction.mapv_inplace(|v| -v);
        let gain = self.config.schedule.gain(epoch, self.config.epochs);
        let threads = self.threads;
        for (l, layer) in self.layers.iter_mut().enumerate().rev() {
            let below = &activations[l];
            let (alpha, beta) = layer.weight_optimizer.gradient_target(rows);
            let buffer = layer.weight_optimizer.buffer_mut();
            gradient_into(layer.local.as_ref(), below, &direction, alpha, beta, threads, &self.pool, buffer);
            let (alpha, beta) = layer.bias_optimizer.gradient_target(rows);
            let bias_sum = direction.sum_axis(Axis(0));
            layer.bias_optimizer.buffer_mut().zip_mut_with(&bias_sum, |v, &g| *v = beta * *v + alpha * g);
            if l > 0 {
                // Uses this layer's weights before their update. A dropped unit's output is 0,
                // so the ReLU mask in `back_through` also drops its signal; a kept one was
                // scaled by `1 / (1 − p)`, and so is its signal.
                direction = layer.back_through(&direction.view(), below, threads, &self.pool);
                if self.config.dropout > 0.0 {
                    let keep = 1.0 / (1.0 - self.config.dropout);
                    direction.mapv_inplace(|v| v * keep);
                }
            }
            layer.weight_optimizer.apply(&mut layer.weights, gain);
            layer.bias_optimizer.apply(&mut layer.bias, gain);
        }
        loss
    }

    /// [`Self::train_step`] on a batch of frames.
    pub fn train_frames(&mut self, batch: &FrameBatch, epoch: u32) -> f32 {
        self.train_step(&batch.pixels, &batch.labels, epoch)
    }

    /// Percent of rows whose argmax logit is not the label (ties go to the lowest class).
    /// Evaluated in chunks of rows, so a whole test set may be passed at once.
    pub fn error_pct(&self, x: &Array2<f32>, labels: &[u8]) -> f64 {
        assert_eq!(x.nrows(), labels.len(), "backprop: {} rows but {} labels", x.nrows(), labels.len());
        if labels.is_empty() {
            return 0.0;
        }
        let mut wrong = 0usize;
        for start in (0..x.nrows()).step_by(EVAL_CHUNK) {
            let end = (start + EVAL_CHUNK).min(x.nrows());
            let logits = self.logits(&x.slice(s![start..end, ..]).to_owned());
            wrong += logits
                .axis_iter(Axis(0))
                .zip(&labels[start..end])
                // Invariant: the rows of `logits`' own standard-layout array are contiguous.
                .filter(|(row, &label)| argmax(row.as_slice().expect("contiguous")) != label as usize)
                .count();
        }
        100.0 * wrong as f64 / labels.len() as f64
    }

    /// Gradient of the mean cross-entropy with respect to every parameter, in layer order
    /// (bottom first): `(∂W, ∂b)` per layer, shaped like the weights and biases.
    pub fn gradients(&self, x: &Array2<f32>, labels: &[u8]) -> Vec<(Array2<f32>, Array1<f32>)> {
        let rows = x.nrows().max(1) as f32;
        let activations = self.forward(x);
        // Invariant: `forward` returns the input and one activation per layer, never nothing.
        let (_, mut delta) = softmax_cross_entropy(activations.last().expect("logits"), labels);
        let mut out = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate().rev() {
            let below = &activations[l];
            let mut dw = Array2::zeros(layer.weights.raw_dim());
            gradient_into(layer.local.as_ref(), below, &delta, 1.0 / rows, 0.0, self.threads, &self.pool, &mut dw);
            let db = delta.sum_axis(Axis(0)) / rows;
            out.push((dw, db));
            if l > 0 {
                delta = layer.back_through(&delta.view(), below, self.threads, &self.pool);
            }
        }
        out.reverse();
        out
    }

    /// Mean cross-entropy of the batch, without updating anything.
    pub fn loss(&self, x: &Array2<f32>, labels: &[u8]) -> f32 {
        assert_eq!(x.nrows(), labels.len(), "backprop: {} rows but {} labels", x.nrows(), labels.len());
        if labels.is_empty() {
            return 0.0;
        }
        let mut total = 0.0f64;
        for start in (0..x.nrows()).step_by(EVAL_CHUNK) {
            let end = (start + EVAL_CHUNK).min(x.nrows());
            let logits = self.logits(&x.slice(s![start..end, ..]).to_owned());
            total += cross_entropy_sum(&logits, &labels[start..end]);
        }
        (total / labels.len() as f64) as f32
    }

    /// Named tensors `(name, shape, values)` for checkpoints: per layer `l` (1-based)
    /// `bp.layer{l}.weights` and `bp.layer{l}.bias`, then the optimizer state
    /// (`bp.layer{l}.weights.buffer`, `….adam_m`, `….adam_v`, likewise for `bias`) and
    /// `bp.steps`, so that a resumed run continues exactly.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            let name = format!("bp.layer{}", l + 1);
            out.push((
                format!("{name}.weights"),
                layer.weights.shape().to_vec(),
                layer.weights.iter().copied().collect(),
            ));
            out.push((format!("{name}.bias"), layer.bias.shape().to_vec(), layer.bias.to_vec()));
        }
        for (l, layer) in self.layers.iter().enumerate() {
            let name = format!("bp.layer{}", l + 1);
            for (key, t) in layer.weight_optimizer.state() {
                out.push((format!("{name}.weights.{key}"), t.shape().to_vec(), t.iter().copied().collect()));
            }
            for (key, t) in layer.bias_optimizer.state() {
                out.push((format!("{name}.bias.{key}"), t.shape().to_vec(), t.to_vec()));
            }
        }
        let steps = self.layers.first().map_or(0, |layer| layer.weight_optimizer.steps());
        out.push(("bp.steps".to_string(), vec![1], vec![steps as f32]));
        out
    }

    /// Restores from a list written by [`Self::tensors`]. Weights and biases are required and
    /// must have this network's shapes; optimizer state is restored where present (a list with
    /// weights and biases only restarts the optimizers' momentum from its current state).
    ///
    /// # Errors
    /// Names the first tensor that is missing or does not fit; nothing is changed then.
    pub fn restore(&mut self, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<(), String> {
        let find = |name: &str| tensors.iter().find(|(n, _, _)| n == name);
        // Check everything first, so an error leaves the network untouched.
        let adam = matches!(self.config.rule, Rule::Adam { .. });
        for (l, layer) in self.layers.iter().enumerate() {
            for (key, shape) in [("weights", layer.weights.shape()), ("bias", layer.bias.shape())] {
                let name = format!("bp.layer{}.{key}", l + 1);
                let (_, found_shape, values) = find(&name).ok_or_else(|| format!("no tensor `{name}`"))?;
                if found_shape.as_slice() != shape {
                    return Err(format!("`{name}` has shape {found_shape:?}, the network needs {shape:?}"));
                }
                let expected: usize = shape.iter().product();
                if values.len() != expected {
                    return Err(format!("`{name}` has {} values, its shape needs {expected}", values.len()));
                }
                for state in ["buffer", "adam_m", "adam_v"] {
                    let state_name = format!("{name}.{state}");
                    if let Some((_, _, values)) = find(&state_name) {
                        if state != "buffer" && !adam {
                            return Err(format!(
                                "`{state_name}` is Adam state, but the rule is {:?}",
                                self.config.rule
                            ));
                        }
                        if values.len() != expected {
                            return Err(format!("`{state_name}` has {} values, {name} has {expected}", values.len()));
                        }
                    }
                }
            }
        }
        let steps = find("bp.steps").and_then(|(_, _, v)| v.first()).copied().unwrap_or(0.0) as u64;
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let name = format!("bp.layer{}", l + 1);
            let values = |key: &str| find(&format!("{name}.{key}")).map(|(_, _, v)| v.as_slice());
            // Invariant: our own weights and biases are standard-layout arrays, and the loop above
            // returned an error for any missing or mis-sized tensor.
            layer.weights.as_slice_mut().expect("contiguous").copy_from_slice(values("weights").expect("checked"));
            layer.bias.as_slice_mut().expect("contiguous").copy_from_slice(values("bias").expect("checked"));
            for key in ["buffer", "adam_m", "adam_v"] {
                if let Some(v) = values(&format!("weights.{key}")) {
                    let restored = layer.weight_optimizer.restore(key, v, steps);
                    debug_assert!(restored, "checked above");
                }
                if let Some(v) = values(&format!("bias.{key}")) {
                    let restored = layer.bias_optimizer.restore(key, v, steps);
                    debug_assert!(restored, "checked above");
                }
            }
        }
        Ok(())
    }

    /// Activations of every level: `[input (normalized if asked), h₁, …, logits]`.
    fn forward(&self, x: &Array2<f32>) -> Vec<Array2<f32>> {
        self.forward_with(x, None)
    }

    /// The dropout masks' random stream for the next training step (`None` without dropout):
    /// one stream per step, derived from the seed and the steps taken (checkpointed), so a
    /// resumed run draws the masks an unbroken one would.
    fn dropout_masks(&self) -> Option<Rng> {
        let step = self.layers.first().map_or(0, |l| l.weight_optimizer.steps());
        (self.config.dropout > 0.0).then(|| Rng::derive(self.config.seed, "backprop.dropout", step))
    }

    /// [`Self::forward`], dropping hidden units with the twin's dropout where `masks` is given.
    fn forward_with(&self, x: &Array2<f32>, mut masks: Option<Rng>) -> Vec<Array2<f32>> {
        assert_eq!(
            x.ncols(),
            self.config.inputs,
            "backprop: input rows have {} columns, the network takes {}",
            x.ncols(),
            self.config.inputs
        );
        let mut input = x.to_owned();
        if self.config.normalize_input {
            normalize_rows_in_place(&mut input);
        }
        let mut activations = Vec::with_capacity(self.layers.len() + 1);
        activations.push(input);
        let top = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            // Invariant: `activations` starts with the input.
            let below = activations.last().expect("input");
            let shape = (below.nrows(), layer.bias.len());
            // Invariant: the bias has `layer.bias.len()` values, the last axis of `shape`.
            let mut y = layer.bias.broadcast(shape).expect("bias broadcasts over rows").to_owned();
            match &layer.local {
                Some(fields) => fields.forward(&self.pool, &layer.weights, below, &mut y),
                None => gemm(1.0, &below.view(), &layer.weights.view(), 1.0, &mut y.view_mut(), self.threads),
            }
            if l < top {
                match masks.as_mut() {
                    Some(rng) => {
                        let (p, keep) = (self.config.dropout, 1.0 / (1.0 - self.config.dropout));
                        y.mapv_inplace(|v| if rng.uniform() < p { 0.0 } else { v.max(0.0) * keep });
                    }
                    None => y.mapv_inplace(|v| v.max(0.0)),
                }
            }
            activations.push(y);
        }
        activations
    }
}

/// `buffer = beta·buffer + alpha·belowᵀ·δ`, in the weights' layout of a layer with `local`
/// fields (dense without).
#[allow(clippy::too_many_arguments)]
fn gradient_into(
    local: Option<&Local>,
    below: &Array2<f32>,
    delta: &Array2<f32>,
    alpha: f32,
    beta: f32,
    threads: Threads,
    pool: &StagePool,
    buffer: &mut Array2<f32>,
) {
    match local {
        Some(fields) => fields.gradient(pool, &below.view(), delta, alpha, beta, buffer),
        None => gemm(alpha, &below.t(), &delta.view(), beta, &mut buffer.view_mut(), threads),
    }
}

impl Layer {
    /// `(δ·Wᵀ) ⊙ [below > 0]`: the error signal at the ReLU outputs `below` of the level beneath.
    fn back_through(
        &self,
        delta: &ArrayView2<f32>,
        below: &Array2<f32>,
        threads: Threads,
        pool: &StagePool,
    ) -> Array2<f32> {
        let mut out = Array2::zeros(below.raw_dim());
        match &self.local {
            Some(fields) => fields.backward_input(pool, &self.weights, delta, &mut out),
            None => gemm(1.0, delta, &self.weights.t(), 0.0, &mut out.view_mut(), threads),
        }
        Zip::from(&mut out).and(below).for_each(|d, &a| {
            if a <= 0.0 {
                *d = 0.0;
            }
        });
        out
    }
}

/// Mean cross-entropy and `δ = softmax(logits) − onehot(labels)` per row (not divided by rows).
/// Stable: each row's maximum is subtracted before exponentiating.
fn softmax_cross_entropy(logits: &Array2<f32>, labels: &[u8]) -> (f32, Array2<f32>) {
    check_labels(logits, labels);
    let mut delta = logits.to_owned();
    let mut total = 0.0f64;
    for (mut row, &label) in delta.axis_iter_mut(Axis(0)).zip(labels) {
        let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let shifted_label = row[label as usize] - max;
        row.mapv_inplace(|v| (v - max).exp());
        let sum: f32 = row.sum();
        // −log p_label = log Σ exp(z − max) − (z_label − max).
        total += f64::from(sum.ln() - shifted_label);
        let inverse = 1.0 / sum;
        row.mapv_inplace(|v| v * inverse);
        row[label as usize] -= 1.0;
    }
    let rows = labels.len().max(1) as f64;
    ((total / rows) as f32, delta)
}

/// Summed cross-entropy of the rows (stable log-sum-exp), in f64.
fn cross_entropy_sum(logits: &Array2<f32>, labels: &[u8]) -> f64 {
    check_labels(logits, labels);
    logits
        .axis_iter(Axis(0))
        .zip(labels)
        .map(|(row, &label)| {
            let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
            f64::from(sum.ln() - (row[label as usize] - max))
        })
        .sum()
}

fn check_labels(logits: &Array2<f32>, labels: &[u8]) {
    assert_eq!(logits.nrows(), labels.len(), "backprop: {} rows but {} labels", logits.nrows(), labels.len());
    let classes = logits.ncols();
    if let Some(&bad) = labels.iter().find(|&&label| label as usize >= classes) {
        // Documented panic (`train_step`): the labels come from our loaders, below the classes.
        panic!("backprop: label {bad} is not below the {classes} classes");
    }
}

/// Index of the largest value (the first on ties).
fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, &v)| if v > values[best] { i } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(inputs: usize, hidden: Vec<usize>, classes: usize, rule: Rule, lr: f32) -> BackpropConfig {
        BackpropConfig {
            inputs,
            hidden,
            local: Vec::new(),
            classes,
            rule,
            lr,
            weight_cost: 0.0,
            schedule: Schedule::Constant,
            epochs: 1,
            normalize_input: false,
            dropout: 0.0,
            seed: 7,
        }
    }

    fn random_rows(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
        let mut rng = Rng::derive(seed, "test.rows", 0);
        Array2::from_shape_simple_fn((rows, cols), || rng.normal())
    }

    /// The pattern of active ReLUs, to skip finite differences that straddle a kink.
    fn relu_pattern(net: &Backprop, x: &Array2<f32>) -> Vec<bool> {
        let activations = net.forward(x);
        activations[1..activations.len() - 1].iter().flat_map(|a| a.iter().map(|&v| v > 0.0)).collect()
    }

    /// A net of two local layers on a 4x3 image: 3x3 fields (padding 1) with 2 units at each
    /// position, then 3x3 fields of that map with 1 unit at each: 12 → 24 → 12 → 3.
    fn local_net() -> Backprop {
        use crate::ff::fields::{Fields, MapShape};
        let image = MapShape::new(4, 3, 1);
        let map1 = MapShape::new(4, 3, 2);
        let first = Local::new(Fields { input: image, size: 3, stride: 1, padding: 1 }, 2, false, map1);
        let second =
            Local::new(Fields { input: map1, size: 3, stride: 1, padding: 1 }, 1, false, MapShape::new(4, 3, 1));
        BackpropConfig { local: vec![Some(first), Some(second)], ..config(12, vec![24, 12], 3, Rule::Matlab, 0.1) }
            .build()
    }

    #[test]
    fn a_dropout_step_follows_the_gradient_of_the_masked_net() {
        // SGD without momentum or weight cost at lr 1: one step moves each weight by minus the
        // mean loss's gradient; here the loss of the net with this step's dropout masks (the
        // masks do not depend on the weights, so the masked loss is a function of them).
        let mut net = BackpropConfig {
            dropout: 0.4,
            schedule: Schedule::Constant,
            ..config(12, vec![9, 7], 3, Rule::Sgd { momentum: 0.0 }, 1.0)
        }
        .build();
        let x = random_rows(6, 12, 5);
        let labels = [0u8, 2, 1, 2, 1, 0];
        let masked = |net: &Backprop| -> (f32, Vec<bool>) {
            let acts = net.forward_with(&x, net.dropout_masks());
            let pattern = acts[1..acts.len() - 1].iter().flat_map(|a| a.iter().map(|&v| v > 0.0)).collect();
            ((cross_entropy_sum(acts.last().unwrap(), &labels) / labels.len() as f64) as f32, pattern)
        };
        let (_, base_pattern) = masked(&net);
        // Some units are dropped, some kept: the masks are really there.
        let dropped = base_pattern.iter().filter(|&&on| !on).count();
        assert!(dropped > 0 && dropped < base_pattern.len());
        let h = 1e-3f32;
        let mut numeric = Vec::new();
        for l in 0..net.layers.len() {
            for p in 0..net.layers[l].weights.len() {
                let mut probe = |delta: f32| {
                    let slot = &mut net.layers[l].weights.as_slice_mut().unwrap()[p];
                    let original = *slot;
                    *slot = original + delta;
                    let result = masked(&net);
                    net.layers[l].weights.as_slice_mut().unwrap()[p] = original;
                    result
                };
                let ((plus, pp), (minus, mp)) = (probe(h), probe(-h));
                let straddles = pp != base_pattern || mp != base_pattern;
                numeric.push((l, p, (plus - minus) / (2.0 * h), straddles));
            }
        }
        let before: Vec<Array2<f32>> = net.layers.iter().map(|l| l.weights.clone()).collect();
        net.train_step(&x, &labels, 1);
        let mut checked = 0;
        for (l, p, gradient, straddles) in numeric {
            if straddles {
                continue;
            }
            let step = net.layers[l].weights.as_slice().unwrap()[p] - before[l].as_slice().unwrap()[p];
            let error = (step + gradient).abs() / (1e-2 + gradient.abs().max(step.abs()));
            assert!(error < 2e-2, "layer {} weight {p}: step {step}, minus the gradient {}", l + 1, -gradient);
            checked += 1;
        }
        assert!(checked > 150, "only {checked} weights checked");
        // Without dropout the same net's step is another one: the masks changed the update.
        let mut plain = BackpropConfig {
            schedule: Schedule::Constant,
            ..config(12, vec![9, 7], 3, Rule::Sgd { momentum: 0.0 }, 1.0)
        }
        .build();
        plain.train_step(&x, &labels, 1);
        assert_ne!(plain.layers[0].weights, net.layers[0].weights);
    }

    #[test]
    fn gradients_match_central_differences() {
        for (normalize_input, shape) in [(false, "dense"), (true, "dense"), (false, "local"), (true, "local")] {
            let mut net = match shape {
                "local" => local_net(),
                _ => config(12, vec![7, 5], 3, Rule::Matlab, 0.1).build(),
            };
            net.config.normalize_input = normalize_input;
            // Non-zero biases, so the bias gradients see more than the zero-bias case.
            for (l, layer) in net.layers.iter_mut().enumerate() {
                let mut rng = Rng::derive(3, "test.bias", l as u64);
                layer.bias.mapv_inplace(|_| 0.3 * rng.normal());
            }
            let x = random_rows(4, 12, 11);
            let labels = [0u8, 2, 1, 2];
            let analytic = net.gradients(&x, &labels);
            assert_eq!(analytic.len(), 3);
            let base_pattern = relu_pattern(&net, &x);
            let h = 1e-3f32;
            let (mut checked, mut skipped) = (0usize, 0usize);
            let mut worst = 0.0f32;
            for (l, (dw, db)) in analytic.iter().enumerate() {
                assert_eq!(dw.dim(), net.layers[l].weights.dim());
                assert_eq!(db.len(), net.layers[l].bias.len());
                let params = dw.len() + db.len();
                for p in 0..params {
                    let probe = |net: &mut Backprop, delta: f32| -> (f32, Vec<bool>) {
                        let layer = &mut net.layers[l];
                        let slot = if p < dw.len() {
                            &mut layer.weights.as_slice_mut().unwrap()[p]
                        } else {
                            &mut layer.bias.as_slice_mut().unwrap()[p - dw.len()]
                        };
                        let original = *slot;
                        *slot = original + delta;
                        let result = (net.loss(&x, &labels), relu_pattern(net, &x));
                        let layer = &mut net.layers[l];
                        let slot = if p < dw.len() {
                            &mut layer.weights.as_slice_mut().unwrap()[p]
                        } else {
                            &mut layer.bias.as_slice_mut().unwrap()[p - dw.len()]
                        };
                        *slot = original;
                        result
                    };
                    let (plus, plus_pattern) = probe(&mut net, h);
                    let (minus, minus_pattern) = probe(&mut net, -h);
                    if plus_pattern != base_pattern || minus_pattern != base_pattern {
                        skipped += 1;
                        continue;
                    }
                    let numeric = (plus - minus) / (2.0 * h);
                    let exact = if p < dw.len() { dw.as_slice().unwrap()[p] } else { db[p - dw.len()] };
                    let error = (numeric - exact).abs() / (1e-2 + exact.abs().max(numeric.abs()));
                    worst = worst.max(error);
                    assert!(
                        error < 2e-2,
                        "{shape} layer {} param {p}: analytic {exact}, numeric {numeric} (normalize {normalize_input})",
                        l + 1
                    );
                    checked += 1;
                }
            }
            assert!(skipped * 10 <= checked, "{skipped} of {} parameters straddled a ReLU kink", checked + skipped);
            assert!(checked > 100, "only {checked} parameters checked");
            eprintln!(
                "{shape}, normalize {normalize_input}: checked {checked}, skipped {skipped}, worst relative error {worst}"
            );
        }
    }

    #[test]
    fn one_sgd_step_moves_against_the_gradient() {
        let lr = 0.05;
        let mut net = config(6, vec![5], 3, Rule::Sgd { momentum: 0.0 }, lr).build();
        let x = random_rows(8, 6, 5);
        let labels = [0u8, 1, 2, 0, 1, 2, 0, 1];
        let before: Vec<_> = net.layers.iter().map(|l| (l.weights.clone(), l.bias.clone())).collect();
        let grads = net.gradients(&x, &labels);
        let loss = net.train_step(&x, &labels, 1);
        assert!((loss - net_loss_of(&before, &net, &x, &labels)).abs() < 1e-6);
        for ((layer, (w0, b0)), (dw, db)) in net.layers.iter().zip(&before).zip(&grads) {
            let expected_w = w0 - &(dw * lr);
            let expected_b = b0 - &(db * lr);
            assert!(layer.weights.iter().zip(&expected_w).all(|(a, b)| (a - b).abs() < 1e-6));
            assert!(layer.bias.iter().zip(&expected_b).all(|(a, b)| (a - b).abs() < 1e-6));
        }
    }

    /// The loss of the parameters `before`, evaluated on a copy of `net`.
    fn net_loss_of(before: &[(Array2<f32>, Array1<f32>)], net: &Backprop, x: &Array2<f32>, labels: &[u8]) -> f32 {
        let mut copy = net.clone();
        for (layer, (w, b)) in copy.layers.iter_mut().zip(before) {
            layer.weights.assign(w);
            layer.bias.assign(b);
        }
        copy.loss(x, labels)
    }

    #[test]
    fn training_separates_a_synthetic_problem() {
        // Four classes around random prototypes in 20 dimensions, with noise as large as the
        // prototypes' spread per coordinate: separable, but not by a single step.
        let (classes, inputs, rows) = (4usize, 20usize, 80usize);
        let prototypes = random_rows(classes, inputs, 21);
        let noise = random_rows(rows, inputs, 22);
        let labels: Vec<u8> = (0..rows).map(|i| (i % classes) as u8).collect();
        let x =
            Array2::from_shape_fn((rows, inputs), |(i, j)| prototypes[[labels[i] as usize, j]] + 0.5 * noise[[i, j]]);
        for (rule, lr) in [
            (Rule::Sgd { momentum: 0.9 }, 0.05),
            (Rule::Matlab, 0.2),
            (Rule::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 }, 0.003),
        ] {
            let mut cfg = config(inputs, vec![32, 16], classes, rule, lr);
            cfg.normalize_input = true;
            cfg.weight_cost = 1e-4;
            cfg.schedule = Schedule::Matlab;
            cfg.epochs = 300;
            let mut net = cfg.build();
            let initial = net.loss(&x, &labels);
            let mut last = f32::NAN;
            for step in 1..=300 {
                // Two batches of 40 per "epoch".
                let half = rows / 2;
                let first = net.train_step(&x.slice(s![..half, ..]).to_owned(), &labels[..half], step);
                let second = net.train_step(&x.slice(s![half.., ..]).to_owned(), &labels[half..], step);
                last = (first + second) / 2.0;
            }
            let end = net.loss(&x, &labels);
            let error = net.error_pct(&x, &labels);
            eprintln!("{rule:?}: loss {initial} -> {end} (last train {last}), error {error}%");
            assert!(last.is_finite());
            assert_eq!(error, 0.0, "{rule:?}: training error {error}%");
            assert!(end < initial / 10.0, "{rule:?}: loss only fell from {initial} to {end}");
        }
    }

    #[test]
    fn softmax_is_stable_for_huge_logits() {
        let logits = ndarray::array![[1000.0f32, 0.0, -1000.0], [-5e4, 5e4, 0.0]];
        let (loss, delta) = softmax_cross_entropy(&logits, &[0, 0]);
        assert!(loss.is_finite() && (loss - 5e4).abs() < 1.0, "loss {loss}");
        assert!(delta.iter().all(|v| v.is_finite()));
        assert!(
            (delta[[0, 0]]).abs() < 1e-6 && (delta[[1, 0]] + 1.0).abs() < 1e-6 && (delta[[1, 1]] - 1.0).abs() < 1e-6
        );
        assert!((cross_entropy_sum(&logits, &[0, 0]) - 1e5).abs() < 1.0);
    }

    #[test]
    fn init_follows_the_seed_and_the_scales() {
        let cfg = config(400, vec![300], 10, Rule::Matlab, 0.1);
        let a = cfg.clone().build();
        let b = cfg.clone().build();
        assert_eq!(a.layers[0].weights, b.layers[0].weights);
        let other = BackpropConfig { seed: 8, ..cfg }.build();
        assert_ne!(a.layers[0].weights, other.layers[0].weights);
        let std = |w: &Array2<f32>| (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        assert!((std(&a.layers[0].weights) - (2.0f32 / 400.0).sqrt()).abs() < 0.01 * (2.0f32 / 400.0).sqrt() * 5.0);
        assert!((std(&a.layers[1].weights) - (1.0f32 / 300.0).sqrt()).abs() < 0.1 * (1.0f32 / 300.0).sqrt());
        assert!(a.layers.iter().all(|l| l.bias.iter().all(|&v| v == 0.0)));
    }

    #[test]
    fn tensors_round_trip_and_misfits_are_named() {
        let rule = Rule::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 };
        let mut net = config(6, vec![5], 3, rule, 0.01).build();
        let x = random_rows(8, 6, 5);
        let labels = [0u8, 1, 2, 0, 1, 2, 0, 1];
        net.train_step(&x, &labels, 1);
        let saved = net.tensors();
        let saved_logits = net.logits(&x);
        let names: Vec<&str> = saved.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(&names[..4], ["bp.layer1.weights", "bp.layer1.bias", "bp.layer2.weights", "bp.layer2.bias"]);
        assert!(names.contains(&"bp.layer2.weights.adam_v") && names.contains(&"bp.steps"));
        assert_eq!(saved[0].1, vec![6, 5]);

        // A fresh network restored from the list continues exactly like the original.
        let mut twin = BackpropConfig { seed: 99, ..config(6, vec![5], 3, rule, 0.01) }.build();
        twin.restore(&saved).unwrap();
        assert_eq!(twin.logits(&x), net.logits(&x));
        net.train_step(&x, &labels, 2);
        twin.train_step(&x, &labels, 2);
        assert_eq!(twin.logits(&x), net.logits(&x));

        let mut wrong_shape = saved.clone();
        wrong_shape[2].1 = vec![3, 5];
        let err = twin.restore(&wrong_shape).unwrap_err();
        assert!(err.contains("bp.layer2.weights"), "{err}");
        let missing: Vec<_> = saved.iter().filter(|(n, _, _)| n != "bp.layer1.bias").cloned().collect();
        let err = twin.restore(&missing).unwrap_err();
        assert!(err.contains("bp.layer1.bias"), "{err}");
        let mut matlab = config(6, vec![5], 3, Rule::Matlab, 0.01).build();
        let err = matlab.restore(&saved).unwrap_err();
        assert!(err.contains("adam"), "{err}");
        // Weights and biases alone are enough.
        let bare: Vec<_> = saved.iter().take(4).cloned().collect();
        matlab.restore(&bare).unwrap();
        assert_eq!(matlab.logits(&x), saved_logits);
    }
}
