//! The live view of a run: what the reporter hands the binary about once a second (a
//! [`LiveFrame`]: the epoch, the run's share done and its ETA, one row of rates per stage,
//! the phase, the source and the latency), and the clock that estimates the ETA.
//!
//! The library draws nothing: the binary shows a frame as a table redrawn in place on a
//! terminal, or as one plain line now and then in a log ([`LiveFrame::line`]).

use std::time::{Duration, Instant};

use crate::metrics::StageRates;

/// Where the live view of a run goes.
pub trait LiveView: Send + Sync + std::fmt::Debug {
    /// The run as it stands now.
    fn show(&self, frame: &LiveFrame);
    /// The run is over: take the view away.
    fn clear(&self) {}
}

/// One sample of a running pipeline, for the live view.
#[derive(Clone, Debug, Default)]
pub struct LiveFrame {
    /// The epoch being played (1-based, at most `epochs`).
    pub epoch: u32,
    /// Epochs of the whole run.
    pub epochs: u32,
    /// Share of the run's epochs done, 0 to 1 (finished epochs plus the current one's share).
    pub done: f64,
    /// Wall time since the view started (this process: a resumed run starts again at 0).
    pub elapsed: Duration,
    /// Wall time left, once enough of the run has passed to tell.
    pub eta: Option<Duration>,
    /// Rates of each stage over the last interval.
    pub stages: Vec<StageRates>,
    /// Wake or sleep with what is left of it, when the run has a schedule.
    pub phase: Option<String>,
    /// Frames decoded and dropped by a video source, when there is one.
    pub source: Option<(u64, u64)>,
    /// End-to-end latency p50 and p99 in ms over the last interval, when measured.
    pub latency_ms: Option<(f64, f64)>,
    /// Resident memory, MiB.
    pub rss_mib: f64,
}

impl LiveFrame {
    /// The run's position: `epoch 3/12, 21%, 4m10s in, eta 15m02s` (`eta -` until it can be
    /// told, `finishing` once every epoch is played).
    pub fn position(&self) -> String {
        let mut out =
            format!("epoch {}/{}, {:.0}%, {} in", self.epoch, self.epochs, 100.0 * self.done, clock(self.elapsed));
        match self.eta {
            // Every epoch played: what is left is the final evaluation and the record.
            _ if self.done >= 1.0 => out += ", finishing",
            Some(eta) => out += &format!(", eta {}", clock(eta)),
            None => out += ", eta -",
        }
        out
    }

    /// What is neither position nor stage: phase, source, latency, memory.
    pub fn extras(&self) -> String {
        let mut parts = Vec::new();
        if let Some(phase) = &self.phase {
            parts.push(phase.clone());
        }
        if let Some((decoded, dropped)) = self.source {
            parts.push(format!("decoded {decoded} dropped {dropped}"));
        }
        if let Some((p50, p99)) = self.latency_ms {
            parts.push(format!("latency p50 {p50:.0} ms p99 {p99:.0} ms"));
        }
        parts.push(format!("rss {:.0} MiB", self.rss_mib));
        parts.join(" | ")
    }

    /// The whole frame as one line, for logs.
    pub fn line(&self) -> String {
        let stages: Vec<String> = self
            .stages
            .iter()
            .map(|r| format!("{} {:.0} f/s {:.0}% q{}", r.name, r.frames_per_s, r.busy_pct, r.queue_depth))
            .collect();
        format!("{} | {} | {}", self.position(), stages.join(" | "), self.extras())
    }

    /// The per-stage table's header, aligned with [`LiveFrame::stage_row`].
    pub fn stage_header(&self) -> String {
        format!(
            "{:<width$} {:>9} {:>9} {:>6} {:>8} {:>9} {:>5}",
            "stage",
            "frames/s",
            "rows/s",
            "busy%",
            "wait_in%",
            "wait_out%",
            "queue",
            width = self.name_width()
        )
    }

    /// Stage `i`'s row of the table; the busiest stage is marked as the bottleneck.
    pub fn stage_row(&self, i: usize) -> String {
        let r = &self.stages[i];
        let busiest = crate::metrics::bottleneck(&self.stages).is_some_and(|b| b.name == r.name);
        format!(
            "{:<width$} {:>9.0} {:>9.0} {:>6.1} {:>8.1} {:>9.1} {:>5}{}",
            r.name,
            r.frames_per_s,
            r.rows_per_s,
            r.busy_pct,
            r.wait_in_pct,
            r.wait_out_pct,
            r.queue_depth,
            if busiest && self.stages.len() > 1 { "  <- bottleneck" } else { "" },
            width = self.name_width()
        )
    }

    fn name_width(&self) -> usize {
        self.stages.iter().map(|r| r.name.len()).max().unwrap_or(0).max(5)
    }
}

/// `1h02m`, `4m10s`, `9s`.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Estimates how far a run is and when it ends from what this process has seen: the epochs
/// finished since the view started and the share of the current epoch the first stage has
/// passed. Time per epoch is measured, evaluations included, so the estimate holds for runs
/// whose epochs end with a long evaluation; it is first given once a fiftieth of the epochs
/// left at the start has passed.
#[derive(Debug)]
pub struct EtaClock {
    started: Instant,
    /// The epoch the view started in (later than 1 on a resume).
    first_epoch: u32,
    /// The epoch last seen, and the first stage's frame count when it began.
    epoch: u32,
    epoch_start_frames: u64,
}

impl EtaClock {
    /// A clock for a run that is at `epoch` now.
    pub fn new(epoch: u32, frames: u64, now: Instant) -> EtaClock {
        EtaClock { started: now, first_epoch: epoch.max(1), epoch: epoch.max(1), epoch_start_frames: frames }
    }

    /// The run at `epoch` of `epochs`, with `frames` through the first stage so far and
    /// `epoch_frames` in one epoch (0: unknown). Returns the share of the run done, the time
    /// since the clock started and the time left (`None` until it can be told).
    pub fn observe(
        &mut self,
        epoch: u32,
        epochs: u32,
        frames: u64,
        epoch_frames: u64,
        now: Instant,
    ) -> (f64, Duration, Option<Duration>) {
        let epochs = epochs.max(1);
        if epoch != self.epoch {
            self.epoch = epoch;
            self.epoch_start_frames = frames;
        }
        // Past the last epoch (the head moves on after the last report): all done.
        let epoch = epoch.clamp(1, epochs + 1);
        let within = if epoch > epochs || epoch_frames == 0 {
            0.0
        } else {
            // Never a whole epoch: its evaluation is still to come.
            (frames.saturating_sub(self.epoch_start_frames) as f64 / epoch_frames as f64).min(0.99)
        };
        let done_run = ((f64::from(epoch - 1) + within) / f64::from(epochs)).min(1.0);
        let elapsed = now.saturating_duration_since(self.started);
        let first = self.first_epoch.min(epochs);
        let span = f64::from(epochs - first + 1);
        let done_here = f64::from(epoch.saturating_sub(first)) + within;
        let eta = (done_here >= span / 50.0 && done_here > 0.0)
            .then(|| elapsed.mul_f64(((span - done_here) / done_here).max(0.0)));
        (done_run, elapsed, eta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_is_the_time_per_epoch_so_far_times_the_epochs_left() {
        let t0 = Instant::now();
        let mut clock = EtaClock::new(1, 0, t0);
        // No estimate before anything has passed.
        assert_eq!(clock.observe(1, 10, 0, 1000, t0).2, None);
        // Half of epoch 1 in 30 s: 9.5 epochs left at 60 s each.
        let (done, elapsed, eta) = clock.observe(1, 10, 500, 1000, t0 + Duration::from_secs(30));
        assert!((done - 0.05).abs() < 1e-9);
        assert_eq!(elapsed, Duration::from_secs(30));
        assert_eq!(eta.unwrap().as_secs(), 570);
        // Epoch 3 begins at 120 s: the frames of the epochs before do not count in it.
        let (done, _, eta) = clock.observe(3, 10, 2000, 1000, t0 + Duration::from_secs(120));
        assert!((done - 0.2).abs() < 1e-9);
        assert_eq!(eta.unwrap().as_secs(), 480);
        // After the last epoch: done, nothing left.
        let (done, _, eta) = clock.observe(11, 10, 10_000, 1000, t0 + Duration::from_secs(600));
        assert_eq!(done, 1.0);
        assert_eq!(eta.unwrap(), Duration::ZERO);
    }

    #[test]
    fn a_resumed_run_times_only_the_epochs_played_since_it_started() {
        let t0 = Instant::now();
        // Resumed at epoch 9 of 10: 8 epochs done before this process, none timed by it.
        let mut clock = EtaClock::new(9, 0, t0);
        let (done, _, eta) = clock.observe(9, 10, 0, 0, t0 + Duration::from_secs(5));
        assert!((done - 0.8).abs() < 1e-9);
        assert_eq!(eta, None);
        // Epoch 9 took 100 s; one epoch left.
        let (_, _, eta) = clock.observe(10, 10, 0, 0, t0 + Duration::from_secs(100));
        assert_eq!(eta.unwrap().as_secs(), 100);
    }

    #[test]
    fn the_line_and_the_table_name_every_stage_and_the_bottleneck() {
        let stage = |name: &str, busy| StageRates {
            name: name.into(),
            frames_per_s: 100.0,
            rows_per_s: 200.0,
            busy_pct: busy,
            wait_in_pct: 1.0,
            wait_out_pct: 2.0,
            queue_depth: 1,
        };
        let frame = LiveFrame {
            epoch: 2,
            epochs: 4,
            done: 0.25,
            elapsed: Duration::from_secs(75),
            eta: Some(Duration::from_secs(3725)),
            stages: vec![stage("layer1", 90.0), stage("readout", 10.0)],
            latency_ms: Some((12.0, 40.0)),
            rss_mib: 33.0,
            ..Default::default()
        };
        assert_eq!(
            frame.line(),
            "epoch 2/4, 25%, 1m15s in, eta 1h02m | layer1 100 f/s 90% q1 | readout 100 f/s 10% q1 \
             | latency p50 12 ms p99 40 ms | rss 33 MiB"
        );
        assert!(frame.stage_row(0).ends_with("<- bottleneck"));
        assert!(!frame.stage_row(1).contains("bottleneck"));
        // Columns line up: the header is as wide as a row without the mark.
        assert_eq!(frame.stage_header().len(), frame.stage_row(1).len());
    }
}
