//! Checkpoints: every stage's and the readout's tensors in one safetensors file, written
//! atomically (a temporary file in the same folder, fsync, rename), so a crash mid-write leaves
//! the previous checkpoint intact. Little-endian f32 with a format tag in the metadata; the
//! file opens in Python with `safetensors.numpy.load_file`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use crate::error::CheckpointError;
use crate::packet::StageState;

/// Bumped when the tensor names or their meaning change.
pub const FORMAT: &str = "ffstream-checkpoint-1";

/// Writes `content` to `path` atomically.
pub fn write_atomic(path: &Path, content: &[u8]) -> Result<(), std::io::Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Writes the states and `metadata` (strings) to `path`.
pub fn save(path: &Path, states: &[StageState], metadata: &[(&str, String)]) -> Result<(), CheckpointError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = states
        .iter()
        .flat_map(|s| s.tensors.iter())
        .map(|(name, shape, values)| {
            (name.clone(), shape.clone(), values.iter().flat_map(|v| v.to_le_bytes()).collect())
        })
        .collect();
    let invalid = |reason: String| CheckpointError::Invalid { path: path.to_path_buf(), reason };
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| invalid(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let mut info: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    info.insert("format".into(), FORMAT.into());
    let serialized = safetensors::serialize(views, &Some(info)).map_err(|e| invalid(e.to_string()))?;
    write_atomic(path, &serialized).map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })
}

/// A loaded checkpoint.
#[derive(Debug, Default)]
pub struct Loaded {
    /// All tensors, as one state (stages pick theirs by name prefix).
    pub state: StageState,
    /// The metadata strings.
    pub metadata: HashMap<String, String>,
}

/// Reads a checkpoint written by [`save`].
pub fn load(path: &Path) -> Result<Loaded, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })?;
    let invalid = |reason: String| CheckpointError::Invalid { path: PathBuf::from(path), reason };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| invalid(format!("not a safetensors file ({e})")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    if metadata.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(invalid(format!("format is {:?}, expected {FORMAT}", metadata.get("format"))));
    }
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| invalid(e.to_string()))?;
    let mut state = StageState { stage: "checkpoint".into(), tensors: Vec::new() };
    for (name, view) in tensors.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(invalid(format!("tensor `{name}` is {:?}, expected F32", view.dtype())));
        }
        let values = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        state.tensors.push((name, view.shape().to_vec(), values));
    }
    Ok(Loaded { state, metadata })
}

/// The metadata strings of a checkpoint, without reading its tensors (the safetensors header:
/// an 8-byte little-endian length, then that much JSON).
pub fn metadata(path: &Path) -> Result<HashMap<String, String>, CheckpointError> {
    use std::io::Read;
    let io = |source| CheckpointError::Io { path: path.to_path_buf(), source };
    let invalid = |reason: String| CheckpointError::Invalid { path: PathBuf::from(path), reason };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(io)?;
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        return Err(invalid(format!("a header of {len} bytes: not a safetensors file")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| invalid(format!("not a safetensors file ({e})")))?;
    let fields = json.get("__metadata__").and_then(|m| m.as_object()).cloned().unwrap_or_default();
    Ok(fields.into_iter().filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string()))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_value_and_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        let state = StageState {
            stage: "layer1".into(),
            tensors: vec![
                ("layer1.weights".into(), vec![2, 3], vec![1.0, -2.5, 3.25, f32::MIN_POSITIVE, 0.0, 7.0]),
                ("layer1.bias".into(), vec![3], vec![0.5, 0.25, -0.125]),
            ],
        };
        save(&path, std::slice::from_ref(&state), &[("epoch", "7".into())]).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.metadata["epoch"], "7");
        assert_eq!(metadata(&path).unwrap(), loaded.metadata);
        let mut got = loaded.state.tensors.clone();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want = state.tensors.clone();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want);
        std::fs::write(&path, b"garbage").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("not a safetensors file"), "{err}");
    }
}
