//! The [`Wire`] over Zenoh (feature `dist-zenoh`; `../shared/DISTRIBUTED.md` §4): a peer
//! session over TCP, one publisher per key declared with `CongestionControl::Block` (the default
//! `Drop` loses messages under load, which the sequence check would then report as a gap), and a
//! FIFO subscriber per key. The credit window keeps every FIFO far from full, so the link's
//! receive task never blocks behind one (zenoh#2585).
//!
//! Zenoh's blocking mode closes the link after 5 s without a free batch; a sleep phase or a
//! checkpoint write downstream can stall an edge longer than that, so the limit is raised to the
//! edges' own stall limit.

use std::time::Duration;

use zenoh::handlers::{FifoChannel, FifoChannelHandler};
use zenoh::pubsub::{Publisher, Subscriber};
use zenoh::qos::CongestionControl;
use zenoh::sample::Sample;
use zenoh::{Config, Session, Wait};

use super::credit::DEFAULT_STALL;
use super::{Wire, WireError, WirePublisher, WireSubscriber, WireWatch};

/// Messages a subscriber holds before the link blocks: the window bounds a data key to its
/// capacity and a credit key to one message per item, so this is never reached by a run's
/// edges of up to a few hundred packets.
const SUBSCRIBER_QUEUE: usize = 1024;

/// A Zenoh peer session as a wire.
pub struct ZenohWire {
    session: Session,
}

fn wire_err(e: impl std::fmt::Display) -> WireError {
    WireError(format!("zenoh: {e}"))
}

/// Where a peer listens and whom it dials: Zenoh endpoints such as `tcp/127.0.0.1:7447`.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    /// Endpoints this process listens on.
    pub listen: Vec<String>,
    /// Endpoints of the other processes.
    pub connect: Vec<String>,
}

impl ZenohWire {
    /// Opens a peer session: listening and dialling as `peers` says, multicast scouting off (the
    /// pipeline file names every host), the blocking-mode limit raised to [`DEFAULT_STALL`].
    pub fn open(peers: &Peers) -> Result<ZenohWire, WireError> {
        let mut config = Config::default();
        let list = |endpoints: &[String]| serde_json::to_string(endpoints).unwrap_or_else(|_| "[]".into());
        let settings = [
            ("mode", "\"peer\"".to_string()),
            ("scouting/multicast/enabled", "false".to_string()),
            ("listen/endpoints", list(&peers.listen)),
            ("connect/endpoints", list(&peers.connect)),
            (
                "transport/link/tx/queue/congestion_control/block/wait_before_close",
                DEFAULT_STALL.as_micros().to_string(),
            ),
        ];
        for (key, value) in settings {
            config.insert_json5(key, &value).map_err(|e| wire_err(format!("setting {key}: {e}")))?;
        }
        let session = zenoh::open(config).wait().map_err(wire_err)?;
        Ok(ZenohWire { session })
    }

    /// Other peers this session is connected to now.
    pub fn peers(&self) -> usize {
        self.session.info().peers_zid().wait().count()
    }
}

struct ZenohPublisher(Publisher<'static>);
struct ZenohSubscriber(Subscriber<FifoChannelHandler<Sample>>);

impl Wire for ZenohWire {
    fn publisher(&self, key: &str) -> Result<Box<dyn WirePublisher>, WireError> {
        let publisher = self
            .session
            .declare_publisher(key.to_string())
            .congestion_control(CongestionControl::Block)
            .wait()
            .map_err(wire_err)?;
        Ok(Box::new(ZenohPublisher(publisher)))
    }

    fn subscriber(&self, key: &str) -> Result<Box<dyn WireSubscriber>, WireError> {
        let subscriber = self
            .session
            .declare_subscriber(key.to_string())
            .with(FifoChannel::new(SUBSCRIBER_QUEUE))
            .wait()
            .map_err(wire_err)?;
        Ok(Box::new(ZenohSubscriber(subscriber)))
    }

    fn token(&self, key: &str) -> Result<Box<dyn Send + Sync>, WireError> {
        let token = self.session.liveliness().declare_token(key.to_string()).wait().map_err(wire_err)?;
        Ok(Box::new(token))
    }

    fn watch(&self, key: &str) -> Result<Box<dyn WireWatch>, WireError> {
        Ok(Box::new(ZenohWatch { session: self.session.clone(), key: key.to_string() }))
    }
}

/// Asks the network for the liveliness tokens of one key (a query per call: only made while
/// an edge waits).
struct ZenohWatch {
    session: Session,
    key: String,
}

impl WireWatch for ZenohWatch {
    fn alive(&mut self) -> Result<Option<bool>, WireError> {
        let replies = self
            .session
            .liveliness()
            .get(self.key.as_str())
            .timeout(Duration::from_secs(1))
            .wait()
            .map_err(wire_err)?;
        let mut alive = false;
        while let Ok(reply) = replies.recv() {
            alive |= reply.result().is_ok();
        }
        Ok(Some(alive))
    }
}

impl WirePublisher for ZenohPublisher {
    fn put(&mut self, message: Vec<u8>) -> Result<(), WireError> {
        self.0.put(message).wait().map_err(wire_err)
    }

    fn wait_matched(&mut self, timeout: Duration) -> Result<bool, WireError> {
        let started = std::time::Instant::now();
        loop {
            if self.0.matching_status().wait().map_err(wire_err)?.matching() {
                return Ok(true);
            }
            if started.elapsed() >= timeout {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl WireSubscriber for ZenohSubscriber {
    fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, WireError> {
        let sample = if timeout.is_zero() { self.0.try_recv() } else { self.0.recv_timeout(timeout) };
        Ok(sample.map_err(wire_err)?.map(|s| s.payload().to_bytes().into_owned()))
    }
}
