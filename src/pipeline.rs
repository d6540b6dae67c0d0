//! The runtime: the same head, stages and sink run threaded (one thread per stage, bounded
//! queues) or in lockstep on one thread (the reference).
//!
//! Both modes feed every stage the same packets in the same order, and a stage's state depends
//! only on the packets it has seen, so for the same seed they end with bit-identical weights
//! (`tests/pipeline.rs` checks it). The threaded mode only overlaps the work in time: stage k
//! processes packet t while stage k+1 processes packet t−1, which is the point of pipelining.
//!
//! Backpressure: every queue is `crossbeam_channel::bounded`; a full queue blocks its sender, so
//! activation memory is bounded by the capacities, not by the stream length. End of stream is
//! the upstream sender being dropped. A stage error or panic closes its queues, the stages
//! around it see the closure and stop, and the error comes back from [`run`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use crate::error::StageError;
use crate::head::{HeadIo, Prediction};
use crate::metrics::{Latency, StageStats};
use crate::packet::{Message, Packet, StageState};
use crate::sink::Tally;
use crate::stage::Stage;

/// What feeds the pipeline: plays its stream into `io` until the end or a stop.
pub trait Play: Send {
    /// Plays every packet and epoch marker; false if it stopped early (Ctrl-C, downstream gone).
    fn run(&mut self, io: &mut dyn HeadIo) -> bool;
}

/// What ends the pipeline: scores packets, and closes each epoch into a report.
pub trait Sink: Send {
    /// Consumes one packet; returns a prediction for the head (hard negatives), if any.
    fn consume(&mut self, packet: &Packet) -> Option<Prediction>;
    /// Closes an epoch: `states` holds every stage's snapshot; the sink adds its own.
    fn end_epoch(&mut self, epoch: u32, states: Vec<StageState>) -> EpochReport;
}

/// Threaded or single-threaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One thread per stage, bounded queues between them.
    Threaded,
    /// Every message through every stage in turn on the calling thread.
    Lockstep,
}

/// What the sink hands over at the end of each epoch.
#[derive(Debug)]
pub struct EpochReport {
    /// The 1-based epoch.
    pub epoch: u32,
    /// Snapshots of every stage and the readout, taken at the epoch boundary.
    pub states: Vec<StageState>,
    /// Errors per evaluation purpose ("validation", "test", "train").
    pub tallies: BTreeMap<&'static str, Tally>,
    /// The readout's errors on the training stream during the epoch (before each update).
    pub stream: Tally,
    /// Other named measures of the epoch (video: probe accuracy and goodness separation per
    /// stage), in percent.
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
    #[error("{0}")]
    Epoch(String),
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
pub type OnEpoch<'a> = dyn FnMut(EpochReport) -> Result<(), String> + 'a;

/// Runs `head` through `stages` into `sink`. Returns the stages (with their learned state) and
/// whether the stream ran to its end (false after Ctrl-C).
pub fn run(
    head: &mut dyn Play,
    stages: Vec<Box<dyn Stage>>,
    sink: &mut dyn Sink,
    mode: Mode,
    capacity: usize,
    stats: &PipelineStats,
    on_epoch: &mut OnEpoch<'_>,
) -> Result<(Vec<Box<dyn Stage>>, bool), PipelineError> {
    match mode {
        Mode::Threaded => run_threaded(head, stages, sink, capacity.max(1), stats, on_epoch),
        Mode::Lockstep => run_lockstep(head, stages, sink, stats, on_epoch),
    }
}

/// The sink's side of one message, shared by both modes.
fn deliver(
    sink: &mut dyn Sink,
    message: Message,
    on_epoch: &mut OnEpoch<'_>,
    latency: &Latency,
    mut feedback: impl FnMut(Prediction),
) -> Result<(), PipelineError> {
    match message {
        Message::Data(packet) => {
            if let Some(prediction) = sink.consume(&packet) {
                feedback(prediction);
            }
            if packet.frames > 0 {
                latency.record(packet.captured.elapsed(), packet.frames);
            }
            Ok(())
        }
        Message::EpochEnd { epoch, states, .. } => {
            on_epoch(sink.end_epoch(epoch, states)).map_err(PipelineError::Epoch)
        }
    }
}

fn frames_rows(message: &Message) -> (usize, usize) {
    match message {
        Message::Data(p) => (p.frames, p.rows()),
        Message::EpochEnd { .. } => (0, 0),
    }
}

/// A stage's side of one message (the update is left pending: see [`Stage::learn`]).
fn step(stage: &mut dyn Stage, message: Message) -> Result<Message, StageError> {
    Ok(match message {
        Message::Data(packet) => Message::Data(stage.process(packet)?),
        Message::EpochEnd { epoch, mut states, stamp } => {
            states.push(stage.snapshot());
            Message::EpochEnd { epoch, states, stamp }
        }
    })
}

struct ChannelIo<'a> {
    tx: Option<Sender<Message>>,
    predictions: Receiver<Prediction>,
    stats: &'a StageStats,
    last: Instant,
    /// Time spent waiting for predictions since the last emit (the head's "receive" wait).
    waited: std::time::Duration,
}

impl HeadIo for ChannelIo<'_> {
    fn emit(&mut self, message: Message) -> bool {
        let waited = std::mem::take(&mut self.waited);
        let busy = self.last.elapsed().saturating_sub(waited);
        let (frames, rows) = frames_rows(&message);
        let sent = Instant::now();
        let Some(tx) = &self.tx else { return false };
        let ok = tx.send(message).is_ok();
        self.last = Instant::now();
        self.stats.record(frames, rows, busy, waited, self.last - sent, tx.len());
        ok
    }

    fn prediction(&mut self) -> Option<Prediction> {
        let started = Instant::now();
        let prediction = self.predictions.recv().ok();
        self.waited += started.elapsed();
        prediction
    }
}

fn run_stage(
    mut stage: Box<dyn Stage>,
    input: Receiver<Message>,
    output: Sender<Message>,
    stats: &StageStats,
) -> Result<Box<dyn Stage>, StageError> {
    loop {
        let t0 = Instant::now();
        let Ok(message) = input.recv() else { break };
        let t1 = Instant::now();
        let (frames, rows) = frames_rows(&message);
        let message = step(stage.as_mut(), message)?;
        let t2 = Instant::now();
        if output.send(message).is_err() {
            break; // downstream is gone: stop
        }
        let t3 = Instant::now();
        stage.learn();
        stats.record(frames, rows, t2 - t1 + t3.elapsed(), t1 - t0, t3 - t2, input.len());
    }
    Ok(stage)
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".into())
}

fn run_threaded(
    head: &mut dyn Play,
    stages: Vec<Box<dyn Stage>>,
    sink: &mut dyn Sink,
    capacity: usize,
    stats: &PipelineStats,
    on_epoch: &mut OnEpoch<'_>,
) -> Result<(Vec<Box<dyn Stage>>, bool), PipelineError> {
    std::thread::scope(|scope| {
        let (head_tx, mut rx) = bounded::<Message>(capacity);
        // Unbounded, yet bounded in practice: the head only sends a packet with neutral rows
        // after consuming the predictions it waits for, so at most the packets in flight
        // (the queue capacities plus one per thread) can have predictions outstanding.
        let (feedback_tx, feedback_rx) = unbounded::<Prediction>();
        let source_stats = &stats.source;
        let head_thread = std::thread::Builder::new()
            .name("source".into())
            .spawn_scoped(scope, move || {
                let mut io = ChannelIo {
                    tx: Some(head_tx),
                    predictions: feedback_rx,
                    stats: source_stats,
                    last: Instant::now(),
                    waited: Default::default(),
                };
                head.run(&mut io)
            })
            .expect("spawn source thread");
        let mut workers = Vec::new();
        for (stage, stage_stats) in stages.into_iter().zip(&stats.stages) {
            let (tx, next_rx) = bounded::<Message>(capacity);
            let name = stage.name().to_string();
            let input = std::mem::replace(&mut rx, next_rx);
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn_scoped(scope, move || run_stage(stage, input, tx, stage_stats))
                .expect("spawn stage thread");
            workers.push((name, handle));
        }
        let mut failure: Option<PipelineError> = None;
        let mut last = Instant::now();
        while let Ok(message) = rx.recv() {
            let t1 = Instant::now();
            let (frames, rows) = frames_rows(&message);
            if let Err(e) = deliver(sink, message, on_epoch, &stats.latency, |p| {
                let _ = feedback_tx.send(p);
            }) {
                failure = Some(e);
                break;
            }
            stats.sink.record(frames, rows, t1.elapsed(), t1 - last, Default::default(), rx.len());
            last = Instant::now();
        }
        // Closing our ends unblocks everyone: stages see a closed queue, the head a closed
        // prediction channel.
        drop(rx);
        drop(feedback_tx);
        let mut finished = Vec::new();
        for (name, handle) in workers {
            match handle.join() {
                Ok(Ok(stage)) => finished.push(stage),
                Ok(Err(e)) => failure = failure.or(Some(e.into())),
                Err(payload) => {
                    let message = panic_message(payload);
                    failure = failure.or(Some(StageError::Panicked { stage: name, message }.into()));
                }
            }
        }
        let completed = match head_thread.join() {
            Ok(done) => done,
            Err(payload) => {
                let message = panic_message(payload);
                failure = failure.or(Some(StageError::Panicked { stage: "source".into(), message }.into()));
                false
            }
        };
        match failure {
            Some(e) => Err(e),
            None => Ok((finished, completed)),
        }
    })
}

struct LockstepIo<'a, 'b> {
    stages: Vec<Box<dyn Stage>>,
    sink: &'a mut dyn Sink,
    predictions: VecDeque<Prediction>,
    on_epoch: &'a mut OnEpoch<'b>,
    stats: &'a PipelineStats,
    failure: Option<PipelineError>,
}

impl HeadIo for LockstepIo<'_, '_> {
    fn emit(&mut self, mut message: Message) -> bool {
        let (frames, rows) = frames_rows(&message);
        self.stats.source.record(frames, rows, Default::default(), Default::default(), Default::default(), 0);
        for (stage, stats) in self.stages.iter_mut().zip(&self.stats.stages) {
            let started = Instant::now();
            message = match step(stage.as_mut(), message) {
                Ok(m) => m,
                Err(e) => {
                    self.failure = Some(e.into());
                    return false;
                }
            };
            stage.learn();
            stats.record(frames, rows, started.elapsed(), Default::default(), Default::default(), 0);
        }
        let started = Instant::now();
        let predictions = &mut self.predictions;
        if let Err(e) = deliver(self.sink, message, self.on_epoch, &self.stats.latency, |p| predictions.push_back(p)) {
            self.failure = Some(e);
            return false;
        }
        self.stats.sink.record(frames, rows, started.elapsed(), Default::default(), Default::default(), 0);
        true
    }

    fn prediction(&mut self) -> Option<Prediction> {
        self.predictions.pop_front()
    }
}

fn run_lockstep(
    head: &mut dyn Play,
    stages: Vec<Box<dyn Stage>>,
    sink: &mut dyn Sink,
    stats: &PipelineStats,
    on_epoch: &mut OnEpoch<'_>,
) -> Result<(Vec<Box<dyn Stage>>, bool), PipelineError> {
    let mut io = LockstepIo { stages, sink, predictions: VecDeque::new(), on_epoch, stats, failure: None };
    let completed = head.run(&mut io);
    match io.failure {
        Some(e) => Err(e),
        None => Ok((io.stages, completed)),
    }
}
