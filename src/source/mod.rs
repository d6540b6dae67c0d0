//! Sources: where frames come from. For now, a dataset played as a stream of frames.
//!
//! A dataset is a video whose frames are its images in a shuffled order, one pass per epoch.
//! The order of epoch `e` comes from `Rng::derive(seed, "order", e)`, so every trainer that
//! reads the same seed (FF through the pipeline, FF lockstep, the backprop twin) sees the same
//! frames in the same order with the same jitter, and a resumed run continues the same stream.

pub mod video;

use ndarray::Array2;

use crate::data::mnist::{shifted_into, PIXELS};
use crate::data::Split;
use crate::rng::Rng;

/// One micro-batch of frames from a dataset.
#[derive(Clone, Debug)]
pub struct FrameBatch {
    /// `(frames, width)` values in [0, 1] (less each image's mean where the source centres),
    /// jittered if asked (MNIST).
    pub pixels: Array2<f32>,
    /// Index of each frame in its split.
    pub index: Vec<u32>,
    /// Class of each frame.
    pub labels: Vec<u8>,
}

impl FrameBatch {
    /// A batch of `pixels` (already filled) and the frames `index` of `split` (a pooled
    /// vector), its label vector taken from the pools.
    fn pooled(pixels: Array2<f32>, index: Vec<u32>, split: &Split) -> FrameBatch {
        let mut labels = crate::recycle::take_u8(index.len());
        labels.iter_mut().zip(&index).for_each(|(l, &i)| *l = split.labels[i as usize]);
        FrameBatch { pixels, index, labels }
    }

    /// Gives the batch's buffers back to the pools once its rows are in a packet.
    pub fn recycle(self) {
        crate::recycle::give_array(self.pixels);
        crate::recycle::give_u32(self.index);
        crate::recycle::give_u8(self.labels);
    }
}

/// Plays a split as a stream of shuffled, optionally jittered micro-batches.
#[derive(Clone, Debug)]
pub struct DatasetSource {
    /// Batch size.
    pub batch: usize,
    /// Maximum shift in pixels (0: none; the paper's E4 uses 2).
    pub jitter: i32,
    /// Seed of the run.
    pub seed: u64,
    /// Subtract each image's own mean from its values (`source.center`, CIFAR-10).
    pub center: bool,
}

impl DatasetSource {
    /// The batches of 1-based `epoch` over `split`, in the epoch's order. The last partial
    /// batch is dropped, as Matlab's fixed 100-case batches do.
    pub fn epoch_batches<'a>(&self, split: &'a Split, epoch: u32) -> impl Iterator<Item = FrameBatch> + 'a {
        let mut order: Vec<u32> = (0..split.len() as u32).collect();
        Rng::derive(self.seed, "order", epoch as u64).shuffle(&mut order);
        let mut jitter_rng = Rng::derive(self.seed, "jitter", epoch as u64);
        let shifts: Vec<(i32, i32)> = (0..order.len())
            .map(|_| {
                if self.jitter == 0 {
                    (0, 0)
                } else {
                    let span = (2 * self.jitter + 1) as usize;
                    (jitter_rng.below(span) as i32 - self.jitter, jitter_rng.below(span) as i32 - self.jitter)
                }
            })
            .collect();
        let batches = split.len() / self.batch.max(1);
        let (batch, center) = (self.batch, self.center);
        (0..batches).map(move |b| {
            let ids = &order[b * batch..(b + 1) * batch];
            // Pooled buffers (crate::recycle), given back by the head once a packet is made.
            // Stale contents: every row is written in whole.
            let mut pixels = crate::recycle::array((batch, split.width()));
            for (row, &id) in ids.iter().enumerate() {
                let (dy, dx) = shifts[b * batch + row];
                // Invariant: a row of a standard-layout array is contiguous.
                row_into(split.image(id as usize), dy, dx, center, pixels.row_mut(row).as_slice_mut().expect("row"));
            }
            let mut index = crate::recycle::take_u32(ids.len());
            index.copy_from_slice(ids);
            FrameBatch::pooled(pixels, index, split)
        })
    }

    /// The whole split in its stored order, unjittered, in batches (evaluation).
    pub fn ordered_batches<'a>(&self, split: &'a Split, batch: usize) -> impl Iterator<Item = FrameBatch> + 'a {
        let (n, center) = (split.len(), self.center);
        (0..n.div_ceil(batch)).map(move |b| {
            let mut ids = crate::recycle::take_u32(((b + 1) * batch).min(n) - b * batch);
            ids.iter_mut().enumerate().for_each(|(k, id)| *id = (b * batch + k) as u32);
            let mut pixels = crate::recycle::array((ids.len(), split.width()));
            for (row, &id) in ids.iter().enumerate() {
                // Invariant: a row of a standard-layout array is contiguous.
                row_into(split.image(id as usize), 0, 0, center, pixels.row_mut(row).as_slice_mut().expect("row"));
            }
            FrameBatch::pooled(pixels, ids, split)
        })
    }
}

/// One stored row as floats in [0, 1]; MNIST images shifted by `(dy, dx)` (other rows are
/// never jittered: the configuration refuses jitter for them); less the row's mean if `center`.
fn row_into(src: &[u8], dy: i32, dx: i32, center: bool, dst: &mut [f32]) {
    if src.len() == PIXELS {
        shifted_into(src, dy, dx, dst);
    } else {
        dst.iter_mut().zip(src).for_each(|(d, &s)| *d = s as f32 / 255.0);
    }
    if center && !dst.is_empty() {
        let mean = dst.iter().sum::<f32>() / dst.len() as f32;
        dst.iter_mut().for_each(|v| *v -= mean);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_split(n: usize) -> Split {
        Split {
            images: (0..n * PIXELS).map(|i| (i % 251) as u8).collect(),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
        }
    }

    #[test]
    fn epochs_are_permutations_and_reproducible() {
        let split = tiny_split(50);
        let src = DatasetSource { batch: 10, jitter: 2, seed: 3, center: false };
        let a: Vec<u32> = src.epoch_batches(&split, 1).flat_map(|b| b.index).collect();
        let b: Vec<u32> = src.epoch_batches(&split, 1).flat_map(|b| b.index).collect();
        let c: Vec<u32> = src.epoch_batches(&split, 2).flat_map(|b| b.index).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn a_centred_source_takes_each_image_its_own_mean() {
        let split = Split { images: vec![0, 255, 51, 102, 10, 10], labels: vec![0, 1, 2] };
        let plain = DatasetSource { batch: 2, jitter: 0, seed: 0, center: false };
        let centred = DatasetSource { center: true, ..plain.clone() };
        let (p, c) =
            (plain.ordered_batches(&split, 3).next().unwrap(), centred.ordered_batches(&split, 3).next().unwrap());
        assert_eq!(p.pixels.row(0).to_vec(), vec![0.0, 1.0]);
        assert_eq!(c.pixels.row(0).to_vec(), vec![-0.5, 0.5]);
        assert!((c.pixels[[1, 0]] + 0.1).abs() < 1e-6 && (c.pixels[[1, 1]] - 0.1).abs() < 1e-6);
        assert_eq!(c.pixels.row(2).to_vec(), vec![0.0, 0.0], "a flat image is all zeros");
    }
}
