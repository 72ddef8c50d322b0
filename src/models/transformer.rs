//! diffusers `Transformer2DModel` as the SD U-Net uses it: GroupNorm, `proj_in` (1×1 conv or
//! linear), `transformer_blocks` (`BasicTransformerBlock`: self-attention, cross-attention,
//! GEGLU feed-forward, each pre-LayerNorm with a residual), `proj_out`, residual.
//! Channels-last: no permutes.

use super::blocks::{Attention, GroupNorm};
use super::unet::UNetConfig;
use super::{LayerNorm, Linear, Loader};
use crate::error::{Error, Result};
use crate::gpu::Recorder;
use crate::ops::{self, Conv2dOptions};
use crate::tensor::Tensor;

/// diffusers `FeedForward` with GEGLU: `net.0.proj` (`c` → 8c, value and gate), the GEGLU
/// gate (applied as `net.2` reads its input, see `ops::linear_geglu`), `net.2` (4c → c).
pub struct FeedForward {
    /// `ff.net.0.proj`.
    pub net_0_proj: Linear,
    /// `ff.net.2`.
    pub net_2: Linear,
}

/// diffusers `BasicTransformerBlock`.
pub struct BasicTransformerBlock {
    pub norm1: LayerNorm,
    /// Self-attention, or (`only_cross_attention`) attention to the context.
    pub attn1: Attention,
    pub only_cross_attention: bool,
    pub norm2: LayerNorm,
    pub attn2: Attention,
    pub norm3: LayerNorm,
    pub ff: FeedForward,
}

/// diffusers `Transformer2DModel`.
pub struct Transformer2D {
    pub norm: GroupNorm,
    pub proj_in: Projection,
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    pub proj_out: Projection,
}

/// SD 1.x projects with 1×1 convs, SD 2.x with linears; on channels-last data both are the
/// same matmul, only the stored weight shape differs.
pub struct Projection(Linear);

impl Projection {
    fn load(vb: &Loader<'_>, c: usize, linear: bool) -> Result<Self> {
        if linear {
            return Ok(Self(vb.linear(c, c, true)?));
        }
        let conv = vb.conv(c, c, 1, Conv2dOptions::new(1, 0))?;
        // [1, 1, c, c] (kh, kw, in, out) is the linear weight [in, out].
        Ok(Self(Linear {
            weight: conv.weight.reshape(&[c, c])?,
            bias: Some(conv.bias),
        }))
    }
}

impl BasicTransformerBlock {
    fn load(
        vb: &Loader<'_>,
        c: usize,
        heads: usize,
        cross_dim: usize,
        only_cross: bool,
    ) -> Result<Self> {
        let ff = vb.pp("ff").pp("net");
        Ok(Self {
            norm1: vb.pp("norm1").layer_norm(c, 1e-5)?,
            attn1: if only_cross {
                Attention::load_cross(&vb.pp("attn1"), c, cross_dim, heads)?
            } else {
                Attention::load_self(&vb.pp("attn1"), c, heads, false)?
            },
            only_cross_attention: only_cross,
            norm2: vb.pp("norm2").layer_norm(c, 1e-5)?,
            attn2: Attention::load_cross(&vb.pp("attn2"), c, cross_dim, heads)?,
            norm3: vb.pp("norm3").layer_norm(c, 1e-5)?,
            ff: FeedForward {
                net_0_proj: ff.pp(0).pp("proj").linear(c, 8 * c, true)?,
                net_2: ff.pp(2).linear(4 * c, c, true)?,
            },
        })
    }

    /// `y`: `[n, hw, c]`; `kv`: the context's keys and values for `attn1` (with
    /// `only_cross_attention`) then `attn2` (`project_kv`).
    fn forward(
        &self,
        rec: &mut Recorder<'_>,
        y: &Tensor,
        kv: &[(Tensor, Tensor)],
    ) -> Result<Tensor> {
        // Each residual add is fused into the epilogue of the layer before it; each norm into
        // the projection after it where the device's GEMM can (`Linear::forward_norm`).
        let (y, kv) = match (self.only_cross_attention, kv) {
            (true, [k1, k2]) => (
                self.attn1
                    .forward_kv(rec, y, Some(&self.norm1), &k1.0, &k1.1, Some(y))?,
                k2,
            ),
            (false, [k2]) => (self.attn1.forward(rec, y, Some(&self.norm1), Some(y))?, k2),
            _ => {
                return Err(Error::shape(
                    "transformer",
                    format!("{} projected contexts for one block", kv.len()),
                ));
            }
        };
        let y = self
            .attn2
            .forward_kv(rec, &y, Some(&self.norm2), &kv.0, &kv.1, Some(&y))?;
        let f = self
            .ff
            .net_0_proj
            .forward_norm(rec, &y, Some(&self.norm3))?; // [n, hw, 8c]: value | gate
        // net_2(geglu(f)) + y: the GEGLU is applied as net_2 reads f ([n, hw, 4c] never stored).
        let w2 = &self.ff.net_2;
        ops::linear_geglu(rec, &f, &w2.weight, w2.bias.as_ref(), Some(&y)) // [n, hw, c]
    }
}

impl Transformer2D {
    /// `depth` transformer blocks (SD 1.x / 2.x: 1; SDXL: up to 10).
    pub fn load(
        vb: &Loader<'_>,
        c: usize,
        heads: usize,
        depth: usize,
        cfg: &UNetConfig,
        only_cross: bool,
    ) -> Result<Self> {
        let lin = cfg.use_linear_projection;
        let blocks = vb.pp("transformer_blocks");
        Ok(Self {
            norm: vb.pp("norm").group_norm(c, cfg.norm_num_groups, 1e-6)?,
            proj_in: Projection::load(&vb.pp("proj_in"), c, lin)?,
            transformer_blocks: (0..depth)
                .map(|k| {
                    let d = cfg.cross_attention_dim;
                    BasicTransformerBlock::load(&blocks.pp(k), c, heads, d, only_cross)
                })
                .collect::<Result<_>>()?,
            proj_out: Projection::load(&vb.pp("proj_out"), c, lin)?,
        })
    }

    /// `x`: `[n, h, w, c]`; `context`: `[n, seq, cross_attention_dim]`.
    pub fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let kv = self.project_context(rec, context)?;
        self.forward_kv(rec, x, &kv)
    }

    /// Each block's keys and values of `context` (`[n, seq, c]` each): its `attn1`'s (with
    /// `only_cross_attention`), then its `attn2`'s.
    pub fn project_context(
        &self,
        rec: &mut Recorder<'_>,
        context: &Tensor,
    ) -> Result<Vec<(Tensor, Tensor)>> {
        let mut kv = Vec::new();
        for b in &self.transformer_blocks {
            if b.only_cross_attention {
                kv.push(b.attn1.project_kv(rec, context)?);
            }
            kv.push(b.attn2.project_kv(rec, context)?);
        }
        Ok(kv)
    }

    /// [`Transformer2D::forward`] with the context already projected (`project_context`).
    pub fn forward_kv(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        kv: &[(Tensor, Tensor)],
    ) -> Result<Tensor> {
        let per = |b: &BasicTransformerBlock| 1 + usize::from(b.only_cross_attention);
        let want: usize = self.transformer_blocks.iter().map(per).sum();
        if kv.len() != want {
            return Err(Error::shape(
                "transformer",
                format!(
                    "{} projected contexts for {} blocks (taking {want})",
                    kv.len(),
                    self.transformer_blocks.len()
                ),
            ));
        }
        let &[n, h, wd, c] = x.shape() else {
            return Err(Error::shape(
                "transformer",
                format!("`{}` must be [n, h, w, c]", x.name()),
            ));
        };
        let y = self.norm.forward(rec, x, false)?.reshape(&[n, h * wd, c])?;
        let mut y = self.proj_in.0.forward(rec, &y)?; // [n, hw, c]
        let mut at = 0;
        for b in &self.transformer_blocks {
            y = b.forward(rec, &y, &kv[at..at + per(b)])?;
            at += per(b);
        }
        let y = self
            .proj_out
            .0
            .forward_res(rec, &y, Some(&x.reshape(&[n, h * wd, c])?))?;
        y.reshape(&[n, h, wd, c])
    }
}
