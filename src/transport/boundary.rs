//! A part's boundary on a wire: every edge between two parts of a chain
//! ([`crate::runtime::part`]) as a credit edge, each under a key both parts derive from the
//! run's name and the chain's shape alone, so no process tells another where to listen.
//!
//! Keys, for a run named `R`, name the two elements an edge joins (the head is `source`, the
//! sink `sink`, stages by their names), so an edge's error says where it runs:
//!
//! ```text
//!   R/source-layer1, R/layer1-layer2, ..., R/layer3-sink    forward
//!   R/sink-source                                           the sink's predictions
//!   R/layer2-layer1, ...                                    top-down state
//! ```
//!
//! Every part opens its receiving ends before any sending end, and a sending end waits for its
//! receiver before its first message, so parts may start in any order.

use std::time::Duration;

use super::credit::{CreditInlet, CreditOutlet, EdgeError};
use super::{Wire, WireCodec};
use crate::runtime::edge::{EdgeSpec, UNBOUNDED};
use crate::runtime::{Boundary, Message, Prediction, TopDown};

/// The longest an outlet's drop waits for its receiver's goodbye.
const LINGER: Duration = Duration::from_secs(10);

/// Where a part sits in its chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The run's name: the prefix of every key (two runs on one network need two names).
    pub run: String,
    /// The head runs in this part.
    pub head: bool,
    /// The stages of this part: `first..first + count` of the chain.
    pub first: usize,
    /// How many.
    pub count: usize,
    /// The sink runs in this part.
    pub sink: bool,
    /// Per stage of the whole chain, in order: its name, and whether it reads the state of
    /// the stage above.
    pub stages: Vec<(String, bool)>,
}

impl Placement {
    /// The name of chain element `e` (0: the head, `i + 1`: stage i, past the stages: the sink).
    fn element(&self, e: usize) -> &str {
        match e {
            0 => "source",
            e if e <= self.stages.len() => &self.stages[e - 1].0,
            _ => "sink",
        }
    }

    /// The key of the edge from element `from` to element `to`.
    fn key(&self, from: usize, to: usize) -> String {
        format!("{}/{}-{}", self.run, self.element(from), self.element(to))
    }

    fn reads_above(&self, stage: usize) -> bool {
        self.stages.get(stage).is_some_and(|s| s.1)
    }
}

/// The edge settings a boundary opens with.
#[derive(Clone, Copy, Debug)]
pub struct EdgeSettings {
    /// Items a forward edge holds (the pipeline's `queue_capacity`).
    pub capacity: usize,
    /// Packets between a stage's state and the stage below reading it.
    pub feedback_delay: usize,
    /// How long an end waits for its peer before the edge is declared stalled.
    pub stall: Duration,
}

/// Opens this part's boundary edges on `wire`: receiving ends first, then sending ends (the
/// feedback edge out of the part sends its `feedback_delay` neutral states, which waits for the
/// part below to have opened its end).
pub fn open(wire: &dyn Wire, at: &Placement, settings: EdgeSettings) -> Result<Boundary, EdgeError> {
    let stages = at.stages.len();
    let last = at.first + at.count; // one past this part's last stage
    let spec = EdgeSpec::blocking(settings.capacity);
    let stall = settings.stall;
    fn inlet<T: WireCodec>(wire: &dyn Wire, key: String, stall: Duration) -> Result<CreditInlet<T>, EdgeError> {
        CreditInlet::open(wire, &key).map(|i| i.with_stall(stall))
    }
    fn outlet<T: WireCodec>(
        wire: &dyn Wire,
        key: String,
        spec: EdgeSpec,
        stall: Duration,
    ) -> Result<CreditOutlet<T>, EdgeError> {
        // The end of stream must reach the other part before this process may exit.
        CreditOutlet::open(wire, &key, spec).map(|o| o.with_stall(stall).with_linger(stall.min(LINGER)))
    }
    let mut b = Boundary::default();
    // Receiving ends.
    if !at.head {
        // Into this part's first element: the edge out of the element before it.
        b.input = Some(Box::new(inlet::<Message>(wire, at.key(at.first, at.first + 1), stall)?));
    }
    if at.head && !at.sink {
        b.predictions_in = Some(Box::new(inlet::<Prediction>(wire, at.key(stages + 1, 0), stall)?));
    }
    let top_reads_above = at.count > 0 && at.reads_above(last - 1);
    if top_reads_above && !at.sink && last < stages {
        b.above_in = Some(Box::new(inlet::<TopDown>(wire, at.key(last + 1, last), stall)?));
    }
    // Sending ends.
    if !at.sink {
        // Out of this part's last element (the head's element is 0, stage i's is i + 1).
        b.output = Some(Box::new(outlet::<Message>(wire, at.key(last, last + 1), spec, stall)?));
    }
    if at.sink && !at.head {
        let unbounded = EdgeSpec::blocking(UNBOUNDED);
        b.predictions_out = Some(Box::new(outlet::<Prediction>(wire, at.key(stages + 1, 0), unbounded, stall)?));
    }
    let below_reads_above = at.first > 0 && at.count > 0 && at.reads_above(at.first - 1);
    if below_reads_above {
        let window = EdgeSpec::blocking(settings.capacity.max(1).saturating_add(settings.feedback_delay));
        let mut out = outlet::<TopDown>(wire, at.key(at.first + 1, at.first), window, stall)?;
        for _ in 0..settings.feedback_delay {
            // As the in-process feedback edge: `delay` neutral states already queued.
            out.send_checked(&TopDown::neutral())?;
        }
        b.below_out = Some(Box::new(out));
    }
    Ok(b)
}
