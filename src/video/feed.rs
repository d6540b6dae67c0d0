//! Frame feeds: where the video head gets its frames, one epoch at a time.
//!
//! An epoch is the unit a run checkpoints and resumes at. For a file it is one pass over the
//! file (every pass decodes the same frames, so a resumed run sees the same stream); for
//! Moving MNIST a fixed block of sequences (sequence numbers depend only on the epoch); for a
//! live stream a fixed number of frames of whatever arrives (a live stream cannot be replayed).

use serde::Serialize;

use super::Frame;

/// What a feed counted so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct FeedCounters {
    /// Frames out of the decoder (or generated).
    pub decoded: u64,
    /// Frames dropped because the pipeline was slower than a live source.
    pub dropped: u64,
    /// Corrupt packets or frames skipped.
    pub corrupt: u64,
    /// Reconnections of a network or device input.
    pub reconnects: u64,
    /// Frames per second of decode time (decode alone, not waiting).
    pub decode_fps: f64,
}

/// A source of frames for [`super::head::VideoHead`].
pub trait FrameFeed: Send {
    /// Starts epoch `epoch` (1-based): a file reopens, a generator seeks, a live feed goes on.
    fn start_epoch(&mut self, epoch: u32) -> Result<(), String>;
    /// The next frame of the current epoch; `None` at its end.
    fn next_frame(&mut self) -> Result<Option<Frame>, String>;
    /// A fixed held-out set of frames for evaluation, if the feed has one of its own (Moving
    /// MNIST: test-split sequences). `None`: the head holds windows out of the stream itself.
    fn holdout(&mut self) -> Result<Option<Vec<Frame>>, String> {
        Ok(None)
    }
    /// Counters so far.
    fn counters(&self) -> FeedCounters {
        FeedCounters::default()
    }
}

/// A feed over frames already in memory (tests, tools): every epoch replays them.
pub struct MemoryFeed {
    frames: Vec<Frame>,
    next: usize,
}

impl MemoryFeed {
    /// A feed that plays `frames` once per epoch.
    pub fn new(frames: Vec<Frame>) -> MemoryFeed {
        MemoryFeed { frames, next: 0 }
    }
}

impl FrameFeed for MemoryFeed {
    fn start_epoch(&mut self, _epoch: u32) -> Result<(), String> {
        self.next = 0;
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        let frame = self.frames.get(self.next).cloned().map(|mut f| {
            f.captured = std::time::Instant::now();
            f
        });
        self.next += 1;
        Ok(frame)
    }

    fn counters(&self) -> FeedCounters {
        FeedCounters { decoded: self.next.min(self.frames.len()) as u64, ..Default::default() }
    }
}

/// Opens the feed a pipeline file describes (Moving MNIST or a video input).
pub fn open(
    config: &crate::config::PipelineConfig,
    data_dir: Option<&std::path::Path>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<super::run::Feed> {
    let stream = config.stream.clone().unwrap_or_default();
    match config.data.dataset.as_str() {
        "moving_mnist" => {
            let mnist = crate::data::mnist::Mnist::load(data_dir)?;
            let digits = config.moving_mnist.as_ref().map_or(1, |m| m.digits);
            let holdout = stream.eval_windows + stream.window;
            let feed = super::moving::MovingMnistFeed::new(&mnist, digits, stream.frames_per_epoch, holdout)?;
            let probe = (stream.probe_frames > 0).then(|| feed.probe_frames(stream.probe_frames));
            let twin_frames = stream.frames_per_epoch.min(20_000) as usize;
            let twin = stream.backprop_twin.then(|| feed.train_frames(twin_frames));
            let side = super::moving::SIDE;
            let shape = super::run::FrameShape { width: side, height: side, channels: 1 };
            Ok(super::run::Feed { feed: Box::new(feed), shape, probe, twin })
        }
        "video" => open_video(config, stop),
        other => anyhow::bail!("`{other}` is not a frame stream"),
    }
}

#[cfg(not(feature = "video"))]
fn open_video(
    _config: &crate::config::PipelineConfig,
    _stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<super::run::Feed> {
    anyhow::bail!("this ffstream was built without the `video` feature (FFmpeg); rebuild with default features")
}

#[cfg(feature = "video")]
fn open_video(
    _config: &crate::config::PipelineConfig,
    _stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<super::run::Feed> {
    anyhow::bail!("video input is not wired yet")
}
