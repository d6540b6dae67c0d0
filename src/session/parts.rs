//! A session's share of a pipeline spread over processes (`[placement]`, `--part`): this
//! process's head, stages and sink as the file places them, joined to the other parts by remote
//! edges over a Zenoh peer session (feature `dist-zenoh`).

use std::time::Duration;

use crate::config::PipelineConfig;
use crate::runtime::{self, Ending, Head, OnEpoch, Part, PipelineError, PipelineStats, Sink, Wiring};
use crate::stage::Stage;

/// What a part of a pipeline needs from its workload: its head and sink, offered whether or not
/// the part runs them (a part that does not, drops them unused).
pub struct Elements<'a> {
    /// The workload's head.
    pub head: &'a mut dyn Head,
    /// Every stage of the chain, built as for a run in one process.
    pub stages: Vec<Box<dyn Stage>>,
    /// The workload's sink.
    pub sink: &'a mut dyn Sink,
}

/// Runs part `part` (0-based) of `config`'s placement.
pub fn run(
    config: &PipelineConfig,
    part: usize,
    elements: Elements<'_>,
    wiring: Wiring,
    stats: &PipelineStats,
    on_epoch: &mut OnEpoch<'_>,
) -> Result<(Vec<Box<dyn Stage>>, Ending), PipelineError> {
    let fail = |m: String| PipelineError::Part(m);
    let placement = config.placement.as_ref().ok_or_else(|| fail("the pipeline file has no [placement]".into()))?;
    let Some(cut) = placement.cut(part) else {
        return Err(fail(format!("--part {} of a placement of {} parts", part + 1, placement.parts.len())));
    };
    let Elements { head, mut stages, sink } = elements;
    let chain: Vec<(String, bool)> = stages.iter().map(|s| (s.name().to_string(), s.reads_above())).collect();
    let mine: Vec<Box<dyn Stage>> = stages.drain(cut.first..cut.first + cut.count).collect();
    drop(stages);
    let at = crate::transport::boundary::Placement {
        // Two runs of one file on one network would share keys: the seed tells seeds apart.
        run: format!("{}/seed{}", config.name, config.seed),
        head: cut.head,
        first: cut.first,
        count: cut.count,
        sink: cut.sink,
        stages: chain,
    };
    let settings = crate::transport::boundary::EdgeSettings {
        capacity: wiring.capacity,
        feedback_delay: wiring.feedback_delay,
        stall: Duration::from_secs_f64(placement.stall_s),
    };
    let wire = open_wire(&placement.endpoints, part)?;
    tracing::info!(
        "part {} of {}: {} (listening on {})",
        part + 1,
        placement.parts.len(),
        placement.parts[part].join(", "),
        placement.endpoints[part]
    );
    let boundary = crate::transport::boundary::open(wire.as_ref(), &at, settings)
        .map_err(|e| fail(format!("opening the edges to the other parts: {e}")))?;
    let this = Part {
        head: cut.head.then_some(head),
        stages: mine,
        first: cut.first,
        sink: cut.sink.then_some(sink),
        boundary,
    };
    let result = runtime::run_part(this, wiring, stats, on_epoch);
    // The wire lives until every edge has said its last word (end of stream, goodbye).
    drop(wire);
    result
}

/// This part's peer session: it listens on its own endpoint and dials the parts before it, so
/// every pair of parts is joined once, whichever starts first (a peer keeps dialling).
#[cfg(feature = "dist-zenoh")]
fn open_wire(endpoints: &[String], part: usize) -> Result<Box<dyn crate::transport::Wire>, PipelineError> {
    use crate::transport::zenoh::{Peers, ZenohWire};
    let peers = Peers { listen: vec![endpoints[part].clone()], connect: endpoints[..part].to_vec() };
    let wire = ZenohWire::open(&peers)
        .map_err(|e| PipelineError::Part(format!("cannot open the Zenoh session on {}: {e}", endpoints[part])))?;
    Ok(Box::new(wire))
}

#[cfg(not(feature = "dist-zenoh"))]
fn open_wire(_endpoints: &[String], _part: usize) -> Result<Box<dyn crate::transport::Wire>, PipelineError> {
    Err(PipelineError::Part(
        "this ffstream was built without remote edges; rebuild with `--features dist-zenoh`".into(),
    ))
}
