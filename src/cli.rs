//! The command line: `run`, `eval`, `list`, `report`, `bench`, `data fetch`, `figure`. The only
//! user of `anyhow`.
//!
//! A command's own output (tables, summaries, the run folder) goes to the writer the binary
//! passes in (stdout); progress and warnings are `tracing` events; the live line goes to the
//! binary's [`LiveView`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::PipelineConfig;
use crate::data::fetch::{self, Fetchable};
use crate::figure;
use crate::live::LiveView;
use crate::record;
use crate::session::{self, RunOptions};

pub use crate::config::shipped::{pipeline_text, DEFAULT_PIPELINE, PIPELINES};

/// Forward-Forward learning as a streaming pipeline: one stage per layer, bounded queues,
/// local updates.
#[derive(Debug, Parser)]
#[command(name = "ffstream", version, about)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline (default: `video-unsupervised`, learning from the bundled clip).
    Run {
        /// A pipeline name from `ffstream list`, or a path to a pipeline file.
        pipeline: Option<String>,
        /// Override a setting of the file, e.g. `--set data.epochs=2` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Continue a killed run from its last finished epoch.
        #[arg(long, value_name = "RUN")]
        resume: Option<PathBuf>,
        /// Folder with the datasets (before $FFSTREAM_DATA and the user cache).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where run folders are created.
        #[arg(long, default_value = "runs")]
        runs_dir: PathBuf,
        /// Also write the record to results/<experiment>/seed<N>.json.
        #[arg(long)]
        record: bool,
        /// With --record: replace a record of other settings (fewer epochs, other overrides).
        #[arg(long, requires = "record")]
        replace_record: bool,
        /// No progress: no live line and no per-epoch lines (warnings still show).
        #[arg(long)]
        quiet: bool,
        /// Threads for the backprop twin (0: all cores; FF stages use one thread each).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Serve per-stage counters for Prometheus at http://ADDR/metrics (e.g. 127.0.0.1:9898).
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<String>,
        /// Run only part N (1-based) of the file's [placement], on this host.
        #[arg(long, value_name = "N", conflicts_with = "launch")]
        part: Option<usize>,
        /// Start every part of the file's [placement] as a process on this host, and wait for them
        /// (with --resume PART_FOLDER: resume every part of that launch).
        #[arg(long)]
        launch: bool,
        /// With --resume and --part: the epoch to resume from, the sink's part's last (`epoch` in
        /// its run folder's checkpoint.json); --launch finds it itself.
        #[arg(long, value_name = "E", requires = "part", requires = "resume")]
        from_epoch: Option<u32>,
        /// The run folder's time stamp, so the parts of one launch share it (set by --launch).
        #[arg(long, hide = true)]
        stamp: Option<u64>,
    },
    /// Score a run's last checkpoint on the validation and test splits.
    Eval {
        /// The run folder.
        run: PathBuf,
        /// Folder with the datasets.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// List the shipped pipelines with the paper's numbers.
    List,
    /// Write results/RESULTS.md and results/curves.svg from the records.
    Report {
        /// The results folder.
        #[arg(long, default_value = "results")]
        results: PathBuf,
    },
    /// Measure matmul peak, stage compute and pipeline throughput (ratios from one run).
    Bench {
        /// Folder with the datasets.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Batches of the MNIST stream to time in each mode.
        #[arg(long, default_value_t = 60)]
        batches: usize,
        /// Write the JSON report here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Datasets (`ffstream data fetch mnist`).
    Data {
        /// What to do.
        #[command(subcommand)]
        command: DataCommand,
    },
    /// The paper's image figures as grey PNGs (`ffstream figure hybrid`, `ffstream figure
    /// fields RUN`).
    Figure {
        /// Which figure.
        #[command(subcommand)]
        figure: FigureCommand,
    },
}

/// `ffstream figure ...`.
#[derive(Debug, Subcommand)]
pub enum FigureCommand {
    /// Paper Fig. 1: a hybrid mask, two MNIST training digits of different classes and their
    /// hybrid negative (digit A x mask + digit B x (1 - mask)), made by the pipelines' own code.
    Hybrid {
        /// The PNG to write.
        #[arg(long, default_value = "results/figures/fig1-hybrid.png")]
        out: PathBuf,
        /// Picks the mask and the digits (same seed, same figure).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Blur passes of the mask (the pipelines' default, `head.mask_blurs`, is 8).
        #[arg(long, default_value_t = 8)]
        blurs: usize,
        /// Folder with the datasets.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Paper Fig. 2: the incoming weights of a trained run's first units, one tile each, on a
    /// diverging grey map (0 mid grey, each tile scaled to its own max |w|).
    Fields {
        /// The run folder (its pipeline.toml and checkpoint).
        run: PathBuf,
        /// The stage whose weights to draw (a first stage: its input is the image).
        #[arg(long, default_value = "layer1")]
        stage: String,
        /// How many units, from the first (100: a 10x10 grid).
        #[arg(long, default_value_t = 100)]
        units: usize,
        /// The PNG to write (default: <RUN>/fields-<STAGE>.png).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `ffstream data ...`.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Download a dataset from its public source into the user cache, checked by SHA-256 (files
    /// already there with the right hash are kept). Not needed with ../shared/data beside the
    /// clone.
    Fetch {
        /// Which dataset.
        dataset: DatasetName,
        /// The data folder to fill (default: the user cache, $XDG_CACHE_HOME/ffstream or
        /// ~/.cache/ffstream, which every command searches after --data-dir and $FFSTREAM_DATA).
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        /// A mirror laid out like ../shared/data, instead of the public sources (default:
        /// $FFSTREAM_DATA_URL if set).
        #[arg(long, value_name = "URL")]
        from: Option<String>,
    },
}

/// The datasets `ffstream data fetch` downloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatasetName {
    /// The four MNIST files (11.6 MB).
    Mnist,
    /// The six CIFAR-10 batches (the 170 MB official archive, unpacked to 184 MB).
    Cifar10,
    /// Aesop's Fables, Project Gutenberg #19994 (0.2 MB).
    Aesop,
}

impl From<DatasetName> for Fetchable {
    fn from(name: DatasetName) -> Fetchable {
        match name {
            DatasetName::Mnist => Fetchable::Mnist,
            DatasetName::Cifar10 => Fetchable::Cifar10,
            DatasetName::Aesop => Fetchable::Aesop,
        }
    }
}

/// `ffstream data fetch`: the folder filled and what was done, in one line.
fn fetch_data(
    dataset: Fetchable,
    to: Option<PathBuf>,
    from: Option<String>,
    stop: &AtomicBool,
    out: &mut dyn Write,
) -> Result<()> {
    let cache = crate::data::user_cache_dir();
    let Some(dir) = to.clone().or(cache) else {
        bail!("no user cache folder: neither XDG_CACHE_HOME nor HOME is set; pass --to DIR");
    };
    let from = from.or_else(|| std::env::var(fetch::MIRROR_VAR).ok().filter(|u| !u.is_empty()));
    let report = fetch::fetch(dataset, &dir, from.as_deref(), stop)
        .with_context(|| format!("fetching {} into {}", dataset.name(), dir.display()))?;
    let (got, had) = (report.downloaded.len(), report.present.len());
    write!(
        out,
        "{}: {got} file(s) downloaded ({:.1} MB), {had} already there, in {}.",
        dataset.name(),
        report.bytes as f64 / 1e6,
        dir.display()
    )?;
    if to.is_some() {
        writeln!(out, " Use it with --data-dir {} or FFSTREAM_DATA={}.", dir.display(), dir.display())?;
    } else {
        writeln!(out, " Every command finds it there.")?;
    }
    Ok(())
}

/// `ffstream figure`: makes the figure, writes its PNG (creating the folder) and names it.
fn make_figure(figure: FigureCommand, out: &mut dyn Write) -> Result<()> {
    let (image, path) = match figure {
        FigureCommand::Hybrid { out: path, seed, blurs, data_dir } => {
            let data = crate::data::Labelled::mnist(data_dir.as_deref())?;
            let settings = figure::HybridFigure { seed, blurs, ..figure::HybridFigure::default() };
            (figure::hybrid_figure(&data, settings)?, path)
        }
        FigureCommand::Fields { run, stage, units, out: path } => {
            let path = path.unwrap_or_else(|| run.join(format!("fields-{stage}.png")));
            (figure::fields_figure(&run, &stage, units)?, path)
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    }
    std::fs::write(&path, image.png()?).with_context(|| format!("cannot write `{}`", path.display()))?;
    writeln!(out, "Wrote {} ({}x{}).", path.display(), image.width, image.height)?;
    Ok(())
}

/// Runs the command: its output to `out`, the live line of a run to `live` (unless `--quiet`).
pub fn run(args: Args, stop: Arc<AtomicBool>, out: &mut dyn Write, live: Option<Arc<dyn LiveView>>) -> Result<()> {
    let command = args.command.unwrap_or(Command::Run {
        pipeline: None,
        overrides: Vec::new(),
        resume: None,
        data_dir: None,
        runs_dir: "runs".into(),
        record: false,
        replace_record: false,
        quiet: false,
        threads: 0,
        metrics_addr: None,
        part: None,
        launch: false,
        from_epoch: None,
        stamp: None,
    });
    match command {
        Command::Run {
            pipeline,
            overrides,
            resume,
            data_dir,
            runs_dir,
            record,
            replace_record,
            quiet,
            threads,
            metrics_addr,
            part,
            launch,
            from_epoch,
            stamp,
        } => {
            if let Some(dir) = data_dir.as_ref().filter(|d| !d.is_dir()) {
                bail!("--data-dir {} is not a folder", dir.display());
            }
            let config = if let Some(dir) = &resume {
                if pipeline.is_some() || !overrides.is_empty() {
                    bail!("--resume continues a run as it was set up; drop the pipeline and --set arguments");
                }
                PipelineConfig::load(&dir.join("pipeline.toml"), &[])
                    .with_context(|| format!("`{}` is not a run folder that can be resumed", dir.display()))?
            } else {
                let (text, origin) = pipeline_text(pipeline.as_deref().unwrap_or(DEFAULT_PIPELINE))?;
                PipelineConfig::parse(&text, &origin, &overrides)?
            };
            if let (Some(placement), None) = (&config.placement, part) {
                if launch {
                    let name = pipeline.as_deref().unwrap_or(DEFAULT_PIPELINE);
                    let flags =
                        LaunchFlags { data_dir: data_dir.as_deref(), runs_dir: &runs_dir, record, replace_record };
                    return match &resume {
                        Some(folder) => launch_resume(placement, folder, &flags, out),
                        None => launch_parts(placement, name, &overrides, &flags, out),
                    };
                }
                tracing::info!(
                    "the file places its elements in {} parts; running all of them in this process (--launch, or --part N on each host, to spread them)",
                    placement.parts.len()
                );
            } else if launch {
                bail!("--launch starts the parts of the file's [placement], and `{}` has none", config.name);
            }
            let options = RunOptions {
                // What the command named, for a speedrun's command line (a resume names none).
                pipeline: resume.is_none().then(|| pipeline.clone().unwrap_or_else(|| DEFAULT_PIPELINE.to_string())),
                data_dir,
                runs_dir,
                resume,
                quiet,
                results_dir: record.then(|| PathBuf::from("results")),
                replace_record,
                overrides,
                stop: Some(Arc::clone(&stop)),
                threads,
                live,
                metrics_addr,
                part: part.map(|p| p.saturating_sub(1)),
                resume_epoch: from_epoch,
                stamp,
            };
            writeln!(
                out,
                "Running {} (seed {}), matmul backend {}.",
                config.name,
                config.seed,
                crate::matmul::backend_name()
            )?;
            let outcome = session::run(&config, &options)?;
            writeln!(out, "{}", outcome.table)?;
            if let (Some(p), Some(placement)) = (part, &config.placement) {
                if p < placement.parts.len() {
                    // The errors are measured at the sink, in the last part.
                    writeln!(
                        out,
                        "Part {p} of {} finished ({:.1} s).",
                        placement.parts.len(),
                        outcome.record.wall_time_s
                    )?;
                    writeln!(out, "Run folder: {}", outcome.run_dir.display())?;
                    return Ok(());
                }
            }
            let fmt =
                |m: &record::ErrorsPct| m.iter().map(|(k, v)| format!("{k} {v:.2}%")).collect::<Vec<_>>().join(", ");
            let metrics = &outcome.record.metrics;
            let mut summary = format!(
                "{}: {} epochs in {:.1} s, {:.0} frames/s end to end",
                config.name, outcome.record.epochs, outcome.record.wall_time_s, outcome.record.throughput.frames_per_s,
            );
            if !metrics.test_error_pct.is_empty() {
                summary += &format!("; test error: {}", fmt(&metrics.test_error_pct));
            }
            if !metrics.val_error_pct.is_empty() {
                let name = if config.is_frame_stream() && !config.is_still_stream() {
                    "held-out separation error"
                } else {
                    "validation error"
                };
                summary += &format!("; {name}: {}", fmt(&metrics.val_error_pct));
            }
            writeln!(out, "{summary}")?;
            if let Some(source) = outcome.record.details.get("source") {
                let n = |k: &str| source[k].as_f64().unwrap_or(0.0);
                writeln!(out,
                    "Source: {:.0} frames decoded ({:.0} frames/s of decode time), {:.0} dropped, {:.0} corrupt, {:.0} reconnects.",
                    n("decoded"),
                    n("decode_fps"),
                    n("dropped"),
                    n("corrupt"),
                    n("reconnects")
                )?;
            }
            if let Some(latency) = outcome.record.details.get("latency_ms") {
                // No quantile when no packet reached the sink: say so rather than print NaN.
                let plot = outcome.run_dir.join("throughput.svg");
                match (latency["p50"].as_f64(), latency["p99"].as_f64()) {
                    (Some(p50), Some(p99)) => writeln!(
                        out,
                        "End-to-end latency (source to sink): p50 {p50:.0} ms, p99 {p99:.0} ms. Plot: {}",
                        plot.display()
                    )?,
                    _ => writeln!(out, "End-to-end latency: no packet reached the sink.")?,
                }
            }
            for fields in &outcome.fields {
                let stage = fields.file_stem().map_or(String::new(), |s| s.to_string_lossy().replace("fields-", ""));
                writeln!(
                    out,
                    "What {stage} learned (its first units' weights{}, white positive, black negative): {}",
                    if stage == "layer1" { "" } else { " through the stages below" },
                    fields.display()
                )?;
            }
            writeln!(out, "Run folder: {}", outcome.run_dir.display())?;
            if !outcome.completed {
                bail!("stopped before the end; resume with `ffstream run --resume {}`", outcome.run_dir.display());
            }
            Ok(())
        }
        Command::Eval { run, data_dir } => {
            writeln!(out, "{}", session::evaluate(&run, data_dir.as_deref())?)?;
            Ok(())
        }
        Command::List => {
            writeln!(out, "{:<24} {:<5} {:>7}  {:>9}  claim", "pipeline", "exp", "epochs", "paper err")?;
            for (name, text) in PIPELINES {
                let c = PipelineConfig::parse(text, name, &[])?;
                let (exp, claim, err) = c.paper.as_ref().map_or(("-".into(), String::new(), "-".into()), |p| {
                    (p.experiment.clone(), p.claim.clone(), p.test_error_pct.map_or("-".into(), |e| format!("{e:.2}%")))
                });
                writeln!(out, "{name:<24} {exp:<5} {:>7}  {err:>9}  {claim}", c.data.epochs)?;
            }
            Ok(())
        }
        Command::Report { results } => {
            let records = record::load_all(&results);
            if records.is_empty() {
                bail!("no records in {}", results.display());
            }
            let mut tables = record::results_markdown(&records);
            let speedruns = crate::speedrun::load_all(&results);
            let speedrun_table = (!speedruns.is_empty()).then(|| crate::speedrun::markdown(&speedruns));
            if let Some(table) = &speedrun_table {
                tables += &format!(
                    "\n## Speedrun: MNIST to a test-error target (issue 11)\n\n{}\n{table}",
                    crate::speedrun::ABOUT
                );
            }
            std::fs::write(results.join("RESULTS.md"), &tables)?;
            std::fs::write(results.join("curves.svg"), record::curves_svg(&records))?;
            if let Some(svg) = record::frame_streams_svg(&records) {
                std::fs::write(results.join("frame-streams.svg"), svg)?;
            }
            if let Some(svg) = record::sequence_svg(&records) {
                std::fs::write(results.join("aesop-curves.svg"), svg)?;
            }
            // Last: the page inlines the charts written above.
            let page = crate::report_page::index_html(&records, &results, &tables);
            std::fs::write(results.join("index.html"), page)?;
            // The README carries the same generated table between two markers.
            let readme = Path::new("README.md");
            if let Ok(text) = std::fs::read_to_string(readme) {
                let table = record::results_markdown(&records);
                let table = table.split_once("\n\n").map_or(table.as_str(), |(_, rest)| rest);
                let mut text = between_markers(text, "results", table);
                if let Some(table) = &speedrun_table {
                    text = between_markers(text, "speedrun", table);
                }
                std::fs::write(readme, text)?;
            }
            writeln!(
                out,
                "Wrote {}, {} and {} from {} records.",
                results.join("RESULTS.md").display(),
                results.join("curves.svg").display(),
                results.join("index.html").display(),
                records.len()
            )?;
            Ok(())
        }
        Command::Bench { data_dir, batches, out: json } => {
            crate::throughput::bench(data_dir.as_deref(), batches, json.as_deref(), &stop, out)
        }
        Command::Data { command: DataCommand::Fetch { dataset, to, from } } => {
            fetch_data(dataset.into(), to, from, &stop, out)
        }
        Command::Figure { figure } => make_figure(figure, out),
    }
}

/// `text` with what lies between `<!-- NAME:begin -->` and `<!-- NAME:end -->` replaced by
/// `body`; unchanged where it has no such markers.
fn between_markers(text: String, name: &str, body: &str) -> String {
    let (begin, end) = (format!("<!-- {name}:begin -->"), format!("<!-- {name}:end -->"));
    match (text.find(&begin), text.find(&end)) {
        (Some(a), Some(b)) => format!("{}{begin}\n{body}{}", &text[..a], &text[b..]),
        _ => text,
    }
}

/// The `run` flags every part of a launch gets.
struct LaunchFlags<'a> {
    data_dir: Option<&'a std::path::Path>,
    runs_dir: &'a std::path::Path,
    record: bool,
    replace_record: bool,
}

/// `--launch`: every part of `placement` as a process of this binary on this host (`run ...
/// --part I`), their output on this terminal; waits for all of them. The sink's part (the last)
/// draws the live line and writes the record; the others run quiet.
fn launch_parts(
    placement: &crate::config::PlacementConfig,
    pipeline: &str,
    overrides: &[String],
    flags: &LaunchFlags<'_>,
    out: &mut dyn Write,
) -> Result<()> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut commands = Vec::new();
    for i in 1..=placement.parts.len() {
        let mut command = part_command(placement, i, flags, &[pipeline, "--stamp", &stamp.to_string()])?;
        for o in overrides {
            command.args(["--set", o]);
        }
        commands.push(command);
    }
    start_parts(placement, commands, out)
}

/// `--launch --resume FOLDER`: FOLDER is one part's run folder of a launch
/// (`<name>-seed<N>-part<K>-<stamp>`); every part of that launch resumes from its own folder,
/// all at the sink's part's last checkpoint (the last part's), which every part has passed.
fn launch_resume(
    placement: &crate::config::PlacementConfig,
    folder: &std::path::Path,
    flags: &LaunchFlags<'_>,
    out: &mut dyn Write,
) -> Result<()> {
    let name = folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let parsed = name.rsplit_once("-part").and_then(|(prefix, rest)| Some((prefix, rest.split_once('-')?.1)));
    let Some((prefix, stamp)) = parsed else {
        bail!("--launch --resume takes a part's run folder, `<name>-seed<N>-part<K>-<stamp>`; `{name}` is not one");
    };
    let parent = folder.parent().unwrap_or(std::path::Path::new("."));
    let parts = placement.parts.len();
    let folders: Vec<std::path::PathBuf> =
        (1..=parts).map(|i| parent.join(format!("{prefix}-part{i}-{stamp}"))).collect();
    if let Some(missing) = folders.iter().find(|f| !f.is_dir()) {
        bail!("part folder {} of this launch is missing", missing.display());
    }
    let epoch: u32 = crate::checkpoint::run_metadata(&folders[parts - 1])
        .ok()
        .and_then(|m| m.get("epoch").and_then(|e| e.parse().ok()))
        .unwrap_or(0);
    writeln!(out, "Resuming the {parts} parts of {prefix} from epoch {epoch} (the sink's part's last checkpoint).")?;
    let mut commands = Vec::new();
    for (k, f) in folders.iter().enumerate() {
        let folder = f.to_string_lossy();
        commands.push(part_command(
            placement,
            k + 1,
            flags,
            &["--from-epoch", &epoch.to_string(), "--resume", &folder],
        )?);
    }
    start_parts(placement, commands, out)
}

/// `ffstream run <what...> --part I` with the flags every part of a launch gets; the sink's part
/// (the last) draws the live line, the others run quiet.
fn part_command(
    placement: &crate::config::PlacementConfig,
    i: usize,
    flags: &LaunchFlags<'_>,
    what: &[&str],
) -> Result<std::process::Command> {
    let exe = std::env::current_exe().context("cannot find this program to start the parts")?;
    let mut command = std::process::Command::new(exe);
    command.arg("run").args(what).args(["--part", &i.to_string(), "--runs-dir"]).arg(flags.runs_dir);
    if let Some(dir) = flags.data_dir {
        command.arg("--data-dir").arg(dir);
    }
    if flags.record {
        command.arg("--record");
    }
    if flags.replace_record {
        command.arg("--replace-record");
    }
    if i < placement.parts.len() {
        command.arg("--quiet");
    }
    Ok(command)
}

/// Starts the parts' commands and waits for all of them.
fn start_parts(
    placement: &crate::config::PlacementConfig,
    commands: Vec<std::process::Command>,
    out: &mut dyn Write,
) -> Result<()> {
    let parts = placement.parts.len();
    let mut children = Vec::new();
    for (k, mut command) in commands.into_iter().enumerate() {
        let child = command.spawn().with_context(|| format!("cannot start part {}", k + 1))?;
        writeln!(
            out,
            "Started part {} of {parts} ({}), process {}.",
            k + 1,
            placement.parts[k].join(", "),
            child.id()
        )?;
        children.push(child);
    }
    let mut failed = Vec::new();
    for (i, mut child) in children.into_iter().enumerate() {
        let status = child.wait().with_context(|| format!("cannot wait for part {}", i + 1))?;
        if !status.success() {
            failed.push(format!("part {} ({status})", i + 1));
        }
    }
    if !failed.is_empty() {
        bail!("{} of {parts} parts failed: {}", failed.len(), failed.join(", "));
    }
    writeln!(out, "All {parts} parts finished.")?;
    Ok(())
}
