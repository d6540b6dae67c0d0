//! The recurrent net (paper §3.4) through the runtime: feedback edges, threaded against
//! lockstep for both delays, what the delay changes, and the `[[stage]]` tables that describe it.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::synthetic_mnist;

use ffstream::config::build::{build_head, build_sink, build_stages};
use ffstream::config::PipelineConfig;
use ffstream::error::StageError;
use ffstream::packet::StageState;
use ffstream::runtime::{Ending, EpochReport, Mode, PipelineError, PipelineStats, Wiring};
use ffstream::session::run_labelled;

fn config(extra: &[&str]) -> PipelineConfig {
    let text = include_str!("../pipeline/mnist-recurrent.toml");
    let mut overrides: Vec<String> = vec![
        "stage.1.units=40".into(),
        "stage.2.units=32".into(),
        "data.epochs=2".into(),
        "data.batch=50".into(),
        "recurrent.iterations=4".into(),
        "recurrent.learn_steps=[1, 4]".into(),
        "recurrent.goodness_steps=[2, 3]".into(),
        "head.prediction_delay=2".into(),
        "eval.every=1".into(),
        "eval.batch=50".into(),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    PipelineConfig::parse(text, "mnist-recurrent.toml", &overrides).unwrap()
}

fn run(config: &PipelineConfig, mode: Mode, delay: usize) -> (Vec<StageState>, Vec<EpochReport>, PipelineStats) {
    let mut head = build_head(config, synthetic_mnist(), 1, Arc::new(AtomicBool::new(false)));
    let mut sink = build_sink(config);
    let stats = PipelineStats::new(&config.stage_names());
    let mut reports = Vec::new();
    let wiring = Wiring { mode, capacity: 2, feedback_delay: delay, shards: None, core_tokens: 0 };
    let (stages, completed) =
        run_labelled(config, &mut head, build_stages(config), &mut sink, wiring, &stats, &mut |r| {
            reports.push(r);
            Ok(())
        })
        .unwrap();
    assert_eq!(completed, Ending::Finished);
    (stages.iter().map(|s| s.snapshot()).collect(), reports, stats)
}

#[test]
fn threaded_recurrent_net_equals_lockstep_for_both_delays() {
    let c = config(&[]);
    let mut by_delay = Vec::new();
    for delay in [1, 2] {
        let (threaded, reports_t, stats) = run(&c, Mode::Threaded, delay);
        let (lockstep, reports_l, _) = run(&c, Mode::Lockstep, delay);
        for (a, b) in threaded.iter().zip(&lockstep) {
            assert_eq!(a.tensors, b.tensors, "d={delay}: stage {} differs", a.stage);
        }
        for (a, b) in reports_t.iter().zip(&reports_l) {
            assert_eq!(a.measures, b.measures, "d={delay}");
        }
        // Every frame counted once at the source and once at the sink, although every stage
        // saw it for 5 steps.
        assert_eq!(stats.source.totals().frames, stats.sink.totals().frames);
        assert_eq!(stats.stages[0].totals().packets, stats.sink.totals().packets);
        assert_eq!(stats.stages[0].totals().rows % 5, 0, "every row 5 times");
        by_delay.push(threaded);
    }
    // The delay changes what layer 1 reads from above, so it changes what it learns.
    assert_ne!(by_delay[0][0].tensors, by_delay[1][0].tensors);
    // The top-down weights learned (not only the bottom-up ones).
    let fresh = build_stages(&c)[0].snapshot();
    let top_down = |s: &StageState| s.tensors.iter().find(|t| t.0 == "layer1.top_down").unwrap().2.clone();
    assert_ne!(top_down(&fresh), top_down(&by_delay[0][0]));
}

#[test]
fn the_recurrent_net_learns_the_synthetic_classes() {
    let c = config(&["data.epochs=4", "optimizer.lr=0.01"]);
    let (_, reports, _) = run(&c, Mode::Threaded, 1);
    let last = &reports.last().unwrap().measures;
    assert_eq!(last["test.images"], 200.0);
    assert!(last["test.goodness"] < 50.0, "goodness test error {}%", last["test.goodness"]);
    assert!(last["test.softmax"] < 50.0, "softmax test error {}%", last["test.softmax"]);
}

#[test]
fn a_recurrent_stage_under_a_dense_one_is_a_topology_error() {
    let c = config(&[]);
    let mut stages = build_stages(&c);
    // A file mixing the kinds does not parse: a recurrent net mixes no kinds yet.
    let text = include_str!("../pipeline/mnist-recurrent.toml");
    let i = text.rfind("kind = \"ff_recurrent\"").unwrap();
    let mixed =
        format!("{}kind = \"ff_dense\"\nunits = 2000\n{}", &text[..i], &text[i..].splitn(4, '\n').nth(3).unwrap());
    let err = PipelineConfig::parse(&mixed, "t.toml", &[]).unwrap_err().to_string();
    assert!(err.contains("stage.2.kind"), "{err}");
    // Built by hand, the runtime refuses it before starting a thread.
    let ff = ffstream::stage::FfSettings {
        goodness: Default::default(),
        threshold: None,
        temperature: 1.0,
        peer_normalization: 0.0,
        rule: ffstream::ff::optim::Rule::Matlab,
        lr: 0.01,
        weight_cost: 0.0,
        schedule: Default::default(),
        epochs: 1,
        counts_for_goodness: true,
        feeds_readout: true,
        seed: 0,
        threads: 1,
    };
    let top = ffstream::stage::FfDenseConfig { name: "layer2".into(), layer: 2, inputs: 40, units: 32, ff }.build();
    stages[1] = Box::new(top);
    assert!(stages[0].reads_above() && !stages[1].sends_below());
    let mut head = build_head(&c, synthetic_mnist(), 1, Arc::new(AtomicBool::new(false)));
    let mut sink = build_sink(&c);
    let stats = PipelineStats::new(&c.stage_names());
    let result =
        run_labelled(&c, &mut head, stages, &mut sink, Wiring::new(Mode::Threaded, 1), &stats, &mut |_| Ok(()));
    match result {
        Err(PipelineError::Stage(StageError::Topology { stage, reason })) => {
            assert_eq!(stage, "layer1");
            assert!(reason.contains("layer2"), "{reason}");
        }
        other => panic!("expected a topology error, got {:?}", other.map(|(_, c)| c)),
    }
}

#[test]
fn stage_tables_are_typed_and_reachable_by_set() {
    let text = include_str!("../pipeline/mnist-recurrent.toml");
    // A setting of another kind does not parse, and the error names the key.
    let bad = text.replacen("kind = \"ff_recurrent\"", "kind = \"ff_dense\"", 1);
    let err = PipelineConfig::parse(&bad, "t.toml", &[]).unwrap_err().to_string();
    assert!(err.contains("damping"), "{err}");
    // An unknown kind is named.
    let bad = text.replacen("kind = \"ff_recurrent\"", "kind = \"ff_sideways\"", 1);
    let err = PipelineConfig::parse(&bad, "t.toml", &[]).unwrap_err().to_string();
    assert!(err.contains("ff_sideways"), "{err}");
    // `--set stage.N.key` reaches the N-th table (1-based, as the stages are named).
    let c = PipelineConfig::parse(text, "t.toml", &["stage.2.units=123".into(), "stage.1.damping=0.5".into()]).unwrap();
    assert_eq!(c.model.layers, vec![2000, 123]);
    match &c.stages[0] {
        ffstream::config::StageSpec::FfRecurrent(s) => assert_eq!(s.damping, 0.5),
        other => panic!("{other:?}"),
    }
    // A table the file does not have is named, not made up.
    let err = PipelineConfig::parse(text, "t.toml", &["stage.3.units=5".into()]).unwrap_err().to_string();
    assert!(err.contains("stage.3") && err.contains("2 [[stage]] tables"), "{err}");
    // Out-of-range values name the key.
    let err = PipelineConfig::parse(text, "t.toml", &["stage.1.damping=1.5".into()]).unwrap_err().to_string();
    assert!(err.contains("stage.1.damping"), "{err}");
    let err = PipelineConfig::parse(text, "t.toml", &["pipeline.feedback_delay=0".into()]).unwrap_err().to_string();
    assert!(err.contains("feedback_delay"), "{err}");
    // The resolved file (written to every run folder) parses again to the same config.
    let again = PipelineConfig::parse(&toml::to_string(&c).unwrap(), "resolved", &[]).unwrap();
    assert_eq!(again, c);
}

#[test]
fn model_layers_on_the_command_line_resizes_a_plain_dense_chain_only() {
    // The shipped dense nets name their stages; `--set model.layers` still resizes them.
    let text = include_str!("../pipeline/mnist-quick.toml");
    let shipped = PipelineConfig::parse(text, "q.toml", &[]).unwrap();
    assert_eq!((shipped.stages.len(), shipped.model.layers.clone()), (4, vec![500; 4]));
    let cut = PipelineConfig::parse(text, "q.toml", &["model.layers=[100,50]".into()]).unwrap();
    assert_eq!(cut.model.layers, vec![100, 50]);
    assert_eq!(cut.stage_names(), ["layer1", "layer2"]);
    // A stage with a setting of its own is not silently replaced.
    let second = text.match_indices("units = 500").nth(1).unwrap().0;
    let tuned = format!("{}units = 500\nthreads = 2{}", &text[..second], &text[second + "units = 500".len()..]);
    assert_eq!(PipelineConfig::parse(&tuned, "t.toml", &[]).unwrap().stages[1].threads(), 2);
    let err = PipelineConfig::parse(&tuned, "t.toml", &["model.layers=[100]".into()]).unwrap_err().to_string();
    assert!(err.contains("stage 2") && err.contains("stage.N.units"), "{err}");
    let recurrent = include_str!("../pipeline/mnist-recurrent.toml");
    let err = PipelineConfig::parse(recurrent, "r.toml", &["model.layers=[100]".into()]).unwrap_err().to_string();
    assert!(err.contains("stage 1"), "{err}");
}

#[test]
fn a_recurrent_stage_restored_from_its_snapshot_continues_exactly() {
    let c = config(&[]);
    let (trained, _, _) = run(&c, Mode::Lockstep, 1);
    let state = StageState { stage: "all".into(), tensors: trained.iter().flat_map(|s| s.tensors.clone()).collect() };
    let mut fresh = build_stages(&c);
    for stage in fresh.iter_mut() {
        stage.restore(&state).unwrap();
    }
    for (restored, original) in fresh.iter().zip(&trained) {
        assert_eq!(restored.snapshot().tensors, original.tensors, "{}", original.stage);
    }
    // A state of another shape is refused with the tensor's name.
    let mut wrong = build_stages(&config(&["stage.1.units=41"]));
    let err = wrong[0].restore(&state).unwrap_err().to_string();
    assert!(err.contains("layer1.weights"), "{err}");
}

/// The same net with `ff_local_recurrent` stages on the 28x28 image: 5x5 fields up (padding 2)
/// with `channels` units at each position, 5x5 fields down from the map above, the label layer
/// into the top one (the paper's CIFAR-10 nets, small).
fn local_config(channels: [usize; 2], extra: &[&str]) -> PipelineConfig {
    let text = include_str!("../pipeline/mnist-recurrent.toml");
    let dense = "[[stage]]\nkind = \"ff_recurrent\"\nunits = 2000\ndamping = 0.3\n";
    assert_eq!(text.matches(dense).count(), 2);
    let mut local = text.to_string();
    for c in channels {
        let table = format!(
            "[[stage]]\nkind = \"ff_local_recurrent\"\nchannels = {c}\nfield = 5\npadding = 2\ntop_down_field = 5\n"
        );
        local = local.replacen(dense, &table, 1);
    }
    let mut overrides: Vec<String> = [
        "data.epochs=2",
        "data.batch=50",
        "recurrent.iterations=4",
        "recurrent.learn_steps=[1, 4]",
        "recurrent.goodness_steps=[2, 3]",
        "head.prediction_delay=2",
        "eval.every=1",
        "eval.batch=50",
    ]
    .map(String::from)
    .to_vec();
    overrides.extend(extra.iter().map(|s| s.to_string()));
    PipelineConfig::parse(&local, "local-recurrent.toml", &overrides).unwrap()
}

#[test]
fn a_local_recurrent_net_runs_threaded_as_lockstep_and_learns_top_down() {
    let c = local_config([1, 1], &[]);
    assert_eq!(c.model.layers, vec![784, 784], "a 28x28 map of 1 unit a position in each layer");
    for delay in [1, 2] {
        let (threaded, reports_t, _) = run(&c, Mode::Threaded, delay);
        let (lockstep, reports_l, _) = run(&c, Mode::Lockstep, delay);
        for (a, b) in threaded.iter().zip(&lockstep) {
            assert_eq!(a.tensors, b.tensors, "d={delay}: stage {} differs", a.stage);
        }
        for (a, b) in reports_t.iter().zip(&reports_l) {
            assert_eq!(a.measures, b.measures, "d={delay}");
        }
        // Layer 1's top-down fields (5x5 on layer 2's 28x28 map) and layer 2's label weights
        // (10 per unit, dense) both learned; off-field weights stayed zero.
        let fresh = build_stages(&c);
        let tensor = |s: &StageState, name: &str| s.tensors.iter().find(|t| t.0 == name).unwrap().clone();
        for (stage, (name, shape)) in [(0, ("layer1.top_down", vec![784, 25])), (1, ("layer2.top_down", vec![10, 784]))]
        {
            let (before, after) = (tensor(&fresh[stage].snapshot(), name), tensor(&threaded[stage], name));
            assert_eq!(after.1, shape, "{name}");
            assert_ne!(before.2, after.2, "{name} learned nothing");
            let zeros = |t: &(String, Vec<usize>, Vec<f32>)| t.2.iter().filter(|v| **v == 0.0).count();
            assert_eq!(zeros(&before), zeros(&after), "{name}: the weights off the map stay zero");
        }
    }
}

#[test]
fn the_local_recurrent_net_learns_the_synthetic_classes() {
    let c = local_config([2, 2], &["data.epochs=4", "optimizer.lr=0.01"]);
    let (_, reports, _) = run(&c, Mode::Threaded, 1);
    let last = &reports.last().unwrap().measures;
    assert!(last["test.goodness"] < 50.0, "goodness test error {}%", last["test.goodness"]);
    assert!(last["test.softmax"] < 50.0, "softmax test error {}%", last["test.softmax"]);
}

#[test]
fn local_top_down_fields_must_fit_the_map_above() {
    let text = include_str!("../pipeline/cifar10-ff-2layer-minssq.toml");
    for (set, key) in [
        ("stage.1.top_down_field=10", "stage.1.top_down_field"), // an even side has no centre
        ("stage.2.stride=2", "stage.1.top_down_field"),          // layer 2 makes a 16x16 map
    ] {
        let err = PipelineConfig::parse(text, "c.toml", &[set.to_string()]).unwrap_err().to_string();
        assert!(err.contains(key), "{set}: {err}");
    }
    let table =
        "kind = \"ff_local_recurrent\"\nchannels = 3\nfield = 11\npadding = 5\ntop_down_field = 11\ndamping = 0.3\n";
    assert_eq!(text.matches(table).count(), 2);
    let mixed = text.replacen(table, "kind = \"ff_local\"\nchannels = 3\nfield = 11\npadding = 5\n", 1);
    let err = PipelineConfig::parse(&mixed, "c.toml", &[]).unwrap_err().to_string();
    assert!(err.contains("stage.1.kind"), "{err}");
}
