//! The networks of a latent diffusion model, executed from checkpoint weights with the
//! engine's ops. One struct per checkpoint module; field names follow the diffusers /
//! transformers keys, so a missing tensor's error names its full dotted path.

pub mod arch;
pub mod blocks;
pub mod clip;
pub mod inferred;
mod limits;
pub mod loader;
pub mod taesd;
pub mod transformer;
pub mod unet;
mod unet_flops;
pub mod vae;

use crate::error::{Error, Result};
use crate::gpu::Recorder;
use crate::ops;
use crate::tensor::Tensor;
use crate::weights::{Relayout, WeightDType};
pub use loader::Loader;

/// Whether a weight of `out` output columns (per fused part) loads panel-packed: on devices
/// running the subgroup GEMM core (CPU devices; measured on lavapipe, a `[154×768]·[768×3072]`
/// product whose weight rows are 12 KB apart ran 1.6–2.3× faster from contiguous panels),
/// when `out` is whole panels. Linears and convs alike.
pub(crate) fn packs_panels(vb: &Loader<'_>, out: usize) -> bool {
    vb.gpu().gemm_variant() == crate::gpu::GemmVariant::Subgroup && out % crate::tensor::PANEL == 0
}

/// A linear weight's layout: `[in, out]`, panel-packed where [`packs_panels`].
fn weight_layout(vb: &Loader<'_>, out_f: usize) -> Relayout {
    if packs_panels(vb, out_f) {
        Relayout::TransposePanels
    } else {
        Relayout::Transpose
    }
}

/// A `Linear` layer: weight stored `[in, out]` for matmul, bias in the weight's dtype.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Loads `weight` (`[out, in]` in the file) and, if `bias`, `bias` of `vb`'s module.
    pub fn load(vb: &Loader<'_>, in_f: usize, out_f: usize, bias: bool) -> Result<Self> {
        let weight = vb.upload(
            "weight",
            &[out_f, in_f],
            weight_layout(vb, out_f),
            vb.dtype(),
        )?;
        let bias_dt = dtype_of(&weight);
        let bias = bias
            .then(|| vb.upload("bias", &[out_f], Relayout::None, bias_dt))
            .transpose()?;
        Ok(Self { weight, bias })
    }

    /// The linears `modules` of `vb` (each `[out_f, in_f]`) fused into one `[in_f, n·out_f]`
    /// whose columns are theirs side by side, biases likewise: one GEMM computes all of them.
    pub fn load_fused(
        vb: &Loader<'_>,
        modules: &[&str],
        in_f: usize,
        out_f: usize,
        bias: bool,
    ) -> Result<Self> {
        let keys =
            |leaf: &str| -> Vec<String> { modules.iter().map(|m| vb.pp(m).key(leaf)).collect() };
        let label = |leaf: &str| vb.key(&format!("{}.{leaf}", modules.join("+")));
        let w = vb.weights();
        let weight = w.upload_columns(
            vb.gpu(),
            &keys("weight"),
            &vec![vec![out_f, in_f]; modules.len()],
            weight_layout(vb, out_f),
            vb.dtype(),
            &label("weight"),
        )?;
        let bias = bias
            .then(|| {
                w.upload_columns(
                    vb.gpu(),
                    &keys("bias"),
                    &vec![vec![out_f]; modules.len()],
                    Relayout::None,
                    dtype_of(&weight),
                    &label("bias"),
                )
            })
            .transpose()?;
        Ok(Self { weight, bias })
    }

    pub fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        ops::linear(rec, x, &self.weight, self.bias.as_ref())
    }

    /// `forward(norm(x))`, or `forward(x)` without a norm: on CPU devices the GEMM
    /// normalises as it reads (`ops::linear_layer_norm`).
    pub fn forward_norm(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        norm: Option<&LayerNorm>,
    ) -> Result<Tensor> {
        match norm {
            Some(n) => ops::linear_layer_norm(
                rec,
                x,
                (&n.weight, &n.bias, n.eps),
                &self.weight,
                self.bias.as_ref(),
            ),
            None => self.forward(rec, x),
        }
    }

    /// `forward(x) + residual`, the add fused into the GEMM's epilogue.
    pub fn forward_res(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        match residual {
            Some(r) => ops::linear_residual(rec, x, &self.weight, self.bias.as_ref(), r),
            None => self.forward(rec, x),
        }
    }
}

/// A `LayerNorm` (weights kept in f32: they are tiny and the kernel reads f32).
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f32,
}

/// The upload policy that gives a tensor the dtype of `t`: a bias must have its weight's
/// dtype (the matmul and conv kernels read both alike).
pub(crate) fn dtype_of(t: &Tensor) -> WeightDType {
    match t.dtype() {
        crate::DType::F16 => WeightDType::F16,
        crate::DType::F32 => WeightDType::F32,
    }
}

impl LayerNorm {
    pub fn load(vb: &Loader<'_>, c: usize, eps: f32) -> Result<Self> {
        let (weight, bias) = vb.affine(c)?;
        Ok(Self { weight, bias, eps })
    }

    pub fn forward(&self, rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(rec, x, &self.weight, &self.bias, self.eps)
    }
}

/// Reads a JSON config file into a value, naming the file on error.
pub(crate) fn read_json(path: &std::path::Path) -> Result<serde_json::Value> {
    let text = crate::files::read_config_text(path)?;
    serde_json::from_str(&text).map_err(|e| Error::ModelLayout {
        path: path.to_path_buf(),
        what: format!("invalid JSON: {e}"),
    })
}
