//! Winograd F(4×4, 3×3) and F(2×2, 3×3) for the 3×3, stride-1 convolutions on CPU devices
//! (`shaders/winograd.wgsl`): the filter and each 4×4 (2×2) output tile's 6×6 (4×4) input
//! patch are transformed so that a tile's 144 (36) multiplies per channel pair become 36
//! (16), done as 36 (16) batched products by the GEMM core ([`super::matmul`]), then
//! transformed back with the bias and residual added. F(4×4) where the image has enough
//! tiles ([`MIN_TILES`]) and its transformed filter fits a binding, else F(2×2). On lavapipe
//! the GEMM core's throughput is what every conv costs, so fewer multiplies are less time
//! (see the README's "Winograd convolutions on CPU devices").
//! GPUs keep the direct implicit GEMM (its fused group norm, no transformed temporaries).

use super::conv2d::{Conv2dOptions, residual_mode};
use super::elementwise::{FlatLayout, flat_grid};
use super::gemm_core::vec4_ok;
use super::{fits_binding, push, rows_per_binding, u32_of};
use crate::error::Result;
use crate::gpu::{Access, KernelKey, Recorder};
use crate::shaders::Define;
use crate::tensor::{DType, PANEL, Tensor};

/// Mirrors `Params` in `shaders/winograd.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct WinogradParams {
    n: u32,
    h: u32,
    w: u32,
    cin: u32,
    ho: u32,
    wo: u32,
    cout: u32,
    tiles_w: u32,
    tiles_h: u32,
    t0: u32,
    t_len: u32,
    total: u32,
    pad_t: u32,
    pad_l: u32,
    x_off: u32,
    w_off: u32,
    bias_off: u32,
    res_off: u32,
    out_off: u32,
    has_bias: u32,
    has_res: u32,
    panels: u32,
    u_panels: u32,
    e0: u32,
    e_len: u32,
    _pad: [u32; 3],
}

/// The op its errors name.
const OP: &str = "conv2d (Winograd)";

/// Largest transformed input plus product (`V` and `M`, f32) one chunk of tiles may hold; a
/// conv with more tiles runs in chunks, so the temporaries stay bounded at any image size.
const CHUNK_BYTES: u64 = 64 << 20;

/// Fewest output tiles worth transforming the filter for (its cost grows with cin·cout,
/// the multiplies saved with tiles·cin·cout).
const MIN_TILES: usize = 64;

/// What a transform dispatch moves, for the profile.
struct Traffic {
    bytes: f64,
    shape: String,
}

/// One transform kernel (`stage`, the weight dtype, 2× upsampled input) over `items` items
/// (a tile or filter row, four channels each).
fn dispatch(
    rec: &mut Recorder<'_>,
    (stage, w, up2, tile): (Stage, DType, bool, Tile),
    items: usize,
    params: WinogradParams,
    bindings: Vec<crate::gpu::BufferRange>,
    cost: Traffic,
) -> Result<()> {
    let (grid, layout) = flat_grid(rec, OP, items)?;
    let params = WinogradParams {
        total: u32_of(OP, "items", items)?,
        ..params
    };
    push(
        rec,
        key(stage, layout, w, up2, tile, rec.gpu().load64()),
        &params,
        bindings,
        grid,
    )?;
    rec.set_last_cost(crate::gpu::Cost {
        flop: 0.0,
        bytes: cost.bytes,
        shape: cost.shape,
    });
    Ok(())
}

/// Which of the three kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Weight,
    Input,
    Output,
}

fn key(
    stage: Stage,
    layout: FlatLayout,
    w: DType,
    up2: bool,
    tile: Tile,
    load64: bool,
) -> KernelKey {
    let mut defines = Vec::new();
    if load64 {
        defines.push(Define::Flag("LOAD64"));
    }
    if tile == Tile::F4 {
        defines.push(Define::Flag("F4"));
    }
    if w == DType::F16 {
        defines.push(Define::Flag("W_F16"));
    }
    if up2 {
        defines.push(Define::Flag("UP2"));
    }
    let (entry, flag, bindings) = match stage {
        Stage::Weight => (
            "weight_transform",
            "WINO_W",
            vec![Access::Read, Access::ReadWrite],
        ),
        Stage::Input => (
            "input_transform",
            "WINO_IN",
            vec![Access::Read, Access::ReadWrite],
        ),
        Stage::Output => (
            "output_transform",
            "WINO_OUT",
            vec![Access::Read, Access::Read, Access::Read, Access::ReadWrite],
        ),
    };
    defines.push(Define::Flag(flag));
    KernelKey {
        shader: "winograd.wgsl",
        entry,
        defines,
        overrides: layout.overrides(),
        bindings,
        params_size: std::mem::size_of::<WinogradParams>() as u64,
    }
}

pub(crate) fn kernel_keys(layouts: [FlatLayout; 2]) -> Vec<KernelKey> {
    let mut v = Vec::new();
    for layout in layouts {
        for tile in [Tile::F2, Tile::F4] {
            for wide in [false, true] {
                for w in [DType::F32, DType::F16] {
                    v.push(key(Stage::Weight, layout, w, false, tile, wide));
                    v.push(key(Stage::Output, layout, w, false, tile, wide));
                }
                for up2 in [false, true] {
                    v.push(key(Stage::Input, layout, DType::F32, up2, tile, wide));
                }
            }
        }
    }
    v
}

/// The output tile: F(2×2, 3×3) or F(4×4, 3×3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tile {
    F2,
    F4,
}

impl Tile {
    /// Output pixels per tile side.
    fn side(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Elements of a transformed tile (and products per tile and channel pair).
    fn elems(self) -> usize {
        (self.side() + 2).pow(2)
    }
}

/// F(4×4, 3×3) where it has [`MIN_TILES`] tiles (36 products per 16 outputs against
/// F(2×2)'s 64), else F(2×2, 3×3) on the same condition, else none (the direct conv) — and
/// none where one element's transformed filter `[cin, cout]` exceeds a binding (a larger
/// transformed filter is made and multiplied in parts, [`u_parts`]).
fn tile_for(
    rec: &Recorder<'_>,
    n: usize,
    [ho, wo]: [usize; 2],
    cin: usize,
    cout: usize,
) -> Option<Tile> {
    if !fits_binding(rec, 4 * (cin * cout) as u64) {
        return None;
    }
    [Tile::F4, Tile::F2].into_iter().find(|t| {
        let s = t.side();
        n * ho.div_ceil(s) * wo.div_ceil(s) >= MIN_TILES
    })
}

/// The transformed filter's elements in parts that each fit one storage binding, as even as
/// the count allows: `(e0, len)` per part. One part where the whole `[e, cin, cout]` fits
/// (F(4×4) at SD's 1280 and 2560 input channels does not: 236–472 MB against lavapipe's
/// 128 MiB).
fn u_parts(rec: &Recorder<'_>, e: usize, cin: usize, cout: usize) -> Vec<(usize, usize)> {
    let per_part = rows_per_binding(rec, 4 * (cin * cout) as u64).min(e);
    let parts = e.div_ceil(per_part);
    let len = e.div_ceil(parts);
    (0..parts)
        .map(|i| (i * len, len.min(e - i * len)))
        .collect()
}

/// A top padding of −1 (wrapped): a row band of a 2× upsampled input that starts one row
/// above the first it needs (`conv2d::record_bands`); the shaders read `pad_t` as i32.
fn first_band_row_early(p: usize) -> bool {
    p as isize == -1
}

/// How many images one [`conv3x3`] call may take so that its input and output each fit one
/// storage binding (the caller splits the batch so); `None` when one image does not fit
/// (those go through the direct conv's row bands).
fn images_per_call(rec: &Recorder<'_>, x: &Tensor, out: &Tensor) -> Option<usize> {
    let per_image = |t: &Tensor| crate::tensor::byte_len(&t.shape()[1..], t.dtype());
    let bytes = per_image(x).max(per_image(out));
    fits_binding(rec, bytes).then(|| rows_per_binding(rec, bytes).min(x.shape()[0]))
}

/// Whether [`conv3x3`] takes this conv: Winograd on for the device ([`crate::Gpu::winograd`]:
/// CPU devices), not a narrow conv (`conv2d::narrow`), 3×3 at stride 1, f32 activations, at
/// least [`MIN_TILES`] output tiles in every call of [`images_per_call`] images, channel
/// counts and operand offsets that allow vec4 access, and an image whose input and output fit
/// one binding each (larger images go through the direct conv's bands, each band asked
/// again); F(4×4) or F(2×2) whose transformed filter fits one binding ([`tile_for`]).
pub(crate) fn takes(
    rec: &Recorder<'_>,
    x: &Tensor,
    weight: &Tensor,
    residual: Option<&Tensor>,
    out: &Tensor,
    opts: Conv2dOptions,
) -> Result<bool> {
    let gpu = rec.gpu();
    let s = weight.shape();
    if !gpu.winograd()
        // The narrow kernel's convs (Winograd's products would be 4 columns wide too).
        || super::conv2d::narrow(gpu, s[2], s[3], weight)
        || s[0] != 3
        || s[1] != 3
        || opts.stride != 1
        || x.dtype() != DType::F32
        || opts.padding[1..].iter().any(|&p| p > 2)
        || (opts.padding[0] > 2 && !first_band_row_early(opts.padding[0]))
    {
        return Ok(false);
    }
    let (cin, cout) = (s[2], s[3]);
    let [n, ho, wo] = [out.shape()[0], out.shape()[1], out.shape()[2]];
    // Every call of images_per_call images (the last one may have fewer) needs its tiles.
    let Some(per_call) = images_per_call(rec, x, out) else {
        return Ok(false);
    };
    let fewest = match n % per_call {
        0 => per_call,
        r => r,
    };
    if tile_for(rec, fewest, [ho, wo], cin, cout).is_none() {
        return Ok(false);
    }
    // The first call's operands (every call's start a whole number of images later, each
    // image a whole number of vec4s since cin and cout are checked multiples of 4).
    let first = |t: &Tensor| t.narrow0(0, per_call.min(t.shape()[0]));
    let mut operands = vec![
        (first(x)?.bind(gpu, OP)?, x.dtype()),
        (weight.bind_any(gpu, OP)?, weight.dtype()),
        (first(out)?.bind(gpu, OP)?, out.dtype()),
    ];
    if let Some(r) = residual {
        operands.push((first(r)?.bind(gpu, OP)?, r.dtype()));
    }
    let refs: Vec<_> = operands.iter().map(|(b, d)| (b, *d)).collect();
    Ok(vec4_ok(cin, cout, &refs))
}

/// Elements `e0 .. e0 + e_len` of the transformed filter `U = G g Gᵀ` of `weight`
/// (`[3, 3, cin, cout]`, plain or panel-packed, f32 or f16): `[e_len, cin, cout]` f32, each
/// `U_e` panel-packed when cout is whole panels (the GEMM core reads wide B rows much faster
/// so). `base`: the conv's parameters.
fn transformed_filter(
    rec: &mut Recorder<'_>,
    weight: &Tensor,
    base: WinogradParams,
    tile: Tile,
    e0: usize,
    e_len: usize,
) -> Result<Tensor> {
    let (cin, cout) = (base.cin as usize, base.cout as usize);
    let wdt = weight.dtype();
    let u_panels = cout % PANEL == 0;
    let u = Tensor::empty_in(rec, &[e_len, cin, cout], DType::F32, "winograd.u")?;
    let (wb, ub) = (weight.bind_any(rec.gpu(), OP)?, u.bind(rec.gpu(), OP)?);
    let params = WinogradParams {
        w_off: wb.elem_offset,
        panels: weight.panels() as u32,
        u_panels: u_panels as u32,
        e0: e0 as u32,
        e_len: e_len as u32,
        ..base
    };
    let cost = Traffic {
        bytes: (wdt.size() * 9 + 4 * e_len as u64) as f64 * (cin * cout) as f64,
        shape: format!("[3x3x{cin}x{cout}] -> [{e0}..{}x{cin}x{cout}]", e0 + e_len),
    };
    let stage = (Stage::Weight, wdt, false, tile);
    dispatch(
        rec,
        stage,
        cin * cout / 4,
        params,
        vec![wb.range, ub.range],
        cost,
    )?;
    Ok(if u_panels { u.with_panels() } else { u })
}

/// The conv of [`super::conv2d`] by Winograd (F(4×4, 3×3) or F(2×2, 3×3)) into `out` `[n, ho, wo, cout]`
/// (the caller checked [`takes`]). `x`: `[n, h, w, cin]` f32 (read 2× upsampled when
/// `opts.upsample` is 2); `weight`: `[3, 3, cin, cout]` (plain or panel-packed), f32 or f16;
/// `bias`: `[cout]` of its dtype; `residual`: as the output, or `[n, cout]` per image.
pub(crate) fn conv3x3(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    out: &Tensor,
    opts: Conv2dOptions,
) -> Result<()> {
    let [n, ph, pw, cin] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    let (h, w) = (ph * opts.upsample, pw * opts.upsample);
    let [ho, wo, cout] = [out.shape()[1], out.shape()[2], out.shape()[3]];
    let tile = tile_for(rec, n, [ho, wo], cin, cout).ok_or_else(|| {
        crate::error::Error::unsupported(OP, format!("{n}x{ho}x{wo} outputs: too few tiles"))
    })?;
    let (side, e) = (tile.side(), tile.elems());
    let (tiles_h, tiles_w) = (ho.div_ceil(side), wo.div_ceil(side));
    let tiles = n * tiles_h * tiles_w;
    let up2 = opts.upsample == 2;
    let wdt = weight.dtype();
    let base = WinogradParams {
        n: n as u32,
        h: u32_of(OP, "h", h)?,
        w: u32_of(OP, "w", w)?,
        cin: cin as u32,
        ho: ho as u32,
        wo: wo as u32,
        cout: cout as u32,
        tiles_w: tiles_w as u32,
        tiles_h: tiles_h as u32,
        // Two's complement of −1 for a band starting a row early (`first_band_row_early`).
        pad_t: opts.padding[0] as u32,
        pad_l: opts.padding[2] as u32,
        ..Default::default()
    };

    // Chunks of tiles whose V [e, t, cin] and M [e, t, cout] fit CHUNK_BYTES.
    let per_tile = 4 * (e * (cin + cout)) as u64;
    let chunk = ((CHUNK_BYTES / per_tile) as usize)
        .min(rows_per_binding(rec, 4 * (e * cin.max(cout)) as u64))
        .clamp(1, tiles);
    // U = G g Gᵀ for every (cin, cout) pair, [e, cin, cout] f32, in parts that fit a binding
    // each. With one chunk of tiles each part is made right before its product and released
    // after it (one part's memory at a time); with several chunks every part is made once,
    // up front, and kept for all of them.
    let parts = u_parts(rec, e, cin, cout);
    let u_part = |rec: &mut Recorder<'_>, (e0, e_len): (usize, usize)| {
        transformed_filter(rec, weight, base, tile, e0, e_len)
    };
    let kept = if chunk < tiles {
        parts
            .iter()
            .map(|&p| u_part(rec, p))
            .collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };

    let mut t0 = 0;
    while t0 < tiles {
        let t_len = chunk.min(tiles - t0);
        let chunk_params = WinogradParams {
            t0: t0 as u32,
            t_len: t_len as u32,
            ..base
        };
        let v = Tensor::empty_in(rec, &[e, t_len, cin], DType::F32, "winograd.v")?;
        let (xb, vb) = (x.bind(rec.gpu(), OP)?, v.bind(rec.gpu(), OP)?);
        let params = WinogradParams {
            x_off: xb.elem_offset,
            ..chunk_params
        };
        let cost = Traffic {
            bytes: 4.0 * (e * t_len * cin) as f64 * 2.0,
            shape: format!("{n}x{h}x{w}x{cin} -> [{e}x{t_len}x{cin}]"),
        };
        let stage = (Stage::Input, DType::F32, up2, tile);
        dispatch(
            rec,
            stage,
            t_len * cin / 4,
            params,
            vec![xb.range, vb.range],
            cost,
        )?;
        // M_e = V_e · U_e for every element e of a transformed tile, part by part of U.
        let m = Tensor::empty_in(rec, &[e, t_len, cout], DType::F32, "winograd.m")?;
        for (i, &(e0, len)) in parts.iter().enumerate() {
            let u = match kept.get(i) {
                Some(u) => u.clone(),
                None => u_part(rec, (e0, len))?,
            };
            let (vp, mp) = (v.narrow0(e0, len)?, m.narrow0(e0, len)?);
            super::matmul::batched_matmul_into(rec, &vp, &u, &mp)?;
        }
        drop(v);
        let gpu = rec.gpu();
        let mb = m.bind(gpu, OP)?;
        let bb = bias.unwrap_or(weight).bind_any(gpu, OP)?;
        let rb = residual.unwrap_or(x).bind(gpu, OP)?;
        let ob = out.bind(gpu, OP)?;
        let params = WinogradParams {
            bias_off: bb.elem_offset,
            res_off: rb.elem_offset,
            out_off: ob.elem_offset,
            has_bias: bias.is_some() as u32,
            has_res: residual_mode(residual),
            ..chunk_params
        };
        let cost = Traffic {
            bytes: 4.0 * ((e + side * side) * t_len * cout) as f64,
            shape: format!("[{e}x{t_len}x{cout}] -> {n}x{ho}x{wo}x{cout}"),
        };
        let bindings = vec![mb.range, bb.range, rb.range, ob.range];
        dispatch(
            rec,
            (Stage::Output, wdt, false, tile),
            t_len * cout / 4,
            params,
            bindings,
            cost,
        )?;
        t0 += t_len;
    }
    Ok(())
}
