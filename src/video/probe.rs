//! Linear probes on frozen stages: how much of the labels each stage's activities make linear.
//!
//! A probe is a ridge regression from a stage's normalized activities to the one-hot labels
//! (two-hot for two digits), scored test-then-train over a labelled stream: the stream is cut
//! into blocks, and block k is predicted by the probe fitted on blocks 0..k−1 before it joins
//! the fit. The error is over blocks 1.., so every scored frame is unseen by its probe. The
//! same procedure runs on the trained net and on a randomly initialized net of the same shape
//! (random ReLU features separate MNIST-like digits well, so only the difference says that FF
//! learned something).
//!
//! Choices: ridge rather than SGD so the probe has one setting and no schedule; `λ` is 1% of
//! the mean diagonal of the Gram matrix (features are RMS-normalized, so this is scale-free);
//! the solve is a Cholesky factorization in f64.

use ndarray::{s, Array2};

use super::Frame;

use crate::data::mnist::CLASSES;
use crate::error::StageError;
use crate::matmul::{gemm, Threads};
use crate::packet::{Observe, Packet, Purpose, NEUTRAL};
use crate::stage::Stage;

/// Blocks the probe stream is cut into (the first only trains).
pub const BLOCKS: usize = 3;
/// Ridge strength relative to the mean diagonal of the Gram matrix.
pub const RIDGE: f64 = 0.01;

/// Rows of `window` consecutive frames of one sequence, with the last frame's labels: what
/// the probes (and the twin beside them) read.
pub fn windows_of(frames: &[Frame], window: usize, center: bool) -> (Array2<f32>, Vec<Vec<u8>>) {
    let mut rows: Vec<f32> = Vec::new();
    let mut labels = Vec::new();
    let mut width = 0;
    let mut windows = super::head::Windows::new(window);
    for frame in frames {
        let Some(span) = windows.push(frame) else { continue };
        for f in span {
            super::head::frame_values(&f.pixels, center, &mut rows);
        }
        width = span.iter().map(|f| f.pixels.len()).sum();
        labels.push(frame.labels.clone());
    }
    let n = labels.len();
    // Invariant: the frames come from one feed, all of its `FrameShape`, so every window has
    // `width` values.
    (Array2::from_shape_vec((n, width), rows).expect("rows of equal width"), labels)
}

/// Each stage's normalized activities for `x` `(rows, inputs)`, without learning, in packets
/// of `chunk` rows. A stage that reads the one above gets its state after every packet (the
/// synchronous d = 1 exchange of a lockstep run), so a recurrent net whose rows are streams
/// side by side (`chunk` = the streams) carries each video's state through its frames.
pub fn stage_features(
    stages: &mut [Box<dyn Stage>],
    x: Array2<f32>,
    chunk: usize,
) -> Result<Vec<Array2<f32>>, StageError> {
    let rows = x.nrows();
    let mut out: Vec<Array2<f32>> = Vec::new();
    for start in (0..rows).step_by(chunk.max(1)) {
        let end = (start + chunk).min(rows);
        let n = end - start;
        let mut packet = Packet {
            positives: 0,
            neutral: n,
            truth: vec![NEUTRAL; n],
            frames: 0,
            observe: Observe::Neutral,
            ..Packet::new(0, 0, Purpose::Test, x.slice(s![start..end, ..]).to_owned())
        };
        for stage in stages.iter_mut() {
            packet = stage.process(packet)?;
        }
        for l in 1..stages.len() {
            if stages[l - 1].reads_above() {
                let above = stages[l].below();
                stages[l - 1].take_above(above);
            }
        }
        if out.is_empty() {
            out = packet.features.iter().map(|f| Array2::zeros((rows, f.ncols()))).collect();
        }
        for (all, block) in out.iter_mut().zip(&packet.features) {
            all.slice_mut(s![start..end, ..]).assign(block);
        }
    }
    Ok(out)
}

/// Each channel's largest value over the positions of `map`: `(rows, map.len())` features
/// → `(rows, map.channels)` (channels-last rows, [`crate::ff::fields`]).
pub fn max_over_positions(features: &Array2<f32>, map: crate::ff::fields::MapShape) -> Array2<f32> {
    let channels = map.channels;
    let mut pooled = Array2::from_elem((features.nrows(), channels), f32::MIN);
    for (row, mut out) in features.outer_iter().zip(pooled.outer_iter_mut()) {
        for (k, &v) in row.iter().enumerate() {
            let c = k % channels;
            out[c] = out[c].max(v);
        }
    }
    pooled
}

/// Test-then-train ridge-probe error (percent) of `features` `(rows, units)` against `labels`
/// (one or two labels per row; with two, the probe's top two classes are compared with the
/// pair, and each digit missed counts half).
pub fn probe_error_pct(features: &Array2<f32>, labels: &[Vec<u8>]) -> f64 {
    let (rows, units) = features.dim();
    let block = rows / BLOCKS;
    let targets = Array2::from_shape_fn((rows, CLASSES), |(r, c)| labels[r].contains(&(c as u8)) as u8 as f32);
    let mut gram = Array2::<f32>::zeros((units, units));
    let mut cross = Array2::<f32>::zeros((units, CLASSES));
    let (mut missed, mut scored) = (0usize, 0usize);
    for b in 0..BLOCKS {
        let range = b * block..if b + 1 == BLOCKS { rows } else { (b + 1) * block };
        let x = features.slice(s![range.clone(), ..]);
        if b > 0 {
            let seen = features.slice(s![..range.start, ..]);
            // Primal (units × units) or dual (rows × rows) form, whichever is smaller: the same
            // ridge solution, at a fraction of the cost for wide inputs such as raw pixels.
            let w = if range.start < units {
                ridge_dual(&seen, &targets.slice(s![..range.start, ..]))
            } else {
                ridge_solve(&gram, &cross)
            };
            let mut scores = Array2::zeros((x.nrows(), CLASSES));
            gemm(1.0, &x, &w.view(), 0.0, &mut scores.view_mut(), Threads::One);
            for (row, r) in scores.outer_iter().zip(range.clone()) {
                let mut wanted: Vec<u8> = labels[r].clone();
                wanted.sort_unstable();
                wanted.dedup();
                let mut order: Vec<usize> = (0..CLASSES).collect();
                order.sort_by(|&a, &c| row[c].total_cmp(&row[a]));
                let top = &order[..wanted.len()];
                missed += wanted.iter().filter(|&&l| !top.contains(&(l as usize))).count();
                scored += wanted.len();
            }
        }
        gemm(1.0, &x.t(), &x, 1.0, &mut gram.view_mut(), Threads::One);
        gemm(1.0, &x.t(), &targets.slice(s![range, ..]), 1.0, &mut cross.view_mut(), Threads::One);
    }
    100.0 * missed as f64 / scored.max(1) as f64
}

/// The dual form `Xᵀ (X Xᵀ + λI)⁻¹ Y`, equal to the primal one; λ from the same rule (the
/// mean diagonal of `XᵀX` is `trace(XXᵀ)/units`).
fn ridge_dual(x: &ndarray::ArrayView2<f32>, y: &ndarray::ArrayView2<f32>) -> Array2<f32> {
    let (rows, units) = x.dim();
    let mut kernel = Array2::<f32>::zeros((rows, rows));
    gemm(1.0, x, &x.t(), 0.0, &mut kernel.view_mut(), Threads::One);
    let trace: f64 = (0..rows).map(|i| kernel[[i, i]] as f64).sum();
    let alpha = cholesky_solve(&kernel, &y.to_owned(), RIDGE * trace / units.max(1) as f64);
    let mut w = Array2::<f32>::zeros((units, y.ncols()));
    gemm(1.0, &x.t(), &alpha.view(), 0.0, &mut w.view_mut(), Threads::One);
    w
}

/// `(G + λI)⁻¹ C` with `λ = RIDGE · mean diag(G)`.
fn ridge_solve(gram: &Array2<f32>, cross: &Array2<f32>) -> Array2<f32> {
    let n = gram.nrows();
    let mean_diag = (0..n).map(|i| gram[[i, i]] as f64).sum::<f64>() / n.max(1) as f64;
    cholesky_solve(gram, cross, RIDGE * mean_diag)
}

/// `(A + λI)⁻¹ B` for a symmetric positive semi-definite `A`, by Cholesky in f64.
fn cholesky_solve(gram: &Array2<f32>, cross: &Array2<f32>, lambda: f64) -> Array2<f32> {
    let n = gram.nrows();
    let lambda = lambda.max(1e-6);
    // Lower-triangular factor, row-major in one vector.
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let (ri, rj) = (&l[i * n..i * n + j], &l[j * n..j * n + j]);
            let dot: f64 = ri.iter().zip(rj).map(|(a, b)| a * b).sum();
            let g = gram[[i, j]] as f64 + if i == j { lambda } else { 0.0 };
            l[i * n + j] = if i == j { (g - dot).max(1e-12).sqrt() } else { (g - dot) / l[j * n + j] };
        }
    }
    let k = cross.ncols();
    let mut out = Array2::<f32>::zeros((n, k));
    for c in 0..k {
        // Forward: L y = b; backward: Lᵀ w = y.
        let mut y = vec![0.0f64; n];
        for i in 0..n {
            let dot: f64 = (0..i).map(|j| l[i * n + j] * y[j]).sum();
            y[i] = (cross[[i, c]] as f64 - dot) / l[i * n + i];
        }
        let mut w = vec![0.0f64; n];
        for i in (0..n).rev() {
            let dot: f64 = (i + 1..n).map(|j| l[j * n + i] * w[j]).sum();
            w[i] = (y[i] - dot) / l[i * n + i];
        }
        for i in 0..n {
            out[[i, c]] = w[i] as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn a_linearly_separable_stream_scores_near_zero_and_noise_near_chance() {
        let mut rng = Rng::new(1);
        let rows = 600;
        let labels: Vec<Vec<u8>> = (0..rows).map(|r| vec![(r % CLASSES) as u8]).collect();
        // Class c lights unit c (plus noise): linear.
        let separable =
            Array2::from_shape_fn((rows, 20), |(r, u)| if u == r % CLASSES { 3.0 } else { 0.0 } + 0.1 * rng.normal());
        assert!(probe_error_pct(&separable, &labels) < 1.0);
        let noise = Array2::from_shape_fn((rows, 20), |_| rng.normal());
        let e = probe_error_pct(&noise, &labels);
        assert!(e > 75.0, "noise scored {e}%");
    }

    #[test]
    fn two_labels_are_scored_as_the_top_two() {
        let rows = 300;
        let labels: Vec<Vec<u8>> = (0..rows).map(|r| vec![(r % 10) as u8, ((r / 10) % 10) as u8]).collect();
        let x = Array2::from_shape_fn((rows, 10), |(r, u)| labels[r].contains(&(u as u8)) as u8 as f32);
        assert!(probe_error_pct(&x, &labels) < 1.0);
    }
}
