//! The settings of a video source: `[source] kind = "video"` of a pipeline file. They name what to
//! open and what frames to make of it, and are checked before anything is opened; the FFmpeg
//! input that reads them is `crate::video::input` (the `video` feature). Kept apart from it so
//! a pipeline file parses, and says what is wrong with it, in any build.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Largest accepted output side: the frames feed dense layers, far smaller than this.
pub const MAX_SIDE: usize = 4096;

/// A video `[source]` value out of range, with what is wrong in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid video config: {0}")]
pub struct BadVideoConfig(pub String);

/// Output pixel layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Color {
    /// One channel, 8-bit luma (FFmpeg GRAY8: the Y plane as is, no range change).
    #[default]
    Gray,
    /// Three interleaved channels (FFmpeg RGB24).
    Rgb,
}

impl Color {
    /// Bytes per pixel.
    pub fn channels(self) -> usize {
        match self {
            Color::Gray => 1,
            Color::Rgb => 3,
        }
    }
}

/// When decoded frames are handed out.
///
/// In TOML: `pacing = "fast"`, `pacing = "native"` or `pacing = { fps = 30.0 }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pacing {
    /// As fast as they decode.
    #[default]
    Fast,
    /// At their timestamps relative to the first frame, so a file plays like a live camera.
    Native,
    /// At a fixed rate in frames per second.
    Fps(f64),
}

/// What the live feed does when its buffer is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Wait for room: the consumer paces the decoder and no frame is lost (files).
    #[default]
    Block,
    /// Evict the oldest buffered frame: the consumer always sees the freshest frames (live).
    DropOldest,
    /// Discard the incoming frame.
    DropNewest,
}

/// Where the video comes from and what frames to make of it: `[source] kind = "video"` of a pipeline file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    /// A file path, a URL (udp://, rtp://, rtsp://, http(s)://, .m3u8, tcp://), a device
    /// (`/dev/video0` with `format = "v4l2"`) or a lavfi graph (with `format = "lavfi"`).
    pub input: String,
    /// Forces an FFmpeg input format or device (`lavfi`, `v4l2`, ...) instead of probing.
    pub format: Option<String>,
    /// Options for opening the input (FFmpeg's AVDictionary): `timeout`, `video_size`,
    /// `framerate`, `rtsp_transport`, ... An option the input does not use is an error. A
    /// network input without `timeout` or `rw_timeout` gets `rw_timeout` = 5 s: a stream whose
    /// sender died then ends (or reconnects) instead of waiting for ever.
    pub options: BTreeMap<String, String>,
    /// Output width in pixels.
    pub width: usize,
    /// Output height in pixels.
    pub height: usize,
    /// Output pixel layout.
    pub color: Color,
    /// `[x, y, w, h]` in decoded pixels, cut out before resampling.
    pub crop: Option<[usize; 4]>,
    /// Keep every `stride`-th decoded frame.
    pub stride: usize,
    /// When frames are handed out.
    pub pacing: Pacing,
    /// What the live feed does when its buffer is full.
    pub drop: DropPolicy,
    /// Frames buffered between the decoder thread and the consumer (live feed).
    pub buffer: usize,
    /// Stop after this many delivered frames.
    pub max_frames: Option<u64>,
    /// At the end of the input, open it again and go on; each pass is a new `Frame::sequence`.
    pub loop_input: bool,
    /// How many times in a row to reopen a stream that fails or ends (0: never).
    pub reconnect: u32,
    /// Wait before the first reopen; it doubles per attempt, up to 5 s.
    pub reconnect_backoff_ms: u64,
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig {
            input: String::new(),
            format: None,
            options: BTreeMap::new(),
            width: 64,
            height: 64,
            color: Color::Gray,
            crop: None,
            stride: 1,
            pacing: Pacing::Fast,
            drop: DropPolicy::Block,
            buffer: 8,
            max_frames: None,
            loop_input: false,
            reconnect: 0,
            reconnect_backoff_ms: 200,
        }
    }
}

impl VideoConfig {
    /// A default config reading `input`.
    pub fn new(input: impl Into<String>) -> Self {
        VideoConfig { input: input.into(), ..VideoConfig::default() }
    }

    /// Checks the values that do not need the input opened.
    pub fn validate(&self) -> Result<(), BadVideoConfig> {
        let bad = |message: String| Err(BadVideoConfig(message));
        if self.input.is_empty() {
            return bad("`input` is empty".into());
        }
        let strings = std::iter::once(&self.input)
            .chain(self.format.iter())
            .chain(self.options.iter().flat_map(|(key, value)| [key, value]));
        if let Some(text) = strings.into_iter().find(|s| s.contains('\0')) {
            return bad(format!("`{}` contains a NUL byte", text.escape_debug()));
        }
        for (name, value) in [("width", self.width), ("height", self.height)] {
            if value == 0 || value > MAX_SIDE {
                return bad(format!("`{name}` is {value}, it must be 1 to {MAX_SIDE}"));
            }
        }
        if self.stride == 0 {
            return bad("`stride` is 0, it must be at least 1".into());
        }
        if self.buffer == 0 {
            return bad("`buffer` is 0, it must be at least 1".into());
        }
        if let Pacing::Fps(fps) = self.pacing {
            if !(fps.is_finite() && fps > 0.0) {
                return bad(format!("`pacing.fps` is {fps}, it must be a positive number"));
            }
        }
        if let Some([x, y, w, h]) = self.crop {
            if w == 0 || h == 0 {
                return bad(format!("`crop` [{x}, {y}, {w}, {h}] is empty"));
            }
        }
        Ok(())
    }

    /// The input format forced by the file (`lavfi`, `v4l2`, ...); None where FFmpeg probes
    /// (unset, or cleared with `--set source.format=""`).
    pub fn forced_format(&self) -> Option<&str> {
        self.format.as_deref().filter(|f| !f.is_empty())
    }

    /// Whether the input is a network stream or a device rather than a file: only these
    /// reconnect when they end (a file that ends is done).
    pub fn is_stream(&self) -> bool {
        let scheme = self.input.split_once("://").map(|(scheme, _)| scheme);
        let networked = scheme.is_some_and(|s| !s.is_empty() && s != "file" && s.chars().all(char::is_alphanumeric));
        networked || self.input.starts_with("/dev/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_out_of_range_values() {
        let ok = VideoConfig::new("clip.mkv");
        assert!(ok.validate().is_ok());
        for bad in [
            VideoConfig { width: 0, ..ok.clone() },
            VideoConfig { height: 5000, ..ok.clone() },
            VideoConfig { stride: 0, ..ok.clone() },
            VideoConfig { buffer: 0, ..ok.clone() },
            VideoConfig { pacing: Pacing::Fps(0.0), ..ok.clone() },
            VideoConfig { crop: Some([0, 0, 0, 4]), ..ok.clone() },
            VideoConfig { input: String::new(), ..ok.clone() },
        ] {
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.starts_with("invalid video config: ") && !err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn streams_are_told_from_files() {
        for (input, stream) in
            [("udp://127.0.0.1:5000", true), ("rtsp://cam/x", true), ("/dev/video0", true), ("clip.mp4", false)]
        {
            assert_eq!(VideoConfig::new(input).is_stream(), stream, "{input}");
        }
        assert!(!VideoConfig::new("file://clip.mp4").is_stream());
    }
}
