//! Shared bench harness: an op is recorded once, then its dispatches are replayed `iters`
//! times in one compute pass and timed on the GPU (timestamp queries where the device has
//! them, else submit-to-completion wall time). Each bench also prints its throughput on one
//! line and appends it to `target/bench-results.tsv` (the README's table is made from it),
//! with the throughput of a reference matmul timed right after it ([`peak`]): a CPU
//! device's speed drifts by 2–3× within minutes, so each row's "vs matmul peak" is taken
//! against a peak measured in the same seconds.

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

/// Best of three runs of `dispatches` (one submission each), in seconds.
fn best_of_3(dispatches: &[Dispatch]) -> f64 {
    (0..3)
        .map(|_| {
            let mut rec = Recorder::new(gpu());
            rec.replay(dispatches);
            rec.submit_timed().expect("timed submit")
        })
        .min()
        .unwrap_or_default()
        .as_secs_f64()
}

/// The reference product's throughput now, GFLOP/s: `[1024×768]·[768×3072]` f32 (CLIP's
/// `fc1` shape at 1024 rows), its weight laid out as linears load it on this device
/// (panel-packed on CPU devices), the best-of-3 of a single run as for the rows.
pub fn peak() -> f64 {
    const M: usize = 1024;
    const K: usize = 768;
    const N: usize = 3072;
    static PEAK: OnceLock<Vec<Dispatch>> = OnceLock::new();
    let dispatches = PEAK.get_or_init(|| {
        let g = gpu();
        let a = tensor(&[M, K], DType::F32, 101);
        let w = normals(K * N, 1.0, 102);
        let w = if g.gemm_variant() == sd_wgpu::gpu::GemmVariant::Subgroup {
            Tensor::from_f32_panels(g, &w, (K, N), DType::F32, "peak")
        } else {
            Tensor::from_f32(g, &w, &[K, N], DType::F32, "peak")
        }
        .expect("upload");
        let mut rec = Recorder::new(g);
        sd_wgpu::ops::matmul(&mut rec, &a, &w, None).expect("matmul");
        let d = rec.take();
        best_of_3(&d); // compile, warm
        d
    });
    2.0 * (M * K * N) as f64 / best_of_3(dispatches) / 1e9
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

    // Our own summary line: best of 3 single runs, then the reference matmul's.
    let best = best_of_3(&dispatches);
    let peak = peak();
    let (value, unit) = match work {
        Work::Flops(f) => (f as f64 / best / 1e9, "GFLOP/s"),
        Work::Bytes(b) => (b as f64 / best / 1e9, "GB/s"),
    };
    let adapter = &gpu.adapter_info().name;
    let rel = match work {
        Work::Flops(_) => format!("{:.0} % of", 100.0 * value / peak),
        Work::Bytes(_) => "next to".into(),
    };
    println!(
        "RESULT\t{group}/{id}\t{value:.2} {unit}\t{:.3} ms\t{rel} matmul {peak:.2} GFLOP/s\t{adapter}",
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
            "{group}/{id}\t{value:.3}\t{unit}\t{:.4}\t{adapter}\t{peak:.3}",
            best * 1e3
        );
    }
}
