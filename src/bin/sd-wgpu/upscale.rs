//! `sd-wgpu upscale`: the 4× upscaler (diffusers' `StableDiffusionUpscalePipeline`).

use super::DTypeArg;
use super::generate::{numbered, step_bar};
use anyhow::{Context, Result, bail};
use sd_wgpu::files;
use sd_wgpu::gpu::Gpu;
use sd_wgpu::imageio::ImageFormat;
use sd_wgpu::pipeline::{Pipeline, Request, Upscale};
use sd_wgpu::schedulers::SamplerKind;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct UpscaleArgs {
    /// An upscaler model folder (stable-diffusion-x4-upscaler's diffusers layout).
    #[arg(long)]
    model: PathBuf,
    /// The low-res image (resized down to a multiple of 4 px with bicubic, as diffusers does,
    /// when it is not one).
    #[arg(long)]
    image: PathBuf,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Noise added to the low-res image (the U-Net's class label), 0 to the model's
    /// max_noise_level (350).
    #[arg(long, default_value_t = 20)]
    noise_level: u32,
    #[arg(long, default_value_t = 75)]
    steps: usize,
    #[arg(long, default_value_t = 9.0)]
    guidance: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images of the one input in one U-Net call (diffusers' `num_images_per_prompt`),
    /// written as OUT-000.png, OUT-001.png, … when more than one.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    batch_size: u64,
    /// A sampler name as `generate` takes them (default: the model's scheduler).
    #[arg(long)]
    sampler: Option<String>,
    /// The low-res image's noise, f32 .npy [1, 3, h, w] (diffusers' first draw).
    #[arg(long)]
    noise: Option<PathBuf>,
    /// The initial latents, f32 .npy [batch, 4, h, w] (diffusers' `latents=`).
    #[arg(long)]
    init_latents: Option<PathBuf>,
    /// The VAE in tiles: on (`--vae-tiling` alone), off, or auto (tiled when needed to fit).
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "on", default_value = "auto")]
    vae_tiling: super::generate::VaeTilingArg,
    #[arg(long)]
    dtype: Option<DTypeArg>,
    #[arg(long, default_value = "upscaled.png")]
    out: PathBuf,
    #[arg(long)]
    overwrite: bool,
}

pub fn upscale(a: &UpscaleArgs) -> Result<()> {
    let n = a.batch_size as usize;
    let outs: Vec<PathBuf> = (0..n).map(|k| numbered(&a.out, k, n)).collect();
    for o in &outs {
        files::check_output_path(o, a.overwrite)?;
    }
    let format = ImageFormat::from_path(&a.out)?;
    let gpu = Gpu::new()?;
    let pipe = Pipeline::load(&gpu, &a.model, super::weight_dtype(a.dtype))
        .with_context(|| format!("loading {}", a.model.display()))?;
    let Some(up) = &pipe.upscaler else {
        bail!(
            "{} is not an upscaler model (no low_res_scheduler/)",
            a.model.display()
        );
    };
    if let Some(s) = up.vae_scaling_factor_in_config {
        eprintln!(
            "note: the VAE's scaling_factor {s} is replaced by the upscaler's 0.08333 (as diffusers does)"
        );
    }
    let f = pipe.vae_scale_factor();
    let (w, h, rgb) = sd_wgpu::imageio::read_image_rgb(&a.image)?;
    let (rgb, w, h, msg) =
        sd_wgpu::imageio::resize_to_multiple(&rgb, w, h, f, sd_wgpu::resample::Filter::Bicubic);
    if let Some(m) = msg {
        eprintln!("note: {m}");
    }
    let npy = |p: &Option<PathBuf>, shape: [usize; 4]| -> Result<Option<Vec<f32>>> {
        let Some(p) = p else { return Ok(None) };
        let (s, v) = sd_wgpu::npy::read_f32(p)?;
        if s != shape {
            bail!("{}: shape {s:?}, expected {shape:?}", p.display());
        }
        Ok(Some(v))
    };
    let req = Request {
        prompt: a.prompt.clone(),
        negative_prompt: a.negative_prompt.clone(),
        steps: a.steps,
        guidance: a.guidance,
        sampler: a.sampler.as_deref().map(SamplerKind::parse).transpose()?,
        width: w * f,
        height: h * f,
        seed: a.seed,
        batch_size: n,
        init_latents: npy(&a.init_latents, [n, 4, h, w])?,
        vae_tiling: a.vae_tiling.policy(),
        upscale: Some(Upscale {
            rgb,
            noise_level: a.noise_level,
            noise: npy(&a.noise, [1, 3, h, w])?,
        }),
        ..Request::default()
    };
    let bar = step_bar(a.steps, "upscaling".to_string());
    let out = pipe.generate(&gpu, &req, &mut |p| {
        bar.set_length(p.steps as u64);
        bar.set_position(p.step as u64);
        true
    })?;
    bar.finish_and_clear();
    if let Some(px) = out.vae_tiled_automatically {
        eprintln!(
            "note: the exact VAE pass would not fit the memory budget; it ran in {px} px tiles"
        );
    }
    let text = format!(
        "{}\nSteps: {}, Seed: {}, Noise level: {}, CFG scale: {}, Size: {}x{}",
        a.prompt, a.steps, a.seed, a.noise_level, a.guidance, out.width, out.height
    );
    // Every image encoded before any is written: an encoding error leaves no file behind.
    let per_image = out.width * out.height * 3;
    let encoded = out
        .image
        .chunks(per_image)
        .map(|img| {
            sd_wgpu::imageio::encode_image(
                format,
                img,
                out.width,
                out.height,
                &[("parameters", &text)],
            )
        })
        .collect::<sd_wgpu::Result<Vec<_>>>()?;
    for (path, bytes) in outs.iter().zip(&encoded) {
        files::write_atomic(path, bytes, a.overwrite)?;
        eprintln!(
            "wrote {} ({}x{} from {w}x{h})",
            path.display(),
            out.width,
            out.height
        );
    }
    Ok(())
}
