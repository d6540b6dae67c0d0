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
//!
//! With few units a position, one position's products wait on memory: each vector of inputs
//! loaded feeds only that position's few sums. So adjacent positions are made together as a
//! [`Tile`] (E7: 4 positions, 12 units, whose fields share 8 of their 11 columns): one dense
//! product over the union of their fields, with zero weights where an input is off a unit's
//! field. Measured on E7's layer, 300 rows, AVX-512 EPYC: 10.0 ms against 20.5 ms one position
//! at a time, 27% more multiply-adds counted in.
//!
//! The scratch arrays (a packet on its side, a tile's weight block and sums) come from the
//! calling thread's spares ([`zeroed`], [`recycle`]): after the first packet a stage's products
//! allocate nothing, on its own thread or its pool's.

use ndarray::{ArrayView2, ArrayViewMut2};

/// Rows in one vector.
pub const LANES: usize = 16;

/// A packet's rows on their side: value `i` of rows `16·v..16·v+16` is one vector.
pub struct Lanes {
    /// The values from `start` on; `start` puts every vector on a 64-byte line of its own
    /// (a load that straddles two lines costs two).
    data: Vec<f32>,
    start: usize,
    /// Rows, padded with zero rows to a multiple of [`LANES`].
    padded: usize,
    rows: usize,
}

thread_local! {
    /// This thread's scratch vectors, for the next packet's products.
    static SPARES: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Spares a thread keeps: a forward pass holds a packet on its side and a tile's two scratch
/// arrays at once, a backward pass two packets on their side.
const MAX_SPARES: usize = 6;

/// `len` zeros, in the smallest of this thread's spares that holds them (a new vector when none
/// does).
pub fn zeroed(len: usize) -> Vec<f32> {
    let reused = SPARES.with(|spares| {
        let mut spares = spares.borrow_mut();
        let fits = spares.iter().enumerate().filter(|(_, v)| v.capacity() >= len).min_by_key(|(_, v)| v.capacity());
        let i = fits.map(|(i, _)| i)?;
        Some(spares.swap_remove(i))
    });
    match reused {
        Some(mut v) => {
            v.clear();
            v.resize(len, 0.0);
            v
        }
        None => vec![0.0; len],
    }
}

/// Keeps `v` as one of this thread's spares (the smallest is let go when they are full).
pub fn recycle(v: Vec<f32>) {
    SPARES.with(|spares| {
        let mut spares = spares.borrow_mut();
        spares.push(v);
        if spares.len() > MAX_SPARES {
            if let Some(smallest) = (0..spares.len()).min_by_key(|&i| spares[i].capacity()) {
                spares.swap_remove(smallest);
            }
        }
    });
}

impl Drop for Lanes {
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.data));
    }
}

impl Lanes {
    /// `x (rows, values)` on its side.
    pub fn of(x: &ArrayView2<f32>) -> Lanes {
        let (rows, values) = x.dim();
        let padded = rows.div_ceil(LANES) * LANES;
        let mut data = zeroed(values * padded + LANES);
        let start = data.as_ptr().align_offset(64).min(LANES);
        for (r, row) in x.outer_iter().enumerate() {
            for (i, &v) in row.iter().enumerate() {
                data[start + i * padded + r] = v;
            }
        }
        Lanes { data, start, padded, rows }
    }

    /// Rows (not counting the padding).
    pub fn rows(&self) -> usize {
        self.rows
    }

    #[inline(always)]
    fn vector(&self, value: usize, v: usize) -> &[f32] {
        self.block(value, v, 1)
    }

    /// `n` vectors of value `value` from vector `v` on.
    #[inline(always)]
    fn block(&self, value: usize, v: usize, n: usize) -> &[f32] {
        &self.data[self.start + value * self.padded + v * LANES..][..n * LANES]
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
    match kernel() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx512` is only chosen after `is_x86_feature_detected!("avx512f")`.
        Kernel::Avx512 => unsafe { x86::forward_avx512(x, field, w_s, patch, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2` is only chosen after detecting both `avx2` and `fma`.
        Kernel::Avx2 => unsafe { x86::forward_avx2(x, field, w_s, patch, out) },
        Kernel::Portable => forward::<_, 4>(Portable, x, field, w_s, patch, out),
    }
}

/// Units of a [`Tile`]: the products of a few adjacent positions are made together, so each
/// vector of inputs loaded feeds this many units' sums instead of one position's few (E7's 3
/// units a position made the single-position kernel wait on memory: 28 GFLOP/s).
pub const TILE_UNITS: usize = 12;

/// A few adjacent positions' fields merged: the union of their inputs in ascending order and
/// where each unit's weight on each of them sits among the tile's weight rows (inputs off a
/// unit's field have no weight: the tile's product there is with a zero).
#[derive(Clone, Debug, PartialEq)]
pub struct Tile {
    inputs: Vec<u32>,
    /// `(slot in the input-major block, index in the tile's weight rows)` of every weight.
    gather: Vec<(u32, u32)>,
    units: usize,
}

impl Tile {
    /// The tile of the given positions' fields (`(input, weight)` pairs each) with `channels`
    /// units a position (at most [`TILE_UNITS`] units in all) and weight rows `patch` long. A
    /// field reads each input once (as every field of a map does).
    pub fn of(fields: &[&[(u32, u32)]], channels: usize, patch: usize) -> Tile {
        let units = fields.len() * channels;
        assert!(units <= TILE_UNITS, "a tile holds at most {TILE_UNITS} units");
        let mut inputs: Vec<u32> = fields.iter().flat_map(|f| f.iter().map(|&(i, _)| i)).collect();
        inputs.sort_unstable();
        inputs.dedup();
        let mut gather = Vec::new();
        for (q, field) in fields.iter().enumerate() {
            for &(i, k) in field.iter() {
                // Invariant: `inputs` holds every input of every field.
                let j = inputs.binary_search(&i).expect("input in the union");
                for c in 0..channels {
                    let unit = q * channels + c;
                    gather.push(((j * TILE_UNITS + unit) as u32, (unit * patch + k as usize) as u32));
                }
            }
        }
        gather.sort_unstable();
        Tile { inputs, gather, units }
    }

    /// Units of the tile.
    pub fn units(&self) -> usize {
        self.units
    }
}

/// `out[r, u] += Σ_i x[r, i] · w[u, k(u, i)]` for the tile's units `u`, `w (units, patch)` their
/// weight rows (standard layout), `out (rows, units)`.
pub fn tile_forward(x: &Lanes, tile: &Tile, w: &ArrayView2<f32>, out: &mut ArrayViewMut2<f32>) {
    assert_eq!(out.dim(), (x.rows, tile.units), "tile_forward: out has the wrong shape");
    assert_eq!(w.nrows(), tile.units, "tile_forward: one weight row a unit");
    // Invariant (callers): a stage's weights are a standard-layout array.
    let w_s = w.as_slice().expect("weights are contiguous");
    // The tile's weights input-major, zero off each unit's field: a dense little product.
    let mut block = zeroed(tile.inputs.len() * TILE_UNITS);
    for &(b, k) in &tile.gather {
        block[b as usize] = w_s[k as usize];
    }
    match kernel() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `field_forward`.
        Kernel::Avx512 => unsafe { x86::tile_avx512(x, &tile.inputs, &block, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `field_forward`.
        Kernel::Avx2 => unsafe { x86::tile_avx2(x, &tile.inputs, &block, out) },
        Kernel::Portable => tile_product::<_, 6, 1>(Portable, x, &tile.inputs, &block, out),
    }
    recycle(block);
}

/// One block of a tile's product: `RV` row vectors from `v0` × `UB` units from `u0`, into
/// `sums` on its side (`TILE_UNITS` rows of `padded` values: a vector store a sum).
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
#[inline(always)]
fn tile_block<S: Simd, const UB: usize, const RV: usize>(
    simd: S,
    x: &Lanes,
    inputs: &[u32],
    block: &[f32],
    v0: usize,
    u0: usize,
    sums: &mut [f32],
) {
    let mut acc = [[simd.zero(); RV]; UB];
    let span = RV * LANES;
    for (&i, weights) in inputs.iter().zip(block.chunks_exact(TILE_UNITS)) {
        // Invariant: `u0 + UB <= TILE_UNITS` (the callers' blocks split the tile).
        let weights: &[f32; UB] = weights[u0..u0 + UB].try_into().expect("a block within the tile");
        let at = x.start + i as usize * x.padded + v0 * LANES;
        let xs: &[f32] = &x.data[at..at + span];
        let xv: [S::V; RV] = std::array::from_fn(|v| simd.load(&xs[v * LANES..]));
        for u in 0..UB {
            let wu = simd.splat(weights[u]);
            for v in 0..RV {
                acc[u][v] = simd.fma(wu, xv[v], acc[u][v]);
            }
        }
    }
    for (u, per_unit) in acc.iter().enumerate() {
        for (v, &vector) in per_unit.iter().enumerate() {
            let at = (u0 + u) * x.padded + (v0 + v) * LANES;
            sums[at..at + LANES].copy_from_slice(&simd.lanes(vector));
        }
    }
}

/// A tile's product in register blocks of `UB` units × `RV` row vectors (`UB` divides
/// [`TILE_UNITS`]), added to `out` row by row at the end: a unit's sums written one row at a
/// time would touch a line of `out` per value.
#[inline(always)]
fn tile_product<S: Simd, const UB: usize, const RV: usize>(
    simd: S,
    x: &Lanes,
    inputs: &[u32],
    block: &[f32],
    out: &mut ArrayViewMut2<f32>,
) {
    let vectors = x.vectors();
    let units = out.ncols();
    let mut sums = zeroed(TILE_UNITS * x.padded);
    for u0 in (0..units).step_by(UB) {
        let mut v = 0;
        while v + RV <= vectors {
            tile_block::<S, UB, RV>(simd, x, inputs, block, v, u0, &mut sums);
            v += RV;
        }
        for v in v..vectors {
            tile_block::<S, UB, 1>(simd, x, inputs, block, v, u0, &mut sums);
        }
    }
    for (r, mut row) in out.outer_iter_mut().enumerate() {
        for (u, o) in row.iter_mut().enumerate() {
            *o += sums[u * x.padded + r];
        }
    }
    recycle(sums);
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

/// The instruction set these kernels run on here (`gemm` dispatches on the same features).
pub fn kernel_name() -> &'static str {
    match kernel() {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => "AVX-512",
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => "AVX2+FMA",
        Kernel::Portable => "portable",
    }
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
    out: &mut ArrayViewMut2<f32>,
) {
    let mut acc = [[simd.zero(); RV]; UB];
    let units: [&[f32]; UB] = std::array::from_fn(|u| &w[(u0 + u) * patch..(u0 + u + 1) * patch]);
    for &(i, k) in field {
        let weights: [S::V; UB] = std::array::from_fn(|u| simd.splat(units[u][k as usize]));
        let xs = x.block(i as usize, v0, RV);
        for v in 0..RV {
            let xv = simd.load(&xs[v * LANES..]);
            for u in 0..UB {
                acc[u][v] = simd.fma(weights[u], xv, acc[u][v]);
            }
        }
    }
    for (u, per_unit) in acc.iter().enumerate() {
        for (v, &vector) in per_unit.iter().enumerate() {
            let first = (v0 + v) * LANES;
            let values = simd.lanes(vector);
            for (r, value) in (first..x.rows.min(first + LANES)).zip(values) {
                out[[r, u0 + u]] += value;
            }
        }
    }
}

/// Every row vector for `UB` units from `u0`: blocks of `RV` vectors (as many registers as
/// the instruction set holds), the rest in one smaller block, so no block is left with too few
/// independent sums to hide the FMA latency.
#[inline(always)]
fn forward_units<S: Simd, const UB: usize, const RV: usize>(
    simd: S,
    x: &Lanes,
    field: &[(u32, u32)],
    w: &[f32],
    patch: usize,
    u0: usize,
    out: &mut ArrayViewMut2<f32>,
) {
    let vectors = x.vectors();
    let mut v = 0;
    while v + RV <= vectors {
        forward_block::<S, RV, UB>(simd, x, field, w, patch, v, u0, out);
        v += RV;
    }
    match vectors - v {
        0 => {}
        1 => forward_block::<S, 1, UB>(simd, x, field, w, patch, v, u0, out),
        2 => forward_block::<S, 2, UB>(simd, x, field, w, patch, v, u0, out),
        3 => forward_block::<S, 3, UB>(simd, x, field, w, patch, v, u0, out),
        4 => forward_block::<S, 4, UB>(simd, x, field, w, patch, v, u0, out),
        5 => forward_block::<S, 5, UB>(simd, x, field, w, patch, v, u0, out),
        6 => forward_block::<S, 6, UB>(simd, x, field, w, patch, v, u0, out),
        _ => forward_block::<S, 7, UB>(simd, x, field, w, patch, v, u0, out),
    }
}

#[inline(always)]
fn forward<S: Simd, const RV: usize>(
    simd: S,
    x: &Lanes,
    field: &[(u32, u32)],
    w: &[f32],
    patch: usize,
    out: &mut ArrayViewMut2<f32>,
) {
    let units = w.len() / patch.max(1);
    let mut u = 0;
    while u + 3 <= units {
        forward_units::<S, 3, RV>(simd, x, field, w, patch, u, out);
        u += 3;
    }
    match units - u {
        2 => forward_units::<S, 2, RV>(simd, x, field, w, patch, u, out),
        1 => forward_units::<S, 1, RV>(simd, x, field, w, patch, u, out),
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
    use ndarray::ArrayViewMut2;
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
        out: &mut ArrayViewMut2<f32>,
    ) {
        super::forward::<_, 8>(Avx512, x, field, w, patch, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn forward_avx2(x: &Lanes, field: &[(u32, u32)], w: &[f32], patch: usize, out: &mut ArrayViewMut2<f32>) {
        super::forward::<_, 2>(Avx2, x, field, w, patch, out)
    }

    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn tile_avx512(x: &Lanes, inputs: &[u32], block: &[f32], out: &mut ArrayViewMut2<f32>) {
        // 12 units × 2 row vectors: 24 of the 32 registers hold sums.
        super::tile_product::<_, 12, 2>(Avx512, x, inputs, block, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn tile_avx2(x: &Lanes, inputs: &[u32], block: &[f32], out: &mut ArrayViewMut2<f32>) {
        // 6 units × 1 row vector (two registers each): 12 of the 16 registers hold sums.
        super::tile_product::<_, 6, 1>(Avx2, x, inputs, block, out)
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
    fn a_tile_makes_the_products_of_its_positions() {
        // Three positions of 3 units with overlapping fields, inputs out of order, a weight off
        // the map (skipped), 21 rows (a partial vector); then a tile of one position.
        let (rows, inputs, patch) = (21, 30, 12);
        let fields: Vec<Vec<(u32, u32)>> = (0..3u32)
            .map(|q| (0..patch as u32).filter(|k| (k + q) % 7 != 0).map(|k| ((k * 7 + 3 * q) % 30, k)).collect())
            .collect();
        let x = random(rows, inputs, 5);
        let w = random(9, patch, 6);
        let lanes = Lanes::of(&x.view());
        for positions in [3, 1] {
            let group: Vec<&[(u32, u32)]> = fields[..positions].iter().map(Vec::as_slice).collect();
            let tile = Tile::of(&group, 3, patch);
            let w = w.slice(ndarray::s![..3 * positions, ..]);
            let mut want = Array2::from_elem((rows, 3 * positions), 0.25f32);
            for (q, field) in fields[..positions].iter().enumerate() {
                let mut out = want.slice_mut(ndarray::s![.., 3 * q..3 * q + 3]);
                field_forward(&lanes, field, &w.slice(ndarray::s![3 * q..3 * q + 3, ..]), &mut out);
            }
            let mut got = Array2::from_elem((rows, 3 * positions), 0.25f32);
            tile_forward(&lanes, &tile, &w, &mut got.view_mut());
            let err = (&got - &want).mapv(f32::abs).fold(0f32, |m, &v| m.max(v));
            assert!(err < 1e-4, "{positions} positions: {err}");
        }
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
