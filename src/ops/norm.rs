//! group-norm with optional fused SiLU (`shaders/group_norm.wgsl`) and layer-norm
//! (`shaders/layer_norm.wgsl`); f32 two-pass statistics.

use super::{act_defines, fits_binding, push, require_act, require_f32, rows_per_binding, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{Access, BufferRange, GemmVariant, KernelKey, Recorder};
use crate::shaders::Define;
use crate::tensor::{DType, Tensor};

/// Mirrors `Params` in `shaders/group_norm.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GroupNormParams {
    pub n: u32,
    pub hw: u32,
    pub c: u32,
    pub groups: u32,
    pub x_off: u32,
    pub y_off: u32,
    pub silu: u32,
    pub _pad0: u32,
    pub eps: f32,
    pub _pad1: [u32; 3],
}

/// Mirrors `Params` in `shaders/group_norm_banded.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GroupNormBandParams {
    pub hw: u32,
    pub c: u32,
    pub groups: u32,
    pub x_off: u32,
    pub y_off: u32,
    pub silu: u32,
    pub band: u32,
    pub n_bands: u32,
    pub band_hw: u32,
    pub total_hw: u32,
    pub _pad0: [u32; 2],
    pub eps: f32,
    pub _pad1: [u32; 3],
}

/// Mirrors `Params` in `shaders/group_norm_split.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GroupNormSplitParams {
    pub n: u32,
    pub hw: u32,
    pub c: u32,
    pub groups: u32,
    pub x_off: u32,
    pub y_off: u32,
    pub silu: u32,
    pub splits: u32,
    /// Pixels per split.
    pub ppw: u32,
    pub _pad0: [u32; 3],
    pub eps: f32,
    pub _pad1: [u32; 3],
}

/// Mirrors `Params` in `shaders/layer_norm.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LayerNormParams {
    pub rows: u32,
    pub c: u32,
    pub x_off: u32,
    pub y_off: u32,
    pub eps: f32,
    pub _pad: [u32; 3],
}

const NORM_BINDINGS: [Access; 4] = [Access::Read, Access::Read, Access::Read, Access::ReadWrite];

/// The one-subgroup kernel that takes `gb` whole groups of `cg` channels of a pixel at once
/// (define `QUADS`, see `shaders/group_norm.wgsl`): on the subgroup core's devices, where the
/// vectorised kernel applies and a group is 4, 8, 16 or 32 channels; `None` elsewhere.
fn quads_plan(
    gpu: &crate::Gpu,
    vec4: bool,
    groups: usize,
    (hw, cg): (usize, usize),
) -> Option<usize> {
    let gb = (16 / cg).max(1);
    // Each lane's three passes take hw · (quads per pixel) / 8 iterations.
    let iterations = 3 * (hw * gb * cg / 4).div_ceil(SUBGROUP_WG as usize);
    let under_cap = gpu
        .loop_iteration_limit()
        .is_none_or(|lim| iterations < lim as usize / 2);
    let ok = gpu.gemm_variant() == GemmVariant::Subgroup
        && vec4
        && under_cap
        && matches!(cg, 4 | 8 | 16 | 32)
        && groups % gb == 0;
    ok.then_some(gb)
}

fn quads_key(gb: usize, cg: usize, act: DType, load64: bool) -> KernelKey {
    let mut defines = vec![
        Define::Flag("SUBGROUP_REDUCE"),
        Define::Flag("VEC4"),
        Define::Flag("QUADS"),
        Define::Const("GB", gb as u32),
        Define::Const("QG", (cg / 4) as u32),
        Define::Const("PSTEP", (32 / (gb * cg)) as u32),
    ];
    if load64 {
        defines.push(Define::Flag("LOAD64"));
    }
    norm_key(SUBGROUP_WG, defines, act)
}

/// Elements per (image, group) from which a group gets 256 threads rather than 64: small
/// groups spend their time in the reduction's barriers (measured on lavapipe: the built-in
/// model's group norms took 32 ms of a 120 ms step at 256 threads, 12.5 ms at 64).
const GROUP_NORM_WIDE: usize = 32768;

/// Workgroup size of the norms' one-subgroup variant (define `SUBGROUP_REDUCE`), for devices
/// with the subgroup GEMM core (subgroup size exactly 8: CPU devices such as lavapipe).
const SUBGROUP_WG: u32 = 8;
/// `WG` and defines of a norm kernel for a reduction of `count` elements on `gpu`: on
/// devices with the subgroup GEMM core one subgroup (no barriers: measured on Mesa 25
/// lavapipe, SD 1.5's 2×64×64×320 group norm, 40960 elements per group, ran at 0.32 GB/s
/// with 256 threads and their barriers), as long as its 3 passes over `count / 8` elements
/// per lane stay well under the driver's loop cap (llvmpipe before Mesa 25: 65535 iterations
/// per invocation); else `wg` threads reducing in workgroup memory.
fn norm_config(gpu: &crate::Gpu, count: usize, wg: u32) -> (u32, Vec<Define>) {
    let iterations = 3 * count.div_ceil(SUBGROUP_WG as usize);
    let under_cap = gpu
        .loop_iteration_limit()
        .is_none_or(|lim| iterations < lim as usize / 2);
    if gpu.gemm_variant() == GemmVariant::Subgroup && under_cap {
        (SUBGROUP_WG, vec![Define::Flag("SUBGROUP_REDUCE")])
    } else {
        (wg, vec![])
    }
}

/// `vec4`: the vectorised passes (define `VEC4`, with `LOAD64` where `load64`).
fn group_norm_key(
    (wg, mut defines): (u32, Vec<Define>),
    act: DType,
    vec4: bool,
    load64: bool,
) -> KernelKey {
    if vec4 {
        defines.push(Define::Flag("VEC4"));
        if load64 {
            defines.push(Define::Flag("LOAD64"));
        }
    }
    norm_key(wg, defines, act)
}

fn norm_key(wg: u32, mut defines: Vec<Define>, act: DType) -> KernelKey {
    defines.extend(act_defines(act));
    KernelKey {
        shader: "group_norm.wgsl",
        entry: "main",
        defines,
        overrides: vec![("WG", wg)],
        bindings: NORM_BINDINGS.to_vec(),
        params_size: std::mem::size_of::<GroupNormParams>() as u64,
    }
}

fn layer_norm_key((wg, mut defines): (u32, Vec<Define>), act: DType) -> KernelKey {
    defines.extend(act_defines(act));
    KernelKey {
        shader: "layer_norm.wgsl",
        entry: "main",
        defines,
        // On GPUs one 32-thread workgroup per row (a warp per row); at 128 the reduction's
        // barriers made the built-in model's layer norms 3× slower on lavapipe, which now
        // takes the one-subgroup variant (`norm_config`).
        overrides: vec![("WG", wg)],
        bindings: NORM_BINDINGS.to_vec(),
        params_size: std::mem::size_of::<LayerNormParams>() as u64,
    }
}

/// An entry of a group norm computed in parts (bands, splits): x, gamma, beta, y and the
/// partial statistics, 256 threads.
fn parts_key(
    shader: &'static str,
    entry: &'static str,
    params_size: usize,
    act: DType,
) -> KernelKey {
    KernelKey {
        shader,
        entry,
        defines: act_defines(act),
        overrides: vec![("WG", 256)],
        bindings: vec![
            Access::Read,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::ReadWrite,
        ],
        params_size: params_size as u64,
    }
}

fn banded_key(entry: &'static str, act: DType) -> KernelKey {
    let size = std::mem::size_of::<GroupNormBandParams>();
    parts_key("group_norm_banded.wgsl", entry, size, act)
}

const BANDED: [&str; 3] = ["band_stats", "band_finalize", "band_apply"];

fn split_key(entry: &'static str, act: DType) -> KernelKey {
    let size = std::mem::size_of::<GroupNormSplitParams>();
    parts_key("group_norm_split.wgsl", entry, size, act)
}

/// Per image and channel, the scale and shift that a group norm applies (`[n, 2·c]` f32:
/// `γ / sqrt(var + eps)`, then `β − mean · scale`), for a conv that normalises its input as it
/// reads it (`ops::conv2d_group_norm`). Same statistics as [`group_norm`] (split over
/// workgroups where it splits). `x` `[n, .., c]` must fit one storage binding.
pub(crate) fn group_norm_affine(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    groups: usize,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    const OP: &str = "group_norm";
    let (act, [n, hw, c]) = check_group_norm(rec, x, groups, gamma, beta)?;
    let (splits, ppw) = split_plan(rec.gpu(), n, groups, hw, c / groups).unwrap_or((1, hw.max(1)));
    let stats = Tensor::empty_in(
        rec,
        &[n * groups * splits * 2],
        DType::F32,
        "group_norm.split_stats",
    )?;
    let affine = Tensor::empty_in(rec, &[n, 2 * c], DType::F32, "group_norm.affine")?;
    let gpu = rec.gpu();
    let (xb, gb, bb, sb, ab) = (
        x.bind(gpu, OP)?,
        gamma.bind(gpu, OP)?,
        beta.bind(gpu, OP)?,
        stats.bind(gpu, OP)?,
        affine.bind(gpu, OP)?,
    );
    let params = GroupNormSplitParams {
        n: u32_of(OP, "images", n)?,
        hw: u32_of(OP, "spatial size", hw)?,
        c: u32_of(OP, "c", c)?,
        groups: groups as u32,
        x_off: xb.elem_offset,
        y_off: ab.elem_offset,
        splits: splits as u32,
        ppw: ppw as u32,
        eps,
        ..Default::default()
    };
    let bindings = vec![xb.range, gb.range, bb.range, ab.range, sb.range];
    let grid = gpu.grid(OP, (n * groups * splits) as u64)?;
    push(
        rec,
        split_key("split_stats", act),
        &params,
        bindings.clone(),
        grid,
    )?;
    let grid = rec.gpu().grid(OP, (n * groups) as u64)?;
    // The affine output is f32 whatever x's dtype: the f32 variant of the module.
    push(
        rec,
        split_key("split_affine", DType::F32),
        &params,
        bindings,
        grid,
    )?;
    Ok(affine)
}

/// Whether a group norm of `images · groups` groups of `hw` pixels × `cg` channels takes the
/// split kernels (two dispatches) on `gpu`: then a conv that reads the norm in place costs no
/// extra dispatch (its statistics and scales are two dispatches too).
pub(crate) fn splits_on(
    gpu: &crate::Gpu,
    images: usize,
    groups: usize,
    hw: usize,
    cg: usize,
) -> bool {
    split_plan(gpu, images, groups, hw, cg).is_some()
}

/// Workgroups a GPU group norm aims for: a few per multiprocessor of a large GPU (an
/// H100/H200 has 132), so that memory latency is hidden.
const SPLIT_TARGET_WORKGROUPS: usize = 512;
/// Fewest elements one split workgroup takes (below this the second dispatch and the
/// merge cost more than the parallelism gains).
const SPLIT_MIN_ELEMENTS: usize = 4096;

/// How many workgroups per (image, group) a GPU group norm of `images · groups` groups of
/// `hw` pixels × `cg` channels takes, and the pixels per split; `None`: one (the plain
/// kernel). CPU devices always take one: their workgroups run one after another anyway.
fn split_plan(
    gpu: &crate::Gpu,
    images: usize,
    groups: usize,
    hw: usize,
    cg: usize,
) -> Option<(usize, usize)> {
    if gpu.gemm_variant() != GemmVariant::Tiled {
        return None;
    }
    let want = SPLIT_TARGET_WORKGROUPS.div_ceil(images * groups);
    let splits = want.min(hw * cg / SPLIT_MIN_ELEMENTS).min(hw);
    if splits < 2 {
        return None;
    }
    let ppw = hw.div_ceil(splits);
    Some((hw.div_ceil(ppw), ppw))
}

pub(crate) fn kernel_keys() -> Vec<KernelKey> {
    let sub = || (SUBGROUP_WG, vec![Define::Flag("SUBGROUP_REDUCE")]);
    let mut keys = Vec::new();
    for act in [DType::F32, DType::F16] {
        for cg in [4, 8, 16, 32] {
            for load64 in [false, true] {
                keys.push(quads_key((16 / cg).max(1), cg, act, load64));
            }
        }
        for (vec4, load64) in [(false, false), (true, false), (true, true)] {
            keys.extend([
                group_norm_key((64, vec![]), act, vec4, load64),
                group_norm_key((256, vec![]), act, vec4, load64),
                group_norm_key(sub(), act, vec4, load64),
            ]);
        }
        keys.extend([
            layer_norm_key((32, vec![]), act),
            layer_norm_key(sub(), act),
        ]);
        keys.extend(BANDED.map(|e| banded_key(e, act)));
        keys.extend(["split_stats", "split_apply", "split_affine"].map(|e| split_key(e, act)));
    }
    keys
}

/// Group norm of image `b` of `x` `[n, hw, c]` in bands of pixels, for images larger than one
/// binding: per-band statistics, merged, then applied (`shaders/group_norm_banded.wgsl`).
#[allow(clippy::too_many_arguments)]
fn group_norm_banded(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    y: &Tensor,
    b: usize,
    groups: usize,
    (gamma, beta): (&Tensor, &Tensor),
    eps: f32,
    silu: bool,
) -> Result<()> {
    const OP: &str = "group_norm";
    let (n, c) = (x.shape()[0], x.shape()[x.rank() - 1]);
    let hw = x.numel() / n / c;
    let act = x.dtype();
    let band_hw = rows_per_binding(rec, act.size() * c as u64).min(hw);
    let n_bands = hw.div_ceil(band_hw);
    let gpu = rec.gpu();
    let stats = Tensor::empty_in(
        rec,
        &[(n_bands + 1) * groups * 2],
        DType::F32,
        "group_norm.band_stats",
    )?;
    let scratch = Tensor::empty_in(rec, &[4], DType::F32, "group_norm.unused")?;
    let (x2, y2) = (x.reshape(&[n * hw, c])?, y.reshape(&[n * hw, c])?);
    let base = GroupNormBandParams {
        c: u32_of(OP, "c", c)?,
        groups: groups as u32,
        silu: silu as u32,
        n_bands: u32_of(OP, "bands", n_bands)?,
        band_hw: band_hw as u32,
        total_hw: u32_of(OP, "spatial size", hw)?,
        eps,
        ..Default::default()
    };
    let grid = gpu.grid(OP, groups as u64)?;
    let (gb, bb, sb) = (
        gamma.bind(gpu, OP)?,
        beta.bind(gpu, OP)?,
        stats.bind(gpu, OP)?,
    );
    // Every pass binds x, gamma, beta, y, stats (x and y are the band, or unused words).
    let bindings = |x: BufferRange, y: BufferRange| {
        vec![x, gb.range.clone(), bb.range.clone(), y, sb.range.clone()]
    };
    let band = |i: usize| -> Result<(Tensor, Tensor, usize)> {
        let len = band_hw.min(hw - i * band_hw);
        Ok((
            x2.narrow0(b * hw + i * band_hw, len)?,
            y2.narrow0(b * hw + i * band_hw, len)?,
            len,
        ))
    };
    for i in 0..n_bands {
        let (xv, _, len) = band(i)?;
        let xb = xv.bind(gpu, OP)?;
        let params = GroupNormBandParams {
            hw: len as u32,
            x_off: xb.elem_offset,
            band: i as u32,
            ..base
        };
        push(
            rec,
            banded_key("band_stats", act),
            &params,
            bindings(xb.range, scratch.bind(gpu, OP)?.range),
            grid,
        )?;
    }
    let unused = scratch.bind(gpu, OP)?.range;
    push(
        rec,
        banded_key("band_finalize", act),
        &base,
        bindings(gamma.bind(gpu, OP)?.range, unused),
        grid,
    )?;
    for i in 0..n_bands {
        let (xv, yv, len) = band(i)?;
        let (xb, yb) = (xv.bind(gpu, OP)?, yv.bind(gpu, OP)?);
        let params = GroupNormBandParams {
            hw: len as u32,
            x_off: xb.elem_offset,
            y_off: yb.elem_offset,
            band: i as u32,
            ..base
        };
        push(
            rec,
            banded_key("band_apply", act),
            &params,
            bindings(xb.range, yb.range),
            grid,
        )?;
    }
    Ok(())
}

/// A group norm's input checks: `x` `[n, .., c]` of an activation dtype, `c` divisible into
/// `groups`, `gamma` and `beta` `[c]`. Returns the activation dtype and `[n, hw, c]`.
fn check_group_norm(
    rec: &Recorder<'_>,
    x: &Tensor,
    groups: usize,
    gamma: &Tensor,
    beta: &Tensor,
) -> Result<(DType, [usize; 3])> {
    const OP: &str = "group_norm";
    let act = require_act(rec, OP, "x", x)?;
    if x.rank() < 2 {
        return Err(Error::shape(
            OP,
            format!("x `{}` must be [n, .., c], got {:?}", x.name(), x.shape()),
        ));
    }
    let (n, c) = (x.shape()[0], x.shape()[x.rank() - 1]);
    if groups == 0 || c % groups != 0 {
        return Err(Error::shape(
            OP,
            format!(
                "{c} channels of `{}` do not split into {groups} groups",
                x.name()
            ),
        ));
    }
    check_affine(OP, c, gamma, beta)?;
    Ok((act, [n, x.numel() / n.max(1) / c.max(1), c]))
}

pub(crate) fn check_affine(
    op: &'static str,
    c: usize,
    gamma: &Tensor,
    beta: &Tensor,
) -> Result<()> {
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        require_f32(op, name, t)?;
        if t.shape() != [c] {
            return Err(Error::shape(
                op,
                format!("{name} `{}` must be [{c}], got {:?}", t.name(), t.shape()),
            ));
        }
    }
    Ok(())
}

/// `torch.nn.GroupNorm(groups, c, eps)` on channels-last `x` `[n, ..., c]` (any spatial
/// dims), then SiLU when `silu`. Returns f32 of `x`'s shape.
pub fn group_norm(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    groups: usize,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    silu: bool,
) -> Result<Tensor> {
    const OP: &str = "group_norm";
    let (act, [n, hw, c]) = check_group_norm(rec, x, groups, gamma, beta)?;
    let y = Tensor::empty_in(rec, x.shape(), act, "group_norm.out")?;
    if !fits_binding(rec, act.size() * (hw * c) as u64) {
        for b in 0..n {
            group_norm_banded(rec, x, &y, b, groups, (gamma, beta), eps, silu)?;
        }
        return Ok(y);
    }
    let chunk = rows_per_binding(rec, act.size() * (hw * c) as u64);
    let mut i0 = 0;
    while i0 < n {
        let len = chunk.min(n - i0);
        let gpu = rec.gpu();
        let (xb, gb, bb) = (
            x.narrow0(i0, len)?.bind(gpu, OP)?,
            gamma.bind(gpu, OP)?,
            beta.bind(gpu, OP)?,
        );
        let yb = y.narrow0(i0, len)?.bind(gpu, OP)?;
        let params = GroupNormParams {
            n: len as u32,
            hw: u32_of(OP, "spatial size", hw)?,
            c: u32_of(OP, "c", c)?,
            groups: groups as u32,
            x_off: xb.elem_offset,
            y_off: yb.elem_offset,
            silu: silu as u32,
            eps,
            ..Default::default()
        };
        if let Some((splits, ppw)) = split_plan(gpu, len, groups, hw, c / groups) {
            let params = GroupNormSplitParams {
                n: len as u32,
                hw: hw as u32,
                c: c as u32,
                groups: groups as u32,
                x_off: xb.elem_offset,
                y_off: yb.elem_offset,
                silu: silu as u32,
                splits: splits as u32,
                ppw: ppw as u32,
                eps,
                ..Default::default()
            };
            let stats = Tensor::empty_in(
                rec,
                &[len * groups * splits * 2],
                DType::F32,
                "group_norm.split_stats",
            )?;
            let gpu = rec.gpu();
            let sb = stats.bind(gpu, OP)?;
            let grid = gpu.grid(OP, (len * groups * splits) as u64)?;
            for entry in ["split_stats", "split_apply"] {
                let bindings = vec![
                    xb.range.clone(),
                    gb.range.clone(),
                    bb.range.clone(),
                    yb.range.clone(),
                    sb.range.clone(),
                ];
                push(rec, split_key(entry, act), &params, bindings, grid)?;
            }
            i0 += len;
            continue;
        }
        let cg = c / groups;
        let count = hw * cg;
        let wg = if count >= GROUP_NORM_WIDE { 256 } else { 64 };
        // Four channels at a time where the groups, offsets and γ, β allow.
        let vec4 = cg % 4 == 0
            && [xb.elem_offset, yb.elem_offset].iter().all(|o| o % 4 == 0)
            && [gb.elem_offset, bb.elem_offset].iter().all(|&o| o == 0);
        let (key, workgroups) = match quads_plan(gpu, vec4, groups, (hw, cg)) {
            Some(gbk) => (quads_key(gbk, cg, act, gpu.load64()), len * groups / gbk),
            None => (
                group_norm_key(norm_config(gpu, count, wg), act, vec4, gpu.load64()),
                len * groups,
            ),
        };
        let grid = gpu.grid(OP, workgroups as u64)?;
        push(
            rec,
            key,
            &params,
            vec![xb.range, gb.range, bb.range, yb.range],
            grid,
        )?;
        i0 += len;
    }
    Ok(y)
}

/// `torch.nn.LayerNorm(c, eps)` over the last dimension of `x` `[.., c]`.
pub fn layer_norm(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    const OP: &str = "layer_norm";
    let act = require_act(rec, OP, "x", x)?;
    let c = *x.shape().last().unwrap_or(&0);
    if c == 0 {
        return Err(Error::shape(
            OP,
            format!("x `{}` has no channels: {:?}", x.name(), x.shape()),
        ));
    }
    check_affine(OP, c, gamma, beta)?;
    let rows = x.numel() / c;
    let y = Tensor::empty_in(rec, x.shape(), act, "layer_norm.out")?;
    let (x2, y2) = (x.reshape(&[rows, c])?, y.reshape(&[rows, c])?);
    let chunk = rows_per_binding(rec, act.size() * c as u64);
    let mut r0 = 0;
    while r0 < rows {
        let len = chunk.min(rows - r0);
        let gpu = rec.gpu();
        let (xb, gb, bb) = (
            x2.narrow0(r0, len)?.bind(gpu, OP)?,
            gamma.bind(gpu, OP)?,
            beta.bind(gpu, OP)?,
        );
        let yb = y2.narrow0(r0, len)?.bind(gpu, OP)?;
        let params = LayerNormParams {
            rows: len as u32,
            c: u32_of(OP, "c", c)?,
            x_off: xb.elem_offset,
            y_off: yb.elem_offset,
            eps,
            _pad: [0; 3],
        };
        let grid = gpu.grid(OP, len as u64)?;
        push(
            rec,
            layer_norm_key(norm_config(gpu, c, 32), act),
            &params,
            vec![xb.range, gb.range, bb.range, yb.range],
            grid,
        )?;
        r0 += len;
    }
    Ok(y)
}
