//! Elementwise and data-movement ops: activations, add/mul with broadcast, GEGLU
//! (`shaders/elementwise.wgsl`), nearest 2× upsample (`upsample.wgsl`), channel concat
//! (`concat.wgsl`) and the sinusoidal timestep embedding (`timestep_embedding.wgsl`).

use super::{push, require_f32, rows_per_binding, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{Access, GemmVariant, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

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

/// Mirrors `Params` in `shaders/upsample.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct UpsampleParams {
    pub full_h: u32,
    pub w: u32,
    pub c: u32,
    pub ow: u32,
    pub oy0: u32,
    pub iy0: u32,
    pub band_h: u32,
    pub total: u32,
    pub x_off: u32,
    pub y_off: u32,
    pub scale_h: f32,
    pub scale_w: f32,
}

/// Mirrors `Params` in `shaders/concat.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ConcatParams {
    pub rows: u32,
    pub ca: u32,
    pub cb: u32,
    pub total: u32,
    pub a_off: u32,
    pub b_off: u32,
    pub y_off: u32,
    pub _pad: u32,
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

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Rgba8Params {
    pub h: u32,
    pub w: u32,
    pub row: u32,
    pub swap: u32,
    pub x_off: u32,
    pub y_off: u32,
    pub _pad: [u32; 2],
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
    fn overrides(self) -> Vec<(&'static str, u32)> {
        vec![("WG", self.wg), ("PER", self.per)]
    }

    /// Workgroups for `n` elements.
    fn groups(self, n: usize) -> u64 {
        n.div_ceil((self.wg * self.per) as usize) as u64
    }
}

fn ew_key(entry: &'static str, layout: FlatLayout) -> KernelKey {
    KernelKey {
        shader: "elementwise.wgsl",
        entry,
        defines: vec![],
        overrides: layout.overrides(),
        bindings: vec![Access::Read, Access::Read, Access::ReadWrite],
        params_size: std::mem::size_of::<ElementwiseParams>() as u64,
    }
}

fn upsample_key() -> KernelKey {
    KernelKey {
        shader: "upsample.wgsl",
        entry: "main",
        defines: vec![],
        overrides: vec![("WG", WG)],
        bindings: vec![Access::Read, Access::ReadWrite],
        params_size: std::mem::size_of::<UpsampleParams>() as u64,
    }
}

fn concat_key(layout: FlatLayout) -> KernelKey {
    KernelKey {
        shader: "concat.wgsl",
        entry: "main",
        defines: vec![],
        overrides: layout.overrides(),
        bindings: vec![Access::Read, Access::Read, Access::ReadWrite],
        params_size: std::mem::size_of::<ConcatParams>() as u64,
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

fn rgba8_key() -> KernelKey {
    KernelKey {
        shader: "to_rgba8.wgsl",
        entry: "main",
        defines: vec![],
        overrides: vec![("WG", 256)],
        bindings: vec![Access::Read, Access::ReadWrite],
        params_size: std::mem::size_of::<Rgba8Params>() as u64,
    }
}

/// Texels per padded row: `w` rounded up to 64 (256 bytes, wgpu's `COPY_BYTES_PER_ROW_ALIGNMENT`).
pub fn rgba8_row(w: usize) -> usize {
    w.div_ceil(64) * 64
}

/// An RGB image `[h, w, 3]` (f32, [0, 1]) → packed RGBA8 texels `[h, rgba8_row(w)]` (u32 bit
/// patterns in a buffer the tensor labels f32), ready for `copy_buffer_to_texture`; `swap_rb`
/// for BGRA8 targets.
pub fn to_rgba8(rec: &mut Recorder<'_>, x: &Tensor, swap_rb: bool) -> Result<Tensor> {
    const OP: &str = "to_rgba8";
    require_f32(OP, "x", x)?;
    let &[h, w, 3] = x.shape() else {
        return Err(Error::shape(
            OP,
            format!("`{}` must be [h, w, 3], got {:?}", x.name(), x.shape()),
        ));
    };
    let row = rgba8_row(w);
    let y = Tensor::empty_in(rec, &[h, row], DType::F32, "rgba8 texels")?;
    if h * w == 0 {
        return Ok(y);
    }
    let gpu = rec.gpu();
    let (xb, yb) = (x.bind(gpu, OP)?, y.bind(gpu, OP)?);
    let params = Rgba8Params {
        h: h as u32,
        w: w as u32,
        row: row as u32,
        swap: u32::from(swap_rb),
        x_off: xb.elem_offset,
        y_off: yb.elem_offset,
        ..Default::default()
    };
    let grid = gpu.grid(OP, (h * row).div_ceil(256) as u64)?;
    push(rec, rgba8_key(), &params, vec![xb.range, yb.range], grid)?;
    Ok(y)
}

pub(crate) fn kernel_keys() -> Vec<KernelKey> {
    let mut v = vec![rgba8_key(), upsample_key(), timestep_key()];
    for layout in [GPU_FLAT, CPU_FLAT] {
        for entry in ["unary", "binary", "geglu"] {
            v.push(ew_key(entry, layout));
        }
        v.push(concat_key(layout));
    }
    v
}

fn threads_grid(rec: &Recorder<'_>, op: &'static str, n: usize) -> Result<[u32; 3]> {
    rec.gpu().grid(op, n.div_ceil(WG as usize) as u64)
}

/// The grid of a flat kernel over `n` elements and the layout it was sized for.
fn flat_grid(rec: &Recorder<'_>, op: &'static str, n: usize) -> Result<([u32; 3], FlatLayout)> {
    let layout = flat_layout(rec.gpu());
    Ok((rec.gpu().grid(op, layout.groups(n))?, layout))
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
    require_f32(OP, "x", x)?;
    let n = x.numel();
    let y = Tensor::empty_in(rec, x.shape(), DType::F32, "unary.out")?;
    let (x1, y1) = (x.reshape(&[n])?, y.reshape(&[n])?);
    let chunk = rows_per_binding(rec, 4);
    let mut i0 = 0;
    while i0 < n {
        let len = chunk.min(n - i0);
        let gpu = rec.gpu();
        let xb = x1.narrow0(i0, len)?.bind(gpu, OP)?;
        let yb = y1.narrow0(i0, len)?.bind(gpu, OP)?;
        let params = ElementwiseParams {
            n: len as u32,
            op: f as u32,
            x_off: xb.elem_offset,
            y_off: yb.elem_offset,
            alpha,
            beta,
            ..Default::default()
        };
        let (grid, layout) = flat_grid(rec, OP, len)?;
        push(
            rec,
            ew_key("unary", layout),
            &params,
            vec![xb.range.clone(), xb.range, yb.range],
            grid,
        )?;
        i0 += len;
    }
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
    require_f32(OP, "x", x)?;
    require_f32(OP, "z", z)?;
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
    let y = Tensor::empty_in(rec, xs, DType::F32, "binary.out")?;
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
        ew_key("binary", layout),
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
    require_f32(OP, "x", x)?;
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
    let y = Tensor::empty_in(rec, &shape, DType::F32, "geglu.out")?;
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
            ew_key("geglu", layout),
            &params,
            vec![xb.range.clone(), xb.range, yb.range],
            grid,
        )?;
        r0 += len;
    }
    Ok(y)
}

/// Nearest-neighbour 2× upsample of channels-last `x` `[n, h, w, c]` → `[n, 2h, 2w, c]`.
pub fn upsample_nearest2x(rec: &mut Recorder<'_>, x: &Tensor) -> Result<Tensor> {
    let (h, w) = (
        x.shape().get(1).copied().unwrap_or(0),
        x.shape().get(2).copied().unwrap_or(0),
    );
    upsample_nearest(rec, x, 2 * h, 2 * w)
}

/// `torch.nn.functional.interpolate(x, size=(oh, ow), mode="nearest")` on channels-last
/// `x` `[n, h, w, c]` → `[n, oh, ow, c]` (the U-Net upsamples to an odd skip's size this way).
/// Split into bands of output rows when an image exceeds one binding.
pub fn upsample_nearest(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    oh: usize,
    ow: usize,
) -> Result<Tensor> {
    const OP: &str = "upsample_nearest";
    require_f32(OP, "x", x)?;
    let &[n, h, w, c] = x.shape() else {
        return Err(Error::shape(
            OP,
            format!("x `{}` must be [n, h, w, c], got {:?}", x.name(), x.shape()),
        ));
    };
    if h == 0 || w == 0 || oh == 0 || ow == 0 {
        return Err(Error::shape(
            OP,
            format!("cannot resize `{}` {:?} to {oh}x{ow}", x.name(), x.shape()),
        ));
    }
    let y = Tensor::empty_in(rec, &[n, oh, ow, c], DType::F32, "upsample.out")?;
    // torch's nearest source index: floor(dst · (in / out)) with the scale in f32.
    let (scale_h, scale_w) = (h as f32 / oh as f32, w as f32 / ow as f32);
    let src_row = |oy: usize| ((oy as f32 * scale_h).floor() as usize).min(h - 1);
    let (xr, yr) = (x.reshape(&[n * h, w, c])?, y.reshape(&[n * oh, ow, c])?);
    let band = rows_per_binding(rec, 4 * (ow * c).max(w * c) as u64).min(oh);
    for b in 0..n {
        let mut oy0 = 0;
        while oy0 < oh {
            let len = band.min(oh - oy0);
            let (iy0, iy1) = (src_row(oy0), src_row(oy0 + len - 1) + 1);
            let gpu = rec.gpu();
            let xb = xr.narrow0(b * h + iy0, iy1 - iy0)?.bind(gpu, OP)?;
            let yb = yr.narrow0(b * oh + oy0, len)?.bind(gpu, OP)?;
            let total = len * ow * c;
            let params = UpsampleParams {
                full_h: h as u32,
                w: u32_of(OP, "w", w)?,
                c: u32_of(OP, "c", c)?,
                ow: u32_of(OP, "output width", ow)?,
                oy0: oy0 as u32,
                iy0: iy0 as u32,
                band_h: len as u32,
                total: u32_of(OP, "elements", total)?,
                x_off: xb.elem_offset,
                y_off: yb.elem_offset,
                scale_h,
                scale_w,
            };
            let grid = threads_grid(rec, OP, total)?;
            push(rec, upsample_key(), &params, vec![xb.range, yb.range], grid)?;
            oy0 += len;
        }
    }
    Ok(y)
}

/// Concatenates along the last (channel) dimension: `[.., ca]` and `[.., cb]` → `[.., ca + cb]`.
pub fn concat_channels(rec: &mut Recorder<'_>, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "concat_channels";
    require_f32(OP, "a", a)?;
    require_f32(OP, "b", b)?;
    let (ra, rb) = (a.rank(), b.rank());
    if ra == 0 || ra != rb || a.shape()[..ra - 1] != b.shape()[..rb - 1] {
        return Err(Error::shape(
            OP,
            format!(
                "`{}` {:?} and `{}` {:?} differ outside the last dim",
                a.name(),
                a.shape(),
                b.name(),
                b.shape()
            ),
        ));
    }
    let (ca, cb) = (a.shape()[ra - 1], b.shape()[rb - 1]);
    let mut shape = a.shape().to_vec();
    shape[ra - 1] = ca + cb;
    let y = Tensor::empty_in(rec, &shape, DType::F32, "concat.out")?;
    let rows = a.numel() / ca.max(1);
    let (a2, b2, y2) = (
        a.reshape(&[rows, ca])?,
        b.reshape(&[rows, cb])?,
        y.reshape(&[rows, ca + cb])?,
    );
    let chunk = rows_per_binding(rec, 4 * (ca + cb) as u64);
    let mut r0 = 0;
    while r0 < rows {
        let len = chunk.min(rows - r0);
        let gpu = rec.gpu();
        let ab = a2.narrow0(r0, len)?.bind(gpu, OP)?;
        let bb = b2.narrow0(r0, len)?.bind(gpu, OP)?;
        let yb = y2.narrow0(r0, len)?.bind(gpu, OP)?;
        let total = len * (ca + cb);
        let params = ConcatParams {
            rows: len as u32,
            ca: ca as u32,
            cb: cb as u32,
            total: u32_of(OP, "elements", total)?,
            a_off: ab.elem_offset,
            b_off: bb.elem_offset,
            y_off: yb.elem_offset,
            _pad: 0,
        };
        let (grid, layout) = flat_grid(rec, OP, total)?;
        push(
            rec,
            concat_key(layout),
            &params,
            vec![ab.range, bb.range, yb.range],
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
