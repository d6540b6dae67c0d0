//! Placeholder: FFmpeg input (being written).
