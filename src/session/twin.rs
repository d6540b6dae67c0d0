//! The one backprop-twin runner: the same layers as the FF pipeline with a softmax on top,
//! trained end to end with cross-entropy on the same rows, epoch for epoch, as the FF run
//! sees them; checkpointed, resumed and recorded like any FF run. What the rows are and how
//! the net is scored comes from the workload's [`TwinData`]. The twin's settings are the
//! pipeline file's (`[optimizer]` for labelled data, `[sink.twin]` for frame streams).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ndarray::Array2;

use super::{Session, Trained};
use crate::backprop::Backprop;
use crate::checkpoint;
use crate::metrics::StageStats;
use crate::packet::StageState;
use crate::record::{CurvePoint, ErrorsPct};
use crate::run_folder::{backprop_threads, save_epoch, start_reporter, whole_run_rates, RunState};

/// One batch of training rows and their classes.
pub type Batch = (Array2<f32>, Vec<u8>);

/// The rows a twin trains on and how it is scored.
pub trait TwinData {
    /// Values in a row of the workload (the net's inputs).
    fn inputs(&self) -> usize;
    /// The net, built for the workload's rows.
    fn net(&self) -> Backprop;
    /// Frames one epoch trains on, for the live view's ETA (0: not known).
    fn epoch_frames(&self) -> u64 {
        0
    }
    /// The training batches of 1-based `epoch`, in the order the FF run sees them.
    fn epoch(&mut self, epoch: u32) -> Result<Box<dyn Iterator<Item = Result<Batch>> + '_>>;
    /// Scores the net after `epoch` (`last`: the run's last): the curve's held-out point, with
    /// the final metrics put into `state`; and what the epoch's log line says of it.
    fn score(&mut self, net: &Backprop, epoch: u32, last: bool, state: &mut RunState) -> (ErrorsPct, String);
}

/// `{"backprop": error}`: the twin's one measure.
pub fn backprop(error: f64) -> ErrorsPct {
    ErrorsPct::from([("backprop".to_string(), error)])
}

/// Trains the twin of `session` on `data` from the epoch after the last checkpoint.
pub fn run(session: &Session<'_>, data: &mut dyn TwinData, state: &mut RunState) -> Result<Trained> {
    let (config, dir, options) = (session.config, session.dir, session.options);
    // As for the FF stages: a net that cannot fit is refused before it is built.
    crate::config::build::check_memory(config, data.inputs())?;
    let mut net = data.net();
    net.set_threads(backprop_threads(options));
    if state.epochs_done > 0 {
        let loaded = checkpoint::load_run(dir)?;
        net.restore(&loaded.state.tensors).map_err(|e| anyhow::anyhow!("cannot resume {}: {e}", dir.display()))?;
    }
    let stats = StageStats::new("backprop");
    let (progress, reporter) = start_reporter(vec![Arc::clone(&stats)], None, config, state, dir, options)?;
    progress.epoch_frames.store(data.epoch_frames(), Ordering::Relaxed);
    let offset = state.seconds;
    let (mut frames, mut completed) = (0u64, true);
    for epoch in state.epochs_done + 1..=config.data.epochs {
        progress.epoch.store(epoch, Ordering::Relaxed);
        let (mut wrong, mut seen) = (0.0, 0usize);
        let mut last = Instant::now();
        for batch in data.epoch(epoch)? {
            if session.stop.load(Ordering::Relaxed) {
                completed = false;
                break;
            }
            let (x, labels) = batch?;
            let t0 = Instant::now();
            // The stream error: each batch scored before the twin learns from it.
            wrong += net.error_pct(&x, &labels) * labels.len() as f64 / 100.0;
            seen += labels.len();
            if !net.train_step(&x, &labels, epoch).is_finite() {
                bail!("backprop: the loss is not finite at epoch {epoch}; the last checkpoint is kept");
            }
            frames += labels.len() as u64;
            stats.record(labels.len(), labels.len(), t0.elapsed(), t0 - last, Duration::ZERO, 0);
            last = Instant::now();
        }
        if !completed {
            break;
        }
        let (held_out, said) = data.score(&net, epoch, epoch == config.data.epochs, state);
        let seconds = session.seconds(offset);
        let stream = 100.0 * wrong / seen.max(1) as f64;
        state.curve.push(CurvePoint {
            epoch,
            val_error_pct: held_out,
            stream_error_pct: backprop(stream),
            test_error_pct: ErrorsPct::new(),
            seconds,
        });
        state.seconds = seconds;
        let states = [StageState { stage: "backprop".into(), tensors: net.tensors() }];
        save_epoch(dir, &states, &[], config, state, epoch, 1)?;
        if !options.quiet {
            tracing::info!(
                "epoch {epoch:>3}/{} {seconds:>7.1}s  stream: backprop {stream:.2}%{said}",
                config.data.epochs
            );
        }
    }
    drop(reporter);
    let wall = session.started.elapsed().as_secs_f64();
    Ok((completed, whole_run_rates(&[stats], wall), frames))
}
