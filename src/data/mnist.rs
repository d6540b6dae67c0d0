//! MNIST from the four IDX `.gz` files, verified, split 50k/10k/10k as the paper's [M] code.
//!
//! The split: the first 50,000 official training images train, the last 10,000 validate, the
//! official 10,000 test images test once at the end. (Matlab's `mnistdata.mat` holds the same
//! sizes but a reordered case list that is not published; the order is our choice.)

use std::path::{Path, PathBuf};

use super::{gunzip, idx, read_verified, DataError};

/// Pixels per image.
pub const PIXELS: usize = 28 * 28;
/// Number of classes.
pub const CLASSES: usize = 10;
/// Training images kept for training; the rest of the official training set validates.
pub const TRAIN_SIZE: usize = 50_000;

/// The four files as stored (the original `.gz` files) and their SHA-256, in the order of
/// [`idx::FILES`] (`../shared/data/mnist/SHA256SUMS`).
pub const FILES: [(&str, &str); 4] = [
    ("mnist/train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    ("mnist/train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    ("mnist/t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    ("mnist/t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
];

pub use super::{Labelled, Split};

impl Labelled {
    /// MNIST: loads and verifies the four files from the data search path.
    pub fn mnist(data_dir: Option<&Path>) -> Result<Labelled, DataError> {
        let read = |index: usize, dims: &[usize]| -> Result<Vec<u8>, DataError> {
            let (file, sha) = FILES[index];
            let gz = read_verified("MNIST", file, sha, data_dir)?;
            let path = PathBuf::from(file);
            idx::parse_exact(&path, gunzip(&path, &gz)?, dims)
        };
        let train = Split { images: read(0, &[60_000, 28, 28])?, labels: read(1, &[60_000])? };
        let test = Split { images: read(2, &[10_000, 28, 28])?, labels: read(3, &[10_000])? };
        let (train, validation) = train.hold_out_last(60_000 - TRAIN_SIZE);
        Ok(Labelled { classes: CLASSES, sequences: Vec::new(), train, validation, test })
    }
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
}
