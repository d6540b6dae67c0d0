//! `cargo bench --bench pipeline`: the MNIST stream through the 4x2000 pipeline, threaded vs
//! lockstep, each stage against the measured FMA peak (see `src/throughput.rs`). Needs MNIST
//! through `$FFSTREAM_DATA`. Writes `benches/results/pipeline-<unix time>.json`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let out = std::path::PathBuf::from(format!("benches/results/pipeline-{stamp}.json"));
    ffstream::throughput::bench(None, 60, Some(&out), &Arc::new(AtomicBool::new(false)), &mut std::io::stdout())
}
