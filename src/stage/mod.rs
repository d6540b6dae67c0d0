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
    /// Forwards `packet` and prepares this stage's local update from its learning rows.
    fn process(&mut self, packet: Packet) -> Result<Packet, StageError>;
    /// Applies the update prepared by the last [`Stage::process`]. The runtime calls it right
    /// after the packet has been sent downstream, so the next stage does not wait for it;
    /// `process` applies a forgotten one first, so skipping it never changes the maths.
    fn learn(&mut self) {}
    /// [`Stage::process`] then [`Stage::learn`]: the synchronous rule, for tests and tools.
    fn step(&mut self, packet: Packet) -> Result<Packet, StageError> {
        let out = self.process(packet)?;
        self.learn();
        Ok(out)
    }
    /// A copy of the stage's state for a checkpoint.
    fn snapshot(&self) -> StageState;
    /// Restores a state written by [`Stage::snapshot`]; the error says what does not fit.
    fn restore(&mut self, state: &StageState) -> Result<(), String>;
}
