//! Elementwise ops: activations, add/mul with broadcast, GEGLU (`shaders/elementwise.wgsl`)
//! and the sinusoidal timestep embedding (`timestep_embedding.wgsl`); the thread layout of
//! the flat kernels ([`FlatLayout`]), shared with the data movement in [`super::movement`].

use super::{
    act_defines, push, require_act, require_f32, require_same_act, rows_per_binding, u32_of,
};
use crate::error::{Error, Result};
use crate::gpu::{Access, GemmVariant, KernelKey, Recorder};
use crate::tensor::{Bound, DType, Tensor};

/// Mirrors `Params` in `shaders/elementwise.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ElementwiseParams {
    pub n: u32,
    pub op: u32,
    pub x_off: u32,
    pub y_off: u32,
    pub z_off: u32,
    pub outer: u32,
    pub inner: u32,
    pub f: u32,
    pub alpha: f32,
    pub beta: f32,
    pub _pad: [u32; 2],
}

/// Mirrors `Params` in `shaders/timestep_embedding.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TimestepParams {
    pub batch: u32,
    pub dim: u32,
    pub flip: u32,
    pub t_off: u32,
    pub y_off: u32,
    pub _pad0: [u32; 3],
    pub shift: f32,
    pub scale: f32,
    pub log_max_period: f32,
    pub _pad1: u32,
}

/// `y = f(alpha·x + beta)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// `alpha·x + beta` alone.
    Affine,
    Silu,
    /// Exact (erf) GELU, `torch.nn.functional.gelu`.
    Gelu,
    /// CLIP's `x·sigmoid(1.702x)`.
    QuickGelu,
    /// `clamp(x, alpha, beta)` (no affine step); see [`clamp`].
    Clamp,
    /// `tanh(alpha·x + beta)` (TAESD's latent clamp), overflow-free for large inputs.
    Tanh,
}

/// `y = x ∘ z` with `z` broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Mul,
}

const WG: u32 = 256;

/// Threads per workgroup and elements per thread of the flat kernels (`elementwise.wgsl`'s
/// unary / binary / geglu, `concat.wgsl`): one element per thread in workgroups of 256 on
/// GPUs; on CPU devices (the ones that take the subgroup GEMM core) workgroups of 8 whose
/// threads loop over 64 elements each — llvmpipe runs a 256-thread workgroup as 32 subgroup
/// calls, and measured on Mesa 25 a looping 8-thread workgroup moved the same elements in a
/// third of the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlatLayout {
    pub wg: u32,
    pub per: u32,
}

const GPU_FLAT: FlatLayout = FlatLayout { wg: WG, per: 1 };
const CPU_FLAT: FlatLayout = FlatLayout { wg: 8, per: 64 };

pub(crate) fn flat_layout(gpu: &crate::Gpu) -> FlatLayout {
    match gpu.gemm_variant() {
        GemmVariant::Subgroup => CPU_FLAT,
        GemmVariant::Tiled => GPU_FLAT,
    }
}

impl FlatLayout {
    pub(crate) fn overrides(self) -> Vec<(&'static str, u32)> {
        vec![("WG", self.wg), ("PER", self.per)]
    }

    /// Workgroups for `n` elements.
    fn groups(self, n: usize) -> u64 {
        n.div_ceil((self.wg * self.per) as usize) as u64
    }
}

fn ew_key(entry: &'static str, layout: FlatLayout, act: DType) -> KernelKey {
    KernelKey {
        shader: "elementwise.wgsl",
        entry,
        defines: act_defines(act),
        overrides: layout.overrides(),
        bindings: vec![Access::Read, Access::Read, Access::ReadWrite],
        params_size: std::mem::size_of::<ElementwiseParams>() as u64,
    }
}

fn timestep_key() -> KernelKey {
    KernelKey {
        shader: "timestep_embedding.wgsl",
        entry: "main",
        defines: vec![],
        overrides: vec![("WG", 64)],
        bindings: vec![Access::Read, Access::ReadWrite],
        params_size: std::mem::size_of::<TimestepParams>() as u64,
    }
}

pub(crate) fn kernel_keys() -> Vec<KernelKey> {
    let mut v = vec![timestep_key()];
    for act in [DType::F32, DType::F16] {
        for layout in [GPU_FLAT, CPU_FLAT] {
            for entry in ["unary", "binary", "geglu"] {
                v.push(ew_key(entry, layout, act));
            }
        }
    }
    v.extend(super::movement::kernel_keys([GPU_FLAT, CPU_FLAT]));
    v.extend(super::winograd::kernel_keys([GPU_FLAT, CPU_FLAT]));
    v
}

/// The grid of a flat kernel over `n` elements and the layout it was sized for.
pub(crate) fn flat_grid(
    rec: &Recorder<'_>,
    op: &'static str,
    n: usize,
) -> Result<([u32; 3], FlatLayout)> {
    let layout = flat_layout(rec.gpu());
    Ok((rec.gpu().grid(op, layout.groups(n))?, layout))
}

/// Records a flat kernel over `x` → `y` (same element count), split into chunks that fit one
/// storage binding: `record(rec, x chunk, y chunk, len, grid, layout)` pushes one dispatch.
pub(crate) fn flat_chunks(
    rec: &mut Recorder<'_>,
    op: &'static str,
    x: &Tensor,
    y: &Tensor,
    mut record: impl FnMut(&mut Recorder<'_>, Bound, Bound, usize, [u32; 3], FlatLayout) -> Result<()>,
) -> Result<()> {
    let n = x.numel();
    let (x1, y1) = (x.reshape(&[n])?, y.reshape(&[n])?);
    let chunk = rows_per_binding(rec, 4);
    let mut i0 = 0;
    while i0 < n {
        let len = chunk.min(n - i0);
        let gpu = rec.gpu();
        let xb = x1.narrow0(i0, len)?.bind(gpu, op)?;
        let yb = y1.narrow0(i0, len)?.bind(gpu, op)?;
        let (grid, layout) = flat_grid(rec, op, len)?;
        record(rec, xb, yb, len, grid, layout)?;
        i0 += len;
    }
    Ok(())
}

/// `f(alpha·x + beta)` elementwise; any shape. Split into several dispatches when `x`
/// exceeds one storage binding.
pub fn unary(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    f: Unary,
    alpha: f32,
    beta: f32,
) -> Result<Tensor> {
    const OP: &str = "unary";
    let act = require_act(rec, OP, "x", x)?;
    let y = Tensor::empty_in(rec, x.shape(), act, "unary.out")?;
    flat_chunks(rec, OP, x, &y, |rec, xb, yb, len, grid, layout| {
        let params = ElementwiseParams {
            n: len as u32,
            op: f as u32,
            x_off: xb.elem_offset,
            y_off: yb.elem_offset,
            alpha,
            beta,
            ..Default::default()
        };
        push(
            rec,
            ew_key("unary", layout, act),
            &params,
            vec![xb.range.clone(), xb.range, yb.range],
            grid,
        )
    })?;
    Ok(y)
}

/// `torch.clamp(x, lo, hi)`.
pub fn clamp(rec: &mut Recorder<'_>, x: &Tensor, lo: f32, hi: f32) -> Result<Tensor> {
    if lo > hi || lo.is_nan() || hi.is_nan() {
        return Err(Error::unsupported(
            "clamp",
            format!("empty range [{lo}, {hi}] for `{}`", x.name()),
        ));
    }
    unary(rec, x, Unary::Clamp, lo, hi)
}

/// `x ∘ z` where `z`'s shape is `x`'s, or a suffix of it (`[c]` over `[.., c]`), or
/// `[n, c]` over `[n, .., c]` (per-image channel vectors such as the time embedding).
pub fn binary(rec: &mut Recorder<'_>, x: &Tensor, z: &Tensor, op: Binary) -> Result<Tensor> {
    const OP: &str = "binary";
    let act = require_act(rec, OP, "x", x)?;
    require_same_act(OP, "z", z, act)?;
    let (xs, zs) = (x.shape(), z.shape());
    let n = x.numel();
    // outer/inner of the broadcast formula j(i) = (i / outer)·inner + i % inner.
    let (outer, inner) = if xs == zs {
        (n, n)
    } else if zs.len() < xs.len() && xs.ends_with(zs) {
        (n, z.numel())
    } else if zs.len() == 2 && xs.len() > 2 && zs[0] == xs[0] && zs[1] == xs[xs.len() - 1] {
        (n / xs[0], zs[1])
    } else {
        return Err(Error::shape(
            OP,
            format!(
                "`{}` {:?} does not broadcast to `{}` {:?}",
                z.name(),
                zs,
                x.name(),
                xs
            ),
        ));
    };
    let y = Tensor::empty_in(rec, xs, act, "binary.out")?;
    if n == 0 {
        return Ok(y);
    }
    // Chunks hold whole periods of the broadcast, so z's window moves by whole rows.
    let (x1, y1) = (x.reshape(&[n])?, y.reshape(&[n])?);
    let period = if outer == n { inner } else { outer };
    let z_rows = z.reshape(&[z.numel() / inner, inner])?;
    let periods_per_chunk = (rows_per_binding(rec, 4) / period).max(1);
    if xs == zs {
        // Same shape: split x, z and y alike.
        let z1 = z.reshape(&[n])?;
        let chunk = rows_per_binding(rec, 4);
        let mut i0 = 0;
        while i0 < n {
            let len = chunk.min(n - i0);
            record_binary(
                rec,
                &x1.narrow0(i0, len)?,
                &z1.narrow0(i0, len)?,
                &y1.narrow0(i0, len)?,
                op,
                len,
                len,
            )?;
            i0 += len;
        }
    } else if outer == n {
        // z repeats every `inner` elements: whole repeats per chunk, all of z each time.
        let chunk = (periods_per_chunk * inner).min(n);
        let mut i0 = 0;
        while i0 < n {
            let len = chunk.min(n - i0);
            record_binary(
                rec,
                &x1.narrow0(i0, len)?,
                z,
                &y1.narrow0(i0, len)?,
                op,
                len,
                inner,
            )?;
            i0 += len;
        }
    } else {
        // Row r of z serves elements [r·outer, (r+1)·outer) of x.
        let rows = n / outer;
        let mut r0 = 0;
        while r0 < rows {
            let len = periods_per_chunk.min(rows - r0);
            record_binary(
                rec,
                &x1.narrow0(r0 * outer, len * outer)?,
                &z_rows.narrow0(r0, len)?,
                &y1.narrow0(r0 * outer, len * outer)?,
                op,
                outer,
                inner,
            )?;
            r0 += len;
        }
    }
    Ok(y)
}

fn record_binary(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    z: &Tensor,
    y: &Tensor,
    op: Binary,
    outer: usize,
    inner: usize,
) -> Result<()> {
    const OP: &str = "binary";
    let gpu = rec.gpu();
    let (xb, zb, yb) = (x.bind(gpu, OP)?, z.bind(gpu, OP)?, y.bind(gpu, OP)?);
    let n = x.numel();
    let params = ElementwiseParams {
        n: n as u32,
        op: op as u32,
        x_off: xb.elem_offset,
        y_off: yb.elem_offset,
        z_off: zb.elem_offset,
        outer: outer as u32,
        inner: inner as u32,
        ..Default::default()
    };
    let (grid, layout) = flat_grid(rec, OP, n)?;
    push(
        rec,
        ew_key("binary", layout, x.dtype()),
        &params,
        vec![xb.range, zb.range, yb.range],
        grid,
    )
}

/// `x + z` (see [`binary`] for the broadcasts).
pub fn add(rec: &mut Recorder<'_>, x: &Tensor, z: &Tensor) -> Result<Tensor> {
    binary(rec, x, z, Binary::Add)
}

/// `x · z` (see [`binary`] for the broadcasts).
pub fn mul(rec: &mut Recorder<'_>, x: &Tensor, z: &Tensor) -> Result<Tensor> {
    binary(rec, x, z, Binary::Mul)
}

/// diffusers' GEGLU after its projection: `x` `[.., 2f]` → `x[.., :f] · gelu(x[.., f:])`.
pub fn geglu(rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "geglu";
    let act = require_act(rec, OP, "x", x)?;
    let c = *x.shape().last().unwrap_or(&0);
    if c == 0 || c % 2 != 0 {
        return Err(Error::shape(
            OP,
            format!("last dim of `{}` {:?} must be even", x.name(), x.shape()),
        ));
    }
    let f = c / 2;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap_or(&mut 0) = f;
    let y = Tensor::empty_in(rec, &shape, act, "geglu.out")?;
    // Whole rows per dispatch, as many as one binding of the (wider) input holds.
    let rows = x.numel() / c;
    let (x2, y2) = (x.reshape(&[rows, c])?, y.reshape(&[rows, f])?);
    let chunk = rows_per_binding(rec, 4 * c as u64);
    let mut r0 = 0;
    while r0 < rows {
        let len = chunk.min(rows - r0);
        let gpu = rec.gpu();
        let xb = x2.narrow0(r0, len)?.bind(gpu, OP)?;
        let yb = y2.narrow0(r0, len)?.bind(gpu, OP)?;
        let n = len * f;
        let params = ElementwiseParams {
            n: u32_of(OP, "elements", n)?,
            x_off: xb.elem_offset,
            y_off: yb.elem_offset,
            f: f as u32,
            ..Default::default()
        };
        let (grid, layout) = flat_grid(rec, OP, n)?;
        push(
            rec,
            ew_key("geglu", layout, act),
            &params,
            vec![xb.range.clone(), xb.range, yb.range],
            grid,
        )?;
        r0 += len;
    }
    Ok(y)
}

/// diffusers' `get_timestep_embedding(t, dim, flip_sin_to_cos, downscale_freq_shift,
/// scale, max_period)` for `t` f32 `[batch]`; returns f32 `[batch, dim]`.
pub fn timestep_embedding(
    rec: &mut Recorder<'_>,
    t: &Tensor,
    dim: usize,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f32,
    scale: f32,
    max_period: f32,
) -> Result<Tensor> {
    const OP: &str = "timestep_embedding";
    require_f32(OP, "t", t)?;
    if t.rank() != 1 || dim < 2 || (dim / 2) as f32 == downscale_freq_shift {
        return Err(Error::shape(
            OP,
            format!(
                "t `{}` must be [batch] and dim ≥ 2 with dim/2 ≠ shift; got {:?}, dim {dim}, shift {downscale_freq_shift}",
                t.name(),
                t.shape()
            ),
        ));
    }
    let b = t.shape()[0];
    let y = Tensor::empty_in(rec, &[b, dim], DType::F32, "timestep_embedding.out")?;
    let gpu = rec.gpu();
    let (tb, yb) = (t.bind(gpu, OP)?, y.bind(gpu, OP)?);
    let params = TimestepParams {
        batch: b as u32,
        dim: dim as u32,
        flip: flip_sin_to_cos as u32,
        t_off: tb.elem_offset,
        y_off: yb.elem_offset,
        shift: downscale_freq_shift,
        scale,
        log_max_period: max_period.ln(),
        ..Default::default()
    };
    let grid = gpu.grid(OP, (b * dim).div_ceil(64) as u64)?;
    push(rec, timestep_key(), &params, vec![tb.range, yb.range], grid)?;
    Ok(y)
}
