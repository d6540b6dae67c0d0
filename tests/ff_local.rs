//! The locally connected stage is a dense FF layer whose weights are masked to the fields:
//! driven with the same packets, the two make the same activities and learn the same weights.

use ffstream::ff::fields::{Fields, MapShape};
use ffstream::ff::optim::Rule;
use ffstream::packet::{Packet, Purpose, StageState};
use ffstream::rng::Rng;
use ffstream::stage::{FfDenseConfig, FfLocalConfig, FfSettings, Stage};
use ndarray::Array2;

mod common;

fn settings(threads: usize) -> FfSettings {
    common::ff_settings(0.05, 7, threads)
}

fn packet(x: Array2<f32>, positives: usize, negatives: usize) -> Packet {
    let rows = x.nrows();
    Packet { positives, negatives, embedded: vec![0; rows], ..Packet::new(0, 1, Purpose::Train, x) }
}

fn rows(n: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut rng = Rng::new(seed);
    Array2::from_shape_simple_fn((n, cols), || rng.normal().abs())
}

/// The dense layer's state with its weights set to `weights` and everything else kept.
fn with_weights(state: StageState, weights: &Array2<f32>) -> StageState {
    let mut state = state;
    for (name, _, values) in state.tensors.iter_mut() {
        if name == "layer1.weights" {
            *values = weights.iter().copied().collect();
        }
    }
    state
}

fn close(a: &Array2<f32>, b: &Array2<f32>, what: &str) {
    assert_eq!(a.dim(), b.dim(), "{what}");
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(worst <= 1e-5 * scale, "{what}: differ by {worst} (scale {scale})");
}

fn equals_masked_dense(fields: Fields, channels: usize, threads: usize) {
    let mut local =
        FfLocalConfig { name: "layer1".into(), layer: 1, fields, channels, shared: false, ff: settings(threads) }
            .build()
            .unwrap();
    let (inputs, units) = (fields.input.len(), local.output().len());
    let mut dense = FfDenseConfig { name: "layer1".into(), layer: 1, inputs, units, ff: settings(1) }.build();
    let start = local.dense_weights();
    let mask = start.mapv(|w| if w != 0.0 { 1.0 } else { 0.0 });
    dense.restore(&with_weights(dense.snapshot(), &start)).unwrap();
    for step in 0..6 {
        // Positives, negatives, and a neutral row that does not learn.
        let x = rows(7, inputs, 100 + step);
        let (a, b) = (local.process(packet(x.clone(), 3, 3)).unwrap(), dense.process(packet(x, 3, 3)).unwrap());
        close(&a.x, &b.x, &format!("activities at step {step}"));
        for (g, h) in a.goodness.iter().zip(&b.goodness) {
            assert!((g - h).abs() <= 1e-4 * g.abs().max(1.0), "goodness at step {step}: {g} vs {h}");
        }
        local.learn();
        dense.learn();
        // The mask: a dense layer only ever keeps the weights inside the fields.
        let masked = dense.weights() * &mask;
        dense.restore(&with_weights(dense.snapshot(), &masked)).unwrap();
        close(&local.dense_weights(), dense.weights(), &format!("weights after step {step}"));
    }
    assert_ne!(local.dense_weights(), start, "the layer learned nothing");
}

#[test]
fn a_local_layer_is_a_dense_layer_masked_to_its_fields() {
    // Strided fields that run off every border of a small two-channel map.
    equals_masked_dense(Fields { input: MapShape::new(6, 7, 2), size: 3, stride: 2, padding: 1 }, 3, 1);
    // Fields wholly on the map (the paper's E2 layers look like this), on a pool of 2 threads.
    equals_masked_dense(Fields { input: MapShape::new(5, 5, 3), size: 2, stride: 1, padding: 0 }, 4, 2);
    // Many units a position (the gemm path), off-map fields, on a pool of 2.
    equals_masked_dense(Fields { input: MapShape::new(6, 6, 1), size: 4, stride: 2, padding: 1 }, 16, 2);
}

#[test]
fn a_field_that_does_not_fit_is_an_error_naming_the_stage() {
    let fields = Fields { input: MapShape::new(4, 4, 1), size: 5, stride: 1, padding: 0 };
    let err = FfLocalConfig { name: "layer2".into(), layer: 2, fields, channels: 2, shared: false, ff: settings(1) }
        .build()
        .err()
        .expect("a 5x5 field on a 4x4 map");
    assert!(err.to_string().contains("layer2") && err.to_string().contains("4x4x1"), "{err}");
}

#[test]
fn a_snapshot_restores_the_same_layer() {
    let fields = Fields { input: MapShape::new(6, 6, 1), size: 3, stride: 3, padding: 0 };
    let build = || {
        FfLocalConfig { name: "layer1".into(), layer: 1, fields, channels: 2, shared: false, ff: settings(1) }
            .build()
            .unwrap()
    };
    let mut a = build();
    a.process(packet(rows(4, 36, 1), 2, 2)).unwrap();
    a.learn();
    let mut b = build();
    b.restore(&a.snapshot()).unwrap();
    let x = rows(3, 36, 2);
    assert_eq!(a.process(packet(x.clone(), 0, 0)).unwrap().x, b.process(packet(x, 0, 0)).unwrap().x);
}

/// `ff_conv` is `ff_local` with its weights tied across positions: with a local layer's
/// weights set to the shared ones, both make the same activities, and one plain SGD step of the
/// shared weights is the mean of the local layer's steps over the positions.
#[test]
fn a_conv_layer_is_a_local_layer_with_tied_weights() {
    let fields = Fields { input: MapShape::new(7, 6, 2), size: 3, stride: 2, padding: 1 };
    let ff = || FfSettings { rule: Rule::Sgd { momentum: 0.0 }, weight_cost: 0.0, ..settings(1) };
    let build = |shared| {
        FfLocalConfig { name: "layer1".into(), layer: 1, fields, channels: 3, shared, ff: ff() }.build().unwrap()
    };
    let (mut conv, mut local) = (build(true), build(false));
    let positions = local.output().positions();
    let shared = conv.weights().clone();
    let mut tied = Array2::zeros(local.weights().dim());
    for p in 0..positions {
        tied.slice_mut(ndarray::s![p * 3..(p + 1) * 3, ..]).assign(&shared);
    }
    // Off-map weights of a local unit stay zero; the tied copy keeps only its on-map ones.
    let on_map = local.weights().mapv(|w| if w != 0.0 { 1.0 } else { 0.0 });
    let tied = &tied * &on_map;
    local.restore(&with_weights(local.snapshot(), &tied)).unwrap();
    let x = rows(6, fields.input.len(), 9);
    let (a, b) = (conv.process(packet(x.clone(), 3, 3)).unwrap(), local.process(packet(x, 3, 3)).unwrap());
    close(&a.x, &b.x, "activities");
    conv.learn();
    local.learn();
    let local_steps = local.weights() - &tied;
    let mut mean = Array2::<f32>::zeros(shared.dim());
    for p in 0..positions {
        mean += &local_steps.slice(ndarray::s![p * 3..(p + 1) * 3, ..]);
    }
    mean /= positions as f32;
    let conv_step = conv.weights() - &shared;
    close(&conv_step, &mean, "the shared step");
    assert!(conv_step.iter().any(|v| *v != 0.0), "the conv layer learned nothing");
}
