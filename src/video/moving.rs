//! Moving MNIST as a frame feed: the labelled stream that tells what each stage learned.
//!
//! Epoch e plays training sequences `[(e−1)·S, e·S)` with `S = frames_per_epoch / 20`, so the
//! stream depends only on the epoch and a resumed run continues exactly. Digits come from the
//! 60,000 MNIST training images. Held-out frames (separation) are test-split sequences from 0,
//! probe frames test-split sequences from 1,000,000 on: digits no stage ever learned from, and
//! never the same rows in both measures. With `eval.probe_split = "validation"` the training
//! sequences draw from MNIST's first 50,000 training images, and the separation and probe
//! frames are validation-split sequences (the last 10,000), numbered as the test ones.
//!
//! With `streams = B` the training and probe frames play B sequences side by side: frame
//! `t·B + j` is frame t of sequence j of the group, so in packets of B rows, row j is always
//! stream j (a recurrent net's state, carried from packet to packet, follows one video). The
//! sequences and their order in the epoch are the same as with one stream.

use std::time::Instant;

use super::feed::{FeedCounters, FeedError, FrameFeed};
use super::Frame;
use crate::config::ProbeSplit;
use crate::data::moving_mnist::{MovingMnist, MovingMnistConfig, MovingSplit, Sequence, FRAMES_PER_SEQUENCE};
use crate::data::Labelled;

/// Canvas side in pixels (the recipe's, [`crate::data::moving_mnist::CANVAS`]).
pub const SIDE: usize = crate::data::moving_mnist::CANVAS;
/// First test sequence of the probe stream.
const PROBE_FIRST_SEQUENCE: u64 = 1_000_000;

/// Moving MNIST, one block of sequences per epoch.
pub struct MovingMnistFeed {
    train: MovingMnist,
    test: MovingMnist,
    frames_per_epoch: u64,
    holdout_frames: usize,
    /// The training sequences playing, side by side.
    play: SideBySide,
    emitted: u64,
    decoded: u64,
    /// `source.order = "shuffled"`: the run's seed, and the epoch's frames still to play in
    /// their shuffled order (last first).
    shuffled: Option<(u64, Vec<Frame>)>,
}

/// Sequences played side by side, `streams` at a time from sequence `next` on: frame `t·B + j`
/// is frame t of the group's j-th sequence (B = 1: consecutive frames of consecutive sequences).
struct SideBySide {
    next: u64,
    streams: usize,
    /// The group playing, rendered into reused buffers, and the next frame's position in it.
    group: Vec<Sequence>,
    t: usize,
    /// Time spent rendering sequences (the feed's decode rate).
    generate_ns: u64,
}

impl SideBySide {
    fn new(first: u64, streams: usize) -> SideBySide {
        SideBySide { next: first, streams: streams.max(1), group: Vec::new(), t: 0, generate_ns: 0 }
    }

    /// Plays on from sequence `first`, from a new group.
    fn restart(&mut self, first: u64) {
        self.next = first;
        self.group.clear();
        self.t = 0;
    }

    /// The next frame, rendering the next group of sequences of `source` when this one is played.
    fn next_frame(&mut self, source: &MovingMnist) -> Frame {
        let length = self.group.iter().map(Sequence::len).min().unwrap_or(0);
        if self.t >= length * self.group.len() {
            let started = Instant::now();
            self.group.resize_with(self.streams, Sequence::default);
            for (j, sequence) in self.group.iter_mut().enumerate() {
                source.sequence_into(self.next + j as u64, sequence);
            }
            self.generate_ns += started.elapsed().as_nanos() as u64;
            self.next += self.streams as u64;
            self.t = 0;
        }
        let streams = self.group.len();
        let frame = MovingMnistFeed::frame_of(&self.group[self.t % streams], self.t / streams);
        self.t += 1;
        frame
    }
}

impl MovingMnistFeed {
    /// A feed of `digits`-digit sequences; `holdout_frames` test frames for the separation set.
    pub fn new(mnist: &Labelled, digits: usize, frames_per_epoch: u64, holdout_frames: usize) -> anyhow::Result<Self> {
        Self::side_by_side(mnist, digits, 1, frames_per_epoch, holdout_frames, ProbeSplit::Test)
    }

    /// The same with `streams` sequences played side by side, held-out frames from `held_out`.
    pub fn side_by_side(
        mnist: &Labelled,
        digits: usize,
        streams: usize,
        frames_per_epoch: u64,
        holdout_frames: usize,
        held_out: ProbeSplit,
    ) -> anyhow::Result<Self> {
        let (train, test) = match held_out {
            ProbeSplit::Test => (MovingSplit::Train, MovingSplit::Test),
            ProbeSplit::Validation => (MovingSplit::TrainLess, MovingSplit::Validation),
        };
        let build = |split| {
            let mut c = MovingMnistConfig::new(split);
            c.num_digits = digits;
            c.build(mnist)
        };
        Ok(MovingMnistFeed {
            train: build(train)?,
            test: build(test)?,
            frames_per_epoch,
            holdout_frames,
            play: SideBySide::new(0, streams),
            emitted: 0,
            decoded: 0,
            shuffled: None,
        })
    }

    /// Plays each epoch's frames (the same frames as in stream order) in an order shuffled by
    /// `seed` and the epoch, so a resumed run plays the same order. The epoch is rendered whole
    /// before its first frame: `frames_per_epoch` frames of 4 KiB in memory.
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.shuffled = Some((seed, Vec::new()));
        self
    }

    fn frame_of(sequence: &Sequence, t: usize) -> Frame {
        Frame {
            index: sequence.index * FRAMES_PER_SEQUENCE as u64 + t as u64,
            // The generator's clock: 10 frames per second, as the original sequences are shown.
            pts: Some((sequence.index * FRAMES_PER_SEQUENCE as u64 + t as u64) as f64 / 10.0),
            captured: Instant::now(),
            width: SIDE,
            height: SIDE,
            channels: 1,
            // Invariant: callers pass t below the sequence's FRAMES_PER_SEQUENCE frames.
            pixels: sequence.frame(t).expect("t within the sequence").to_vec(),
            sequence: sequence.index,
            labels: sequence.labels(),
        }
    }

    /// `count` frames of `source` starting at sequence `first`, `streams` sequences side by
    /// side (1: consecutive frames of consecutive sequences).
    fn frames_of(source: &MovingMnist, first: u64, count: usize, streams: usize) -> Vec<Frame> {
        let mut play = SideBySide::new(first, streams);
        (0..count).map(|_| play.next_frame(source)).collect()
    }

    /// Labelled test-split frames for the final probes, side by side as the training stream.
    pub fn probe_frames(&self, count: usize) -> Vec<Frame> {
        Self::frames_of(&self.test, PROBE_FIRST_SEQUENCE, count, self.play.streams)
    }

    /// `count` windows of `window` frames for the final probes, one from each test-split
    /// sequence from the probe stream's first on (`eval.probe_sampling = "one_per_sequence"`):
    /// as many digits as windows. Sequence i's window ends at frame `window − 1 + i mod (21 −
    /// window)`, so the windows step through every time of a sequence rather than all sitting
    /// at one (a digit's place depends on its start and its time).
    pub fn probe_windows(&self, count: usize, window: usize) -> Vec<Frame> {
        let window = window.clamp(1, FRAMES_PER_SEQUENCE);
        let ends = (FRAMES_PER_SEQUENCE + 1 - window) as u64;
        let mut sequence = Sequence::default();
        let mut frames = Vec::with_capacity(count * window);
        for i in 0..count as u64 {
            self.test.sequence_into(PROBE_FIRST_SEQUENCE + i, &mut sequence);
            let end = window - 1 + (i % ends) as usize;
            frames.extend((end + 1 - window..=end).map(|t| Self::frame_of(&sequence, t)));
        }
        frames
    }

    /// The first `count` training frames (the backprop twin's stream).
    pub fn train_frames(&self, count: usize) -> Vec<Frame> {
        Self::frames_of(&self.train, 0, count, 1)
    }
}

impl FrameFeed for MovingMnistFeed {
    fn start_epoch(&mut self, epoch: u32) -> Result<(), FeedError> {
        let sequences = self.frames_per_epoch.div_ceil(FRAMES_PER_SEQUENCE as u64);
        self.play.restart((epoch as u64 - 1) * sequences);
        self.emitted = 0;
        if let Some((seed, frames)) = &mut self.shuffled {
            frames.clear();
            frames.extend((0..self.frames_per_epoch).map(|_| self.play.next_frame(&self.train)));
            crate::rng::Rng::derive(*seed, "moving_mnist.order", epoch as u64).shuffle(frames);
        }
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, FeedError> {
        if self.emitted >= self.frames_per_epoch {
            return Ok(None);
        }
        let frame = match &mut self.shuffled {
            // Invariant: `start_epoch` rendered `frames_per_epoch` frames, one taken per call.
            Some((_, frames)) => {
                let mut frame = frames.pop().expect("the epoch's shuffled frames");
                // Rendered with the whole epoch; its latency counts from when it leaves.
                frame.captured = Instant::now();
                frame
            }
            None => self.play.next_frame(&self.train),
        };
        self.emitted += 1;
        self.decoded += 1;
        Ok(Some(frame))
    }

    fn holdout(&mut self) -> Result<Option<Vec<Frame>>, FeedError> {
        Ok(Some(Self::frames_of(&self.test, 0, self.holdout_frames, 1)))
    }

    fn counters(&self) -> FeedCounters {
        FeedCounters {
            decoded: self.decoded,
            decode_fps: self.decoded as f64 / (self.play.generate_ns.max(1) as f64 * 1e-9),
            ..Default::default()
        }
    }
}
