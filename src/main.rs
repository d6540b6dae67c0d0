//! The `ffstream` binary: parse the arguments, run, map errors to one line and exit code 2.
//!
//! The library prints nothing itself. Here: a command's output goes to stdout, `tracing`
//! events (per-epoch lines, warnings; `RUST_LOG` filters them) to stderr, and the live line of a
//! run to stderr, redrawn in place on a terminal.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

fn main() -> ExitCode {
    let args = ffstream::cli::Args::parse();
    // The library emits events (one span per stage thread, named after the stage); they go to
    // stderr, filtered by RUST_LOG (e.g. `RUST_LOG=ffstream=debug`). By default the crate's
    // info events (the per-epoch lines) show, and other crates' warnings.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,ffstream=info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(Lines)
        .init();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let fetching = matches!(args.command, Some(ffstream::cli::Command::Data { .. }));
    // First Ctrl-C: finish the packet in flight, keep the last checkpoint, exit with a resume
    // hint (a download deletes its unfinished file). Second Ctrl-C: leave at once.
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
        if fetching {
            eprintln!("\nStopping the download; its unfinished file is deleted.");
        } else {
            eprintln!("\nStopping after the packets in flight; the last finished epoch is checkpointed.");
        }
    });
    let live = Arc::new(StderrLine { tty: std::io::stderr().is_terminal(), last: Mutex::new(None) });
    match ffstream::cli::run(args, stop, &mut std::io::stdout(), Some(live)) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`ffstream list | head -1`) is not an error.
        Err(err) if broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ffstream: {}", one_sentence(&err));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, each said once: an error whose message already ends with its
/// cause's (`cannot read X: it is a folder`) is not followed by that cause again.
fn one_sentence(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            if !out.is_empty() {
                out += ": ";
            }
            out += &text;
        }
    }
    out
}

fn broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Events as plain lines: an info event is its message alone (the per-epoch lines read as
/// they are); other levels start with the level and the spans (`WARN stage{name=layer1}: ...`).
struct Lines;

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let level = *event.metadata().level();
        if level != Level::INFO {
            write!(writer, "{level} ")?;
            if let Some(scope) = ctx.event_scope() {
                for span in scope.from_root() {
                    write!(writer, "{}", span.name())?;
                    if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                        if !fields.is_empty() {
                            write!(writer, "{{{fields}}}")?;
                        }
                    }
                    write!(writer, ": ")?;
                }
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The live line on stderr: redrawn in place on a terminal; in a log, one line every 10 s.
#[derive(Debug)]
struct StderrLine {
    tty: bool,
    last: Mutex<Option<Instant>>,
}

impl ffstream::metrics::LiveView for StderrLine {
    fn show(&self, line: &str) {
        let mut stderr = std::io::stderr();
        if self.tty {
            let _ = write!(stderr, "\r\x1b[2K{line}");
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            let _ = writeln!(stderr, "{line}");
        }
    }

    fn clear(&self) {
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
