//! A part of a pipeline: what one process runs when the chain is spread over several (issue 13,
//! item 2). A part is the head or not, a run of consecutive stages, and the sink or not; where
//! a neighbour runs elsewhere, an edge of the [`Boundary`] stands in for it (a remote edge,
//! `crate::transport::credit`, that keeps the in-process contract). Each process runs its part
//! threaded, one thread per element, exactly as the whole chain runs in one process, so the
//! stages see the same messages in the same order and end with the same weights.
//!
//! Checkpoints: each stage still leaves its state at its own process's barrier as the epoch
//! marker passes (with a shard store, its shard is written on its own host); the sink's part
//! reports the deposits of its own stages.

use super::edge::{Inlet, Outlet};
use super::{Head, Message, PipelineError, PipelineStats, Prediction, Sink, Stage, TopDown};

/// The edges between this part and the parts elsewhere; `None` where the neighbour is here.
#[derive(Default)]
pub struct Boundary {
    /// Into this part's first element, when the head is elsewhere.
    pub input: Option<Box<dyn Inlet<Message>>>,
    /// Out of this part's last element, when the sink is elsewhere.
    pub output: Option<Box<dyn Outlet<Message>>>,
    /// The sink's predictions, into the head here from a sink elsewhere.
    pub predictions_in: Option<Box<dyn Inlet<Prediction>>>,
    /// The sink's predictions, from the sink here to a head elsewhere.
    pub predictions_out: Option<Box<dyn Outlet<Prediction>>>,
    /// The state of the stage above this part's last stage, when that stage reads it and the
    /// stage above runs elsewhere.
    pub above_in: Option<Box<dyn Inlet<TopDown>>>,
    /// This part's first stage's state, to the stage below it elsewhere (when that one reads it).
    pub below_out: Option<Box<dyn Outlet<TopDown>>>,
}

/// One process's share of the chain.
pub struct Part<'a> {
    /// The head, if it runs here.
    pub head: Option<&'a mut dyn Head>,
    /// The stages that run here, consecutive in the chain, in order.
    pub stages: Vec<Box<dyn Stage>>,
    /// The chain position of `stages[0]` (0: the first stage), which names its counters.
    pub first: usize,
    /// The sink, if it runs here.
    pub sink: Option<&'a mut dyn Sink>,
    /// The edges to the other parts.
    pub boundary: Boundary,
}

impl<'a> Part<'a> {
    /// The whole chain in one process: no boundary.
    pub fn whole(head: &'a mut dyn Head, stages: Vec<Box<dyn Stage>>, sink: &'a mut dyn Sink) -> Part<'a> {
        Part { head: Some(head), stages, first: 0, sink: Some(sink), boundary: Boundary::default() }
    }

    /// Every edge the part needs is there and none it cannot use; the stages fit each other
    /// and the counters.
    pub(super) fn check(&self, stats: &PipelineStats) -> Result<(), PipelineError> {
        let b = &self.boundary;
        let fail = |reason: &str| Err(PipelineError::Part(reason.to_string()));
        let (head, sink) = (self.head.is_some(), self.sink.is_some());
        if head == b.input.is_some() {
            return fail(if head {
                "the head runs here, so nothing may come in from upstream"
            } else {
                "the head runs elsewhere, so the part needs an edge in from upstream"
            });
        }
        if sink == b.output.is_some() {
            return fail(if sink {
                "the sink runs here, so nothing may go out downstream"
            } else {
                "the sink runs elsewhere, so the part needs an edge out downstream"
            });
        }
        if head && !sink && b.predictions_in.is_none() {
            return fail("the head runs here and the sink elsewhere: the sink's predictions need an edge in");
        }
        if sink && !head && b.predictions_out.is_none() {
            return fail("the sink runs here and the head elsewhere: its predictions need an edge out");
        }
        if (head && sink && (b.predictions_in.is_some() || b.predictions_out.is_some()))
            || (!head && b.predictions_in.is_some())
            || (!sink && b.predictions_out.is_some())
        {
            return fail("a predictions edge to the other parts where no neighbour needs one");
        }
        if self.first + self.stages.len() > stats.stages.len() {
            return fail("more stages than the pipeline's counters");
        }
        let last_reads_above = self.stages.last().is_some_and(|s| s.reads_above());
        if last_reads_above && !sink && b.above_in.is_none() {
            return fail(
                "the part's last stage reads the state of the stage above, which runs elsewhere: it needs an edge in",
            );
        }
        if b.above_in.is_some() && !last_reads_above {
            return fail("an edge of top-down state into a last stage that does not read one");
        }
        if b.below_out.is_some() && !self.stages.first().is_some_and(|s| s.sends_below()) {
            return fail("an edge of top-down state out of a first stage that does not send one");
        }
        // The pairs here; a last stage reading above is checked against the chain's end only
        // where the chain ends here.
        super::check_pairs(&self.stages)?;
        if sink {
            super::check_top(&self.stages)?;
        }
        Ok(())
    }
}
