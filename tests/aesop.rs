//! Aesop's Fables (E8's data): the 248 strings of 100 characters, built from the verified file.

use std::path::PathBuf;

use ffstream::data::aesop::{text, Aesop, LENGTH, STRINGS};
use sha2::{Digest, Sha256};

fn data_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("FFSTREAM_DATA").expect("set FFSTREAM_DATA (CI: ../shared/data)"))
}

#[test]
fn the_strings_are_248_by_100_over_30_symbols_and_fixed_by_the_file() {
    let aesop = Aesop::load(Some(&data_dir())).unwrap();
    assert_eq!(aesop.strings.len(), STRINGS);
    assert!(aesop.strings.iter().all(|s| s.len() == LENGTH && s.iter().all(|&c| c < 30)));
    let all: String = aesop.strings.iter().map(|s| text(s)).collect();
    // The first fable, cleaned. Both values pin our own recipe (src/data/aesop.rs): if it ever
    // changes, these change with it, and the records made with the old strings must say so.
    assert!(all.starts_with(GOLDEN_START), "{}", &all[..120]);
    let digest: String = Sha256::digest(all.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(digest, GOLDEN_SHA256, "the 24,800 characters changed");
}

const GOLDEN_START: &str =
    "the wolf and the kid there was once a little kid whose growing horns made him think he was a grownup";
/// Also computed by an independent Python implementation of the same recipe.
const GOLDEN_SHA256: &str = "bbe5b8c73639b0d6aea530abea433cc46465a279e1d76051348cbc3677a4103b";

mod e8 {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use ffstream::config::build::{build_head, build_sink, build_stages};
    use ffstream::config::PipelineConfig;
    use ffstream::data::aesop::{unigram_error_pct, Aesop, PREDICTED, SYMBOLS, WIDTH};
    use ffstream::packet::StageState;
    use ffstream::runtime::{self, Ending, EpochReport, Mode, PipelineStats, Wiring};

    fn config(pipeline: &str, extra: &[&str]) -> PipelineConfig {
        let text = std::fs::read_to_string(format!("pipeline/{pipeline}.toml")).unwrap();
        let mut overrides: Vec<String> =
            ["model.layers=[64, 64, 64]", "data.epochs=1", "eval.every=1", "eval.train_size=0", "eval.test=false"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        overrides.extend(extra.iter().map(|s| s.to_string()));
        PipelineConfig::parse(&text, pipeline, &overrides).unwrap()
    }

    fn run(config: &PipelineConfig, mode: Mode) -> (Vec<StageState>, Vec<EpochReport>, u64) {
        let data = Arc::new(Aesop::load(Some(&super::data_dir())).unwrap().labelled());
        let mut head = build_head(config, data, 1, Arc::new(AtomicBool::new(false)));
        let mut sink = build_sink(config);
        let stats = PipelineStats::new(&config.stage_names());
        let mut reports = Vec::new();
        let (stages, completed) =
            runtime::run(&mut head, build_stages(config), &mut sink, Wiring::new(mode, 2), &stats, &mut |r| {
                reports.push(r);
                Ok(())
            })
            .unwrap();
        assert_eq!(completed, Ending::Finished);
        assert_eq!(stats.source.totals().frames, stats.sink.totals().frames, "a frame was lost");
        (stages.iter().map(|s| s.snapshot()).collect(), reports, stats.sink.totals().frames)
    }

    /// The three kinds of E8 training: teacher forcing, self-generated negatives interleaved,
    /// and self-generated negatives learned asleep. Dreams go round the pipeline (the readout's
    /// softmax comes back for every generated character), so the threaded run must still end
    /// bit-identical to lockstep; and each learns next characters better than the commonest
    /// character does.
    #[test]
    fn every_e8_variant_matches_lockstep_and_beats_character_frequencies() {
        let data = Aesop::load(Some(&super::data_dir())).unwrap().labelled();
        assert_eq!((data.train.width(), data.classes), (WIDTH, SYMBOLS));
        assert_eq!(data.train.len(), 200 * PREDICTED);
        let unigram = unigram_error_pct(&data.train, &data.validation);
        assert!(unigram > 75.0 && unigram < 90.0, "space is about one character in six: {unigram}");
        let variants = [
            ("aesop-teacher-forcing", vec![]),
            ("aesop-self-generated", vec!["head.dream_strings=5"]),
            ("aesop-sleep", vec!["head.dream_strings=5", "schedule={ kind = \"fixed\", wake = 7, sleep = 5 }"]),
        ];
        for (pipeline, extra) in variants {
            let c = config(pipeline, &extra);
            let (threaded, reports, frames) = run(&c, Mode::Threaded);
            let (lockstep, _, _) = run(&c, Mode::Lockstep);
            for (a, b) in threaded.iter().zip(&lockstep) {
                assert_eq!(a.tensors, b.tensors, "{pipeline}: stage {} differs", a.stage);
            }
            // Each training window once (dreams and sleep packets carry no frame), then the
            // validation windows.
            let expected = data.train.len() / 100 * 100 + data.validation.len();
            assert_eq!(frames, expected as u64, "{pipeline}: frames counted");
            let measures = &reports.last().unwrap().measures;
            assert_eq!(measures["validation.images"], data.validation.len() as f64);
            let softmax = measures["validation.softmax"];
            assert!(softmax < unigram - 5.0, "{pipeline}: softmax {:.1}% vs unigram {unigram:.1}%", softmax);
        }
    }

    #[test]
    fn generated_negatives_need_sequence_data() {
        let text = std::fs::read_to_string("pipeline/mnist-quick.toml").unwrap();
        let err =
            PipelineConfig::parse(&text, "mnist-quick", &["head.labels=\"generated\"".into()]).unwrap_err().to_string();
        assert!(err.contains("head.labels") && err.contains("aesop"), "{err}");
    }
}
