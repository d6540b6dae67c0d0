//! How close the matrix products come to this machine's f32 FMA peak, measured in the same run.
//!
//! `cargo bench --bench matmul` (about 25 s). Prints a table and writes every number to
//! `benches/results/matmul-<YYYY-MM-DD>.json`. The percentages are the results to compare
//! between runs: absolute GFLOP/s move with the shared machine (see `ffstream::bench`). The
//! peak is measured at the start and again at the end, and the better of the two is used.

use ffstream::bench::{fma_peak_gflops, machine_name, measure_ff_shapes, square_gflops, GemmPoint};
use ffstream::matmul::backend_name;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The FF layer shapes of the reference network: (inputs, units).
const LAYERS: [(usize, usize); 2] = [(784, 2000), (2000, 2000)];
/// The batch sizes the pipeline runs at.
const BATCHES: [usize; 5] = [1, 32, 100, 200, 300];
/// The square reference product.
const SQUARE: usize = 2048;
const SQUARE_THREADS: [usize; 2] = [1, 2];

const PEAK_TIME: Duration = Duration::from_secs(1);
const FF_TIME: Duration = Duration::from_millis(600);
const SQUARE_TIME: Duration = Duration::from_millis(1500);

fn main() {
    let machine = machine_name();
    let backend = backend_name();
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("backend: {backend}");
    println!("machine: {machine}");
    let load_before = load_average();
    println!("load average before: {}", load_before.as_deref().unwrap_or("-"));
    println!();

    // The peak for every thread count a product is compared against, measured before and again
    // after the products: another process on a shared machine only ever lowers a measurement, so
    // the better of the two is the ceiling, and a product can't look faster than the machine
    // because the peak happened to be measured during a disturbance.
    let mut peak_threads = vec![1, all];
    peak_threads.extend(SQUARE_THREADS);
    peak_threads.sort_unstable();
    peak_threads.dedup();
    let measure_peaks =
        || -> BTreeMap<usize, f64> { peak_threads.iter().map(|&t| (t, fma_peak_gflops(t, PEAK_TIME))).collect() };
    let peaks_start = measure_peaks();

    let mut ff_points = Vec::new();
    for (inputs, units) in LAYERS {
        for p in measure_ff_shapes(&BATCHES, inputs, units, 1, FF_TIME) {
            ff_points.push((inputs, units, p));
        }
    }
    let mut square_points = Vec::new();
    for t in SQUARE_THREADS {
        let gflops = square_gflops(SQUARE, t, SQUARE_TIME);
        let seconds = 2.0 * (SQUARE as f64).powi(3) / gflops / 1e9;
        square_points.push((t, gflops, seconds));
    }

    let peaks_end = measure_peaks();
    let peaks: BTreeMap<usize, f64> = peaks_start.iter().map(|(&t, &g)| (t, g.max(peaks_end[&t]))).collect();

    let mut table = Table::default();
    for (&t, &gflops) in &peaks {
        let note = format!("start {:.1}, end {:.1}", peaks_start[&t], peaks_end[&t]);
        table.row("FMA peak", t, &note, gflops, None, None);
    }
    for (inputs, units, p) in &ff_points {
        let what = format!("{inputs}->{units} {}", p.kind);
        let shape = format!("B={} ({}x{}x{})", batch_of(p), p.m, p.k, p.n);
        let peak = peaks[&p.threads];
        table.row(&what, p.threads, &shape, p.gflops, Some(peak), Some(p.seconds_per_call));
    }
    for &(t, gflops, seconds) in &square_points {
        let shape = format!("{SQUARE}x{SQUARE}x{SQUARE}");
        table.row("square", t, &shape, gflops, Some(peaks[&t]), Some(seconds));
    }
    table.print();
    // Other processes on these shared machines skew everything; the load says whether they ran.
    let load_after = load_average();
    println!("load average after: {}", load_after.as_deref().unwrap_or("-"));
    let over: Vec<_> = ff_points
        .iter()
        .map(|(_, _, p)| p.gflops / peaks[&p.threads])
        .chain(square_points.iter().map(|&(t, g, _)| g / peaks[&t]))
        .filter(|&ratio| ratio > 1.0)
        .collect();
    if !over.is_empty() {
        println!("warning: {} product(s) above the measured peak: the peak runs were disturbed, rerun", over.len());
    }

    let date = ffstream::throughput::utc_date();
    let report = json!({
        "date": date,
        "machine": machine,
        "backend": backend,
        "available_parallelism": all,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "fma_peak_gflops": peaks.iter().map(|(t, g)| json!({
            "threads": t,
            "gflops": g,
            "start_gflops": peaks_start[t],
            "end_gflops": peaks_end[t],
        })).collect::<Vec<_>>(),
        "ff_shapes": ff_points.iter().map(|(inputs, units, p)| json!({
            "inputs": inputs,
            "units": units,
            "batch": batch_of(p),
            "kind": p.kind,
            "m": p.m,
            "k": p.k,
            "n": p.n,
            "threads": p.threads,
            "gflops": p.gflops,
            "seconds_per_call": p.seconds_per_call,
            "percent_of_peak": 100.0 * p.gflops / peaks[&p.threads],
        })).collect::<Vec<_>>(),
        "square": square_points.iter().map(|&(t, g, s)| json!({
            "size": SQUARE,
            "threads": t,
            "gflops": g,
            "seconds_per_call": s,
            "percent_of_peak": 100.0 * g / peaks[&t],
        })).collect::<Vec<_>>(),
    });
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches").join("results");
    let path = dir.join(format!("matmul-{date}.json"));
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        let text = serde_json::to_string_pretty(&report).expect("a json! value always serialises");
        std::fs::write(&path, text + "\n")
    });
    match written {
        Ok(()) => println!("\nwrote {}", path.display()),
        Err(e) => eprintln!("\ncould not write {}: {e}", path.display()),
    }
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`, where there is one.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// The batch size of an FF point: the output rows of the forward product, the summed dimension of
/// the gradient.
fn batch_of(p: &GemmPoint) -> usize {
    if p.kind == "gradient" {
        p.k
    } else {
        p.m
    }
}

/// Rows of text cells, printed with every column padded to its widest cell.
#[derive(Default)]
struct Table {
    rows: Vec<[String; 6]>,
}

impl Table {
    fn row(&mut self, what: &str, threads: usize, shape: &str, gflops: f64, peak: Option<f64>, seconds: Option<f64>) {
        self.rows.push([
            what.to_string(),
            threads.to_string(),
            shape.to_string(),
            format!("{gflops:.1}"),
            peak.map_or_else(|| "-".to_string(), |p| format!("{:.1}%", 100.0 * gflops / p)),
            seconds.map_or_else(|| "-".to_string(), |s| format!("{:.3}", s * 1e3)),
        ]);
    }

    fn print(&self) {
        const HEADER: [&str; 6] = ["product", "threads", "shape (m x k x n)", "GFLOP/s", "% of peak", "ms/call"];
        let mut widths = HEADER.map(str::len);
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |cells: [&str; 6]| {
            // Text columns left-aligned, numbers right-aligned.
            let mut out = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                if i == 0 || i == 2 {
                    out.push_str(&format!("{cell:<w$}"));
                } else {
                    out.push_str(&format!("{cell:>w$}"));
                }
            }
            println!("{}", out.trim_end());
        };
        line(HEADER);
        let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
        println!("{}", "-".repeat(total));
        for row in &self.rows {
            line(row.each_ref().map(String::as_str));
        }
    }
}
