//! The pipeline files shipped inside the binary, and finding one by name or path.

use std::path::Path;

use super::ConfigError;

/// The pipeline files shipped with the binary, so `ffstream run mnist-supervised` works from
/// any folder. A path to a file works too.
pub const PIPELINES: [(&str, &str); 42] = [
    ("video-unsupervised", include_str!("../../pipeline/video-unsupervised.toml")),
    ("moving-mnist", include_str!("../../pipeline/moving-mnist.toml")),
    ("moving-mnist-backprop", include_str!("../../pipeline/moving-mnist-backprop.toml")),
    ("mnist-recurrent-short-3layer-d1", include_str!("../../pipeline/mnist-recurrent-short-3layer-d1.toml")),
    ("moving-mnist-recurrent", include_str!("../../pipeline/moving-mnist-recurrent.toml")),
    ("moving-mnist-recurrent-ff", include_str!("../../pipeline/moving-mnist-recurrent-ff.toml")),
    ("moving-mnist-local", include_str!("../../pipeline/moving-mnist-local.toml")),
    ("moving-mnist-conv", include_str!("../../pipeline/moving-mnist-conv.toml")),
    ("moving-mnist-conv-wide", include_str!("../../pipeline/moving-mnist-conv-wide.toml")),
    ("moving-mnist-conv-wide-2digits", include_str!("../../pipeline/moving-mnist-conv-wide-2digits.toml")),
    ("moving-mnist-conv-fine", include_str!("../../pipeline/moving-mnist-conv-fine.toml")),
    ("moving-mnist-conv-fine-2digits", include_str!("../../pipeline/moving-mnist-conv-fine-2digits.toml")),
    ("moving-mnist-local-2digits", include_str!("../../pipeline/moving-mnist-local-2digits.toml")),
    ("moving-mnist-local-shuffled", include_str!("../../pipeline/moving-mnist-local-shuffled.toml")),
    ("camera", include_str!("../../pipeline/camera.toml")),
    ("video-sleep", include_str!("../../pipeline/video-sleep.toml")),
    ("mnist-quick", include_str!("../../pipeline/mnist-quick.toml")),
    ("mnist-sleep", include_str!("../../pipeline/mnist-sleep.toml")),
    ("mnist-supervised", include_str!("../../pipeline/mnist-supervised.toml")),
    ("mnist-unsupervised", include_str!("../../pipeline/mnist-unsupervised.toml")),
    ("mnist-unsupervised-local", include_str!("../../pipeline/mnist-unsupervised-local.toml")),
    ("mnist-supervised-2xlr", include_str!("../../pipeline/mnist-supervised-2xlr.toml")),
    ("mnist-matlab", include_str!("../../pipeline/mnist-matlab.toml")),
    ("mnist-speedrun", include_str!("../../pipeline/mnist-speedrun.toml")),
    ("mnist-speedrun-30", include_str!("../../pipeline/mnist-speedrun-30.toml")),
    ("mnist-speedrun-jitter", include_str!("../../pipeline/mnist-speedrun-jitter.toml")),
    ("mnist-jitter", include_str!("../../pipeline/mnist-jitter.toml")),
    ("mnist-recurrent", include_str!("../../pipeline/mnist-recurrent.toml")),
    ("mnist-recurrent-short-d1", include_str!("../../pipeline/mnist-recurrent-short-d1.toml")),
    ("mnist-recurrent-short-d2", include_str!("../../pipeline/mnist-recurrent-short-d2.toml")),
    ("mnist-backprop", include_str!("../../pipeline/mnist-backprop.toml")),
    ("aesop-teacher-forcing", include_str!("../../pipeline/aesop-teacher-forcing.toml")),
    ("aesop-self-generated", include_str!("../../pipeline/aesop-self-generated.toml")),
    ("aesop-sleep", include_str!("../../pipeline/aesop-sleep.toml")),
    ("aesop-random-features", include_str!("../../pipeline/aesop-random-features.toml")),
    ("aesop-backprop", include_str!("../../pipeline/aesop-backprop.toml")),
    ("cifar10-ff-2layer-minssq", include_str!("../../pipeline/cifar10-ff-2layer-minssq.toml")),
    ("cifar10-ff-2layer-maxssq", include_str!("../../pipeline/cifar10-ff-2layer-maxssq.toml")),
    ("cifar10-ff-3layer-minssq", include_str!("../../pipeline/cifar10-ff-3layer-minssq.toml")),
    ("cifar10-ff-3layer-maxssq", include_str!("../../pipeline/cifar10-ff-3layer-maxssq.toml")),
    ("cifar10-backprop-2layer", include_str!("../../pipeline/cifar10-backprop-2layer.toml")),
    ("cifar10-backprop-3layer", include_str!("../../pipeline/cifar10-backprop-3layer.toml")),
];

/// What `ffstream run` runs without a name: unsupervised FF on the bundled clip.
pub const DEFAULT_PIPELINE: &str = "video-unsupervised";

/// Finds a pipeline by name or path; returns its text and where it came from.
pub fn pipeline_text(name: &str) -> Result<(String, String), ConfigError> {
    let path = Path::new(name);
    if path.is_dir() {
        return Err(ConfigError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(
                "it is a folder; give a pipeline file (.toml) or a name from `ffstream list`",
            ),
        });
    }
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { path: path.display().to_string(), source })?;
        return Ok((text, path.display().to_string()));
    }
    let bare = name.trim_end_matches(".toml").rsplit('/').next().unwrap_or(name);
    if let Some((n, text)) = PIPELINES.iter().find(|(n, _)| *n == bare) {
        // Prefer the file on disk when run from the repository (it may have been edited).
        let local = Path::new("pipeline").join(format!("{n}.toml"));
        if let Ok(t) = std::fs::read_to_string(&local) {
            return Ok((t, local.display().to_string()));
        }
        return Ok((text.to_string(), format!("pipeline/{n}.toml (built in)")));
    }
    let names: Vec<&str> = PIPELINES.iter().map(|(n, _)| *n).collect();
    Err(ConfigError::Unknown { name: name.to_string(), shipped: names.join(", ") })
}
