//! A session: one run of a pipeline file, from its run folder ([`crate::run_folder`]) to its
//! record. Every workload goes through the same loop: MNIST, Aesop, Moving MNIST and video
//! differ in their head, sink and source ([`Workload`]), not in how a run starts,
//! checkpoints, resumes, evaluates and records. The backprop twin of any workload runs in
//! [`twin`], the FF pipeline in [`ff`].
//!
//! ```text
//!   run(config) -> open run folder -> labelled::Labelled | frames::Frames   (the workload)
//!               -> ff::run (the stages through the runtime) | twin::run (backprop)
//!               -> record.json (+ results/<name>/seed<N>.json)
//! ```

pub mod ff;
pub mod frames;
pub mod labelled;
pub mod parts;
pub mod twin;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::config::{PipelineConfig, Trainer};
use crate::metrics::{summary_table, StageRates};
use crate::record::{Record, Throughput};
pub use crate::run_folder::{git_commit, Outcome, RunOptions, RunState};
use crate::run_folder::{machine, open_run, save_state};

pub use crate::config::build::load_data;
pub use ff::Workload;
pub use labelled::{evaluate, run_labelled};

/// What a trainer hands back: whether the run reached its last epoch, the whole run's
/// per-stage rates, and the frames that reached the sink.
pub(crate) type Trained = (bool, Vec<StageRates>, u64);

/// Runs a pipeline to its end (or to Ctrl-C), checkpointing every epoch.
pub fn run(config: &PipelineConfig, options: &RunOptions) -> Result<Outcome> {
    // An idx folder's image size and classes come from its files: read them before anything
    // is built for them.
    let config = &config.resolved(options.data_dir.as_deref())?;
    // One part of a pipeline spread over processes: the sink's part measures, so it alone
    // writes the record.
    let measures = match (options.part, &config.placement) {
        (None, _) => true,
        (Some(_), None) => bail!("--part runs a part of the file's [placement], and `{}` has none", config.name),
        (Some(i), Some(p)) if i >= p.parts.len() => bail!("--part {} of a placement of {} parts", i + 1, p.parts.len()),
        (Some(i), Some(p)) => i + 1 == p.parts.len(),
    };
    // A run that would replace a committed record of another experiment stops before it starts.
    let record_path = options
        .results_dir
        .as_ref()
        .filter(|_| measures)
        .map(|r| r.join(&config.name).join(format!("seed{}.json", config.seed)));
    let settings = serde_json::to_value(config)?;
    if let Some(path) = &record_path {
        crate::record::check_replaceable(path, &settings, options.replace_record).map_err(anyhow::Error::msg)?;
    }
    let speedrun_path = match (&options.results_dir, &config.speedrun) {
        (Some(results), Some(_)) if measures => Some(crate::speedrun::path(results, &config.name)),
        _ => None,
    };
    if let Some(path) = &speedrun_path {
        crate::record::check_replaceable(path, &settings, options.replace_record).map_err(anyhow::Error::msg)?;
    }
    let (dir, mut state) = open_run(config, options)?;
    if state.epochs_done >= config.data.epochs {
        bail!("run {} already finished all {} epochs", dir.display(), config.data.epochs);
    }
    let commit = git_commit();
    if state.commits.last() != Some(&commit) {
        state.commits.push(commit);
    }
    let stop = options.stop.clone().unwrap_or_default();
    let started = Instant::now();
    let offset = state.seconds;
    let session = Session { config, dir: &dir, started, options, stop: stop.clone() };
    let (completed, stage_rates, frames) = if config.is_frame_stream() {
        match config.trainer {
            Trainer::Ff => ff::run(&session, &mut frames::Frames::open(config, options, stop)?, &mut state)?,
            Trainer::Backprop => {
                twin::run(&session, &mut frames::FramesTwin::open(config, options, stop)?, &mut state)?
            }
        }
    } else {
        match config.trainer {
            Trainer::Ff => ff::run(&session, &mut labelled::Labelled::open(config, options, &mut state)?, &mut state)?,
            Trainer::Backprop => {
                twin::run(&session, &mut labelled::LabelledTwin::open(config, options, &mut state)?, &mut state)?
            }
        }
    };
    let session = started.elapsed().as_secs_f64();
    let wall = offset + session;
    let record = Record {
        experiment: config.name.clone(),
        seed: config.seed,
        commit: state.commits.join("+"),
        machine: machine(),
        wall_time_s: wall,
        epochs: state.epochs_done,
        overrides: state
            .overrides
            .iter()
            .filter_map(|o| o.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        metrics: state.metrics.clone(),
        throughput: Throughput { frames_per_s: frames as f64 / session.max(1e-9), stages: stage_rates.clone() },
        curve: state.curve.clone(),
        pipeline: settings.clone(),
        details: state.details.clone(),
    };
    if completed {
        state.seconds = wall;
    }
    save_state(&dir, &state)?;
    if completed && measures {
        std::fs::write(dir.join("record.json"), serde_json::to_string_pretty(&record)?)?;
        if let Some(path) = &record_path {
            // Checked again: another run may have recorded meanwhile. The run folder keeps
            // this run's record either way.
            crate::record::check_replaceable(path, &settings, options.replace_record)
                .map_err(|e| anyhow::anyhow!("{e}; this run's record is in {}", dir.join("record.json").display()))?;
            if let Some(folder) = path.parent() {
                std::fs::create_dir_all(folder)?;
            }
            std::fs::write(path, serde_json::to_string_pretty(&record)?)?;
        }
        if let (Some(results), Some(speedrun), true) = (&options.results_dir, &config.speedrun, speedrun_path.is_some())
        {
            let run = crate::speedrun::run_of(&record, speedrun, options.pipeline.as_deref());
            let written = crate::speedrun::write(results, config, run, options.replace_record)
                .map_err(|e| anyhow::anyhow!("{e}; this run's record is in {}", dir.join("record.json").display()))?;
            tracing::info!("speedrun: {}", written.display());
        }
    }
    let fields = if completed && config.is_frame_stream() && config.trainer == Trainer::Ff {
        let recorded = record_path.as_ref().and(options.results_dir.as_deref());
        stage_pictures(config, &dir, recorded)?
    } else {
        Vec::new()
    };
    Ok(Outcome { run_dir: dir, record, completed, table: summary_table(&stage_rates), fields })
}

/// Units drawn in each picture of what a frame stream's stages learned (an 8x8 grid).
const PICTURE_UNITS: usize = 64;

/// What the stages of a frame stream learned: each stage's first units' weights as a picture
/// (a dense stage above dense ones through the weights below it), `<run>/fields-<stage>.png`,
/// and for a recorded run also `<results>/figures/fields-<experiment>-seed<N>-<stage>.png`,
/// which the report page shows. A stage that is not drawn as an image (above a local stage, an
/// `ff_recurrent` one, a local stage over windows of several frames) gives none, and says why
/// in the debug log.
fn stage_pictures(config: &PipelineConfig, dir: &Path, results: Option<&Path>) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    // One read of the pipeline and the checkpoint for every stage's picture.
    let run = match crate::figure::RunFields::open(dir) {
        Ok(run) => run,
        Err(e) => {
            tracing::debug!("no pictures of what the stages learned: {e}");
            return Ok(written);
        }
    };
    for stage in run.stages() {
        let image = match run.figure(&stage, PICTURE_UNITS) {
            Ok(image) => image,
            Err(e) => {
                tracing::debug!("no picture of what {stage} learned: {e}");
                continue;
            }
        };
        let png = image.png()?;
        let path = dir.join(format!("fields-{stage}.png"));
        std::fs::write(&path, &png).with_context(|| format!("cannot write {}", path.display()))?;
        if let Some(results) = results {
            let figures = results.join("figures");
            std::fs::create_dir_all(&figures)?;
            let name = figures.join(format!("fields-{}-seed{}-{stage}.png", config.name, config.seed));
            std::fs::write(&name, &png).with_context(|| format!("cannot write {}", name.display()))?;
        }
        written.push(path);
    }
    Ok(written)
}

/// What every trainer of a session shares: the pipeline, the run folder, the clock, the flags
/// and the Ctrl-C flag.
pub struct Session<'a> {
    /// The resolved pipeline file.
    pub config: &'a PipelineConfig,
    /// The run folder.
    pub dir: &'a Path,
    /// When this session started (a resumed run adds the seconds of its earlier sessions).
    pub started: Instant,
    /// The flags.
    pub options: &'a RunOptions,
    /// Set by Ctrl-C.
    pub stop: Arc<AtomicBool>,
}

impl Session<'_> {
    /// Seconds of the whole run so far (earlier sessions included).
    pub fn seconds(&self, state_offset: f64) -> f64 {
        state_offset + self.started.elapsed().as_secs_f64()
    }
}
