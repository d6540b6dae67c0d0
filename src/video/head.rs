//! The video head: plays a [`FrameFeed`] as packets of positive windows and their negatives.
//!
//! A window is `window` consecutive frames of one sequence, flattened into one row (pixels
//! scaled to 0..1); windows slide by one frame, so each new frame completes one new window and
//! one row of positives per frame reaches the stages. A window that would span a cut between
//! sequences is never made. Each positive gets one negative (see [`super::negatives`]), its
//! partner drawn from a replay memory: a uniform reservoir sample of the windows seen so far in
//! the epoch (not the most recent ones: in a fixed-camera clip the last seconds all look alike,
//! and a hybrid of two near-identical frames is no negative at all). Interleaved, positives and
//! negatives travel in the same packet; with wake and sleep phases (`head/sleep.rs`),
//! awake packets hold positives only and asleep the negatives are hybrids of two remembered
//! windows.
//!
//! Held-out windows: with `holdout_every = k`, every window whose last frame index is
//! `k−1 mod k` is never learned from; the first `eval_windows` of them (with negatives drawn
//! once from a fixed seed) are played as validation packets after every epoch, so the
//! separation of positive and negative goodness per stage is measured on the same rows each
//! time. A feed with its own held-out frames (Moving MNIST's test split) supplies them instead.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::feed::{FeedCounters, FeedError, FrameFeed};
use super::negatives::{make_negative, MaskBank, NegativeKind};
use super::Frame;
use crate::head::sleep::WakeSleep;
use crate::metrics::Progress;
use crate::packet::{Message, Observe, Packet, Purpose, NEUTRAL};
use crate::reservoir::Reservoir;
use crate::rng::Rng;
use crate::runtime::{HeadIo, Interrupted};
use crate::schedule::{Phase, PhaseSchedule};

/// How the video head plays its feed.
#[derive(Clone, Debug)]
pub struct VideoHeadConfig {
    /// Positive windows per packet.
    pub batch: usize,
    /// Frames per window (1: single frames).
    pub window: usize,
    /// Values per frame (`height × width × channels`).
    pub frame_len: usize,
    /// Frame width and height (masks).
    pub width: usize,
    /// Frame height.
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// How negatives are made.
    pub negatives: NegativeKind,
    /// Windows kept in the replay memory (a reservoir sample) that negatives' partners come from.
    pub replay: usize,
    /// Blur passes of the hybrid masks.
    pub mask_blurs: usize,
    /// Hold out every k-th window (0: none).
    pub holdout_every: usize,
    /// Held-out windows evaluated after every epoch.
    pub eval_windows: usize,
    /// First epoch to play (1-based; > 1 after a resume).
    pub first_epoch: u32,
    /// Last epoch.
    pub epochs: u32,
    /// The run's seed.
    pub seed: u64,
    /// Subtract each frame's mean brightness (see [`frame_values`]).
    pub center: bool,
    /// Interleaved, or wake and sleep phases (see [`crate::schedule`]).
    pub schedule: PhaseSchedule,
}

/// A frame's pixels as row values in 0..1, minus the frame's mean when `center` is set.
///
/// Why centering: natural frames are all-positive with a mean near 0.5, so after the stages'
/// RMS normalization the input is mostly one constant direction that real frames and their
/// hybrids share; every unit's response, and every update, is dominated by it. Removing the
/// mean leaves the structure that tells them apart. (MNIST-like frames have a zero background
/// and need none.)
pub fn frame_values(pixels: &[u8], center: bool, out: &mut Vec<f32>) {
    let start = out.len();
    out.extend(pixels.iter().map(|&p| p as f32 * (1.0 / 255.0)));
    if center && !pixels.is_empty() {
        let mean = out[start..].iter().sum::<f32>() / pixels.len() as f32;
        out[start..].iter_mut().for_each(|v| *v -= mean);
    }
}

/// Windows of `window` consecutive frames of one sequence, sliding by one frame: a cut (a new
/// sequence) starts over, so no window ever spans it. Holds owned frames (the head) or
/// borrowed ones (a slice of frames, [`super::run::windows_of`]).
pub(crate) struct Windows<F> {
    window: usize,
    recent: VecDeque<F>,
}

impl<F: std::borrow::Borrow<Frame>> Windows<F> {
    /// Windows of `window` frames (at least 1).
    pub(crate) fn new(window: usize) -> Windows<F> {
        Windows { window: window.max(1), recent: VecDeque::new() }
    }

    /// Adds the next frame; returns the window it completes, if any.
    pub(crate) fn push(&mut self, frame: F) -> Option<&VecDeque<F>> {
        if self.recent.back().is_some_and(|f| f.borrow().sequence != frame.borrow().sequence) {
            self.recent.clear(); // a cut: no window spans it
        }
        self.recent.push_back(frame);
        if self.recent.len() > self.window {
            self.recent.pop_front();
        }
        (self.recent.len() == self.window).then_some(&self.recent)
    }
}

/// Plays a frame feed through the pipeline.
pub struct VideoHead {
    config: VideoHeadConfig,
    feed: Box<dyn FrameFeed>,
    masks: MaskBank,
    stop: Arc<AtomicBool>,
    seq: u64,
    /// A uniform sample of the epoch's windows so far (rows of `window × frame_len` values).
    replay: Reservoir<Vec<f32>>,
    /// The held-out windows and their negatives, fixed once made.
    held_out: Vec<Window>,
    held_out_negatives: Vec<Vec<f32>>,
    /// Where the feed's counters are published for the live view.
    progress: Option<Arc<Progress>>,
}

/// A window ready to become a row.
struct Window {
    values: Vec<f32>,
    /// The label of its last frame, if the frame carries exactly one.
    truth: u8,
    index: u64,
    captured: Instant,
}

impl VideoHead {
    /// A head over `feed`; it stops at the next packet once `stop` is set.
    pub fn new(config: VideoHeadConfig, feed: Box<dyn FrameFeed>, stop: Arc<AtomicBool>) -> VideoHead {
        let masks = MaskBank::new(config.width, config.height, config.mask_blurs, 256, config.seed);
        VideoHead {
            replay: Reservoir::new(config.replay),
            config,
            feed,
            masks,
            stop,
            seq: 0,
            held_out: Vec::new(),
            held_out_negatives: Vec::new(),
            progress: None,
        }
    }

    /// Publishes the feed's counters to `progress` after every packet (the live view).
    pub fn report_to(&mut self, progress: Arc<Progress>) {
        self.progress = Some(progress);
    }

    /// Publishes the feed's counters (the phase is published by [`WakeSleep`]).
    fn publish_feed(&self) {
        if let Some(p) = &self.progress {
            let c = self.feed.counters();
            let s = &p.source;
            s.decoded.store(c.decoded, Ordering::Relaxed);
            s.dropped.store(c.dropped, Ordering::Relaxed);
            s.corrupt.store(c.corrupt, Ordering::Relaxed);
            s.reconnects.store(c.reconnects, Ordering::Relaxed);
            s.decode_fps_bits.store(c.decode_fps.to_bits(), Ordering::Relaxed);
        }
    }

    /// The feed (its counters).
    pub fn feed(&self) -> &dyn FrameFeed {
        self.feed.as_ref()
    }

    fn fail(error: FeedError) -> Interrupted {
        Interrupted::Source(Box::new(error))
    }

    fn to_values(&self, frames: &VecDeque<Frame>) -> Vec<f32> {
        let mut values = Vec::with_capacity(self.config.window * self.config.frame_len);
        for frame in frames {
            frame_values(&frame.pixels, self.config.center, &mut values);
        }
        values
    }

    fn window_of(&self, frames: &VecDeque<Frame>) -> Window {
        // Invariant: `Windows` hands out only full windows, of at least one frame (both).
        let last = frames.back().expect("a full window");
        Window {
            values: self.to_values(frames),
            truth: if last.labels.len() == 1 { last.labels[0] } else { NEUTRAL },
            index: last.index,
            captured: frames.front().expect("a full window").captured,
        }
    }

    fn held_out_window(&self, index: u64) -> bool {
        let k = self.config.holdout_every as u64;
        k > 0 && index % k == k - 1
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq - 1
    }

    /// Builds the rows `[positives | negatives]` and the packet around them. Negative rows carry
    /// the frame and label of the window they were made from, if any (a sleep packet's
    /// negatives come from the replay memory and carry none).
    fn packet(&self, seq: u64, epoch: u32, purpose: Purpose, windows: &[Window], negatives: Vec<Vec<f32>>) -> Packet {
        let (n, m) = (windows.len(), negatives.len());
        let width = self.config.window * self.config.frame_len;
        // Pooled (crate::recycle: the sink gives it back); stale contents, every row is copied in.
        let mut x = crate::recycle::array((n + m, width));
        for (r, w) in windows.iter().enumerate() {
            // Invariant: rows of a standard-layout array are contiguous (both loops).
            x.row_mut(r).as_slice_mut().expect("row").copy_from_slice(&w.values);
        }
        for (r, neg) in negatives.iter().enumerate() {
            x.row_mut(n + r).as_slice_mut().expect("row").copy_from_slice(neg);
        }
        let of_negative = |r: usize| windows.get(r).map_or((0, NEUTRAL), |w| (w.index as u32, w.truth));
        let mut packet = crate::recycle::packet(seq, epoch, purpose, x);
        let rows = windows.iter().map(|w| (w.index as u32, w.truth)).chain((0..m).map(of_negative));
        for (r, (frame, truth)) in rows.enumerate() {
            packet.frame[r] = frame;
            packet.truth[r] = truth;
        }
        packet.positives = n;
        packet.negatives = m;
        packet.frames = if purpose == Purpose::Train { n } else { 0 };
        packet.observe = Observe::Positives;
        packet.captured = windows.iter().map(|w| w.captured).min().unwrap_or_else(Instant::now);
        packet
    }

    /// Negatives for `windows`, partners drawn from `pool` (or the batch itself while the pool
    /// is empty).
    fn negatives_for(&self, windows: &[Window], pool: &[Vec<f32>], rng: &mut Rng) -> Vec<Vec<f32>> {
        (0..windows.len())
            .map(|i| {
                let partner = if pool.is_empty() {
                    &windows[(i + 1) % windows.len()].values
                } else {
                    &pool[rng.below(pool.len())]
                };
                self.negative(&windows[i].values, partner, rng)
            })
            .collect()
    }

    /// One negative window made from `real` and `partner` by the configured generator.
    fn negative(&self, real: &[f32], partner: &[f32], rng: &mut Rng) -> Vec<f32> {
        let c = &self.config;
        let mut out = vec![0.0; c.window * c.frame_len];
        make_negative(c.negatives, real, partner, c.window, c.frame_len, &self.masks, c.channels, rng, &mut out);
        out
    }

    fn send_batch(
        &mut self,
        epoch: u32,
        batch: &mut Vec<Window>,
        rng: &mut Rng,
        phases: &mut WakeSleep,
        io: &mut dyn HeadIo,
    ) -> Result<(), Interrupted> {
        if batch.is_empty() {
            return Ok(());
        }
        let negatives = match phases.phase() {
            Phase::Interleaved => self.negatives_for(batch, self.replay.items(), rng),
            Phase::Wake | Phase::Sleep => Vec::new(), // awake: positives only
        };
        let seq = self.next_seq();
        let packet = self.packet(seq, epoch, Purpose::Train, batch, negatives);
        for w in batch.drain(..) {
            self.replay.offer(w.values, rng);
        }
        if let Some(first) = self.replay.items().first() {
            phases.stored(self.replay.len() * first.len() * 4);
        }
        self.publish_feed();
        io.emit(Message::Data(packet))?;
        if !phases.count_wake_packet() {
            return Ok(());
        }
        // Asleep, packets of negatives made from the replay memory alone: each a hybrid of two
        // remembered windows.
        phases.sleep(io, |_, _| {
            let negatives: Vec<Vec<f32>> = (0..self.config.batch)
                .map(|_| {
                    let pool = self.replay.items();
                    let real = &pool[rng.below(pool.len())];
                    let partner = &pool[rng.below(pool.len())];
                    self.negative(real, partner, rng)
                })
                .collect();
            let seq = self.next_seq();
            let packet = self.packet(seq, epoch, Purpose::Train, &[], negatives);
            // A live feed goes on decoding (and dropping) while the head sleeps.
            self.publish_feed();
            Ok(packet)
        })
    }

    /// Fixes the held-out negatives once the held-out windows are known.
    fn seal_held_out(&mut self) {
        if !self.held_out_negatives.is_empty() || self.held_out.is_empty() {
            return;
        }
        let mut rng = Rng::derive(self.config.seed, "video.holdout", 0);
        // Partners come from the held-out set itself, so evaluation never depends on the replay
        // memory's state.
        let pool: Vec<Vec<f32>> = self.held_out.iter().map(|w| w.values.clone()).collect();
        self.held_out_negatives = self.negatives_for(&self.held_out, &pool, &mut rng);
    }

    fn evaluate(&mut self, epoch: u32, io: &mut dyn HeadIo) -> Result<(), Interrupted> {
        self.seal_held_out();
        let batch = self.config.batch.max(1);
        let first = self.seq;
        self.seq += self.held_out.len().div_ceil(batch) as u64;
        let chunks = self.held_out.chunks(batch).zip(self.held_out_negatives.chunks(batch));
        for (k, (windows, negatives)) in chunks.enumerate() {
            let packet = self.packet(first + k as u64, epoch, Purpose::Validate, windows, negatives.to_vec());
            io.emit(Message::Data(packet))?;
        }
        Ok(())
    }

    fn load_feed_holdout(&mut self) -> Result<(), FeedError> {
        let Some(frames) = self.feed.holdout()? else { return Ok(()) };
        let mut windows = Windows::new(self.config.window);
        for frame in frames {
            if self.held_out.len() == self.config.eval_windows {
                break;
            }
            if let Some(recent) = windows.push(frame) {
                let w = self.window_of(recent);
                self.held_out.push(w);
            }
        }
        Ok(())
    }

    /// Plays every epoch, or says why it stopped early (Ctrl-C, downstream gone, the feed
    /// failed).
    pub fn run(&mut self, io: &mut dyn HeadIo) -> Result<(), Interrupted> {
        self.load_feed_holdout().map_err(Self::fail)?;
        let own_holdout = self.held_out.is_empty();
        let mut counted = self.feed.counters();
        let mut warned = false;
        for epoch in self.config.first_epoch..=self.config.epochs {
            // A reopen cut short by Ctrl-C (a FIFO waiting for its writer) is a stop, not a failure.
            let stop = &self.stop;
            self.feed.start_epoch(epoch).map_err(|e| {
                if stop.load(Ordering::Relaxed) {
                    Interrupted::Stopped
                } else {
                    Self::fail(e)
                }
            })?;
            let mut rng = Rng::derive(self.config.seed, "video.negatives", epoch as u64);
            // Every epoch is self-contained (the replay memory starts empty), so a run resumed
            // at an epoch boundary makes the same negatives as one that never stopped.
            self.replay.clear();
            let mut windows = Windows::new(self.config.window);
            let mut batch: Vec<Window> = Vec::with_capacity(self.config.batch);
            // Every epoch starts awake with a fresh phase (self-contained, like the replay memory).
            let mut phases =
                WakeSleep::at_epoch_start(self.config.schedule, 0, self.progress.clone(), Arc::clone(&self.stop));
            let (mut frames, mut trained) = (0u64, 0usize);
            loop {
                if self.stop.load(Ordering::Relaxed) {
                    return Err(Interrupted::Stopped);
                }
                let frame = match self.feed.next_frame() {
                    Ok(Some(frame)) => frame,
                    // A feed also ends when the stop flag reaches it: that is not the end of
                    // the epoch, which must not be checkpointed as if it were.
                    Ok(None) if self.stop.load(Ordering::Relaxed) => return Err(Interrupted::Stopped),
                    Ok(None) => break,
                    Err(e) => return Err(Self::fail(e)),
                };
                frames += 1;
                let Some(recent) = windows.push(frame) else { continue };
                // Invariant: `Windows` hands out only full windows, of at least one frame.
                let index = recent.back().expect("a full window").index;
                if own_holdout && self.held_out_window(index) {
                    if self.held_out.len() < self.config.eval_windows && self.held_out_negatives.is_empty() {
                        let window = self.window_of(recent);
                        self.held_out.push(window);
                    }
                    continue;
                }
                batch.push(self.window_of(recent));
                trained += 1;
                if batch.len() == self.config.batch {
                    self.send_batch(epoch, &mut batch, &mut rng, &mut phases, io)?;
                }
            }
            if trained == 0 {
                return Err(Self::fail(FeedError::NoWindow { epoch, frames, window: self.config.window }));
            }
            self.send_batch(epoch, &mut batch, &mut rng, &mut phases, io)?;
            let now = self.feed.counters();
            if !warned {
                warned = warn_of_drops(epoch, &counted, &now);
            }
            counted = now;
            phases.end_epoch();
            self.evaluate(epoch, io)?;
            io.emit(Message::EpochEnd { epoch, stamp: Instant::now() })?;
        }
        Ok(())
    }
}

/// Warns (once a run: returns true) when a live source dropped most of an epoch's frames: the
/// counts are in the record, but a camera pipeline pointed at a file or an unpaced generator
/// learning from a tenth of its frames should be said at the time.
fn warn_of_drops(epoch: u32, before: &FeedCounters, now: &FeedCounters) -> bool {
    let decoded = now.decoded.saturating_sub(before.decoded);
    let dropped = now.dropped.saturating_sub(before.dropped);
    let most = decoded >= 100 && dropped * 2 > decoded;
    if most {
        tracing::warn!(
            "epoch {epoch}: the source dropped {dropped} of its {decoded} frames ({:.0}%): the stages are slower than it and `source.drop` lets the surplus go; to learn from every frame of a file, set `source.drop = \"block\"`",
            100.0 * dropped as f64 / decoded as f64
        );
    }
    most
}

impl crate::runtime::Head for VideoHead {
    fn run(&mut self, io: &mut dyn HeadIo) -> Result<(), Interrupted> {
        VideoHead::run(self, io)
    }
}
