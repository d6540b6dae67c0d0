//! How close the matrix products come to this machine's peak, measured in the same run.
//!
//! The machines this project runs on are shared virtual machines: clock speed, turbo, neighbours
//! on the same host and the AVX-512 frequency licence all move absolute numbers by tens of
//! percent from one run to the next. A bare "X GFLOP/s" therefore says little, and a number
//! copied from a datasheet says even less (it assumes a clock the VM may never see). So every
//! claim made here is a *ratio*: the GFLOP/s of a product divided by the f32 FMA peak
//! [`fma_peak_gflops`] measured in the same run, on the same cores, under the same conditions
//! (`benches/matmul.rs` measures it before and after the products and keeps the better one). The
//! ratio is what survives a noisy machine; the absolute numbers are recorded only for context.
//!
//! - [`fma_peak_gflops`]: a register-only loop of independent FMA chains (AVX-512, else AVX2+FMA,
//!   else plain code the compiler vectorises), on `threads` OS threads at once.
//! - [`measure_ff_shapes`]: the two products of a Forward-Forward layer at the batch sizes the
//!   pipeline uses: the forward `X·W` and the weight gradient `G = 0.9·G + Xᵀ·D`.
//! - [`square_gflops`]: an `n³` product, the shape every BLAS is tuned for, as a reference.
//! - [`machine_name`]: what to write next to the numbers.
//!
//! `benches/matmul.rs` prints these as a table and stores them as JSON.

use crate::matmul::{gemm, Threads};
use crate::rng::Rng;
use ndarray::Array2;
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// The measured f32 FMA peak of this machine, in GFLOP/s summed over `threads` threads.
///
/// Each of `threads` OS threads runs, for about `duration`, a loop of independent fused
/// multiply-add chains that never touch memory: 12 AVX-512 registers of 16 lanes when the CPU has
/// `avx512f`, else 12 AVX2 registers of 8 lanes with `fma`, else 64 scalar chains written so that
/// the compiler may vectorise them. Twelve chains hide the 4-cycle FMA latency on two FMA ports
/// (8 would just suffice). Each lane of each FMA counts as 2 FLOP (a multiply and an add). The
/// threads start together behind a barrier; each reports the rate of its fastest tenth of
/// `duration` (interference only slows a register-only loop down), and the rates are summed.
///
/// This is the ceiling a matrix product can approach, not exceed: percentages of it are the
/// numbers to compare between runs and machines (see the module documentation).
///
/// # Panics
/// If a measuring thread panics (it does not, short of the OS refusing to create threads).
pub fn fma_peak_gflops(threads: usize, duration: Duration) -> f64 {
    let threads = threads.max(1);
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    fma_thread_gflops(duration)
                })
            })
            .collect();
        // Invariant (documented panic above): a measuring thread only does arithmetic.
        handles.into_iter().map(|h| h.join().expect("FMA peak thread panicked")).sum()
    })
}

/// Iterations of the inner loop between two reads of the clock (each iteration is 12 vector FMAs,
/// so one batch is a few microseconds: the clock costs well under 1%).
const FMA_BATCH: u64 = 4096;

/// Windows one thread's FMA run is cut into; its rate is the best window's.
const FMA_WINDOWS: u32 = 10;

/// One thread's FMA rate in GFLOP/s over about `duration`: the best of [`FMA_WINDOWS`] windows.
///
/// Interference on a shared machine (another process, an interrupt, a descheduled vCPU) only ever
/// slows the loop down, so the fastest window is the best estimate of what the core can do.
fn fma_thread_gflops(duration: Duration) -> f64 {
    let kernel = fma_kernel();
    // One untimed batch: brings the core to its vector frequency and the code into cache.
    let (mut sink, flops_per_iter) = kernel.run(FMA_BATCH);
    let window = duration / FMA_WINDOWS;
    let mut best = 0.0f64;
    for _ in 0..FMA_WINDOWS {
        let start = Instant::now();
        let mut iters = 0u64;
        let elapsed = loop {
            sink += kernel.run(FMA_BATCH).0;
            iters += FMA_BATCH;
            let elapsed = start.elapsed();
            if elapsed >= window {
                break elapsed;
            }
        };
        best = best.max((iters * flops_per_iter) as f64 / elapsed.as_secs_f64() / 1e9);
    }
    black_box(sink);
    best
}

/// The widest FMA loop this CPU runs.
#[derive(Clone, Copy)]
enum FmaKernel {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

fn fma_kernel() -> FmaKernel {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return FmaKernel::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return FmaKernel::Avx2;
        }
    }
    FmaKernel::Portable
}

impl FmaKernel {
    /// Runs `iters` iterations; returns a value depending on every FMA and the FLOP per iteration.
    fn run(self, iters: u64) -> (f32, u64) {
        // The constants pass through black_box so the chains cannot be folded at compile time;
        // with them each chain converges to 1.0 and never over- nor underflows.
        let mul = black_box(0.999_9f32);
        let add = black_box(0.000_1f32);
        let iters = black_box(iters);
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512` is only chosen after `is_x86_feature_detected!("avx512f")`.
            FmaKernel::Avx512 => (unsafe { x86::fma_avx512(iters, mul, add) }, 12 * 16 * 2),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` is only chosen after detecting both `avx2` and `fma`.
            FmaKernel::Avx2 => (unsafe { x86::fma_avx2(iters, mul, add) }, 12 * 8 * 2),
            FmaKernel::Portable => (fma_portable(iters, mul, add), 64 * 2),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 12 independent chains of `acc = acc * mul + add` on 16-lane registers.
    #[target_feature(enable = "avx512f")]
    pub(super) fn fma_avx512(iters: u64, mul: f32, add: f32) -> f32 {
        let m = _mm512_set1_ps(mul);
        let a = _mm512_set1_ps(add);
        let mut acc = [_mm512_setzero_ps(); 12];
        for (i, r) in acc.iter_mut().enumerate() {
            *r = _mm512_set1_ps(i as f32 * 0.01);
        }
        for _ in 0..iters {
            for r in acc.iter_mut() {
                *r = _mm512_fmadd_ps(*r, m, a);
            }
        }
        let mut total = acc[0];
        for r in &acc[1..] {
            total = _mm512_add_ps(total, *r);
        }
        _mm512_reduce_add_ps(total)
    }

    /// 12 independent chains of `acc = acc * mul + add` on 8-lane registers.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn fma_avx2(iters: u64, mul: f32, add: f32) -> f32 {
        let m = _mm256_set1_ps(mul);
        let a = _mm256_set1_ps(add);
        let mut acc = [_mm256_setzero_ps(); 12];
        for (i, r) in acc.iter_mut().enumerate() {
            *r = _mm256_set1_ps(i as f32 * 0.01);
        }
        for _ in 0..iters {
            for r in acc.iter_mut() {
                *r = _mm256_fmadd_ps(*r, m, a);
            }
        }
        let mut total = acc[0];
        for r in &acc[1..] {
            total = _mm256_add_ps(total, *r);
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` is 8 writable f32, the unaligned store's exact size.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), total) };
        lanes.iter().sum()
    }
}

/// 64 independent chains in plain code (a multiply and an add each, which the compiler may
/// vectorise or contract as the target allows): the fallback for CPUs without AVX2.
fn fma_portable(iters: u64, mul: f32, add: f32) -> f32 {
    let mut acc = [0.0f32; 64];
    for (i, r) in acc.iter_mut().enumerate() {
        *r = i as f32 * 0.01;
    }
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = *r * mul + add;
        }
    }
    acc.iter().sum()
}

/// One timed matrix product.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct GemmPoint {
    /// Rows of the output.
    pub m: usize,
    /// The inner (summed) dimension.
    pub k: usize,
    /// Columns of the output.
    pub n: usize,
    /// `"forward"` (`Y = X·W`), `"gradient"` (`G = 0.9·G + Xᵀ·D`) or `"square"`.
    pub kind: &'static str,
    /// Threads the product was allowed ([`Threads::One`] for 1, else [`Threads::Pool`]).
    pub threads: usize,
    /// `2·m·k·n / seconds_per_call / 1e9`.
    pub gflops: f64,
    /// Mean wall time of one call.
    pub seconds_per_call: f64,
}

/// The two products of a Forward-Forward layer with `inputs` inputs and `units` units, timed at
/// each batch size in `batches`.
///
/// For a batch of `B` rows it times the forward product `Y(B, units) = X(B, inputs)·W(inputs,
/// units)` and the weight gradient `G(inputs, units) = 0.9·G + Xᵀ(inputs, B)·D(B, units)`, with
/// `Xᵀ` passed as the transposed view `x.t()` exactly as the layer does. Both are `2·B·inputs·units`
/// FLOP. Each product is called once untimed, then repeatedly until `min_time` has elapsed.
/// Returns two points per batch size, forward first, in the order of `batches`.
pub fn measure_ff_shapes(
    batches: &[usize],
    inputs: usize,
    units: usize,
    threads: usize,
    min_time: Duration,
) -> Vec<GemmPoint> {
    let par = threads_arg(threads);
    let mut rng = Rng::derive(0, "bench-ff-shapes", inputs as u64 * 1_000_003 + units as u64);
    let w = random_matrix(&mut rng, inputs, units);
    let mut g = random_matrix(&mut rng, inputs, units);
    let mut points = Vec::with_capacity(2 * batches.len());
    for &b in batches {
        let x = random_matrix(&mut rng, b, inputs);
        let d = random_matrix(&mut rng, b, units);
        let mut y = Array2::<f32>::zeros((b, units));
        let flops = 2.0 * b as f64 * inputs as f64 * units as f64;

        let seconds = time_calls(min_time, || {
            gemm(1.0, &x.view(), &w.view(), 0.0, &mut y.view_mut(), par);
        });
        black_box(&y);
        points.push(GemmPoint {
            m: b,
            k: inputs,
            n: units,
            kind: "forward",
            threads: threads.max(1),
            gflops: flops / seconds / 1e9,
            seconds_per_call: seconds,
        });

        let seconds = time_calls(min_time, || {
            gemm(1.0, &x.t(), &d.view(), 0.9, &mut g.view_mut(), par);
        });
        black_box(&g);
        points.push(GemmPoint {
            m: inputs,
            k: b,
            n: units,
            kind: "gradient",
            threads: threads.max(1),
            gflops: flops / seconds / 1e9,
            seconds_per_call: seconds,
        });
    }
    points
}

/// GFLOP/s of the square product `C(size, size) = A·B` on `threads` threads, timed like
/// [`measure_ff_shapes`] (one untimed call, then calls until `min_time` has elapsed).
pub fn square_gflops(size: usize, threads: usize, min_time: Duration) -> f64 {
    let mut rng = Rng::derive(0, "bench-square", size as u64);
    let a = random_matrix(&mut rng, size, size);
    let b = random_matrix(&mut rng, size, size);
    let mut c = Array2::<f32>::zeros((size, size));
    let par = threads_arg(threads);
    let seconds = time_calls(min_time, || {
        gemm(1.0, &a.view(), &b.view(), 0.0, &mut c.view_mut(), par);
    });
    black_box(&c);
    2.0 * (size as f64).powi(3) / seconds / 1e9
}

/// The CPU model from `/proc/cpuinfo` (its first `model name` line, `"unknown cpu"` where there
/// is none) followed by `", N cores"`, N being [`std::thread::available_parallelism`]. A model
/// name without a number (a cloud's bare `AMD EPYC`) gets the CPU family and model too: the
/// machines of this project have reported a Zen 4 (family 25) and a Zen 5 (family 26) under
/// the same name, with twice the FMA peak on the second, so a record must tell them apart.
pub fn machine_name() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{}, {cores} cores", cpu_model(&cpuinfo))
}

/// The model of the first processor in `cpuinfo` (the text of `/proc/cpuinfo`).
fn cpu_model(cpuinfo: &str) -> String {
    // The first line `key : value` (a key that is a prefix of another, `model` of `model
    // name`, matches only itself), its value when not empty.
    let field = |key: &str| {
        cpuinfo
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, value)| value.trim().to_string())
            .filter(|value| !value.is_empty())
    };
    let Some(name) = field("model name") else { return "unknown cpu".to_string() };
    match (name.chars().any(|c| c.is_ascii_digit()), field("cpu family"), field("model")) {
        (false, Some(family), Some(model)) => format!("{name} (family {family}, model {model})"),
        _ => name,
    }
}

/// One thread for 0 or 1, else a pool of `threads`.
pub(crate) fn threads_arg(threads: usize) -> Threads {
    if threads <= 1 {
        Threads::One
    } else {
        Threads::Pool(threads)
    }
}

/// Values in [-0.5, 0.5): no denormals, no overflow however often the gradient accumulates.
fn random_matrix(rng: &mut Rng, rows: usize, cols: usize) -> Array2<f32> {
    Array2::from_shape_simple_fn((rows, cols), || rng.uniform() - 0.5)
}

/// Seconds per call of `f`: one untimed warm-up call, then calls until `min_time` has elapsed
/// (at least one).
fn time_calls(min_time: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut calls = 0u64;
    loop {
        f();
        calls += 1;
        let elapsed = start.elapsed();
        if elapsed >= min_time {
            return elapsed.as_secs_f64() / calls as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fma_peak_is_positive_and_finite() {
        for threads in [1, 2] {
            let peak = fma_peak_gflops(threads, Duration::from_millis(200));
            assert!(peak.is_finite() && peak > 0.0, "{threads} threads: {peak}");
        }
    }

    #[test]
    fn tiny_gemm_points_are_measured() {
        let points = measure_ff_shapes(&[1, 3], 5, 7, 1, Duration::from_millis(5));
        assert_eq!(points.len(), 4);
        assert_eq!(points[0].kind, "forward");
        assert_eq!((points[1].kind, points[1].m, points[1].k, points[1].n), ("gradient", 5, 1, 7));
        for p in &points {
            assert!(p.gflops > 0.0 && p.gflops.is_finite(), "{p:?}");
            assert!(p.seconds_per_call > 0.0);
        }
        assert!(square_gflops(8, 1, Duration::from_millis(5)) > 0.0);
        assert!(machine_name().ends_with(" cores"));
    }

    #[test]
    fn a_bare_model_name_gets_its_family_and_model() {
        let zen5 =
            "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n";
        assert_eq!(cpu_model(zen5), "AMD EPYC (family 26, model 2)");
        let xeon = "cpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\n";
        assert_eq!(cpu_model(xeon), "Intel(R) Xeon(R) Platinum 8488C");
        assert_eq!(cpu_model("processor\t: 0\n"), "unknown cpu");
    }
}
