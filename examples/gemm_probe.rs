//! Times matmul with each GEMM core on this device (a development aid).
//! `cargo run --release --example gemm_probe -- 1024 1024 1024`
use sd_wgpu::gpu::GemmVariant;
use sd_wgpu::{DType, Gpu, GpuOptions, Recorder, Tensor, ops};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (m, k, n) = match args[..] {
        [m, k, n] => (m, k, n),
        _ => (1024, 1024, 1024),
    };
    for gemm in [GemmVariant::Tiled, GemmVariant::Subgroup] {
        let gpu = match Gpu::with_options(&GpuOptions {
            gemm: Some(gemm),
            ..Default::default()
        }) {
            Ok(g) => g,
            Err(e) => {
                println!("{gemm:?}: {e}");
                continue;
            }
        };
        let a = Tensor::from_f32(&gpu, &vec![0.5; m * k], &[m, k], DType::F32, "a")?;
        let b = Tensor::from_f32(&gpu, &vec![0.25; k * n], &[k, n], DType::F32, "b")?;
        let mut best = f64::MAX;
        for _ in 0..3 {
            let mut rec = Recorder::new(&gpu);
            ops::matmul(&mut rec, &a, &b, None)?;
            best = best.min(rec.submit_timed()?.as_secs_f64());
        }
        println!(
            "{gemm:?} {m}x{k}x{n}: {:.2} GFLOP/s ({:.1} ms)",
            2.0 * (m * k * n) as f64 / best / 1e9,
            best * 1e3
        );
    }
    Ok(())
}
