//! `[placement]`: which elements of the chain run in which process (issue 13, item 2).
//!
//! ```toml
//! [placement]
//! parts = [["source", "layer1"], ["layer2", "layer3", "sink"]]
//! endpoints = ["tcp/10.0.0.1:7447", "tcp/10.0.0.2:7447"]
//! ```
//!
//! Part i runs its elements (the head is `source`, the sink `sink`, stages by their names),
//! consecutive in the chain, and listens on `endpoints[i]`; `ffstream run FILE --part I` runs
//! part I (1-based) on whichever host it is started, `--launch` starts every part on this host.
//! The weights end bit-identical to the run in one process (`tests/distributed.rs`), so the
//! placement is not part of the experiment: records of both are one experiment.

use serde::{Deserialize, Serialize};

/// The `[placement]` table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlacementConfig {
    /// Per part, the names of the elements it runs, in chain order.
    pub parts: Vec<Vec<String>>,
    /// Per part, the Zenoh endpoint it listens on (`tcp/HOST:PORT`).
    pub endpoints: Vec<String>,
    /// Seconds an edge between parts waits for its peer before the run stops as stalled
    /// (above any pause of a run: a sleep phase, a checkpoint, the final test).
    #[serde(default = "default_stall_s")]
    pub stall_s: f64,
}

fn default_stall_s() -> f64 {
    600.0
}

/// Where one part sits in the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartCut {
    /// It runs the head.
    pub head: bool,
    /// Its stages: `first..first + count`.
    pub first: usize,
    /// How many.
    pub count: usize,
    /// It runs the sink.
    pub sink: bool,
}

impl PlacementConfig {
    /// The parts cover the chain `source, stages..., sink` in order, each element once, each
    /// part at least one element, one endpoint per part: or the sentence that says what is
    /// wrong.
    pub fn check(&self, stage_names: &[String]) -> Result<(), String> {
        if self.parts.len() < 2 {
            return Err("needs two parts or more (one part is the run in one process: remove [placement])".into());
        }
        if let Some(i) = self.parts.iter().position(Vec::is_empty) {
            return Err(format!("part {} runs nothing", i + 1));
        }
        let chain: Vec<&str> =
            std::iter::once("source").chain(stage_names.iter().map(String::as_str)).chain(["sink"]).collect();
        let placed: Vec<&str> = self.parts.iter().flatten().map(String::as_str).collect();
        if placed != chain {
            return Err(format!(
                "the parts must hold the chain's elements in order, each once: {}; they hold {}",
                chain.join(", "),
                placed.join(", ")
            ));
        }
        if self.endpoints.len() != self.parts.len() {
            return Err(format!("{} endpoints for {} parts: one per part", self.endpoints.len(), self.parts.len()));
        }
        if let Some(e) = self.endpoints.iter().find(|e| !e.starts_with("tcp/")) {
            return Err(format!("endpoint `{e}` is not `tcp/HOST:PORT` (Zenoh over TCP)"));
        }
        if !(self.stall_s.is_finite() && self.stall_s > 0.0) {
            return Err("stall_s must be a number of seconds above 0".into());
        }
        Ok(())
    }

    /// Part `part` (0-based) of a checked placement; none past its last part.
    pub fn cut(&self, part: usize) -> Option<PartCut> {
        let elements = self.parts.get(part)?;
        let before: usize = self.parts[..part].iter().map(Vec::len).sum();
        let head = before == 0;
        let sink = part + 1 == self.parts.len();
        // Element e of the chain is the head (0), stage e - 1, or the sink (last).
        let first = if head { 0 } else { before - 1 };
        let count = elements.len() - head as usize - sink as usize;
        Some(PartCut { head, first, count, sink })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["layer1", "layer2", "layer3"].map(String::from).to_vec()
    }

    fn placement(parts: &[&[&str]]) -> PlacementConfig {
        PlacementConfig {
            parts: parts.iter().map(|p| p.iter().map(|s| s.to_string()).collect()).collect(),
            endpoints: (0..parts.len()).map(|i| format!("tcp/127.0.0.1:{}", 7447 + i)).collect(),
            stall_s: 600.0,
        }
    }

    #[test]
    fn parts_cut_the_chain_where_the_file_says() {
        let p = placement(&[&["source", "layer1"], &["layer2"], &["layer3", "sink"]]);
        p.check(&names()).unwrap();
        assert_eq!(p.cut(0), Some(PartCut { head: true, first: 0, count: 1, sink: false }));
        assert_eq!(p.cut(1), Some(PartCut { head: false, first: 1, count: 1, sink: false }));
        assert_eq!(p.cut(2), Some(PartCut { head: false, first: 2, count: 1, sink: true }));
        let p = placement(&[&["source"], &["layer1", "layer2", "layer3"], &["sink"]]);
        p.check(&names()).unwrap();
        assert_eq!(p.cut(1), Some(PartCut { head: false, first: 0, count: 3, sink: false }));
        assert_eq!(p.cut(2), Some(PartCut { head: false, first: 3, count: 0, sink: true }));
        assert_eq!(p.cut(3), None);
    }

    #[test]
    fn a_placement_that_skips_repeats_or_reorders_an_element_says_so() {
        let e = placement(&[&["source", "layer2"], &["layer1", "layer3", "sink"]]).check(&names()).unwrap_err();
        assert!(e.contains("in order"), "{e}");
        let e = placement(&[&["source", "layer1"], &["layer3", "sink"]]).check(&names()).unwrap_err();
        assert!(e.contains("layer2"), "{e}");
        let e = placement(&[&["source", "layer1", "layer2", "layer3", "sink"]]).check(&names()).unwrap_err();
        assert!(e.contains("two parts"), "{e}");
        let mut p = placement(&[&["source", "layer1"], &["layer2", "layer3", "sink"]]);
        p.endpoints.pop();
        assert!(p.check(&names()).unwrap_err().contains("one per part"));
    }
}
