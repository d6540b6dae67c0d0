//! The `ffstream` binary: parse the arguments, run, map errors to one line and exit code 2.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;

fn main() -> ExitCode {
    let args = ffstream::cli::Args::parse();
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
