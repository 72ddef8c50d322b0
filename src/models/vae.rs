//! VAE decoder (diffusers `AutoencoderKL.decode`): `post_quant_conv`, then the `Decoder`:
//! conv_in, mid block (resnet, attention, resnet), up blocks (resnets, upsample), GroupNorm +
//! SiLU, conv_out. Channels-last throughout.

use super::blocks::{Conv2d, GroupNorm, ResnetBlock2D, SpatialSelfAttention, Upsample2D};
use super::read_json;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};
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
}

impl AutoencoderKLConfig {
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
        })
    }

    /// Pixels per latent along each side: 2^(blocks − 1).
    pub fn downsample_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

pub struct UpDecoderBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub upsampler: Option<Upsample2D>,
}

/// diffusers `UNetMidBlock2D` of the VAE: resnet, single-head self-attention, resnet.
pub struct VaeMidBlock {
    pub resnet0: ResnetBlock2D,
    pub attention: SpatialSelfAttention,
    pub resnet1: ResnetBlock2D,
}

impl VaeMidBlock {
    /// Loads `{prefix}.resnets.{0,1}` and `{prefix}.attentions.0` with `c` channels.
    fn load(
        gpu: &Gpu,
        w: &Weights,
        prefix: &str,
        c: usize,
        groups: usize,
        dt: WeightDType,
    ) -> Result<Self> {
        let resnet = |i: usize| {
            let name = format!("{prefix}.resnets.{i}");
            ResnetBlock2D::load(w, gpu, &name, c, c, groups, EPS, None, dt)
        };
        Ok(Self {
            resnet0: resnet(0)?,
            // diffusers' VAE attention: attention_head_dim = channels, one head.
            attention: SpatialSelfAttention::load(
                w,
                gpu,
                &format!("{prefix}.attentions.0"),
                c,
                1,
                groups,
                EPS,
                dt,
            )?,
            resnet1: resnet(1)?,
        })
    }

    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        let x = self.resnet0.forward(rec, x, None)?;
        let x = self.attention.forward(rec, &x)?;
        self.resnet1.forward(rec, &x, None)
    }
}

pub struct VaeDecoder {
    pub config: AutoencoderKLConfig,
    pub post_quant_conv: Conv2d,
    pub conv_in: Conv2d,
    pub mid_block: VaeMidBlock,
    pub up_blocks: Vec<UpDecoderBlock2D>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
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
        let p = |s: &str| format!("{prefix}{s}");
        let resnet = |name: String, cin, cout| {
            ResnetBlock2D::load(w, gpu, &name, cin, cout, g, EPS, None, dt)
        };
        let mut up_blocks = Vec::new();
        let mut prev = top;
        for (i, &out) in rev.iter().enumerate() {
            let resnets = (0..=c.layers_per_block)
                .map(|j| {
                    resnet(
                        p(&format!("decoder.up_blocks.{i}.resnets.{j}")),
                        if j == 0 { prev } else { out },
                        out,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            let upsampler = (i + 1 < rev.len())
                .then(|| {
                    Upsample2D::load(
                        w,
                        gpu,
                        &p(&format!("decoder.up_blocks.{i}.upsamplers.0")),
                        out,
                        dt,
                    )
                })
                .transpose()?;
            up_blocks.push(UpDecoderBlock2D { resnets, upsampler });
            prev = out;
        }
        let lc = c.latent_channels;
        Ok(Self {
            post_quant_conv: Conv2d::load(
                w,
                gpu,
                &p("post_quant_conv"),
                lc,
                lc,
                1,
                Conv2dOptions::new(1, 0),
                dt,
            )?,
            conv_in: Conv2d::load(w, gpu, &p("decoder.conv_in"), lc, top, 3, same, dt)?,
            mid_block: VaeMidBlock::load(gpu, w, &p("decoder.mid_block"), top, g, dt)?,
            up_blocks,
            conv_norm_out: GroupNorm::load(w, gpu, &p("decoder.conv_norm_out"), prev, g, EPS)?,
            conv_out: Conv2d::load(
                w,
                gpu,
                &p("decoder.conv_out"),
                prev,
                c.out_channels,
                3,
                same,
                dt,
            )?,
            config: c.clone(),
        })
    }

    /// Decodes latents `[n, h, w, latent_channels]` (already divided by `scaling_factor`)
    /// to images `[n, h·f, w·f, 3]` in about [−1, 1].
    pub fn forward(&self, rec: &mut Recorder<'_>, z: &Tensor) -> Result<Tensor> {
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
        let x = self.post_quant_conv.forward(rec, z, None)?;
        let x = self.conv_in.forward(rec, &x, None)?; // [n, h, w, top]
        let mut x = self.mid_block.forward(rec, &x)?;
        for block in &self.up_blocks {
            for r in &block.resnets {
                x = r.forward(rec, &x, None)?;
            }
            if let Some(up) = &block.upsampler {
                // The buffers of this resolution are too small for any larger layer: submit
                // what is recorded so they go back to the pool, and free them, so that the
                // decoder's peak is the largest level's working set, not every level's.
                rec.submit()?;
                rec.gpu().trim_pool();
                x = up.forward(rec, &x)?; // [n, 2h, 2w, c]
            }
        }
        let x = self.conv_norm_out.forward(rec, &x, true)?;
        self.conv_out.forward(rec, &x, None)
    }
}

pub struct DownEncoderBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub downsampler: Option<Conv2d>,
}

/// diffusers `AutoencoderKL.encode` up to the posterior's moments: conv_in, down blocks
/// (resnets, stride-2 conv padded on the bottom/right only), mid block, GroupNorm + SiLU,
/// conv_out to 2·latent channels, quant_conv.
pub struct VaeEncoder {
    pub config: AutoencoderKLConfig,
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownEncoderBlock2D>,
    pub mid_block: VaeMidBlock,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
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
        let p = |s: &str| format!("{prefix}{s}");
        let resnet = |name: String, cin, cout| {
            ResnetBlock2D::load(w, gpu, &name, cin, cout, g, EPS, None, dt)
        };
        let boc = &c.block_out_channels;
        let mut down_blocks = Vec::new();
        let mut prev = boc[0];
        for (i, &out) in boc.iter().enumerate() {
            let resnets = (0..c.layers_per_block)
                .map(|j| {
                    resnet(
                        p(&format!("encoder.down_blocks.{i}.resnets.{j}")),
                        if j == 0 { prev } else { out },
                        out,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            // diffusers' Downsample2D(padding=0) pads (0, 1, 0, 1) before the stride-2 conv.
            let down = Conv2dOptions {
                padding: [0, 1, 0, 1],
                ..Conv2dOptions::new(2, 0)
            };
            let downsampler = (i + 1 < boc.len())
                .then(|| {
                    Conv2d::load(
                        w,
                        gpu,
                        &p(&format!("encoder.down_blocks.{i}.downsamplers.0.conv")),
                        out,
                        out,
                        3,
                        down,
                        dt,
                    )
                })
                .transpose()?;
            down_blocks.push(DownEncoderBlock2D {
                resnets,
                downsampler,
            });
            prev = out;
        }
        let lc2 = 2 * c.latent_channels;
        Ok(Self {
            conv_in: Conv2d::load(
                w,
                gpu,
                &p("encoder.conv_in"),
                c.in_channels,
                boc[0],
                3,
                same,
                dt,
            )?,
            down_blocks,
            mid_block: VaeMidBlock::load(gpu, w, &p("encoder.mid_block"), prev, g, dt)?,
            conv_norm_out: GroupNorm::load(w, gpu, &p("encoder.conv_norm_out"), prev, g, EPS)?,
            conv_out: Conv2d::load(w, gpu, &p("encoder.conv_out"), prev, lc2, 3, same, dt)?,
            quant_conv: Conv2d::load(
                w,
                gpu,
                &p("quant_conv"),
                lc2,
                lc2,
                1,
                Conv2dOptions::new(1, 0),
                dt,
            )?,
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
        let mut x = self.conv_in.forward(rec, x, None)?;
        for block in &self.down_blocks {
            for r in &block.resnets {
                x = r.forward(rec, &x, None)?;
            }
            if let Some(d) = &block.downsampler {
                x = d.forward(rec, &x, None)?;
            }
        }
        let x = self.mid_block.forward(rec, &x)?;
        let x = self.conv_norm_out.forward(rec, &x, true)?;
        let x = self.conv_out.forward(rec, &x, None)?;
        self.quant_conv.forward(rec, &x, None)
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
