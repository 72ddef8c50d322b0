//! Prepare: prompts → the U-Net's context, and the initial latents (from the seed, the
//! request's own, or an encoded init image for image-to-image and inpainting).

use super::{Inpaint, LongPrompt, Pipeline, Request, guard::check_host};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};
use crate::models::clip::{ClipTextModel, HiddenState};
use crate::models::vae::{Posterior, VaeEncoder};
use crate::ops::{self, Unary};
use crate::rng::TorchGenerator;
use crate::schedulers::Sampler;
use crate::tensor::{DType, Tensor};
use crate::tokenizer::{CONTEXT_LEN, Tokens};

/// The VAE encoder as one request holds it: taken from its slot on first use (`fresh`: the
/// run releases networks, see [`super::Offload`]).
pub(super) struct Encoder {
    model: Option<std::sync::Arc<VaeEncoder>>,
    fresh: bool,
    /// The tiled encode's geometry when the request tiles the VAE.
    tiles: Option<super::tiling::TileGeometry>,
}

/// One encoder's context from chunked, weighted prompts ([`Pipeline::encode_chunked`]).
pub(super) struct Chunked {
    pub context: Tensor,
    pub pooled: Option<Tensor>,
    /// Tokens the positive prompt lost (truncate mode).
    pub truncated: usize,
}

/// Where sampling starts: the latents (NHWC, already scaled to the first step's noise level),
/// the first step, inpainting's inputs, and the generator positioned for the step noise.
pub(super) struct Start {
    pub latents: Vec<f32>,
    pub first: usize,
    pub inpaint: Option<Inpaint>,
    pub generator: TorchGenerator,
}

impl Pipeline {
    pub(super) fn encode_prompts(
        &self,
        te: &ClipTextModel,
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
            return Ok((te.forward(rec, &ids, req.clip_skip)?, pos.truncated));
        }
        self.encode_weighted(te, rec, req, guided)
    }

    /// Weighted and/or chunked prompts through the SD 1.x / 2.x encoder: see
    /// [`Pipeline::encode_chunked`].
    fn encode_weighted(
        &self,
        te: &ClipTextModel,
        rec: &mut Recorder<'_>,
        req: &Request,
        guided: bool,
    ) -> Result<(Tensor, usize)> {
        let mut prompts = vec![req.prompt.as_str()];
        if guided {
            prompts.insert(0, req.negative_prompt.as_str());
        }
        let which = HiddenState::Normed {
            clip_skip: req.clip_skip,
        };
        let c = self.encode_chunked(te, &self.tokenizer, rec, req, &prompts, which, false)?;
        Ok((c.context, c.truncated))
    }

    /// Weighted and/or chunked prompts (see [`crate::prompt`]) through one text encoder: every
    /// chunk of every prompt (rows in `prompts`' order) in one batch, each prompt padded with
    /// empty chunks to the longest's count k, the weights applied to each chunk's hidden state
    /// `which` on the host. The context is `[rows, 77·k, width]`; with `pooled`, also the
    /// projected pooled output of each prompt's first chunk, unweighted (as the web UI takes
    /// SDXL's `text_embeds`), `[rows, d]`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn encode_chunked(
        &self,
        te: &ClipTextModel,
        tok: &crate::tokenizer::ClipTokenizer,
        rec: &mut Recorder<'_>,
        req: &Request,
        prompts: &[&str],
        which: HiddenState,
        pooled: bool,
    ) -> Result<Chunked> {
        use crate::prompt::{Chunks, apply_weights, chunk_prompt};
        let truncate = |mut c: Chunks| {
            let dropped = c.tokens.saturating_sub(crate::prompt::CHUNK);
            if req.long_prompt == LongPrompt::Truncate {
                c.ids.truncate(1);
                c.weights.truncate(1);
            }
            (c, dropped)
        };
        let mut chunks = Vec::new();
        let mut dropped = 0;
        for p in prompts {
            let (c, d) = truncate(chunk_prompt(tok, p)?);
            chunks.push(c);
            dropped = d; // the last (positive) prompt's
        }
        // Every prompt gets the same number of chunks (empty ones appended).
        let k = chunks.iter().map(|c| c.ids.len()).max().unwrap_or(1);
        let (empty_ids, empty_w) = tok.frame(&[], &[]);
        for c in &mut chunks {
            c.ids.resize(k, empty_ids.clone());
            c.weights.resize(k, empty_w.clone());
        }
        let rows: Vec<Vec<u32>> = chunks.iter().flat_map(|c| c.ids.clone()).collect();
        let out = te.encode(rec, &rows, which, pooled)?;
        let width = out.hidden.shape()[2];
        // The weights need the encoder's output on the host (77 × width per chunk: small).
        let mut sub = Recorder::new(rec.gpu());
        std::mem::swap(rec, &mut sub);
        sub.submit()?;
        let mut host = out.hidden.to_vec(rec.gpu())?;
        let per = CONTEXT_LEN * width;
        for (chunk, w) in host
            .chunks_exact_mut(per)
            .zip(chunks.iter().flat_map(|c| c.weights.iter()))
        {
            apply_weights(chunk, w, width);
        }
        let n = chunks.len();
        let context = Tensor::from_f32(
            rec.gpu(),
            &host,
            &[n, k * CONTEXT_LEN, width],
            DType::F32,
            "prompt context",
        )?;
        let pooled = match out.pooled {
            Some(p) => {
                let d = p.shape()[1];
                let all = p.to_vec(rec.gpu())?;
                let first: Vec<f32> = all.chunks_exact(d).step_by(k).flatten().copied().collect();
                Some(Tensor::from_f32(
                    rec.gpu(),
                    &first,
                    &[n, d],
                    DType::F32,
                    "pooled text embedding",
                )?)
            }
            None => None,
        };
        let truncated = if req.long_prompt == LongPrompt::Truncate {
            dropped
        } else {
            0
        };
        Ok(Chunked {
            context,
            pooled,
            truncated,
        })
    }

    /// The text context `req` gives the U-Net (host copy): `[2, 77·k, width]` (negative
    /// prompt first) when guided, else `[1, 77·k, width]`; k > 1 for chunked long prompts.
    pub fn text_context(&self, gpu: &Gpu, req: &Request) -> Result<(Vec<f32>, Vec<usize>)> {
        let te = self.text_encoder(gpu)?;
        let mut rec = Recorder::new(gpu);
        let (ctx, _) = self.encode_prompts(&te, &mut rec, req, self.guided(req))?;
        rec.submit()?;
        Ok((ctx.to_vec(gpu)?, ctx.shape().to_vec()))
    }

    /// An RGB image's latents (NCHW, × scaling_factor): the VAE posterior's sample drawn with
    /// `generator` (diffusers' `retrieve_latents(..., generator)`) or its mean.
    #[allow(clippy::too_many_arguments)]
    fn encode_rgb(
        &self,
        gpu: &Gpu,
        enc: &mut Encoder,
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
        let model = match &enc.model {
            Some(m) => m.clone(),
            None => {
                let m = self.encoder.get(gpu, enc.fresh)?;
                enc.model = Some(m.clone());
                m
            }
        };
        gpu.set_profile_stage("VAE encoder");
        let encode = |x: &Tensor| -> Result<Tensor> {
            let mut rec = Recorder::new(gpu);
            let x = ops::unary(&mut rec, x, Unary::Affine, 2.0, -1.0)?;
            let m = model.forward(&mut rec, &x)?;
            rec.submit()?;
            Ok(m)
        };
        // diffusers tiles the encode when the image exceeds a tile on a side.
        let (moments, shape) = match enc.tiles.filter(|g| hh > g.tile || ww > g.tile) {
            Some(g) => super::tiling::run_tiled(gpu, rgb, [1, hh, ww, 3], &g, encode)?,
            None => {
                let x = Tensor::from_f32(gpu, rgb, &[1, hh, ww, 3], DType::F32, "init image")?;
                let m = encode(&x)?;
                let s: [usize; 4] = m
                    .shape()
                    .try_into()
                    .map_err(|_| Error::shape("img2img", "encoder output is not 4-D"))?;
                (m.to_vec(gpu)?, s)
            }
        };
        check_host(&moments, || {
            "the VAE encoder's output (the init image's latents)".into()
        })?;
        let post = Posterior::from_moments(&moments, shape)?;
        let lat = if sample {
            post.sample(generator)
        } else {
            post.mean
        };
        let s = self.vae.config.scaling_factor;
        Ok(lat.iter().map(|v| v * s).collect())
    }
    /// diffusers' `prepare_latents` (and the img2img / inpainting pipelines' versions): the
    /// initial latents, drawn from the request's seeded generator in diffusers' order.
    /// With `offload`, the VAE encoder (if the request needs it) is loaded for this and
    /// released after.
    pub(super) fn prepare_latents(
        &self,
        gpu: &Gpu,
        req: &Request,
        sampler: &mut Sampler<Tensor>,
        offload: bool,
    ) -> Result<Start> {
        let mut enc = Encoder {
            model: None,
            fresh: offload,
            tiles: self.vae_tiles(req, false)?,
        };
        let start = self.prepare_latents_with(gpu, req, sampler, &mut enc);
        if offload && enc.model.take().is_some() {
            self.encoder.release(gpu);
            gpu.trim_pool();
        }
        start
    }

    fn prepare_latents_with(
        &self,
        gpu: &Gpu,
        req: &Request,
        sampler: &mut Sampler<Tensor>,
        enc: &mut Encoder,
    ) -> Result<Start> {
        const OP: &str = "generate";
        let f = self.vae_scale_factor();
        let (h, w, c) = (req.height / f, req.width / f, self.unet.config.out_channels);
        let n = req.batch_size;
        // One torch-compatible generator per request: initial latents, then each step's noise,
        // drawn in diffusers' order.
        let mut generator = TorchGenerator::new(req.seed);
        // The refiner's part of a base + refiner run: the base's latents as they are.
        if let Some(start) = req.denoising_start {
            let l = req.init_latents.as_ref().ok_or_else(|| {
                Error::request(
                    "denoising_start",
                    "needs `init_latents` (the latents a `denoising_end` run returned)",
                )
            })?;
            let first = sampler.denoising_start_index(start);
            sampler.begin_at(first)?;
            return Ok(Start {
                latents: nchw_to_nhwc(l, c, h, w),
                first,
                inpaint: None,
                generator,
            });
        }
        // The 4× upscaler: the low-res image noised to its noise level (its noise drawn first,
        // as diffusers draws it), concatenated to the latents at every step.
        let upscale = match (&req.upscale, &self.upscaler) {
            (Some(up), Some(cfg)) => {
                let noise = match &up.noise {
                    Some(z) => z.clone(),
                    None if gpu.is_simulating() => vec![0.0; 3 * h * w],
                    None => generator.randn(3 * h * w),
                };
                // low_res_scheduler.add_noise: √ᾱ·x + √(1 − ᾱ)·z in f32, x in [−1, 1].
                let ac = cfg.low_res_ac[up.noise_level as usize] as f32;
                let (a, b) = (ac.sqrt(), (1.0 - ac).sqrt());
                // On the image's own NHWC layout: only the noise (NCHW) is reordered.
                let e: Vec<f32> = up
                    .rgb
                    .iter()
                    .zip(&nchw_to_nhwc(&noise, 3, h, w))
                    .map(|(&x, &z)| a * (2.0 * x - 1.0) + b * z)
                    .collect::<Vec<_>>()
                    .repeat(n);
                let t =
                    Tensor::from_f32(gpu, &e, &[n * h * w, 3], DType::F32, "noised low-res image")?;
                Some(Inpaint {
                    extra: Some(t),
                    blend: None,
                })
            }
            _ => None,
        };
        let Some(im) = &req.init_image else {
            let sigma0 = sampler.init_noise_sigma() as f32;
            let init = match &req.init_latents {
                Some(l) => nchw_to_nhwc(l, c, h, w),
                // diffusers' prepare_latents: randn([n, c, h, w]) from the seeded CPU generator.
                None if gpu.is_simulating() => vec![0.0; n * c * h * w],
                None => nchw_to_nhwc(&generator.randn(n * c * h * w), c, h, w),
            };
            return Ok(Start {
                latents: init.iter().map(|v| v * sigma0).collect(),
                first: 0,
                inpaint: upscale,
                generator,
            });
        };
        let first = sampler.start_index(im.strength);
        let (hh, ww) = (req.height, req.width);
        let unet_in = self.unet.config.in_channels;
        let nine = unet_in == c + 1 + c;
        if im.mask.is_none() && unet_in != c {
            return Err(Error::unsupported(
                OP,
                format!("this U-Net takes {unet_in} channels (an inpainting model): give a mask"),
            ));
        }
        let strength_max = im.strength == 1.0;
        // diffusers: the image's latents only when blending (4-channel inpainting) or starting
        // part-way; plain img2img always.
        let need_image = im.mask.is_none() || !nine || !strength_max;
        let lat = if need_image {
            Some(self.encode_rgb(
                gpu,
                enc,
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
        let mut inpaint = None;
        if let Some(m) = &im.mask {
            // Binarized at 0.5; the masked image is the init image with the repaint region at
            // 0 (in [−1, 1]).
            let bin: Vec<f32> = m.iter().map(|&v| f32::from(u8::from(v >= 0.5))).collect();
            let masked: Vec<f32> = im
                .rgb
                .iter()
                .enumerate()
                .map(|(i, &v)| if bin[i / 3] >= 0.5 { 0.5 } else { v })
                .collect();
            let masked_lat = self.encode_rgb(
                gpu,
                enc,
                &masked,
                hh,
                ww,
                im.sample_posterior,
                &mut generator,
            )?;
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
            // 4-channel: the known region is blended back after every step, on the device.
            let blend = if nine {
                None
            } else {
                let shape = [n, h, w, c];
                let up = |v: &[f32], name: &str| Tensor::from_f32(gpu, v, &shape, DType::F32, name);
                let mask_full: Vec<f32> = (0..n * h * w)
                    .flat_map(|p| std::iter::repeat_n(mask_lat[p % (h * w)], c))
                    .collect();
                let img = nchw_to_nhwc(&lat.clone().unwrap_or_default(), c, h, w);
                Some([
                    up(&mask_full, "inpainting mask")?,
                    up(&img, "inpainting image latents")?,
                    up(&nchw_to_nhwc(&noise, c, h, w), "inpainting noise")?,
                ])
            };
            inpaint = Some(Inpaint { extra, blend });
        }
        sampler.begin_at(first)?;
        Ok(Start {
            latents: nchw_to_nhwc(&start, c, h, w),
            first,
            inpaint,
            generator,
        })
    }

    /// `[r, …]` → `[r·n, …]`, each row repeated n times in place (diffusers'
    /// `repeat_interleave` of the prompt embeddings), on the device: O(log n) concatenations.
    pub(super) fn repeat_rows(rec: &mut Recorder<'_>, x: &Tensor, n: usize) -> Result<Tensor> {
        if n <= 1 {
            return Ok(x.clone());
        }
        let shape = x.shape().to_vec();
        let r = shape[0];
        let row = x.numel() / r.max(1);
        let mut piece = x.reshape(&[r, row])?;
        let mut out: Option<Tensor> = None;
        let mut k = n;
        loop {
            if k & 1 == 1 {
                out = Some(match out {
                    None => piece.clone(),
                    Some(o) => ops::concat_channels(rec, &o, &piece)?,
                });
            }
            k >>= 1;
            if k == 0 {
                break;
            }
            piece = ops::concat_channels(rec, &piece, &piece)?;
        }
        let mut full = shape;
        full[0] = r * n;
        out.unwrap_or(piece).reshape(&full)
    }
}

/// NCHW → NHWC for any number of images (`v.len()` a multiple of c·h·w).
pub(super) fn nchw_to_nhwc(v: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
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
pub(super) fn nhwc_to_nchw(v: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
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
