//! The library's error types, one per seam.

use std::path::PathBuf;

/// A stage could not process its input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// The packet's width does not match the layer's inputs.
    #[error("stage `{stage}`: input has {got} features, expected {expected}")]
    Width {
        /// Stage name.
        stage: String,
        /// Expected input width.
        expected: usize,
        /// Received width.
        got: usize,
    },
    /// Training diverged.
    #[error("stage `{stage}`: goodness is not finite at packet {seq} (epoch {epoch}); the last checkpoint is kept")]
    NonFinite {
        /// Stage name.
        stage: String,
        /// Packet sequence number.
        seq: u64,
        /// Epoch.
        epoch: u32,
    },
    /// Two neighbouring stages cannot be joined (a stage reads the state of the stage above,
    /// which does not send one).
    #[error("stage `{stage}`: {reason}")]
    Topology {
        /// Stage name.
        stage: String,
        /// What does not fit.
        reason: String,
    },
    /// An edge into or out of the element failed (a remote edge: a gap, a damaged message,
    /// a peer that stalled or vanished).
    #[error("`{stage}`: {reason}")]
    Edge {
        /// The element at the failed edge's end (a stage, `source` or `sink`).
        stage: String,
        /// The edge's error, naming the edge.
        reason: String,
    },
    /// The stage's thread panicked.
    #[error("stage `{stage}` panicked: {message}")]
    Panicked {
        /// Stage name.
        stage: String,
        /// The panic payload, if it was a string.
        message: String,
    },
}

/// A checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// I/O on the file.
    #[error("checkpoint `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a checkpoint of this net.
    #[error("checkpoint `{path}`: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
}

/// A checkpoint's state does not fit the element restoring it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// A tensor the element needs is not in the state.
    #[error("no tensor `{0}`")]
    Missing(String),
    /// A tensor has another number of values than the element's.
    #[error("`{name}` has {got} values, the {element} needs {expected}")]
    Size {
        /// The tensor.
        name: String,
        /// Values in the state.
        got: usize,
        /// Values the element holds.
        expected: usize,
        /// What restores it ("layer", "readout", ...).
        element: &'static str,
    },
}
