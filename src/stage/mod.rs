//! Stages: the steps of the pipeline, each on its own thread, each owning its state.
//!
//! A stage sees packets in stream order and nothing else. It never reads another stage's
//! weights: FF locality is kept by ownership, since a stage's weights live inside the boxed
//! stage that its thread owns, and the only thing that ever leaves is a copy
//! ([`Stage::snapshot`]) appended to an epoch marker.

pub mod ff_dense;

use crate::error::StageError;
use crate::packet::{Packet, StageState};

pub use ff_dense::{FfDense, FfDenseConfig};

/// One step of the pipeline.
pub trait Stage: Send {
    /// The stage's name (thread name, metrics label, checkpoint prefix).
    fn name(&self) -> &str;
    /// Forwards `packet` and applies this stage's local update from its learning rows.
    fn process(&mut self, packet: Packet) -> Result<Packet, StageError>;
    /// A copy of the stage's state for a checkpoint.
    fn snapshot(&self) -> StageState;
    /// Restores a state written by [`Stage::snapshot`]; the error says what does not fit.
    fn restore(&mut self, state: &StageState) -> Result<(), String>;
}
