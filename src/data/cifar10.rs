//! CIFAR-10 from the official binary batches, verified, split 45k/5k/10k, images channels last.
//!
//! The files are `cifar10/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin`, each 10,000
//! records of 1 label byte and 3,072 pixel bytes: the 1,024 red values of the 32x32 image row
//! by row, then the green, then the blue. They are found xz-compressed (`.bin.xz`, as
//! `../shared/data` stores them) or plain (`.bin`, as the official `cifar-10-binary.tar.gz`
//! unpacks and as `ffstream data fetch cifar10` stores them), each form checked against its own
//! SHA-256 before it is parsed.
//!
//! Rows are stored channels last: the value at row `y`, column `x`, channel `c` is column
//! `(y * 32 + x) * 3 + c`, the layout the stages read maps in (and FFmpeg's RGB24 frames have).
//! The split, as DESIGN.md asks: the first 45,000 training images train, the last 5,000 validate,
//! `test_batch` tests once at the end.

use std::io::Read;
use std::path::Path;

use super::{read_verified_any, DataError, Labelled, Split};

/// Image height and width.
pub const SIDE: usize = 32;
/// Colour channels (red, green, blue).
pub const CHANNELS: usize = 3;
/// Values per image.
pub const PIXELS: usize = SIDE * SIDE * CHANNELS;
/// Number of classes.
pub const CLASSES: usize = 10;
/// The class names, in label order (`batches.meta.txt`).
pub const CLASS_NAMES: [&str; CLASSES] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
/// Training images kept for training; the last 5,000 of the 50,000 validate.
pub const TRAIN_SIZE: usize = 45_000;
/// Images per batch file.
pub const RECORDS: usize = 10_000;
/// Bytes per record: the label, then the three planes.
pub const RECORD: usize = 1 + PIXELS;
/// The folder of the batches, relative to a data folder.
pub const DIR: &str = "cifar10/cifar-10-batches-bin";

/// One batch file: its name, and the SHA-256 of its `.bin.xz` and its `.bin` form
/// (`../shared/data/cifar10/SHA256SUMS` and `SHA256SUMS.uncompressed`).
#[derive(Clone, Copy, Debug)]
pub struct Batch {
    /// `data_batch_1` ... `test_batch`.
    pub name: &'static str,
    /// SHA-256 of the xz-compressed file as stored in `../shared/data`.
    pub xz_sha256: &'static str,
    /// SHA-256 of the plain file (the official archive's member).
    pub bin_sha256: &'static str,
}

impl Batch {
    /// Its `.bin.xz` path relative to a data folder.
    pub fn xz_path(&self) -> String {
        format!("{DIR}/{}.bin.xz", self.name)
    }

    /// Its `.bin` path relative to a data folder.
    pub fn bin_path(&self) -> String {
        format!("{DIR}/{}.bin", self.name)
    }
}

/// The five training batches in order, then the test batch.
pub const BATCHES: [Batch; 6] = [
    Batch {
        name: "data_batch_1",
        xz_sha256: "7854ef2eb3bf1c9f426c079ccd35bea5dda80aca65679f9af02698fb449811b1",
        bin_sha256: "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    },
    Batch {
        name: "data_batch_2",
        xz_sha256: "4c11a41c67e8b1c48ea004d64854ad4937865ee1424176aa47ad8da59b865157",
        bin_sha256: "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    },
    Batch {
        name: "data_batch_3",
        xz_sha256: "a01a56410e673413ac32319b89d199199f32943a37eb7bc7f26277b6e7dad491",
        bin_sha256: "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    },
    Batch {
        name: "data_batch_4",
        xz_sha256: "0f48b719d4087fdeb0ebe976cb214b0cf71da25bbb2221e953f859d475c6d2e4",
        bin_sha256: "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    },
    Batch {
        name: "data_batch_5",
        xz_sha256: "4650a15319d0dce6884fd3d1955236d5f0b433e4b7d3a429f342cb2b24f2cd25",
        bin_sha256: "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    },
    Batch {
        name: "test_batch",
        xz_sha256: "89f4e12a985a64b8729884fe56b06dab93e30da267c8957ee031f6fc6d96a18f",
        bin_sha256: "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
    },
];

/// Converts one batch's records into rows (channels last) and labels.
///
/// # Shapes
/// `raw` is `RECORDS * RECORD` bytes; the rows are `RECORDS * PIXELS`.
pub fn records_to_rows(path: &Path, raw: &[u8]) -> Result<Split, DataError> {
    if raw.len() != RECORDS * RECORD {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            reason: format!("{} bytes, expected {} ({RECORDS} records of {RECORD})", raw.len(), RECORDS * RECORD),
        });
    }
    let mut images = vec![0u8; RECORDS * PIXELS];
    let mut labels = Vec::with_capacity(RECORDS);
    for (record, row) in raw.chunks_exact(RECORD).zip(images.chunks_exact_mut(PIXELS)) {
        let (label, planes) = (record[0], &record[1..]);
        if label as usize >= CLASSES {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                reason: format!("label {label} is not a class"),
            });
        }
        labels.push(label);
        // Plane c holds channel c of every pixel in row-major order; interleave them.
        for (c, plane) in planes.chunks_exact(SIDE * SIDE).enumerate() {
            for (pixel, &v) in plane.iter().enumerate() {
                row[pixel * CHANNELS + c] = v;
            }
        }
    }
    Ok(Split { images, labels })
}

/// Finds, verifies, decompresses and converts one batch.
fn load_batch(batch: &Batch, data_dir: Option<&Path>) -> Result<Split, DataError> {
    let (xz, bin) = (batch.xz_path(), batch.bin_path());
    let forms = [(xz.as_str(), batch.xz_sha256), (bin.as_str(), batch.bin_sha256)];
    let (form, path, bytes) = read_verified_any("CIFAR-10", &forms, data_dir)?;
    let raw = if form == 0 { unxz(&path, &bytes)? } else { bytes };
    records_to_rows(&path, &raw)
}

/// The decompressed bytes of an xz file.
fn unxz(path: &Path, xz: &[u8]) -> Result<Vec<u8>, DataError> {
    let mut raw = Vec::with_capacity(RECORDS * RECORD);
    liblzma::read::XzDecoder::new(xz)
        .read_to_end(&mut raw)
        .map_err(|e| DataError::Format { path: path.to_path_buf(), reason: format!("not a whole xz stream: {e}") })?;
    Ok(raw)
}

impl Labelled {
    /// CIFAR-10: loads and verifies the six batches from the data search path.
    ///
    /// Decoding an xz batch takes about 1.5 s of one core, so each batch loads on its own scoped
    /// thread (they end before this returns; no stage's pool is used).
    pub fn cifar10(data_dir: Option<&Path>) -> Result<Labelled, DataError> {
        let mut splits = std::thread::scope(|scope| {
            let loading: Vec<_> =
                BATCHES.iter().map(|batch| scope.spawn(move || load_batch(batch, data_dir))).collect();
            loading
                .into_iter()
                .map(|thread| thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect::<Result<Vec<Split>, DataError>>()
        })?;
        let test = splits.pop().unwrap_or_default();
        let mut train =
            Split { images: Vec::with_capacity(5 * RECORDS * PIXELS), labels: Vec::with_capacity(5 * RECORDS) };
        for split in splits {
            train.images.extend_from_slice(&split.images);
            train.labels.extend_from_slice(&split.labels);
        }
        let (train, validation) = train.hold_out_last(5 * RECORDS - TRAIN_SIZE);
        Ok(Labelled { train, validation, test, classes: CLASSES, sequences: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_become_channels_last() {
        let mut raw = vec![0u8; RECORDS * RECORD];
        // Record 1: label 7; pixel (y 2, x 5) is red 10, green 20, blue 30.
        let record = &mut raw[RECORD..2 * RECORD];
        record[0] = 7;
        let pixel = 2 * SIDE + 5;
        for (c, v) in [10, 20, 30].into_iter().enumerate() {
            record[1 + c * SIDE * SIDE + pixel] = v;
        }
        let split = records_to_rows(Path::new("x"), &raw).unwrap();
        assert_eq!(split.labels[1], 7);
        assert_eq!(&split.image(1)[pixel * 3..pixel * 3 + 3], &[10, 20, 30]);
        assert_eq!(split.image(1).iter().filter(|&&v| v != 0).count(), 3);
    }

    #[test]
    fn a_short_batch_is_a_format_error() {
        let err = records_to_rows(Path::new("x"), &[0u8; RECORD]).unwrap_err();
        assert!(err.to_string().contains("expected 30730000"), "{err}");
    }
}
