//! The fused guidance + sampler update (`shaders/sampler_step.wgsl`):
//! `ε = ε_u + s·(ε_c − ε_u)`, `x' = a·x + b·ε + c·noise + d·hist`.

use super::{push, require_f32, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{Access, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// Mirrors `Params` in `shaders/sampler_step.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SamplerStepParams {
    pub n: u32,
    pub guidance: u32,
    pub has_noise: u32,
    pub has_hist: u32,
    pub write_eps: u32,
    pub x_off: u32,
    pub eps_off: u32,
    pub noise_off: u32,
    pub hist_off: u32,
    pub y_off: u32,
    pub eps_out_off: u32,
    pub _pad0: u32,
    pub scale: f32,
    pub a: f32,
    pub b: f32,
    pub c: f32,
    pub d: f32,
    pub _pad1: [u32; 3],
}

/// Coefficients of one update `x' = a·x + b·ε + c·noise + d·hist`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerStep {
    /// Guidance scale `s`; `None` means the model ran without an unconditional half.
    pub guidance: Option<f32>,
    pub a: f32,
    pub b: f32,
    pub c: f32,
    pub d: f32,
}

fn key() -> KernelKey {
    KernelKey {
        shader: "sampler_step.wgsl",
        entry: "main",
        defines: vec![],
        overrides: vec![("WG", 256)],
        bindings: vec![
            Access::Read,
            Access::Read,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::ReadWrite,
        ],
        params_size: std::mem::size_of::<SamplerStepParams>() as u64,
    }
}

pub(crate) fn kernel_keys() -> Vec<KernelKey> {
    vec![key()]
}

/// `Σ cᵢ · tᵢ` over tensors with the same number of elements (any shapes; the result has the
/// first tensor's shape). Four terms per dispatch of the sampler-step kernel; longer sums
/// chain.
pub fn lincomb(rec: &mut Recorder<'_>, terms: &[(f32, &Tensor)]) -> Result<Tensor> {
    const OP: &str = "lincomb";
    let Some(&(c0, t0)) = terms.first() else {
        return Err(Error::shape(OP, "no terms"));
    };
    if let Some((_, t)) = terms.iter().find(|(_, t)| t.numel() != t0.numel()) {
        return Err(Error::shape(
            OP,
            format!(
                "`{}` {:?} and `{}` {:?} differ in size",
                t0.name(),
                t0.shape(),
                t.name(),
                t.shape()
            ),
        ));
    }
    let (mut acc, mut a) = (t0.clone(), c0);
    let mut rest = &terms[1..];
    loop {
        let take = rest.len().min(3);
        let [b, c, d] = [0, 1, 2].map(|i| rest.get(i).map_or(0.0, |(k, _)| *k));
        let pick = |i: usize| rest.get(i).map(|(_, t)| t.reshape(t0.shape())).transpose();
        let (eps, noise, hist) = (pick(0)?, pick(1)?, pick(2)?);
        let step = SamplerStep {
            guidance: None,
            a,
            b,
            c,
            d,
        };
        let (y, _) = sampler_step(
            rec,
            &acc,
            eps.as_ref().unwrap_or(&acc),
            noise.as_ref(),
            hist.as_ref(),
            step,
            false,
        )?;
        rest = &rest[take..];
        if rest.is_empty() {
            return Ok(y);
        }
        (acc, a) = (y, 1.0);
    }
}

/// One sampler update. `x`: f32 latents; `eps`: the model output, `[2·batch, ..]` with the
/// unconditional half first when `step.guidance` is set, else `x`'s shape; `noise` and `hist`
/// as `x` (required when `c` / `d` are non-zero). Returns `(x', guided ε)` — the second only
/// when `want_eps`.
pub fn sampler_step(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    eps: &Tensor,
    noise: Option<&Tensor>,
    hist: Option<&Tensor>,
    step: SamplerStep,
    want_eps: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    const OP: &str = "sampler_step";
    require_f32(OP, "x", x)?;
    require_f32(OP, "eps", eps)?;
    let n = x.numel();
    let eps_n = if step.guidance.is_some() { 2 * n } else { n };
    if eps.numel() != eps_n {
        return Err(Error::shape(
            OP,
            format!(
                "eps `{}` {:?} must hold {eps_n} values for latents {:?} (guidance {:?})",
                eps.name(),
                eps.shape(),
                x.shape(),
                step.guidance
            ),
        ));
    }
    for (name, t, coef) in [("noise", noise, step.c), ("hist", hist, step.d)] {
        match t {
            Some(t) => {
                require_f32(OP, name, t)?;
                if t.numel() != n {
                    return Err(Error::shape(
                        OP,
                        format!(
                            "{name} `{}` {:?} must match x {:?}",
                            t.name(),
                            t.shape(),
                            x.shape()
                        ),
                    ));
                }
            }
            None if coef != 0.0 => {
                return Err(Error::shape(
                    OP,
                    format!("coefficient of {name} is {coef} but no {name} tensor was given"),
                ));
            }
            None => {}
        }
    }
    let gpu = rec.gpu();
    let y = Tensor::empty_in(rec, x.shape(), DType::F32, "sampler_step.x_out")?;
    let eps_out = if want_eps {
        Tensor::empty_in(rec, x.shape(), DType::F32, "sampler_step.eps_out")?
    } else {
        // A scratch word: the kernel does not write it, but the layout needs a binding.
        Tensor::empty_in(rec, &[1], DType::F32, "sampler_step.unused")?
    };
    let xb = x.bind(gpu, OP)?;
    let eb = eps.bind(gpu, OP)?;
    let nb = noise.unwrap_or(x).bind(gpu, OP)?;
    let hb = hist.unwrap_or(x).bind(gpu, OP)?;
    let yb = y.bind(gpu, OP)?;
    let ob = eps_out.bind(gpu, OP)?;
    let params = SamplerStepParams {
        n: u32_of(OP, "elements", n)?,
        guidance: step.guidance.is_some() as u32,
        has_noise: noise.is_some() as u32,
        has_hist: hist.is_some() as u32,
        write_eps: want_eps as u32,
        x_off: xb.elem_offset,
        eps_off: eb.elem_offset,
        noise_off: nb.elem_offset,
        hist_off: hb.elem_offset,
        y_off: yb.elem_offset,
        eps_out_off: ob.elem_offset,
        scale: step.guidance.unwrap_or(1.0),
        a: step.a,
        b: step.b,
        c: step.c,
        d: step.d,
        ..Default::default()
    };
    let grid = gpu.grid(OP, n.div_ceil(256) as u64)?;
    push(
        rec,
        key(),
        &params,
        vec![xb.range, eb.range, nb.range, hb.range, yb.range, ob.range],
        grid,
    )?;
    Ok((y, want_eps.then_some(eps_out)))
}
