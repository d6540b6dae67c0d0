//! The paper's image figures (issue 10, part 8): Figure 1's hybrid and Figure 2's receptive
//! fields, decoded back from their PNGs. Real MNIST through $FFSTREAM_DATA; no network.

use std::path::{Path, PathBuf};

use ffstream::config::PipelineConfig;
use ffstream::data::Labelled;
use ffstream::figure::{fields_figure, hybrid_figure, FigureError, HybridFigure};
use ffstream::session::{self, RunOptions};

fn data_dir() -> PathBuf {
    let dir =
        std::env::var_os("FFSTREAM_DATA").expect("set FFSTREAM_DATA to the folder holding mnist/ (CI: ../shared/data)");
    PathBuf::from(dir)
}

/// `(width, height, grey pixels)` of an 8-bit greyscale PNG.
fn decode(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Grayscale, png::BitDepth::Eight));
    pixels.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, pixels)
}

#[test]
fn the_hybrid_figure_is_a_times_mask_plus_b_times_the_rest() {
    let data = Labelled::mnist(Some(&data_dir())).unwrap();
    let figure = HybridFigure::default();
    let bytes = hybrid_figure(&data, figure).unwrap().png().unwrap();
    let (width, height, pixels) = decode(&bytes);
    let side = 28 * figure.scale;
    assert_eq!((width, height), (4 * side + 3 * figure.gap, side));

    // Panels: mask, digit A, digit B, hybrid; compare at each image pixel's block centre.
    let at = |panel: usize, y: usize, x: usize| -> f32 {
        let (py, px) = (y * figure.scale + figure.scale / 2, panel * (side + figure.gap) + x * figure.scale);
        pixels[py * width + px] as f32 / 255.0
    };
    let (mut from_a, mut from_b) = (0, 0);
    for y in 0..28 {
        for x in 0..28 {
            let (m, a, b, hybrid) = (at(0, y, x), at(1, y, x), at(2, y, x), at(3, y, x));
            assert!(m == 0.0 || m == 1.0, "the mask is binary, got {m} at ({y}, {x})");
            let want = a * m + b * (1.0 - m);
            assert!((hybrid - want).abs() <= 1.0 / 255.0, "hybrid {hybrid}, A·m + B·(1−m) {want} at ({y}, {x})");
            if m == 1.0 {
                from_a += 1
            } else {
                from_b += 1
            }
        }
    }
    // Both digits contribute large regions (the mask is not all one value).
    assert!(from_a > 100 && from_b > 100, "{from_a} pixels from A, {from_b} from B");

    // Deterministic for a seed, and the seed matters.
    assert_eq!(hybrid_figure(&data, figure).unwrap().png().unwrap(), bytes);
    let other = HybridFigure { seed: 1, ..figure };
    assert_ne!(hybrid_figure(&data, other).unwrap().png().unwrap(), bytes);
}

#[test]
fn the_cli_writes_the_hybrid_figure_where_asked() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("figures/fig1.png");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ffstream"))
        .args(["figure", "hybrid", "--seed", "3", "--blurs", "6", "--out"])
        .arg(&out)
        .arg("--data-dir")
        .arg(data_dir())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("fig1.png (920x224)"));
    let (width, height, _) = decode(&std::fs::read(&out).unwrap());
    assert_eq!((width, height), (4 * 224 + 3 * 8, 224));
}

/// A tiny mnist-quick run (two layers of 16 units), its run folder.
fn tiny_run(runs: &Path) -> PathBuf {
    let overrides: Vec<String> = [
        "data.epochs=1",
        "data.train_size=200",
        "data.validation_size=100",
        "data.test_size=100",
        "eval.train_size=0",
        "model.layers=[16, 16]",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let config =
        PipelineConfig::parse(include_str!("../pipeline/mnist-quick.toml"), "mnist-quick.toml", &overrides).unwrap();
    let options =
        RunOptions { data_dir: Some(data_dir()), runs_dir: runs.to_path_buf(), quiet: true, ..Default::default() };
    session::run(&config, &options).unwrap().run_dir
}

#[test]
fn the_fields_figure_tiles_a_trained_stage_and_names_what_is_wrong() {
    let runs = tempfile::tempdir().unwrap();
    let run = tiny_run(runs.path());

    // 9 units: a 3x3 grid of 28x28 tiles at x2, 2 pixels apart.
    let (width, height, pixels) = decode(&fields_figure(&run, "layer1", 9).unwrap().png().unwrap());
    assert_eq!((width, height), (3 * 56 + 2 * 2, 3 * 56 + 2 * 2));
    // Each tile reaches its own max |w|: the first tile has a pixel at one end of the grey map.
    let first: Vec<u8> = (0..56).flat_map(|y| pixels[y * width..y * width + 56].to_vec()).collect();
    assert!(first.contains(&1) || first.contains(&255));
    // Asking for more units than the stage has draws them all: 16 units, 4x4.
    let (width, height, _) = decode(&fields_figure(&run, "layer1", 100).unwrap().png().unwrap());
    assert_eq!((width, height), (4 * 56 + 3 * 2, 4 * 56 + 3 * 2));

    let err = fields_figure(&run, "layer9", 100).unwrap_err();
    assert!(matches!(err, FigureError::NoStage { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("`layer9`") && message.contains("layer1, layer2"), "{message}");

    // A dense stage above a dense one is drawn through it: 16 units of 28x28 tiles.
    let (width, height, _) = decode(&fields_figure(&run, "layer2", 100).unwrap().png().unwrap());
    assert_eq!((width, height), (4 * 56 + 3 * 2, 4 * 56 + 3 * 2));

    let err = fields_figure(runs.path(), "layer1", 100).unwrap_err().to_string();
    assert!(err.contains("not a run folder"), "{err}");
}

#[test]
fn a_recorded_video_run_draws_what_each_stage_learned_over_its_window() {
    // Issue 12: the run ends with a picture of what it learned, and a recorded run puts it
    // where the report page reads figures. A row of the default pipeline is 2 frames of 64x64;
    // a unit's tile is both frames left to right, a zero (mid-grey) column apart.
    let clip = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/cockatoo.mp4");
    let mut overrides = vec!["data.epochs=1".to_string(), format!("source.input={:?}", clip.display().to_string())];
    overrides.extend((1..=4).map(|i| format!("stage.{i}.units=16")));
    let config = PipelineConfig::parse(
        include_str!("../pipeline/video-unsupervised.toml"),
        "video-unsupervised.toml",
        &overrides,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let options = RunOptions {
        runs_dir: dir.path().join("runs"),
        results_dir: Some(results.clone()),
        quiet: true,
        ..Default::default()
    };
    let outcome = session::run(&config, &options).unwrap();
    // Every stage is dense: each is drawn, the higher ones through the weights below.
    let stages: Vec<PathBuf> = (1..=4).map(|l| outcome.run_dir.join(format!("fields-layer{l}.png"))).collect();
    assert_eq!(outcome.fields, stages);
    let picture = &stages[0];
    let bytes = std::fs::read(picture).unwrap();
    let recorded = results.join("figures/fields-video-unsupervised-seed0-layer1.png");
    assert_eq!(std::fs::read(&recorded).unwrap(), bytes, "the report's copy is the run's picture");

    // 16 units: a 4x4 grid of 64 x (2*64+1) tiles at x1, 2 pixels apart.
    let (width, height, pixels) = decode(&bytes);
    let tile_w = 2 * 64 + 1;
    assert_eq!((width, height), (4 * tile_w + 3 * 2, 4 * 64 + 3 * 2));
    // Unit 0's tile against its weights: frame f's pixel (y, x) is input f*4096 + y*64 + x.
    let loaded = ffstream::checkpoint::load_run(&outcome.run_dir).unwrap();
    let (_, shape, w) = loaded.state.tensors.iter().find(|(n, _, _)| n == "layer1.weights").unwrap();
    assert_eq!(shape[..], [2 * 64 * 64, 16]);
    let unit0: Vec<f32> = (0..shape[0]).map(|i| w[i * 16]).collect();
    let max = unit0.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (f, y, x) in [(0, 0, 0), (0, 31, 40), (1, 10, 5), (1, 63, 63)] {
        let expected = (128.0 + 127.0 * unit0[f * 4096 + y * 64 + x] / max).round() as u8;
        assert_eq!(pixels[y * width + f * 65 + x], expected, "frame {f} pixel ({y}, {x})");
    }
    assert!((0..64).all(|y| pixels[y * width + 64] == 128), "the column between the frames is zero");

    // layer2's unit 0 through layer1: column 0 of W1·W2.
    let (_, _, w2) = loaded.state.tensors.iter().find(|(n, _, _)| n == "layer2.weights").unwrap();
    let through: Vec<f32> = (0..shape[0]).map(|i| (0..16).map(|k| w[i * 16 + k] * w2[k * 16]).sum()).collect();
    let max = through.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let (_, _, pixels) = decode(&std::fs::read(&stages[1]).unwrap());
    for (f, y, x) in [(0, 0, 0), (0, 31, 40), (1, 10, 5), (1, 63, 63)] {
        let expected = 128.0 + 127.0 * through[f * 4096 + y * 64 + x] / max;
        let got = f32::from(pixels[y * width + f * 65 + x]);
        // The product's sums run in another order than this loop's: a grey level apart at most.
        assert!((got - expected).abs() <= 1.0, "layer2 frame {f} pixel ({y}, {x}): {got} against {expected}");
    }
    let recorded = results.join("figures/fields-video-unsupervised-seed0-layer4.png");
    assert_eq!(std::fs::read(recorded).unwrap(), std::fs::read(&stages[3]).unwrap());
}
