//! LoRAs on a pipeline: merged into the text encoders' and the U-Net's weights as they are
//! uploaded ([`crate::lora`]), switched without reading the base model's files again beyond
//! the weights a LoRA changes.
//!
//! Why merged and not a low-rank path at run time: a merged weight costs nothing per step
//! (no extra GEMMs or dispatches in the U-Net's hundreds of projections) and no memory beyond
//! the weight it replaces; changing a LoRA or its scale rebuilds only the weights the LoRAs
//! touch (the others stay on the device, found again in the weight cache), from the mapped
//! checkpoint (no file is opened or parsed again).

use super::Pipeline;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::lora::{LoraSpec, Part, Patches};
use crate::models::clip::ClipTextModel;
use crate::models::unet::UNet;
use crate::weights::{WeightDType, Weights};
use std::sync::Arc;

/// The base weights of the networks LoRAs patch, kept to make other LoRA views of them.
pub(crate) struct Sources {
    pub text: Arc<Weights>,
    pub text_2: Option<Arc<Weights>>,
    pub unet: Arc<Weights>,
    pub dtype: WeightDType,
}

/// The weight views with LoRAs merged, and what a lenient load left out.
pub(crate) struct Applied {
    pub text: Arc<Weights>,
    pub text_2: Option<Arc<Weights>>,
    pub unet: Arc<Weights>,
    pub warnings: Vec<String>,
}

/// Most keys an error or warning lists by name.
const LISTED: usize = 8;

/// `base` with the updates `files` hold for `part` (the base itself when none apply).
fn view(
    part: Part,
    files: &[(Arc<crate::lora::LoraFile>, LoraSpec)],
    base: Option<&Arc<Weights>>,
    layers_per_block: usize,
    unmatched: &mut Vec<(usize, String)>,
) -> Result<Option<Arc<Weights>>> {
    let (patches, missed) = Patches::build(part, files, base.map(|b| &**b), layers_per_block)?;
    unmatched.extend(missed);
    Ok(base.map(|b| match patches {
        None => b.clone(),
        some => Arc::new(b.with_lora(some)),
    }))
}

impl Sources {
    /// Views of the sources with `loras` merged. Keys no network takes (unknown formats,
    /// unsupported variants, modules the model lacks) are an error naming them, or with
    /// `lenient` warnings.
    pub fn apply(
        &self,
        loras: &[LoraSpec],
        layers_per_block: usize,
        lenient: bool,
    ) -> Result<Applied> {
        let files = crate::lora::open_all(loras)?;
        let mut problems: Vec<(std::path::PathBuf, Vec<String>)> = files
            .iter()
            .map(|(f, _)| (f.path().to_path_buf(), f.unknown.clone()))
            .collect();
        let mut unmatched = Vec::new();
        let lpb = layers_per_block;
        let text = view(
            Part::TextEncoder,
            &files,
            Some(&self.text),
            lpb,
            &mut unmatched,
        )?;
        let text_2 = view(
            Part::TextEncoder2,
            &files,
            self.text_2.as_ref(),
            lpb,
            &mut unmatched,
        )?;
        let unet = view(Part::Unet, &files, Some(&self.unet), lpb, &mut unmatched)?;
        for (i, key) in unmatched {
            problems[i]
                .1
                .push(format!("{key} (matches no weight of the model)"));
        }
        let mut warnings = Vec::new();
        for (path, keys) in problems.into_iter().filter(|(_, k)| !k.is_empty()) {
            let shown: Vec<&str> = keys.iter().take(LISTED).map(String::as_str).collect();
            let more = keys.len().saturating_sub(LISTED);
            let what = format!(
                "{} key(s) not applied: {}{}",
                keys.len(),
                shown.join(", "),
                if more > 0 {
                    format!(", and {more} more")
                } else {
                    String::new()
                }
            );
            if !lenient {
                return Err(Error::Lora {
                    path,
                    what: format!("{what} (--lora-lenient applies the rest)"),
                });
            }
            warnings.push(format!("LoRA `{}`: {what}", path.display()));
        }
        Ok(Applied {
            text: text.unwrap_or_else(|| self.text.clone()),
            text_2,
            unet: unet.unwrap_or_else(|| self.unet.clone()),
            warnings,
        })
    }
}

impl Pipeline {
    /// The LoRAs merged into the networks (in order), as last set.
    pub fn loras(&self) -> &[LoraSpec] {
        &self.loras
    }

    /// Merges `loras` (replacing those set before; empty: the model's own weights) into the
    /// text encoders and the U-Net. Only the weights a LoRA changes (now or before) are
    /// rebuilt, from the mapped checkpoint; the others stay on the device. A released network
    /// (see [`super::Offload`]) loads with the new LoRAs when next needed. Returns the keys a
    /// `lenient` load left out (otherwise they are an error, and nothing changes).
    pub fn set_loras(
        &mut self,
        gpu: &Gpu,
        loras: &[LoraSpec],
        lenient: bool,
    ) -> Result<Vec<String>> {
        let lpb = self.unet.config.layers_per_block;
        let applied = self.sources.apply(loras, lpb, lenient)?;
        let dtype = self.sources.dtype;
        // The new networks load while the old ones still hold the weights they share.
        let text_encoder =
            self.text_encoder
                .reload(gpu, applied.text, ClipTextModel::load, dtype)?;
        let text_encoder_2 = match (&self.text_encoder_2, applied.text_2) {
            (Some(t), Some(w)) => Some(t.reload(gpu, w, ClipTextModel::load, dtype)?),
            _ => None,
        };
        let unet = self.unet.reload(gpu, applied.unet, UNet::load, dtype)?;
        self.text_encoder = text_encoder;
        self.text_encoder_2 = text_encoder_2;
        self.unet = unet;
        self.loras = loras.to_vec();
        self.lora_lenient = lenient;
        self.lora_warnings = applied.warnings.clone();
        gpu.trim_pool();
        Ok(applied.warnings)
    }

    /// The U-Net's weight view with the pipeline's LoRAs merged (for a replaced U-Net).
    pub(crate) fn unet_view(
        &self,
        base: Arc<Weights>,
        layers_per_block: usize,
    ) -> Result<Arc<Weights>> {
        if self.loras.is_empty() {
            return Ok(base);
        }
        let files = crate::lora::open_all(&self.loras)?;
        let mut unmatched = Vec::new();
        let lpb = layers_per_block;
        let unet = view(Part::Unet, &files, Some(&base), lpb, &mut unmatched)?;
        if let (Some((i, _)), false) = (unmatched.first(), self.lora_lenient) {
            let keys: Vec<&str> = unmatched
                .iter()
                .take(LISTED)
                .map(|(_, k)| k.as_str())
                .collect();
            return Err(Error::Lora {
                path: files[*i].0.path().to_path_buf(),
                what: format!(
                    "{} key(s) match no weight of the replacement U-Net: {}",
                    unmatched.len(),
                    keys.join(", ")
                ),
            });
        }
        Ok(unet.unwrap_or(base))
    }
}
