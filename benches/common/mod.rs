//! Shared bench harness: an op is recorded once, then its dispatches are replayed `iters`
//! times in one compute pass and timed on the GPU (timestamp queries where the device has
//! them, else submit-to-completion wall time). Each bench also prints its throughput on one
//! line and appends it to `target/bench-results.tsv` (the README's table is made from it).

#![allow(dead_code)]

use criterion::{Criterion, SamplingMode, Throughput};
use sd_wgpu::gpu::Dispatch;
use sd_wgpu::{DType, Gpu, Recorder, Tensor};
use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new().unwrap_or_else(|e| panic!("benches need a wgpu adapter: {e}")))
}

/// Deterministic N(0, std²) data.
pub fn normals(n: usize, std: f32, seed: u64) -> Vec<f32> {
    sd_wgpu::rng::SplitMix64::new(seed).normals(n, std)
}

pub fn tensor(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_f32(gpu(), &normals(n, 1.0, seed), shape, dtype, "bench").expect("upload")
}

/// What a bench measures per run of the op.
#[derive(Clone, Copy)]
pub enum Work {
    Flops(u64),
    Bytes(u64),
}

/// Benchmarks the dispatches that `record` makes, as `group/id`.
pub fn bench(
    c: &mut Criterion,
    group: &str,
    id: &str,
    work: Work,
    record: impl FnOnce(&mut Recorder<'static>),
) {
    let gpu = gpu();
    let mut rec = Recorder::new(gpu);
    record(&mut rec);
    let dispatches: Vec<Dispatch> = rec.take();
    let run = |iters: u64| -> Duration {
        let mut rec = Recorder::new(gpu);
        for _ in 0..iters {
            rec.replay(&dispatches);
        }
        rec.submit_timed().expect("timed submit")
    };
    run(1); // compile pipelines, warm caches
    let mut g = c.benchmark_group(group);
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.throughput(match work {
        Work::Flops(f) => Throughput::Elements(f),
        Work::Bytes(b) => Throughput::Bytes(b),
    });
    g.bench_function(id, |b| b.iter_custom(run));
    g.finish();

    // Our own summary line: best of 3 single runs.
    let best = (0..3)
        .map(|_| run(1))
        .min()
        .unwrap_or_default()
        .as_secs_f64();
    let (value, unit) = match work {
        Work::Flops(f) => (f as f64 / best / 1e9, "GFLOP/s"),
        Work::Bytes(b) => (b as f64 / best / 1e9, "GB/s"),
    };
    let adapter = &gpu.adapter_info().name;
    println!(
        "RESULT\t{group}/{id}\t{value:.2} {unit}\t{:.3} ms\t{adapter}",
        best * 1e3
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-results.tsv");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(
            f,
            "{group}/{id}\t{value:.3}\t{unit}\t{:.4}\t{adapter}",
            best * 1e3
        );
    }
}
