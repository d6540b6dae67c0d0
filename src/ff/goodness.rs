//! Goodness: how "positive" a layer finds its input, computed from its ReLU activities.
//!
//! The paper's goodness is the sum of squared activities (§2); its "min ssq" variant (§4,
//! CIFAR) uses the negative, so positive data must give *low* activity. The mean variants divide
//! by the number of units, which is what popular PyTorch ports use (with θ = 2, not Hinton's).
//! [`Goodness::SumActivities`] is a different function, not a rescaling: `G = Σ y` (the L1 norm
//! of the ReLU activities), whose gradient does not grow with the activity; §5 of the paper asks
//! whether another goodness would let the positive and negative passes be separated in time.

use serde::{Deserialize, Serialize};

/// Which goodness function a layer uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goodness {
    /// `G = Σ y²` (paper §2, Matlab).
    #[default]
    SumSquares,
    /// `G = -Σ y²` (paper §4 "min ssq").
    NegSumSquares,
    /// `G = mean(y²)`.
    MeanSquares,
    /// `G = -mean(y²)`.
    NegMeanSquares,
    /// `G = Σ y` (activities are ReLUs, so this is their L1 norm).
    SumActivities,
}

impl Goodness {
    /// `(sign, scale)` such that `G = sign * scale * Σ f(y)`, with `f(y) = y²` ([`Self::linear`]:
    /// `f(y) = y`).
    pub fn factors(self, units: usize) -> (f32, f32) {
        let mean = 1.0 / units.max(1) as f32;
        match self {
            Goodness::SumSquares | Goodness::SumActivities => (1.0, 1.0),
            Goodness::NegSumSquares => (-1.0, 1.0),
            Goodness::MeanSquares => (1.0, mean),
            Goodness::NegMeanSquares => (-1.0, mean),
        }
    }

    /// True when `G` sums the activities themselves rather than their squares.
    pub fn linear(self) -> bool {
        self == Goodness::SumActivities
    }

    /// The default threshold θ: Matlab's "number of units" for the sum, 1 for the mean
    /// (the same mean square per unit), with the sign of the goodness; for the sum of
    /// activities, the number of units (a mean activity of 1).
    pub fn default_threshold(self, units: usize) -> f32 {
        let (sign, scale) = self.factors(units);
        sign * scale * units as f32
    }

    /// The goodness of one row of activities.
    pub fn of(self, activities: &[f32]) -> f32 {
        let (sign, scale) = self.factors(activities.len());
        let total: f32 = if self.linear() { activities.iter().sum() } else { activities.iter().map(|y| y * y).sum() };
        sign * scale * total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_and_thresholds() {
        let y = [1.0f32, 2.0, 0.0, 3.0];
        assert_eq!(Goodness::SumSquares.of(&y), 14.0);
        assert_eq!(Goodness::NegSumSquares.of(&y), -14.0);
        assert_eq!(Goodness::MeanSquares.of(&y), 3.5);
        assert_eq!(Goodness::NegMeanSquares.of(&y), -3.5);
        assert_eq!(Goodness::SumActivities.of(&y), 6.0);
        assert_eq!(Goodness::SumActivities.default_threshold(500), 500.0);
        assert_eq!(Goodness::SumSquares.default_threshold(2000), 2000.0);
        assert_eq!(Goodness::NegSumSquares.default_threshold(1000), -1000.0);
        assert_eq!(Goodness::MeanSquares.default_threshold(2000), 1.0);
    }
}
