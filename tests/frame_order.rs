//! How Moving MNIST frames reach the stages and the probes (issue 10, item 7): the shuffled
//! epoch plays the stream's own frames in another order, and the probes' one-window-per-sequence
//! sampling gives as many digits as windows.

mod common;

use std::collections::HashSet;

use common::mnist;
use ffstream::config::{PipelineConfig, ProbeSplit};
use ffstream::video::feed::FrameFeed;
use ffstream::video::moving::MovingMnistFeed;
use ffstream::video::Frame;

fn epoch(feed: &mut MovingMnistFeed, epoch: u32) -> Vec<Frame> {
    feed.start_epoch(epoch).unwrap();
    std::iter::from_fn(|| feed.next_frame().unwrap()).collect()
}

fn indices(frames: &[Frame]) -> Vec<u64> {
    frames.iter().map(|f| f.index).collect()
}

#[test]
fn a_shuffled_epoch_plays_the_streams_frames_in_another_order_the_same_on_a_resume() {
    let stream = epoch(&mut MovingMnistFeed::side_by_side(mnist(), 1, 4, 400, 10, ProbeSplit::Test).unwrap(), 2);
    let mut feed = MovingMnistFeed::side_by_side(mnist(), 1, 4, 400, 10, ProbeSplit::Test).unwrap().shuffled(7);
    let shuffled = epoch(&mut feed, 2);
    assert_eq!(shuffled.len(), 400);
    assert_ne!(indices(&shuffled), indices(&stream), "the order must change");
    let (mut a, mut b) = (indices(&shuffled), indices(&stream));
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b, "the same frames");
    let by_index = |frames: &[Frame], i: u64| frames.iter().find(|f| f.index == i).unwrap().pixels.clone();
    assert_eq!(by_index(&shuffled, a[123]), by_index(&stream, a[123]), "the same pixels under each index");
    // Consecutive frames of one sequence are what the stream order puts side by side (every
    // 4th row here); shuffled, few neighbours are of the same sequence.
    let same_sequence_neighbours = shuffled.windows(2).filter(|w| w[0].sequence == w[1].sequence).count();
    assert!(same_sequence_neighbours < 40, "{same_sequence_neighbours} of 399 neighbours share a sequence");
    // A resumed run (a new feed, the same seed and epoch) plays the same order; another epoch another.
    let again =
        epoch(&mut MovingMnistFeed::side_by_side(mnist(), 1, 4, 400, 10, ProbeSplit::Test).unwrap().shuffled(7), 2);
    assert_eq!(indices(&again), indices(&shuffled));
    let other_seed =
        epoch(&mut MovingMnistFeed::side_by_side(mnist(), 1, 4, 400, 10, ProbeSplit::Test).unwrap().shuffled(8), 2);
    assert_ne!(indices(&other_seed), indices(&shuffled));
}

#[test]
fn probe_windows_take_one_window_of_each_sequence_at_times_that_move_along() {
    let feed = MovingMnistFeed::new(mnist(), 1, 400, 10).unwrap();
    for window in [1, 3] {
        let frames = feed.probe_windows(50, window);
        assert_eq!(frames.len(), 50 * window);
        let sequences: HashSet<u64> = frames.iter().map(|f| f.sequence).collect();
        assert_eq!(sequences.len(), 50, "one window per sequence");
        let mut ends = HashSet::new();
        for w in frames.chunks(window) {
            assert!(w.iter().all(|f| f.sequence == w[0].sequence));
            assert!(w.windows(2).all(|p| p[1].index == p[0].index + 1), "consecutive frames");
            ends.insert(w[window - 1].index % 20);
        }
        assert_eq!(ends.len(), 21 - window, "every end time of a sequence is sampled");
        // The windows are the probe stream's own sequences and frames.
        let stream = feed.probe_frames(40);
        let first = &frames[window - 1];
        assert_eq!(first.pixels, stream[first.index as usize % 20].pixels);
    }
}

#[test]
fn shuffled_frames_and_sampled_probes_are_refused_where_they_cannot_apply() {
    let parse = |file: &str, text: &str, o: &[&str]| {
        let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
        PipelineConfig::parse(text, file, &o).map(|_| ()).unwrap_err().to_string()
    };
    let recurrent = include_str!("../pipeline/moving-mnist-recurrent.toml");
    let e = parse("r.toml", recurrent, &["source.order=shuffled"]);
    assert!(e.contains("source.order") && e.contains("recurrent"), "{e}");
    let e = parse("r.toml", recurrent, &["eval.probe_sampling=one_per_sequence"]);
    assert!(e.contains("eval.probe_sampling") && e.contains("whole sequences"), "{e}");
    let video = include_str!("../pipeline/video-unsupervised.toml");
    let e = parse("v.toml", video, &["eval.probe_sampling=one_per_sequence"]);
    assert!(e.contains("eval.probe_sampling"), "{e}");
    let e = parse("v.toml", video, &["eval.probe_split=validation"]);
    assert!(e.contains("eval.probe_split") && e.contains("Moving MNIST"), "{e}");
    let dense = include_str!("../pipeline/moving-mnist.toml");
    let e = parse("d.toml", dense, &["source.order=shuffled", "head.window=2"]);
    assert!(e.contains("head.window = 1"), "{e}");
    let conv = include_str!("../pipeline/moving-mnist-conv.toml");
    let ok = PipelineConfig::parse(
        conv,
        "c.toml",
        &["source.order=shuffled".into(), "eval.probe_sampling=one_per_sequence".into()],
    );
    assert!(ok.is_ok(), "{:?}", ok.err());
}

/// With validation probes the stream trains on other digits than with test probes (MNIST's
/// first 50,000 training images), and its probe windows are digits of neither training stream
/// nor of the test probes.
#[test]
fn validation_probes_change_the_held_out_frames_and_keep_the_training_stream_apart() {
    let test = MovingMnistFeed::side_by_side(mnist(), 1, 1, 400, 10, ProbeSplit::Test).unwrap();
    let validation = MovingMnistFeed::side_by_side(mnist(), 1, 1, 400, 10, ProbeSplit::Validation).unwrap();
    let (a, b) = (test.probe_windows(20, 1), validation.probe_windows(20, 1));
    assert_eq!(indices(&a), indices(&b), "numbered alike");
    assert!(a.iter().zip(&b).all(|(x, y)| x.pixels != y.pixels), "other digits at other places");
    // Training frames: the same sequence seeds, so the same paths; digits from 50,000 images
    // instead of 60,000, so mostly other digits.
    let (ta, tb) = (test.train_frames(200), validation.train_frames(200));
    let differ = ta.iter().zip(&tb).filter(|(x, y)| x.pixels != y.pixels).count();
    assert!(differ > 150, "{differ} of 200 training frames differ");
}
