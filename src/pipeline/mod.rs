//! Text-to-image (diffusers `StableDiffusionPipeline` semantics): prompt and negative prompt
//! through the tokenizer and CLIP, classifier-free guidance with the unconditional half first
//! in one batch-2 U-Net call, any sampler, VAE decode to an RGB image in [0, 1].

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};
use crate::models::arch::{ArchSource, Architecture};
use crate::models::clip::ClipTextModel;
use crate::models::unet::UNet;
use crate::models::vae::{Posterior, VaeDecoder, VaeEncoder};
use crate::ops::{self, Unary};
use crate::rng::TorchGenerator;
use crate::schedulers::{GpuOps, Sampler, SamplerKind, ScheduleConfig};
use crate::tensor::{DType, Tensor};
use crate::tokenizer::{CONTEXT_LEN, ClipTokenizer, Tokens};
use crate::weights::single_file::SingleFile;
use crate::weights::{ModelLayout, WeightDType, Weights, detect_layout};
use std::path::{Path, PathBuf};

mod guard;
mod memory;
mod preview;
mod validate;

use guard::{FiniteGuard, check_host};
pub use memory::MemoryEstimate;
pub use preview::{LatentRgb, Preview, latent_preview};
pub use validate::{MAX_BATCH, MAX_GUIDANCE, MAX_PROMPT_BYTES, MAX_SIDE_PX};

/// A loaded model: every network on the GPU, ready to generate.
pub struct Pipeline {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub unet: UNet,
    pub vae: VaeDecoder,
    pub scheduler: ScheduleConfig,
    /// The sampler the model's scheduler config names; `None` for a diffusers scheduler the
    /// engine does not implement yet (a request must then name its sampler).
    pub default_sampler: Option<SamplerKind>,
    /// The scheduler config's `_class_name`.
    pub scheduler_class: String,
    /// Where the architecture came from.
    pub architecture: ArchSource,
    /// The VAE's weights, for the encoder (loaded on the first image-to-image request).
    vae_weights: Weights,
    dtype: WeightDType,
    encoder: std::sync::OnceLock<VaeEncoder>,
    /// The step previews' latent → RGB map.
    pub latent_rgb: LatentRgb,
}

/// What image-to-image starts from (diffusers' `StableDiffusionImg2ImgPipeline`).
#[derive(Clone, Debug)]
pub struct InitImage {
    /// RGB `[height, width, 3]` in [0, 1], the request's size.
    pub rgb: Vec<f32>,
    /// 0..=1: how much of the schedule runs (1 = from pure noise, 0 = none).
    pub strength: f64,
    /// The Gaussian noise added to the encoded image, f32 `[1, 4, h/f, w/f]` (NCHW; the
    /// `noise` of diffusers' `scheduler.add_noise`). `None`: drawn from the seed.
    pub noise: Option<Vec<f32>>,
    /// Encode to a sample of the VAE posterior drawn with the seed (diffusers' default), or
    /// to its mean.
    pub sample_posterior: bool,
    /// Inpainting: `[height, width]` in [0, 1], ≥ 0.5 (white) = repaint. A 9-channel
    /// (inpainting) U-Net gets the mask and the masked image's latents as input; an ordinary
    /// 4-channel one has the known region blended back into the latents after every step
    /// (diffusers' `StableDiffusionInpaintPipeline`, both cases).
    pub mask: Option<Vec<f32>>,
    /// Inpainting: paste the original pixels back outside the mask after decoding.
    pub keep_unmasked: bool,
}

impl InitImage {
    /// Image-to-image from `rgb` with `strength`: noise from the seed, posterior sampled.
    pub fn new(rgb: Vec<f32>, strength: f64) -> Self {
        Self {
            rgb,
            strength,
            noise: None,
            sample_posterior: true,
            mask: None,
            keep_unmasked: false,
        }
    }
}

/// Inpainting state for the sampling loop.
struct Inpaint {
    /// Binarized mask per latent, `[h·w]` (1 = repaint).
    mask_lat: Vec<f32>,
    /// 9-channel U-Net input extras `[h·w, 5]` (mask, masked-image latents), NHWC.
    extra: Option<Tensor>,
    /// 4-channel U-Net: the image's latents and the noise, NCHW, for the per-step blend.
    blend: Option<(Vec<f32>, Vec<f32>)>,
}

/// One text-to-image request.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    /// Classifier-free guidance scale; ≤ 1 skips the unconditional pass.
    pub guidance: f32,
    /// `None`: the model's own scheduler.
    pub sampler: Option<SamplerKind>,
    pub width: usize,
    pub height: usize,
    /// diffusers' `latents=` argument: f32 `[1, 4, h/f, w/f]` (NCHW), scaled by the sampler's
    /// `init_noise_sigma` before the first step. `None`: drawn from `seed`.
    pub init_latents: Option<Vec<f32>>,
    /// Seeds a torch-compatible CPU generator: the same initial latents and step noise as
    /// diffusers with `generator=torch.Generator("cpu").manual_seed(seed)`.
    pub seed: u64,
    pub clip_skip: usize,
    /// Image-to-image: start from this image instead of pure noise.
    pub init_image: Option<InitImage>,
    /// Prompts over 75 tokens: encoded in 77-token chunks (default) or truncated.
    pub long_prompt: LongPrompt,
    /// Images per U-Net call (diffusers' `num_images_per_prompt`: one seeded draw of
    /// `[n, 4, h, w]` initial latents or noise; an init image is encoded once and repeated).
    pub batch_size: usize,
    /// Deliver a [`Preview`] through the progress callback every this many steps (0: never).
    pub preview_every: usize,
}

/// What happens to a prompt longer than one 77-token window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LongPrompt {
    /// Chunks of 75 tokens, each encoded on its own, concatenated (the common UIs' way).
    #[default]
    Chunk,
    /// Keep the first 75 tokens (diffusers' behaviour), with a warning.
    Truncate,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: 30,
            guidance: 7.5,
            sampler: None,
            width: 512,
            height: 512,
            init_latents: None,
            seed: 0,
            clip_skip: 0,
            init_image: None,
            long_prompt: LongPrompt::Chunk,
            batch_size: 1,
            preview_every: 0,
        }
    }
}

/// Progress reported after every sampling step; return `false` to cancel (the run ends
/// there, within one step, and every buffer it held goes back to the pool).
#[derive(Clone, Debug)]
pub struct Progress {
    pub step: usize,
    pub steps: usize,
    /// Every `Request::preview_every` steps: a cheap RGB approximation of the current
    /// latents (first image of the batch).
    pub preview: Option<Preview>,
}

pub struct Output {
    /// Final latents before VAE scaling, f32 `[n, 4, h/f, w/f]` (NCHW, as diffusers returns;
    /// n = `batch_size`).
    pub latents: Vec<f32>,
    /// RGB `[n, height, width, 3]` in [0, 1] (one image after another).
    pub image: Vec<f32>,
    pub width: usize,
    pub height: usize,
    /// Prompt tokens dropped to fit 77 (the caller's warning).
    pub truncated_tokens: usize,
    /// U-Net steps that ran (img2img runs part of the schedule; PNDM one more than `steps`).
    pub steps_run: usize,
    pub timings: Timings,
}

/// U-Net steps a memory estimate records: every sampler's history (PNDM's four ε, DPM++'s
/// previous x₀) reaches its largest within these, so later steps allocate nothing new.
const SIMULATED_STEPS: usize = 6;

/// Wall time of each phase, GPU work included.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub text_encoding: std::time::Duration,
    pub sampling: std::time::Duration,
    pub decoding: std::time::Duration,
    /// Host time the sampling steps spent recording their work (the ops' shape checks and
    /// dispatch records, step noise included), summed over the steps.
    pub step_record: std::time::Duration,
    /// Host time in `Recorder::submit` (params, bind groups, encoding, `queue.submit`; on a
    /// CPU device such as lavapipe this can include running the work), summed over the steps.
    pub step_submit: std::time::Duration,
    /// Dispatches the sampling steps recorded, summed over the steps.
    pub step_dispatches: usize,
}

/// The `.safetensors` weights of one component folder: full-precision files, else the
/// `.fp16.` variants.
fn component_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut all: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("safetensors"))
        .collect();
    all.sort();
    let is_fp16 = |p: &PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(".fp16."))
    };
    let full: Vec<PathBuf> = all.iter().filter(|p| !is_fp16(p)).cloned().collect();
    let files = if full.is_empty() { all } else { full };
    if files.is_empty() {
        let pickles = ["bin", "ckpt", "pt"].iter().any(|e| {
            dir.join(format!("diffusion_pytorch_model.{e}")).exists()
                || dir.join(format!("pytorch_model.{e}")).exists()
        });
        let what = if pickles {
            "only pickle weights (.bin); convert them to .safetensors"
        } else {
            "no .safetensors weights"
        };
        return Err(Error::ModelLayout {
            path: dir.to_path_buf(),
            what: what.into(),
        });
    }
    Ok(files)
}

/// Schedulers diffusers has that the engine does not implement yet: a model that names one
/// loads, and its requests must choose a sampler.
const OTHER_DIFFUSERS_SCHEDULERS: &[&str] = &[
    "LMSDiscreteScheduler",
    "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DPMSolverSinglestepScheduler",
    "DPMSolverSDEScheduler",
    "UniPCMultistepScheduler",
    "DEISMultistepScheduler",
    "LCMScheduler",
    "TCDScheduler",
    "EDMEulerScheduler",
    "EDMDPMSolverMultistepScheduler",
];

/// The sampler a scheduler config's `_class_name` names (`None`: a diffusers scheduler not
/// implemented yet); an unknown or missing class is an error.
fn sampler_of(
    scheduler_json: &serde_json::Value,
) -> std::result::Result<Option<SamplerKind>, String> {
    let karras = scheduler_json["use_karras_sigmas"]
        .as_bool()
        .unwrap_or(false);
    let class = scheduler_json["_class_name"].as_str().unwrap_or("");
    Ok(Some(match class {
        "DDIMScheduler" => SamplerKind::Ddim { eta: 0.0 },
        "DDPMScheduler" => SamplerKind::Ddpm,
        "PNDMScheduler" => SamplerKind::Pndm,
        "EulerDiscreteScheduler" => SamplerKind::Euler,
        "EulerAncestralDiscreteScheduler" => SamplerKind::EulerAncestral,
        "DPMSolverMultistepScheduler" => SamplerKind::DpmPP2M { karras },
        c if OTHER_DIFFUSERS_SCHEDULERS.contains(&c) => return Ok(None),
        c => {
            return Err(format!(
                "scheduler `_class_name` {c:?} is not a scheduler sd-wgpu knows (DDIMScheduler, \
                 DDPMScheduler, PNDMScheduler, EulerDiscreteScheduler, \
                 EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler)"
            ));
        }
    }))
}

/// How [`Pipeline::load_with`] loads a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub dtype: WeightDType,
    /// Architecture of a single-file checkpoint: a diffusers folder of configs (as diffusers'
    /// `from_single_file(config=…)` takes) or an original LDM yaml. `None`: `<stem>.yaml`
    /// beside the checkpoint if there is one, else inferred from the tensor shapes. Ignored
    /// for diffusers folders, which carry their own configs.
    pub config: Option<PathBuf>,
    /// Upload a private copy of every weight. By default a model already loaded on the same
    /// `Gpu` (same files) shares its weight buffers: a second pipeline costs no weight memory.
    pub private_weights: bool,
}

impl Pipeline {
    /// Loads a diffusers pipeline folder or a single-file checkpoint (see [`LoadOptions`]).
    pub fn load(gpu: &Gpu, path: &Path, dtype: WeightDType) -> Result<Self> {
        Self::load_with(
            gpu,
            path,
            &LoadOptions {
                dtype,
                ..LoadOptions::default()
            },
        )
    }

    pub fn load_with(gpu: &Gpu, path: &Path, opts: &LoadOptions) -> Result<Self> {
        let dtype = opts.dtype;
        let mut latent_rgb = LatentRgb::default();
        let (arch, te, uw, vw) = match detect_layout(path)? {
            ModelLayout::Diffusers(dir) => {
                let arch = Architecture::from_folder(&dir)?;
                latent_rgb = LatentRgb::from_folder(&dir);
                let open = |c: &str| {
                    let d = dir.join(c);
                    Weights::open(&d, &component_files(&d)?)
                };
                (arch, open("text_encoder")?, open("unet")?, open("vae")?)
            }
            ModelLayout::SingleFile(file) => {
                // One header read serves the architecture and the renames.
                let sf = SingleFile::open(&file)?;
                let arch =
                    Architecture::for_single_file(&file, &sf.shapes, opts.config.as_deref())?;
                let sf = sf.with_unet_layout(arch.unet.layers_per_block);
                (arch, sf.text_encoder, sf.unet, sf.vae)
            }
        };
        let share = !opts.private_weights;
        let (te, uw, vw) = (te.sharing(share), uw.sharing(share), vw.sharing(share));
        Self::from_parts(gpu, path, arch, [te, uw, vw], dtype, latent_rgb)
    }

    /// A pipeline of the architecture `arch` with random weights ([`Synthetic`]): what
    /// `sd-wgpu bench` measures, with no checkpoint file. `name` names it in messages.
    pub fn synthetic(
        gpu: &Gpu,
        name: &str,
        arch: Architecture,
        weights: crate::weights::Synthetic,
        dtype: WeightDType,
    ) -> Result<Self> {
        let origin = Path::new(name);
        let w = |part: &str| Weights::synthetic(&origin.join(part), weights);
        let parts = [w("text_encoder"), w("unet"), w("vae")];
        Self::from_parts(gpu, origin, arch, parts, dtype, LatentRgb::default())
    }

    /// Checks `arch` and loads its networks from `[text_encoder, unet, vae]` weights.
    fn from_parts(
        gpu: &Gpu,
        path: &Path,
        arch: Architecture,
        [te, uw, vw]: [Weights; 3],
        dtype: WeightDType,
        latent_rgb: LatentRgb,
    ) -> Result<Self> {
        arch.check(path)?;
        let text_encoder = ClipTextModel::load(gpu, &te, "", &arch.text, dtype)?;
        let unet = UNet::load(gpu, &uw, "", &arch.unet, dtype)?;
        let vae = VaeDecoder::load(gpu, &vw, "", &arch.vae, dtype)?;
        let scheduler = ScheduleConfig::from_value(&arch.scheduler)?;
        let layout_err = |what: String| Error::ModelLayout {
            path: path.to_path_buf(),
            what: format!("{what} ({})", arch.source),
        };
        let default_sampler = sampler_of(&arch.scheduler).map_err(layout_err)?;
        let scheduler_class = arch.scheduler["_class_name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(Self {
            tokenizer: arch.tokenizer,
            text_encoder,
            unet,
            vae,
            default_sampler,
            scheduler_class,
            scheduler,
            architecture: arch.source,
            vae_weights: vw,
            dtype,
            encoder: std::sync::OnceLock::new(),
            latent_rgb,
        })
    }

    /// The sampler `req` runs: its own, else the model's.
    pub fn sampler_for(&self, req: &Request) -> Result<SamplerKind> {
        req.sampler.or(self.default_sampler).ok_or_else(|| {
            Error::request(
                "sampler",
                format!(
                    "is not set, and the model's scheduler {} is not implemented yet: choose one \
                     (ddim, ddpm, pndm, euler, euler-a, dpm++2m, dpm++2m-karras)",
                    self.scheduler_class
                ),
            )
        })
    }

    /// The VAE encoder, loaded from the model's weights on first use.
    pub fn vae_encoder(&self, gpu: &Gpu) -> Result<&VaeEncoder> {
        if let Some(e) = self.encoder.get() {
            return Ok(e);
        }
        let e = VaeEncoder::load(gpu, &self.vae_weights, "", &self.vae.config, self.dtype)?;
        Ok(self.encoder.get_or_init(|| e))
    }

    /// The model's native image size in pixels (width = height): the U-Net's `sample_size`
    /// × the VAE factor, as diffusers' default `height` / `width`.
    pub fn default_size(&self) -> usize {
        self.unet.config.sample_size * self.vae_scale_factor()
    }

    /// Pixels per latent along each side.
    pub fn vae_scale_factor(&self) -> usize {
        self.vae.config.downsample_factor()
    }

    fn encode_prompts(
        &self,
        rec: &mut Recorder<'_>,
        req: &Request,
        guided: bool,
    ) -> Result<(Tensor, usize)> {
        let pos: Tokens = self.tokenizer.encode(&req.prompt)?;
        let neg = self.tokenizer.encode(&req.negative_prompt)?;
        let plain = |p: &str, t: &Tokens| {
            !crate::prompt::has_weights(p)
                && (t.truncated == 0 || req.long_prompt == LongPrompt::Truncate)
        };
        if plain(&req.prompt, &pos) && (!guided || plain(&req.negative_prompt, &neg)) {
            // diffusers' encoding, exactly.
            let mut ids = Vec::new();
            if guided {
                ids.push(neg.ids);
            }
            ids.push(pos.ids);
            return Ok((
                self.text_encoder.forward(rec, &ids, req.clip_skip)?,
                pos.truncated,
            ));
        }
        self.encode_weighted(rec, req, guided)
    }

    /// Weighted and/or chunked prompts (see [`crate::prompt`]): every chunk of both prompts in
    /// one text-encoder batch, weights applied on the host, context `[n, 77·k, width]`.
    fn encode_weighted(
        &self,
        rec: &mut Recorder<'_>,
        req: &Request,
        guided: bool,
    ) -> Result<(Tensor, usize)> {
        use crate::prompt::{Chunks, apply_weights, chunk_prompt};
        let truncate = |mut c: Chunks| {
            let dropped = c.tokens.saturating_sub(crate::prompt::CHUNK);
            if req.long_prompt == LongPrompt::Truncate {
                c.ids.truncate(1);
                c.weights.truncate(1);
            }
            (c, dropped)
        };
        let (pos, dropped) = truncate(chunk_prompt(&self.tokenizer, &req.prompt)?);
        let mut prompts = vec![pos];
        if guided {
            prompts.insert(
                0,
                truncate(chunk_prompt(&self.tokenizer, &req.negative_prompt)?).0,
            );
        }
        // Both prompts get the same number of chunks (empty ones appended).
        let k = prompts.iter().map(|c| c.ids.len()).max().unwrap_or(1);
        let (empty_ids, empty_w) = self.tokenizer.frame(&[], &[]);
        for c in &mut prompts {
            c.ids.resize(k, empty_ids.clone());
            c.weights.resize(k, empty_w.clone());
        }
        let rows: Vec<Vec<u32>> = prompts.iter().flat_map(|c| c.ids.clone()).collect();
        let z = self.text_encoder.forward(rec, &rows, req.clip_skip)?;
        let width = z.shape()[2];
        // The weights need the encoder's output on the host (77 × width per chunk: small).
        let mut sub = Recorder::new(rec.gpu());
        std::mem::swap(rec, &mut sub);
        sub.submit()?;
        let mut host = z.to_vec(rec.gpu())?;
        let per = CONTEXT_LEN * width;
        for (chunk, w) in host
            .chunks_exact_mut(per)
            .zip(prompts.iter().flat_map(|c| c.weights.iter()))
        {
            apply_weights(chunk, w, width);
        }
        let n = prompts.len();
        let ctx = Tensor::from_f32(
            rec.gpu(),
            &host,
            &[n, k * CONTEXT_LEN, width],
            DType::F32,
            "prompt context",
        )?;
        let truncated = if req.long_prompt == LongPrompt::Truncate {
            dropped
        } else {
            0
        };
        Ok((ctx, truncated))
    }

    /// The text context `req` gives the U-Net (host copy): `[2, 77·k, width]` (negative
    /// prompt first) with guidance > 1, else `[1, 77·k, width]`; k > 1 for chunked long prompts.
    pub fn text_context(&self, gpu: &Gpu, req: &Request) -> Result<(Vec<f32>, Vec<usize>)> {
        let mut rec = Recorder::new(gpu);
        let (ctx, _) = self.encode_prompts(&mut rec, req, req.guidance > 1.0)?;
        rec.submit()?;
        Ok((ctx.to_vec(gpu)?, ctx.shape().to_vec()))
    }

    /// Runs `req`; `progress` is called after every step and may cancel.
    pub fn generate(
        &self,
        gpu: &Gpu,
        req: &Request,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<Output> {
        self.run(gpu, req, progress, None)
    }

    /// Runs `req` and writes the image into `texture` on the GPU, with no CPU readback (the
    /// returned `Output::image` is empty; `latents` are still returned). The texture must be
    /// on the engine's device (a host app hands its device over with `Gpu::from_device`), 2-D,
    /// the request's size, `COPY_DST`, and `Rgba8Unorm(Srgb)` or `Bgra8Unorm(Srgb)`; texel
    /// bytes are the PNG's (sRGB-encoded values), so an `…Srgb` format samples as the PNG
    /// looks. Batches of more than one image are refused.
    pub fn generate_to_texture(
        &self,
        gpu: &Gpu,
        req: &Request,
        progress: &mut dyn FnMut(Progress) -> bool,
        texture: &wgpu::Texture,
    ) -> Result<Output> {
        use wgpu::TextureFormat as F;
        const OP: &str = "texture output";
        let bad = |what: String| Error::unsupported(OP, what);
        let size = texture.size();
        if texture.dimension() != wgpu::TextureDimension::D2
            || (size.width as usize, size.height as usize) != (req.width, req.height)
            || size.depth_or_array_layers != 1
        {
            return Err(bad(format!(
                "texture {}x{}x{} ({:?}), the request is {}x{} (2-D, one layer)",
                size.width,
                size.height,
                size.depth_or_array_layers,
                texture.dimension(),
                req.width,
                req.height
            )));
        }
        if !matches!(
            texture.format(),
            F::Rgba8Unorm | F::Rgba8UnormSrgb | F::Bgra8Unorm | F::Bgra8UnormSrgb
        ) {
            return Err(bad(format!(
                "format {:?} (Rgba8Unorm(Srgb) or Bgra8Unorm(Srgb))",
                texture.format()
            )));
        }
        if !texture.usage().contains(wgpu::TextureUsages::COPY_DST) {
            return Err(bad("the texture needs TextureUsages::COPY_DST".into()));
        }
        if req.batch_size != 1 {
            return Err(bad(format!(
                "batch size {} (one image per texture)",
                req.batch_size
            )));
        }
        self.run(gpu, req, progress, Some(texture))
    }

    fn run(
        &self,
        gpu: &Gpu,
        req: &Request,
        progress: &mut dyn FnMut(Progress) -> bool,
        texture: Option<&wgpu::Texture>,
    ) -> Result<Output> {
        const OP: &str = "generate";
        // A simulation only sizes a request its caller has validated.
        if !gpu.is_simulating() {
            self.validate(req)?;
        }
        let f = self.vae_scale_factor();
        let (h, w, c) = (req.height / f, req.width / f, self.unet.config.out_channels);
        let kind = self.sampler_for(req)?;
        let mut sampler = Sampler::<Tensor>::new(kind, &self.scheduler, req.steps)?;
        let guided = req.guidance > 1.0;

        let mut timings = Timings::default();
        let clock = std::time::Instant::now();
        let mut rec = Recorder::new(gpu);
        let n = req.batch_size;
        self.check_buffer_sizes(gpu, n, guided, req)?;
        if !gpu.is_simulating() {
            self.ensure_fits(gpu, req, texture)?;
        }
        let mut guard = FiniteGuard::new(gpu)?;
        gpu.set_profile_stage("text encoder");
        let (context, truncated_tokens) = self.encode_prompts(&mut rec, req, guided)?;
        guard.check(&mut rec, &context, "the text encoder's output".into())?;
        let context = if n > 1 {
            // [neg; pos] → [neg × n; pos × n], as diffusers repeats the embeddings.
            let shape = context.shape().to_vec();
            rec.submit()?;
            let host = context.to_vec(gpu)?;
            let row = shape[1] * shape[2];
            let rep: Vec<f32> = host
                .chunks(row)
                .flat_map(|r| std::iter::repeat_n(r, n).flatten().copied())
                .collect();
            Tensor::from_f32(
                gpu,
                &rep,
                &[shape[0] * n, shape[1], shape[2]],
                DType::F32,
                "prompt context",
            )?
        } else {
            context
        };
        rec.submit()?;
        guard.finish(gpu)?;
        timings.text_encoding = clock.elapsed();
        let clock = std::time::Instant::now();
        // One torch-compatible generator per request: initial latents, then each step's noise,
        // drawn in diffusers' order.
        let mut generator = TorchGenerator::new(req.seed);
        let init: Vec<f32> = match &req.init_latents {
            Some(l) => nchw_to_nhwc(l, c, h, w),
            // img2img: the latents come from the image (below).
            None if req.init_image.is_some() => Vec::new(),
            // diffusers' prepare_latents: randn([n, c, h, w]) from the seeded CPU generator.
            None => nchw_to_nhwc(&generator.randn(n * c * h * w), c, h, w),
        };
        let first = match &req.init_image {
            None => 0,
            Some(im) => sampler.start_index(im.strength),
        };
        let mut inpaint: Option<Inpaint> = None;
        let mut x = match &req.init_image {
            None => {
                let sigma0 = sampler.init_noise_sigma() as f32;
                let x0 = Tensor::from_f32(gpu, &init, &[n, h, w, c], DType::F32, "latents")?;
                ops::unary(&mut rec, &x0, Unary::Affine, sigma0, 0.0)?
            }
            Some(im) => {
                let (hh, ww) = (req.height, req.width);
                let unet_in = self.unet.config.in_channels;
                let nine = unet_in == c + 1 + c;
                if im.mask.is_none() && unet_in != c {
                    return Err(Error::unsupported(
                        OP,
                        format!(
                            "this U-Net takes {unet_in} channels (an inpainting model): give a mask"
                        ),
                    ));
                }
                let strength_max = im.strength == 1.0;
                // diffusers: the image's latents only when blending (4-channel inpainting)
                // or starting part-way; plain img2img always.
                let need_image = im.mask.is_none() || !nine || !strength_max;
                let lat = if need_image {
                    Some(self.encode_rgb(
                        gpu,
                        &im.rgb,
                        hh,
                        ww,
                        im.sample_posterior,
                        &mut generator,
                    )?)
                } else {
                    None
                };
                // One encoding for the batch, repeated (diffusers duplicates the latents).
                let lat = lat.map(|l| l.repeat(n));
                let noise = match &im.noise {
                    Some(z) => z.clone(),
                    None => generator.randn(n * c * h * w),
                };
                let start: Vec<f32> = match (&im.mask, &lat) {
                    // Inpainting at full strength starts from pure noise.
                    (Some(_), _) if strength_max => {
                        let s0 = sampler.init_noise_sigma() as f32;
                        noise.iter().map(|n| n * s0).collect()
                    }
                    (_, Some(lat)) if first < sampler.timesteps().len() => {
                        let (a, b) = sampler.noise_coefficients(first);
                        lat.iter().zip(&noise).map(|(l, n)| a * l + b * n).collect()
                    }
                    (_, Some(lat)) => lat.clone(),
                    (_, None) => noise.clone(),
                };
                if let Some(m) = &im.mask {
                    // Binarized at 0.5; the masked image is the init image with the repaint
                    // region at 0 (in [−1, 1]).
                    let bin: Vec<f32> = m.iter().map(|&v| f32::from(u8::from(v >= 0.5))).collect();
                    let masked: Vec<f32> = im
                        .rgb
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| if bin[i / 3] >= 0.5 { 0.5 } else { v })
                        .collect();
                    let masked_lat =
                        self.encode_rgb(gpu, &masked, hh, ww, im.sample_posterior, &mut generator)?;
                    // F.interpolate(mask, (h, w)) (nearest): pixel (y·f, x·f).
                    let mask_lat: Vec<f32> = (0..h * w)
                        .map(|p| bin[(p / w) * f * ww + (p % w) * f])
                        .collect();
                    let extra = if nine {
                        let mut e = Vec::with_capacity(h * w * (1 + c));
                        let ml = nchw_to_nhwc(&masked_lat, c, h, w);
                        for p in 0..h * w {
                            e.push(mask_lat[p]);
                            e.extend_from_slice(&ml[p * c..(p + 1) * c]);
                        }
                        let e = e.repeat(n);
                        Some(Tensor::from_f32(
                            gpu,
                            &e,
                            &[n * h * w, 1 + c],
                            DType::F32,
                            "mask and masked-image latents",
                        )?)
                    } else {
                        None
                    };
                    let blend = (!nine).then(|| (lat.clone().unwrap_or_default(), noise.clone()));
                    inpaint = Some(Inpaint {
                        mask_lat,
                        extra,
                        blend,
                    });
                }
                sampler.begin_at(first)?;
                Tensor::from_f32(
                    gpu,
                    &nchw_to_nhwc(&start, c, h, w),
                    &[n, h, w, c],
                    DType::F32,
                    "latents",
                )?
            }
        };
        rec.submit()?;

        // Every timestep of the schedule (PNDM has one more than `steps`), from `first`.
        let total = sampler.timesteps().len();
        let end = if gpu.is_simulating() {
            total.min(first + SIMULATED_STEPS)
        } else {
            total
        };
        for i in first..end {
            let t = sampler.timesteps()[i] as f32;
            let step = i + 1 - first;
            let unet_stage = || format!("the U-Net's output at step {step} (timestep {t})");
            let step_clock = std::time::Instant::now();
            gpu.set_profile_stage(&format!("step {step}"));
            let mut rec = Recorder::new(gpu);
            let xin = ops::unary(
                &mut rec,
                &x,
                Unary::Affine,
                sampler.input_scale(i) as f32,
                0.0,
            )?;
            // 9-channel inpainting U-Net: [latents, mask, masked-image latents] per pixel.
            let xin = match inpaint.as_ref().and_then(|p| p.extra.as_ref()) {
                Some(e) => ops::concat_channels(&mut rec, &xin.reshape(&[n * h * w, c])?, e)?
                    .reshape(&[n, h, w, self.unet.config.in_channels])?,
                None => xin,
            };
            let ci = xin.shape()[3];
            let m = if guided {
                // Batch 2n: [uncond × n; cond × n], as diffusers concatenates them.
                let numel = xin.numel();
                let flat = xin.reshape(&[1, numel])?;
                let x2 =
                    ops::concat_channels(&mut rec, &flat, &flat)?.reshape(&[2 * n, h, w, ci])?;
                let eps = self.unet.forward(&mut rec, &x2, t, &context)?;
                guard.check(&mut rec, &eps, unet_stage())?;
                let (u, cnd) = (eps.narrow0(0, n)?, eps.narrow0(n, n)?);
                let m = ops::lincomb(&mut rec, &[(1.0 - req.guidance, &u), (req.guidance, &cnd)])?;
                guard.check(
                    &mut rec,
                    &m,
                    format!(
                        "classifier-free guidance at step {step} (scale {})",
                        req.guidance
                    ),
                )?;
                m
            } else {
                let eps = self.unet.forward(&mut rec, &xin, t, &context)?;
                guard.check(&mut rec, &eps, unet_stage())?;
                eps
            };
            let noise = if sampler.needs_noise(i) {
                let z = nchw_to_nhwc(&generator.randn(n * c * h * w), c, h, w);
                Some(Tensor::from_f32(
                    gpu,
                    &z,
                    &[n, h, w, c],
                    DType::F32,
                    "step noise",
                )?)
            } else {
                None
            };
            x = sampler.step(&mut GpuOps { rec: &mut rec }, i, &x, &m, noise.as_ref())?;
            guard.check(
                &mut rec,
                &x,
                format!("the {kind:?} sampler's update at step {step}"),
            )?;
            timings.step_dispatches += rec.len();
            timings.step_record += step_clock.elapsed();
            let submit_clock = std::time::Instant::now();
            rec.submit()?;
            guard.after_submit(gpu);
            timings.step_submit += submit_clock.elapsed();
            gpu.wait()?;
            // The flag read behind this step's work has arrived with the wait: no extra sync.
            guard.poll(gpu)?;
            // 4-channel inpainting: the known region back from the image, noised to the next
            // step's level (exactly the image after the last step).
            if let Some(Inpaint {
                mask_lat,
                blend: Some((img, noise)),
                ..
            }) = &inpaint
            {
                let (a, b) = if i + 1 < total {
                    sampler.noise_coefficients(i + 1)
                } else {
                    (1.0, 0.0)
                };
                let cur = nhwc_to_nchw(&x.to_vec(gpu)?, c, h, w);
                let hw = h * w;
                let mixed: Vec<f32> = (0..cur.len())
                    .map(|k| {
                        let m = mask_lat[k % hw];
                        let known = a * img[k] + b * noise[k];
                        (1.0 - m) * known + m * cur[k]
                    })
                    .collect();
                x = Tensor::from_f32(
                    gpu,
                    &nchw_to_nhwc(&mixed, c, h, w),
                    &[n, h, w, c],
                    DType::F32,
                    "latents",
                )?;
            }
            let preview = if req.preview_every > 0 && step % req.preview_every == 0 {
                Some(latent_preview(&x.to_vec(gpu)?, h, w, c, &self.latent_rgb))
            } else {
                None
            };
            if !progress(Progress {
                step,
                steps: total - first,
                preview,
            }) {
                return Err(Error::Cancelled {
                    step: i + 1 - first,
                });
            }
        }

        guard.finish(gpu)?;
        let latents = nhwc_to_nchw(&x.to_vec(gpu)?, c, h, w);
        // The U-Net's cached buffers are of no use to the VAE, whose activations are larger:
        // free them rather than hold both at the decoder's peak.
        drop(inpaint);
        gpu.trim_pool();
        timings.sampling = clock.elapsed();
        let clock = std::time::Instant::now();
        gpu.set_profile_stage("VAE decode");
        let mut rec = Recorder::new(gpu);
        let z = ops::unary(
            &mut rec,
            &x,
            Unary::Affine,
            1.0 / self.vae.config.scaling_factor,
            0.0,
        )?;
        let img = self.vae.forward(&mut rec, &z)?;
        guard.check(&mut rec, &img, "the VAE decoder's output".into())?;
        // diffusers' image processor: (x / 2 + 0.5).clamp(0, 1).
        let img = ops::unary(&mut rec, &img, Unary::Affine, 0.5, 0.5)?;
        let img = ops::clamp(&mut rec, &img, 0.0, 1.0)?;
        if let Some(tex) = texture {
            let swap = matches!(
                tex.format(),
                wgpu::TextureFormat::Bgra8Unorm | wgpu::TextureFormat::Bgra8UnormSrgb
            );
            let (hh, ww) = (req.height, req.width);
            let texels = ops::to_rgba8(&mut rec, &img.reshape(&[hh, ww, 3])?, swap)?;
            rec.submit()?;
            guard.finish(gpu)?;
            // A simulation only sizes the run: nothing to copy.
            if !gpu.is_simulating() {
                let mut enc =
                    gpu.device()
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                            label: Some("sd-wgpu texture output"),
                        });
                enc.copy_buffer_to_texture(
                    wgpu::TexelCopyBufferInfo {
                        buffer: texels.buffer().raw(),
                        layout: wgpu::TexelCopyBufferLayout {
                            offset: texels.byte_offset(),
                            bytes_per_row: Some((ops::rgba8_row(ww) * 4) as u32),
                            rows_per_image: Some(hh as u32),
                        },
                    },
                    tex.as_image_copy(),
                    wgpu::Extent3d {
                        width: ww as u32,
                        height: hh as u32,
                        depth_or_array_layers: 1,
                    },
                );
                gpu.queue().submit([enc.finish()]);
            }
            timings.decoding = clock.elapsed();
            return Ok(Output {
                latents,
                image: Vec::new(),
                width: req.width,
                height: req.height,
                truncated_tokens,
                steps_run: total - first,
                timings,
            });
        }
        rec.submit()?;
        guard.finish(gpu)?;
        let mut image = img.to_vec(gpu)?;
        if let Some(im) = req.init_image.as_ref().filter(|im| im.keep_unmasked) {
            if let Some(m) = &im.mask {
                let px = req.width * req.height;
                for (i, v) in image.iter_mut().enumerate() {
                    if m[(i / 3) % px] < 0.5 {
                        *v = im.rgb[i % (3 * px)];
                    }
                }
            }
        }
        timings.decoding = clock.elapsed();
        Ok(Output {
            latents,
            image,
            width: req.width,
            height: req.height,
            truncated_tokens,
            steps_run: total - first,
            timings,
        })
    }
}

impl Pipeline {
    /// An RGB image's latents (NCHW, × scaling_factor): the VAE posterior's sample drawn with
    /// `generator` (diffusers' `retrieve_latents(..., generator)`) or its mean.
    fn encode_rgb(
        &self,
        gpu: &Gpu,
        rgb: &[f32],
        hh: usize,
        ww: usize,
        sample: bool,
        generator: &mut TorchGenerator,
    ) -> Result<Vec<f32>> {
        if rgb.len() != hh * ww * 3 {
            return Err(Error::shape(
                "img2img",
                format!(
                    "init image holds {} values, a {ww}x{hh} RGB image needs {}",
                    rgb.len(),
                    hh * ww * 3
                ),
            ));
        }
        let enc = self.vae_encoder(gpu)?;
        gpu.set_profile_stage("VAE encoder");
        let mut rec = Recorder::new(gpu);
        let x = Tensor::from_f32(gpu, rgb, &[1, hh, ww, 3], DType::F32, "init image")?;
        let x = ops::unary(&mut rec, &x, Unary::Affine, 2.0, -1.0)?;
        let m = enc.forward(&mut rec, &x)?;
        rec.submit()?;
        let moments = m.to_vec(gpu)?;
        check_host(&moments, || {
            "the VAE encoder's output (the init image's latents)".into()
        })?;
        let post = Posterior::from_moments(
            &moments,
            m.shape()
                .try_into()
                .map_err(|_| Error::shape("img2img", "encoder output is not 4-D".to_string()))?,
        )?;
        let lat = if sample {
            post.sample(generator)
        } else {
            post.mean
        };
        let s = self.vae.config.scaling_factor;
        Ok(lat.iter().map(|v| v * s).collect())
    }
}

/// NCHW → NHWC for any number of images (`v.len()` a multiple of c·h·w).
fn nchw_to_nhwc(v: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for (src, dst) in v.chunks(c * h * w).zip(out.chunks_mut(c * h * w)) {
        for ch in 0..c {
            for p in 0..h * w {
                dst[p * c + ch] = src[ch * h * w + p];
            }
        }
    }
    out
}

/// NHWC → NCHW for any number of images.
fn nhwc_to_nchw(v: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for (src, dst) in v.chunks(c * h * w).zip(out.chunks_mut(c * h * w)) {
        for ch in 0..c {
            for p in 0..h * w {
                dst[ch * h * w + p] = src[p * c + ch];
            }
        }
    }
    out
}
