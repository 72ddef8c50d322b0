//! The tiny autoencoder (diffusers `AutoencoderTiny`, Ollin Boer Bohan's TAESD / TAESDXL):
//! plain 3×3 convolutions, ReLU and nearest 2× upsampling, no norms or attention, so it
//! decodes SD and SDXL latents in a small fraction of the VAE's time and memory.
//!
//! - Decoder (`DecoderTiny`): `tanh(z/3)·3` (the latent clamp), conv + ReLU, then per level
//!   `num_blocks` × [`TinyBlock`], a nearest 2× upsample and a bias-free conv (the last level:
//!   the output conv, with bias, and no upsample), and `x·2 − 1` (its [0, 1] output on
//!   diffusers' [−1, 1] scale).
//! - Encoder (`EncoderTiny`): `(x + 1)/2`, a conv, per level a bias-free stride-2 conv (all
//!   but the first) and the blocks, the output conv.
//!
//! Weights: a diffusers folder (`config.json` + `diffusion_pytorch_model.safetensors`, keys
//! `decoder.layers.N.…` / `encoder.layers.N.…`), such a safetensors file alone (default
//! config), or the original TAESD release's `taesd_decoder.safetensors` /
//! `taesdxl_decoder.safetensors` (keys `N.…`, one index later: its `Clamp` is layer 0) and
//! `taesd_encoder.safetensors`. Its latents are the scaled ones (`scaling_factor` 1).

use super::read_json;
use crate::DType;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};
use crate::ops::{self, Conv2dOptions, Unary};
use crate::tensor::Tensor;
use crate::weights::{Relayout, WeightDType, Weights};
use std::path::{Path, PathBuf};

/// The fields of a diffusers `AutoencoderTiny` config the engine uses.
#[derive(Clone, Debug, PartialEq)]
pub struct TinyConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    pub encoder_block_out_channels: Vec<usize>,
    pub decoder_block_out_channels: Vec<usize>,
    pub num_encoder_blocks: Vec<usize>,
    pub num_decoder_blocks: Vec<usize>,
    pub scaling_factor: f32,
}

impl Default for TinyConfig {
    /// diffusers' defaults (madebyollin/taesd and taesdxl ship exactly these).
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            encoder_block_out_channels: vec![64; 4],
            decoder_block_out_channels: vec![64; 4],
            num_encoder_blocks: vec![1, 3, 3, 3],
            num_decoder_blocks: vec![3, 3, 3, 1],
            scaling_factor: 1.0,
        }
    }
}

impl TinyConfig {
    pub fn from_json(v: &serde_json::Value, path: &Path) -> Result<Self> {
        let bad = |what: String| Error::ModelLayout {
            path: path.to_path_buf(),
            what,
        };
        let d = Self::default();
        let int = |k: &str, d: usize| match v.get(k) {
            None => Ok(d),
            Some(x) => x
                .as_u64()
                .filter(|&x| (1..=65536).contains(&x))
                .map(|x| x as usize)
                .ok_or_else(|| bad(format!("`{k}` must be an integer in 1..=65536"))),
        };
        let list = |k: &str, d: &[usize]| match v.get(k) {
            None => Ok(d.to_vec()),
            Some(x) => x
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|x| x.as_u64().filter(|&x| x <= 65536).map(|x| x as usize))
                        .collect::<Option<Vec<_>>>()
                })
                .filter(|a| !a.is_empty() && a.len() <= 8)
                .ok_or_else(|| bad(format!("`{k}` must be a list of 1 to 8 integers"))),
        };
        if let Some(o) = v["_class_name"]
            .as_str()
            .filter(|c| *c != "AutoencoderTiny")
        {
            return Err(bad(format!(
                "`_class_name` {o}: not a tiny autoencoder (AutoencoderTiny)"
            )));
        }
        for (k, fine) in [("act_fn", "relu"), ("upsample_fn", "nearest")] {
            if let Some(o) = v.get(k).and_then(|x| x.as_str()).filter(|o| *o != fine) {
                return Err(bad(format!("`{k}` `{o}` (only `{fine}` is supported)")));
            }
        }
        if v.get("upsampling_scaling_factor")
            .is_some_and(|x| x.as_u64() != Some(2))
        {
            return Err(bad("`upsampling_scaling_factor` must be 2".into()));
        }
        let c = Self {
            in_channels: int("in_channels", d.in_channels)?,
            out_channels: int("out_channels", d.out_channels)?,
            latent_channels: int("latent_channels", d.latent_channels)?,
            encoder_block_out_channels: list(
                "encoder_block_out_channels",
                &d.encoder_block_out_channels,
            )?,
            decoder_block_out_channels: list(
                "decoder_block_out_channels",
                &d.decoder_block_out_channels,
            )?,
            num_encoder_blocks: list("num_encoder_blocks", &d.num_encoder_blocks)?,
            num_decoder_blocks: list("num_decoder_blocks", &d.num_decoder_blocks)?,
            scaling_factor: v
                .get("scaling_factor")
                .and_then(|x| x.as_f64())
                .unwrap_or(1.0) as f32,
        };
        c.check().map_err(bad)?;
        Ok(c)
    }

    /// diffusers builds each level's blocks at that level's width but feeds them the previous
    /// level's output: the widths must agree (they do in every released TAESD).
    fn check(&self) -> std::result::Result<(), String> {
        for (blocks, channels, which) in [
            (
                &self.num_encoder_blocks,
                &self.encoder_block_out_channels,
                "encoder",
            ),
            (
                &self.num_decoder_blocks,
                &self.decoder_block_out_channels,
                "decoder",
            ),
        ] {
            if blocks.len() != channels.len() {
                return Err(format!(
                    "{which}: {} block counts for {} levels",
                    blocks.len(),
                    channels.len()
                ));
            }
            if channels.iter().any(|&c| c != channels[0] || c == 0) {
                return Err(format!(
                    "{which}_block_out_channels {channels:?}: levels of different widths are \
                     not supported (diffusers cannot run them either)"
                ));
            }
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(format!(
                "`scaling_factor` {} must be positive",
                self.scaling_factor
            ));
        }
        Ok(())
    }

    /// Pixels per latent along each side.
    pub fn factor(&self) -> usize {
        1 << (self.decoder_block_out_channels.len() - 1)
    }
}

/// A 3×3 (or 1×1) convolution, bias optional.
struct TinyConv {
    weight: Tensor,
    bias: Option<Tensor>,
    opts: Conv2dOptions,
}

/// Where a tiny autoencoder's tensors live: `{prefix}.{layer + offset}.…`.
struct Keys<'a> {
    w: &'a Weights,
    gpu: &'a Gpu,
    prefix: &'a str,
    offset: usize,
    dt: WeightDType,
}

impl Keys<'_> {
    fn key(&self, layer: usize, leaf: &str) -> String {
        let i = layer + self.offset;
        if self.prefix.is_empty() {
            format!("{i}.{leaf}")
        } else {
            format!("{}.{i}.{leaf}", self.prefix)
        }
    }

    /// The 3×3 convolution (padding 1) at `layer` (`leaf` within it), of `stride`, with or
    /// without a bias.
    fn conv(
        &self,
        layer: usize,
        leaf: &str,
        [cin, cout]: [usize; 2],
        stride: usize,
        bias: bool,
    ) -> Result<TinyConv> {
        let (k, opts) = (3, Conv2dOptions::new(stride, 1));
        let stem = if leaf.is_empty() {
            String::new()
        } else {
            format!("{leaf}.")
        };
        let weight = self.w.upload(
            self.gpu,
            &self.key(layer, &format!("{stem}weight")),
            &[cout, cin, k, k],
            Relayout::ConvToHwio,
            self.dt,
        )?;
        let bias = if bias {
            Some(self.w.upload(
                self.gpu,
                &self.key(layer, &format!("{stem}bias")),
                &[cout],
                Relayout::None,
                super::dtype_of(&weight),
            )?)
        } else {
            None
        };
        Ok(TinyConv { weight, bias, opts })
    }
}

impl TinyConv {
    fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        ops::conv2d(
            rec,
            x,
            &self.weight,
            self.bias.as_ref(),
            residual,
            self.opts,
        )
    }
}

/// diffusers `AutoencoderTinyBlock` (equal widths: the skip is the identity):
/// `relu(conv₂(relu(conv₁(relu(conv₀(x))))) + x)`.
struct TinyBlock {
    convs: [TinyConv; 3],
}

fn relu(rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
    ops::clamp(rec, x, 0.0, f32::INFINITY)
}

impl TinyBlock {
    fn load(k: &Keys<'_>, layer: usize, c: usize) -> Result<Self> {
        let conv = |j: usize| k.conv(layer, &format!("conv.{j}"), [c, c], 1, true);
        Ok(Self {
            convs: [conv(0)?, conv(2)?, conv(4)?],
        })
    }

    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        let h = self.convs[0].forward(rec, x, None)?;
        let h = relu(rec, &h)?;
        let h = self.convs[1].forward(rec, &h, None)?;
        let h = relu(rec, &h)?;
        let h = self.convs[2].forward(rec, &h, Some(x))?;
        relu(rec, &h)
    }
}

enum Layer {
    Conv(TinyConv),
    Relu,
    Block(Box<TinyBlock>),
    Upsample,
}

/// `n` [`TinyBlock`]s of `width` channels, at the next layer indices.
fn push_blocks(k: &Keys<'_>, layers: &mut Vec<Layer>, n: usize, width: usize) -> Result<()> {
    for _ in 0..n {
        let b = TinyBlock::load(k, layers.len(), width)?;
        layers.push(Layer::Block(Box::new(b)));
    }
    Ok(())
}

fn run(rec: &mut Recorder<'_>, layers: &[Layer], x: Tensor) -> Result<Tensor> {
    let mut x = x;
    for l in layers {
        x = match l {
            Layer::Conv(c) => c.forward(rec, &x, None)?,
            Layer::Relu => relu(rec, &x)?,
            Layer::Block(b) => b.forward(rec, &x)?,
            Layer::Upsample => ops::upsample_nearest2x(rec, &x)?,
        };
    }
    Ok(x)
}

/// The weights of a tiny autoencoder and how its keys are laid out.
pub struct TinyWeights {
    pub config: TinyConfig,
    weights: Weights,
    /// The diffusers layout (`decoder.layers.N`) or the original release's (`N`).
    diffusers: bool,
    path: PathBuf,
}

impl TinyWeights {
    /// A diffusers folder, a diffusers safetensors file, or an original TAESD file.
    pub fn open(path: &Path) -> Result<Self> {
        let (file, config) = if path.is_dir() {
            let cfg = path.join("config.json");
            let config = TinyConfig::from_json(&read_json(&cfg)?, &cfg)?;
            (path.join("diffusion_pytorch_model.safetensors"), config)
        } else {
            (path.to_path_buf(), TinyConfig::default())
        };
        let weights = Weights::open_file(&file)?;
        let diffusers = weights
            .names()
            .any(|n| n.starts_with("decoder.layers.") || n.starts_with("encoder.layers."));
        if !diffusers
            && !weights
                .names()
                .any(|n| n.starts_with("1.") || n.starts_with("0."))
        {
            return Err(Error::ModelLayout {
                path: file,
                what: "not a tiny autoencoder (no `decoder.layers.*`, `encoder.layers.*` or \
                       original TAESD `N.*` tensors)"
                    .into(),
            });
        }
        Ok(Self {
            config,
            weights,
            diffusers,
            path: file,
        })
    }

    /// Random weights of TAESD's size (64 channels, blocks (3, 3, …, 1)) for a VAE of factor
    /// `f`, for benchmarks ([`Weights::synthetic`]).
    pub fn synthetic(s: crate::weights::Synthetic, f: usize) -> Self {
        let levels = f.max(1).trailing_zeros() as usize + 1;
        let mut dec = vec![3; levels];
        dec[levels - 1] = 1;
        let mut enc = vec![3; levels];
        enc[0] = 1;
        let path = PathBuf::from("synthetic TAESD");
        Self {
            config: TinyConfig {
                encoder_block_out_channels: vec![64; levels],
                decoder_block_out_channels: vec![64; levels],
                num_encoder_blocks: enc,
                num_decoder_blocks: dec,
                ..TinyConfig::default()
            },
            weights: Weights::synthetic(&path, s),
            diffusers: true,
            path,
        }
    }

    /// The file the weights come from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the weights hold a decoder (an original encoder file does not).
    pub fn has_decoder(&self) -> bool {
        if self.diffusers {
            self.weights.contains("decoder.layers.0.weight")
        } else {
            // The original decoder's first conv reads the latents (index 1, after its Clamp).
            self.weights.contains("1.weight") && !self.weights.contains("0.weight")
        }
    }

    fn keys<'a>(&'a self, gpu: &'a Gpu, half: &'a str, dt: WeightDType) -> Keys<'a> {
        Keys {
            w: &self.weights,
            gpu,
            prefix: if self.diffusers { half } else { "" },
            // The original decoder's Sequential starts with its Clamp (no weights).
            offset: usize::from(!self.diffusers && half == "decoder.layers"),
            dt,
        }
    }
}

/// The tiny autoencoder's decoder.
pub struct TinyDecoder {
    pub config: TinyConfig,
    layers: Vec<Layer>,
    /// The weights' dtype (the activations follow it where the device allows).
    weight_dtype: DType,
}

/// The dtype of the first layer's weights.
fn weight_dtype(layers: &[Layer]) -> DType {
    match layers.first() {
        Some(Layer::Conv(c)) => c.weight.dtype(),
        _ => DType::F32,
    }
}

impl TinyDecoder {
    pub fn load(gpu: &Gpu, w: &TinyWeights, dt: WeightDType) -> Result<Self> {
        if !w.has_decoder() {
            return Err(Error::ModelLayout {
                path: w.path.clone(),
                what: "holds no tiny-autoencoder decoder".into(),
            });
        }
        let c = &w.config;
        let k = w.keys(gpu, "decoder.layers", dt);
        let width = c.decoder_block_out_channels[0];
        let mut layers = vec![
            Layer::Conv(k.conv(0, "", [c.latent_channels, width], 1, true)?),
            Layer::Relu,
        ];
        let levels = c.num_decoder_blocks.len();
        for (i, &n) in c.num_decoder_blocks.iter().enumerate() {
            push_blocks(&k, &mut layers, n, width)?;
            let last = i + 1 == levels;
            if !last {
                layers.push(Layer::Upsample);
            }
            let cout = if last { c.out_channels } else { width };
            layers.push(Layer::Conv(k.conv(
                layers.len(),
                "",
                [width, cout],
                1,
                last,
            )?));
        }
        Ok(Self {
            config: c.clone(),
            weight_dtype: weight_dtype(&layers),
            layers,
        })
    }

    /// Scaled latents `[n, h, w, latent_channels]` (as the U-Net makes them; TAESD's
    /// `scaling_factor` is 1) → images `[n, h·f, w·f, out_channels]` in about [−1, 1]. Records
    /// only; activations in the device's dtype for the weights, the image in f32.
    pub fn forward(&self, rec: &mut Recorder<'_>, z: &Tensor) -> Result<Tensor> {
        if z.rank() != 4 || z.shape()[3] != self.config.latent_channels {
            return Err(Error::shape(
                "tiny decode",
                format!(
                    "latents `{}` must be [n, h, w, {}], got {:?}",
                    z.name(),
                    self.config.latent_channels,
                    z.shape()
                ),
            ));
        }
        let act = rec.gpu().activation_dtype(self.weight_dtype);
        // The latent clamp, tanh(z / 3)·3, of z / scaling_factor.
        let z = ops::unary(
            rec,
            z,
            Unary::Tanh,
            1.0 / (3.0 * self.config.scaling_factor),
            0.0,
        )?;
        let z = ops::unary(rec, &z, Unary::Affine, 3.0, 0.0)?;
        let z = ops::cast(rec, &z, act)?;
        let x = run(rec, &self.layers, z)?;
        let x = ops::cast(rec, &x, DType::F32)?;
        ops::unary(rec, &x, Unary::Affine, 2.0, -1.0)
    }
}

/// The tiny autoencoder's encoder.
pub struct TinyEncoder {
    pub config: TinyConfig,
    layers: Vec<Layer>,
    weight_dtype: DType,
}

impl TinyEncoder {
    pub fn load(gpu: &Gpu, w: &TinyWeights, dt: WeightDType) -> Result<Self> {
        let c = &w.config;
        let k = w.keys(gpu, "encoder.layers", dt);
        let width = c.encoder_block_out_channels[0];
        let mut layers = Vec::new();
        for (i, &n) in c.num_encoder_blocks.iter().enumerate() {
            let conv = if i == 0 {
                k.conv(0, "", [c.in_channels, width], 1, true)?
            } else {
                k.conv(layers.len(), "", [width, width], 2, false)?
            };
            layers.push(Layer::Conv(conv));
            push_blocks(&k, &mut layers, n, width)?;
        }
        let out = k.conv(layers.len(), "", [width, c.latent_channels], 1, true)?;
        layers.push(Layer::Conv(out));
        Ok(Self {
            config: c.clone(),
            weight_dtype: weight_dtype(&layers),
            layers,
        })
    }

    /// Images `[n, H, W, in_channels]` in [−1, 1] (H, W multiples of the factor) → scaled
    /// latents `[n, H/f, W/f, latent_channels]`. Records only.
    pub fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        let f = 1 << (self.config.encoder_block_out_channels.len() - 1);
        let s = x.shape();
        if x.rank() != 4 || s[3] != self.config.in_channels || s[1] % f != 0 || s[2] % f != 0 {
            return Err(Error::shape(
                "tiny encode",
                format!(
                    "image `{}` must be [n, h, w, {}] with h and w multiples of {f}, got {s:?}",
                    x.name(),
                    self.config.in_channels
                ),
            ));
        }
        let act = rec.gpu().activation_dtype(self.weight_dtype);
        // diffusers' [−1, 1] → TAESD's [0, 1].
        let x = ops::unary(rec, x, Unary::Affine, 0.5, 0.5)?;
        let x = ops::cast(rec, &x, act)?;
        let x = run(rec, &self.layers, x)?;
        let x = ops::cast(rec, &x, DType::F32)?;
        ops::unary(rec, &x, Unary::Affine, self.config.scaling_factor, 0.0)
    }
}
