#!/usr/bin/env python3
"""When does separating the phases work? The wake/sleep sweep's tables and plot, from its records.

    python3 scripts/sleep-answer.py            # writes results/SLEEP.md and results/sleep-sweep.svg

Reads every record in results/{aesop-sleep,mnist-sleep,video-sleep}/sweep*/ (written by
scripts/sweep-phases; the settings of a point are its record's `overrides`). Nothing here is typed
by hand: a cell is the mean (and sample standard deviation, with the seeds counted) of the records
with the same settings.
"""
import json
import math
import pathlib
import statistics

ROOT = pathlib.Path(__file__).resolve().parent.parent / "results"
DATASETS = [
    ("aesop-sleep", "Aesop (E8), 3x500, self-generated negatives, 6 epochs",
     "validation next-character error by goodness, % (chance 96.7, commonest character 80.1)"),
    ("aesop-sleep/sweep-teacher-forcing", "Aesop (E8), 3x500, teacher-forcing negatives from replayed logits, 6 epochs",
     "validation next-character error by goodness, % (chance 96.7, commonest character 80.1)"),
    ("mnist-sleep", "MNIST, 4x500, hard negatives from replayed logits, 10,000 images x 4 epochs",
     "validation error by goodness, % (chance 90)"),
    ("mnist-sleep/sweep-long", "MNIST, the same, 20 epochs (2,000 wake packets)",
     "validation error by goodness, % (chance 90)"),
    ("video-sleep", "Moving MNIST, 2x500, hybrid negatives from a replay memory, 50,000 frames",
     "held-out separation error, mean over stages, % (chance 50)"),
]
PHASES = ["interleaved", "1", "10", "100", "1000"]


def unquote(v):
    return v.strip().strip('"')


def settings(r):
    o = r.get("overrides", {})
    kind = unquote(o.get("schedule.kind", '"interleaved"'))
    phase = "interleaved" if kind == "interleaved" else o.get("schedule.wake", "?")
    rule = o.get("optimizer.rule", "")
    momentum = ""
    if "momentum" in rule:
        momentum = " m=" + rule.split("momentum =")[1].strip(" }")
    opt = ("sgd" + momentum if momentum else "matlab") + ", lr " + o.get("optimizer.lr", "?")
    goodness = unquote(o.get("model.goodness", '"sum_squares"'))
    return phase, opt, goodness


def score(name, r):
    v = r["metrics"]["val_error_pct"]
    if name.startswith("video-sleep"):
        seps = [e for k, e in v.items() if k.startswith("separation.")]
        return sum(seps) / len(seps) if seps else math.nan
    return v.get("goodness", math.nan)


def softmax(name, r):
    return r["metrics"]["val_error_pct"].get("softmax", math.nan)


def awake_speedup(r):
    """Frames per second while the source plays: the whole run's frames over the time not asleep."""
    wall, fps = r["wall_time_s"], r["throughput"]["frames_per_s"]
    asleep = r.get("details", {}).get("asleep_s")
    if asleep is None:
        return None
    return fps * wall / max(wall - asleep, 1e-9)


def cell(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} (n={len(values)})"


def mean(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.mean(values) if values else math.nan


def load(name):
    folder = ROOT / name if "/" in name else ROOT / name / "sweep"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def table(name, title, metric, records, pick):
    groups = {}
    for r in records:
        phase, opt, goodness = settings(r)
        groups.setdefault((opt, goodness), {}).setdefault(phase, []).append(pick(name, r))
    phases = [p for p in PHASES if any(p in g for g in groups.values())]
    out = [f"### {title}\n", f"{metric}; columns: packets per wake phase = packets per sleep phase.\n",
           "| optimizer | goodness | " + " | ".join(phases) + " |", "|---|---|" + "---|" * len(phases)]
    for (opt, goodness), by_phase in sorted(groups.items()):
        out.append(f"| {opt} | {goodness} | " + " | ".join(cell(by_phase.get(p, [])) for p in phases) + " |")
    return "\n".join(out) + "\n", groups, phases


def throughput_table(all_records):
    out = ["### Throughput while awake\n",
           "Source frames per second while the source plays (the run's frames over its time not asleep), "
           "mean over the sweep's points, against the interleaved runs' frames per second on the same dataset. "
           "Awake, a packet carries no negatives, so each frame costs fewer rows.\n",
           "| dataset | interleaved frames/s | awake frames/s, by phase length | gain |", "|---|---|---|---|"]
    for name, _, _ in DATASETS:
        records = all_records[name]
        inter = mean([r["throughput"]["frames_per_s"] for r in records if settings(r)[0] == "interleaved"])
        by_phase = {}
        for r in records:
            phase = settings(r)[0]
            if phase != "interleaved":
                by_phase.setdefault(phase, []).append(awake_speedup(r))
        awake = {p: mean(v) for p, v in by_phase.items()}
        if not awake or math.isnan(inter):
            continue
        shown = ", ".join(f"{p}: {awake[p]:.0f}" for p in PHASES if p in awake and not math.isnan(awake[p]))
        gain = mean(list(awake.values())) / inter
        out.append(f"| {name} | {inter:.0f} | {shown} | {gain:.2f}x |")
    return "\n".join(out) + "\n"


def svg(panels):
    w, h, left, right, top, bottom = 1000, 300, 70, 330, 36, 40
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    body = []
    for i, (title, metric, groups, phases) in enumerate(panels):
        dy = i * h
        values = [mean(v) for g in groups.values() for v in g.values()]
        values = [v for v in values if not math.isnan(v)]
        top_y = max(values + [1.0])
        top_y = math.ceil(top_y / 10) * 10
        x = lambda k: left + (w - left - right) * k / max(len(phases) - 1, 1)
        y = lambda v: dy + top + (h - top - bottom) * (1 - v / top_y)
        base = dy + h - bottom
        body.append(f'<text x="{left}" y="{dy + top - 14}" font-weight="bold">{title}</text>')
        body.append(f'<text x="{left}" y="{dy + top - 2}" font-size="11">{metric}</text>')
        body.append(f'<line x1="{left}" y1="{base}" x2="{w - right}" y2="{base}" stroke="black"/>')
        body.append(f'<line x1="{left}" y1="{dy + top}" x2="{left}" y2="{base}" stroke="black"/>')
        for k, p in enumerate(phases):
            label = p if p == "interleaved" else f"{p}/{p}"
            body.append(f'<text x="{x(k):.1f}" y="{base + 15}" text-anchor="middle">{label}</text>')
        body.append(f'<text x="{(left + w - right) / 2}" y="{base + 32}" text-anchor="middle">'
                    'packets awake / packets asleep</text>')
        for t in range(0, 5):
            v = top_y * t / 4
            body.append(f'<text x="{left - 5}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
            body.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{w - right}" y2="{y(v):.1f}" stroke="#ddd"/>')
        for j, ((opt, goodness), by_phase) in enumerate(sorted(groups.items())):
            c = colors[j % len(colors)]
            pts = [(x(k), y(mean(by_phase[p]))) for k, p in enumerate(phases)
                   if p in by_phase and not math.isnan(mean(by_phase[p]))]
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
            body.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{path}"/>')
            body.extend(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{c}"/>' for a, b in pts)
            body.append(f'<text x="{w - right + 10}" y="{dy + top + 16 * (j + 1)}" fill="{c}">{opt}, {goodness}</text>')
    height = h * len(panels)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" '
            f'font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")


def main():
    all_records = {name: load(name) for name, _, _ in DATASETS}
    md = ["# When does separating the phases work?\n",
          "Generated by `scripts/sleep-answer.py` from the records in `results/*/sweep*/`; do not edit by hand. "
          "Each point is a run of the dataset's sleep pipeline with the overrides its record lists "
          "(`scripts/sweep-phases`). Lower is better everywhere. The sgd rows keep lr/(1 − momentum) = 0.01, the "
          "step size of the Matlab rule at lr 0.01, while averaging gradients over 100 or 1,000 updates.\n"]
    panels = []
    for name, title, metric in DATASETS:
        if not all_records[name]:
            continue
        text, groups, phases = table(name, title, metric, all_records[name], score)
        md.append(text)
        panels.append((title, metric, groups, phases))
        if not name.startswith("video-sleep"):
            soft, _, _ = table(name, title + ": softmax readout", "validation error by the softmax readout, %",
                               all_records[name], softmax)
            md.append(soft)
    md.append(throughput_table(all_records))
    (ROOT / "SLEEP.md").write_text("\n".join(md))
    (ROOT / "sleep-sweep.svg").write_text(svg(panels))
    print(f"wrote {ROOT / 'SLEEP.md'} and {ROOT / 'sleep-sweep.svg'}")


if __name__ == "__main__":
    main()
