//! `[source] kind = "idx"`: any folder of IDX files, a small one written here (3x5 images, 4
//! classes) and MNIST's own folder (through $FFSTREAM_DATA, as CI sets it), with the errors a
//! wrong folder gives.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use ffstream::config::build::row_shape;
use ffstream::config::PipelineConfig;
use ffstream::data::idx::{self, IdxShape};
use ffstream::data::Labelled;
use ffstream::session::load_data;

mod common;

fn data_dir() -> PathBuf {
    let dir =
        std::env::var_os("FFSTREAM_DATA").expect("set FFSTREAM_DATA to the folder holding mnist/ (CI: ../shared/data)");
    PathBuf::from(dir)
}

/// An IDX file of bytes: the magic, the dimensions, the payload.
fn idx_bytes(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    dims.iter().for_each(|d| out.extend(d.to_be_bytes()));
    out.extend(payload);
    out
}

/// Writes `bytes` as `folder/name`, gzip-compressed as `name.gz` if `gz`.
fn write(folder: &Path, name: &str, bytes: &[u8], gz: bool) {
    if gz {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        std::fs::write(folder.join(format!("{name}.gz")), e.finish().unwrap()).unwrap();
    } else {
        std::fs::write(folder.join(name), bytes).unwrap();
    }
}

/// A folder of 12 training and 4 test images of 3x5, labels 0..4: image i is all `i`, its
/// label `i % 4`. The training files are gzipped, the test files plain.
fn tiny_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = (12u32, 4u32);
    let images = |n: u32| (0..n).flat_map(|i| [i as u8; 15]).collect::<Vec<u8>>();
    let labels = |n: u32| (0..n).map(|i| (i % 4) as u8).collect::<Vec<u8>>();
    write(dir.path(), "train-images-idx3-ubyte", &idx_bytes(&[train, 3, 5], &images(train)), true);
    write(dir.path(), "train-labels-idx1-ubyte", &idx_bytes(&[train], &labels(train)), true);
    write(dir.path(), "t10k-images-idx3-ubyte", &idx_bytes(&[test, 3, 5], &images(test)), false);
    write(dir.path(), "t10k-labels-idx1-ubyte", &idx_bytes(&[test], &labels(test)), false);
    dir
}

fn pipeline(source: &str) -> String {
    common::labelled_pipeline(&format!("kind = \"idx\"\n{source}"))
}

fn source(folder: &Path, more: &str) -> String {
    format!("path = {:?}\nvalidation = 2\n{more}", folder.display().to_string())
}

#[test]
fn a_small_folder_gives_its_shape_and_splits() {
    let dir = tiny_folder();
    let config = PipelineConfig::parse(&pipeline(&source(dir.path(), "")), "idx-tiny.toml", &[]).unwrap();
    assert_eq!(config.image_shape(), None, "not read yet");
    let config = config.resolved(None).unwrap();
    assert_eq!(config.image_shape(), Some((3, 5, 1)));
    assert_eq!(row_shape(&config), (15, 4));
    let data = load_data(&config, None).unwrap();
    assert_eq!((data.train.len(), data.validation.len(), data.test.len(), data.classes), (10, 2, 4, 4));
    assert_eq!(data.train.width(), 15);
    assert_eq!(data.validation.image(1), &[11u8; 15]);
    assert_eq!((data.validation.labels[1], data.test.labels[3]), (3, 3));
    // More classes than the labels use is allowed; fewer is an error (below).
    let six = PipelineConfig::parse(&pipeline(&source(dir.path(), "classes = 6")), "t", &[]).unwrap();
    assert_eq!(row_shape(&six.resolved(None).unwrap()), (15, 6));
}

#[test]
fn a_small_folder_runs_through_the_pipeline() {
    let dir = tiny_folder();
    let file = dir.path().join("idx-tiny.toml");
    std::fs::write(&file, pipeline(&source(dir.path(), ""))).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ffstream"))
        .arg("run")
        .arg(&file)
        .args(["--quiet", "--runs-dir"])
        .arg(dir.path().join("runs"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("test error"), "{}", String::from_utf8_lossy(&out.stdout));
}

/// The error of loading the tiny folder after `spoil` changed it.
fn error_after(spoil: impl FnOnce(&Path), classes: Option<usize>) -> String {
    let dir = tiny_folder();
    spoil(dir.path());
    let probed = idx::probe(dir.path(), classes).err().map(|e| e.to_string());
    let loaded = idx::load(dir.path(), classes, 2).unwrap_err().to_string();
    if let Some(probed) = probed {
        assert_eq!(probed, loaded, "the header check and the load agree");
    }
    assert_eq!(loaded.lines().count(), 1, "{loaded}");
    loaded
}

#[test]
fn a_wrong_folder_is_one_clear_error() {
    let t10k = |name: &str| format!("t10k-{name}");
    // Wrong magic: a labels file where the images should be.
    let err = error_after(|d| write(d, &t10k("images-idx3-ubyte"), &idx_bytes(&[4], &[0; 4]), false), None);
    assert!(err.contains("t10k-images-idx3-ubyte") && err.contains("magic 0x00000803"), "{err}");
    // Counts of images and labels differ.
    let err = error_after(|d| write(d, &t10k("labels-idx1-ubyte"), &idx_bytes(&[3], &[0, 1, 2]), false), None);
    assert!(err.contains("3 labels but") && err.contains("has 4 images"), "{err}");
    // A label not below the classes the file names.
    let err = error_after(|_| {}, Some(3));
    assert!(err.contains("label 3 of image 3 is not below classes = 3"), "{err}");
    // Truncated: the last image is cut short.
    let err = error_after(
        |d| {
            let whole = idx_bytes(&[4, 3, 5], &[1; 60]);
            write(d, &t10k("images-idx3-ubyte"), &whole[..whole.len() - 7], false)
        },
        None,
    );
    assert!(
        err.contains("t10k-images-idx3-ubyte") && err.contains("expected 76") && err.contains("truncated"),
        "{err}"
    );
    // Test images of another size.
    let err = error_after(|d| write(d, &t10k("images-idx3-ubyte"), &idx_bytes(&[4, 5, 3], &[1; 60]), false), None);
    assert!(err.contains("images are 5x3 but") && err.contains("has 3x5"), "{err}");
    // A truncated gzip file.
    let err = error_after(
        |d| {
            let gz = d.join("train-labels-idx1-ubyte.gz");
            let bytes = std::fs::read(&gz).unwrap();
            std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
        },
        None,
    );
    assert!(err.contains("train-labels-idx1-ubyte.gz") && err.contains("gzip"), "{err}");
    // A missing file.
    let err = error_after(|d| std::fs::remove_file(d.join("t10k-labels-idx1-ubyte")).unwrap(), None);
    assert!(err.contains("has no `t10k-labels-idx1-ubyte` or `t10k-labels-idx1-ubyte.gz`"), "{err}");
}

#[test]
fn too_much_validation_and_a_missing_folder_are_errors() {
    let dir = tiny_folder();
    let err = idx::load(dir.path(), None, 12).unwrap_err().to_string();
    assert!(err.contains("validation = 12 leaves no training image"), "{err}");
    let err = idx::locate("no-such-idx-folder", Some(dir.path())).unwrap_err().to_string();
    assert!(err.contains("cannot find the IDX folder `no-such-idx-folder`"), "{err}");
    let config = PipelineConfig::parse(&pipeline("path = \"no-such-idx-folder\""), "t", &[]).unwrap();
    assert!(config.resolved(None).is_err());
    let err = PipelineConfig::parse(&pipeline("path = \"x\"\nclasses = 0"), "t", &[]).unwrap_err().to_string();
    assert!(err.contains("source.classes"), "{err}");
}

#[test]
fn mnists_own_folder_is_an_idx_source_checked_by_hash() {
    // `path = "mnist"` is found in $FFSTREAM_DATA.
    let config = PipelineConfig::parse(&pipeline("path = \"mnist\""), "t", &[]).unwrap().resolved(None).unwrap();
    assert_eq!(config.image_shape(), Some((28, 28, 1)));
    assert_eq!(row_shape(&config), (784, 10));
    let (data, shape) = idx::load(&data_dir().join("mnist"), None, 10_000).unwrap();
    assert_eq!(shape, IdxShape { rows: 28, cols: 28, classes: 10 });
    let mnist = Labelled::mnist(Some(&data_dir())).unwrap();
    assert_eq!(
        (&data.train.labels, &data.validation.labels, &data.test.labels),
        (&mnist.train.labels, &mnist.validation.labels, &mnist.test.labels)
    );
    assert!(data.train.images == mnist.train.images && data.test.images == mnist.test.images);

    // Three of MNIST's files and labels of the right shape but not MNIST's: the odd one out is
    // named with the hash it should have.
    let dir = tempfile::tempdir().unwrap();
    for name in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"] {
        std::fs::copy(data_dir().join("mnist").join(name), dir.path().join(name)).unwrap();
    }
    let mut labels = mnist.test.labels.clone();
    labels[0] = (labels[0] + 1) % 10;
    write(dir.path(), "t10k-labels-idx1-ubyte", &idx_bytes(&[10_000], &labels), false);
    let err = idx::load(dir.path(), None, 10_000).unwrap_err().to_string();
    assert!(err.contains("t10k-labels-idx1-ubyte") && err.contains("MNIST"), "{err}");
    assert!(err.contains(idx::KNOWN[0].1[3]), "{err}");
}
