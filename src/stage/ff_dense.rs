//! A fully connected Forward-Forward layer as a pipeline stage: every unit sees every input,
//! `y = max(0, x̂·W + b)` with `W (inputs, units)`. The FF step is [`FfLayer`]'s.

use ndarray::{Array2, ArrayView2};

use super::core::FfSettings;
use super::layer::{Connectivity, FfLayer};
use crate::matmul::StagePool;
use crate::rng::Rng;

/// Everything that defines one FF layer.
#[derive(Clone, Debug)]
pub struct FfDenseConfig {
    /// The stage's name, e.g. `layer2`.
    pub name: String,
    /// 1-based layer index (the first hidden layer is 1).
    pub layer: usize,
    /// Input width.
    pub inputs: usize,
    /// Number of ReLUs.
    pub units: usize,
    /// The FF step's settings.
    pub ff: FfSettings,
}

/// Every unit on every input: `W (inputs, units)`.
#[derive(Clone, Copy, Debug)]
pub struct Dense {
    inputs: usize,
    units: usize,
}

/// A fully connected FF layer.
pub type FfDense = FfLayer<Dense>;

impl Dense {
    /// `units` units on `inputs` inputs.
    pub fn new(inputs: usize, units: usize) -> Dense {
        Dense { inputs, units }
    }
}

impl FfDenseConfig {
    /// Builds the layer with Matlab's initialization: `W ~ N(0, 1)/√fan-in`, `b = 0`.
    pub fn build(self) -> FfDense {
        FfLayer::new(&self.name, self.layer, Dense { inputs: self.inputs, units: self.units }, self.ff)
    }
}

impl Connectivity for Dense {
    fn inputs(&self) -> usize {
        self.inputs
    }

    fn units(&self) -> usize {
        self.units
    }

    fn init_purpose(&self) -> &'static str {
        "ff_dense.init"
    }

    fn draw_weights(&self, rng: &mut Rng, extra_fan_in: usize) -> Array2<f32> {
        let scale = 1.0 / ((self.inputs + extra_fan_in) as f32).sqrt();
        Array2::from_shape_simple_fn((self.inputs, self.units), || rng.normal() * scale)
    }

    fn fan_in(&self) -> usize {
        self.inputs
    }

    fn shares_rows(&self) -> bool {
        true
    }

    fn forward(&self, pool: &StagePool, weights: &Array2<f32>, x: &Array2<f32>, y: &mut Array2<f32>) {
        pool.gemm(1.0, &x.view(), &weights.view(), 1.0, &mut y.view_mut());
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
        pool.gemm(alpha, &x.t(), &d.view(), beta, &mut buffer.view_mut());
    }
}
