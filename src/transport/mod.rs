//! Edges between processes and hosts (issue 13; `../shared/DISTRIBUTED.md`): the same
//! [`crate::runtime::edge`] contract as the in-process channel, over a *wire* that only
//! publishes bytes on a key and delivers them in order to the key's subscriber.
//!
//! No messaging engine gives "a channel of N packets whose sender blocks and that loses
//! nothing": core NATS cuts off slow consumers, Zenoh's `put` drops by default and its
//! blocking mode gives up after 5 s. So the bound is ffstream's own, a credit window
//! ([`credit`]) on top of whatever wire carries the bytes:
//!
//! - [`Wire`]: publish on a key, subscribe to a key with a receive timeout. Reliable and ordered
//!   per key; nothing said about buffering (an engine may buffer without limit).
//! - [`memory::MemoryWire`]: an unbounded in-process wire, so the contract tests show the window
//!   alone bounds an edge, without a network.
//! - [`envelope`]: the bytes of a message on the wire (sequence number, tag, body), and the
//!   [`WireCodec`] an item type implements to travel.
//!
//! - [`packet_wire`]: the runtime's messages (packets, epoch markers, predictions, top-down
//!   state) in that form: rows and per-row fields, no clocks.
//!
//! - [`boundary`]: a pipeline part's edges to the other parts, each a credit edge under keys
//!   derived from the run's name and the chain's shape.
//!
//! - `zenoh::ZenohWire` (cargo feature `dist-zenoh`): a Zenoh peer session over TCP.
//!
//! NATS, the documented fallback, would be one more [`Wire`].

pub mod boundary;
pub mod credit;
pub mod envelope;
pub mod memory;
pub mod packet_wire;
#[cfg(feature = "dist-zenoh")]
pub mod zenoh;

use std::time::Duration;

pub use credit::{credit_edge, credit_feedback, CreditInlet, CreditOutlet, EdgeError};
pub use envelope::{DecodeError, WireCodec};

/// What a wire can fail with: the engine's own error, as text (each engine has its own type).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

/// A byte transport with ordered, reliable delivery per key.
pub trait Wire: Send + Sync {
    /// The publishing end of `key` (one publisher per key keeps its order).
    fn publisher(&self, key: &str) -> Result<Box<dyn WirePublisher>, WireError>;
    /// The subscribing end of `key`: every message published on it from now on, in order.
    fn subscriber(&self, key: &str) -> Result<Box<dyn WireSubscriber>, WireError>;
    /// Declares the caller alive under `key` until the token is dropped; a killed process's
    /// tokens vanish with it (Zenoh liveliness). A wire without liveliness gives a token that
    /// says nothing.
    fn token(&self, _key: &str) -> Result<Box<dyn Send + Sync>, WireError> {
        Ok(Box::new(()))
    }
    /// A watch on the token of `key`, for the other end of an edge.
    fn watch(&self, _key: &str) -> Result<Box<dyn WireWatch>, WireError> {
        Ok(Box::new(Unwatched))
    }
}

/// Whether a token is declared somewhere now.
pub trait WireWatch: Send {
    /// `Some(true)` while a token on the key is declared, `Some(false)` once none is, `None`
    /// where the wire cannot tell.
    fn alive(&mut self) -> Result<Option<bool>, WireError>;
}

/// The watch of a wire without liveliness.
struct Unwatched;

impl WireWatch for Unwatched {
    fn alive(&mut self) -> Result<Option<bool>, WireError> {
        Ok(None)
    }
}

/// Publishes messages on one key.
pub trait WirePublisher: Send {
    /// Sends one message; may buffer, must not drop once the key has a subscriber.
    fn put(&mut self, message: Vec<u8>) -> Result<(), WireError>;
    /// Waits up to `timeout` until the key has a subscriber somewhere; false if none came. An
    /// engine routes a message only to subscribers it already knows of, so an end puts nothing
    /// before this says true (a wire that never loses unrouted messages answers at once).
    fn wait_matched(&mut self, _timeout: Duration) -> Result<bool, WireError> {
        Ok(true)
    }
}

/// Receives the messages of one key.
pub trait WireSubscriber: Send {
    /// The next message, waiting at most `timeout`; `Ok(None)` when none came in time.
    fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, WireError>;
    /// The next message if one is already here.
    fn try_recv(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        self.recv_timeout(Duration::ZERO)
    }
}
