//! The products of a locally connected layer: at every position, a few units' weights on the
//! values of one field, for every row of a packet. A general gemm wastes most of the machine on
//! so few outputs (measured: 2.8% of the FMA peak on the paper's CIFAR layer, 3 units a
//! position), and gathering each field into a patch first costs more than the products.
//!
//! So the packet is turned on its side once ([`Lanes`]: one input value of 16 consecutive rows
//! is one vector), and a position's output is `Σ over its field of w[u, k] · x[., i(k)]`:
//! every term a scalar weight times a vector of rows, kept in registers for a block of rows
//! and units. Nothing is gathered: a field is a list of `(input, weight)` index pairs. The
//! kernels are written once over a 16-lane vector type ([`Simd`]) and compiled for AVX-512
//! (one register), AVX2 + FMA (two) and portably; the widest the CPU has is picked at run time.

use ndarray::{ArrayView2, ArrayViewMut2};

/// Rows in one vector.
pub const LANES: usize = 16;

/// A packet's rows on their side: value `i` of rows `16·v..16·v+16` is one vector.
pub struct Lanes {
    data: Vec<f32>,
    /// Rows, padded with zero rows to a multiple of [`LANES`].
    padded: usize,
    rows: usize,
}

impl Lanes {
    /// `x (rows, values)` on its side.
    pub fn of(x: &ArrayView2<f32>) -> Lanes {
        let (rows, values) = x.dim();
        let padded = rows.div_ceil(LANES) * LANES;
        let mut data = vec![0.0; values * padded];
        for (r, row) in x.outer_iter().enumerate() {
            for (i, &v) in row.iter().enumerate() {
                data[i * padded + r] = v;
            }
        }
        Lanes { data, padded, rows }
    }

    /// Rows (not counting the padding).
    pub fn rows(&self) -> usize {
        self.rows
    }

    #[inline(always)]
    fn vector(&self, value: usize, v: usize) -> &[f32] {
        &self.data[value * self.padded + v * LANES..][..LANES]
    }

    fn vectors(&self) -> usize {
        self.padded / LANES
    }
}

/// `out[r, u] += Σ_(i, k) x[r, i] · w[u, k]` over the field's `(input i, weight k)` pairs, for
/// every row of `x` and unit `u` of `w (units, patch)` (standard layout); `out (rows, units)`.
pub fn field_forward(x: &Lanes, field: &[(u32, u32)], w: &ArrayView2<f32>, out: &mut ArrayViewMut2<f32>) {
    assert_eq!(out.dim(), (x.rows, w.nrows()), "field_forward: out has the wrong shape");
    // Invariant (callers): a stage's weights are a standard-layout array.
    let w_s = w.as_slice().expect("weights are contiguous");
    let patch = w.ncols();
    let mut put = |r: usize, u: usize, v: f32| {
        if r < x.rows {
            out[[r, u]] += v
        }
    };
    match kernel() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx512` is only chosen after `is_x86_feature_detected!("avx512f")`.
        Kernel::Avx512 => unsafe { x86::forward_avx512(x, field, w_s, patch, &mut put) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2` is only chosen after detecting both `avx2` and `fma`.
        Kernel::Avx2 => unsafe { x86::forward_avx2(x, field, w_s, patch, &mut put) },
        Kernel::Portable => forward(Portable, x, field, w_s, patch, &mut put),
    }
}

/// `g[u, k] = beta · g[u, k] + alpha · Σ_r d[r, u] · x[r, i]` over the field's `(i, k)` pairs,
/// `d` holding the units' directions on their side (`units` of them from `first`); weights off
/// the field are only decayed by `beta`. `g (units, patch)` standard layout.
pub fn field_backward(
    alpha: f32,
    d: &Lanes,
    first: usize,
    x: &Lanes,
    field: &[(u32, u32)],
    beta: f32,
    g: &mut ArrayViewMut2<f32>,
) {
    assert_eq!(d.rows, x.rows, "field_backward: rows of d and x differ");
    let units = g.nrows();
    let patch = g.ncols();
    // Invariant (callers): gradient buffers are standard-layout arrays.
    let g_s = g.as_slice_mut().expect("gradient is contiguous");
    if beta != 1.0 {
        g_s.iter_mut().for_each(|v| *v *= beta);
    }
    match kernel() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `field_forward`.
        Kernel::Avx512 => unsafe { x86::backward_avx512(alpha, d, first, units, x, field, patch, g_s) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `field_forward`.
        Kernel::Avx2 => unsafe { x86::backward_avx2(alpha, d, first, units, x, field, patch, g_s) },
        Kernel::Portable => backward(Portable, alpha, d, first, units, x, field, patch, g_s),
    }
}

#[derive(Clone, Copy)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

fn kernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return Kernel::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Kernel::Avx2;
        }
    }
    Kernel::Portable
}

/// 16 lanes of f32 in the registers of one instruction set.
trait Simd: Copy {
    type V: Copy;
    fn zero(self) -> Self::V;
    fn splat(self, v: f32) -> Self::V;
    /// Loads 16 values (`xs` holds at least 16).
    fn load(self, xs: &[f32]) -> Self::V;
    /// `a · b + c`.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn sum(self, v: Self::V) -> f32;
    fn lanes(self, v: Self::V) -> [f32; LANES];
}

/// Plain arrays, for CPUs without AVX2 (a multiply and an add each).
#[derive(Clone, Copy)]
struct Portable;

impl Simd for Portable {
    type V = [f32; LANES];
    #[inline(always)]
    fn zero(self) -> Self::V {
        [0.0; LANES]
    }
    #[inline(always)]
    fn splat(self, v: f32) -> Self::V {
        [v; LANES]
    }
    #[inline(always)]
    fn load(self, xs: &[f32]) -> Self::V {
        std::array::from_fn(|l| xs[l])
    }
    #[inline(always)]
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::array::from_fn(|l| a[l] * b[l] + c[l])
    }
    #[inline(always)]
    fn sum(self, v: Self::V) -> f32 {
        v.iter().sum()
    }
    #[inline(always)]
    fn lanes(self, v: Self::V) -> [f32; LANES] {
        v
    }
}

/// One block of the forward product: `RV` row vectors × `UB` units from `u0`, from vector `v0`.
// Indexed loops over the register block: the const bounds unroll into registers.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[inline(always)]
fn forward_block<S: Simd, const RV: usize, const UB: usize>(
    simd: S,
    x: &Lanes,
    field: &[(u32, u32)],
    w: &[f32],
    patch: usize,
    v0: usize,
    u0: usize,
    put: &mut dyn FnMut(usize, usize, f32),
) {
    let mut acc = [[simd.zero(); RV]; UB];
    for &(i, k) in field {
        let weights: [S::V; UB] = std::array::from_fn(|u| simd.splat(w[(u0 + u) * patch + k as usize]));
        for v in 0..RV {
            let xv = simd.load(x.vector(i as usize, v0 + v));
            for u in 0..UB {
                acc[u][v] = simd.fma(weights[u], xv, acc[u][v]);
            }
        }
    }
    for (u, per_unit) in acc.iter().enumerate() {
        for (v, &vector) in per_unit.iter().enumerate() {
            for (l, value) in simd.lanes(vector).into_iter().enumerate() {
                put((v0 + v) * LANES + l, u0 + u, value);
            }
        }
    }
}

#[inline(always)]
fn forward_units<S: Simd, const UB: usize>(
    simd: S,
    x: &Lanes,
    field: &[(u32, u32)],
    w: &[f32],
    patch: usize,
    u0: usize,
    put: &mut dyn FnMut(usize, usize, f32),
) {
    let vectors = x.vectors();
    let mut v = 0;
    while v + 4 <= vectors {
        forward_block::<S, 4, UB>(simd, x, field, w, patch, v, u0, put);
        v += 4;
    }
    for v in v..vectors {
        forward_block::<S, 1, UB>(simd, x, field, w, patch, v, u0, put);
    }
}

#[inline(always)]
fn forward<S: Simd>(
    simd: S,
    x: &Lanes,
    field: &[(u32, u32)],
    w: &[f32],
    patch: usize,
    put: &mut dyn FnMut(usize, usize, f32),
) {
    let units = w.len() / patch.max(1);
    let mut u = 0;
    while u + 3 <= units {
        forward_units::<S, 3>(simd, x, field, w, patch, u, put);
        u += 3;
    }
    match units - u {
        2 => forward_units::<S, 2>(simd, x, field, w, patch, u, put),
        1 => forward_units::<S, 1>(simd, x, field, w, patch, u, put),
        _ => {}
    }
}

/// One block of the gradient: `KB` field pairs × `UB` units from `u0`, over every row vector.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[inline(always)]
fn backward_block<S: Simd, const KB: usize, const UB: usize>(
    simd: S,
    alpha: f32,
    d: &Lanes,
    first: usize,
    u0: usize,
    x: &Lanes,
    pairs: &[(u32, u32)],
    patch: usize,
    g: &mut [f32],
) {
    let mut acc = [[simd.zero(); KB]; UB];
    let inputs: [usize; KB] = std::array::from_fn(|kb| pairs[kb].0 as usize);
    for v in 0..x.vectors() {
        let dv: [S::V; UB] = std::array::from_fn(|u| simd.load(d.vector(first + u0 + u, v)));
        for kb in 0..KB {
            let xv = simd.load(x.vector(inputs[kb], v));
            for u in 0..UB {
                acc[u][kb] = simd.fma(dv[u], xv, acc[u][kb]);
            }
        }
    }
    for (u, per_unit) in acc.iter().enumerate() {
        for (kb, &vector) in per_unit.iter().enumerate() {
            g[(u0 + u) * patch + pairs[kb].1 as usize] += alpha * simd.sum(vector);
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_units<S: Simd, const UB: usize>(
    simd: S,
    alpha: f32,
    d: &Lanes,
    first: usize,
    u0: usize,
    x: &Lanes,
    field: &[(u32, u32)],
    patch: usize,
    g: &mut [f32],
) {
    let mut chunks = field.chunks_exact(4);
    for pairs in chunks.by_ref() {
        backward_block::<S, 4, UB>(simd, alpha, d, first, u0, x, pairs, patch, g);
    }
    for pair in chunks.remainder().chunks(1) {
        backward_block::<S, 1, UB>(simd, alpha, d, first, u0, x, pair, patch, g);
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward<S: Simd>(
    simd: S,
    alpha: f32,
    d: &Lanes,
    first: usize,
    units: usize,
    x: &Lanes,
    field: &[(u32, u32)],
    patch: usize,
    g: &mut [f32],
) {
    let mut u = 0;
    while u + 3 <= units {
        backward_units::<S, 3>(simd, alpha, d, first, u, x, field, patch, g);
        u += 3;
    }
    match units - u {
        2 => backward_units::<S, 2>(simd, alpha, d, first, u, x, field, patch, g),
        1 => backward_units::<S, 1>(simd, alpha, d, first, u, x, field, patch, g),
        _ => {}
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Lanes, Simd, LANES};
    use std::arch::x86_64::*;

    /// One AVX-512 register. Made only inside functions compiled with `avx512f`, after the
    /// CPU was checked ([`super::kernel`]).
    #[derive(Clone, Copy)]
    struct Avx512;

    impl Simd for Avx512 {
        type V = __m512;
        #[inline(always)]
        fn zero(self) -> __m512 {
            // SAFETY: only reached from `avx512f` functions on a CPU that has it.
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        fn splat(self, v: f32) -> __m512 {
            // SAFETY: as above.
            unsafe { _mm512_set1_ps(v) }
        }
        #[inline(always)]
        fn load(self, xs: &[f32]) -> __m512 {
            assert!(xs.len() >= LANES);
            // SAFETY: as above; `xs` holds 16 readable values (checked).
            unsafe { _mm512_loadu_ps(xs.as_ptr()) }
        }
        #[inline(always)]
        fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
            // SAFETY: as above.
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn sum(self, v: __m512) -> f32 {
            // SAFETY: as above.
            unsafe { _mm512_reduce_add_ps(v) }
        }
        #[inline(always)]
        fn lanes(self, v: __m512) -> [f32; LANES] {
            let mut out = [0.0; LANES];
            // SAFETY: as above; `out` is 16 writable values.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
            out
        }
    }

    /// Two AVX2 registers. Made only inside functions compiled with `avx2,fma`, after the CPU
    /// was checked ([`super::kernel`]).
    #[derive(Clone, Copy)]
    struct Avx2;

    impl Simd for Avx2 {
        type V = [__m256; 2];
        #[inline(always)]
        fn zero(self) -> [__m256; 2] {
            // SAFETY: only reached from `avx2,fma` functions on a CPU that has both.
            unsafe { [_mm256_setzero_ps(); 2] }
        }
        #[inline(always)]
        fn splat(self, v: f32) -> [__m256; 2] {
            // SAFETY: as above.
            unsafe { [_mm256_set1_ps(v); 2] }
        }
        #[inline(always)]
        fn load(self, xs: &[f32]) -> [__m256; 2] {
            assert!(xs.len() >= LANES);
            // SAFETY: as above; `xs` holds 16 readable values (checked).
            unsafe { [_mm256_loadu_ps(xs.as_ptr()), _mm256_loadu_ps(xs.as_ptr().add(8))] }
        }
        #[inline(always)]
        fn fma(self, a: [__m256; 2], b: [__m256; 2], c: [__m256; 2]) -> [__m256; 2] {
            // SAFETY: as above.
            unsafe { [_mm256_fmadd_ps(a[0], b[0], c[0]), _mm256_fmadd_ps(a[1], b[1], c[1])] }
        }
        #[inline(always)]
        fn sum(self, v: [__m256; 2]) -> f32 {
            self.lanes(v).iter().sum()
        }
        #[inline(always)]
        fn lanes(self, v: [__m256; 2]) -> [f32; LANES] {
            let mut out = [0.0; LANES];
            // SAFETY: as above; `out` is 16 writable values.
            unsafe {
                _mm256_storeu_ps(out.as_mut_ptr(), v[0]);
                _mm256_storeu_ps(out.as_mut_ptr().add(8), v[1]);
            }
            out
        }
    }

    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn forward_avx512(
        x: &Lanes,
        field: &[(u32, u32)],
        w: &[f32],
        patch: usize,
        put: &mut dyn FnMut(usize, usize, f32),
    ) {
        super::forward(Avx512, x, field, w, patch, put)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn forward_avx2(
        x: &Lanes,
        field: &[(u32, u32)],
        w: &[f32],
        patch: usize,
        put: &mut dyn FnMut(usize, usize, f32),
    ) {
        super::forward(Avx2, x, field, w, patch, put)
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn backward_avx512(
        alpha: f32,
        d: &Lanes,
        first: usize,
        units: usize,
        x: &Lanes,
        field: &[(u32, u32)],
        patch: usize,
        g: &mut [f32],
    ) {
        super::backward(Avx512, alpha, d, first, units, x, field, patch, g)
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn backward_avx2(
        alpha: f32,
        d: &Lanes,
        first: usize,
        units: usize,
        x: &Lanes,
        field: &[(u32, u32)],
        patch: usize,
        g: &mut [f32],
    ) {
        super::backward(Avx2, alpha, d, first, units, x, field, patch, g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use ndarray::Array2;

    fn random(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
        let mut rng = Rng::new(seed);
        Array2::from_shape_simple_fn((rows, cols), || rng.normal())
    }

    #[test]
    fn the_kernels_match_plain_products() {
        // Rows, units and field lengths that are not multiples of the blocks; a field that
        // skips some weights (off the map) and reads inputs out of order.
        for (rows, units, inputs, patch) in [(7, 3, 40, 37), (70, 5, 50, 9), (1, 1, 6, 5), (33, 4, 20, 16)] {
            let field: Vec<(u32, u32)> =
                (0..patch).filter(|k| k % 5 != 3).map(|k| (((k * 7) % inputs) as u32, k as u32)).collect();
            let (x, w) = (random(rows, inputs, 1), random(units, patch, 2));
            let mut dense = Array2::<f32>::zeros((inputs, patch));
            for &(i, k) in &field {
                dense[[i as usize, k as usize]] = 1.0;
            }
            // The field as a product: x · dense (the selected inputs in patch order) · wᵀ.
            let selected = x.dot(&dense);
            let lanes = Lanes::of(&x.view());
            let mut out = Array2::from_elem((rows, units), 0.5f32);
            field_forward(&lanes, &field, &w.view(), &mut out.view_mut());
            let want = selected.dot(&w.t()) + 0.5;
            let err = (&out - &want).mapv(f32::abs).fold(0f32, |m, &v| m.max(v));
            assert!(err < 1e-3, "forward {rows}x{units}x{patch}: {err}");

            let d = random(rows, units + 2, 3);
            let d_lanes = Lanes::of(&d.view());
            let mut g = random(units, patch, 4);
            let want = &g * 0.9 + d.slice(ndarray::s![.., 2..]).t().dot(&selected) * 0.1;
            field_backward(0.1, &d_lanes, 2, &lanes, &field, 0.9, &mut g.view_mut());
            let err = (&g - &want).mapv(f32::abs).fold(0f32, |m, &v| m.max(v));
            assert!(err < 1e-3, "backward {rows}x{units}x{patch}: {err}");
        }
    }
}
