//! Building blocks shared by the U-Net and the VAE (diffusers `resnet.py`,
//! `attention_processor.py`, `upsampling.py`), channels-last.

use super::{LayerNorm, Linear, Loader};
use crate::error::Result;
use crate::gpu::Recorder;
use crate::ops::{self, AttentionOptions, Conv2dOptions};
use crate::tensor::Tensor;
use crate::weights::Relayout;

/// A `Conv2d` with bias: weight `[kh, kw, in, out]` for the implicit-GEMM kernel.
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub opts: Conv2dOptions,
}

impl Conv2d {
    /// Loads `weight` (`[cout, cin, k, k]` in the file) and `bias` of `vb`'s module.
    pub fn load(
        vb: &Loader<'_>,
        cin: usize,
        cout: usize,
        k: usize,
        opts: Conv2dOptions,
    ) -> Result<Self> {
        let layout = if super::packs_panels(vb, cout) {
            Relayout::ConvToHwioPanels
        } else {
            Relayout::ConvToHwio
        };
        let weight = vb.upload("weight", &[cout, cin, k, k], layout, vb.dtype())?;
        let bias = vb.upload("bias", &[cout], Relayout::None, super::dtype_of(&weight))?;
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

    /// `conv(silu(norm(x))) + residual` (`silu` optional): on GPUs the conv normalises x as
    /// it reads it ([`ops::conv2d_group_norm`]), elsewhere a norm pass comes first.
    pub fn forward_normed(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        norm: &GroupNorm,
        silu: bool,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let n = ops::InputNorm {
            groups: norm.groups,
            gamma: &norm.weight,
            beta: &norm.bias,
            eps: norm.eps,
            silu,
        };
        ops::conv2d_group_norm(
            rec,
            x,
            n,
            &self.weight,
            Some(&self.bias),
            residual,
            self.opts,
        )
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
    pub fn load(vb: &Loader<'_>, c: usize, groups: usize, eps: f32) -> Result<Self> {
        let (weight, bias) = vb.affine(c)?;
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
    pub fn load(
        vb: &Loader<'_>,
        cin: usize,
        cout: usize,
        groups: usize,
        eps: f32,
        temb_channels: Option<usize>,
    ) -> Result<Self> {
        let same = Conv2dOptions::new(1, 1);
        Ok(Self {
            norm1: vb.pp("norm1").group_norm(cin, groups, eps)?,
            conv1: vb.pp("conv1").conv(cin, cout, 3, same)?,
            time_emb_proj: temb_channels
                .map(|t| vb.pp("time_emb_proj").linear(t, cout, true))
                .transpose()?,
            norm2: vb.pp("norm2").group_norm(cout, groups, eps)?,
            conv2: vb.pp("conv2").conv(cout, cout, 3, same)?,
            conv_shortcut: (cin != cout)
                .then(|| {
                    vb.pp("conv_shortcut")
                        .conv(cin, cout, 1, Conv2dOptions::new(1, 0))
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
        // The time embedding's projection [n, cout] is added to every pixel of its image in
        // conv1's epilogue.
        let t = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(t)) => Some(proj.forward(rec, t)?),
            _ => None,
        };
        // conv1(silu(norm1(x))) + temb, then conv2(silu(norm2(h))) + shortcut; each norm is
        // read in place by its conv where the device allows (Conv2d::forward_normed).
        let h = self
            .conv1
            .forward_normed(rec, x, &self.norm1, true, t.as_ref())?; // [n, h, w, cout]
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(rec, x, None)?,
            None => x.clone(),
        };
        self.conv2
            .forward_normed(rec, &h, &self.norm2, true, Some(&shortcut))
    }
}

/// diffusers `Attention` (no group norm): `to_out(attn(to_q(x), to_k(ctx), to_v(ctx)))` with
/// `ctx = x` for self-attention. The U-Net's projections have no q/k/v bias, the VAE's do.
pub struct Attention {
    pub qkv: QkvProjection,
    pub to_out: Linear,
    pub heads: usize,
    /// Mask keys after each query (CLIP's text encoder).
    pub causal: bool,
}

/// An attention layer's `to_q`, `to_k`, `to_v`.
pub enum QkvProjection {
    /// Self-attention: the three read the same input, so they are fused at load time into
    /// one weight `[c, 3c]` (columns `to_q | to_k | to_v`, biases likewise) — one GEMM, and
    /// the attention kernel reads q, k and v from its rows in place.
    SelfFused(Linear),
    /// Cross-attention: keys and values project the context (once per request, see
    /// [`Attention::project_kv`]).
    Cross(Box<CrossProjection>),
}

/// A cross-attention layer's projections, as the checkpoint names them.
pub struct CrossProjection {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
}

impl Attention {
    /// A self-attention layer of width `c`.
    pub fn load_self(vb: &Loader<'_>, c: usize, heads: usize, qkv_bias: bool) -> Result<Self> {
        let out = vb.pp("to_out").pp(0);
        Self::load_self_named(vb, ["to_q", "to_k", "to_v"], &out, c, heads, qkv_bias)
    }

    /// A self-attention layer whose projections the checkpoint names `qkv` (under `vb`) and
    /// `out` (transformers' CLIP: `q_proj`, `k_proj`, `v_proj`, `out_proj`).
    pub fn load_self_named(
        vb: &Loader<'_>,
        qkv: [&str; 3],
        out: &Loader<'_>,
        c: usize,
        heads: usize,
        qkv_bias: bool,
    ) -> Result<Self> {
        Ok(Self {
            qkv: QkvProjection::SelfFused(Linear::load_fused(vb, &qkv, c, c, qkv_bias)?),
            to_out: out.linear(c, c, true)?,
            heads,
            causal: false,
        })
    }

    /// A cross-attention layer: queries of width `c`, a context of width `kv_dim`.
    pub fn load_cross(vb: &Loader<'_>, c: usize, kv_dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            qkv: QkvProjection::Cross(Box::new(CrossProjection {
                to_q: vb.pp("to_q").linear(c, c, false)?,
                to_k: vb.pp("to_k").linear(kv_dim, c, false)?,
                to_v: vb.pp("to_v").linear(kv_dim, c, false)?,
            })),
            to_out: vb.pp("to_out").pp(0).linear(c, c, true)?,
            heads,
            causal: false,
        })
    }

    fn options(&self) -> AttentionOptions {
        AttentionOptions {
            heads: self.heads,
            causal: self.causal,
            scale: None,
        }
    }

    /// Self-attention of `norm(x)` (`x` `[b, n, c]`; no norm: of `x`); `residual` (as `x`) is
    /// added in `to_out`'s epilogue.
    pub fn forward(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        norm: Option<&LayerNorm>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let a = match &self.qkv {
            QkvProjection::SelfFused(qkv) if product_fits_binding(rec, x, &qkv.weight) => {
                let qkv = qkv.forward_norm(rec, x, norm)?; // [b, n, 3c]
                ops::attention_qkv(rec, &qkv, self.options())?
            }
            QkvProjection::SelfFused(qkv) => {
                // The fused product would exceed a storage binding: q, k and v each from
                // their columns of the fused weight.
                let xn = match norm {
                    Some(n) => n.forward(rec, x)?,
                    None => x.clone(),
                };
                let c = qkv.weight.shape()[1] / 3;
                let (w, bias) = (&qkv.weight, qkv.bias.as_ref());
                let (q, k, v) = (
                    ops::linear_columns(rec, &xn, w, bias, 0..c)?,
                    ops::linear_columns(rec, &xn, w, bias, c..2 * c)?,
                    ops::linear_columns(rec, &xn, w, bias, 2 * c..3 * c)?,
                ); // [b, n, c] each
                ops::attention(rec, &q, &k, &v, self.options())?
            }
            QkvProjection::Cross(_) => {
                return Err(crate::Error::unsupported(
                    "attention",
                    "a cross-attention layer attends to its context (`forward_kv`)",
                ));
            }
        }; // [b, n, c]
        self.to_out.forward_res(rec, &a, residual)
    }

    /// `to_k(context)`, `to_v(context)` of a cross-attention layer: `[b, m, c]` each.
    pub fn project_kv(&self, rec: &mut Recorder<'_>, context: &Tensor) -> Result<(Tensor, Tensor)> {
        match &self.qkv {
            QkvProjection::Cross(p) => {
                Ok((p.to_k.forward(rec, context)?, p.to_v.forward(rec, context)?))
            }
            QkvProjection::SelfFused(_) => Err(crate::Error::unsupported(
                "attention",
                "a self-attention layer has no context to project",
            )),
        }
    }

    /// Cross-attention of `norm(x)` (`x` `[b, n, c]`) to keys and values already projected
    /// (`project_kv`): a context that does not change between calls is projected once.
    pub fn forward_kv(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        norm: Option<&LayerNorm>,
        k: &Tensor,
        v: &Tensor,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let QkvProjection::Cross(p) = &self.qkv else {
            return Err(crate::Error::unsupported(
                "attention",
                "keys and values given to a self-attention layer",
            ));
        };
        let q = p.to_q.forward_norm(rec, x, norm)?;
        let a = ops::attention(rec, &q, k, v, self.options())?;
        self.to_out.forward_res(rec, &a, residual)
    }
}

/// Whether `x · w` (f32) fits one storage binding of the device (with room for the
/// window's alignment).
fn product_fits_binding(rec: &Recorder<'_>, x: &Tensor, w: &Tensor) -> bool {
    let rows = x.numel() / x.shape().last().copied().unwrap_or(1).max(1);
    ops::fits_binding(rec, 4 * (rows * w.shape()[1]) as u64)
}

/// The VAE's mid-block attention (diffusers `Attention` with group norm and a residual):
/// `x + attn(gn(x))` over the h·w positions.
pub struct SpatialSelfAttention {
    pub group_norm: GroupNorm,
    pub attn: Attention,
}

impl SpatialSelfAttention {
    pub fn load(vb: &Loader<'_>, c: usize, heads: usize, groups: usize, eps: f32) -> Result<Self> {
        Ok(Self {
            group_norm: vb.pp("group_norm").group_norm(c, groups, eps)?,
            attn: Attention::load_self(vb, c, heads, true)?,
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
        // `x +` in to_out's epilogue.
        let o = self
            .attn
            .forward(rec, &y, None, Some(&x.reshape(&[n, h * w, c])?))?;
        o.reshape(&[n, h, w, c])
    }
}

/// diffusers `Downsample2D` with a conv (stride 2).
pub struct Downsample2D {
    pub conv: Conv2d,
}

impl Downsample2D {
    /// Loads `conv` (3×3, `c` → `c`, stride 2, padding as `opts` says).
    pub fn load(vb: &Loader<'_>, c: usize, opts: Conv2dOptions) -> Result<Self> {
        Ok(Self {
            conv: vb.pp("conv").conv(c, c, 3, opts)?,
        })
    }

    pub fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(rec, x, None)
    }
}

/// diffusers `Upsample2D` with a conv: nearest 2× then 3×3 conv.
pub struct Upsample2D {
    pub conv: Conv2d,
}

impl Upsample2D {
    /// Loads `conv` (3×3, `c` → `c`).
    pub fn load(vb: &Loader<'_>, c: usize) -> Result<Self> {
        Ok(Self {
            conv: vb.pp("conv").conv(c, c, 3, Conv2dOptions::new(1, 1))?,
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
