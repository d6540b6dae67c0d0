//! Every message through every stage in turn on the calling thread: the reference the
//! threaded mode must equal bit for bit.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::barrier::Barrier;
use super::{deliver, frames_rows, step, Head, HeadIo, OnEpoch, PipelineError, PipelineStats, Sink, SinkSide};
use super::{Closed, Ending, Message, Prediction, Stage, TopDown, Wiring};

struct LockstepIo<'a, 'b> {
    stages: Vec<Box<dyn Stage>>,
    /// Per stage: the states the stage above sent and this one has not read yet (feedback
    /// edges, pre-filled with the delay's neutral states as the threaded edges are).
    above: Vec<VecDeque<TopDown>>,
    sink: &'a mut dyn Sink,
    predictions: VecDeque<Prediction>,
    on_epoch: &'a mut OnEpoch<'b>,
    stats: &'a PipelineStats,
    failure: Option<PipelineError>,
    barrier: Barrier,
    names: Vec<String>,
}

impl HeadIo for LockstepIo<'_, '_> {
    fn emit(&mut self, mut message: Message) -> Result<(), Closed> {
        let (frames, rows) = frames_rows(&message);
        self.stats.source.record(frames, rows, Duration::ZERO, Duration::ZERO, Duration::ZERO, 0);
        for k in 0..self.stages.len() {
            let started = Instant::now();
            let queue = &mut self.above[k];
            let barrier = &self.barrier;
            let deposit = |epoch, state| barrier.deposit(k, epoch, state);
            let (out, below) = match step(self.stages[k].as_mut(), message, || queue.pop_front(), deposit) {
                Ok(m) => m,
                Err(e) => {
                    self.failure = Some(e.into());
                    return Err(Closed);
                }
            };
            message = out;
            if let Some(state) = below.filter(|_| k > 0 && self.stages[k - 1].reads_above()) {
                self.above[k - 1].push_back(state);
            }
            self.stages[k].learn();
            self.stats.stages[k].record(frames, rows, started.elapsed(), Duration::ZERO, Duration::ZERO, 0);
        }
        let started = Instant::now();
        let predictions = &mut self.predictions;
        let mut side = SinkSide {
            on_epoch: self.on_epoch,
            latency: &self.stats.latency,
            barrier: &self.barrier,
            names: &self.names,
        };
        if let Err(e) = deliver(self.sink, message, &mut side, |p| predictions.push_back(p)) {
            self.failure = Some(e);
            return Err(Closed);
        }
        self.stats.sink.record(frames, rows, started.elapsed(), Duration::ZERO, Duration::ZERO, 0);
        Ok(())
    }

    fn prediction(&mut self) -> Option<Prediction> {
        self.predictions.pop_front()
    }
}

pub(super) fn run(
    head: &mut dyn Head,
    stages: Vec<Box<dyn Stage>>,
    sink: &mut dyn Sink,
    wiring: Wiring,
    stats: &PipelineStats,
    on_epoch: &mut OnEpoch<'_>,
) -> Result<(Vec<Box<dyn Stage>>, Ending), PipelineError> {
    let above = stages
        .iter()
        .map(|s| {
            let delay = if s.reads_above() { wiring.feedback_delay } else { 0 };
            (0..delay).map(|_| TopDown::neutral()).collect()
        })
        .collect();
    let barrier = Barrier::new(stages.len(), wiring.shards.clone());
    let names = stages.iter().map(|s| s.name().to_string()).collect();
    let mut io = LockstepIo {
        stages,
        above,
        sink,
        predictions: VecDeque::new(),
        on_epoch,
        stats,
        failure: None,
        barrier,
        names,
    };
    let played = head.run(&mut io);
    match io.failure {
        Some(e) => Err(e),
        None => Ok((io.stages, super::ending(played)?)),
    }
}
