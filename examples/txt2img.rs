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
    // RGB [height, width, 3] in [0, 1] → 8-bit PNG.
    let bytes: Vec<u8> = image
        .image
        .iter()
        .map(|v| (v * 255.0).round() as u8)
        .collect();
    let file = std::fs::File::create(out).map_err(|source| sd_wgpu::Error::Io {
        path: out.into(),
        source,
    })?;
    let mut enc = png::Encoder::new(
        std::io::BufWriter::new(file),
        image.width as u32,
        image.height as u32,
    );
    enc.set_color(png::ColorType::Rgb);
    let write = |e: png::EncodingError| sd_wgpu::Error::Io {
        path: out.into(),
        source: std::io::Error::other(e),
    };
    enc.write_header()
        .map_err(write)?
        .write_image_data(&bytes)
        .map_err(write)?;
    eprintln!("wrote {out}");
    Ok(())
}
