//! One named thread per element, local edges between them.

use std::time::{Duration, Instant};

use super::barrier::Barrier;
use super::edge::{self, EdgeSpec, Inlet, Outlet, UNBOUNDED};
use super::tokens::CoreTokens;
use super::{deliver, frames_rows, panic_message, step, HeadIo, OnEpoch, PipelineError, PipelineStats, SinkSide};
use super::{Closed, Ending, Interrupted, Message, Part, Prediction, Stage, TopDown, Wiring};
use crate::error::StageError;
use crate::metrics::StageStats;

struct ChannelIo<'a> {
    output: Option<Box<dyn Outlet<Message> + 'a>>,
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
struct Ports<'a> {
    input: Box<dyn Inlet<Message>>,
    output: Box<dyn Outlet<Message> + 'a>,
    /// The state of the stage above (stages that read it).
    above: Option<Box<dyn Inlet<TopDown>>>,
    /// Where this stage's state goes (to a stage below that reads it).
    below: Option<Box<dyn Outlet<TopDown>>>,
}

fn run_stage(
    mut stage: Box<dyn Stage>,
    k: usize,
    mut ports: Ports<'_>,
    stats: &StageStats,
    barrier: &Barrier,
    tokens: Option<&CoreTokens>,
) -> Result<Box<dyn Stage>, StageError> {
    // A stage that reads the state above receives it inside `step`: it computes without a
    // token rather than wait on an edge while holding one.
    let step_tokens = tokens.filter(|_| !stage.reads_above());
    let span = tracing::info_span!("stage", name = stage.name());
    let _entered = span.enter();
    tracing::debug!("started");
    loop {
        let t0 = Instant::now();
        let Some(message) = ports.input.recv() else { break };
        let t1 = Instant::now();
        let (frames, rows) = frames_rows(&message);
        let above = &mut ports.above;
        let token = step_tokens.map(CoreTokens::take);
        let (message, state_below) = step(
            stage.as_mut(),
            message,
            || above.as_mut().and_then(|a| a.recv()),
            |epoch, state| barrier.deposit(k, epoch, state),
        )?;
        drop(token);
        let t2 = Instant::now();
        if ports.output.send(message).is_err() {
            break; // downstream is gone: stop
        }
        if let (Some(state), Some(below)) = (state_below, &mut ports.below) {
            // The stage below may have stopped already (end of stream): nothing to deliver.
            let _ = below.send(state);
        }
        let t3 = Instant::now();
        let token = tokens.map(CoreTokens::take);
        stage.learn();
        drop(token);
        stats.record(frames, rows, t2 - t1 + t3.elapsed(), t1 - t0, t3 - t2, ports.input.len());
    }
    // A remote edge that failed ends like a finished stream; the stage says which it was.
    let faults = [
        ports.input.fault(),
        ports.output.fault(),
        ports.above.as_ref().and_then(|a| a.fault()),
        ports.below.as_ref().and_then(|b| b.fault()),
    ];
    if let Some(reason) = faults.into_iter().flatten().next() {
        return Err(StageError::Edge { stage: stage.name().to_string(), reason });
    }
    tracing::debug!("finished");
    Ok(stage)
}

/// An element's way out, and (if the next element runs here) the next element's way in.
type Hop<'a> = (Option<Box<dyn Outlet<Message> + 'a>>, Option<Box<dyn Inlet<Message>>>);

/// The outlet of the edge after an element, and the inlet the next element here reads: a local
/// edge, or the boundary's edge out when the element is this part's last (no inlet here then).
fn edge_after<'a>(
    last_here: bool,
    spec: EdgeSpec,
    boundary_out: &mut Option<Box<dyn Outlet<Message> + 'a>>,
) -> Hop<'a> {
    if last_here {
        (boundary_out.take(), None)
    } else {
        let (o, i) = edge::local_boxed::<Message>(spec);
        (Some(o), Some(i))
    }
}

/// What a part without the sink hands its epoch handler, from the thread its last element runs on.
type PartReport = Result<super::EpochReport, PipelineError>;

/// The edge out of a part without the sink. As an epoch marker leaves the part, every stage of
/// the part has passed it and left its state at the part's barrier: the part's own epoch report
/// (its stages' shards, no measures) goes to its epoch handler, which commits the part's
/// checkpoint, before the marker goes on.
struct Tap<'a> {
    inner: Box<dyn Outlet<Message>>,
    barrier: &'a Barrier,
    names: &'a [String],
    reports: crossbeam_channel::Sender<PartReport>,
}

impl Outlet<Message> for Tap<'_> {
    fn send(&mut self, item: Message) -> Result<edge::Sent, edge::Closed> {
        if let Message::EpochEnd { epoch, .. } = &item {
            let epoch = *epoch;
            let report = super::deposits(self.barrier, epoch, self.names).map(|(states, shards)| super::EpochReport {
                epoch,
                states,
                shards,
                measures: Default::default(),
            });
            // The handler is gone: the part is stopping.
            self.reports.send(report).map_err(|_| edge::Closed)?;
        }
        self.inner.send(item)
    }

    fn len(&self) -> usize {
        self.inner.len()
    }

    fn dropped(&self) -> u64 {
        self.inner.dropped()
    }

    fn fault(&self) -> Option<String> {
        self.inner.fault()
    }
}

/// Runs a part of the chain (the whole chain: [`Part::whole`]), one thread per element.
/// `part.check` has passed.
pub(super) fn run(
    part: Part<'_>,
    wiring: Wiring,
    stats: &PipelineStats,
    on_epoch: &mut OnEpoch<'_>,
) -> Result<(Vec<Box<dyn Stage>>, Ending), PipelineError> {
    let Part { head, stages, first, sink, mut boundary } = part;
    let spec = EdgeSpec::blocking(wiring.capacity);
    let names: Vec<String> = stages.iter().map(|s| s.name().to_string()).collect();
    let n = stages.len();
    let barrier = Barrier::new(n, wiring.shards.clone());
    let barrier = &barrier;
    let tokens = (wiring.core_tokens > 0).then(|| CoreTokens::new(wiring.core_tokens));
    let tokens = tokens.as_ref();
    // Feedback edges: stage k+1 -> stage k wherever stage k reads the state above; the last
    // stage here reads it over the boundary, the first sends its own over the boundary.
    let mut aboves: Vec<Option<Box<dyn Inlet<TopDown>>>> = (0..n).map(|_| None).collect();
    let mut belows: Vec<Option<Box<dyn Outlet<TopDown>>>> = (0..n).map(|_| None).collect();
    for (k, stage) in stages.iter().enumerate() {
        if !stage.reads_above() {
            continue;
        }
        if k + 1 < n {
            let (out, inp) = edge::feedback(wiring.capacity, wiring.feedback_delay, TopDown::neutral);
            belows[k + 1] = Some(Box::new(out));
            aboves[k] = Some(Box::new(inp));
        } else {
            aboves[k] = boundary.above_in.take();
        }
    }
    if let (Some(first_below), Some(out)) = (belows.first_mut(), boundary.below_out.take()) {
        *first_below = Some(out);
    }
    let has_sink = sink.is_some();
    // Without the sink, the part's epoch reports come from the tap on its edge out.
    let (reports_out, reports_in) = crossbeam_channel::unbounded::<PartReport>();
    let mut boundary_out: Option<Box<dyn Outlet<Message> + '_>> = boundary.output.take().map(|inner| {
        Box::new(Tap { inner, barrier, names: &names, reports: reports_out.clone() }) as Box<dyn Outlet<Message>>
    });
    drop(reports_out);
    std::thread::scope(|scope| {
        let mut failure: Option<PipelineError> = None;
        // The inlet the next element reads: from upstream's part, or from the head here.
        let mut input = boundary.input.take();
        // The predictions edge: within this part, or across the boundary, or none.
        let (mut predictions_out, predictions_in) = match (head.is_some(), has_sink) {
            (true, true) => {
                let (o, i) = edge::local_boxed::<Prediction>(EdgeSpec::blocking(UNBOUNDED));
                (Some(o), Some(i))
            }
            (true, false) => (None, boundary.predictions_in.take()),
            (false, _) => (boundary.predictions_out.take(), None),
        };
        let mut head_thread = None;
        if let (Some(head), Some(predictions)) = (head, predictions_in) {
            let (head_out, next) = edge_after(n == 0 && !has_sink, spec, &mut boundary_out);
            input = next;
            let source_stats = &stats.source;
            let spawned = std::thread::Builder::new().name("source".into()).spawn_scoped(scope, move || {
                let span = tracing::info_span!("head");
                let _entered = span.enter();
                let mut io = ChannelIo {
                    output: head_out,
                    predictions,
                    stats: source_stats,
                    last: Instant::now(),
                    waited: Duration::ZERO,
                };
                let played = head.run(&mut io);
                let fault = io.output.as_ref().and_then(|o| o.fault()).or_else(|| io.predictions.fault());
                (played, fault)
            });
            match spawned {
                Ok(h) => head_thread = Some(h),
                Err(e) => return Err(StageError::Panicked { stage: "source".into(), message: e.to_string() }.into()),
            }
        }
        let mut workers = Vec::new();
        let wired = stages.into_iter().zip(aboves).zip(belows).enumerate();
        for (k, ((stage, above), below)) in wired {
            // Invariant: `part.check` saw an inlet for the first element here (from the head
            // or the boundary), and each element here leaves one for the next.
            let Some(stage_input) = input.take() else {
                failure = Some(PipelineError::Part("a stage with no edge in".into()));
                break;
            };
            let (output, next) = edge_after(k + 1 == n && !has_sink, spec, &mut boundary_out);
            let Some(output) = output else {
                failure = Some(PipelineError::Part("a stage with no edge out".into()));
                break;
            };
            input = next;
            let name = stage.name().to_string();
            let ports = Ports { input: stage_input, output, above, below };
            let stage_stats = &stats.stages[first + k];
            match std::thread::Builder::new()
                .name(name.clone())
                .spawn_scoped(scope, move || run_stage(stage, k, ports, stage_stats, barrier, tokens))
            {
                Ok(handle) => workers.push((name, handle)),
                Err(e) => {
                    failure = Some(StageError::Panicked { stage: name, message: e.to_string() }.into());
                    break;
                }
            }
        }
        if let Some(sink) = sink {
            let span = tracing::info_span!("sink");
            let entered = span.enter();
            let mut last = Instant::now();
            let mut side = SinkSide { on_epoch, latency: &stats.latency, barrier, names: &names };
            while let (None, Some(inlet)) = (&failure, input.as_mut()) {
                let Some(message) = inlet.recv() else { break };
                let t1 = Instant::now();
                let (frames, rows) = frames_rows(&message);
                if let Err(e) = deliver(sink, message, &mut side, |p| {
                    if let Some(out) = predictions_out.as_mut() {
                        let _ = out.send(p);
                    }
                }) {
                    failure = Some(e);
                    break;
                }
                stats.sink.record(frames, rows, t1.elapsed(), t1 - last, Duration::ZERO, inlet.len());
                last = Instant::now();
            }
            drop(entered);
            let fault =
                input.as_ref().and_then(|i| i.fault()).or_else(|| predictions_out.as_ref().and_then(|o| o.fault()));
            if let Some(reason) = fault {
                failure = failure.or(Some(StageError::Edge { stage: "sink".into(), reason }.into()));
            }
        }
        if !has_sink {
            // Until the tap is gone with the part's last element: each epoch committed here.
            for report in reports_in.iter() {
                let handled = report.and_then(|r| on_epoch(r).map_err(PipelineError::Epoch));
                if let Err(e) = handled {
                    failure = failure.or(Some(e));
                    break;
                }
            }
        }
        drop(reports_in);
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
            Some(Ok((played, fault))) => {
                if let Some(reason) = fault {
                    failure = failure.or(Some(StageError::Edge { stage: "source".into(), reason }.into()));
                }
                played
            }
            Some(Err(payload)) => {
                let message = panic_message(payload);
                failure = failure.or(Some(StageError::Panicked { stage: "source".into(), message }.into()));
                Err(Interrupted::Stopped)
            }
            // The head runs elsewhere: this part's input ended cleanly.
            None => Ok(()),
        };
        match failure {
            Some(e) => Err(e),
            None => Ok((finished, super::ending(played)?)),
        }
    })
}
