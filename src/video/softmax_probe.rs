//! The softmax readout on frozen features (paper §3.2): after an unsupervised net has learned,
//! a linear softmax is trained with the labels on the normalized activities of some of its
//! layers, and the FF layers are not changed.
//!
//! The paper gives neither its optimizer nor its epochs. Ours is the readout of the supervised
//! sink ([`crate::sink::Readout`]: Matlab's smoothed gradient, weights from zero), trained on the
//! training split in a fresh order every epoch; after every epoch it is scored on the validation
//! split, the epoch with the lowest validation error is kept, and only that one is scored on the
//! test split, once.

use ndarray::{s, Array2};
use serde::Serialize;

pub use crate::config::SoftmaxProbeSettings;
use crate::ff::optim::{Rule, Schedule};
use crate::rng::Rng;
use crate::sink::{argmax, Readout, ReadoutConfig};

/// Rows of features in blocks (one per layer read, each `(rows, units)`) and their classes.
pub struct Features<'a> {
    /// The blocks, side by side.
    pub blocks: Vec<&'a Array2<f32>>,
    /// One class per row.
    pub labels: &'a [u8],
}

impl Features<'_> {
    fn rows(&self) -> usize {
        self.labels.len()
    }

    fn width(&self) -> usize {
        self.blocks.iter().map(|b| b.ncols()).sum()
    }

    /// Rows `range` of every block.
    fn slice(&self, range: std::ops::Range<usize>) -> Vec<Array2<f32>> {
        self.blocks.iter().map(|b| b.slice(s![range.clone(), ..]).to_owned()).collect()
    }

    /// Rows `picked` of every block.
    fn gather(&self, picked: &[usize]) -> Vec<Array2<f32>> {
        self.blocks
            .iter()
            .map(|b| Array2::from_shape_fn((picked.len(), b.ncols()), |(r, c)| b[[picked[r], c]]))
            .collect()
    }
}

/// What one readout reached.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SoftmaxFit {
    /// Validation error (percent) after every epoch.
    pub validation_pct_by_epoch: Vec<f64>,
    /// The epoch kept (1-based).
    pub best_epoch: u32,
    /// Its validation error, percent.
    pub validation_pct: f64,
    /// Its test error, percent: the only time the test split is read.
    pub test_pct: f64,
}

/// Error (percent) of `readout` on `data`.
fn error_pct(readout: &Readout, data: &Features<'_>) -> f64 {
    let mut wrong = 0usize;
    for start in (0..data.rows()).step_by(1000) {
        let end = (start + 1000).min(data.rows());
        let logits = readout.logits(&data.slice(start..end));
        wrong += logits
            .outer_iter()
            .zip(&data.labels[start..end])
            .filter(|(row, &t)| argmax(row.iter().copied()) != t as usize)
            .count();
    }
    100.0 * wrong as f64 / data.rows().max(1) as f64
}

/// Trains a softmax on `train`, keeps the epoch best on `validation`, and scores it on `test`.
pub fn fit(
    settings: &SoftmaxProbeSettings,
    classes: usize,
    seed: u64,
    train: &Features<'_>,
    validation: &Features<'_>,
    test: &Features<'_>,
) -> SoftmaxFit {
    let mut readout = Readout::new(ReadoutConfig {
        features: train.width(),
        classes,
        rule: Rule::Matlab,
        lr: settings.lr,
        weight_cost: settings.weight_cost,
        schedule: Schedule::Matlab,
        epochs: settings.epochs,
    });
    let mut curve = Vec::new();
    let mut best: Option<(u32, f64, crate::packet::StageState)> = None;
    let mut order: Vec<usize> = (0..train.rows()).collect();
    for epoch in 1..=settings.epochs.max(1) {
        Rng::derive(seed, "softmax_probe.order", epoch as u64).shuffle(&mut order);
        for picked in order.chunks(settings.batch.max(1)) {
            let blocks = train.gather(picked);
            let truth: Vec<u8> = picked.iter().map(|&i| train.labels[i]).collect();
            let logits = readout.logits(&blocks);
            readout.learn(&blocks, &logits, &truth, epoch);
        }
        let pct = error_pct(&readout, validation);
        curve.push(pct);
        if best.as_ref().is_none_or(|(_, b, _)| pct < *b) {
            best = Some((epoch, pct, readout.snapshot()));
        }
    }
    // Invariant: at least one epoch ran, so a best one exists, and its snapshot fits.
    let (best_epoch, validation_pct, state) = best.expect("one epoch ran");
    readout.restore(&state).expect("the readout's own snapshot");
    SoftmaxFit { validation_pct_by_epoch: curve, best_epoch, validation_pct, test_pct: error_pct(&readout, test) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two classes apart along a line (beside a noise feature): the readout must separate
    /// them, and a readout on the noise alone must not.
    #[test]
    fn the_softmax_learns_a_separable_problem_and_not_noise() {
        let mut rng = Rng::derive(7, "test", 0);
        let n = 600;
        let labels: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
        let signal = Array2::from_shape_fn((n, 2), |(r, c)| {
            let sign = if labels[r] == 1 { 1.0 } else { -1.0 };
            sign * (1.0 + c as f32) + 0.3 * (rng.below(1000) as f32 / 1000.0 - 0.5)
        });
        let noise = Array2::from_shape_fn((n, 3), |_| rng.below(1000) as f32 / 1000.0);
        let settings = SoftmaxProbeSettings { epochs: 5, ..Default::default() };
        let cut = |blocks: &[&Array2<f32>], range: std::ops::Range<usize>| -> Vec<Array2<f32>> {
            blocks.iter().map(|b| b.slice(s![range.clone(), ..]).to_owned()).collect()
        };
        for (blocks, separable) in [(vec![&signal, &noise], true), (vec![&noise], false)] {
            let (train, val, test) = (cut(&blocks, 0..400), cut(&blocks, 400..500), cut(&blocks, 500..600));
            let fit = fit(
                &settings,
                2,
                1,
                &Features { blocks: train.iter().collect(), labels: &labels[0..400] },
                &Features { blocks: val.iter().collect(), labels: &labels[400..500] },
                &Features { blocks: test.iter().collect(), labels: &labels[500..600] },
            );
            assert_eq!(fit.validation_pct_by_epoch.len(), 5);
            assert!(fit.validation_pct_by_epoch[fit.best_epoch as usize - 1] == fit.validation_pct);
            if separable {
                assert!(fit.test_pct < 2.0, "{fit:?}");
            } else {
                assert!(fit.test_pct > 30.0, "{fit:?}");
            }
        }
    }
}
