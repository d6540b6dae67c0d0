//! The edge contract (issue 13, item 1; `../shared/DISTRIBUTED.md` §2 and §7.1): one test body
//! over the in-process edge and over the credit window on an unbounded in-memory wire, so that
//! what bounds a remote edge is shown to be the window alone. Bounded in packets (a full edge
//! blocks its sender; drop-newest drops and counts), FIFO and lossless with control markers in
//! order, 0-row and 256 KB frames, end of stream when the sender goes, a closed edge when the
//! receiver goes, and a cycle with a feedback edge that cannot deadlock. Then what only a remote
//! edge can meet: a lost or reordered message, a stall, a refused policy.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ffstream::runtime::edge::{self, BoxedEdge, Closed, EdgeSpec, Sent, WhenFull};
use ffstream::transport::envelope::{self, Tag};
use ffstream::transport::memory::MemoryWire;
use ffstream::transport::{credit_edge, credit_feedback, DecodeError, EdgeError, Wire, WireCodec};
use ndarray::Array2;

/// What the tests send: frames (activities) and in-band control markers.
#[derive(Clone, Debug, PartialEq)]
enum Item {
    Frame(Array2<f32>),
    Marker(u32),
}

impl WireCodec for Item {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Item::Frame(x) => {
                out.push(0);
                x.encode(out);
            }
            Item::Marker(m) => {
                out.push(1);
                out.extend_from_slice(&m.to_le_bytes());
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.split_first() {
            Some((0, rest)) => Ok(Item::Frame(Array2::decode(rest)?)),
            Some((1, rest)) if rest.len() == 4 => {
                Ok(Item::Marker(u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]])))
            }
            _ => Err(DecodeError::Invalid("not a test item".into())),
        }
    }
}

/// Makes an edge of a spec on one transport.
type MakeEdge = Box<dyn Fn(EdgeSpec) -> BoxedEdge<Item>>;

/// Two Zenoh peers of this process, one listening on a free loopback port and one dialling it,
/// connected before any edge opens (one pair for the whole test binary).
#[cfg(feature = "dist-zenoh")]
fn zenoh_peers() -> &'static (ffstream::transport::zenoh::ZenohWire, ffstream::transport::zenoh::ZenohWire) {
    static PEERS: std::sync::OnceLock<(ffstream::transport::zenoh::ZenohWire, ffstream::transport::zenoh::ZenohWire)> =
        std::sync::OnceLock::new();
    PEERS.get_or_init(common::zenoh::connected_pair)
}

/// A credit edge from peer A to peer B, its sender waiting until B's subscription has reached A
/// (what a pipeline's start does before the first packet), with a 10 s stall limit.
#[cfg(feature = "dist-zenoh")]
fn zenoh_edge(spec: EdgeSpec) -> (ffstream::transport::CreditOutlet<Item>, ffstream::transport::CreditInlet<Item>) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let (a, b) = zenoh_peers();
    let name = format!("contract/edge/{}", NEXT.fetch_add(1, Ordering::SeqCst));
    let stall = Duration::from_secs(10);
    let inlet = ffstream::transport::CreditInlet::open(b, &name).unwrap().with_stall(stall);
    let mut outlet = ffstream::transport::CreditOutlet::open(a, &name, spec).unwrap().with_stall(stall);
    outlet.connect().unwrap();
    (outlet, inlet)
}

/// The transports: in-process, the window on the memory wire, and (feature `dist-zenoh`) the
/// window between two Zenoh peers over TCP on loopback.
fn transports() -> Vec<(&'static str, MakeEdge)> {
    vec![
        ("in-process", Box::new(edge::local_boxed::<Item>)),
        (
            "credit window on an unbounded wire",
            Box::new(|spec| {
                let wire = MemoryWire::new();
                let (o, i) = credit_edge::<Item>(&wire, "test/edge/0", spec).unwrap();
                (Box::new(o), Box::new(i))
            }),
        ),
        #[cfg(feature = "dist-zenoh")]
        (
            "credit window between two Zenoh peers",
            Box::new(|spec| {
                let (o, i) = zenoh_edge(spec);
                (Box::new(o), Box::new(i))
            }),
        ),
    ]
}

fn frame(rows: usize, cols: usize, seed: usize) -> Item {
    Item::Frame(Array2::from_shape_fn((rows, cols), |(r, c)| ((seed * 7919 + r * 31 + c) % 1000) as f32 * 0.01 - 3.0))
}

#[test]
fn items_arrive_in_order_all_of_them_with_markers_between_and_then_the_end() {
    for (name, make) in transports() {
        let (mut out, mut inp) = make(EdgeSpec::blocking(2));
        let sent: Vec<Item> = (0..200)
            .map(|i| match i % 10 {
                0 => Item::Marker(i),
                1 => frame(0, 2000, i as usize),  // a packet with no rows
                2 => frame(32, 2000, i as usize), // 256 KB
                _ => frame(3, 7, i as usize),
            })
            .collect();
        let to_send = sent.clone();
        let sender = std::thread::spawn(move || {
            for item in to_send {
                assert_eq!(out.send(item), Ok(Sent::Queued));
                assert!(out.len() <= 2, "at most the capacity waits");
            }
        });
        let got: Vec<Item> = std::iter::from_fn(|| inp.recv()).collect();
        sender.join().unwrap();
        assert_eq!(got.len(), sent.len(), "{name}");
        assert!(got == sent, "{name}: the items came back changed or out of order");
    }
}

#[test]
fn a_full_edge_blocks_its_sender_until_an_item_is_taken() {
    for (name, make) in transports() {
        let (mut out, mut inp) = make(EdgeSpec::blocking(3));
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&sent);
        let sender = std::thread::spawn(move || {
            for i in 0..10 {
                out.send(Item::Marker(i)).unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(sent.load(Ordering::SeqCst), 3, "{name}: the capacity went out, no more");
        assert_eq!(inp.recv(), Some(Item::Marker(0)));
        let deadline = Instant::now() + Duration::from_secs(5);
        while sent.load(Ordering::SeqCst) < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(sent.load(Ordering::SeqCst), 4, "{name}: one taken, one more sent");
        let rest: Vec<Item> = std::iter::from_fn(|| inp.recv()).collect();
        sender.join().unwrap();
        assert_eq!(rest, (1..10).map(Item::Marker).collect::<Vec<_>>(), "{name}");
    }
}

#[test]
fn the_wire_never_holds_more_than_the_window() {
    // The memory wire has no bound: only the credits keep the data key at `capacity`.
    let wire = MemoryWire::new();
    let (mut out, mut inp) = credit_edge::<Item>(&wire, "bound/edge/0", EdgeSpec::blocking(4)).unwrap();
    let sender = std::thread::spawn(move || {
        for i in 0..500 {
            out.send_checked(&Item::Marker(i)).unwrap();
        }
    });
    let mut most = 0;
    let mut got = 0;
    while let Some(item) = inp.recv_checked().unwrap() {
        assert_eq!(item, Item::Marker(got));
        got += 1;
        most = most.max(wire.waiting("ff/bound/edge/0/data"));
        if got % 50 == 0 {
            std::thread::sleep(Duration::from_millis(20)); // a slow receiver now and then
        }
    }
    sender.join().unwrap();
    assert_eq!(got, 500);
    assert!(most <= 4, "the wire held {most} items");
}

#[test]
fn a_full_drop_newest_edge_drops_and_counts_and_keeps_the_oldest() {
    for (name, make) in transports() {
        let (mut out, mut inp) = make(EdgeSpec { capacity: 3, when_full: WhenFull::DropNewest });
        let sent: Vec<Sent> = (0..10).map(|i| out.send(Item::Marker(i)).unwrap()).collect();
        assert_eq!(sent.iter().filter(|s| **s == Sent::Queued).count(), 3, "{name}");
        assert_eq!(out.dropped(), 7, "{name}");
        drop(out);
        let got: Vec<Item> = std::iter::from_fn(|| inp.recv()).collect();
        assert_eq!(got, (0..3).map(Item::Marker).collect::<Vec<_>>(), "{name}");
    }
}

#[test]
fn a_gone_receiver_closes_the_edge_even_for_a_waiting_sender() {
    for (name, make) in transports() {
        // Across a network the news takes a moment: only a sender already waiting is sure to hear it.
        if !name.contains("Zenoh") {
            let (mut out, inp) = make(EdgeSpec::blocking(1));
            drop(inp);
            assert_eq!(out.send(Item::Marker(0)), Err(Closed), "{name}: send after the receiver went");
        }

        let (mut out, inp) = make(EdgeSpec::blocking(1));
        let sender = std::thread::spawn(move || (out.send(Item::Marker(0)), out.send(Item::Marker(1))));
        std::thread::sleep(Duration::from_millis(200)); // the second send now waits for room
        drop(inp);
        let (first, second) = sender.join().unwrap();
        assert_eq!(first, Ok(Sent::Queued), "{name}");
        assert_eq!(second, Err(Closed), "{name}: a blocked sender is woken by the receiver going");
    }
}

#[test]
fn a_cycle_with_a_feedback_edge_does_not_deadlock() {
    let wire = MemoryWire::new();
    type Cycle = (BoxedEdge<Item>, BoxedEdge<Item>);
    #[allow(unused_mut)]
    let mut cycles: Vec<(&str, Cycle)> = vec![
        (
            "in-process",
            (edge::local_boxed(EdgeSpec::blocking(1)), {
                let (o, i) = edge::feedback(1, 1, || Item::Marker(0));
                (Box::new(o), Box::new(i))
            }),
        ),
        (
            "credit window",
            (
                {
                    let (o, i) = credit_edge::<Item>(&wire, "cycle/edge/0", EdgeSpec::blocking(1)).unwrap();
                    (Box::new(o), Box::new(i))
                },
                {
                    let (o, i) = credit_feedback::<Item>(&wire, "cycle/topdown/0", 1, 1, || Item::Marker(0)).unwrap();
                    (Box::new(o), Box::new(i))
                },
            ),
        ),
    ];
    #[cfg(feature = "dist-zenoh")]
    {
        let (up_out, up_in) = zenoh_edge(EdgeSpec::blocking(1));
        // The feedback edge of delay 1: room for the one pre-filled item and one more.
        let (mut down_out, down_in) = zenoh_edge(EdgeSpec::blocking(2));
        down_out.send_checked(&Item::Marker(0)).unwrap();
        cycles.push(("Zenoh peers", ((Box::new(up_out), Box::new(up_in)), (Box::new(down_out), Box::new(down_in)))));
    }
    for (name, ((mut up_out, mut up_in), (mut down_out, mut down_in))) in cycles {
        let lower = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for step in 0..1000u32 {
                seen.push(down_in.recv().unwrap());
                up_out.send(Item::Marker(step)).unwrap();
            }
            seen
        });
        let upper = std::thread::spawn(move || {
            while let Some(Item::Marker(step)) = up_in.recv() {
                let _ = down_out.send(Item::Marker(step + 1));
            }
        });
        let seen = lower.join().unwrap();
        upper.join().unwrap();
        // Step t reads what the upper element made of step t − 1 (the pre-filled item at first).
        assert_eq!(seen, (0..1000).map(Item::Marker).collect::<Vec<_>>(), "{name}");
    }
}

#[test]
fn a_lost_repeated_or_foreign_message_is_an_error_naming_the_edge() {
    let wire = MemoryWire::new();
    let (mut out, mut inp) = credit_edge::<Item>(&wire, "run7/edge/2", EdgeSpec::blocking(4)).unwrap();
    out.send_checked(&Item::Marker(0)).unwrap();
    // A message 3 ahead of its turn, as if messages 1 and 2 were lost.
    let mut forger = wire.publisher("ff/run7/edge/2/data").unwrap();
    forger.put(envelope::seal(3, Tag::Item, |o| Item::Marker(9).encode(o))).unwrap();
    assert_eq!(inp.recv_checked().unwrap(), Some(Item::Marker(0)));
    let e = inp.recv_checked().unwrap_err();
    assert_eq!(e, EdgeError::Gap { edge: "run7/edge/2".into(), expected: 1, got: 3 });
    assert!(e.to_string().contains("run7/edge/2") && e.to_string().contains("expected message 1, got 3"), "{e}");
    // The edge stays failed: nothing after a gap can be trusted.
    assert_eq!(inp.recv_checked().unwrap_err(), e);

    let (_out, mut inp) = credit_edge::<Item>(&wire, "run7/edge/3", EdgeSpec::blocking(4)).unwrap();
    wire.publisher("ff/run7/edge/3/data").unwrap().put(b"GET / HTTP/1.1".to_vec()).unwrap();
    let e = inp.recv_checked().unwrap_err();
    assert!(matches!(e, EdgeError::Decode { .. }) && e.to_string().contains("run7/edge/3"), "{e}");
}

#[test]
fn a_stalled_edge_times_out_naming_it_on_both_ends() {
    let wire = MemoryWire::new();
    let (out, inp) = credit_edge::<Item>(&wire, "slow/edge/1", EdgeSpec::blocking(1)).unwrap();
    let (mut out, mut inp) = (out.with_stall(Duration::from_millis(300)), inp.with_stall(Duration::from_millis(300)));
    let started = Instant::now();
    let e = inp.recv_checked().unwrap_err();
    assert!(matches!(e, EdgeError::Timeout { .. }) && e.to_string().contains("slow/edge/1"), "{e}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    out.send_checked(&Item::Marker(0)).unwrap();
    let e = out.send_checked(&Item::Marker(1)).unwrap_err();
    assert!(matches!(e, EdgeError::Timeout { .. }) && e.to_string().contains("slow/edge/1"), "{e}");
}

/// A sender whose process dies says no goodbye: its liveliness token vanishes, and the waiting
/// receiver fails naming the edge within seconds instead of waiting out the stall limit. A
/// sender that finished, whose token goes just after its end of stream, is a clean end.
#[test]
fn a_receiver_whose_sender_vanished_says_so_and_one_whose_sender_finished_ends_cleanly() {
    let wire = MemoryWire::new();
    let (mut out, inp) = credit_edge::<Item>(&wire, "run8/layer1-layer2", EdgeSpec::blocking(2)).unwrap();
    let mut inp = inp.with_stall(Duration::from_secs(60));
    out.send_checked(&Item::Marker(0)).unwrap();
    assert_eq!(inp.recv_checked().unwrap(), Some(Item::Marker(0)));
    let started = Instant::now();
    wire.kill_tokens("ff/run8/layer1-layer2/sender");
    let e = inp.recv_checked().unwrap_err();
    assert!(matches!(e, EdgeError::Vanished { .. }), "{e}");
    assert!(e.to_string().contains("run8/layer1-layer2") && e.to_string().contains("sending end vanished"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10), "noticed after {:?}", started.elapsed());
    drop(out);

    let (mut out, mut inp) = credit_edge::<Item>(&wire, "run8/layer2-sink", EdgeSpec::blocking(2)).unwrap();
    out.send_checked(&Item::Marker(1)).unwrap();
    let receiver = std::thread::spawn(move || (inp.recv_checked(), inp.recv_checked()));
    std::thread::sleep(Duration::from_millis(1500)); // the receiver has asked after its sender
    drop(out);
    let (first, second) = receiver.join().unwrap();
    assert_eq!((first.unwrap(), second.unwrap()), (Some(Item::Marker(1)), None));
}

#[test]
fn dropping_the_oldest_is_refused_on_a_remote_edge() {
    let wire = MemoryWire::new();
    let spec = EdgeSpec { capacity: 2, when_full: WhenFull::DropOldest };
    let e = credit_edge::<Item>(&wire, "live/edge/0", spec).map(|_| ()).unwrap_err();
    assert!(matches!(e, EdgeError::Unsupported { .. }) && e.to_string().contains("drop_newest"), "{e}");
}
