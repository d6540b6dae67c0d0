//! The pipeline against its single-threaded reference, locality, checkpoints and failures.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::synthetic_mnist;

use ffstream::config::build::{build_head, build_sink, build_stages};
use ffstream::config::PipelineConfig;
use ffstream::error::StageError;
use ffstream::packet::{Packet, StageState};
use ffstream::runtime::{self, Ending, EpochReport, Mode, PipelineError, PipelineStats, Wiring};
use ffstream::stage::Stage;

fn config(extra: &[&str]) -> PipelineConfig {
    let text = include_str!("../pipeline/mnist-quick.toml");
    let mut overrides: Vec<String> = vec![
        "model.layers=[48, 40, 32]".into(),
        "data.epochs=2".into(),
        "data.batch=50".into(),
        "head.prediction_delay=2".into(),
        "eval.batch=50".into(),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    PipelineConfig::parse(text, "mnist-quick.toml", &overrides).unwrap()
}

/// Runs a config on the synthetic data; returns the final stage states and every epoch report.
fn run(config: &PipelineConfig, mode: Mode) -> (Vec<StageState>, Vec<EpochReport>) {
    run_wired(config, Wiring::new(mode, 1))
}

fn run_wired(config: &PipelineConfig, wiring: Wiring) -> (Vec<StageState>, Vec<EpochReport>) {
    let data = synthetic_mnist();
    let mut head = build_head(config, data, 1, Arc::new(AtomicBool::new(false)));
    let mut sink = build_sink(config);
    let stats = PipelineStats::new(&config.stage_names());
    let mut reports = Vec::new();
    let (stages, completed) = runtime::run(&mut head, build_stages(config), &mut sink, wiring, &stats, &mut |r| {
        reports.push(r);
        Ok(())
    })
    .unwrap();
    assert_eq!(completed, Ending::Finished);
    // Every frame is processed: the source's count reaches the sink.
    assert_eq!(stats.source.totals().frames, stats.sink.totals().frames);
    assert!(stats.sink.totals().frames > 0);
    (stages.iter().map(|s| s.snapshot()).collect(), reports)
}

#[test]
fn threaded_pipeline_ends_with_the_same_weights_as_lockstep() {
    let c = config(&[]);
    let (threaded, reports_t) = run(&c, Mode::Threaded);
    let (lockstep, reports_l) = run(&c, Mode::Lockstep);
    assert_eq!(threaded.len(), 3);
    for (a, b) in threaded.iter().zip(&lockstep) {
        assert_eq!(a.tensors, b.tensors, "stage {} differs", a.stage);
    }
    // Same snapshots at every epoch boundary, same test scores.
    for (a, b) in reports_t.iter().zip(&reports_l) {
        assert_eq!(a.states.len(), 4, "3 stages and the readout");
        for (x, y) in a.states.iter().zip(&b.states) {
            assert_eq!(x.tensors, y.tensors);
        }
        assert_eq!(a.measures, b.measures);
    }
    // The stages really learned something (weights moved), so the comparison is not vacuous.
    let fresh = build_stages(&c)[0].snapshot();
    assert_ne!(fresh.tensors[0].2, threaded[0].tensors[0].2);
}

#[test]
fn core_tokens_change_the_speed_not_the_weights() {
    // At most 1 or 2 of the 3 stages compute at once; the weights and scores are lockstep's.
    let c = config(&[]);
    let (lockstep, reports_l) = run(&c, Mode::Lockstep);
    for tokens in [1, 2] {
        let (threaded, reports_t) = run_wired(&c, Wiring { core_tokens: tokens, ..Wiring::new(Mode::Threaded, 1) });
        for (a, b) in threaded.iter().zip(&lockstep) {
            assert_eq!(a.tensors, b.tensors, "stage {} differs with {tokens} tokens", a.stage);
        }
        let measures = |r: &[EpochReport]| r.iter().map(|r| r.measures.clone()).collect::<Vec<_>>();
        assert_eq!(measures(&reports_t), measures(&reports_l));
    }
}

/// Wake and sleep on MNIST (issue 4, first part): 3 packets awake, 2 asleep, hard negatives
/// from the logits the readout gave each remembered frame. The phase is in the packets, so the
/// threaded stages end bit-identical to lockstep ones (the head also waits for the logits of
/// every frame seen awake before it sleeps, which this exercises threaded).
#[test]
fn wake_and_sleep_on_mnist_match_lockstep_and_the_schedule() {
    let c = config(&["schedule={ kind = \"fixed\", wake = 3, sleep = 2 }", "head.replay=120", "data.epochs=1"]);
    let (threaded, _) = run(&c, Mode::Threaded);
    let (lockstep, _) = run(&c, Mode::Lockstep);
    for (a, b) in threaded.iter().zip(&lockstep) {
        assert_eq!(a.tensors, b.tensors, "stage {} differs", a.stage);
    }
    let fresh = build_stages(&c)[0].snapshot();
    assert_ne!(fresh.tensors[0].2, threaded[0].tensors[0].2, "the stages learned nothing");
}

/// Phases longer than an epoch: 12 training packets an epoch, 15 awake, 2 asleep. The first
/// sleep comes 3 packets into the second epoch, so 2 sleep packets in all (none if every epoch
/// restarted the phase).
#[test]
fn a_wake_phase_runs_on_into_the_next_epoch() {
    let packets = |wake: usize| {
        let schedule = format!("schedule={{ kind = \"fixed\", wake = {wake}, sleep = 2 }}");
        let c = config(&[&schedule, "head.replay=120"]);
        let mut head = build_head(&c, synthetic_mnist(), 1, Arc::new(AtomicBool::new(false)));
        let mut sink = build_sink(&c);
        let stats = PipelineStats::new(&c.stage_names());
        runtime::run(&mut head, build_stages(&c), &mut sink, Wiring::new(Mode::Lockstep, 1), &stats, &mut |_| Ok(()))
            .unwrap();
        stats.stages[0].totals().packets
    };
    // A phase of 1,000 never ends in 24 packets: no sleep at all.
    assert_eq!(packets(15), packets(1000) + 2);
    assert_eq!(packets(5), packets(1000) + 2 * 4, "24 wake packets, a sleep after every 5");
}

#[test]
fn a_stage_never_depends_on_the_stages_after_it() {
    // Random negatives: the head does not read predictions, so layers 1-2 must be bit-identical
    // whatever layer 3 is (or whether there is one).
    let a = run(&config(&["head.labels=\"random\"", "model.layers=[48, 40, 32]"]), Mode::Threaded).0;
    let b = run(&config(&["head.labels=\"random\"", "model.layers=[48, 40, 7]"]), Mode::Threaded).0;
    let c =
        run(&config(&["head.labels=\"random\"", "model.layers=[48, 40]", "model.readout_from=2"]), Mode::Threaded).0;
    for k in 0..2 {
        assert_eq!(a[k].tensors, b[k].tensors, "layer {} changed with layer 3's width", k + 1);
        assert_eq!(a[k].tensors, c[k].tensors, "layer {} changed without layer 3", k + 1);
    }
    assert_ne!(a[2].tensors[0].1, b[2].tensors[0].1);
}

#[test]
fn prediction_delay_changes_the_stream_but_every_mode_agrees_with_itself() {
    // Delay 0 (exact Matlab order) in both modes, and delay 0 vs 2 differ (the negatives do).
    let exact = config(&["head.prediction_delay=0"]);
    let (t, _) = run(&exact, Mode::Threaded);
    let (l, _) = run(&exact, Mode::Lockstep);
    assert_eq!(t[0].tensors, l[0].tensors);
    let (delayed, _) = run(&config(&[]), Mode::Lockstep);
    assert_ne!(delayed[0].tensors, l[0].tensors);
}

struct Exploding;

impl Stage for Exploding {
    fn name(&self) -> &str {
        "exploding"
    }
    fn process(&mut self, packet: Packet) -> Result<Packet, StageError> {
        if packet.seq >= 3 {
            panic!("boom at packet {}", packet.seq);
        }
        Ok(packet)
    }
    fn snapshot(&self) -> StageState {
        StageState::default()
    }
    fn restore(&mut self, _: &StageState) -> Result<(), ffstream::error::RestoreError> {
        Ok(())
    }
}

#[test]
fn a_panicking_stage_becomes_an_error_not_a_hang() {
    let c = config(&["model.layers=[16]", "model.goodness_from=1", "model.readout_from=1"]);
    let mut stages = build_stages(&c);
    stages.insert(0, Box::new(Exploding));
    let mut names = vec!["exploding".to_string()];
    names.extend(c.stage_names());
    let mut head = build_head(&c, synthetic_mnist(), 1, Arc::new(AtomicBool::new(false)));
    let mut sink = build_sink(&c);
    let stats = PipelineStats::new(&names);
    let result = runtime::run(&mut head, stages, &mut sink, Wiring::new(Mode::Threaded, 1), &stats, &mut |_| Ok(()));
    match result {
        Err(PipelineError::Stage(StageError::Panicked { stage, message })) => {
            assert_eq!(stage, "exploding");
            assert!(message.contains("boom at packet 3"), "{message}");
        }
        other => panic!("expected a panic error, got {:?}", other.map(|(_, c)| c)),
    }
}

#[test]
fn stopping_early_ends_the_stream_cleanly() {
    let c = config(&["data.epochs=50"]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut head = build_head(&c, synthetic_mnist(), 1, Arc::clone(&stop));
    let mut sink = build_sink(&c);
    let stats = PipelineStats::new(&c.stage_names());
    let mut epochs = 0;
    let (_, completed) =
        runtime::run(&mut head, build_stages(&c), &mut sink, Wiring::new(Mode::Threaded, 2), &stats, &mut |r| {
            epochs = r.epoch;
            if r.epoch == 2 {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(completed, Ending::Stopped);
    assert!((2..50).contains(&epochs));
}

/// Files written before `[source]`, `[head]` and `[sink]` (old run folders resume from
/// theirs) read as the same pipeline as today's shipped file.
#[test]
fn old_format_files_read_as_todays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = std::fs::read_dir(dir.join("tests/fixtures/old-format")).unwrap();
    let mut checked = 0;
    for entry in fixtures {
        let old = entry.unwrap().path();
        let name = old.file_name().unwrap().to_owned();
        let old_text = std::fs::read_to_string(&old).unwrap();
        assert!(old_text.contains("dataset = "), "{old:?} is not in the old format");
        let then = PipelineConfig::load(&old, &[]).unwrap_or_else(|e| panic!("{old:?}: {e}"));
        let now = PipelineConfig::load(&dir.join("pipeline").join(&name), &[]).unwrap();
        assert_eq!(then, now, "{name:?}");
        checked += 1;
    }
    assert!(checked >= 5, "{checked}");
}
