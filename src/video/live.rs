//! Live feed: a [`VideoInput`] on its own `decode` thread, handing frames to the consumer
//! through a bounded buffer with a [`DropPolicy`].
//!
//! ```text
//!   decode thread: next_frame (decode, convert, pace) -> [buffer of `config.buffer` frames] -> recv
//! ```
//!
//! Pacing happens on the decode thread, before the buffer, so a paced file behaves like a
//! camera: when the consumer is slower than the stream, `drop_oldest` and `drop_newest` lose
//! frames (each one counted in [`LiveCounters::dropped`]) instead of slowing the input and
//! building up lag. `block` never drops and lets the consumer pace the decoder (files).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::input::{DropPolicy, InputCounters, SourceInfo, Stop, VideoConfig, VideoError, VideoInput};
use super::Frame;

/// Longest wait on the buffer's condition variables, so the caller's stop flag (which nobody
/// notifies) is seen within this time.
const STOP_POLL: Duration = Duration::from_millis(20);

/// How long dropping a feed waits for its decode thread to see the halt flag.
const JOIN_GRACE: Duration = Duration::from_secs(2);

/// What the live feed has done so far.
#[derive(Debug)]
pub struct LiveCounters {
    /// The decoder's own counters (decoded, delivered by the decoder, strided, corrupt, ...).
    pub input: Arc<InputCounters>,
    /// Frames that never reached the consumer: evicted or refused by the drop policy, or left
    /// in the buffer when the feed stopped.
    pub dropped: AtomicU64,
    /// Frames handed to the consumer by [`LiveFeed::recv`].
    pub received: AtomicU64,
    /// Frames in the buffer now.
    pub depth: AtomicU64,
}

impl LiveCounters {
    /// Frames dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Frames received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Frames buffered now.
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }
}

/// What [`LiveFeed::recv_timeout`] got.
#[derive(Debug)]
pub enum Received {
    /// The next frame.
    Frame(Frame),
    /// No frame within the timeout; the stream goes on.
    Timeout,
    /// End of the stream, or stopped.
    End,
}

/// The buffer and the decode thread's outcome.
#[derive(Default)]
struct State {
    frames: VecDeque<Frame>,
    /// The decode thread has finished.
    finished: bool,
    /// Why it finished, if it failed; taken by the first `recv` that sees it.
    error: Option<VideoError>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a frame arrives or the decoder finishes.
    filled: Condvar,
    /// Signalled when the consumer takes a frame or goes away.
    drained: Condvar,
    counters: Arc<LiveCounters>,
    /// The caller's stop flag and the feed's own (set on drop).
    stop: Stop,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic while holding it; the queue itself is still whole.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Discards whatever is buffered, counting it as dropped.
    fn discard(&self, state: &mut State) {
        self.counters.dropped.fetch_add(state.frames.len() as u64, Ordering::Relaxed);
        state.frames.clear();
        self.counters.depth.store(0, Ordering::Relaxed);
    }
}

/// Frames decoded on a background thread, buffered under a drop policy.
pub struct LiveFeed {
    shared: Arc<Shared>,
    /// Set on drop: wakes the decoder from a full buffer, a pacing sleep or a blocking read.
    halt: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    info: SourceInfo,
}

impl std::fmt::Debug for LiveFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveFeed").field("info", &self.info).field("counters", &self.shared.counters).finish()
    }
}

impl LiveFeed {
    /// Opens the input here (so open errors come back at once) and starts the `decode` thread.
    /// Setting `stop` ends the feed: `recv` then returns `Ok(None)`.
    pub fn start(config: VideoConfig, stop: Arc<AtomicBool>) -> Result<LiveFeed, VideoError> {
        let halt = Arc::new(AtomicBool::new(false));
        let flags = Stop::new(vec![stop, Arc::clone(&halt)]);
        let mut input = VideoInput::open_stoppable(&config, flags.clone())?;
        let info = input.source_info();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            filled: Condvar::new(),
            drained: Condvar::new(),
            counters: Arc::new(LiveCounters {
                input: input.counters(),
                dropped: AtomicU64::new(0),
                received: AtomicU64::new(0),
                depth: AtomicU64::new(0),
            }),
            stop: flags,
        });
        let thread_shared = Arc::clone(&shared);
        let (capacity, policy) = (config.buffer, config.drop);
        let thread = std::thread::Builder::new()
            .name("decode".into())
            .spawn(move || {
                let finish = Finish { shared: &thread_shared, input: input.config().input.clone(), armed: true };
                let outcome = decode(&mut input, &thread_shared, capacity, policy);
                finish.done(outcome.err());
            })
            .map_err(|err| VideoError::Open {
                input: config.input.clone(),
                reason: format!("cannot start the decode thread: {err}"),
            })?;
        Ok(LiveFeed { shared, halt, thread: Some(thread), info })
    }

    /// The next frame; `Ok(None)` at the end of the stream or once stopped; the decoder's
    /// error once, after the frames decoded before it.
    pub fn recv(&self) -> Result<Option<Frame>, VideoError> {
        match self.wait(None)? {
            Received::Frame(frame) => Ok(Some(frame)),
            Received::Timeout | Received::End => Ok(None),
        }
    }

    /// Like [`LiveFeed::recv`], giving up after `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Received, VideoError> {
        self.wait(Some(Instant::now() + timeout))
    }

    fn wait(&self, deadline: Option<Instant>) -> Result<Received, VideoError> {
        let shared = &self.shared;
        let mut state = shared.lock();
        loop {
            if shared.stop.is_set() {
                shared.discard(&mut state);
                shared.drained.notify_all();
                return Ok(Received::End);
            }
            if let Some(frame) = state.frames.pop_front() {
                shared.counters.depth.store(state.frames.len() as u64, Ordering::Relaxed);
                shared.counters.received.fetch_add(1, Ordering::Relaxed);
                shared.drained.notify_one();
                return Ok(Received::Frame(frame));
            }
            if state.finished {
                return match state.error.take() {
                    Some(err) => Err(err),
                    None => Ok(Received::End),
                };
            }
            let mut wait = STOP_POLL;
            if let Some(deadline) = deadline {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(Received::Timeout);
                }
                wait = wait.min(deadline - now);
            }
            state = shared.filled.wait_timeout(state, wait).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
        }
    }

    /// The counters, shared: they keep counting while the feed runs.
    pub fn counters(&self) -> Arc<LiveCounters> {
        Arc::clone(&self.shared.counters)
    }

    /// Size, rate and codec of the stream, as known when it opened.
    pub fn source_info(&self) -> &SourceInfo {
        &self.info
    }
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        self.halt.store(true, Ordering::Relaxed);
        self.shared.drained.notify_all();
        if let Some(thread) = self.thread.take() {
            // The decode thread catches its own failures (see `Finish`), so join only waits;
            // but a read that blocks in the kernel (a FIFO whose writer is silent) never sees
            // the halt flag: after a grace period the thread is left to end with the process.
            let deadline = Instant::now() + JOIN_GRACE;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                tracing::warn!("the decoder is blocked in a read; leaving it behind");
            }
        }
        let mut state = self.shared.lock();
        self.shared.discard(&mut state);
    }
}

/// The decode loop: frames into the buffer until the stream ends, fails or is stopped.
fn decode(input: &mut VideoInput, shared: &Shared, capacity: usize, policy: DropPolicy) -> Result<(), VideoError> {
    while let Some(frame) = input.next_frame()? {
        let mut state = shared.lock();
        if state.frames.len() >= capacity {
            match policy {
                DropPolicy::Block => {
                    while state.frames.len() >= capacity {
                        if shared.stop.is_set() {
                            shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                            return Ok(());
                        }
                        state = shared
                            .drained
                            .wait_timeout(state, STOP_POLL)
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .0;
                    }
                }
                DropPolicy::DropOldest => {
                    state.frames.pop_front();
                    shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                DropPolicy::DropNewest => {
                    shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        }
        state.frames.push_back(frame);
        shared.counters.depth.store(state.frames.len() as u64, Ordering::Relaxed);
        shared.filled.notify_one();
    }
    Ok(())
}

/// Marks the decode thread finished however it ends, a panic included, so `recv` never waits
/// for a thread that is gone.
struct Finish<'a> {
    shared: &'a Shared,
    input: String,
    /// Cleared by `done`: only an unwinding thread leaves it set.
    armed: bool,
}

impl Finish<'_> {
    fn done(mut self, error: Option<VideoError>) {
        self.armed = false;
        self.finish(error);
    }

    fn finish(&self, error: Option<VideoError>) {
        let mut state = self.shared.lock();
        state.finished = true;
        state.error = error;
        self.shared.filled.notify_all();
    }
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let input = std::mem::take(&mut self.input);
        self.finish(Some(VideoError::Decode { input, reason: "the decode thread panicked".into() }));
    }
}
