//! What every kind of FF stage shares: its objective and optimizer settings, and Matlab's
//! peer normalization. A stage kind adds only its own connectivity (dense, recurrent, ...).

use ndarray::{s, Array1, Array2, Axis};

use crate::ff::goodness::Goodness;
use crate::ff::objective::{Objective, Polarity};
use crate::ff::optim::{Rule, Schedule};

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
/// the ReLU, so it can revive units that are always off.
pub fn peer_normalize(
    means: &mut Array1<f32>,
    lambda: f32,
    y: &Array2<f32>,
    positives: usize,
    direction: &mut Array2<f32>,
) {
    if lambda <= 0.0 || positives == 0 {
        return;
    }
    let Some(batch_mean) = y.slice(s![..positives, ..]).mean_axis(Axis(0)) else { return };
    means.zip_mut_with(&batch_mean, |m, &b| *m = 0.9 * *m + 0.1 * b);
    let layer_mean = means.mean().unwrap_or(0.0);
    let push = means.mapv(|m| lambda * (layer_mean - m));
    direction.slice_mut(s![..positives, ..]).axis_iter_mut(Axis(0)).for_each(|mut row| row += &push);
}

/// Each row's goodness of the `(rows, units)` activities `y`.
pub fn row_goodness(objective: &Objective, y: &Array2<f32>) -> Vec<f32> {
    y.axis_iter(Axis(0))
        // Invariant: rows of a stage's own standard-layout activities are contiguous.
        .map(|row| objective.goodness.of(row.as_slice().expect("activities are contiguous")))
        .collect()
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
    let mut direction = Array2::<f32>::zeros((positives + negatives, y.ncols()));
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
    direction
}
