//! A pipeline spread over parts (issue 13, items 2 and 4): each part runs its share of the
//! chain threaded, the parts joined by credit edges on a wire, and the stages end with the
//! weights they end with when the whole chain runs in one process, bit for bit. Over the
//! in-memory wire, over two Zenoh peers in this process, and (feature `dist-zenoh`) over
//! Zenoh between separate OS processes on loopback, each started by this test.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::synthetic_mnist;
use ffstream::config::build::{build_head, build_sink, build_stages};
use ffstream::config::PipelineConfig;
use ffstream::packet::StageState;
use ffstream::runtime::{self, Ending, Mode, Part, PipelineStats, Wiring};
use ffstream::session::labelled::as_played;
use ffstream::stage::Stage;
use ffstream::transport::boundary::{self, EdgeSettings, Placement};
use ffstream::transport::memory::MemoryWire;
use ffstream::transport::Wire;

/// The dense net of `tests/pipeline.rs`, or the recurrent net of `tests/recurrent.rs` (its
/// feedback edges then cross the parts' boundaries too).
fn config(recurrent: bool) -> PipelineConfig {
    let (text, file, mut overrides): (&str, &str, Vec<&str>) = if recurrent {
        (
            include_str!("../pipeline/mnist-recurrent.toml"),
            "mnist-recurrent.toml",
            vec![
                "stage.1.units=40",
                "stage.2.units=32",
                "recurrent.iterations=4",
                "recurrent.learn_steps=[1, 4]",
                "recurrent.goodness_steps=[2, 3]",
            ],
        )
    } else {
        (include_str!("../pipeline/mnist-quick.toml"), "mnist-quick.toml", vec!["model.layers=[48, 40, 32]"])
    };
    overrides.extend(["data.epochs=2", "data.batch=50", "head.prediction_delay=2", "eval.every=1", "eval.batch=50"]);
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    PipelineConfig::parse(text, file, &overrides).unwrap()
}

/// How a part is cut from the chain: the head here or not, the stages `first..first + count`,
/// the sink here or not.
#[derive(Clone, Copy, Debug)]
struct Cut {
    head: bool,
    first: usize,
    count: usize,
    sink: bool,
}

/// What a part ends with: its stages' final states and the epochs' measures its sink reported.
type Outcome = (Vec<StageState>, Vec<std::collections::BTreeMap<String, f64>>);

fn wiring() -> Wiring {
    Wiring { mode: Mode::Threaded, capacity: 2, feedback_delay: 1, shards: None, core_tokens: 0 }
}

/// The whole chain in one process: the reference.
fn whole(c: &PipelineConfig) -> Outcome {
    let parts = [Cut { head: true, first: 0, count: c.stage_names().len(), sink: true }];
    let wire = MemoryWire::new();
    run_cut(c, &wire, "whole", parts[0])
}

/// Runs one part of `c` on `wire`.
fn run_cut(c: &PipelineConfig, wire: &dyn Wire, run: &str, cut: Cut) -> Outcome {
    let names = c.stage_names();
    let mut stages: Vec<Box<dyn Stage>> = build_stages(c);
    let chain: Vec<(String, bool)> = stages.iter().map(|s| (s.name().to_string(), s.reads_above())).collect();
    let mine: Vec<Box<dyn Stage>> = stages.drain(cut.first..cut.first + cut.count).collect();
    let at = Placement {
        run: run.into(),
        head: cut.head,
        first: cut.first,
        count: cut.count,
        sink: cut.sink,
        stages: chain,
    };
    let settings = EdgeSettings { capacity: 2, feedback_delay: 1, stall: Duration::from_secs(60) };
    let boundary = if cut.head && cut.sink && cut.count == names.len() {
        runtime::Boundary::default()
    } else {
        boundary::open(wire, &at, settings).unwrap()
    };
    // Built whether or not the part runs them, as `ffstream run --part` does; a recurrent net's
    // head and sink play each packet for its steps (`as_played`).
    let mut head = build_head(c, synthetic_mnist(), 1, Arc::new(AtomicBool::new(false)));
    let mut sink = build_sink(c);
    let stats = PipelineStats::new(&names);
    let mut measures = Vec::new();
    let (stages, ending) = as_played(c, &mut head, &mut sink, |head, sink| {
        let part = Part {
            head: cut.head.then_some(head),
            stages: mine,
            first: cut.first,
            sink: cut.sink.then_some(sink),
            boundary,
        };
        runtime::run_part(part, wiring(), &stats, &mut |r| {
            measures.push(r.measures);
            Ok(())
        })
    })
    .unwrap_or_else(|e| panic!("part {cut:?}: {e}"));
    assert_eq!(ending, Ending::Finished);
    (stages.iter().map(|s| s.snapshot()).collect(), measures)
}

/// Runs the parts of `c` on threads of this process, each on its own wire end.
fn spread(c: &PipelineConfig, wires: &[&dyn Wire], run: &str, cuts: &[Cut]) -> Vec<Outcome> {
    std::thread::scope(|s| {
        let handles: Vec<_> = cuts
            .iter()
            .enumerate()
            .map(|(i, &cut)| {
                let wire = wires[i % wires.len()];
                s.spawn(move || run_cut(c, wire, run, cut))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The parts' stages, in chain order, equal the whole chain's, and the sink's part reports the
/// same measures every epoch.
fn assert_same(whole: &Outcome, parts: &[Outcome]) {
    let states: Vec<&StageState> = parts.iter().flat_map(|p| &p.0).collect();
    assert_eq!(states.len(), whole.0.len());
    for (a, b) in states.iter().zip(&whole.0) {
        assert_eq!(a.stage, b.stage);
        assert_eq!(a.tensors, b.tensors, "stage {} differs from the run in one process", a.stage);
    }
    // The sink's part (the last) measures; every other part reports each epoch too, with its
    // stages' states for its own checkpoint and no measures.
    let (sink, others) = parts.split_last().expect("parts");
    assert_eq!(sink.1, whole.1);
    assert_eq!(sink.1.len(), 2, "an epoch report per epoch");
    for part in others {
        assert_eq!(part.1.len(), 2, "an epoch report per epoch from every part");
        assert!(part.1.iter().all(|m| m.is_empty()));
    }
}

const HEAD_AND_ONE: [Cut; 2] =
    [Cut { head: true, first: 0, count: 1, sink: false }, Cut { head: false, first: 1, count: 2, sink: true }];

const EVERY_ELEMENT_APART: [Cut; 5] = [
    Cut { head: true, first: 0, count: 0, sink: false },
    Cut { head: false, first: 0, count: 1, sink: false },
    Cut { head: false, first: 1, count: 1, sink: false },
    Cut { head: false, first: 2, count: 1, sink: false },
    Cut { head: false, first: 3, count: 0, sink: true },
];

#[test]
fn parts_on_a_wire_end_with_the_weights_of_one_process() {
    let c = config(false);
    let reference = whole(&c);
    // The stages learned (the comparison is not between untouched weights).
    assert_ne!(build_stages(&c)[0].snapshot().tensors, reference.0[0].tensors);
    let wire = MemoryWire::new();
    assert_same(&reference, &spread(&c, &[&wire], "dense-2", &HEAD_AND_ONE));
    // Head alone, every stage alone, the sink alone: the predictions edge and every forward
    // edge cross a boundary.
    assert_same(&reference, &spread(&c, &[&wire], "dense-5", &EVERY_ELEMENT_APART));
}

#[test]
fn a_recurrent_net_split_between_its_layers_keeps_its_feedback_edges() {
    let c = config(true);
    let reference = whole(&c);
    let wire = MemoryWire::new();
    assert_eq!(c.stage_names().len(), 2);
    // Layer 1 reads layer 2's state: that feedback edge crosses the boundary.
    let cuts =
        [Cut { head: true, first: 0, count: 1, sink: false }, Cut { head: false, first: 1, count: 1, sink: true }];
    assert_same(&reference, &spread(&c, &[&wire], "recurrent-2", &cuts));
}

#[test]
fn a_part_without_an_edge_it_needs_is_refused_with_a_sentence() {
    let c = config(false);
    let mut sink = build_sink(&c);
    let stages: Vec<Box<dyn Stage>> = build_stages(&c).into_iter().skip(1).collect();
    let part = Part { head: None, stages, first: 1, sink: Some(&mut sink), boundary: Default::default() };
    let stats = PipelineStats::new(&c.stage_names());
    let err = runtime::run_part(part, wiring(), &stats, &mut |_| Ok(())).err().unwrap().to_string();
    assert!(err.contains("needs an edge in from upstream"), "{err}");
}

/// A sender that dies mid-stream: the part downstream stops with an error naming the edge and
/// its stage, not with a clean end.
#[test]
fn a_damaged_stream_stops_the_part_with_the_edge_named() {
    use ffstream::runtime::Message;
    use ffstream::transport::envelope::{seal, Tag};
    let c = config(false);
    let wire = MemoryWire::new();
    let chain = c.stage_names().into_iter().map(|n| (n, false)).collect();
    let at = Placement { run: "broken".into(), head: false, first: 1, count: 2, sink: true, stages: chain };
    let settings = EdgeSettings { capacity: 2, feedback_delay: 1, stall: Duration::from_secs(5) };
    let b = boundary::open(&wire, &at, settings).unwrap();
    // Message 1 where 0 is due: a gap.
    let mut publisher = wire.publisher("ff/broken/layer1-layer2/data").unwrap();
    let m = Message::EpochEnd { epoch: 1, stamp: std::time::Instant::now() };
    publisher.put(seal(1, Tag::Item, |out| ffstream::transport::WireCodec::encode(&m, out))).unwrap();
    let mut sink = build_sink(&c);
    let stages: Vec<Box<dyn Stage>> = build_stages(&c).into_iter().skip(1).collect();
    let part = Part { head: None, stages, first: 1, sink: Some(&mut sink), boundary: b };
    let stats = PipelineStats::new(&c.stage_names());
    let err = runtime::run_part(part, wiring(), &stats, &mut |_| Ok(())).err().unwrap().to_string();
    assert!(
        err.contains("layer2") && err.contains("broken/layer1-layer2") && err.contains("expected message 0"),
        "{err}"
    );
}

#[cfg(feature = "dist-zenoh")]
mod over_zenoh {
    use super::common::zenoh::{connected_pair, free_endpoint};
    use super::*;
    use ffstream::transport::zenoh::{Peers, ZenohWire};
    use std::time::Instant;

    #[test]
    fn parts_on_two_zenoh_peers_end_with_the_weights_of_one_process() {
        let c = config(false);
        let reference = whole(&c);
        let (a, b) = connected_pair();
        assert_same(&reference, &spread(&c, &[&a, &b], "zenoh-dense", &HEAD_AND_ONE));
    }

    /// The child's side of the multi-process test: runs the part `FFSTREAM_PART` names over a
    /// Zenoh peer and prints its stages' states as one hash line. Only runs when the parent
    /// starts it (the variable unset: nothing to do).
    #[test]
    fn child_part() {
        let Ok(spec) = std::env::var("FFSTREAM_PART") else { return };
        // "<index> <listen or -> <connect or -> <epochs>"
        let fields: Vec<&str> = spec.split_whitespace().collect();
        let index: usize = fields[0].parse().unwrap();
        let epochs = format!("data.epochs={}", fields[3]);
        let endpoint = |s: &str| if s == "-" { vec![] } else { vec![s.to_string()] };
        let wire = ZenohWire::open(&Peers { listen: endpoint(fields[1]), connect: endpoint(fields[2]) }).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while wire.peers() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut c = config(false);
        c = PipelineConfig::parse(&toml::to_string(&c).unwrap(), "child.toml", &[epochs]).unwrap();
        let outcome = run_cut(&c, &wire, "processes", HEAD_AND_ONE[index]);
        println!("PART {index} {}", digest(&outcome.0));
    }

    /// The stages' tensors as one hex digest (what the processes compare).
    fn digest(states: &[StageState]) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for s in states {
            for (name, shape, values) in &s.tensors {
                h.update(name.as_bytes());
                h.update(format!("{shape:?}").as_bytes());
                for v in values {
                    h.update(v.to_le_bytes());
                }
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The two parts of [`HEAD_AND_ONE`] as two processes of this test binary, peers on a
    /// free loopback port, each training `epochs` epochs.
    fn two_processes(epochs: u32) -> Vec<std::process::Child> {
        let listen = free_endpoint();
        let exe = std::env::current_exe().unwrap();
        (0..2)
            .map(|i| {
                let spec = if i == 0 { format!("0 {listen} - {epochs}") } else { format!("1 - {listen} {epochs}") };
                std::process::Command::new(&exe)
                    .args(["over_zenoh::child_part", "--exact", "--nocapture", "--test-threads=1"])
                    .env("FFSTREAM_PART", spec)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect()
    }

    /// A part killed mid-run: the other part stops within seconds, with an error that names the
    /// edge to the part that vanished (not a clean end, and not after the 60 s stall limit).
    #[test]
    fn a_killed_part_stops_the_other_with_the_edge_named() {
        for killed in [1, 0] {
            let mut children = two_processes(2000);
            std::thread::sleep(Duration::from_secs(3));
            children[killed].kill().unwrap();
            let _ = children[killed].wait();
            let started = Instant::now();
            let other = children.remove(1 - killed).wait_with_output().unwrap();
            let waited = started.elapsed();
            let text = String::from_utf8_lossy(&other.stderr).to_string() + &String::from_utf8_lossy(&other.stdout);
            assert!(
                !other.status.success(),
                "part {} ended cleanly after part {killed} was killed: {text}",
                1 - killed
            );
            assert!(text.contains("vanished") && text.contains("processes/"), "part {killed} killed: {text}");
            assert!(waited < Duration::from_secs(20), "noticed after {waited:?}: {text}");
        }
    }

    #[test]
    fn parts_in_two_processes_end_with_the_weights_hash_of_one_process() {
        let reference = whole(&config(false));
        let children = two_processes(2);
        let mut hashes = Vec::new();
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "part {i} failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
            // The harness prints the test's name on the same line first.
            let tag = format!("PART {i} ");
            let at = stdout.find(&tag).unwrap_or_else(|| panic!("no `{tag}` line from part {i}: {stdout}"));
            hashes.push(stdout[at + tag.len()..].split_whitespace().next().unwrap_or_default().to_string());
        }
        assert_eq!(hashes[0], digest(&reference.0[..1]), "layer1 in process 1");
        assert_eq!(hashes[1], digest(&reference.0[1..]), "layer2 and layer3 in process 2");
    }

    /// mnist-quick, small, placed in two parts listening on `endpoints`.
    struct Placed {
        dir: tempfile::TempDir,
        file: std::path::PathBuf,
    }

    const SETS: [&str; 6] = [
        "data.train_size=1000",
        "data.validation_size=500",
        "stage.1.units=64",
        "stage.2.units=48",
        "stage.3.units=40",
        "stage.4.units=32",
    ];

    impl Placed {
        fn new(endpoints: [&str; 2]) -> Placed {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("placed.toml");
            let text = include_str!("../pipeline/mnist-quick.toml").to_string()
                + &format!(
                    "\n[placement]\nparts = [[\"source\", \"layer1\"], [\"layer2\", \"layer3\", \"layer4\", \"sink\"]]\nendpoints = [\"{}\", \"{}\"]\nstall_s = 60\n",
                    endpoints[0], endpoints[1]
                );
            std::fs::write(&file, text).unwrap();
            Placed { dir, file }
        }

        /// `ffstream run FILE --quiet --runs-dir <dir>/<runs> --set ... <extra>`, run in network
        /// namespace `netns` when given.
        fn command(&self, runs: &str, extra: &[&str], netns: Option<&str>) -> std::process::Command {
            let bin = env!("CARGO_BIN_EXE_ffstream");
            let mut command = match netns {
                Some(ns) => {
                    let mut c = std::process::Command::new("ip");
                    c.args(["netns", "exec", ns, bin]);
                    c
                }
                None => std::process::Command::new(bin),
            };
            command.arg("run").arg(&self.file).args(["--quiet", "--runs-dir"]).arg(self.dir.path().join(runs));
            for s in SETS {
                command.args(["--set", s]);
            }
            command.args(extra);
            command
        }

        fn folder(&self, runs: &str, tag: &str) -> std::path::PathBuf {
            std::fs::read_dir(self.dir.path().join(runs))
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .find(|p| p.file_name().unwrap().to_string_lossy().contains(tag))
                .unwrap_or_else(|| panic!("no run folder with `{tag}` under {runs}"))
        }

        /// The parts' run folders under `runs` hold the shards and the record the same file run
        /// in one process (under `one`) ends with; only the sink's part writes a record.
        fn assert_same_as_one_process(&self, runs: &str) {
            let out = self.command("one", &[], None).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let shard = |folder: std::path::PathBuf, stage: &str| {
                std::fs::read(folder.join(format!("checkpoint/{stage}.e2.safetensors"))).unwrap()
            };
            assert_eq!(shard(self.folder(runs, "part1"), "layer1"), shard(self.folder("one", "seed0"), "layer1"));
            for stage in ["layer2", "layer3", "layer4", "readout"] {
                assert_eq!(
                    shard(self.folder(runs, "part2"), stage),
                    shard(self.folder("one", "seed0"), stage),
                    "{stage}"
                );
            }
            let record = |folder: std::path::PathBuf| -> serde_json::Value {
                serde_json::from_str(&std::fs::read_to_string(folder.join("record.json")).unwrap()).unwrap()
            };
            let (a, b) = (record(self.folder(runs, "part2")), record(self.folder("one", "seed0")));
            assert_eq!(a["metrics"], b["metrics"]);
            assert!(a["metrics"]["test_error_pct"]["softmax"].as_f64().is_some(), "{a}");
            assert!(!self.folder(runs, "part1").join("record.json").exists());
        }
    }

    /// `ffstream run FILE --launch`: the file's [placement] starts two processes on this host,
    /// and they end with the shards and the record of the same file run in one process.
    #[test]
    fn a_launched_placement_records_what_one_process_records() {
        let (a, b) = (free_endpoint(), free_endpoint());
        let placed = Placed::new([&a, &b]);
        let out = placed.command("parts", &["--launch"], None).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("All 2 parts finished"), "{text}");
        placed.assert_same_as_one_process("parts");
    }

    /// The epoch of the checkpoint the run folder `folder` has committed (0: none yet).
    fn committed(folder: &std::path::Path) -> u32 {
        std::fs::read_to_string(folder.join("checkpoint.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|m| m["epoch"].as_u64())
            .unwrap_or(0) as u32
    }

    /// Both parts killed mid-run, then `--launch --resume`: every part restarts from the sink's
    /// part's last checkpoint (the part upstream may have committed one more epoch) and the run
    /// ends with the shards of the same file run in one process without a stop.
    #[test]
    fn killed_parts_resume_from_the_sinks_checkpoint_to_the_same_weights() {
        let (a, b) = (free_endpoint(), free_endpoint());
        let placed = Placed::new([&a, &b]);
        let epochs = ["--set", "data.epochs=40"];
        let mut children: Vec<_> = (1..=2)
            .map(|i| {
                let part = i.to_string();
                let mut args = vec!["--part", &part, "--stamp", "1000"];
                args.extend(epochs);
                placed
                    .command("killed", &args, None)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let sink_folder = || placed.dir.path().join("killed").join("mnist-quick-seed0-part2-1000");
        let started = Instant::now();
        while committed(&sink_folder()) < 3 {
            assert!(started.elapsed() < Duration::from_secs(60), "the sink's part never reached epoch 3");
            std::thread::sleep(Duration::from_millis(10));
        }
        for child in &mut children {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        let at = committed(&sink_folder());
        assert!(at < 40, "killed after the last epoch: nothing to resume");
        let mut resume = std::process::Command::new(env!("CARGO_BIN_EXE_ffstream"));
        resume.args(["run", "--launch", "--quiet", "--resume"]).arg(sink_folder());
        let out = resume.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains(&format!("from epoch {at}")), "{text}");
        let one = placed.command("one", &epochs, None).output().unwrap();
        assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
        let shard = |folder: std::path::PathBuf, stage: &str| {
            std::fs::read(folder.join(format!("checkpoint/{stage}.e40.safetensors"))).unwrap()
        };
        assert_eq!(shard(placed.folder("killed", "part1"), "layer1"), shard(placed.folder("one", "seed0"), "layer1"));
        for stage in ["layer2", "layer3", "layer4", "readout"] {
            assert_eq!(shard(sink_folder(), stage), shard(placed.folder("one", "seed0"), stage), "{stage}");
        }
    }

    /// Two network namespaces joined by a veth pair, each end shaped to 1 Gbit/s (with 1 ms of
    /// delay where the kernel has netem; a token bucket filter where it has not): two "hosts"
    /// with addresses of their own, made by the test and removed when it ends. None where this
    /// process may not make namespaces (not root).
    struct Hosts {
        names: [String; 2],
        addresses: [String; 2],
    }

    impl Hosts {
        fn new() -> Option<Hosts> {
            let id = std::process::id();
            let names = [format!("ffa{id}"), format!("ffb{id}")];
            let net = 10 + id % 240;
            let addresses = [format!("10.77.{net}.1"), format!("10.77.{net}.2")];
            let ip =
                |args: &[&str]| std::process::Command::new("ip").args(args).output().is_ok_and(|o| o.status.success());
            if !ip(&["netns", "add", &names[0]]) {
                eprintln!("skipped: cannot make network namespaces here (needs root and iproute2)");
                return None;
            }
            // Made now, so that a failure below still removes what was made.
            let hosts = Hosts { names, addresses };
            let [a, b] = &hosts.names;
            let (va, vb) = (format!("v{a}"), format!("v{b}"));
            let made = ip(&["netns", "add", b])
                && ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])
                && ip(&["link", "set", &va, "netns", a])
                && ip(&["link", "set", &vb, "netns", b])
                && ip(&["-n", a, "addr", "add", &format!("{}/24", hosts.addresses[0]), "dev", &va])
                && ip(&["-n", b, "addr", "add", &format!("{}/24", hosts.addresses[1]), "dev", &vb])
                && [a, b].iter().all(|ns| ip(&["-n", ns, "link", "set", "lo", "up"]))
                && ip(&["-n", a, "link", "set", &va, "up"])
                && ip(&["-n", b, "link", "set", &vb, "up"]);
            assert!(made, "could not wire the two namespaces");
            for (ns, dev) in [(a, &va), (b, &vb)] {
                // netem for delay and rate where the kernel has it, else a token bucket at the rate.
                let tc = |qdisc: &[&str]| {
                    std::process::Command::new("tc")
                        .args(["-n", ns, "qdisc", "add", "dev", dev, "root"])
                        .args(qdisc)
                        .output()
                        .is_ok_and(|o| o.status.success())
                };
                let shaped = tc(&["netem", "delay", "1ms", "rate", "1gbit"])
                    || tc(&["tbf", "rate", "1gbit", "burst", "128kb", "latency", "50ms"]);
                if !shaped {
                    eprintln!("{dev} runs unshaped: this kernel has neither netem nor tbf");
                }
            }
            Some(hosts)
        }
    }

    impl Drop for Hosts {
        fn drop(&mut self) {
            // Removing a namespace removes its end of the veth pair, and so the pair.
            for ns in &self.names {
                let _ = std::process::Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }

    /// The two parts in two network namespaces, each with its own address, over a link shaped
    /// to 1 Gbit/s: the same shards and record as one process.
    #[test]
    fn parts_on_two_shaped_hosts_record_what_one_process_records() {
        let Some(hosts) = Hosts::new() else { return };
        let endpoints = hosts.addresses.each_ref().map(|a| format!("tcp/{a}:7447"));
        let placed = Placed::new([&endpoints[0], &endpoints[1]]);
        let children: Vec<_> = (0..2)
            .map(|i| {
                let part = (i + 1).to_string();
                placed
                    .command("hosts", &["--part", &part], Some(&hosts.names[i]))
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "part {}: {}", i + 1, String::from_utf8_lossy(&out.stderr));
        }
        placed.assert_same_as_one_process("hosts");
    }
}

/// `[placement]` is checked when the file is read: the chain in order, and only where every
/// measure passes through the pipeline.
#[test]
fn a_placement_is_refused_with_a_sentence_where_it_cannot_run() {
    let placed = |text: &str, parts: &str| {
        let text =
            format!("{text}\n[placement]\nparts = {parts}\nendpoints = [\"tcp/127.0.0.1:1\", \"tcp/127.0.0.1:2\"]\n");
        PipelineConfig::parse(&text, "placed.toml", &[]).map(|_| ()).map_err(|e| e.to_string())
    };
    let quick = include_str!("../pipeline/mnist-quick.toml");
    placed(quick, r#"[["source", "layer1"], ["layer2", "layer3", "layer4", "sink"]]"#).unwrap();
    let e = placed(quick, r#"[["source", "layer2"], ["layer1", "layer3", "layer4", "sink"]]"#).unwrap_err();
    assert!(e.contains("placement") && e.contains("in order"), "{e}");
    let video = include_str!("../pipeline/moving-mnist.toml");
    let e = placed(video, r#"[["source", "layer1"], ["layer2", "layer3", "sink"]]"#).unwrap_err();
    assert!(e.contains("placement") && e.contains("frame stream"), "{e}");
}
