//! An in-process [`Wire`] with no bound of its own: every key an unbounded FIFO. The contract
//! tests run the credit window over it, so what bounds a remote edge is shown to be the window
//! alone, with no network and no engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};

use super::{Wire, WireError, WirePublisher, WireSubscriber, WireWatch};

/// A key's queue: both ends of one unbounded channel.
type Key = (Sender<Vec<u8>>, Receiver<Vec<u8>>);

/// Unbounded in-process keys. A subscriber sees what is published after it subscribed, as on a
/// real engine; messages published to a key nobody subscribes to yet wait for its subscriber
/// (an engine would lose them: the credit edge subscribes before it publishes, so either works).
#[derive(Clone, Default)]
pub struct MemoryWire {
    keys: Arc<Mutex<HashMap<String, Key>>>,
    /// Liveliness: the tokens declared per key.
    tokens: Arc<Mutex<HashMap<String, usize>>>,
}

impl MemoryWire {
    /// A wire with no keys yet.
    pub fn new() -> MemoryWire {
        MemoryWire::default()
    }

    fn channel(&self, key: &str) -> Result<Key, WireError> {
        let mut keys = self.keys.lock().map_err(|_| WireError("the memory wire's key table is poisoned".into()))?;
        Ok(keys.entry(key.to_string()).or_insert_with(unbounded).clone())
    }

    /// Withdraws every token on `key` as a killed process's vanish, without the goodbyes its
    /// ends would send (tests of a vanished peer).
    pub fn kill_tokens(&self, key: &str) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.remove(key);
        }
    }

    /// Messages waiting on `key` now (what an engine would be buffering).
    pub fn waiting(&self, key: &str) -> usize {
        self.channel(key).map_or(0, |(tx, _)| tx.len())
    }
}

/// Each end keeps the wire's table alive, so a key lives while anyone holds one of its ends, as
/// a key on an engine does: a sender that outlives its receiver publishes into nothing, it does
/// not fail.
struct MemoryPublisher(Sender<Vec<u8>>, #[allow(dead_code)] MemoryWire);
struct MemorySubscriber(Receiver<Vec<u8>>, #[allow(dead_code)] MemoryWire);

impl Wire for MemoryWire {
    fn publisher(&self, key: &str) -> Result<Box<dyn WirePublisher>, WireError> {
        Ok(Box::new(MemoryPublisher(self.channel(key)?.0, self.clone())))
    }

    fn subscriber(&self, key: &str) -> Result<Box<dyn WireSubscriber>, WireError> {
        Ok(Box::new(MemorySubscriber(self.channel(key)?.1, self.clone())))
    }

    fn token(&self, key: &str) -> Result<Box<dyn Send + Sync>, WireError> {
        let mut tokens = self.tokens.lock().map_err(|_| WireError("the memory wire's tokens are poisoned".into()))?;
        *tokens.entry(key.to_string()).or_default() += 1;
        Ok(Box::new(MemoryToken { key: key.to_string(), wire: self.clone() }))
    }

    fn watch(&self, key: &str) -> Result<Box<dyn WireWatch>, WireError> {
        Ok(Box::new(MemoryWatch { key: key.to_string(), wire: self.clone() }))
    }
}

/// A declared token; dropped, it is withdrawn.
struct MemoryToken {
    key: String,
    wire: MemoryWire,
}

impl Drop for MemoryToken {
    fn drop(&mut self) {
        if let Ok(mut tokens) = self.wire.tokens.lock() {
            if let Some(n) = tokens.get_mut(&self.key) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// A watch on a key's tokens.
struct MemoryWatch {
    key: String,
    wire: MemoryWire,
}

impl WireWatch for MemoryWatch {
    fn alive(&mut self) -> Result<Option<bool>, WireError> {
        let tokens = self.wire.tokens.lock().map_err(|_| WireError("the memory wire's tokens are poisoned".into()))?;
        Ok(Some(tokens.get(&self.key).is_some_and(|&n| n > 0)))
    }
}

impl WirePublisher for MemoryPublisher {
    fn put(&mut self, message: Vec<u8>) -> Result<(), WireError> {
        // The table keeps a receiver of every key, so the channel cannot disconnect.
        self.0.send(message).map_err(|_| WireError("the memory wire is closed".into()))
    }
}

impl WireSubscriber for MemorySubscriber {
    fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, WireError> {
        match self.0.recv_timeout(timeout) {
            Ok(m) => Ok(Some(m)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(WireError("the memory wire is closed".into())),
        }
    }
}
