//! Records of full runs (`results/<experiment>/seed<N>.json`, the DESIGN.md format) and
//! `results/RESULTS.md`, generated from them so that no number is ever typed by hand.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::metrics::StageRates;

/// Folder under `results/` that holds speedrun files, not records (`crate::speedrun` writes them).
pub const SPEEDRUN_FOLDER: &str = "speedrun";

/// Errors by test procedure (`goodness`, `softmax`, `backprop`), percent.
pub type ErrorsPct = BTreeMap<String, f64>;

/// One point of the learning curve.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CurvePoint {
    /// 1-based epoch.
    pub epoch: u32,
    /// Validation errors (only on evaluated epochs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub val_error_pct: ErrorsPct,
    /// Errors of the readout on the training stream during the epoch, before each update.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stream_error_pct: ErrorsPct,
    /// Test errors, on the epochs a speedrun declares (`eval.test_at`) and the last.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub test_error_pct: ErrorsPct,
    /// Wall seconds since the start of the run (resumed runs continue the count).
    pub seconds: f64,
}

/// Final metrics.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    /// Test split.
    pub test_error_pct: ErrorsPct,
    /// Validation split.
    pub val_error_pct: ErrorsPct,
    /// Training subset.
    pub train_error_pct: ErrorsPct,
}

/// Throughput over the whole run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Throughput {
    /// Frames per second through the whole pipeline over the last session (training and
    /// evaluation frames alike; the bench measures the training stream alone).
    pub frames_per_s: f64,
    /// Per thread.
    pub stages: Vec<StageRates>,
}

/// A full run's record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Experiment (pipeline name).
    pub experiment: String,
    /// Seed.
    pub seed: u64,
    /// Git commit of the code that ran.
    pub commit: String,
    /// CPU model and cores.
    pub machine: String,
    /// Wall time of the whole run, seconds.
    pub wall_time_s: f64,
    /// Epochs run.
    pub epochs: u32,
    /// `--set` overrides.
    pub overrides: BTreeMap<String, String>,
    /// Final metrics.
    pub metrics: Metrics,
    /// Throughput.
    pub throughput: Throughput,
    /// Learning curve.
    pub curve: Vec<CurvePoint>,
    /// The resolved pipeline file.
    pub pipeline: serde_json::Value,
    /// Other measured facts (video runs: source counters, latency, memory by epoch).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, serde_json::Value>,
}

/// All records under `results/`.
/// Keys of a record's `pipeline` that do not make it another experiment: the seed (records of
/// seeds sit side by side), the paper's description, and what only sets how many threads or
/// processes do the same work (the results are bit-identical: tested).
const NOT_THE_EXPERIMENT: [&str; 5] = ["seed", "paper", "threads", "placement", "core_tokens"];

/// The first setting where two pipelines (as records store them) are different experiments:
/// `(dotted key, value in a, value in b)`. Keys only one side has are skipped: a record
/// written before a setting existed ran with what is now its default.
pub fn first_difference(a: &serde_json::Value, b: &serde_json::Value) -> Option<(String, String, String)> {
    fn walk(a: &serde_json::Value, b: &serde_json::Value, key: &str) -> Option<(String, String, String)> {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => x
                .iter()
                .filter(|(k, _)| !NOT_THE_EXPERIMENT.contains(&k.as_str()))
                .filter_map(|(k, v)| y.get(k).map(|w| (k, v, w)))
                .find_map(|(k, v, w)| walk(v, w, &if key.is_empty() { k.clone() } else { format!("{key}.{k}") })),
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                x.iter().zip(y).enumerate().find_map(|(i, (v, w))| walk(v, w, &format!("{key}.{}", i + 1)))
            }
            _ if a == b => None,
            // Settings are f32: two decimal forms of one f32 are one setting (serde_json's
            // default parser may read a record's float back one f64 ulp off what was written).
            (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
                let single = |n: &serde_json::Number| n.as_f64().map(|v| v as f32);
                (single(x) != single(y)).then(|| (key.to_string(), a.to_string(), b.to_string()))
            }
            _ => Some((key.to_string(), a.to_string(), b.to_string())),
        }
    }
    walk(a, b, "")
}

/// Whether the record at `path` may be replaced by a run of `pipeline`: yes when there is none,
/// when it is of the same experiment (another run of the same settings), or when `replace`
/// says so; otherwise the sentence that says why not.
pub fn check_replaceable(path: &Path, pipeline: &serde_json::Value, replace: bool) -> Result<(), String> {
    if replace || !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let theirs: serde_json::Value = serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| format!("{} is not a record ({e}); pass --replace-record to replace it", path.display()))?;
    let theirs = theirs.get("pipeline").cloned().unwrap_or_default();
    match first_difference(&theirs, pipeline) {
        None => Ok(()),
        Some((key, old, new)) => Err(format!(
            "{} holds another experiment ({key} = {old} there, {new} here): pass --replace-record to replace \
             it, or `--set name=...` to record this run under its own name",
            path.display()
        )),
    }
}

/// Every record under `results/<experiment>/*.json`, sorted by experiment and seed.
pub fn load_all(results: &Path) -> Vec<Record> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(results) else { return out };
    // `speedrun/` holds speedrun files (`crate::speedrun`), not records.
    for dir in dirs.flatten().filter(|d| d.path().is_dir() && d.file_name() != SPEEDRUN_FOLDER) {
        let Ok(files) = std::fs::read_dir(dir.path()) else { continue };
        for f in files.flatten() {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "json") {
                let read = std::fs::read_to_string(&p).map_err(|e| e.to_string());
                match read.and_then(|t| serde_json::from_str::<Record>(&t).map_err(|e| e.to_string())) {
                    Ok(r) => out.push(r),
                    // Said, not skipped silently: a record the report leaves out is a row missing.
                    Err(e) => tracing::warn!("{} is not a record and is left out of the report: {e}", p.display()),
                }
            }
        }
    }
    out.sort_by(|a, b| (a.experiment.as_str(), a.seed).cmp(&(b.experiment.as_str(), b.seed)));
    out
}

fn mean_spread(values: &[f64]) -> String {
    if values.is_empty() {
        return "–".into();
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() == 1 {
        return format!("{mean:.2}");
    }
    let sd = (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0)).sqrt();
    format!("{mean:.2} ± {sd:.2} (n={})", values.len())
}

/// How the run was executed, from its resolved pipeline: "threaded, d=8", "lockstep, d=0", "backprop".
fn run_kind(pipeline: &serde_json::Value) -> String {
    let mode = pipeline.get("pipeline").and_then(|p| p.get("mode")).and_then(|m| m.as_str());
    // `[head]` of today's files; `[negatives]` of records written before it.
    let head = pipeline.get("head").or_else(|| pipeline.get("negatives"));
    let delay = head.and_then(|n| n.get("prediction_delay")).and_then(|d| d.as_u64());
    let labels = head.and_then(|n| n.get("labels")).and_then(|l| l.as_str());
    let kind = match (mode, delay, labels) {
        (Some(m), Some(d), Some("hard")) => format!("{m}, d={d}"),
        (Some(m), _, Some(l)) => format!("{m}, {l} negatives"),
        _ => "backprop".into(),
    };
    // Recurrent nets: the delay of the top-down feedback edges too.
    let recurrent = pipeline
        .get("stage")
        .and_then(|s| s.as_array())
        .is_some_and(|stages| stages.iter().any(|s| s.get("kind").and_then(|k| k.as_str()) == Some("ff_recurrent")));
    let feedback = pipeline.get("pipeline").and_then(|p| p.get("feedback_delay")).and_then(|d| d.as_u64());
    match (recurrent, feedback) {
        (true, Some(f)) => format!("{kind}, top-down d={f}"),
        _ => kind,
    }
}

/// `RESULTS.md` from the records: one row per experiment, paper vs ours.
pub fn results_markdown(records: &[Record]) -> String {
    let by_exp = by_experiment(records);
    let mut out = String::from(
        "# Results\n\nGenerated by `ffstream report` from the records in `results/<experiment>/seed<N>.json`; \
         do not edit by hand. Errors are test-set percentages (the test set scored once, after the last epoch); \
         `goodness` is the goodness-for-every-label test, `softmax` the one-pass softmax readout, \
         `backprop` the backprop twin. Mean ± sample standard deviation where more than one seed ran.\n\n\
         | experiment | paper | ours: goodness | ours: softmax | ours: backprop | validation | epochs | run | wall time | machine | seeds | commit |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (exp, rs) in by_exp.iter().filter(|(_, rs)| dataset(rs[0]) == "mnist" && !is_still_stream(rs[0])) {
        let pick = |f: &dyn Fn(&Record) -> Option<f64>| rs.iter().filter_map(|r| f(r)).collect::<Vec<f64>>();
        // A speedrun has a target, not a paper number (its table is in the speedrun section).
        let target = rs[0].pipeline.get("speedrun").and_then(|s| s.get("target_error_pct")).and_then(|v| v.as_f64());
        let paper = match target {
            Some(t) => format!("target {t:.2}"),
            None => rs[0]
                .pipeline
                .get("paper")
                .and_then(|p| p.get("test_error_pct"))
                .and_then(|v| v.as_f64())
                .map_or("–".to_string(), |v| format!("{v:.2}")),
        };
        let test = |k: &str| mean_spread(&pick(&|r: &Record| r.metrics.test_error_pct.get(k).copied()));
        let val = mean_spread(&pick(&|r: &Record| {
            r.metrics.val_error_pct.get("goodness").or(r.metrics.val_error_pct.get("backprop")).copied()
        }));
        let run = run_kind(&rs[0].pipeline);
        let wall = pick(&|r: &Record| Some(r.wall_time_s));
        let wall = format!("{:.0} min", wall.iter().sum::<f64>() / wall.len().max(1) as f64 / 60.0);
        let seeds: Vec<String> = rs.iter().map(|r| r.seed.to_string()).collect();
        let commits: Vec<String> = rs.iter().map(|r| short_commit(&r.commit)).collect();
        out += &format!(
            "| {exp} | {paper} | {} | {} | {} | {val} | {} | {run} | {wall} | {} | {} | {} |\n",
            test("goodness"),
            test("softmax"),
            test("backprop"),
            epochs_cell(rs[0]),
            machines(rs),
            seeds.join(", "),
            commits.join(", ")
        );
    }
    out += &still_table(&by_exp);
    out += &cifar_table(&by_exp);
    out += &sequence_table(&by_exp);
    out += &frame_stream_table(&by_exp);
    out += "\nDeviations from the paper and choices where it is silent are listed at the top of each \
            pipeline file in `pipeline/` and in the README.\n";
    out
}

/// Records by experiment: each row of a table averages records of one experiment only.
type Experiments<'a> = BTreeMap<String, Vec<&'a Record>>;

/// Groups records by experiment; records of an experiment whose settings differ from its first
/// record's (other epochs, other overrides) are a row of their own, named by the first setting
/// that differs: `mnist-supervised [data.epochs = 1]`.
fn by_experiment(records: &[Record]) -> Experiments<'_> {
    let mut by_exp: Experiments<'_> = BTreeMap::new();
    let mut first: BTreeMap<&str, &Record> = BTreeMap::new();
    for r in records {
        let base = *first.entry(&r.experiment).or_insert(r);
        let name = match first_difference(&base.pipeline, &r.pipeline) {
            None => r.experiment.clone(),
            Some((key, _, value)) => format!("{} [{key} = {value}]", r.experiment),
        };
        by_exp.entry(name).or_default().push(r);
    }
    by_exp
}

/// A record's commit, shortened; a resumed run names each session's commit: "abc+def".
fn short_commit(commit: &str) -> String {
    commit.split('+').map(|p| p.chars().take(8).collect::<String>()).collect::<Vec<_>>().join("+")
}

/// The dataset a record ran on.
fn dataset(r: &Record) -> &str {
    // `[source] kind` of today's files; `data.dataset` of records written before it.
    let kind = r.pipeline.get("source").and_then(|s| s.get("kind"));
    let old = r.pipeline.get("data").and_then(|d| d.get("dataset"));
    kind.or(old).and_then(|d| d.as_str()).unwrap_or("mnist")
}

/// Whether a record is of a frame stream (Moving MNIST, video) rather than labelled data.
fn is_frame_stream(r: &Record) -> bool {
    !matches!(dataset(r), "mnist" | "aesop" | "cifar10" | "idx")
}

/// Whether a record is of labelled images played unlabelled as still frames (a frames head).
fn is_still_stream(r: &Record) -> bool {
    let head = r.pipeline.get("head").and_then(|h| h.get("kind")).and_then(|k| k.as_str());
    matches!(dataset(r), "mnist" | "cifar10" | "idx") && head == Some("frames")
}

/// Unsupervised FF on still images (E1, E2): the frozen softmax on the paper's layers, with
/// the first layer too, on the same layers at random init, and on the pixels.
fn still_table(by_exp: &Experiments<'_>) -> String {
    let rows: Vec<(&String, &Vec<&Record>)> = by_exp.iter().filter(|(_, rs)| is_still_stream(rs[0])).collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\n## Unsupervised FF on still images (E1, E2): a softmax on the frozen layers\n\n\
         The images play unlabelled through the frames head with hybrid negatives; after the last epoch a linear \
         softmax is trained with the labels on the frozen layers' normalized activities (the training split), its \
         epoch chosen on validation, and scored once on the test split: on the layers the pipeline names \
         (`sink.softmax.from`), with every layer, on the same layers of the net at random init, and on the pixels.\n\n\
         | experiment | paper | test: softmax on | with layer 1 | random init | pixels | validation | epochs | wall time | machine | seeds | commit |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (exp, rs) in rows {
        // The paper's layer set is the key of `softmax.*` that the random-init net shares.
        let key = rs[0]
            .metrics
            .test_error_pct
            .keys()
            .find_map(|k| k.strip_prefix("softmax_random.").map(str::to_string))
            .unwrap_or_default();
        let all = rs[0]
            .metrics
            .test_error_pct
            .keys()
            .filter_map(|k| k.strip_prefix("softmax."))
            .find(|l| l.starts_with("layers1-"))
            .map(str::to_string);
        let stat =
            |f: &dyn Fn(&Record) -> Option<f64>| mean_spread(&rs.iter().filter_map(|r| f(r)).collect::<Vec<_>>());
        let test = |k: String| stat(&move |r: &Record| r.metrics.test_error_pct.get(&k).copied());
        let paper = rs[0].pipeline.get("paper").and_then(|p| p.get("test_error_pct")).and_then(|v| v.as_f64());
        let first_layer = match all.filter(|a| *a != key) {
            Some(a) => format!("{} ({a})", test(format!("softmax.{a}"))),
            None => "–".into(),
        };
        let val_key = format!("softmax.{key}");
        let wall = rs.iter().map(|r| r.wall_time_s).sum::<f64>() / rs.len() as f64 / 60.0;
        out += &format!(
            "| {exp} | {} | {} ({key}) | {first_layer} | {} | {} | {} | {} | {wall:.0} min | {} | {} | {} |\n",
            paper.map_or("–".into(), |p| format!("{p:.2}")),
            test(format!("softmax.{key}")),
            test(format!("softmax_random.{key}")),
            test("softmax.pixels".into()),
            stat(&|r: &Record| r.metrics.val_error_pct.get(&val_key).copied()),
            rs[0].epochs,
            machines(rs),
            rs.iter().map(|r| r.seed.to_string()).collect::<Vec<_>>().join(", "),
            rs.iter().map(|r| short_commit(&r.commit)).collect::<Vec<_>>().join(", "),
        );
    }
    out
}

/// The paper's Table 1 (PAPER.md E7): `(learning, testing, hidden layers) → (train %, test %)`.
const TABLE_1: [(&str, &str, usize, f64, f64); 10] = [
    ("BP", "–", 2, 0.0, 37.0),
    ("FF min ssq", "goodness", 2, 20.0, 41.0),
    ("FF min ssq", "softmax", 2, 31.0, 45.0),
    ("FF max ssq", "goodness", 2, 25.0, 44.0),
    ("FF max ssq", "softmax", 2, 33.0, 46.0),
    ("BP", "–", 3, 2.0, 39.0),
    ("FF min ssq", "goodness", 3, 24.0, 41.0),
    ("FF min ssq", "softmax", 3, 32.0, 44.0),
    ("FF max ssq", "goodness", 3, 21.0, 44.0),
    ("FF max ssq", "softmax", 3, 31.0, 46.0),
];

/// Labelled CIFAR-10 records (E7) in the form of the paper's Table 1: one row per learning
/// procedure, test procedure and depth, the paper's train and test errors beside ours, and
/// how much of the file's schedule ran.
fn cifar_table(by_exp: &Experiments<'_>) -> String {
    let records: Vec<&Record> = by_exp
        .values()
        .filter(|rs| dataset(rs[0]) == "cifar10" && !is_still_stream(rs[0]))
        .flat_map(|rs| rs.iter().copied())
        .collect();
    if records.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\n## CIFAR-10, the paper's Table 1 (E7)\n\n\
         Locally connected nets (32x32 maps of 3 units per position, 11x11 fields, no weight sharing); FF nets are \
         recurrent with 11x11 top-down fields and the label layer into the last hidden layer. `goodness`: goodness \
         for every label over iterations 4-6; `softmax`: the one-pass softmax readout. Train error on the first \
         2,000-5,000 training images (`eval.train_size`). `epochs` is what ran of the file's schedule (the \
         schedule spans the epochs that ran); `per epoch` is the wall time per epoch, evaluations included.\n\n\
         | learning | testing | hidden | paper train | paper test | ours train | ours test | validation | epochs | per epoch | experiment | machine | seed | commit |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut rows = Vec::new();
    for r in records {
        let hidden = r.pipeline.get("stage").and_then(|s| s.as_array()).map_or(0, Vec::len);
        let learning = match r.pipeline.get("model").and_then(|m| m.get("goodness")).and_then(|g| g.as_str()) {
            _ if r.pipeline.get("trainer").and_then(|t| t.as_str()) == Some("backprop") => "BP",
            Some("neg_sum_squares") => "FF min ssq",
            Some("sum_squares") => "FF max ssq",
            _ => "FF",
        };
        let epochs = epochs_cell(r);
        let tests: &[(&str, &str)] =
            if learning == "BP" { &[("–", "backprop")] } else { &[("goodness", "goodness"), ("softmax", "softmax")] };
        for (testing, key) in tests {
            let paper = TABLE_1.iter().find(|p| p.0 == learning && p.1 == *testing && p.2 == hidden);
            let pct = |m: &ErrorsPct| m.get(*key).map_or("–".to_string(), |v| format!("{v:.1}"));
            rows.push((
                (hidden, learning != "BP", learning, *testing),
                format!(
                    "| {learning} | {testing} | {hidden} | {} | {} | {} | {} | {} | {epochs} | {:.0} s | {} | {} | {} | {} |\n",
                    paper.map_or("–".into(), |p| format!("{:.0}", p.3)),
                    paper.map_or("–".into(), |p| format!("{:.0}", p.4)),
                    pct(&r.metrics.train_error_pct),
                    pct(&r.metrics.test_error_pct),
                    pct(&r.metrics.val_error_pct),
                    r.wall_time_s / r.epochs.max(1) as f64,
                    r.experiment,
                    r.machine,
                    r.seed,
                    short_commit(&r.commit),
                ),
            ));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.into_iter().for_each(|(_, row)| out += &row);
    out
}

/// The machines of a row's records, each once, in the records' order: a row whose seeds ran
/// on different CPUs names them all.
fn machines(rs: &[&Record]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for r in rs {
        if !seen.contains(&r.machine.as_str()) {
            seen.push(&r.machine);
        }
    }
    seen.join("; ")
}

/// The epochs a record ran, `12 of 60` where it ran a shortened schedule of its file.
fn epochs_cell(r: &Record) -> String {
    match file_epochs(r) {
        Some(f) if f != r.epochs as u64 => format!("{} of {f}", r.epochs),
        _ => r.epochs.to_string(),
    }
}

/// The epochs of the shipped pipeline file of a record that ran with `--set data.epochs=N`
/// (a shortened schedule), or `None`.
fn file_epochs(r: &Record) -> Option<u64> {
    if !r.overrides.contains_key("data.epochs") {
        return None;
    }
    let (_, text) = crate::config::shipped::PIPELINES.iter().find(|(name, _)| *name == r.experiment)?;
    let file: toml::Value = toml::from_str(text).ok()?;
    file.get("data")?.get("epochs")?.as_integer().and_then(|e| u64::try_from(e).ok())
}

/// The unsupervised frame-stream records: frozen-probe errors per stage against the same net at
/// random init, raw pixels and the backprop twin; held-out separation; throughput.
fn frame_stream_table(by_exp: &Experiments<'_>) -> String {
    let mut out = String::from(
        "\n## Frame streams (unsupervised FF on video)\n\n\
         Probe errors are test-then-train ridge probes on the frozen stages' normalized activities, scored on \
         test-split Moving MNIST digits (`trained / random init` of the same net, per stage); `pixels` is the same \
         probe on the raw frames; `backprop` the twin trained with labels. Separation: the share of held-out \
         windows whose goodness does not beat their own negative's (50% = nothing learned). `probe`: the \
         labelled frames the probes fit and score, `N digits` one window from each of N sequences \
         (`eval.probe_sampling`), `N frames` whole sequences (20 frames, one digit, each), – where the record does not say. Frames/s: end to end \
         over the session, while learning.\n\n\
         | experiment | frames | probe | probe error per stage: trained / random init | pixels | backprop | separation per stage | frames/s | wall time | machine | seeds | commit |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (exp, rs) in by_exp.iter().filter(|(_, rs)| is_frame_stream(rs[0])) {
        for r in rs {
            let test = &r.metrics.test_error_pct;
            let mut probes = Vec::new();
            let mut separation = Vec::new();
            for (k, v) in test {
                if let Some(layer) = k.strip_prefix("probe.").filter(|l| *l != "pixels") {
                    let random = test.get(&format!("probe_random.{layer}")).map_or("–".into(), |x| format!("{x:.1}"));
                    let pooled = match (
                        test.get(&format!("probe_pooled.{layer}")),
                        test.get(&format!("probe_random_pooled.{layer}")),
                    ) {
                        (Some(p), Some(q)) => format!(" (max-pooled {p:.1} / {q:.1})"),
                        _ => String::new(),
                    };
                    probes.push(format!("{layer} {v:.1} / {random}{pooled}"));
                }
            }
            for (k, v) in &r.metrics.val_error_pct {
                if let Some(layer) = k.strip_prefix("separation.") {
                    separation.push(format!("{layer} {v:.1}"));
                }
            }
            let frames = r.details.get("source").and_then(|s| s["decoded"].as_f64()).unwrap_or(0.0);
            let get = |k: &str| test.get(k).map_or("–".into(), |v| format!("{v:.1}"));
            let dash = |v: Vec<String>| if v.is_empty() { "–".to_string() } else { v.join(", ") };
            out += &format!(
                "| {exp} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} min | {} | {} | {} |\n",
                if frames > 0.0 { format!("{frames:.0}") } else { "–".into() },
                probe_sample(r),
                dash(probes),
                get("probe.pixels"),
                get("backprop"),
                dash(separation),
                r.throughput.frames_per_s,
                r.wall_time_s / 60.0,
                r.machine,
                r.seed,
                short_commit(&r.commit),
            );
        }
    }
    out
}

/// What a frame-stream record's probes read: `N digits` (one window of each of N sequences) or
/// `N frames` (whole sequences); "–" where the record does not say (older records).
fn probe_sample(r: &Record) -> String {
    let eval = r.pipeline.get("eval");
    let frames = eval.and_then(|e| e.get("probe_frames")).and_then(|f| f.as_u64()).unwrap_or(0);
    let sampling = eval.and_then(|e| e.get("probe_sampling")).and_then(|s| s.as_str());
    match (frames, sampling) {
        (0, _) => "–".into(),
        (n, Some("one_per_sequence")) => format!("{n} digits"),
        (n, _) => format!("{n} frames"),
    }
}

/// An SVG plot of validation error against epoch for every record (a picture beats a table).
pub fn curves_svg(records: &[Record]) -> String {
    let (w, h, left, bottom, top, right) = (860.0, 440.0, 60.0, 45.0, 30.0, 300.0);
    let series: Vec<(String, Vec<(f64, f64)>)> = records
        .iter()
        .filter(|r| dataset(r) == "mnist")
        .flat_map(|r| {
            ["goodness", "backprop"].into_iter().filter_map(move |k| {
                let pts: Vec<(f64, f64)> =
                    r.curve.iter().filter_map(|c| c.val_error_pct.get(k).map(|&e| (c.epoch as f64, e))).collect();
                (!pts.is_empty()).then(|| (format!("{} s{} {k}", r.experiment, r.seed), pts))
            })
        })
        .collect();
    let max_x = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)).fold(1.0, f64::max);
    let max_y = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)).fold(1.0, f64::max).min(5.0).ceil();
    let x = |e: f64| left + (w - left - right) * e / max_x;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v.min(max_y) / max_y);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\">epoch</text><text x=\"{left}\" y=\"{}\">validation error, % (clipped at {max_y:.0})</text>\n",
        h - bottom, w - right, h - bottom, h - bottom, (w - right) / 2.0, h - 8.0, top - 12.0
    );
    for k in 0..=4 {
        let e = (max_x * k as f64 / 4.0).round();
        svg += &format!("<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{e:.0}</text>\n", x(e), h - bottom + 16.0);
    }
    for k in 0..=max_y as usize {
        let v = k as f64;
        svg += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.1}</text>\n", left - 5.0, y(v) + 4.0);
        svg += &format!(
            "<line x1=\"{left}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n",
            y(v),
            w - right,
            y(v)
        );
    }
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        let path: Vec<String> = pts.iter().map(|&(e, v)| format!("{:.1},{:.1}", x(e), y(v))).collect();
        svg +=
            &format!("<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" points=\"{}\"/>\n", path.join(" "));
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{c}\">{name}</text>\n",
            w - right + 10.0,
            top + 16.0 * (i as f64 + 1.0)
        );
    }
    svg + "</svg>\n"
}

/// E8 (Aesop): next-character accuracy beside the character-frequency baseline.
fn sequence_table(by_exp: &Experiments<'_>) -> String {
    let rows: Vec<(&String, &Vec<&Record>)> = by_exp.iter().filter(|(_, rs)| dataset(rs[0]) == "aesop").collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\n## Sequences (E8, Aesop's Fables): next-character accuracy\n\n\
         Accuracy = 100 − error on the 90 predicted characters of each held-out string (24 test strings, \
         2,160 characters). `goodness`: the candidate character whose window has the highest goodness; \
         `softmax`: the readout; `backprop`: the twin. The paper reports a figure, no number.\n\n\
         | experiment | test: goodness | test: softmax | test: backprop | commonest character | train subset: goodness | seeds |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (exp, rs) in rows {
        let acc = |f: &dyn Fn(&Record) -> Option<f64>| {
            mean_spread(&rs.iter().filter_map(|r| f(r).map(|e| 100.0 - e)).collect::<Vec<f64>>())
        };
        let test = |k: &'static str| acc(&move |r: &Record| r.metrics.test_error_pct.get(k).copied());
        let unigram = acc(&|r: &Record| r.details.get("unigram_error_pct").and_then(|u| u["test"].as_f64()));
        let train = acc(&|r: &Record| r.metrics.train_error_pct.get("goodness").copied());
        let seeds: Vec<String> = rs.iter().map(|r| r.seed.to_string()).collect();
        out += &format!(
            "| {exp} | {} | {} | {} | {unigram} | {train} | {} |\n",
            test("goodness"),
            test("softmax"),
            test("backprop"),
            seeds.join(", ")
        );
    }
    out
}

/// E8's curves on one plot: validation next-character accuracy by epoch for every Aesop
/// experiment (mean over its seeds), each prediction rule, and the commonest-character line
/// (`results/aesop-curves.svg`); `None` without Aesop records.
pub fn sequence_svg(records: &[Record]) -> Option<String> {
    let aesop: Vec<&Record> = records.iter().filter(|r| dataset(r) == "aesop" && !r.curve.is_empty()).collect();
    if aesop.is_empty() {
        return None;
    }
    let mut sums: BTreeMap<String, BTreeMap<u32, (f64, usize)>> = BTreeMap::new();
    let mut last_epoch = 1u32;
    for r in &aesop {
        for c in &r.curve {
            last_epoch = last_epoch.max(c.epoch);
            // Frozen random layers have no goodness worth drawing: only their readout.
            let frozen = r.experiment.ends_with("random-features");
            for (k, e) in c.val_error_pct.iter().filter(|(k, _)| !(frozen && k.as_str() == "goodness")) {
                let short = r.experiment.trim_start_matches("aesop-");
                let name = if short == k { short.to_string() } else { format!("{short} {k}") };
                let slot = sums.entry(name).or_default().entry(c.epoch).or_default();
                *slot = (slot.0 + 100.0 - e, slot.1 + 1);
            }
        }
    }
    let mut series: Vec<crate::plot::Series> = sums
        .into_iter()
        .map(|(name, by_epoch)| (name, by_epoch.into_iter().map(|(e, (sum, n))| (e as f64, sum / n as f64)).collect()))
        .collect();
    if let Some(u) =
        aesop.iter().find_map(|r| r.details.get("unigram_error_pct").and_then(|u| u["validation"].as_f64()))
    {
        series.push(("commonest character".into(), vec![(0.0, 100.0 - u), (last_epoch as f64, 100.0 - u)]));
    }
    let (w, h) = (980.0, 420.0);
    let chart = crate::plot::line_chart("E8: validation next-character accuracy, %", "epoch", &series, 0.0, w, h);
    Some(crate::plot::document(w, h, &chart))
}

/// An SVG of the frame-stream records by epoch: held-out separation error and live-probe error
/// per stage (`results/frame-streams.svg`); `None` without such records.
pub fn frame_streams_svg(records: &[Record]) -> Option<String> {
    let streams: Vec<&Record> = records.iter().filter(|r| is_frame_stream(r) && !r.curve.is_empty()).collect();
    if streams.is_empty() {
        return None;
    }
    let series = |pick: &dyn Fn(&CurvePoint) -> &ErrorsPct, prefix: &str| -> Vec<crate::plot::Series> {
        let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for r in &streams {
            for c in &r.curve {
                for (k, v) in pick(c).iter().filter(|(k, _)| k.starts_with(prefix)) {
                    let name = format!("{} s{} {}", r.experiment, r.seed, k.trim_start_matches(prefix));
                    out.entry(name).or_default().push((c.epoch as f64, *v));
                }
            }
        }
        out.into_iter().collect()
    };
    let separation = series(&|c| &c.val_error_pct, "separation.");
    let probes = series(&|c| &c.stream_error_pct, "live_probe.");
    let (w, h) = (900.0, 300.0);
    let mut body =
        crate::plot::line_chart("held-out separation error, % (50 = chance)", "epoch", &separation, 0.0, w, h);
    body += &crate::plot::line_chart("live probe error on the stream, % (90 = chance)", "epoch", &probes, h, w, h);
    Some(crate::plot::document(w, 2.0 * h, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seed: u64, goodness: f64) -> Record {
        Record {
            experiment: "mnist-supervised".into(),
            seed,
            commit: "abcdef0123".into(),
            machine: "cpu, 2 cores".into(),
            wall_time_s: 120.0,
            epochs: 60,
            overrides: BTreeMap::new(),
            metrics: Metrics {
                test_error_pct: BTreeMap::from([("goodness".into(), goodness), ("softmax".into(), 1.7)]),
                ..Default::default()
            },
            throughput: Throughput::default(),
            curve: vec![CurvePoint {
                test_error_pct: ErrorsPct::new(),
                epoch: 5,
                val_error_pct: BTreeMap::from([("goodness".into(), 3.0)]),
                stream_error_pct: BTreeMap::new(),
                seconds: 10.0,
            }],
            pipeline: serde_json::json!({"paper": {"test_error_pct": 1.36},
                "pipeline": {"mode": "threaded"}, "negatives": {"labels": "hard", "prediction_delay": 8}}),
            details: BTreeMap::new(),
        }
    }

    #[test]
    fn the_table_has_mean_and_spread_over_seeds_and_the_paper_number() {
        let md = results_markdown(&[record(0, 1.3), record(1, 1.5)]);
        let row = md.lines().find(|l| l.starts_with("| mnist-supervised")).expect("a row");
        assert!(row.contains("| 1.36 |"), "{row}");
        assert!(row.contains("1.40 ± 0.14 (n=2)"), "{row}");
        assert!(row.contains("threaded, d=8") && row.contains("0, 1"), "{row}");
        let svg = curves_svg(&[record(0, 1.3)]);
        assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    }

    #[test]
    fn a_shortened_schedule_shows_what_ran_of_the_file() {
        // mnist-supervised ships 60 epochs; a record that ran 12 of them says so.
        let mut short = record(0, 2.0);
        short.epochs = 12;
        short.overrides.insert("data.epochs".into(), "12".into());
        let md = results_markdown(&[short]);
        let row = md.lines().find(|l| l.starts_with("| mnist-supervised")).expect("a row");
        assert!(row.contains("| 12 of 60 |"), "{row}");
        let mut other = record(1, 2.0);
        other.machine = "AMD EPYC (family 26, model 2), 2 cores".into();
        let md = results_markdown(&[record(0, 1.3), other, record(2, 1.4)]);
        let row = md.lines().find(|l| l.starts_with("| mnist-supervised")).expect("a row");
        assert_eq!(row.matches("AMD EPYC (family 26, model 2), 2 cores").count(), 1, "{row}");
        assert!(row.contains("; AMD EPYC (family 26"), "both machines: {row}");
        let full = results_markdown(&[record(0, 1.3)]);
        let row = full.lines().find(|l| l.starts_with("| mnist-supervised")).expect("a row");
        assert!(row.contains("| 60 |"), "{row}");
    }

    #[test]
    fn the_report_does_not_average_records_of_different_settings() {
        // Issue 12: a 1-epoch run of other layers beside a 60-epoch one published "44.44 ± 60.90".
        let mut short = record(1, 87.5);
        short.pipeline["data"] = serde_json::json!({"epochs": 1});
        let mut long = record(0, 1.37);
        long.pipeline["data"] = serde_json::json!({"epochs": 60});
        let md = results_markdown(&[long, short]);
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| mnist-supervised")).collect();
        assert_eq!(rows.len(), 2, "{md}");
        assert!(rows.iter().any(|r| r.starts_with("| mnist-supervised |") && r.contains("| 1.37 |")), "{md}");
        assert!(rows.iter().any(|r| r.starts_with("| mnist-supervised [data.epochs = 1] |") && r.contains("87.50")));
        assert!(rows.iter().all(|r| !r.contains("±")), "{md}");
    }

    #[test]
    fn a_record_read_back_one_ulp_off_is_the_same_experiment() {
        // Found re-recording moving-mnist-local: its record says peer_normalization
        // 0.029999999329447743, the run 0.029999999329447746, one f32 (0.03) both; the run was
        // refused as "another experiment".
        let written = serde_json::json!({"model": {"peer_normalization": 0.03f32, "lr": 0.1f32}});
        let read: serde_json::Value = serde_json::from_str(
            r#"{"model": {"peer_normalization": 0.029999999329447743, "lr": 0.10000000149011612}}"#,
        )
        .unwrap();
        assert_eq!(first_difference(&read, &written), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed0.json");
        let record = r#"{"pipeline": {"model": {"peer_normalization": 0.029999999329447743}}}"#;
        std::fs::write(&path, record).unwrap();
        assert!(check_replaceable(&path, &written, false).is_ok());
        // Another f32 is another setting, and so is an integer one apart.
        let other = serde_json::json!({"model": {"peer_normalization": 0.031f32, "lr": 0.1f32}});
        assert!(first_difference(&read, &other).is_some_and(|(k, _, _)| k == "model.peer_normalization"));
        let epochs = |n: u64| serde_json::json!({"data": {"epochs": n}});
        assert!(first_difference(&epochs(16_777_217), &epochs(16_777_216)).is_some());
    }

    #[test]
    fn experiments_differ_in_settings_not_in_seed_threads_or_paper_text() {
        let a = serde_json::json!({"seed": 0, "paper": {"claim": "x"}, "data": {"epochs": 60},
            "stage": [{"kind": "ff_dense", "units": 10, "threads": 1}]});
        let mut b = a.clone();
        b["seed"] = 1.into();
        b["paper"]["claim"] = "y".into();
        b["stage"][0]["threads"] = 4.into();
        b["new_setting"] = true.into(); // a key an older record lacks
        assert_eq!(first_difference(&a, &b), None);
        b["stage"][0]["units"] = 20.into();
        assert_eq!(first_difference(&a, &b), Some(("stage.1.units".into(), "10".into(), "20".into())));
        // A record on disk of another experiment is not replaced without the flag.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed0.json");
        assert!(check_replaceable(&path, &b, false).is_ok(), "no record yet");
        std::fs::write(&path, serde_json::json!({"pipeline": a}).to_string()).unwrap();
        let err = check_replaceable(&path, &b, false).unwrap_err();
        assert!(err.contains("stage.1.units = 10 there, 20 here") && err.contains("--replace-record"), "{err}");
        assert!(check_replaceable(&path, &b, true).is_ok());
        assert!(check_replaceable(&path, &a, false).is_ok(), "the same experiment again");
    }
}
