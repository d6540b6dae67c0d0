//! Edges: the only thing that crosses between the elements of a pipeline.
//!
//! An edge is an [`Outlet`] (the sending end) and an [`Inlet`] (the receiving end) with a
//! capacity in items and a [`WhenFull`] policy. The contract every transport keeps:
//!
//! - **Bounded.** At most `capacity` items wait in the edge. With [`WhenFull::Block`] a full
//!   edge blocks its sender (backpressure reaches the source); with a drop policy the sender
//!   never waits and the edge counts every item it drops ([`Outlet::dropped`]), never silently.
//! - **FIFO and lossless under `Block`.** Items arrive in the order sent, all of them.
//! - **End of stream is the outlet being dropped**: the inlet drains what is left, then
//!   [`Inlet::recv`] returns `None`. A dropped inlet makes [`Outlet::send`] fail.
//!
//! [`local`] implements it in-process over a `crossbeam_channel::bounded` channel; a network
//! transport implements the same two traits. A *feedback* edge ([`feedback`]) runs against the
//! stream (top-down state, the readout's predictions) and starts pre-filled with `delay`
//! neutral items: a cycle of bounded edges, each element taking one item from every inlet per
//! step, can then never deadlock, and the receiver sees what was sent `delay` steps ago.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TrySendError};

/// What an edge does with an item that finds it full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// The sender waits (file sources, stage to stage): lossless.
    #[default]
    Block,
    /// The new item is dropped and counted (a live source that must not wait).
    DropNewest,
    /// The oldest waiting item is dropped and counted, the new one queued (a live source
    /// where the freshest frame matters most).
    DropOldest,
}

/// The receiving end is gone: nothing sent from now on can arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the receiving end of the edge is gone")]
pub struct Closed;

/// What happened to a sent item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Queued (possibly after waiting for room).
    Queued,
    /// Queued after dropping the oldest waiting item ([`WhenFull::DropOldest`]).
    DroppedOldest,
    /// Not queued: the edge was full ([`WhenFull::DropNewest`]).
    DroppedNewest,
}

/// The sending end of an edge.
pub trait Outlet<T>: Send {
    /// Sends `item` under the edge's [`WhenFull`] policy.
    fn send(&mut self, item: T) -> Result<Sent, Closed>;
    /// Items waiting in the edge now.
    fn len(&self) -> usize;
    /// True when no item waits.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Items dropped by the policy so far.
    fn dropped(&self) -> u64;
    /// Why the edge failed, if it did (a remote edge: a gap, a damaged message, a stall),
    /// naming the edge. A failed edge looks closed to [`Outlet::send`]; this tells a failure
    /// from a receiver that finished. In-process edges never fail.
    fn fault(&self) -> Option<String> {
        None
    }
}

/// The receiving end of an edge.
pub trait Inlet<T>: Send {
    /// The next item, waiting for it; `None` once the outlet is gone and the edge is empty.
    fn recv(&mut self) -> Option<T>;
    /// Items waiting in the edge now.
    fn len(&self) -> usize;
    /// True when no item waits.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Why the edge failed, if it did; see [`Outlet::fault`]. A failed edge ends like a
    /// finished stream at [`Inlet::recv`]; this tells the two apart.
    fn fault(&self) -> Option<String> {
        None
    }
}

/// The settings of one edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeSpec {
    /// Items the edge holds (at least 1; [`UNBOUNDED`] for an edge whose size its sender's
    /// own protocol bounds).
    pub capacity: usize,
    /// What a full edge does.
    pub when_full: WhenFull,
}

/// The capacity of an edge with no bound of its own. Only the predictions edge uses it: a
/// wake phase sends many packets before the head reads their predictions, and the head never
/// has more predictions due than packets it has sent and not yet read back.
pub const UNBOUNDED: usize = usize::MAX;

impl EdgeSpec {
    /// A blocking edge of `capacity` items.
    pub fn blocking(capacity: usize) -> EdgeSpec {
        EdgeSpec { capacity: capacity.max(1), when_full: WhenFull::Block }
    }
}

/// The in-process outlet.
pub struct LocalOutlet<T> {
    tx: Sender<T>,
    /// A receiving handle of the same channel, to pop the oldest item ([`WhenFull::DropOldest`]).
    oldest: Option<Receiver<T>>,
    when_full: WhenFull,
    dropped: Arc<AtomicU64>,
    /// Set when the inlet is dropped (the outlet's own receiving handle keeps a drop-oldest
    /// channel connected, so the channel alone cannot tell).
    inlet_gone: Arc<AtomicBool>,
}

/// The in-process inlet.
pub struct LocalInlet<T> {
    rx: Receiver<T>,
    gone: Arc<AtomicBool>,
}

impl<T> Drop for LocalInlet<T> {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::Release);
    }
}

/// An in-process edge over a bounded crossbeam channel.
pub fn local<T: Send>(spec: EdgeSpec) -> (LocalOutlet<T>, LocalInlet<T>) {
    let (tx, rx) = if spec.capacity == UNBOUNDED { unbounded() } else { bounded(spec.capacity.max(1)) };
    let oldest = (spec.when_full == WhenFull::DropOldest).then(|| rx.clone());
    let gone = Arc::new(AtomicBool::new(false));
    let outlet =
        LocalOutlet { tx, oldest, when_full: spec.when_full, dropped: Arc::default(), inlet_gone: Arc::clone(&gone) };
    (outlet, LocalInlet { rx, gone })
}

/// A feedback edge: [`local`] with `delay` items made by `neutral` already queued, and room
/// for `capacity` more.
pub fn feedback<T: Send>(capacity: usize, delay: usize, neutral: impl Fn() -> T) -> (LocalOutlet<T>, LocalInlet<T>) {
    let (mut outlet, inlet) = local(EdgeSpec::blocking(capacity.max(1).saturating_add(delay)));
    for _ in 0..delay {
        // Room for `delay` items was made above and nobody receives yet: this cannot block.
        let _ = outlet.send(neutral());
    }
    (outlet, inlet)
}

impl<T: Send> Outlet<T> for LocalOutlet<T> {
    fn send(&mut self, item: T) -> Result<Sent, Closed> {
        match self.when_full {
            WhenFull::Block => self.tx.send(item).map(|_| Sent::Queued).map_err(|_| Closed),
            WhenFull::DropNewest => match self.tx.try_send(item) {
                Ok(()) => Ok(Sent::Queued),
                Err(TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    Ok(Sent::DroppedNewest)
                }
                Err(TrySendError::Disconnected(_)) => Err(Closed),
            },
            WhenFull::DropOldest => {
                if self.inlet_gone.load(Ordering::Acquire) {
                    return Err(Closed);
                }
                let mut item = item;
                let mut dropped_any = false;
                loop {
                    match self.tx.try_send(item) {
                        Ok(()) => return Ok(if dropped_any { Sent::DroppedOldest } else { Sent::Queued }),
                        Err(TrySendError::Disconnected(_)) => return Err(Closed),
                        Err(TrySendError::Full(back)) => {
                            item = back;
                            // The receiver may take the oldest first; then there is room anyway.
                            if let Some(rx) = &self.oldest {
                                if rx.try_recv().is_ok() {
                                    self.dropped.fetch_add(1, Ordering::Relaxed);
                                    dropped_any = true;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.tx.len()
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl<T: Send> Inlet<T> for LocalInlet<T> {
    fn recv(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }

    fn len(&self) -> usize {
        self.rx.len()
    }
}

impl<T> LocalOutlet<T> {
    /// The drop counter, shared (a live view reads it while the sender runs).
    pub fn drop_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.dropped)
    }
}

/// An edge's two ends boxed as trait objects, the form the runtime wires.
pub type BoxedEdge<T> = (Box<dyn Outlet<T>>, Box<dyn Inlet<T>>);

/// [`local`], boxed.
pub fn local_boxed<T: Send + 'static>(spec: EdgeSpec) -> BoxedEdge<T> {
    let (o, i) = local(spec);
    (Box::new(o), Box::new(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_edge_is_fifo_lossless_and_ends_when_the_outlet_drops() {
        let (mut out, mut inp) = local::<u32>(EdgeSpec::blocking(2));
        let sender = std::thread::spawn(move || {
            for i in 0..100 {
                assert_eq!(out.send(i), Ok(Sent::Queued));
                assert!(out.len() <= 2);
            }
        });
        let got: Vec<u32> = std::iter::from_fn(|| inp.recv()).collect();
        sender.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn drop_newest_counts_what_it_drops() {
        let (mut out, mut inp) = local::<u32>(EdgeSpec { capacity: 3, when_full: WhenFull::DropNewest });
        let sent: Vec<Sent> = (0..10).map(|i| out.send(i).unwrap()).collect();
        assert_eq!(sent.iter().filter(|s| **s == Sent::Queued).count(), 3);
        assert_eq!(out.dropped(), 7);
        drop(out);
        assert_eq!(std::iter::from_fn(|| inp.recv()).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn drop_oldest_keeps_the_freshest() {
        let (mut out, mut inp) = local::<u32>(EdgeSpec { capacity: 3, when_full: WhenFull::DropOldest });
        for i in 0..10 {
            out.send(i).unwrap();
        }
        assert_eq!(out.dropped(), 7);
        drop(out);
        assert_eq!(std::iter::from_fn(|| inp.recv()).collect::<Vec<_>>(), vec![7, 8, 9]);
    }

    #[test]
    fn a_gone_inlet_closes_the_outlet() {
        for when_full in [WhenFull::Block, WhenFull::DropNewest, WhenFull::DropOldest] {
            let (mut out, inp) = local::<u32>(EdgeSpec { capacity: 1, when_full });
            drop(inp);
            assert_eq!(out.send(1), Err(Closed), "{when_full:?}");
        }
    }

    #[test]
    fn feedback_edge_delivers_with_its_delay() {
        let (mut out, mut inp) = feedback::<i32>(1, 2, || -1);
        for step in 0..5 {
            // Each step takes one item and sends one: the receiver sees step − 2.
            let got = inp.recv().unwrap();
            assert_eq!(got, if step < 2 { -1 } else { step - 2 });
            out.send(step).unwrap();
        }
    }

    /// Two elements in a cycle of bounded edges (a forward edge and a feedback edge), each
    /// taking one item from its inlet per step: with a delay of 1 it runs to its end.
    #[test]
    fn a_cycle_with_a_feedback_edge_does_not_deadlock() {
        let (mut up_out, mut up_in) = local::<u32>(EdgeSpec::blocking(1));
        let (mut down_out, mut down_in) = feedback::<u32>(1, 1, || 0);
        let lower = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for step in 0..1000u32 {
                seen.push(down_in.recv().unwrap());
                up_out.send(step).unwrap();
            }
            seen
        });
        let upper = std::thread::spawn(move || {
            while let Some(step) = up_in.recv() {
                let _ = down_out.send(step + 1);
            }
        });
        let seen = lower.join().unwrap();
        upper.join().unwrap();
        // Step t reads what the upper element made of step t − 1 (the pre-filled 0 at first).
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    }
}
