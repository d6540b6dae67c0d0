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
