//! Video in: frames from files, devices and network streams, and what the pipeline makes of them.
//!
//! - [`input`]: FFmpeg demuxing and decoding (through `ffmpeg-next`) into small grey or RGB
//!   frames at a chosen size, with crop, stride, pacing and timestamps.
//! - [`live`]: the decoder on its own thread with a bounded frame buffer and a drop policy, so
//!   a live stream faster than the pipeline loses counted frames instead of building up lag.
//! - [`feed`]: frame feeds by epoch (files, Moving MNIST, live streams, memory).
//! - [`head`]: windows of frames as positive rows, and their negatives ([`negatives`]).
//! - [`sink`]: goodness separation per stage and live probes while streaming; [`probe`]: the
//!   linear probes on frozen stages, against a random-init net; [`softmax_probe`]: the softmax
//!   readout on frozen stages of a still-image stream ([`still`]: a labelled dataset as frames).

#[cfg(all(feature = "video", unix))]
mod fifo;
#[cfg(feature = "video")]
pub mod input;
#[cfg(feature = "video")]
pub mod live;

pub mod feed;
pub mod head;
pub mod moving;
pub mod negatives;
pub mod open;
pub mod probe;
pub mod sink;
pub mod softmax_probe;
pub mod still;

use std::time::Instant;

/// One decoded (or generated) frame, already at the pipeline's size.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Position in the source's decoded stream, counted from 0 before any stride.
    pub index: u64,
    /// Presentation time in seconds from the start of the stream (None when the source has none).
    pub pts: Option<f64>,
    /// When the frame left the decoder: the origin of end-to-end latency.
    pub captured: Instant,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// `height * width * channels` bytes, row-major, channels interleaved.
    pub pixels: Vec<u8>,
    /// Which clip or sequence the frame belongs to: consecutive frames with different values
    /// are across a cut.
    pub sequence: u64,
    /// Labels carried with the frame (Moving MNIST digit identities); empty for real video.
    pub labels: Vec<u8>,
}

pub use crate::source::video::VideoConfig;
