//! Matrix products for every stage, behind one function so the backend is a build choice.
//!
//! `STACK.md` measured the backends on this project's machines: the `gemm` crate with its
//! x86-v4 (AVX-512) kernels reached ~85% of a core's f32 peak at the FF layer shapes, and
//! ndarray's own product (matrixmultiply, with its `avx512` feature on) about 70-85% of that.
//! The default feature `backend-gemm` selects `gemm`; without it, ndarray's `general_mat_mul`.
//! Both honour arbitrary strides, so transposed views (`x.t()`) cost nothing.
//!
//! Every call is single-threaded unless [`Threads::Pool`] is asked for: in the pipeline each stage is
//! already a thread, and two stages doing a parallel product on two cores would fight.

use ndarray::{ArrayView2, ArrayViewMut2};

/// How many threads one product may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// The calling thread only (pipeline stages).
    One,
    /// `n` threads from rayon's pool (a stage running alone, e.g. offline evaluation).
    Pool(usize),
}

/// A stage's own threads for its products (`threads = N` in a pipeline file): a rayon pool
/// that belongs to the stage, never rayon's global one, so stages with pools do not compete
/// for one set of workers, and a net with fewer stages than cores can still use them all.
pub struct StagePool {
    pool: Option<rayon::ThreadPool>,
    threads: usize,
}

impl StagePool {
    /// `threads` workers named after `stage` (1 or less: the calling thread only). A pool
    /// that cannot be started (the OS refuses threads) falls back to one thread, with a warning.
    pub fn new(stage: &str, threads: usize) -> StagePool {
        if threads <= 1 {
            return StagePool { pool: None, threads: 1 };
        }
        let name = stage.to_string();
        // The workers flush denormals as the stage threads do (src/float_mode.rs).
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("{name}.{i}"))
            .start_handler(|_| crate::float_mode::flush_on_this_thread())
            .build();
        match pool {
            Ok(pool) => StagePool { pool: Some(pool), threads },
            Err(e) => {
                tracing::warn!(stage, threads, "cannot start the stage's thread pool ({e}); using one thread");
                StagePool { pool: None, threads: 1 }
            }
        }
    }

    /// Threads a product uses.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `work` inside the stage's pool (its rayon calls use the pool's threads), or on
    /// the calling thread for a one-thread stage.
    pub fn install<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(work),
            None => work(),
        }
    }

    /// [`gemm`] on the stage's threads.
    pub fn gemm(&self, alpha: f32, a: &ArrayView2<f32>, b: &ArrayView2<f32>, beta: f32, c: &mut ArrayViewMut2<f32>) {
        match &self.pool {
            Some(pool) => pool.install(|| gemm(alpha, a, b, beta, c, Threads::Pool(self.threads))),
            None => gemm(alpha, a, b, beta, c, Threads::One),
        }
    }
}

impl std::fmt::Debug for StagePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StagePool({} threads)", self.threads)
    }
}

/// The backend compiled in, for reports.
pub fn backend_name() -> &'static str {
    if cfg!(feature = "backend-gemm") {
        "gemm 0.19 (x86-v4)"
    } else {
        "ndarray + matrixmultiply (avx512)"
    }
}

/// `c = beta * c + alpha * a · b`.
///
/// # Shapes
/// `a: (m, k)`, `b: (k, n)`, `c: (m, n)`; any strides.
///
/// # Panics
/// If the inner or outer dimensions disagree (a programming error, never user input).
pub fn gemm(
    alpha: f32,
    a: &ArrayView2<f32>,
    b: &ArrayView2<f32>,
    beta: f32,
    c: &mut ArrayViewMut2<f32>,
    threads: Threads,
) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert_eq!(k, k2, "gemm: inner dimensions {k} and {k2} differ");
    assert_eq!(c.dim(), (m, n), "gemm: output is {:?}, expected ({m}, {n})", c.dim());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // As with k > 0, beta == 0 does not read `c` (0 · NaN would be NaN).
        if beta == 0.0 {
            c.fill(0.0);
        } else {
            c.mapv_inplace(|v| beta * v);
        }
        return;
    }
    backend::gemm(alpha, a, b, beta, c, threads);
}

#[cfg(feature = "backend-gemm")]
mod backend {
    use super::Threads;
    use ndarray::{ArrayView2, ArrayViewMut2};

    pub(super) fn gemm(
        alpha: f32,
        a: &ArrayView2<f32>,
        b: &ArrayView2<f32>,
        beta: f32,
        c: &mut ArrayViewMut2<f32>,
        threads: Threads,
    ) {
        let (m, k) = a.dim();
        let n = b.dim().1;
        let [a_rs, a_cs] = [a.strides()[0], a.strides()[1]];
        let [b_rs, b_cs] = [b.strides()[0], b.strides()[1]];
        let [c_rs, c_cs] = [c.strides()[0], c.strides()[1]];
        let parallelism = match threads {
            Threads::One => gemm::Parallelism::None,
            Threads::Pool(n) => gemm::Parallelism::Rayon(n.max(1)),
        };
        // The gemm crate computes dst = alpha_dst * dst + beta_prod * lhs * rhs; its names for the
        // two factors are the reverse of BLAS's. With read_dst = false dst is not read at all,
        // which also makes an uninitialised or NaN-holding `c` safe when beta == 0.
        // SAFETY: the pointers and element strides come from live ndarray views whose shapes
        // were checked above; `c` is borrowed mutably and cannot alias `a` or `b`.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                c_cs,
                c_rs,
                beta != 0.0,
                a.as_ptr(),
                a_cs,
                a_rs,
                b.as_ptr(),
                b_cs,
                b_rs,
                beta,
                alpha,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}

#[cfg(not(feature = "backend-gemm"))]
mod backend {
    use super::Threads;
    use ndarray::{linalg::general_mat_mul, ArrayView2, ArrayViewMut2};

    pub(super) fn gemm(
        alpha: f32,
        a: &ArrayView2<f32>,
        b: &ArrayView2<f32>,
        beta: f32,
        c: &mut ArrayViewMut2<f32>,
        _threads: Threads,
    ) {
        general_mat_mul(alpha, a, b, beta, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn naive(a: &ArrayView2<f32>, b: &ArrayView2<f32>) -> Array2<f64> {
        let (m, k) = a.dim();
        let n = b.dim().1;
        Array2::from_shape_fn((m, n), |(i, j)| (0..k).map(|p| a[[i, p]] as f64 * b[[p, j]] as f64).sum())
    }

    #[test]
    fn matches_naive_product_with_transposes_and_accumulation() {
        let a = Array2::from_shape_fn((37, 53), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
        let b = Array2::from_shape_fn((41, 53), |(i, j)| ((i * 5 + j) % 13) as f32 * 0.25);
        let bt = b.t();
        let mut c = Array2::from_elem((37, 41), 1.0f32);
        gemm(0.5, &a.view(), &bt, 2.0, &mut c.view_mut(), Threads::One);
        let want = naive(&a.view(), &bt);
        for ((i, j), v) in c.indexed_iter() {
            let expected = 2.0 + 0.5 * want[[i, j]];
            assert!((*v as f64 - expected).abs() < 1e-3, "({i},{j}): {v} vs {expected}");
        }
        // Transposed lhs: aᵀ·a.
        let mut g = Array2::zeros((53, 53));
        gemm(1.0, &a.t(), &a.view(), 0.0, &mut g.view_mut(), Threads::Pool(2));
        let want = naive(&a.t(), &a.view());
        for ((i, j), v) in g.indexed_iter() {
            assert!((*v as f64 - want[[i, j]]).abs() < 1e-2);
        }
    }

    #[test]
    fn beta_zero_ignores_nan_in_output() {
        let a = Array2::from_elem((3, 4), 1.0f32);
        let b = Array2::from_elem((4, 2), 1.0f32);
        let mut c = Array2::from_elem((3, 2), f32::NAN);
        gemm(1.0, &a.view(), &b.view(), 0.0, &mut c.view_mut(), Threads::One);
        assert!(c.iter().all(|&v| v == 4.0));
    }
}
