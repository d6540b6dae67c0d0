//! Datasets as streams: where their files are found, how they are checked, how they are split.
//!
//! Files are looked up in `--data-dir`, then `$FFSTREAM_DATA`, then the user cache
//! (`$XDG_CACHE_HOME/ffstream` or `~/.cache/ffstream`). Every file is checked against the
//! SHA-256 compiled in here before it is parsed, so a truncated or swapped file is an error that
//! names the file and the hash it should have. Loading never downloads: tests and CI must not
//! touch the network, and the error says where to put the files. Only `ffstream data fetch`
//! ([`fetch`]) downloads, into the user cache, checked against the same hashes.
//!
//! The datasets: [`mnist`] and [`cifar10`] (images), any folder of IDX files ([`idx`]), [`aesop`]
//! (character windows) and [`moving_mnist`] (frames generated from MNIST).

pub mod aesop;
pub mod cifar10;
pub mod fetch;
pub mod idx;
pub mod mnist;
pub mod moving_mnist;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why a dataset could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// No search location holds the file.
    #[error(
        "cannot find `{file}` in {searched}; put the {dataset} files there, pass --data-dir, or download \
         them into the user cache with `ffstream data fetch`"
    )]
    Missing {
        /// Dataset name.
        dataset: String,
        /// The file looked for, relative to the data folder.
        file: String,
        /// The folders tried, joined for the message.
        searched: String,
    },
    /// No search location holds the folder an `idx` source names.
    #[error("cannot find the IDX folder `{path}` in {searched}")]
    MissingFolder {
        /// The folder as the pipeline file names it.
        path: String,
        /// The places tried, joined for the message.
        searched: String,
    },
    /// The bytes do not hash to the expected value.
    #[error("`{path}` is corrupt or not the expected file: SHA-256 {got}, expected {expected}")]
    Checksum {
        /// The file read.
        path: PathBuf,
        /// What it hashed to.
        got: String,
        /// What it must hash to.
        expected: String,
    },
    /// The bytes do not parse: a file of a known dataset that hashes right but does not
    /// parse would mean a wrong table entry; an IDX folder of unknown files is only parsed.
    #[error("`{path}`: {reason}")]
    Format {
        /// The file read.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// One file of an IDX folder is a known dataset's file ([`idx::KNOWN`]) and this one is not
    /// that dataset's: its contents (decompressed) hash to something else.
    #[error(
        "`{path}` is corrupt or not {dataset}'s file (the folder's other files are {dataset}'s): \
         SHA-256 of its contents {got}, expected {expected}"
    )]
    Mismatch {
        /// The file read.
        path: PathBuf,
        /// The dataset the folder's other files belong to.
        dataset: String,
        /// What its (decompressed) contents hashed to.
        got: String,
        /// What that dataset's file hashes to.
        expected: String,
    },
    /// Reading failed.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file read.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One split of a labelled dataset: rows of bytes (0..255) and one class per row.
///
/// Every row has the same width, so the width is the bytes per row (an empty split reports
/// MNIST's). MNIST rows are 28x28 images; Aesop rows are one-hot character windows.
#[derive(Clone, Debug, Default)]
pub struct Split {
    /// `len * width` bytes.
    pub images: Vec<u8>,
    /// One class per row.
    pub labels: Vec<u8>,
}

impl Split {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the split holds no row.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per row.
    pub fn width(&self) -> usize {
        if self.labels.is_empty() {
            mnist::PIXELS
        } else {
            self.images.len() / self.labels.len()
        }
    }

    /// The bytes of row `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let w = self.width();
        &self.images[i * w..(i + 1) * w]
    }

    /// The rows but the last `n`, and the last `n` (a validation split carved from the
    /// training data); the first keeps this split's memory.
    pub fn hold_out_last(mut self, n: usize) -> (Split, Split) {
        let keep = self.len().saturating_sub(n);
        let width = self.width();
        let held = Split { images: self.images.split_off(keep * width), labels: self.labels.split_off(keep) };
        (self, held)
    }

    /// The first `n` rows (all of them if fewer).
    pub fn head(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split { images: self.images[..n * self.width()].to_vec(), labels: self.labels[..n].to_vec() }
    }
}

/// A labelled dataset in three splits: what the supervised head plays and the sink scores.
///
/// The head writes a row's label into its first `classes` values (Matlab's label pixels), so
/// those values of every stored row are background.
#[derive(Clone, Debug)]
pub struct Labelled {
    /// Rows the stages learn from.
    pub train: Split,
    /// Rows every choice is made on.
    pub validation: Split,
    /// Rows scored once at the end.
    pub test: Split,
    /// Number of classes (10 digits, 30 characters).
    pub classes: usize,
    /// Sequence data only: the training sequences the training rows were cut from, which the
    /// network's self-generated negatives start from (see [`aesop`]); empty otherwise.
    pub sequences: Vec<Vec<u8>>,
}

/// The folders searched for data, in order.
pub fn search_dirs(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = explicit {
        dirs.push(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("FFSTREAM_DATA") {
        dirs.push(PathBuf::from(dir));
    }
    dirs.extend(user_cache_dir());
    dirs
}

/// The user cache that is searched last and that `ffstream data fetch` fills:
/// `$XDG_CACHE_HOME/ffstream`, else `~/.cache/ffstream` (None without either variable).
pub fn user_cache_dir() -> Option<PathBuf> {
    if let Some(cache) = std::env::var_os("XDG_CACHE_HOME").filter(|c| !c.is_empty()) {
        Some(PathBuf::from(cache).join("ffstream"))
    } else {
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("ffstream"))
    }
}

/// Finds `relative` in the search folders and returns its verified bytes.
pub fn read_verified(
    dataset: &str,
    relative: &str,
    sha256_hex: &str,
    explicit: Option<&Path>,
) -> Result<Vec<u8>, DataError> {
    read_verified_any(dataset, &[(relative, sha256_hex)], explicit).map(|(_, _, bytes)| bytes)
}

/// Finds the first of several forms of one file (`(relative path, SHA-256)`, e.g. compressed and
/// not) in the search folders, folder by folder, and returns which form it is, where it was
/// found and its verified bytes. A form that is found but hashes wrong is an error, not a reason
/// to look further: a corrupt file should be named, not shadowed.
pub fn read_verified_any(
    dataset: &str,
    forms: &[(&str, &str)],
    explicit: Option<&Path>,
) -> Result<(usize, PathBuf, Vec<u8>), DataError> {
    let dirs = search_dirs(explicit);
    let found = dirs
        .iter()
        .flat_map(|d| forms.iter().enumerate().map(move |(i, (relative, _))| (i, d.join(relative))))
        .find(|(_, p)| p.is_file());
    let (form, path) = found.ok_or_else(|| DataError::Missing {
        dataset: dataset.to_string(),
        file: forms.iter().map(|(relative, _)| *relative).collect::<Vec<_>>().join(" or "),
        searched: dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
    })?;
    let bytes = std::fs::read(&path).map_err(|source| DataError::Io { path: path.clone(), source })?;
    let (got, expected) = (sha256_of(&bytes), forms[form].1);
    if got != expected {
        return Err(DataError::Checksum { path, got, expected: expected.to_string() });
    }
    Ok((form, path, bytes))
}

/// The decompressed bytes of a gzip file; a truncated or foreign stream is a format error that
/// names the file.
pub fn gunzip(path: &Path, gz: &[u8]) -> Result<Vec<u8>, DataError> {
    use std::io::Read;
    let mut raw = Vec::with_capacity(gz.len() * 4);
    flate2::read::GzDecoder::new(gz).read_to_end(&mut raw).map_err(|e| DataError::Format {
        path: path.to_path_buf(),
        reason: format!("not a whole gzip stream (truncated?): {e}"),
    })?;
    Ok(raw)
}

/// The SHA-256 of `bytes`, lowercase hex (data files and checkpoint shards are checked by it).
pub fn sha256_of(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of a digest.
pub(crate) fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
