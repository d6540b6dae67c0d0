//! The binary: user errors are one line on stderr and exit code 2.

use std::process::Command;

fn ffstream(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ffstream")).args(args).output().expect("run the binary")
}

fn assert_user_error(out: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line expected, got: {stderr}");
    assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
}

#[test]
fn an_unknown_key_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let text = include_str!("../pipeline/mnist-quick.toml")
        .replace("batch = 100\ntrain_size", "batch = 100\nbatchsize = 3\ntrain_size");
    std::fs::write(&path, text).unwrap();
    let out = ffstream(&["run", path.to_str().unwrap()]);
    assert_user_error(&out, "batchsize");
    assert!(String::from_utf8_lossy(&out.stderr).contains("line "));
}

#[test]
fn a_bad_value_and_a_bad_override_are_user_errors() {
    assert_user_error(&ffstream(&["run", "mnist-quick", "--set", "optimizer.lr=-3"]), "optimizer.lr");
    assert_user_error(&ffstream(&["run", "mnist-quick", "--set", "model.layers=[]"]), "model.layers");
    assert_user_error(&ffstream(&["run", "no-such-pipeline"]), "no pipeline file");
    // A dataset this build does not know is named with the ones it knows.
    let out = ffstream(&["run", "mnist-quick", "--set", "source.kind=\"cifar\""]);
    assert_user_error(&out, "cifar");
    assert!(String::from_utf8_lossy(&out.stderr).contains("moving_mnist"));
}

#[test]
fn missing_data_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ffstream"))
        .args(["run", "mnist-quick", "--quiet", "--runs-dir"])
        .arg(dir.path().join("runs"))
        .arg("--data-dir")
        .arg(dir.path())
        .env("FFSTREAM_DATA", dir.path())
        .env("HOME", dir.path())
        .env_remove("XDG_CACHE_HOME")
        .output()
        .unwrap();
    assert_user_error(&out, "cannot find `mnist/train-images-idx3-ubyte.gz`");
}

#[test]
fn resuming_a_folder_that_is_not_a_run_is_a_user_error() {
    let dir = tempfile::tempdir().unwrap();
    assert_user_error(&ffstream(&["run", "--resume", dir.path().to_str().unwrap()]), "not a run folder");
}

#[test]
fn list_shows_the_paper_numbers() {
    let out = ffstream(&["list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mnist-supervised") && text.contains("1.36%") && text.contains("1.46%"), "{text}");
}

#[test]
fn every_file_in_pipeline_is_shipped_in_the_binary() {
    let shipped: Vec<&str> = ffstream::cli::PIPELINES.iter().map(|(n, _)| *n).collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_stem().unwrap().to_str().unwrap().to_string();
            assert!(shipped.contains(&name.as_str()), "{name}.toml is not in cli::PIPELINES");
            let on_disk = std::fs::read_to_string(&path).unwrap();
            let built_in = ffstream::cli::PIPELINES.iter().find(|(n, _)| *n == name).unwrap().1;
            assert_eq!(on_disk, built_in);
        }
    }
}

#[test]
fn a_head_that_does_not_fit_the_source_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.toml");
    let text = include_str!("../pipeline/mnist-quick.toml");
    let line = text.lines().position(|l| l == "kind = \"labelled\"").unwrap() + 1;
    let frames_head = text.replace("kind = \"labelled\"\nlabels = \"hard\"\nprediction_delay = 8", "kind = \"frames\"");
    // A frames head on MNIST plays the images as still frames, and wants the probes sink.
    std::fs::write(&path, &frames_head).unwrap();
    let out = ffstream(&["run", path.to_str().unwrap()]);
    assert_user_error(&out, "`sink.kind` must be \"probes\" with a frames head");
    let sink_line = frames_head.lines().position(|l| l == "kind = \"readout\"").unwrap() + 1;
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("line {sink_line}")), "{out:?}");
    // A frames head on Aesop: each kind parses, the pairing does not.
    std::fs::write(&path, frames_head.replace("kind = \"mnist\"", "kind = \"aesop\"")).unwrap();
    let out = ffstream(&["run", path.to_str().unwrap()]);
    assert_user_error(&out, "`head.kind` must be \"labelled\" for the aesop source");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("line {line}")), "{out:?}");
    // A setting of another kind of head does not parse, and its table's line is named.
    std::fs::write(&path, text.replace("kind = \"labelled\"", "kind = \"labelled\"\nwindow = 2")).unwrap();
    let out = ffstream(&["run", path.to_str().unwrap()]);
    assert_user_error(&out, "unknown field `window`");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("line {}", line - 1)), "{out:?}");
    // The backprop twin has no sink and no stages' [pipeline]; a video head no wrong labels.
    let twin_sink = ffstream(&["run", "mnist-backprop", "--set", "sink.kind=\"readout\"", "--set", "sink.lr=0.1"]);
    assert_user_error(&twin_sink, "`sink` is read by the FF stages only");
    assert_user_error(&ffstream(&["run", "moving-mnist", "--set", "head.labels=\"hard\""]), "unknown field `labels`");
}

#[test]
fn a_record_of_another_experiment_is_not_replaced_without_the_flag() {
    // Issue 12: `--record --set data.epochs=1 --set model.layers=[100,100]` replaced the
    // committed 60-epoch record. It now stops before training, and says how to go on.
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("results/mnist-quick");
    std::fs::create_dir_all(&folder).unwrap();
    let committed = r#"{"experiment": "mnist-quick", "pipeline": {"data": {"epochs": 60}}}"#;
    std::fs::write(folder.join("seed0.json"), committed).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ffstream"))
        .current_dir(dir.path())
        .args(["run", "mnist-quick", "--record", "--quiet", "--set", "data.epochs=1"])
        .output()
        .unwrap();
    assert_user_error(&out, "data.epochs = 60 there, 1 here");
    assert_eq!(std::fs::read_to_string(folder.join("seed0.json")).unwrap(), committed);
    assert!(!dir.path().join("runs").exists(), "stopped before a run folder was made");
}

#[test]
fn a_name_that_leaves_the_results_folder_is_refused() {
    let out = ffstream(&["run", "mnist-quick", "--set", "name=\"../x\""]);
    assert_user_error(&out, "name");
}

#[test]
fn nan_settings_and_adam_without_eps_are_refused_with_the_setting_that_set_them() {
    // Issue 12: each of these finished with NaN weights, exit 0 and a record.
    for (set, key) in [
        ("model.threshold=nan", "model.threshold"),
        ("model.label_strength=nan", "model.label_strength"),
        ("sink.weight_cost=inf", "sink.weight_cost"),
        ("optimizer.rule={kind=\"adam\", beta1=0.9, beta2=0.999, eps=0.0}", "eps must be positive"),
    ] {
        let out = ffstream(&["run", "mnist-supervised", "--set", set]);
        assert_user_error(&out, key);
        assert_user_error(&out, &format!("--set {set}"));
    }
}

#[test]
fn a_folder_as_the_pipeline_says_so_once() {
    // Issue 12: "no pipeline file", and reasons printed twice.
    let dir = tempfile::tempdir().unwrap();
    let out = ffstream(&["run", dir.path().to_str().unwrap()]);
    assert_user_error(&out, "it is a folder");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("it is a folder").count(), 1, "{stderr}");
}

#[test]
fn a_missing_data_dir_is_named_before_anything_runs() {
    let out = ffstream(&["run", "mnist-quick", "--data-dir", "/nonexistent/ffstream-data"]);
    assert_user_error(&out, "--data-dir /nonexistent/ffstream-data is not a folder");
}

#[test]
fn mask_blurs_has_an_upper_bound() {
    // Issue 12: `stream.mask_blurs` had none (a huge count blurred for ever before frame one).
    let out = ffstream(&["run", "mnist-unsupervised", "--set", "head.mask_blurs=100000000"]);
    assert_user_error(&out, "head.mask_blurs");
}

#[test]
fn report_names_a_corrupt_record_instead_of_skipping_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("x")).unwrap();
    std::fs::write(dir.path().join("x/seed0.json"), "garbage").unwrap();
    let out = ffstream(&["report", "--results", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("seed0.json is not a record"), "{stderr}");
}

#[test]
fn a_net_that_cannot_fit_memory_is_refused_before_it_is_built() {
    // Issue 12: `model.layers=[100000000]` aborted with "memory allocation failed".
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ffstream"))
        .args(["run", "mnist-quick", "--quiet", "--set", "model.layers=[100000000, 10]", "--runs-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_user_error(&out, "make it smaller");
    assert_user_error(&out, "layer1 alone");
}

#[test]
fn bench_with_zero_batches_is_refused_at_once() {
    // Issue 12: `ffstream bench --batches 0` timed whole epochs (0 meant "the whole set").
    let started = std::time::Instant::now();
    let out = ffstream(&["bench", "--batches", "0"]);
    assert_user_error(&out, "--batches must be at least 1");
    assert!(started.elapsed().as_secs() < 5, "it ran for {:?}", started.elapsed());
}

#[test]
fn bench_out_that_cannot_be_written_fails_before_the_benchmark() {
    // Issue 12: `bench --out DIR` failed only after the whole benchmark. A folder now gets
    // `<date>-<cpu>.json`; a path under a file cannot be written and is refused at once.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let started = std::time::Instant::now();
    let out = ffstream(&["bench", "--out", file.join("bench.json").to_str().unwrap()]);
    assert_user_error(&out, "a-file");
    assert!(started.elapsed().as_secs() < 5, "it ran for {:?}", started.elapsed());
    let folder = ffstream::throughput::report_path(dir.path()).unwrap();
    assert_eq!(folder.parent(), Some(dir.path()));
    let name = folder.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("20") && name.ends_with(".json"), "{name}");
    assert!(!folder.exists(), "the probe write leaves no empty report behind");
    // A second report of the day goes beside the first, not over it.
    std::fs::write(&folder, "{}").unwrap();
    let second = ffstream::throughput::report_path(dir.path()).unwrap();
    assert_ne!(second, folder);
    assert!(second.to_string_lossy().ends_with("-2.json"), "{}", second.display());
}

#[cfg(feature = "video")]
#[test]
fn a_clip_with_no_usable_frame_is_one_clear_error() {
    // Issue 12: a clip that gave no window to learn from exited 0 with `p50 NaN ms` (and its
    // instant epochs raced the checkpoint commit).
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=10", "-frames:v", "1"])
        .args(["-c:v", "ffv1"])
        .arg(dir.path().join("one.mkv"))
        .status()
        .expect("the ffmpeg CLI is installed (scripts/install-deps)");
    assert!(made.success());
    let input = format!("source.input=\"{}\"", dir.path().join("one.mkv").display());
    let out = Command::new(env!("CARGO_BIN_EXE_ffstream"))
        .args(["run", "video-unsupervised", "--quiet", "--set", &input, "--runs-dir"])
        .arg(dir.path().join("runs"))
        .output()
        .unwrap();
    assert_user_error(&out, "gave 1 frame(s) and not one training window of 2 consecutive frames");
}

#[cfg(feature = "video")]
#[test]
fn a_camera_pipeline_that_drops_most_frames_says_so() {
    // Issue 12: the camera pipeline on an unpaced source dropped 90% of its frames silently.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ffstream"))
        .args(["run", "camera", "--set", "source.input=\"testsrc2=size=64x64:rate=1000\""])
        .args(["--set", "source.format=\"lavfi\"", "--set", "data.frames_per_epoch=400", "--set", "data.epochs=1"])
        .arg("--runs-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("the source dropped").count(), 1, "{stderr}");
    assert!(stderr.contains("source.drop = \"block\""), "{stderr}");
}

#[cfg(all(feature = "video", unix))]
#[test]
fn a_fifo_input_waits_for_its_next_writer_and_stops_on_the_first_ctrl_c() {
    // Issue 12: a FIFO input blocked in the kernel on its reopen for epoch 2 and ignored the
    // first Ctrl-C. Now the wait is said, and the first Ctrl-C stops with the resume hint.
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("in.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let writer = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ffmpeg -v error -f lavfi -i testsrc2=size=64x64:rate=25 -t 3 -c:v ffv1 -f nut - > {}",
            fifo.display()
        ))
        .spawn()
        .unwrap();
    let input = format!("source.input=\"{}\"", fifo.display());
    let mut run = Command::new(env!("CARGO_BIN_EXE_ffstream"))
        .args(["run", "video-unsupervised", "--set", &input, "--set", "data.epochs=2", "--runs-dir"])
        .arg(dir.path().join("runs"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = run.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let started = std::time::Instant::now();
    while !seen.iter().any(|l: &String| l.contains("waiting for a writer on the FIFO")) {
        assert!(started.elapsed().as_secs() < 60, "no wait announced: {seen:?}");
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
            seen.push(line);
        }
    }
    // SAFETY: a signal to the child we spawned.
    unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
    let stopped = std::time::Instant::now();
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        assert!(stopped.elapsed().as_secs() < 10, "the first Ctrl-C did not stop the run");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    seen.extend(rx.try_iter());
    let _ = writer.wait_with_output();
    assert_eq!(status.code(), Some(2), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("resume with")), "{seen:?}");
}

#[test]
fn the_backprop_twin_of_a_net_that_cannot_fit_memory_is_refused_before_it_is_built() {
    // Issue 12: the FF check did not cover the twin, which aborted ("memory allocation failed").
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ffstream"))
        .args(["run", "mnist-backprop", "--quiet", "--set", "model.layers=[100000000, 10]", "--runs-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_user_error(&out, "make it smaller");
}

#[cfg(unix)]
#[test]
fn sigterm_drains_keeps_the_last_checkpoint_and_says_how_to_resume() {
    // Issue 12: SIGTERM (a service manager, `kill`) killed the run without its summary.
    let dir = tempfile::tempdir().unwrap();
    let mut run = Command::new(env!("CARGO_BIN_EXE_ffstream"))
        .args(["run", "mnist-quick", "--quiet", "--set", "data.epochs=200", "--set", "data.train_size=2000"])
        .arg("--runs-dir")
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let checkpointed = || {
        std::fs::read_dir(dir.path()).ok()?.filter_map(Result::ok).find(|e| e.path().join("checkpoint.json").exists())
    };
    while checkpointed().is_none() {
        assert!(started.elapsed().as_secs() < 60, "no checkpoint within a minute");
        assert!(run.try_wait().unwrap().is_none(), "the run ended before it was stopped");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: a signal to the child we spawned.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let stopped = std::time::Instant::now();
    let out = run.wait_with_output().unwrap();
    assert!(stopped.elapsed().as_secs() < 10, "SIGTERM took {:?}", stopped.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("resume with `ffstream run --resume"), "{stderr}");
    let folder = checkpointed().unwrap().path();
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("state.json")).unwrap()).unwrap();
    assert!(state["epochs_done"].as_u64().unwrap() >= 1, "{state}");
}

#[test]
fn a_stage_that_goes_non_finite_stops_the_run_with_its_name_and_no_checkpoint() {
    // Issue 12: a run whose weights blow up must stop, name the stage, and commit no
    // checkpoint of the blown-up weights.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ffstream"))
        .args(["run", "mnist-quick", "--quiet", "--set", "optimizer.lr=1e30", "--set", "data.train_size=2000"])
        .arg("--runs-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_user_error(&out, "stage `layer1`: goodness is not finite");
    let folder = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
    assert!(!folder.join("checkpoint.json").exists(), "a checkpoint of non-finite weights was committed");
}

#[test]
fn a_run_serves_its_stage_counters_for_prometheus() {
    // Issue 12: `--metrics-addr` serves per-stage frames, busy and wait time, queue depth,
    // drops, the latency histogram and the phase while the run goes.
    use std::io::{Read, Write};
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut run = Command::new(env!("CARGO_BIN_EXE_ffstream"))
        .args(["run", "mnist-quick", "--quiet", "--set", "data.epochs=30", "--set", "data.train_size=2000"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}"), "--runs-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let text = loop {
        assert!(started.elapsed().as_secs() < 60, "no metrics with frames within a minute");
        assert!(run.try_wait().unwrap().is_none(), "the run ended before it was scraped");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { continue };
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        let frames = text
            .lines()
            .find(|l| l.starts_with("ffstream_stage_frames_total{stage=\"layer2\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
        if frames.is_some_and(|f| f > 0) {
            break text;
        }
    };
    let _ = run.kill();
    let _ = run.wait();
    for family in [
        "ffstream_stage_busy_seconds_total",
        "ffstream_stage_queue_depth",
        "ffstream_latency_seconds_bucket",
        "ffstream_phase{",
    ] {
        assert!(text.contains(family), "{family} not in:\n{text}");
    }
}

#[test]
fn the_live_view_is_a_stage_table_with_an_eta_on_a_terminal_and_plain_lines_in_a_log() {
    // Issue 12: the live view as a per-stage table redrawn in place with the run's ETA, and
    // plain lines when stderr is not a terminal. `script` (util-linux) gives the run a pty.
    let dir = tempfile::tempdir().unwrap();
    let transcript = dir.path().join("tty.out");
    let run = format!(
        "{} run mnist-quick --runs-dir {} --set data.epochs=6 --set data.train_size=2000",
        env!("CARGO_BIN_EXE_ffstream"),
        dir.path().display()
    );
    let status = Command::new("script").arg("-qec").arg(&run).arg(&transcript).output().expect("util-linux's script");
    let tty = String::from_utf8_lossy(&std::fs::read(&transcript).unwrap()).into_owned();
    assert!(status.status.success() && tty.contains("COMMAND_EXIT_CODE=\"0\""), "{tty}");
    let header = ["stage", "frames/s", "rows/s", "busy%", "wait_in%", "wait_out%", "queue"];
    let table = tty.lines().flat_map(|l| l.split('\r')).any(|l| header.iter().all(|h| l.contains(h)));
    assert!(table, "no per-stage table: {tty}");
    assert!(tty.contains("<- bottleneck"), "{tty}");
    assert!(tty.contains("\x1b["), "not redrawn in place: {tty}");
    assert!(regex_like_eta(&tty), "no ETA: {tty}");
    // The per-epoch log lines print above the view, whole.
    assert!(tty.contains("epoch   3/6 "), "{tty}");

    // In a log: no escape codes, the same facts on one line.
    let out = ffstream(&[
        "run",
        "mnist-quick",
        "--runs-dir",
        dir.path().to_str().unwrap(),
        "--set",
        "data.epochs=6",
        "--set",
        "data.train_size=2000",
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains('\x1b'), "escape codes in a log: {log}");
    let line = log.lines().find(|l| l.starts_with("epoch ") && l.contains(" in, ")).unwrap_or_else(|| panic!("{log}"));
    for part in ["layer1", "f/s", "rss", "eta"] {
        assert!(line.contains(part), "`{part}` not in `{line}`");
    }
}

/// `eta 5s`, `eta 1m02s`, `eta 1h02m`: a measured estimate, not `eta -`.
fn regex_like_eta(text: &str) -> bool {
    text.match_indices("eta ").any(|(i, _)| text[i + 4..].starts_with(|c: char| c.is_ascii_digit()))
}
