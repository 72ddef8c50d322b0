//! Quick throughput probe of the compute-bound kernels on this device, with the default
//! GEMM core (a development aid; `cargo bench` is the measurement of record).
//! `cargo run --release --example gemm_probe`
use sd_wgpu::ops::{self, AttentionOptions, Conv2dOptions};
use sd_wgpu::{DType, Gpu, Recorder, Tensor};

fn best_of(
    gpu: &Gpu,
    runs: usize,
    mut record: impl FnMut(&mut Recorder<'_>),
) -> Result<f64, sd_wgpu::Error> {
    let mut best = f64::MAX;
    for _ in 0..runs {
        let mut rec = Recorder::new(gpu);
        record(&mut rec);
        best = best.min(rec.submit_timed()?.as_secs_f64());
    }
    Ok(best)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gpu = Gpu::new()?;
    println!(
        "{} — GEMM core {:?}",
        gpu.adapter_info().name,
        gpu.gemm_variant()
    );
    let t = |shape: &[usize], dt| {
        Tensor::from_f32(&gpu, &vec![0.01; shape.iter().product()], shape, dt, "x")
    };
    let (m, k, n) = (1024, 1024, 1024);
    let (a, b) = (t(&[m, k], DType::F32)?, t(&[k, n], DType::F32)?);
    let s = best_of(&gpu, 3, |r| drop(ops::matmul(r, &a, &b, None).unwrap()))?;
    let peak = 2.0 * (m * k * n) as f64 / s / 1e9;
    println!("matmul 1024^3            {peak:6.2} GFLOP/s");
    let x = t(&[2, 32, 32, 320], DType::F32)?;
    let w = t(&[3, 3, 320, 320], DType::F32)?;
    let s = best_of(&gpu, 3, |r| {
        drop(ops::conv2d(r, &x, &w, None, None, Conv2dOptions::new(1, 1)).unwrap())
    })?;
    let g = 2.0 * (2 * 32 * 32 * 320 * 9 * 320) as f64 / s / 1e9;
    println!(
        "conv 3x3 320 32x32 b2    {g:6.2} GFLOP/s ({:.0}% of matmul)",
        100.0 * g / peak
    );
    for (nq, d, heads) in [
        (1024, 40, 8),
        (1024, 80, 8),
        (1024, 64, 5),
        (256, 160, 8),
        (1024, 512, 1),
    ] {
        let q = t(&[1, nq, heads * d], DType::F32)?;
        let opts = AttentionOptions {
            heads,
            causal: false,
            scale: None,
        };
        let s = best_of(&gpu, 3, |r| {
            drop(ops::attention(r, &q, &q, &q, opts).unwrap())
        })?;
        let g = 4.0 * (nq * nq * heads * d) as f64 / s / 1e9;
        println!(
            "attention {nq}² {heads}x{d}      {g:6.2} GFLOP/s ({:.0}% of matmul)",
            100.0 * g / peak
        );
    }
    Ok(())
}
