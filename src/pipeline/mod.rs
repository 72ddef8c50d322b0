//! Text-to-image (diffusers `StableDiffusionPipeline` semantics): prompt and negative prompt
//! through the tokenizer and CLIP, classifier-free guidance with the unconditional half first
//! in one batch-2 U-Net call, any sampler, VAE decode to an RGB image in [0, 1].

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::arch::ArchSource;
use crate::models::clip::{ClipTextConfig, ClipTextModel};
use crate::models::unet::{UNet, UNetConfig};
use crate::models::vae::{AutoencoderKLConfig, VaeDecoder, VaeEncoder};
use crate::schedulers::{SamplerKind, ScheduleConfig, SigmaSchedule, Spacing};
use crate::tensor::Tensor;
use crate::tokenizer::ClipTokenizer;
use crate::weights::{WeightDType, Weights};

mod decode;
mod generation;
mod guard;
pub mod lcm;
mod load;
mod lora;
mod memory;
mod prepare;
mod preview;
mod refiner;
mod resident;
mod scheduler_choice;
mod sdxl;
pub mod tiling;
mod tiny;
mod validate;

pub use generation::{Generation, NOISE_CHUNK_BYTES};
use guard::FiniteGuard;
pub use load::LoadOptions;
pub use memory::MemoryEstimate;
pub use preview::{LatentRgb, Preview, latent_preview};
pub use resident::{Offload, Resident};
pub use validate::{MAX_BATCH, MAX_GUIDANCE, MAX_PROMPT_BYTES, MAX_SIDE_PX};

/// A loaded model: every network on the GPU (or released between requests, see
/// [`Offload`]), ready to generate.
pub struct Pipeline {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: Resident<ClipTextModel, ClipTextConfig>,
    /// SDXL: the second text encoder (with projection: the pooled `text_embeds`) and its
    /// tokenizer.
    pub text_encoder_2: Option<Resident<ClipTextModel, ClipTextConfig>>,
    pub tokenizer_2: Option<ClipTokenizer>,
    /// SDXL: an empty negative prompt gives zeros (see [`Request::encode_empty_negative`]).
    pub force_zeros_for_empty_prompt: bool,
    /// SDXL refiner: the time ids carry aesthetic scores ([`Request::aesthetic_score`]).
    pub requires_aesthetics_score: bool,
    pub unet: Resident<UNet, UNetConfig>,
    /// The VAE decoder.
    pub vae: Resident<VaeDecoder, AutoencoderKLConfig>,
    /// Which networks stay on the device between stages and requests.
    pub offload: Offload,
    pub scheduler: ScheduleConfig,
    /// The sampler the model's scheduler config names; `None` for a diffusers scheduler the
    /// engine does not implement yet (a request must then name its sampler).
    pub default_sampler: Option<SamplerKind>,
    /// The scheduler config's `_class_name`.
    pub scheduler_class: String,
    /// Where the architecture came from.
    pub architecture: ArchSource,
    /// The VAE encoder (loaded on the first image-to-image request).
    encoder: Resident<VaeEncoder, ()>,
    /// The step previews' latent → RGB map.
    pub latent_rgb: LatentRgb,
    /// The 4× upscaler's settings, for an upscaler model (`low_res_scheduler/`).
    pub upscaler: Option<Upscaler>,
    /// The tiny autoencoder's decoder ([`Pipeline::set_tiny_autoencoder`]).
    tiny: Option<crate::models::taesd::TinyDecoder>,
    /// Step noise is uploaded in chunks of at most this many bytes ([`NOISE_CHUNK_BYTES`]).
    pub noise_chunk_bytes: usize,
    /// The base weights LoRAs are merged into.
    sources: lora::Sources,
    /// The LoRAs merged now ([`Pipeline::set_loras`]) and whether unmatched keys were allowed.
    loras: Vec<crate::lora::LoraSpec>,
    lora_lenient: bool,
    /// Keys of the LoRAs a lenient load left out.
    pub lora_warnings: Vec<String>,
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

/// Inpainting's inputs to the recorded step, on the device.
struct Inpaint {
    /// 9-channel U-Net input extras `[n·h·w, 5]` (mask, masked-image latents), NHWC.
    extra: Option<Tensor>,
    /// 4-channel U-Net: the mask expanded over the latents, the image's latents and the
    /// noise, all `[n, h, w, c]`, for the per-step blend.
    blend: Option<[Tensor; 3]>,
}

/// One text-to-image request.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    /// Classifier-free guidance scale; ≤ 1 skips the unconditional pass. An LCM-distilled
    /// U-Net (`time_cond_proj_dim`) takes it as its guidance embedding instead, in one pass.
    pub guidance: f32,
    /// `None`: the model's own scheduler.
    pub sampler: Option<SamplerKind>,
    /// The timesteps' spacing, as diffusers' `Scheduler.from_config(config,
    /// timestep_spacing=…)` overrides it (Turbo models sample with `trailing`). `None`: the
    /// scheduler config's (or the sampler's default when the config names none).
    pub spacing: Option<Spacing>,
    /// The σ schedule (`--schedule`: Karras, exponential or the timesteps' own), for the
    /// samplers that have one ([`SamplerKind::has_sigma_schedule`]). `None`: the config's.
    pub sigma_schedule: Option<SigmaSchedule>,
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
    /// What decodes the final latents: the VAE, or the tiny autoencoder loaded with
    /// [`Pipeline::set_tiny_autoencoder`] (TAESD: fast, a little softer).
    pub decoder: Decoder,
    /// Whether the VAE decodes (and, for an init image, encodes) in tiles ([`VaeTiling`]).
    pub vae_tiling: VaeTiling,
    /// The pixel tile of the tiled VAE (a multiple of 4 × the VAE's factor); `None`: the VAE
    /// config's `sample_size`, as diffusers' `enable_tiling` takes it.
    pub vae_tile_size: Option<usize>,
    /// The 4× upscaler's input ([`Upscale`]); the request's width and height are the
    /// output's (4 × the low-res image's).
    pub upscale: Option<Upscale>,
    /// What the previews are made with: the latent → RGB map at latent resolution, or the
    /// tiny autoencoder at full resolution.
    pub preview_decoder: PreviewDecoder,
    /// SDXL: encode an empty `negative_prompt` rather than use zeros (diffusers'
    /// `negative_prompt=""` against none, with `force_zeros_for_empty_prompt`).
    pub encode_empty_negative: bool,
    /// SDXL micro-conditioning, (height, width): `None` is the request's size.
    pub original_size: Option<(usize, usize)>,
    /// SDXL micro-conditioning: the crop's (top, left).
    pub crops_coords_top_left: (usize, usize),
    /// SDXL micro-conditioning, (height, width): `None` is the request's size.
    pub target_size: Option<(usize, usize)>,
    /// SDXL: the unconditional row's own time ids, used (as diffusers does) only when both
    /// sizes are given: (original size, crop top-left, target size); else the row's ids are
    /// the prompt's.
    pub negative_micro: Option<MicroConditioning>,
    /// SDXL refiner (`requires_aesthetics_score`): the prompt rows' aesthetic score (6) and
    /// the unconditional rows' (2.5), in place of the target size.
    pub aesthetic_score: f32,
    pub negative_aesthetic_score: f32,
    /// diffusers' `denoising_end` ∈ (0, 1): stop once the timesteps fall below
    /// `(1 − end)·num_train_timesteps` and return the latents there, undecoded
    /// ([`Output::image`] empty): the base model's part of a base + refiner run.
    pub denoising_end: Option<f64>,
    /// diffusers' `denoising_start` ∈ (0, 1) with `init_latents` the latents a
    /// `denoising_end` run returned: continue from the first timestep below
    /// `(1 − start)·num_train_timesteps`, the latents taken as they are (no encoding, no
    /// noise): the refiner's part.
    pub denoising_start: Option<f64>,
}

/// The final decode's network ([`Request::decoder`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Decoder {
    #[default]
    Vae,
    /// The tiny autoencoder (TAESD / TAESDXL).
    Tiny,
}

/// The 4× upscaler's low-res input (diffusers' `StableDiffusionUpscalePipeline`).
#[derive(Clone, Debug, PartialEq)]
pub struct Upscale {
    /// The low-res image, RGB `[h, w, 3]` in [0, 1] (h, w: the output's ÷ 4).
    pub rgb: Vec<f32>,
    /// How much noise the low-res image gets (`noise_level`, 0..=`max_noise_level`), the
    /// U-Net's class label.
    pub noise_level: u32,
    /// The low-res image's noise, NCHW `[1, 3, h, w]` (diffusers' first draw); `None`: drawn
    /// from the seed.
    pub noise: Option<Vec<f32>>,
}

/// The upscaler's own settings ([`Pipeline::upscaler`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Upscaler {
    /// ᾱ of the `low_res_scheduler`.
    pub low_res_ac: Vec<f64>,
    pub max_noise_level: u32,
    /// The VAE config's `scaling_factor` where it was not 0.08333: replaced by 0.08333, as
    /// diffusers' upscale pipeline does (the CLI says so).
    pub vae_scaling_factor_in_config: Option<f32>,
}

/// When the VAE works in tiles ([`Request::vae_tiling`], diffusers' `enable_tiling`; see
/// `pipeline/tiling.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VaeTiling {
    /// Exact; tiled only when the exact pass would not fit the memory budget (then
    /// [`Output::vae_tiled_automatically`] says so).
    #[default]
    Auto,
    /// Always exact (a request that does not fit is refused).
    Off,
    /// Tiled wherever the image exceeds a tile, as diffusers with `enable_tiling()`.
    On,
}

/// How previews are made ([`Request::preview_decoder`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PreviewDecoder {
    /// The latent → RGB map ([`LatentRgb`]), at latent resolution, on the host.
    #[default]
    Latent,
    /// The tiny autoencoder's decoder, on the device, at full resolution.
    Tiny,
}

/// SDXL micro-conditioning of one row (diffusers' `_get_add_time_ids`): (height, width)
/// sizes and the crop's (top, left).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MicroConditioning {
    pub original_size: (usize, usize),
    pub crops_coords_top_left: (usize, usize),
    pub target_size: (usize, usize),
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
            spacing: None,
            sigma_schedule: None,
            width: 512,
            height: 512,
            init_latents: None,
            seed: 0,
            clip_skip: 0,
            init_image: None,
            long_prompt: LongPrompt::Chunk,
            batch_size: 1,
            preview_every: 0,
            decoder: Decoder::Vae,
            vae_tiling: VaeTiling::Auto,
            upscale: None,
            vae_tile_size: None,
            preview_decoder: PreviewDecoder::Latent,
            encode_empty_negative: false,
            original_size: None,
            crops_coords_top_left: (0, 0),
            target_size: None,
            negative_micro: None,
            aesthetic_score: 6.0,
            negative_aesthetic_score: 2.5,
            denoising_end: None,
            denoising_start: None,
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
    /// `Some(tile px)` when the exact VAE pass would not have fit the memory budget and the
    /// run tiled it instead ([`VaeTiling::Auto`]): the caller's message.
    pub vae_tiled_automatically: Option<usize>,
}

/// Wall time of each phase, GPU work included.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// The text encoder(s): the prompt to the U-Net's context (and SDXL's pooled embedding).
    pub text_encoding: std::time::Duration,
    /// The U-Net's prompt-only work, once per request: every cross-attention's keys and
    /// values of the context (and SDXL's added conditions). diffusers computes these inside
    /// every U-Net call, so they are part of its step time and of none of its text encoding.
    pub context_projection: std::time::Duration,
    pub sampling: std::time::Duration,
    pub decoding: std::time::Duration,
    /// Host time the sampling steps spent encoding their work (selecting the table row,
    /// copying the step noise, encoding the plan's pass; drawing and uploading a chunk of
    /// noise when one is due), summed over the steps.
    pub step_record: std::time::Duration,
    /// Host time in `queue.submit` for the steps (on a CPU device such as lavapipe this can
    /// include running the work), summed over the steps.
    pub step_submit: std::time::Duration,
    /// Dispatches the sampling steps encoded, summed over the steps.
    pub step_dispatches: usize,
    /// Host time recording the step plan once (shape checks, dispatch records, bind groups).
    pub plan_record: std::time::Duration,
    /// Dispatches in the step plan.
    pub plan_dispatches: usize,
    /// Loading networks that were released ([`Offload`]); not part of the phases above.
    pub loading: std::time::Duration,
}

impl Pipeline {
    /// An SDXL model (base or refiner): its U-Net takes the `text_time` conditions, its
    /// prompts the encoders' penultimate states.
    pub fn is_xl(&self) -> bool {
        self.unet.config.addition_time_embed_dim.is_some()
    }

    /// Whether `req` runs classifier-free guidance (a batch of unconditional and conditional
    /// rows): diffusers' `do_classifier_free_guidance`, guidance > 1 with a U-Net that does not
    /// take the scale as an embedding (LCM's `time_cond_proj_dim`).
    pub fn guided(&self, req: &Request) -> bool {
        req.guidance > 1.0 && self.unet.config.time_cond_proj_dim.is_none()
    }

    /// The scheduler config `req` samples with: the model's, with the request's spacing.
    pub fn schedule_for(&self, req: &Request) -> ScheduleConfig {
        let mut cfg = ScheduleConfig {
            spacing: req.spacing.or(self.scheduler.spacing),
            ..self.scheduler.clone()
        };
        if let Some(s) = req.sigma_schedule {
            s.apply(&mut cfg);
        }
        cfg
    }

    /// The sampler `req` runs: its own, else the model's.
    pub fn sampler_for(&self, req: &Request) -> Result<SamplerKind> {
        req.sampler.or(self.default_sampler).ok_or_else(|| {
            Error::request(
                "sampler",
                format!(
                    "is not set, and the model's scheduler {} is not implemented yet: choose one \
                     ({})",
                    self.scheduler_class,
                    SamplerKind::NAMES
                ),
            )
        })
    }

    /// The VAE encoder, loaded from the model's weights on first use.
    pub fn vae_encoder(&self, gpu: &Gpu) -> Result<std::sync::Arc<VaeEncoder>> {
        self.encoder.get(gpu, false)
    }

    /// The text encoder (loaded again first if it was released).
    pub fn text_encoder(&self, gpu: &Gpu) -> Result<std::sync::Arc<ClipTextModel>> {
        self.text_encoder.get(gpu, false)
    }

    /// The U-Net (loaded again first if it was released).
    pub fn unet(&self, gpu: &Gpu) -> Result<std::sync::Arc<UNet>> {
        self.unet.get(gpu, false)
    }

    /// The VAE decoder (loaded again first if it was released).
    pub fn vae_decoder(&self, gpu: &Gpu) -> Result<std::sync::Arc<VaeDecoder>> {
        self.vae.get(gpu, false)
    }

    /// Replaces the U-Net by one of `config` loaded from `weights` (an inpainting U-Net, say),
    /// loaded now; after a release it loads again from these weights.
    pub fn replace_unet(
        &mut self,
        gpu: &Gpu,
        weights: Weights,
        config: &UNetConfig,
        dtype: WeightDType,
    ) -> Result<()> {
        let base = std::sync::Arc::new(weights);
        let view = self.unet_view(base.clone(), config.layers_per_block)?;
        self.unet = Resident::from_weights(gpu, config, view, UNet::load, dtype)?;
        self.sources.unet = base;
        Ok(())
    }

    /// Releases every network from the device (they load again when a request needs them).
    pub fn release_models(&self, gpu: &Gpu) {
        self.release_text_encoders(gpu);
        self.unet.release(gpu);
        self.vae.release(gpu);
        self.encoder.release(gpu);
        gpu.trim_pool();
    }

    /// Releases the text encoder(s) (an offloaded run, once the prompts are encoded).
    fn release_text_encoders(&self, gpu: &Gpu) {
        self.text_encoder.release(gpu);
        if let Some(t) = &self.text_encoder_2 {
            t.release(gpu);
        }
    }

    /// Device bytes the loaded networks' weights hold.
    pub fn model_bytes(&self) -> u64 {
        self.text_encoder.resident_bytes()
            + self
                .text_encoder_2
                .as_ref()
                .map_or(0, |t| t.resident_bytes())
            + self.unet.resident_bytes()
            + self.vae.resident_bytes()
            + self.encoder.resident_bytes()
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

    /// Runs `req`; `progress` is called after every step and may cancel.
    pub fn generate(
        &self,
        gpu: &Gpu,
        req: &Request,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<Output> {
        self.run(gpu, req, progress, None, None)
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
        check_texture(texture, req)?;
        self.run(gpu, req, progress, Some(texture), None)
    }

    /// Start, every step (progress at most one step late), finish. `offload`: see
    /// [`Pipeline::start_inner`].
    fn run(
        &self,
        gpu: &Gpu,
        req: &Request,
        progress: &mut dyn FnMut(Progress) -> bool,
        texture: Option<&wgpu::Texture>,
        offload: Option<bool>,
    ) -> Result<Output> {
        let mut job = self.start_inner(gpu, req, texture, offload)?;
        generation::run_steps(&mut job, progress)?;
        job.finish_inner(texture)
    }
}

/// What [`Pipeline::generate_to_texture`] needs of a texture.
fn check_texture(texture: &wgpu::Texture, req: &Request) -> Result<()> {
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
    Ok(())
}
