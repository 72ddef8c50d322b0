//! Per-step arithmetic for a recorded step plan (`shaders/step_table.wgsl`): linear
//! combinations whose coefficients come from a [`StepTable`] on the device, so one recording
//! of a denoising step serves every step (see `crate::gpu::Plan`). The table holds one row of
//! coefficients per step and, in its first word, the row in use; a plan selects a row with a
//! 4-byte copy in its command encoder ([`StepTable::encode_select`]), eager callers with
//! [`StepTable::set_row`].

use super::{push, require_f32, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{Access, Gpu, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

const WG: u32 = 256;

/// Mirrors `Params` in `shaders/step_table.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepTableParams {
    pub n: u32,
    pub terms: u32,
    pub clamp_on: u32,
    pub y_off: u32,
    pub off: [u32; 4],
    pub cidx: [u32; 4],
    pub stride: u32,
    pub table_off: u32,
    pub clamp_r: f32,
    pub _pad: u32,
}

fn key(entry: &'static str) -> KernelKey {
    KernelKey {
        shader: "step_table.wgsl",
        entry,
        defines: vec![],
        overrides: vec![("WG", WG)],
        bindings: vec![
            Access::Read,
            Access::Read,
            Access::Read,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
        ],
        params_size: std::mem::size_of::<StepTableParams>() as u64,
    }
}

pub(crate) fn kernel_keys() -> Vec<KernelKey> {
    vec![key("combine"), key("blend"), key("copy")]
}

/// Coefficients per step on the device: `rows` rows of `stride` f32 each, after one word
/// that holds the row in use (u32 bits), plus the row numbers themselves (`[rows]` u32 bits)
/// for [`StepTable::encode_select`] to copy from.
pub struct StepTable {
    table: Tensor,
    row_ids: Tensor,
    stride: usize,
    rows: usize,
}

impl StepTable {
    /// Uploads `rows` (all of one length, at least one value); row 0 is selected.
    pub fn new(gpu: &Gpu, rows: &[Vec<f32>]) -> Result<Self> {
        const OP: &str = "step table";
        let stride = rows.first().map_or(0, Vec::len);
        if stride == 0 || rows.iter().any(|r| r.len() != stride) {
            return Err(Error::shape(
                OP,
                format!(
                    "rows must be non-empty and of one length; got lengths {:?}",
                    rows.iter().map(Vec::len).collect::<Vec<_>>()
                ),
            ));
        }
        u32_of(OP, "table entries", rows.len() * stride + 1)?;
        let mut data = Vec::with_capacity(1 + rows.len() * stride);
        data.push(f32::from_bits(0));
        for r in rows {
            data.extend_from_slice(r);
        }
        let table = Tensor::from_f32(gpu, &data, &[data.len()], DType::F32, "step table")?;
        let ids: Vec<f32> = (0..rows.len() as u32).map(f32::from_bits).collect();
        let row_ids = Tensor::from_f32(gpu, &ids, &[ids.len()], DType::F32, "step table rows")?;
        Ok(Self {
            table,
            row_ids,
            stride,
            rows: rows.len(),
        })
    }

    /// The table itself (word 0: the selected row).
    pub(crate) fn tensor(&self) -> &Tensor {
        &self.table
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    fn check_row(&self, row: usize) -> Result<()> {
        if row >= self.rows {
            return Err(Error::shape(
                "step table",
                format!("row {row} of a table with {} rows", self.rows),
            ));
        }
        Ok(())
    }

    /// Selects `row` for the work submitted next (a queue write: it lands before the next
    /// submission, so only for one step per submission).
    pub fn set_row(&self, gpu: &Gpu, row: usize) -> Result<()> {
        self.check_row(row)?;
        if !gpu.is_simulating() {
            let bits = (row as u32).to_le_bytes();
            gpu.queue()
                .write_buffer(self.table.buffer().raw(), self.table.byte_offset(), &bits);
        }
        Ok(())
    }

    /// Selects `row` for the commands encoded after this in `enc` (a 4-byte device copy: any
    /// number of steps may go into one encoder).
    pub fn encode_select(&self, enc: &mut wgpu::CommandEncoder, row: usize) -> Result<()> {
        self.check_row(row)?;
        enc.copy_buffer_to_buffer(
            self.row_ids.buffer().raw(),
            self.row_ids.byte_offset() + 4 * row as u64,
            self.table.buffer().raw(),
            self.table.byte_offset(),
            4,
        );
        Ok(())
    }
}

fn same_size(op: &'static str, x: &Tensor, others: &[&Tensor]) -> Result<()> {
    require_f32(op, "x", x)?;
    for t in others {
        require_f32(op, "term", t)?;
        if t.numel() != x.numel() {
            return Err(Error::shape(
                op,
                format!(
                    "`{}` {:?} and `{}` {:?} differ in size",
                    x.name(),
                    x.shape(),
                    t.name(),
                    t.shape()
                ),
            ));
        }
    }
    Ok(())
}

fn coef_index(op: &'static str, table: &StepTable, k: usize) -> Result<u32> {
    if k >= table.stride {
        return Err(Error::shape(
            op,
            format!("coefficient {k} of a table row of {}", table.stride),
        ));
    }
    Ok(k as u32)
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    rec: &mut Recorder<'_>,
    op: &'static str,
    entry: &'static str,
    table: &StepTable,
    srcs: &[&Tensor],
    cidx: [u32; 4],
    clamp: Option<f32>,
    y: &Tensor,
) -> Result<()> {
    let gpu = rec.gpu();
    let n = y.numel();
    let tb = table.table.bind(gpu, op)?;
    let mut ranges = vec![tb.range];
    let mut off = [0u32; 4];
    for (k, o) in off.iter_mut().enumerate() {
        let b = srcs.get(k).copied().unwrap_or(srcs[0]).bind(gpu, op)?;
        *o = b.elem_offset;
        ranges.push(b.range);
    }
    let yb = y.bind(gpu, op)?;
    ranges.push(yb.range);
    let params = StepTableParams {
        n: u32_of(op, "elements", n)?,
        terms: srcs.len() as u32,
        clamp_on: clamp.is_some() as u32,
        y_off: yb.elem_offset,
        off,
        cidx,
        stride: table.stride as u32,
        table_off: tb.elem_offset,
        clamp_r: clamp.unwrap_or(0.0),
        _pad: 0,
    };
    let grid = gpu.grid(op, n.div_ceil(WG as usize) as u64)?;
    push(rec, key(entry), &params, ranges, grid)
}

/// `Σ coef(kᵢ) · tᵢ` (1 to 4 terms, f32, equal sizes; the result has the first term's shape),
/// optionally clamped to `[−r, r]`; `coef(k)` is entry k of the table's selected row.
pub fn table_combine(
    rec: &mut Recorder<'_>,
    table: &StepTable,
    terms: &[(usize, &Tensor)],
    clamp: Option<f32>,
) -> Result<Tensor> {
    const OP: &str = "table_combine";
    let Some(&(_, t0)) = terms.first() else {
        return Err(Error::shape(OP, "no terms"));
    };
    if terms.len() > 4 {
        return Err(Error::shape(
            OP,
            format!("{} terms (at most 4)", terms.len()),
        ));
    }
    let srcs: Vec<&Tensor> = terms.iter().map(|(_, t)| *t).collect();
    same_size(OP, t0, &srcs[1..])?;
    let mut cidx = [0u32; 4];
    for (i, (k, _)) in terms.iter().enumerate() {
        cidx[i] = coef_index(OP, table, *k)?;
    }
    let y = Tensor::empty_in(rec, t0.shape(), DType::F32, "table_combine.out")?;
    dispatch(rec, OP, "combine", table, &srcs, cidx, clamp, &y)?;
    Ok(y)
}

/// 4-channel inpainting's blend: `m·x + (1 − m)·(coef(ka)·img + coef(kb)·noise)`, all of
/// `x`'s size (the mask expanded over channels).
pub fn table_blend(
    rec: &mut Recorder<'_>,
    table: &StepTable,
    x: &Tensor,
    mask: &Tensor,
    img: &Tensor,
    noise: &Tensor,
    [ka, kb]: [usize; 2],
) -> Result<Tensor> {
    const OP: &str = "table_blend";
    same_size(OP, x, &[mask, img, noise])?;
    let cidx = [coef_index(OP, table, ka)?, coef_index(OP, table, kb)?, 0, 0];
    let y = Tensor::empty_in(rec, x.shape(), DType::F32, "table_blend.out")?;
    dispatch(
        rec,
        OP,
        "blend",
        table,
        &[x, mask, img, noise],
        cidx,
        None,
        &y,
    )?;
    Ok(y)
}

/// Copies `src` into `dst` (f32, equal sizes): how a recorded step hands its results to the
/// buffers the next replay reads. `dst` must not be `src`'s buffer range.
pub fn copy_into(
    rec: &mut Recorder<'_>,
    table: &StepTable,
    src: &Tensor,
    dst: &Tensor,
) -> Result<()> {
    const OP: &str = "copy_into";
    same_size(OP, src, &[dst])?;
    if std::sync::Arc::ptr_eq(src.buffer(), dst.buffer()) {
        return Err(Error::shape(
            OP,
            format!("`{}` and `{}` share a buffer", src.name(), dst.name()),
        ));
    }
    dispatch(rec, OP, "copy", table, &[src], [0; 4], None, dst)
}
