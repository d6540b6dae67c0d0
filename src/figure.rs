//! The paper's image figures as grey PNGs, for the report: Figure 1 (a hybrid negative) and
//! Figure 2 (the receptive fields of a stage's first units).
//!
//! - [`hybrid_figure`]: a mask from [`MaskBank`], two MNIST training digits of different
//!   classes, and their hybrid made by [`make_negative`] — the very code that makes the
//!   pipelines' hybrid negatives, so the figure shows what the stages are trained on.
//! - [`fields_figure`]: the incoming weights of a trained run's stage, read from its run
//!   folder's checkpoint, one tile per unit on a diverging grey map.
//!
//! Both return a [`GreyImage`]; [`GreyImage::png`] encodes it with the `png` crate.

use std::path::{Path, PathBuf};

use ndarray::Array2;

use crate::checkpoint::{self, load_run};
use crate::config::{ConfigError, LocalRecurrentSpec, LocalSpec, PipelineConfig, StageSpec};
use crate::data::{DataError, Labelled};
use crate::error::CheckpointError;
use crate::rng::Rng;
use crate::video::negatives::{make_negative, MaskBank, NegativeKind};

/// MNIST's side, in pixels.
const SIDE: usize = 28;
/// The grey between Figure 1's panels: mid grey, apart from both the mask's and the digits'
/// black and white.
const PANEL_GAP_GREY: u8 = 128;
/// The grey between Figure 2's tiles: white, apart from the diverging map's zero (mid grey)
/// and from most weights, which sit near it.
const TILE_GAP_GREY: u8 = 255;

/// Why a figure could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FigureError {
    /// The folder has no resolved `pipeline.toml`.
    #[error("`{path}` is not a run folder: it has no pipeline.toml")]
    NotARun {
        /// The folder given.
        path: PathBuf,
    },
    /// The run's `pipeline.toml` does not load.
    #[error("the run's pipeline.toml: {0}")]
    Config(#[from] ConfigError),
    /// The run's checkpoint does not load.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The dataset does not load.
    #[error(transparent)]
    Data(#[from] DataError),
    /// No stage of that name.
    #[error("the run has no stage `{stage}` (its stages: {stages})")]
    NoStage {
        /// The stage asked for.
        stage: String,
        /// The run's stages, joined for the message.
        stages: String,
    },
    /// The stage's weights cannot be drawn as images of its input.
    #[error("stage `{stage}` cannot be drawn: {reason}")]
    NotImage {
        /// The stage asked for.
        stage: String,
        /// Why, in a clause.
        reason: String,
    },
    /// The checkpoint lacks the stage's weights or holds them in another shape.
    #[error("the run's checkpoint: {reason}")]
    Weights {
        /// What is missing or wrong.
        reason: String,
    },
    /// Too few images of the kind the figure needs.
    #[error("{0}")]
    Digits(String),
    /// PNG encoding failed.
    #[error("encoding the PNG: {0}")]
    Png(#[from] png::EncodingError),
}

/// An 8-bit grey image, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreyImage {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width × height` values, 0 black, 255 white.
    pub pixels: Vec<u8>,
}

impl GreyImage {
    /// A `width × height` image filled with `grey`.
    pub fn filled(width: usize, height: usize, grey: u8) -> GreyImage {
        GreyImage { width, height, pixels: vec![grey; width * height] }
    }

    /// Draws `values` (`h × w`, row-major) at `(top, left)`, each value as a `scale × scale`
    /// block (nearest neighbour, so pixels stay pixels).
    ///
    /// # Panics
    /// When `values` has not `h × w` values or the block does not fit the image (an invariant
    /// of the layouts in this module).
    fn blit(&mut self, values: &[u8], h: usize, w: usize, top: usize, left: usize, scale: usize) {
        assert_eq!(values.len(), h * w, "blit: {} values for {h}x{w}", values.len());
        assert!(top + h * scale <= self.height && left + w * scale <= self.width, "blit: outside the image");
        for y in 0..h * scale {
            let row = &values[(y / scale) * w..(y / scale + 1) * w];
            let out = &mut self.pixels[(top + y) * self.width + left..][..w * scale];
            for (x, o) in out.iter_mut().enumerate() {
                *o = row[x / scale];
            }
        }
    }

    /// The image as PNG bytes (8-bit greyscale).
    pub fn png(&self) -> Result<Vec<u8>, FigureError> {
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.pixels)?;
        writer.finish()?;
        Ok(bytes)
    }
}

/// Figure 1's layout: the blur count and panel scale.
#[derive(Clone, Copy, Debug)]
pub struct HybridFigure {
    /// Picks the mask and the two digits.
    pub seed: u64,
    /// Blur passes of the mask (the pipelines' default is 8: `head.mask_blurs`).
    pub blurs: usize,
    /// Screen pixels per image pixel.
    pub scale: usize,
    /// Screen pixels between panels.
    pub gap: usize,
}

impl Default for HybridFigure {
    fn default() -> HybridFigure {
        HybridFigure { seed: 0, blurs: 8, scale: 8, gap: 8 }
    }
}

/// Figure 1: four 28×28 panels side by side — the mask (white 1, black 0), digit A, digit B
/// (another class), and the hybrid `A·mask + B·(1 − mask)` — from MNIST's training split.
///
/// The hybrid is made by [`make_negative`] with a one-mask [`MaskBank`]; the mask panel is the
/// bank's draw under the same generator state, so it is the mask the hybrid used.
pub fn hybrid_figure(data: &Labelled, figure: HybridFigure) -> Result<GreyImage, FigureError> {
    let train = &data.train;
    if train.width() != SIDE * SIDE || train.len() < 2 {
        return Err(FigureError::Digits("the hybrid figure needs MNIST's 28x28 training digits".into()));
    }
    let mut rng = Rng::derive(figure.seed, "figure.hybrid", 0);
    let a = rng.below(train.len());
    let b = (0..train.len())
        .map(|_| rng.below(train.len()))
        .find(|&b| train.labels[b] != train.labels[a])
        .ok_or_else(|| FigureError::Digits("the training digits hold one class only".into()))?;
    let pixels = |i: usize| -> Vec<f32> { train.image(i).iter().map(|&p| p as f32 / 255.0).collect() };
    let (digit_a, digit_b) = (pixels(a), pixels(b));

    let bank = MaskBank::new(SIDE, SIDE, figure.blurs, 1, figure.seed);
    let mask = bank.draw(&mut rng.clone());
    let mut hybrid = vec![0.0; SIDE * SIDE];
    make_negative(NegativeKind::Hybrid, &digit_a, &digit_b, 1, SIDE * SIDE, &bank, 1, &mut rng, &mut hybrid);

    let to_grey = |v: &[f32]| -> Vec<u8> { v.iter().map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect() };
    let panels = [to_grey(&mask), to_grey(&digit_a), to_grey(&digit_b), to_grey(&hybrid)];
    let (scale, gap) = (figure.scale.max(1), figure.gap);
    let side = SIDE * scale;
    let mut image = GreyImage::filled(panels.len() * side + (panels.len() - 1) * gap, side, PANEL_GAP_GREY);
    for (i, panel) in panels.iter().enumerate() {
        image.blit(panel, SIDE, SIDE, 0, i * (side + gap), scale);
    }
    tracing::debug!(a, b, label_a = train.labels[a], label_b = train.labels[b], "Hybrid figure digits picked.");
    Ok(image)
}

/// Figure 2: the incoming weights of the first `units` units of `stage` in the run folder
/// `run_dir`, one tile each in a near-square grid (10×10 for 100), row by row.
///
/// Each tile is scaled to its own max |w| on a diverging grey map: −max black, 0 mid grey,
/// +max white ([`diverging`]). What a tile shows depends on the stage:
/// - `ff_dense`: the unit's column of `<stage>.weights` `(inputs, units)`, as an image of the
///   source (28×28 for MNIST, 64×64 for Moving MNIST frames; channels averaged for colour);
///   on a frame stream with windows of several frames, the window's frames left to right,
///   oldest first, one mid-grey column apart.
/// - `ff_local` / `ff_conv`: the unit's field patch itself (`field × field`, input channel 0),
///   not its place in the image: rows of `<stage>.weights` `(units or channels, patch)` in
///   order, so the first tiles of `ff_local` are position 0's units.
///
/// A dense stage above dense stages is drawn through the weights below it (`W1·…·Wk`, the
/// ReLUs between left out: a linear view of what drives each unit). A stage above any other
/// kind, an `ff_recurrent` stage (its weights mix bottom-up and top-down inputs) and a local
/// stage on windows of several frames are errors that say so.
pub fn fields_figure(run_dir: &Path, stage: &str, units: usize) -> Result<GreyImage, FigureError> {
    RunFields::open(run_dir)?.figure(stage, units)
}

/// A run folder read for [`fields_figure`]s of several of its stages: its pipeline read once,
/// its checkpoint loaded (and its shards' hashes checked) once, by the first figure that needs
/// it.
pub struct RunFields {
    dir: PathBuf,
    config: PipelineConfig,
    loaded: std::cell::OnceCell<checkpoint::Loaded>,
}

impl RunFields {
    /// The run in `run_dir`: an error when it is not a run folder or its pipeline is damaged.
    pub fn open(run_dir: &Path) -> Result<RunFields, FigureError> {
        let pipeline = run_dir.join("pipeline.toml");
        if !pipeline.is_file() {
            return Err(FigureError::NotARun { path: run_dir.to_path_buf() });
        }
        let config = PipelineConfig::load(&pipeline, &[])?;
        Ok(RunFields { dir: run_dir.to_path_buf(), config, loaded: std::cell::OnceCell::new() })
    }

    /// The run's stage names, bottom up.
    pub fn stages(&self) -> Vec<String> {
        self.config.stage_names()
    }

    fn loaded(&self) -> Result<&checkpoint::Loaded, FigureError> {
        if let Some(loaded) = self.loaded.get() {
            return Ok(loaded);
        }
        let loaded = load_run(&self.dir)?;
        Ok(self.loaded.get_or_init(|| loaded))
    }

    /// [`fields_figure`] of `stage`.
    pub fn figure(&self, stage: &str, units: usize) -> Result<GreyImage, FigureError> {
        let config = &self.config;
        let specs = config.stage_specs();
        let names: Vec<String> = (1..=specs.len()).map(|l| format!("layer{l}")).collect();
        let index = names
            .iter()
            .position(|n| n == stage)
            .ok_or_else(|| FigureError::NoStage { stage: stage.into(), stages: names.join(", ") })?;
        let not_image = |reason: String| FigureError::NotImage { stage: stage.into(), reason };
        // A dense stage above dense stages is drawn through the weights below it; any other
        // stage reads a map that is not the image.
        let all_dense = specs[..=index].iter().all(|s| matches!(s, StageSpec::FfDense(_)));
        if index > 0 && !all_dense {
            return Err(not_image(format!("it reads the output of `{}`, not an image", names[index - 1])));
        }
        // A frame stream's row is `window` consecutive frames, oldest first; a dense stage's tile
        // shows them left to right, a mid-grey (zero) column apart.
        let window = config.frame_head().map_or(1, |h| h.window.max(1));
        let dense = matches!(specs[index], StageSpec::FfDense(_));
        let map = match (config.input_map(), config.image_shape()) {
            (Some(map), _) => map,
            (None, Some((h, w, c))) if dense && window > 1 => crate::ff::fields::MapShape::new(h, w, c),
            _ => return Err(not_image("the run's source rows are not single images".into())),
        };

        let loaded = self.loaded()?;
        let name = format!("{stage}.weights");
        let (shape, values) = find_tensor(loaded, &name)?;
        // Through the stages below: `W1·W2·…·Wk` on the units drawn, `(inputs, units)`.
        let through = if index > 0 { Some(through_below(loaded, index, units)?) } else { None };
        let (shape, values) = match &through {
            // Invariant: `dot` makes standard-layout arrays.
            Some(m) => (m.shape(), m.as_slice().expect("a product is standard layout")),
            None => (shape, values),
        };
        let (rows, cols) = match shape[..] {
            [rows, cols] => (rows, cols),
            _ => {
                return Err(FigureError::Weights {
                    reason: format!("`{name}` has shape {shape:?}, expected 2 dimensions"),
                })
            }
        };
        let (tiles, tile_h, tile_w): (Vec<Vec<f32>>, usize, usize) = match &specs[index] {
            StageSpec::FfDense(_) => {
                if rows != window * map.len() {
                    let frames = if window > 1 { format!("{window} frames of ") } else { String::new() };
                    return Err(FigureError::Weights {
                        reason: format!(
                            "`{name}` has {rows} inputs, {frames}the {map} image has {}",
                            window * map.len()
                        ),
                    });
                }
                let (c, w) = (map.channels, map.width);
                let tile_w = window * w + window - 1;
                let tiles = (0..units.min(cols))
                    .map(|j| {
                        let mut tile = vec![0.0; map.height * tile_w];
                        for f in 0..window {
                            for p in 0..map.height * w {
                                let at = (f * map.len() + p * c) * cols + j;
                                let v = (0..c).map(|k| values[at + k * cols]).sum::<f32>() / c as f32;
                                tile[(p / w) * tile_w + f * (w + 1) + p % w] = v;
                            }
                        }
                        tile
                    })
                    .collect();
                (tiles, map.height, tile_w)
            }
            StageSpec::FfLocal(LocalSpec { field, .. })
            | StageSpec::FfConv(LocalSpec { field, .. })
            | StageSpec::FfLocalRecurrent(LocalRecurrentSpec { field, .. }) => {
                let (size, c) = (*field, map.channels);
                if cols != size * size * c {
                    return Err(FigureError::Weights {
                        reason: format!(
                            "`{name}` has patches of {cols}, a {size}x{size} field of the {map} image has {}",
                            size * size * c
                        ),
                    });
                }
                let tiles = (0..units.min(rows))
                    .map(|u| (0..size * size).map(|p| values[u * cols + p * c]).collect())
                    .collect();
                (tiles, size, size)
            }
            StageSpec::FfRecurrent(_) => {
                return Err(not_image("an ff_recurrent stage's weights mix its bottom-up and top-down inputs".into()))
            }
        };
        if tiles.is_empty() {
            return Err(not_image("it has no units to draw".into()));
        }
        Ok(grid(&tiles, tile_h, tile_w))
    }
}

/// What drives the first `units` units of dense stage `index` (0-based) in the image: the
/// product of the weights of every stage up to it, `W1·W2·…·W(index+1)`, `(inputs, units)`. The
/// ReLUs, biases and normalizations between the stages are left out: a linear view, as in
/// drawings of a deep net's higher units through the weights below.
fn through_below(loaded: &checkpoint::Loaded, index: usize, units: usize) -> Result<Array2<f32>, FigureError> {
    let weights = |k: usize| -> Result<Array2<f32>, FigureError> {
        let name = format!("layer{}.weights", k + 1);
        let (shape, values) = find_tensor(loaded, &name)?;
        match shape[..] {
            [rows, cols] => Array2::from_shape_vec((rows, cols), values.to_vec())
                .map_err(|e| FigureError::Weights { reason: format!("`{name}`: {e}") }),
            _ => Err(FigureError::Weights { reason: format!("`{name}` has shape {shape:?}, expected 2 dimensions") }),
        }
    };
    let top = weights(index)?;
    let mut product = top.slice(ndarray::s![.., ..units.min(top.ncols())]).to_owned();
    for k in (0..index).rev() {
        let below = weights(k)?;
        if below.ncols() != product.nrows() {
            return Err(FigureError::Weights {
                reason: format!(
                    "layer{} has {} units, layer{} {} inputs",
                    k + 1,
                    below.ncols(),
                    k + 2,
                    product.nrows()
                ),
            });
        }
        product = below.dot(&product);
    }
    Ok(product)
}

/// The tensor `name` of a loaded checkpoint, as `(shape, values)`.
fn find_tensor<'a>(loaded: &'a checkpoint::Loaded, name: &str) -> Result<(&'a [usize], &'a [f32]), FigureError> {
    loaded
        .state
        .tensors
        .iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, shape, values)| (shape.as_slice(), values.as_slice()))
        .ok_or_else(|| FigureError::Weights { reason: format!("it has no tensor `{name}`") })
}

/// Tiles of `h × w` weights in a near-square grid, each on its own diverging grey scale, scaled
/// up so a tile is about 56 pixels across (28×28 → ×2, 64×64 → ×1), 2 pixels apart.
fn grid(tiles: &[Vec<f32>], h: usize, w: usize) -> GreyImage {
    let cols = (1..).find(|c| c * c >= tiles.len()).unwrap_or(1);
    let rows = tiles.len().div_ceil(cols);
    let scale = (56 / h.max(w)).max(1);
    let gap = 2;
    let (th, tw) = (h * scale, w * scale);
    let mut image = GreyImage::filled(cols * tw + (cols - 1) * gap, rows * th + (rows - 1) * gap, TILE_GAP_GREY);
    for (i, tile) in tiles.iter().enumerate() {
        let (r, c) = (i / cols, i % cols);
        image.blit(&diverging(tile), h, w, r * (th + gap), c * (tw + gap), scale);
    }
    image
}

/// Weights on a diverging grey scale of their own max |w|, symmetric about zero: −max 1, 0 128,
/// +max 255 (all 128 when every weight is zero).
pub fn diverging(weights: &[f32]) -> Vec<u8> {
    let max = weights.iter().fold(0.0f32, |m, w| m.max(w.abs()));
    weights
        .iter()
        .map(|&w| if max > 0.0 { (128.0 + 127.0 * w / max).round().clamp(0.0, 255.0) as u8 } else { 128 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverging_puts_zero_at_mid_grey_and_the_extremes_at_the_ends() {
        assert_eq!(diverging(&[0.0, 2.0, -2.0, 1.0]), vec![128, 255, 1, 192]);
        assert_eq!(diverging(&[0.0; 3]), vec![128; 3]);
    }

    #[test]
    fn a_grid_of_100_tiles_is_10_by_10() {
        let tiles = vec![vec![0.5f32; 28 * 28]; 100];
        let image = grid(&tiles, 28, 28);
        assert_eq!((image.width, image.height), (10 * 56 + 9 * 2, 10 * 56 + 9 * 2));
    }
}
