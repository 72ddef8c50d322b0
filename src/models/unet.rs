//! U-Net (diffusers `UNet2DConditionModel`) for SD 1.x / 2.x: sinusoidal time embedding and
//! MLP, conv_in, down blocks (resnets, cross-attention transformers, stride-2 conv), mid block,
//! up blocks (skip concatenation, resnets, transformers, upsample), GroupNorm + SiLU,
//! conv_out. Channels-last throughout: the transformers need no permutes.

use super::blocks::{Attention, Conv2d, GroupNorm, ResnetBlock2D, Upsample2D};
use super::{LayerNorm, Linear, read_json};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};
use crate::ops::{self, Conv2dOptions, Unary};
use crate::tensor::{DType, Tensor};
use crate::weights::{WeightDType, Weights};
use std::path::Path;

/// The fields of a diffusers `UNet2DConditionModel` config the engine uses.
#[derive(Clone, Debug, PartialEq)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    /// Per down block: has cross-attention (`CrossAttnDownBlock2D`) or not (`DownBlock2D`).
    pub down_attention: Vec<bool>,
    /// Per up block, likewise (`CrossAttnUpBlock2D` / `UpBlock2D`).
    pub up_attention: Vec<bool>,
    pub layers_per_block: usize,
    /// Attention heads per block (diffusers' `attention_head_dim`, which counts heads for
    /// SD 1.x / 2.x, or `num_attention_heads`).
    pub heads: Vec<usize>,
    pub cross_attention_dim: usize,
    pub norm_num_groups: usize,
    pub norm_eps: f32,
    pub use_linear_projection: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f32,
    /// Native latent size (diffusers' `sample_size`): the default image is this × the VAE
    /// factor (SD 1.x: 64 → 512 px, SD 2.1: 96 → 768 px).
    pub sample_size: usize,
}

impl UNetConfig {
    /// SD 1.5 (`unet/config.json` of stable-diffusion-v1-5).
    pub fn sd15() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![320, 640, 1280, 1280],
            down_attention: vec![true, true, true, false],
            up_attention: vec![false, true, true, true],
            layers_per_block: 2,
            heads: vec![8; 4],
            cross_attention_dim: 768,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            use_linear_projection: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            sample_size: 64,
        }
    }

    /// SD 2.1 (`stabilityai/stable-diffusion-2-1`): head dim 64, linear projections.
    pub fn sd21() -> Self {
        Self {
            heads: vec![5, 10, 20, 20],
            cross_attention_dim: 1024,
            sample_size: 96,
            use_linear_projection: true,
            ..Self::sd15()
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
        let ints = |k: &str| -> Option<Vec<usize>> {
            v[k].as_array()?
                .iter()
                .map(|x| x.as_u64().map(|x| x as usize))
                .collect()
        };
        let int = |k: &str, d: u64| {
            v.get(k)
                .filter(|x| !x.is_null())
                .map_or(Some(d), |x| x.as_u64())
                .map(|x| x as usize)
        };
        let blocks = ints("block_out_channels")
            .filter(|b| !b.is_empty())
            .ok_or_else(|| bad("`block_out_channels` missing".into()))?;
        let n = blocks.len();
        let kinds = |k: &str, attn: &str, plain: &str| -> Result<Vec<bool>> {
            let a = v[k]
                .as_array()
                .ok_or_else(|| bad(format!("`{k}` missing")))?;
            a.iter()
                .map(|t| match t.as_str() {
                    Some(s) if s == attn => Ok(true),
                    Some(s) if s == plain => Ok(false),
                    other => Err(bad(format!(
                        "`{k}` entry {other:?} is not supported ({attn}, {plain})"
                    ))),
                })
                .collect()
        };
        let down_attention = kinds("down_block_types", "CrossAttnDownBlock2D", "DownBlock2D")?;
        let up_attention = kinds("up_block_types", "CrossAttnUpBlock2D", "UpBlock2D")?;
        if down_attention.len() != n || up_attention.len() != n {
            return Err(bad(format!(
                "{n} block_out_channels but {} down and {} up blocks",
                down_attention.len(),
                up_attention.len()
            )));
        }
        // diffusers: num_attention_heads defaults to attention_head_dim (which SD configs use
        // to mean the head count); either may be one number or one per block.
        let heads_value = if v["num_attention_heads"].is_null() {
            &v["attention_head_dim"]
        } else {
            &v["num_attention_heads"]
        };
        let heads = match heads_value {
            serde_json::Value::Number(x) => vec![x.as_u64().unwrap_or(8) as usize; n],
            serde_json::Value::Array(_) => ints(if v["num_attention_heads"].is_null() {
                "attention_head_dim"
            } else {
                "num_attention_heads"
            })
            .filter(|h| h.len() == n)
            .ok_or_else(|| bad("attention heads must be one number or one per block".into()))?,
            _ => vec![8; n],
        };
        for key in ["transformer_layers_per_block"] {
            if v[key].as_u64().is_some_and(|x| x != 1) || v[key].is_array() {
                return Err(bad(format!("`{key}` other than 1 is not supported yet")));
            }
        }
        Ok(Self {
            in_channels: int("in_channels", 4).ok_or_else(|| bad("`in_channels`".into()))?,
            out_channels: int("out_channels", 4).ok_or_else(|| bad("`out_channels`".into()))?,
            block_out_channels: blocks,
            down_attention,
            up_attention,
            layers_per_block: int("layers_per_block", 2)
                .ok_or_else(|| bad("`layers_per_block`".into()))?,
            heads,
            cross_attention_dim: int("cross_attention_dim", 768)
                .ok_or_else(|| bad("`cross_attention_dim`".into()))?,
            norm_num_groups: int("norm_num_groups", 32)
                .ok_or_else(|| bad("`norm_num_groups`".into()))?,
            norm_eps: v["norm_eps"].as_f64().unwrap_or(1e-5) as f32,
            use_linear_projection: v["use_linear_projection"].as_bool().unwrap_or(false),
            flip_sin_to_cos: v["flip_sin_to_cos"].as_bool().unwrap_or(true),
            freq_shift: v["freq_shift"].as_f64().unwrap_or(0.0) as f32,
            sample_size: int("sample_size", 64)
                .ok_or_else(|| bad("`sample_size` must be an integer".into()))?,
        })
    }
}

/// diffusers `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward,
/// each pre-LayerNorm with a residual.
pub struct BasicTransformerBlock {
    pub norm1: LayerNorm,
    pub attn1: Attention,
    pub norm2: LayerNorm,
    pub attn2: Attention,
    pub norm3: LayerNorm,
    pub ff_proj: Linear,
    pub ff_out: Linear,
}

/// diffusers `Transformer2DModel` (one block): GroupNorm, proj_in (1×1 conv or linear),
/// transformer block, proj_out, residual.
pub struct Transformer2D {
    pub norm: GroupNorm,
    pub proj_in: Projection,
    pub block: BasicTransformerBlock,
    pub proj_out: Projection,
}

/// SD 1.x projects with 1×1 convs, SD 2.x with linears; on channels-last data both are the
/// same matmul, only the stored weight shape differs.
pub struct Projection(Linear);

impl Projection {
    fn load(
        w: &Weights,
        gpu: &Gpu,
        prefix: &str,
        c: usize,
        linear: bool,
        dt: WeightDType,
    ) -> Result<Self> {
        if linear {
            return Ok(Self(Linear::load(w, gpu, prefix, c, c, true, dt)?));
        }
        let conv = Conv2d::load(w, gpu, prefix, c, c, 1, Conv2dOptions::new(1, 0), dt)?;
        // [1, 1, c, c] (kh, kw, in, out) is the linear weight [in, out].
        Ok(Self(Linear {
            weight: conv.weight.reshape(&[c, c])?,
            bias: Some(conv.bias),
        }))
    }
}

impl Transformer2D {
    #[allow(clippy::too_many_arguments)]
    fn load(
        w: &Weights,
        gpu: &Gpu,
        prefix: &str,
        c: usize,
        heads: usize,
        cfg: &UNetConfig,
        dt: WeightDType,
    ) -> Result<Self> {
        let b = format!("{prefix}.transformer_blocks.0");
        let ln = |n: &str| LayerNorm::load(w, gpu, &format!("{b}.{n}"), c, 1e-5);
        let lin = cfg.use_linear_projection;
        Ok(Self {
            norm: GroupNorm::load(
                w,
                gpu,
                &format!("{prefix}.norm"),
                c,
                cfg.norm_num_groups,
                1e-6,
            )?,
            proj_in: Projection::load(w, gpu, &format!("{prefix}.proj_in"), c, lin, dt)?,
            block: BasicTransformerBlock {
                norm1: ln("norm1")?,
                attn1: Attention::load(w, gpu, &format!("{b}.attn1"), c, c, heads, false, dt)?,
                norm2: ln("norm2")?,
                attn2: Attention::load(
                    w,
                    gpu,
                    &format!("{b}.attn2"),
                    c,
                    cfg.cross_attention_dim,
                    heads,
                    false,
                    dt,
                )?,
                norm3: ln("norm3")?,
                ff_proj: Linear::load(w, gpu, &format!("{b}.ff.net.0.proj"), c, 8 * c, true, dt)?,
                ff_out: Linear::load(w, gpu, &format!("{b}.ff.net.2"), 4 * c, c, true, dt)?,
            },
            proj_out: Projection::load(w, gpu, &format!("{prefix}.proj_out"), c, lin, dt)?,
        })
    }

    fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let &[n, h, wd, c] = x.shape() else {
            return Err(Error::shape(
                "transformer",
                format!("`{}` must be [n, h, w, c]", x.name()),
            ));
        };
        let y = self.norm.forward(rec, x, false)?.reshape(&[n, h * wd, c])?;
        let mut y = self.proj_in.0.forward(rec, &y)?; // [n, hw, c]
        let blk = &self.block;
        let yn = blk.norm1.forward(rec, &y)?;
        let a = blk.attn1.forward(rec, &yn, None)?;
        y = ops::add(rec, &y, &a)?;
        let yn = blk.norm2.forward(rec, &y)?;
        let a = blk.attn2.forward(rec, &yn, Some(context))?;
        y = ops::add(rec, &y, &a)?;
        let yn = blk.norm3.forward(rec, &y)?;
        let f = blk.ff_proj.forward(rec, &yn)?; // [n, hw, 8c]
        let f = ops::geglu(rec, &f)?; // [n, hw, 4c]
        let f = blk.ff_out.forward(rec, &f)?;
        y = ops::add(rec, &y, &f)?;
        let y = self.proj_out.0.forward(rec, &y)?;
        ops::add(rec, &y.reshape(&[n, h, wd, c])?, x)
    }
}

pub struct DownBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2D>,
    pub downsampler: Option<Conv2d>,
}

pub struct UpBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2D>,
    pub upsampler: Option<Upsample2D>,
}

pub struct UNet {
    pub config: UNetConfig,
    pub time_linear_1: Linear,
    pub time_linear_2: Linear,
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownBlock>,
    pub mid_resnet0: ResnetBlock2D,
    pub mid_attention: Transformer2D,
    pub mid_resnet1: ResnetBlock2D,
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl UNet {
    pub fn load(
        gpu: &Gpu,
        w: &Weights,
        prefix: &str,
        config: &UNetConfig,
        dt: WeightDType,
    ) -> Result<Self> {
        let c = config;
        let ch = &c.block_out_channels;
        let nb = ch.len();
        if c.heads.len() != nb {
            return Err(Error::unsupported(
                "unet",
                format!("{} head counts for {nb} blocks", c.heads.len()),
            ));
        }
        let p = |s: &str| format!("{prefix}{s}");
        let temb = 4 * ch[0];
        let (g, eps) = (c.norm_num_groups, c.norm_eps);
        let same = Conv2dOptions::new(1, 1);
        let resnet = |name: String, cin, cout| {
            ResnetBlock2D::load(w, gpu, &name, cin, cout, g, eps, Some(temb), dt)
        };
        let transformer =
            |name: String, cc, heads| Transformer2D::load(w, gpu, &name, cc, heads, c, dt);

        let mut down_blocks = Vec::new();
        let mut out = ch[0];
        for (i, &block_out) in ch.iter().enumerate() {
            let input = out;
            out = block_out;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..c.layers_per_block {
                resnets.push(resnet(
                    p(&format!("down_blocks.{i}.resnets.{j}")),
                    if j == 0 { input } else { out },
                    out,
                )?);
                if c.down_attention[i] {
                    attentions.push(transformer(
                        p(&format!("down_blocks.{i}.attentions.{j}")),
                        out,
                        c.heads[i],
                    )?);
                }
            }
            let downsampler = (i + 1 < nb)
                .then(|| {
                    Conv2d::load(
                        w,
                        gpu,
                        &p(&format!("down_blocks.{i}.downsamplers.0.conv")),
                        out,
                        out,
                        3,
                        Conv2dOptions::new(2, 1),
                        dt,
                    )
                })
                .transpose()?;
            down_blocks.push(DownBlock {
                resnets,
                attentions,
                downsampler,
            });
        }

        let top = ch[nb - 1];
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let rev_heads: Vec<usize> = c.heads.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut out = rev[0];
        for i in 0..nb {
            let prev = out;
            out = rev[i];
            let input = rev[(i + 1).min(nb - 1)];
            let layers = c.layers_per_block + 1;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let skip = if j == layers - 1 { input } else { out };
                let rin = if j == 0 { prev } else { out };
                resnets.push(resnet(
                    p(&format!("up_blocks.{i}.resnets.{j}")),
                    rin + skip,
                    out,
                )?);
                if c.up_attention[i] {
                    attentions.push(transformer(
                        p(&format!("up_blocks.{i}.attentions.{j}")),
                        out,
                        rev_heads[i],
                    )?);
                }
            }
            let upsampler = (i + 1 < nb)
                .then(|| {
                    Upsample2D::load(w, gpu, &p(&format!("up_blocks.{i}.upsamplers.0")), out, dt)
                })
                .transpose()?;
            up_blocks.push(UpBlock {
                resnets,
                attentions,
                upsampler,
            });
        }

        Ok(Self {
            time_linear_1: Linear::load(
                w,
                gpu,
                &p("time_embedding.linear_1"),
                ch[0],
                temb,
                true,
                dt,
            )?,
            time_linear_2: Linear::load(
                w,
                gpu,
                &p("time_embedding.linear_2"),
                temb,
                temb,
                true,
                dt,
            )?,
            conv_in: Conv2d::load(w, gpu, &p("conv_in"), c.in_channels, ch[0], 3, same, dt)?,
            down_blocks,
            mid_resnet0: resnet(p("mid_block.resnets.0"), top, top)?,
            mid_attention: transformer(p("mid_block.attentions.0"), top, c.heads[nb - 1])?,
            mid_resnet1: resnet(p("mid_block.resnets.1"), top, top)?,
            up_blocks,
            conv_norm_out: GroupNorm::load(w, gpu, &p("conv_norm_out"), ch[0], g, eps)?,
            conv_out: Conv2d::load(w, gpu, &p("conv_out"), ch[0], c.out_channels, 3, same, dt)?,
            config: c.clone(),
        })
    }

    /// The noise prediction for latents `[n, h, w, in_channels]` (any size) at `timestep`,
    /// conditioned on `context` `[n, seq, cross_attention_dim]`.
    pub fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        timestep: f32,
        context: &Tensor,
    ) -> Result<Tensor> {
        let n = x.shape().first().copied().unwrap_or(0);
        let t = Tensor::from_f32(
            rec.gpu(),
            &vec![timestep; n],
            &[n],
            DType::F32,
            "unet.timestep",
        )?;
        self.forward_t(rec, x, &t, context)
    }

    /// [`UNet::forward`] with the timestep as a device tensor f32 `[n]` (one per image): what
    /// a recorded step plan uses, the timestep changing in device memory between replays.
    pub fn forward_t(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        t: &Tensor,
        context: &Tensor,
    ) -> Result<Tensor> {
        const OP: &str = "unet";
        let c = &self.config;
        let &[n, h, w, cin] = x.shape() else {
            return Err(Error::shape(
                OP,
                format!(
                    "latents `{}` must be [n, h, w, c], got {:?}",
                    x.name(),
                    x.shape()
                ),
            ));
        };
        if cin != c.in_channels || h == 0 || w == 0 {
            return Err(Error::shape(
                OP,
                format!("latents {:?} need {} channels", x.shape(), c.in_channels),
            ));
        }
        if context.rank() != 3
            || context.shape()[0] != n
            || context.shape()[2] != c.cross_attention_dim
        {
            return Err(Error::shape(
                OP,
                format!(
                    "context `{}` must be [{n}, seq, {}], got {:?}",
                    context.name(),
                    c.cross_attention_dim,
                    context.shape()
                ),
            ));
        }
        if t.shape() != [n] {
            return Err(Error::shape(
                OP,
                format!("timestep `{}` {:?} must be [{n}]", t.name(), t.shape()),
            ));
        }
        // Time embedding: sinusoid → linear → SiLU → linear; every resnet applies SiLU to it
        // before its own projection, so that SiLU is done once here.
        let ch0 = c.block_out_channels[0];
        let t =
            ops::timestep_embedding(rec, t, ch0, c.flip_sin_to_cos, c.freq_shift, 1.0, 10000.0)?;
        let t = self.time_linear_1.forward(rec, &t)?;
        let t = ops::unary(rec, &t, Unary::Silu, 1.0, 0.0)?;
        let temb = self.time_linear_2.forward(rec, &t)?;
        let temb = ops::unary(rec, &temb, Unary::Silu, 1.0, 0.0)?; // [n, 4·ch0]

        let mut x = self.conv_in.forward(rec, x, None)?;
        let mut skips = vec![x.clone()];
        for b in &self.down_blocks {
            for (j, r) in b.resnets.iter().enumerate() {
                x = r.forward(rec, &x, Some(&temb))?;
                if let Some(a) = b.attentions.get(j) {
                    x = a.forward(rec, &x, context)?;
                }
                skips.push(x.clone());
            }
            if let Some(d) = &b.downsampler {
                x = d.forward(rec, &x, None)?;
                skips.push(x.clone());
            }
        }
        x = self.mid_resnet0.forward(rec, &x, Some(&temb))?;
        x = self.mid_attention.forward(rec, &x, context)?;
        x = self.mid_resnet1.forward(rec, &x, Some(&temb))?;
        for b in &self.up_blocks {
            for (j, r) in b.resnets.iter().enumerate() {
                let skip = skips
                    .pop()
                    .ok_or_else(|| Error::unsupported(OP, "skip connections ran out"))?;
                x = ops::concat_channels(rec, &x, &skip)?;
                x = r.forward(rec, &x, Some(&temb))?;
                if let Some(a) = b.attentions.get(j) {
                    x = a.forward(rec, &x, context)?;
                }
            }
            if let Some(u) = &b.upsampler {
                // To the size of the skip connection the next block takes (2× unless the
                // latent size was odd somewhere on the way down).
                let next = skips
                    .last()
                    .ok_or_else(|| Error::unsupported(OP, "skip connections ran out"))?;
                x = u.forward_to(rec, &x, next.shape()[1], next.shape()[2])?;
            }
        }
        let x = self.conv_norm_out.forward(rec, &x, true)?;
        self.conv_out.forward(rec, &x, None)
    }
}
