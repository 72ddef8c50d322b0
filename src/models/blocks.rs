//! Building blocks shared by the U-Net and the VAE (diffusers `resnet.py`,
//! `attention_processor.py`, `upsampling.py`), channels-last.

use super::Linear;
use crate::error::Result;
use crate::gpu::{Gpu, Recorder};
use crate::ops::{self, AttentionOptions, Conv2dOptions};
use crate::tensor::Tensor;
use crate::weights::{Relayout, WeightDType, Weights};

/// A `Conv2d` with bias: weight `[kh, kw, in, out]` for the implicit-GEMM kernel.
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub opts: Conv2dOptions,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &Weights,
        gpu: &Gpu,
        prefix: &str,
        cin: usize,
        cout: usize,
        k: usize,
        opts: Conv2dOptions,
        dt: WeightDType,
    ) -> Result<Self> {
        let weight = w.upload(
            gpu,
            &format!("{prefix}.weight"),
            &[cout, cin, k, k],
            Relayout::ConvToHwio,
            dt,
        )?;
        let bias_dt = super::dtype_of(&weight);
        let bias = w.upload(
            gpu,
            &format!("{prefix}.bias"),
            &[cout],
            Relayout::None,
            bias_dt,
        )?;
        Ok(Self { weight, bias, opts })
    }

    /// `conv(x) + residual`.
    pub fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        ops::conv2d(rec, x, &self.weight, Some(&self.bias), residual, self.opts)
    }
}

/// `GroupNorm` (affine, f32 weights), optionally followed by SiLU.
pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub groups: usize,
    pub eps: f32,
}

impl GroupNorm {
    pub fn load(
        w: &Weights,
        gpu: &Gpu,
        prefix: &str,
        c: usize,
        groups: usize,
        eps: f32,
    ) -> Result<Self> {
        let (weight, bias) = super::load_affine(w, gpu, prefix, c)?;
        Ok(Self {
            weight,
            bias,
            groups,
            eps,
        })
    }

    pub fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor, silu: bool) -> Result<Tensor> {
        ops::group_norm(
            rec,
            x,
            self.groups,
            &self.weight,
            &self.bias,
            self.eps,
            silu,
        )
    }
}

/// diffusers `ResnetBlock2D` (time embedding optional, output_scale_factor 1):
/// `conv2(silu(norm2(conv1(silu(norm1(x))) + temb))) + shortcut(x)`.
pub struct ResnetBlock2D {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub time_emb_proj: Option<Linear>,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    pub conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    /// `temb_channels`: the time-embedding width for U-Net blocks, `None` for the VAE.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &Weights,
        gpu: &Gpu,
        prefix: &str,
        cin: usize,
        cout: usize,
        groups: usize,
        eps: f32,
        temb_channels: Option<usize>,
        dt: WeightDType,
    ) -> Result<Self> {
        let same = Conv2dOptions::new(1, 1);
        Ok(Self {
            norm1: GroupNorm::load(w, gpu, &format!("{prefix}.norm1"), cin, groups, eps)?,
            conv1: Conv2d::load(w, gpu, &format!("{prefix}.conv1"), cin, cout, 3, same, dt)?,
            time_emb_proj: temb_channels
                .map(|t| {
                    Linear::load(
                        w,
                        gpu,
                        &format!("{prefix}.time_emb_proj"),
                        t,
                        cout,
                        true,
                        dt,
                    )
                })
                .transpose()?,
            norm2: GroupNorm::load(w, gpu, &format!("{prefix}.norm2"), cout, groups, eps)?,
            conv2: Conv2d::load(w, gpu, &format!("{prefix}.conv2"), cout, cout, 3, same, dt)?,
            conv_shortcut: (cin != cout)
                .then(|| {
                    Conv2d::load(
                        w,
                        gpu,
                        &format!("{prefix}.conv_shortcut"),
                        cin,
                        cout,
                        1,
                        Conv2dOptions::new(1, 0),
                        dt,
                    )
                })
                .transpose()?,
        })
    }

    /// `x`: `[n, h, w, cin]`; `temb`: `[n, temb_channels]` after the U-Net's activation.
    pub fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        temb: Option<&Tensor>,
    ) -> Result<Tensor> {
        let h = self.norm1.forward(rec, x, true)?;
        let mut h = self.conv1.forward(rec, &h, None)?;
        if let (Some(proj), Some(t)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(rec, t)?; // [n, cout], added per image and channel
            h = ops::add(rec, &h, &t)?;
        }
        let h = self.norm2.forward(rec, &h, true)?;
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(rec, x, None)?,
            None => x.clone(),
        };
        self.conv2.forward(rec, &h, Some(&shortcut))
    }
}

/// diffusers `Attention` (no group norm): `to_out(attn(to_q(x), to_k(ctx), to_v(ctx)))` with
/// `ctx = x` for self-attention. The U-Net's projections have no q/k/v bias, the VAE's do.
pub struct Attention {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
    pub heads: usize,
}

impl Attention {
    /// `c`: query width; `kv_dim`: context width (`c` for self-attention).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &Weights,
        gpu: &Gpu,
        prefix: &str,
        c: usize,
        kv_dim: usize,
        heads: usize,
        qkv_bias: bool,
        dt: WeightDType,
    ) -> Result<Self> {
        let lin = |n: &str, i, bias| Linear::load(w, gpu, &format!("{prefix}.{n}"), i, c, bias, dt);
        Ok(Self {
            to_q: lin("to_q", c, qkv_bias)?,
            to_k: lin("to_k", kv_dim, qkv_bias)?,
            to_v: lin("to_v", kv_dim, qkv_bias)?,
            to_out: lin("to_out.0", c, true)?,
            heads,
        })
    }

    /// `x`: `[b, n, c]`; `context`: `[b, m, kv_dim]` (self-attention when `None`).
    pub fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        context: Option<&Tensor>,
    ) -> Result<Tensor> {
        let kv = context.unwrap_or(x);
        let q = self.to_q.forward(rec, x)?;
        let k = self.to_k.forward(rec, kv)?;
        let v = self.to_v.forward(rec, kv)?;
        let a = ops::attention(
            rec,
            &q,
            &k,
            &v,
            AttentionOptions {
                heads: self.heads,
                causal: false,
                scale: None,
            },
        )?;
        self.to_out.forward(rec, &a)
    }
}

/// The VAE's mid-block attention (diffusers `Attention` with group norm and a residual):
/// `x + attn(gn(x))` over the h·w positions.
pub struct SpatialSelfAttention {
    pub group_norm: GroupNorm,
    pub attn: Attention,
}

impl SpatialSelfAttention {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &Weights,
        gpu: &Gpu,
        prefix: &str,
        c: usize,
        heads: usize,
        groups: usize,
        eps: f32,
        dt: WeightDType,
    ) -> Result<Self> {
        Ok(Self {
            group_norm: GroupNorm::load(w, gpu, &format!("{prefix}.group_norm"), c, groups, eps)?,
            attn: Attention::load(w, gpu, prefix, c, c, heads, true, dt)?,
        })
    }

    pub fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        let &[n, h, w, c] = x.shape() else {
            return Err(crate::Error::shape(
                "attention block",
                format!("`{}` must be [n, h, w, c], got {:?}", x.name(), x.shape()),
            ));
        };
        let y = self
            .group_norm
            .forward(rec, x, false)?
            .reshape(&[n, h * w, c])?;
        let o = self.attn.forward(rec, &y, None)?;
        ops::add(rec, &o.reshape(&[n, h, w, c])?, x)
    }
}

/// diffusers `Upsample2D` with a conv: nearest 2× then 3×3 conv.
pub struct Upsample2D {
    pub conv: Conv2d,
}

impl Upsample2D {
    /// Loads `{prefix}.conv` (3×3, `c` → `c`).
    pub fn load(w: &Weights, gpu: &Gpu, prefix: &str, c: usize, dt: WeightDType) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(
                w,
                gpu,
                &format!("{prefix}.conv"),
                c,
                c,
                3,
                Conv2dOptions::new(1, 1),
                dt,
            )?,
        })
    }

    /// The conv reads `x` as nearest-upsampled (fused: no 4×-sized intermediate).
    pub fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        let c = &self.conv;
        ops::conv2d(rec, x, &c.weight, Some(&c.bias), None, c.opts.upsampled2x())
    }

    /// Nearest resize to `oh × ow` (diffusers' `upsample_size`, when a skip connection is not
    /// exactly twice as large), then the conv.
    pub fn forward_to(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        oh: usize,
        ow: usize,
    ) -> Result<Tensor> {
        if x.rank() == 4 && (2 * x.shape()[1], 2 * x.shape()[2]) == (oh, ow) {
            return self.forward(rec, x);
        }
        let up = ops::upsample_nearest(rec, x, oh, ow)?;
        self.conv.forward(rec, &up, None)
    }
}
