//! SDXL's prompt encoding and micro-conditioning (diffusers `StableDiffusionXLPipeline`:
//! `encode_prompt`, `_get_add_time_ids`): both text encoders' hidden states before their last
//! layer concatenated into the context, the second encoder's pooled, projected output as
//! `text_embeds`, zeros for an absent negative prompt (`force_zeros_for_empty_prompt`), and
//! six time ids per image.

use super::{LongPrompt, Pipeline, Request};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};
use crate::models::clip::{ClipTextModel, HiddenState};
use crate::ops;
use crate::tensor::{DType, Tensor};
use crate::tokenizer::ClipTokenizer;

/// What SDXL's text encoders give a request: the context `[rows, 77, h1 + h2]` and the
/// pooled `text_embeds` `[rows, d]` (rows: negative first with guidance), f32.
pub(super) struct XlPrompt {
    pub context: Tensor,
    pub pooled: Tensor,
    pub truncated_tokens: usize,
}

impl Pipeline {
    /// SDXL's `encode_prompt` for `req` (guided: the negative prompt's row first) through
    /// `encoders` with their tokenizers: the base's two, side by side, or the refiner's one;
    /// the pooled output is the last encoder's.
    pub(super) fn encode_prompts_xl(
        &self,
        encoders: &[(&ClipTextModel, &ClipTokenizer)],
        rec: &mut Recorder<'_>,
        req: &Request,
        guided: bool,
    ) -> Result<XlPrompt> {
        // diffusers: zeros when no negative prompt is given and the model says so.
        let zeros = guided
            && self.force_zeros_for_empty_prompt
            && req.negative_prompt.is_empty()
            && !req.encode_empty_negative;
        let mut prompts = vec![req.prompt.as_str()];
        if guided && !zeros {
            prompts.insert(0, req.negative_prompt.as_str());
        }
        let which = HiddenState::Penultimate {
            clip_skip: req.clip_skip,
        };
        let no_pooled =
            || Error::unsupported("SDXL", "the last text encoder has no text_projection");
        // Weights or a long prompt in chunk mode: the web UI's way, on every encoder.
        let plain = |p: &str| -> Result<bool> {
            Ok(!crate::prompt::has_weights(p)
                && (self.tokenizer.encode(p)?.truncated == 0
                    || req.long_prompt == LongPrompt::Truncate))
        };
        let mut all_plain = true;
        for p in &prompts {
            all_plain &= plain(p)?;
        }
        let last = encoders.len().saturating_sub(1);
        let mut hidden = Vec::new();
        let mut pooled = None;
        let mut truncated_tokens = 0;
        for (k, &(te, tok)) in encoders.iter().enumerate() {
            let (h, p, t) = if all_plain {
                let mut ids = Vec::new();
                let mut t = 0;
                for p in &prompts {
                    let e = tok.encode(p)?;
                    t = e.truncated; // the last (positive) prompt's
                    ids.push(e.ids);
                }
                let out = te.encode(rec, &ids, which, k == last)?;
                (out.hidden, out.pooled, t)
            } else {
                let c = self.encode_chunked(te, tok, rec, req, &prompts, which, k == last)?;
                (c.context, c.pooled, c.truncated)
            };
            if k == 0 {
                truncated_tokens = t;
            }
            if hidden
                .first()
                .is_some_and(|f: &Tensor| f.shape()[1] != h.shape()[1])
            {
                return Err(Error::unsupported(
                    "SDXL",
                    "the tokenizers cut the prompt into different numbers of chunks",
                ));
            }
            hidden.push(h);
            pooled = p;
        }
        let pooled = pooled.ok_or_else(no_pooled)?;
        // [r, 77·k, h1 (+ h2)]
        let mut context = hidden.remove(0);
        for h in &hidden {
            context = ops::concat_channels(rec, &context, h)?;
        }
        self.finish_xl(rec, context, pooled, zeros, truncated_tokens)
    }

    /// The context `[r, 77·k, h1 + h2]` and pooled rows, with the zero unconditional row
    /// first when `zeros` (`force_zeros_for_empty_prompt`).
    fn finish_xl(
        &self,
        rec: &mut Recorder<'_>,
        context: Tensor,
        pooled: Tensor,
        zeros: bool,
        truncated_tokens: usize,
    ) -> Result<XlPrompt> {
        let (context, pooled) = if zeros {
            (
                zero_row_first(rec, &context)?,
                zero_row_first(rec, &pooled)?,
            )
        } else {
            (context, pooled)
        };
        Ok(XlPrompt {
            context,
            pooled,
            truncated_tokens,
        })
    }

    /// diffusers' `_get_add_time_ids` for every row of a batch of `n` images: original size,
    /// crop top-left and target size (height before width), or for the refiner
    /// (`requires_aesthetics_score`) original size, crop and aesthetic score; guided, the
    /// unconditional rows first. Their ids: text-to-image, [`Request::negative_micro`]'s
    /// where given, else the prompt's; the image-to-image pipeline (an init image, or the
    /// refiner's `denoising_start`) takes the negative sizes with the *prompt's* crop, as
    /// diffusers' `StableDiffusionXLImg2ImgPipeline` does, and with aesthetic scores the
    /// negative crop (default (0, 0)) and original size (default the prompt's). f32
    /// `[rows, 6]` or `[rows, 5]`.
    pub(super) fn time_ids(
        &self,
        gpu: &Gpu,
        req: &Request,
        n: usize,
        guided: bool,
    ) -> Result<Tensor> {
        let size = (req.height, req.width);
        let f = |v: usize| v as f32;
        let original = req.original_size.unwrap_or(size);
        let crop = req.crops_coords_top_left;
        let target = req.target_size.unwrap_or(size);
        let img2img = req.init_image.is_some() || req.denoising_start.is_some();
        let m = req.negative_micro;
        let (pos, neg): (Vec<f32>, Vec<f32>) = if self.requires_aesthetics_score {
            let (no, nc) = m.map_or((original, (0, 0)), |m| {
                (m.original_size, m.crops_coords_top_left)
            });
            (
                vec![
                    f(original.0),
                    f(original.1),
                    f(crop.0),
                    f(crop.1),
                    req.aesthetic_score,
                ],
                vec![
                    f(no.0),
                    f(no.1),
                    f(nc.0),
                    f(nc.1),
                    req.negative_aesthetic_score,
                ],
            )
        } else {
            let ids = |o: (usize, usize), c: (usize, usize), t: (usize, usize)| {
                vec![f(o.0), f(o.1), f(c.0), f(c.1), f(t.0), f(t.1)]
            };
            let pos = ids(original, crop, target);
            let neg = match m {
                Some(m) if img2img => ids(m.original_size, crop, m.target_size),
                Some(m) => ids(m.original_size, m.crops_coords_top_left, m.target_size),
                None => pos.clone(),
            };
            (pos, neg)
        };
        let k = pos.len();
        let mut all: Vec<f32> = Vec::new();
        if guided {
            all.extend((0..n).flat_map(|_| neg.iter().copied()));
        }
        all.extend((0..n).flat_map(|_| pos.iter().copied()));
        let rows = all.len() / k;
        Tensor::from_f32(gpu, &all, &[rows, k], DType::F32, "SDXL time ids")
    }
}

/// `[1, …]` → `[2, …]` with a row of zeros first (the unconditional row of
/// `force_zeros_for_empty_prompt`).
fn zero_row_first(rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
    let mut shape = x.shape().to_vec();
    let per = x.numel();
    let z = Tensor::zeros(rec.gpu(), &[1, per], x.dtype(), "SDXL zero prompt")?;
    let both = ops::concat_channels(rec, &z, &x.reshape(&[1, per])?)?;
    shape[0] = 2;
    both.reshape(&shape)
}
