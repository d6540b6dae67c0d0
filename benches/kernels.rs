//! The FF stage kernels under criterion (issue 11): one packet through a stage (`process`, then
//! `learn`: forward product, normalization, goodness, the learning direction, the gradient
//! product and the optimizer step), the matrix products alone, and the element-wise passes.
//!
//! `cargo bench --bench kernels` (a minute or two); `-- --save-baseline before` and later
//! `-- --baseline before` compare a change against a saved run on the same machine. Throughput
//! is reported in FLOPs of the products (criterion's "elements/s"), so a stage's figure reads
//! against `ffstream bench`'s measured peak; `ffstream bench` keeps the ratios that go into
//! `benches/results/`.

use criterion::measurement::WallTime;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput};
use ffstream::ff::fields::{Fields, MapShape};
use ffstream::matmul::{gemm, Threads};
use ffstream::packet::{Packet, Purpose};
use ffstream::rng::Rng;
use ffstream::stage::{FfDenseConfig, FfLocalConfig, FfSettings, Stage};
use ndarray::Array2;

fn settings() -> FfSettings {
    FfSettings {
        goodness: ffstream::ff::goodness::Goodness::SumSquares,
        threshold: None,
        temperature: 1.0,
        peer_normalization: 0.03,
        rule: ffstream::ff::optim::Rule::Matlab,
        lr: 0.01,
        weight_cost: 0.001,
        schedule: ffstream::ff::optim::Schedule::Constant,
        epochs: 1,
        counts_for_goodness: true,
        feeds_readout: false,
        seed: 0,
        threads: 1,
    }
}

/// A training packet of `batch` positive and `batch` negative rows.
fn packet(batch: usize, inputs: usize) -> Packet {
    let mut rng = Rng::new(1);
    let rows = 2 * batch;
    let x = Array2::from_shape_simple_fn((rows, inputs), || rng.normal().abs());
    Packet { positives: batch, negatives: batch, embedded: vec![0; rows], ..Packet::new(0, 1, Purpose::Train, x) }
}

/// One packet through `stage` as the runtime passes it: `process`, then `learn` (a fresh copy
/// of `packet` each time, made outside the timing).
fn bench_packet(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, stage: &mut dyn Stage, packet: &Packet) {
    group.bench_function(name, |b| {
        b.iter_batched(
            || packet.clone(),
            |p| {
                let out = stage.process(p).unwrap();
                stage.learn();
                black_box(out)
            },
            BatchSize::SmallInput,
        )
    });
}

/// A dense stage's packet: 3 products of `rows x inputs x units` (forward, gradient, and the
/// learning direction's share counted as one).
fn dense(c: &mut Criterion) {
    let mut group = c.benchmark_group("ff_dense packet");
    for (inputs, units) in [(784, 2000), (2000, 2000)] {
        let batch = 100;
        let mut stage = FfDenseConfig { name: "layer1".into(), layer: 1, inputs, units, ff: settings() }.build();
        let p = packet(batch, inputs);
        group.throughput(Throughput::Elements((2 * 2 * (2 * batch) * inputs * units) as u64));
        bench_packet(&mut group, &format!("{inputs}x{units}, batch {batch}"), &mut stage, &p);
    }
    group.finish();
}

/// E7's first local layer, smaller: a 16x16x3 map of 3 units per position on 11x11 fields.
fn local(c: &mut Criterion) {
    let fields = Fields { input: MapShape::new(16, 16, 3), size: 11, stride: 1, padding: 5 };
    let mut stage =
        FfLocalConfig { name: "layer1".into(), layer: 1, fields, channels: 3, shared: false, ff: settings() }
            .build()
            .unwrap();
    let p = packet(50, 16 * 16 * 3);
    let mut group = c.benchmark_group("ff_local packet");
    // Per row and position: 11x11x3 weights times 3 units, forward and gradient.
    group.throughput(Throughput::Elements((2 * 2 * 100 * 16 * 16 * 11 * 11 * 3 * 3) as u64));
    bench_packet(&mut group, "16x16x3, 11x11 fields, batch 50", &mut stage, &p);
    group.finish();
}

/// The products alone, as a stage calls them.
fn products(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm");
    for (rows, inputs, units) in [(200, 784, 2000), (200, 2000, 2000)] {
        let x = Array2::<f32>::from_elem((rows, inputs), 0.5);
        let w = Array2::<f32>::from_elem((inputs, units), 0.25);
        let mut y = Array2::<f32>::zeros((rows, units));
        group.throughput(Throughput::Elements((2 * rows * inputs * units) as u64));
        group.bench_function(format!("{rows}x{inputs} . {inputs}x{units}"), |b| {
            b.iter(|| gemm(1.0, &x.view(), &w.view(), 0.0, &mut y.view_mut(), Threads::One))
        });
    }
    group.finish();
}

/// The element-wise pass every stage makes on its activities.
fn elementwise(c: &mut Criterion) {
    let x = Array2::<f32>::from_shape_fn((200, 2000), |(r, c)| ((r * 7 + c) % 13) as f32 * 0.1);
    let mut group = c.benchmark_group("element-wise");
    group.throughput(Throughput::Elements(x.len() as u64));
    group.bench_function("normalize 200x2000", |b| {
        b.iter(|| black_box(ffstream::ff::normalize::normalize_rows(&x.view())))
    });
    group.finish();
}

criterion_group!(kernels, dense, local, products, elementwise);
criterion_main!(kernels);
