//! Denoise: the whole step (guidance batch, U-Net, guidance combination, sampler update,
//! inpainting's blend, the non-finite checks) recorded once into a [`Plan`] and replayed.
//!
//! Between replays only device memory changes: the row of a [`StepTable`] (timestep, input
//! scale, the sampler's coefficients, inpainting's noise level) selected by a 4-byte copy,
//! and the step's Gaussian noise copied into the noise slot from noise drawn up front. The
//! step writes its results into the latents and sampler-state buffers the next replay reads.
//! Nothing waits: [`Generation::step`] submits and returns; [`Generation::progress`] waits
//! for a step that was submitted earlier.

use super::prepare::{Start, nchw_to_nhwc, nhwc_to_nchw};
use super::{FiniteGuard, Pipeline, Progress, Request, Timings, latent_preview};
use crate::error::{Error, Result};
use crate::gpu::{AsyncRead, Gpu, Plan, Recorder};
use crate::ops::{self, StepTable};
use crate::rng::TorchGenerator;
use crate::schedulers::{Sampler, SamplerKind, Slot};
use crate::tensor::{DType, Tensor};

/// Columns of a step-table row before the sampler's coefficients.
const T_COL: usize = 0;
const SCALE_COL: usize = 1;
const BLEND_A_COL: usize = 2;
const BLEND_B_COL: usize = 3;
const SAMPLER_COL: usize = 4;

/// Noise drawn up front is uploaded in chunks of at most this many bytes (most requests
/// need one chunk: 512², 50 steps, batch 1 is 3.3 MB).
pub const NOISE_CHUNK_BYTES: usize = 32 << 20;

/// Where the step noise comes from.
enum StepNoise {
    /// The request's generator, in diffusers' order (after the initial latents).
    Generator(Box<TorchGenerator>),
    /// DPM++ SDE: the Brownian tree's increment over each noise row's `(σ, σ')`.
    Brownian {
        tree: crate::brownian::BrownianTree,
        intervals: Vec<(f32, f32)>,
    },
}

impl StepNoise {
    /// Noise row `row` (the whole batch, NCHW).
    fn draw(&mut self, row: usize, per: usize) -> Result<Vec<f32>> {
        match self {
            Self::Generator(g) => Ok(g.randn(per)),
            Self::Brownian { tree, intervals } => {
                let (a, b) = intervals[row];
                tree.noise(a, b)
            }
        }
    }
}

/// The step noise of stochastic samplers, uploaded a chunk of steps at a time, copied into
/// `slot` before each step.
pub(super) struct NoiseFeed {
    source: StepNoise,
    slot: Tensor,
    chunk: Tensor,
    rows_per_chunk: usize,
    /// Noise row of each step index (`None`: the step draws none).
    row_of: Vec<Option<usize>>,
    /// The noise rows the chunk holds.
    held: Option<std::ops::Range<usize>>,
    rows: usize,
    /// (c, h, w) of one image's latents, for the NCHW → NHWC conversion.
    chw: (usize, usize, usize),
}

impl NoiseFeed {
    /// Encodes into `enc` the copy of noise row `row` into the slot, first refilling the
    /// chunk if it does not hold the row. The refill is itself a copy in `enc` (from a
    /// staging buffer made with the data), so it lands after every step already encoded —
    /// any number of steps may share one encoder.
    fn encode_row(&mut self, gpu: &Gpu, enc: &mut wgpu::CommandEncoder, row: usize) -> Result<()> {
        use wgpu::util::DeviceExt;
        let per = self.slot.numel();
        let k = row / self.rows_per_chunk;
        let range = k * self.rows_per_chunk..((k + 1) * self.rows_per_chunk).min(self.rows);
        if self.held.as_ref() != Some(&range) {
            if self.held.as_ref().is_some_and(|r| r.start > range.start) {
                return Err(Error::unsupported(
                    "step noise",
                    format!("noise row {row} requested after later rows"),
                ));
            }
            let (c, h, w) = self.chw;
            let mut host = Vec::with_capacity(range.len() * per);
            for r in range.clone() {
                host.extend(nchw_to_nhwc(&self.source.draw(r, per)?, c, h, w));
            }
            if !gpu.is_simulating() {
                let staging = gpu
                    .device()
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("step noise upload"),
                        contents: bytemuck::cast_slice(&host),
                        usage: wgpu::BufferUsages::COPY_SRC,
                    });
                enc.copy_buffer_to_buffer(
                    &staging,
                    0,
                    self.chunk.buffer().raw(),
                    self.chunk.byte_offset(),
                    4 * host.len() as u64,
                );
            }
            self.held = Some(range.clone());
        }
        if !gpu.is_simulating() {
            let off = 4 * ((row - range.start) * per) as u64;
            enc.copy_buffer_to_buffer(
                self.chunk.buffer().raw(),
                self.chunk.byte_offset() + off,
                self.slot.buffer().raw(),
                self.slot.byte_offset(),
                4 * per as u64,
            );
        }
        Ok(())
    }
}

/// A preview's read under way: the latents (at latent resolution, for the RGB map) or the
/// tiny autoencoder's image of them (`Some((height, width))`).
pub(super) struct PreviewRead {
    read: AsyncRead,
    image: Option<(usize, usize)>,
}

/// A request under way: created by [`Pipeline::start`], advanced one step at a time by
/// [`Generation::step`] (or [`Generation::encode_step`] into the host's own encoder), ended by
/// [`Generation::finish`] / [`Generation::finish_to_texture`].
pub struct Generation<'a> {
    pub(super) pipe: &'a Pipeline,
    pub(super) gpu: &'a Gpu,
    pub(super) req: Request,
    kind: SamplerKind,
    /// Step indices `first..total` of the sampler's timesteps run.
    first: usize,
    total: usize,
    timesteps: Vec<f64>,
    /// Next step index to encode.
    next: usize,
    /// The latents `[n, h, w, c]`, NHWC: read and rewritten by every replay.
    pub(super) x: Tensor,
    pub(super) plan: Plan,
    pub(super) table: StepTable,
    pub(super) noise: Option<NoiseFeed>,
    pub(super) guard: FiniteGuard,
    pub(super) timings: Timings,
    pub(super) truncated_tokens: usize,
    /// Per submitted step (by step number − 1): its submission and its preview read.
    submitted: Vec<Option<wgpu::SubmissionIndex>>,
    previews: Vec<Option<PreviewRead>>,
    /// Tensors the plan reads across replays (kept alive so no recording reuses them).
    pub(super) _persistent: Vec<Tensor>,
    /// The U-Net the plan runs (its weights stay on the device while the plan lives).
    pub(super) unet: std::sync::Arc<crate::models::unet::UNet>,
    /// The run releases each network after its stage ([`super::Offload`]).
    pub(super) offload: bool,
    pub(super) latent_hwc: (usize, usize, usize),
    /// The VAE tiled because the exact pass would not fit: its tile in pixels.
    pub(super) auto_tiled: Option<usize>,
}

impl Pipeline {
    /// Starts `req`: validates it, encodes the prompts, prepares the initial latents, and
    /// records the denoising step once. Sampling then runs step by step through the
    /// returned [`Generation`].
    pub fn start<'a>(&'a self, gpu: &'a Gpu, req: &Request) -> Result<Generation<'a>> {
        self.start_inner(gpu, req, None, None)
    }

    /// `offload`: `None` decides (checking the request against the memory budget, see
    /// [`super::Offload`]); `Some` is a memory estimate's simulated run in that mode.
    pub(super) fn start_inner<'a>(
        &'a self,
        gpu: &'a Gpu,
        req: &Request,
        texture: Option<&wgpu::Texture>,
        offload: Option<bool>,
    ) -> Result<Generation<'a>> {
        // A simulation only sizes a request its caller has validated.
        if !gpu.is_simulating() {
            self.validate(req)?;
        }
        let f = self.vae_scale_factor();
        let (h, w, c) = (req.height / f, req.width / f, self.unet.config.out_channels);
        let kind = self.sampler_for(req)?;
        let mut sampler = Sampler::<Tensor>::new(kind, &self.schedule_for(req), req.steps)?;
        let guided = self.guided(req);
        let n = req.batch_size;
        self.check_buffer_sizes(gpu, n, guided, req)?;
        let (offload, auto_tile) = match offload {
            Some(o) => (o, false),
            None if gpu.is_simulating() => (false, false),
            None => self.ensure_fits(gpu, req, texture)?,
        };
        // `VaeTiling::Auto` that has to tile: the run is the tiled request's.
        let tiled_req;
        let req = if auto_tile {
            tiled_req = Request {
                vae_tiling: super::VaeTiling::On,
                ..req.clone()
            };
            &tiled_req
        } else {
            req
        };
        if offload {
            // The estimate of this run assumed every network released first.
            self.release_models(gpu);
        }
        let mut timings = Timings::default();
        let clock = std::time::Instant::now();
        let mut guard = FiniteGuard::new(gpu)?;
        gpu.set_profile_stage("text encoder");
        let mut loading = std::time::Duration::ZERO;
        let te = self.text_encoder.get_timed(gpu, offload, &mut loading)?;
        let mut rec = Recorder::new(gpu);
        // SDXL: both encoders, the pooled text embedding and the time ids.
        let (context, pooled, truncated_tokens) = match (&self.text_encoder_2, &self.tokenizer_2) {
            (Some(slot), Some(tok)) => {
                let te2 = slot.get_timed(gpu, offload, &mut loading)?;
                let encoders = [(&*te, &self.tokenizer), (&*te2, tok)];
                let xl = self.encode_prompts_xl(&encoders, &mut rec, req, guided)?;
                (xl.context, Some(xl.pooled), xl.truncated_tokens)
            }
            // The SDXL refiner: `text_encoder_2` alone.
            _ if self.is_xl() => {
                let xl =
                    self.encode_prompts_xl(&[(&*te, &self.tokenizer)], &mut rec, req, guided)?;
                (xl.context, Some(xl.pooled), xl.truncated_tokens)
            }
            _ => {
                let (c, t) = self.encode_prompts(&te, &mut rec, req, guided)?;
                (c, None, t)
            }
        };
        guard.check(&mut rec, &context, "the text encoder's output".into())?;
        // [neg; pos] → [neg × n; pos × n], as diffusers repeats the embeddings.
        let context = Self::repeat_rows(&mut rec, &context, n)?;
        let pooled = match pooled {
            Some(p) => Some(Self::repeat_rows(&mut rec, &p, n)?),
            None => None,
        };
        rec.submit()?;
        // The stage's time is its GPU work's (one wait per request, so that the context
        // projection below is timed on its own).
        gpu.wait()?;
        drop(te);
        if offload {
            self.release_text_encoders(gpu);
            gpu.trim_pool();
        }
        timings.text_encoding = clock.elapsed().saturating_sub(loading);

        let clock = std::time::Instant::now();
        let Start {
            latents,
            first,
            inpaint,
            generator,
        } = self.prepare_latents(gpu, req, &mut sampler, offload)?;
        let prepare = clock.elapsed();
        timings.loading = loading;

        // The U-Net's cross-attention keys and values depend on the prompt alone: once per
        // request, not every step.
        let mut loading = std::time::Duration::ZERO;
        let clock = std::time::Instant::now();
        gpu.set_profile_stage("context projection");
        let unet = self.unet.get_timed(gpu, offload, &mut loading)?;
        let time_ids = match &pooled {
            Some(_) => Some(self.time_ids(gpu, req, n, guided)?),
            None => None,
        };
        let timestep_cond = self.guidance_condition(gpu, req, n)?;
        // The upscaler: the noise level is every row's class label.
        let class_labels = req
            .upscale
            .as_ref()
            .map(|u| vec![u.noise_level as usize; context.shape()[0]]);
        let added = crate::models::unet::AddedConditions {
            text_embeds: pooled.as_ref(),
            time_ids: time_ids.as_ref(),
            timestep_cond: timestep_cond.as_ref(),
            class_labels: class_labels.as_deref(),
        };
        let unet_ctx = unet.project_context_with(&mut rec, &context, added)?;
        rec.submit()?;
        guard.finish(gpu)?;
        timings.context_projection = clock.elapsed().saturating_sub(loading);
        timings.loading += loading;

        let clock = std::time::Instant::now();
        let x = Tensor::from_f32(gpu, &latents, &[n, h, w, c], DType::F32, "latents")?;
        // `denoising_end`: the base model's part of a base + refiner run stops early.
        let total = match req.denoising_end {
            Some(end) => sampler.end_index(end).max(first),
            None => sampler.timesteps().len(),
        };

        // The step table: one row per timestep index.
        let rows: Vec<Vec<f32>> = (0..total)
            .map(|i| {
                let (a, b) = if i + 1 < total {
                    sampler.noise_coefficients(i + 1)
                } else {
                    (1.0, 0.0)
                };
                let mut row = vec![
                    sampler.timesteps()[i] as f32,
                    sampler.input_scale(i) as f32,
                    a,
                    b,
                ];
                row.extend(sampler.coefficients(i).iter().map(|&v| v as f32));
                row
            })
            .collect();
        let table = StepTable::new(gpu, &rows)?;

        // Step noise, drawn up front (in chunks) in the generator's order.
        let row_of: Vec<Option<usize>> = {
            let mut k = 0;
            (0..total)
                .map(|i| {
                    (i >= first && sampler.needs_noise(i)).then(|| {
                        k += 1;
                        k - 1
                    })
                })
                .collect()
        };
        let noise_rows = row_of.iter().flatten().count();
        let noise = if noise_rows == 0 {
            None
        } else {
            let per = n * c * h * w;
            let rows_per_chunk = (self.noise_chunk_bytes / (4 * per)).clamp(1, noise_rows);
            let source = match sampler.brownian_tree(per, req.seed)? {
                Some(tree) => StepNoise::Brownian {
                    tree,
                    intervals: (first..total)
                        .filter_map(|i| sampler.brownian_interval(i))
                        .collect(),
                },
                None => StepNoise::Generator(Box::new(generator)),
            };
            Some(NoiseFeed {
                source,
                slot: Tensor::zeros(gpu, &[n, h, w, c], DType::F32, "step noise slot")?,
                chunk: Tensor::empty(gpu, &[rows_per_chunk * per], DType::F32, "step noise")?,
                rows_per_chunk,
                row_of,
                held: None,
                rows: noise_rows,
                chw: (c, h, w),
            })
        };

        // Record the step once.
        let record_clock = std::time::Instant::now();
        let mut persistent = vec![context.clone()];
        persistent.extend(
            unet_ctx
                .kv
                .iter()
                .flatten()
                .flat_map(|(k, v)| [k.clone(), v.clone()]),
        );
        // SDXL's added embedding and LCM's condition are read by every replay too.
        persistent.extend(unet_ctx.added.iter().chain(&unet_ctx.cond).cloned());
        let mut rec = Recorder::new(gpu);
        let step_checks = 3u32;
        let base = guard.reserve_steps(total, step_checks as usize, |i, k| {
            let step = i + 1 - first.min(i);
            let t = sampler.timesteps()[i];
            match k {
                0 => format!("the U-Net's output at step {step} (timestep {t})"),
                1 => format!(
                    "classifier-free guidance at step {step} (scale {})",
                    req.guidance
                ),
                _ => format!("the {kind:?} sampler's update at step {step}"),
            }
        });
        let check = |rec: &mut Recorder<'_>, x: &Tensor, k: u32, guard: &FiniteGuard| {
            ops::flag_nonfinite_step(rec, x, guard.flag(), base + k, &table, step_checks)
        };
        let xin = ops::table_combine(&mut rec, &table, &[(SCALE_COL, &x)], None)?;
        // 9-channel inpainting U-Net: [latents, mask, masked-image latents] per pixel.
        let xin =
            match inpaint.as_ref().and_then(|p| p.extra.as_ref()) {
                Some(e) => {
                    persistent.push(e.clone());
                    ops::concat_channels(&mut rec, &xin.reshape(&[n * h * w, c])?, e)?
                        .reshape(&[n, h, w, unet.config.in_channels])?
                }
                None => xin,
            };
        let rows_in = if guided { 2 * n } else { n };
        let ones = Tensor::from_f32(gpu, &vec![1.0; rows_in], &[rows_in], DType::F32, "ones")?;
        let t = ops::table_combine(&mut rec, &table, &[(T_COL, &ones)], None)?;
        persistent.push(ones);
        let m = if guided {
            // Batch 2n: [uncond × n; cond × n], as diffusers concatenates them.
            let ci = xin.shape()[3];
            let numel = xin.numel();
            let flat = xin.reshape(&[1, numel])?;
            let x2 = ops::concat_channels(&mut rec, &flat, &flat)?.reshape(&[2 * n, h, w, ci])?;
            let eps = unet.forward_ctx(&mut rec, &x2, &t, &unet_ctx)?;
            check(&mut rec, &eps, 0, &guard)?;
            // diffusers' `uncond + g·(cond − uncond)` in the fused guidance kernel.
            let guide = ops::SamplerStep {
                guidance: Some(req.guidance),
                a: 0.0,
                b: 1.0,
                c: 0.0,
                d: 0.0,
            };
            let u = eps.narrow0(0, n)?;
            let (m, _) = ops::sampler_step(&mut rec, &u, &eps, None, None, guide, false)?;
            check(&mut rec, &m, 1, &guard)?;
            m
        } else {
            let eps = unet.forward_ctx(&mut rec, &xin, &t, &unet_ctx)?;
            check(&mut rec, &eps, 0, &guard)?;
            eps
        };
        // The sampler's program over the device table.
        let program = sampler.program().clone();
        let states: Vec<Tensor> = (0..program.states)
            .map(|_| Tensor::zeros(gpu, &[n, h, w, c], DType::F32, "sampler state"))
            .collect::<Result<_>>()?;
        // A program with a noise term whose run draws none (LCM's single or last step only:
        // its coefficient is 0 there) reads zeros.
        let reads_noise = program
            .combines
            .iter()
            .any(|c| c.terms.contains(&Slot::Noise));
        let noise_slot = match &noise {
            Some(f) => Some(f.slot.clone()),
            None if reads_noise => Some(Tensor::zeros(gpu, &[n, h, w, c], DType::F32, "no noise")?),
            None => None,
        };
        let mut tmps: Vec<Tensor> = Vec::new();
        let mut col = SAMPLER_COL;
        {
            let pick = |s: Slot, tmps: &[Tensor]| -> Result<Tensor> {
                Ok(match s {
                    Slot::X => x.clone(),
                    Slot::Model => m.clone(),
                    Slot::Noise => noise_slot.clone().ok_or_else(|| {
                        Error::unsupported("sampler", "the program reads noise it has no slot for")
                    })?,
                    Slot::State(k) => states[k].clone(),
                    Slot::Tmp(k) => tmps[k].clone(),
                })
            };
            for cmb in &program.combines {
                let srcs: Vec<Tensor> = cmb
                    .terms
                    .iter()
                    .map(|s| pick(*s, &tmps))
                    .collect::<Result<_>>()?;
                let terms: Vec<(usize, &Tensor)> =
                    srcs.iter().enumerate().map(|(k, t)| (col + k, t)).collect();
                col += srcs.len();
                let y = ops::table_combine(&mut rec, &table, &terms, cmb.clamp.map(|r| r as f32))?;
                tmps.push(y);
            }
            let out = pick(program.output, &tmps)?;
            check(&mut rec, &out, 2, &guard)?;
            for &(k, s) in &program.updates {
                ops::copy_into(&mut rec, &table, &pick(s, &tmps)?, &states[k])?;
            }
            // 4-channel inpainting: the known region back from the image, noised to the next
            // step's level (exactly the image after the last step).
            let out = match inpaint.as_ref().and_then(|p| p.blend.as_ref()) {
                Some([mask, img, z]) => {
                    persistent.extend([mask.clone(), img.clone(), z.clone()]);
                    ops::table_blend(
                        &mut rec,
                        &table,
                        &out,
                        mask,
                        img,
                        z,
                        [BLEND_A_COL, BLEND_B_COL],
                    )?
                }
                None => out,
            };
            ops::copy_into(&mut rec, &table, &out, &x)?;
        }
        drop(tmps);
        drop(m);
        persistent.extend(states);
        persistent.extend(noise_slot);
        let plan = Plan::capture(&mut rec)?;
        timings.plan_record = record_clock.elapsed();
        timings.plan_dispatches = plan.len();
        timings.sampling = clock.elapsed() + prepare;
        let steps = total - first;
        Ok(Generation {
            pipe: self,
            gpu,
            req: req.clone(),
            auto_tiled: auto_tile.then(|| self.vae_tile_px(req)),
            kind,
            first,
            total,
            timesteps: sampler.timesteps().to_vec(),
            next: first,
            x,
            plan,
            table,
            noise,
            guard,
            timings,
            truncated_tokens,
            submitted: Vec::with_capacity(steps),
            previews: Vec::with_capacity(steps),
            _persistent: persistent,
            unet,
            offload,
            latent_hwc: (h, w, c),
        })
    }
}

impl Generation<'_> {
    /// Steps this request runs (img2img runs part of the schedule; PNDM one more than
    /// `steps`).
    pub fn steps(&self) -> usize {
        self.total - self.first
    }

    /// Steps submitted so far.
    pub fn submitted(&self) -> usize {
        self.next - self.first
    }

    /// Whether every step has been submitted.
    pub fn is_done(&self) -> bool {
        self.next >= self.total
    }

    /// The sampler running.
    pub fn sampler(&self) -> SamplerKind {
        self.kind
    }

    /// Encodes the next step into `enc` (the host submits it; encoders in the order their
    /// steps were encoded; any number of steps per encoder). Returns the step's number
    /// (1-based), or `None` when every step has been encoded.
    pub fn encode_step(&mut self, enc: &mut wgpu::CommandEncoder) -> Result<Option<usize>> {
        if self.is_done() {
            return Ok(None);
        }
        let clock = std::time::Instant::now();
        self.encode_step_prefix(enc)?;
        self.plan.encode(enc);
        self.timings.step_record += clock.elapsed();
        self.advance();
        Ok(Some(self.submitted()))
    }

    /// Counts the step just encoded or submitted as done by the host.
    fn advance(&mut self) {
        self.next += 1;
        self.timings.step_dispatches += self.plan.len();
        self.submitted.push(None);
        self.previews.push(None);
    }

    fn encode_noise(&mut self, enc: &mut wgpu::CommandEncoder, i: usize) -> Result<()> {
        let gpu = self.gpu;
        if let Some(feed) = &mut self.noise {
            if let Some(row) = feed.row_of[i] {
                feed.encode_row(gpu, enc, row)?;
            }
        }
        Ok(())
    }

    /// Records and submits the next step without waiting for it (or for earlier ones).
    /// Returns the step's number (1-based), or `None` when every step has been submitted.
    pub fn step(&mut self) -> Result<Option<usize>> {
        if self.is_done() {
            return Ok(None);
        }
        let gpu = self.gpu;
        let step = self.submitted() + 1;
        gpu.set_profile_stage(&format!("step {step}"));
        let index = if gpu.is_simulating() {
            self.advance();
            None
        } else if gpu.profiling() {
            // Profiled: the row and noise in a submission of their own, then each dispatch
            // timed in a pass of its own.
            let mut enc = gpu.device().create_command_encoder(&Default::default());
            self.encode_step_prefix(&mut enc)?;
            gpu.queue().submit([enc.finish()]);
            let clock = std::time::Instant::now();
            self.plan.submit_profiled(gpu)?;
            self.timings.step_submit += clock.elapsed();
            self.advance();
            None
        } else {
            let mut enc = gpu
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("sd-wgpu step"),
                });
            self.encode_step(&mut enc)?;
            let clock = std::time::Instant::now();
            let index = gpu.queue().submit([enc.finish()]);
            self.timings.step_submit += clock.elapsed();
            Some(index)
        };
        if let Some(slot) = self.submitted.last_mut() {
            *slot = index;
        }
        self.guard.after_submit(gpu);
        let every = self.req.preview_every;
        if every > 0 && step % every == 0 {
            let read = self.read_preview()?;
            if let Some(p) = self.previews.last_mut() {
                *p = Some(read);
            }
        }
        Ok(Some(step))
    }

    /// The table row and the noise of the next step, in `enc`.
    fn encode_step_prefix(&mut self, enc: &mut wgpu::CommandEncoder) -> Result<()> {
        let i = self.next;
        self.table.encode_select(enc, i)?;
        self.encode_noise(enc, i)
    }

    /// Starts reading the first image's preview: its latents, or (with
    /// [`super::PreviewDecoder::Tiny`]) the tiny autoencoder's decode of them, recorded and
    /// submitted after the step.
    fn read_preview(&self) -> Result<PreviewRead> {
        let (gpu, x) = (self.gpu, &self.x);
        let per = self.latent_elems_per_image();
        let tiny = self
            .pipe
            .tiny_for(&self.req)?
            .filter(|_| self.req.preview_decoder == super::PreviewDecoder::Tiny);
        let Some(tiny) = tiny else {
            let bytes = 4 * x.numel().min(per) as u64;
            return Ok(PreviewRead {
                read: gpu.read_bytes_async(x.buffer().raw(), x.byte_offset(), bytes, "preview"),
                image: None,
            });
        };
        let (h, w, c) = self.latent_hwc;
        let first = x
            .reshape(&[x.numel() / per, per])?
            .narrow0(0, 1)?
            .reshape(&[1, h, w, c])?;
        let mut rec = Recorder::new(gpu);
        let img = super::tiny::tiny_decode(&mut rec, tiny, &first)?;
        rec.submit()?;
        let bytes = 4 * img.numel() as u64;
        Ok(PreviewRead {
            read: gpu.read_bytes_async(img.buffer().raw(), img.byte_offset(), bytes, "preview"),
            image: Some((img.shape()[1], img.shape()[2])),
        })
    }

    fn latent_elems_per_image(&self) -> usize {
        let (h, w, c) = self.latent_hwc;
        h * w * c
    }

    /// Waits until step `step` (1-based, submitted) has finished on the device and returns
    /// its progress report (with its preview when one was due). Stops with the non-finite
    /// error if the flag read so far shows a NaN or Inf.
    pub fn progress(&mut self, step: usize) -> Result<Progress> {
        let gpu = self.gpu;
        if step == 0 || step > self.submitted() {
            return Err(Error::request(
                "step",
                format!("{step} has not been submitted ({} are)", self.submitted()),
            ));
        }
        if !gpu.is_simulating() {
            match self.submitted[step - 1].clone() {
                Some(index) => {
                    gpu.device()
                        .poll(wgpu::PollType::Wait {
                            submission_index: Some(index),
                            timeout: None,
                        })
                        .map_err(|e| Error::Device {
                            context: format!("waiting for step {step}"),
                            what: e.to_string(),
                        })?;
                }
                None => gpu.wait()?,
            }
        }
        self.guard.poll(gpu)?;
        let preview = match self.previews[step - 1].take() {
            Some(PreviewRead { mut read, image }) => {
                let bytes = read.wait(gpu)?;
                let v: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
                Some(match image {
                    Some((height, width)) => super::Preview {
                        width,
                        height,
                        rgb: v,
                    },
                    None => {
                        let (h, w, c) = self.latent_hwc;
                        latent_preview(&v, h, w, c, &self.pipe.latent_rgb)
                    }
                })
            }
            None => None,
        };
        Ok(Progress {
            step,
            steps: self.steps(),
            preview,
        })
    }

    /// The current latents, NCHW `[n, c, h, w]` (waits for the submitted steps).
    pub fn latents(&self) -> Result<Vec<f32>> {
        let (h, w, c) = self.latent_hwc;
        Ok(nhwc_to_nchw(&self.x.to_vec(self.gpu)?, c, h, w))
    }

    /// The timestep of step `step` (1-based).
    pub fn timestep(&self, step: usize) -> Option<f64> {
        self.timesteps
            .get(self.first + step.checked_sub(1)?)
            .copied()
    }
}

/// Drives `job` to the end, reporting each step to `progress` at most one step late (the
/// next step is already submitted when a step is reported, so the device never idles on the
/// host); `false` from `progress` cancels.
pub(super) fn run_steps(
    job: &mut Generation<'_>,
    progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<()> {
    let clock = std::time::Instant::now();
    let mut reported = 0;
    while let Some(s) = job.step()? {
        if s >= 2 {
            let p = job.progress(s - 1)?;
            reported = s - 1;
            if !progress(p) {
                return Err(Error::Cancelled { step: s - 1 });
            }
        }
        if job.gpu.is_simulating() {
            // A simulation records once; replays allocate nothing more.
            break;
        }
    }
    let last = job.submitted();
    if last > reported && !job.gpu.is_simulating() {
        let p = job.progress(last)?;
        if !progress(p) {
            return Err(Error::Cancelled { step: last });
        }
    }
    job.timings.sampling += clock.elapsed();
    Ok(())
}
