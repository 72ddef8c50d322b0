//! Range checks of model configs, run on every architecture before any weight is loaded (a
//! diffusers folder, an LDM yaml, or shapes inferred from a checkpoint alike): zero or absurd
//! sizes would divide by zero, overflow size arithmetic or ask for terabytes, and a zero or
//! negative epsilon or scaling factor turns every image into NaN. Each message names the key,
//! its value and the allowed range.

use super::arch::Architecture;
use super::clip::ClipTextConfig;
use super::unet::UNetConfig;
use super::vae::AutoencoderKLConfig;
use crate::error::{Error, Result};
use crate::tokenizer::CONTEXT_LEN;

type Check = std::result::Result<(), String>;

fn within(key: &str, v: usize, lo: usize, hi: usize) -> Check {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!("`{key}` = {v} is outside {lo}..={hi}"))
    }
}

fn positive_eps(key: &str, v: f32) -> Check {
    if v.is_finite() && v > 0.0 && v < 1.0 {
        Ok(())
    } else {
        Err(format!("`{key}` = {v} must be a finite number in (0, 1)"))
    }
}

/// Channel counts: `blocks` entries, each divisible by `groups`.
fn channels(key: &str, blocks: &[usize], groups: usize) -> Check {
    within(&format!("{key} (count)"), blocks.len(), 1, 8)?;
    within("norm_num_groups", groups, 1, 1024)?;
    for &c in blocks {
        within(key, c, 1, 1 << 16)?;
        if c % groups != 0 {
            return Err(format!(
                "`{key}` entry {c} is not a multiple of norm_num_groups = {groups}"
            ));
        }
    }
    Ok(())
}

impl UNetConfig {
    pub fn check(&self) -> Check {
        within("in_channels", self.in_channels, 1, 64)?;
        within("out_channels", self.out_channels, 1, 64)?;
        channels(
            "block_out_channels",
            &self.block_out_channels,
            self.norm_num_groups,
        )?;
        within("layers_per_block", self.layers_per_block, 1, 16)?;
        if self.transformer_layers_per_block.len() != self.block_out_channels.len() {
            return Err(format!(
                "{} transformer_layers_per_block entries for {} blocks",
                self.transformer_layers_per_block.len(),
                self.block_out_channels.len()
            ));
        }
        for &d in &self.transformer_layers_per_block {
            within("transformer_layers_per_block", d, 1, 64)?;
        }
        if let Some(d) = self.addition_time_embed_dim {
            within("addition_time_embed_dim", d, 1, 1 << 16)?;
            within(
                "projection_class_embeddings_input_dim",
                self.projection_class_embeddings_input_dim,
                6 * d + 1,
                1 << 20,
            )?;
        }
        if let Some(d) = self.time_cond_proj_dim {
            // diffusers' guidance embedding divides by d/2 − 1.
            within("time_cond_proj_dim", d, 4, 1 << 16)?;
        }
        within("cross_attention_dim", self.cross_attention_dim, 1, 1 << 16)?;
        // 2048 latents is 16384 px at SD's factor 8: the largest request side.
        within("sample_size", self.sample_size, 1, 2048)?;
        positive_eps("norm_eps", self.norm_eps)?;
        if !self.freq_shift.is_finite() {
            return Err(format!("`freq_shift` = {} must be finite", self.freq_shift));
        }
        for (&h, &c) in self.heads.iter().zip(&self.block_out_channels) {
            if h == 0 || c % h != 0 {
                return Err(format!(
                    "attention heads = {h} do not divide the block's {c} channels"
                ));
            }
        }
        Ok(())
    }
}

impl AutoencoderKLConfig {
    pub fn check(&self) -> Check {
        within("in_channels", self.in_channels, 1, 64)?;
        within("out_channels", self.out_channels, 1, 64)?;
        within("latent_channels", self.latent_channels, 1, 64)?;
        channels(
            "block_out_channels",
            &self.block_out_channels,
            self.norm_num_groups,
        )?;
        within("layers_per_block", self.layers_per_block, 1, 16)?;
        let s = self.scaling_factor;
        if !(s.is_finite() && s > 0.0 && s <= 1000.0) {
            return Err(format!(
                "`scaling_factor` = {s} must be a finite number in (0, 1000]"
            ));
        }
        Ok(())
    }
}

impl ClipTextConfig {
    pub fn check(&self) -> Check {
        within("vocab_size", self.vocab_size, 1, 1 << 20)?;
        within("hidden_size", self.hidden_size, 1, 1 << 16)?;
        within("intermediate_size", self.intermediate_size, 1, 1 << 18)?;
        within("num_hidden_layers", self.num_hidden_layers, 1, 256)?;
        within("num_attention_heads", self.num_attention_heads, 1, 1024)?;
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(format!(
                "`hidden_size` = {} is not a multiple of num_attention_heads = {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        within(
            "max_position_embeddings",
            self.max_position_embeddings,
            CONTEXT_LEN,
            1 << 16,
        )?;
        positive_eps("layer_norm_eps", self.layer_norm_eps)
    }
}

impl Architecture {
    /// The networks agree: the U-Net denoises the VAE's latents (plain, or inpainting's
    /// latents + mask + masked-image latents) and attends to the text encoder's states.
    fn fits_together(&self) -> Check {
        let (u, v) = (&self.unet, &self.vae);
        let lat = v.latent_channels;
        // The upscaler's U-Net takes the latents and the noised RGB low-res image.
        let upscale = self.upscaler.is_some() && u.in_channels == lat + 3;
        if u.out_channels != lat
            || (u.in_channels != lat && u.in_channels != 2 * lat + 1 && !upscale)
        {
            return Err(format!(
                "the U-Net maps {} to {} channels but the VAE has {lat} latent channels \
                 (expected {lat} → {lat}, {} → {lat} for inpainting, or {} → {lat} for the \
                 upscaler)",
                u.in_channels,
                u.out_channels,
                2 * lat + 1,
                lat + 3
            ));
        }
        // SDXL: both encoders' states side by side, and the second one's pooled projection
        // with the six time ids into the U-Net's added embedding.
        let width = self.text.hidden_size + self.text_2.as_ref().map_or(0, |(t, _)| t.hidden_size);
        if u.cross_attention_dim != width {
            return Err(format!(
                "the U-Net's cross_attention_dim = {} is not the text encoders' hidden_size = {width}",
                u.cross_attention_dim
            ));
        }
        // The pooled projection comes from the second encoder (base) or the only one (the
        // refiner, which takes five time ids: the aesthetic score for the target size).
        let ids = if self.requires_aesthetics_score { 5 } else { 6 };
        let pooling = self.text_2.as_ref().map_or(&self.text, |(t, _)| t);
        match (u.addition_time_embed_dim, pooling.projection_dim) {
            (Some(d), Some(pooled)) => {
                if pooled + ids * d != u.projection_class_embeddings_input_dim {
                    return Err(format!(
                        "the U-Net's add_embedding takes {} values, the text encoder's projection \
                         ({pooled}) and {ids} time ids of {d} make {}",
                        u.projection_class_embeddings_input_dim,
                        pooled + ids * d
                    ));
                }
            }
            (Some(_), None) => {
                return Err(
                    "the U-Net takes SDXL's text_time conditions but no text encoder has a \
                     projection (text_encoder_2)"
                        .into(),
                );
            }
            (None, _) if self.text_2.is_some() => {
                return Err("a text_encoder_2 but the U-Net takes no added conditions".into());
            }
            (None, _) => {}
        }
        Ok(())
    }

    /// Every config's range checks; the error names the config's source.
    pub fn check(&self, model: &std::path::Path) -> Result<()> {
        let parts: [(&str, Check); 5] = [
            ("text encoder", self.text.check()),
            (
                "text encoder 2",
                self.text_2.as_ref().map_or(Ok(()), |(t, _)| t.check()),
            ),
            ("U-Net", self.unet.check()),
            ("VAE", self.vae.check()),
            ("model", self.fits_together()),
        ];
        for (part, r) in parts {
            if let Err(what) = r {
                return Err(Error::ModelLayout {
                    path: match self.source.path() {
                        p if p.as_os_str().is_empty() => model.to_path_buf(),
                        p => p.to_path_buf(),
                    },
                    what: format!("{part} config ({}): {what}", self.source),
                });
            }
        }
        Ok(())
    }
}
