//! Negative data for unsupervised FF on video: rows that look locally like real video but are
//! wrong at a longer range, so a layer can only tell them apart by learning structure.
//!
//! - [`NegativeKind::Hybrid`]: the paper's §3.1 recipe. A mask is a random bit image blurred
//!   repeatedly with `[1/4, 1/2, 1/4]` in both directions and thresholded at 0.5, giving large
//!   regions of ones and zeros; the negative is `mask·a + (1−mask)·b` for two real windows a, b
//!   (the same mask on every frame of a window). Short-range statistics are real frames', the
//!   long-range shape is not.
//! - [`NegativeKind::AlignedHybrid`]: the same, with b first shifted (whole pixels, the
//!   frame's darkest value filling in) so that the centre of brightness of its first frame falls
//!   on a's. Not in the paper: its digits are centred, so its hybrids mix two digits in one
//!   place; a moving digit's frames mixed unaligned give two half digits apart, which a layer
//!   tells from a real frame by counting blobs rather than by shape.
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
        NegativeKind::AlignedHybrid => {
            let mask = masks.draw(rng);
            let (w, h) = (masks.width, masks.height);
            let (sy, sx) = centre_offset(&partner[..frame_len], &real[..frame_len], w, h, channels);
            for f in 0..frames {
                let span = f * frame_len..(f + 1) * frame_len;
                let (a, b, o) = (&real[span.clone()], &partner[span.clone()], &mut out[span]);
                let fill = darkest(b);
                for y in 0..h {
                    for x in 0..w {
                        let (by, bx) = (y as isize + sy, x as isize + sx);
                        let inside = (0..h as isize).contains(&by) && (0..w as isize).contains(&bx);
                        let m = mask[y * w + x];
                        for c in 0..channels {
                            let p = (y * w + x) * channels + c;
                            let b = if inside { b[(by as usize * w + bx as usize) * channels + c] } else { fill };
                            o[p] = m * a[p] + (1.0 - m) * b;
                        }
                    }
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

/// A frame's darkest value: what fills in where a moved frame leaves the canvas, and the zero
/// of its brightness.
fn darkest(frame: &[f32]) -> f32 {
    frame.iter().copied().fold(f32::INFINITY, f32::min)
}

/// `(dy, dx)` in whole pixels from `to`'s centre of brightness to `from`'s, for frames of
/// `w × h × channels` values: reading `from` at `(y + dy, x + dx)` puts its centre on `to`'s.
/// Brightness is a value above the frame's darkest, so a centred (mean-subtracted) frame
/// weighs the same as the raw one; a flat frame has its centre in the middle.
fn centre_offset(from: &[f32], to: &[f32], w: usize, h: usize, channels: usize) -> (isize, isize) {
    let centre = |frame: &[f32]| {
        let floor = darkest(frame);
        let (mut total, mut sy, mut sx) = (0.0f64, 0.0f64, 0.0f64);
        for (i, &v) in frame.iter().enumerate() {
            let (weight, pixel) = ((v - floor) as f64, i / channels);
            total += weight;
            sy += weight * (pixel / w) as f64;
            sx += weight * (pixel % w) as f64;
        }
        if total > 0.0 {
            (sy / total, sx / total)
        } else {
            ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0)
        }
    };
    let ((fy, fx), (ty, tx)) = (centre(from), centre(to));
    ((fy - ty).round() as isize, (fx - tx).round() as isize)
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

    #[test]
    fn an_aligned_hybrid_mixes_the_partner_moved_onto_the_real_frame() {
        // 12x12 frames on a dark floor of -1: a bright 3x3 square at (2, 2) in the real frame,
        // at (7, 6) in the partner. Aligned, the partner's square lies on the real one, so
        // every pixel of the negative is the floor or a square's, and the bright pixels are
        // exactly the real square's; unaligned, the mask shows parts of both squares apart.
        let (w, h) = (12, 12);
        let square = |top: usize, left: usize, value: f32| {
            let mut f = vec![-1.0; w * h];
            for y in top..top + 3 {
                for x in left..left + 3 {
                    f[y * w + x] = value;
                }
            }
            f
        };
        let (real, partner) = (square(2, 2, 1.0), square(7, 6, 3.0));
        assert_eq!(centre_offset(&partner, &real, w, h, 1), (5, 4));
        let bank = MaskBank::new(w, h, 3, 8, 2);
        let mut rng = Rng::new(4);
        let mut out = vec![0.0; w * h];
        let mut both = 0;
        for _ in 0..20 {
            make_negative(NegativeKind::AlignedHybrid, &real, &partner, 1, w * h, &bank, 1, &mut rng, &mut out);
            for (p, &v) in out.iter().enumerate() {
                let in_square = (2..5).contains(&(p / w)) && (2..5).contains(&(p % w));
                assert!(if in_square { v == 1.0 || v == 3.0 } else { v == -1.0 }, "pixel {p}: {v}");
            }
            both += (out.contains(&1.0) && out.contains(&3.0)) as usize;
        }
        assert!(both > 0, "some masks mix the two squares");
        // Two channels: the offset counts pixels, not values.
        let two = |f: &[f32]| f.iter().flat_map(|&v| [v, v]).collect::<Vec<f32>>();
        assert_eq!(centre_offset(&two(&partner), &two(&real), w, h, 2), (5, 4));
    }
}
