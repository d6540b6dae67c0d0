//! `results/index.html`: one self-contained page made from the records alone (issue 12).
//!
//! The page holds the results tables of `RESULTS.md` (the paper's number beside ours and the
//! backprop twin's), every chart the report draws and every figure under `results/figures`,
//! inlined as data URIs so the page is one file that opens anywhere, and a table of every
//! record: its command, seed, commit, machine, wall time and per-stage throughput.
//!
//! A small script checks the page itself once it has loaded: every image decoded, no script
//! error. It writes its verdict into `<body data-check="...">`, which a headless browser's
//! `--dump-dom` shows (the test in tests/report_page.rs).

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;

use crate::record::Record;

/// The charts `ffstream report` writes, in the page's order, with their captions.
const CHARTS: [(&str, &str); 4] = [
    ("curves.svg", "Learning curves: validation error by epoch"),
    ("frame-streams.svg", "Frame streams: probe error per stage against the same net at random init"),
    ("aesop-curves.svg", "Aesop's fables: next-character accuracy by epoch"),
    ("sleep-sweep.svg", "Wake/sleep: error against the length of the phases"),
];

/// The page for `records`, with the charts and figures found in `results`, and `tables` (the
/// markdown of `RESULTS.md`) as HTML.
pub fn index_html(records: &[Record], results: &Path, tables: &str) -> String {
    let mut page = String::new();
    page += "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n";
    page += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
    page += "<title>ffstream: results</title>\n<style>\n";
    page += STYLE;
    page += "</style>\n<script>window.pageErrors = [];\
             window.addEventListener('error', e => window.pageErrors.push(String(e.message || e.type)), true);</script>\n";
    page += "</head><body data-check=\"pending\">\n";
    page += "<h1>ffstream: Hinton's Forward-Forward experiments through a streaming pipeline</h1>\n";
    let _ = writeln!(
        page,
        "<p>Made by <code>ffstream report</code> from {} records in <code>results/</code>. \
         Each row names its experiment; every record's command, commit and machine are in the last table.</p>",
        records.len()
    );
    page += "<nav><a href=\"#tables\">Results</a> · <a href=\"#charts\">Charts</a> · \
             <a href=\"#figures\">Figures</a> · <a href=\"#records\">Every record</a></nav>\n";

    page += "<section id=\"tables\">\n";
    page += &markdown_html(tables);
    page += "</section>\n";

    page += "<section id=\"charts\"><h2>Charts</h2>\n";
    for (file, caption) in CHARTS {
        if let Ok(svg) = std::fs::read(results.join(file)) {
            page += &figure("image/svg+xml", &svg, caption, file);
        }
    }
    page += "</section>\n";

    page += "<section id=\"figures\"><h2>Figures</h2>\n";
    page += "<p>The paper's Fig. 1 (a mask, two digits and their hybrid), first-layer receptive fields \
             (Fig. 2) of the runs that made them (<code>ffstream figure</code>), and what the stages \
             of each recorded video run learned (written by <code>ffstream run --record</code>).</p>\n";
    for (name, png) in figures(&results.join("figures")) {
        page += &figure("image/png", &png, &figure_caption(&name), &name);
    }
    page += "</section>\n";

    page += "<section id=\"records\"><h2>Every record</h2>\n";
    page += &records_table(records);
    page += "</section>\n";
    page += CHECK;
    page += "</body></html>\n";
    page
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0;font-size:13px}\
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}\
th{background:#f3f3f3}figure{display:inline-block;margin:1em;vertical-align:top}\
figure img{max-width:100%;border:1px solid #ddd;image-rendering:pixelated}\
figcaption{font-size:13px;max-width:860px}code{font-size:12px}nav{margin:1em 0}\n";

/// Runs once everything has loaded: counts the images that decoded and the script errors.
const CHECK: &str = "<script>window.addEventListener('load', () => {\
const images = Array.from(document.images);\
const broken = images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt);\
document.body.dataset.check = 'images ' + (images.length - broken.length) + '/' + images.length +\
 '; errors ' + window.pageErrors.length + (broken.length ? '; broken: ' + broken.join(', ') : '');\
});</script>\n";

/// The markdown of the results tables as HTML (tables, headings, code, links).
fn markdown_html(markdown: &str) -> String {
    let options = pulldown_cmark::Options::ENABLE_TABLES;
    let parser = pulldown_cmark::Parser::new_ext(markdown, options);
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, parser);
    html
}

/// An image inlined as a data URI, with its caption.
fn figure(mime: &str, bytes: &[u8], caption: &str, name: &str) -> String {
    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!(
        "<figure><img src=\"data:{mime};base64,{data}\" alt=\"{}\"><figcaption>{} (<code>{}</code>)</figcaption></figure>\n",
        escape(name),
        escape(caption),
        escape(name)
    )
}

/// The PNG figures of `folder`, by name.
fn figures(folder: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(folder) else { return Vec::new() };
    let mut found: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .filter_map(|p| Some((p.file_name()?.to_string_lossy().into_owned(), std::fs::read(&p).ok()?)))
        .collect();
    found.sort();
    found
}

/// A figure's caption from its file name (`fig2-<run>-<stage>.png`, `fig1-hybrid.png`).
fn figure_caption(name: &str) -> String {
    let stem = name.trim_end_matches(".png");
    if stem == "fig1-hybrid" {
        return "Fig. 1: a digit, a second digit, the blurred random mask and their hybrid negative".into();
    }
    if let Some((run, stage)) = stem.strip_prefix("fields-").and_then(|rest| rest.rsplit_once('-')) {
        return format!(
            "What {stage} of the video run {run} learned: its first units' weights over the input window{} \
             (frames left to right; white positive, black negative, mid grey zero)",
            if stage == "layer1" { "" } else { ", through the weights of the stages below (ReLUs left out)" }
        );
    }
    match stem.strip_prefix("fig2-").and_then(|rest| rest.rsplit_once('-')) {
        Some((run, stage)) => format!("Fig. 2: receptive fields of {stage} of {run}"),
        None => stem.to_string(),
    }
}

/// One row per record: what ran, how to run it again, where, and how fast each stage went.
fn records_table(records: &[Record]) -> String {
    let mut html = String::from(
        "<table><tr><th>experiment</th><th>seed</th><th>epochs</th><th>command</th><th>commit</th>\
         <th>machine</th><th>wall time</th><th>frames/s</th><th>stages (frames/s, busy %)</th></tr>\n",
    );
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by(|a, b| (&a.experiment, a.seed).cmp(&(&b.experiment, b.seed)));
    for r in sorted {
        let stages: Vec<String> = r
            .throughput
            .stages
            .iter()
            .map(|s| format!("{} {:.0} ({:.0}%)", s.name, s.frames_per_s, s.busy_pct))
            .collect();
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td>\
             <td>{}</td><td>{:.0}</td><td>{}</td></tr>",
            escape(&r.experiment),
            r.seed,
            r.epochs,
            escape(&command(r)),
            escape(&r.commit.chars().take(8).collect::<String>()),
            escape(&r.machine),
            duration(r.wall_time_s),
            r.throughput.frames_per_s,
            escape(&stages.join(", "))
        );
    }
    html + "</table>\n"
}

/// The command that makes the record again.
fn command(r: &Record) -> String {
    let mut line = format!("ffstream run {} --record", r.experiment);
    if r.seed != 0 {
        let _ = write!(line, " --set seed={}", r.seed);
    }
    for (key, value) in &r.overrides {
        if key != "seed" {
            let _ = write!(line, " --set {key}={value}");
        }
    }
    line
}

fn duration(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else if seconds >= 60.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{seconds:.0} s")
    }
}

/// Text made safe inside HTML elements and attributes.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_captioned_by_what_made_them() {
        assert!(figure_caption("fig1-hybrid.png").starts_with("Fig. 1"));
        assert_eq!(
            figure_caption("fig2-cifar10-ff-2layer-minssq-layer1.png"),
            "Fig. 2: receptive fields of layer1 of cifar10-ff-2layer-minssq"
        );
        let video = figure_caption("fields-moving-mnist-seed0-layer1.png");
        assert!(video.starts_with("What layer1 of the video run moving-mnist-seed0 learned"), "{video}");
        assert_eq!(figure_caption("other.png"), "other");
    }

    #[test]
    fn the_page_inlines_charts_and_figures_and_escapes_text() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("curves.svg"),
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"4\" height=\"4\"/>",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("figures")).unwrap();
        std::fs::write(dir.path().join("figures/fig2-run-layer1.png"), [137u8, 80, 78, 71]).unwrap();
        let page = index_html(&[], dir.path(), "| a | b |\n|---|---|\n| 1 < 2 | x |\n");
        assert!(page.contains("<table>") && page.contains("1 &lt; 2"), "{page}");
        assert!(page.contains("data:image/svg+xml;base64,"));
        assert!(page.contains("data:image/png;base64,iVBORw"));
        assert!(page.contains("Fig. 2: receptive fields of layer1 of run"));
        assert!(!page.contains("src=\"http"), "the page is self-contained");
    }
}
