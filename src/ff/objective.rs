//! The per-layer logistic objective and the gradient each layer follows (paper §2, eq. 1).
//!
//! `p(positive) = σ((G - θ) / T)`. A layer raises `log p` on positive rows and `log(1 - p)` on
//! negative rows. For a ReLU unit with activity `y = max(0, z)` and `G = s·c·Σy²`:
//!
//! ```text
//! ∂ log p / ∂z_j       =  (1 - p) · 2·s·c·y_j / T        (positive row)
//! ∂ log(1 - p) / ∂z_j  =  -p · 2·s·c·y_j / T            (negative row)
//! ```
//!
//! Hinton's Matlab code follows `(1 - p)·y` and `-p·y`: it drops the constant `2/T` (with its
//! T = 1, a factor of 2 the learning rate absorbs), and the ReLU derivative is implicit because
//! `y = 0` where the unit is off. [`Objective::direction`] computes exactly that Matlab form;
//! the tests check it against finite differences of the true loss, times `2/T`.

use crate::ff::goodness::Goodness;

/// `σ(x) = 1 / (1 + e^-x)`, stable for large |x|.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Whether a row is data the layer should find good or bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polarity {
    /// Real data: raise the goodness.
    Positive,
    /// Negative data: lower it.
    Negative,
}

/// The logistic objective of one layer.
#[derive(Clone, Copy, Debug)]
pub struct Objective {
    /// The goodness function.
    pub goodness: Goodness,
    /// θ.
    pub threshold: f32,
    /// T, dividing the logit (Matlab `temp`, 1).
    pub temperature: f32,
}

impl Objective {
    /// `p(positive)` for a row with goodness `g`.
    pub fn probability(&self, g: f32) -> f32 {
        sigmoid((g - self.threshold) / self.temperature)
    }

    /// The log-probability of the row's true polarity (the quantity FF ascends).
    pub fn log_likelihood(&self, g: f32, polarity: Polarity) -> f32 {
        let logit = (g - self.threshold) / self.temperature;
        // log σ(x) = -softplus(-x), computed stably.
        let softplus = |x: f32| if x > 20.0 { x } else { x.exp().ln_1p() };
        match polarity {
            Polarity::Positive => -softplus(-logit),
            Polarity::Negative => -softplus(logit),
        }
    }

    /// The Matlab-form ascent direction on the total inputs of one row, written into `out`.
    ///
    /// `out_j = (1 - p)·s·c·y_j` for positives, `-p·s·c·y_j` for negatives; the analytic
    /// gradient of the log-likelihood is this times `2 / T`. For the sum of activities
    /// (`∂G/∂z_j = 1` where the unit is on) `y_j` becomes `½·[y_j > 0]`, so the same `2 / T` holds.
    pub fn direction(&self, activities: &[f32], polarity: Polarity, out: &mut [f32]) -> f32 {
        let g = self.goodness.of(activities);
        self.direction_at(g, activities, polarity, out);
        g
    }

    /// [`Objective::direction`] for a row whose goodness `g` the caller already has.
    pub fn direction_at(&self, g: f32, activities: &[f32], polarity: Polarity, out: &mut [f32]) {
        let (sign, scale) = self.goodness.factors(activities.len());
        let p = self.probability(g);
        let factor = match polarity {
            Polarity::Positive => 1.0 - p,
            Polarity::Negative => -p,
        } * sign
            * scale;
        if self.goodness.linear() {
            for (o, &y) in out.iter_mut().zip(activities) {
                *o = if y > 0.0 { 0.5 * factor } else { 0.0 };
            }
        } else {
            for (o, &y) in out.iter_mut().zip(activities) {
                *o = factor * y;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relu(z: &[f32]) -> Vec<f32> {
        z.iter().map(|v| v.max(0.0)).collect()
    }

    /// Central finite differences of the log-likelihood with respect to the total inputs.
    fn numeric(obj: &Objective, z: &[f32], polarity: Polarity) -> Vec<f64> {
        let ll = |z: &[f32]| obj.log_likelihood(obj.goodness.of(&relu(z)), polarity) as f64;
        (0..z.len())
            .map(|j| {
                let h = 1e-2f32;
                let mut up = z.to_vec();
                up[j] += h;
                let mut down = z.to_vec();
                down[j] -= h;
                (ll(&up) - ll(&down)) / (2.0 * h as f64)
            })
            .collect()
    }

    #[test]
    fn matlab_direction_is_the_analytic_gradient_up_to_two_over_t() {
        let z = [1.3f32, -0.7, 0.9, 2.1, -1.5, 0.4];
        for goodness in [Goodness::SumSquares, Goodness::NegSumSquares, Goodness::MeanSquares, Goodness::SumActivities]
        {
            for temperature in [1.0f32, 2.5] {
                // θ near the goodness of z, where the logistic is not saturated.
                let threshold = goodness.of(&relu(&z)) * 0.9;
                let obj = Objective { goodness, threshold, temperature };
                for polarity in [Polarity::Positive, Polarity::Negative] {
                    let mut dir = vec![0.0; z.len()];
                    obj.direction(&relu(&z), polarity, &mut dir);
                    let want = numeric(&obj, &z, polarity);
                    for j in 0..z.len() {
                        let analytic = dir[j] as f64 * 2.0 / temperature as f64;
                        assert!(
                            (analytic - want[j]).abs() < 2e-3 * (1.0 + want[j].abs()),
                            "{goodness:?} T={temperature} {polarity:?} unit {j}: {analytic} vs {}",
                            want[j]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn sigmoid_is_stable() {
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
    }
}
