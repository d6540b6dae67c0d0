//! The pure mathematics of Forward-Forward, with no threads and no I/O.
//!
//! - [`normalize`]: RMS length normalization of a layer's input (paper §2, Matlab `ffnormrows`).
//! - [`goodness`]: the goodness of a layer's activities and its derivative.
//! - [`objective`]: the logistic probability that a row is positive and the local gradient.
//! - [`optim`]: the optimizers (Hinton's Matlab rule, SGD with momentum, Adam) and the schedule.

pub mod fields;
pub mod goodness;
pub mod normalize;
pub mod objective;
pub mod optim;
