//! Device memory of a request: sized by recording it against a simulating pool, and refused
//! over the budget (or over one buffer's limit) before anything is allocated.

use super::{Offload, Pipeline, Request};
use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// The device memory a request needs, sized by recording it against a simulating pool
/// ([`Pipeline::memory_estimate`]).
#[derive(Clone, Debug)]
pub struct MemoryEstimate {
    /// Bytes in use on the engine's device when asked: the weights of every loaded model and
    /// the tensors alive outside the request.
    pub resident: u64,
    /// The request's peak allocation on top of that (latents, text context, activations, the
    /// per-submission parameters), in the pool's size classes, when the pool's cache is empty.
    pub request: u64,
    /// Unused buffers the pool caches now (reused by the request, or freed when the request
    /// would not fit beside them).
    pub cached: u64,
    /// What the device allows, when known ([`Gpu::memory_budget`]).
    pub budget: Option<crate::gpu::MemoryBudget>,
    /// The run this sizes releases each network after its stage ([`super::Offload`]): then
    /// `resident` leaves out the networks' weights and `request` holds the largest stage's
    /// network and activations.
    pub offload: bool,
}

impl MemoryEstimate {
    /// `resident + request`: the device memory the engine holds at the request's peak.
    pub fn total(&self) -> u64 {
        self.resident + self.request
    }

    /// Whether the request fits the budget (always, when no budget is known).
    pub fn fits(&self) -> bool {
        self.budget.as_ref().is_none_or(|b| self.total() <= b.bytes)
    }
}

impl Pipeline {
    /// Refuses a request whose largest activations would not fit one device buffer
    /// (`max_buffer_size`), before anything is allocated: the U-Net's feed-forward input at
    /// the first attention level (`[2n·h·w, 8·c]`, GEGLU) and its widest resnet input, and
    /// the VAE decoder's full-resolution activations.
    pub(super) fn check_buffer_sizes(
        &self,
        gpu: &Gpu,
        n: usize,
        guided: bool,
        req: &Request,
    ) -> Result<()> {
        let f = self.vae_scale_factor();
        let (h, w) = (req.height / f, req.width / f);
        let rows = (if guided { 2 } else { 1 }) * n;
        let u = &self.unet.config;
        let mut largest: Vec<(u64, String)> = Vec::new();
        for (i, &c) in u.block_out_channels.iter().enumerate() {
            let px = ((h >> i).max(1) * (w >> i).max(1)) as u64;
            if u.down_attention[i] {
                largest.push((
                    4 * rows as u64 * px * 8 * c as u64,
                    format!("U-Net feed-forward activation at level {i} (batch {n})"),
                ));
            }
            let cat = c + u.block_out_channels.get(i + 1).copied().unwrap_or(c);
            largest.push((
                4 * rows as u64 * px * cat as u64,
                format!("U-Net skip concatenation at level {i} (batch {n})"),
            ));
        }
        // The decoder's last upsampler outputs the second level's channels at full size (a
        // tile's, when the VAE works in tiles).
        let v = &self.vae.config.block_out_channels;
        let full = v.get(1).copied().unwrap_or(v[0]).max(v[0]) as u64;
        let (vh, vw) = match req.vae_tiling {
            super::VaeTiling::On => {
                let t = self.vae_tile_px(req);
                (req.height.min(t), req.width.min(t))
            }
            _ => (req.height, req.width),
        };
        largest.push((
            4 * n as u64 * (vh * vw) as u64 * full,
            format!("VAE decoder activation at {vw}x{vh} (batch {n})"),
        ));
        let limit = gpu.limits().max_buffer_size;
        if let Some((bytes, what)) = largest.into_iter().max_by_key(|(b, _)| *b) {
            if bytes > limit {
                return Err(Error::Limit {
                    op: "generate",
                    tensor: what,
                    bytes,
                    limit_name: "max_buffer_size",
                    limit,
                });
            }
        }
        Ok(())
    }

    /// The device memory `req` needs, found by recording the request (every op of the text
    /// encoder, the first U-Net steps, the VAE) against a pool that allocates nothing and
    /// counts what a real run allocates — the same code sizes it that runs it, so the figure
    /// is the pool's real peak, not a formula. Takes milliseconds; loads the VAE encoder first
    /// when the request has an init image. `generate` runs this check itself and refuses a
    /// request over [`Gpu::memory_budget`] before allocating anything.
    ///
    /// The estimate is of the run [`Pipeline::offload`] picks: with `Auto`, networks resident
    /// when the request fits beside them, else released between stages.
    pub fn memory_estimate(&self, gpu: &Gpu, req: &Request) -> Result<MemoryEstimate> {
        self.validate(req)?;
        self.planned(gpu, req, None)
    }

    /// [`Pipeline::memory_estimate`] of the run that keeps every network on the device
    /// (`offload` false) or releases each after its stage (true), whatever
    /// [`Pipeline::offload`] says.
    pub fn memory_estimate_with(
        &self,
        gpu: &Gpu,
        req: &Request,
        offload: bool,
    ) -> Result<MemoryEstimate> {
        self.validate(req)?;
        self.estimate(gpu, req, None, offload)
    }

    /// The estimate of the run `self.offload` picks for `req`.
    fn planned(
        &self,
        gpu: &Gpu,
        req: &Request,
        texture: Option<&wgpu::Texture>,
    ) -> Result<MemoryEstimate> {
        match self.offload {
            Offload::Never => self.estimate(gpu, req, texture, false),
            Offload::Always => self.estimate(gpu, req, texture, true),
            Offload::Auto => {
                let resident = self.estimate(gpu, req, texture, false)?;
                if resident.fits() {
                    return Ok(resident);
                }
                self.estimate(gpu, req, texture, true)
            }
        }
    }

    fn estimate(
        &self,
        gpu: &Gpu,
        req: &Request,
        texture: Option<&wgpu::Texture>,
        offload: bool,
    ) -> Result<MemoryEstimate> {
        // (Validated by the caller: `memory_estimate`, or `run` before `ensure_fits`.)
        if !offload && !gpu.is_simulating() && req.init_image.is_some() {
            // A run that keeps its networks keeps img2img's encoder, loaded on first use:
            // load it now, so that it counts as resident, as it will be. (Networks released
            // by an earlier offloaded run are sized by their simulated loads instead, so that
            // a refused request allocates nothing.)
            self.vae_encoder(gpu)?;
        }
        let now = gpu.memory_stats();
        // A releasing run starts by releasing every network (and the pool's cache).
        let released = if offload { self.model_bytes() } else { 0 };
        let (_, sim) =
            gpu.simulate(|| self.run(gpu, req, &mut |_| true, texture, Some(offload)))?;
        Ok(MemoryEstimate {
            resident: now.in_use.saturating_sub(released),
            request: sim.peak,
            cached: now.allocated.saturating_sub(now.in_use),
            budget: gpu.memory_budget(),
            offload,
        })
    }

    /// Refuses `req` when it would not fit the memory budget (naming the largest batch that
    /// would), and frees the pool's cache when the request fits only without it. Returns
    /// whether the run releases its networks between stages, and whether it must tile the
    /// VAE to fit ([`super::VaeTiling::Auto`]).
    pub(super) fn ensure_fits(
        &self,
        gpu: &Gpu,
        req: &Request,
        texture: Option<&wgpu::Texture>,
    ) -> Result<(bool, bool)> {
        let est = self.planned(gpu, req, texture)?;
        let Some(budget) = est.budget.clone() else {
            return Ok((est.offload, false));
        };
        // A run that fits, perhaps only once the pool's cache is freed.
        let run = |e: &MemoryEstimate, tiled: bool| {
            if e.total() + e.cached > budget.bytes {
                gpu.trim_pool();
            }
            Ok((e.offload, tiled))
        };
        if est.fits() {
            return run(&est, false);
        }
        // `VaeTiling::Auto`: the same request with the VAE in tiles, if that fits.
        if req.vae_tiling == super::VaeTiling::Auto {
            let tiled = Request {
                vae_tiling: super::VaeTiling::On,
                ..req.clone()
            };
            let t = self.planned(gpu, &tiled, texture)?;
            if t.fits() {
                return run(&t, true);
            }
        }
        let n = req.batch_size;
        let hint = if n > 1 {
            // Memory grows with the batch: bisect for the largest that fits.
            let fits = |k: usize| -> Result<bool> {
                // The caller's arrays are sized for `n`: smaller batches draw their own.
                let r = Request {
                    batch_size: k,
                    init_latents: None,
                    init_image: req
                        .init_image
                        .clone()
                        .map(|im| super::InitImage { noise: None, ..im }),
                    ..req.clone()
                };
                Ok(self.planned(gpu, &r, texture)?.fits())
            };
            let (mut lo, mut hi) = (0, n);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if fits(mid)? {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            if lo == 0 {
                "; even one image does not fit: lower the size".to_string()
            } else {
                format!("; a batch of at most {lo} fits")
            }
        } else {
            "; lower the size".to_string()
        };
        Err(Error::Memory {
            op: "generate",
            what: format!(
                "{} at {}x{}",
                if n == 1 {
                    "1 image".to_string()
                } else {
                    format!("batch {n}")
                },
                req.width,
                req.height
            ),
            resident: est.resident,
            request: est.request,
            budget: budget.bytes,
            budget_source: budget.source,
            offload: est.offload,
            hint,
        })
    }
}
