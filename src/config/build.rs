//! From a parsed pipeline file to the components of a run: the one place that knows every
//! kind of stage, head, sink and twin.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Result};

use super::{
    LabelledHeadSpec, LocalRecurrentSpec, PipelineConfig, ReadoutSettings, Roles, SourceSpec, StageShape, StageSpec,
};
use crate::backprop::{Backprop, BackpropConfig};
use crate::data::{aesop, cifar10, idx, mnist, Labelled, Split};
use crate::head::{HeadConfig, LabelledHead};
use crate::sink::{Classify, Readout, ReadoutConfig};
use crate::stage::ff_dense::Dense;
use crate::stage::ff_local::Local;
use crate::stage::{Above, FfDenseConfig, FfLocalConfig, FfRecurrentConfig, FfSettings, Stage};

/// `(row width, classes)` of a labelled dataset: MNIST or CIFAR-10 images, an IDX folder's
/// images, or Aesop windows.
///
/// # Panics
/// On an `idx` source not yet resolved ([`PipelineConfig::resolved`]): only its files know its
/// shape. The sessions resolve the pipeline before they build anything.
pub fn row_shape(config: &PipelineConfig) -> (usize, usize) {
    match &config.source {
        SourceSpec::Aesop(_) => (aesop::WIDTH, aesop::SYMBOLS),
        SourceSpec::Cifar10(_) => (cifar10::PIXELS, cifar10::CLASSES),
        SourceSpec::Idx(s) => match s.shape {
            Some(shape) => (shape.pixels(), shape.classes),
            None => panic!("the idx source `{}` was not resolved before its stages were built", s.path),
        },
        SourceSpec::Mnist(_) | SourceSpec::MovingMnist(_) | SourceSpec::Video(_) => (mnist::PIXELS, mnist::CLASSES),
    }
}

/// The FF stages a pipeline file describes (labelled rows: MNIST or Aesop).
pub fn build_stages(config: &PipelineConfig) -> Vec<Box<dyn Stage>> {
    build_stages_for(config, row_shape(config).0)
}

/// The FF stages a pipeline file describes, the first reading rows of `inputs` values: one
/// arm per stage kind.
pub fn build_stages_for(config: &PipelineConfig, inputs: usize) -> Vec<Box<dyn Stage>> {
    let m = &config.model;
    let specs = config.stage_specs();
    let shapes = config.shapes();
    let recurrent = config.recurrent_settings();
    let mut inputs = inputs;
    let mut stages: Vec<Box<dyn Stage>> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let layer = i + 1;
        let name = format!("layer{layer}");
        let units = shapes[i].units;
        let (goodness, threshold) = spec.objective();
        let (goodness, threshold) = (goodness.unwrap_or(m.goodness), threshold.or(m.threshold));
        let ff = FfSettings {
            goodness,
            threshold,
            temperature: m.temperature,
            peer_normalization: m.peer_normalization,
            rule: config.optimizer.rule,
            lr: config.optimizer.lr,
            weight_cost: config.optimizer.weight_cost,
            schedule: config.optimizer.schedule,
            epochs: config.data.epochs,
            counts_for_goodness: layer >= m.goodness_from,
            feeds_readout: layer >= m.readout_from,
            seed: config.seed,
            threads: spec.threads(),
        };
        let stage: Box<dyn Stage> = match spec {
            StageSpec::FfDense(_) => Box::new(FfDenseConfig { name, layer, inputs, units, ff }.build()),
            StageSpec::FfRecurrent(_) | StageSpec::FfLocalRecurrent(_) => {
                // The top stage's top-down input is the clamped label layer (paper §3.4); a
                // frame stream has no labels, so its top stage has nothing above.
                let above = match specs.get(i + 1) {
                    Some(_) => Above::Stage(shapes[i + 1].units),
                    None if config.is_frame_stream() => Above::Nothing,
                    None => Above::Label { classes: row_shape(config).1, strength: m.label_strength },
                };
                // A frame stream plays every frame once, as one step that learns.
                let [learn_from, learn_to] = if config.is_frame_stream() { [0, 0] } else { recurrent.learn_steps };
                let recurrent = FfRecurrentConfig {
                    name,
                    layer,
                    inputs,
                    units,
                    above,
                    damping: spec.damping().expect("a recurrent stage has a damping"),
                    learn_steps: learn_from..=learn_to,
                    carry_state: recurrent.carry_state,
                    ff,
                };
                match spec {
                    StageSpec::FfLocalRecurrent(s) => local_recurrent(recurrent, s, &shapes, i),
                    _ => Box::new(recurrent.build()),
                }
            }
            StageSpec::FfLocal(s) | StageSpec::FfConv(s) => {
                // Invariant: `stage_shapes` gave every ff_local and ff_conv stage the map below it.
                let below = shapes[i].below.expect("a local stage has a map below");
                let (fields, channels) = (s.fields(below), s.channels);
                let shared = matches!(spec, StageSpec::FfConv(_));
                // Invariant: `stage_shapes` checked that the fields fit the map.
                Box::new(FfLocalConfig { name, layer, fields, channels, shared, ff }.build().expect("the fields fit"))
            }
        };
        stages.push(stage);
        inputs = units;
    }
    stages
}

/// The bytes the stages of a net on rows of `inputs` values hold, by stage: weights with their
/// optimizer state (and gradient buffer), and a packet's activities. An estimate, to refuse a
/// net that cannot fit before it is built (an allocation failure aborts the process).
pub fn stage_bytes(config: &PipelineConfig, inputs: usize) -> Vec<(String, f64)> {
    let specs = config.stage_specs();
    let shapes = config.shapes();
    let classes = if config.is_frame_stream() { 0 } else { row_shape(config).1 };
    // Weights, gradient buffer, optimizer state (Adam keeps two moments).
    let copies = match config.optimizer.rule {
        crate::ff::optim::Rule::Adam { .. } => 4.0,
        _ => 3.0,
    };
    let rows = 3.0 * config.data.batch as f64; // positives, negatives and neutral rows
    let mut below = inputs as f64;
    let mut out = Vec::new();
    for (i, (spec, shape)) in specs.iter().zip(&shapes).enumerate() {
        let units = shape.units as f64;
        let above = shapes.get(i + 1).map_or(classes as f64, |s| s.units as f64);
        let weights = match spec {
            StageSpec::FfDense(_) => below * units,
            StageSpec::FfRecurrent(_) => (below + above) * units,
            StageSpec::FfLocal(s) => {
                (s.field * s.field) as f64 * shape.below.map_or(1.0, |m| m.channels as f64) * units
            }
            StageSpec::FfConv(s) => {
                (s.field * s.field) as f64 * shape.below.map_or(1.0, |m| m.channels as f64) * s.channels as f64
            }
            StageSpec::FfLocalRecurrent(s) => {
                let patch = (s.field * s.field) as f64 * shape.below.map_or(1.0, |m| m.channels as f64);
                let down = shapes.get(i + 1).map_or(classes as f64, |a| {
                    let side = s.top_down_field.unwrap_or(s.field);
                    (side * side) as f64 * a.map.map_or(1.0, |m| m.channels as f64)
                });
                (patch + down) * units
            }
        };
        out.push((format!("layer{}", i + 1), 4.0 * (copies * weights + 4.0 * rows * (below + units))));
        below = units;
    }
    out
}

/// Refuses a net whose stages need more memory than the machine has available, with the
/// largest stage named, before anything is built.
pub fn check_memory(config: &PipelineConfig, inputs: usize) -> Result<()> {
    let Some(available) = available_bytes() else { return Ok(()) };
    let stages = stage_bytes(config, inputs);
    let total: f64 = stages.iter().map(|(_, b)| b).sum();
    if total > available {
        let (name, bytes) = stages.iter().fold(("", 0.0), |m, (n, b)| if *b > m.1 { (n.as_str(), *b) } else { m });
        let gib = |b: f64| b / (1u64 << 30) as f64;
        bail!(
            "the net needs about {:.1} GiB ({name} alone {:.1} GiB: its weights, their optimizer state and a \
             packet's activities), more than the {:.1} GiB this machine has available: make it smaller",
            gib(total),
            gib(bytes),
            gib(available)
        );
    }
    Ok(())
}

/// `MemAvailable` of /proc/meminfo in bytes (None where there is none: no check).
fn available_bytes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// An `ff_local_recurrent` stage, the `i`-th (0-based) of a net of `shapes`: local fields of the
/// map below; local fields of the map above, or the whole label layer for the top stage (the
/// paper's CIFAR-10 nets: "10 top-down inputs" from the labels).
fn local_recurrent(
    config: FfRecurrentConfig,
    spec: &LocalRecurrentSpec,
    shapes: &[StageShape],
    i: usize,
) -> Box<dyn Stage> {
    // Invariant: `PipelineConfig::validate_stages` gave every ff_local_recurrent stage a map
    // below, fields that fit it, and a map above (if any) of this stage's grid.
    let (below, map) = (shapes[i].below.expect("a map below"), shapes[i].map.expect("a map"));
    let up = Local::new(spec.fields(below), spec.channels, false, map);
    match shapes.get(i + 1) {
        Some(above) => {
            let down = Local::new(spec.top_down_fields(above.map.expect("a map above")), spec.channels, false, map);
            Box::new(config.build_with(up, down))
        }
        None => {
            let down = Dense::new(config.above.width(), config.units);
            Box::new(config.build_with(up, down))
        }
    }
}

/// The labelled head and readout of an FF pipeline on labelled rows.
fn labelled_roles(config: &PipelineConfig) -> (&LabelledHeadSpec, &ReadoutSettings) {
    match Roles::of(config) {
        Roles::LabelledFf { head, readout } => (head, readout),
        // Invariant: the labelled session builds these for FF on labelled rows only, which
        // `Roles::check` pairs with a labelled head and a readout.
        other => panic!("a labelled head and readout were built for {other:?}"),
    }
}

/// The sink a pipeline file describes.
pub fn build_sink(config: &PipelineConfig) -> Classify {
    let m = &config.model;
    let (negatives, readout) = labelled_roles(config);
    let features = m.layers.iter().skip(m.readout_from - 1).sum();
    Classify::new(
        Readout::new(ReadoutConfig {
            features,
            classes: row_shape(config).1,
            rule: config.optimizer.rule,
            lr: readout.lr,
            weight_cost: readout.weight_cost,
            schedule: config.optimizer.schedule,
            epochs: config.data.epochs,
        }),
        negatives.labels != crate::head::NegativeLabels::Random,
    )
}

/// The backprop twin a pipeline file describes.
pub fn build_backprop(config: &PipelineConfig) -> Backprop {
    build_backprop_for(config, row_shape(config).0)
}

/// The backprop twin a pipeline file describes, reading rows of `inputs` values.
pub fn build_backprop_for(config: &PipelineConfig, inputs: usize) -> Backprop {
    // The twin of a net of local stages has their fields (the paper's CIFAR-10 nets are
    // locally connected for BP as for FF); every other stage is dense.
    let local = config
        .stage_specs()
        .iter()
        .zip(config.shapes())
        .map(|(spec, shape)| {
            let (below, map) = (shape.below?, shape.map?);
            match spec {
                StageSpec::FfLocal(s) => Some(Local::new(s.fields(below), s.channels, false, map)),
                StageSpec::FfConv(s) => Some(Local::new(s.fields(below), s.channels, true, map)),
                StageSpec::FfLocalRecurrent(s) => Some(Local::new(s.fields(below), s.channels, false, map)),
                _ => None,
            }
        })
        .collect();
    BackpropConfig {
        inputs,
        hidden: config.model.layers.clone(),
        local,
        classes: row_shape(config).1,
        rule: config.optimizer.rule,
        lr: config.optimizer.lr,
        weight_cost: config.optimizer.weight_cost,
        schedule: config.optimizer.schedule,
        epochs: config.data.epochs,
        normalize_input: config.model.normalize_input,
        dropout: config.model.dropout,
        seed: config.seed,
    }
    .build()
}

/// The head a pipeline file describes, starting at `first_epoch`.
pub fn build_head(
    config: &PipelineConfig,
    data: Arc<Labelled>,
    first_epoch: u32,
    stop: Arc<AtomicBool>,
) -> LabelledHead {
    let (negatives, _) = labelled_roles(config);
    LabelledHead::new(
        HeadConfig {
            source: config.dataset_source(),
            first_epoch,
            epochs: config.data.epochs,
            negatives: negatives.labels,
            prediction_delay: negatives.prediction_delay,
            label_strength: config.model.label_strength,
            label_pixels: !config.is_recurrent(),
            eval_every: config.eval.every,
            eval_batch: config.eval.batch,
            train_eval_size: config.eval.train_size,
            test_at_end: config.eval.test,
            test_at: config.eval.test_at.clone(),
            schedule: config.schedule,
            replay: negatives.replay,
            dream_strings: negatives.dream_strings,
        },
        data,
        stop,
    )
}

/// Loads the labelled rows (MNIST, CIFAR-10, an IDX folder, Aesop) and cuts the splits to the
/// sizes the pipeline asks for. An `idx` folder must hold the shape its pipeline was resolved
/// with ([`PipelineConfig::resolved`]), if it was.
pub fn load_data(config: &PipelineConfig, data_dir: Option<&Path>) -> Result<Arc<Labelled>> {
    let mut data = match &config.source {
        SourceSpec::Aesop(_) => aesop::Aesop::load(data_dir)?.labelled(),
        SourceSpec::Mnist(_) => Labelled::mnist(data_dir)?,
        SourceSpec::Cifar10(_) => Labelled::cifar10(data_dir)?,
        SourceSpec::Idx(s) => {
            let folder = idx::locate(&s.path, data_dir)?;
            let (data, shape) = idx::load(&folder, s.classes, s.validation)?;
            if s.shape.is_some_and(|resolved| resolved != shape) {
                bail!("`{}` changed while the run started: {shape:?}, not {:?}", folder.display(), s.shape);
            }
            data
        }
        other => bail!("`{}` is a frame stream, not labelled rows", other.dataset().name()),
    };
    let cut = |split: &mut Split, n: usize| {
        if n > 0 {
            *split = split.head(n);
        }
    };
    cut(&mut data.train, config.data.train_size);
    cut(&mut data.validation, config.data.validation_size);
    cut(&mut data.test, config.data.test_size);
    Ok(Arc::new(data))
}
