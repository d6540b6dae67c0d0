//! Wake and sleep: the one implementation of offline negative phases that every head uses.
//!
//! The paper's abstract (and its Sleep section, §5 of the later version; §4.1 of the early one)
//! asks whether the positive and negative passes can be separated in time: learn from real data
//! while awake, and from negative data the network makes itself while asleep, offline, with the
//! input paused. If that works, the awake pass is simple and a stream can be pipelined through
//! the network without stopping.
//!
//! A fixed or timed [`PhaseSchedule`] says how long each phase lasts. Awake, the head plays its
//! source as packets of positives and calls [`WakeSleep::count_wake_packet`] after each; when
//! that says the wake phase is over, the head calls [`WakeSleep::sleep`]. Asleep, the source is
//! not read (a file waits, a live feed drops and counts), and packets of negatives, made by the
//! head from what it remembers of the wake phase, go through the stages until the sleep phase's
//! budget (packets or seconds) is spent. Then the head wakes and the source plays on.
//!
//! What is shared here: the scheduler's stepping, the phase published to [`Progress`] for the
//! live view and the record (phase and what is left of it, sleeps, time awake and asleep, the
//! sleep memory's size), and the sleep loop. What each head supplies is only how to make one
//! packet of negatives from its memory (a closure): MNIST draws remembered frames and wrong
//! labels from their logits ([`super::LabelledHead`]), Aesop draws pool windows and dreams more
//! when the pool runs short ([`super::dreams`]), a frame stream makes hybrids of remembered
//! windows ([`crate::video::head::VideoHead`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::metrics::Progress;
use crate::packet::{Message, Packet};
use crate::runtime::{HeadIo, Interrupted};
use crate::schedule::{Phase, PhaseSchedule, Scheduler};

/// One epoch's wake/sleep schedule, as the head plays it.
pub(crate) struct WakeSleep {
    scheduler: Scheduler,
    /// Where the phase is published (the live view, metrics.jsonl, the record).
    progress: Option<Arc<Progress>>,
    /// The run's stop flag: a sleep ends early, at the next packet, once it is set.
    stop: Arc<AtomicBool>,
}

impl WakeSleep {
    /// The schedule where an epoch starts, after `wake_packets` wake packets in earlier epochs
    /// (see [`Scheduler::at_epoch_start`]: an epoch always starts awake).
    pub(crate) fn at_epoch_start(
        schedule: PhaseSchedule,
        wake_packets: u64,
        progress: Option<Arc<Progress>>,
        stop: Arc<AtomicBool>,
    ) -> WakeSleep {
        WakeSleep { scheduler: Scheduler::at_epoch_start(schedule, wake_packets), progress, stop }
    }

    /// The current phase.
    pub(crate) fn phase(&self) -> Phase {
        self.scheduler.phase()
    }

    /// Publishes the bytes the sleep memory holds now (the record keeps the most).
    pub(crate) fn stored(&self, bytes: usize) {
        if let Some(p) = &self.progress {
            p.phase.stored(bytes as u64);
        }
    }

    /// Counts one packet sent awake (or interleaved) and publishes what is left of the phase;
    /// true when that packet ended a wake phase: the head should [`sleep`](Self::sleep) now.
    pub(crate) fn count_wake_packet(&mut self) -> bool {
        let awake_over = self.scheduler.sent();
        self.publish();
        awake_over
    }

    /// Counts the wait at a switch to sleep for the predictions of the frames still in flight.
    pub(crate) fn waited_to_switch(&self, waited: std::time::Duration) {
        if let Some(p) = &self.progress {
            p.phase.switched(waited);
        }
    }

    /// A sleep phase, right after the wake packet that ended the wake phase: the source is not
    /// read, and the packets of negatives `dream` makes are sent until the phase's budget is
    /// spent; then the schedule is awake again. An error when the run stops or downstream is
    /// gone (`dream` returns it, or `io.emit` fails).
    ///
    /// `dream` gets `io` (Aesop's dreams go round the pipeline) and this schedule (to publish
    /// the sleep memory's size); it draws the packet's sequence number itself, so sequence
    /// numbers stay in the order packets are made.
    pub(crate) fn sleep(
        &mut self,
        io: &mut dyn HeadIo,
        mut dream: impl FnMut(&mut dyn HeadIo, &WakeSleep) -> Result<Packet, Interrupted>,
    ) -> Result<(), Interrupted> {
        debug_assert_eq!(self.phase(), Phase::Wake, "sleep follows a wake phase");
        self.switch();
        self.publish();
        while self.phase() == Phase::Sleep {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Interrupted::Stopped);
            }
            let mut packet = dream(io, self)?;
            // No frame of the stream enters while asleep: the frame counters (and the
            // throughput per frame) count the source's frames only.
            packet.frames = 0;
            io.emit(Message::Data(packet))?;
            if self.scheduler.sent() {
                self.switch();
            }
            self.publish();
        }
        Ok(())
    }

    /// Publishes how long the current phase has lasted, at the epoch's end (the next epoch's
    /// schedule starts its own clock).
    pub(crate) fn end_epoch(&self) {
        self.lasted();
    }

    /// Ends the current phase: its duration (and a finished sleep) is published, then the
    /// scheduler switches.
    fn switch(&mut self) {
        self.lasted();
        if let (Some(p), Phase::Sleep) = (&self.progress, self.phase()) {
            p.phase.slept();
        }
        self.scheduler.switch();
    }

    fn lasted(&self) {
        if let Some(p) = &self.progress {
            p.phase.lasted(self.scheduler.phase(), self.scheduler.elapsed());
        }
    }

    fn publish(&self) {
        if let Some(p) = &self.progress {
            p.phase.set(self.scheduler.phase(), self.scheduler.left());
        }
    }
}
