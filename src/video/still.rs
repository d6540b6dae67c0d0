//! A labelled image dataset (MNIST, CIFAR-10, an IDX folder) played as a stream of still
//! frames: what the frames head needs to learn from images without their labels (paper §3.2,
//! E1 and E2), through the same windows, negatives and probes as a video.
//!
//! Every epoch plays the training split once in a fresh order drawn from the seed and the
//! epoch (so a run resumed at an epoch boundary plays what an unbroken one would). Every image
//! is its own sequence, so a window never spans two images. The validation split is the feed's
//! held-out set; the splits themselves go to the frozen softmax readout at the end
//! ([`super::softmax_probe`]).

use std::sync::Arc;
use std::time::Instant;

use super::feed::{FeedCounters, FeedError, FrameFeed, FrameShape};
use super::Frame;
use crate::data::{Labelled, Split};
use crate::rng::Rng;

/// The training split of a labelled dataset as frames, one pass per epoch.
pub struct StillFeed {
    data: Arc<Labelled>,
    shape: FrameShape,
    seed: u64,
    order: Vec<usize>,
    next: usize,
    played: u64,
}

impl StillFeed {
    /// A feed over `data`, whose rows are images of `shape` (channels last).
    pub fn new(data: Arc<Labelled>, shape: FrameShape, seed: u64) -> anyhow::Result<StillFeed> {
        for (name, split) in [("training", &data.train), ("validation", &data.validation), ("test", &data.test)] {
            if !split.is_empty() && split.width() != shape.len() {
                anyhow::bail!(
                    "the {name} images have {} values, not the {}x{}x{} of the source",
                    split.width(),
                    shape.height,
                    shape.width,
                    shape.channels
                );
            }
        }
        if data.train.is_empty() {
            anyhow::bail!("the training split holds no image");
        }
        Ok(StillFeed { data, shape, seed, order: Vec::new(), next: 0, played: 0 })
    }

    fn frame(&self, split: &Split, i: usize, index: u64) -> Frame {
        Frame {
            index,
            pts: None,
            captured: Instant::now(),
            width: self.shape.width,
            height: self.shape.height,
            channels: self.shape.channels,
            pixels: split.image(i).to_vec(),
            // Every image its own sequence: no window spans two.
            sequence: index,
            labels: vec![split.labels[i]],
        }
    }
}

impl FrameFeed for StillFeed {
    fn start_epoch(&mut self, epoch: u32) -> Result<(), FeedError> {
        self.order = (0..self.data.train.len()).collect();
        Rng::derive(self.seed, "still.order", epoch as u64).shuffle(&mut self.order);
        self.next = 0;
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, FeedError> {
        let Some(&i) = self.order.get(self.next) else { return Ok(None) };
        self.next += 1;
        self.played += 1;
        Ok(Some(self.frame(&self.data.train, i, self.played - 1)))
    }

    /// The validation images, in stored order (the head keeps the first `eval_windows`).
    fn holdout(&mut self) -> Result<Option<Vec<Frame>>, FeedError> {
        let split = &self.data.validation;
        // Indices past every training frame's, so no held-out frame is mistaken for one.
        let base = u64::MAX / 2;
        Ok(Some((0..split.len()).map(|i| self.frame(split, i, base + i as u64)).collect()))
    }

    fn counters(&self) -> FeedCounters {
        FeedCounters { decoded: self.played, ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(n: usize, first: u8) -> Split {
        Split {
            images: (0..n).flat_map(|i| [first + i as u8; 4]).collect(),
            labels: (0..n).map(|i| first + i as u8).collect(),
        }
    }

    #[test]
    fn every_epoch_plays_each_training_image_once_in_an_order_of_its_own() {
        let data = Labelled {
            train: split(50, 0),
            validation: split(5, 100),
            test: split(5, 200),
            classes: 255,
            sequences: vec![],
        };
        let shape = FrameShape { width: 2, height: 2, channels: 1 };
        let mut feed = StillFeed::new(Arc::new(data), shape, 3).unwrap();
        let play = |feed: &mut StillFeed, epoch| {
            feed.start_epoch(epoch).unwrap();
            std::iter::from_fn(|| feed.next_frame().unwrap())
                .map(|f| {
                    assert_eq!(f.pixels, vec![f.labels[0]; 4]);
                    f.labels[0]
                })
                .collect::<Vec<u8>>()
        };
        let (one, two, again) = (play(&mut feed, 1), play(&mut feed, 2), play(&mut feed, 1));
        let mut sorted = one.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<u8>>());
        assert_ne!(one, two);
        assert_eq!(one, again, "an epoch's order is the seed's and the epoch's, so a resume replays it");
        let held: Vec<u8> = feed.holdout().unwrap().unwrap().iter().map(|f| f.labels[0]).collect();
        assert_eq!(held, (100..105).collect::<Vec<u8>>());
        let wrong = FrameShape { width: 3, height: 2, channels: 1 };
        let data =
            Labelled { train: split(5, 0), validation: split(1, 0), test: split(1, 0), classes: 5, sequences: vec![] };
        assert!(StillFeed::new(Arc::new(data), wrong, 3).err().unwrap().to_string().contains("not the 2x3x1"));
    }
}
