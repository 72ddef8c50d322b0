//! matmul / linear (`shaders/matmul.wgsl`): `C = A · B + bias`, register-blocked tiles in
//! workgroup memory, f32 activations, f32 or f16 weights.

use super::gemm_core::{Gemm, Loop, gemm, gemm_variants, load64, vec4_ok};
use super::{act_defines, push, require_act, require_same_act, rows_per_binding, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{Access, GemmVariant, KernelKey, Recorder};
use crate::shaders::Define;
use crate::tensor::{DType, PANEL, Tensor};

/// Mirrors `Params` in `shaders/matmul.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub batch: u32,
    pub a_off: u32,
    pub b_off: u32,
    pub c_off: u32,
    pub bias_off: u32,
    pub a_bstride: u32,
    pub b_bstride: u32,
    pub c_bstride: u32,
    pub has_bias: u32,
    pub tiles_n: u32,
    pub tiles_m: u32,
    pub res_off: u32,
    pub has_res: u32,
    /// Elements between rows of B (N, or the full width of a fused weight).
    pub b_ld: u32,
    /// Elements between rows of A (K, or 2K for a GEGLU input).
    pub a_ld: u32,
    /// Elements between rows of C and of the residual (N, or wider for a product written
    /// into a column window of a larger tensor: attention's heads, `ops::attention_gemm`).
    pub c_ld: u32,
    /// Matrices per outer batch step (at least 1): matrix `i` of A and of C starts at
    /// `(i / b_inner)·ostride + (i % b_inner)·bstride` (attention's images × heads); `batch`
    /// for a plain batch.
    pub b_inner: u32,
    /// LayerNorm of A (define `A_LN`): where its weight and bias start, and its eps.
    pub ln_g_off: u32,
    pub ln_b_off: u32,
    pub ln_eps: f32,
    /// Elements between the outer batch steps of A and of C (see `b_inner`).
    pub a_ostride: u32,
    pub c_ostride: u32,
    /// Elements between B's outer batch steps when it is given transposed (define `B_T`).
    pub b_ostride: u32,
    pub _pad: [u32; 2],
}

/// How a product reads its A operand (the kernel's define).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AKind {
    Plain,
    /// `geglu(A)` (define `A_GEGLU`).
    Geglu,
    /// `layer_norm(A)` (define `A_LN`, the subgroup core only).
    LayerNorm,
}

/// A product's A operand transform with what it reads.
#[derive(Clone, Copy, Default)]
enum AInput<'a> {
    #[default]
    Plain,
    /// `geglu(A)`: A's rows are `2k` long, value | gate.
    Geglu,
    /// `layer_norm(A)` with this weight, bias and eps.
    LayerNorm(&'a Tensor, &'a Tensor, f32),
}

impl AInput<'_> {
    fn kind(&self) -> AKind {
        match self {
            AInput::Plain => AKind::Plain,
            AInput::Geglu => AKind::Geglu,
            AInput::LayerNorm(..) => AKind::LayerNorm,
        }
    }
}

/// The kernel of core `g` reading A as `a`, with activations (A, C, residual) of dtype `act`.
pub(super) fn key(g: Gemm, a: AKind, act: DType) -> KernelKey {
    let mut defines = g.defines;
    defines.extend(act_defines(act));
    let mut bindings = vec![
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::Read,
    ];
    match a {
        AKind::Plain => {}
        AKind::Geglu => defines.push(Define::Flag("A_GEGLU")),
        AKind::LayerNorm => {
            defines.push(Define::Flag("A_LN"));
            bindings.extend([Access::Read, Access::Read]);
        }
    }
    KernelKey {
        shader: "matmul.wgsl",
        entry: "main",
        defines,
        overrides: g.overrides,
        bindings,
        params_size: std::mem::size_of::<MatmulParams>() as u64,
    }
}

pub(crate) fn kernel_keys() -> Vec<KernelKey> {
    let mut keys = Vec::new();
    for act in [DType::F32, DType::F16] {
        for g in gemm_variants() {
            keys.push(key(g.clone(), AKind::Plain, act));
            keys.push(key(g.clone(), AKind::Geglu, act));
            if g.defines.contains(&Define::Flag("SUBGROUP_GEMM")) {
                keys.push(key(g.clone(), AKind::LayerNorm, act));
                // Panel-packed weights (CPU devices' linears), every A input.
                let mut p = g.clone();
                p.defines.push(Define::Flag("PANELS_B"));
                for a in [AKind::Plain, AKind::Geglu, AKind::LayerNorm] {
                    keys.push(key(p.clone(), a, act));
                }
                // And each of those with 64-bit loads (the vectorised loop only).
                if g.defines.contains(&Define::Flag("VEC4")) {
                    // B and C transposed (attention's scores on CPU devices), with and
                    // without 64-bit loads.
                    for load64 in [false, true] {
                        let mut t = g.clone();
                        t.defines.extend([Define::Flag("B_T"), Define::Flag("C_T")]);
                        if load64 {
                            t.defines.push(Define::Flag("LOAD64"));
                        }
                        keys.push(key(t, AKind::Plain, act));
                    }
                    for mut w in [g, p] {
                        w.defines.push(Define::Flag("LOAD64"));
                        for a in [AKind::Plain, AKind::Geglu, AKind::LayerNorm] {
                            keys.push(key(w.clone(), a, act));
                        }
                    }
                }
            }
        }
    }
    keys
}

/// `x · w + bias` for a weight `w` stored `[in, out]` (PyTorch's `Linear.weight` transposed,
/// as the loaders lay it out) and `x` of shape `[.., in]`.
pub fn linear(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    linear_with(rec, x, w, bias, None)
}

/// `x · w + bias + residual` with the residual (f32, the output's shape or any shape of as
/// many elements) added in the GEMM's epilogue: no separate add pass.
pub fn linear_residual(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
) -> Result<Tensor> {
    linear_with(rec, x, w, bias, Some(residual))
}

/// Output columns `cols` of `x · w + bias` alone: a window of a fused weight (`[in, Σ out]`,
/// such as self-attention's `to_q | to_k | to_v`) read in place, for when the fused product
/// would not fit one storage binding. `bias` is the fused bias (`[Σ out]`).
pub fn linear_columns(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cols: std::ops::Range<usize>,
) -> Result<Tensor> {
    let width = w.shape().get(1).copied().unwrap_or(0);
    if w.rank() != 2 || cols.is_empty() || cols.end > width {
        return Err(Error::shape(
            "linear",
            format!("columns {cols:?} of weight `{}` {:?}", w.name(), w.shape()),
        ));
    }
    let opts = Product {
        bias,
        cols: Some(cols),
        ..Default::default()
    };
    matmul_with(rec, x, w, opts)
}

/// A feed-forward's second linear on its GEGLU: `geglu(p) · w + bias + residual` for the
/// first linear's output `p` `[.., 2f]` (value | gate, diffusers `GEGLU`) and `w` `[f, out]`,
/// the GEGLU applied as the GEMM reads `p` — the `[.., f]` activation is never stored and
/// needs no pass of its own — except on CPU devices for outputs wider than
/// [`GEGLU_FUSE_MAX_N_CPU`], where a GEGLU pass is cheaper.
pub fn linear_geglu(
    rec: &mut Recorder<'_>,
    p: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    // Each 32-column tile of the subgroup core recomputes the GELU of the A values it loads:
    // measured on lavapipe, `[512×2560]·[1280×320]` took 42 ms fused against 32 ms for the
    // GEGLU pass and the product, and the built-in model's 48-wide one 0.7 against 0.8 ms.
    // GPUs (the tiled core, 64 columns per A tile in workgroup memory) always fuse: the
    // `[rows, 4c]` activation is the feed-forward's largest.
    let n = w.shape().last().copied().unwrap_or(0);
    if rec.gpu().gemm_variant() == GemmVariant::Subgroup && n > GEGLU_FUSE_MAX_N_CPU {
        let g = super::geglu(rec, p)?;
        return linear_with(rec, &g, w, bias, residual);
    }
    let opts = Product {
        bias,
        residual,
        a: AInput::Geglu,
        ..Default::default()
    };
    linear_opts(rec, p, w, opts)
}

/// Widest output the GEGLU is fused into on CPU devices (see [`linear_geglu`]).
pub const GEGLU_FUSE_MAX_N_CPU: usize = 128;

/// Widest output a LayerNorm is fused into on CPU devices (see [`linear_layer_norm`]).
pub const LN_FUSE_MAX_N: usize = 160;

/// `layer_norm(x) · w + bias` (`torch.nn.LayerNorm` with `gamma`, `beta`, `eps` over the last
/// dim, then the linear). On CPU devices (the subgroup GEMM core), for outputs up to
/// [`LN_FUSE_MAX_N`] wide, the GEMM normalises A as it reads it — one dispatch, no normalised
/// activation stored; otherwise a `layer_norm` pass, then the product (on GPUs the tiled
/// core's threads share rows, and each would recompute the row's statistics).
pub fn linear_layer_norm(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    (gamma, beta, eps): (&Tensor, &Tensor, f32),
    w: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    // The statistics add up to 4·K loop iterations to an invocation (scalar loop: two rows,
    // two passes) on top of the K loop's 1.25·K: kept under a driver's loop cap (llvmpipe
    // before Mesa 25 ends loops silently past 65535 iterations per invocation).
    let c = x.shape().last().copied().unwrap_or(0);
    let under_cap = rec
        .gpu()
        .loop_iteration_limit()
        .is_none_or(|lim| 6 * c < lim as usize);
    // Every 32-column tile recomputes its rows' statistics and normalises as it loads: worth
    // a pass only for narrow outputs. Measured on Mesa 25 lavapipe (norm pass + product vs
    // fused, f16 weights): [128×48]·[48×144] 0.26 vs 0.23 ms, [32×96]·[96×288] 0.19 vs 0.19,
    // [128×48]·[48×384] 0.43 vs 0.51, [2048×320]·[320×320] 25 vs 34 ms.
    let narrow = w.shape().last().is_some_and(|&n| n <= LN_FUSE_MAX_N);
    if rec.gpu().gemm_variant() != GemmVariant::Subgroup || !under_cap || !narrow {
        let xn = super::layer_norm(rec, x, gamma, beta, eps)?;
        return linear(rec, &xn, w, bias);
    }
    require_act(rec, "linear", "x", x)?;
    super::norm::check_affine("linear", c, gamma, beta)?;
    let opts = Product {
        bias,
        a: AInput::LayerNorm(gamma, beta, eps),
        ..Default::default()
    };
    linear_opts(rec, x, w, opts)
}

fn linear_with(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let opts = Product {
        bias,
        residual,
        ..Default::default()
    };
    linear_opts(rec, x, w, opts)
}

fn linear_opts(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &Tensor,
    opts: Product<'_>,
) -> Result<Tensor> {
    if w.rank() != 2 {
        return Err(Error::shape(
            "linear",
            format!(
                "weight `{}` must be [in, out], got {:?}",
                w.name(),
                w.shape()
            ),
        ));
    }
    matmul_with(rec, x, w, opts)
}

/// Batched matrix product. `a`: f32 `[.., m, k]`. `b`: `[k, n]` (shared by every batch: the
/// batch folds into m) or `[.., k, n]` with the same batch dims as `a`; f32 or f16.
/// `bias`: `[n]` of `b`'s dtype. Returns f32 `[.., m, n]`.
pub fn matmul(
    rec: &mut Recorder<'_>,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let opts = Product {
        bias,
        ..Default::default()
    };
    matmul_with(rec, a, b, opts)
}

/// `a · b` written into `out`, for a batched `b`: `a` `[batch, m, k]` (f32 activations),
/// `b` `[batch, k, n]` (plain or panel-packed, f32 or f16), `out` `[batch, m, n]` of `a`'s
/// dtype — a view of a larger tensor allowed (Winograd's products in parts of its
/// transformed filter, `ops::winograd`).
pub(crate) fn batched_matmul_into(
    rec: &mut Recorder<'_>,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
) -> Result<()> {
    const OP: &str = "matmul";
    require_act(rec, OP, "a", a)?;
    require_same_act(OP, "out", out, a.dtype())?;
    let (sa, sb, so) = (a.shape(), b.shape(), out.shape());
    if sa.len() != 3 || sb.len() != 3 || so != [sa[0], sa[1], sb[2]] || sb[..2] != [sa[0], sa[2]] {
        return Err(Error::shape(
            OP,
            format!(
                "`{}` {sa:?} · `{}` {sb:?} into `{}` {so:?}: need [b, m, k] · [b, k, n] into [b, m, n]",
                a.name(),
                b.name(),
                out.name()
            ),
        ));
    }
    let (batch, m, k, n) = (sa[0], sa[1], sa[2], sb[2]);
    let bw = BWindow {
        b,
        col0: 0,
        ld: n,
        a: AInput::Plain,
    };
    record(rec, a, &bw, None, None, out, m, n, k, batch, k * n)
}

/// What a product adds to `A · B`.
#[derive(Clone, Default)]
struct Product<'a> {
    bias: Option<&'a Tensor>,
    /// Added in the epilogue (f32, as many values as the output).
    residual: Option<&'a Tensor>,
    /// Only these columns of `B` (2-D `B`).
    cols: Option<std::ops::Range<usize>>,
    /// How A is read (GEGLU, LayerNorm: 2-D `B`).
    a: AInput<'a>,
}

fn matmul_with(
    rec: &mut Recorder<'_>,
    a: &Tensor,
    b: &Tensor,
    opts: Product<'_>,
) -> Result<Tensor> {
    const OP: &str = "matmul";
    let Product {
        bias,
        residual,
        cols,
        a: a_in,
    } = opts;
    let geglu = a_in.kind() == AKind::Geglu;
    let act = require_act(rec, OP, "a", a)?;
    if a.rank() < 2 || b.rank() < 2 {
        return Err(Error::shape(
            OP,
            format!(
                "operands need rank >= 2: `{}` {:?}, `{}` {:?}",
                a.name(),
                a.shape(),
                b.name(),
                b.shape()
            ),
        ));
    }
    let (ar, br) = (a.rank(), b.rank());
    let (m, a_ld) = (a.shape()[ar - 2], a.shape()[ar - 1]);
    // With GEGLU, A's rows hold value | gate: K is half of them.
    let k = if geglu { a_ld / 2 } else { a_ld };
    if geglu && a_ld % 2 != 0 {
        return Err(Error::shape(
            OP,
            format!(
                "GEGLU input `{}` {:?} needs an even last dim",
                a.name(),
                a.shape()
            ),
        ));
    }
    let (kb, ld) = (b.shape()[br - 2], b.shape()[br - 1]);
    let window = cols.clone().unwrap_or(0..ld);
    let n = window.len();
    if k != kb {
        return Err(Error::shape(
            OP,
            format!(
                "inner dims differ: `{}` {:?} · `{}` {:?}",
                a.name(),
                a.shape(),
                b.name(),
                b.shape()
            ),
        ));
    }
    if let Some(bias) = bias {
        if bias.shape() != [ld] || bias.dtype() != b.dtype() {
            return Err(Error::shape(
                OP,
                format!(
                    "bias `{}` must be [{ld}] {:?}, got {:?} {:?}",
                    bias.name(),
                    b.dtype(),
                    bias.shape(),
                    bias.dtype()
                ),
            ));
        }
    }
    let a_batch: usize = a.shape()[..ar - 2].iter().product();
    let mut out_shape = a.shape().to_vec();
    out_shape[ar - 1] = n;
    if let Some(r) = residual {
        require_same_act(OP, "residual", r, act)?;
        if r.numel() != a_batch * m * n {
            return Err(Error::shape(
                OP,
                format!(
                    "residual `{}` {:?} must hold the output's {:?} values",
                    r.name(),
                    r.shape(),
                    out_shape
                ),
            ));
        }
    }
    let out = Tensor::empty_in(rec, &out_shape, act, "matmul.out")?;
    let res = residual.map(|r| r.reshape(&out_shape)).transpose()?;
    if br == 2 {
        // One weight for every batch: fold the batch into M, split rows to fit bindings.
        let rows = a_batch * m;
        let a2 = a.reshape(&[rows, a_ld])?;
        let c2 = out.reshape(&[rows, n])?;
        let r2 = res.as_ref().map(|r| r.reshape(&[rows, n])).transpose()?;
        let chunk = rows_per_binding(rec, act.size() * a_ld.max(n) as u64);
        let b = BWindow {
            b,
            col0: window.start,
            ld,
            a: a_in,
        };
        let mut r0 = 0;
        while r0 < rows {
            let len = chunk.min(rows - r0);
            let r = r2.as_ref().map(|r| r.narrow0(r0, len)).transpose()?;
            record(
                rec,
                &a2.narrow0(r0, len)?,
                &b,
                bias,
                r.as_ref(),
                &c2.narrow0(r0, len)?,
                len,
                n,
                k,
                1,
                0,
            )?;
            r0 += len;
        }
    } else {
        if cols.is_some() || a_in.kind() != AKind::Plain {
            return Err(Error::unsupported(
                OP,
                "a column window, GEGLU or LayerNorm input with a batched B",
            ));
        }
        let b_batch: usize = b.shape()[..br - 2].iter().product();
        if b.shape()[..br - 2] != a.shape()[..ar - 2] {
            return Err(Error::shape(
                OP,
                format!(
                    "batch dims differ: `{}` {:?} · `{}` {:?} ({a_batch} vs {b_batch})",
                    a.name(),
                    a.shape(),
                    b.name(),
                    b.shape()
                ),
            ));
        }
        let b = BWindow {
            b,
            col0: 0,
            ld: n,
            a: AInput::Plain,
        };
        record(
            rec,
            a,
            &b,
            bias,
            res.as_ref(),
            &out,
            m,
            n,
            k,
            a_batch,
            k * n,
        )?;
    }
    Ok(out)
}

/// B and the columns of it a product reads: `col0 ..` with rows `ld` elements apart; and
/// how A is read (through GEGLU its rows are `2k` long; a LayerNorm's weight, bias, eps).
struct BWindow<'a> {
    b: &'a Tensor,
    col0: usize,
    ld: usize,
    a: AInput<'a>,
}

#[allow(clippy::too_many_arguments)]
fn record(
    rec: &mut Recorder<'_>,
    a: &Tensor,
    bw: &BWindow<'_>,
    bias: Option<&Tensor>,
    res: Option<&Tensor>,
    c: &Tensor,
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    b_bstride: usize,
) -> Result<()> {
    const OP: &str = "matmul";
    let b = bw.b;
    let act = a.dtype();
    let act_size = act.size() as f64;
    let gpu = rec.gpu();
    let ab = a.bind(gpu, OP)?;
    let rb = res.unwrap_or(a).bind(gpu, OP)?;
    let bb = b.bind_any(gpu, OP)?;
    let biasb = bias.unwrap_or(b).bind_any(gpu, OP)?;
    // A panel-packed B (CPU devices' weights): the window starts at a panel, and b_ld is a
    // panel's length (K rows of PANEL values).
    // A batched one (`[batch, k, n]`, Winograd's transformed filters) is `batch` packed
    // matrices one after another, read whole.
    let panels = b.panels();
    let batched_ok = b.rank() == 3 && b_bstride == k * n && bw.col0 == 0 && bw.ld == n;
    if panels
        && (gpu.gemm_variant() != GemmVariant::Subgroup
            || bw.col0 % PANEL != 0
            || (batch != 1 || b.rank() != 2) && !batched_ok)
    {
        return Err(Error::unsupported(
            OP,
            format!(
                "panel-packed weight `{}` {:?} (columns from {}, batch {batch}) on this device's GEMM core",
                b.name(),
                b.shape(),
                bw.col0
            ),
        ));
    }
    let (b_off, b_ld) = if panels {
        (bw.col0 / PANEL * k * PANEL, k * PANEL)
    } else {
        (bw.col0, bw.ld)
    };
    let cb = c.bind(gpu, OP)?;
    let col0 = u32_of(OP, "column", bw.col0)?;
    let geglu = bw.a.kind() == AKind::Geglu;
    let lnb = match bw.a {
        AInput::LayerNorm(g, be, eps) => Some((g.bind(gpu, OP)?, be.bind(gpu, OP)?, eps)),
        _ => None,
    };
    let mut operands = vec![(&ab, a.dtype()), (&bb, b.dtype()), (&cb, act), (&rb, act)];
    if let Some((g, be, _)) = &lnb {
        operands.extend([(g, DType::F32), (be, DType::F32)]);
    }
    let vec4 = bw.col0 % 4 == 0 && bw.ld % 4 == 0 && vec4_ok(k, n, &operands);
    let mut g = gemm(
        gpu.gemm_variant(),
        b.dtype(),
        Loop::for_shape(vec4, m, n, batch),
    );
    if panels {
        g.defines.push(Define::Flag("PANELS_B"));
    }
    load64(gpu, &mut g);
    let tiles_n = n.div_ceil(g.tile_n);
    let tiles_m = m.div_ceil(g.tile_m);
    let params = MatmulParams {
        m: u32_of(OP, "m", m)?,
        n: u32_of(OP, "n", n)?,
        k: u32_of(OP, "k", k)?,
        batch: u32_of(OP, "batch", batch)?,
        a_off: ab.elem_offset,
        b_off: bb.elem_offset + u32_of(OP, "b offset", b_off)?,
        c_off: cb.elem_offset,
        bias_off: biasb.elem_offset + col0,
        a_bstride: u32_of(OP, "a batch stride", m * k)?,
        a_ld: u32_of(OP, "a row length", if geglu { 2 * k } else { k })?,
        b_bstride: u32_of(OP, "b batch stride", b_bstride)?,
        c_bstride: u32_of(OP, "c batch stride", m * n)?,
        has_bias: bias.is_some() as u32,
        tiles_n: tiles_n as u32,
        tiles_m: tiles_m as u32,
        res_off: rb.elem_offset,
        has_res: res.is_some() as u32,
        b_ld: u32_of(OP, "b row length", b_ld)?,
        c_ld: u32_of(OP, "n", n)?,
        b_inner: u32_of(OP, "batch", batch.max(1))?,
        ln_g_off: lnb.as_ref().map_or(0, |l| l.0.elem_offset),
        ln_b_off: lnb.as_ref().map_or(0, |l| l.1.elem_offset),
        ln_eps: lnb.as_ref().map_or(0.0, |l| l.2),
        ..Default::default()
    };
    let groups = gpu.grid(OP, (tiles_n * tiles_m * batch) as u64)?;
    let mut bindings = vec![ab.range, bb.range, biasb.range, cb.range, rb.range];
    if let Some((g, be, _)) = lnb {
        bindings.extend([g.range, be.range]);
    }
    push(rec, key(g, bw.a.kind(), act), &params, bindings, groups)?;
    let wsize = b.dtype().size() as f64;
    let (m, n, k, bt) = (m as f64, n as f64, k as f64, batch as f64);
    rec.set_last_cost(crate::gpu::Cost {
        flop: 2.0 * bt * m * n * k,
        bytes: bt * act_size * (m * k * if geglu { 2.0 } else { 1.0 } + m * n)
            + wsize * k * n * (b_bstride.min(1) as f64 * (bt - 1.0) + 1.0),
        shape: format!("{batch}x[{m}x{k}]·[{k}x{n}]"),
    });
    Ok(())
}
