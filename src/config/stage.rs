//! `[[stage]]` tables: the network as a list of stages, each with a `kind` and the settings
//! of that kind.
//!
//! ```toml
//! [[stage]]
//! kind = "ff_recurrent"   # or "ff_dense"
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
        }
    }

    /// Number of ReLUs.
    pub fn units(&self) -> usize {
        match self {
            StageSpec::FfDense(s) => s.units,
            StageSpec::FfRecurrent(s) => s.units,
        }
    }

    /// Threads of the stage's own pool.
    pub fn threads(&self) -> usize {
        match self {
            StageSpec::FfDense(s) => s.threads,
            StageSpec::FfRecurrent(s) => s.threads,
        }
    }

    /// The stage's own goodness and threshold, if it sets them.
    pub fn objective(&self) -> (Option<Goodness>, Option<f32>) {
        match self {
            StageSpec::FfDense(s) => (s.goodness, s.threshold),
            StageSpec::FfRecurrent(s) => (s.goodness, s.threshold),
        }
    }

    /// True for stages with top-down input.
    pub fn is_recurrent(&self) -> bool {
        matches!(self, StageSpec::FfRecurrent(_))
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
