//! Stages: the steps of the pipeline, each on its own thread, each owning its state.
//!
//! A stage sees packets in stream order and nothing else. It never reads another stage's
//! weights: FF locality is kept by ownership, since a stage's weights live inside the boxed
//! stage that its thread owns, and the only thing that ever leaves is a copy
//! ([`Stage::snapshot`]) appended to an epoch marker. The trait lives in [`crate::runtime`];
//! this folder holds the kinds of stage, one file each.

pub mod core;
pub mod ff_dense;
pub mod ff_recurrent;

pub use self::core::FfSettings;
pub use crate::runtime::Stage;
pub use ff_dense::{FfDense, FfDenseConfig};
pub use ff_recurrent::{Above, FfRecurrent, FfRecurrentConfig};
