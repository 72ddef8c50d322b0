//! VAE decoder (diffusers `AutoencoderKL.decode`): `post_quant_conv`, then the `Decoder`:
//! conv_in, mid block (resnet, attention, resnet), up blocks (resnets, upsample), GroupNorm +
//! SiLU, conv_out. Channels-last throughout.

use super::blocks::{
    Conv2d, Downsample2D, GroupNorm, ResnetBlock2D, SpatialSelfAttention, Upsample2D,
};
use super::{Loader, read_json};
use crate::DType;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};
use crate::ops;
use crate::ops::Conv2dOptions;
use crate::tensor::Tensor;
use crate::weights::{WeightDType, Weights};
use std::path::Path;

/// The fields of a diffusers `AutoencoderKL` config the decoder uses.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoencoderKLConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub scaling_factor: f32,
    /// Run in f32 activations whatever the weights' dtype (diffusers' `force_upcast`, which
    /// only its SDXL pipelines honour: SDXL's VAE overflows f16). Read from the config for
    /// SDXL models, off for SD 1.x / 2.x.
    pub force_upcast: bool,
    /// `sample_size`: the pixel tile of diffusers' tiled decode and encode
    /// (`tile_sample_min_size`; 512 for SD 1.x/2.x, 1024 for SDXL).
    pub sample_size: usize,
}

impl AutoencoderKLConfig {
    /// The activation dtype of a VAE with weights of `w` on this device: f32 with
    /// `force_upcast`, else the device's choice ([`crate::Gpu::activation_dtype`]).
    pub fn activation_dtype(&self, rec: &Recorder<'_>, w: DType) -> DType {
        if self.force_upcast {
            DType::F32
        } else {
            rec.gpu().activation_dtype(w)
        }
    }

    /// SD 1.x / 2.x VAE (`vae/config.json` of stable-diffusion-v1-5).
    pub fn sd() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            force_upcast: false,
            sample_size: 512,
        }
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json(&read_json(path)?, path)
    }

    /// The config from parsed JSON; `path` names it in errors.
    pub fn from_json(v: &serde_json::Value, path: &Path) -> Result<Self> {
        let bad = |what: String| Error::ModelLayout {
            path: path.to_path_buf(),
            what,
        };
        let int = |k: &str, d: u64| {
            v.get(k)
                .map_or(Some(d), |x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| bad(format!("`{k}` must be an integer")))
        };
        let blocks = v["block_out_channels"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|x| x.as_u64().map(|x| x as usize))
                    .collect::<Option<Vec<_>>>()
            })
            .filter(|b| !b.is_empty())
            .ok_or_else(|| bad("`block_out_channels` missing".into()))?;
        Ok(Self {
            in_channels: int("in_channels", 3)?,
            out_channels: int("out_channels", 3)?,
            latent_channels: int("latent_channels", 4)?,
            block_out_channels: blocks,
            layers_per_block: int("layers_per_block", 2)?,
            norm_num_groups: int("norm_num_groups", 32)?,
            scaling_factor: v["scaling_factor"].as_f64().unwrap_or(0.18215) as f32,
            // diffusers' AutoencoderKL default.
            force_upcast: v["force_upcast"].as_bool().unwrap_or(true),
            // diffusers' AutoencoderKL default; a list (height, width) takes its first.
            sample_size: match v.get("sample_size") {
                Some(serde_json::Value::Array(a)) => a.first().and_then(|x| x.as_u64()),
                Some(x) => x.as_u64(),
                None => Some(32),
            }
            .filter(|&s| (1..=1 << 16).contains(&s))
            .ok_or_else(|| bad("`sample_size` must be an integer in 1..=65536".into()))?
                as usize,
        })
    }

    /// Pixels per latent along each side: 2^(blocks − 1).
    pub fn downsample_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// diffusers `UpDecoderBlock2D`.
pub struct UpDecoderBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub upsamplers: Vec<Upsample2D>,
}

/// diffusers `UNetMidBlock2D` of the VAE: resnet, single-head self-attention, resnet.
pub struct VaeMidBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<SpatialSelfAttention>,
}

impl VaeMidBlock {
    /// Loads `resnets.{0,1}` and `attentions.0` with `c` channels.
    fn load(vb: &Loader<'_>, c: usize, groups: usize) -> Result<Self> {
        let resnet =
            |i: usize| ResnetBlock2D::load(&vb.pp("resnets").pp(i), c, c, groups, EPS, None);
        Ok(Self {
            resnets: vec![resnet(0)?, resnet(1)?],
            // diffusers' VAE attention: attention_head_dim = channels, one head.
            attentions: vec![SpatialSelfAttention::load(
                &vb.pp("attentions").pp(0),
                c,
                1,
                groups,
                EPS,
            )?],
        })
    }

    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (k, r) in self.resnets.iter().enumerate() {
            if k > 0 {
                if let Some(a) = self.attentions.get(k - 1) {
                    x = a.forward(rec, &x)?;
                }
            }
            x = r.forward(rec, &x, None)?;
        }
        Ok(x)
    }
}

/// diffusers `Decoder`.
pub struct Decoder {
    pub conv_in: Conv2d,
    pub mid_block: VaeMidBlock,
    pub up_blocks: Vec<UpDecoderBlock2D>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

/// `AutoencoderKL`'s decoding half: `post_quant_conv` and `decoder`.
pub struct VaeDecoder {
    pub config: AutoencoderKLConfig,
    pub post_quant_conv: Conv2d,
    pub decoder: Decoder,
}

const EPS: f32 = 1e-6;

impl VaeDecoder {
    /// Loads `post_quant_conv.*` and `decoder.*` (under `prefix`) from `w`.
    pub fn load(
        gpu: &Gpu,
        w: &Weights,
        prefix: &str,
        config: &AutoencoderKLConfig,
        dt: WeightDType,
    ) -> Result<Self> {
        let c = config;
        let g = c.norm_num_groups;
        let rev: Vec<usize> = c.block_out_channels.iter().rev().copied().collect();
        let top = rev[0];
        let same = Conv2dOptions::new(1, 1);
        let vb = Loader::new(w, gpu, prefix, dt);
        let dec = vb.pp("decoder");
        let mut up_blocks = Vec::new();
        let mut prev = top;
        for (i, &out) in rev.iter().enumerate() {
            let vb = dec.pp("up_blocks").pp(i);
            let resnets = (0..=c.layers_per_block)
                .map(|j| {
                    let cin = if j == 0 { prev } else { out };
                    ResnetBlock2D::load(&vb.pp("resnets").pp(j), cin, out, g, EPS, None)
                })
                .collect::<Result<Vec<_>>>()?;
            let upsamplers = if i + 1 < rev.len() {
                vec![Upsample2D::load(&vb.pp("upsamplers").pp(0), out)?]
            } else {
                Vec::new()
            };
            up_blocks.push(UpDecoderBlock2D {
                resnets,
                upsamplers,
            });
            prev = out;
        }
        let lc = c.latent_channels;
        Ok(Self {
            post_quant_conv: vb
                .pp("post_quant_conv")
                .conv(lc, lc, 1, Conv2dOptions::new(1, 0))?,
            decoder: Decoder {
                conv_in: dec.pp("conv_in").conv(lc, top, 3, same)?,
                mid_block: VaeMidBlock::load(&dec.pp("mid_block"), top, g)?,
                up_blocks,
                conv_norm_out: dec.pp("conv_norm_out").group_norm(prev, g, EPS)?,
                conv_out: dec.pp("conv_out").conv(prev, c.out_channels, 3, same)?,
            },
            config: c.clone(),
        })
    }

    /// Decodes latents `[n, h, w, latent_channels]` (already divided by `scaling_factor`)
    /// to images `[n, h·f, w·f, 3]` in about [−1, 1]. Records only.
    pub fn forward(&self, rec: &mut Recorder<'_>, z: &Tensor) -> Result<Tensor> {
        self.forward_levels(rec, z, &mut |_| Ok(()))
    }

    /// [`VaeDecoder::forward`], calling `between_levels` before each 2× upsampling: where the
    /// caller's memory policy may submit what is recorded and free the smaller level's
    /// buffers, so the decoder's peak is the largest level's working set (the pipeline does).
    pub fn forward_levels(
        &self,
        rec: &mut Recorder<'_>,
        z: &Tensor,
        between_levels: &mut dyn FnMut(&mut Recorder<'_>) -> Result<()>,
    ) -> Result<Tensor> {
        if z.rank() != 4 || z.shape()[3] != self.config.latent_channels {
            return Err(Error::shape(
                "vae decode",
                format!(
                    "latents `{}` must be [n, h, w, {}], got {:?}",
                    z.name(),
                    self.config.latent_channels,
                    z.shape()
                ),
            ));
        }
        let d = &self.decoder;
        // Activations in f16 for f16 weights where the device runs them (as diffusers'
        // StableDiffusionPipeline decodes with an fp16 VAE); the image leaves in f32.
        let act = self.config.activation_dtype(rec, d.conv_in.weight.dtype());
        let z = &ops::cast(rec, z, act)?;
        let x = self.post_quant_conv.forward(rec, z, None)?;
        let x = d.conv_in.forward(rec, &x, None)?; // [n, h, w, top]
        let mut x = d.mid_block.forward(rec, &x)?;
        for block in &d.up_blocks {
            for r in &block.resnets {
                x = r.forward(rec, &x, None)?;
            }
            for up in &block.upsamplers {
                between_levels(rec)?;
                x = up.forward(rec, &x)?; // [n, 2h, 2w, c]
            }
        }
        let x = d
            .conv_out
            .forward_normed(rec, &x, &d.conv_norm_out, true, None)?;
        ops::cast(rec, &x, DType::F32)
    }
}

/// diffusers `DownEncoderBlock2D`.
pub struct DownEncoderBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub downsamplers: Vec<Downsample2D>,
}

/// diffusers `Encoder`.
pub struct Encoder {
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownEncoderBlock2D>,
    pub mid_block: VaeMidBlock,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

/// diffusers `AutoencoderKL.encode` up to the posterior's moments: `encoder` (conv_in, down
/// blocks of resnets and a stride-2 conv padded on the bottom/right only, mid block,
/// GroupNorm + SiLU, conv_out to 2·latent channels), then `quant_conv`.
pub struct VaeEncoder {
    pub config: AutoencoderKLConfig,
    pub encoder: Encoder,
    pub quant_conv: Conv2d,
}

impl VaeEncoder {
    /// Loads `encoder.*` and `quant_conv.*` (under `prefix`) from `w`.
    pub fn load(
        gpu: &Gpu,
        w: &Weights,
        prefix: &str,
        config: &AutoencoderKLConfig,
        dt: WeightDType,
    ) -> Result<Self> {
        let c = config;
        let g = c.norm_num_groups;
        let same = Conv2dOptions::new(1, 1);
        let vb = Loader::new(w, gpu, prefix, dt);
        let enc = vb.pp("encoder");
        let boc = &c.block_out_channels;
        let mut down_blocks = Vec::new();
        let mut prev = boc[0];
        for (i, &out) in boc.iter().enumerate() {
            let vb = enc.pp("down_blocks").pp(i);
            let resnets = (0..c.layers_per_block)
                .map(|j| {
                    let cin = if j == 0 { prev } else { out };
                    ResnetBlock2D::load(&vb.pp("resnets").pp(j), cin, out, g, EPS, None)
                })
                .collect::<Result<Vec<_>>>()?;
            // diffusers' Downsample2D(padding=0) pads (0, 1, 0, 1) before the stride-2 conv.
            let down = Conv2dOptions {
                padding: [0, 1, 0, 1],
                ..Conv2dOptions::new(2, 0)
            };
            let downsamplers = if i + 1 < boc.len() {
                vec![Downsample2D::load(&vb.pp("downsamplers").pp(0), out, down)?]
            } else {
                Vec::new()
            };
            down_blocks.push(DownEncoderBlock2D {
                resnets,
                downsamplers,
            });
            prev = out;
        }
        let lc2 = 2 * c.latent_channels;
        Ok(Self {
            encoder: Encoder {
                conv_in: enc.pp("conv_in").conv(c.in_channels, boc[0], 3, same)?,
                down_blocks,
                mid_block: VaeMidBlock::load(&enc.pp("mid_block"), prev, g)?,
                conv_norm_out: enc.pp("conv_norm_out").group_norm(prev, g, EPS)?,
                conv_out: enc.pp("conv_out").conv(prev, lc2, 3, same)?,
            },
            quant_conv: vb
                .pp("quant_conv")
                .conv(lc2, lc2, 1, Conv2dOptions::new(1, 0))?,
            config: c.clone(),
        })
    }

    /// Images `[n, H, W, in_channels]` in [−1, 1] (H, W multiples of the VAE factor) → the
    /// posterior's moments `[n, H/f, W/f, 2·latent_channels]` (mean, then log-variance).
    pub fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        let f = self.config.downsample_factor();
        let s = x.shape();
        if x.rank() != 4 || s[3] != self.config.in_channels || s[1] % f != 0 || s[2] % f != 0 {
            return Err(Error::shape(
                "vae encode",
                format!(
                    "image `{}` must be [n, h, w, {}] with h and w multiples of {f}, got {:?}",
                    x.name(),
                    self.config.in_channels,
                    s
                ),
            ));
        }
        let e = &self.encoder;
        let act = self.config.activation_dtype(rec, e.conv_in.weight.dtype());
        let x = &ops::cast(rec, x, act)?;
        let mut x = e.conv_in.forward(rec, x, None)?;
        for block in &e.down_blocks {
            for r in &block.resnets {
                x = r.forward(rec, &x, None)?;
            }
            for d in &block.downsamplers {
                x = d.forward(rec, &x)?;
            }
        }
        let x = e.mid_block.forward(rec, &x)?;
        let x = e
            .conv_out
            .forward_normed(rec, &x, &e.conv_norm_out, true, None)?;
        let x = self.quant_conv.forward(rec, &x, None)?;
        ops::cast(rec, &x, DType::F32)
    }
}

/// diffusers' `DiagonalGaussianDistribution`, on the host, NCHW like the latents the
/// pipelines take: log-variance clamped to [−30, 20], std = exp(logvar / 2).
#[derive(Clone, Debug, PartialEq)]
pub struct Posterior {
    /// `[n, c, h, w]`.
    pub shape: [usize; 4],
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Posterior {
    /// From the encoder's moments, NHWC `[n, h, w, 2c]`.
    pub fn from_moments(m: &[f32], [n, h, w, c2]: [usize; 4]) -> Result<Self> {
        if c2 % 2 != 0 || m.len() != n * h * w * c2 {
            return Err(Error::shape(
                "posterior",
                format!(
                    "{} moments for [n, h, w, 2c] = {:?}",
                    m.len(),
                    [n, h, w, c2]
                ),
            ));
        }
        let c = c2 / 2;
        let mut mean = vec![0.0; n * c * h * w];
        let mut std = vec![0.0; n * c * h * w];
        for b in 0..n {
            for y in 0..h {
                for x in 0..w {
                    let src = ((b * h + y) * w + x) * c2;
                    for ch in 0..c {
                        let dst = ((b * c + ch) * h + y) * w + x;
                        mean[dst] = m[src + ch];
                        std[dst] = (0.5 * m[src + c + ch].clamp(-30.0, 20.0)).exp();
                    }
                }
            }
        }
        Ok(Self {
            shape: [n, c, h, w],
            mean,
            std,
        })
    }

    /// `mean + std · ε` with ε drawn by `rng` in NCHW order (diffusers' `sample(generator)`).
    pub fn sample(&self, rng: &mut crate::rng::TorchGenerator) -> Vec<f32> {
        let eps = rng.randn(self.mean.len());
        self.mean
            .iter()
            .zip(&self.std)
            .zip(eps)
            .map(|((m, s), e)| m + s * e)
            .collect()
    }
}
