//! Data movement: nearest-neighbour resize (`shaders/upsample.wgsl`), channel concat
//! (`concat.wgsl`) and RGB → packed RGBA8 texels for textures (`to_rgba8.wgsl`).

use super::elementwise::{FlatLayout, flat_chunks, flat_grid};
use super::{
    act_defines, push, require_act, require_f32, require_same_act, rows_per_binding, u32_of,
};
use crate::error::{Error, Result};
use crate::gpu::{Access, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

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

fn upsample_key(layout: FlatLayout, act: DType) -> KernelKey {
    KernelKey {
        shader: "upsample.wgsl",
        entry: "main",
        defines: act_defines(act),
        overrides: layout.overrides(),
        bindings: vec![Access::Read, Access::ReadWrite],
        params_size: std::mem::size_of::<UpsampleParams>() as u64,
    }
}

fn concat_key(layout: FlatLayout, act: DType) -> KernelKey {
    KernelKey {
        shader: "concat.wgsl",
        entry: "main",
        defines: act_defines(act),
        overrides: layout.overrides(),
        bindings: vec![Access::Read, Access::Read, Access::ReadWrite],
        params_size: std::mem::size_of::<ConcatParams>() as u64,
    }
}

/// Mirrors `Params` in `shaders/cast.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct CastParams {
    pub n: u32,
    pub x_off: u32,
    pub y_off: u32,
    pub _pad: u32,
}

fn cast_key(layout: FlatLayout, to: DType) -> KernelKey {
    let mut defines = act_defines(DType::F16);
    if to == DType::F16 {
        defines.push(crate::shaders::Define::Flag("TO_F16"));
    }
    KernelKey {
        shader: "cast.wgsl",
        entry: "main",
        defines,
        overrides: layout.overrides(),
        bindings: vec![Access::Read, Access::ReadWrite],
        params_size: std::mem::size_of::<CastParams>() as u64,
    }
}

/// `x` as activations of dtype `to`: f32 → f16 rounds to the nearest f16 (torch's `.half()`),
/// f16 → f32 is exact; the same dtype returns `x` itself (a view, no dispatch). f16 needs a
/// device with `shader-f16`. Split into several dispatches when `x` exceeds one binding.
pub fn cast(rec: &mut Recorder<'_>, x: &Tensor, to: DType) -> Result<Tensor> {
    const OP: &str = "cast";
    require_act(rec, OP, "x", x)?;
    if x.dtype() == to {
        return Ok(x.clone());
    }
    if !rec.gpu().features().contains(wgpu::Features::SHADER_F16) {
        return Err(Error::unsupported(
            OP,
            format!(
                "f16 activations for `{}` need a device with shader-f16",
                x.name()
            ),
        ));
    }
    let y = Tensor::empty_in(rec, x.shape(), to, "cast.out")?;
    flat_chunks(rec, OP, x, &y, |rec, xb, yb, len, grid, layout| {
        let params = CastParams {
            n: len as u32,
            x_off: xb.elem_offset,
            y_off: yb.elem_offset,
            _pad: 0,
        };
        push(
            rec,
            cast_key(layout, to),
            &params,
            vec![xb.range, yb.range],
            grid,
        )
    })?;
    Ok(y)
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

pub(crate) fn kernel_keys(layouts: [FlatLayout; 2]) -> Vec<KernelKey> {
    let mut v = vec![rgba8_key()];
    for to in [DType::F32, DType::F16] {
        v.extend(layouts.map(|l| cast_key(l, to)));
    }
    for act in [DType::F32, DType::F16] {
        v.extend(layouts.map(|l| concat_key(l, act)));
        v.extend(layouts.map(|l| upsample_key(l, act)));
    }
    v
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
    let act = require_act(rec, OP, "x", x)?;
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
    let y = Tensor::empty_in(rec, &[n, oh, ow, c], act, "upsample.out")?;
    // torch's nearest source index: floor(dst · (in / out)) with the scale in f32.
    let (scale_h, scale_w) = (h as f32 / oh as f32, w as f32 / ow as f32);
    let src_row = |oy: usize| ((oy as f32 * scale_h).floor() as usize).min(h - 1);
    let (xr, yr) = (x.reshape(&[n * h, w, c])?, y.reshape(&[n * oh, ow, c])?);
    let band = rows_per_binding(rec, act.size() * (ow * c).max(w * c) as u64).min(oh);
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
            let (grid, layout) = flat_grid(rec, OP, total)?;
            push(
                rec,
                upsample_key(layout, act),
                &params,
                vec![xb.range, yb.range],
                grid,
            )?;
            oy0 += len;
        }
    }
    Ok(y)
}

/// Concatenates along the last (channel) dimension: `[.., ca]` and `[.., cb]` → `[.., ca + cb]`.
pub fn concat_channels(rec: &mut Recorder<'_>, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "concat_channels";
    let act = require_act(rec, OP, "a", a)?;
    require_same_act(OP, "b", b, act)?;
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
    let y = Tensor::empty_in(rec, &shape, act, "concat.out")?;
    let rows = a.numel() / ca.max(1);
    let (a2, b2, y2) = (
        a.reshape(&[rows, ca])?,
        b.reshape(&[rows, cb])?,
        y.reshape(&[rows, ca + cb])?,
    );
    let chunk = rows_per_binding(rec, act.size() * (ca + cb) as u64);
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
            concat_key(layout, act),
            &params,
            vec![ab.range, bb.range, yb.range],
            grid,
        )?;
        r0 += len;
    }
    Ok(y)
}
