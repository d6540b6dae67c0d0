//! IDX files, LeCun's format for MNIST, and any folder of them as a labelled dataset
//! (`[source] kind = "idx"`, `path = "folder"`).
//!
//! An IDX file of bytes is the magic `0x0000_08NN` (`NN` dimensions), each dimension as a
//! big-endian u32, then the bytes. A folder holds the four files MNIST ships ([`FILES`]), each
//! plain or gzip-compressed (`.gz`). The image size is the header's (rows x cols, one channel);
//! the classes are the pipeline file's `classes`, else the largest label + 1; the last
//! `validation` training images validate and the `t10k` files test.
//!
//! A folder of a known dataset ([`KNOWN`]: MNIST, Fashion-MNIST) is checked against its hashes.
//! They are the hashes of the decompressed contents, so a `.gz` folder and a plain one are both
//! recognized (Debian recompresses Fashion-MNIST, whose `.gz` hashes differ from upstream's). As
//! soon as one file is a known dataset's, all four must be: a swapped or corrupt file among them
//! is an error naming it and the hash it should have. Any other folder can only be checked for
//! shape: the magic, the file's length against its header (a truncated file), image and label
//! counts that agree, one image size for both splits, and every label below the classes.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{gunzip, search_dirs, sha256_of, DataError, Labelled, Split};

/// The four files of a folder and the dimensions of each, in the order of [`KNOWN`]'s hashes.
pub const FILES: [(&str, usize); 4] = [
    ("train-images-idx3-ubyte", 3),
    ("train-labels-idx1-ubyte", 1),
    ("t10k-images-idx3-ubyte", 3),
    ("t10k-labels-idx1-ubyte", 1),
];

/// Datasets recognized by the SHA-256 of their four files' decompressed contents, in the order
/// of [`FILES`] (`../shared/data/README.md`).
pub const KNOWN: [(&str, [&str; 4]); 2] = [
    (
        "MNIST",
        [
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ],
    ),
    (
        "Fashion-MNIST",
        [
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ],
    ),
];

/// What an IDX folder holds, as far as the stages and the readout care: the image size (one
/// channel) and the classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdxShape {
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// Classes (labels are `0..classes`).
    pub classes: usize,
}

impl IdxShape {
    /// Values per image.
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }
}

/// The dimensions an IDX header of `dims` dimensions gives (`raw` may hold only the header).
fn header(path: &Path, raw: &[u8], dims: usize) -> Result<Vec<usize>, DataError> {
    let magic = 0x0800 + dims as u32;
    let word = |i: usize| u32::from_be_bytes([raw[4 * i], raw[4 * i + 1], raw[4 * i + 2], raw[4 * i + 3]]);
    if raw.len() < 4 * (1 + dims) || word(0) != magic {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            reason: format!("not an IDX file of bytes with {dims} dimension(s) (magic {magic:#010x})"),
        });
    }
    Ok((1..=dims).map(|i| word(i) as usize).collect())
}

/// Parses a whole IDX file of bytes with `dims` dimensions: its dimensions and its payload (the
/// header cut off in place). A file shorter or longer than its header says is an error.
pub fn parse(path: &Path, mut raw: Vec<u8>, dims: usize) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let shape = header(path, &raw, dims)?;
    let head = 4 * (1 + dims);
    let expected = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).and_then(|n| n.checked_add(head));
    if expected != Some(raw.len()) {
        let expected = expected.map_or("more than fits in memory".to_string(), |n| n.to_string());
        return Err(DataError::Format {
            path: path.to_path_buf(),
            reason: format!("{} bytes, expected {expected} for dimensions {shape:?} (truncated?)", raw.len()),
        });
    }
    raw.drain(..head);
    Ok((shape, raw))
}

/// [`parse`] with the dimensions known in advance (a known dataset's files).
pub fn parse_exact(path: &Path, raw: Vec<u8>, dims: &[usize]) -> Result<Vec<u8>, DataError> {
    let (got, payload) = parse(path, raw, dims.len())?;
    if got != dims {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            reason: format!("dimensions {got:?}, expected {dims:?}"),
        });
    }
    Ok(payload)
}

/// The folder `path` names: an absolute path as it is; a relative one in the working directory,
/// else in each data folder (`--data-dir`, `$FFSTREAM_DATA`, the user cache), so a pipeline file
/// can say `path = "mnist"` and find `../shared/data/mnist` through `$FFSTREAM_DATA`.
pub fn locate(path: &str, data_dir: Option<&Path>) -> Result<PathBuf, DataError> {
    let relative = Path::new(path);
    let mut tried = vec![relative.to_path_buf()];
    if relative.is_relative() {
        tried.extend(search_dirs(data_dir).into_iter().map(|d| d.join(relative)));
    }
    tried.iter().find(|p| p.is_dir()).cloned().ok_or_else(|| DataError::MissingFolder {
        path: path.to_string(),
        searched: tried.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

/// The file of `stem` in `folder`: the plain one if there is one (no decompression), else `.gz`.
fn find(folder: &Path, stem: &str) -> Result<PathBuf, DataError> {
    let plain = folder.join(stem);
    let gz = folder.join(format!("{stem}.gz"));
    [plain, gz].into_iter().find(|p| p.is_file()).ok_or_else(|| DataError::Format {
        path: folder.to_path_buf(),
        reason: format!("has no `{stem}` or `{stem}.gz` (an IDX folder holds the four files of MNIST's layout)"),
    })
}

fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// The decompressed contents of `stem`'s file.
fn read(folder: &Path, stem: &str) -> Result<(PathBuf, Vec<u8>), DataError> {
    let path = find(folder, stem)?;
    let bytes = std::fs::read(&path).map_err(|source| DataError::Io { path: path.clone(), source })?;
    let raw = if is_gz(&path) { gunzip(&path, &bytes)? } else { bytes };
    Ok((path, raw))
}

/// The first `n` decompressed bytes of `stem`'s file (fewer if it is shorter): its header,
/// without reading the images.
fn read_head(folder: &Path, stem: &str, n: usize) -> Result<(PathBuf, Vec<u8>), DataError> {
    let path = find(folder, stem)?;
    let file = std::fs::File::open(&path).map_err(|source| DataError::Io { path: path.clone(), source })?;
    let mut head = Vec::with_capacity(n);
    let read = if is_gz(&path) {
        flate2::read::GzDecoder::new(file).take(n as u64).read_to_end(&mut head)
    } else {
        file.take(n as u64).read_to_end(&mut head)
    };
    read.map_err(|e| DataError::Format { path: path.clone(), reason: format!("cannot read its header: {e}") })?;
    Ok((path, head))
}

/// Image and label files of both splits, as far as they have been read: `(path, dimensions)` of
/// the two image files and `(path, labels)` of the two label files.
struct Contents<'a> {
    images: [(&'a Path, &'a [usize]); 2],
    labels: [(&'a Path, &'a [u8]); 2],
}

/// The shape the contents agree on, or the first thing that is wrong with them.
fn shape_of(folder: &Path, contents: Contents<'_>, classes: Option<usize>) -> Result<IdxShape, DataError> {
    let bad = |path: &Path, reason: String| Err(DataError::Format { path: path.to_path_buf(), reason });
    let [(train_path, train), (test_path, test)] = contents.images;
    for ((images_path, dims), (labels_path, labels)) in contents.images.into_iter().zip(contents.labels) {
        if dims[0] != labels.len() {
            let images = images_path.display();
            return bad(labels_path, format!("{} labels but `{images}` has {} images", labels.len(), dims[0]));
        }
    }
    if test[1..] != train[1..] {
        let size = |d: &[usize]| format!("{}x{}", d[1], d[2]);
        let (test_size, train_size) = (size(test), size(train));
        return bad(test_path, format!("images are {test_size} but `{}` has {train_size}", train_path.display()));
    }
    let largest = contents.labels.iter().flat_map(|(_, l)| l.iter()).max().map_or(0, |&m| m as usize);
    let classes = classes.unwrap_or(largest + 1);
    for (path, labels) in contents.labels {
        if let Some((i, &label)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
            return bad(path, format!("label {label} of image {i} is not below classes = {classes}"));
        }
    }
    let shape = IdxShape { rows: train[1], cols: train[2], classes };
    // The labelled head writes a row's label into its first `classes` values.
    if shape.pixels() < classes {
        let (rows, cols, pixels) = (shape.rows, shape.cols, shape.pixels());
        return bad(folder, format!("images of {rows}x{cols} = {pixels} values cannot hold {classes} label values"));
    }
    Ok(shape)
}

/// The shape of a folder from its headers and labels alone (the images are not read): what a
/// pipeline's stages and readout are built for before the data loads ([`load`] checks the rest).
pub fn probe(folder: &Path, classes: Option<usize>) -> Result<IdxShape, DataError> {
    let dims = |index: usize| -> Result<(PathBuf, Vec<usize>), DataError> {
        let (stem, dims) = FILES[index];
        let (path, head) = read_head(folder, stem, 4 * (1 + dims))?;
        let shape = header(&path, &head, dims)?;
        Ok((path, shape))
    };
    let (train, test) = (dims(0)?, dims(2)?);
    let (train_labels, test_labels) = (labels(folder, 1)?, labels(folder, 3)?);
    let contents = Contents {
        images: [(&train.0, &train.1), (&test.0, &test.1)],
        labels: [(&train_labels.0, &train_labels.1), (&test_labels.0, &test_labels.1)],
    };
    shape_of(folder, contents, classes)
}

/// The labels of label file `index` of [`FILES`].
fn labels(folder: &Path, index: usize) -> Result<(PathBuf, Vec<u8>), DataError> {
    let (path, raw) = read(folder, FILES[index].0)?;
    let (_, labels) = parse(&path, raw, 1)?;
    Ok((path, labels))
}

/// The known dataset a folder's files are, if any ([`KNOWN`]); an error when some of them are
/// and another is not.
fn known(files: &[(PathBuf, Vec<u8>)]) -> Result<Option<&'static str>, DataError> {
    let hashes: Vec<String> = files.iter().map(|(_, raw)| sha256_of(raw)).collect();
    for (dataset, expected) in KNOWN {
        if !hashes.iter().zip(expected).any(|(got, want)| got == want) {
            continue;
        }
        for ((path, _), (got, want)) in files.iter().zip(hashes.iter().zip(expected)) {
            if got != want {
                return Err(DataError::Mismatch {
                    path: path.clone(),
                    dataset: dataset.to_string(),
                    got: got.clone(),
                    expected: want.to_string(),
                });
            }
        }
        return Ok(Some(dataset));
    }
    Ok(None)
}

/// Loads and checks a folder: the training images less the last `validation` train, those
/// validate, the `t10k` images test; with the shape found (see the module doc for the checks).
pub fn load(folder: &Path, classes: Option<usize>, validation: usize) -> Result<(Labelled, IdxShape), DataError> {
    let read = |index: usize| read(folder, FILES[index].0);
    let files = [read(0)?, read(1)?, read(2)?, read(3)?];
    match known(&files)? {
        Some(dataset) => tracing::debug!("{} holds {dataset} (all four files hash right).", folder.display()),
        None => tracing::debug!("{} is no known dataset; its files are checked for shape only.", folder.display()),
    }
    let [(train_images, a), (train_labels, b), (test_images, c), (test_labels, d)] = files;
    let (train_dims, train_pixels) = parse(&train_images, a, 3)?;
    let (_, train_classes) = parse(&train_labels, b, 1)?;
    let (test_dims, test_pixels) = parse(&test_images, c, 3)?;
    let (_, test_classes) = parse(&test_labels, d, 1)?;
    let contents = Contents {
        images: [(&train_images, &train_dims), (&test_images, &test_dims)],
        labels: [(&train_labels, &train_classes), (&test_labels, &test_classes)],
    };
    let shape = shape_of(folder, contents, classes)?;
    let n = train_classes.len();
    if validation >= n {
        return Err(DataError::Format {
            path: train_images,
            reason: format!("validation = {validation} leaves no training image: the file has {n}"),
        });
    }
    let (train, validation) = Split { images: train_pixels, labels: train_classes }.hold_out_last(validation);
    let test = Split { images: test_pixels, labels: test_classes };
    Ok((Labelled { train, validation, test, classes: shape.classes, sequences: Vec::new() }, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_idx_is_a_format_error() {
        let mut raw = vec![0, 0, 8, 1, 0, 0, 0, 3];
        raw.extend([1, 2]);
        let err = parse(Path::new("x"), raw, 1).unwrap_err();
        assert!(err.to_string().contains("expected 11"), "{err}");
    }

    #[test]
    fn wrong_magic_and_short_header_are_format_errors() {
        for raw in [vec![0, 0, 8, 3, 0, 0, 0, 0], vec![0, 0, 8]] {
            let err = parse(Path::new("x"), raw, 1).unwrap_err();
            assert!(err.to_string().contains("magic 0x00000801"), "{err}");
        }
    }

    #[test]
    fn parse_cuts_the_header_off() {
        let raw = vec![0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 9, 8, 7, 6];
        assert_eq!(parse(Path::new("x"), raw, 3).unwrap(), (vec![1, 2, 2], vec![9, 8, 7, 6]));
    }
}
