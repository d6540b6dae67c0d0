//! Optimizers and the learning-rate schedule, each owned by one parameter of one stage.
//!
//! All rules *ascend* the objective (FF maximizes log-probability), as Matlab does:
//!
//! - `Matlab` (Hinton's `ffnew.m`): `v ← 0.9·v + 0.1·∇/B`, then `W ← W + gain·ε·(v − wc·W)`.
//! - `Sgd`: `v ← μ·v + ∇/B`, then `W ← W + gain·ε·(v − wc·W)`.
//! - `Adam`: the usual bias-corrected moments; weight cost added the same way.
//!
//! The batch gradient is not materialized for the momentum rules: the caller's matrix product
//! writes straight into the velocity with [`ParamOptimizer::gradient_target`]'s factors.

use ndarray::{Array, Dimension, Zip};
use serde::{Deserialize, Serialize};

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Rule {
    /// Hinton's Matlab rule: an exponential moving average of gradients (0.9).
    Matlab,
    /// SGD with heavy-ball momentum.
    Sgd {
        /// μ.
        momentum: f32,
    },
    /// Adam.
    Adam {
        /// β₁.
        beta1: f32,
        /// β₂.
        beta2: f32,
        /// ε in the denominator.
        eps: f32,
    },
}

/// How the learning rate changes over epochs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Constant gain 1.
    Constant,
    /// Matlab: gain 1 for the first half, then `(1 + 2·(E − e)) / E`, linear to ~0 at epoch E.
    #[default]
    Matlab,
    /// Linear from 1 at the first epoch to `1/E` at the last, `(E − e + 1) / E`: every epoch
    /// anneals, for short schedules (the speedrun) where Matlab's constant first half is half the run.
    Linear,
}

impl Schedule {
    /// The gain for 1-based `epoch` of `epochs`.
    pub fn gain(self, epoch: u32, epochs: u32) -> f32 {
        match self {
            Schedule::Constant => 1.0,
            Schedule::Matlab => {
                if 2 * epoch <= epochs {
                    1.0
                } else {
                    (1.0 + 2.0 * (epochs as f32 - epoch as f32)) / epochs as f32
                }
            }
            Schedule::Linear => (epochs as f32 - epoch.min(epochs) as f32 + 1.0) / epochs.max(1) as f32,
        }
    }
}

/// The optimizer state of one parameter tensor.
#[derive(Clone, Debug)]
pub struct ParamOptimizer<D: Dimension> {
    rule: Rule,
    lr: f32,
    weight_cost: f32,
    /// Velocity (momentum rules) or the raw batch gradient (Adam).
    buffer: Array<f32, D>,
    /// Adam's moments; empty for the other rules.
    m: Option<Array<f32, D>>,
    v: Option<Array<f32, D>>,
    steps: u64,
}

impl<D: Dimension> ParamOptimizer<D> {
    /// Fresh state for a parameter of shape `shape`.
    pub fn new(rule: Rule, lr: f32, weight_cost: f32, shape: D) -> Self {
        let zeros = || Array::zeros(shape.clone());
        let adam = matches!(rule, Rule::Adam { .. });
        ParamOptimizer { rule, lr, weight_cost, buffer: zeros(), m: adam.then(zeros), v: adam.then(zeros), steps: 0 }
    }

    /// `(alpha, beta)` for accumulating a batch's summed gradient `S` (over `rows` rows) into
    /// [`Self::buffer_mut`] as `buffer ← beta·buffer + alpha·S`.
    pub fn gradient_target(&self, rows: usize) -> (f32, f32) {
        let rows = rows.max(1) as f32;
        match self.rule {
            Rule::Matlab => (0.1 / rows, 0.9),
            Rule::Sgd { momentum } => (1.0 / rows, momentum),
            Rule::Adam { .. } => (1.0 / rows, 0.0),
        }
    }

    /// The buffer the batch gradient is accumulated into.
    pub fn buffer_mut(&mut self) -> &mut Array<f32, D> {
        &mut self.buffer
    }

    /// Applies one step to `param` with learning-rate gain `gain`.
    pub fn apply(&mut self, param: &mut Array<f32, D>, gain: f32) {
        self.steps += 1;
        let step = gain * self.lr;
        let wc = self.weight_cost;
        match self.rule {
            Rule::Matlab | Rule::Sgd { .. } => {
                Zip::from(param).and(&self.buffer).for_each(|w, &v| *w += step * (v - wc * *w));
            }
            Rule::Adam { beta1, beta2, eps } => {
                // Invariant: `new` makes both moments for the Adam rule, and the rule never changes.
                let (m, v) = (self.m.as_mut().expect("adam m"), self.v.as_mut().expect("adam v"));
                let c1 = 1.0 - beta1.powi(self.steps.min(i32::MAX as u64) as i32);
                let c2 = 1.0 - beta2.powi(self.steps.min(i32::MAX as u64) as i32);
                Zip::from(param).and(&self.buffer).and(m).and(v).for_each(|w, &g, m, v| {
                    *m = beta1 * *m + (1.0 - beta1) * g;
                    *v = beta2 * *v + (1.0 - beta2) * g * g;
                    let update = (*m / c1) / ((*v / c2).sqrt() + eps);
                    *w += step * (update - wc * *w);
                });
            }
        }
    }

    /// The state tensors by name, for checkpoints.
    pub fn state(&self) -> Vec<(&'static str, &Array<f32, D>)> {
        let mut out = vec![("buffer", &self.buffer)];
        if let (Some(m), Some(v)) = (&self.m, &self.v) {
            out.push(("adam_m", m));
            out.push(("adam_v", v));
        }
        out
    }

    /// Number of steps applied (Adam's bias correction needs it after a resume).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Restores the state written by [`Self::state`].
    pub fn restore(&mut self, name: &str, values: &[f32], steps: u64) -> bool {
        let target = match name {
            "buffer" => Some(&mut self.buffer),
            "adam_m" => self.m.as_mut(),
            "adam_v" => self.v.as_mut(),
            _ => None,
        };
        match target {
            Some(t) if t.len() == values.len() => {
                t.iter_mut().zip(values).for_each(|(a, &b)| *a = b);
                self.steps = steps;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Ix1};

    #[test]
    fn matlab_schedule_halves_then_falls_linearly() {
        let s = Schedule::Matlab;
        assert_eq!(s.gain(1, 100), 1.0);
        assert_eq!(s.gain(50, 100), 1.0);
        assert!((s.gain(51, 100) - 0.99).abs() < 1e-6);
        assert!((s.gain(100, 100) - 0.01).abs() < 1e-6);
        assert_eq!(Schedule::Constant.gain(99, 100), 1.0);
    }

    #[test]
    fn linear_schedule_anneals_from_the_first_epoch() {
        let s = Schedule::Linear;
        assert_eq!(s.gain(1, 26), 1.0);
        assert!((s.gain(2, 26) - 25.0 / 26.0).abs() < 1e-6);
        assert!((s.gain(26, 26) - 1.0 / 26.0).abs() < 1e-6);
        // Past the end (a resumed run asked for more epochs) the gain stays positive.
        assert!(s.gain(30, 26) > 0.0);
    }

    #[test]
    fn matlab_rule_is_an_ema_of_gradients_with_weight_cost() {
        let mut opt = ParamOptimizer::<Ix1>::new(Rule::Matlab, 0.5, 0.1, Ix1(2));
        let mut w = array![1.0f32, -2.0];
        let (alpha, beta) = opt.gradient_target(4);
        let summed = array![8.0f32, 4.0];
        let buf = opt.buffer_mut();
        *buf = &*buf * beta + &(summed * alpha);
        opt.apply(&mut w, 1.0);
        // v = 0.1 * [2, 1]; w += 0.5 * (v - 0.1 w)
        assert!((w[0] - (1.0 + 0.5 * (0.2 - 0.1))).abs() < 1e-6);
        assert!((w[1] - (-2.0 + 0.5 * (0.1 + 0.2))).abs() < 1e-6);
    }

    #[test]
    fn adam_first_step_moves_by_lr_in_the_gradient_sign() {
        let rule = Rule::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 };
        let mut opt = ParamOptimizer::<Ix1>::new(rule, 0.01, 0.0, Ix1(2));
        let mut w = array![0.0f32, 0.0];
        *opt.buffer_mut() = array![3.0f32, -0.5];
        opt.apply(&mut w, 1.0);
        assert!((w[0] - 0.01).abs() < 1e-5 && (w[1] + 0.01).abs() < 1e-5);
    }
}
