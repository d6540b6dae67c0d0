//! Negatives: negative labels for supervised FF (a wrong label that is never the true one),
//! and the kinds of negatives a frame stream makes from real windows ([`NegativeKind`], made
//! in `crate::video::negatives`).
//!
//! - [`wrong_label`]: uniform over the other nine classes.
//! - [`hard_label`]: Matlab's hard negatives: a wrong label drawn in proportion to the readout's
//!   softmax on the neutral-label pass, with the true label excluded (Matlab adds −1000 to its
//!   logit; here its probability is set to exactly zero, the same thing without the rounding).

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// How negatives are made from real windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativeKind {
    /// Blurred random masks mixing two windows (paper §3.1).
    #[default]
    Hybrid,
    /// The same masks, with the partner window first moved so that its centre of brightness
    /// falls on the real window's (not in the paper, whose MNIST digits are all centred): on a
    /// canvas where a digit moves, two digits are mixed where they overlap, as the paper's
    /// hybrids are, instead of two half digits far apart.
    AlignedHybrid,
    /// The window's frames in a shuffled order.
    Shuffle,
    /// The start of one window, the end of another.
    Cut,
}

/// A label drawn uniformly from the `classes − 1` labels other than `truth`.
pub fn wrong_label(truth: u8, classes: usize, rng: &mut Rng) -> u8 {
    // Shift by 1..classes so the true label can never come out.
    ((truth as usize + 1 + rng.below(classes - 1)) % classes) as u8
}

/// A wrong label drawn from `softmax(logits)` restricted to the labels other than `truth`.
///
/// Falls back to [`wrong_label`] if the other labels' probabilities underflow to zero.
pub fn hard_label(logits: &[f32], truth: u8, rng: &mut Rng) -> u8 {
    draw(logits, Some(truth), rng).unwrap_or_else(|| wrong_label(truth, logits.len(), rng))
}

/// A label drawn from `softmax(logits)`: the network's own guess at what comes next, as a
/// generator of sequences samples it.
pub fn sampled_label(logits: &[f32], rng: &mut Rng) -> u8 {
    draw(logits, None, rng).unwrap_or_else(|| rng.below(logits.len()) as u8)
}

/// A draw from `softmax(logits)` without `exclude`; `None` when nothing has weight.
fn draw(logits: &[f32], exclude: Option<u8>, rng: &mut Rng) -> Option<u8> {
    let classes = logits.len();
    let allowed = |j: &usize| exclude != Some(*j as u8);
    let max = (0..classes).filter(allowed).map(|j| logits[j]).fold(f32::NEG_INFINITY, f32::max);
    // The weights are computed twice (summed, then walked) rather than kept: a draw per row of
    // every training packet allocates nothing, and the values are the same both times.
    let weight = |j: usize| if allowed(&j) { ((logits[j] - max) as f64).exp() } else { 0.0 };
    let total: f64 = (0..classes).map(weight).sum();
    if !(total.is_finite() && total > 0.0) {
        return None;
    }
    let mut target = rng.uniform_f64() * total;
    for j in 0..classes {
        let w = weight(j);
        if w > 0.0 {
            if target < w {
                return Some(j as u8);
            }
            target -= w;
        }
    }
    // Rounding left `target` just above the last bucket: take the last allowed label.
    (0..classes).rev().find(allowed).map(|j| j as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_negative_carries_its_true_label() {
        let mut rng = Rng::new(11);
        for trial in 0..20_000u32 {
            let truth = (trial % 10) as u8;
            assert_ne!(wrong_label(truth, 10, &mut rng), truth);
            // Logits that strongly favour the true label, and random ones.
            let mut logits: Vec<f32> = (0..10).map(|_| rng.normal() * 5.0).collect();
            if trial % 2 == 0 {
                logits[truth as usize] = 1e6;
            }
            assert_ne!(hard_label(&logits, truth, &mut rng), truth);
        }
    }

    #[test]
    fn hard_labels_follow_the_softmax_of_the_others() {
        let mut rng = Rng::new(5);
        let mut logits = [0.0f32; 10];
        logits[3] = (3.0f32).ln(); // three times as likely as each of the other wrong labels
        logits[0] = 50.0; // the true label: must be ignored entirely
        let n = 90_000;
        let mut counts = [0usize; 10];
        (0..n).for_each(|_| counts[hard_label(&logits, 0, &mut rng) as usize] += 1);
        assert_eq!(counts[0], 0);
        // 8 labels of weight 1 and one of weight 3: label 3 gets 3/11.
        let share = counts[3] as f64 / n as f64;
        assert!((share - 3.0 / 11.0).abs() < 0.01, "share {share}");
        let share1 = counts[1] as f64 / n as f64;
        assert!((share1 - 1.0 / 11.0).abs() < 0.01, "share {share1}");
    }

    #[test]
    fn sampled_labels_follow_the_whole_softmax() {
        let mut rng = Rng::new(6);
        let logits = [(2.0f32).ln(), 0.0, 0.0];
        let n = 60_000;
        let mut counts = [0usize; 3];
        (0..n).for_each(|_| counts[sampled_label(&logits, &mut rng) as usize] += 1);
        // Weights 2, 1, 1: the first label half the time, the truth is not excluded.
        let share = counts[0] as f64 / n as f64;
        assert!((share - 0.5).abs() < 0.01, "share {share}");
        assert!(counts[1] > 0 && counts[2] > 0);
    }
}
