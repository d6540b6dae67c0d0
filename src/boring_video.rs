//! A static image as a "boring video" (paper §3.4): a recurrent net sees each batch of rows
//! for several steps, and is scored on its goodness over a window of those steps.
//!
//! ```text
//!   {head} -> [Repeat: each packet as steps 0..=T] -> (stages) -> [Join: one packet] -> {sink}
//! ```
//!
//! [`Repeat`] wraps any head: every data packet it plays goes down the pipeline `steps` times,
//! the same rows with `step = 0, 1, ...` (step 0 is the bottom-up pass that initializes the
//! hidden states; the source's frames are counted once, at step 0). [`Join`] wraps any sink:
//! it sums each row's goodness over the steps of `goodness_steps` (the paper averages over
//! iterations 3 to 5, the same argmax), and hands the sink one packet per batch, the last
//! step's, with those sums. The stages add the readout's features at the last step only, so
//! the sink, the readout and the hard negatives work unchanged; the head gets one prediction
//! per packet it sent, as without steps.

use std::ops::RangeInclusive;

use crate::packet::{Message, Packet, Prediction, StageState};
use crate::runtime::{Closed, EpochReport, Head, HeadIo, Interrupted, Sink};

/// A head whose data packets are played for `steps` steps each.
pub struct Repeat<H> {
    inner: H,
    steps: u32,
}

impl<H> Repeat<H> {
    /// Plays every data packet of `inner` `steps` times (at least once).
    pub fn new(inner: H, steps: u32) -> Repeat<H> {
        Repeat { inner, steps: steps.max(1) }
    }

    /// The wrapped head.
    pub fn inner(&self) -> &H {
        &self.inner
    }

    /// The wrapped head, mutable.
    pub fn inner_mut(&mut self) -> &mut H {
        &mut self.inner
    }
}

struct Steps<'a> {
    io: &'a mut dyn HeadIo,
    steps: u32,
}

impl HeadIo for Steps<'_> {
    fn emit(&mut self, message: Message) -> Result<(), Closed> {
        let Message::Data(mut packet) = message else { return self.io.emit(message) };
        packet.steps = self.steps;
        for step in 0..self.steps - 1 {
            let mut p = packet.clone();
            p.step = step;
            if step > 0 {
                p.frames = 0; // the same frames: counted once
            }
            self.io.emit(Message::Data(p))?;
        }
        packet.step = self.steps - 1;
        if self.steps > 1 {
            packet.frames = 0;
        }
        self.io.emit(Message::Data(packet))
    }

    fn prediction(&mut self) -> Option<Prediction> {
        self.io.prediction()
    }
}

impl<H: Head> Head for Repeat<H> {
    fn run(&mut self, io: &mut dyn HeadIo) -> Result<(), Interrupted> {
        let mut steps = Steps { io, steps: self.steps };
        self.inner.run(&mut steps)
    }
}

/// A sink that sees one packet per batch of rows, whatever the number of steps.
pub struct Join<S> {
    inner: S,
    goodness_steps: RangeInclusive<u32>,
    /// The batch being joined: its sequence number, summed goodness, summed goodness per stage.
    current: Option<(u64, Vec<f32>, Vec<Vec<f32>>)>,
}

impl<S> Join<S> {
    /// Joins the steps of each batch for `inner`, summing goodness over `goodness_steps`.
    pub fn new(inner: S, goodness_steps: RangeInclusive<u32>) -> Join<S> {
        Join { inner, goodness_steps, current: None }
    }

    /// The wrapped sink.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The wrapped sink, mutable.
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: Sink> Sink for Join<S> {
    fn consume(&mut self, packet: &Packet) -> Option<Prediction> {
        if packet.steps <= 1 {
            return self.inner.consume(packet);
        }
        let rows = packet.rows();
        let (seq, goodness, layers) = match self.current.take() {
            Some(current) if current.0 == packet.seq => current,
            _ => (packet.seq, vec![0.0; rows], Vec::new()),
        };
        let (mut goodness, mut layers) = (goodness, layers);
        if self.goodness_steps.contains(&packet.step) {
            goodness.iter_mut().zip(&packet.goodness).for_each(|(sum, g)| *sum += g);
            layers.resize_with(packet.layer_goodness.len(), || vec![0.0; rows]);
            for (sum, layer) in layers.iter_mut().zip(&packet.layer_goodness) {
                sum.iter_mut().zip(layer).for_each(|(s, g)| *s += g);
            }
        }
        if !packet.last_step() {
            self.current = Some((seq, goodness, layers));
            return None;
        }
        let joined = Packet { goodness, layer_goodness: layers, ..packet.clone() };
        self.inner.consume(&joined)
    }

    fn end_epoch(&mut self, epoch: u32, states: Vec<StageState>) -> EpochReport {
        self.current = None;
        self.inner.end_epoch(epoch, states)
    }

    fn restore(&mut self, state: &StageState) -> Result<(), crate::error::RestoreError> {
        self.inner.restore(state)
    }
}
