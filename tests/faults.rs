//! Faults survived (issue 12): a run SIGKILLed at 20 random moments and resumed after each
//! ends with the weights of a run never interrupted, bit for bit.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EPOCHS: usize = 24;

const SETTINGS: [&str; 6] = [
    "data.train_size=1000",
    "data.validation_size=200",
    "data.test_size=200",
    "model.layers=[64, 48, 32]",
    "data.epochs=24",
    "eval.train_size=200",
];

fn start(runs: &Path, resume: Option<&Path>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ffstream"));
    command.args(["run", "--quiet", "--runs-dir"]).arg(runs);
    match resume {
        Some(dir) => command.arg("--resume").arg(dir),
        None => command.arg("mnist-quick").args(SETTINGS.iter().flat_map(|s| ["--set", s])),
    };
    command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start ffstream")
}

fn only_folder(runs: &Path) -> Option<PathBuf> {
    std::fs::read_dir(runs).ok()?.filter_map(Result::ok).map(|e| e.path()).find(|p| p.join("state.json").exists())
}

fn epochs_done(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["epochs_done"].as_u64())
        .unwrap_or(0)
}

fn sorted_weights(dir: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut tensors = ffstream::checkpoint::load_run(dir).unwrap().state.tensors;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

#[test]
fn a_run_killed_at_20_random_moments_resumes_to_the_same_weights() {
    let straight = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = start(straight.path(), None).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let whole = started.elapsed();
    let reference = sorted_weights(&only_folder(straight.path()).unwrap());

    // Kill moments spread over the run: the i-th once about i/20 of the epochs are done, then a
    // random part of an epoch later (mid-epoch, mid-checkpoint, mid-start-up), from a fixed seed.
    let mut rng = ffstream::rng::Rng::new(20);
    let epoch = whole.as_secs_f64() / EPOCHS as f64;
    let killed = tempfile::tempdir().unwrap();
    let mut kills = 0;
    let mut finished = false;
    let mut done_at_kills = Vec::new();
    while kills < 20 {
        let folder = only_folder(killed.path());
        let mut run = start(killed.path(), folder.as_deref());
        let target = kills * (EPOCHS - 1) / 20;
        let reached = |run: &mut Child| {
            run.try_wait().unwrap().is_some()
                || only_folder(killed.path()).is_some_and(|dir| epochs_done(&dir) >= target as u64)
        };
        while !reached(&mut run) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let deadline = Instant::now() + Duration::from_secs_f64(epoch * 1.5 * rng.uniform_f64());
        while Instant::now() < deadline && run.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(status) = run.try_wait().unwrap() {
            // It finished before its kill: resumed to the end.
            let out = run.wait_with_output().unwrap();
            assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            finished = true;
            break;
        }
        run.kill().unwrap();
        run.wait().unwrap();
        kills += 1;
        done_at_kills.push(only_folder(killed.path()).map_or(0, |dir| epochs_done(&dir)));
    }
    if !finished {
        let folder = only_folder(killed.path()).expect("a run folder after 20 kills");
        let out = start(killed.path(), Some(&folder)).wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    eprintln!("{kills} kills over a {whole:?} run; epochs done at each: {done_at_kills:?}");
    assert_eq!(kills, 20, "the run finished after {kills} kills");
    // The kills land at different points of the run, not all before its first epoch.
    let mut distinct = done_at_kills.clone();
    distinct.dedup();
    assert!(distinct.len() >= 3, "the kills did not spread over the run: {done_at_kills:?}");
    assert_eq!(sorted_weights(&only_folder(killed.path()).unwrap()), reference);
}
