//! Negative data for unsupervised FF on video: rows that look locally like real video but are
//! wrong at a longer range, so a layer can only tell them apart by learning structure.
//!
//! - [`NegativeKind::Hybrid`]: the paper's §3.1 recipe. A mask is a random bit image blurred
//!   repeatedly with `[1/4, 1/2, 1/4]` in both directions and thresholded at 0.5, giving large
//!   regions of ones and zeros; the negative is `mask·a + (1−mask)·b` for two real windows a, b
//!   (the same mask on every frame of a window). Short-range statistics are real frames', the
//!   long-range shape is not.
//! - [`NegativeKind::Shuffle`]: the frames of a real window in a random non-identity order
//!   (windows of 2 or more frames): every frame is real, the motion is not.
//! - [`NegativeKind::Cut`]: the first frames of one window followed by the last frames of
//!   another, as across a cut between clips (windows of 2 or more frames).
//!
//! The partner window b comes from a small replay memory of recent windows (its size is the
//! only storage negatives need), so negatives mix content far apart in time.

use crate::rng::Rng;

pub use crate::negative::NegativeKind;

/// A fixed bank of hybrid masks, made once from a seed: generating one per negative would cost
/// the head ~10% of a core at 1000 frames/s for no change in their statistics.
#[derive(Clone, Debug)]
pub struct MaskBank {
    width: usize,
    height: usize,
    masks: Vec<Vec<f32>>,
}

impl MaskBank {
    /// `count` masks of `width × height`, each blurred `blurs` times before thresholding.
    pub fn new(width: usize, height: usize, blurs: usize, count: usize, seed: u64) -> MaskBank {
        let mut rng = Rng::derive(seed, "hybrid.masks", 0);
        let masks = (0..count.max(1)).map(|_| hybrid_mask(width, height, blurs, &mut rng)).collect();
        MaskBank { width, height, masks }
    }

    /// A mask drawn from the bank, flipped at random (4 variants per stored mask).
    pub fn draw(&self, rng: &mut Rng) -> Vec<f32> {
        let mask = &self.masks[rng.below(self.masks.len())];
        let (flip_x, flip_y) = (rng.below(2) == 1, rng.below(2) == 1);
        let (w, h) = (self.width, self.height);
        let mut out = vec![0.0; w * h];
        for y in 0..h {
            let sy = if flip_y { h - 1 - y } else { y };
            for x in 0..w {
                let sx = if flip_x { w - 1 - x } else { x };
                out[y * w + x] = mask[sy * w + sx];
            }
        }
        out
    }
}

/// One mask: a random bit image, blurred `blurs` times with `[1/4, 1/2, 1/4]` horizontally
/// and vertically (edges replicate), thresholded at 0.5.
pub fn hybrid_mask(width: usize, height: usize, blurs: usize, rng: &mut Rng) -> Vec<f32> {
    let mut m: Vec<f32> = (0..width * height).map(|_| (rng.below(2)) as f32).collect();
    let mut tmp = vec![0.0; m.len()];
    for _ in 0..blurs {
        for y in 0..height {
            for x in 0..width {
                let l = m[y * width + x.saturating_sub(1)];
                let r = m[y * width + (x + 1).min(width - 1)];
                tmp[y * width + x] = 0.25 * l + 0.5 * m[y * width + x] + 0.25 * r;
            }
        }
        for y in 0..height {
            for x in 0..width {
                let u = tmp[y.saturating_sub(1) * width + x];
                let d = tmp[(y + 1).min(height - 1) * width + x];
                m[y * width + x] = 0.25 * u + 0.5 * tmp[y * width + x] + 0.25 * d;
            }
        }
    }
    m.iter().map(|&v| (v > 0.5) as u8 as f32).collect()
}

/// Writes a negative for the window `real` into `out`, using `partner` (another window of the
/// same shape). Windows are `frames` frames of `frame_len` values each, concatenated.
#[allow(clippy::too_many_arguments)]
pub fn make_negative(
    kind: NegativeKind,
    real: &[f32],
    partner: &[f32],
    frames: usize,
    frame_len: usize,
    masks: &MaskBank,
    channels: usize,
    rng: &mut Rng,
    out: &mut [f32],
) {
    match kind {
        NegativeKind::Hybrid => {
            let mask = masks.draw(rng);
            for f in 0..frames {
                let span = f * frame_len..(f + 1) * frame_len;
                let (a, b, o) = (&real[span.clone()], &partner[span.clone()], &mut out[span]);
                for (p, ((o, &a), &b)) in o.iter_mut().zip(a).zip(b).enumerate() {
                    let m = mask[p / channels];
                    *o = m * a + (1.0 - m) * b;
                }
            }
        }
        NegativeKind::Shuffle => {
            let order = shuffled_order(frames, rng);
            for (f, &src) in order.iter().enumerate() {
                out[f * frame_len..(f + 1) * frame_len].copy_from_slice(&real[src * frame_len..(src + 1) * frame_len]);
            }
        }
        NegativeKind::Cut => {
            // At least one frame from each side, so the window always holds a cut.
            let split = 1 + rng.below(frames.saturating_sub(1).max(1));
            out[..split * frame_len].copy_from_slice(&real[..split * frame_len]);
            out[split * frame_len..].copy_from_slice(&partner[split * frame_len..frames * frame_len]);
        }
    }
}

/// A random permutation of `0..n` that is not the identity (for n ≥ 2).
fn shuffled_order(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if n < 2 {
        return order;
    }
    loop {
        rng.shuffle(&mut order);
        if order.iter().enumerate().any(|(i, &o)| i != o) {
            return order;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_have_large_regions_of_both_values() {
        let mut rng = Rng::new(3);
        let m = hybrid_mask(28, 28, 6, &mut rng);
        let ones = m.iter().filter(|&&v| v == 1.0).count();
        assert!(ones > 100 && ones < 684, "ones {ones}");
        // Neighbours mostly agree: blurring made regions, not salt and pepper.
        let same = (0..28 * 27).filter(|&i| m[i] == m[i + 28]).count();
        assert!(same as f64 > 0.8 * (28.0 * 27.0), "same {same}");
    }

    #[test]
    fn hybrid_takes_every_pixel_from_one_of_the_two() {
        let bank = MaskBank::new(4, 4, 2, 3, 1);
        let real = vec![1.0; 32];
        let partner = vec![2.0; 32];
        let mut out = vec![0.0; 32];
        make_negative(NegativeKind::Hybrid, &real, &partner, 2, 16, &bank, 1, &mut Rng::new(1), &mut out);
        assert!(out.iter().all(|&v| v == 1.0 || v == 2.0));
        // The same mask on both frames of the window.
        assert_eq!(out[..16], out[16..]);
    }

    #[test]
    fn shuffle_and_cut_keep_real_frames_but_not_their_order() {
        let bank = MaskBank::new(1, 1, 0, 1, 1);
        let real: Vec<f32> = (0..4).map(|f| f as f32).collect();
        let partner = vec![9.0; 4];
        let mut out = vec![0.0; 4];
        let mut rng = Rng::new(5);
        for _ in 0..20 {
            make_negative(NegativeKind::Shuffle, &real, &partner, 4, 1, &bank, 1, &mut rng, &mut out);
            let mut sorted = out.clone();
            sorted.sort_by(f32::total_cmp);
            assert_eq!(sorted, real);
            assert_ne!(out, real);
            make_negative(NegativeKind::Cut, &real, &partner, 4, 1, &bank, 1, &mut rng, &mut out);
            assert_eq!(out[0], 0.0);
            assert_eq!(out[3], 9.0);
        }
    }
}
