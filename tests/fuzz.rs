//! Property fuzzing of everything ffstream reads from a user or a disk (issue 12): pipeline
//! files and `--set`, the IDX and CIFAR-10 parsers, checkpoints, records, truncated or
//! corrupted video files, and the messages of remote edges. Every input gives a value or an error, never a panic or a hang; a
//! damaged checkpoint never loads as different weights.
//!
//! Brief by default (CI); `FFSTREAM_FUZZ_CASES=20000 cargo test --release --test fuzz` runs
//! longer on purpose. The count is per property.

use std::path::Path;
use std::time::{Duration, Instant};

use ffstream::config::shipped::PIPELINES;
use ffstream::config::PipelineConfig;
use proptest::collection::vec;
use proptest::prelude::*;

/// Cases per property: `FFSTREAM_FUZZ_CASES`, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("FFSTREAM_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config(default: u32) -> ProptestConfig {
    ProptestConfig { cases: cases(default), failure_persistence: None, ..ProptestConfig::default() }
}

/// Values a mutated key may take: the types a pipeline file uses, and their wrong neighbours.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-0.0".to_string()),
        Just("0".to_string()),
        Just("[]".to_string()),
        Just("true".to_string()),
        vec(0u32..5000, 0..5).prop_map(|v| format!("{v:?}")),
        "[a-z_]{0,12}".prop_map(|s| format!("\"{s}\"")),
        "\\PC{0,16}".prop_map(|s| format!("{s:?}")),
        "\\PC{0,8}",
    ]
}

/// A shipped pipeline file, mutated line by line: deleted, duplicated, its value replaced,
/// cut in the middle, or a line of noise put in.
fn mutated_pipeline() -> impl Strategy<Value = String> {
    (0..PIPELINES.len(), vec((any::<prop::sample::Index>(), 0u8..5, toml_value()), 1..5)).prop_map(|(p, edits)| {
        let mut lines: Vec<String> = PIPELINES[p].1.lines().map(str::to_string).collect();
        for (at, kind, value) in edits {
            if lines.is_empty() {
                break;
            }
            let i = at.index(lines.len());
            match kind {
                0 => {
                    lines.remove(i);
                }
                1 => lines.insert(i, lines[i].clone()),
                2 => {
                    if let Some((key, _)) = lines[i].split_once('=') {
                        lines[i] = format!("{key}= {value}");
                    }
                }
                3 => {
                    let cut = lines[i].len() / 2;
                    let cut = (0..=cut).rev().find(|&c| lines[i].is_char_boundary(c)).unwrap_or(0);
                    lines[i].truncate(cut);
                }
                _ => lines.insert(i, value),
            }
        }
        lines.join("\n")
    })
}

/// A `--set` key: a real one of the shipped files, a made-up one, or an array index.
fn set_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "data.epochs",
            "data.batch",
            "data.train_size",
            "data.validation_size",
            "data.frames_per_epoch",
            "model.layers",
            "model.threshold",
            "model.label_strength",
            "optimizer.lr",
            "optimizer.weight_cost",
            "optimizer.rule",
            "readout.weight_cost",
            "head.window",
            "head.mask_blurs",
            "head.replay",
            "source.width",
            "source.input",
            "stage.1.channels",
            "stage.2.field",
            "stage.9.units",
            "pipeline.queue_capacity",
            "recurrent.iterations",
            "eval.every",
            "name",
        ])
        .prop_map(str::to_string),
        "[a-z]{1,6}(\\.[a-z0-9]{1,6}){0,3}",
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn mutated_pipeline_files_parse_or_say_why(text in mutated_pipeline()) {
        if let Err(err) = PipelineConfig::parse(&text, "fuzz.toml", &[]) {
            prop_assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn set_overrides_parse_or_say_why(p in 0..PIPELINES.len(), sets in vec((set_key(), toml_value()), 1..4)) {
        let overrides: Vec<String> = sets.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if let Err(err) = PipelineConfig::parse(PIPELINES[p].1, PIPELINES[p].0, &overrides) {
            prop_assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn arbitrary_text_as_a_pipeline_is_an_error_not_a_panic(text in "\\PC{0,300}") {
        let _ = PipelineConfig::parse(&text, "fuzz.toml", &[]);
    }
}

/// A valid IDX file of `dims` dimensions (magic, sizes, bytes).
fn idx_file(dims: &[u32]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(std::iter::repeat_n(7u8, dims.iter().product::<u32>() as usize));
    bytes
}

/// `bytes` with some of its bytes replaced and maybe cut short.
fn damaged(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = bytes.len();
    (vec((0..len.max(1), any::<u8>()), 0..6), 0..=len).prop_map(move |(flips, keep)| {
        let mut out = bytes.clone();
        for (at, b) in flips {
            if at < out.len() {
                out[at] = b;
            }
        }
        out.truncate(keep.max(1));
        out
    })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn idx_bytes_parse_or_say_why(bytes in vec(any::<u8>(), 0..400), dims in 1usize..4) {
        let _ = ffstream::data::idx::parse(Path::new("fuzz-idx3-ubyte"), bytes, dims);
    }

    #[test]
    fn damaged_idx_headers_parse_or_say_why(bytes in damaged(idx_file(&[3, 4, 5])), dims in 1usize..4) {
        if let Ok((shape, values)) = ffstream::data::idx::parse(Path::new("fuzz-idx3-ubyte"), bytes, dims) {
            // Whatever parses holds as many values as its shape says.
            prop_assert_eq!(shape.iter().product::<usize>(), values.len());
        }
    }

    #[test]
    fn cifar_records_parse_or_say_why(bytes in vec(any::<u8>(), 0..8000)) {
        let _ = ffstream::data::cifar10::records_to_rows(Path::new("fuzz_batch.bin"), &bytes);
    }

    #[test]
    fn records_of_any_bytes_are_reported_not_panicked_on(bytes in vec(any::<u8>(), 0..600), json in "\\PC{0,200}") {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("x")).unwrap();
        std::fs::write(dir.path().join("x/seed0.json"), &bytes).unwrap();
        std::fs::write(dir.path().join("x/seed1.json"), json.as_bytes()).unwrap();
        let records = ffstream::record::load_all(dir.path());
        let _ = ffstream::record::results_markdown(&records);
        let _ = ffstream::record::check_replaceable(&dir.path().join("x/seed0.json"), &serde_json::json!({}), false);
    }
}

/// A checkpoint's tensors: `(name, shape, values)`.
type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Replaces bytes of a non-empty `bytes` at `flips`, then cuts it at `cut` (keeping at least
/// `keep` bytes).
fn damage(bytes: &mut Vec<u8>, flips: &[(prop::sample::Index, u8)], cut: Option<prop::sample::Index>, keep: usize) {
    for (at, b) in flips {
        let i = at.index(bytes.len());
        bytes[i] = *b;
    }
    if let Some(cut) = cut {
        bytes.truncate(cut.index(bytes.len()).max(keep));
    }
}

/// A small run folder with a committed checkpoint of two stages.
fn checkpoint_folder() -> (tempfile::TempDir, Tensors) {
    use ffstream::checkpoint::ShardStore;
    use ffstream::packet::StageState;
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::new(dir.path());
    let shards: Vec<_> = ["layer1", "readout"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let values: Vec<f32> = (0..12).map(|k| (k + 10 * i) as f32 * 0.5).collect();
            let state =
                StageState { stage: name.to_string(), tensors: vec![(format!("{name}.w"), vec![3, 4], values)] };
            store.write(1, &state).unwrap()
        })
        .collect();
    store.commit(1, &shards, &[("seed", "0".into())]).unwrap();
    let mut tensors = ffstream::checkpoint::load_run(dir.path()).unwrap().state.tensors;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    (dir, tensors)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn a_damaged_checkpoint_never_loads_as_other_weights(
        file in 0usize..3,
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..50),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let (dir, original) = checkpoint_folder();
        let mut files: Vec<_> = std::fs::read_dir(dir.path().join("checkpoint")).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files.push(dir.path().join("checkpoint.json"));
        let path = &files[file];
        let mut bytes = std::fs::read(path).unwrap();
        damage(&mut bytes, &flips, truncate.then_some(cut), 0);
        std::fs::write(path, &bytes).unwrap();
        if let Ok(loaded) = ffstream::checkpoint::load_run(dir.path()) {
            let mut tensors = loaded.state.tensors;
            tensors.sort_by(|a, b| a.0.cmp(&b.0));
            prop_assert_eq!(tensors, original, "a damaged checkpoint loaded as different weights");
        }
    }

    #[test]
    fn any_bytes_as_a_checkpoint_file_are_an_error(bytes in vec(any::<u8>(), 0..300)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let _ = ffstream::checkpoint::load(&path);
        let _ = ffstream::checkpoint::metadata(&path);
        std::fs::write(dir.path().join("checkpoint.json"), &bytes).unwrap();
        let _ = ffstream::checkpoint::load_run(dir.path());
    }
}

#[cfg(feature = "video")]
mod video {
    use super::*;
    use ffstream::video::input::{VideoConfig, VideoInput};
    use std::sync::OnceLock;

    /// Small clips in three containers and codecs, made once by the ffmpeg CLI.
    fn clips() -> &'static Vec<Vec<u8>> {
        static CLIPS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
        CLIPS.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let made = [("clip.mkv", "ffv1"), ("clip.mp4", "libx264"), ("clip.avi", "mjpeg")].map(|(name, codec)| {
                let out = std::process::Command::new("ffmpeg")
                    .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=48x32:rate=10", "-frames:v", "12"])
                    .args(["-pix_fmt", "yuv420p", "-c:v", codec])
                    .arg(dir.path().join(name))
                    .output()
                    .expect("the ffmpeg CLI is installed (scripts/install-deps)");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                std::fs::read(dir.path().join(name)).unwrap()
            });
            made.to_vec()
        })
    }

    proptest! {
        #![proptest_config(config(48))]

        #[test]
        fn truncated_or_corrupted_video_files_decode_or_say_why(
            clip in 0usize..3,
            flips in vec((any::<prop::sample::Index>(), any::<u8>()), 0..40),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = clips()[clip].clone();
            damage(&mut bytes, &flips, truncate.then_some(cut), 1);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(["a.mkv", "a.mp4", "a.avi"][clip]);
            std::fs::write(&path, &bytes).unwrap();
            let config = VideoConfig { width: 16, height: 16, ..VideoConfig::new(path.to_str().unwrap()) };
            let started = Instant::now();
            let decoded = std::thread::spawn(move || -> Result<usize, String> {
                let mut input = VideoInput::open(&config).map_err(|e| e.to_string())?;
                let mut frames = 0;
                while let Some(frame) = input.next_frame().map_err(|e| e.to_string())? {
                    assert_eq!(frame.pixels.len(), 16 * 16, "a frame of the configured size");
                    frames += 1;
                }
                Ok(frames)
            });
            while !decoded.is_finished() {
                prop_assert!(started.elapsed() < Duration::from_secs(20), "decoding a damaged file hangs");
                std::thread::sleep(Duration::from_millis(5));
            }
            match decoded.join() {
                Ok(Ok(frames)) => prop_assert!(frames <= 1000),
                Ok(Err(message)) => prop_assert!(!message.is_empty() && !message.contains('\n'), "{}", message),
                Err(_) => prop_assert!(false, "decoding panicked"),
            }
        }
    }
}

/// A packet with every per-row field set, as an edge between two processes carries it.
fn wire_packet() -> Vec<u8> {
    use ffstream::packet::{Message, Packet, Purpose};
    use ffstream::transport::WireCodec;
    let mut p = Packet::new(3, 2, Purpose::Train, ndarray::Array2::from_elem((4, 3), 0.5));
    p.positives = 2;
    p.negatives = 1;
    p.neutral = 1;
    p.layer_goodness = vec![vec![1.0; 4]];
    p.features = vec![ndarray::Array2::from_elem((1, 2), 0.25)];
    let mut out = Vec::new();
    Message::Data(p).encode(&mut out);
    out
}

proptest! {
    #![proptest_config(config(2048))]

    /// What arrives on a remote edge (issue 13): any bytes, and damaged packets, decode to a
    /// message whose per-row fields fit its rows, or to an error; never a panic.
    #[test]
    fn edge_messages_of_any_bytes_decode_or_say_why(
        bytes in vec(any::<u8>(), 0..300),
        broken in damaged(wire_packet()),
    ) {
        use ffstream::packet::Message;
        use ffstream::transport::WireCodec;
        for b in [&bytes, &broken] {
            if let Ok(Message::Data(p)) = Message::decode(b) {
                let rows = p.x.nrows();
                prop_assert!(p.positives + p.negatives + p.neutral <= rows);
                prop_assert!(p.truth.len() == rows && p.goodness.len() == rows && p.frame.len() == rows);
                prop_assert!(p.layer_goodness.iter().all(|g| g.len() == rows));
            }
        }
        let _ = ffstream::packet::Prediction::decode(&bytes);
        let _ = ffstream::packet::TopDown::decode(&bytes);
    }
}
