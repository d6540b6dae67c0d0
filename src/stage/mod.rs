//! Stages: the steps of the pipeline, each on its own thread, each owning its state.
//!
//! A stage sees packets in stream order and nothing else. It never reads another stage's
//! weights: FF locality is kept by ownership, since a stage's weights live inside the boxed
//! stage that its thread owns, and the only thing that ever leaves is a copy
//! ([`Stage::snapshot`]) that the stage writes as its own checkpoint shard when an epoch's
//! marker passes it (`crate::runtime::barrier`). The trait lives in [`crate::runtime`]; this
//! folder holds the kinds of stage, one file each, [`core`] the FF step's pieces they share and
//! [`layer`] the feed-forward layer (`FfLayer`) that a kind without top-down input only gives
//! a connectivity; [`shared_rows`] lets a dense layer compute the rows of one frame (its
//! positive, negative and candidate rows, which differ only in their label values) in one product.
//!
//! Adding a feed-forward kind (say `ff_conv`): this folder's `ff_conv.rs` with a config and a
//! `layer::Connectivity` (its inputs, units, initial weights, forward product and gradient),
//! one `StageSpec` variant with its settings in `crate::config::stage`, and one arm in
//! `crate::config::build::build_stages_for`. A kind with feedback edges implements `Stage`
//! itself, as `ff_recurrent` does. The runtime, the sessions, the checkpoints and the records
//! need no change.

pub mod core;
pub mod ff_dense;
pub mod ff_local;
pub mod ff_recurrent;
pub mod layer;
pub mod shared_rows;

pub use self::core::FfSettings;
pub use crate::runtime::Stage;
pub use ff_dense::{FfDense, FfDenseConfig};
pub use ff_local::{FfLocal, FfLocalConfig};
pub use ff_recurrent::{Above, FfRecurrent, FfRecurrentConfig};
