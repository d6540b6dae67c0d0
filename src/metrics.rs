//! Per-stage counters, their rates, the latency histogram, and the end-of-run summary.
//!
//! Each stage thread owns one [`StageStats`] and is its only writer: plain relaxed stores of
//! running totals once per packet, three `Instant::now()` per packet (~70 ns, STACK.md). The
//! reporter ([`crate::reporter`]) samples them every interval and turns differences into rates
//! and utilization (busy time / wall time). The stage with the highest utilization is the
//! bottleneck.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// Running totals of one stage. One writer (its thread), any number of readers.
#[derive(Debug, Default)]
pub struct StageStats {
    /// Stage name.
    pub name: String,
    frames: AtomicU64,
    rows: AtomicU64,
    packets: AtomicU64,
    busy_ns: AtomicU64,
    wait_in_ns: AtomicU64,
    wait_out_ns: AtomicU64,
    /// Messages waiting in the stage's input queue, as last seen by the stage.
    queue_depth: AtomicU64,
    /// Heap allocations of the owning thread between its first and its latest packet.
    allocations: AtomicU64,
    /// The owning thread's allocation count at its latest packet (`u64::MAX`: none yet).
    allocation_mark: AtomicU64,
    /// Whether an epoch's end marker has passed the element: the pools ([`crate::recycle`])
    /// have then seen every packet shape of the run (training, prediction, evaluation).
    warm: std::sync::atomic::AtomicBool,
    /// Heap allocations of the data packets after the first epoch (the steady state): the
    /// work on epoch-end markers (checkpoint snapshots) is not in it.
    steady_allocations: AtomicU64,
    /// Data packets after the first epoch.
    steady_packets: AtomicU64,
}

/// A plain copy of a [`StageStats`] at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageTotals {
    /// Source frames processed.
    pub frames: u64,
    /// Rows processed (a frame can be several rows: positive, negative, neutral, candidates).
    pub rows: u64,
    /// Packets processed.
    pub packets: u64,
    /// Time computing.
    pub busy_ns: u64,
    /// Time blocked on receive.
    pub wait_in_ns: u64,
    /// Time blocked on send.
    pub wait_out_ns: u64,
    /// Input queue depth.
    pub queue_depth: u64,
    /// Heap allocations of the element's thread after its first packet (0 where the program
    /// does not count them: [`crate::alloc_count::installed`]).
    pub allocations: u64,
    /// Heap allocations of the element's data packets after its first epoch's end marker.
    pub steady_allocations: u64,
    /// Data packets after its first epoch's end marker.
    pub steady_packets: u64,
}

impl StageStats {
    /// Counters for a stage called `name`.
    pub fn new(name: &str) -> Arc<StageStats> {
        Arc::new(StageStats { name: name.to_string(), allocation_mark: AtomicU64::new(u64::MAX), ..Default::default() })
    }

    /// Adds one packet's numbers (called by the owning thread only).
    pub fn record(
        &self,
        frames: usize,
        rows: usize,
        busy: Duration,
        wait_in: Duration,
        wait_out: Duration,
        depth: usize,
    ) {
        let add = |a: &AtomicU64, v: u64| a.store(a.load(Ordering::Relaxed) + v, Ordering::Relaxed);
        add(&self.frames, frames as u64);
        add(&self.rows, rows as u64);
        add(&self.packets, 1);
        add(&self.busy_ns, busy.as_nanos() as u64);
        add(&self.wait_in_ns, wait_in.as_nanos() as u64);
        add(&self.wait_out_ns, wait_out.as_nanos() as u64);
        self.queue_depth.store(depth as u64, Ordering::Relaxed);
        // The thread's allocations since its previous packet: its work on this packet, the
        // receive and the send included (the first packet only sets the mark: warm-up).
        let now = crate::alloc_count::thread_allocations();
        let mark = self.allocation_mark.swap(now, Ordering::Relaxed);
        if mark != u64::MAX {
            add(&self.allocations, now.saturating_sub(mark));
        }
        // An epoch-end marker carries no rows; every data packet carries some.
        let marker = rows == 0;
        if self.warm.load(Ordering::Relaxed) && !marker {
            add(&self.steady_allocations, now.saturating_sub(mark));
            add(&self.steady_packets, 1);
        }
        if marker {
            self.warm.store(true, Ordering::Relaxed);
        }
    }

    /// The totals now.
    pub fn totals(&self) -> StageTotals {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StageTotals {
            frames: get(&self.frames),
            rows: get(&self.rows),
            packets: get(&self.packets),
            busy_ns: get(&self.busy_ns),
            wait_in_ns: get(&self.wait_in_ns),
            wait_out_ns: get(&self.wait_out_ns),
            queue_depth: get(&self.queue_depth),
            allocations: get(&self.allocations),
            steady_allocations: get(&self.steady_allocations),
            steady_packets: get(&self.steady_packets),
        }
    }
}

/// One stage's rates over an interval (or the whole run).
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct StageRates {
    /// Stage name.
    pub name: String,
    /// Source frames per second.
    pub frames_per_s: f64,
    /// Rows per second.
    pub rows_per_s: f64,
    /// Busy time / wall time, percent.
    pub busy_pct: f64,
    /// Blocked on receive, percent.
    pub wait_in_pct: f64,
    /// Blocked on send, percent.
    pub wait_out_pct: f64,
    /// Input queue depth at the end of the interval.
    pub queue_depth: u64,
}

/// Rates between two totals over `wall` seconds.
pub fn rates(name: &str, before: &StageTotals, after: &StageTotals, wall: f64) -> StageRates {
    let wall = wall.max(1e-9);
    let pct = |a: u64, b: u64| 100.0 * (b.saturating_sub(a)) as f64 / 1e9 / wall;
    StageRates {
        name: name.to_string(),
        frames_per_s: (after.frames - before.frames) as f64 / wall,
        rows_per_s: (after.rows - before.rows) as f64 / wall,
        busy_pct: pct(before.busy_ns, after.busy_ns),
        wait_in_pct: pct(before.wait_in_ns, after.wait_in_ns),
        wait_out_pct: pct(before.wait_out_ns, after.wait_out_ns),
        queue_depth: after.queue_depth,
    }
}

/// What the live line shows besides the stages.
#[derive(Debug, Default)]
pub struct Progress {
    /// Current epoch (1-based).
    pub epoch: AtomicU32,
    /// Total epochs.
    pub epochs: AtomicU32,
    /// Frames one epoch passes through the first stage (0: not known); the ETA's unit.
    pub epoch_frames: AtomicU64,
    /// The frame source's counters (video feeds write them).
    pub source: SourceCounters,
    /// End-to-end latency, when the run measures it.
    pub latency: std::sync::OnceLock<Arc<Latency>>,
    /// Wake or sleep, and what is left of the phase (heads with a schedule write it).
    pub phase: crate::schedule::PhaseState,
}

/// What a frame source counted: decoded, dropped, corrupt, reconnects, decode time.
#[derive(Debug, Default)]
pub struct SourceCounters {
    /// Frames decoded or generated.
    pub decoded: AtomicU64,
    /// Frames dropped because the pipeline was slower than a live source.
    pub dropped: AtomicU64,
    /// Corrupt packets or frames skipped.
    pub corrupt: AtomicU64,
    /// Reconnections.
    pub reconnects: AtomicU64,
    /// Decode frames per second (decode time alone), as f64 bits.
    pub decode_fps_bits: AtomicU64,
}

impl SourceCounters {
    /// The counters as JSON.
    pub fn json(&self) -> serde_json::Value {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "decoded": get(&self.decoded), "dropped": get(&self.dropped), "corrupt": get(&self.corrupt),
            "reconnects": get(&self.reconnects), "decode_fps": f64::from_bits(get(&self.decode_fps_bits)),
        })
    }
}

/// Resident memory of this process in MiB (Linux; 0 elsewhere).
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<f64>().ok()))
        .map_or(0.0, |pages| pages * 4096.0 / (1024.0 * 1024.0))
}

/// The per-stage table printed at the end, naming the bottleneck.
pub fn summary_table(rates: &[StageRates]) -> String {
    let mut out = format!(
        "{:<10} {:>10} {:>10} {:>7} {:>8} {:>9}\n",
        "stage", "frames/s", "rows/s", "busy%", "wait_in%", "wait_out%"
    );
    for r in rates {
        out += &format!(
            "{:<10} {:>10.0} {:>10.0} {:>7.1} {:>8.1} {:>9.1}\n",
            r.name, r.frames_per_s, r.rows_per_s, r.busy_pct, r.wait_in_pct, r.wait_out_pct
        );
    }
    if let Some(b) = bottleneck(rates) {
        out += &format!("bottleneck: {} (busy {:.1}% of the wall time)\n", b.name, b.busy_pct);
    }
    out
}

/// The stage with the highest utilization.
pub fn bottleneck(rates: &[StageRates]) -> Option<&StageRates> {
    rates.iter().max_by(|a, b| a.busy_pct.total_cmp(&b.busy_pct))
}

/// End-to-end latency (source timestamp to the sink), as a log-scale histogram.
///
/// Written by the sink thread only, read by the reporter: 20 buckets per decade from 10 µs to
/// 1000 s, so a percentile is known to within 12% without storing samples; memory stays flat
/// however long the stream.
#[derive(Debug)]
pub struct Latency {
    buckets: Vec<AtomicU64>,
    /// The first packet's latency: the time it took to cross the empty pipeline (its fill).
    first: std::sync::OnceLock<Duration>,
}

const LATENCY_FLOOR_S: f64 = 1e-5;
const LATENCY_PER_DECADE: f64 = 20.0;
const LATENCY_BUCKETS: usize = 160;

impl Default for Latency {
    fn default() -> Latency {
        Latency { buckets: (0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect(), first: Default::default() }
    }
}

impl Latency {
    /// Adds one packet's latency, once per frame it carries.
    pub fn record(&self, latency: Duration, frames: usize) {
        let _ = self.first.set(latency);
        let s = latency.as_secs_f64().max(LATENCY_FLOOR_S);
        let bucket = ((s / LATENCY_FLOOR_S).log10() * LATENCY_PER_DECADE) as usize;
        self.buckets[bucket.min(LATENCY_BUCKETS - 1)].fetch_add(frames as u64, Ordering::Relaxed);
    }

    /// The first recorded packet's latency: how long the first frames took through the empty
    /// pipeline (its fill time); none before a packet arrived.
    pub fn first(&self) -> Option<Duration> {
        self.first.get().copied()
    }

    /// Frames per bucket so far.
    pub fn counts(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }

    /// The lower and upper edges (seconds) of bucket `i` of [`Latency::counts`].
    pub fn bucket_edges(i: usize) -> (f64, f64) {
        let edge = |k: usize| LATENCY_FLOOR_S * 10f64.powf(k as f64 / LATENCY_PER_DECADE);
        (if i == 0 { 0.0 } else { edge(i) }, edge(i + 1))
    }

    /// The `q`-quantile (0..1) in seconds of the frames counted between `before` and `after`
    /// (two [`Latency::counts`]); the upper edge of its bucket. `None` when nothing was counted.
    pub fn quantile(before: &[u64], after: &[u64], q: f64) -> Option<f64> {
        let diff: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        let total: u64 = diff.iter().sum();
        if total == 0 {
            return None;
        }
        let target = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in diff.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Some(LATENCY_FLOOR_S * 10f64.powf((i + 1) as f64 / LATENCY_PER_DECADE));
            }
        }
        None
    }
}
