//! `--metrics-addr`: the run's counters as a Prometheus endpoint (OpenMetrics text at
//! `/metrics`), read fresh from the stages' atomics on every scrape.
//!
//! Per stage: frames, rows, busy and waiting seconds (counters), queue depth (gauge); the
//! source's decoded, dropped, corrupt frames and reconnects; the end-to-end latency histogram;
//! the epoch and the wake/sleep phase; resident memory. Encoded by `prometheus-client` (a
//! collector over the live counters, so nothing is copied between scrapes); served by a small
//! std listener on its own thread: a scraper sends one GET at a time, no async runtime needed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::metrics::{Latency, Progress, StageStats};

/// Upper bounds (seconds) of the exported latency histogram; the internal one is finer.
const LATENCY_BOUNDS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Serves `/metrics` until dropped.
pub struct MetricsEndpoint {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Where it listens (the port chosen when the address asked for port 0).
    pub addr: std::net::SocketAddr,
}

impl MetricsEndpoint {
    /// Listens on `addr` (`127.0.0.1:9898`, `0.0.0.0:9898`, `localhost:0`) and serves the
    /// counters of `stages` and `progress`.
    pub fn start(addr: &str, stages: Vec<Arc<StageStats>>, progress: Arc<Progress>) -> Result<MetricsEndpoint> {
        let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on --metrics-addr {addr}"))?;
        let local = listener.local_addr()?;
        // Non-blocking accepts, so dropping the endpoint ends its thread within a poll.
        listener.set_nonblocking(true)?;
        let mut registry = Registry::default();
        registry.register_collector(Box::new(RunCollector { stages, progress }));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("metrics".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = answer(stream, &registry);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })?;
        tracing::info!("metrics at http://{local}/metrics");
        Ok(MetricsEndpoint { stop, thread: Some(thread), addr: local })
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request (its head, at most 8 KiB, within a second) and answers it.
fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8_lossy(&head);
    let path = request.lines().next().and_then(|l| l.strip_prefix("GET ")).and_then(|l| l.split(' ').next());
    let (status, kind, body) = match path {
        Some("/metrics") => {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, registry).map_err(std::io::Error::other)?;
            ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", text)
        }
        _ => ("404 Not Found", "text/plain; charset=utf-8", "ffstream serves /metrics\n".to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The run's counters, read on each scrape.
#[derive(Debug)]
struct RunCollector {
    stages: Vec<Arc<StageStats>>,
    progress: Arc<Progress>,
}

/// Writes one metric family: `values` as (labels, value), all of one type.
fn family<V: Copy>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    values: &[(Vec<(&str, String)>, V)],
    encode: impl Fn(V, prometheus_client::encoding::MetricEncoder<'_>) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in values {
        if labels.is_empty() {
            encode(*value, metric)?;
            return Ok(());
        }
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        encode(*value, metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(v: f64, m: prometheus_client::encoding::MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
    ConstCounter::new(v).encode(m)
}

fn count(v: u64, m: prometheus_client::encoding::MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
    ConstCounter::new(v).encode(m)
}

fn gauge(v: f64, m: prometheus_client::encoding::MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
    ConstGauge::new(v).encode(m)
}

impl Collector for RunCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let totals: Vec<_> = self.stages.iter().map(|s| (s.name.clone(), s.totals())).collect();
        let per_stage = |f: &dyn Fn(&crate::metrics::StageTotals) -> f64| -> Vec<(Vec<(&str, String)>, f64)> {
            totals.iter().map(|(name, t)| (vec![("stage", name.clone())], f(t))).collect()
        };
        let seconds = |ns: u64| ns as f64 * 1e-9;
        let frames: Vec<_> = totals.iter().map(|(name, t)| (vec![("stage", name.clone())], t.frames)).collect();
        let rows: Vec<_> = totals.iter().map(|(name, t)| (vec![("stage", name.clone())], t.rows)).collect();
        family(
            &mut encoder,
            "ffstream_stage_frames",
            "Frames a stage has processed",
            MetricType::Counter,
            &frames,
            count,
        )?;
        let help = "Rows (positive, negative, neutral) a stage has processed";
        family(&mut encoder, "ffstream_stage_rows", help, MetricType::Counter, &rows, count)?;
        // Seconds busy and waiting, by stage: (name, help, the totals' nanoseconds).
        let times = [
            ("ffstream_stage_busy_seconds", "Seconds a stage spent computing", 0),
            ("ffstream_stage_wait_in_seconds", "Seconds a stage waited for its input", 1),
            ("ffstream_stage_wait_out_seconds", "Seconds a stage waited for room downstream", 2),
        ];
        for (name, help, which) in times {
            let values = per_stage(&|t| seconds([t.busy_ns, t.wait_in_ns, t.wait_out_ns][which]));
            family(&mut encoder, name, help, MetricType::Counter, &values, counter)?;
        }
        let depth: Vec<_> =
            totals.iter().map(|(name, t)| (vec![("stage", name.clone())], t.queue_depth as i64)).collect();
        let help = "Packets waiting in a stage's input edge";
        family(&mut encoder, "ffstream_stage_queue_depth", help, MetricType::Gauge, &depth, |v, m| {
            ConstGauge::new(v).encode(m)
        })?;

        let source = &self.progress.source;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let source_counters = [
            ("ffstream_source_decoded_frames", "Frames out of the decoder", load(&source.decoded)),
            (
                "ffstream_source_dropped_frames",
                "Frames a live source dropped (pipeline slower than it)",
                load(&source.dropped),
            ),
            ("ffstream_source_corrupt", "Corrupt packets or frames skipped", load(&source.corrupt)),
            ("ffstream_source_reconnects", "Reconnections of a network or device input", load(&source.reconnects)),
        ];
        for (name, help, value) in source_counters {
            family(&mut encoder, name, help, MetricType::Counter, &[(Vec::new(), value)], count)?;
        }

        if let Some(latency) = self.progress.latency.get() {
            let (sum, count, buckets) = coarse_latency(latency);
            let mut metric = encoder.encode_descriptor(
                "ffstream_latency_seconds",
                "End-to-end latency, source to sink, per frame (sum estimated from bucket centres)",
                None,
                MetricType::Histogram,
            )?;
            metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)?;
        }

        let (phase, left, sleeps) = self.progress.phase.get();
        family(
            &mut encoder,
            "ffstream_phase",
            "The head's wake/sleep phase (1 for the current one)",
            MetricType::Gauge,
            &[(vec![("phase", phase.name().to_string())], 1.0)],
            gauge,
        )?;
        let gauges = [
            ("ffstream_phase_left", "Packets left in the current phase", left as f64),
            ("ffstream_sleeps", "Sleep phases so far", sleeps as f64),
            (
                "ffstream_epoch",
                "The epoch being played (1-based)",
                f64::from(self.progress.epoch.load(Ordering::Relaxed)),
            ),
            ("ffstream_epochs", "Epochs in the run", f64::from(self.progress.epochs.load(Ordering::Relaxed))),
            ("ffstream_resident_memory_bytes", "Resident memory of the process", crate::metrics::rss_mib() * 1048576.0),
        ];
        for (name, help, value) in gauges {
            family(&mut encoder, name, help, MetricType::Gauge, &[(Vec::new(), value)], gauge)?;
        }
        Ok(())
    }
}

/// The fine log-scale histogram folded into [`LATENCY_BOUNDS`] (and +Inf): (sum, count,
/// per-bucket counts), each fine bucket into the first bound at or above its upper edge.
fn coarse_latency(latency: &Latency) -> (f64, u64, Vec<(f64, u64)>) {
    let mut buckets: Vec<(f64, u64)> = LATENCY_BOUNDS.iter().map(|&b| (b, 0)).collect();
    buckets.push((f64::INFINITY, 0));
    let (mut sum, mut count) = (0.0, 0u64);
    for (i, n) in latency.counts().into_iter().enumerate() {
        if n == 0 {
            continue;
        }
        let (low, high) = Latency::bucket_edges(i);
        sum += n as f64 * (low * high).sqrt();
        count += n;
        let slot = buckets.iter().position(|(bound, _)| high <= *bound * (1.0 + 1e-9)).unwrap_or(buckets.len() - 1);
        buckets[slot].1 += n;
    }
    (sum, count, buckets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn the_endpoint_serves_per_stage_counters_latency_and_phase() {
        let stage = StageStats::new("layer1");
        stage.record(100, 300, Duration::from_millis(250), Duration::from_millis(50), Duration::ZERO, 2);
        let progress = Arc::new(Progress::default());
        let latency = Arc::new(Latency::default());
        latency.record(Duration::from_millis(30), 100);
        let _ = progress.latency.set(latency);
        progress.source.dropped.store(7, Ordering::Relaxed);
        let endpoint = MetricsEndpoint::start("127.0.0.1:0", vec![stage], progress).unwrap();
        let text = get(endpoint.addr, "/metrics");
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        for line in [
            "ffstream_stage_frames_total{stage=\"layer1\"} 100",
            "ffstream_stage_rows_total{stage=\"layer1\"} 300",
            "ffstream_stage_busy_seconds_total{stage=\"layer1\"} 0.25",
            "ffstream_stage_queue_depth{stage=\"layer1\"} 2",
            "ffstream_source_dropped_frames_total 7",
            "ffstream_latency_seconds_bucket{le=\"0.025\"} 0",
            "ffstream_latency_seconds_bucket{le=\"0.05\"} 100",
            "ffstream_latency_seconds_count 100",
            "ffstream_phase{phase=\"interleaved\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "`{line}` not in:\n{text}");
        }
        assert!(get(endpoint.addr, "/").starts_with("HTTP/1.1 404"));
        // An address in use is one clear error.
        let err = MetricsEndpoint::start(&endpoint.addr.to_string(), Vec::new(), Arc::default()).err().unwrap();
        assert!(format!("{err:#}").contains("cannot listen on --metrics-addr"), "{err:#}");
    }
}
