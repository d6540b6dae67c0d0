//! Datasets as streams: where their files are found, how they are checked, how they are split.
//!
//! Files are looked up in `--data-dir`, then `$FFSTREAM_DATA`, then the user cache
//! (`$XDG_CACHE_HOME/ffstream` or `~/.cache/ffstream`). Every file is checked against the
//! SHA-256 compiled in here before it is parsed, so a truncated or swapped file is an error that
//! names the file and the hash it should have. Nothing is ever downloaded by this crate: tests
//! and CI must not touch the network, and the error says where to put the files.

pub mod aesop;
pub mod mnist;
pub mod moving_mnist;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why a dataset could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// No search location holds the file.
    #[error("cannot find `{file}` in {searched}; put the {dataset} files there or pass --data-dir")]
    Missing {
        /// Dataset name.
        dataset: String,
        /// The file looked for, relative to the data folder.
        file: String,
        /// The folders tried, joined for the message.
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
    /// The bytes hash right but do not parse (would mean a wrong table entry).
    #[error("`{path}`: {reason}")]
    Format {
        /// The file read.
        path: PathBuf,
        /// What is wrong.
        reason: String,
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

/// The folders searched for data, in order.
pub fn search_dirs(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = explicit {
        dirs.push(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("FFSTREAM_DATA") {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(cache) = std::env::var_os("XDG_CACHE_HOME") {
        dirs.push(PathBuf::from(cache).join("ffstream"));
    } else if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cache").join("ffstream"));
    }
    dirs
}

/// Finds `relative` in the search folders and returns its verified bytes.
pub fn read_verified(
    dataset: &str,
    relative: &str,
    sha256_hex: &str,
    explicit: Option<&Path>,
) -> Result<Vec<u8>, DataError> {
    let dirs = search_dirs(explicit);
    let path = dirs.iter().map(|d| d.join(relative)).find(|p| p.is_file()).ok_or_else(|| DataError::Missing {
        dataset: dataset.to_string(),
        file: relative.to_string(),
        searched: dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
    })?;
    let bytes = std::fs::read(&path).map_err(|source| DataError::Io { path: path.clone(), source })?;
    let got = hex(&Sha256::digest(&bytes));
    if got != sha256_hex {
        return Err(DataError::Checksum { path, got, expected: sha256_hex.to_string() });
    }
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
