//! Small SVG line charts, written without a plotting dependency: a run's throughput over time
//! (`throughput.svg` in the run folder, from `metrics.jsonl`).

use std::path::Path;

/// One named line of `(x, y)` points.
pub type Series = (String, Vec<(f64, f64)>);

const COLORS: [&str; 10] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22"];

/// A line chart as an SVG group at vertical offset `dy`, `w × h` pixels, with a legend.
pub fn line_chart(title: &str, x_label: &str, series: &[Series], dy: f64, w: f64, h: f64) -> String {
    let (left, bottom, top, right) = (70.0, 40.0, 28.0, 200.0);
    let points = || series.iter().flat_map(|(_, p)| p.iter());
    let max_x = points().map(|p| p.0).fold(1e-9, f64::max);
    let max_y = nice_ceiling(points().map(|p| p.1).filter(|v| v.is_finite()).fold(1e-9, f64::max));
    let x = |v: f64| left + (w - left - right) * v / max_x;
    let y = |v: f64| dy + top + (h - top - bottom) * (1.0 - v / max_y);
    let base = dy + h - bottom;
    let mut svg = format!(
        "<text x=\"{left}\" y=\"{:.1}\" font-weight=\"bold\">{title}</text>\n\
         <line x1=\"{left}\" y1=\"{base:.1}\" x2=\"{:.1}\" y2=\"{base:.1}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"{:.1}\" x2=\"{left}\" y2=\"{base:.1}\" stroke=\"black\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{x_label}</text>\n",
        dy + top - 10.0,
        w - right,
        dy + top,
        (left + w - right) / 2.0,
        base + 32.0
    );
    for k in 0..=4 {
        let (vx, vy) = (max_x * k as f64 / 4.0, max_y * k as f64 / 4.0);
        svg +=
            &format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n", x(vx), base + 15.0, short(vx));
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            left - 5.0,
            y(vy) + 4.0,
            short(vy)
        );
        svg += &format!(
            "<line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n",
            y(vy),
            w - right,
            y(vy)
        );
    }
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let path: Vec<String> =
            pts.iter().filter(|p| p.1.is_finite()).map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b))).collect();
        svg +=
            &format!("<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" points=\"{}\"/>\n", path.join(" "));
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{c}\">{name}</text>\n",
            w - right + 10.0,
            dy + top + 16.0 * (i as f64 + 1.0)
        );
    }
    svg
}

/// Wraps chart groups into a document.
pub fn document(w: f64, h: f64, body: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" \
         font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}

fn nice_ceiling(v: f64) -> f64 {
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|&c| c >= v).unwrap_or(10.0 * magnitude)
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Reads a run's `metrics.jsonl` and draws frames/s per stage, end-to-end latency and memory
/// against time; `None` when the file has fewer than two samples.
pub fn throughput_svg(metrics_jsonl: &Path) -> Option<String> {
    let text = std::fs::read_to_string(metrics_jsonl).ok()?;
    let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    if lines.len() < 2 {
        return None;
    }
    let t = |l: &serde_json::Value| l["t_s"].as_f64().unwrap_or(0.0);
    let names: Vec<String> =
        lines[0]["stages"].as_array()?.iter().filter_map(|s| s["name"].as_str().map(str::to_string)).collect();
    let rates: Vec<Series> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let pts = lines.iter().filter_map(|l| Some((t(l), l["stages"][i]["frames_per_s"].as_f64()?))).collect();
            (n.clone(), pts)
        })
        .collect();
    let mut latency: Vec<Series> = Vec::new();
    for q in ["p50", "p99"] {
        let pts: Vec<(f64, f64)> = lines.iter().filter_map(|l| Some((t(l), l["latency_ms"][q].as_f64()?))).collect();
        if !pts.is_empty() {
            latency.push((format!("latency {q}, ms"), pts));
        }
    }
    let rss: Series =
        ("resident memory, MiB".into(), lines.iter().filter_map(|l| Some((t(l), l["rss_mib"].as_f64()?))).collect());
    let (w, h) = (900.0, 260.0);
    let mut body = line_chart("frames per second, by thread", "seconds", &rates, 0.0, w, h);
    let mut height = h;
    if !latency.is_empty() {
        body += &line_chart("end-to-end latency (source to sink)", "seconds", &latency, height, w, h);
        height += h;
    }
    if !rss.1.is_empty() {
        body += &line_chart("memory", "seconds", std::slice::from_ref(&rss), height, w, h);
        height += h;
    }
    Some(document(w, height, &body))
}
