//! One named thread per element, local edges between them.

use std::time::{Duration, Instant};

use super::barrier::Barrier;
use super::edge::{self, EdgeSpec, Inlet, Outlet, UNBOUNDED};
use super::{
    deliver, frames_rows, panic_message, step, Head, HeadIo, OnEpoch, PipelineError, PipelineStats, Sink, SinkSide,
};
use super::{Closed, Ending, Interrupted, Message, Prediction, Stage, TopDown, Wiring};
use crate::error::StageError;
use crate::metrics::StageStats;

struct ChannelIo<'a> {
    output: Option<Box<dyn Outlet<Message>>>,
    predictions: Box<dyn Inlet<Prediction>>,
    stats: &'a StageStats,
    last: Instant,
    /// Time spent waiting for predictions since the last emit (the head's "receive" wait).
    waited: Duration,
}

impl HeadIo for ChannelIo<'_> {
    fn emit(&mut self, message: Message) -> Result<(), Closed> {
        let waited = std::mem::take(&mut self.waited);
        let busy = self.last.elapsed().saturating_sub(waited);
        let (frames, rows) = frames_rows(&message);
        let sent = Instant::now();
        let Some(output) = &mut self.output else { return Err(Closed) };
        let sent_ok = output.send(message).map(|_| ()).map_err(|_| Closed);
        self.last = Instant::now();
        self.stats.record(frames, rows, busy, waited, self.last - sent, output.len());
        sent_ok
    }

    fn prediction(&mut self) -> Option<Prediction> {
        let started = Instant::now();
        let prediction = self.predictions.recv();
        self.waited += started.elapsed();
        prediction
    }
}

/// The edges of one stage.
struct Ports {
    input: Box<dyn Inlet<Message>>,
    output: Box<dyn Outlet<Message>>,
    /// The state of the stage above (stages that read it).
    above: Option<Box<dyn Inlet<TopDown>>>,
    /// Where this stage's state goes (to a stage below that reads it).
    below: Option<Box<dyn Outlet<TopDown>>>,
}

fn run_stage(
    mut stage: Box<dyn Stage>,
    k: usize,
    mut ports: Ports,
    stats: &StageStats,
    barrier: &Barrier,
) -> Result<Box<dyn Stage>, StageError> {
    let span = tracing::info_span!("stage", name = stage.name());
    let _entered = span.enter();
    tracing::debug!("started");
    loop {
        let t0 = Instant::now();
        let Some(message) = ports.input.recv() else { break };
        let t1 = Instant::now();
        let (frames, rows) = frames_rows(&message);
        let above = &mut ports.above;
        let (message, state_below) = step(
            stage.as_mut(),
            message,
            || above.as_mut().and_then(|a| a.recv()),
            |epoch, state| barrier.deposit(k, epoch, state),
        )?;
        let t2 = Instant::now();
        if ports.output.send(message).is_err() {
            break; // downstream is gone: stop
        }
        if let (Some(state), Some(below)) = (state_below, &mut ports.below) {
            // The stage below may have stopped already (end of stream): nothing to deliver.
            let _ = below.send(state);
        }
        let t3 = Instant::now();
        stage.learn();
        stats.record(frames, rows, t2 - t1 + t3.elapsed(), t1 - t0, t3 - t2, ports.input.len());
    }
    tracing::debug!("finished");
    Ok(stage)
}

pub(super) fn run(
    head: &mut dyn Head,
    stages: Vec<Box<dyn Stage>>,
    sink: &mut dyn Sink,
    wiring: Wiring,
    stats: &PipelineStats,
    on_epoch: &mut OnEpoch<'_>,
) -> Result<(Vec<Box<dyn Stage>>, Ending), PipelineError> {
    let spec = EdgeSpec::blocking(wiring.capacity);
    let names: Vec<String> = stages.iter().map(|s| s.name().to_string()).collect();
    let barrier = Barrier::new(stages.len(), wiring.shards.clone());
    let barrier = &barrier;
    // Feedback edges: stage k+1 -> stage k wherever stage k reads the state above.
    let mut aboves: Vec<Option<Box<dyn Inlet<TopDown>>>> = Vec::new();
    let mut belows: Vec<Option<Box<dyn Outlet<TopDown>>>> = (0..stages.len()).map(|_| None).collect();
    for (k, stage) in stages.iter().enumerate() {
        if stage.reads_above() {
            let (out, inp) = edge::feedback(wiring.capacity, wiring.feedback_delay, TopDown::neutral);
            belows[k + 1] = Some(Box::new(out));
            aboves.push(Some(Box::new(inp)));
        } else {
            aboves.push(None);
        }
    }
    std::thread::scope(|scope| {
        let (head_out, mut input) = edge::local_boxed::<Message>(spec);
        let (mut predictions_out, predictions_in) = edge::local_boxed::<Prediction>(EdgeSpec::blocking(UNBOUNDED));
        let source_stats = &stats.source;
        let head_thread = std::thread::Builder::new().name("source".into()).spawn_scoped(scope, move || {
            let span = tracing::info_span!("head");
            let _entered = span.enter();
            let mut io = ChannelIo {
                output: Some(head_out),
                predictions: predictions_in,
                stats: source_stats,
                last: Instant::now(),
                waited: Duration::ZERO,
            };
            head.run(&mut io)
        });
        let head_thread = match head_thread {
            Ok(h) => Some(h),
            Err(e) => return Err(StageError::Panicked { stage: "source".into(), message: e.to_string() }.into()),
        };
        let mut workers = Vec::new();
        let mut failure: Option<PipelineError> = None;
        let wired = stages.into_iter().zip(&stats.stages).zip(aboves).zip(belows).enumerate();
        for (k, (((stage, stage_stats), above), below)) in wired {
            let (output, next_input) = edge::local_boxed::<Message>(spec);
            let name = stage.name().to_string();
            let ports = Ports { input: std::mem::replace(&mut input, next_input), output, above, below };
            match std::thread::Builder::new()
                .name(name.clone())
                .spawn_scoped(scope, move || run_stage(stage, k, ports, stage_stats, barrier))
            {
                Ok(handle) => workers.push((name, handle)),
                Err(e) => {
                    failure = Some(StageError::Panicked { stage: name, message: e.to_string() }.into());
                    break;
                }
            }
        }
        let span = tracing::info_span!("sink");
        let entered = span.enter();
        let mut last = Instant::now();
        let mut side = SinkSide { on_epoch, latency: &stats.latency, barrier, names: &names };
        while failure.is_none() {
            let Some(message) = input.recv() else { break };
            let t1 = Instant::now();
            let (frames, rows) = frames_rows(&message);
            if let Err(e) = deliver(sink, message, &mut side, |p| {
                let _ = predictions_out.send(p);
            }) {
                failure = Some(e);
                break;
            }
            stats.sink.record(frames, rows, t1.elapsed(), t1 - last, Duration::ZERO, input.len());
            last = Instant::now();
        }
        drop(entered);
        // Closing our ends unblocks everyone: stages see a closed edge, the head a closed
        // prediction edge.
        drop(input);
        drop(predictions_out);
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
        let played = match head_thread.map(|h| h.join()) {
            Some(Ok(played)) => played,
            Some(Err(payload)) => {
                let message = panic_message(payload);
                failure = failure.or(Some(StageError::Panicked { stage: "source".into(), message }.into()));
                Err(Interrupted::Stopped)
            }
            None => Err(Interrupted::Stopped),
        };
        match failure {
            Some(e) => Err(e),
            None => Ok((finished, super::ending(played)?)),
        }
    })
}
