//! Products read and written through offsets and strides (`shaders/matmul.wgsl`'s batch of
//! two levels and transposed operands): CPU devices' attention GEMMs, `ops::attention_gemm`.

use super::gemm_core::{Loop, gemm, load64, vec4_ok};
use super::matmul::{AKind, MatmulParams, key};
use super::{push, require_act, require_same_act, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{GemmVariant, Recorder};
use crate::shaders::Define;
use crate::tensor::{DType, Tensor};

/// One operand of [`strided_product`]: a tensor, where its first matrix starts in it
/// (elements), the elements between its rows, between consecutive matrices of one outer
/// step and between outer steps (the product's `inner` matrices per step).
pub(crate) struct Strided<'a> {
    pub t: &'a Tensor,
    pub off: usize,
    pub ld: usize,
    pub bstride: usize,
    pub ostride: usize,
}

impl Strided<'_> {
    /// Whether `outer × inner` matrices of `rows × cols` lie inside the tensor.
    fn fits(&self, outer: usize, inner: usize, rows: usize, cols: usize) -> bool {
        let last = self.off
            + (outer - 1) * self.ostride
            + (inner - 1) * self.bstride
            + (rows - 1) * self.ld
            + cols;
        (rows == 1 || cols <= self.ld) && last <= self.t.numel()
    }
}

/// How [`strided_product`]'s B and C are stored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Layout {
    /// B `k × n` (rows `ld` apart, one batch level: its `ostride` must be `inner ·
    /// bstride`), C `m × n`.
    Plain,
    /// Both transposed (subgroup core, vectorised loop; CPU devices' attention scores, Sᵀ =
    /// K·Qᵀ stored as S, `ops::attention_gemm`): B as the rows of Bᵀ (`n × k`, two batch
    /// levels like A and C), C written as Cᵀ (`n × m`; `ld` at least `m` rounded up to 4,
    /// the elements past `m` left as they are). N need not be a multiple of 4.
    Transposed,
}

/// `C[i] = A[i] · B[i]` for `batch` matrices read and written through offsets and strides,
/// `inner` matrices per outer step (attention's per-head products on CPU devices, images ×
/// heads, `ops::attention_gemm`): A `m × k` of the activation dtype, B f32 and C of A's
/// dtype laid out as `layout` says; no bias. The vectorised loop where K, N (for the plain
/// layout), every offset and stride are multiples of 4.
#[allow(clippy::too_many_arguments)]
pub(crate) fn strided_product(
    rec: &mut Recorder<'_>,
    a: &Strided<'_>,
    b: &Strided<'_>,
    c: &Strided<'_>,
    layout: Layout,
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    inner: usize,
) -> Result<()> {
    const OP: &str = "matmul";
    let act = require_act(rec, OP, "a", a.t)?;
    require_same_act(OP, "c", c.t, act)?;
    if b.t.dtype() != DType::F32 {
        return Err(Error::DType {
            op: OP,
            tensor: "b",
            got: b.t.dtype(),
            expected: "f32",
        });
    }
    if m * n * k * batch == 0 {
        return Err(Error::shape(
            OP,
            format!("empty product: {batch} × [{m}x{k}]·[{k}x{n}]"),
        ));
    }
    let t = layout == Layout::Transposed;
    if inner == 0 || batch % inner != 0 || (!t && b.ostride != inner * b.bstride) {
        return Err(Error::shape(
            OP,
            format!(
                "{batch} matrices in steps of {inner}, B's steps {} apart (matrices {})",
                b.ostride, b.bstride
            ),
        ));
    }
    let outer = batch / inner;
    let (b_rows, b_cols, c_rows, c_cols) = if t {
        (n, k, n, m.next_multiple_of(4))
    } else {
        (k, n, m, n)
    };
    for (x, rows, cols) in [(a, m, k), (b, b_rows, b_cols), (c, c_rows, c_cols)] {
        if !x.fits(outer, inner, rows, cols) {
            return Err(Error::shape(
                OP,
                format!(
                    "{outer}x{inner} matrices of {rows}x{cols} from element {} (rows {} apart, matrices {}, steps {}) overrun `{}` {:?}",
                    x.off,
                    x.ld,
                    x.bstride,
                    x.ostride,
                    x.t.name(),
                    x.t.shape()
                ),
            ));
        }
    }
    let gpu = rec.gpu();
    let (ab, bb, cb) = (a.t.bind(gpu, OP)?, b.t.bind(gpu, OP)?, c.t.bind(gpu, OP)?);
    let strides_ok = [a, b, c]
        .iter()
        .all(|x| (x.off | x.ld | x.bstride | x.ostride) % 4 == 0);
    // N is the vectorised loads' and stores' unit unless B is read and C written along K
    // and M.
    let n_unit = if t { 4 } else { n };
    let vec4 = strides_ok && vec4_ok(k, n_unit, &[(&ab, act), (&bb, DType::F32), (&cb, act)]);
    let mut g = gemm(
        gpu.gemm_variant(),
        DType::F32,
        Loop::for_shape(vec4, m, n, batch),
    );
    if t {
        if !vec4 || gpu.gemm_variant() != GemmVariant::Subgroup {
            return Err(Error::unsupported(
                OP,
                format!(
                    "transposed operands need the subgroup core's vectorised loop ({batch}x[{m}x{k}]·[{k}x{n}])"
                ),
            ));
        }
        g.defines.extend([Define::Flag("B_T"), Define::Flag("C_T")]);
    }
    load64(gpu, &mut g);
    let (tiles_n, tiles_m) = (n.div_ceil(g.tile_n), m.div_ceil(g.tile_m));
    let u = |what, x: usize| u32_of(OP, what, x);
    let params = MatmulParams {
        m: u("m", m)?,
        n: u("n", n)?,
        k: u("k", k)?,
        batch: u("batch", batch)?,
        a_off: ab.elem_offset + u("a offset", a.off)?,
        b_off: bb.elem_offset + u("b offset", b.off)?,
        c_off: cb.elem_offset + u("c offset", c.off)?,
        bias_off: 0,
        a_bstride: u("a batch stride", a.bstride)?,
        b_bstride: u("b batch stride", b.bstride)?,
        c_bstride: u("c batch stride", c.bstride)?,
        has_bias: 0,
        tiles_n: tiles_n as u32,
        tiles_m: tiles_m as u32,
        res_off: 0,
        has_res: 0,
        b_ld: u("b row length", b.ld)?,
        a_ld: u("a row length", a.ld)?,
        c_ld: u("c row length", c.ld)?,
        b_inner: u("inner batch", inner)?,
        a_ostride: u("a outer stride", a.ostride)?,
        c_ostride: u("c outer stride", c.ostride)?,
        b_ostride: u("b outer stride", b.ostride)?,
        ..Default::default()
    };
    let groups = gpu.grid(OP, (tiles_n * tiles_m * batch) as u64)?;
    let bindings = vec![
        ab.range.clone(),
        bb.range.clone(),
        bb.range,
        cb.range,
        ab.range,
    ];
    push(rec, key(g, AKind::Plain, act), &params, bindings, groups)?;
    let (m, n, k, bt) = (m as f64, n as f64, k as f64, batch as f64);
    rec.set_last_cost(crate::gpu::Cost {
        flop: 2.0 * bt * m * n * k,
        bytes: bt * (act.size() as f64 * (m * k + m * n) + 4.0 * k * n),
        shape: format!("{batch}x[{m}x{k}]·[{k}x{n}]"),
    });
    Ok(())
}
