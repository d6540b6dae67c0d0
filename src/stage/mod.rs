//! Stages: the steps of the pipeline, each on its own thread, each owning its state.
//!
//! A stage sees packets in stream order and nothing else. It never reads another stage's
//! weights: FF locality is kept by ownership, since a stage's weights live inside the boxed
//! stage that its thread owns, and the only thing that ever leaves is a copy
//! ([`Stage::snapshot`]) that the stage writes as its own checkpoint shard when an epoch's
//! marker passes it (`crate::runtime::barrier`). The trait lives in [`crate::runtime`]; this
//! folder holds the kinds of stage, one file each, and [`core`] the FF step they share.
//!
//! Adding a kind (say `ff_conv`): this folder's `ff_conv.rs` with a config that builds the stage
//! and an `impl Stage` (process, learn, snapshot, restore; `reads_above`/`sends_below` for
//! feedback edges), one `StageSpec` variant with its settings in `crate::config::stage`, and
//! one arm in `crate::config::build::build_stages_for`. The runtime, the sessions, the
//! checkpoints and the records need no change.

pub mod core;
pub mod ff_dense;
pub mod ff_local;
pub mod ff_recurrent;

pub use self::core::FfSettings;
pub use crate::runtime::Stage;
pub use ff_dense::{FfDense, FfDenseConfig};
pub use ff_local::{FfLocal, FfLocalConfig};
pub use ff_recurrent::{Above, FfRecurrent, FfRecurrentConfig};
