//! Real CIFAR-10 (found through $FFSTREAM_DATA, as CI sets it): the split, the classes, the
//! channels-last rows, the pipeline's shapes, and a corrupt batch as one clear error.

use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use ffstream::config::build::row_shape;
use ffstream::config::PipelineConfig;
use ffstream::data::cifar10::{BATCHES, DIR};
use ffstream::data::Labelled;

mod common;

fn data_dir() -> PathBuf {
    let dir = std::env::var_os("FFSTREAM_DATA")
        .expect("set FFSTREAM_DATA to the folder holding cifar10/ (CI: ../shared/data)");
    PathBuf::from(dir)
}

/// CIFAR-10, loaded (and its six files hashed and decompressed) once for the tests below.
fn cifar() -> &'static Labelled {
    static CIFAR: OnceLock<Labelled> = OnceLock::new();
    CIFAR.get_or_init(|| {
        let started = Instant::now();
        let data = Labelled::cifar10(Some(&data_dir())).unwrap();
        eprintln!("CIFAR-10 loaded in {:.2} s", started.elapsed().as_secs_f64());
        data
    })
}

/// The value at row `y`, column `x`, channel `c` of image `i` of a split.
fn value(split: &ffstream::data::Split, i: usize, y: usize, x: usize, c: usize) -> u8 {
    split.image(i)[(y * 32 + x) * 3 + c]
}

#[test]
fn cifar10_loads_verified_with_the_45k_5k_10k_split() {
    let c = cifar();
    assert_eq!((c.train.len(), c.validation.len(), c.test.len(), c.classes), (45_000, 5_000, 10_000, 10));
    assert_eq!((c.train.width(), c.validation.width(), c.test.width()), (3072, 3072, 3072));
    assert_eq!(&c.train.labels[..10], &[6, 9, 9, 4, 1, 1, 2, 7, 8, 3]);
    assert_eq!(&c.test.labels[..10], &[3, 8, 8, 0, 6, 6, 1, 6, 3, 1]);
    let mut counts = [0usize; 10];
    c.test.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [1000; 10]);
    let mut counts = [0usize; 10];
    c.train.labels.iter().chain(&c.validation.labels).for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [5000; 10]);
}

#[test]
fn rows_are_channels_last() {
    // Read from the official planes with Python's lzma: test image 0 at (y 5, x 7) is
    // R 167, G 115, B 41; test image 9999 at (31, 0) is 116 120 90; the last training image
    // (the last of the validation split) at (20, 30) is 38 38 32.
    let c = cifar();
    assert_eq!([0, 1, 2].map(|ch| value(&c.test, 0, 5, 7, ch)), [167, 115, 41]);
    assert_eq!([0, 1, 2].map(|ch| value(&c.test, 9999, 31, 0, ch)), [116, 120, 90]);
    assert_eq!((c.validation.labels[4999], c.test.labels[9999]), (1, 7));
    assert_eq!([0, 1, 2].map(|ch| value(&c.validation, 4999, 20, 30, ch)), [38, 38, 32]);
}

#[test]
fn the_plain_bin_form_loads_too() {
    // The form the official archive unpacks to (and `ffstream data fetch cifar10` stores),
    // found before the .xz files of $FFSTREAM_DATA because --data-dir comes first.
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join(DIR);
    std::fs::create_dir_all(&folder).unwrap();
    let test = &BATCHES[5];
    let xz = std::fs::read(data_dir().join(test.xz_path())).unwrap();
    let mut bin = Vec::new();
    liblzma::read::XzDecoder::new(&xz[..]).read_to_end(&mut bin).unwrap();
    std::fs::write(dir.path().join(test.bin_path()), &bin).unwrap();
    let c = Labelled::cifar10(Some(dir.path())).unwrap();
    assert_eq!(c.test.images, cifar().test.images);
    assert_eq!(c.test.labels, cifar().test.labels);
}

#[test]
fn a_corrupt_batch_is_one_clear_error_naming_file_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(DIR)).unwrap();
    let batch = &BATCHES[1];
    let bytes = std::fs::read(data_dir().join(batch.xz_path())).unwrap();
    // Truncated: the first megabyte of the stored file.
    std::fs::write(dir.path().join(batch.xz_path()), &bytes[..1 << 20]).unwrap();
    let err = Labelled::cifar10(Some(dir.path())).unwrap_err().to_string();
    assert!(err.contains("data_batch_2.bin.xz") && err.contains(batch.xz_sha256), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_cifar10_source_has_its_image_and_row_shape() {
    let config = PipelineConfig::parse(&common::labelled_pipeline("kind = \"cifar10\""), "t", &[]).unwrap();
    assert_eq!(config.image_shape(), Some((32, 32, 3)));
    assert_eq!(row_shape(&config), (3072, 10));
    let err = PipelineConfig::parse(&common::labelled_pipeline("kind = \"cifar10\"\njitter = 2"), "t", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("jitter"), "{err}");
}
