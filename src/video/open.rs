//! Opening the frame feed a pipeline file describes: Moving MNIST or a video input. The one
//! place that knows every kind of feed.

use super::feed::{Feed, FrameShape};
use crate::config::Dataset;

/// Opens the feed a pipeline file describes (Moving MNIST or a video input).
pub fn open(
    config: &crate::config::PipelineConfig,
    data_dir: Option<&std::path::Path>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<Feed> {
    let stream = config.stream.clone().unwrap_or_default();
    match config.data.dataset {
        Dataset::MovingMnist => {
            let mnist = crate::data::Labelled::mnist(data_dir)?;
            let (digits, streams) = config.moving_mnist.as_ref().map_or((1, 1), |m| (m.digits, m.streams));
            let holdout = stream.eval_windows + stream.window;
            let feed = super::moving::MovingMnistFeed::side_by_side(
                &mnist,
                digits,
                streams,
                stream.frames_per_epoch,
                holdout,
            )?;
            let probe = (stream.probe_frames > 0).then(|| feed.probe_frames(stream.probe_frames));
            let twin_frames = stream.frames_per_epoch.min(20_000) as usize;
            let twin = stream.backprop_twin.then(|| feed.train_frames(twin_frames));
            let side = super::moving::SIDE;
            let shape = FrameShape { width: side, height: side, channels: 1 };
            Ok(Feed { feed: Box::new(feed), shape, probe, twin })
        }
        Dataset::Video => open_video(config, stop),
        other => anyhow::bail!("`{}` is not a frame stream", other.name()),
    }
}

#[cfg(not(feature = "video"))]
fn open_video(
    _config: &crate::config::PipelineConfig,
    _stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<Feed> {
    anyhow::bail!("this ffstream was built without the `video` feature (FFmpeg); rebuild with default features")
}

#[cfg(feature = "video")]
fn open_video(
    config: &crate::config::PipelineConfig,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<Feed> {
    // Invariant: `PipelineConfig::parse` rejects the video dataset without [video].
    let mut video = config.video.clone().expect("validated: the video dataset has [video]");
    video.input = resolve_input(&video);
    let stream = config.stream.clone().unwrap_or_default();
    let feed = super::feed::VideoFeed::open(video.clone(), stream.frames_per_epoch, stop)?;
    let shape = FrameShape { width: video.width, height: video.height, channels: video.color.channels() };
    Ok(Feed { feed: Box::new(feed), shape, probe: None, twin: None })
}

/// A relative file path that does not exist from here is looked up in the crate's own folder,
/// so `ffstream run` finds the bundled clip from any working directory.
#[cfg(feature = "video")]
fn resolve_input(video: &super::VideoConfig) -> String {
    let path = std::path::Path::new(&video.input);
    if video.format.is_some() || video.input.contains("://") || path.is_absolute() || path.exists() {
        return video.input.clone();
    }
    let bundled = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if bundled.exists() {
        bundled.display().to_string()
    } else {
        video.input.clone()
    }
}
