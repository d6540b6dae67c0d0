//! The reporter: a thread that samples the stages' counters every interval, turns the
//! differences into rates, appends one JSON line to `metrics.jsonl` and hands a
//! [`LiveFrame`] to the [`LiveView`] (the binary draws it; the library prints nothing).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::live::{EtaClock, LiveFrame, LiveView};
use crate::metrics::{rates, rss_mib, Latency, Progress, StageRates, StageStats, StageTotals};

/// Samples the stages on a thread until dropped.
pub struct Reporter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// What serves the same counters elsewhere (the Prometheus endpoint), kept as long as this.
    servers: Vec<Box<dyn Send>>,
}

impl Reporter {
    /// Starts sampling `stages` every `interval`; appends to `jsonl` if given; hands a
    /// [`LiveFrame`] to `live` if given. Fails only if the OS cannot start the thread.
    pub fn start(
        stages: Vec<Arc<StageStats>>,
        progress: Arc<Progress>,
        interval: Duration,
        jsonl: Option<PathBuf>,
        live: Option<Arc<dyn LiveView>>,
    ) -> std::io::Result<Reporter> {
        let first_frames = |stages: &[Arc<StageStats>]| stages.first().map_or(0, |s| s.totals().frames);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("reporter".into()).spawn(move || {
            let started = Instant::now();
            let mut file = jsonl.and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
            let mut last: Vec<StageTotals> = stages.iter().map(|s| s.totals()).collect();
            let mut last_latency = progress.latency.get().map(|l| l.counts()).unwrap_or_default();
            let mut last_t = Instant::now();
            let mut eta = EtaClock::new(progress.epoch.load(Ordering::Relaxed), first_frames(&stages), started);
            while !flag.load(Ordering::Relaxed) {
                // Sleep in small steps so a finished run does not wait a whole interval.
                let wake = Instant::now() + interval;
                while Instant::now() < wake && !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50).min(interval));
                }
                let now = Instant::now();
                let wall = (now - last_t).as_secs_f64();
                let current: Vec<StageTotals> = stages.iter().map(|s| s.totals()).collect();
                let rates: Vec<StageRates> = stages
                    .iter()
                    .zip(last.iter().zip(&current))
                    .map(|(s, (a, b))| rates(&s.name, a, b, wall))
                    .collect();
                let epoch = progress.epoch.load(Ordering::Relaxed);
                let epochs = progress.epochs.load(Ordering::Relaxed);
                // Latency of the frames that arrived since the last sample.
                let latency_now = progress.latency.get().map(|l| l.counts()).unwrap_or_default();
                let quantile = |q| Latency::quantile(&last_latency, &latency_now, q).map(|s| s * 1000.0);
                let (p50, p99) = (quantile(0.5), quantile(0.99));
                last_latency = latency_now;
                let source = &progress.source;
                let decoded = source.decoded.load(Ordering::Relaxed);
                let rss = rss_mib();
                let (phase, left, sleeps) = progress.phase.get();
                if let Some(f) = file.as_mut() {
                    let line = serde_json::json!({
                        "t_s": (now - started).as_secs_f64(), "epoch": epoch, "stages": rates,
                        "latency_ms": {"p50": p50, "p99": p99}, "source": source.json(), "rss_mib": rss,
                        "phase": phase.name(), "phase_left": left, "sleeps": sleeps,
                        "sleep_storage_bytes": progress.phase.storage_bytes(),
                    });
                    let _ = writeln!(f, "{line}");
                }
                if let Some(live) = &live {
                    let frames = current.first().map_or(0, |t| t.frames);
                    let epoch_frames = progress.epoch_frames.load(Ordering::Relaxed);
                    let (done, elapsed, eta) = eta.observe(epoch, epochs, frames, epoch_frames, now);
                    let phase = (phase != crate::schedule::Phase::Interleaved).then(|| {
                        let kib = progress.phase.storage_bytes() as f64 / 1024.0;
                        format!("{} ({left} left, {sleeps} sleeps, memory {kib:.0} KiB)", phase.name())
                    });
                    live.show(&LiveFrame {
                        epoch: epoch.min(epochs),
                        epochs,
                        done,
                        elapsed,
                        eta,
                        stages: rates,
                        phase,
                        source: (decoded > 0).then(|| (decoded, source.dropped.load(Ordering::Relaxed))),
                        latency_ms: p50.zip(p99),
                        rss_mib: rss,
                    });
                }
                last = current;
                last_t = now;
            }
            if let Some(live) = &live {
                live.clear();
            }
        })?;
        Ok(Reporter { stop, thread: Some(thread), servers: Vec::new() })
    }

    /// Keeps `server` (it stops when dropped) for as long as this reporter samples.
    pub fn keep(&mut self, server: Box<dyn Send>) {
        self.servers.push(server);
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
