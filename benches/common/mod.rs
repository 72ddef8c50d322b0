//! Shared bench harness: an op is recorded once, then its dispatches are replayed `iters`
//! times in one compute pass and timed on the GPU (timestamp queries where the device has
//! them, else submit-to-completion wall time). Each bench also prints its throughput on one
//! line and appends it to `target/bench-results.tsv` (the README's table is made from it),
//! with a reference matmul's throughput timed in alternation with it ([`paired`]): a CPU
//! device's speed drifts by 2–3× within minutes, so each row's "vs matmul peak" is the
//! median of five row / reference pairs measured seconds apart.

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

/// Seconds of one run of `dispatches` (one submission).
fn once(dispatches: &[Dispatch]) -> f64 {
    let mut rec = Recorder::new(gpu());
    rec.replay(dispatches);
    rec.submit_timed().expect("timed submit").as_secs_f64()
}

/// FLOPs of the reference product.
const PEAK_FLOP: f64 = 2.0 * (PEAK_M * PEAK_K * PEAK_N) as f64;
const PEAK_M: usize = 1024;
const PEAK_K: usize = 768;
const PEAK_N: usize = 3072;

/// The reference product, recorded once: `[1024×768]·[768×3072]` f32 (CLIP's `fc1` shape
/// at 1024 rows), its weight laid out as linears load it on this device (panel-packed on
/// CPU devices).
fn peak_dispatches() -> &'static [Dispatch] {
    static PEAK: OnceLock<Vec<Dispatch>> = OnceLock::new();
    PEAK.get_or_init(|| {
        let g = gpu();
        let a = tensor(&[PEAK_M, PEAK_K], DType::F32, 101);
        let w = normals(PEAK_K * PEAK_N, 1.0, 102);
        let w = if g.gemm_variant() == sd_wgpu::gpu::GemmVariant::Subgroup {
            Tensor::from_f32_panels(g, &w, (PEAK_K, PEAK_N), DType::F32, "peak")
        } else {
            Tensor::from_f32(g, &w, &[PEAK_K, PEAK_N], DType::F32, "peak")
        }
        .expect("upload");
        let mut rec = Recorder::new(g);
        sd_wgpu::ops::matmul(&mut rec, &a, &w, None).expect("matmul");
        let d = rec.take();
        once(&d); // compile, warm
        d
    })
}

/// Single runs of a row alternating with the reference product, `PAIRS` of each: the
/// row's best time, the reference's best GFLOP/s, and the median over the pairs of the
/// row's speed over the reference's (a ratio that a drifting device moves little).
const PAIRS: usize = 5;
fn paired(dispatches: &[Dispatch]) -> (f64, f64, f64) {
    let peak = peak_dispatches();
    let pairs: Vec<(f64, f64)> = (0..PAIRS).map(|_| (once(dispatches), once(peak))).collect();
    let best = pairs.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let best_peak = pairs.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    // Speed ratio row / reference = (1 / t_row) / (1 / t_peak), in FLOP terms by the caller.
    let mut ratios: Vec<f64> = pairs.iter().map(|&(r, p)| p / r).collect();
    ratios.sort_by(f64::total_cmp);
    (best, PEAK_FLOP / best_peak / 1e9, ratios[PAIRS / 2])
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

    // Our own summary line: the best of single runs alternating with the reference
    // matmul's, and the median ratio of the pairs.
    let (best, peak, time_ratio) = paired(&dispatches);
    let (value, unit) = match work {
        Work::Flops(f) => (f as f64 / best / 1e9, "GFLOP/s"),
        Work::Bytes(b) => (b as f64 / best / 1e9, "GB/s"),
    };
    let adapter = &gpu.adapter_info().name;
    let pct = match work {
        Work::Flops(f) => format!("{:.1}", 100.0 * time_ratio * f as f64 / PEAK_FLOP),
        Work::Bytes(_) => String::new(),
    };
    let rel = if pct.is_empty() {
        "next to".to_string()
    } else {
        format!("{pct} % of")
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
            "{group}/{id}\t{value:.3}\t{unit}\t{:.4}\t{adapter}\t{peak:.3}\t{pct}",
            best * 1e3
        );
    }
}
