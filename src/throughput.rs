//! `ffstream bench`: how close the stages come to the machine, measured as ratios in one run.
//!
//! The machines are shared and noisy, so no absolute number is claimed alone: the FMA peak is
//! measured first in the same process, then one stage's compute rate on the paper's layer shape
//! (as a fraction of the peak, measured again before each stage and the best of those taken: on
//! these virtual machines the FMA loop's rate swung from 111 to 181 GFLOP/s within one run on the
//! Xeon, so a single early measurement made the fractions high or low by chance; against the best
//! they are the conservative ones), then the MNIST stream through the 4x2000 pipeline threaded
//! and in lockstep on one thread (as a ratio), and the bound the stages set on 2 cores.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ndarray::Array2;

use crate::bench::{fma_peak_gflops, machine_name};
use crate::config::build::{build_head, build_sink, build_stages};
use crate::config::shipped::pipeline_text;
use crate::config::PipelineConfig;
use crate::metrics::{rates, StageTotals};
use crate::packet::{Packet, Purpose};
use crate::rng::Rng;
use crate::runtime::{self, Mode, PipelineStats};
use crate::session::load_data;
use crate::stage::Stage;

/// Epochs of each timed MNIST stream of the bench: the second is the steady state.
const STREAM_EPOCHS: usize = 2;

/// A synthetic training packet like the head's: `batch` positives, negatives and neutral rows.
pub fn training_packet(inputs: usize, batch: usize, seed: u64) -> Packet {
    let rows = 3 * batch;
    let mut rng = Rng::new(seed);
    Packet {
        positives: batch,
        negatives: batch,
        neutral: batch,
        frame: (0..rows as u32).collect(),
        embedded: vec![0; rows],
        frames: batch,
        ..Packet::new(0, 1, Purpose::Train, Array2::from_shape_simple_fn((rows, inputs), || rng.uniform()))
    }
}

/// FLOPs of one training packet through a layer: forward on all rows, gradient on the learning rows.
pub fn packet_flops(inputs: usize, units: usize, batch: usize) -> f64 {
    2.0 * inputs as f64 * units as f64 * (3 * batch + 2 * batch) as f64
}

/// The products' arithmetic per training image, FF over backprop on the same hidden layers
/// (`inputs`, then `layers`): FF runs each image forward three times (the neutral row that picks
/// the hard negative, the positive and the negative row) and takes weight gradients on two;
/// backprop runs it forward once and back twice (weight and input gradients, none for the
/// image), with a softmax layer of `classes` on top. FF's readout (under 0.2%) is left out.
/// This bounds `ff_over_bp_epoch_time` from below where both run their products equally fast.
pub fn ff_over_bp_flops(inputs: usize, layers: &[usize], classes: usize) -> f64 {
    let fans: Vec<(usize, usize)> =
        std::iter::once(inputs).chain(layers.iter().copied()).zip(layers.iter().copied()).collect();
    let hidden: f64 = fans.iter().map(|&(i, o)| (i * o) as f64).sum();
    let top = (layers.last().copied().unwrap_or(inputs) * classes) as f64;
    let first = fans.first().map_or(0.0, |&(i, o)| (i * o) as f64);
    let ff = 5.0 * hidden;
    let bp = 3.0 * (hidden + top) - first;
    ff / bp
}

/// One timed MNIST stream of the bench: its rate, its elements' rates and its allocations (a
/// frame, all threads; and a packet, by element's thread).
struct StreamRun {
    /// Frames a second inside the second epoch, between its first and last full training
    /// packet at the sink ([`ArrivalSink::sustained_fps`]).
    sustained: Option<f64>,
    wall: f64,
    frames: f64,
    per_stage: Vec<crate::metrics::StageRates>,
    allocs_per_frame: f64,
    /// Heap allocations of the whole process a frame inside the last epoch, over the same
    /// window as `sustained` ([`ArrivalSink::allocations_inside`]).
    allocs_inside: Option<f64>,
    /// Heap allocations of the whole process in the last epoch outside that window: its ends.
    allocs_at_ends: Option<u64>,
    by_element: Vec<ElementAllocations>,
}

impl StreamRun {
    /// Frames a second over the whole stream.
    fn fps(&self) -> f64 {
        self.frames / self.wall
    }

    /// What each epoch's ends add to the stream, in seconds, where `rate` is the rate inside an
    /// epoch: the stream's wall time less its frames at that rate, shared by its epochs.
    fn epoch_ends_s(&self, rate: f64) -> f64 {
        (self.wall - self.frames / rate).max(0.0) / STREAM_EPOCHS as f64
    }
}

/// (epoch, when, frames, the process's heap allocations so far) of a training packet at the sink.
type Arrival = (u32, Instant, usize, u64);

/// A sink that notes when each training packet reaches it, so the bench can tell the rate a
/// stream sustains inside an epoch from what the epoch's ends cost.
struct ArrivalSink<S> {
    inner: S,
    /// Every full training packet, in arrival order.
    arrivals: Vec<Arrival>,
    /// The process's heap allocations so far at each epoch's end, in order.
    epoch_ends: Vec<u64>,
}

impl<S> ArrivalSink<S> {
    /// Room for `packets` arrivals made up front, so that noting them allocates nothing on the
    /// sink's thread (the bench counts that thread's allocations).
    fn new(inner: S, packets: usize) -> ArrivalSink<S> {
        ArrivalSink { inner, arrivals: Vec::with_capacity(packets), epoch_ends: Vec::with_capacity(STREAM_EPOCHS + 1) }
    }

    /// The window inside `epoch`: its first and its last full training packet, and the frames
    /// of its packets after the first; `None` where fewer than three packets of the epoch
    /// arrived. The pipeline is full in between, so the window leaves out the fill before the
    /// first packet arrives (and the hard negatives' priming round trip before it), the drain
    /// after the last (the packets without neutral rows are still behind it), and the
    /// evaluation.
    fn window(&self, epoch: u32) -> Option<(&Arrival, &Arrival, usize)> {
        let mut inside = self.arrivals.iter().filter(|a| a.0 == epoch);
        let first = inside.next()?;
        let (mut last, mut frames, mut packets) = (first, 0, 1);
        for arrival in inside {
            (last, frames, packets) = (arrival, frames + arrival.2, packets + 1);
        }
        (packets >= 3).then_some((first, last, frames))
    }

    /// The process's heap allocations inside `epoch`, over its [`Self::window`]: (a frame of
    /// its packets after the first, the epoch's others). Every thread counts (head, stages,
    /// sink): inside an epoch each packet's buffers come from the pools ([`crate::recycle`]).
    /// The others are the epoch's ends: its priming, the evaluation, the end marker's
    /// snapshots and a pool's occasional miss on them. `None` where the epoch has too few full
    /// packets, or did not end.
    fn allocations_inside(&self, epoch: u32) -> Option<(f64, u64)> {
        let (first, last, frames) = self.window(epoch)?;
        let within = last.3 - first.3;
        // Epochs count from 1; the ends of epoch e are the (e-1)-th entry.
        let index = (epoch as usize).checked_sub(1)?;
        let before = if index >= 1 { *self.epoch_ends.get(index - 1)? } else { 0 };
        let whole = self.epoch_ends.get(index)? - before;
        Some((within as f64 / frames.max(1) as f64, whole.saturating_sub(within)))
    }

    /// Frames a second inside `epoch`: the frames of its [`Self::window`] over the time from
    /// the first packet's arrival to the last's.
    fn sustained_fps(&self, epoch: u32) -> Option<f64> {
        let (first, last, frames) = self.window(epoch)?;
        let span = last.1.duration_since(first.1).as_secs_f64();
        (span > 0.0).then(|| frames as f64 / span)
    }
}

impl<S: runtime::Sink> runtime::Sink for ArrivalSink<S> {
    fn consume(&mut self, packet: &Packet) -> Option<runtime::Prediction> {
        let prediction = self.inner.consume(packet);
        // Only the packets that carry a later batch's neutral rows, which is all of them but
        // an epoch's last d: those have a fifth less work, and the stage bound is timed on
        // full packets.
        if packet.purpose == Purpose::Train && packet.frames > 0 && packet.neutral > 0 {
            self.arrivals.push((packet.epoch, Instant::now(), packet.frames, crate::alloc_count::allocations()));
        }
        prediction
    }

    fn end_epoch(&mut self, epoch: u32, states: Vec<runtime::StageState>) -> runtime::EpochReport {
        let report = self.inner.end_epoch(epoch, states);
        self.epoch_ends.push(crate::alloc_count::allocations());
        report
    }

    fn restore(&mut self, state: &runtime::StageState) -> Result<(), crate::error::RestoreError> {
        self.inner.restore(state)
    }
}

/// One element's heap allocations in a timed stream, counted by its own thread.
struct ElementAllocations {
    element: String,
    /// A packet after its first.
    per_packet: f64,
    /// A data packet of the second epoch (the steady state; epoch-end work not included).
    steady_per_packet: f64,
    steady_packets: u64,
}

/// Heap allocations per training packet of one stage once warm (`None` where the program does
/// not count them: [`crate::alloc_count::installed`]); the packets are made beforehand and each
/// output goes back to the pools as the sink gives it back ([`crate::recycle`]), so only the
/// stage's own work is counted (its backend's products included), on this thread.
pub fn stage_allocations(stage: &mut dyn Stage, inputs: usize, batch: usize) -> Option<f64> {
    if !crate::alloc_count::installed() {
        return None;
    }
    let (warm, counted) = (2, 4);
    let mut packets: Vec<Packet> = (0..warm + counted).map(|_| training_packet(inputs, batch, 1)).collect();
    // Room for the stage's entry, as a packet of the stream has (its vectors are recycled).
    packets.iter_mut().for_each(|p| p.features.reserve(1));
    let mut step = |packet| {
        if let Ok(out) = stage.step(packet) {
            crate::recycle::give_packet(out);
        }
    };
    packets.drain(..warm).for_each(&mut step);
    let before = crate::alloc_count::thread_allocations();
    packets.into_iter().for_each(&mut step);
    Some((crate::alloc_count::thread_allocations() - before) as f64 / counted as f64)
}

/// Seconds per training packet of one stage running alone on this thread.
pub fn stage_seconds(stage: &mut dyn Stage, inputs: usize, batch: usize, min_time: Duration) -> f64 {
    let packet = training_packet(inputs, batch, 1);
    let _ = stage.step(packet.clone());
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < min_time || n < 3 {
        let _ = stage.step(packet.clone());
        n += 1;
    }
    started.elapsed().as_secs_f64() / n as f64
}

/// The 1-thread FMA peak: the best of the measurements through a run (the first, then one
/// before each stage and product timed), so that every ratio is against the fastest the core
/// was seen to run, not against a slow moment.
struct Peak {
    best: f64,
    lowest: f64,
    measurements: usize,
}

impl Peak {
    fn first(gflops: f64) -> Peak {
        Peak { best: gflops, lowest: gflops, measurements: 1 }
    }

    /// Measures again; returns the best so far.
    fn measure_again(&mut self) -> f64 {
        let now = fma_peak_gflops(1, Duration::from_millis(400));
        self.best = self.best.max(now);
        self.lowest = self.lowest.min(now);
        self.measurements += 1;
        self.best
    }
}

/// Sets each row's `pct_of_peak_1t` from its `gflops` against the run's best peak.
fn against_peak(rows: &mut [serde_json::Value], peak: f64) {
    for row in rows {
        let pct = row["gflops"].as_f64().map(|g| 100.0 * g / peak);
        row["pct_of_peak_1t"] = serde_json::json!(pct);
    }
}

/// Runs the benchmark and writes its table to `table` as it goes (the binary passes stdout);
/// writes JSON to `out` if given (a file, or a folder that gets `<date>-<cpu>.json`).
pub fn bench(
    data_dir: Option<&Path>,
    batches: usize,
    out: Option<&Path>,
    stop: &Arc<AtomicBool>,
    table: &mut dyn Write,
) -> Result<()> {
    // `data.train_size = 0` means the whole training set: 0 batches would time a full epoch
    // twice instead of none.
    ensure!(batches >= 1, "--batches must be at least 1 (the MNIST packets timed in each mode)");
    // Checked before minutes of timing, not after.
    let out = out.map(report_path).transpose()?;
    // Stages timed alone run on this thread: in the mode a run gives them (src/float_mode.rs).
    let _mode = crate::float_mode::Flushing::start();
    let (text, origin) = pipeline_text("mnist-supervised")?;
    let base = PipelineConfig::parse(&text, &origin, &[])?;
    writeln!(table, "machine: {}; matmul: {}", machine_name(), crate::matmul::backend_name())?;
    let mut peak = Peak::first(fma_peak_gflops(1, Duration::from_millis(800)));
    let peak2 = fma_peak_gflops(2, Duration::from_millis(800));
    writeln!(table, "measured FMA peak: {:.0} GFLOP/s (1 thread), {peak2:.0} GFLOP/s (2 threads)", peak.best)?;

    // One stage of each shape, alone on this thread.
    let mut stage_rows = Vec::new();
    let mut inputs = crate::data::mnist::PIXELS;
    let mut stage_secs = Vec::new();
    for mut stage in build_stages(&base) {
        let units = base.model.layers[stage_secs.len()];
        let best = peak.measure_again();
        let s = stage_seconds(stage.as_mut(), inputs, base.data.batch, Duration::from_millis(700));
        let gflops = packet_flops(inputs, units, base.data.batch) / s / 1e9;
        writeln!(table,
            "{:<8} {inputs:>4}->{units:<5} {:>7.2} ms/packet {:>7.0} frames/s {:>6.1} GFLOP/s = {:>5.1}% of the 1-thread peak so far ({best:.0})",
            stage.name(),
            s * 1e3,
            base.data.batch as f64 / s,
            gflops,
            100.0 * gflops / best
        )?;
        let allocs = stage_allocations(stage.as_mut(), inputs, base.data.batch);
        stage_rows.push(serde_json::json!({"stage": stage.name(), "inputs": inputs, "units": units,
            "ms_per_packet": s * 1e3, "gflops": gflops, "allocs_per_packet": allocs}));
        stage_secs.push(s);
        inputs = units;
    }
    // On 2 cores the stages share the cores: the bound is 2 cores' worth of the total work, or
    // the slowest stage alone, whichever is lower.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let pool = one_stage_pool_speedup(&base, cores as usize, table)?;
    let mut local = local_stages(base.data.batch, &mut peak, table)?;
    let total: f64 = stage_secs.iter().sum();
    let slowest = stage_secs.iter().copied().fold(0.0, f64::max);
    let bound = base.data.batch as f64 / (total / cores).max(slowest);
    writeln!(table, "bound set by the stages on {cores} cores: {bound:.0} frames/s")?;

    // The real stream, threaded and in lockstep.
    let mut stream = Vec::new();
    // Lockstep, threaded (the OS shares the cores among the stages), and threaded with as many
    // core tokens as cores (runtime::tokens: at most that many stages compute at once).
    for (mode, tokens) in [(Mode::Lockstep, 0), (Mode::Threaded, 0), (Mode::Threaded, cores as usize)] {
        // Two epochs of half the packets each: the second is the steady state of the
        // allocation count (StageTotals::steady_allocations, after the pools have seen every
        // packet shape).
        let overrides = vec![
            format!("data.train_size={}", batches.div_ceil(2) * base.data.batch),
            format!("data.epochs={STREAM_EPOCHS}"),
            "eval.test=false".to_string(),
            "eval.train_size=0".to_string(),
            "data.validation_size=100".to_string(),
            format!("pipeline.mode=\"{}\"", if mode == Mode::Threaded { "threaded" } else { "lockstep" }),
            format!("pipeline.core_tokens={tokens}"),
        ];
        let config = PipelineConfig::parse(&text, &origin, &overrides)?;
        let data = load_data(&config, data_dir)?;
        let mut head = build_head(&config, data, 1, Arc::clone(stop));
        let stats = PipelineStats::new(&config.stage_names());
        let mut sink = ArrivalSink::new(build_sink(&config), batches + 16);
        // The weights are drawn before the clock starts, as the data is loaded: setting up the
        // net is not the stream's throughput.
        let stages = build_stages(&config);
        let (started, allocs_before) = (Instant::now(), crate::alloc_count::allocations());
        // Invariant: the shipped mnist-supervised pipeline is an ff pipeline, which parse()
        // validates to have a [pipeline] section.
        let settings = config.pipeline.clone().expect("ff pipeline");
        runtime::run(&mut head, stages, &mut sink, settings.wiring(), &stats, &mut |_| Ok(()))?;
        let wall = started.elapsed().as_secs_f64();
        let sustained = sink.sustained_fps(STREAM_EPOCHS as u32);
        let inside = crate::alloc_count::installed().then(|| sink.allocations_inside(STREAM_EPOCHS as u32)).flatten();
        let allocs = (crate::alloc_count::allocations() - allocs_before) as f64;
        let frames = stats.stages.last().map_or(0, |s| s.totals().frames) as f64;
        let fps = frames / wall;
        let per_stage: Vec<_> =
            stats.all().iter().map(|s| rates(&s.name, &StageTotals::default(), &s.totals(), wall)).collect();
        let with_tokens = if tokens > 0 { format!(", {tokens} core tokens") } else { String::new() };
        writeln!(
            table,
            "{mode:?}{with_tokens}: {fps:.0} frames/s ({frames} frames in {wall:.2} s) -> {:.1} s per 50k-frame epoch",
            50_000.0 / fps
        )?;
        writeln!(table, "{}", crate::metrics::summary_table(&per_stage))?;
        // Which element's thread allocates: per packet, after its first.
        let by_element: Vec<ElementAllocations> = stats
            .all()
            .iter()
            .map(|s| {
                let t = s.totals();
                ElementAllocations {
                    element: s.name.clone(),
                    per_packet: t.allocations as f64 / t.packets.saturating_sub(1).max(1) as f64,
                    steady_per_packet: t.steady_allocations as f64 / t.steady_packets.max(1) as f64,
                    steady_packets: t.steady_packets,
                }
            })
            .collect();
        let run = StreamRun {
            sustained,
            wall,
            frames,
            per_stage,
            allocs_per_frame: allocs / frames.max(1.0),
            allocs_inside: inside.map(|i| i.0),
            allocs_at_ends: inside.map(|i| i.1),
            by_element,
        };
        if let Some(rate) = sustained {
            writeln!(
                table,
                "  inside epoch 2 (its first to its last full training packet at the sink): {rate:.0} frames/s; \
                 each epoch's ends (fill, the hard negatives' priming round trip, drain, validation) cost {:.2} s",
                run.epoch_ends_s(rate)
            )?;
        }
        stream.push(run);
    }
    // The loop above ran the three modes in this order.
    let (lockstep, threaded, tokened_run) = (&stream[0], &stream[1], &stream[2]);
    let (lock, thr, tokened) = (lockstep.fps(), threaded.fps(), tokened_run.fps());
    writeln!(
        table,
        "threaded with {cores} core tokens: {tokened:.0} frames/s = {:.1}% of the stage bound, {:.2}x the threaded run without",
        100.0 * tokened / bound,
        tokened / thr
    )?;
    writeln!(table, "threaded / lockstep: {:.2}x; threaded / stage bound: {:.1}%", thr / lock, 100.0 * thr / bound)?;
    // Inside an epoch the pipeline is full; the whole stream adds each epoch's ends, which the
    // bench's default 30-packet epochs weigh 17 times as much as a 500-packet epoch of MNIST.
    // Too few packets an epoch to tell (`--batches` under about 20): the whole stream's rate
    // stands in for FF's epoch, and the keys of the rate inside an epoch are null.
    let sustained = threaded.sustained.unwrap_or(thr);
    let boundary_s = threaded.epoch_ends_s(sustained);
    let real_epoch_s = 50_000.0 / sustained;
    match threaded.sustained {
        Some(_) => writeln!(
            table,
            "threaded inside an epoch: {sustained:.0} frames/s = {:.1}% of the stage bound; an epoch's ends cost {boundary_s:.2} s, \
             {:.1}% of a 50k-frame epoch at that rate",
            100.0 * sustained / bound,
            100.0 * boundary_s / (real_epoch_s + boundary_s)
        )?,
        None => writeln!(table, "threaded inside an epoch: too few full training packets an epoch to tell")?,
    }
    let inside = threaded.sustained.map(|_| (sustained / bound, boundary_s, boundary_s / (real_epoch_s + boundary_s)));
    // The whole process during the threaded stream: head, queues, stages, sink, evaluation.
    let allocs_per_frame = crate::alloc_count::installed().then_some(threaded.allocs_per_frame);
    if let Some(a) = allocs_per_frame {
        let per_stage: Vec<String> = stage_rows
            .iter()
            .map(|r| format!("{} {}", r["stage"].as_str().unwrap_or("?"), r["allocs_per_packet"]))
            .collect();
        let by_element: Vec<String> = threaded
            .by_element
            .iter()
            .map(|e| format!("{} {:.1} ({:.2} in the second epoch)", e.element, e.per_packet, e.steady_per_packet))
            .collect();
        writeln!(
            table,
            "heap allocations: {a:.2} a frame through the threaded stream, by element's thread a packet: {}; \
             a stage alone, a packet: {}",
            by_element.join(", "),
            per_stage.join(", ")
        )?;
        if let (Some(inside), Some(ends)) = (threaded.allocs_inside, threaded.allocs_at_ends) {
            writeln!(
                table,
                "  inside epoch 2 (the window of its rate): {inside:.3} a frame, every thread; its ends (priming, \
                 evaluation, end marker): {ends}"
            )?;
        }
    }
    // The ratios, each from this run.
    // The forward product of a 2000->2000 stage: positives and negatives, one thread.
    peak.measure_again();
    let gemm = crate::bench::measure_ff_shapes(&[2 * base.data.batch], 2000, 2000, 1, Duration::from_millis(700))
        .first()
        .map_or(0.0, |forward| forward.gflops);
    // Every fraction against the best peak of the run.
    let peak1 = peak.best;
    against_peak(&mut stage_rows, peak1);
    against_peak(&mut local, peak1);
    writeln!(
        table,
        "1-thread FMA peak, the best of {} measurements through this run: {peak1:.0} GFLOP/s (the lowest {:.0}); \
         every fraction below and in the report is against it",
        peak.measurements, peak.lowest
    )?;
    let stage_fraction =
        stage_rows.iter().filter_map(|r| r["pct_of_peak_1t"].as_f64()).fold(f64::INFINITY, f64::min) / 100.0;
    writeln!(
        table,
        "gemm alone at the stage shape ({}x2000 by 2000x2000): {gemm:.0} GFLOP/s = {:.1}% of the 1-thread peak; \
         slowest stage {:.1}%",
        2 * base.data.batch,
        100.0 * gemm / peak1,
        100.0 * stage_fraction
    )?;
    let bp_epoch = backprop_seconds_per_epoch(data_dir, batches)?;
    // A 50k-image epoch at the rate the stream sustains, plus its ends as measured here; the
    // bench's own 30-packet epochs would count those ends 17 times over. Backprop's time is
    // its steps alone, with no ends at all.
    let ff_epoch = real_epoch_s + boundary_s;
    let flops_ratio = ff_over_bp_flops(crate::data::mnist::PIXELS, &base.model.layers, 10);
    writeln!(
        table,
        "one 50k-image epoch of the same 4x2000 net: FF threaded {ff_epoch:.1} s, backprop on {cores} cores {bp_epoch:.1} s: \
         FF / BP = {:.2}, where FF does {flops_ratio:.2}x backprop's arithmetic",
        ff_epoch / bp_epoch
    )?;
    let (rss_growth, rss_warm, rss_end) = rss_growth_1m_frames(data_dir, stop)?;
    writeln!(
        table,
        "resident memory over 1M frames (4x64 stages): {rss_warm:.0} MiB after the first 50k, {rss_end:.0} MiB at the end: \
         {:+.1}%",
        100.0 * rss_growth
    )?;
    if let Some(path) = &out {
        let json = serde_json::json!({
            "gemm_peak_fraction": gemm / peak1, "gemm_gflops_stage_shape": gemm,
            "stage_peak_fraction": stage_fraction, "pipeline_efficiency": thr / bound,
            "pipeline_efficiency_inside_epoch": inside.map(|i| i.0), "threaded_frames_per_s_inside_epoch": threaded.sustained,
            "epoch_ends_seconds": inside.map(|i| i.1), "epoch_ends_share_of_50k_epoch": inside.map(|i| i.2),
            "pipeline_speedup_vs_lockstep": thr / lock, "ff_over_bp_epoch_time": ff_epoch / bp_epoch,
            "ff_over_bp_epoch_time_short_epochs": 50_000.0 / thr / bp_epoch, "seconds_per_epoch_ff": ff_epoch,
            "ff_over_bp_flops": flops_ratio,
            "bp_seconds_per_epoch": bp_epoch, "rss_growth_1m_frames": rss_growth,
            "rss_mib_1m_frames": {"after_first_50k": rss_warm, "end": rss_end},
            "machine": machine_name(), "matmul": crate::matmul::backend_name(), "commit": crate::session::git_commit(),
            "peak_gflops": {"1": peak1, "2": peak2, "1_lowest": peak.lowest, "1_measurements": peak.measurements},
            "stages": stage_rows, "stage_bound_frames_per_s": bound,
            "lockstep_frames_per_s": lock, "threaded_frames_per_s": thr, "threaded_over_lockstep": thr / lock,
            "threaded_over_bound": thr / bound, "seconds_per_epoch_threaded": 50_000.0 / thr,
            "threaded_stages": threaded.per_stage, "lockstep_stages": lockstep.per_stage, "one_stage_pool": pool,
            "core_tokens": {"tokens": cores as usize, "frames_per_s": tokened, "over_bound": tokened / bound,
                "over_threaded": tokened / thr, "stages": tokened_run.per_stage},
            "local_stages": local, "allocs_per_frame": allocs_per_frame,
            "allocs_per_frame_inside_epoch": threaded.allocs_inside, "allocs_at_epoch_ends": threaded.allocs_at_ends,
            "allocs_per_packet_by_element": threaded.by_element.iter().map(|e| serde_json::json!({"element": e.element, "allocs_per_packet": e.per_packet, "steady_allocs_per_packet": e.steady_per_packet, "steady_packets": e.steady_packets})).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(table, "Wrote {}.", path.display())?;
    }
    Ok(())
}

/// The file the JSON report goes to: `out`, or `<date>-<cpu>.json` inside it where it is a
/// folder (an existing one, or a path ending in `/`); a second report of the day in that
/// folder is `<date>-<cpu>-2.json` and so on, never over an earlier one. Its folder is made and
/// a write tried now, so that a path that cannot be written fails before the benchmark, not
/// after it.
pub fn report_path(out: &Path) -> Result<PathBuf> {
    let folder = out.is_dir() || out.as_os_str().to_string_lossy().ends_with('/');
    let path = if folder {
        let stem = format!("{}-{}", utc_date(), cpu_slug());
        (1..)
            .map(|n| out.join(if n == 1 { format!("{stem}.json") } else { format!("{stem}-{n}.json") }))
            .find(|p| !p.exists())
            .unwrap_or_else(|| out.join(format!("{stem}.json")))
    } else {
        out.to_path_buf()
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot make the folder {}", dir.display()))?;
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .with_context(|| format!("cannot write the benchmark report to {}", path.display()))?;
    if !existed {
        let _ = std::fs::remove_file(&path);
    }
    Ok(path)
}

/// Today's date in UTC as `YYYY-MM-DD` (the civil-from-days rule of the proleptic Gregorian
/// calendar; not worth a date crate for one file name).
pub fn utc_date() -> String {
    civil_date(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

fn civil_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The CPU's vendor family in a file name: `xeon`, `epyc`, or the model's first word.
fn cpu_slug() -> String {
    let name = machine_name().to_lowercase();
    ["xeon", "epyc", "ryzen", "core"]
        .into_iter()
        .find(|family| name.contains(family))
        .map(str::to_string)
        .unwrap_or_else(|| {
            name.split(|c: char| !c.is_ascii_alphanumeric()).find(|w| !w.is_empty()).unwrap_or("cpu").to_string()
        })
}

/// The paper's locally connected layers alone on this thread: E7's 32x32x3 map of 11x11
/// fields (363 inputs a unit, truncated at the borders) and E2's first layer (a 4x4 grid of
/// 10x10 fields, stride 6, 128 units each). Rates count the multiply-adds on the map only.
fn local_stages(batch: usize, peak: &mut Peak, table: &mut dyn Write) -> Result<Vec<serde_json::Value>> {
    use crate::ff::fields::{Fields, MapShape};
    let shapes = [
        ("e7_layer", Fields { input: MapShape::new(32, 32, 3), size: 11, stride: 1, padding: 5 }, 3),
        ("e2_layer1", Fields { input: MapShape::new(28, 28, 1), size: 10, stride: 6, padding: 0 }, 128),
    ];
    let mut rows = Vec::new();
    for (name, fields, channels) in shapes {
        let ff = crate::stage::FfSettings {
            goodness: crate::ff::goodness::Goodness::SumSquares,
            threshold: None,
            temperature: 1.0,
            peer_normalization: 0.03,
            rule: crate::ff::optim::Rule::Matlab,
            lr: 0.01,
            weight_cost: 0.001,
            schedule: crate::ff::optim::Schedule::Constant,
            epochs: 1,
            counts_for_goodness: true,
            feeds_readout: false,
            seed: 1,
            threads: 1,
        };
        let mut stage =
            crate::stage::FfLocalConfig { name: name.into(), layer: 1, fields, channels, shared: false, ff }.build()?;
        let map = stage.output();
        let on_map: usize =
            (0..map.height).flat_map(|y| (0..map.width).map(move |x| (y, x))).map(|(y, x)| fields.fan_in(y, x)).sum();
        let best = peak.measure_again();
        let s = stage_seconds(&mut stage, fields.input.len(), batch, Duration::from_millis(700));
        // Forward on every row, the gradient on the learning rows: as `packet_flops`.
        let flops = 2.0 * (on_map * channels) as f64 * (3 * batch + 2 * batch) as f64;
        let gflops = flops / s / 1e9;
        writeln!(
            table,
            "{name:<9} ff_local {} -> {map}: {:>7.2} ms/packet {:>6.1} GFLOP/s = {:>5.1}% of the 1-thread peak so far ({best:.0})",
            fields.input,
            s * 1e3,
            gflops,
            100.0 * gflops / best
        )?;
        rows.push(serde_json::json!({"stage": name, "input": fields.input.to_string(), "map": map.to_string(),
            "field": fields.size, "ms_per_packet": s * 1e3, "gflops": gflops}));
    }
    Ok(rows)
}

/// A net with fewer stages than cores: one 2000->2000 stage timed alone with its own pool of
/// 1 thread and of `cores` threads (`threads = N` in a `[[stage]]` table).
fn one_stage_pool_speedup(base: &PipelineConfig, cores: usize, table: &mut dyn Write) -> Result<serde_json::Value> {
    let units = 2000;
    let time = |threads: usize| {
        let mut config = base.clone();
        config.model.layers = vec![units];
        config.model.goodness_from = 1;
        config.model.readout_from = 1;
        config.stages = vec![crate::config::StageSpec::FfDense(crate::config::DenseSpec {
            units,
            goodness: None,
            threshold: None,
            threads,
        })];
        let mut stage = crate::config::build::build_stages_for(&config, units).remove(0);
        stage_seconds(stage.as_mut(), units, base.data.batch, Duration::from_millis(700))
    };
    let one = time(1);
    let many = time(cores.max(1));
    writeln!(
        table,
        "one {units}->{units} stage with its own pool: {:.2} ms/packet on 1 thread, {:.2} ms on {cores}: {:.2}x",
        one * 1e3,
        many * 1e3,
        one / many
    )?;
    Ok(serde_json::json!({"units": units, "threads": cores, "ms_per_packet_1": one * 1e3,
        "ms_per_packet_n": many * 1e3, "speedup": one / many}))
}

/// Seconds per 50,000-image epoch of the backprop twin of the same 4x2000 net
/// (`mnist-backprop`), trained on `batches` MNIST batches with every core.
fn backprop_seconds_per_epoch(data_dir: Option<&Path>, batches: usize) -> Result<f64> {
    let (text, origin) = pipeline_text("mnist-backprop")?;
    let overrides = [format!("data.train_size={}", batches * 100), "data.batch=100".to_string()];
    let config = PipelineConfig::parse(&text, &origin, &overrides)?;
    let data = load_data(&config, data_dir)?;
    let mut net = crate::config::build::build_backprop(&config);
    net.set_threads(crate::bench::threads_arg(std::thread::available_parallelism().map_or(1, |n| n.get())));
    let source = config.dataset_source();
    let batches: Vec<_> = source.epoch_batches(&data.train, 1).collect();
    let started = Instant::now();
    let frames: usize = batches
        .iter()
        .map(|b| {
            net.train_step(&b.pixels, &b.labels, 1);
            b.labels.len()
        })
        .sum();
    Ok(started.elapsed().as_secs_f64() / frames.max(1) as f64 * 50_000.0)
}

/// Resident memory growth over 1,000,000 MNIST frames (20 epochs) through the threaded
/// pipeline of narrow stages (4x64, so the stream, not the arithmetic, sets the pace):
/// `(rss at the end − rss after the first epoch) / rss after the first epoch`.
fn rss_growth_1m_frames(data_dir: Option<&Path>, stop: &Arc<AtomicBool>) -> Result<(f64, f64, f64)> {
    let (text, origin) = pipeline_text("mnist-supervised")?;
    let overrides: Vec<String> = [
        "model.layers=[64, 64, 64, 64]",
        "data.epochs=20",
        "eval.every=20",
        "eval.test=false",
        "eval.train_size=0",
        "data.validation_size=100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let config = PipelineConfig::parse(&text, &origin, &overrides)?;
    let data = load_data(&config, data_dir)?;
    let mut head = build_head(&config, data, 1, Arc::clone(stop));
    let stats = PipelineStats::new(&config.stage_names());
    let mut sink = build_sink(&config);
    let settings =
        config.pipeline.clone().context("the shipped mnist-supervised pipeline has no [pipeline] section")?;
    let mut by_epoch = Vec::new();
    runtime::run(&mut head, build_stages(&config), &mut sink, settings.wiring(), &stats, &mut |_| {
        by_epoch.push(crate::metrics::rss_mib());
        Ok(())
    })?;
    let (warm, end) = (by_epoch.first().copied().unwrap_or(0.0), by_epoch.last().copied().unwrap_or(0.0));
    Ok(((end - warm) / warm.max(1e-9), warm, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_inside_an_epoch_counts_from_its_first_packet_to_its_last() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut sink = ArrivalSink::new((), 8);
        // Epoch 1 ends slowly; epoch 2's packets of 100 frames come 50 ms apart after a 1 s gap.
        sink.arrivals.extend([(1, at(0), 100, 0), (1, at(900), 100, 0)]);
        sink.arrivals.extend([
            (2, at(1900), 100, 0),
            (2, at(1950), 100, 0),
            (2, at(2000), 100, 0),
            (2, at(2050), 100, 0),
        ]);
        // 300 frames after the first in 150 ms: the gap before epoch 2 does not count.
        let rate = sink.sustained_fps(2).expect("four packets");
        assert!((rate - 2000.0).abs() < 1e-6, "{rate}");
        // Two packets are too few to tell a rate; an epoch that never arrived has none.
        assert_eq!(sink.sustained_fps(1), None);
        assert_eq!(sink.sustained_fps(3), None);
    }

    #[test]
    fn allocations_inside_an_epoch_are_counted_over_its_rate_window_and_the_rest_are_its_ends() {
        let t0 = Instant::now();
        let mut sink = ArrivalSink::new((), 8);
        // Epoch 1 ends at 500 allocations; epoch 2's four packets see 520, 520, 523, 526, and it
        // ends at 600: 6 allocations for the 300 frames after its first packet, 94 at its ends.
        sink.arrivals.extend([(1, t0, 100, 100), (1, t0, 100, 110)]);
        sink.epoch_ends.push(500);
        sink.arrivals.extend([(2, t0, 100, 520), (2, t0, 100, 520), (2, t0, 100, 523), (2, t0, 100, 526)]);
        sink.epoch_ends.push(600);
        let (per_frame, ends) = sink.allocations_inside(2).expect("four packets");
        assert!((per_frame - 0.02).abs() < 1e-12, "{per_frame}");
        assert_eq!(ends, 94);
        // Two packets are too few; an epoch that did not end has no ends to count.
        assert_eq!(sink.allocations_inside(1), None);
        assert_eq!(sink.allocations_inside(0), None);
        sink.arrivals.extend([(3, t0, 100, 600), (3, t0, 100, 601), (3, t0, 100, 602)]);
        assert_eq!(sink.allocations_inside(3), None);
    }

    #[test]
    fn ff_does_five_forward_passes_of_arithmetic_where_backprop_does_about_three() {
        // One hidden layer 4 -> 2 and 3 classes: FF 5·8 = 40; backprop 3·(8 + 6) − 8 = 34.
        assert!((ff_over_bp_flops(4, &[2], 3) - 40.0 / 34.0).abs() < 1e-12);
        // The E3 net (4x2000 on 784 pixels): 1.73, above the 1.4 goal for the time ratio.
        let e3 = ff_over_bp_flops(784, &[2000; 4], 10);
        assert!((e3 - 1.731).abs() < 0.001, "{e3}");
    }

    #[test]
    fn civil_dates_match_the_calendar() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(951_782_400), "2000-02-29");
        assert_eq!(civil_date(1_709_251_199), "2024-02-29");
        assert_eq!(civil_date(1_796_256_000), "2026-12-03");
    }
}
