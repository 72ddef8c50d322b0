//! The tiny autoencoder (TAESD / TAESDXL) as the pipeline's fast decoder: for the final
//! image ([`super::Decoder::Tiny`]) and for full-resolution step previews
//! ([`super::PreviewDecoder::Tiny`]).

use super::{Decoder, Pipeline, PreviewDecoder, Request};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};
use crate::models::taesd::{TinyDecoder, TinyWeights};
use crate::ops::{self, Unary};
use crate::tensor::Tensor;
use crate::weights::WeightDType;
use std::path::Path;

impl Pipeline {
    /// Loads the tiny autoencoder at `path` (a diffusers `AutoencoderTiny` folder or file, or
    /// an original `taesd_decoder.safetensors`), or drops it (`None`). Its latents must be
    /// this model's: the same channels and pixels per latent.
    pub fn set_tiny_autoencoder(
        &mut self,
        gpu: &Gpu,
        path: Option<&Path>,
        dtype: WeightDType,
    ) -> Result<()> {
        let Some(path) = path else {
            self.tiny = None;
            return Ok(());
        };
        self.set_tiny_weights(gpu, &TinyWeights::open(path)?, dtype)
    }

    /// [`Pipeline::set_tiny_autoencoder`] from weights already open.
    pub fn set_tiny_weights(
        &mut self,
        gpu: &Gpu,
        w: &TinyWeights,
        dtype: WeightDType,
    ) -> Result<()> {
        let (f, lc) = (self.vae_scale_factor(), self.vae.config.latent_channels);
        if w.config.factor() != f || w.config.latent_channels != lc {
            return Err(Error::ModelLayout {
                path: w.path().to_path_buf(),
                what: format!(
                    "a tiny autoencoder for {} latent channels at {}× does not fit this model's \
                     latents ({lc} channels at {f}×)",
                    w.config.latent_channels,
                    w.config.factor()
                ),
            });
        }
        self.tiny = Some(TinyDecoder::load(gpu, w, dtype)?);
        Ok(())
    }

    /// Whether a tiny autoencoder is loaded.
    pub fn has_tiny_autoencoder(&self) -> bool {
        self.tiny.is_some()
    }

    /// The tiny decoder a request asks for, or an error naming the field that asked.
    pub(super) fn tiny_for(&self, req: &Request) -> Result<Option<&TinyDecoder>> {
        let wants = req.decoder == Decoder::Tiny || req.preview_decoder == PreviewDecoder::Tiny;
        match (&self.tiny, wants) {
            (_, false) => Ok(None),
            (Some(t), true) => Ok(Some(t)),
            (None, true) => Err(Error::request(
                if req.decoder == Decoder::Tiny {
                    "decoder"
                } else {
                    "preview_decoder"
                },
                "asks for the tiny autoencoder, and none is loaded (set_tiny_autoencoder / \
                 --taesd)",
            )),
        }
    }
}

/// Latents `[n, h, w, c]` (scaled, as the U-Net makes them) → images in [0, 1] (diffusers'
/// image processor: `(x / 2 + 0.5).clamp(0, 1)`). Records only.
pub(super) fn tiny_decode(
    rec: &mut Recorder<'_>,
    tiny: &TinyDecoder,
    z: &Tensor,
) -> Result<Tensor> {
    let img = tiny.forward(rec, z)?;
    let img = ops::unary(rec, &img, Unary::Affine, 0.5, 0.5)?;
    ops::clamp(rec, &img, 0.0, 1.0)
}
