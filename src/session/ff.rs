//! The one FF run loop: build the stages a pipeline file names, take them (and the sink) back
//! from the last checkpoint on a resume, play the workload's epochs through the runtime, and
//! make every epoch durable as its report arrives. What differs between workloads is behind
//! [`Workload`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;

use super::{Session, Trained};
use crate::checkpoint;
use crate::config::build::build_stages_for;
use crate::config::PipelineConfig;
use crate::metrics::{Latency, Progress};
use crate::run_folder::{add_phase_times, save_epoch, start_reporter, whole_run_rates, RunState};
use crate::runtime::{Ending, EpochReport, OnEpoch, PipelineError, PipelineStats, Sink, Wiring};
use crate::stage::Stage;

/// What a workload's head and the runtime are given to play the epochs left.
pub struct Play<'a> {
    /// The resolved pipeline file.
    pub config: &'a PipelineConfig,
    /// The first epoch to play (1-based; later than 1 on a resume).
    pub first_epoch: u32,
    /// Set by Ctrl-C: the head stops at the next packet.
    pub stop: Arc<AtomicBool>,
    /// Where the head publishes its phase and position (the live view).
    pub progress: &'a Arc<Progress>,
    /// Threaded or lockstep, queue capacity, feedback delay.
    pub wiring: Wiring,
    /// The per-stage counters.
    pub stats: &'a PipelineStats,
    /// The part of the file's `[placement]` this process runs (0-based); none: the whole chain.
    pub part: Option<usize>,
}

/// One workload (a dataset of labelled rows, a frame stream): its head, its sink, and what
/// its epochs and its end measure. The run loop owns the stages, the checkpoints and the
/// live view.
pub trait Workload {
    /// Values per row the first stage reads.
    fn inputs(&self) -> usize;
    /// The sink, for a resume to restore what it learned.
    fn sink(&mut self) -> &mut dyn Sink;
    /// Frames one epoch passes through the first stage, for the live view's ETA (0: not known).
    fn epoch_frames(&self) -> u64 {
        0
    }
    /// Plays epochs `play.first_epoch..` through `stages` with the workload's head and sink.
    fn play(
        &mut self,
        play: Play<'_>,
        stages: Vec<Box<dyn Stage>>,
        on_epoch: &mut OnEpoch<'_>,
    ) -> Result<(Vec<Box<dyn Stage>>, Ending), PipelineError>;
    /// Takes an epoch's measures into the run state (curve, final metrics, details) and says
    /// them for the epoch's log line (which the run loop starts with the epoch and the time).
    fn apply_epoch(report: &EpochReport, state: &mut RunState, config: &PipelineConfig, seconds: f64) -> String
    where
        Self: Sized;
    /// After the last epoch, or after Ctrl-C (`Ending::Stopped`): what the workload measures
    /// at the end (source counters, frozen probes), into the run state. Nothing by default.
    fn finish(
        &mut self,
        _session: &Session<'_>,
        _stages: Vec<Box<dyn Stage>>,
        _ending: Ending,
        _stats: &PipelineStats,
        _state: &mut RunState,
    ) -> Result<()> {
        Ok(())
    }
}

/// Runs the FF stages of `session` on `workload` from the epoch after the last checkpoint.
pub fn run<W: Workload>(session: &Session<'_>, workload: &mut W, state: &mut RunState) -> Result<Trained> {
    let (config, dir, options) = (session.config, session.dir, session.options);
    crate::config::build::check_memory(config, workload.inputs())?;
    let mut stages = build_stages_for(config, workload.inputs());
    // A part of a pipeline spread over processes restores its own stages (and sink), from the
    // epoch every part resumes at, which may be one behind its own last (it keeps two).
    let part = options.part.and_then(|i| config.placement.as_ref()?.cut(i));
    if state.epochs_done > 0 {
        let loaded = match part {
            Some(_) => checkpoint::load_run_at(dir, state.epochs_done)?,
            None => checkpoint::load_run(dir)?,
        };
        let cannot = |e| anyhow::anyhow!("cannot resume {}: {e}", dir.display());
        let (mine, sink) = match part {
            Some(cut) => (cut.first..cut.first + cut.count, cut.sink),
            None => (0..stages.len(), true),
        };
        for stage in &mut stages[mine] {
            stage.restore(&loaded.state).map_err(cannot)?;
        }
        if sink {
            workload.sink().restore(&loaded.state).map_err(cannot)?;
        }
    }
    let keep_epochs = if part.is_some() { 2 } else { 1 };
    let mut wiring = config.pipeline.as_ref().map(|p| p.wiring()).ok_or_else(|| {
        anyhow::anyhow!("`{}` has no [pipeline] section: an FF run needs its mode and queues", config.name)
    })?;
    // Every stage writes its own shard as the epoch's marker passes it.
    wiring.shards = Some(checkpoint::ShardStore::new(dir));
    let stats = PipelineStats::new(&config.stage_names());
    let latency = Some(Arc::clone(&stats.latency));
    let (progress, reporter) = start_reporter(stats.all(), latency, config, state, dir, options)?;
    progress.epoch_frames.store(workload.epoch_frames(), Ordering::Relaxed);
    let offset = state.seconds;
    let mut latency_before = stats.latency.counts();
    let first_epoch = state.epochs_done + 1;
    let mut on_epoch = |report: EpochReport| {
        progress.epoch.store(report.epoch + 1, Ordering::Relaxed);
        let seconds = session.seconds(offset);
        let measured = W::apply_epoch(&report, state, config, seconds);
        state.seconds = seconds;
        save_epoch(dir, &report.states, &report.shards, config, state, report.epoch, keep_epochs)?;
        // The latency of this epoch's packets, head to sink.
        let now = stats.latency.counts();
        let p = |q| Latency::quantile(&latency_before, &now, q).map(|s| s * 1000.0);
        let latency = match (p(0.5), p(0.99)) {
            (Some(p50), Some(p99)) => format!("  latency p50 {p50:.0} ms p99 {p99:.0} ms"),
            _ => String::new(),
        };
        latency_before = now;
        if !options.quiet {
            tracing::info!("epoch {:>3}/{} {seconds:>7.1}s{measured}{latency}", report.epoch, config.data.epochs);
        }
        Ok(())
    };
    let play = Play {
        config,
        first_epoch,
        stop: Arc::clone(&session.stop),
        progress: &progress,
        wiring,
        stats: &stats,
        part: options.part,
    };
    let played = workload.play(play, stages, &mut on_epoch);
    drop(reporter);
    let (stages, ending) = played?;
    if let Some(svg) = crate::plot::throughput_svg(&dir.join("metrics.jsonl")) {
        std::fs::write(dir.join("throughput.svg"), svg)?;
    }
    add_phase_times(config, &progress, state);
    // Head-to-sink latency over the whole run, every frame that reached the sink here.
    let counts = stats.latency.counts();
    let none = vec![0; counts.len()];
    let ms = |q| Latency::quantile(&none, &counts, q).map(|s| s * 1000.0);
    if let (Some(p50), Some(p99)) = (ms(0.5), ms(0.99)) {
        state.details.insert("latency_ms".into(), serde_json::json!({ "p50": p50, "p99": p99 }));
    }
    if let Some(first) = stats.latency.first() {
        // This session's first packet through the empty pipeline.
        state.details.insert("fill_ms".into(), serde_json::json!(first.as_secs_f64() * 1000.0));
    }
    let wall = session.started.elapsed().as_secs_f64();
    let frames = stats.stages.last().map_or(0, |s| s.totals().frames);
    workload.finish(session, stages, ending, &stats, state)?;
    Ok((ending == Ending::Finished, whole_run_rates(&stats.all(), wall), frames))
}
