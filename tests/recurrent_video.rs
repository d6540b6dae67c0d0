//! Video through the recurrent net (issue 9, item 7): Moving MNIST sequences side by side, the
//! state of every stage carried from frame to frame, threaded equal to lockstep.

mod common;

use common::{data_dir, mnist};
use ffstream::config::build::build_stages_for;
use ffstream::config::PipelineConfig;
use ffstream::packet::{Packet, Purpose};
use ffstream::runtime::Mode;
use ffstream::session::{self, RunOptions};
use ffstream::video::feed::FrameFeed;
use ffstream::video::moving::MovingMnistFeed;
use ndarray::Array2;

/// The shipped pipeline, cut to seconds.
fn config(extra: &[&str]) -> PipelineConfig {
    let mut o: Vec<String> = [
        "stage.1.units=48",
        "stage.2.units=32",
        "data.epochs=2",
        "data.batch=20",
        "source.streams=20",
        "data.frames_per_epoch=800",
        "sink.eval_windows=60",
        "eval.probe_frames=600",
        "sink.backprop_twin=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.extend(extra.iter().map(|s| s.to_string()));
    PipelineConfig::parse(include_str!("../pipeline/moving-mnist-recurrent.toml"), "mmr.toml", &o).unwrap()
}

#[test]
fn streams_side_by_side_put_stream_j_in_row_j() {
    let frames = |feed: &mut MovingMnistFeed, n: usize| {
        feed.start_epoch(1).unwrap();
        (0..n).map(|_| feed.next_frame().unwrap().unwrap()).collect::<Vec<_>>()
    };
    let mut one = MovingMnistFeed::new(mnist(), 1, 400, 10).unwrap();
    let mut four = MovingMnistFeed::side_by_side(mnist(), 1, 4, 400, 10, ffstream::config::ProbeSplit::Test).unwrap();
    let (one, four) = (frames(&mut one, 160), frames(&mut four, 160));
    // Frame t·4 + j of the side-by-side feed is frame t of the j-th sequence of its group.
    for group in 0..2 {
        for t in 0..20 {
            for j in 0..4 {
                let side = &four[group * 80 + t * 4 + j];
                let alone = &one[(group * 4 + j) * 20 + t];
                assert_eq!((side.sequence, side.index, &side.labels), (alone.sequence, alone.index, &alone.labels));
                assert_eq!(side.pixels, alone.pixels);
            }
        }
    }
}

#[test]
fn a_stage_carries_its_state_from_frame_to_frame() {
    let config = config(&[]);
    let frame = |seed: f32| Array2::from_shape_fn((20, 4096), |(i, j)| ((i * 7 + j) as f32 * seed).sin().abs());
    let packet =
        |seq: u64, x: Array2<f32>| Packet { positives: 0, neutral: 20, ..Packet::new(seq, 1, Purpose::Test, x) };
    let run = |frames: &[Array2<f32>]| {
        let mut stages = build_stages_for(&config, 4096);
        let mut out = None;
        for (seq, x) in frames.iter().enumerate() {
            out = Some(stages[0].process(packet(seq as u64, x.clone())).unwrap().x);
        }
        out.unwrap()
    };
    let (a, b) = (frame(0.37), frame(0.91));
    let alone = run(std::slice::from_ref(&b));
    let after_a = run(&[a.clone(), b.clone()]);
    assert_ne!(alone, after_a, "the frame before must change the state");
    assert_eq!(after_a, run(&[a, b]), "and the same past gives the same state");
    // The dense twin on the same frames has no memory.
    let dense = PipelineConfig::parse(
        include_str!("../pipeline/moving-mnist-recurrent-ff.toml"),
        "ff.toml",
        &["stage.1.units=48".into(), "stage.2.units=32".into()],
    )
    .unwrap();
    let mut one = build_stages_for(&dense, 4096);
    let mut two = build_stages_for(&dense, 4096);
    two[0].process(packet(0, frame(0.37))).unwrap();
    assert_eq!(one[0].process(packet(1, frame(0.91))).unwrap().x, two[0].process(packet(1, frame(0.91))).unwrap().x);
}

#[test]
fn the_recurrent_video_net_runs_threaded_as_lockstep() {
    let runs = tempfile::tempdir().unwrap();
    let options =
        RunOptions { data_dir: Some(data_dir()), runs_dir: runs.path().into(), quiet: true, ..Default::default() };
    let mut weights = Vec::new();
    for mode in [Mode::Threaded, Mode::Lockstep] {
        let mut c = config(&[]);
        c.name = format!("mmr-{mode:?}");
        c.pipeline.as_mut().unwrap().mode = mode;
        let outcome = session::run(&c, &options).unwrap();
        assert!(outcome.completed);
        let test = &outcome.record.metrics.test_error_pct;
        for key in ["probe.layer1", "probe.layer2", "probe_random.layer1", "probe_random.layer2"] {
            assert!(test.get(key).is_some_and(|v| (0.0..=100.0).contains(v)), "{key} in {test:?}");
        }
        let loaded = ffstream::checkpoint::load_run(&outcome.run_dir).unwrap();
        let mut tensors = loaded.state.tensors;
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        weights.push((tensors, outcome.record.metrics));
    }
    let (threaded, lockstep) = (&weights[0], &weights[1]);
    let differ: Vec<&str> =
        threaded.0.iter().zip(&lockstep.0).filter(|(a, b)| a != b).map(|(a, _)| a.0.as_str()).collect();
    assert!(differ.is_empty(), "threaded and lockstep differ in {differ:?}");
    assert_eq!(threaded.1, lockstep.1, "threaded and lockstep measure differently");
}

#[test]
fn a_recurrent_video_pipeline_names_what_does_not_fit() {
    let text = include_str!("../pipeline/moving-mnist-recurrent.toml");
    for (set, key) in [
        ("source.streams=50", "source.streams"),
        ("head.window=2", "head.window"),
        ("recurrent.carry_state=false", "recurrent.carry_state"),
        ("recurrent.iterations=4", "recurrent.iterations"),
    ] {
        let err = PipelineConfig::parse(text, "mmr.toml", &[set.into()]).unwrap_err().to_string();
        assert!(err.contains(key), "--set {set}: {err}");
    }
}
