//! The `ffstream` binary: parse the arguments, run, map errors to one line and exit code 2.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;

fn main() -> ExitCode {
    let args = ffstream::cli::Args::parse();
    // The library only emits events (one span per stage thread, named after the stage); the
    // binary prints them to stderr, filtered by RUST_LOG (e.g. `RUST_LOG=ffstream=debug`).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    // First Ctrl-C: finish the packet in flight, keep the last checkpoint, exit with a resume
    // hint. Second Ctrl-C: leave at once.
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
        eprintln!("\nStopping after the packets in flight; the last finished epoch is checkpointed.");
    });
    match ffstream::cli::run(args, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ffstream: {err:#}");
            ExitCode::from(2)
        }
    }
}
