//! The `ffstream` binary: parse the arguments, run, map errors to one line and exit code 2.
//!
//! The library prints nothing itself. Here: a command's output goes to stdout, `tracing`
//! events (per-epoch lines, warnings; `RUST_LOG` filters them) to stderr, and the live view of
//! a run to stderr: on a terminal a per-stage table redrawn in place under a bar with the ETA,
//! in a log one plain line every 10 s.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Counts allocations for `ffstream bench` (`allocs_per_frame`); otherwise the system allocator.
#[global_allocator]
static ALLOCATOR: ffstream::alloc_count::Counting = ffstream::alloc_count::Counting;

fn main() -> ExitCode {
    // Every thread the binary starts inherits this (src/float_mode.rs says why).
    ffstream::float_mode::flush_on_this_thread();
    let args = ffstream::cli::Args::parse();
    // The library emits events (one span per stage thread, named after the stage); they go to
    // stderr, filtered by RUST_LOG (e.g. `RUST_LOG=ffstream=debug`). By default the crate's
    // info events (the per-epoch lines) show, and other crates' warnings.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,ffstream=info".into());
    let live = Arc::new(StderrView::new());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogLines(Arc::clone(&live)))
        .with_ansi(false)
        .event_format(Lines)
        .init();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let said = Arc::clone(&live);
    let fetching = matches!(args.command, Some(ffstream::cli::Command::Data { .. }));
    // First Ctrl-C: finish the packet in flight, keep the last checkpoint, exit with a resume
    // hint (a download deletes its unfinished file). Second Ctrl-C: leave at once.
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
        said.say(if fetching {
            b"\nStopping the download; its unfinished file is deleted.\n"
        } else {
            b"\nStopping after the packets in flight; the last finished epoch is checkpointed.\n"
        });
    });
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

/// The live view on stderr. On a terminal, indicatif redraws in place a run bar with the
/// position and ETA, a line of phase, source, latency and memory, and the per-stage table; log
/// lines and messages print above it ([`StderrView::say`]). In a log, the frame is one plain
/// line every 10 s.
#[derive(Debug)]
struct StderrView {
    /// On a terminal: the bars, [run, extras, header, stage…], made at the first frame.
    term: Option<(MultiProgress, Mutex<Vec<ProgressBar>>)>,
    last: Mutex<Option<Instant>>,
}

impl StderrView {
    fn new() -> StderrView {
        let term = std::io::stderr().is_terminal().then(|| (MultiProgress::new(), Mutex::new(Vec::new())));
        StderrView { term, last: Mutex::new(None) }
    }

    /// Writes `bytes` to stderr above the live view.
    fn say(&self, bytes: &[u8]) {
        let write = || {
            let _ = std::io::stderr().write_all(bytes);
        };
        match &self.term {
            Some((multi, _)) => multi.suspend(write),
            None => write(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ffstream::live::LiveView for StderrView {
    fn show(&self, frame: &ffstream::live::LiveFrame) {
        let Some((multi, bars)) = &self.term else {
            let mut last = lock(&self.last);
            if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                *last = Some(Instant::now());
                let _ = writeln!(std::io::stderr(), "{}", frame.line());
            }
            return;
        };
        let mut bars = lock(bars);
        if bars.len() != frame.stages.len() + 3 {
            forget(multi, &mut bars);
            // Invariants: both templates are literals that parse.
            let run = ProgressStyle::with_template("{bar:32} {msg}").expect("a valid template").progress_chars("=> ");
            let text = ProgressStyle::with_template("{msg}").expect("a valid template");
            bars.push(multi.add(ProgressBar::new(1000).with_style(run)));
            for _ in 0..frame.stages.len() + 2 {
                bars.push(multi.add(ProgressBar::new(0).with_style(text.clone())));
            }
        }
        bars[0].set_position((frame.done * 1000.0).round() as u64);
        bars[0].set_message(frame.position());
        bars[1].set_message(frame.extras());
        bars[2].set_message(frame.stage_header());
        for i in 0..frame.stages.len() {
            bars[i + 3].set_message(frame.stage_row(i));
        }
    }

    fn clear(&self) {
        if let Some((multi, bars)) = &self.term {
            forget(multi, &mut lock(bars));
        }
    }
}

/// Takes the view's bars away: the whole view cleared at once, then the bars forgotten (one by
/// one, each removal would redraw the rest).
fn forget(multi: &MultiProgress, bars: &mut Vec<ProgressBar>) {
    let _ = multi.clear();
    for bar in bars.drain(..) {
        multi.remove(&bar);
    }
}

/// Log lines through the live view, so a redraw never tears them.
#[derive(Clone)]
struct LogLines(Arc<StderrView>);

/// One event's text, written above the view when the formatter is done with it.
struct LogLine(Arc<StderrView>, Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        self.0.say(&self.1);
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogLines {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Arc::clone(&self.0), Vec::new())
    }
}
