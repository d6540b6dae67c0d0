//! What several integration tests share: a small synthetic MNIST that nets can learn, and the
//! real MNIST found through $FFSTREAM_DATA (as CI sets it), loaded once per test binary.
#![allow(dead_code)] // each test binary uses some of these

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use ffstream::data::mnist::PIXELS;
use ffstream::data::{Labelled, Split};
use ffstream::rng::Rng;

/// Random blobs with a class-dependent bright square, so the nets have something to learn.
pub fn synthetic_split(n: usize, seed: u64) -> Split {
    let mut rng = Rng::new(seed);
    let mut images = vec![0u8; n * PIXELS];
    let labels: Vec<u8> = (0..n).map(|_| rng.below(10) as u8).collect();
    for (i, &label) in labels.iter().enumerate() {
        let img = &mut images[i * PIXELS..(i + 1) * PIXELS];
        for p in img.iter_mut().skip(28) {
            *p = (rng.below(60)) as u8;
        }
        let (r, c) = (4 + 2 * (label as usize / 5) * 5, 3 + (label as usize % 5) * 5);
        for y in r..r + 5 {
            for x in c..c + 4 {
                img[y * 28 + x] = 255;
            }
        }
    }
    Split { images, labels }
}

pub fn synthetic_mnist() -> Arc<Labelled> {
    Arc::new(Labelled {
        train: synthetic_split(600, 1),
        validation: synthetic_split(200, 2),
        test: synthetic_split(200, 3),
        classes: 10,
        sequences: Vec::new(),
    })
}

/// The folder holding `mnist/` (CI: ../shared/data).
pub fn data_dir() -> PathBuf {
    let dir =
        std::env::var_os("FFSTREAM_DATA").expect("set FFSTREAM_DATA to the folder holding mnist/ (CI: ../shared/data)");
    PathBuf::from(dir)
}

/// MNIST, loaded (and its four files hashed) once for all tests of a binary.
pub fn mnist() -> &'static Labelled {
    static MNIST: OnceLock<Labelled> = OnceLock::new();
    MNIST.get_or_init(|| Labelled::mnist(Some(&data_dir())).unwrap())
}

/// A small FF pipeline on labelled rows whose `[source]` table holds `source` (e.g.
/// `kind = "cifar10"`): two 8-unit stages, one epoch of batches of 2, lockstep; `--set` can
/// change the rest.
pub fn labelled_pipeline(source: &str) -> String {
    format!(
        r#"
name = "tiny"
trainer = "ff"
seed = 0
[data]
epochs = 1
batch = 2
[source]
{source}
[model]
layers = [8, 8]
[optimizer]
rule = {{ kind = "matlab" }}
lr = 0.01
[sink]
kind = "readout"
lr = 0.1
[head]
kind = "labelled"
labels = "hard"
[pipeline]
mode = "lockstep"
[eval]
every = 1
batch = 2
"#
    )
}

/// The FF step of the tests' local and dense stages: Matlab's rule and peer normalization,
/// weight cost 0.001, constant rate `lr`, every layer counted for goodness, none read out.
pub fn ff_settings(lr: f32, seed: u64, threads: usize) -> ffstream::stage::FfSettings {
    ffstream::stage::FfSettings {
        goodness: ffstream::ff::goodness::Goodness::SumSquares,
        threshold: None,
        temperature: 1.0,
        peer_normalization: 0.03,
        rule: ffstream::ff::optim::Rule::Matlab,
        lr,
        weight_cost: 0.001,
        schedule: ffstream::ff::optim::Schedule::Constant,
        epochs: 1,
        counts_for_goodness: true,
        feeds_readout: false,
        seed,
        threads,
    }
}

/// Zenoh peers on loopback for the tests of remote edges (feature `dist-zenoh`).
#[cfg(feature = "dist-zenoh")]
pub mod zenoh {
    use std::time::{Duration, Instant};

    use ffstream::transport::zenoh::{Peers, ZenohWire};

    /// A loopback endpoint on a port free now.
    pub fn free_endpoint() -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        format!("tcp/127.0.0.1:{port}")
    }

    /// Two peers of this process, one listening on a free loopback port and one dialling it,
    /// connected before any edge opens.
    pub fn connected_pair() -> (ZenohWire, ZenohWire) {
        let endpoint = free_endpoint();
        let a = ZenohWire::open(&Peers { listen: vec![endpoint.clone()], connect: vec![] }).unwrap();
        let b = ZenohWire::open(&Peers { listen: vec![], connect: vec![endpoint] }).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while (a.peers() == 0 || b.peers() == 0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(a.peers() > 0 && b.peers() > 0, "the two Zenoh peers did not connect");
        (a, b)
    }
}
