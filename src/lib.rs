//! ffstream: Forward-Forward learning as a streaming pipeline.
//!
//! ```text
//!   {head} -[e]-> (layer1) -[e]-> (layer2) -[e]-> ... -[e]-> (layerL) -[e]-> {classify}
//!      ^            ^   |          ^   |                                       |
//!      |            +-d-+          +-d-+    top-down state (ff_recurrent)      |
//!      +------------------- predictions (hard negatives), delayed -------------+
//! ```
//!
//! `( )` is a [`stage::Stage`] on its own thread; `[e]` a bounded edge ([`runtime::edge`]), the
//! only thread boundary. The head plays a [`source`] as micro-batches and writes labels into the
//! frames ([`negative`]); each stage normalizes its input, computes its layer, adds its goodness
//! and updates its own weights ([`ff`]); the sink trains the softmax readout, scores the goodness
//! and softmax tests, and sends predictions back to the head for hard negatives. A recurrent
//! stage ([`stage::ff_recurrent`]) also reads the state of the stage above through a feedback
//! edge of delay d, and sees each image for several steps ([`boring_video`]). [`runtime`] runs
//! any such chain threaded or in lockstep on one thread and names no dataset, layer or readout;
//! [`config::build`] is the one place that turns a pipeline file into its components.
//!
//! Frame streams use the same runtime with another head and sink: [`video`] decodes files,
//! cameras and network streams through FFmpeg (or plays Moving MNIST, [`data::moving_mnist`]),
//! makes windows of frames and their negatives, measures per stage what was learned (goodness
//! separation, probes against a random-init net), and [`schedule`] separates wake and sleep.
//!
//! A packet's arrays go back from the sink to the head and the stages through [`recycle`], so a
//! labelled stream of dense or local FF stages allocates per epoch, not per packet, once warm.
//!
//! [`session`] is the one run loop of every workload: run folder, epochs, checkpoints,
//! resume, records, and the backprop twin beside the FF pipeline.
#![warn(missing_docs)]

pub mod alloc_count;
pub mod backprop;
pub mod bench;
pub mod boring_video;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod dots;
pub mod error;
pub mod ff;
pub mod figure;
pub mod float_mode;
pub mod head;
pub mod live;
pub mod matmul;
pub mod metrics;
pub mod metrics_endpoint;
pub mod negative;
pub mod packet;
pub mod plot;
pub mod record;
pub mod recycle;
pub mod report_page;
pub mod reporter;
pub mod reservoir;
pub mod rng;
pub mod run_folder;
pub mod runtime;
pub mod schedule;
pub mod session;
pub mod sink;
pub mod source;
pub mod speedrun;
pub mod stage;
pub mod throughput;
pub mod transport;
pub mod video;
