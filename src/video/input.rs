//! FFmpeg input: opens a file, URL or device and turns its best video stream into [`Frame`]s.
//!
//! One [`VideoInput`] owns one demuxer, one decoder and one pixel converter, all on the calling
//! thread; [`super::live::LiveFeed`] moves it onto its own thread. Per frame:
//!
//! ```text
//!   av_read_frame -> send_packet/receive_frame -> stride -> GRAY8/RGB24 at the decoded size
//!     -> crop + area resample (our code) -> pacing -> Frame
//! ```
//!
//! Conversion is done in two steps on purpose. First the pixel format changes at the decoded
//! size: swscale to RGB24, or for grey a 256-entry table over the luma plane that holds exactly
//! what swscale's GRAY8 gives (TV-range luma widened to full range, as `ffmpeg -pix_fmt gray`
//! does) without the cost of swscale's general path. Then the crop and the resampling are our
//! own box filter. That keeps crop a plain sub-rectangle (swscale cannot crop chroma-subsampled
//! frames at odd offsets), keeps the resampling independent of the FFmpeg version, and leaves
//! values untouched whenever the output size equals the cropped size (a lossless grey file
//! decodes byte-exact). The cost is one full-size format change per kept frame for RGB.
//!
//! Nothing here panics on bad input: every failure is a [`VideoError`] naming the input, and
//! corrupt packets or frames are skipped and counted in [`InputCounters::corrupt`].

use std::ffi::CString;
use std::fmt;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ffmpeg::format::context::Input;
use ffmpeg::software::scaling;
use ffmpeg::util::format::Pixel;
use ffmpeg::{codec, decoder, frame, media, Packet};
use ffmpeg_next as ffmpeg;

use super::Frame;

/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest single sleep, so a stop request is seen within this time.
const STOP_POLL: Duration = Duration::from_millis(20);
/// A `native` frame due this long after the previous one is treated as a timestamp jump.
const MAX_PTS_GAP: f64 = 10.0;

pub use crate::source::video::{BadVideoConfig, Color, DropPolicy, Pacing, VideoConfig};

/// The FFmpeg pixel format of an output layout.
fn pixel_of(color: Color) -> Pixel {
    match color {
        Color::Gray => Pixel::GRAY8,
        Color::Rgb => Pixel::RGB24,
    }
}

/// Why video could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoError {
    /// FFmpeg could not open the input.
    #[error("cannot open `{input}`: {reason}")]
    Open {
        /// The configured input.
        input: String,
        /// FFmpeg's reason.
        reason: String,
    },
    /// The input opened but holds no video.
    #[error("`{input}` has no video stream")]
    NoVideoStream {
        /// The configured input.
        input: String,
    },
    /// Reading or decoding failed for good.
    #[error("cannot decode `{input}`: {reason}")]
    Decode {
        /// The configured input.
        input: String,
        /// What failed.
        reason: String,
    },
    /// `format` names no FFmpeg demuxer or device.
    #[error("cannot open `{input}`: FFmpeg has no input format or device named `{name}`")]
    UnknownFormat {
        /// The configured input.
        input: String,
        /// The configured format.
        name: String,
    },
    /// The crop rectangle does not fit the decoded frames.
    #[error("crop [{x}, {y}, {w}, {h}] does not fit the {width}x{height} frames of `{input}`")]
    BadCrop {
        /// The configured input.
        input: String,
        /// Left edge.
        x: usize,
        /// Top edge.
        y: usize,
        /// Crop width.
        w: usize,
        /// Crop height.
        h: usize,
        /// Decoded width.
        width: usize,
        /// Decoded height.
        height: usize,
    },
    /// The stream failed and every reconnect attempt failed too.
    #[error("lost `{input}` and could not reconnect (attempts: {attempts}): {reason}")]
    Disconnected {
        /// The configured input.
        input: String,
        /// Reopen attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// A config value is out of range.
    #[error(transparent)]
    BadConfig(#[from] BadVideoConfig),
}

/// What the input has done so far. Written by the decoding thread, read by anyone.
#[derive(Debug, Default)]
pub struct InputCounters {
    /// Good frames out of the decoder (before stride).
    pub decoded: AtomicU64,
    /// Frames returned by [`VideoInput::next_frame`].
    pub delivered: AtomicU64,
    /// Decoded frames skipped by `stride`.
    pub strided: AtomicU64,
    /// Damage seen: packets the demuxer or decoder rejected and frames flagged corrupt (all
    /// skipped), plus packets the demuxer flagged corrupt (still decoded: the decoder conceals the damage).
    pub corrupt: AtomicU64,
    /// Reopen attempts after a failure or an unexpected end, successful or not.
    pub reconnects: AtomicU64,
    /// Nanoseconds spent in the decoder and the converter (not waiting for input or pacing).
    pub decode_nanos: AtomicU64,
}

impl InputCounters {
    /// Seconds spent decoding and converting.
    pub fn decode_seconds(&self) -> f64 {
        self.decode_nanos.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// Decoded frames per second of decoding time: what the decoder could sustain (0 before
    /// the first frame).
    pub fn decode_fps(&self) -> f64 {
        let seconds = self.decode_seconds();
        if seconds > 0.0 {
            self.decoded.load(Ordering::Relaxed) as f64 / seconds
        } else {
            0.0
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the opened input says about its video stream.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceInfo {
    /// Decoded width (0 until known: a live stream can open before its first frame).
    pub width: usize,
    /// Decoded height (0 until known).
    pub height: usize,
    /// Frame rate from the stream's average rate, else its base rate; None if neither is set.
    pub fps: Option<f64>,
    /// FFmpeg's decoder name (`h264`, `ffv1`, `rawvideo`, ...).
    pub codec: String,
}

/// A stop request: any of the flags set.
#[derive(Clone, Default)]
pub(crate) struct Stop(Vec<Arc<AtomicBool>>);

impl Stop {
    pub(crate) fn new(flags: Vec<Arc<AtomicBool>>) -> Self {
        Stop(flags)
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.iter().any(|flag| flag.load(Ordering::Relaxed))
    }

    /// Sleeps until `deadline`; false if stopped first.
    fn sleep_until(&self, deadline: Instant) -> bool {
        loop {
            if self.is_set() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            std::thread::sleep((deadline - now).min(STOP_POLL));
        }
    }
}

/// Frames from a file, URL or device, decoded and converted on the calling thread.
pub struct VideoInput {
    config: VideoConfig,
    stop: Stop,
    counters: Arc<InputCounters>,
    info: SourceInfo,
    session: Option<Session>,
    converter: Converter,
    pacer: Pacer,
    /// The next decoded frame's index (before stride, across passes and reconnects).
    next_index: u64,
    /// Loop passes plus successful reconnects.
    sequence: u64,
    /// Frames returned so far.
    delivered: u64,
    /// Frames decoded in the current pass (a pass with none ends a loop instead of spinning).
    pass_frames: u64,
    /// Reconnect attempts since the last good frame.
    attempts: u32,
    ended: bool,
}

impl fmt::Debug for VideoInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VideoInput").field("input", &self.config.input).field("info", &self.info).finish()
    }
}

impl VideoInput {
    /// Opens `config.input` and its best video stream.
    pub fn open(config: &VideoConfig) -> Result<VideoInput, VideoError> {
        Self::open_with_stop(config, Arc::new(AtomicBool::new(false)))
    }

    /// Like [`VideoInput::open`]; once `stop` is set, blocking reads are interrupted, pacing
    /// stops waiting and [`VideoInput::next_frame`] returns `Ok(None)`.
    pub fn open_with_stop(config: &VideoConfig, stop: Arc<AtomicBool>) -> Result<VideoInput, VideoError> {
        Self::open_stoppable(config, Stop::new(vec![stop]))
    }

    pub(crate) fn open_stoppable(config: &VideoConfig, stop: Stop) -> Result<VideoInput, VideoError> {
        config.validate()?;
        init()?;
        let session = Session::open(config, &stop)?;
        let info = session.info.clone();
        Ok(VideoInput {
            config: config.clone(),
            stop,
            counters: Arc::new(InputCounters::default()),
            info,
            session: Some(session),
            converter: Converter::new(config),
            pacer: Pacer::default(),
            next_index: 0,
            sequence: 0,
            delivered: 0,
            pass_frames: 0,
            attempts: 0,
            ended: false,
        })
    }

    /// The counters, shared: they keep counting while this input runs.
    pub fn counters(&self) -> Arc<InputCounters> {
        Arc::clone(&self.counters)
    }

    /// Size, rate and codec of the video stream (size updated from the first decoded frame).
    pub fn source_info(&self) -> SourceInfo {
        self.info.clone()
    }

    /// The config this input was opened with.
    pub fn config(&self) -> &VideoConfig {
        &self.config
    }

    /// The next frame; `Ok(None)` at the end of the stream, after `max_frames`, or once stopped.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, VideoError> {
        loop {
            if self.ended || self.stop.is_set() {
                return Ok(None);
            }
            if self.config.max_frames.is_some_and(|max| self.delivered >= max) {
                self.ended = true;
                return Ok(None);
            }
            let Some(session) = self.session.as_mut() else {
                // Only reached after a failed loop reopen left no session: nothing more to read.
                self.ended = true;
                return Ok(None);
            };
            match session.next_raw(&self.counters) {
                Raw::Frame(raw) => {
                    if let Some(frame) = self.accept(raw)? {
                        return Ok(Some(frame));
                    }
                }
                Raw::End => self.at_end()?,
                Raw::Stopped => return Ok(None),
                Raw::Failed(reason) => {
                    if self.config.reconnect == 0 {
                        self.ended = true;
                        return Err(VideoError::Decode { input: self.config.input.clone(), reason });
                    }
                    self.reconnect(reason)?;
                }
            }
        }
    }

    /// Numbers, strides, converts and paces one decoded frame; None if stride skips it.
    fn accept(&mut self, raw: RawFrame) -> Result<Option<Frame>, VideoError> {
        let index = self.next_index;
        self.next_index += 1;
        self.pass_frames += 1;
        self.attempts = 0;
        InputCounters::add(&self.counters.decoded, 1);
        if !index.is_multiple_of(self.config.stride as u64) {
            InputCounters::add(&self.counters.strided, 1);
            return Ok(None);
        }
        let started = Instant::now();
        let converted = self.converter.convert(&raw.frame, &self.config.input);
        InputCounters::add(&self.counters.decode_nanos, started.elapsed().as_nanos() as u64);
        let pixels = converted.inspect_err(|_| self.ended = true)?;
        if self.info.width == 0 {
            self.info.width = raw.frame.width() as usize;
            self.info.height = raw.frame.height() as usize;
        }
        if !self.pacer.wait(self.config.pacing, raw.pts, self.info.fps, &self.stop) {
            return Ok(None);
        }
        self.delivered += 1;
        InputCounters::add(&self.counters.delivered, 1);
        Ok(Some(Frame {
            index,
            pts: raw.pts,
            // After pacing: a paced file's frame "exists" when a camera would have sent it.
            captured: Instant::now(),
            width: self.config.width,
            height: self.config.height,
            channels: self.config.color.channels(),
            pixels,
            sequence: self.sequence,
            labels: Vec::new(),
        }))
    }

    /// The demuxer and decoder are drained: loop, reconnect or end.
    fn at_end(&mut self) -> Result<(), VideoError> {
        if self.config.loop_input && self.pass_frames > 0 {
            // Reopen rather than seek: correct for every container (seeking to the start of
            // MPEG-TS or of a file with a non-zero start time is not), at one open per pass.
            self.session = None;
            self.session = Some(Session::open(&self.config, &self.stop)?);
            self.sequence += 1;
            self.pass_frames = 0;
            self.pacer.next_pass(self.info.fps);
            return Ok(());
        }
        if self.config.is_stream() && self.config.reconnect > 0 {
            return self.reconnect("the stream ended".into());
        }
        self.ended = true;
        Ok(())
    }

    /// Reopens the input with backoff until it opens or `reconnect` attempts in a row failed.
    fn reconnect(&mut self, mut reason: String) -> Result<(), VideoError> {
        self.session = None;
        loop {
            if self.attempts >= self.config.reconnect {
                self.ended = true;
                return Err(VideoError::Disconnected {
                    input: self.config.input.clone(),
                    attempts: self.attempts,
                    reason,
                });
            }
            self.attempts += 1;
            InputCounters::add(&self.counters.reconnects, 1);
            let doublings = (self.attempts - 1).min(16);
            let backoff = Duration::from_millis(self.config.reconnect_backoff_ms.saturating_mul(1 << doublings));
            if !self.stop.sleep_until(Instant::now() + backoff.min(MAX_BACKOFF)) {
                return Ok(());
            }
            match Session::open(&self.config, &self.stop) {
                Ok(session) => {
                    self.session = Some(session);
                    self.sequence += 1;
                    self.pass_frames = 0;
                    // Real time went on while the stream was away: restart the schedule.
                    self.pacer = Pacer::default();
                    return Ok(());
                }
                Err(VideoError::Open { reason: why, .. }) => reason = why,
                Err(err) => reason = err.to_string(),
            }
        }
    }
}

/// Registers FFmpeg's formats and devices and quiets its log, once per process.
fn init() -> Result<(), VideoError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = INIT.get_or_init(|| {
        ffmpeg::init().map_err(|err| err.to_string())?;
        ffmpeg::device::register_all();
        // Warnings such as "non-existing PPS" while joining a live stream are expected
        // (STACK.md §2), and FFmpeg's own error lines would repeat what our one-sentence errors
        // already say (with FFmpeg's reason) and what the corrupt counter counts.
        // FFSTREAM_FFMPEG_LOG=1 shows FFmpeg's errors again, for diagnosing a stream.
        let level = if std::env::var_os("FFSTREAM_FFMPEG_LOG").is_some() {
            ffmpeg::util::log::Level::Error
        } else {
            ffmpeg::util::log::Level::Fatal
        };
        ffmpeg::util::log::set_level(level);
        Ok(())
    });
    result.clone().map_err(|reason| VideoError::Open { input: "FFmpeg".into(), reason })
}

/// One open of the input: demuxer, decoder and timestamp origin.
struct Session {
    input: Input,
    decoder: decoder::Video,
    stream: usize,
    /// Seconds per timestamp tick (None: the stream has no usable time base, so no pts).
    time_base: Option<f64>,
    /// Timestamp of the first decoded frame: pts are seconds from it.
    first_ts: Option<i64>,
    /// The decoder has been sent end of stream and is being drained.
    draining: bool,
    info: SourceInfo,
}

struct RawFrame {
    frame: frame::Video,
    pts: Option<f64>,
}

enum Raw {
    Frame(RawFrame),
    /// Clean end: everything decoded.
    End,
    /// Interrupted by a stop request.
    Stopped,
    /// The input failed (read error).
    Failed(String),
}

impl Session {
    fn open(config: &VideoConfig, stop: &Stop) -> Result<Session, VideoError> {
        let input = open_input(config, stop)?;
        let no_video = || VideoError::NoVideoStream { input: config.input.clone() };
        let stream = input.streams().best(media::Type::Video).ok_or_else(no_video)?;
        let open_failed = |err: ffmpeg::Error| VideoError::Open {
            input: config.input.clone(),
            reason: format!("cannot start the {} decoder: {err}", stream.parameters().id().name()),
        };
        let mut context = codec::context::Context::from_parameters(stream.parameters()).map_err(open_failed)?;
        let time_base = stream.time_base();
        // SAFETY: a plain field of the context we own; decoders use it to interpret packet
        // timestamps (best_effort_timestamp stays in this time base).
        unsafe { (*context.as_mut_ptr()).pkt_timebase = time_base.into() };
        let decoder = context.decoder().video().map_err(open_failed)?;
        let rate = |r: ffmpeg::Rational| {
            (r.numerator() > 0 && r.denominator() > 0).then(|| f64::from(r.numerator()) / f64::from(r.denominator()))
        };
        let info = SourceInfo {
            width: decoder.width() as usize,
            height: decoder.height() as usize,
            fps: rate(stream.avg_frame_rate()).or_else(|| rate(stream.rate())),
            codec: decoder.id().name().to_string(),
        };
        let stream = stream.index();
        let time_base = rate(time_base);
        Ok(Session { input, decoder, stream, time_base, first_ts: None, draining: false, info })
    }

    /// The next good decoded frame, or why there is none.
    fn next_raw(&mut self, counters: &InputCounters) -> Raw {
        let mut frame = frame::Video::empty();
        loop {
            // Drain the decoder before feeding it, so send_packet never meets a full decoder.
            let started = Instant::now();
            let received = self.decoder.receive_frame(&mut frame);
            InputCounters::add(&counters.decode_nanos, started.elapsed().as_nanos() as u64);
            match received {
                Ok(()) => {
                    // A live stream can hand out frames before it knows their format; swscale
                    // would abort the process on them (STACK.md §2).
                    let unknown = frame.format() == Pixel::None || frame.width() == 0 || frame.height() == 0;
                    if unknown || frame.is_corrupt() || frame.has_decode_errors() {
                        InputCounters::add(&counters.corrupt, 1);
                        continue;
                    }
                    let ts = frame.timestamp().or_else(|| frame.pts());
                    let pts = ts.zip(self.time_base).map(|(ts, time_base)| {
                        let first = *self.first_ts.get_or_insert(ts);
                        (ts - first) as f64 * time_base
                    });
                    return Raw::Frame(RawFrame { frame, pts });
                }
                Err(ffmpeg::Error::Eof) => return Raw::End,
                Err(ffmpeg::Error::Other { errno: ffmpeg::error::EAGAIN }) if !self.draining => {}
                // A draining decoder never asks for input; should one do so, stop here.
                Err(ffmpeg::Error::Other { errno: ffmpeg::error::EAGAIN }) => return Raw::End,
                Err(_) => {
                    // A frame the decoder gave up on (frame threading reports errors here).
                    InputCounters::add(&counters.corrupt, 1);
                    // Feeding more input rather than asking again cannot spin; a draining
                    // decoder has no input left and ends with EOF.
                    if self.draining {
                        continue;
                    }
                }
            }
            // A fresh packet each read: av_read_frame does not unref the one it is given.
            let mut packet = Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) => {
                    if packet.stream() != self.stream {
                        continue;
                    }
                    if packet.is_corrupt() {
                        // The demuxer saw damage (MPEG-TS continuity errors, ...). The packet is
                        // still decoded: its intact slices and the decoder's concealment lose
                        // less than dropping the whole frame and every frame predicted from it.
                        InputCounters::add(&counters.corrupt, 1);
                    }
                    let started = Instant::now();
                    let sent = self.decoder.send_packet(&packet);
                    InputCounters::add(&counters.decode_nanos, started.elapsed().as_nanos() as u64);
                    match sent {
                        Ok(()) | Err(ffmpeg::Error::Eof) => {}
                        // Invalid bitstream, missing reference, ...: skip the packet.
                        Err(_) => InputCounters::add(&counters.corrupt, 1),
                    }
                }
                Err(ffmpeg::Error::Eof) => {
                    // Flush: decoders hold frames back (B-frames, frame threads).
                    self.draining = true;
                    if self.decoder.send_eof().is_err() {
                        return Raw::End;
                    }
                }
                // The demuxer resyncs past bad data; the bad bytes cost one skipped packet.
                Err(ffmpeg::Error::InvalidData) => InputCounters::add(&counters.corrupt, 1),
                // Non-blocking devices have no frame ready yet.
                Err(ffmpeg::Error::Other { errno: ffmpeg::error::EAGAIN }) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(ffmpeg::Error::Exit) => return Raw::Stopped,
                Err(err) => return Raw::Failed(format!("reading failed ({err})")),
            }
        }
    }
}

/// `avformat_open_input` with a forced format, options and a stop callback, which
/// ffmpeg-next does not offer together.
/// Without a read timeout FFmpeg waits for ever on a network stream whose sender died (UDP has
/// no end), so such a stream never ends and never reconnects.
const NETWORK_TIMEOUT_MICROS: u64 = 5_000_000;

/// Whether the input is a network URL (not a file, a device or a lavfi graph).
fn networked(config: &VideoConfig) -> bool {
    config.input.contains("://") && config.is_stream() && config.forced_format().is_none()
}

/// The option that bounds a network input's reads: the socket protocols' own `timeout` (FFmpeg
/// 5.1's UDP ignores the common `rw_timeout`, measured with ffprobe; RTSP's demuxer opens its
/// own sockets), elsewhere (HTTP, HLS, RTMP) the common `rw_timeout`. None where the input sets
/// one of them itself (in `options` or the URL's query) or is not networked.
fn timeout_option(config: &VideoConfig) -> Option<&'static str> {
    let set = |key: &str| config.options.contains_key(key) || config.input.contains(&format!("{key}="));
    if !networked(config) || set("timeout") || set("rw_timeout") {
        return None;
    }
    let scheme = config.input.split_once("://").map_or("", |(scheme, _)| scheme);
    Some(if ["udp", "rtp", "rtsp", "rtsps", "srt", "tcp"].contains(&scheme) { "timeout" } else { "rw_timeout" })
}

/// FFmpeg's reason for a failed open, said plainly where a network input's timeout ran out
/// (FFmpeg says only "Input/output error" or "Connection timed out").
fn open_reason(code: i32, networked: bool) -> String {
    let reason = ffmpeg::Error::from(code).to_string();
    let timed_out =
        code == ffmpeg::ffi::AVERROR(ffmpeg::ffi::EIO) || code == ffmpeg::ffi::AVERROR(ffmpeg::ffi::ETIMEDOUT);
    if networked && timed_out {
        format!("nothing arrived before the read timeout ran out ({reason}); is the sender running? The `timeout` or `rw_timeout` option sets the wait in microseconds")
    } else {
        reason
    }
}

fn open_input(config: &VideoConfig, stop: &Stop) -> Result<Input, VideoError> {
    let open_error = |reason: String| VideoError::Open { input: config.input.clone(), reason };
    let cstring =
        |s: &str| CString::new(s).map_err(|_| open_error(format!("`{}` contains a NUL byte", s.escape_debug())));
    let url = cstring(&config.input)?;
    // An empty name means "let FFmpeg probe", so a pipeline file's format can be cleared with
    // `--set source.format=""`.
    let format = match config.forced_format() {
        None => ptr::null(),
        Some(name) => {
            let cname = cstring(name)?;
            // SAFETY: a NUL-terminated string; the result is a static table entry or null.
            let found = unsafe { ffmpeg::ffi::av_find_input_format(cname.as_ptr()) };
            if found.is_null() {
                return Err(VideoError::UnknownFormat { input: config.input.clone(), name: name.to_string() });
            }
            found
        }
    };
    let mut options = ffmpeg::Dictionary::new();
    for (key, value) in &config.options {
        cstring(key)?;
        cstring(value)?;
        options.set(key, value);
    }
    if let Some(key) = timeout_option(config) {
        options.set(key, &NETWORK_TIMEOUT_MICROS.to_string());
    }
    // Held until FFmpeg has its own reader of the FIFO (see `fifo`).
    #[cfg(unix)]
    let _fifo_reader = super::fifo::wait_for_writer(&config.input, &|| stop.is_set()).map_err(open_error)?;
    let stop = stop.clone();
    let interrupt = ffmpeg::util::interrupt::new(Box::new(move || stop.is_set()));
    // SAFETY: the FFmpeg calls below follow avformat_open_input's contract: `ps` is a fresh
    // context (freed by FFmpeg on failure), `dict` is ours before and after the call, and on
    // success the context goes into an `Input`, which closes it and frees the callback.
    unsafe {
        let mut ps = ffmpeg::ffi::avformat_alloc_context();
        if ps.is_null() {
            return Err(open_error("out of memory".into()));
        }
        (*ps).interrupt_callback = interrupt.interrupt;
        let mut dict = options.disown();
        let opened = ffmpeg::ffi::avformat_open_input(&mut ps, url.as_ptr(), format, &mut dict);
        let unused = ffmpeg::Dictionary::own(dict);
        if opened < 0 {
            return Err(open_error(open_reason(opened, networked(config))));
        }
        let input = Input::wrap_with_interrupt(ps, interrupt.guard);
        if let Some((key, _)) = unused.iter().next() {
            return Err(open_error(format!("option `{key}` is not used by this input")));
        }
        let found = ffmpeg::ffi::avformat_find_stream_info(ps, ptr::null_mut());
        if found < 0 {
            return Err(open_error(open_reason(found, networked(config))));
        }
        Ok(input)
    }
}

/// The swscale context. It has no thread affinity; one owner uses it at a time.
struct Scaler(scaling::Context);

// SAFETY: an SwsContext is plain heap state with no thread-local parts; `Scaler` is owned by
// one `VideoInput` and only used through `&mut`.
unsafe impl Send for Scaler {}

/// How a decoded frame becomes 8-bit output pixels at its own size.
enum Path {
    /// Grey from an 8-bit luma plane through a table: the value swscale gives for each luma
    /// value (it widens TV-range luma to full-range GRAY8), without swscale's general path,
    /// which costs more than decoding for that range change (0.7 ms at 640x360 here).
    Luma(Box<[u8; 256]>),
    /// swscale to GRAY8/RGB24.
    Scale(Scaler),
}

/// Decoded frame -> output pixels: the pixel format at the decoded size, then crop and area
/// resampling.
struct Converter {
    color: Color,
    crop: Option<[usize; 4]>,
    width: usize,
    height: usize,
    /// Format and size the path was made for.
    source: Option<(Pixel, u32, u32)>,
    path: Option<Path>,
    converted: frame::Video,
    resampler: Option<Resampler>,
}

impl Converter {
    fn new(config: &VideoConfig) -> Self {
        Converter {
            color: config.color,
            crop: config.crop,
            width: config.width,
            height: config.height,
            source: None,
            path: None,
            converted: frame::Video::empty(),
            resampler: None,
        }
    }

    /// `source` has a pixel format and a size (see `Session::next_raw`).
    fn convert(&mut self, source: &frame::Video, input: &str) -> Result<Vec<u8>, VideoError> {
        let (format, width, height) = (source.format(), source.width(), source.height());
        if self.source != Some((format, width, height)) {
            // Made from the first frame and again whenever the stream changes format or size.
            self.prepare(format, width, height, input)?;
        }
        let failed = |what: &str| VideoError::Decode {
            input: input.into(),
            reason: format!("cannot convert {format:?} {width}x{height} frames: {what}"),
        };
        let (Some(path), Some(resampler)) = (self.path.as_mut(), self.resampler.as_mut()) else {
            return Err(failed("no converter"));
        };
        match path {
            // SAFETY: reads one field of the frame we hold.
            Path::Luma(table) if unsafe { (*source.as_ptr()).linesize[0] } > 0 => {
                Ok(resampler.run(source.data(0), source.stride(0), |v| table[usize::from(v)]))
            }
            // Bottom-up rows (negative line size): leave them to swscale.
            Path::Luma(_) => {
                let mut scaler = scaler(format, width, height, self.color, input)?;
                scaler.0.run(source, &mut self.converted).map_err(|err| failed(&err.to_string()))?;
                *path = Path::Scale(scaler);
                Ok(resampler.run(self.converted.data(0), self.converted.stride(0), |v| v))
            }
            Path::Scale(scaler) => {
                scaler.0.run(source, &mut self.converted).map_err(|err| failed(&err.to_string()))?;
                Ok(resampler.run(self.converted.data(0), self.converted.stride(0), |v| v))
            }
        }
    }

    fn prepare(&mut self, format: Pixel, width: u32, height: u32, input: &str) -> Result<(), VideoError> {
        self.source = None;
        let (w, h) = (width as usize, height as usize);
        let [cx, cy, cw, ch] = self.crop.unwrap_or([0, 0, w, h]);
        if cx.checked_add(cw).is_none_or(|right| right > w) || cy.checked_add(ch).is_none_or(|bottom| bottom > h) {
            return Err(VideoError::BadCrop { input: input.into(), x: cx, y: cy, w: cw, h: ch, width: w, height: h });
        }
        let table = (self.color == Color::Gray).then(|| luma_table(format)).flatten();
        self.path = Some(match table {
            Some(table) => Path::Luma(table),
            None => Path::Scale(scaler(format, width, height, self.color, input)?),
        });
        self.converted = frame::Video::empty();
        self.resampler = Some(Resampler::new([cx, cy, cw, ch], self.width, self.height, self.color.channels()));
        self.source = Some((format, width, height));
        Ok(())
    }
}

/// swscale from `format` to the output color at the same size (AREA: the flags matter only
/// for chroma here).
fn scaler(format: Pixel, width: u32, height: u32, color: Color, input: &str) -> Result<Scaler, VideoError> {
    scaling::Context::get(format, width, height, pixel_of(color), width, height, scaling::Flags::AREA)
        .map(Scaler)
        .map_err(|err| VideoError::Decode {
            input: input.into(),
            reason: format!("cannot convert {format:?} {width}x{height} frames: {err}"),
        })
}

/// For formats whose plane 0 is 8-bit luma, one byte per pixel: what swscale makes of each
/// luma value in GRAY8, measured by converting a 256-value ramp once. (At the same size, an
/// 8-bit source is not dithered and each output depends on its own luma only.)
fn luma_table(format: Pixel) -> Option<Box<[u8; 256]>> {
    const LUMA_FIRST: [Pixel; 14] = [
        Pixel::GRAY8,
        Pixel::YUV420P,
        Pixel::YUVJ420P,
        Pixel::YUV422P,
        Pixel::YUVJ422P,
        Pixel::YUV444P,
        Pixel::YUVJ444P,
        Pixel::YUV440P,
        Pixel::YUVJ440P,
        Pixel::YUV411P,
        Pixel::YUV410P,
        Pixel::NV12,
        Pixel::NV21,
        Pixel::YUVA420P,
    ];
    if !LUMA_FIRST.contains(&format) {
        return None;
    }
    let mut ramp = frame::Video::new(format, 256, 4);
    for plane in 0..ramp.planes() {
        let stride = ramp.stride(plane);
        let data = ramp.data_mut(plane);
        if plane == 0 {
            for row in data.chunks_mut(stride) {
                row.iter_mut().take(256).zip(0..=255u8).for_each(|(byte, value)| *byte = value);
            }
        } else {
            // Neutral chroma (and opaque-ish alpha): GRAY8 output ignores them.
            data.fill(128);
        }
    }
    let mut gray = frame::Video::empty();
    let mut scaler = scaling::Context::get(format, 256, 4, Pixel::GRAY8, 256, 4, scaling::Flags::AREA).ok()?;
    scaler.run(&ramp, &mut gray).ok()?;
    let table: [u8; 256] = gray.data(0).get(..256)?.try_into().ok()?;
    Some(Box::new(table))
}

/// Crop plus box-filter (area) resampling of interleaved 8-bit pixels, separable.
struct Resampler {
    crop: [usize; 4],
    width: usize,
    height: usize,
    channels: usize,
    /// Per output column: first source column (in the crop) and the weights from there.
    columns: Vec<(usize, Vec<f32>)>,
    /// Per output row: first source row (in the crop) and the weights from there.
    rows: Vec<(usize, Vec<f32>)>,
    /// One output row resampled vertically only: (crop w * channels).
    scratch: Vec<f32>,
}

impl Resampler {
    fn new(crop: [usize; 4], width: usize, height: usize, channels: usize) -> Self {
        Resampler {
            crop,
            width,
            height,
            channels,
            columns: area_taps(crop[2], width),
            rows: area_taps(crop[3], height),
            scratch: Vec::new(),
        }
    }

    /// `data`: a frame whose rows are `stride` bytes apart (rows are padded); `map` is applied
    /// to every byte read.
    fn run(&mut self, data: &[u8], stride: usize, map: impl Fn(u8) -> u8) -> Vec<u8> {
        let [x, y, w, h] = self.crop;
        let c = self.channels;
        let row = |r: usize| &data[(y + r) * stride + x * c..(y + r) * stride + (x + w) * c];
        if (w, h) == (self.width, self.height) {
            // Same size: a plain copy keeps every value exact.
            return (0..h).flat_map(row).map(|&v| map(v)).collect();
        }
        // Vertical first: contiguous rows (vectorizes), then the few output rows horizontally.
        let (line_in, line_out) = (w * c, self.width * c);
        let mut pixels = vec![0u8; self.height * line_out];
        for (out, (first, weights)) in pixels.chunks_exact_mut(line_out).zip(&self.rows) {
            self.scratch.clear();
            self.scratch.resize(line_in, 0.0);
            for (t, &weight) in weights.iter().enumerate() {
                for (acc, &v) in self.scratch.iter_mut().zip(row(first + t)) {
                    *acc += weight * f32::from(map(v));
                }
            }
            for (pixel, (first, weights)) in out.chunks_exact_mut(c).zip(&self.columns) {
                let taps = &self.scratch[first * c..(first + weights.len()) * c];
                for (k, channel) in pixel.iter_mut().enumerate() {
                    let sum: f32 = taps.iter().skip(k).step_by(c).zip(weights).map(|(v, w)| v * w).sum();
                    *channel = (sum + 0.5).clamp(0.0, 255.0) as u8;
                }
            }
        }
        pixels
    }
}

/// Area weights along one axis: output `i` averages source span `[i, i+1) * n_src / n_dst`,
/// each source pixel weighted by its overlap (so weights sum to 1; upsampling blends at most
/// two neighbours).
fn area_taps(n_src: usize, n_dst: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = n_src as f64 / n_dst as f64;
    (0..n_dst)
        .map(|i| {
            let lo = i as f64 * scale;
            let hi = ((i + 1) as f64 * scale).min(n_src as f64);
            let first = (lo.floor() as usize).min(n_src - 1);
            let last = (hi.ceil() as usize).clamp(first + 1, n_src);
            let weights = (first..last)
                .map(|j| ((hi.min(j as f64 + 1.0) - lo.max(j as f64)).max(0.0) / (hi - lo)) as f32)
                .collect();
            (first, weights)
        })
        .collect()
}

/// When to hand out the next frame.
#[derive(Debug, Default)]
struct Pacer {
    /// Wall time of schedule time 0.
    origin: Option<Instant>,
    /// Frames paced since `origin` (fixed rate).
    count: u64,
    /// Schedule time added to this pass's pts (native, looping).
    offset: f64,
    /// Schedule time of the last frame (native).
    last_due: f64,
}

impl Pacer {
    /// Waits until the frame is due; false if stopped first.
    fn wait(&mut self, pacing: Pacing, pts: Option<f64>, fps: Option<f64>, stop: &Stop) -> bool {
        let due = match (pacing, pts, fps) {
            (Pacing::Fast, ..) => return true,
            (Pacing::Fps(rate), ..) => self.count as f64 / rate,
            (Pacing::Native, Some(pts), _) => pts + self.offset,
            // No timestamps: fall back to the nominal rate, or do not pace at all.
            (Pacing::Native, None, Some(rate)) => self.last_due + if self.origin.is_some() { 1.0 / rate } else { 0.0 },
            (Pacing::Native, None, None) => return true,
        };
        let now = Instant::now();
        let origin = *self.origin.get_or_insert(now);
        let due = if pacing != Pacing::Native || (due >= self.last_due && due - self.last_due <= MAX_PTS_GAP) {
            due
        } else {
            // A timestamp jump (stream discontinuity): restart the schedule at this frame
            // instead of waiting for minutes or bursting.
            self.offset += self.last_due - due;
            self.last_due
        };
        self.count += 1;
        self.last_due = due;
        stop.sleep_until(origin + Duration::from_secs_f64(due.max(0.0)))
    }

    /// A loop pass starts: its first frame is due one frame after the last one.
    fn next_pass(&mut self, fps: Option<f64>) {
        self.offset = self.last_due + fps.map_or(0.0, |rate| 1.0 / rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_taps_are_identity_at_the_same_size() {
        for (i, (first, weights)) in area_taps(7, 7).into_iter().enumerate() {
            assert_eq!((first, weights), (i, vec![1.0]));
        }
    }

    #[test]
    fn area_taps_average_and_sum_to_one() {
        let taps = area_taps(6, 4);
        for (_, weights) in &taps {
            assert!((weights.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert_eq!(taps[0], (0, vec![2.0 / 3.0, 1.0 / 3.0]));
        let up = area_taps(2, 4);
        assert_eq!(up.iter().map(|(first, _)| *first).collect::<Vec<_>>(), vec![0, 0, 1, 1]);
    }

    #[test]
    fn resampler_crops_and_halves() {
        // 4x4 grey with a stride of 6 (padding bytes 99 must never be read).
        let data: Vec<u8> = (0..4).flat_map(|r| [r * 40, r * 40 + 10, r * 40 + 20, r * 40 + 30, 99, 99]).collect();
        let mut crop = Resampler::new([1, 1, 2, 2], 2, 2, 1);
        assert_eq!(crop.run(&data, 6, |v| v), vec![50, 60, 90, 100]);
        let mut half = Resampler::new([0, 0, 4, 4], 2, 2, 1);
        assert_eq!(half.run(&data, 6, |v| v), vec![25, 45, 105, 125]);
        assert_eq!(half.run(&data, 6, |v| v / 5), vec![5, 9, 21, 25]);
        let rgb: Vec<u8> = (0..2).flat_map(|r| [r * 100, 10, 20, r * 100 + 50, 30, 40]).collect();
        let mut mix = Resampler::new([0, 0, 2, 2], 1, 1, 3);
        assert_eq!(mix.run(&rgb, 6, |v| v), vec![75, 20, 30]);
    }

    #[test]
    fn luma_tables_match_swscale_ranges() {
        init().unwrap();
        let identity: Vec<u8> = (0..=255).collect();
        assert_eq!(luma_table(Pixel::GRAY8).unwrap().to_vec(), identity);
        assert_eq!(luma_table(Pixel::YUVJ420P).unwrap().to_vec(), identity);
        // TV range widened to full range, as `ffmpeg -pix_fmt gray` does.
        let tv = luma_table(Pixel::YUV420P).unwrap();
        assert_eq!((tv[16], tv[235], tv[0], tv[255]), (0, 255, 0, 255));
        assert!(luma_table(Pixel::RGB24).is_none());
    }
}
