//! `sd-wgpu generate`: arguments, outputs checked before any work, the run and its files.

use super::{DTypeArg, OffloadArg, PredictionArg, default_model, parse_size};
use anyhow::{Context, Result, bail};
use sd_wgpu::files::{self, PendingFile};
use sd_wgpu::gpu::{self, Gpu};
use sd_wgpu::imageio::ImageFormat;
use sd_wgpu::infotext::Infotext;
use sd_wgpu::pipeline::{InitImage, LoadOptions, LongPrompt, Pipeline, Request};
use sd_wgpu::resample::Filter;
use sd_wgpu::schedulers::{Prediction, SamplerKind, Spacing};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// A diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/, ...) or a
    /// single-file original checkpoint (.safetensors). Default: the built-in Fashion model
    /// (assets/fashion-model; SD_WGPU_DEFAULT_MODEL overrides where it is).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long)]
    prompt: String,
    /// What the image should not show. SDXL: without this flag the unconditional context is
    /// zeros (`force_zeros_for_empty_prompt`); `--negative-prompt ""` encodes the empty text.
    #[arg(long)]
    negative_prompt: Option<String>,
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// SDXL micro-conditioning `H,W` (diffusers' `original_size`; default: the image size).
    #[arg(long, value_parser = parse_pair)]
    original_size: Option<(usize, usize)>,
    /// SDXL micro-conditioning `TOP,LEFT` (diffusers' `crops_coords_top_left`).
    #[arg(long, value_parser = parse_pair, default_value = "0,0")]
    crop_coords: (usize, usize),
    /// SDXL micro-conditioning `H,W` (diffusers' `target_size`; default: the image size).
    #[arg(long, value_parser = parse_pair)]
    target_size: Option<(usize, usize)>,
    /// SDXL: the unconditional row's own `original_size` `H,W` (with --negative-target-size).
    #[arg(long, value_parser = parse_pair, requires = "negative_target_size")]
    negative_original_size: Option<(usize, usize)>,
    /// SDXL: the unconditional row's crop `TOP,LEFT` (with the two negative sizes).
    #[arg(long, value_parser = parse_pair, default_value = "0,0")]
    negative_crop_coords: (usize, usize),
    /// SDXL: the unconditional row's own `target_size` `H,W` (with --negative-original-size).
    #[arg(long, value_parser = parse_pair, requires = "negative_original_size")]
    negative_target_size: Option<(usize, usize)>,
    /// Classifier-free guidance scale (≤ 1 skips the unconditional pass; Turbo models take
    /// 0). An LCM-distilled U-Net takes it as its guidance embedding, without a second pass.
    #[arg(long, default_value_t = 7.5)]
    guidance: f32,
    /// ddim, ddpm, pndm, euler, euler-a, heun, dpm2, dpm2-a, lms, dpm++2m[-karras],
    /// dpm++2m-sde[-karras], dpm++sde, unipc, deis, lcm, or the web UI's names (default: the model's
    /// own).
    #[arg(long)]
    sampler: Option<String>,
    /// Timestep spacing: leading, trailing, linspace (default: the model's scheduler config;
    /// Turbo models sample with trailing).
    #[arg(long)]
    spacing: Option<String>,
    /// σ schedule for euler, heun, dpm2, lms and the dpm++ samplers: karras, exponential, beta or
    /// plain
    /// (default: the model's scheduler config).
    #[arg(long)]
    schedule: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Default: the model's native size (SD 1.x 512, SD 2.1 768, the built-in model 32).
    #[arg(long)]
    width: Option<usize>,
    /// Default: the model's native size.
    #[arg(long)]
    height: Option<usize>,
    /// The image file; the format follows the extension (.png, .jpg/.jpeg, .webp), with the
    /// parameters embedded in AUTOMATIC1111's format. An existing file is never replaced
    /// unless --overwrite.
    #[arg(long, default_value = "image.png")]
    out: PathBuf,
    /// Replace existing output files (--out and its numbered batch names, --latents-out,
    /// --preview). Never through a symbolic link.
    #[arg(long)]
    overwrite: bool,
    /// Time every dispatch (timestamp queries) and print GPU time per stage, the last step by
    /// op family and its 10 most expensive dispatches (slows the run: each submission waits).
    #[arg(long)]
    profile: bool,
    /// Largest init image or mask, in pixels, checked from the file header before decoding
    /// (default: SD_WGPU_MAX_IMAGE_PIXELS, else 16777216 = 4096x4096).
    #[arg(long)]
    max_image_pixels: Option<u64>,
    /// float32 [1, 4, h/8, w/8] .npy: diffusers' `latents=` (scaled by init_noise_sigma).
    #[arg(long)]
    init_latents: Option<PathBuf>,
    /// Save the final latents (float32 [1, 4, h/8, w/8], before VAE scaling) as .npy.
    #[arg(long)]
    latents_out: Option<PathBuf>,
    /// Take the text encoder's output this many layers before the last.
    #[arg(long, default_value_t = 0)]
    clip_skip: usize,
    /// Weight dtype on the GPU (default: f16 for f16 files, f32 otherwise).
    #[arg(long, value_enum)]
    dtype: Option<DTypeArg>,
    /// Override the scheduler config's prediction type.
    #[arg(long, value_enum)]
    prediction_type: Option<PredictionArg>,
    /// Architecture of a single-file checkpoint: a diffusers folder of config.json files
    /// (and tokenizer/scheduler files) or an original LDM yaml. Default: <stem>.yaml beside
    /// the checkpoint, else inferred from its tensor shapes.
    #[arg(long)]
    config: Option<PathBuf>,
    /// SDXL refiner (a diffusers folder or single file): the model denoises down to
    /// --refiner-start of the schedule, the refiner the rest, and decodes.
    #[arg(long)]
    refiner: Option<PathBuf>,
    /// The fraction of the schedule the base model runs before the refiner (diffusers'
    /// denoising_end / denoising_start).
    #[arg(long, default_value_t = 0.8, requires = "refiner")]
    refiner_start: f64,
    /// SDXL refiner: the aesthetic score in the prompt rows' time ids.
    #[arg(long, default_value_t = 6.0)]
    aesthetic_score: f32,
    /// SDXL refiner: the aesthetic score in the unconditional rows' time ids.
    #[arg(long, default_value_t = 2.5)]
    negative_aesthetic_score: f32,
    /// A VAE instead of the model's (e.g. SDXL's fp16-fix): a diffusers AutoencoderKL folder
    /// (its config's scaling factor and force_upcast apply) or one .safetensors file of the
    /// model's VAE architecture (diffusers or original key names).
    #[arg(long)]
    vae: Option<PathBuf>,
    /// Merge a LoRA, `PATH[:SCALE]` (scale 1 if absent; repeatable): kohya / A1111
    /// (`lora_unet_*`, `lora_te*_*`, LoCon convs) or diffusers / PEFT .safetensors files.
    #[arg(long = "lora", value_name = "PATH[:SCALE]")]
    loras: Vec<String>,
    /// The folder where the prompt's `<lora:NAME:W>` tags find NAME.safetensors.
    #[arg(long)]
    lora_dir: Option<PathBuf>,
    /// LoRA keys that match no weight of the model are warnings instead of an error.
    #[arg(long)]
    lora_lenient: bool,
    /// Image-to-image: start from this PNG, JPEG or WebP (its size, resized down to a multiple
    /// of 8 with Lanczos as diffusers does, is the output size).
    #[arg(long)]
    init_image: Option<PathBuf>,
    /// Image-to-image: how much of the schedule runs, 0..1 (diffusers' `strength`; default
    /// 0.8, or 1.0 with --mask).
    #[arg(long)]
    strength: Option<f64>,
    /// Image-to-image: the Gaussian noise added to the encoded image, float32 [1, 4, h/8, w/8]
    /// .npy (default: drawn from the seed).
    #[arg(long)]
    noise: Option<PathBuf>,
    /// Image-to-image: encode to a `sample` of the VAE posterior (diffusers' default) or its
    /// `mean`.
    #[arg(long, value_enum, default_value = "sample")]
    vae_encode: VaeEncodeArg,
    /// Prompts over 75 tokens: encode them in 77-token `chunk`s (as the common UIs do) or
    /// `truncate` them (as diffusers does).
    #[arg(long, value_enum, default_value = "chunk")]
    long_prompt: LongPromptArg,
    /// Inpainting: an image (PNG, JPEG, WebP) of the init image's size, white = repaint (needs --init-image;
    /// --strength defaults to 1 then).
    #[arg(long)]
    mask: Option<PathBuf>,
    /// Inpainting: paste the original pixels back outside the mask after decoding.
    #[arg(long)]
    keep_unmasked: bool,
    /// Images per U-Net call (one seeded draw for the whole batch, as diffusers'
    /// num_images_per_prompt).
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Runs one after another with seeds seed, seed+1, ...; files are numbered.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch_count: u64,
    /// Write a cheap latent preview every N steps (to --preview).
    #[arg(long, default_value_t = 0)]
    preview_every: usize,
    /// A tiny autoencoder (TAESD for SD 1.x/2.x, TAESDXL for SDXL: a diffusers
    /// AutoencoderTiny folder or file, or the original taesd_decoder.safetensors): decodes the
    /// image (unless --decoder vae) and, with --preview-decoder taesd, the previews.
    #[arg(long)]
    taesd: Option<PathBuf>,
    /// The VAE in tiles (diffusers' enable_tiling): on (`--vae-tiling` alone), off, or auto
    /// (the default: exact, tiled only when the exact pass would not fit the memory budget).
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "on", default_value = "auto")]
    vae_tiling: VaeTilingArg,
    /// The tiled VAE's tile in pixels, a multiple of 4 × the VAE's factor (default: the VAE
    /// config's sample_size).
    #[arg(long)]
    vae_tile_size: Option<usize>,
    /// What decodes the final image: vae or taesd (default: taesd when --taesd is given).
    #[arg(long, value_enum)]
    decoder: Option<DecoderArg>,
    /// What makes the --preview-every previews: latent (a linear map at latent resolution)
    /// or taesd (full resolution; needs --taesd).
    #[arg(long, value_enum, default_value = "latent")]
    preview_decoder: PreviewDecoderArg,
    /// Where --preview-every writes its preview PNG (overwritten each time).
    #[arg(long, default_value = "preview.png")]
    preview: PathBuf,
    /// Device memory the run may use (6GiB, 512MiB, bytes); a request that needs more is
    /// refused before anything is allocated. Default: SD_WGPU_MEMORY_BUDGET, else the
    /// driver's device-local heap (Vulkan).
    #[arg(long, value_parser = parse_size)]
    memory_budget: Option<u64>,
    /// Which networks stay on the device: `auto` keeps them all unless the request fits the
    /// memory budget only with the idle ones released; `always` loads each for its stage
    /// (text encoder, U-Net, VAE) and releases it after; `never` keeps them all.
    #[arg(long, value_enum, default_value = "auto")]
    offload: OffloadArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum VaeTilingArg {
    Auto,
    On,
    Off,
}

impl VaeTilingArg {
    pub(crate) fn policy(self) -> sd_wgpu::pipeline::VaeTiling {
        use sd_wgpu::pipeline::VaeTiling;
        match self {
            VaeTilingArg::Auto => VaeTiling::Auto,
            VaeTilingArg::On => VaeTiling::On,
            VaeTilingArg::Off => VaeTiling::Off,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DecoderArg {
    Vae,
    Taesd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PreviewDecoderArg {
    Latent,
    Taesd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LongPromptArg {
    Chunk,
    Truncate,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum VaeEncodeArg {
    Sample,
    Mean,
}

/// `out` for image `k` of `total`: `out` itself for a single image, else `stem-000.ext`.
pub(super) fn numbered(path: &Path, k: usize, total: usize) -> PathBuf {
    if total == 1 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
    let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("png");
    path.with_file_name(format!("{stem}-{k:03}.{ext}"))
}

/// The sampling progress bar (its length follows the steps the pipeline reports).
pub(super) fn step_bar(steps: usize, msg: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} steps, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(msg);
    bar
}

/// One run's outputs, created (as temporary files beside their targets) before the run.
struct RunOutputs {
    images: Vec<(ImageFormat, PendingFile)>,
    latents: Option<PendingFile>,
}

pub fn generate(a: &GenerateArgs) -> Result<()> {
    let loras = super::lora::run_loras(
        &a.prompt,
        a.negative_prompt.as_deref(),
        &a.loras,
        a.lora_dir.as_deref(),
    )?;
    // Flags that only mean something together, and counts, before anything else.
    for (flag, given) in [
        ("--strength", a.strength.is_some()),
        ("--noise", a.noise.is_some()),
        ("--mask", a.mask.is_some()),
        ("--keep-unmasked", a.keep_unmasked),
    ] {
        if given && a.init_image.is_none() {
            bail!("{flag} needs --init-image");
        }
    }
    if a.keep_unmasked && a.mask.is_none() {
        bail!("--keep-unmasked needs --mask");
    }
    let runs = usize::try_from(a.batch_count)?;
    a.seed.checked_add(a.batch_count - 1).with_context(|| {
        format!(
            "--seed {} with --batch-count {}: the last run's seed would pass 2^64 - 1",
            a.seed, a.batch_count
        )
    })?;
    let total = a
        .batch_size
        .checked_mul(runs)
        .filter(|&t| t <= 1_000_000)
        .with_context(|| {
            format!(
                "--batch-size {} x --batch-count {} images: at most 1000000 per command",
                a.batch_size, a.batch_count
            )
        })?;
    // Every output name is checked now: format, existing files, links.
    let image_format = ImageFormat::from_path(&a.out)?;
    for k in 0..total {
        files::check_output_path(&numbered(&a.out, k, total), a.overwrite)?;
    }
    let latents_path =
        |run: usize| -> Option<PathBuf> { a.latents_out.as_ref().map(|p| numbered(p, run, runs)) };
    for run in 0..runs {
        if let Some(p) = latents_path(run) {
            files::check_output_path(&p, a.overwrite)?;
        }
    }
    // Two outputs of one command must not share a name.
    let mut names = std::collections::HashSet::new();
    let all = (0..total)
        .map(|k| numbered(&a.out, k, total))
        .chain((0..runs).filter_map(latents_path))
        .chain((a.preview_every > 0).then(|| a.preview.clone()));
    for p in all {
        if !names.insert(p.clone()) {
            bail!("{} is named for two outputs of this command", p.display());
        }
    }
    let preview_format = if a.preview_every > 0 {
        files::check_output_path(&a.preview, a.overwrite)?;
        Some(ImageFormat::from_path(&a.preview)?)
    } else {
        None
    };
    let prepare = |run: usize| -> Result<RunOutputs> {
        let images = (0..a.batch_size)
            .map(|j| {
                let path = numbered(&a.out, run * a.batch_size + j, total);
                Ok((image_format, PendingFile::create(&path, a.overwrite)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let latents = latents_path(run)
            .map(|p| PendingFile::create(&p, a.overwrite))
            .transpose()?;
        Ok(RunOutputs { images, latents })
    };
    // The first run's files now: a missing or read-only folder is found before any work.
    let mut first_outputs = Some(prepare(0)?);
    let max_pixels = match a.max_image_pixels {
        Some(n) => n,
        None => sd_wgpu::imageio::max_image_pixels_from_env()?,
    };

    let gpu = Gpu::new()?;
    if let Some(bytes) = a.memory_budget {
        gpu.set_memory_budget(Some(sd_wgpu::MemoryBudget {
            bytes,
            source: "--memory-budget".into(),
        }));
    }
    let dtype = super::weight_dtype(a.dtype);
    // "LMS Karras"-style names carry a σ schedule; --schedule, when given, decides it.
    let (sampler, named_schedule) = match a.sampler.as_deref() {
        Some(n) => {
            let (k, s) = SamplerKind::parse_with_schedule(n)?;
            (Some(k), s)
        }
        None => (None, None),
    };
    let spacing = a.spacing.as_deref().map(Spacing::parse).transpose()?;
    let sigma_schedule = a
        .schedule
        .as_deref()
        .map(sd_wgpu::schedulers::SigmaSchedule::parse)
        .transpose()?
        .or(named_schedule);
    let t0 = Instant::now();
    let opts = LoadOptions {
        dtype,
        config: a.config.clone(),
        vae: a.vae.clone(),
        ..LoadOptions::default()
    };
    let base_opts = LoadOptions {
        loras: loras.specs.clone(),
        lora_lenient: a.lora_lenient,
        ..opts.clone()
    };
    let model = match &a.model {
        Some(m) => m.clone(),
        None => default_model(),
    };
    let mut pipe = Pipeline::load_with(&gpu, &model, &base_opts)
        .with_context(|| format!("loading {}", model.display()))?;
    if let Some(t) = &a.taesd {
        pipe.set_tiny_autoencoder(&gpu, Some(t), dtype)
            .with_context(|| format!("loading the tiny autoencoder {}", t.display()))?;
    }
    for w in &pipe.lora_warnings {
        eprintln!("warning: {w}");
    }
    pipe.offload = a.offload.policy();
    let refiner = match &a.refiner {
        Some(r) => {
            let mut p = Pipeline::load_with(&gpu, r, &opts)
                .with_context(|| format!("loading the refiner {}", r.display()))?;
            if let Some(t) = &a.taesd {
                p.set_tiny_autoencoder(&gpu, Some(t), dtype)
                    .with_context(|| format!("loading the tiny autoencoder {}", t.display()))?;
            }
            p.offload = a.offload.policy();
            Some(p)
        }
        None => None,
    };
    // The "Model hash" of the parameters, computed beside the generation.
    let hash_job = {
        let file = sd_wgpu::infotext::hashed_file(&model);
        std::thread::spawn(move || file.map(|f| files::sha256_hex(&f)))
    };
    let f = pipe.vae_scale_factor();
    let read_image = |p: &Path| -> Result<(usize, usize, Vec<f32>, Option<String>)> {
        let (w, h, rgb) = sd_wgpu::imageio::read_image_rgb_limited(p, max_pixels)?;
        let (rgb, w, h, msg) = sd_wgpu::imageio::resize_to_multiple(&rgb, w, h, f, Filter::Lanczos);
        Ok((w, h, rgb, msg))
    };
    let init_rgb = match &a.init_image {
        Some(p) => {
            let (w, h, rgb, msg) = read_image(p)?;
            if let Some(m) = msg {
                eprintln!("warning: {}: {m}", p.display());
            }
            if a.width.is_some_and(|x| x != w) || a.height.is_some_and(|x| x != h) {
                eprintln!("warning: --width/--height ignored: the init image is {w}x{h}");
            }
            Some((w, h, rgb))
        }
        None => None,
    };
    let mask = match (&a.mask, &init_rgb) {
        (Some(p), Some((iw, ih, _))) => {
            let (w, h, rgb, _) = read_image(p)?;
            if (w, h) != (*iw, *ih) {
                bail!(
                    "{}: the mask is {w}x{h} but the init image is {iw}x{ih} (after resizing to multiples of {f})",
                    p.display()
                );
            }
            // PIL's "L" conversion after the resize, as diffusers' mask processor does.
            Some(sd_wgpu::imageio::luma_pil(&rgb))
        }
        _ => None,
    };
    let strength = a.strength.unwrap_or(if mask.is_some() { 1.0 } else { 0.8 });
    let width = init_rgb
        .as_ref()
        .map(|i| i.0)
        .or(a.width)
        .unwrap_or_else(|| pipe.default_size());
    let height = init_rgb
        .as_ref()
        .map(|i| i.1)
        .or(a.height)
        .unwrap_or_else(|| pipe.default_size());
    if let Some(p) = a.prediction_type {
        pipe.scheduler.prediction = match p {
            PredictionArg::Epsilon => Prediction::Epsilon,
            PredictionArg::VPrediction => Prediction::VPrediction,
        };
    }
    eprintln!(
        "loaded {} ({}) in {:.1} s on {}",
        model.display(),
        pipe.architecture,
        t0.elapsed().as_secs_f64(),
        gpu.adapter_info().name
    );
    for l in pipe.loras() {
        eprintln!(
            "merged LoRA {} (U-Net ×{}, text encoders ×{})",
            l.path.display(),
            l.scale,
            l.scale_for(sd_wgpu::lora::Part::TextEncoder)
        );
    }
    let mut req = Request {
        upscale: None,
        prompt: loras.prompt.clone(),
        negative_prompt: a.negative_prompt.clone().unwrap_or_default(),
        encode_empty_negative: a.negative_prompt.is_some(),
        original_size: a.original_size,
        crops_coords_top_left: a.crop_coords,
        target_size: a.target_size,
        aesthetic_score: a.aesthetic_score,
        negative_aesthetic_score: a.negative_aesthetic_score,
        denoising_end: None,
        denoising_start: None,
        negative_micro: a
            .negative_original_size
            .zip(a.negative_target_size)
            .map(|(o, t)| sd_wgpu::pipeline::MicroConditioning {
                original_size: o,
                crops_coords_top_left: a.negative_crop_coords,
                target_size: t,
            }),
        steps: a.steps,
        guidance: a.guidance,
        sampler,
        spacing,
        sigma_schedule,
        width,
        height,
        init_latents: None,
        seed: a.seed,
        clip_skip: a.clip_skip,
        batch_size: a.batch_size,
        preview_every: a.preview_every,
        decoder: match (a.decoder, a.taesd.is_some()) {
            (Some(DecoderArg::Vae), _) | (None, false) => sd_wgpu::pipeline::Decoder::Vae,
            (Some(DecoderArg::Taesd), _) | (None, true) => sd_wgpu::pipeline::Decoder::Tiny,
        },
        vae_tiling: a.vae_tiling.policy(),
        vae_tile_size: a.vae_tile_size,
        preview_decoder: match a.preview_decoder {
            PreviewDecoderArg::Latent => sd_wgpu::pipeline::PreviewDecoder::Latent,
            PreviewDecoderArg::Taesd => sd_wgpu::pipeline::PreviewDecoder::Tiny,
        },
        long_prompt: match a.long_prompt {
            LongPromptArg::Chunk => LongPrompt::Chunk,
            LongPromptArg::Truncate => LongPrompt::Truncate,
        },
        init_image: init_rgb.map(|(_, _, rgb)| InitImage {
            rgb,
            strength,
            noise: None,
            sample_posterior: matches!(a.vae_encode, VaeEncodeArg::Sample),
            mask,
            keep_unmasked: a.keep_unmasked,
        }),
    };
    // Arrays from .npy files must have the library's latent shape (the request validates
    // their values).
    let want = pipe.latent_shape(&req);
    let read_latents = |p: &Path, flag: &str| -> Result<Vec<f32>> {
        let (shape, v) = sd_wgpu::npy::read_f32(p)?;
        if shape != want {
            bail!(
                "{flag} {}: shape {shape:?}, expected {want:?} (batch, channels, height/{f}, width/{f}) for {width}x{height} px",
                p.display()
            );
        }
        Ok(v)
    };
    if let Some(p) = &a.init_latents {
        req.init_latents = Some(read_latents(p, "--init-latents")?);
    }
    if let (Some(p), Some(im)) = (&a.noise, req.init_image.as_mut()) {
        im.noise = Some(read_latents(p, "--noise")?);
    }
    // Validates the request, then sizes it.
    let est = pipe.memory_estimate(&gpu, &req)?;
    let used = pipe.sampler_for(&req)?;
    eprintln!(
        "device memory: {} {} + {} for this request{} = {}{}",
        gpu::format_bytes(est.resident),
        if est.offload {
            "in use beside the networks"
        } else {
            "weights and live tensors"
        },
        gpu::format_bytes(est.request),
        if est.offload {
            " (each network loaded for its stage)"
        } else {
            ""
        },
        gpu::format_bytes(est.total()),
        match &est.budget {
            Some(b) => format!(" of a {} budget ({})", gpu::format_bytes(b.bytes), b.source),
            None => String::new(),
        }
    );
    gpu.reset_peak_memory();
    if a.profile {
        gpu.set_profiling(true)?;
    }
    let mut hash_job = Some(hash_job);
    let mut model_hash: Option<String> = None;
    for run in 0..runs {
        let outputs = match first_outputs.take() {
            Some(o) => o,
            None => prepare(run)?,
        };
        let req = Request {
            seed: a.seed + run as u64,
            ..req.clone()
        };
        let bar = step_bar(
            a.steps,
            if runs > 1 {
                format!("run {}/{}", run + 1, runs)
            } else {
                "sampling".to_string()
            },
        );
        let mut preview_err = None;
        let mut on_step = |p: sd_wgpu::pipeline::Progress| {
            bar.set_length(p.steps as u64);
            bar.set_position(p.step as u64);
            if let (Some(pv), Some(format)) = (&p.preview, preview_format) {
                // Nearest-upscaled to the image size (a tiny-autoencoder preview is already).
                let f = (width / pv.width.max(1)).max(1);
                let (w, h) = (pv.width * f, pv.height * f);
                let mut big = Vec::with_capacity(w * h * 3);
                for y in 0..h {
                    for x in 0..w {
                        let s = ((y / f) * pv.width + x / f) * 3;
                        big.extend_from_slice(&pv.rgb[s..s + 3]);
                    }
                }
                let text = format!("step {}/{}", p.step, p.steps);
                let written =
                    sd_wgpu::imageio::encode_image(format, &big, w, h, &[("preview", &text)])
                        .and_then(|bytes| files::write_atomic(&a.preview, &bytes, true));
                if let Err(e) = written {
                    preview_err = Some(e);
                    return false;
                }
            }
            true
        };
        let out = match &refiner {
            Some(r) => pipe.generate_refined(&gpu, r, &req, a.refiner_start, &mut on_step),
            None => pipe.generate(&gpu, &req, &mut on_step),
        };
        if let Some(e) = preview_err {
            return Err(e.into());
        }
        let out = out?;
        bar.finish_and_clear();
        if let Some(px) = out.vae_tiled_automatically {
            eprintln!(
                "note: the exact VAE pass would not fit the memory budget; it ran in {px} px \
                 tiles (--vae-tiling off to refuse instead)"
            );
        }
        if out.truncated_tokens > 0 {
            eprintln!(
                "warning: the prompt is longer than 77 tokens; {} tokens were dropped",
                out.truncated_tokens
            );
        }
        if let Some(job) = hash_job.take() {
            model_hash = match job.join() {
                Ok(Some(Ok(h))) => Some(h[..10].to_string()),
                Ok(Some(Err(e))) => {
                    eprintln!("warning: no model hash in the parameters: {e}");
                    None
                }
                _ => None,
            };
        }
        let per_image = out.width * out.height * 3;
        let mut writes = Vec::new();
        let mut names = Vec::new();
        for ((j, img), (format, file)) in
            out.image.chunks(per_image).enumerate().zip(outputs.images)
        {
            let info = Infotext {
                prompt: loras.infotext_prompt.clone(),
                negative_prompt: a.negative_prompt.clone().unwrap_or_default(),
                steps: a.steps,
                sampler: Some(used),
                guidance: a.guidance,
                seed: req.seed,
                width,
                height,
                model_hash: model_hash.clone(),
                model: sd_wgpu::infotext::model_name(&model),
                clip_skip: a.clip_skip,
                batch: (a.batch_size > 1).then_some((a.batch_size, j)),
                denoising_strength: req.init_image.as_ref().map(|_| strength),
            };
            let bytes = sd_wgpu::imageio::encode_image(
                format,
                img,
                out.width,
                out.height,
                &[("parameters", &info.to_text())],
            )?;
            names.push(file.path().display().to_string());
            writes.push((file, bytes));
        }
        if let Some(file) = outputs.latents {
            let bytes = sd_wgpu::npy::encode_f32(file.path(), &want, &out.latents)?;
            names.push(file.path().display().to_string());
            writes.push((file, bytes));
        }
        // All of the run's files, or none of the new ones.
        files::commit_all(writes)?;
        eprintln!("wrote {} (seed {})", names.join(", "), req.seed);
        if a.profile {
            let entries = gpu.take_profile();
            let last = format!("step {}", out.steps_run);
            eprint!(
                "{}",
                sd_wgpu::bench::Profile::from_entries(&entries, &last).to_table()
            );
        }
        let t = out.timings;
        eprintln!(
            "text encoding {:.2} s, context K/V {:.2} s, sampling {:.2} s ({:.3} s/step), decoding {:.2} s; peak GPU memory {:.1} MiB",
            t.text_encoding.as_secs_f64(),
            t.context_projection.as_secs_f64(),
            t.sampling.as_secs_f64(),
            t.sampling.as_secs_f64() / out.steps_run.max(1) as f64,
            t.decoding.as_secs_f64(),
            gpu.memory_stats().peak as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}

/// `A,B` (two non-negative integers), for the SDXL size flags.
fn parse_pair(s: &str) -> std::result::Result<(usize, usize), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("`{s}` is not two numbers A,B"))?;
    let num = |x: &str| {
        x.trim()
            .parse::<usize>()
            .map_err(|e| format!("`{x}` in `{s}`: {e}"))
    };
    Ok((num(a)?, num(b)?))
}
