//! Moving MNIST "MMNIST-SM64 v1" against the golden values of `samples/MOVING_MNIST.md`, on the
//! real MNIST found through $FFSTREAM_DATA (as CI sets it).

use std::path::PathBuf;
use std::sync::OnceLock;

use ffstream::data::moving_mnist::{
    MovingMnist, MovingMnistConfig, MovingSplit, Overlap, Sequence, StreamFrame, FRAMES_PER_SEQUENCE, FRAME_PIXELS,
};
use ffstream::data::Labelled;
use sha2::{Digest, Sha256};

fn data_dir() -> PathBuf {
    let dir =
        std::env::var_os("FFSTREAM_DATA").expect("set FFSTREAM_DATA to the folder holding mnist/ (CI: ../shared/data)");
    PathBuf::from(dir)
}

/// MNIST is loaded (and its four files hashed) once for all tests of this file.
fn mnist() -> &'static Labelled {
    static MNIST: OnceLock<Labelled> = OnceLock::new();
    MNIST.get_or_init(|| Labelled::mnist(Some(&data_dir())).unwrap())
}

fn generator(split: MovingSplit) -> MovingMnist {
    MovingMnist::new(mnist(), split).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Per-digit top-left lists: what MOVING_MNIST.md says to compare first when a hash differs.
fn trajectories(seqs: &[Sequence]) -> String {
    let mut text = String::new();
    for seq in seqs {
        for (d, digit) in seq.digits.iter().enumerate() {
            let path: Vec<(u8, u8)> = seq.latents.iter().map(|l| l.positions[d]).collect();
            text += &format!("\n  seq {} digit {d} {digit:?}: {path:?}", seq.index);
        }
    }
    text
}

fn assert_hash(seqs: &[Sequence], expected: &str, what: &str) {
    let bytes: Vec<u8> = seqs.iter().flat_map(|s| s.frames.iter().copied()).collect();
    let got = sha256_hex(&bytes);
    if got != expected {
        // The first sequences are enough to locate a flipped truncation.
        let shown = &seqs[..seqs.len().min(3)];
        panic!("{what}: sha256 {got}, expected {expected}; top-left per digit:{}", trajectories(shown));
    }
}

#[test]
fn train_sequence_0_matches_the_golden_digits_positions_and_hashes() {
    let seq = generator(MovingSplit::Train).sequence(0);
    let pairs: Vec<(usize, u8)> = seq.digits.iter().map(|d| (d.source_index, d.label)).collect();
    assert_eq!(pairs, [(52998, 7), (6380, 1)]);
    assert_eq!(seq.frames.len(), FRAMES_PER_SEQUENCE * FRAME_PIXELS);
    let path = |d: usize| -> Vec<(u8, u8)> { seq.latents.iter().map(|l| l.positions[d]).collect() };
    let (first, second) = (path(0), path(1));
    assert_eq!(
        &first[..5],
        &[(14, 4), (14, 8), (13, 11), (12, 15), (12, 18)],
        "{}",
        trajectories(std::slice::from_ref(&seq))
    );
    assert_eq!(first[19], (2, 0));
    assert_eq!(&second[..5], &[(8, 6), (4, 7), (1, 7), (0, 8), (3, 8)], "{}", trajectories(std::slice::from_ref(&seq)));
    assert_eq!(second[19], (18, 15));
    // Digit 1 hits the top wall between frames 2 and 3 and bounces: v_y turns positive.
    assert_eq!(seq.latents[2].velocity_signs[1].0, -1);
    assert_eq!(seq.latents[3].velocity_signs[1].0, 1);
    assert_hash(
        std::slice::from_ref(&seq),
        "702cca1d22a0261479320232aecda9f0139c324c458fe47cdb841322396adb30",
        "train seq 0",
    );
}

#[test]
fn sum_clip_overlap_matches_its_golden_hash() {
    let config = MovingMnistConfig { overlap: Overlap::SumClip, ..MovingMnistConfig::new(MovingSplit::Train) };
    let seq = config.build(mnist()).unwrap().sequence(0);
    assert_hash(&[seq], "85612894c2dbbde81c4674fee644b14e26b896b39e3933981ba2a34160794b54", "train seq 0, sum-clip");
}

#[test]
fn train_sequences_0_to_99_match_the_golden_hash() {
    let gen = generator(MovingSplit::Train);
    let seqs: Vec<Sequence> = (0..100).map(|i| gen.sequence(i)).collect();
    assert_hash(&seqs, "eb2ba4496a5c8bca099595def739aafb1580acf4625a91d8b7563710aeb14d37", "train seqs 0..99");
}

#[test]
fn test_split_matches_the_golden_digits_and_hashes() {
    let gen = generator(MovingSplit::Test);
    assert_eq!(gen.source_len(), 10_000);
    let seq = gen.sequence(0);
    let pairs: Vec<(usize, u8)> = seq.digits.iter().map(|d| (d.source_index, d.label)).collect();
    assert_eq!(pairs, [(7663, 8), (5768, 6)]);
    assert_hash(&[seq], "6cc423568f9b82003dd0ca7de0337a205d84d640538620c1889b0d3888bdef7a", "test seq 0");
    let seqs: Vec<Sequence> = (0..100).map(|i| gen.sequence(i)).collect();
    assert_hash(&seqs, "40e26cd8465bc56a11e87110362395541f6b32877ff9c6ffedee0332852f1733", "test seqs 0..99");
}

#[test]
fn the_stream_plays_sequences_in_order_with_their_labels() {
    let gen = generator(MovingSplit::Train);
    let frames: Vec<StreamFrame> = gen.frames(5).take(3 * FRAMES_PER_SEQUENCE).collect();
    for (k, frame) in frames.iter().enumerate() {
        let (sequence, t) = (5 + (k / FRAMES_PER_SEQUENCE) as u64, k % FRAMES_PER_SEQUENCE);
        assert_eq!((frame.sequence, frame.t), (sequence, t));
        assert_eq!(frame.starts_sequence(), t == 0);
        let seq = gen.sequence(sequence);
        assert_eq!(frame.labels, seq.labels());
        assert_eq!(frame.labels.len(), 2);
        assert_eq!(frame.pixels, seq.frame(t).unwrap());
        assert_eq!(frame.latent, seq.latents[t]);
    }
}

#[test]
fn any_sequence_renders_alone_as_the_stream_plays_it() {
    let gen = generator(MovingSplit::Train);
    let alone = gen.sequence(57);
    let streamed: Vec<StreamFrame> = gen.frames(0).skip(57 * FRAMES_PER_SEQUENCE).take(FRAMES_PER_SEQUENCE).collect();
    assert!(streamed.iter().all(|f| f.sequence == 57));
    let pixels: Vec<u8> = streamed.iter().flat_map(|f| f.pixels.iter().copied()).collect();
    assert_eq!(pixels, alone.frames);
    let latents: Vec<_> = streamed.into_iter().map(|f| f.latent).collect();
    assert_eq!(latents, alone.latents);
    // And out of order, or reusing a buffer, it is the same sequence.
    let mut reused = gen.sequence(3);
    gen.sequence_into(57, &mut reused);
    assert_eq!(reused, alone);
}

#[test]
fn the_single_digit_variant_has_one_label_per_frame_and_differs() {
    let two = generator(MovingSplit::Train);
    let one = MovingMnistConfig { num_digits: 1, ..MovingMnistConfig::new(MovingSplit::Train) }.build(mnist()).unwrap();
    let frames: Vec<StreamFrame> = one.frames(0).take(2 * FRAMES_PER_SEQUENCE).collect();
    assert!(frames.iter().all(|f| f.labels.len() == 1 && f.latent.positions.len() == 1));
    let (a, b) = (one.sequence(0), two.sequence(0));
    assert_ne!(a.frames, b.frames);
    // Digit 0 takes the same draws in both variants: same source, same path.
    assert_eq!(a.digits[0], b.digits[0]);
    let first = |s: &Sequence| -> Vec<(u8, u8)> { s.latents.iter().map(|l| l.positions[0]).collect() };
    assert_eq!(first(&a), first(&b));
}

#[test]
fn frames_per_sequence_is_configurable_and_extends_the_trajectory() {
    let long = MovingMnistConfig { frames_per_sequence: 30, ..MovingMnistConfig::new(MovingSplit::Train) }
        .build(mnist())
        .unwrap();
    let seq = long.sequence(0);
    assert_eq!(seq.len(), 30);
    assert_eq!(&seq.frames[..20 * FRAME_PIXELS], &generator(MovingSplit::Train).sequence(0).frames[..]);
    let frames: Vec<StreamFrame> = long.frames(0).take(31).collect();
    assert_eq!((frames[29].sequence, frames[29].t, frames[30].sequence, frames[30].t), (0, 29, 1, 0));
}

#[test]
fn the_stream_is_fast_enough_to_feed_a_pipeline() {
    let gen = generator(MovingSplit::Train);
    let frames = 200_000;
    let started = std::time::Instant::now();
    // Fold over the pixels so the work cannot be optimized away.
    let checksum = gen.frames(0).take(frames).fold(0u64, |acc, f| acc.wrapping_add(f.pixels[2080] as u64));
    let seconds = started.elapsed().as_secs_f64();
    let rate = frames as f64 / seconds;
    eprintln!("moving mnist stream: {rate:.0} frames/s on one core ({frames} frames in {seconds:.3} s; {checksum})");
    // Loose floor: the machine may be loaded; the design target is well above 20,000 frames/s.
    assert!(rate > 2_000.0, "{rate:.0} frames/s");
}

/// `eval.probe_split = "validation"`: the training sequences draw only from MNIST's first
/// 50,000 training images and the probe sequences only from the last 10,000, so no probe digit
/// was ever learned from; the validation sequences' seeds are their own (not the test split's).
#[test]
fn validation_probes_draw_digits_the_training_split_never_shows() {
    let m = mnist();
    let train = generator(MovingSplit::TrainLess);
    let validation = generator(MovingSplit::Validation);
    assert_eq!((train.source_len(), validation.source_len()), (m.train.len(), m.validation.len()));
    assert_eq!((train.source_len(), validation.source_len()), (50_000, 10_000));
    for i in 0..2_000u64 {
        for d in &train.sequence(i).digits {
            assert_eq!(d.label, m.train.labels[d.source_index], "train sequence {i}");
        }
        for d in &validation.sequence(i).digits {
            assert_eq!(d.label, m.validation.labels[d.source_index], "validation sequence {i}");
        }
    }
    // The same sequence number is another draw in each held-out split.
    let test = generator(MovingSplit::Test);
    assert_ne!(
        test.sequence(7).latents.first().map(|l| l.positions.clone()),
        validation.sequence(7).latents.first().map(|l| l.positions.clone())
    );
}
