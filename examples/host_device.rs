//! A host application that already owns a wgpu device hands it to the engine, records a few
//! ops into one submission, and reads the result back.
//!
//! `cargo run --release --example host_device`

use sd_wgpu::ops::{self, Conv2dOptions};
use sd_wgpu::{DType, Gpu, Recorder, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The host's own device (here made the plain wgpu way).
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))?;
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))?;
    let gpu = Gpu::from_device(device, queue);
    println!(
        "engine on {} ({:?})",
        gpu.adapter_info().name,
        gpu.adapter_info().backend
    );

    // A channels-last image [n, h, w, c] through conv → group-norm + SiLU → 2× upsample.
    let (h, w, cin, cout) = (16, 16, 4, 32);
    let x: Vec<f32> = (0..h * w * cin).map(|i| (i as f32 * 0.37).sin()).collect();
    let x = Tensor::from_f32(&gpu, &x, &[1, h, w, cin], DType::F32, "latents")?;
    // Weights in f16 storage, laid out [kh, kw, cin, cout].
    let wt: Vec<f32> = (0..9 * cin * cout)
        .map(|i| ((i % 7) as f32 - 3.0) * 0.05)
        .collect();
    let wt = Tensor::from_f32(&gpu, &wt, &[3, 3, cin, cout], DType::F16, "conv_in.weight")?;
    let gamma = Tensor::from_f32(&gpu, &vec![1.0; cout], &[cout], DType::F32, "norm.weight")?;
    let beta = Tensor::zeros(&gpu, &[cout], DType::F32, "norm.bias")?;

    let mut rec = Recorder::new(&gpu);
    let y = ops::conv2d(&mut rec, &x, &wt, None, None, Conv2dOptions::new(1, 1))?; // [1, 16, 16, 32]
    let y = ops::group_norm(&mut rec, &y, 8, &gamma, &beta, 1e-5, true)?; // same shape
    let y = ops::upsample_nearest2x(&mut rec, &y)?; // [1, 32, 32, 32]
    println!("{} dispatches recorded, submitting once", rec.len());
    let gpu_time = rec.submit_timed()?;
    let out = y.to_vec(&gpu)?;
    println!(
        "output {:?}, mean {:.4}, GPU time {:?}",
        y.shape(),
        out.iter().sum::<f32>() / out.len() as f32,
        gpu_time
    );
    println!("engine memory: {:?}", gpu.memory_stats());
    Ok(())
}
