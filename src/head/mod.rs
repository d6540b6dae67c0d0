//! The head of the pipeline: plays the source as packets and chooses the negatives.
//!
//! Per training batch the head writes the true label into the label pixels of each frame
//! (positives) and a wrong label (negatives), and adds neutral-label rows that the readout
//! learns from and predicts on. Hard negatives need those predictions: in Hinton's Matlab code
//! a neutral-label pass runs on the *same* minibatch with the *same* weights just before the
//! negative pass. In a pipeline that prediction has to come back from the sink, so:
//!
//! - `prediction_delay = 0` is the exact Matlab order: the head sends the neutral rows of batch
//!   t alone, waits for the readout's prediction to come back, then sends batch t's positives
//!   and negatives. Exact, but the pipeline drains once per batch.
//! - `prediction_delay = d ≥ 1` sends the neutral rows of batch t+d inside the packet of batch
//!   t. By the time batch t+d is due its prediction is back, computed with weights that are d
//!   updates older than Matlab's. The pipeline stays full. Deviation from the paper: the effect
//!   is measured against the exact order (README, results).
//!
//! Every epoch is self-contained (the first d batches' neutral rows go in one priming packet),
//! so a run resumed at an epoch boundary continues exactly.
//!
//! Wake and sleep phases (MNIST's replay memory here, Aesop's dreams, frame streams) all run
//! through `head/sleep.rs`; Aesop's self-generated negatives are in `dreams.rs`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ndarray::{s, Array2};

use crate::data::{Labelled, Split};
use crate::metrics::Progress;
use crate::negative::{hard_label, wrong_label};
use crate::packet::{Message, Packet, Purpose, NEUTRAL};
use crate::reservoir::Reservoir;
use crate::rng::Rng;
use crate::runtime::{Closed, HeadIo, Interrupted};
use crate::schedule::PhaseSchedule;
use crate::source::{DatasetSource, FrameBatch};
use sleep::WakeSleep;

mod dreams;
pub(crate) mod sleep;

/// How wrong labels are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativeLabels {
    /// Uniform over the wrong labels.
    Random,
    /// In proportion to the readout's softmax, the true label excluded (Matlab). On Aesop this
    /// is the paper's teacher forcing: the real context with the last character replaced by
    /// one the network predicts.
    Hard,
    /// Sequence data only: whole windows of text the network generates itself from the first
    /// 10 characters of a training string (the paper's self-generated negatives, E8). Context
    /// and last character are both the network's.
    Generated,
}

/// The rows a group of frames gives a packet, and the label each row carries.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rows<'a> {
    /// Each frame once, with its true label (positives).
    Truth,
    /// Each frame once, with the label given for it (negatives).
    Given(&'a [u8]),
    /// Each frame once, with the neutral label (the readout's rows).
    Neutral,
    /// Each frame once per class, with each class in turn (the goodness test's candidates).
    EachClass,
}

impl Rows<'_> {
    /// The rows this gives `frames` frames of a `classes`-class dataset.
    fn rows(self, frames: usize, classes: usize) -> usize {
        match self {
            Rows::EachClass => frames * classes,
            Rows::Truth | Rows::Given(_) | Rows::Neutral => frames,
        }
    }

    /// The label of the group's row `k`, whose frame has the class `truth`.
    fn label(self, k: usize, truth: u8, classes: usize) -> u8 {
        match self {
            Rows::Truth => truth,
            Rows::Given(labels) => labels[k],
            Rows::Neutral => NEUTRAL,
            Rows::EachClass => (k % classes) as u8,
        }
    }
}

/// How the head plays the data.
#[derive(Clone, Debug)]
pub struct HeadConfig {
    /// The source (batch size, jitter, seed).
    pub source: DatasetSource,
    /// First epoch to play (1-based; > 1 after a resume).
    pub first_epoch: u32,
    /// Last epoch.
    pub epochs: u32,
    /// Wrong-label rule.
    pub negatives: NegativeLabels,
    /// Batches between a neutral pass and the negatives it chooses (see the module doc).
    pub prediction_delay: usize,
    /// Value written in the label pixel (Matlab `labelstrength`, 1).
    pub label_strength: f32,
    /// Whether the label goes into the first pixels of each row (Matlab, E3). A recurrent net
    /// takes it as its top layer instead (each row's `embedded` label), and its pixels stay
    /// the image's.
    pub label_pixels: bool,
    /// Validate every this many epochs (and after the last).
    pub eval_every: u32,
    /// Images per evaluation packet.
    pub eval_batch: usize,
    /// Training images measured without learning after the last epoch (0: none).
    pub train_eval_size: usize,
    /// Whether to run the test split after the last epoch.
    pub test_at_end: bool,
    /// Epochs after which the test split is also run (a speedrun's checkpoints).
    pub test_at: Vec<u32>,
    /// Interleaved (the paper's runs), or wake and sleep phases (see [`crate::schedule`]).
    pub schedule: PhaseSchedule,
    /// Frames kept in the sleep replay memory (a reservoir sample of the epoch's frames, with
    /// the readout's logits for each): the only storage sleep uses. With generated negatives,
    /// strings whose first 10 characters a dream may start from.
    pub replay: usize,
    /// Generated negatives: strings generated per dream (each gives 90 negative windows, used
    /// up before the next dream, so it sets how stale a generated negative can be).
    pub dream_strings: usize,
}

/// Plays a dataset through the pipeline.
pub struct LabelledHead {
    config: HeadConfig,
    data: Arc<Labelled>,
    seq: u64,
    stop: Arc<AtomicBool>,
    evaluate_only: bool,
    /// Where the phase and what is left of it are published for the live view.
    progress: Option<Arc<Progress>>,
}

impl LabelledHead {
    /// A head over `data`; it stops early (at the next packet) once `stop` is set.
    pub fn new(config: HeadConfig, data: Arc<Labelled>, stop: Arc<AtomicBool>) -> LabelledHead {
        LabelledHead { config, data, seq: 0, stop, evaluate_only: false, progress: None }
    }

    /// Publishes the wake/sleep phase to `progress` (the live view and metrics.jsonl).
    pub fn publish_to(&mut self, progress: Arc<Progress>) {
        self.progress = Some(progress);
    }

    /// The wake/sleep schedule where `epoch` starts: wake phases run on across epochs (every
    /// epoch plays the same number of wake packets, so the position is known without any state).
    fn epoch_wake_sleep(&self, epoch: u32) -> WakeSleep {
        let batches = self.data.train.len() / self.config.source.batch.max(1);
        let wake_before = (epoch.saturating_sub(1) as u64) * batches as u64;
        WakeSleep::at_epoch_start(self.config.schedule, wake_before, self.progress.clone(), Arc::clone(&self.stop))
    }

    /// Plays no training epoch: only the validation and test splits, then one epoch marker.
    pub fn evaluate_only(&mut self) {
        self.evaluate_only = true;
    }

    /// Plays every epoch, or says why it stopped early (Ctrl-C or downstream gone).
    pub fn run(&mut self, io: &mut dyn HeadIo) -> Result<(), Interrupted> {
        if self.evaluate_only {
            let data = Arc::clone(&self.data);
            let epoch = self.config.epochs;
            self.evaluate(&data.validation, Purpose::Validate, epoch, io)?;
            self.evaluate(&data.test, Purpose::Test, epoch, io)?;
            return Ok(io.emit(Message::EpochEnd { epoch, stamp: Instant::now() })?);
        }
        for epoch in self.config.first_epoch..=self.config.epochs {
            self.play_epoch(epoch, io)?;
            let last = epoch == self.config.epochs;
            let data = Arc::clone(&self.data);
            if epoch % self.config.eval_every.max(1) == 0 || last {
                self.evaluate(&data.validation, Purpose::Validate, epoch, io)?;
            }
            if (last && self.config.test_at_end) || self.config.test_at.contains(&epoch) {
                self.evaluate(&data.test, Purpose::Test, epoch, io)?;
            }
            if last && self.config.train_eval_size > 0 {
                let subset = data.train.head(self.config.train_eval_size);
                self.evaluate(&subset, Purpose::TrainEval, epoch, io)?;
            }
            io.emit(Message::EpochEnd { epoch, stamp: Instant::now() })?;
        }
        Ok(())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn play_epoch(&mut self, epoch: u32, io: &mut dyn HeadIo) -> Result<(), Interrupted> {
        if self.config.negatives == NegativeLabels::Generated {
            return self.play_epoch_generated(epoch, io);
        }
        if self.config.schedule != PhaseSchedule::Interleaved {
            return self.play_epoch_phased(epoch, io);
        }
        let data = Arc::clone(&self.data);
        let source = self.config.source.clone();
        let mut batches = source.epoch_batches(&data.train, epoch);
        let mut rng = Rng::derive(self.config.source.seed, "negatives", epoch as u64);
        // Each batch's wrong labels, in one buffer for the epoch.
        let mut negatives: Vec<u8> = Vec::with_capacity(self.config.source.batch);
        if self.config.negatives == NegativeLabels::Random {
            for batch in batches {
                if self.stopped() {
                    return Err(Interrupted::Stopped);
                }
                negatives.clear();
                negatives.extend(batch.labels.iter().map(|&t| wrong_label(t, data.classes, &mut rng)));
                let packet = self.train_packet(epoch, &batch, &negatives, Some(&batch));
                batch.recycle();
                io.emit(Message::Data(packet))?;
            }
            return Ok(());
        }
        // Hard negatives: keep the batches whose neutral rows are in flight.
        let delay = self.config.prediction_delay;
        let mut waiting: VecDeque<FrameBatch> = VecDeque::new();
        // The logits of the neutral rows in flight, `classes` a row, flat: no allocation a row.
        let mut logits: VecDeque<f32> = VecDeque::new();
        let mut row: Vec<f32> = Vec::with_capacity(data.classes);
        if delay > 0 {
            waiting.extend(batches.by_ref().take(delay));
            if !waiting.is_empty() {
                let prime = self.predict_packet(epoch, waiting.iter());
                io.emit(Message::Data(prime))?;
            }
        }
        loop {
            if self.stopped() {
                return Err(Interrupted::Stopped);
            }
            let batch = if delay == 0 {
                let Some(batch) = batches.next() else { break };
                let packet = self.predict_packet(epoch, std::iter::once(&batch));
                io.emit(Message::Data(packet))?;
                batch
            } else {
                let Some(batch) = waiting.pop_front() else { break };
                batch
            };
            let width = data.classes;
            while logits.len() < batch.labels.len() * width {
                let prediction = io.prediction().ok_or(Closed)?;
                // The readout is built with the dataset's class count (config::build).
                debug_assert_eq!(prediction.logits.ncols(), width);
                logits.extend(prediction.logits.iter());
                crate::recycle::give_array(prediction.logits);
            }
            negatives.clear();
            negatives.extend(batch.labels.iter().map(|&truth| {
                row.clear();
                // The loop above filled at least one logit row per label.
                row.extend(logits.drain(..width));
                hard_label(&row, truth, &mut rng)
            }));
            let ahead = if delay > 0 { batches.next() } else { None };
            let packet = self.train_packet(epoch, &batch, &negatives, ahead.as_ref());
            if let Some(next) = ahead {
                waiting.push_back(next);
            }
            batch.recycle();
            io.emit(Message::Data(packet))?;
        }
        Ok(())
    }

    /// An epoch in wake and sleep phases.
    ///
    /// Awake: packets of positives (the true label) and the same frames with the neutral
    /// label; the readout learns from the neutral rows and its logits come back. Frames and
    /// their logits go into the replay memory. Asleep: the source is paused, and packets of
    /// negatives only are made from the replay memory: a remembered frame with a wrong label
    /// drawn from the network's own probabilities for it (Matlab's hard negatives, made by the
    /// network itself) or a uniform wrong label. The logits are the readout's when the frame
    /// passed awake, so a sleep needs no stored activities. The phases are run by
    /// [`sleep::WakeSleep`]; only the making of one sleep packet is here.
    fn play_epoch_phased(&mut self, epoch: u32, io: &mut dyn HeadIo) -> Result<(), Interrupted> {
        let data = Arc::clone(&self.data);
        let source = self.config.source.clone();
        let mut rng = Rng::derive(self.config.source.seed, "negatives", epoch as u64);
        let mut phases = self.epoch_wake_sleep(epoch);
        let hard = self.config.negatives == NegativeLabels::Hard;
        // (pixels, truth, index, logits) of remembered frames; frames awaiting their logits.
        let mut replay: Reservoir<(Vec<f32>, u8, u32, Vec<f32>)> = Reservoir::new(self.config.replay);
        let mut pending: VecDeque<FrameBatch> = VecDeque::new();
        for batch in source.epoch_batches(&data.train, epoch) {
            if self.stopped() {
                return Err(Interrupted::Stopped);
            }
            let n = batch.labels.len();
            let packet =
                self.packet(epoch, Purpose::Train, &[(&batch, Rows::Truth), (&batch, Rows::Neutral)], [n, 0, n]);
            io.emit(Message::Data(packet))?;
            pending.push_back(batch);
            if !phases.count_wake_packet() {
                continue;
            }
            // Fall asleep: first collect the logits of every frame seen awake.
            let draining = std::time::Instant::now();
            for batch in pending.drain(..) {
                let logits: Vec<Vec<f32>> = if hard {
                    let mut rows = Vec::new();
                    while rows.len() < batch.labels.len() {
                        let p = io.prediction().ok_or(Closed)?;
                        rows.extend(p.logits.outer_iter().map(|r| r.to_vec()));
                    }
                    rows
                } else {
                    vec![Vec::new(); batch.labels.len()]
                };
                for (k, l) in logits.into_iter().enumerate() {
                    replay.offer((batch.pixels.row(k).to_vec(), batch.labels[k], batch.index[k], l), &mut rng);
                }
                // A remembered frame: its pixels and logits as f32, its label and index.
                let item = 4 * (data.train.width() + data.classes) + 5;
                phases.stored(replay.len() * item);
            }
            phases.waited_to_switch(draining.elapsed());
            let slept = phases.sleep(io, |_, _| {
                let batch_size = self.config.source.batch;
                let remembered = replay.items();
                let picks: Vec<usize> = (0..batch_size).map(|_| rng.below(remembered.len())).collect();
                let mut pixels = Array2::zeros((batch_size, data.train.width()));
                for (r, &i) in picks.iter().enumerate() {
                    // Invariant: rows of a fresh standard-layout array are contiguous.
                    pixels.row_mut(r).as_slice_mut().expect("row").copy_from_slice(&remembered[i].0);
                }
                let batch = FrameBatch {
                    pixels,
                    index: picks.iter().map(|&i| remembered[i].2).collect(),
                    labels: picks.iter().map(|&i| remembered[i].1).collect(),
                };
                let wrong: Vec<u8> = picks
                    .iter()
                    .map(|&i| {
                        let (_, truth, _, logits) = &remembered[i];
                        if hard {
                            hard_label(logits, *truth, &mut rng)
                        } else {
                            wrong_label(*truth, data.classes, &mut rng)
                        }
                    })
                    .collect();
                Ok(self.sleep_packet(epoch, &batch, &wrong))
            });
            slept?;
        }
        phases.end_epoch();
        // Predictions of the last wake packets are still due: take them so the pipeline's
        // feedback channel is empty at the epoch's end.
        if hard {
            let due: usize = pending.iter().map(|b| b.labels.len()).sum();
            let mut got = 0;
            while got < due {
                let p = io.prediction().ok_or(Closed)?;
                got += p.logits.nrows();
            }
        }
        Ok(())
    }

    /// One packet of negatives for a sleep phase: `labels` embedded in `batch`'s rows.
    fn sleep_packet(&mut self, epoch: u32, batch: &FrameBatch, labels: &[u8]) -> Packet {
        let n = labels.len();
        self.packet(epoch, Purpose::Train, &[(batch, Rows::Given(labels))], [0, n, 0])
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq - 1
    }

    fn write_label(&self, row: &mut [f32], label: u8) {
        if !self.config.label_pixels {
            return;
        }
        let strength = self.config.label_strength;
        let classes = self.data.classes;
        for (j, v) in row[..classes].iter_mut().enumerate() {
            *v = if label == NEUTRAL {
                strength / classes as f32
            } else if j == label as usize {
                strength
            } else {
                0.0
            };
        }
    }

    /// Builds a packet from groups of frames and the labels their rows carry, on pooled
    /// buffers ([`crate::recycle`]: the sink gives each packet's back).
    fn packet(&mut self, epoch: u32, purpose: Purpose, groups: &[(&FrameBatch, Rows)], counts: [usize; 3]) -> Packet {
        let rows: usize = groups.iter().map(|(batch, labels)| labels.rows(batch.labels.len(), self.data.classes)).sum();
        // Stale contents: every row is copied in whole below.
        let x = crate::recycle::array((rows, self.data.train.width()));
        let mut packet = crate::recycle::packet(self.next_seq(), epoch, purpose, x);
        let mut r = 0;
        for &(batch, labels) in groups {
            let per_frame = labels.rows(1, self.data.classes);
            for k in 0..labels.rows(batch.labels.len(), self.data.classes) {
                let f = k / per_frame;
                let label = labels.label(k, batch.labels[f], self.data.classes);
                let mut row = packet.x.slice_mut(s![r, ..]);
                // Invariant: rows of standard-layout arrays (the packet's and the batch's) are
                // contiguous.
                let row = row.as_slice_mut().expect("row");
                row.copy_from_slice(batch.pixels.row(f).as_slice().expect("row"));
                self.write_label(row, label);
                packet.frame[r] = batch.index[f];
                packet.truth[r] = batch.labels[f];
                packet.embedded[r] = label;
                r += 1;
            }
        }
        packet.positives = counts[0];
        packet.negatives = counts[1];
        packet.neutral = counts[2];
        packet.frames = groups.iter().map(|(b, _)| b.labels.len()).max().unwrap_or(0);
        packet
    }

    fn train_packet(
        &mut self,
        epoch: u32,
        batch: &FrameBatch,
        negatives: &[u8],
        neutral: Option<&FrameBatch>,
    ) -> Packet {
        let n = batch.labels.len();
        let neutral_rows = neutral.map_or(0, |ahead| ahead.labels.len());
        let groups = [(batch, Rows::Truth), (batch, Rows::Given(negatives)), (neutral.unwrap_or(batch), Rows::Neutral)];
        let used = if neutral.is_some() { 3 } else { 2 };
        self.packet(epoch, Purpose::Train, &groups[..used], [n, n, neutral_rows])
    }

    fn predict_packet<'a>(&mut self, epoch: u32, batches: impl Iterator<Item = &'a FrameBatch>) -> Packet {
        let groups: Vec<(&FrameBatch, Rows)> = batches.map(|b| (b, Rows::Neutral)).collect();
        let rows = groups.iter().map(|(b, _)| b.labels.len()).sum();
        let mut packet = self.packet(epoch, Purpose::Predict, &groups, [0, 0, rows]);
        // These frames are counted when their training packet passes.
        packet.frames = 0;
        packet
    }

    /// Candidate rows (each image with each label) for the goodness test, then neutral rows.
    fn evaluate(
        &mut self,
        split: &Split,
        purpose: Purpose,
        epoch: u32,
        io: &mut dyn HeadIo,
    ) -> Result<(), Interrupted> {
        let source = self.config.source.clone();
        for batch in source.ordered_batches(split, self.config.eval_batch) {
            if self.stopped() {
                return Err(Interrupted::Stopped);
            }
            let n = batch.labels.len();
            let packet = self.packet(epoch, purpose, &[(&batch, Rows::EachClass), (&batch, Rows::Neutral)], [0, 0, n]);
            batch.recycle();
            io.emit(Message::Data(packet))?;
        }
        Ok(())
    }
}

impl crate::runtime::Head for LabelledHead {
    fn run(&mut self, io: &mut dyn HeadIo) -> Result<(), Interrupted> {
        LabelledHead::run(self, io)
    }
}
