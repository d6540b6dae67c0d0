//! Aesop's self-generated negatives (the paper's E8, §4.1 of the early version): the network
//! dreams whole strings from the first 10 characters of real ones, and their windows are the
//! negatives, learned interleaved with the real windows or asleep (see [`super::sleep`]).

use std::collections::VecDeque;
use std::sync::Arc;

use ndarray::Array2;

use super::{LabelledHead, Rows};
use crate::data::aesop;
use crate::negative::sampled_label;
use crate::packet::{Message, Purpose};
use crate::reservoir::Reservoir;
use crate::rng::Rng;
use crate::runtime::{Closed, HeadIo, Interrupted};
use crate::schedule::PhaseSchedule;
use crate::source::FrameBatch;

impl LabelledHead {
    /// An epoch whose negatives the network generates itself (sequence data: Aesop, E8).
    ///
    /// A dream starts from the first 10 characters of some training strings and lets the
    /// network write the other 90, one character at a time: the context's neutral-label rows go
    /// through the stages, the readout's softmax comes back, the next character is drawn from
    /// it. The 90 windows of each dreamt string are negatives, shuffled into a pool that the
    /// training packets draw from; a new dream starts when the pool runs short.
    ///
    /// Interleaved: every packet holds real windows (positives), pool windows (negatives) and
    /// the real windows with the neutral label (the readout learns from those); dreams start
    /// from the epoch's strings in a shuffled order. Wake and sleep: awake, positives and
    /// neutral rows only, and each string seen is offered to the replay memory (only its
    /// first 10 characters are needed); asleep, the source waits and packets of pool negatives
    /// are learned, dreams starting from remembered strings.
    pub(super) fn play_epoch_generated(&mut self, epoch: u32, io: &mut dyn HeadIo) -> Result<(), Interrupted> {
        let data = Arc::clone(&self.data);
        let source = self.config.source.clone();
        let mut rng = Rng::derive(source.seed, "dream", epoch as u64);
        let phased = self.config.schedule != PhaseSchedule::Interleaved;
        let mut phases = self.epoch_wake_sleep(epoch);
        let mut seeds: Vec<u32> = (0..data.sequences.len() as u32).collect();
        rng.shuffle(&mut seeds);
        let mut next_seed = 0;
        let mut replay: Reservoir<u32> = Reservoir::new(self.config.replay);
        let mut dreams = Dreams::default();
        let strings = self.config.dream_strings.max(1);
        for batch in source.epoch_batches(&data.train, epoch) {
            if self.stopped() {
                return Err(Interrupted::Stopped);
            }
            let n = batch.labels.len();
            if !phased {
                while dreams.pool.len() < n {
                    let starts: Vec<u32> = (0..strings).map(|k| seeds[(next_seed + k) % seeds.len()]).collect();
                    next_seed += strings;
                    self.dream(epoch, &starts, &mut dreams, &mut rng, io)?;
                }
                let negatives = dreams.take(n, data.train.width());
                let groups = [(&batch, Rows::Truth), (&negatives, Rows::Truth), (&batch, Rows::Neutral)];
                let packet = self.packet(epoch, Purpose::Train, &groups, [n, n, n]);
                dreams.outstanding += n;
                io.emit(Message::Data(packet))?;
                continue;
            }
            let groups = [(&batch, Rows::Truth), (&batch, Rows::Neutral)];
            let packet = self.packet(epoch, Purpose::Train, &groups, [n, 0, n]);
            dreams.outstanding += n;
            io.emit(Message::Data(packet))?;
            for &row in &batch.index {
                replay.offer(row / aesop::PREDICTED as u32, &mut rng);
            }
            phases.stored(dreams.memory_bytes(replay.len()));
            if !phases.count_wake_packet() {
                continue;
            }
            let slept = phases.sleep(io, |io, phases| {
                while dreams.pool.len() < n {
                    let remembered = replay.items();
                    let starts: Vec<u32> = (0..strings).map(|_| remembered[rng.below(remembered.len())]).collect();
                    self.dream(epoch, &starts, &mut dreams, &mut rng, io)?;
                    phases.stored(dreams.memory_bytes(replay.len()));
                }
                let negatives = dreams.take(n, data.train.width());
                Ok(self.sleep_packet(epoch, &negatives, &negatives.labels))
            });
            slept?;
        }
        phases.end_epoch();
        // The readout's logits for the last packets are still due: take them so the feedback
        // channel is empty at the epoch's end (a resumed run starts from the same place).
        Ok(dreams.settle(io)?)
    }

    /// Generates the last 90 characters of the training strings `starts` from their first 10
    /// and adds their windows to the pool, shuffled.
    fn dream(
        &mut self,
        epoch: u32,
        starts: &[u32],
        dreams: &mut Dreams,
        rng: &mut Rng,
        io: &mut dyn HeadIo,
    ) -> Result<(), Interrupted> {
        // Logits of training packets still in flight come back first.
        dreams.settle(io)?;
        let data = Arc::clone(&self.data);
        let width = data.train.width();
        let mut text: Vec<Vec<u8>> =
            starts.iter().map(|&s| data.sequences[s as usize][..aesop::GIVEN].to_vec()).collect();
        for t in aesop::GIVEN..aesop::LENGTH {
            let windows: Vec<(&[u8], u8)> = text.iter().map(|s| (&s[t - aesop::CONTEXT..t], 0)).collect();
            let contexts = window_batch(&windows, width);
            let mut packet = self.packet(epoch, Purpose::Dream, &[(&contexts, Rows::Neutral)], [0, 0, starts.len()]);
            packet.frames = 0; // dreams are not frames of the stream
            io.emit(Message::Data(packet))?;
            let mut k = 0;
            while k < text.len() {
                let p = io.prediction().ok_or(Closed)?;
                for row in p.logits.outer_iter() {
                    // Invariant: the readout makes its logits as a fresh standard-layout array.
                    let next = sampled_label(row.as_slice().expect("contiguous logits"), rng);
                    text[k].push(next);
                    k += 1;
                }
            }
        }
        let mut windows: Vec<(Vec<u8>, u8)> = text
            .iter()
            .flat_map(|s| (aesop::GIVEN..aesop::LENGTH).map(move |t| (s[t - aesop::CONTEXT..t].to_vec(), s[t])))
            .collect();
        rng.shuffle(&mut windows);
        dreams.pool.extend(windows);
        Ok(())
    }
}

/// Negatives the network has dreamt and not yet learned from, and the readout's logits still
/// due for packets sent with neutral rows.
#[derive(Default)]
struct Dreams {
    /// `(context, last character)` windows of generated text.
    pool: VecDeque<(Vec<u8>, u8)>,
    /// Neutral rows sent whose logits have not come back.
    outstanding: usize,
}

impl Dreams {
    /// The next `n` pool windows as a batch of rows (the pool holds at least `n`).
    fn take(&mut self, n: usize, width: usize) -> FrameBatch {
        let windows: Vec<(Vec<u8>, u8)> = self.pool.drain(..n).collect();
        let views: Vec<(&[u8], u8)> = windows.iter().map(|(c, l)| (c.as_slice(), *l)).collect();
        window_batch(&views, width)
    }

    /// Bytes of sleep memory with `remembered` strings in the replay memory: a remembered
    /// string is its first 10 characters, a dreamt window 10 characters.
    fn memory_bytes(&self, remembered: usize) -> usize {
        (remembered + self.pool.len()) * aesop::GIVEN
    }

    /// Takes every logit still due; an error when the sink is gone.
    fn settle(&mut self, io: &mut dyn HeadIo) -> Result<(), Closed> {
        while self.outstanding > 0 {
            let p = io.prediction().ok_or(Closed)?;
            self.outstanding = self.outstanding.saturating_sub(p.logits.nrows());
        }
        Ok(())
    }
}

/// Rows of Aesop windows `(context, class)`, the label slots left for the head.
fn window_batch(windows: &[(&[u8], u8)], width: usize) -> FrameBatch {
    let mut pixels = Array2::zeros((windows.len(), width));
    let mut bytes = vec![0u8; width];
    for ((context, _), mut row) in windows.iter().zip(pixels.outer_iter_mut()) {
        aesop::context_into(context, &mut bytes);
        row.iter_mut().zip(&bytes).for_each(|(v, &b)| *v = b as f32 / 255.0);
    }
    FrameBatch { pixels, index: vec![u32::MAX; windows.len()], labels: windows.iter().map(|w| w.1).collect() }
}
