//! Pipeline files written before `[source]`, `[head]` and `[sink]` (run folders of older runs,
//! users' own files): `[data] dataset`, `[moving_mnist]`, `[video]`, `[stream]`, `[negatives]`
//! and `[readout]` are moved to the kind-tagged sections, so such a run still resumes.

/// Rewrites an old-format table in place; false if it has none of the old sections.
pub(super) fn upgrade(table: &mut toml::Table) -> bool {
    // A file with `[source]` is new: an old section in it is an unknown key, named with its line.
    let old_data = table.get("data").and_then(|d| d.get("dataset")).is_some();
    let old_sections = ["stream", "video", "moving_mnist", "negatives", "readout"];
    if table.contains_key("source") || (!old_data && !old_sections.iter().any(|s| table.contains_key(*s))) {
        return false;
    }
    let ff = table.get("trainer").and_then(|t| t.as_str()) != Some("backprop");
    let mut source = toml::Table::new();
    let mut head = toml::Table::new();
    let mut sink = toml::Table::new();
    if let Some(toml::Value::Table(data)) = table.get_mut("data") {
        if let Some(kind) = data.remove("dataset") {
            source.insert("kind".into(), kind);
        }
        if let Some(jitter) = data.remove("jitter") {
            source.insert("jitter".into(), jitter);
        }
    }
    for section in ["moving_mnist", "video"] {
        if let Some(toml::Value::Table(t)) = table.remove(section) {
            source.extend(t);
        }
    }
    if let Some(toml::Value::Table(stream)) = table.remove("stream") {
        head.insert("kind".into(), "frames".into());
        sink.insert("kind".into(), "probes".into());
        for (key, value) in stream {
            let (section, key) = match key.as_str() {
                "frames_per_epoch" => ("data", key),
                "probe_frames" => ("eval", key),
                "eval_windows" | "probe_lr" | "backprop_twin" | "twin" => ("sink", key),
                _ => ("head", key),
            };
            match section {
                "sink" => drop(sink.insert(key, value)),
                "head" => drop(head.insert(key, value)),
                section => {
                    let entry = table.entry(section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    if let toml::Value::Table(t) = entry {
                        t.insert(key, value);
                    }
                }
            }
        }
    }
    if let Some(toml::Value::Table(negatives)) = table.remove("negatives") {
        head.insert("kind".into(), "labelled".into());
        head.extend(negatives);
    }
    if let Some(toml::Value::Table(readout)) = table.remove("readout") {
        sink.insert("kind".into(), "readout".into());
        sink.extend(readout);
    }
    table.insert("source".into(), toml::Value::Table(source));
    // The backprop twin had `[stream]` for its frames only: it reads no head or sink.
    if ff {
        table.insert("head".into(), toml::Value::Table(head));
        table.insert("sink".into(), toml::Value::Table(sink));
    }
    true
}
