//! conv2d as implicit GEMM (`shaders/conv2d.wgsl`): channels-last activations, weights laid
//! out `[kh, kw, cin, cout]`, optional bias and fused residual add.

use super::gemm_core::{Gemm, Loop, gemm, gemm_variants, vec4_ok};
use super::{
    act_defines, fits_binding, push, require_act, require_same_act, rows_per_binding, u32_of,
};
use crate::error::{Error, Result};
use crate::gpu::{Access, GemmVariant, KernelKey, Recorder};
use crate::shaders::Define;
use crate::tensor::{DType, Tensor};

/// Mirrors `Params` in `shaders/conv2d.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Conv2dParams {
    pub n: u32,
    pub h: u32,
    pub w: u32,
    pub cin: u32,
    pub ho: u32,
    pub wo: u32,
    pub cout: u32,
    pub kh: u32,
    pub kw: u32,
    pub stride: u32,
    pub pad_t: u32,
    pub pad_l: u32,
    pub m: u32,
    pub k: u32,
    pub x_off: u32,
    pub w_off: u32,
    pub bias_off: u32,
    pub res_off: u32,
    pub out_off: u32,
    pub has_bias: u32,
    pub has_res: u32,
    pub tiles_n: u32,
    pub tiles_m: u32,
    /// The input's group norm (define `A_GN`): where its `[n, 2·cin]` scales and shifts
    /// start, and whether SiLU follows.
    pub gn_off: u32,
    pub gn_silu: u32,
    pub _pad: [u32; 3],
}

/// A group norm (then SiLU) applied to a conv's input as the conv reads it
/// ([`conv2d_group_norm`]): `torch.nn.GroupNorm(groups, cin, eps)` with `gamma`, `beta`.
#[derive(Clone, Copy)]
pub struct InputNorm<'a> {
    pub groups: usize,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub eps: f32,
    pub silu: bool,
}

/// Stride and zero padding of a convolution, and an optional nearest 2× upsampling of its
/// input done on the fly (diffusers' `Upsample2D`: `conv(interpolate(x, scale_factor=2))`
/// without the 4×-sized upsampled tensor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOptions {
    pub stride: usize,
    /// Zero padding (top, bottom, left, right), in upsampled pixels.
    pub padding: [usize; 4],
    /// 1, or 2: the conv reads `x` as if nearest-upsampled 2× (`[n, 2h, 2w, c]`).
    pub upsample: usize,
}

impl Conv2dOptions {
    /// PyTorch's `Conv2d(stride=s, padding=p)`.
    pub fn new(stride: usize, padding: usize) -> Self {
        Self {
            stride,
            padding: [padding; 4],
            upsample: 1,
        }
    }

    /// The same conv over the input nearest-upsampled 2×.
    pub fn upsampled2x(self) -> Self {
        Self {
            upsample: 2,
            ..self
        }
    }
}

/// `up2`: the variant that reads its input nearest-upsampled 2× (define `UP2`), so that
/// ordinary convs keep their plain addressing; `act`: the dtype of x, residual and output.
/// `gn`: the variant that normalises its input as it reads it (define `A_GN`, one more
/// binding).
fn key(g: Gemm, up2: bool, act: DType, gn: bool) -> KernelKey {
    let mut defines = g.defines;
    // x is read as vec4 by the vectorised loops and the narrow kernel.
    if defines.contains(&Define::Flag("VEC4")) || defines.contains(&Define::Flag("NARROW")) {
        defines.push(Define::Flag("X4"));
    }
    defines.extend(act_defines(act));
    if up2 {
        defines.push(crate::shaders::Define::Flag("UP2"));
    }
    let mut bindings = vec![
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
    ];
    if gn {
        defines.push(crate::shaders::Define::Flag("A_GN"));
        bindings.push(Access::Read);
    }
    KernelKey {
        shader: "conv2d.wgsl",
        entry: "main",
        defines,
        overrides: g.overrides,
        bindings,
        params_size: std::mem::size_of::<Conv2dParams>() as u64,
    }
}

/// The narrow kernel (`shaders/conv2d_narrow.wgsl`) in place of a GEMM core: CPU devices
/// (subgroups of 8), at most [`NARROW_MAX_COUT`] output channels, whole blocks of 8 input
/// channels, a plain (not panel-packed) weight.
pub(crate) fn narrow(gpu: &crate::Gpu, cin: usize, cout: usize, weight: &Tensor) -> bool {
    gpu.gemm_variant() == GemmVariant::Subgroup
        && cout <= NARROW_MAX_COUT
        && cin % 8 == 0
        && !weight.panels()
}

/// The widest conv the narrow kernel computes (one vec4 of output channels per pixel).
const NARROW_MAX_COUT: usize = 4;

/// The narrow kernel for weights of dtype `w`: `block`, the weight's cout where its rows
/// load a block at a time (`W_BLOCK`, the weight 16-byte aligned); `runs`, lanes owning runs
/// of four pixels (`RUNS`: a 3-wide kernel at stride 1, output rows a multiple of 4 wide, no
/// upsampling). Read `shaders/conv2d_narrow.wgsl`'s header.
fn narrow_kernel(w: DType, block: Option<usize>, runs: bool) -> Gemm {
    let mut defines = vec![Define::Flag("NARROW")];
    if w == DType::F16 {
        defines.push(Define::Flag("W_F16"));
    }
    if let Some(cout) = block {
        defines.extend([Define::Flag("W_BLOCK"), Define::Const("COUT", cout as u32)]);
    }
    if runs {
        defines.push(Define::Flag("RUNS"));
    }
    Gemm {
        tile_m: 32,
        tile_n: NARROW_MAX_COUT,
        defines,
        overrides: vec![],
    }
}

pub(crate) fn kernel_keys() -> Vec<KernelKey> {
    // The narrow kernel and the subgroup core's vectorised loop, each also with 64-bit loads.
    let wide = |mut g: Gemm| {
        g.defines.push(Define::Flag("LOAD64"));
        g
    };
    // Its weight rows per lane or a block at a time (for each cout), with pixel runs where
    // there is no upsampling.
    let narrows = |up2: bool| {
        let blocks = std::iter::once(None).chain((1..=NARROW_MAX_COUT).map(Some));
        let runs: &[bool] = if up2 { &[false] } else { &[false, true] };
        blocks.flat_map(move |b| runs.iter().map(move |&r| (b, r)))
    };
    let narrow = [DType::F32, DType::F16].into_iter().flat_map(move |w| {
        [DType::F32, DType::F16].into_iter().flat_map(move |act| {
            [false, true].into_iter().flat_map(move |up2| {
                narrows(up2).flat_map(move |(b, r)| {
                    [narrow_kernel(w, b, r), wide(narrow_kernel(w, b, r))]
                        .map(|g| key(g, up2, act, false))
                })
            })
        })
    });
    gemm_variants()
        .into_iter()
        .flat_map(|g| {
            // The fused group norm runs on the GPU core only (see `conv2d_group_norm`).
            let tiled = !g.defines.contains(&Define::Flag("SUBGROUP_GEMM"));
            [DType::F32, DType::F16].into_iter().flat_map(move |act| {
                let mut k = vec![
                    key(g.clone(), false, act, false),
                    key(g.clone(), true, act, false),
                ];
                if tiled {
                    k.push(key(g.clone(), false, act, true));
                } else {
                    // Panel-packed weights (CPU devices' convs), plain and 2× upsampling.
                    let mut p = g.clone();
                    p.defines.push(Define::Flag("PANELS_B"));
                    k.extend([
                        key(p.clone(), false, act, false),
                        key(p.clone(), true, act, false),
                    ]);
                    if g.defines.contains(&Define::Flag("VEC4")) {
                        for w in [wide(g.clone()), wide(p)] {
                            k.extend([key(w.clone(), false, act, false), key(w, true, act, false)]);
                        }
                    }
                }
                k
            })
        })
        .chain(narrow)
        .collect()
}

/// The kernels' `has_res`: 0 none, 1 a residual laid out as the output, 2 one `[cout]` row
/// per image added to its every pixel (a resnet's time-embedding projection).
pub(crate) fn residual_mode(residual: Option<&Tensor>) -> u32 {
    match residual {
        None => 0,
        Some(r) if r.rank() == 2 => 2,
        Some(_) => 1,
    }
}

/// PyTorch's conv weight `[cout, cin, kh, kw]` → the kernel's `[kh, kw, cin, cout]`.
pub fn oihw_to_hwio(w: &[f32], cout: usize, cin: usize, kh: usize, kw: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for o in 0..cout {
        for i in 0..cin {
            for y in 0..kh {
                for x in 0..kw {
                    out[((y * kw + x) * cin + i) * cout + o] = w[((o * cin + i) * kh + y) * kw + x];
                }
            }
        }
    }
    out
}

/// 2-D convolution. `x`: `[n, h, w, cin]`, f32 (or f16 activations on devices with
/// `shader-f16`); `weight`: `[kh, kw, cin, cout]` f32 or f16; `bias`: `[cout]` of the
/// weight's dtype; `residual`: `[n, ho, wo, cout]` (or `[n, cout]`, per image) of x's dtype,
/// added to the result. Returns `[n, ho, wo, cout]` of x's dtype.
pub fn conv2d(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    opts: Conv2dOptions,
) -> Result<Tensor> {
    conv2d_with(rec, x, None, weight, bias, residual, opts)
}

/// [`conv2d`] of `silu(group_norm(x))` (SiLU when `norm.silu`): a resnet's norm, activation
/// and conv. On GPUs (the tiled GEMM core) the conv normalises x as it reads it — the
/// group's statistics come first ([`super::norm`]'s split statistics, two dispatches), then
/// the conv scales and shifts each loaded value: the normalised tensor is never stored,
/// which saves its memory and a write and a read of it. Elsewhere (CPU devices, where every
/// 32-column tile would redo the normalisation and SiLU of what it loads; upsampling convs;
/// images split into bands) a group-norm pass, then the conv.
pub fn conv2d_group_norm(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    norm: InputNorm<'_>,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    opts: Conv2dOptions,
) -> Result<Tensor> {
    conv2d_with(rec, x, Some(norm), weight, bias, residual, opts)
}

fn conv2d_with(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    norm: Option<InputNorm<'_>>,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    opts: Conv2dOptions,
) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let act = require_act(rec, OP, "x", x)?;
    let (&[n, h, w, cin], &[kh, kw, wcin, cout]) = (x.shape(), weight.shape()) else {
        return Err(Error::shape(
            OP,
            format!(
                "x `{}` must be [n, h, w, c] and weight `{}` [kh, kw, cin, cout]; got {:?} and {:?}",
                x.name(),
                weight.name(),
                x.shape(),
                weight.shape()
            ),
        ));
    };
    if wcin != cin {
        return Err(Error::shape(
            OP,
            format!(
                "x `{}` has {cin} channels, weight `{}` expects {wcin}",
                x.name(),
                weight.name()
            ),
        ));
    }
    let [pt, pb, pl, pr] = opts.padding;
    if let Some(p) = opts.padding.iter().find(|&&p| p > i32::MAX as usize) {
        return Err(Error::unsupported(OP, format!("padding {p} out of range")));
    }
    if opts.upsample != 1 && opts.upsample != 2 {
        return Err(Error::unsupported(
            OP,
            format!("upsample factor {} (1 or 2)", opts.upsample),
        ));
    }
    // The input as the kernel reads it: upsampled (physical rows are shared by `up` rows).
    let (ph, pw) = (h, w);
    let (h, w) = (h * opts.upsample, w * opts.upsample);
    if opts.stride == 0 || h + pt + pb < kh || w + pl + pr < kw {
        return Err(Error::shape(
            OP,
            format!(
                "{kh}x{kw} kernel with stride {} and padding {:?} does not fit input {:?}",
                opts.stride,
                opts.padding,
                x.shape()
            ),
        ));
    }
    let ho = (h + pt + pb - kh) / opts.stride + 1;
    let wo = (w + pl + pr - kw) / opts.stride + 1;
    if let Some(b) = bias {
        if b.shape() != [cout] || b.dtype() != weight.dtype() {
            return Err(Error::shape(
                OP,
                format!(
                    "bias `{}` must be [{cout}] {:?}, got {:?} {:?}",
                    b.name(),
                    weight.dtype(),
                    b.shape(),
                    b.dtype()
                ),
            ));
        }
    }
    if let Some(r) = residual {
        require_same_act(OP, "residual", r, act)?;
        if r.shape() != [n, ho, wo, cout] && r.shape() != [n, cout] {
            return Err(Error::shape(
                OP,
                format!(
                    "residual `{}` must be {:?} (or [{n}, {cout}], added to every pixel of its \
                     image), got {:?}",
                    r.name(),
                    [n, ho, wo, cout],
                    r.shape()
                ),
            ));
        }
    }
    // Split over images when one binding would exceed the device limit; an image too large
    // for one binding is split into bands of output rows (below).
    let img_bytes = act.size() * (ph * pw * cin).max(ho * wo * cout) as u64;
    // Only where the norm alone would take two dispatches (large groups, split over
    // workgroups): a small one stays one norm pass, not statistics + scales + conv.
    let fused = norm.filter(|nm| {
        rec.gpu().gemm_variant() == crate::gpu::GemmVariant::Tiled
            && opts.upsample == 1
            && fits_binding(rec, img_bytes * n as u64)
            && nm.groups > 0
            && cin % nm.groups == 0
            && super::norm::splits_on(rec.gpu(), n, nm.groups, ph * pw, cin / nm.groups)
    });
    if let (Some(nm), None) = (norm, fused) {
        let h = super::group_norm(rec, x, nm.groups, nm.gamma, nm.beta, nm.eps, nm.silu)?;
        return conv2d_with(rec, &h, None, weight, bias, residual, opts);
    }
    let out = Tensor::empty_in(rec, &[n, ho, wo, cout], act, "conv2d.out")?;
    // CPU devices: 3×3 stride-1 convs by Winograd F(4×4, 3×3) or F(2×2, 3×3) (4× or 2.25×
    // fewer multiplies), one call per group of images below (`winograd::images_per_call`
    // is the same grouping: as many images as one binding holds).
    let winograd = fused.is_none() && super::winograd::takes(rec, x, weight, residual, &out, opts)?;
    let affine = fused
        .map(|nm| super::norm::group_norm_affine(rec, x, nm.groups, nm.gamma, nm.beta, nm.eps))
        .transpose()?;
    if !fits_binding(rec, img_bytes) {
        for b in 0..n {
            record_bands(rec, x, weight, bias, residual, &out, opts, b, [ho, wo])?;
        }
        return Ok(out);
    }
    let chunk = rows_per_binding(rec, img_bytes);
    let mut i0 = 0;
    while i0 < n {
        let len = chunk.min(n - i0);
        let res = residual.map(|r| r.narrow0(i0, len)).transpose()?;
        let (xi, oi) = (x.narrow0(i0, len)?, out.narrow0(i0, len)?);
        if winograd {
            super::winograd::conv3x3(rec, &xi, weight, bias, res.as_ref(), &oi, opts)?;
        } else {
            let gn = affine.as_ref().map(|a| a.narrow0(i0, len)).transpose()?;
            let silu = fused.is_some_and(|nm| nm.silu);
            record(
                rec,
                &xi,
                weight,
                bias,
                res.as_ref(),
                &oi,
                opts,
                [ho, wo],
                gn.as_ref().map(|a| (a, silu)),
            )?;
        }
        i0 += len;
    }
    Ok(out)
}

/// Image `b` in bands of output rows, each binding only the input rows it reads (NHWC rows
/// are contiguous). A band's input starts at (upsampled) row `in0`; its top padding becomes
/// `in0 + pad_t − oy0·stride`, so zero padding still applies at the image's edges only. With
/// a 2× upsampled input a band starts on an even row: stored row `in0 / 2`.
#[allow(clippy::too_many_arguments)]
fn record_bands(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    out: &Tensor,
    opts: Conv2dOptions,
    b: usize,
    [ho, wo]: [usize; 2],
) -> Result<()> {
    const OP: &str = "conv2d";
    // Stored rows ph × pw; the kernel reads h = ph·up rows.
    let [_, ph, pw, cin] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    let up = opts.upsample;
    let h = ph * up;
    let (kh, cout) = (weight.shape()[0], weight.shape()[3]);
    let (s, pad_t) = (opts.stride, opts.padding[0]);
    let es = x.dtype().size();
    let (in_row, out_row) = (es * (pw * cin) as u64, es * (wo * cout) as u64);
    // Stored rows a band of `rows` upsampled input rows binds (one more when it starts
    // mid-pair).
    let stored = |rows: usize| (rows.div_ceil(up) + usize::from(up > 1)) as u64;
    // Largest band whose input rows ((band − 1)·s + kh) and output rows fit one binding.
    let mut band = rows_per_binding(rec, out_row).min(ho);
    while band > 1 && !fits_binding(rec, stored((band - 1) * s + kh) * in_row) {
        band = band * 3 / 4;
    }
    if !fits_binding(rec, stored(kh) * in_row) || !fits_binding(rec, out_row) {
        return Err(Error::Limit {
            op: OP,
            tensor: format!("{} {:?} (one band of rows)", x.name(), x.shape()),
            bytes: (stored(kh) * in_row).max(out_row),
            limit_name: "max_storage_buffer_binding_size",
            limit: rec.gpu().limits().max_storage_buffer_binding_size,
        });
    }
    let (x_rows, o_rows) = (
        x.reshape(&[x.shape()[0] * ph, pw, cin])?,
        out.reshape(&[out.shape()[0] * ho, wo, cout])?,
    );
    let per_image = residual.is_some_and(|r| r.rank() == 2);
    let r_rows = residual
        .filter(|_| !per_image)
        .map(|r| r.reshape(&[r.shape()[0] * ho, wo, cout]))
        .transpose()?;
    // A per-image residual ([n, cout]) is image b's row for every band.
    let r_image = residual
        .filter(|_| per_image)
        .map(|r| r.narrow0(b, 1))
        .transpose()?;
    let mut oy0 = 0;
    while oy0 < ho {
        let ob = band.min(ho - oy0);
        let first = (oy0 * s) as isize - pad_t as isize;
        let last = ((oy0 + ob - 1) * s + kh) as isize - pad_t as isize; // exclusive
        let (in0, in1) = (
            first.max(0) as usize,
            (last.min(h as isize)).max(0) as usize,
        );
        // Stored rows p0..p1 hold upsampled rows p0·up..p1·up ⊇ in0..in1.
        let (p0, p1) = (in0 / up, in1.div_ceil(up));
        let in0 = p0 * up;
        let xb = x_rows
            .narrow0(b * ph + p0, p1 - p0)?
            .reshape(&[1, p1 - p0, pw, cin])?;
        let ob_view = o_rows
            .narrow0(b * ho + oy0, ob)?
            .reshape(&[1, ob, wo, cout])?;
        let rb = r_rows
            .as_ref()
            .map(|r| {
                r.narrow0(b * ho + oy0, ob)
                    .and_then(|v| v.reshape(&[1, ob, wo, cout]))
            })
            .transpose()?
            .or_else(|| r_image.clone());
        let mut o = opts;
        // Negative (wrapped) when a 2× upsampled band starts a row early; see `record`.
        o.padding[0] = (in0 as isize - first) as usize;
        // Each band is a conv of its own: Winograd where it takes it, else the direct conv.
        if super::winograd::takes(rec, &xb, weight, rb.as_ref(), &ob_view, o)? {
            super::winograd::conv3x3(rec, &xb, weight, bias, rb.as_ref(), &ob_view, o)?;
        } else {
            record(
                rec,
                &xb,
                weight,
                bias,
                rb.as_ref(),
                &ob_view,
                o,
                [ob, wo],
                None,
            )?;
        }
        oy0 += ob;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn record(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    out: &Tensor,
    opts: Conv2dOptions,
    [ho, wo]: [usize; 2],
    gn: Option<(&Tensor, bool)>,
) -> Result<()> {
    const OP: &str = "conv2d";
    let gpu = rec.gpu();
    let [n, h, w, cin] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    // The kernel's h, w are the upsampled ones; its UP2 variant reads stored pixel
    // (y >> 1, x >> 1).
    let (h, w) = (h * opts.upsample, w * opts.upsample);
    let [kh, kw, _, cout] = [
        weight.shape()[0],
        weight.shape()[1],
        weight.shape()[2],
        weight.shape()[3],
    ];
    let xb = x.bind(gpu, OP)?;
    let wb = weight.bind_any(gpu, OP)?;
    let bb = bias.unwrap_or(weight).bind_any(gpu, OP)?;
    let panels = weight.panels();
    if panels && gpu.gemm_variant() != GemmVariant::Subgroup {
        return Err(Error::unsupported(
            OP,
            format!(
                "panel-packed weight `{}` {:?} on this device's GEMM core",
                weight.name(),
                weight.shape()
            ),
        ));
    }
    let rb = residual.unwrap_or(x).bind(gpu, OP)?;
    let ob = out.bind(gpu, OP)?;
    let gnb = gn.map(|(t, _)| t.bind(gpu, OP)).transpose()?;
    let m = n * ho * wo;
    let k = kh * kw * cin;
    let mut operands = vec![
        (&xb, x.dtype()),
        (&wb, weight.dtype()),
        (&rb, x.dtype()),
        (&ob, x.dtype()),
    ];
    if let Some(g) = &gnb {
        operands.push((g, DType::F32));
    }
    let vec4 = vec4_ok(cin, cout, &operands);
    // The narrow kernel reads only x as vec4 (cout may be 1..4).
    let narrow = gn.is_none()
        && narrow(gpu, cin, cout, weight)
        && vec4_ok(cin, NARROW_MAX_COUT, &operands[..1]);
    let mut g = if narrow {
        // The weight rows a block at a time where the weight starts 16-byte aligned; pixel
        // runs for 3-wide kernels at stride 1 over rows of whole runs.
        let block = (u64::from(wb.elem_offset) * weight.dtype().size()) % 16 == 0;
        let runs = kw == 3 && opts.stride == 1 && opts.upsample == 1 && wo % 4 == 0;
        narrow_kernel(weight.dtype(), block.then_some(cout), runs)
    } else {
        gemm(
            gpu.gemm_variant(),
            weight.dtype(),
            Loop::for_shape(vec4, m, cout, 1),
        )
    };
    if panels {
        g.defines.push(Define::Flag("PANELS_B"));
    }
    super::gemm_core::load64(gpu, &mut g);
    let (tiles_n, tiles_m) = (cout.div_ceil(g.tile_n), m.div_ceil(g.tile_m));
    let params = Conv2dParams {
        n: n as u32,
        h: u32_of(OP, "h", h)?,
        w: u32_of(OP, "w", w)?,
        cin: u32_of(OP, "cin", cin)?,
        ho: ho as u32,
        wo: wo as u32,
        cout: u32_of(OP, "cout", cout)?,
        kh: kh as u32,
        kw: kw as u32,
        stride: u32_of(OP, "stride", opts.stride)?,
        // A band over a 2× upsampled input may start one row above the first it needs: a
        // negative top padding, stored as its two's complement (the kernel reads i32).
        pad_t: i32::try_from(opts.padding[0] as isize).map_err(|_| {
            Error::unsupported(OP, format!("top padding {} out of range", opts.padding[0]))
        })? as u32,
        pad_l: u32_of(OP, "padding", opts.padding[2])?,
        m: u32_of(OP, "n·ho·wo", m)?,
        k: u32_of(OP, "kh·kw·cin", k)?,
        x_off: xb.elem_offset,
        w_off: wb.elem_offset,
        bias_off: bb.elem_offset,
        res_off: rb.elem_offset,
        out_off: ob.elem_offset,
        has_bias: bias.is_some() as u32,
        has_res: residual_mode(residual),
        tiles_n: tiles_n as u32,
        tiles_m: tiles_m as u32,
        gn_off: gnb.as_ref().map_or(0, |g| g.elem_offset),
        gn_silu: gn.is_some_and(|(_, silu)| silu) as u32,
        _pad: [0; 3],
    };
    let groups = gpu.grid(OP, (tiles_n * tiles_m) as u64)?;
    let mut bindings = vec![xb.range, wb.range, bb.range, rb.range, ob.range];
    if let Some(g) = gnb {
        bindings.push(g.range);
    }
    push(
        rec,
        key(g, opts.upsample == 2, x.dtype(), gn.is_some()),
        &params,
        bindings,
        groups,
    )?;
    let wsize = weight.dtype().size() as f64;
    rec.set_last_cost(crate::gpu::Cost {
        flop: 2.0 * m as f64 * cout as f64 * k as f64,
        bytes: x.dtype().size() as f64 * (n * h * w * cin + m * cout) as f64
            + wsize * (k * cout) as f64,
        shape: format!("{n}x{h}x{w}x{cin} -> {ho}x{wo}x{cout} k{kh}x{kw}"),
    });
    Ok(())
}
