//! SDXL base + refiner, diffusers' "ensemble of expert denoisers": the base model denoises the
//! first part of the schedule (`denoising_end`), the refiner — `text_encoder_2` alone, time ids
//! with aesthetic scores — continues from those latents (`denoising_start`, no encoding, no
//! noise added) and decodes.

use super::{Output, Pipeline, Progress, Request};
use crate::error::{Error, Result};
use crate::gpu::Gpu;

impl Pipeline {
    /// Runs `req` with this model down to `start` of the schedule and `refiner` from there
    /// (diffusers: `base(…, denoising_end=start, output_type="latent")` then
    /// `refiner(…, image=latents, denoising_start=start)`). The refiner samples with its own
    /// scheduler unless `req.sampler` is set, and its step noise (ancestral samplers) from a
    /// generator seeded afresh with `req.seed`. `progress` sees the base's steps, then the
    /// refiner's. The output is the refiner's (its latents and image; `steps_run` counts both
    /// parts, the timings add up).
    pub fn generate_refined(
        &self,
        gpu: &Gpu,
        refiner: &Pipeline,
        req: &Request,
        start: f64,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<Output> {
        if !(start > 0.0 && start < 1.0) {
            return Err(Error::request(
                "refiner_start",
                format!("is {start}; it must be between 0 and 1 (exclusive)"),
            ));
        }
        if req.init_image.is_some() || req.denoising_start.is_some() {
            return Err(Error::request(
                "init_image",
                "a base + refiner run starts from noise (refine an image with the refiner alone, \
                 as image-to-image)",
            ));
        }
        if !refiner.is_xl() {
            return Err(Error::request(
                "refiner",
                "is not an SDXL model (its U-Net takes no text_time conditions)",
            ));
        }
        let base = Request {
            denoising_end: Some(start),
            ..req.clone()
        };
        let a = self.generate(gpu, &base, progress)?;
        let rest = Request {
            init_latents: Some(a.latents),
            denoising_start: Some(start),
            denoising_end: None,
            ..req.clone()
        };
        let mut out = refiner.generate(gpu, &rest, progress)?;
        out.steps_run += a.steps_run;
        let (t, u) = (&mut out.timings, a.timings);
        t.text_encoding += u.text_encoding;
        t.context_projection += u.context_projection;
        t.sampling += u.sampling;
        t.decoding += u.decoding;
        t.loading += u.loading;
        Ok(out)
    }
}
