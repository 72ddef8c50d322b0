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
    /// SDXL's `encode_prompt` for `req` (guided: the negative prompt's row first).
    pub(super) fn encode_prompts_xl(
        &self,
        encoders: [&ClipTextModel; 2],
        tokenizer_2: &ClipTokenizer,
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
        // Weights or a long prompt in chunk mode: the web UI's way, on both encoders.
        let plain = |p: &str| -> Result<bool> {
            Ok(!crate::prompt::has_weights(p)
                && (self.tokenizer.encode(p)?.truncated == 0
                    || req.long_prompt == LongPrompt::Truncate))
        };
        let mut all_plain = true;
        for p in &prompts {
            all_plain &= plain(p)?;
        }
        if !all_plain {
            let [te1, te2] = encoders;
            let a = self.encode_chunked(te1, &self.tokenizer, rec, req, &prompts, which, false)?;
            let b = self.encode_chunked(te2, tokenizer_2, rec, req, &prompts, which, true)?;
            if a.context.shape()[1] != b.context.shape()[1] {
                return Err(Error::unsupported(
                    "SDXL",
                    "the two tokenizers cut the prompt into different numbers of chunks",
                ));
            }
            let pooled = b.pooled.ok_or_else(|| {
                Error::unsupported("SDXL", "text_encoder_2 has no text_projection")
            })?;
            let context = ops::concat_channels(rec, &a.context, &b.context)?;
            return self.finish_xl(rec, context, pooled, zeros, a.truncated);
        }
        let mut truncated_tokens = 0;
        let mut hidden = Vec::new();
        let mut pooled = None;
        for (k, (te, tok)) in encoders
            .into_iter()
            .zip([&self.tokenizer, tokenizer_2])
            .enumerate()
        {
            let mut ids = Vec::new();
            for (i, p) in prompts.iter().enumerate() {
                let t = tok.encode(p)?;
                if i + 1 == prompts.len() && k == 0 {
                    truncated_tokens = t.truncated;
                }
                ids.push(t.ids);
            }
            let out = te.encode(rec, &ids, which, k == 1)?;
            hidden.push(out.hidden);
            pooled = out.pooled;
        }
        let pooled = pooled
            .ok_or_else(|| Error::unsupported("SDXL", "text_encoder_2 has no text_projection"))?;
        let context = ops::concat_channels(rec, &hidden[0], &hidden[1])?; // [r, 77, h1 + h2]
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
    /// crop top-left and target size (height before width); guided, the unconditional rows
    /// first, with [`Request::negative_micro`]'s ids where given. f32 `[rows, 6]`.
    pub(super) fn time_ids(gpu: &Gpu, req: &Request, n: usize, guided: bool) -> Result<Tensor> {
        let size = (req.height, req.width);
        let ids = |(oh, ow): (usize, usize), (ct, cl): (usize, usize), (th, tw): (usize, usize)| {
            [oh, ow, ct, cl, th, tw].map(|v| v as f32)
        };
        let pos = ids(
            req.original_size.unwrap_or(size),
            req.crops_coords_top_left,
            req.target_size.unwrap_or(size),
        );
        let neg = req.negative_micro.map_or(pos, |m| {
            ids(m.original_size, m.crops_coords_top_left, m.target_size)
        });
        let mut all: Vec<f32> = Vec::new();
        if guided {
            all.extend((0..n).flat_map(|_| neg));
        }
        all.extend((0..n).flat_map(|_| pos));
        let rows = all.len() / 6;
        Tensor::from_f32(gpu, &all, &[rows, 6], DType::F32, "SDXL time ids")
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
