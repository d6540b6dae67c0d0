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
