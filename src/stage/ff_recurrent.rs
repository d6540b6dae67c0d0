//! A recurrent Forward-Forward layer with top-down input (paper §3.4, Fig. 3): a stage fed by
//! the layer below at this step and by the layer above at an earlier step.
//!
//! ```text
//! x̂ = x / rms(x)                 the layer below at this step (the image for layer 1)
//! â = a / rms(a)                 the layer above, d steps ago (a feedback edge, delay d);
//!                                for the top layer, the clamped one-of-N label
//! z = x̂·W_up + â·W_down + b
//! y = 0.3·y_prev + 0.7·max(0, z)  damped (step ≥ 1 of the same rows); y = max(0, z) at step 0
//! G = Σy² (or another goodness)   on the unnormalized y
//! ```
//!
//! The head plays each batch of rows for several steps (a static image is a "boring video"):
//! step 0 is the one bottom-up pass that initializes the hidden states (no top-down input from
//! hidden layers yet), steps 1..=T are the damped iterations. A stage keeps its last state per
//! row (`y_prev`) and sends it down after every packet; a state computed for other rows (an
//! earlier batch, the neutral state the edge starts with) counts as no top-down input, unless
//! the stage carries its state across packets (video: the net's state is its memory).
//!
//! Learning: on training packets of the steps it learns from, the Matlab direction of
//! [`crate::ff::objective`] on the damped state, gated by the ReLU of this step and scaled by
//! the 0.7 that this step's input contributes, into `W_up`, `W_down` and `b`; the update is
//! applied after the packet has been sent on, as in [`super::ff_dense`].
//!
//! How a unit sees the layer below and the layer above is a [`Connectivity`] each: dense on
//! both sides for E5 (`ff_recurrent`), local fields on both for the paper's CIFAR-10 nets
//! (`ff_local_recurrent`, §4: 11×11 fields up and down), local below and dense from the label
//! layer for their top layer.
//!
//! Choices where the paper is silent: separate `W_down` (not tied to `W_upᵀ`); the label
//! layer is normalized like a hidden layer (one-hot: √N at the label; neutral: 1 everywhere);
//! every step in `learn_steps` updates the weights (an update per step, not one per batch).

use ndarray::{s, Array1, Array2, Axis, Ix1, Ix2, Zip};

use super::core::{learning_direction, leave_for_sink, peer_normalize, row_goodness, FfSettings, Restorer, Tensors};
use super::ff_dense::Dense;
use super::layer::Connectivity;
use super::Stage;
use crate::error::{RestoreError, StageError};
use crate::ff::normalize::normalize_rows_in_place;
use crate::ff::objective::Objective;
use crate::ff::optim::ParamOptimizer;
use crate::matmul::StagePool;
use crate::packet::{Packet, Purpose, StageState, TopDown, NEUTRAL};
use crate::rng::Rng;

/// Where a recurrent layer's top-down input comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Above {
    /// The hidden layer above, through a feedback edge: its width.
    Stage(usize),
    /// The clamped label layer (the top hidden layer): classes and the value of the label unit.
    Label {
        /// Number of label units.
        classes: usize,
        /// The value of the true label's unit (the neutral label is `strength / classes` each).
        strength: f32,
    },
    /// Nothing: the top layer of a net on an unlabelled frame stream (no `W_down`).
    Nothing,
}

impl Above {
    /// Values of the top-down input.
    pub fn width(self) -> usize {
        match self {
            Above::Stage(units) => units,
            Above::Label { classes, .. } => classes,
            Above::Nothing => 0,
        }
    }
}

/// Everything that defines one recurrent FF layer.
#[derive(Clone, Debug)]
pub struct FfRecurrentConfig {
    /// The stage's name, e.g. `layer2`.
    pub name: String,
    /// 1-based layer index.
    pub layer: usize,
    /// Input width from below.
    pub inputs: usize,
    /// Number of ReLUs.
    pub units: usize,
    /// The top-down input.
    pub above: Above,
    /// Share of the previous state kept at each step (paper: 0.3).
    pub damping: f32,
    /// The steps (0 = the bottom-up pass) whose training packets update the weights.
    pub learn_steps: std::ops::RangeInclusive<u32>,
    /// Keep the state across packets (frame streams) instead of starting every batch of rows
    /// from its bottom-up pass.
    pub carry_state: bool,
    /// The FF step's settings.
    pub ff: FfSettings,
}

impl FfRecurrentConfig {
    /// Builds the dense layer (E5): every unit on every value below and above.
    pub fn build(self) -> FfRecurrent {
        let (up, down) = (Dense::new(self.inputs, self.units), Dense::new(self.above.width(), self.units));
        self.build_with(up, down)
    }

    /// Builds the layer with `up` on the layer below and `down` on the layer above: weights
    /// `N(0, 1)/√fan-in`, the fan-in of both together (what a unit sees below and above),
    /// drawn `W_up` first from one stream; `b = 0`.
    ///
    /// # Panics
    /// If the connectivities disagree with the config's widths (a builder's bug).
    pub fn build_with<U: Connectivity, D: Connectivity>(self, up: U, down: D) -> FfRecurrent<U, D> {
        assert_eq!((up.inputs(), up.units()), (self.inputs, self.units), "{}: bottom-up connectivity", self.name);
        assert_eq!((down.inputs(), down.units()), (self.above.width(), self.units), "{}: top-down", self.name);
        let ff = &self.ff;
        let mut rng = Rng::derive(ff.seed, "ff_recurrent.init", self.layer as u64);
        let w_up = up.draw_weights(&mut rng, down.fan_in());
        let w_down = down.draw_weights(&mut rng, up.fan_in());
        let objective = ff.objective(self.units);
        let optimizer = |shape: Ix2| ParamOptimizer::new(ff.rule, ff.lr, ff.weight_cost, shape);
        FfRecurrent {
            up_optimizer: optimizer(w_up.raw_dim()),
            down_optimizer: optimizer(w_down.raw_dim()),
            bias_optimizer: ParamOptimizer::new(ff.rule, ff.lr, 0.0, Ix1(self.units)),
            w_up,
            w_down,
            up,
            down,
            bias: Array1::zeros(self.units),
            peer_means: Array1::from_elem(self.units, 0.5),
            above: None,
            state: None,
            pending: None,
            pool: StagePool::new(&self.name, ff.threads),
            objective,
            config: self,
        }
    }
}

/// A recurrent FF layer; owns its weights, optimizer state and its current state. `U` is how
/// its units see the layer below, `D` how they see the layer above.
pub struct FfRecurrent<U = Dense, D = Dense> {
    config: FfRecurrentConfig,
    objective: Objective,
    up: U,
    down: D,
    /// In `up`'s layout (dense: `(inputs, units)`).
    w_up: Array2<f32>,
    /// In `down`'s layout (dense: `(above, units)`).
    w_down: Array2<f32>,
    /// `(units,)`.
    bias: Array1<f32>,
    peer_means: Array1<f32>,
    up_optimizer: ParamOptimizer<Ix2>,
    down_optimizer: ParamOptimizer<Ix2>,
    bias_optimizer: ParamOptimizer<Ix1>,
    /// The state of the layer above for the next packet.
    above: Option<TopDown>,
    /// This layer's last state: the packet it was computed for and `(rows, units)`.
    state: Option<(u64, u32, Array2<f32>)>,
    pending: Option<Pending>,
    pool: StagePool,
}

struct Pending {
    /// Normalized input from below `(learning rows, inputs)`.
    below: Array2<f32>,
    /// Top-down input `(learning rows, above)`.
    above: Array2<f32>,
    /// `(learning rows, units)`.
    direction: Array2<f32>,
    cases: usize,
    epoch: u32,
}

impl<U: Connectivity, D: Connectivity> FfRecurrent<U, D> {
    /// The bottom-up weights, in the bottom-up connectivity's layout.
    pub fn w_up(&self) -> &Array2<f32> {
        &self.w_up
    }

    /// The top-down input of a packet: the label rows for the top layer, else the state the
    /// layer above sent, normalized, when it belongs to these rows (zeros otherwise); and
    /// whether there is any (zeros add nothing to the total input: their product is skipped).
    fn top_down(&mut self, packet: &Packet) -> (Array2<f32>, bool) {
        let rows = packet.rows();
        match self.config.above {
            Above::Label { classes, strength } => {
                let mut a = Array2::zeros((rows, classes));
                for (mut row, &label) in a.outer_iter_mut().zip(&packet.embedded) {
                    if label == NEUTRAL {
                        row.fill(strength / classes as f32);
                    } else if (label as usize) < classes {
                        row[label as usize] = strength;
                    }
                }
                // Normalized like every layer's input: a raw one-hot of 1 is drowned by the
                // normalized state from below (measured: the goodness test stayed near chance
                // on the synthetic test set; normalized, it learns as E3's label pixels do).
                normalize_rows_in_place(&mut a);
                (a, true)
            }
            Above::Nothing => (Array2::zeros((rows, 0)), false),
            Above::Stage(width) => {
                let fresh = self.above.take().and_then(|t| {
                    let same = t.seq == packet.seq || self.config.carry_state;
                    t.state.filter(|s| same && s.dim() == (rows, width))
                });
                match fresh {
                    Some(mut a) => {
                        normalize_rows_in_place(&mut a);
                        (a, true)
                    }
                    None => (Array2::zeros((rows, width)), false),
                }
            }
        }
    }

    fn direction(
        &mut self,
        y: &Array2<f32>,
        on: &Array2<f32>,
        goodness: &[f32],
        packet: &Packet,
        gain: f32,
    ) -> Array2<f32> {
        let (positives, negatives) = (packet.positives, packet.negatives);
        let learning = positives + negatives;
        let mut direction = learning_direction(&self.objective, y, goodness, positives, negatives);
        // ∂y/∂z = gain · [z > 0]: the damped state keeps some activity where the unit is off now.
        Zip::from(&mut direction).and(&on.slice(s![..learning, ..])).for_each(|d, &o| *d *= gain * o);
        let lambda = self.config.ff.peer_normalization;
        peer_normalize(&mut self.peer_means, lambda, y, positives, &mut direction, &mut ndarray::Array1::zeros(0));
        direction
    }

    fn apply(&mut self, pending: Pending) {
        let Pending { below, above, direction, cases, epoch } = pending;
        let gain = self.config.ff.schedule.gain(epoch, self.config.ff.epochs);
        let (alpha, beta) = self.up_optimizer.gradient_target(cases);
        self.up.gradient(&self.pool, &below.view(), &direction, alpha, beta, self.up_optimizer.buffer_mut());
        self.up_optimizer.apply(&mut self.w_up, gain);
        if above.ncols() > 0 {
            let (alpha, beta) = self.down_optimizer.gradient_target(cases);
            self.down.gradient(&self.pool, &above.view(), &direction, alpha, beta, self.down_optimizer.buffer_mut());
            self.down_optimizer.apply(&mut self.w_down, gain);
        }
        let (alpha, beta) = self.bias_optimizer.gradient_target(cases);
        let bias_sum = direction.sum_axis(Axis(0));
        self.bias_optimizer.buffer_mut().zip_mut_with(&bias_sum, |v, &g| *v = beta * *v + alpha * g);
        self.bias_optimizer.apply(&mut self.bias, gain);
    }
}

impl<U: Connectivity, D: Connectivity> Stage for FfRecurrent<U, D> {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn process(&mut self, mut packet: Packet) -> Result<Packet, StageError> {
        self.learn();
        if packet.x.ncols() != self.config.inputs {
            return Err(StageError::Width {
                stage: self.config.name.clone(),
                expected: self.config.inputs,
                got: packet.x.ncols(),
            });
        }
        let rows = packet.rows();
        let observed = packet.observed();
        let (above, fresh) = self.top_down(&packet);
        let mut below = std::mem::take(&mut packet.x);
        normalize_rows_in_place(&mut below);
        let mut z = Array2::from_shape_fn((rows, self.config.units), |(_, j)| self.bias[j]);
        self.up.forward(&self.pool, &self.w_up, &below, &mut z);
        if fresh {
            self.down.forward(&self.pool, &self.w_down, &above, &mut z);
        }
        let on = z.mapv(|v| if v > 0.0 { 1.0f32 } else { 0.0 });
        let mut y = z;
        y.mapv_inplace(|v| v.max(0.0));
        // Damping: only a state of the same rows (or a carried one) is a previous step.
        let previous = self.state.take().and_then(|(seq, _, prev)| {
            let same = (seq == packet.seq && packet.step > 0) || self.config.carry_state;
            (same && prev.dim() == y.dim()).then_some(prev)
        });
        let damping = self.config.damping;
        let gain = match &previous {
            Some(prev) => {
                Zip::from(&mut y).and(prev).for_each(|v, &p| *v = damping * p + (1.0 - damping) * *v);
                1.0 - damping
            }
            None => 1.0,
        };
        let goodness = row_goodness(&self.objective, &y);
        if !goodness.iter().all(|g| g.is_finite()) {
            return Err(StageError::NonFinite {
                stage: self.config.name.clone(),
                seq: packet.seq,
                epoch: packet.epoch,
            });
        }
        if self.config.ff.counts_for_goodness {
            packet.goodness.iter_mut().zip(&goodness).for_each(|(sum, g)| *sum += g);
        }
        // The readout and the probes read the state the head's last step leaves.
        let feeds = self.config.ff.feeds_readout && packet.last_step();
        leave_for_sink(&mut packet, &y, &goodness, observed, feeds);
        let learning = packet.positives + packet.negatives;
        if packet.purpose == Purpose::Train && learning > 0 && self.config.learn_steps.contains(&packet.step) {
            let direction = self.direction(&y, &on, &goodness, &packet, gain);
            let cases = packet.positives.max(packet.negatives);
            let keep = |m: Array2<f32>| if m.nrows() == learning { m } else { m.slice(s![..learning, ..]).to_owned() };
            self.pending =
                Some(Pending { below: keep(below), above: keep(above), direction, cases, epoch: packet.epoch });
        }
        self.state = Some((packet.seq, packet.step, y.clone()));
        packet.x = y;
        Ok(packet)
    }

    fn learn(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.apply(pending);
        }
    }

    fn reads_above(&self) -> bool {
        matches!(self.config.above, Above::Stage(_))
    }

    fn sends_below(&self) -> bool {
        self.config.layer > 1
    }

    fn take_above(&mut self, above: TopDown) {
        self.above = Some(above);
    }

    fn below(&mut self) -> TopDown {
        match &self.state {
            Some((seq, step, y)) => TopDown { seq: *seq, step: *step, state: Some(y.clone()) },
            None => TopDown::neutral(),
        }
    }

    fn snapshot(&self) -> StageState {
        assert!(self.pending.is_none(), "snapshot with an update pending: call learn() first");
        Tensors::new(&self.config.name)
            .learned("weights", &self.w_up, &self.up_optimizer)
            .learned("top_down", &self.w_down, &self.down_optimizer)
            .learned("bias", &self.bias, &self.bias_optimizer)
            .plain("peer_means", &self.peer_means)
            .finish(self.up_optimizer.steps())
    }

    fn restore(&mut self, state: &StageState) -> Result<(), RestoreError> {
        let tensors = Restorer::new(state, &self.config.name);
        tensors.learned("weights", &mut self.w_up, &mut self.up_optimizer)?;
        tensors.learned("top_down", &mut self.w_down, &mut self.down_optimizer)?;
        tensors.learned("bias", &mut self.bias, &mut self.bias_optimizer)?;
        tensors.plain("peer_means", &mut self.peer_means)?;
        self.state = None;
        Ok(())
    }
}
