//! MNIST from the four IDX `.gz` files, verified, split 50k/10k/10k as the paper's [M] code.
//!
//! The split: the first 50,000 official training images train, the last 10,000 validate, the
//! official 10,000 test images test once at the end. (Matlab's `mnistdata.mat` holds the same
//! sizes but a reordered case list that is not published; the order is our choice.)

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{read_verified, DataError};

/// Pixels per image.
pub const PIXELS: usize = 28 * 28;
/// Number of classes.
pub const CLASSES: usize = 10;
/// Training images kept for training; the rest of the official training set validates.
pub const TRAIN_SIZE: usize = 50_000;

const FILES: [(&str, &str); 4] = [
    ("mnist/train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    ("mnist/train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    ("mnist/t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    ("mnist/t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
];

pub use super::{Labelled, Split};

impl Labelled {
    /// MNIST: loads and verifies the four files from the data search path.
    pub fn mnist(data_dir: Option<&Path>) -> Result<Labelled, DataError> {
        let read = |index: usize| -> Result<(PathBuf, Vec<u8>), DataError> {
            let (file, sha) = FILES[index];
            let gz = read_verified("MNIST", file, sha, data_dir)?;
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut raw)
                .map_err(|source| DataError::Io { path: file.into(), source })?;
            Ok((PathBuf::from(file), raw))
        };
        let train_images = idx(read(0)?, 0x803, &[60_000, 28, 28])?;
        let train_labels = idx(read(1)?, 0x801, &[60_000])?;
        let test_images = idx(read(2)?, 0x803, &[10_000, 28, 28])?;
        let test_labels = idx(read(3)?, 0x801, &[10_000])?;
        let cut = TRAIN_SIZE * PIXELS;
        Ok(Labelled {
            classes: CLASSES,
            sequences: Vec::new(),
            train: Split { images: train_images[..cut].to_vec(), labels: train_labels[..TRAIN_SIZE].to_vec() },
            validation: Split { images: train_images[cut..].to_vec(), labels: train_labels[TRAIN_SIZE..].to_vec() },
            test: Split { images: test_images, labels: test_labels },
        })
    }
}

/// Checks an IDX header and returns the payload.
fn idx((path, raw): (PathBuf, Vec<u8>), magic: u32, dims: &[u32]) -> Result<Vec<u8>, DataError> {
    let header = 4 * (1 + dims.len());
    let word = |i: usize| u32::from_be_bytes([raw[4 * i], raw[4 * i + 1], raw[4 * i + 2], raw[4 * i + 3]]);
    let bad = |reason: String| DataError::Format { path: path.clone(), reason };
    if raw.len() < header || word(0) != magic {
        return Err(bad(format!("not an IDX file with magic {magic:#010x}")));
    }
    let got: Vec<u32> = (1..=dims.len()).map(word).collect();
    if got != dims {
        return Err(bad(format!("dimensions {got:?}, expected {dims:?}")));
    }
    let payload = dims.iter().map(|&d| d as usize).product::<usize>();
    if raw.len() != header + payload {
        return Err(bad(format!("{} bytes, expected {}", raw.len(), header + payload)));
    }
    Ok(raw[header..].to_vec())
}

/// Copies image `src` shifted by `(dy, dx)` pixels into `dst` as floats in [0,1], zero fill.
///
/// The paper's jitter (E4) shifts up to 2 pixels in each direction; edges are filled with
/// zeros (PAPER.md leaves the padding open; zero is MNIST's background).
pub fn shifted_into(src: &[u8], dy: i32, dx: i32, dst: &mut [f32]) {
    debug_assert_eq!(src.len(), PIXELS);
    for y in 0..28i32 {
        let sy = y - dy;
        for x in 0..28i32 {
            let sx = x - dx;
            let v = if (0..28).contains(&sy) && (0..28).contains(&sx) {
                src[(sy * 28 + sx) as usize] as f32 / 255.0
            } else {
                0.0
            };
            dst[(y * 28 + x) as usize] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_moves_pixels_and_fills_zeros() {
        let mut src = vec![0u8; PIXELS];
        src[5 * 28 + 7] = 255;
        let mut dst = vec![9.0f32; PIXELS];
        shifted_into(&src, 2, -1, &mut dst);
        assert_eq!(dst[7 * 28 + 6], 1.0);
        assert_eq!(dst.iter().filter(|&&v| v != 0.0).count(), 1);
    }

    #[test]
    fn truncated_idx_is_a_format_error() {
        let mut raw = vec![0, 0, 8, 1, 0, 0, 0, 3];
        raw.extend([1, 2]);
        let err = idx((PathBuf::from("x"), raw), 0x801, &[3]).unwrap_err();
        assert!(err.to_string().contains("expected 11"), "{err}");
    }
}
