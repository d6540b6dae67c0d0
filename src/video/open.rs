//! Opening the frame feed a pipeline file describes: Moving MNIST, a video input, or a labelled
//! image dataset as still frames. The one place that knows every kind of feed.

use super::feed::{Feed, FrameShape};
use crate::config::{FrameOrder, ProbeSampling, ProbeSettings, Roles, SourceSpec};

/// Opens the feed a pipeline file describes (Moving MNIST or a video input).
pub fn open(
    config: &crate::config::PipelineConfig,
    data_dir: Option<&std::path::Path>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<Feed> {
    let frames_per_epoch = config.frames_per_epoch();
    match &config.source {
        SourceSpec::MovingMnist(m) => {
            let mnist = crate::data::Labelled::mnist(data_dir)?;
            // The backprop twin on its own plays single frames and holds out as the probes do.
            let (window, eval_windows, backprop_twin) = match Roles::of(config) {
                Roles::FramesFf { head, probes } => (head.window, probes.eval_windows, probes.backprop_twin),
                _ => (1, ProbeSettings::default().eval_windows, false),
            };
            let holdout = eval_windows + window;
            let mut feed = super::moving::MovingMnistFeed::side_by_side(
                &mnist,
                m.digits,
                m.streams,
                frames_per_epoch,
                holdout,
                config.eval.probe_split,
            )?;
            if m.order == FrameOrder::Shuffled {
                feed = feed.shuffled(config.seed);
            }
            let probe_frames = config.eval.probe_frames;
            let probe = (probe_frames > 0).then(|| match config.eval.probe_sampling {
                ProbeSampling::Stream => feed.probe_frames(probe_frames),
                ProbeSampling::OnePerSequence => feed.probe_windows(probe_frames, window),
            });
            let twin_frames = frames_per_epoch.min(20_000) as usize;
            let twin = backprop_twin.then(|| feed.train_frames(twin_frames));
            let side = super::moving::SIDE;
            let shape = FrameShape { width: side, height: side, channels: 1 };
            Ok(Feed { feed: Box::new(feed), shape, probe, twin, splits: None })
        }
        SourceSpec::Video(video) => open_video(video, frames_per_epoch, stop),
        SourceSpec::Mnist(_) | SourceSpec::Cifar10(_) | SourceSpec::Idx(_) => {
            let data = crate::config::build::load_data(config, data_dir)?;
            // Invariant: every image source has a shape once resolved (`PipelineConfig::resolved`).
            let (height, width, channels) = config.image_shape().expect("an image source has a shape");
            let shape = FrameShape { width, height, channels };
            let feed = super::still::StillFeed::new(std::sync::Arc::clone(&data), shape, config.seed)?;
            Ok(Feed { feed: Box::new(feed), shape, probe: None, twin: None, splits: Some(data) })
        }
        other => anyhow::bail!("`{}` is not a frame stream", other.dataset().name()),
    }
}

#[cfg(not(feature = "video"))]
fn open_video(
    _video: &crate::source::video::VideoConfig,
    _frames_per_epoch: u64,
    _stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<Feed> {
    anyhow::bail!("this ffstream was built without the `video` feature (FFmpeg); rebuild with default features")
}

#[cfg(feature = "video")]
fn open_video(
    video: &super::VideoConfig,
    frames_per_epoch: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<Feed> {
    let mut video = video.clone();
    video.input = resolve_input(&video);
    let feed = super::feed::VideoFeed::open(video.clone(), frames_per_epoch, stop)?;
    let shape = FrameShape { width: video.width, height: video.height, channels: video.color.channels() };
    Ok(Feed { feed: Box::new(feed), shape, probe: None, twin: None, splits: None })
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
