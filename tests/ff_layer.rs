//! One FF layer alone, driven packet by packet (no threads): the maths the paper states.

use ffstream::ff::goodness::Goodness;
use ffstream::ff::optim::{Rule, Schedule};
use ffstream::packet::{Packet, Purpose};
use ffstream::rng::Rng;
use ffstream::stage::{FfDense, FfDenseConfig, FfSettings, Stage};
use ndarray::Array2;

fn layer(inputs: usize, units: usize, peer: f32, lr: f32, seed: u64) -> FfDense {
    layer_with_threshold(inputs, units, peer, lr, seed, None)
}

fn layer_with_threshold(inputs: usize, units: usize, peer: f32, lr: f32, seed: u64, threshold: Option<f32>) -> FfDense {
    layer_with_rule(inputs, units, peer, lr, seed, threshold, Rule::Matlab)
}

fn layer_with_rule(
    inputs: usize,
    units: usize,
    peer: f32,
    lr: f32,
    seed: u64,
    threshold: Option<f32>,
    rule: Rule,
) -> FfDense {
    let ff = FfSettings {
        goodness: Goodness::SumSquares,
        threshold,
        temperature: 1.0,
        peer_normalization: peer,
        rule,
        lr,
        weight_cost: 0.0,
        schedule: Schedule::Constant,
        epochs: 1,
        counts_for_goodness: true,
        feeds_readout: false,
        seed,
        threads: 1,
    };
    FfDenseConfig { name: "layer1".into(), layer: 1, inputs, units, ff }.build()
}

fn packet(x: Array2<f32>, positives: usize, negatives: usize, purpose: Purpose) -> Packet {
    let rows = x.nrows();
    Packet { positives, negatives, embedded: vec![0; rows], ..Packet::new(0, 1, purpose, x) }
}

fn random_rows(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut rng = Rng::new(seed);
    Array2::from_shape_simple_fn((rows, cols), || rng.normal().abs())
}

#[test]
fn normalization_hides_the_previous_layers_goodness() {
    // Scaling a layer's input (the previous layer's activities) by any factor changes that
    // layer's goodness by the square of the factor, but not what this layer computes.
    let x = random_rows(6, 20, 1);
    let mut a = layer(20, 12, 0.0, 0.01, 3);
    let mut b = layer(20, 12, 0.0, 0.01, 3);
    let pa = a.step(packet(x.clone(), 0, 0, Purpose::Validate)).unwrap();
    let pb = b.step(packet(&x * 37.5, 0, 0, Purpose::Validate)).unwrap();
    for (u, v) in pa.x.iter().zip(pb.x.iter()) {
        assert!((u - v).abs() <= 1e-5 * (1.0 + u.abs()), "{u} vs {v}");
    }
    assert!(pa.goodness.iter().zip(&pb.goodness).all(|(g, h)| (g - h).abs() <= 1e-3 * (1.0 + g)));
}

#[test]
fn a_positive_step_raises_goodness_and_a_negative_step_lowers_it() {
    for (positives, negatives, sign) in [(1, 0, 1.0f32), (0, 1, -1.0)] {
        let x = random_rows(1, 30, 5);
        // θ = 2 sits near this layer's initial goodness, where the logistic is not saturated.
        let mut l = layer_with_threshold(30, 25, 0.0, 0.05, 9, Some(2.0));
        let before = l.step(packet(x.clone(), 0, 0, Purpose::Validate)).unwrap().goodness[0];
        assert!((0.5..8.0).contains(&before), "goodness {before} is far from the threshold");
        for _ in 0..5 {
            l.step(packet(x.clone(), positives, negatives, Purpose::Train)).unwrap();
        }
        let after = l.step(packet(x.clone(), 0, 0, Purpose::Validate)).unwrap().goodness[0];
        assert!(sign * (after - before) > 0.0, "sign {sign}: goodness {before} -> {after}");
    }
}

#[test]
fn evaluation_packets_never_change_the_weights() {
    let mut l = layer(10, 8, 0.03, 0.1, 1);
    let w = l.weights().clone();
    for purpose in [Purpose::Validate, Purpose::Test, Purpose::TrainEval, Purpose::Predict] {
        l.step(packet(random_rows(4, 10, 2), 2, 2, purpose)).unwrap();
    }
    assert_eq!(&w, l.weights());
}

#[test]
fn the_matlab_update_is_the_gradient_of_the_logistic_loss_up_to_two_over_t() {
    // One step from zero velocity with the Matlab rule and no weight cost or peer term:
    // ΔW = ε·0.1·(1/cases)·x̂ᵀD, with D the Matlab direction = (T/2)·∂ℓ/∂z. So ΔW must equal
    // ε·0.1·(1/cases)·(T/2)·∂L/∂W, L the summed log-likelihood, checked by finite differences.
    let (inputs, units) = (7, 5);
    let x = random_rows(2, inputs, 17);
    let (eps, cases) = (0.3f32, 1.0f32);
    let mut l = layer(inputs, units, 0.0, eps, 4);
    let w0 = l.weights().clone();
    let objective = *l.objective();
    // Raise θ so the rows sit in the logistic's unsaturated range.
    let mut xn = x.clone();
    ffstream::ff::normalize::normalize_rows_in_place(&mut xn);
    let loglik = |w: &Array2<f32>| -> f64 {
        let z = xn.dot(w); // bias is zero at init
        (0..2)
            .map(|r| {
                let y: Vec<f32> = z.row(r).iter().map(|v| v.max(0.0)).collect();
                let g = objective.goodness.of(&y);
                let pol = if r == 0 {
                    ffstream::ff::objective::Polarity::Positive
                } else {
                    ffstream::ff::objective::Polarity::Negative
                };
                objective.log_likelihood(g, pol) as f64
            })
            .sum()
    };
    l.step(packet(x.clone(), 1, 1, Purpose::Train)).unwrap();
    let dw = l.weights() - &w0;
    let h = 1e-3f32;
    let mut checked = 0;
    for i in 0..inputs {
        for j in 0..units {
            let mut up = w0.clone();
            up[[i, j]] += h;
            let mut down = w0.clone();
            down[[i, j]] -= h;
            let numeric = (loglik(&up) - loglik(&down)) / (2.0 * h as f64);
            let expected = eps as f64 * 0.1 / cases as f64 * (objective.temperature as f64 / 2.0) * numeric;
            assert!(
                (dw[[i, j]] as f64 - expected).abs() <= 1e-3 * expected.abs().max(1e-3),
                "w[{i},{j}]: update {} vs expected {expected}",
                dw[[i, j]]
            );
            checked += (numeric.abs() > 1e-4) as usize;
        }
    }
    assert!(checked > inputs * units / 3, "too few non-zero gradients ({checked}) to mean anything");
}

#[test]
fn a_wrong_width_is_an_error_that_names_the_stage() {
    let mut l = layer(10, 4, 0.0, 0.1, 1);
    let err = l.step(packet(random_rows(2, 11, 1), 1, 1, Purpose::Train)).unwrap_err().to_string();
    assert!(err.contains("layer1") && err.contains("11") && err.contains("10"), "{err}");
}

#[test]
fn one_step_scales_every_active_unit_alike_so_the_next_layer_sees_no_change() {
    // Paper §7 ("learning fast and slow", PAPER.md E9): for a single normalized input, an FF
    // step changes each active unit's total input in proportion to its activity, so the
    // normalized output the next layer reads is unchanged while the goodness moves.
    let x = random_rows(1, 40, 21);
    let mut l = layer_with_rule(40, 30, 0.0, 0.02, 8, Some(40.0), Rule::Sgd { momentum: 0.0 });
    let before = l.step(packet(x.clone(), 0, 0, Purpose::Validate)).unwrap();
    l.step(packet(x.clone(), 1, 0, Purpose::Train)).unwrap();
    let after = l.step(packet(x.clone(), 0, 0, Purpose::Validate)).unwrap();
    assert!(after.goodness[0] > before.goodness[0] * 1.01, "{} -> {}", before.goodness[0], after.goodness[0]);
    let norm = |p: &Packet| ffstream::ff::normalize::normalize_rows(&p.x.view());
    let (a, b) = (norm(&before), norm(&after));
    assert!(before.x.iter().filter(|&&v| v > 0.0).count() > 5, "too few active units to mean anything");
    for (u, v) in a.iter().zip(b.iter()) {
        assert!((u - v).abs() < 1e-4, "normalized output moved: {u} -> {v}");
    }
}
