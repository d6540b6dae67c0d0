//! A locally connected Forward-Forward layer (paper §3.2 and §4): the layer is a map of
//! positions, and each unit sees only a square field of the map below, with weights of its
//! own (no sharing across positions).
//!
//! ```text
//! x̂ = x / rms(x)                     the whole input row, as in ff_dense
//! y[p, c] = max(0, x̂[field p]·W[p][:, c] + b[p, c])
//! ```
//!
//! The goodness, objective, peer normalization and optimizers are those of every FF stage
//! ([`super::core`]): goodness over the whole layer, one Matlab direction per unit, and the
//! gradient of position `p`'s weights `x̂[field p]ᵀ·D[p]`. A unit's weights on the part of its
//! field off the map are zero and stay zero (no input ever reaches them), so the layer is
//! exactly a dense layer with its weights masked to the fields (tested).
//!
//! Each position is one small product of the gathered patch `(rows, K·K·C)` with its units'
//! weight rows `(channels, K·K·C)` ([`crate::dots`]: a gemm wastes most of the machine on so
//! few outputs); with `threads > 1` the positions are shared out among the stage's pool.

use ndarray::iter::AxisChunksIterMut;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis, Ix2};
use rayon::prelude::*;

use super::core::FfSettings;
use super::layer::{Connectivity, FfLayer};
use crate::dots::{field_backward, field_forward, tile_forward, Lanes, Tile, TILE_UNITS};
use crate::error::StageError;
use crate::ff::fields::{Fields, MapShape, Run};
use crate::matmul::{gemm, StagePool, Threads};
use crate::rng::Rng;

/// Everything that defines one locally connected FF layer.
#[derive(Clone, Debug)]
pub struct FfLocalConfig {
    /// The stage's name, e.g. `layer2`.
    pub name: String,
    /// 1-based layer index.
    pub layer: usize,
    /// The map below and how the fields cover it.
    pub fields: Fields,
    /// Units per position.
    pub channels: usize,
    /// One set of `channels` weight rows for every position (`ff_conv`: convolutional, not in
    /// the paper) instead of a set of its own at each (`ff_local`).
    pub shared: bool,
    /// The FF step's settings.
    pub ff: FfSettings,
}

/// Units on square fields of the map below, `channels` of them at each position, each with
/// weights of its own: `W (units, patch)`, unit `c` of position `p` in row `p·channels + c`, its
/// weights on its field in patch order (zero, and never moved, off the map).
#[derive(Clone, Debug, PartialEq)]
pub struct Local {
    fields: Fields,
    channels: usize,
    /// One set of weight rows for all positions (`W (channels, patch)`).
    shared: bool,
    output: MapShape,
    /// The on-map runs of each position's field.
    runs: Vec<Vec<Run>>,
    /// Each position's field as `(input, weight)` index pairs, in patch order.
    pairs: Vec<Vec<(u32, u32)>>,
    /// Runs of adjacent positions whose products are made together (few units a position, no
    /// sharing: E7), [`TILE_UNITS`] units a tile; empty where the positions go one by one.
    tiles: Vec<Tile>,
}

/// A locally connected FF layer.
pub type FfLocal = FfLayer<Local>;

impl FfLocalConfig {
    /// The map this layer makes, or `None` when its field does not fit the map below.
    pub fn output(&self) -> Option<MapShape> {
        let (height, width) = self.fields.grid()?;
        Some(MapShape::new(height, width, self.channels))
    }

    /// Builds the layer: on-map weights `N(0, 1)/√(the unit's fan-in)`, off-map weights 0, `b = 0`.
    pub fn build(self) -> Result<FfLocal, StageError> {
        let output = self.output().ok_or_else(|| StageError::Topology {
            stage: self.name.clone(),
            reason: format!(
                "its {size}x{size} fields (stride {stride}, padding {padding}) do not fit the {input} map below",
                size = self.fields.size,
                stride = self.fields.stride,
                padding = self.fields.padding,
                input = self.fields.input
            ),
        })?;
        let local = Local::new(self.fields, self.channels, self.shared, output);
        Ok(FfLayer::new(&self.name, self.layer, local, self.ff))
    }
}

impl Local {
    /// `channels` units at each position of the `output` grid of `fields` (which must be the
    /// fields' grid), with weights of their own or `shared` by all positions.
    pub fn new(fields: Fields, channels: usize, shared: bool, output: MapShape) -> Local {
        let runs: Vec<Vec<Run>> = (0..output.height)
            .flat_map(|fy| (0..output.width).map(move |fx| (fy, fx)))
            .map(|(fy, fx)| fields.runs(fy, fx))
            .collect();
        let pairs: Vec<Vec<(u32, u32)>> = runs
            .iter()
            .map(|field| {
                field.iter().flat_map(|r| (0..r.len).map(move |k| ((r.from + k) as u32, (r.to + k) as u32))).collect()
            })
            .collect();
        let tiles = if shared || channels >= WIDE {
            Vec::new()
        } else {
            let patch = fields.patch_len();
            let fields: Vec<&[(u32, u32)]> = pairs.iter().map(Vec::as_slice).collect();
            fields.chunks(tile_positions(channels)).map(|group| Tile::of(group, channels, patch)).collect()
        };
        Local { fields, channels, shared, output, runs, pairs, tiles }
    }
}

/// From this many units a position on, its products go through gemm on a gathered patch (E2's
/// 128 units a position: 18 ms a packet against 36 ms in the lanes kernel); below it, through
/// the lanes kernels (E7's 3 units: 65 ms against 205 ms in gemm), forward in tiles of
/// adjacent positions.
const WIDE: usize = 16;

/// Adjacent positions in a tile: as many as fill [`TILE_UNITS`] (4 of E7's 3-unit positions,
/// whose fields share all but 3 of their 11 columns).
fn tile_positions(channels: usize) -> usize {
    (TILE_UNITS / channels).max(1)
}

/// Runs `each(position, its block)` over `blocks` (one per position), on the stage's pool when
/// it has more than one thread.
fn by_position<'a, F>(pool: &StagePool, blocks: AxisChunksIterMut<'a, f32, Ix2>, each: F)
where
    F: Fn(usize, ArrayViewMut2<'a, f32>) + Sync + Send,
{
    match pool.threads() {
        1 => blocks.enumerate().for_each(|(p, b)| each(p, b)),
        _ => pool.install(|| blocks.into_par_iter().enumerate().for_each(|(p, b)| each(p, b))),
    }
}

impl Local {
    /// The map this layer makes.
    pub fn output(&self) -> MapShape {
        self.output
    }

    /// The weight rows of position `p`'s units.
    fn unit_rows<'w>(&self, weights: &'w Array2<f32>, p: usize) -> ndarray::ArrayView2<'w, f32> {
        let first = if self.shared { 0 } else { p * self.channels };
        weights.slice(s![first..first + self.channels, ..])
    }

    /// `dx += d·Wᵀ` through the fields: what every input of the rows `dx` `(rows, inputs)` gets
    /// back from the units' signals `d` `(rows, units)` (a backprop twin's backward pass).
    /// Rows are shared out among the pool's threads; units whose signal is zero (off ReLUs)
    /// are skipped.
    pub fn backward_input(&self, pool: &StagePool, weights: &Array2<f32>, d: &ArrayView2<f32>, dx: &mut Array2<f32>) {
        let channels = self.channels;
        let one_row = |d: ndarray::ArrayView1<f32>, mut dx: ndarray::ArrayViewMut1<f32>| {
            // Invariant: rows of standard-layout arrays are contiguous.
            let dx = dx.as_slice_mut().expect("contiguous rows");
            for (p, field) in self.runs.iter().enumerate() {
                let w = self.unit_rows(weights, p);
                for c in 0..channels {
                    let v = d[p * channels + c];
                    if v == 0.0 {
                        continue;
                    }
                    let unit = w.row(c);
                    let unit = unit.as_slice().expect("contiguous rows");
                    for r in field {
                        let (out, w) = (&mut dx[r.from..r.from + r.len], &unit[r.to..r.to + r.len]);
                        out.iter_mut().zip(w).for_each(|(o, &w)| *o += v * w);
                    }
                }
            }
        };
        match pool.threads() {
            1 => d.outer_iter().zip(dx.outer_iter_mut()).for_each(|(d, dx)| one_row(d, dx)),
            _ => pool.install(|| {
                d.outer_iter()
                    .into_par_iter()
                    .zip(dx.outer_iter_mut().into_par_iter())
                    .for_each(|(d, dx)| one_row(d, dx))
            }),
        }
    }

    /// Position `p`'s field of every row of `x`, gathered `(rows, patch)` (zero off the map).
    fn patch(&self, x: &ArrayView2<f32>, p: usize) -> Array2<f32> {
        let mut patch = Array2::zeros((x.nrows(), self.fields.patch_len()));
        for (row, mut out) in x.outer_iter().zip(patch.outer_iter_mut()) {
            for &(i, k) in &self.pairs[p] {
                out[k as usize] = row[i as usize];
            }
        }
        patch
    }
}

impl FfLocal {
    /// The map this layer makes.
    pub fn output(&self) -> MapShape {
        self.connectivity().output
    }

    /// The weights as a dense `(inputs, units)` matrix, zero off the fields.
    pub fn dense_weights(&self) -> Array2<f32> {
        let local = self.connectivity();
        let (channels, weights) = (local.channels, self.weights());
        let mut dense = Array2::zeros((local.fields.input.len(), local.output.len()));
        for (p, field) in local.runs.iter().enumerate() {
            for r in field {
                for k in 0..r.len {
                    let first = if local.shared { 0 } else { p * channels };
                    for c in 0..channels {
                        dense[[r.from + k, p * channels + c]] = weights[[first + c, r.to + k]];
                    }
                }
            }
        }
        dense
    }
}

impl Connectivity for Local {
    fn inputs(&self) -> usize {
        self.fields.input.len()
    }

    fn units(&self) -> usize {
        self.output.len()
    }

    fn init_purpose(&self) -> &'static str {
        if self.shared {
            "ff_conv.init"
        } else {
            "ff_local.init"
        }
    }

    fn fan_in(&self) -> usize {
        self.fields.patch_len()
    }

    fn draw_weights(&self, rng: &mut Rng, extra_fan_in: usize) -> Array2<f32> {
        if self.shared {
            // Every weight meets the map at some position: N(0, 1)/√(the whole field).
            let patch = self.fields.patch_len();
            let scale = 1.0 / ((patch + extra_fan_in) as f32).sqrt();
            return Array2::from_shape_simple_fn((self.channels, patch), || rng.normal() * scale);
        }
        let channels = self.channels;
        let mut weights = Array2::zeros((self.runs.len() * channels, self.fields.patch_len()));
        for (p, field) in self.runs.iter().enumerate() {
            let seen = field.iter().map(|r| r.len).sum::<usize>() + extra_fan_in;
            let scale = 1.0 / (seen.max(1) as f32).sqrt();
            for c in 0..channels {
                let mut unit = weights.row_mut(p * channels + c);
                for run in field {
                    unit.slice_mut(s![run.to..run.to + run.len]).iter_mut().for_each(|w| *w = rng.normal() * scale);
                }
            }
        }
        weights
    }

    fn forward(&self, pool: &StagePool, weights: &Array2<f32>, x: &Array2<f32>, y: &mut Array2<f32>) {
        let channels = self.channels;
        if channels >= WIDE {
            let x = x.view();
            by_position(pool, y.axis_chunks_iter_mut(Axis(1), channels), |p, mut out| {
                let w = self.unit_rows(weights, p);
                gemm(1.0, &self.patch(&x, p).view(), &w.t(), 1.0, &mut out, Threads::One);
            });
        } else if self.tiles.is_empty() {
            let x = Lanes::of(&x.view());
            by_position(pool, y.axis_chunks_iter_mut(Axis(1), channels), |p, mut out| {
                let w = self.unit_rows(weights, p);
                field_forward(&x, &self.pairs[p], &w, &mut out);
            });
        } else {
            let x = Lanes::of(&x.view());
            let units = tile_positions(channels) * channels;
            by_position(pool, y.axis_chunks_iter_mut(Axis(1), units), |t, mut out| {
                let w = weights.slice(s![t * units..t * units + self.tiles[t].units(), ..]);
                tile_forward(&x, &self.tiles[t], &w, &mut out);
            });
        }
    }

    fn gradient(
        &self,
        pool: &StagePool,
        x: &ArrayView2<f32>,
        d: &Array2<f32>,
        alpha: f32,
        beta: f32,
        buffer: &mut Array2<f32>,
    ) {
        let channels = self.channels;
        if self.shared {
            // The positions' gradients, averaged (not summed: the step of a shared weight
            // stays the size of an unshared one's), one position after the other.
            let alpha = alpha / self.runs.len() as f32;
            let lanes = (channels < WIDE).then(|| (Lanes::of(x), Lanes::of(&d.view())));
            for p in 0..self.runs.len() {
                let decay = if p == 0 { beta } else { 1.0 };
                match &lanes {
                    Some((xl, dl)) => {
                        field_backward(alpha, dl, p * channels, xl, &self.pairs[p], decay, &mut buffer.view_mut())
                    }
                    None => {
                        let dp = d.slice(s![.., p * channels..(p + 1) * channels]);
                        gemm(alpha, &dp.t(), &self.patch(x, p).view(), decay, &mut buffer.view_mut(), Threads::One);
                    }
                }
            }
            return;
        }
        let blocks = buffer.axis_chunks_iter_mut(Axis(0), channels);
        if channels >= WIDE {
            by_position(pool, blocks, |p, mut grad| {
                let dp = d.slice(s![.., p * channels..(p + 1) * channels]);
                gemm(alpha, &dp.t(), &self.patch(x, p).view(), beta, &mut grad, Threads::One);
            });
        } else {
            let (x, d) = (Lanes::of(x), Lanes::of(&d.view()));
            by_position(pool, blocks, |p, mut grad| {
                field_backward(alpha, &d, p * channels, &x, &self.pairs[p], beta, &mut grad);
            });
        }
    }
}
