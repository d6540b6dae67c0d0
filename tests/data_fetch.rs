//! `ffstream data fetch` against a mirror on the loopback interface: a small HTTP server
//! serving $FFSTREAM_DATA (../shared/data in CI), optionally with one file corrupted. Nothing
//! here reaches beyond 127.0.0.1.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ffstream::data::fetch::{fetch, Fetchable};
use ffstream::data::{aesop, cifar10, mnist, sha256_of, Labelled};

fn data_dir() -> PathBuf {
    let dir = std::env::var_os("FFSTREAM_DATA")
        .expect("set FFSTREAM_DATA to the folder holding the data (CI: ../shared/data)");
    PathBuf::from(dir)
}

/// A file server on 127.0.0.1: `GET /<path>` answers `root/<path>` (one byte flipped for the
/// paths in `corrupt`), 404 otherwise. It serves at most `max` connections, then its thread ends.
struct Mirror {
    url: String,
    requests: Arc<AtomicUsize>,
}

impl Mirror {
    fn start(root: PathBuf, corrupt: &[&str], max: usize) -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        let corrupt: HashSet<String> = corrupt.iter().map(|s| s.to_string()).collect();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(max) {
                let Ok(mut stream) = stream else { continue };
                stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // The headers, up to the blank line.
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                counted.fetch_add(1, Ordering::Relaxed);
                let path = line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
                let body = if path.contains("..") { None } else { std::fs::read(root.join(&path)).ok() };
                let response = match body {
                    Some(mut body) => {
                        if corrupt.contains(&path) {
                            let middle = body.len() / 2;
                            body[middle] ^= 0xff;
                        }
                        let head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                        [head.into_bytes(), body].concat()
                    }
                    None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                };
                let _ = stream.write_all(&response);
            }
        });
        Mirror { url, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn fetch_writes_verified_files_and_a_second_fetch_downloads_nothing() {
    let mirror = Mirror::start(data_dir(), &[], 100);
    let cache = tempfile::tempdir().unwrap();
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    for (dataset, files) in [(Fetchable::Mnist, 4), (Fetchable::Aesop, 1), (Fetchable::Cifar10, 6)] {
        let report = fetch(dataset, cache.path(), Some(&mirror.url), &stop).unwrap();
        assert_eq!((report.downloaded.len(), report.present.len()), (files, 0), "{dataset:?}");
    }
    eprintln!("fetched 11 files (152 MB) over loopback in {:.2} s", started.elapsed().as_secs_f64());
    assert_eq!(mirror.requests(), 11);
    let mut expected: Vec<String> = mnist::FILES.iter().map(|(f, _)| f.to_string()).collect();
    expected.push(aesop::FILE.0.to_string());
    expected.extend(cifar10::BATCHES.iter().map(|b| b.xz_path()));
    expected.sort();
    assert_eq!(files_under(cache.path()), expected, "exactly the loaders' files, no temporary file left");
    for (file, sha) in mnist::FILES.iter().copied().chain([aesop::FILE]) {
        assert_eq!(sha256_of(&std::fs::read(cache.path().join(file)).unwrap()), sha, "{file}");
    }
    // What the loaders read: --data-dir comes before $FFSTREAM_DATA.
    assert_eq!(Labelled::mnist(Some(cache.path())).unwrap().train.len(), 50_000);

    for dataset in Fetchable::ALL {
        let report = fetch(dataset, cache.path(), Some(&mirror.url), &stop).unwrap();
        assert!(report.downloaded.is_empty() && report.bytes == 0, "{report:?}");
    }
    assert_eq!(mirror.requests(), 11, "the second fetch asked for nothing");
}

#[test]
fn a_corrupted_download_is_one_clear_error_and_leaves_no_file() {
    let corrupt = "mnist/train-labels-idx1-ubyte.gz";
    let mirror = Mirror::start(data_dir(), &[corrupt], 20);
    let cache = tempfile::tempdir().unwrap();
    let err = fetch(Fetchable::Mnist, cache.path(), Some(&mirror.url), &AtomicBool::new(false)).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&format!("not the expected `{corrupt}`")) && message.contains(mnist::FILES[1].1),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1);
    // The first file is kept (it was right); the corrupted one left nothing, not even its
    // temporary file.
    assert_eq!(files_under(cache.path()), vec![mnist::FILES[0].0.to_string()]);

    // A file the mirror does not have.
    let empty = tempfile::tempdir().unwrap();
    let mirror = Mirror::start(empty.path().to_path_buf(), &[], 20);
    let err = fetch(Fetchable::Aesop, cache.path(), Some(&mirror.url), &AtomicBool::new(false)).unwrap_err();
    assert!(err.to_string().contains("cannot download") && err.to_string().contains("404"), "{err}");
    assert!(!cache.path().join("aesop").exists() || files_under(&cache.path().join("aesop")).is_empty());
}

#[test]
fn the_command_fills_the_user_cache_and_says_so() {
    let mirror = Mirror::start(data_dir(), &["aesop/pg19994/19994.txt"], 20);
    let home = tempfile::tempdir().unwrap();
    // A trailing slash on the mirror's address is fine.
    let out = Command::new(env!("CARGO_BIN_EXE_ffstream"))
        .args(["data", "fetch", "mnist", "--from", &format!("{}/", mirror.url)])
        .env("XDG_CACHE_HOME", home.path())
        .env_remove("FFSTREAM_DATA_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("mnist: 4 file(s) downloaded") && stdout.contains("Every command finds it there"),
        "{stdout}"
    );
    assert_eq!(files_under(&home.path().join("ffstream")).len(), 4);

    // $FFSTREAM_DATA_URL names the mirror too; the corrupted Aesop file is one line and exit 2.
    let out = Command::new(env!("CARGO_BIN_EXE_ffstream"))
        .args(["data", "fetch", "aesop", "--to"])
        .arg(home.path().join("elsewhere"))
        .env("FFSTREAM_DATA_URL", &mirror.url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(last.starts_with("ffstream: fetching aesop into") && last.contains(aesop::FILE.1), "{stderr}");
    assert!(files_under(&home.path().join("elsewhere")).is_empty());
}
