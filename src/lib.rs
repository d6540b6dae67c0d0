//! ffstream: Forward-Forward learning as a streaming pipeline.
//!
//! ```text
//!   {head} -[q]-> (layer1) -[q]-> (layer2) -[q]-> ... -[q]-> (layerL) -[q]-> {classify}
//!      ^                                                                       |
//!      +------------------- predictions (hard negatives), delayed -------------+
//! ```
//!
//! `( )` is a [`stage::Stage`] on its own thread; `[q]` a bounded queue, the only thread
//! boundary. The head plays a [`source`] as micro-batches and writes labels into the frames
//! ([`negative`]); each stage normalizes its input, computes its layer, adds its goodness and
//! updates its own weights ([`ff`]); the sink trains the softmax readout, scores the goodness and
//! softmax tests, writes checkpoints, and sends predictions back to the head for hard negatives.
//! [`runtime`] runs the same stages threaded or in lockstep on one thread.
//!
//! Frame streams use the same runtime with another head and sink: [`video`] decodes files,
//! cameras and network streams through FFmpeg (or plays Moving MNIST, [`data::moving_mnist`]),
//! makes windows of frames and their negatives, measures per stage what was learned (goodness
//! separation, probes against a random-init net), and [`schedule`] separates wake and sleep.
#![warn(missing_docs)]

pub mod backprop;
pub mod bench;
pub mod boring_video;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod error;
pub mod ff;
pub mod head;
pub mod matmul;
pub mod metrics;
pub mod negative;
pub mod packet;
pub mod plot;
pub mod record;
pub mod reservoir;
pub mod rng;
pub mod run_folder;
pub mod runtime;
pub mod schedule;
pub mod sink;
pub mod source;
pub mod stage;
pub mod throughput;
pub mod train;
pub mod video;
