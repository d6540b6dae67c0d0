//! `ffstream data fetch`: downloads a dataset's files into a data folder (the user cache unless
//! told otherwise), checked against the same SHA-256 values the loaders check, so that what is
//! stored is exactly what they read.
//!
//! ```text
//!   public source or --from mirror --GET--> .name.part (hashed as it is written) --rename--> name
//!                                            (wrong hash, error or Ctrl-C: removed, nothing kept)
//! ```
//!
//! - A file already in the folder with the right hash is not downloaded again.
//! - A file is written under a temporary name in the same folder and renamed once its hash is
//!   right, so an interrupted fetch never leaves a half-written file under a name a loader reads.
//! - The public sources: MNIST's original `.gz` files from a mirror of LeCun's (the same bytes);
//!   Aesop's edition from the GITenberg mirror of Project Gutenberg, pinned to the commit
//!   `../shared/data/aesop` came from (today's gutenberg.org file carries a newer header and
//!   would not match the hash); CIFAR-10 from the official `cifar-10-binary.tar.gz`, unpacked as it
//!   streams in into the plain `.bin` batches, each checked against the official files' SHA-256.
//!   (Re-compressing them to the `.xz` files `../shared/data` holds would not reproduce those
//!   bytes, and the CIFAR-10 loader reads either form.)
//! - A mirror (`--from URL`, or `$FFSTREAM_DATA_URL`) is a folder laid out like
//!   `../shared/data`: every file is fetched from `URL/<its path in the data folder>`, CIFAR-10 as
//!   its `.bin.xz` batches. Tests point it at a server on the loopback interface.
//!
//! Progress is `tracing` events (a line per file, and every tenth of a large download); the
//! library prints nothing itself.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{aesop, cifar10, hex, mnist};

/// A dataset `ffstream data fetch` downloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetchable {
    /// The four MNIST `.gz` files.
    Mnist,
    /// The six CIFAR-10 batches.
    Cifar10,
    /// The Aesop edition the loader reads (PG #19994).
    Aesop,
}

impl Fetchable {
    /// Every dataset that can be fetched.
    pub const ALL: [Fetchable; 3] = [Fetchable::Mnist, Fetchable::Cifar10, Fetchable::Aesop];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Fetchable::Mnist => "mnist",
            Fetchable::Cifar10 => "cifar10",
            Fetchable::Aesop => "aesop",
        }
    }
}

/// Where MNIST's `.gz` files are published (byte-identical to LeCun's originals).
pub const MNIST_URL: &str = "https://ossci-datasets.s3.amazonaws.com/mnist";
/// The official CIFAR-10 binary archive.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// The GITenberg mirror of PG #19994 at the commit `../shared/data/aesop` was taken from.
pub const AESOP_URL: &str = "https://raw.githubusercontent.com/GITenberg/\
                             The-Aesop-for-Children--13-With-pictures-by-Milo-Winter_19994/\
                             5cf383a5e49a3451fbb3961b7d3f7f79b68f9c22/19994.txt";
/// The environment variable naming a mirror (a folder laid out like `../shared/data`).
pub const MIRROR_VAR: &str = "FFSTREAM_DATA_URL";

/// Why a fetch failed. Whatever the reason, no file is left half-written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The request failed or the connection dropped.
    #[error("cannot download {url}: {reason}")]
    Http {
        /// What was asked for.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The downloaded bytes are not the expected file.
    #[error("{url} is not the expected `{file}`: SHA-256 {got}, expected {expected}; the download was deleted")]
    Checksum {
        /// Where it came from.
        url: String,
        /// The file it should have been, relative to the data folder.
        file: String,
        /// What it hashed to.
        got: String,
        /// What it must hash to.
        expected: String,
    },
    /// An archive does not hold what it should, or does not parse.
    #[error("{url}: {reason}")]
    Archive {
        /// The archive's address.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The data folder could not be written.
    #[error("cannot write `{path}`: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Ctrl-C.
    #[error("interrupted; the file being downloaded was deleted")]
    Interrupted,
}

/// What a fetch did, file by file (paths in the data folder).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Files downloaded and verified.
    pub downloaded: Vec<PathBuf>,
    /// Files that were already there with the right hash.
    pub present: Vec<PathBuf>,
    /// Bytes received.
    pub bytes: u64,
}

/// One file a fetch must leave in the data folder: the forms that count (the first is the one
/// the download writes; CIFAR-10's batches count as `.bin.xz` or `.bin`), as `(path relative to
/// the data folder, SHA-256)`.
#[derive(Clone, Debug)]
struct Wanted {
    forms: Vec<(String, &'static str)>,
}

impl Wanted {
    fn one(relative: impl Into<String>, sha256: &'static str) -> Wanted {
        Wanted { forms: vec![(relative.into(), sha256)] }
    }

    /// The form already in `dir` with the right hash, if any.
    fn present(&self, dir: &Path) -> Result<Option<PathBuf>, FetchError> {
        for (relative, sha) in &self.forms {
            let path = dir.join(relative);
            if !path.is_file() {
                continue;
            }
            if sha256_file(&path)? == *sha {
                return Ok(Some(path));
            }
            tracing::warn!("`{}` is corrupt or not the expected file; it will be downloaded again.", path.display());
        }
        Ok(None)
    }
}

/// One request of a fetch.
#[derive(Clone, Debug)]
enum Download {
    /// A file, stored as it comes.
    File { url: String, wanted: Wanted },
    /// A `.tar.gz` whose members (by name in the archive) are the wanted files.
    Archive { url: String, members: Vec<(String, Wanted)> },
}

/// The requests that fetch `dataset`, from the public sources or from a mirror.
fn plan(dataset: Fetchable, mirror: Option<&str>) -> Vec<Download> {
    let from_mirror = |relative: &str| mirror.map(|base| format!("{}/{relative}", base.trim_end_matches('/')));
    match dataset {
        Fetchable::Mnist => mnist::FILES
            .iter()
            .map(|&(relative, sha)| {
                let name = relative.rsplit('/').next().unwrap_or(relative);
                let url = from_mirror(relative).unwrap_or_else(|| format!("{MNIST_URL}/{name}"));
                Download::File { url, wanted: Wanted::one(relative, sha) }
            })
            .collect(),
        Fetchable::Aesop => {
            let (relative, sha) = aesop::FILE;
            let url = from_mirror(relative).unwrap_or_else(|| AESOP_URL.to_string());
            vec![Download::File { url, wanted: Wanted::one(relative, sha) }]
        }
        Fetchable::Cifar10 => {
            let forms = |b: &cifar10::Batch| vec![(b.xz_path(), b.xz_sha256), (b.bin_path(), b.bin_sha256)];
            if mirror.is_some() {
                let file = |b: &cifar10::Batch| Download::File {
                    url: from_mirror(&b.xz_path()).unwrap_or_default(),
                    wanted: Wanted { forms: forms(b) },
                };
                return cifar10::BATCHES.iter().map(file).collect();
            }
            // The archive's members are `cifar-10-batches-bin/<name>.bin`; the `.bin` form is written.
            let member = |b: &cifar10::Batch| {
                let mut forms = forms(b);
                forms.reverse();
                (format!("cifar-10-batches-bin/{}.bin", b.name), Wanted { forms })
            };
            vec![Download::Archive {
                url: CIFAR10_URL.to_string(),
                members: cifar10::BATCHES.iter().map(member).collect(),
            }]
        }
    }
}

/// Downloads what `dataset` lacks into `dir` from the public sources, or from `mirror` (a folder
/// laid out like `../shared/data`), until done or `stop` is set.
pub fn fetch(
    dataset: Fetchable,
    dir: &Path,
    mirror: Option<&str>,
    stop: &AtomicBool,
) -> Result<FetchReport, FetchError> {
    let mut report = FetchReport::default();
    let mut client = None;
    for download in plan(dataset, mirror) {
        let (url, wanted): (&str, Vec<&Wanted>) = match &download {
            Download::File { url, wanted } => (url, vec![wanted]),
            Download::Archive { url, members } => (url, members.iter().map(|(_, w)| w).collect()),
        };
        let mut missing = 0;
        for w in &wanted {
            match w.present(dir)? {
                Some(path) => report.present.push(path),
                None => missing += 1,
            }
        }
        if missing == 0 {
            continue;
        }
        let client = client.get_or_insert_with(|| Client::new(url));
        let mut body = client.get(url, stop)?;
        match &download {
            Download::File { wanted, .. } => {
                let (relative, sha) = &wanted.forms[0];
                let dest = dir.join(relative);
                store(&mut body, &dest, sha, url, relative, stop)?;
                report.downloaded.push(dest);
            }
            Download::Archive { members, .. } => {
                let written = unpack(flate2::read::GzDecoder::new(&mut body), members, dir, url, stop)?;
                report.downloaded.extend(written);
            }
        }
        report.bytes += body.received;
    }
    Ok(report)
}

/// The HTTP client: one agent for all of a fetch's requests.
struct Client {
    agent: ureq::Agent,
}

impl Client {
    fn new(url: &str) -> Client {
        let mut config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .user_agent(concat!("ffstream/", env!("CARGO_PKG_VERSION")));
        // A mirror on this machine is reached directly, whatever proxy the environment names.
        let host = url.split_once("://").map_or(url, |(_, rest)| rest);
        if ["127.", "localhost", "[::1]"].iter().any(|h| host.starts_with(h)) {
            config = config.proxy(None);
        }
        Client { agent: config.build().into() }
    }

    /// The body of `url`, as a reader that counts, reports progress and stops on Ctrl-C.
    fn get<'a>(&self, url: &str, stop: &'a AtomicBool) -> Result<Body<'a>, FetchError> {
        let http = |reason: String| FetchError::Http { url: url.to_string(), reason };
        let response = self.agent.get(url).call().map_err(|e| http(e.to_string()))?;
        let total = response.body().content_length();
        let size = total.map_or(String::new(), |n| format!(" ({:.1} MB)", n as f64 / 1e6));
        tracing::info!("Downloading {url}{size}.");
        let reader = Box::new(response.into_body().into_with_config().limit(u64::MAX).reader());
        Ok(Body { reader, url: url.to_string(), total, received: 0, reported: 0, stop })
    }
}

/// A download's bytes as they arrive.
struct Body<'a> {
    reader: Box<dyn Read + Send + 'a>,
    url: String,
    total: Option<u64>,
    received: u64,
    /// Tenths of `total` reported so far.
    reported: u64,
    stop: &'a AtomicBool,
}

/// Downloads above this size report their progress every tenth.
const LARGE: u64 = 8 << 20;

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Not `ErrorKind::Interrupted`: `read_exact` and `io::copy` retry that for ever.
        if self.stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("stopped by Ctrl-C"));
        }
        let n = self.reader.read(buf)?;
        self.received += n as u64;
        if let Some(total) = self.total.filter(|&t| t >= LARGE) {
            let tenths = self.received * 10 / total;
            if tenths > self.reported && tenths < 10 {
                self.reported = tenths;
                tracing::info!("  {}: {}% of {:.1} MB.", self.url, tenths * 10, total as f64 / 1e6);
            }
        }
        Ok(n)
    }
}

/// A file being written under a temporary name beside its destination; removed when dropped
/// unless [`Partial::keep`] renamed it into place.
struct Partial {
    path: PathBuf,
    file: File,
    kept: bool,
}

impl Partial {
    fn create(dest: &Path) -> Result<Partial, FetchError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FetchError::Io { path, source }
        };
        let folder = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(folder).map_err(io(folder))?;
        let name = dest.file_name().map_or("download".into(), |n| n.to_string_lossy().into_owned());
        let path = folder.join(format!(".{name}.part"));
        let file = File::create(&path).map_err(io(&path))?;
        Ok(Partial { path, file, kept: false })
    }

    fn keep(mut self, dest: &Path) -> Result<(), FetchError> {
        let io = |source| FetchError::Io { path: dest.to_path_buf(), source };
        self.file.sync_all().map_err(io)?;
        std::fs::rename(&self.path, dest).map_err(io)?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes `reader` to `dest` through a temporary file if it hashes to `sha256`.
fn store(
    reader: &mut dyn Read,
    dest: &Path,
    sha256: &str,
    url: &str,
    relative: &str,
    stop: &AtomicBool,
) -> Result<(), FetchError> {
    let mut partial = Partial::create(dest)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(FetchError::Interrupted);
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) if stop.load(Ordering::Relaxed) => return Err(FetchError::Interrupted),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FetchError::Http { url: url.to_string(), reason: e.to_string() }),
        };
        hasher.update(&buf[..n]);
        partial.file.write_all(&buf[..n]).map_err(|source| FetchError::Io { path: partial.path.clone(), source })?;
    }
    let got = hex(&hasher.finalize());
    if got != sha256 {
        return Err(FetchError::Checksum {
            url: url.to_string(),
            file: relative.to_string(),
            got,
            expected: sha256.to_string(),
        });
    }
    partial.keep(dest)?;
    tracing::info!("Verified {}.", dest.display());
    Ok(())
}

/// Unpacks the wanted `members` of a tar stream into `dir` (each through [`store`], so each is
/// checked against its hash), skipping the others and those already present. Plain ustar and
/// GNU tar headers with names up to 255 bytes: enough for the archives fetched here, whose
/// members are all checked by hash, so a misread header cannot store a wrong file.
fn unpack(
    mut tar: impl Read,
    members: &[(String, Wanted)],
    dir: &Path,
    url: &str,
    stop: &AtomicBool,
) -> Result<Vec<PathBuf>, FetchError> {
    let archive = |reason: String| FetchError::Archive { url: url.to_string(), reason };
    let read_err = |e: io::Error| {
        if stop.load(Ordering::Relaxed) {
            FetchError::Interrupted
        } else {
            archive(format!("cannot read the archive: {e}"))
        }
    };
    let mut todo: Vec<&(String, Wanted)> = Vec::new();
    for member in members {
        if member.1.present(dir)?.is_none() {
            todo.push(member);
        }
    }
    let mut written = Vec::new();
    let mut header = [0u8; 512];
    while !todo.is_empty() {
        tar.read_exact(&mut header).map_err(read_err)?;
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let (name, size) = tar_header(&header).map_err(archive)?;
        let padded = size.div_ceil(512) * 512;
        let mut body = (&mut tar).take(size);
        if let Some(at) = todo.iter().position(|(member, _)| *member == name) {
            let (_, wanted) = todo.swap_remove(at);
            let (relative, sha) = &wanted.forms[0];
            let dest = dir.join(relative);
            store(&mut body, &dest, sha, url, relative, stop)?;
            if body.limit() != 0 {
                return Err(archive(format!("`{name}` ends early")));
            }
            written.push(dest);
        } else {
            io::copy(&mut body, &mut io::sink()).map_err(read_err)?;
        }
        io::copy(&mut (&mut tar).take(padded - size), &mut io::sink()).map_err(read_err)?;
    }
    if let Some((name, _)) = todo.first() {
        return Err(archive(format!("has no member `{name}`")));
    }
    Ok(written)
}

/// The name and size of a tar member from its 512-byte header.
fn tar_header(header: &[u8; 512]) -> Result<(String, u64), String> {
    let field = |range: std::ops::Range<usize>| {
        let bytes = &header[range];
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    };
    let stored: u32 =
        header.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { b as u32 }).sum();
    let octal = |text: String| u64::from_str_radix(text.trim_matches(|c: char| c == ' ' || c == '\0'), 8);
    if octal(field(148..156)).ok() != Some(stored as u64) {
        return Err("not a tar archive (a header's checksum is wrong)".into());
    }
    let size = octal(field(124..136)).map_err(|_| "a member's size is not an octal number".to_string())?;
    let mut name = field(0..100);
    // POSIX ustar keeps a path prefix apart; GNU tar uses those bytes for other fields.
    if &header[257..263] == b"ustar\0" {
        let prefix = field(345..500);
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
    }
    Ok((name.trim_start_matches("./").to_string(), size))
}

/// The SHA-256 of a file, read in pieces.
fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let io = |source| FetchError::Io { path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(io)?;
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sha256_of;

    /// A tar member's header (ustar, as `tar` writes it).
    fn header(name: &str, size: usize) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn tar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, body) in members {
            out.extend(header(name, body.len()));
            out.extend(*body);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend([0u8; 1024]);
        out
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    #[test]
    fn unpack_keeps_the_wanted_members_and_checks_them() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (b"first member".as_slice(), vec![7u8; 1000]);
        let archive = tar(&[("./x/readme.html", b"skip me"), ("x/a.bin", a), ("x/b.bin", &b)]);
        let members = vec![
            ("x/a.bin".to_string(), Wanted::one("d/a.bin", leak(sha256_of(a)))),
            ("x/b.bin".to_string(), Wanted::one("d/b.bin", leak(sha256_of(&b)))),
        ];
        let stop = AtomicBool::new(false);
        let written = unpack(&archive[..], &members, dir.path(), "u", &stop).unwrap();
        assert_eq!(written.len(), 2);
        assert_eq!(std::fs::read(dir.path().join("d/a.bin")).unwrap(), a);
        assert_eq!(std::fs::read(dir.path().join("d/b.bin")).unwrap(), b);
        // Present and right: nothing is written again.
        assert!(unpack(&archive[..], &members, dir.path(), "u", &stop).unwrap().is_empty());

        let wrong = vec![("x/b.bin".to_string(), Wanted::one("e/b.bin", leak(sha256_of(a))))];
        let err = unpack(&archive[..], &wrong, dir.path(), "u", &stop).unwrap_err().to_string();
        assert!(err.contains("not the expected `e/b.bin`") && err.contains(&sha256_of(a)), "{err}");
        assert_eq!(std::fs::read_dir(dir.path().join("e")).unwrap().count(), 0, "nothing is left behind");

        let absent = vec![("x/c.bin".to_string(), Wanted::one("f/c.bin", leak(sha256_of(a))))];
        let err = unpack(&archive[..], &absent, dir.path(), "u", &stop).unwrap_err().to_string();
        assert!(err.contains("has no member `x/c.bin`"), "{err}");
    }

    #[test]
    fn ctrl_c_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("d/x.bin");
        let stop = AtomicBool::new(true);
        let err = store(&mut &[1u8; 100][..], &dest, "0", "u", "d/x.bin", &stop).unwrap_err();
        assert!(matches!(err, FetchError::Interrupted), "{err}");
        assert_eq!(std::fs::read_dir(dir.path().join("d")).unwrap().count(), 0);
    }

    #[test]
    fn a_foreign_stream_is_not_a_tar_archive() {
        let dir = tempfile::tempdir().unwrap();
        let members = vec![("a".to_string(), Wanted::one("a", "0"))];
        let err = unpack(&[1u8; 1024][..], &members, dir.path(), "u", &AtomicBool::new(false)).unwrap_err();
        assert!(err.to_string().contains("not a tar archive"), "{err}");
    }

    #[test]
    fn the_public_plan_names_every_file_the_loaders_read() {
        let cifar = plan(Fetchable::Cifar10, None);
        let [Download::Archive { url, members }] = &cifar[..] else { panic!("{cifar:?}") };
        assert_eq!(url, CIFAR10_URL);
        assert_eq!(members.len(), 6);
        assert_eq!(members[5].0, "cifar-10-batches-bin/test_batch.bin");
        assert_eq!(members[5].1.forms[0], (cifar10::BATCHES[5].bin_path(), cifar10::BATCHES[5].bin_sha256));
        let mnist = plan(Fetchable::Mnist, Some("http://127.0.0.1:1/data/"));
        let Download::File { url, .. } = &mnist[0] else { panic!("{mnist:?}") };
        assert_eq!(url, "http://127.0.0.1:1/data/mnist/train-images-idx3-ubyte.gz");
    }
}
