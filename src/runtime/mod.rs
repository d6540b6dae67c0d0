//! The runtime: runs a head, a chain of stages and a sink, threaded (one thread per element,
//! bounded [`edge`]s between them) or in lockstep on one thread (the reference).
//!
//! ```text
//!   {head} -[e]-> (stage 1) -[e]-> (stage 2) -[e]-> ... -[e]-> (stage L) -[e]-> {sink}
//!     ^             ^   |           ^   |                                         |
//!     |             +-d-+           +-d-+   top-down state (recurrent stages)      |
//!     +----------------------------- predictions, delayed ------------------------+
//! ```
//!
//! The runtime names no dataset, layer or readout: it moves [`Message`]s along forward edges,
//! [`TopDown`] state along feedback edges from a stage to the one below it (only where the
//! lower stage [`Stage::reads_above`]), and [`Prediction`]s from the sink back to the head.
//! What a stage computes, what a head plays and what a sink measures are theirs.
//!
//! Both modes feed every stage the same messages in the same order, and a stage's state depends
//! only on what it has received, so for the same seed they end with bit-identical weights
//! (`tests/pipeline.rs`). The threaded mode only overlaps the work in time: stage k processes
//! packet t while stage k+1 processes packet t−1, which is the point of pipelining.
//!
//! A feedback edge of delay d starts with d neutral [`TopDown`]s queued, so a stage reads the
//! state the stage above sent d packets ago; a cycle of bounded edges then cannot deadlock
//! (every cycle holds a token). Delay 1 is the synchronous rule; with d ≥ 2 two neighbouring
//! stages can work at the same time.
//!
//! Checkpoints: at an epoch marker every stage, on its own thread, leaves its state at the
//! [`barrier`] before forwarding the marker; with a shard store ([`Wiring::shards`]) it writes
//! its own shard file there and then. The sink's [`EpochReport`] carries the shards (and any
//! state kept in memory); no weights ride down an edge.
//!
//! Backpressure: every edge is bounded; a full edge blocks its sender, so activation memory is
//! bounded by the capacities, not by the stream length. End of stream is the upstream outlet
//! being dropped. A stage error or panic closes its edges, the elements around it see the
//! closure and stop, and the error comes back from [`run`].

pub mod barrier;
pub mod edge;
mod lockstep;
pub mod part;
mod threaded;
pub mod tokens;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{RestoreError, StageError};
use crate::metrics::{Latency, StageStats};
pub use crate::packet::{Message, Packet, Prediction, StageState, TopDown};
pub use part::{Boundary, Part};

/// One step of the pipeline. Owns its state; never reads another stage's weights (FF
/// locality, kept by ownership: the only thing that leaves a stage is a copy,
/// [`Stage::snapshot`], taken at an epoch marker).
pub trait Stage: Send {
    /// The stage's name (thread name, metrics label, checkpoint prefix).
    fn name(&self) -> &str;
    /// Forwards `packet` and prepares this stage's local update from its learning rows.
    fn process(&mut self, packet: Packet) -> Result<Packet, StageError>;
    /// Applies the update prepared by the last [`Stage::process`]. The runtime calls it right
    /// after the packet has been sent downstream, so the next stage does not wait for it;
    /// `process` applies a forgotten one first, so skipping it never changes the maths.
    fn learn(&mut self) {}
    /// [`Stage::process`] then [`Stage::learn`]: the synchronous rule, for tests and tools.
    fn step(&mut self, packet: Packet) -> Result<Packet, StageError> {
        let out = self.process(packet)?;
        self.learn();
        Ok(out)
    }
    /// A copy of the stage's state for a checkpoint.
    fn snapshot(&self) -> StageState;
    /// Restores a state written by [`Stage::snapshot`].
    fn restore(&mut self, state: &StageState) -> Result<(), RestoreError>;
    /// Whether the stage reads the state of the stage above (a feedback edge into it).
    fn reads_above(&self) -> bool {
        false
    }
    /// Whether the stage sends its state to the stage below after each data packet.
    fn sends_below(&self) -> bool {
        false
    }
    /// The state of the stage above for the next data packet (called just before `process`
    /// on stages that [`Stage::reads_above`]).
    fn take_above(&mut self, _above: TopDown) {}
    /// The state to send down after the last `process` (stages that [`Stage::sends_below`]).
    fn below(&mut self) -> TopDown {
        TopDown::neutral()
    }
}

/// Downstream is gone: a stage failed or stopped, so a head's message has nowhere to go (the
/// run's error, if any, comes from where it happened).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline downstream is gone")]
pub struct Closed;

/// Where a head's messages go and where predictions come from.
pub trait HeadIo {
    /// Sends a message downstream.
    fn emit(&mut self, message: Message) -> Result<(), Closed>;
    /// The next prediction; `None` when the sink is gone.
    fn prediction(&mut self) -> Option<Prediction>;
}

/// Why a head stopped before the end of its stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Interrupted {
    /// The stop flag was raised (Ctrl-C): the run resumes from its last finished epoch.
    #[error("stopped before the end of the stream")]
    Stopped,
    /// Downstream is gone: a stage or the sink failed, and its error is the run's.
    #[error(transparent)]
    Closed(#[from] Closed),
    /// The source failed (a video that cannot be read on); the run's error.
    #[error(transparent)]
    Source(Box<dyn std::error::Error + Send + Sync>),
}

/// How a run that did not fail ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The stream ran to its end.
    Finished,
    /// It stopped early (Ctrl-C); the last finished epoch is checkpointed.
    Stopped,
}

/// What feeds the pipeline: plays its stream into `io` until the end or a stop.
pub trait Head: Send {
    /// Plays every packet and epoch marker, or says why it stopped early.
    fn run(&mut self, io: &mut dyn HeadIo) -> Result<(), Interrupted>;
}

/// What ends the pipeline: measures packets, and closes each epoch into a report.
pub trait Sink: Send {
    /// Consumes one packet; returns a prediction for the head (hard negatives), if any.
    fn consume(&mut self, packet: &Packet) -> Option<Prediction>;
    /// Closes an epoch: `states` holds every stage's snapshot; the sink adds its own.
    fn end_epoch(&mut self, epoch: u32, states: Vec<StageState>) -> EpochReport;
    /// Takes back what the sink learns (a readout, probes) from a checkpoint's state; a sink
    /// that learns nothing has nothing to restore.
    fn restore(&mut self, _state: &StageState) -> Result<(), RestoreError> {
        Ok(())
    }
}

impl<H: Head + ?Sized> Head for &mut H {
    fn run(&mut self, io: &mut dyn HeadIo) -> Result<(), Interrupted> {
        (**self).run(io)
    }
}

impl<S: Sink + ?Sized> Sink for &mut S {
    fn consume(&mut self, packet: &Packet) -> Option<Prediction> {
        (**self).consume(packet)
    }

    fn end_epoch(&mut self, epoch: u32, states: Vec<StageState>) -> EpochReport {
        (**self).end_epoch(epoch, states)
    }

    fn restore(&mut self, state: &StageState) -> Result<(), RestoreError> {
        (**self).restore(state)
    }
}

/// Threaded or single-threaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One thread per stage, bounded edges between them.
    Threaded,
    /// Every message through every stage in turn on the calling thread.
    Lockstep,
}

/// What the sink hands over at the end of each epoch.
#[derive(Debug)]
pub struct EpochReport {
    /// The 1-based epoch.
    pub epoch: u32,
    /// Snapshots taken at the epoch boundary and kept in memory: the sink's, and every
    /// stage's when the run has no shard store ([`Wiring::shards`]).
    pub states: Vec<StageState>,
    /// The shards the stages wrote themselves at the barrier (with a shard store).
    pub shards: Vec<crate::checkpoint::Shard>,
    /// Named measures of the epoch; what they mean is the sink's (dotted names,
    /// `validation.goodness`, `separation.layer1`, ...).
    pub measures: BTreeMap<String, f64>,
}

/// Why a run stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A stage failed.
    #[error(transparent)]
    Stage(#[from] StageError),
    /// The epoch handler (checkpoint, record) failed.
    #[error("at the end of an epoch: {0}")]
    Epoch(#[source] anyhow::Error),
    /// The head's source failed.
    #[error(transparent)]
    Source(Box<dyn std::error::Error + Send + Sync>),
    /// A part of a pipeline spread over processes lacks an edge it needs, or has one it
    /// cannot use.
    #[error("this process's part of the pipeline: {0}")]
    Part(String),
    /// A stage left no state at the barrier of an epoch, or could not write its shard.
    #[error("at the end of epoch {epoch}: {source}")]
    Barrier {
        /// What went wrong, naming the stage.
        source: barrier::BarrierError,
        /// The epoch.
        epoch: u32,
    },
}

/// How the runtime wires a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wiring {
    /// Threaded or lockstep.
    pub mode: Mode,
    /// Items each forward edge holds.
    pub capacity: usize,
    /// Packets between a stage's state and the stage below reading it (feedback edges).
    pub feedback_delay: usize,
    /// Where each stage writes its own checkpoint shard at an epoch's barrier; none: the
    /// states come back in memory, in the epoch report.
    pub shards: Option<crate::checkpoint::ShardStore>,
    /// Threaded mode: at most this many stages compute at once (0: no limit, the OS shares the
    /// cores among every stage thread). See [`tokens::CoreTokens`].
    pub core_tokens: usize,
}

impl Wiring {
    /// Forward edges of `capacity`, feedback delay 1.
    pub fn new(mode: Mode, capacity: usize) -> Wiring {
        Wiring { mode, capacity: capacity.max(1), feedback_delay: 1, shards: None, core_tokens: 0 }
    }
}

/// The counters of every thread, in order: source, stages..., sink.
#[derive(Clone, Debug)]
pub struct PipelineStats {
    /// The head.
    pub source: Arc<StageStats>,
    /// One per stage.
    pub stages: Vec<Arc<StageStats>>,
    /// The sink.
    pub sink: Arc<StageStats>,
    /// End-to-end latency of every frame that reached the sink.
    pub latency: Arc<Latency>,
}

impl PipelineStats {
    /// Counters named after the stages.
    pub fn new(stage_names: &[String]) -> PipelineStats {
        PipelineStats {
            source: StageStats::new("source"),
            stages: stage_names.iter().map(|n| StageStats::new(n)).collect(),
            sink: StageStats::new("sink"),
            latency: Arc::default(),
        }
    }

    /// All counters in stream order.
    pub fn all(&self) -> Vec<Arc<StageStats>> {
        let mut all = vec![Arc::clone(&self.source)];
        all.extend(self.stages.iter().cloned());
        all.push(Arc::clone(&self.sink));
        all
    }
}

/// The handler called with each epoch's report; an `Err` stops the run.
pub type OnEpoch<'a> = dyn FnMut(EpochReport) -> anyhow::Result<()> + 'a;

/// Runs `head` through `stages` into `sink`. Returns the stages (with their learned state) and
/// how the stream ended.
pub fn run(
    head: &mut dyn Head,
    stages: Vec<Box<dyn Stage>>,
    sink: &mut dyn Sink,
    wiring: Wiring,
    stats: &PipelineStats,
    on_epoch: &mut OnEpoch<'_>,
) -> Result<(Vec<Box<dyn Stage>>, Ending), PipelineError> {
    match wiring.mode {
        // run_part flushes denormals for the threaded run.
        Mode::Threaded => run_part(Part::whole(head, stages, sink), wiring, stats, on_epoch),
        Mode::Lockstep => {
            // Lockstep computes on this thread (src/float_mode.rs).
            let _mode = crate::float_mode::Flushing::start();
            check_pairs(&stages)?;
            check_top(&stages)?;
            let ran = lockstep::run(head, stages, sink, wiring, stats, on_epoch);
            crate::recycle::clear();
            ran
        }
    }
}

/// Runs this process's part of a pipeline spread over several (always threaded: one thread per
/// element, as [`run`]). Returns the part's stages and how the stream ended; a part without the
/// head cannot tell a stop upstream from the end of the stream, and reports
/// [`Ending::Finished`] when its input ended cleanly (the head's part knows).
pub fn run_part(
    part: Part<'_>,
    wiring: Wiring,
    stats: &PipelineStats,
    on_epoch: &mut OnEpoch<'_>,
) -> Result<(Vec<Box<dyn Stage>>, Ending), PipelineError> {
    // The stage threads inherit this thread's mode (src/float_mode.rs).
    let _mode = crate::float_mode::Flushing::start();
    part.check(stats)?;
    let ran = threaded::run(part, wiring, stats, on_epoch);
    // The run's buffers are not the next one's shapes (a backprop twin, another net).
    crate::recycle::clear();
    ran
}

/// How the head's end becomes the run's: a failed source is the run's error; a stop, or
/// downstream gone (whose own error, if any, the caller reports first), ends it early.
fn ending(played: Result<(), Interrupted>) -> Result<Ending, PipelineError> {
    match played {
        Ok(()) => Ok(Ending::Finished),
        Err(Interrupted::Source(e)) => Err(PipelineError::Source(e)),
        Err(Interrupted::Stopped | Interrupted::Closed(_)) => Ok(Ending::Stopped),
    }
}

/// Every stage that reads the state above sits under one that sends it.
fn check_pairs(stages: &[Box<dyn Stage>]) -> Result<(), StageError> {
    for pair in stages.windows(2) {
        if pair[0].reads_above() && !pair[1].sends_below() {
            return Err(StageError::Topology {
                stage: pair[0].name().to_string(),
                reason: format!("reads the state of the stage above, but `{}` does not send one", pair[1].name()),
            });
        }
    }
    Ok(())
}

/// The chain's last stage reads no state from above (there is none).
fn check_top(stages: &[Box<dyn Stage>]) -> Result<(), StageError> {
    if let Some(top) = stages.last().filter(|s| s.reads_above()) {
        return Err(StageError::Topology {
            stage: top.name().to_string(),
            reason: "reads the state of the stage above, but it is the last stage".into(),
        });
    }
    Ok(())
}

/// What the sink's side needs besides the sink.
struct SinkSide<'a, 'b> {
    on_epoch: &'a mut OnEpoch<'b>,
    latency: &'a Latency,
    barrier: &'a barrier::Barrier,
    names: &'a [String],
}

/// The sink's side of one message, shared by both modes.
fn deliver(
    sink: &mut dyn Sink,
    message: Message,
    side: &mut SinkSide<'_, '_>,
    mut feedback: impl FnMut(Prediction),
) -> Result<(), PipelineError> {
    match message {
        Message::Data(packet) => {
            if let Some(prediction) = sink.consume(&packet) {
                feedback(prediction);
            }
            if packet.frames > 0 {
                side.latency.record(packet.captured.elapsed(), packet.frames);
            }
            // Its arrays go back to the head and the stages (no allocation per packet).
            crate::recycle::give_packet(packet);
            Ok(())
        }
        Message::EpochEnd { epoch, .. } => {
            let (states, shards) = deposits(side.barrier, epoch, side.names)?;
            let mut report = sink.end_epoch(epoch, states);
            report.shards = shards;
            (side.on_epoch)(report).map_err(PipelineError::Epoch)
        }
    }
}

/// What every stage of `names` left at `barrier` for `epoch`: their states kept in memory and
/// the shards they wrote (taken where the epoch's marker has passed all of them: the sink, or
/// the edge out of a part without the sink).
fn deposits(
    barrier: &barrier::Barrier,
    epoch: u32,
    names: &[String],
) -> Result<(Vec<StageState>, Vec<crate::checkpoint::Shard>), PipelineError> {
    barrier.take(epoch, names).map_err(|source| PipelineError::Barrier { source, epoch })
}

fn frames_rows(message: &Message) -> (usize, usize) {
    match message {
        Message::Data(p) => (p.frames, p.rows()),
        Message::EpochEnd { .. } => (0, 0),
    }
}

/// A stage's side of one message (the update is left pending: see [`Stage::learn`]). `above`
/// is consulted for data packets of stages that read the state above; the state for the stage
/// below comes back with the message.
fn step(
    stage: &mut dyn Stage,
    message: Message,
    above: impl FnOnce() -> Option<TopDown>,
    deposit: impl FnOnce(u32, StageState),
) -> Result<(Message, Option<TopDown>), StageError> {
    Ok(match message {
        Message::Data(packet) => {
            if stage.reads_above() {
                // A closed feedback edge means the stage above has stopped: the run is ending.
                stage.take_above(above().unwrap_or_else(TopDown::neutral));
            }
            let out = stage.process(packet)?;
            let below = stage.sends_below().then(|| stage.below());
            (Message::Data(out), below)
        }
        Message::EpochEnd { epoch, stamp } => {
            deposit(epoch, stage.snapshot());
            (Message::EpochEnd { epoch, stamp }, None)
        }
    })
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".into())
}
