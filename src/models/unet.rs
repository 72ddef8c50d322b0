//! U-Net (diffusers `UNet2DConditionModel`) for SD 1.x / 2.x: sinusoidal time embedding and
//! MLP, conv_in, down blocks (resnets, cross-attention transformers, stride-2 conv), mid block,
//! up blocks (skip concatenation, resnets, transformers, upsample), GroupNorm + SiLU,
//! conv_out. Channels-last throughout: the transformers need no permutes.

use super::blocks::{Conv2d, Downsample2D, GroupNorm, ResnetBlock2D, Upsample2D};
pub use super::transformer::{BasicTransformerBlock, FeedForward, Transformer2D};
use super::{Linear, Loader, read_json};
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
    /// Transformer blocks in each `Transformer2D` of a level (diffusers'
    /// `transformer_layers_per_block`: the mid block takes the last level's, the up blocks
    /// the levels' in reverse). SD 1.x / 2.x: 1 everywhere; SDXL: 1, 2, 10.
    pub transformer_layers_per_block: Vec<usize>,
    /// SDXL's `addition_embed_type: "text_time"`: the pooled text embedding and six
    /// micro-conditioning ids, each id a sinusoid of this width, through `add_embedding`
    /// into the time embedding. `None`: no added conditions.
    pub addition_time_embed_dim: Option<usize>,
    /// `add_embedding`'s input width (`projection_class_embeddings_input_dim`): the text
    /// embedding's width + 6 × `addition_time_embed_dim`.
    pub projection_class_embeddings_input_dim: usize,
    /// LCM's guidance-scale embedding width (`time_cond_proj_dim`): `time_embedding.cond_proj`
    /// adds it to the timestep's sinusoid. `None`: no such input.
    pub time_cond_proj_dim: Option<usize>,
    /// Per down block (the up blocks take them reversed): its transformer blocks' `attn1`
    /// attends to the text context too (`only_cross_attention`: the 4× upscaler's U-Net).
    pub only_cross_attention: Vec<bool>,
    /// Class conditioning (`num_class_embeds`, `class_embed_type` null): `class_embedding`
    /// is a table of this many rows added to the time embedding (the upscaler's noise level).
    pub num_class_embeds: Option<usize>,
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
            transformer_layers_per_block: vec![1; 4],
            addition_time_embed_dim: None,
            projection_class_embeddings_input_dim: 0,
            time_cond_proj_dim: None,
            only_cross_attention: vec![false; 4],
            num_class_embeds: None,
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
        let transformer_layers_per_block = match &v["transformer_layers_per_block"] {
            serde_json::Value::Null => vec![1; n],
            serde_json::Value::Number(x) => vec![x.as_u64().unwrap_or(0) as usize; n],
            _ => ints("transformer_layers_per_block")
                .filter(|d| d.len() == n)
                .ok_or_else(|| {
                    bad("`transformer_layers_per_block` must be one number or one per block".into())
                })?,
        };
        let (addition_time_embed_dim, projection_class_embeddings_input_dim) =
            match v["addition_embed_type"].as_str() {
                None if v["addition_embed_type"].is_null() => (None, 0),
                Some("text_time") => (
                    Some(
                        int("addition_time_embed_dim", 0)
                            .filter(|&d| d > 0)
                            .ok_or_else(|| bad("`addition_time_embed_dim` missing".into()))?,
                    ),
                    int("projection_class_embeddings_input_dim", 0)
                        .filter(|&d| d > 0)
                        .ok_or_else(|| {
                            bad("`projection_class_embeddings_input_dim` missing".into())
                        })?,
                ),
                _ => {
                    return Err(bad(format!(
                        "`addition_embed_type` {} is not supported (text_time)",
                        v["addition_embed_type"]
                    )));
                }
            };
        let time_cond_proj_dim = match &v["time_cond_proj_dim"] {
            serde_json::Value::Null => None,
            x => Some(
                x.as_u64()
                    .filter(|&d| d > 0)
                    .ok_or_else(|| bad(format!("`time_cond_proj_dim` {x} is not a width")))?
                    as usize,
            ),
        };
        // What the engine does not build: a config asking for it is refused, not run wrong.
        let plain: [(&str, &[&str]); 6] = [
            ("time_embedding_type", &["positional"]),
            ("mid_block_type", &["UNetMidBlock2DCrossAttn"]),
            ("resnet_time_scale_shift", &["default"]),
            ("class_embed_type", &[]),
            ("encoder_hid_dim_type", &[]),
            ("reverse_transformer_layers_per_block", &[]),
        ];
        for (key, allowed) in plain {
            let val = &v[key];
            if !val.is_null() && !val.as_str().is_some_and(|s| allowed.contains(&s)) {
                return Err(bad(format!("`{key}` {val} is not supported")));
            }
        }
        // Options that change the math, at values the engine does not build.
        for (key, fine) in [
            ("dual_cross_attention", serde_json::json!(false)),
            ("class_embeddings_concat", serde_json::json!(false)),
            ("resnet_skip_time_act", serde_json::json!(false)),
            ("resnet_out_scale_factor", serde_json::json!(1.0)),
            ("conv_in_kernel", serde_json::json!(3)),
            ("conv_out_kernel", serde_json::json!(3)),
            ("attention_type", serde_json::json!("default")),
        ] {
            let val = &v[key];
            let same = val.as_f64().zip(fine.as_f64()).is_some_and(|(a, b)| a == b);
            if !val.is_null() && *val != fine && !same {
                return Err(bad(format!("`{key}` {val} is not supported ({fine} only)")));
            }
        }
        for key in [
            "time_embedding_act_fn",
            "timestep_post_act",
            "time_embedding_dim",
            "cross_attention_norm",
            "encoder_hid_dim",
        ] {
            if !v[key].is_null() {
                return Err(bad(format!("`{key}` {} is not supported", v[key])));
            }
        }
        let only_cross_attention = match &v["only_cross_attention"] {
            serde_json::Value::Null => vec![false; n],
            serde_json::Value::Bool(b) => vec![*b; n],
            serde_json::Value::Array(a) if a.len() == n && a.iter().all(|x| x.is_boolean()) => {
                a.iter().map(|x| x.as_bool() == Some(true)).collect()
            }
            x => {
                return Err(bad(format!(
                    "`only_cross_attention` {x} must be a bool or one per block"
                )));
            }
        };
        if v["mid_block_only_cross_attention"].as_bool() == Some(true) {
            return Err(bad(
                "`mid_block_only_cross_attention` true is not supported".into(),
            ));
        }
        let num_class_embeds = match &v["num_class_embeds"] {
            serde_json::Value::Null => None,
            x => Some(
                x.as_u64()
                    .filter(|&k| (1..=1 << 20).contains(&k))
                    .ok_or_else(|| bad(format!("`num_class_embeds` {x} is not a row count")))?
                    as usize,
            ),
        };
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
            transformer_layers_per_block,
            addition_time_embed_dim,
            projection_class_embeddings_input_dim,
            time_cond_proj_dim,
            only_cross_attention,
            num_class_embeds,
        })
    }
}

/// diffusers `TimestepEmbedding`: (+ `cond_proj` of a condition) → linear → SiLU → linear.
pub struct TimestepEmbedding {
    pub linear_1: Linear,
    pub linear_2: Linear,
    /// LCM's guidance embedding projection (`time_cond_proj_dim`; no bias).
    pub cond_proj: Option<Linear>,
}

impl TimestepEmbedding {
    fn load(vb: &Loader<'_>, cin: usize, temb: usize, cond: Option<usize>) -> Result<Self> {
        Ok(Self {
            linear_1: vb.pp("linear_1").linear(cin, temb, true)?,
            linear_2: vb.pp("linear_2").linear(temb, temb, true)?,
            cond_proj: cond
                .map(|d| vb.pp("cond_proj").linear(d, cin, false))
                .transpose()?,
        })
    }

    /// linear_1 → SiLU → linear_2 (+ `residual`, fused into the last GEMM).
    fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let t = self.linear_1.forward(rec, x)?;
        let t = ops::unary(rec, &t, Unary::Silu, 1.0, 0.0)?;
        self.linear_2.forward_res(rec, &t, residual)
    }
}

/// Conditions an SDXL or LCM U-Net takes besides the text context, one row per image.
#[derive(Clone, Copy, Default)]
pub struct AddedConditions<'a> {
    /// SDXL: the second text encoder's pooled, projected output `[n, d]` (`text_embeds`).
    pub text_embeds: Option<&'a Tensor>,
    /// SDXL: f32 `[n, 6]` micro-conditioning (`time_ids`: original height and width, crop
    /// top and left, target height and width).
    pub time_ids: Option<&'a Tensor>,
    /// LCM: the guidance-scale embedding `[n, time_cond_proj_dim]` (`timestep_cond`).
    pub timestep_cond: Option<&'a Tensor>,
    /// Class conditioning (`num_class_embeds`): one class per image (the 4× upscaler's
    /// noise level), `class_labels`.
    pub class_labels: Option<&'a [usize]>,
}

/// diffusers `CrossAttnDownBlock2D` / `DownBlock2D`.
pub struct DownBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2D>,
    pub downsamplers: Vec<Downsample2D>,
}

/// diffusers `CrossAttnUpBlock2D` / `UpBlock2D`.
pub struct UpBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2D>,
    pub upsamplers: Vec<Upsample2D>,
}

/// diffusers `UNetMidBlock2DCrossAttn`: resnet, transformer, resnet.
pub struct MidBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2D>,
}

/// The prompt's part of the U-Net ([`UNet::project_context`]): each transformer's
/// cross-attention keys and values, in the order the U-Net runs them.
pub struct UNetContext {
    pub batch: usize,
    pub kv: Vec<Vec<(Tensor, Tensor)>>,
    /// SDXL: `add_embedding` of the text embedding and time ids `[n, 4·ch0]`, added to the
    /// time embedding.
    pub added: Option<Tensor>,
    /// LCM: `time_embedding.cond_proj(timestep_cond)` `[n, ch0]`, added to the sinusoid.
    pub cond: Option<Tensor>,
}

pub struct UNet {
    pub config: UNetConfig,
    pub time_embedding: TimestepEmbedding,
    /// SDXL's `add_embedding` (`addition_embed_type: "text_time"`).
    pub add_embedding: Option<TimestepEmbedding>,
    /// `class_embedding.weight` (`num_class_embeds` × time-embedding width) on the host: a
    /// request's rows are looked up once, in [`UNet::project_context_with`].
    pub class_embedding: Option<Vec<f32>>,
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl UNet {
    /// Loads the U-Net from `w` under `prefix` (`""` for a diffusers `unet/` folder).
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
        let vb = Loader::new(w, gpu, prefix, dt);
        let temb = 4 * ch[0];
        let (g, eps) = (c.norm_num_groups, c.norm_eps);
        let same = Conv2dOptions::new(1, 1);
        let resnet =
            |vb: Loader<'_>, cin, cout| ResnetBlock2D::load(&vb, cin, cout, g, eps, Some(temb));
        let depth = &c.transformer_layers_per_block;
        if depth.len() != nb {
            return Err(Error::unsupported(
                "unet",
                format!("{} transformer depths for {nb} blocks", depth.len()),
            ));
        }
        let only_cross = |i: usize| c.only_cross_attention.get(i).copied().unwrap_or(false);
        let transformer =
            |vb: Loader<'_>, cc, heads, d, oc| Transformer2D::load(&vb, cc, heads, d, c, oc);

        let mut down_blocks = Vec::new();
        let mut out = ch[0];
        for (i, &block_out) in ch.iter().enumerate() {
            let vb = vb.pp("down_blocks").pp(i);
            let input = out;
            out = block_out;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..c.layers_per_block {
                let cin = if j == 0 { input } else { out };
                resnets.push(resnet(vb.pp("resnets").pp(j), cin, out)?);
                if c.down_attention[i] {
                    let vb = vb.pp("attentions").pp(j);
                    attentions.push(transformer(vb, out, c.heads[i], depth[i], only_cross(i))?);
                }
            }
            let downsamplers = if i + 1 < nb {
                let vb = vb.pp("downsamplers").pp(0);
                vec![Downsample2D::load(&vb, out, Conv2dOptions::new(2, 1))?]
            } else {
                Vec::new()
            };
            down_blocks.push(DownBlock {
                resnets,
                attentions,
                downsamplers,
            });
        }

        let top = ch[nb - 1];
        let mid = vb.pp("mid_block");
        let mid_block = MidBlock {
            resnets: vec![
                resnet(mid.pp("resnets").pp(0), top, top)?,
                resnet(mid.pp("resnets").pp(1), top, top)?,
            ],
            attentions: vec![transformer(
                mid.pp("attentions").pp(0),
                top,
                c.heads[nb - 1],
                depth[nb - 1],
                // UNetMidBlock2DCrossAttn takes no only_cross_attention.
                false,
            )?],
        };

        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let rev_heads: Vec<usize> = c.heads.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut out = rev[0];
        for i in 0..nb {
            let vb = vb.pp("up_blocks").pp(i);
            let prev = out;
            out = rev[i];
            let input = rev[(i + 1).min(nb - 1)];
            let layers = c.layers_per_block + 1;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..layers {
                let skip = if j == layers - 1 { input } else { out };
                let rin = if j == 0 { prev } else { out };
                resnets.push(resnet(vb.pp("resnets").pp(j), rin + skip, out)?);
                if c.up_attention[i] {
                    let (heads, d) = (rev_heads[i], depth[nb - 1 - i]);
                    let oc = only_cross(nb - 1 - i);
                    attentions.push(transformer(vb.pp("attentions").pp(j), out, heads, d, oc)?);
                }
            }
            let upsamplers = if i + 1 < nb {
                vec![Upsample2D::load(&vb.pp("upsamplers").pp(0), out)?]
            } else {
                Vec::new()
            };
            up_blocks.push(UpBlock {
                resnets,
                attentions,
                upsamplers,
            });
        }

        let te = vb.pp("time_embedding");
        Ok(Self {
            time_embedding: TimestepEmbedding::load(&te, ch[0], temb, c.time_cond_proj_dim)?,
            add_embedding: c
                .addition_time_embed_dim
                .map(|_| {
                    let d = c.projection_class_embeddings_input_dim;
                    TimestepEmbedding::load(&vb.pp("add_embedding"), d, temb, None)
                })
                .transpose()?,
            class_embedding: c
                .num_class_embeds
                .map(|k| {
                    let name = vb.pp("class_embedding").key("weight");
                    w.read_table(&name, &[k, temb]).map(|(t, _)| t)
                })
                .transpose()?,
            conv_in: vb.pp("conv_in").conv(c.in_channels, ch[0], 3, same)?,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: vb.pp("conv_norm_out").group_norm(ch[0], g, eps)?,
            conv_out: vb.pp("conv_out").conv(ch[0], c.out_channels, 3, same)?,
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

    /// [`UNet::forward`] with the timestep as a device tensor f32 `[n]` (one per image).
    pub fn forward_t(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        t: &Tensor,
        context: &Tensor,
    ) -> Result<Tensor> {
        let ctx = self.project_context(rec, context)?;
        self.forward_ctx(rec, x, t, &ctx)
    }

    /// Every transformer's cross-attention keys and values of `context` `[n, seq,
    /// cross_attention_dim]`: the part of the U-Net that depends on the prompt alone, computed
    /// once per request rather than every step. For a U-Net without added conditions.
    pub fn project_context(&self, rec: &mut Recorder<'_>, context: &Tensor) -> Result<UNetContext> {
        self.project_context_with(rec, context, AddedConditions::default())
    }

    /// [`UNet::project_context`] with the conditions an SDXL U-Net (`text_embeds`, `time_ids`)
    /// or an LCM U-Net (`timestep_cond`) takes: they depend on the request alone too, so
    /// their embeddings are made here, once (diffusers' `get_aug_embed` and `cond_proj`).
    pub fn project_context_with(
        &self,
        rec: &mut Recorder<'_>,
        context: &Tensor,
        added: AddedConditions<'_>,
    ) -> Result<UNetContext> {
        const OP: &str = "unet";
        let c = &self.config;
        if context.rank() != 3 || context.shape()[2] != c.cross_attention_dim {
            return Err(Error::shape(
                OP,
                format!(
                    "context `{}` must be [n, seq, {}], got {:?}",
                    context.name(),
                    c.cross_attention_dim,
                    context.shape()
                ),
            ));
        }
        let n = context.shape()[0];
        let act = self.activation_dtype(rec);
        // Each condition: required by the config, and one row per image.
        let rows =
            |t: Option<&Tensor>, what: &str, width: Option<usize>| -> Result<Option<Tensor>> {
                let Some(t) = t else {
                    return match width {
                        Some(_) => Err(Error::unsupported(
                            OP,
                            format!("this U-Net needs `{what}` (an SDXL or LCM U-Net): none given"),
                        )),
                        None => Ok(None),
                    };
                };
                let ok = t.rank() == 2
                    && t.shape()[0] == n
                    && width.is_none_or(|d| d == 0 || t.shape()[1] == d);
                if width.is_none() || !ok {
                    return Err(Error::shape(
                        OP,
                        match width {
                            None => format!("`{what}` given to a U-Net that takes none"),
                            Some(d) => format!(
                                "`{what}` `{}` must be [{n}, {}], got {:?}",
                                t.name(),
                                if d == 0 {
                                    "d".to_string()
                                } else {
                                    d.to_string()
                                },
                                t.shape()
                            ),
                        },
                    ));
                }
                Ok(Some(t.clone()))
            };
        let text_time = c.addition_time_embed_dim;
        let text_embeds = rows(added.text_embeds, "text_embeds", text_time.map(|_| 0))?;
        // Six ids (SDXL base) or five (the refiner's, with the aesthetic score).
        let time_ids = rows(added.time_ids, "time_ids", text_time.map(|_| 0))?;
        let timestep_cond = rows(added.timestep_cond, "timestep_cond", c.time_cond_proj_dim)?;
        let added_labels = added.class_labels;
        let added = match (&self.add_embedding, text_embeds, time_ids, text_time) {
            (Some(add), Some(te), Some(ids), Some(d)) => {
                // diffusers: add_time_proj(time_ids.flatten()) → [n, k·d], after text_embeds.
                let k = ids.shape()[1];
                let ids = ids.reshape(&[n * k])?;
                let (flip, shift) = (c.flip_sin_to_cos, c.freq_shift);
                let tp = ops::timestep_embedding(rec, &ids, d, flip, shift, 1.0, 10000.0)?;
                let tp = ops::cast(rec, &tp.reshape(&[n, k * d])?, act)?;
                let te = ops::cast(rec, &te, act)?;
                let cat = ops::concat_channels(rec, &te, &tp)?;
                if cat.shape()[1] != c.projection_class_embeddings_input_dim {
                    return Err(Error::shape(
                        OP,
                        format!(
                            "text_embeds {:?} and {k} time ids of {d} make {} values, add_embedding takes {}",
                            te.shape(),
                            cat.shape()[1],
                            c.projection_class_embeddings_input_dim
                        ),
                    ));
                }
                Some(add.forward(rec, &cat, None)?) // [n, 4·ch0]
            }
            _ => None,
        };
        // Class conditioning: the labels' rows of `class_embedding`, added with the above.
        let added = match (&self.class_embedding, added_labels) {
            (None, None) => added,
            (Some(table), Some(labels)) => {
                let (k, d) = (
                    table.len() / (4 * c.block_out_channels[0]),
                    4 * c.block_out_channels[0],
                );
                if labels.len() != n || labels.iter().any(|&l| l >= k) {
                    return Err(Error::shape(
                        OP,
                        format!("class_labels {labels:?} must be {n} classes below {k}"),
                    ));
                }
                let rows: Vec<f32> = labels
                    .iter()
                    .flat_map(|&l| table[l * d..(l + 1) * d].iter().copied())
                    .collect();
                let gpu = rec.gpu();
                let emb = Tensor::from_f32(gpu, &rows, &[n, d], act, "class embedding")?;
                Some(match added {
                    Some(a) => ops::add(rec, &emb, &a)?,
                    None => emb,
                })
            }
            (Some(_), None) => {
                return Err(Error::unsupported(
                    OP,
                    "this U-Net needs `class_labels` (class conditioning): none given",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::shape(
                    OP,
                    "`class_labels` given to a U-Net that takes none",
                ));
            }
        };
        let cond = match (&self.time_embedding.cond_proj, timestep_cond) {
            (Some(p), Some(tc)) => {
                let tc = ops::cast(rec, &tc, act)?;
                Some(p.forward(rec, &tc)?) // [n, ch0]
            }
            _ => None,
        };
        // The keys and values are kept in the U-Net's activation dtype.
        let context = &ops::cast(rec, context, act)?;
        let transformers = self
            .down_blocks
            .iter()
            .flat_map(|b| &b.attentions)
            .chain(&self.mid_block.attentions)
            .chain(self.up_blocks.iter().flat_map(|b| &b.attentions));
        Ok(UNetContext {
            batch: n,
            kv: transformers
                .map(|a| a.project_context(rec, context))
                .collect::<Result<_>>()?,
            added,
            cond,
        })
    }

    /// The noise prediction with the context already projected ([`UNet::project_context`]):
    /// what a recorded step plan runs, the timestep `t` f32 `[n]` changing in device memory
    /// between replays.
    pub fn forward_ctx(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        t: &Tensor,
        ctx: &UNetContext,
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
        if ctx.batch != n {
            return Err(Error::shape(
                OP,
                format!(
                    "the context is for {} images, the latents {:?}",
                    ctx.batch,
                    x.shape()
                ),
            ));
        }
        let mut kv = ctx.kv.iter();
        let mut next_kv = || {
            kv.next()
                .ok_or_else(|| Error::unsupported(OP, "the projected context ran out"))
        };
        if t.shape() != [n] {
            return Err(Error::shape(
                OP,
                format!("timestep `{}` {:?} must be [{n}]", t.name(), t.shape()),
            ));
        }
        // Activations in f16 for f16 weights where the device runs them: the latents and the
        // sinusoid (computed in f32, as diffusers does before `.to(dtype)`) are cast on entry,
        // the prediction back to f32 on exit.
        let act = self.activation_dtype(rec);
        let x = &ops::cast(rec, x, act)?;
        // Time embedding: sinusoid → linear → SiLU → linear; every resnet applies SiLU to it
        // before its own projection, so that SiLU is done once here.
        let ch0 = c.block_out_channels[0];
        let t =
            ops::timestep_embedding(rec, t, ch0, c.flip_sin_to_cos, c.freq_shift, 1.0, 10000.0)?;
        let mut t = ops::cast(rec, &t, act)?;
        // LCM: + cond_proj(timestep_cond); SDXL: + add_embedding(text_embeds, time ids) after
        // the MLP (both projected once per request, in `ctx`).
        if let Some(cond) = &ctx.cond {
            t = ops::add(rec, &t, cond)?;
        }
        let temb = self.time_embedding.forward(rec, &t, ctx.added.as_ref())?;
        let temb = ops::unary(rec, &temb, Unary::Silu, 1.0, 0.0)?; // [n, 4·ch0]

        let mut x = self.conv_in.forward(rec, x, None)?;
        let mut skips = vec![x.clone()];
        for b in &self.down_blocks {
            for (j, r) in b.resnets.iter().enumerate() {
                x = r.forward(rec, &x, Some(&temb))?;
                if let Some(a) = b.attentions.get(j) {
                    x = a.forward_kv(rec, &x, next_kv()?)?;
                }
                skips.push(x.clone());
            }
            for d in &b.downsamplers {
                x = d.forward(rec, &x)?;
                skips.push(x.clone());
            }
        }
        // Mid block: resnet, then each transformer followed by its resnet.
        let mid = &self.mid_block;
        for (k, r) in mid.resnets.iter().enumerate() {
            if k > 0 {
                if let Some(a) = mid.attentions.get(k - 1) {
                    x = a.forward_kv(rec, &x, next_kv()?)?;
                }
            }
            x = r.forward(rec, &x, Some(&temb))?;
        }
        for b in &self.up_blocks {
            for (j, r) in b.resnets.iter().enumerate() {
                let skip = skips
                    .pop()
                    .ok_or_else(|| Error::unsupported(OP, "skip connections ran out"))?;
                x = ops::concat_channels(rec, &x, &skip)?;
                x = r.forward(rec, &x, Some(&temb))?;
                if let Some(a) = b.attentions.get(j) {
                    x = a.forward_kv(rec, &x, next_kv()?)?;
                }
            }
            for u in &b.upsamplers {
                // To the size of the skip connection the next block takes (2× unless the
                // latent size was odd somewhere on the way down).
                let next = skips
                    .last()
                    .ok_or_else(|| Error::unsupported(OP, "skip connections ran out"))?;
                x = u.forward_to(rec, &x, next.shape()[1], next.shape()[2])?;
            }
        }
        let x = self
            .conv_out
            .forward_normed(rec, &x, &self.conv_norm_out, true, None)?;
        ops::cast(rec, &x, DType::F32)
    }

    /// The dtype the U-Net keeps its activations in on this device
    /// ([`Gpu::activation_dtype`] of its weights').
    pub fn activation_dtype(&self, rec: &Recorder<'_>) -> DType {
        rec.gpu().activation_dtype(self.conv_in.weight.dtype())
    }
}
