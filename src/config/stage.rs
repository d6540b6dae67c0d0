//! `[[stage]]` tables: the network as a list of stages, each with a `kind` and the settings
//! of that kind.
//!
//! ```toml
//! [[stage]]
//! kind = "ff_recurrent"   # or "ff_dense", "ff_local", "ff_conv", "ff_local_recurrent"
//! units = 2000
//! threads = 1             # a stage may own a small thread pool for its products
//! ```
//!
//! A table is a `kind`-tagged enum, so a setting of another kind (`damping` on an `ff_dense`
//! stage) does not parse. Settings a stage leaves out come from `[model]` (goodness,
//! threshold). A newcomer adds a kind with one variant here, one file in `src/stage/`, and
//! one arm in `crate::config::build::build_stages_for`. A pipeline file without `[[stage]]` tables
//! says `model.layers = [...]`: a chain of `ff_dense` stages.

use serde::{Deserialize, Serialize};

use crate::ff::fields::{Fields, MapShape};
use crate::ff::goodness::Goodness;

/// One stage of the network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StageSpec {
    /// A fully connected FF layer (`src/stage/ff_dense.rs`).
    FfDense(DenseSpec),
    /// A recurrent FF layer fed from below and from above (`src/stage/ff_recurrent.rs`,
    /// paper §3.4).
    FfRecurrent(RecurrentSpec),
    /// A locally connected FF layer: a map of positions, each unit with its own weights on a
    /// square field of the map below (`src/stage/ff_local.rs`, paper §3.2 and §4).
    FfLocal(LocalSpec),
    /// The same with one set of weights for every position: convolutional (not in the paper,
    /// which has no weight sharing; for video, where a digit moves).
    FfConv(LocalSpec),
    /// A recurrent FF layer on local fields of the map below and of the map above (or the
    /// label layer, for the top one): the paper's CIFAR-10 nets (`src/stage/ff_recurrent.rs`
    /// with `ff_local`'s fields, §4).
    FfLocalRecurrent(LocalRecurrentSpec),
}

/// An `ff_dense` stage.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DenseSpec {
    /// Number of ReLUs.
    pub units: usize,
    /// Goodness function (default: `model.goodness`).
    pub goodness: Option<Goodness>,
    /// θ (default: `model.threshold`, else the goodness's own).
    pub threshold: Option<f32>,
    /// Threads of the stage's own pool for its matrix products (1: the stage's thread only).
    #[serde(default = "one_thread")]
    pub threads: usize,
}

/// An `ff_recurrent` stage.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecurrentSpec {
    /// Number of ReLUs.
    pub units: usize,
    /// Goodness function (default: `model.goodness`).
    pub goodness: Option<Goodness>,
    /// θ (default: `model.threshold`, else the goodness's own).
    pub threshold: Option<f32>,
    /// Threads of the stage's own pool for its matrix products.
    #[serde(default = "one_thread")]
    pub threads: usize,
    /// Share of the previous state kept at each step (paper: 0.3 old + 0.7 new).
    #[serde(default = "default_damping")]
    pub damping: f32,
}

/// An `ff_local` stage: `channels` units at each position of a grid of fields laid over the
/// map below (`field` × `field` positions, moved by `stride`, starting `padding` positions off
/// the map's corner); the grid, and so the unit count, follows from the map below.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalSpec {
    /// Units per position.
    pub channels: usize,
    /// Side of the square field, in positions of the map below.
    pub field: usize,
    /// Positions between neighbouring fields.
    #[serde(default = "one_thread")]
    pub stride: usize,
    /// Positions of the first field off the map (parts of fields off the map are not there).
    #[serde(default)]
    pub padding: usize,
    /// Goodness function (default: `model.goodness`).
    pub goodness: Option<Goodness>,
    /// θ (default: `model.threshold`, else the goodness's own).
    pub threshold: Option<f32>,
    /// Threads of the stage's own pool, which share out its positions.
    #[serde(default = "one_thread")]
    pub threads: usize,
}

impl LocalSpec {
    /// Its fields over the map `below`.
    pub fn fields(&self, below: MapShape) -> Fields {
        Fields { input: below, size: self.field, stride: self.stride, padding: self.padding }
    }
}

/// An `ff_local_recurrent` stage: an `ff_local` map whose units also see a square field of the
/// map above, one step earlier (the top stage: the label layer, every unit all of it).
///
/// ```toml
/// [[stage]]
/// kind = "ff_local_recurrent"
/// channels = 3          # units per position
/// field = 11            # bottom-up fields, 11x11 positions of the map below
/// padding = 5           # so a 32x32 map below makes a 32x32 map
/// top_down_field = 11   # top-down fields on the map above (default: field)
/// ```
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalRecurrentSpec {
    /// Units per position.
    pub channels: usize,
    /// Side of the bottom-up field, in positions of the map below.
    pub field: usize,
    /// Positions between neighbouring bottom-up fields.
    #[serde(default = "one_thread")]
    pub stride: usize,
    /// Positions of the first bottom-up field off the map.
    #[serde(default)]
    pub padding: usize,
    /// Side of the top-down field on the map above (default: `field`). The top-down fields
    /// move one position of the map above per position of this map, centred: the map above
    /// must have this map's grid.
    pub top_down_field: Option<usize>,
    /// Share of the previous state kept at each step (paper: 0.3 old + 0.7 new).
    #[serde(default = "default_damping")]
    pub damping: f32,
    /// Goodness function (default: `model.goodness`).
    pub goodness: Option<Goodness>,
    /// θ (default: `model.threshold`, else the goodness's own).
    pub threshold: Option<f32>,
    /// Threads of the stage's own pool, which share out its positions.
    #[serde(default = "one_thread")]
    pub threads: usize,
}

impl LocalRecurrentSpec {
    /// Its bottom-up fields over the map `below`: an `ff_local` stage's.
    pub fn fields(&self, below: MapShape) -> Fields {
        self.local().fields(below)
    }

    /// Its top-down fields over the map `above`: stride 1, centred (padding `(side − 1)/2`),
    /// so a map above of this map's grid gives every position one field.
    pub fn top_down_fields(&self, above: MapShape) -> Fields {
        let size = self.top_down_field.unwrap_or(self.field);
        Fields { input: above, size, stride: 1, padding: size.saturating_sub(1) / 2 }
    }

    fn local(&self) -> LocalSpec {
        LocalSpec {
            channels: self.channels,
            field: self.field,
            stride: self.stride,
            padding: self.padding,
            goodness: self.goodness,
            threshold: self.threshold,
            threads: self.threads,
        }
    }
}

/// What a stage reads and makes: the map below (for stages over images or maps), its unit
/// count, and the map it makes (map-making kinds only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageShape {
    /// The map the stage reads, if its input is one.
    pub below: Option<MapShape>,
    /// Its units.
    pub units: usize,
    /// The map it makes, if it makes one.
    pub map: Option<MapShape>,
}

fn one_thread() -> usize {
    1
}

fn default_damping() -> f32 {
    0.3
}

impl StageSpec {
    /// A plain `ff_dense` stage of `units` (what `model.layers` describes).
    pub fn dense(units: usize) -> StageSpec {
        StageSpec::FfDense(DenseSpec { units, goodness: None, threshold: None, threads: 1 })
    }

    /// The stage's `kind` as written in a pipeline file.
    pub fn kind(&self) -> &'static str {
        match self {
            StageSpec::FfDense(_) => "ff_dense",
            StageSpec::FfRecurrent(_) => "ff_recurrent",
            StageSpec::FfLocal(_) => "ff_local",
            StageSpec::FfConv(_) => "ff_conv",
            StageSpec::FfLocalRecurrent(_) => "ff_local_recurrent",
        }
    }

    /// What the stage makes of `below` (the map under it, if there is one), or what is wrong
    /// as `(key within the table, complaint)`.
    pub fn shape(&self, below: Option<MapShape>) -> Result<StageShape, (&'static str, String)> {
        match self {
            StageSpec::FfDense(s) => Ok(StageShape { below, units: s.units, map: None }),
            StageSpec::FfRecurrent(s) => Ok(StageShape { below, units: s.units, map: None }),
            StageSpec::FfLocalRecurrent(s) => StageSpec::FfLocal(s.local()).shape(below),
            StageSpec::FfLocal(s) | StageSpec::FfConv(s) => {
                let Some(map) = below else {
                    return Err((
                        "kind",
                        "needs a map below: an image or frame source (window 1) or an ff_local stage (an idx \
                         folder's size is only known when its data loads: not yet supported there)"
                            .into(),
                    ));
                };
                if s.channels == 0 {
                    return Err(("channels", "must be at least 1".into()));
                }
                let (height, width) = s.fields(map).grid().ok_or_else(|| {
                    (
                        "field",
                        format!(
                            "{0}x{0} fields (stride {1}, padding {2}) do not fit the {map} map below",
                            s.field, s.stride, s.padding
                        ),
                    )
                })?;
                let out = MapShape::new(height, width, s.channels);
                Ok(StageShape { below, units: out.len(), map: Some(out) })
            }
        }
    }

    /// Threads of the stage's own pool.
    pub fn threads(&self) -> usize {
        match self {
            StageSpec::FfDense(s) => s.threads,
            StageSpec::FfRecurrent(s) => s.threads,
            StageSpec::FfLocal(s) | StageSpec::FfConv(s) => s.threads,
            StageSpec::FfLocalRecurrent(s) => s.threads,
        }
    }

    /// The stage's own goodness and threshold, if it sets them.
    pub fn objective(&self) -> (Option<Goodness>, Option<f32>) {
        match self {
            StageSpec::FfDense(s) => (s.goodness, s.threshold),
            StageSpec::FfRecurrent(s) => (s.goodness, s.threshold),
            StageSpec::FfLocal(s) | StageSpec::FfConv(s) => (s.goodness, s.threshold),
            StageSpec::FfLocalRecurrent(s) => (s.goodness, s.threshold),
        }
    }

    /// True for stages with top-down input.
    pub fn is_recurrent(&self) -> bool {
        matches!(self, StageSpec::FfRecurrent(_) | StageSpec::FfLocalRecurrent(_))
    }

    /// The damping of a recurrent stage.
    pub fn damping(&self) -> Option<f32> {
        match self {
            StageSpec::FfRecurrent(s) => Some(s.damping),
            StageSpec::FfLocalRecurrent(s) => Some(s.damping),
            _ => None,
        }
    }
}

/// How a recurrent net plays each batch (`[recurrent]`, paper §3.4).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecurrentConfig {
    /// Damped synchronous iterations after the bottom-up pass (paper: 8). The head plays
    /// `iterations + 1` steps of every batch: step 0 initializes the states bottom-up.
    #[serde(default = "default_iterations")]
    pub iterations: u32,
    /// First and last step (1 = the first iteration) whose training packets update the
    /// weights.
    #[serde(default = "default_learn_steps")]
    pub learn_steps: [u32; 2],
    /// First and last step whose goodness the goodness test sums (paper: iterations 3 to 5).
    #[serde(default = "default_goodness_steps")]
    pub goodness_steps: [u32; 2],
    /// Keep the states from one packet to the next (frame streams: the net's state is the
    /// video's memory) instead of starting every batch from its bottom-up pass.
    #[serde(default)]
    pub carry_state: bool,
}

fn default_iterations() -> u32 {
    8
}

fn default_learn_steps() -> [u32; 2] {
    [1, 8]
}

fn default_goodness_steps() -> [u32; 2] {
    [3, 5]
}

impl Default for RecurrentConfig {
    fn default() -> RecurrentConfig {
        RecurrentConfig {
            iterations: default_iterations(),
            learn_steps: default_learn_steps(),
            goodness_steps: default_goodness_steps(),
            carry_state: false,
        }
    }
}

impl RecurrentConfig {
    /// Steps the head plays of every batch.
    pub fn steps(&self) -> u32 {
        self.iterations + 1
    }

    /// What is wrong with the settings, as `(key, complaint)`.
    pub fn check(&self) -> Option<(&'static str, String)> {
        let last = self.iterations;
        if self.iterations == 0 {
            return Some(("recurrent.iterations", "must be at least 1".into()));
        }
        for (key, [from, to]) in
            [("recurrent.learn_steps", self.learn_steps), ("recurrent.goodness_steps", self.goodness_steps)]
        {
            if from > to || to > last {
                return Some((
                    key,
                    format!("must be [first, last] with first <= last <= {last} (recurrent.iterations)"),
                ));
            }
        }
        None
    }
}
