//! What a remote edge costs against the in-process one (issue 13, item 5; the edge alone, not
//! yet a pipeline): frames of 32 x 2000 f32 (256 KB, a packet of E3's activities) sent through
//! an edge of capacity 4 by one thread and taken by another, encode and decode included.
//!
//! `cargo bench --bench remote --features dist-zenoh` (about 20 s; without the feature the Zenoh
//! row is left out). Prints a table and writes `benches/results/<YYYY-MM-DD>-remote.json`; every
//! ratio is from this one run, on this machine.

use std::time::Instant;

use ffstream::bench::machine_name;
use ffstream::runtime::edge::{self, BoxedEdge, EdgeSpec};
use ffstream::transport::credit_edge;
use ffstream::transport::memory::MemoryWire;
use ndarray::Array2;
use serde_json::json;

const FRAMES: usize = 2000;
const CAPACITY: usize = 4;
const ROWS: usize = 32;
const COLS: usize = 2000;

/// Frames per second through `edge`, and the median round trip of one frame (seconds).
fn measure((mut out, mut inp): BoxedEdge<Array2<f32>>, back: BoxedEdge<Array2<f32>>) -> (f64, f64) {
    let frame = Array2::from_shape_fn((ROWS, COLS), |(r, c)| (r * COLS + c) as f32 * 1e-3);
    let sent = frame.clone();
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        for _ in 0..FRAMES {
            out.send(sent.clone()).expect("the receiver stays");
        }
        out
    });
    let mut got = 0;
    while got < FRAMES {
        inp.recv().expect("every frame arrives");
        got += 1;
    }
    let rate = FRAMES as f64 / started.elapsed().as_secs_f64();
    let mut out = sender.join().expect("sender");
    // Round trips: a frame there on the edge, and straight back on a second one.
    let (mut back_out, mut back_in) = back;
    let echo = std::thread::spawn(move || {
        while let Some(x) = inp.recv() {
            if back_out.send(x).is_err() {
                break;
            }
        }
    });
    let mut trips: Vec<f64> = (0..200)
        .map(|_| {
            let t = Instant::now();
            out.send(frame.clone()).expect("echo stays");
            back_in.recv().expect("echoed");
            t.elapsed().as_secs_f64()
        })
        .collect();
    drop(out);
    echo.join().expect("echo");
    trips.sort_by(f64::total_cmp);
    (rate, trips[trips.len() / 2])
}

fn main() {
    let spec = EdgeSpec::blocking(CAPACITY);
    let mut rows = Vec::new();
    rows.push(("in-process", measure(edge::local_boxed(spec), edge::local_boxed(spec))));
    let wire = MemoryWire::new();
    let memory = |name: &str| -> BoxedEdge<Array2<f32>> {
        let (o, i) = credit_edge::<Array2<f32>>(&wire, name, spec).expect("memory edge");
        (Box::new(o), Box::new(i))
    };
    rows.push(("credit window, in-memory wire", measure(memory("bench/0"), memory("bench/1"))));
    #[cfg(feature = "dist-zenoh")]
    {
        use ffstream::transport::zenoh::{Peers, ZenohWire};
        use ffstream::transport::{CreditInlet, CreditOutlet};
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("addr").port();
        let endpoint = format!("tcp/127.0.0.1:{port}");
        let a = ZenohWire::open(&Peers { listen: vec![endpoint.clone()], connect: vec![] }).expect("peer a");
        let b = ZenohWire::open(&Peers { listen: vec![], connect: vec![endpoint] }).expect("peer b");
        while a.peers() == 0 || b.peers() == 0 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let zenoh = |name: &str, from: &ZenohWire, to: &ZenohWire| -> BoxedEdge<Array2<f32>> {
            let inlet = CreditInlet::open(to, name).expect("inlet");
            let mut outlet = CreditOutlet::open(from, name, spec).expect("outlet");
            outlet.connect().expect("the receiver subscribes");
            (Box::new(outlet), Box::new(inlet))
        };
        rows.push((
            "credit window, Zenoh peers over loopback TCP",
            measure(zenoh("bench/2", &a, &b), zenoh("bench/3", &b, &a)),
        ));
    }
    let local = rows[0].1 .0;
    println!("{FRAMES} frames of {ROWS}x{COLS} f32 (256 KB), capacity {CAPACITY}, on {}", machine_name());
    println!("{:<46} {:>10} {:>12} {:>14}", "edge", "frames/s", "vs local", "round trip p50");
    let mut json_rows = Vec::new();
    for (name, (rate, trip)) in &rows {
        println!("{name:<46} {rate:>10.0} {:>12.3} {:>11.3} ms", rate / local, trip * 1e3);
        json_rows.push(
            json!({"edge": name, "frames_per_s": rate, "over_local": rate / local, "round_trip_p50_ms": trip * 1e3}),
        );
    }
    let date = std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let path = format!("benches/results/{}-remote.json", date.unwrap_or_else(|_| "undated".into()));
    // scripts/bench-remote-pipeline keeps its figures in the same file, under "pipelines".
    let mut report: serde_json::Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| json!({}));
    for (key, value) in [
        ("machine", json!(machine_name())),
        ("frames", json!(FRAMES)),
        ("rows", json!(ROWS)),
        ("cols", json!(COLS)),
        ("capacity", json!(CAPACITY)),
        ("edges", json!(json_rows)),
        ("note", json!("one edge, one sender and one receiver thread; the pipelines are under \"pipelines\"")),
    ] {
        report[key] = value;
    }
    match std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap_or_default()) {
        Ok(()) => println!("wrote {path}"),
        Err(e) => eprintln!("could not write {path}: {e}"),
    }
}
