//! The credit window: a remote edge that keeps the in-process edge's contract
//! ([`crate::runtime::edge`]) over any [`Wire`].
//!
//! Two keys per edge: `ff/<edge>/data` carries the items and the end of the stream, each in an
//! envelope with its sequence number; `ff/<edge>/credit` flows back with the receiver's
//! *cumulative* count of items taken. The sender publishes only while fewer than `capacity`
//! items are untaken (`next − consumed < capacity`), so the edge holds at most `capacity`
//! items whatever the wire buffers, and a slot frees when the receiver *takes* an item, as with
//! `crossbeam_channel::bounded`. A cumulative count makes a lost or repeated credit harmless once
//! a later one arrives: the sender keeps the largest.
//!
//! The receiver checks every sequence number: a lost, repeated or reordered message is
//! [`EdgeError::Gap`] naming the edge, never silence. A dropped receiver sends the credit
//! [`envelope::GONE`], after which the sender's `send` fails as on a closed channel; a dropped
//! sender sends the end of the stream. A wait longer than the stall limit (set above the longest
//! legitimate pause: a sleep phase, a checkpoint write) is [`EdgeError::Timeout`].
//!
//! Through the [`Outlet`]/[`Inlet`] traits an error reads as the closed channel or the end of
//! the stream the runtime already handles, and the edge keeps it ([`CreditOutlet::error`],
//! [`CreditInlet::error`]) with a tracing error naming the edge; `send_checked` and
//! `recv_checked` return it.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::envelope::{self, DecodeError, Tag, WireCodec, GONE};
use super::{Wire, WireError, WirePublisher, WireSubscriber, WireWatch};
use crate::runtime::edge::{Closed, EdgeSpec, Inlet, Outlet, Sent, WhenFull, UNBOUNDED};

/// How long a sender waits for room, or a receiver for an item, before the edge is declared
/// stalled: above any legitimate pause of a run (DISTRIBUTED.md: a sleep phase, a checkpoint).
pub const DEFAULT_STALL: Duration = Duration::from_secs(600);

/// What went wrong on a remote edge; every case names the edge.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EdgeError {
    /// The other end is gone.
    #[error("edge {edge}: the other end is gone")]
    Disconnected {
        /// The edge.
        edge: String,
    },
    /// The other end went without saying so (its process was killed, or its host left the
    /// network): a failure, where [`EdgeError::Disconnected`] is a receiver that finished and
    /// the end of the stream a sender that did.
    #[error("edge {edge}: the {end} end vanished without a goodbye (its process died or lost the network)")]
    Vanished {
        /// The edge.
        edge: String,
        /// Which end: `sending` or `receiving`.
        end: &'static str,
    },
    /// A message was lost, repeated or reordered.
    #[error("edge {edge}: expected message {expected}, got {got} (lost, repeated or reordered)")]
    Gap {
        /// The edge.
        edge: String,
        /// The sequence number due.
        expected: u64,
        /// The one that came.
        got: u64,
    },
    /// No room (sender) or no item (receiver) within the stall limit.
    #[error("edge {edge}: nothing moved for {waited_s:.0} s (stalled)")]
    Timeout {
        /// The edge.
        edge: String,
        /// Seconds waited.
        waited_s: f64,
    },
    /// A message that does not read.
    #[error("edge {edge}: {source}")]
    Decode {
        /// The edge.
        edge: String,
        /// Why.
        source: DecodeError,
    },
    /// The wire failed.
    #[error("edge {edge}: {source}")]
    Wire {
        /// The edge.
        edge: String,
        /// The engine's error.
        source: WireError,
    },
    /// A policy a remote edge cannot keep.
    #[error("edge {edge}: {what}")]
    Unsupported {
        /// The edge.
        edge: String,
        /// What.
        what: String,
    },
}

/// An end's error is final (after a gap nothing can be trusted): kept for every later call, and
/// logged once with the edge's name.
fn keep<R>(slot: &mut Option<EdgeError>, result: Result<R, EdgeError>) -> Result<R, EdgeError> {
    if let Err(e) = &result {
        tracing::error!("{e}");
        *slot = Some(e.clone());
    }
    result
}

impl EdgeError {
    /// The wire error of `edge`, for `map_err`.
    fn wire(edge: &str) -> impl Fn(WireError) -> EdgeError + '_ {
        move |source| EdgeError::Wire { edge: edge.to_string(), source }
    }

    /// The decode error of `edge`, for `map_err`.
    fn decode(edge: &str) -> impl Fn(DecodeError) -> EdgeError + '_ {
        move |source| EdgeError::Decode { edge: edge.to_string(), source }
    }

    fn timeout(edge: &str, started: Instant) -> EdgeError {
        EdgeError::Timeout { edge: edge.to_string(), waited_s: started.elapsed().as_secs_f64() }
    }
}

/// Waits until `publisher`'s key has a subscriber, or the stall limit passes (a timeout).
fn matched(publisher: &mut dyn WirePublisher, edge: &str, stall: Duration) -> Result<(), EdgeError> {
    let started = Instant::now();
    match publisher.wait_matched(stall).map_err(EdgeError::wire(edge))? {
        true => Ok(()),
        false => Err(EdgeError::timeout(edge, started)),
    }
}

/// One wait of at most 200 ms for `subscriber`'s next message, within a stall limit counted
/// from `started`: `Ok(None)` when none came yet, a timeout once the limit has passed. Both
/// ends wait in these short steps, so the sender can look at its receiver between them.
fn next_within(
    subscriber: &mut dyn WireSubscriber,
    edge: &str,
    started: Instant,
    stall: Duration,
) -> Result<Option<Vec<u8>>, EdgeError> {
    let left = stall.saturating_sub(started.elapsed());
    if left.is_zero() {
        return Err(EdgeError::timeout(edge, started));
    }
    subscriber.recv_timeout(left.min(Duration::from_millis(200))).map_err(EdgeError::wire(edge))
}

fn data_key(edge: &str) -> String {
    format!("ff/{edge}/data")
}

fn credit_key(edge: &str) -> String {
    format!("ff/{edge}/credit")
}

/// The sender's liveliness token.
fn sender_key(edge: &str) -> String {
    format!("ff/{edge}/sender")
}

/// How often a waiting receiver asks whether its sender is still there.
const LIVELINESS_EVERY: Duration = Duration::from_secs(1);

/// The sending end of a remote edge.
pub struct CreditOutlet<T> {
    edge: String,
    data: Box<dyn WirePublisher>,
    credits: Box<dyn WireSubscriber>,
    capacity: u64,
    when_full: WhenFull,
    /// Sequence number of the next item.
    next: u64,
    /// The largest count of taken items heard.
    consumed: u64,
    gone: bool,
    /// The data key has a subscriber (nothing is put before: an engine would not route it).
    matched: bool,
    stall: Duration,
    dropped: Arc<AtomicU64>,
    error: Option<EdgeError>,
    /// How long a drop waits for the receiver's goodbye.
    linger: Duration,
    /// Says the sender is alive while it is (liveliness, where the wire has it).
    _alive: Box<dyn Send + Sync>,
    _items: PhantomData<fn(T)>,
}

/// The receiving end of a remote edge.
pub struct CreditInlet<T> {
    edge: String,
    data: Box<dyn WireSubscriber>,
    credits: Box<dyn WirePublisher>,
    /// Sequence number due next.
    expected: u64,
    ended: bool,
    stall: Duration,
    error: Option<EdgeError>,
    /// The sender's liveliness, and whether it was ever seen (alive, or by a message).
    sender: Box<dyn WireWatch>,
    sender_seen: bool,
    _items: PhantomData<fn() -> T>,
}

impl<T: WireCodec> CreditOutlet<T> {
    /// Opens the sending end of `edge` on `wire` (this process's end only): blocking, or dropping
    /// and counting the newest item when the window is shut ([`WhenFull::DropNewest`], a live
    /// source). Dropping the oldest waiting item cannot be done from the sender's side of a
    /// network and is refused.
    pub fn open(wire: &dyn Wire, edge: &str, spec: EdgeSpec) -> Result<CreditOutlet<T>, EdgeError> {
        if spec.when_full == WhenFull::DropOldest {
            let what = "drop_oldest needs the waiting items at hand: use block or drop_newest".into();
            return Err(EdgeError::Unsupported { edge: edge.to_string(), what });
        }
        let credits = wire.subscriber(&credit_key(edge)).map_err(EdgeError::wire(edge))?;
        let data = wire.publisher(&data_key(edge)).map_err(EdgeError::wire(edge))?;
        Ok(CreditOutlet {
            edge: edge.to_string(),
            data,
            credits,
            capacity: if spec.capacity == UNBOUNDED { u64::MAX } else { spec.capacity.max(1) as u64 },
            when_full: spec.when_full,
            next: 0,
            consumed: 0,
            gone: false,
            matched: false,
            stall: DEFAULT_STALL,
            dropped: Arc::default(),
            error: None,
            linger: Duration::ZERO,
            _alive: wire.token(&sender_key(edge)).map_err(EdgeError::wire(edge))?,
            _items: PhantomData,
        })
    }

    /// The stall limit (default [`DEFAULT_STALL`]).
    pub fn with_stall(mut self, stall: Duration) -> Self {
        self.stall = stall;
        self
    }

    /// On drop, after the end of stream, waits up to `linger` for the receiver's goodbye, so the
    /// end reaches a receiver in another process before this one exits (default: no wait).
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Waits until the receiving end has subscribed (up to the stall limit): what a run does
    /// for every edge before its first packet, so a start-up race cannot look like a stall.
    pub fn connect(&mut self) -> Result<(), EdgeError> {
        if !self.matched {
            matched(self.data.as_mut(), &self.edge, self.stall)?;
            self.matched = true;
        }
        Ok(())
    }

    /// The error that closed the edge, if one did.
    pub fn error(&self) -> Option<&EdgeError> {
        self.error.as_ref()
    }

    /// The drop counter, shared (a live view reads it while the sender runs).
    pub fn drop_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.dropped)
    }

    fn hear(&mut self, message: &[u8]) -> Result<(), EdgeError> {
        let count = envelope::read_credit(message).map_err(EdgeError::decode(&self.edge))?;
        if count == GONE {
            self.gone = true;
        } else {
            self.consumed = self.consumed.max(count);
        }
        Ok(())
    }

    /// Takes in every credit already here, without waiting.
    fn absorb(&mut self) -> Result<(), EdgeError> {
        while let Some(m) = self.credits.try_recv().map_err(EdgeError::wire(&self.edge))? {
            self.hear(&m)?;
        }
        Ok(())
    }

    fn window_shut(&self) -> bool {
        self.next - self.consumed >= self.capacity
    }

    /// [`Outlet::send`] with the error that stopped it.
    pub fn send_checked(&mut self, item: &T) -> Result<Sent, EdgeError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = self.send_inner(item);
        keep(&mut self.error, result)
    }

    fn send_inner(&mut self, item: &T) -> Result<Sent, EdgeError> {
        self.absorb()?;
        let started = Instant::now();
        while !self.gone && self.window_shut() {
            if self.when_full == WhenFull::DropNewest {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(Sent::DroppedNewest);
            }
            if let Some(m) = next_within(self.credits.as_mut(), &self.edge, started, self.stall)? {
                self.hear(&m)?;
            }
            // A receiver that vanished without its last word (a killed process) leaves the
            // data key with no subscriber: the same as its goodbye.
            if self.matched && !self.data.wait_matched(Duration::ZERO).map_err(EdgeError::wire(&self.edge))? {
                // Its goodbye may still be on its way on the credit key.
                std::thread::sleep(Duration::from_millis(50));
                self.absorb()?;
                if !self.gone {
                    return Err(EdgeError::Vanished { edge: self.edge.clone(), end: "receiving" });
                }
            }
        }
        if self.gone {
            return Err(EdgeError::Disconnected { edge: self.edge.clone() });
        }
        self.connect()?;
        let message = envelope::seal(self.next, Tag::Item, |out| item.encode(out));
        self.data.put(message).map_err(EdgeError::wire(&self.edge))?;
        self.next += 1;
        Ok(Sent::Queued)
    }
}

impl<T: WireCodec> Outlet<T> for CreditOutlet<T> {
    fn send(&mut self, item: T) -> Result<Sent, Closed> {
        self.send_checked(&item).map_err(|_| Closed)
    }

    /// Items sent and not yet known to be taken (credits still on their way count as waiting).
    fn len(&self) -> usize {
        (self.next - self.consumed.min(self.next)) as usize
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Any error but a receiver that said goodbye (it finished or stopped: not a failure here).
    fn fault(&self) -> Option<String> {
        self.error.as_ref().filter(|e| !matches!(e, EdgeError::Disconnected { .. })).map(ToString::to_string)
    }
}

impl<T> Drop for CreditOutlet<T> {
    fn drop(&mut self) {
        // End of stream, in band after every item sent (best effort: the receiver may be gone).
        let _ = self.data.put(envelope::seal(self.next, Tag::End, |_| {}));
        // A process that exits right after its last send would take the end of stream down with
        // its session: with a linger, wait (bounded) until the receiver has said goodbye.
        let started = Instant::now();
        while self.matched && !self.gone && started.elapsed() < self.linger {
            match self.credits.recv_timeout(Duration::from_millis(50)) {
                Ok(Some(m)) => {
                    if envelope::read_credit(&m) == Ok(GONE) {
                        self.gone = true;
                    }
                }
                Ok(None) => {
                    // A receiver that vanished will say nothing more.
                    if !self.data.wait_matched(Duration::ZERO).unwrap_or(false) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
}

impl<T: WireCodec> CreditInlet<T> {
    /// Opens the receiving end of `edge` on `wire` (this process's end only).
    pub fn open(wire: &dyn Wire, edge: &str) -> Result<CreditInlet<T>, EdgeError> {
        let data = wire.subscriber(&data_key(edge)).map_err(EdgeError::wire(edge))?;
        let credits = wire.publisher(&credit_key(edge)).map_err(EdgeError::wire(edge))?;
        Ok(CreditInlet {
            edge: edge.to_string(),
            data,
            credits,
            expected: 0,
            ended: false,
            stall: DEFAULT_STALL,
            error: None,
            sender: wire.watch(&sender_key(edge)).map_err(EdgeError::wire(edge))?,
            sender_seen: false,
            _items: PhantomData,
        })
    }

    /// The stall limit (default [`DEFAULT_STALL`]).
    pub fn with_stall(mut self, stall: Duration) -> Self {
        self.stall = stall;
        self
    }

    /// The error that ended the edge, if one did (not the sender's normal end of stream).
    pub fn error(&self) -> Option<&EdgeError> {
        self.error.as_ref()
    }

    /// [`Inlet::recv`] with the error that stopped it: `Ok(None)` at the end of the stream.
    pub fn recv_checked(&mut self) -> Result<Option<T>, EdgeError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.ended {
            return Ok(None);
        }
        let result = self.recv_inner();
        keep(&mut self.error, result)
    }

    /// Asks whether the sender is still there: an error once it has gone without its end of
    /// stream (or a message that came meanwhile: its end of stream may have been on its way
    /// behind its token's withdrawal).
    fn sender_vanished(&mut self) -> Result<Option<Vec<u8>>, EdgeError> {
        match self.sender.alive().map_err(EdgeError::wire(&self.edge))? {
            Some(true) => self.sender_seen = true,
            Some(false) if self.sender_seen => {
                let last = self.data.recv_timeout(Duration::from_millis(500)).map_err(EdgeError::wire(&self.edge))?;
                return match last {
                    Some(m) => Ok(Some(m)),
                    None => Err(EdgeError::Vanished { edge: self.edge.clone(), end: "sending" }),
                };
            }
            _ => {}
        }
        Ok(None)
    }

    fn recv_inner(&mut self) -> Result<Option<T>, EdgeError> {
        let started = Instant::now();
        let mut asked = started;
        let message = loop {
            if let Some(m) = next_within(self.data.as_mut(), &self.edge, started, self.stall)? {
                break m;
            }
            if asked.elapsed() >= LIVELINESS_EVERY {
                asked = Instant::now();
                if let Some(m) = self.sender_vanished()? {
                    break m;
                }
            }
        };
        self.sender_seen = true;
        let (seq, tag, body) = envelope::open(&message).map_err(EdgeError::decode(&self.edge))?;
        if seq != self.expected {
            return Err(EdgeError::Gap { edge: self.edge.clone(), expected: self.expected, got: seq });
        }
        if tag == Tag::End {
            self.ended = true;
            return Ok(None);
        }
        let item = T::decode(body).map_err(EdgeError::decode(&self.edge))?;
        self.expected += 1;
        // The slot frees as the item is taken, as with a bounded channel. No wait for the
        // credit key's subscriber: the sender declared it before its first item, so an item that
        // came means it is known here, unless the sender has gone (then nobody needs the credit).
        self.credits.put(envelope::credit(self.expected)).map_err(EdgeError::wire(&self.edge))?;
        Ok(Some(item))
    }
}

impl<T: WireCodec> Inlet<T> for CreditInlet<T> {
    fn recv(&mut self) -> Option<T> {
        self.recv_checked().ok().flatten()
    }

    /// Not known on the receiving side of a network (the sender's [`Outlet::len`] is): 0.
    fn len(&self) -> usize {
        0
    }

    fn fault(&self) -> Option<String> {
        self.error.as_ref().map(ToString::to_string)
    }
}

impl<T> Drop for CreditInlet<T> {
    fn drop(&mut self) {
        // Tells the sender nothing will be taken again (best effort: it may be gone).
        let _ = self.credits.put(envelope::credit(GONE));
    }
}

/// Both ends of a remote edge in this process (tests, and a pipeline whose stages share a host
/// but whose edge the file places on the wire).
pub fn credit_edge<T: WireCodec>(
    wire: &dyn Wire,
    edge: &str,
    spec: EdgeSpec,
) -> Result<(CreditOutlet<T>, CreditInlet<T>), EdgeError> {
    // The receiver subscribes first, so no item can be published before anyone listens.
    let inlet = CreditInlet::open(wire, edge)?;
    Ok((CreditOutlet::open(wire, edge, spec)?, inlet))
}

/// A remote feedback edge: as [`crate::runtime::edge::feedback`], `delay` items made by
/// `neutral` already sent and room for `capacity` more, on a window of its own (never behind
/// forward data).
pub fn credit_feedback<T: WireCodec>(
    wire: &dyn Wire,
    edge: &str,
    capacity: usize,
    delay: usize,
    neutral: impl Fn() -> T,
) -> Result<(CreditOutlet<T>, CreditInlet<T>), EdgeError> {
    let (mut outlet, inlet) = credit_edge(wire, edge, EdgeSpec::blocking(capacity.max(1).saturating_add(delay)))?;
    for _ in 0..delay {
        // The window has room for `delay` more than `capacity`, and nobody has taken any: no wait.
        outlet.send_checked(&neutral())?;
    }
    Ok((outlet, inlet))
}
