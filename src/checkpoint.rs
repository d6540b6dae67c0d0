//! Checkpoints: safetensors files of f32 tensors, written atomically (a temporary file in the
//! same folder, fsync, rename), so a crash mid-write leaves the previous checkpoint intact.
//! Little-endian f32 with a format tag in the metadata; a file opens in Python with
//! `safetensors.numpy.load_file`.
//!
//! A run folder holds one shard per stage (and one for the sink), each written by its stage
//! when the epoch's marker passes it ([`ShardStore::write`], called at the runtime's barrier
//! on the stage's own thread), as `checkpoint/<stage>.e<epoch>.safetensors`; then the manifest
//! `checkpoint.json` names the epoch's shards with their SHA-256 ([`ShardStore::commit`]). The
//! manifest is the commit point: a kill before it leaves the previous epoch's manifest and
//! shards in place, and a shard that does not match its hash is refused on resume.
//! [`load_run`] also reads the single-file `checkpoint.safetensors` of older run folders.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::data::sha256_of;
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
    let serialized = serialize(path, states, metadata)?;
    write_atomic(path, &serialized).map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })
}

/// The bytes of a safetensors file holding `states` (`path` names it in errors).
fn serialize(path: &Path, states: &[StageState], metadata: &[(&str, String)]) -> Result<Vec<u8>, CheckpointError> {
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
    safetensors::serialize(views, &Some(info)).map_err(|e| invalid(e.to_string()))
}

/// The folder of a run's shards, and the manifest naming the last finished epoch's.
pub const SHARDS: &str = "checkpoint";
/// See [`SHARDS`].
pub const MANIFEST: &str = "checkpoint.json";

/// One stage's shard of one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// The stage (or sink) it holds.
    pub stage: String,
    /// Its file, relative to the run folder.
    pub file: String,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: String,
    epoch: u32,
    shards: Vec<Shard>,
    metadata: HashMap<String, String>,
}

impl Manifest {
    /// Its metadata with `epoch`, as a single-file checkpoint kept it.
    fn metadata_with_epoch(self) -> HashMap<String, String> {
        let mut metadata = self.metadata;
        metadata.insert("epoch".into(), self.epoch.to_string());
        metadata
    }
}

/// Where a run's stages leave their shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardStore {
    run_dir: PathBuf,
}

impl ShardStore {
    /// The shards of the run folder `run_dir`.
    pub fn new(run_dir: &Path) -> ShardStore {
        ShardStore { run_dir: run_dir.to_path_buf() }
    }

    /// Writes `state` as its stage's shard of `epoch`.
    pub fn write(&self, epoch: u32, state: &StageState) -> Result<Shard, CheckpointError> {
        // A stage name is a file name here: `layer1`, `readout`; refuse anything that is not.
        let plain = !state.stage.is_empty() && state.stage.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let file = format!("{SHARDS}/{}.e{epoch}.safetensors", state.stage);
        let path = self.run_dir.join(&file);
        if !plain {
            return Err(CheckpointError::Invalid { path, reason: format!("`{}` is not a stage name", state.stage) });
        }
        // Only the format tag in the shard's own metadata: safetensors writes its metadata map in
        // hash order, so two keys could make equal shards differ by a byte order and so by hash.
        // The stage and the epoch are in the file name and the manifest.
        let bytes = serialize(&path, std::slice::from_ref(state), &[])?;
        write_atomic(&path, &bytes).map_err(|source| CheckpointError::Io { path: path.clone(), source })?;
        Ok(Shard { stage: state.stage.clone(), file, sha256: sha256_of(&bytes) })
    }

    /// Makes `epoch` the run's checkpoint: the manifest names `shards` (and holds `metadata`);
    /// then the shards of earlier epochs are removed. Later epochs' shards stay: a stage ahead
    /// of the sink may be writing its next epoch's shard while this one commits.
    pub fn commit(&self, epoch: u32, shards: &[Shard], metadata: &[(&str, String)]) -> Result<(), CheckpointError> {
        self.commit_keeping(epoch, shards, metadata, 1)
    }

    /// [`ShardStore::commit`] that keeps the last `epochs` epochs loadable: their shards, and a
    /// copy of each one's manifest (`checkpoint/manifest.e<epoch>.json`). A part of a pipeline
    /// spread over processes keeps 2: it may have committed one epoch more than the sink's part
    /// when a run stops, and a resume starts every part from the sink's epoch ([`load_run_at`]).
    pub fn commit_keeping(
        &self,
        epoch: u32,
        shards: &[Shard],
        metadata: &[(&str, String)],
        epochs: u32,
    ) -> Result<(), CheckpointError> {
        let path = self.run_dir.join(MANIFEST);
        let manifest = Manifest {
            format: FORMAT.into(),
            epoch,
            shards: shards.to_vec(),
            metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        };
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| CheckpointError::Invalid { path: path.clone(), reason: e.to_string() })?;
        if epochs > 1 {
            let copy = self.run_dir.join(history(epoch));
            write_atomic(&copy, text.as_bytes())
                .map_err(|source| CheckpointError::Io { path: copy.clone(), source })?;
        }
        write_atomic(&path, text.as_bytes()).map_err(|source| CheckpointError::Io { path: path.clone(), source })?;
        let oldest = epoch.saturating_sub(epochs.max(1) - 1);
        let keep: Vec<&str> = shards.iter().map(|s| s.file.as_str()).collect();
        let folder = self.run_dir.join(SHARDS);
        for entry in
            std::fs::read_dir(&folder).map_err(|source| CheckpointError::Io { path: folder.clone(), source })?
        {
            let Ok(entry) = entry else { continue };
            let file = entry.file_name().to_string_lossy().into_owned();
            let name = format!("{SHARDS}/{file}");
            let stale = shard_epoch(&file).or_else(|| history_epoch(&file)).is_some_and(|e| e < oldest);
            if !keep.contains(&name.as_str()) && stale {
                // A stale shard left behind costs disk only; the manifest never names it.
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

/// The copy of epoch `epoch`'s manifest that [`ShardStore::commit_keeping`] keeps.
fn history(epoch: u32) -> String {
    format!("{SHARDS}/manifest.e{epoch}.json")
}

/// The epoch of a manifest copy's file name (`manifest.e7.json`).
fn history_epoch(file: &str) -> Option<u32> {
    file.strip_prefix("manifest.e")?.strip_suffix(".json")?.parse().ok()
}

/// The manifest of epoch `epoch` of a run folder that keeps several (the latest's, or a kept
/// copy's).
fn manifest_at(run_dir: &Path, epoch: u32) -> Result<Manifest, CheckpointError> {
    if let Some(m) = read_manifest(run_dir)?.filter(|m| m.epoch == epoch) {
        return Ok(m);
    }
    let path = run_dir.join(history(epoch));
    let text = std::fs::read_to_string(&path).map_err(|source| CheckpointError::Io { path: path.clone(), source })?;
    serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid { path, reason: format!("not a manifest ({e})") })
}

/// The metadata of epoch `epoch`'s checkpoint of a run folder that keeps several.
pub fn run_metadata_at(run_dir: &Path, epoch: u32) -> Result<HashMap<String, String>, CheckpointError> {
    Ok(manifest_at(run_dir, epoch)?.metadata_with_epoch())
}

/// The checkpoint of epoch `epoch` of a run folder that keeps several
/// ([`ShardStore::commit_keeping`]); its latest epoch from the manifest itself.
pub fn load_run_at(run_dir: &Path, epoch: u32) -> Result<Loaded, CheckpointError> {
    load_shards(run_dir, manifest_at(run_dir, epoch)?)
}

/// The epoch in a shard's file name (`layer1.e7.safetensors`, or its `.layer1.e7.safetensors.tmp`
/// while written).
fn shard_epoch(file: &str) -> Option<u32> {
    let name = file.strip_prefix('.').and_then(|f| f.strip_suffix(".tmp")).unwrap_or(file);
    name.strip_suffix(".safetensors")?.rsplit_once(".e")?.1.parse().ok()
}

fn read_manifest(run_dir: &Path) -> Result<Option<Manifest>, CheckpointError> {
    let path = run_dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CheckpointError::Io { path, source }),
    };
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| CheckpointError::Invalid { path: path.clone(), reason: format!("not a manifest ({e})") })?;
    if manifest.format != FORMAT {
        return Err(CheckpointError::Invalid {
            path,
            reason: format!("format is {:?}, expected {FORMAT}", manifest.format),
        });
    }
    Ok(Some(manifest))
}

/// The checkpoint of a run folder: every shard the manifest names, each checked against its
/// SHA-256, as one state, with the manifest's metadata (and `epoch`); or, in an older run
/// folder, its `checkpoint.safetensors`.
pub fn load_run(run_dir: &Path) -> Result<Loaded, CheckpointError> {
    let Some(manifest) = read_manifest(run_dir)? else { return load(&run_dir.join("checkpoint.safetensors")) };
    load_shards(run_dir, manifest)
}

/// Every shard `manifest` names, each checked against its SHA-256, as one state.
fn load_shards(run_dir: &Path, manifest: Manifest) -> Result<Loaded, CheckpointError> {
    let mut state = StageState { stage: "checkpoint".into(), tensors: Vec::new() };
    for shard in &manifest.shards {
        let path = run_dir.join(&shard.file);
        let bytes = std::fs::read(&path).map_err(|source| CheckpointError::Io { path: path.clone(), source })?;
        if sha256_of(&bytes) != shard.sha256 {
            return Err(CheckpointError::Invalid {
                path,
                reason: format!("the {} shard does not match its SHA-256 in {MANIFEST}: damaged", shard.stage),
            });
        }
        state.tensors.extend(parse(&path, &bytes)?.state.tensors);
    }
    Ok(Loaded { state, metadata: manifest.metadata_with_epoch() })
}

/// The metadata of a run folder's checkpoint (the manifest's, or an older single file's).
pub fn run_metadata(run_dir: &Path) -> Result<HashMap<String, String>, CheckpointError> {
    match read_manifest(run_dir)? {
        Some(manifest) => Ok(manifest.metadata_with_epoch()),
        None => metadata(&run_dir.join("checkpoint.safetensors")),
    }
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
    parse(path, &bytes)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Loaded, CheckpointError> {
    let invalid = |reason: String| CheckpointError::Invalid { path: PathBuf::from(path), reason };
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| invalid(format!("not a safetensors file ({e})")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    if metadata.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(invalid(format!("format is {:?}, expected {FORMAT}", metadata.get("format"))));
    }
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| invalid(e.to_string()))?;
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

    fn layer(name: &str, v: f32) -> StageState {
        StageState { stage: name.into(), tensors: vec![(format!("{name}.bias"), vec![2], vec![v, -v])] }
    }

    /// A part of a spread pipeline keeps its last two epochs: the one before the last loads
    /// as it was committed (a resume at the sink's epoch), the ones before that are gone.
    #[test]
    fn keeping_two_epochs_loads_the_one_before_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::new(dir.path());
        for epoch in 1..=3 {
            let shard = store.write(epoch, &layer("layer1", epoch as f32)).unwrap();
            store.commit_keeping(epoch, &[shard], &[("run_state", format!("{epoch}"))], 2).unwrap();
        }
        let values = |l: &Loaded| l.state.tensors[0].2.clone();
        assert_eq!(values(&load_run_at(dir.path(), 3).unwrap()), [3.0, -3.0]);
        assert_eq!(values(&load_run_at(dir.path(), 2).unwrap()), [2.0, -2.0]);
        assert_eq!(run_metadata_at(dir.path(), 2).unwrap()["run_state"], "2");
        assert!(load_run_at(dir.path(), 1).is_err(), "epoch 1 is no longer kept");
        assert!(!dir.path().join("checkpoint/layer1.e1.safetensors").exists());
        assert!(!dir.path().join("checkpoint/manifest.e1.json").exists());
        // A damaged shard of the kept epoch is refused, not loaded as other weights.
        std::fs::write(dir.path().join("checkpoint/layer1.e2.safetensors"), b"x").unwrap();
        assert!(load_run_at(dir.path(), 2).is_err());
    }

    #[test]
    fn equal_states_make_byte_equal_shards() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let state = layer("layer1", 0.25);
        let (x, y) =
            (ShardStore::new(a.path()).write(4, &state).unwrap(), ShardStore::new(b.path()).write(4, &state).unwrap());
        assert_eq!(x, y, "the same state, the same bytes and hash");
    }

    #[test]
    fn the_manifest_is_the_commit_point_and_a_damaged_shard_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::new(dir.path());
        let epoch1: Vec<Shard> =
            ["layer1", "readout"].iter().map(|n| store.write(1, &layer(n, 1.0)).unwrap()).collect();
        store.commit(1, &epoch1, &[("seed", "3".into())]).unwrap();
        // Epoch 2's shards written, the manifest not yet (a kill here): epoch 1 stands.
        let epoch2: Vec<Shard> =
            ["layer1", "readout"].iter().map(|n| store.write(2, &layer(n, 2.0)).unwrap()).collect();
        let loaded = load_run(dir.path()).unwrap();
        assert_eq!((loaded.metadata["epoch"].as_str(), loaded.metadata["seed"].as_str()), ("1", "3"));
        assert!(loaded.state.tensors.iter().all(|(_, _, v)| v[0] == 1.0));
        // Committed: epoch 2 stands and epoch 1's shards are gone.
        store.commit(2, &epoch2, &[]).unwrap();
        assert!(load_run(dir.path()).unwrap().state.tensors.iter().all(|(_, _, v)| v[0] == 2.0));
        assert!(!dir.path().join(&epoch1[0].file).exists());
        // One flipped byte in a shard: refused, by stage.
        let path = dir.path().join(&epoch2[0].file);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let err = load_run(dir.path()).unwrap_err().to_string();
        assert!(err.contains("layer1 shard does not match its SHA-256"), "{err}");
        // A stage name that is not a file name is refused before anything is written.
        assert!(store.write(3, &layer("../x", 1.0)).is_err());
    }

    #[test]
    fn a_commit_keeps_the_shards_of_later_epochs_being_written() {
        // Issue 12 (found with a 1-frame clip, whose epochs take no time): the commit of epoch 1
        // removed every other shard, including epoch 2's that layer1, ahead of the sink, had
        // just written or was writing; its rename then failed and the run stopped.
        let dir = tempfile::tempdir().unwrap();
        let store = ShardStore::new(dir.path());
        let epoch1: Vec<Shard> =
            ["layer1", "readout"].iter().map(|n| store.write(1, &layer(n, 1.0)).unwrap()).collect();
        let ahead = store.write(2, &layer("layer1", 2.0)).unwrap();
        let writing = dir.path().join(SHARDS).join(".layer1.e3.safetensors.tmp");
        std::fs::write(&writing, b"half").unwrap();
        store.commit(1, &epoch1, &[]).unwrap();
        assert!(dir.path().join(&ahead.file).exists() && writing.exists());
        let epoch2 = vec![ahead, store.write(2, &layer("readout", 2.0)).unwrap()];
        store.commit(2, &epoch2, &[]).unwrap();
        assert!(load_run(dir.path()).unwrap().state.tensors.iter().all(|(_, _, v)| v[0] == 2.0));
        assert!(epoch1.iter().all(|s| !dir.path().join(&s.file).exists()), "earlier shards are removed");
        assert_eq!(shard_epoch("layer1.e12.safetensors"), Some(12));
        assert_eq!(shard_epoch(".layer1.e3.safetensors.tmp"), Some(3));
        assert_eq!(shard_epoch("notes.txt"), None);
    }
}
