//! Length normalization of each row before it enters a layer (paper §2, Matlab `ffnormrows`).
//!
//! `x̂ = x / (tiny + sqrt(mean(x²)))`: RMS normalization, so every row has mean square 1 (length
//! √N). No mean is subtracted. The next layer then sees only the orientation of the activity
//! vector, never its length, so it cannot read the goodness of the layer below.

use ndarray::{Array2, ArrayView2, Axis};

/// Matlab adds `exp(-100)`; that underflows in f32, so a tiny normal number stands in for it.
const TINY: f32 = 1e-30;

/// A row-normalized copy of `x`.
///
/// # Shapes
/// `x: (rows, features)` → `(rows, features)`.
pub fn normalize_rows(x: &ArrayView2<f32>) -> Array2<f32> {
    // A pooled array (crate::recycle): the readout's features are made once a packet.
    let mut out = crate::recycle::array(x.dim());
    out.assign(x);
    normalize_rows_in_place(&mut out);
    out
}

/// Normalizes every row of `x` in place.
pub fn normalize_rows_in_place(x: &mut Array2<f32>) {
    normalize_rows_with(x, |_| ());
}

/// [`normalize_rows_in_place`], keeping the scale each row was multiplied by in `scales`
/// (a first layer's rows of one frame share their product through them:
/// [`crate::stage::shared_rows`]).
pub fn normalize_rows_in_place_scales(x: &mut Array2<f32>, scales: &mut Vec<f32>) {
    scales.clear();
    normalize_rows_with(x, |scale| scales.push(scale));
}

fn normalize_rows_with(x: &mut Array2<f32>, mut keep: impl FnMut(f32)) {
    let width = x.ncols().max(1) as f32;
    for mut row in x.axis_iter_mut(Axis(0)) {
        let mean_square = row.iter().map(|v| v * v).sum::<f32>() / width;
        let scale = 1.0 / (TINY + mean_square.sqrt());
        keep(scale);
        row.mapv_inplace(|v| v * scale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn rows_get_mean_square_one_and_keep_direction() {
        let x = array![[3.0f32, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]];
        let y = normalize_rows(&x.view());
        let ms0: f32 = y.row(0).iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!((ms0 - 1.0).abs() < 1e-6);
        assert!((y[[0, 0]] / y[[0, 1]] - 0.75).abs() < 1e-6);
        assert!(y.row(1).iter().all(|&v| v == 0.0), "a zero row stays zero, no NaN");
        assert!(y.row(2).iter().all(|&v| (v - 1.0).abs() < 1e-6));
    }
}
