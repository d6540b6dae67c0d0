//! Frame feeds: where the video head gets its frames, one epoch at a time.
//!
//! An epoch is the unit a run checkpoints and resumes at. For a file it is one pass over the
//! file (every pass decodes the same frames, so a resumed run sees the same stream); for
//! Moving MNIST a fixed block of sequences (sequence numbers depend only on the epoch); for a
//! live stream a fixed number of frames of whatever arrives (a live stream cannot be replayed).

use serde::Serialize;

use super::Frame;

/// A frame feed ([`FrameFeed`]) could not deliver its frames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// The video input failed for good: it would not open, decode or reconnect.
    #[cfg(feature = "video")]
    #[error(transparent)]
    Video(#[from] crate::video::input::VideoError),
    /// An epoch of the input gave no window to learn from (a clip shorter than a window, or
    /// whose every window is held out): a run on it would finish having learned nothing.
    #[error(
        "epoch {epoch} of the input gave {frames} frame(s) and not one training window of {window} consecutive frames (held-out windows aside): nothing to learn from; use a longer input or a smaller `head.window`"
    )]
    NoWindow {
        /// The 1-based epoch.
        epoch: u32,
        /// Frames the feed gave in it.
        frames: u64,
        /// Frames a window needs.
        window: usize,
    },
}

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
    fn start_epoch(&mut self, epoch: u32) -> Result<(), FeedError>;
    /// The next frame of the current epoch; `None` at its end.
    fn next_frame(&mut self) -> Result<Option<Frame>, FeedError>;
    /// A fixed held-out set of frames for evaluation, if the feed has one of its own (Moving
    /// MNIST: test-split sequences). `None`: the head holds windows out of the stream itself.
    fn holdout(&mut self) -> Result<Option<Vec<Frame>>, FeedError> {
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
    fn start_epoch(&mut self, _epoch: u32) -> Result<(), FeedError> {
        self.next = 0;
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, FeedError> {
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

/// A video input as a frame feed. A file's epoch is one pass (reopened for the next); a live
/// input (network stream, device, lavfi) or a looped file (`loop_input`) runs on, and its epoch
/// is `frames_per_epoch` frames.
#[cfg(feature = "video")]
pub struct VideoFeed {
    config: super::VideoConfig,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: bool,
    frames_per_epoch: u64,
    feed: Option<super::live::LiveFeed>,
    /// Frames read from the current feed (a fresh file feed is used as it is for the next pass).
    read: u64,
    emitted: u64,
    /// Counters of the feeds closed so far (passes over a file, reopened streams).
    closed: FeedCounters,
    decode_seconds: f64,
}

#[cfg(feature = "video")]
impl VideoFeed {
    /// Opens the input now, so that a bad path or URL is reported before the pipeline starts.
    pub fn open(
        config: super::VideoConfig,
        frames_per_epoch: u64,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> anyhow::Result<VideoFeed> {
        // A looped file never ends a pass for the epoch to end on: it is counted like a stream.
        let live = config.is_stream() || config.forced_format().is_some() || config.loop_input;
        let feed = super::live::LiveFeed::start(config.clone(), std::sync::Arc::clone(&stop))?;
        Ok(VideoFeed {
            config,
            stop,
            live,
            frames_per_epoch,
            feed: Some(feed),
            read: 0,
            emitted: 0,
            closed: FeedCounters::default(),
            decode_seconds: 0.0,
        })
    }

    fn close(&mut self) {
        if let Some(feed) = self.feed.take() {
            add_counts(&mut self.closed, &mut self.decode_seconds, &feed);
        }
    }
}

/// Adds a live feed's counts (and its decode seconds) to `total`.
#[cfg(feature = "video")]
fn add_counts(total: &mut FeedCounters, seconds: &mut f64, feed: &super::live::LiveFeed) {
    use std::sync::atomic::Ordering::Relaxed;
    let c = feed.counters();
    total.decoded += c.input.decoded.load(Relaxed);
    total.dropped += c.dropped();
    total.corrupt += c.input.corrupt.load(Relaxed);
    total.reconnects += c.input.reconnects.load(Relaxed);
    *seconds += c.input.decode_seconds();
}

#[cfg(feature = "video")]
impl FrameFeed for VideoFeed {
    fn start_epoch(&mut self, _epoch: u32) -> Result<(), FeedError> {
        self.emitted = 0;
        let reopen = self.feed.is_none() || (!self.live && self.read > 0);
        if reopen {
            self.close();
            let feed = super::live::LiveFeed::start(self.config.clone(), std::sync::Arc::clone(&self.stop))?;
            self.feed = Some(feed);
            self.read = 0;
        }
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, FeedError> {
        if self.live && self.emitted >= self.frames_per_epoch {
            return Ok(None);
        }
        let Some(feed) = &self.feed else { return Ok(None) };
        let received = match feed.recv() {
            Ok(received) => received,
            // A live stream that stops sending (and has spent its reconnects) has ended: the
            // epoch ends with what arrived, and the reason is said once. A file's error stays
            // an error.
            Err(e) if self.live && self.read > 0 => {
                tracing::warn!("the stream ended: {e}");
                self.close();
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        match received {
            Some(frame) => {
                self.read += 1;
                self.emitted += 1;
                Ok(Some(frame))
            }
            None => {
                // The end of a pass (file) or of the stream (live, reconnects spent).
                self.close();
                Ok(None)
            }
        }
    }

    fn counters(&self) -> FeedCounters {
        let mut c = self.closed;
        let mut seconds = self.decode_seconds;
        if let Some(feed) = &self.feed {
            add_counts(&mut c, &mut seconds, feed);
        }
        c.decode_fps = c.decoded as f64 / seconds.max(1e-9);
        c
    }
}

/// The shape of the frames a feed delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameShape {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// 1 or 3.
    pub channels: usize,
}

impl FrameShape {
    /// Values per frame.
    pub fn len(&self) -> usize {
        self.width * self.height * self.channels
    }

    /// True for a zero-sized frame.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A feed ready to play, with what the run needs to know about it.
pub struct Feed {
    /// The frames.
    pub feed: Box<dyn FrameFeed>,
    /// Their shape.
    pub shape: FrameShape,
    /// Labelled frames for the final probes (Moving MNIST), if any.
    pub probe: Option<Vec<Frame>>,
    /// Labelled training frames for the backprop twin, if asked for.
    pub twin: Option<Vec<Frame>>,
    /// The splits of a still-image source ([`super::still`]), for the frozen softmax readout
    /// at the end; `None` for a video or Moving MNIST.
    pub splits: Option<std::sync::Arc<crate::data::Labelled>>,
}
