//! Request validation, before any work: every size, count and value of a [`Request`] is
//! checked with checked arithmetic against the limits below, and every host array it carries
//! (initial latents, noise, init image, mask) must have the request's shape and finite values.
//! The messages name the field, the value and the limit.

use super::{Pipeline, Request};
use crate::error::{Error, Result};

/// Largest image side in pixels (both sides; 16384 px is 2048 latents at SD's factor 8).
pub const MAX_SIDE_PX: usize = 16384;
/// Largest `batch_size` (images per U-Net call).
pub const MAX_BATCH: usize = 1024;
/// Largest `|guidance|` (the common UIs stop at 30; 100 leaves room for experiments).
pub const MAX_GUIDANCE: f32 = 100.0;
/// Largest prompt (and negative prompt) in bytes.
pub const MAX_PROMPT_BYTES: usize = 65536;
/// Most values in one host-side array of a request (initial latents and noise, the prompt
/// context repeated for the batch): 2^28 f32 = 1 GiB. Far above any real request; it keeps a
/// request from asking the host for more memory than the device-side checks can see.
pub const MAX_HOST_VALUES: usize = 1 << 28;

/// Checks that `values` are finite, naming the field and the first bad index.
fn finite(field: &'static str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::request(
            field,
            format!(
                "holds {} at index {i} (every value must be finite)",
                values[i]
            ),
        )),
    }
}

/// Checks that `values` hold `want` elements, described by `shape`.
fn sized(field: &'static str, values: &[f32], want: usize, shape: &str) -> Result<()> {
    if values.len() != want {
        return Err(Error::request(
            field,
            format!("holds {} values; {shape} needs {want}", values.len()),
        ));
    }
    finite(field, values)
}

impl Pipeline {
    /// The latents' shape for `req` (NCHW, as diffusers and `.npy` files have it):
    /// `[batch_size, out_channels, height / f, width / f]`: the shape of `init_latents`, of an
    /// init image's `noise`, and of the returned latents.
    pub fn latent_shape(&self, req: &Request) -> [usize; 4] {
        let f = self.vae_scale_factor();
        [
            req.batch_size,
            self.unet.config.out_channels,
            req.height / f,
            req.width / f,
        ]
    }

    /// Checks `req` against the model and the limits above (see the module doc). Called by
    /// `generate` and `memory_estimate` before anything else.
    pub fn validate(&self, req: &Request) -> Result<()> {
        self.tiny_for(req)?;
        self.validate_upscale(req)?;
        if req.vae_tile_size.is_some() || req.vae_tiling == super::VaeTiling::On {
            super::tiling::TileGeometry::decode(self.vae_tile_px(req), self.vae_scale_factor())?;
        }
        let f = self.vae_scale_factor();
        for (field, v) in [("width", req.width), ("height", req.height)] {
            if v == 0 || v % f != 0 || v > MAX_SIDE_PX {
                return Err(Error::request(
                    field,
                    format!("is {v} px; it must be a multiple of {f} from {f} to {MAX_SIDE_PX}"),
                ));
            }
        }
        // SDXL micro-conditioning: sizes of at most the largest side, a crop inside the image.
        for (field, v) in [
            ("original_size", req.original_size),
            ("target_size", req.target_size),
            ("crops_coords_top_left", Some(req.crops_coords_top_left)),
            (
                "negative_micro",
                req.negative_micro.map(|m| m.original_size),
            ),
            (
                "negative_micro",
                req.negative_micro.map(|m| m.crops_coords_top_left),
            ),
            ("negative_micro", req.negative_micro.map(|m| m.target_size)),
        ] {
            if let Some((a, b)) = v {
                if a > 4 * MAX_SIDE_PX || b > 4 * MAX_SIDE_PX {
                    return Err(Error::request(
                        field,
                        format!(
                            "is ({a}, {b}); each value must be at most {}",
                            4 * MAX_SIDE_PX
                        ),
                    ));
                }
            }
        }
        if !(1..=MAX_BATCH).contains(&req.batch_size) {
            return Err(Error::request(
                "batch_size",
                format!("is {}; it must be 1 to {MAX_BATCH}", req.batch_size),
            ));
        }
        for (field, v) in [
            ("denoising_start", req.denoising_start),
            ("denoising_end", req.denoising_end),
        ] {
            if let Some(f) = v.filter(|f| !(*f > 0.0 && *f < 1.0)) {
                return Err(Error::request(
                    field,
                    format!("is {f}; it must be between 0 and 1 (exclusive)"),
                ));
            }
        }
        if req.denoising_start.is_some() && req.init_image.is_some() {
            return Err(Error::request(
                "denoising_start",
                "continues from `init_latents`; it takes no init image",
            ));
        }
        if let Some(sched) = req.sigma_schedule {
            let kind = self.sampler_for(req)?;
            if !kind.has_sigma_schedule() {
                return Err(Error::request(
                    "sigma_schedule",
                    format!(
                        "is {sched:?}, but the {kind:?} sampler has no σ schedule (Euler, Heun, \
                         LMS and DPM++ have)"
                    ),
                ));
            }
        }
        let n_train = self.scheduler.num_train_timesteps;
        if !(1..=n_train).contains(&req.steps) {
            return Err(Error::request(
                "steps",
                format!(
                    "is {}; this model's schedule allows 1 to {n_train}",
                    req.steps
                ),
            ));
        }
        if !req.guidance.is_finite() || req.guidance.abs() > MAX_GUIDANCE {
            return Err(Error::request(
                "guidance",
                format!(
                    "is {}; it must be finite, at most {MAX_GUIDANCE} in magnitude",
                    req.guidance
                ),
            ));
        }
        for (field, p) in [
            ("prompt", &req.prompt),
            ("negative_prompt", &req.negative_prompt),
        ] {
            if p.len() > MAX_PROMPT_BYTES {
                return Err(Error::request(
                    field,
                    format!(
                        "is {} bytes, above the limit of {MAX_PROMPT_BYTES}",
                        p.len()
                    ),
                ));
            }
            // Weights out of range or malformed brackets: the prompt parser's own errors.
            if crate::prompt::has_weights(p) {
                crate::prompt::parse_weights(p)?;
            }
        }
        // The context the U-Net attends to: [rows·n, 77·chunks, width], built on the host.
        let chunks = |p: &str| -> Result<usize> {
            Ok(match req.long_prompt {
                super::LongPrompt::Truncate => 1,
                super::LongPrompt::Chunk => {
                    crate::prompt::chunk_prompt(&self.tokenizer, p)?.ids.len()
                }
            })
        };
        let guided = self.guided(req);
        let k = chunks(&req.prompt)?.max(if guided {
            chunks(&req.negative_prompt)?
        } else {
            1
        });
        // SDXL: both encoders' states side by side.
        let width = self.text_encoder.config.hidden_size
            + self
                .text_encoder_2
                .as_ref()
                .map_or(0, |t| t.config.hidden_size);
        let context = (if guided { 2 } else { 1 } * req.batch_size)
            .checked_mul(k * crate::tokenizer::CONTEXT_LEN * width)
            .filter(|&v| v <= MAX_HOST_VALUES);
        if context.is_none() {
            return Err(Error::request(
                "batch_size",
                format!(
                    "is {}: with a prompt of {k} chunk(s) the text context would hold more than \
                     {MAX_HOST_VALUES} values",
                    req.batch_size
                ),
            ));
        }
        // SDXL takes the penultimate layer's state: one layer fewer to skip.
        let xl = usize::from(self.is_xl());
        let layers = std::iter::once(&self.text_encoder.config)
            .chain(self.text_encoder_2.as_ref().map(|t| &t.config))
            .map(|c| c.num_hidden_layers)
            .min()
            .unwrap_or(0);
        if req.clip_skip + xl >= layers {
            return Err(Error::request(
                "clip_skip",
                format!(
                    "is {}; the text encoders have {layers} layers (0 to {})",
                    req.clip_skip,
                    layers.saturating_sub(1 + xl)
                ),
            ));
        }
        // Sizes are bounded above, so these products cannot overflow; checked all the same.
        let [n, c, h, w] = self.latent_shape(req);
        let shape = format!("[{n}, {c}, {h}, {w}]");
        let latents = n
            .checked_mul(c)
            .and_then(|v| v.checked_mul(h))
            .and_then(|v| v.checked_mul(w))
            .filter(|&v| v <= MAX_HOST_VALUES)
            .ok_or_else(|| {
                Error::request(
                    "batch_size",
                    format!(
                        "is {n}: the latents {shape} would hold more than {MAX_HOST_VALUES} values"
                    ),
                )
            })?;
        if let Some(l) = &req.init_latents {
            sized("init_latents", l, latents, &shape)?;
        }
        if let Some(im) = &req.init_image {
            let px = req.width * req.height;
            sized(
                "init_image.rgb",
                &im.rgb,
                px * 3,
                &format!("a {}x{} RGB image", req.width, req.height),
            )?;
            if !(0.0..=1.0).contains(&im.strength) {
                return Err(Error::request(
                    "init_image.strength",
                    format!("is {}; it must be within [0, 1]", im.strength),
                ));
            }
            if let Some(z) = &im.noise {
                sized("init_image.noise", z, latents, &shape)?;
            }
            if let Some(m) = &im.mask {
                sized(
                    "init_image.mask",
                    m,
                    px,
                    &format!("a {}x{} mask", req.width, req.height),
                )?;
            }
        }
        Ok(())
    }
}

impl Pipeline {
    /// The 4× upscaler's input: required by an upscaler model, refused by any other; the
    /// low-res image the output's size ÷ the VAE factor, the noise level within the model's
    /// `max_noise_level`.
    fn validate_upscale(&self, req: &Request) -> Result<()> {
        let (cfg, up) = match (&self.upscaler, &req.upscale) {
            (None, None) => return Ok(()),
            (Some(_), None) => {
                return Err(Error::request(
                    "upscale",
                    "this model is the 4× upscaler: give it the low-res image",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::request("upscale", "this model is not an upscaler"));
            }
            (Some(c), Some(u)) => (c, u),
        };
        let f = self.vae_scale_factor();
        let (h, w) = (req.height / f, req.width / f);
        sized("upscale.rgb", &up.rgb, h * w * 3, &format!("[{h}, {w}, 3]"))?;
        finite("upscale.rgb", &up.rgb)?;
        if let Some(z) = &up.noise {
            sized("upscale.noise", z, 3 * h * w, &format!("[1, 3, {h}, {w}]"))?;
            finite("upscale.noise", z)?;
        }
        if up.noise_level > cfg.max_noise_level || up.noise_level as usize >= cfg.low_res_ac.len() {
            return Err(Error::request(
                "upscale.noise_level",
                format!(
                    "is {}; this upscaler takes 0 to {}",
                    up.noise_level, cfg.max_noise_level
                ),
            ));
        }
        if req.init_image.is_some() || req.denoising_start.is_some() {
            return Err(Error::request(
                "upscale",
                "takes no init image or denoising_start",
            ));
        }
        Ok(())
    }
}
