//! Rows of one frame share one product (issue 11's speed): a first layer sees each image
//! several times in a packet, as its positive row and its negative row (the same pixels, another
//! label in the first values), and in an evaluation packet as ten candidate rows and a neutral
//! row. Those rows differ only in their first `head` inputs, so their products with the
//! weights below `head` are one product, scaled by each row's normalization:
//!
//! ```text
//! x̂_r = s_r·x_r                      (RMS normalization, s_r = 1 / rms(x_r))
//! x̂_r·W = x̂_r[..h]·W[..h] + (s_r / s_b)·(x̂_b[h..]·W[h..])    for r a row of base row b
//! x̂ᵀD  = [ x̂[.., ..h]ᵀD ; x̂_B[h..]ᵀ·(Σ_{r of b} (s_r / s_b)·D_r) ]
//! ```
//!
//! The big products then run over the distinct frames only (the base rows), the label part is
//! a sparse sum over the few nonzero label values. For the Matlab recipe's training packets
//! (positives, negatives, and the neutral rows of a later batch) the first layer's two products
//! see 2 and 1 rows a frame instead of 3 and 2; for an evaluation packet 1 instead of 11.
//!
//! Nothing is assumed about the rows: which rows are one frame's comes from `Packet::frame`,
//! and every row's shared part is compared value for value with its base row's before it is
//! shared, so a packet whose rows merely carry the same frame index (a deeper layer's, a
//! synthetic packet's) takes the full product. The result equals the full product up to the
//! order of the floating-point sums.

use std::collections::HashMap;

use ndarray::{s, Array2, ArrayView2, Axis};

use crate::matmul::StagePool;

/// Rows that differ from their base row beyond this share of the inputs are bases themselves
/// (a shared part narrower than half the row saves too little to be worth the bookkeeping).
const MAX_HEAD_SHARE: f64 = 0.5;
/// Sharing is used only where it saves at least this share of the rows.
const MIN_SAVED_SHARE: f64 = 0.125;

/// Which rows of the packet in flight share their tail with which base row, and the products
/// of the base rows, kept from the forward pass for the gradient (and their buffers from packet
/// to packet: steady state allocates nothing).
#[derive(Debug, Default)]
pub struct SharedRows {
    /// The leading inputs in which rows of one frame differ; the rest is shared.
    head: usize,
    /// The base rows, ascending: a frame's first row, or a row unlike its frame's first.
    bases: Vec<usize>,
    /// Per row: its base's index in `bases`.
    base_of: Vec<usize>,
    /// Per row: its normalization scale over its base's.
    ratio: Vec<f32>,
    /// Per row: the scale its normalization multiplied it by.
    scales: Vec<f32>,
    /// Per row: its frame's first row, and the last input where it differs from that row
    /// (scratch).
    first_and_last: Vec<(usize, usize)>,
    /// The first row of each frame index (scratch).
    first_row: HashMap<u32, usize>,
    /// `(bases, inputs − head)`: the base rows' normalized shared inputs.
    tails: Array2<f32>,
    /// `(bases, units)`: their products with the shared weights.
    products: Array2<f32>,
    /// `(learning bases, units)`: the learning rows' directions summed onto their bases.
    combined: Array2<f32>,
}

impl SharedRows {
    /// Finds which rows of `x` (raw, before normalization; one frame index per row in `frame`)
    /// can share; true where that saves enough rows to be worth it.
    pub fn find(&mut self, x: &Array2<f32>, frame: &[u32]) -> bool {
        let (rows, inputs) = x.dim();
        if rows < 2 || frame.len() != rows || inputs < 2 {
            return false;
        }
        self.first_row.clear();
        self.first_and_last.clear();
        let limit = (inputs as f64 * MAX_HEAD_SHARE) as usize;
        let mut head = 0;
        for (r, &f) in frame.iter().enumerate() {
            let first = *self.first_row.entry(f).or_insert(r);
            // The last input where row r differs from its frame's first row (none: 0).
            let last = if first == r {
                0
            } else {
                let (a, b) = (x.row(r), x.row(first));
                (0..inputs).rev().find(|&j| a[j] != b[j]).map_or(0, |j| j + 1)
            };
            self.first_and_last.push((first, last));
            if first != r && last <= limit {
                head = head.max(last);
            }
        }
        self.head = head;
        self.bases.clear();
        self.base_of.clear();
        for (r, &(first, last)) in self.first_and_last.iter().enumerate() {
            if first != r && last <= head {
                // The first row of a frame is always a base, and comes earlier.
                let base = self.base_of[first];
                self.base_of.push(base);
            } else {
                self.base_of.push(self.bases.len());
                self.bases.push(r);
            }
        }
        let saved = rows - self.bases.len();
        saved as f64 >= MIN_SAVED_SHARE * rows as f64
    }

    /// The per-row scales of the normalization that `x` has just had (`scales`, from
    /// [`crate::ff::normalize::normalize_rows_in_place_scales`]) give each row's ratio to its base.
    pub fn scales_mut(&mut self) -> &mut Vec<f32> {
        &mut self.scales
    }

    /// `y = x̂·W + y` for the normalized rows `x̂` `(rows, inputs)` found by [`Self::find`] and
    /// the dense weights `(inputs, units)`: the base rows' shared inputs in one product, each
    /// row's own leading inputs as a sparse sum.
    pub fn forward(&mut self, pool: &StagePool, weights: &Array2<f32>, x: &Array2<f32>, y: &mut Array2<f32>) {
        let (head, units) = (self.head, weights.ncols());
        let tail_width = x.ncols() - head;
        self.ratio.clear();
        for r in 0..x.nrows() {
            let base = self.bases[self.base_of[r]];
            self.ratio.push(self.scales[r] / self.scales[base]);
        }
        let tails = std::mem::take(&mut self.tails);
        let mut tails = crate::recycle::reshaped(tails, (self.bases.len(), tail_width));
        for (mut to, &b) in tails.outer_iter_mut().zip(&self.bases) {
            to.assign(&x.slice(s![b, head..]));
        }
        let products = std::mem::take(&mut self.products);
        let mut products = crate::recycle::reshaped(products, (self.bases.len(), units));
        pool.gemm(1.0, &tails.view(), &weights.slice(s![head.., ..]), 0.0, &mut products.view_mut());
        for (r, mut row) in y.outer_iter_mut().enumerate() {
            let ratio = self.ratio[r];
            row.zip_mut_with(&products.row(self.base_of[r]), |v, &p| *v += ratio * p);
            for (j, &value) in x.row(r).iter().take(head).enumerate() {
                if value != 0.0 {
                    row.zip_mut_with(&weights.row(j), |v, &w| *v += value * w);
                }
            }
        }
        self.tails = tails;
        self.products = products;
    }

    /// `buffer = beta·buffer + alpha·x̂ᵀD` in the dense layout `(inputs, units)`, `(alpha, beta)`
    /// being the optimizer's `target`, for the learning rows `x̂` (the first `d.nrows()` rows of
    /// the packet of the last [`Self::forward`]) and their direction `d`.
    pub fn gradient(
        &mut self,
        pool: &StagePool,
        (x, d): (&ArrayView2<f32>, &Array2<f32>),
        target: (f32, f32),
        buffer: &mut Array2<f32>,
    ) {
        let (alpha, beta) = target;
        let (learning, units) = d.dim();
        let head = self.head;
        // Bases are ascending and every row's base is at or before it: the learning rows'
        // bases are the first ones.
        let learning_bases = self.bases.partition_point(|&b| b < learning);
        let combined = std::mem::take(&mut self.combined);
        let mut combined = crate::recycle::reshaped(combined, (learning_bases, units));
        combined.fill(0.0);
        for (r, dir) in d.outer_iter().enumerate() {
            let ratio = self.ratio[r];
            combined.row_mut(self.base_of[r]).zip_mut_with(&dir, |c, &v| *c += ratio * v);
        }
        let (mut below, mut above) = buffer.view_mut().split_at(Axis(0), head);
        let tails = self.tails.slice(s![..learning_bases, ..]);
        pool.gemm(alpha, &tails.t(), &combined.view(), beta, &mut above);
        if head > 0 {
            let own = x.slice(s![..learning, ..head]);
            pool.gemm(alpha, &own.t(), &d.view(), beta, &mut below);
        }
        self.combined = combined;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ff::normalize::normalize_rows_in_place_scales;
    use crate::rng::Rng;

    /// A packet as the labelled head makes it: `n` frames as positives (label in the first 10
    /// values), the same frames as negatives (another label), and `m` neutral rows of other
    /// frames (0.1 in each label value).
    fn packet(rng: &mut Rng, n: usize, m: usize, inputs: usize) -> (Array2<f32>, Vec<u32>) {
        let mut x = Array2::from_shape_simple_fn((2 * n + m, inputs), || rng.normal().abs());
        let mut frame = vec![0; 2 * n + m];
        for i in 0..n {
            let row = x.row(i).to_owned();
            x.row_mut(n + i).assign(&row);
            frame[i] = i as u32;
            frame[n + i] = i as u32;
        }
        for i in 0..2 * n + m {
            let label = if i >= 2 * n { None } else { Some((i * 7) % 10) };
            for j in 0..10 {
                x[[i, j]] = match label {
                    None => 0.1,
                    Some(l) if l == j => 1.0,
                    Some(_) => 0.0,
                };
            }
            if i >= 2 * n {
                frame[i] = (1000 + i) as u32;
            }
        }
        (x, frame)
    }

    fn close(a: &Array2<f32>, b: &Array2<f32>) {
        assert_eq!(a.dim(), b.dim());
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst <= 1e-5 * scale, "worst difference {worst} at scale {scale}");
    }

    #[test]
    fn shared_products_equal_the_full_ones() {
        let mut rng = Rng::new(3);
        let (n, m, inputs, units) = (6, 5, 40, 9);
        let (raw, frame) = packet(&mut rng, n, m, inputs);
        let w = Array2::from_shape_simple_fn((inputs, units), || rng.normal());
        let d = Array2::from_shape_simple_fn((2 * n, units), || rng.normal());
        let pool = StagePool::new("test", 1);
        let mut shared = SharedRows::default();
        assert!(shared.find(&raw, &frame));
        assert_eq!((shared.head, shared.bases.len()), (10, n + m));
        let mut x = raw.clone();
        normalize_rows_in_place_scales(&mut x, shared.scales_mut());
        let mut y = Array2::from_elem((2 * n + m, units), 0.5);
        shared.forward(&pool, &w, &x, &mut y);
        close(&y, &(x.dot(&w) + 0.5));
        let mut g = Array2::from_elem((inputs, units), 1.0);
        let xl = x.slice(s![..2 * n, ..]);
        shared.gradient(&pool, (&xl, &d), (0.3, 0.9), &mut g);
        close(&g, &(xl.t().dot(&d) * 0.3 + 0.9));
    }

    #[test]
    fn candidate_rows_of_one_image_share_with_its_neutral_row() {
        // An evaluation packet: each image with each of 10 labels, then its neutral row.
        let mut rng = Rng::new(4);
        let (images, inputs, units) = (3, 30, 5);
        let pixels = Array2::from_shape_simple_fn((images, inputs), || rng.normal().abs());
        let rows = 11 * images;
        let mut raw = Array2::zeros((rows, inputs));
        let mut frame = vec![0; rows];
        for r in 0..rows {
            let (image, label) = if r < 10 * images { (r / 10, Some(r % 10)) } else { (r - 10 * images, None) };
            raw.row_mut(r).assign(&pixels.row(image));
            for j in 0..10 {
                raw[[r, j]] = label.map_or(0.1, |l| f32::from(u8::from(l == j)));
            }
            frame[r] = image as u32;
        }
        let mut shared = SharedRows::default();
        assert!(shared.find(&raw, &frame));
        assert_eq!(shared.bases, vec![0, 10, 20]);
        let w = Array2::from_shape_simple_fn((inputs, units), || rng.normal());
        let mut x = raw.clone();
        normalize_rows_in_place_scales(&mut x, shared.scales_mut());
        let mut y = Array2::zeros((rows, units));
        shared.forward(&StagePool::new("test", 1), &w, &x, &mut y);
        close(&y, &x.dot(&w));
    }

    #[test]
    fn rows_that_only_claim_one_frame_are_not_shared() {
        // A deeper layer's rows, or a synthetic packet's, with frame indices that repeat but
        // values that differ near the end: every row is a base, no sharing.
        let mut rng = Rng::new(5);
        let raw = Array2::from_shape_simple_fn((8, 20), || rng.normal());
        let mut shared = SharedRows::default();
        assert!(!shared.find(&raw, &[0; 8]));
        // One odd row among shared ones becomes a base of its own; the rest still share.
        let (mut raw, frame) = packet(&mut rng, 8, 0, 20);
        raw[[9, 19]] += 1.0;
        assert!(shared.find(&raw, &frame));
        assert_eq!(shared.bases.len(), 9, "8 frames and the odd row");
        assert_eq!(shared.bases[shared.base_of[9]], 9);
        assert_eq!(shared.bases[shared.base_of[10]], 2);
    }
}
