//! Text-to-image through the library API: load a diffusers folder on our own device,
//! generate with a progress callback, save a PNG.
//!
//! `cargo run --release --example txt2img -- path/to/diffusers-folder "a red sneaker" out.png`

use sd_wgpu::pipeline::{Pipeline, Request};
use sd_wgpu::weights::WeightDType;
use sd_wgpu::{Gpu, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, prompt, out] = &args[..] else {
        eprintln!("usage: txt2img MODEL_DIR PROMPT OUT.png");
        std::process::exit(2);
    };
    // Gpu::from_device(device, queue) instead, to share a host application's device.
    let gpu = Gpu::new()?;
    let pipe = Pipeline::load(&gpu, model.as_ref(), WeightDType::Auto)?;
    let req = Request {
        prompt: prompt.clone(),
        steps: 20,
        seed: 1,
        ..Request::default()
    };
    let image = pipe.generate(&gpu, &req, &mut |p| {
        eprintln!("step {}/{}", p.step, p.steps);
        true // return false to cancel
    })?;
    sd_wgpu::imageio::write_png(out.as_ref(), &image.image, image.width, image.height, &[])?;
    eprintln!("wrote {out}");
    Ok(())
}
