//! Non-finite detection (`shaders/finite_check.wgsl`): a cheap pass over a tensor that records,
//! in a one-word flag on the device, the earliest stage whose output held a NaN or Inf. The
//! pipeline folds one into the work after text encoding, after every U-Net call and sampler
//! step, and after decoding, and reads the flag without stalling the GPU
//! ([`crate::pipeline`]'s guard).

use super::step_table::StepTable;
use super::{push, require_f32, rows_per_binding, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{Access, KernelKey, Recorder};
use crate::tensor::Tensor;

/// The flag's value while no stage has produced a non-finite value.
pub const FINITE: u32 = u32::MAX;

const WG: u32 = 256;

/// Mirrors `Params` in `shaders/finite_check.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FiniteParams {
    pub n: u32,
    pub x_off: u32,
    pub flag_off: u32,
    pub code: u32,
    pub stride: u32,
    pub table_off: u32,
    pub _pad: [u32; 2],
}

fn key(step: bool) -> KernelKey {
    let mut bindings = vec![Access::Read, Access::ReadWrite];
    if step {
        bindings.push(Access::Read);
    }
    KernelKey {
        shader: "finite_check.wgsl",
        entry: "main",
        defines: if step {
            vec![crate::shaders::Define::Flag("STEP")]
        } else {
            vec![]
        },
        overrides: vec![("WG", WG)],
        bindings,
        params_size: std::mem::size_of::<FiniteParams>() as u64,
    }
}

pub(crate) fn kernel_keys() -> Vec<KernelKey> {
    vec![key(false), key(true)]
}

/// Records `flag ← min(flag, code)` if any element of `x` (f32, any shape) is NaN or ±Inf.
/// `flag` is a one-element tensor whose 32 bits the kernel treats as a `u32` (set it to
/// [`FINITE`]'s bits before the first check). Split over binding windows like the
/// elementwise ops.
pub fn flag_nonfinite(rec: &mut Recorder<'_>, x: &Tensor, flag: &Tensor, code: u32) -> Result<()> {
    flag_inner(rec, x, flag, code, None)
}

/// [`flag_nonfinite`] inside a recorded step: the code written is `code + row · stride`, with
/// `row` the [`StepTable`] row selected when the check runs, so one recording names the step.
pub fn flag_nonfinite_step(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    flag: &Tensor,
    code: u32,
    table: &StepTable,
    stride: u32,
) -> Result<()> {
    flag_inner(rec, x, flag, code, Some((table, stride)))
}

fn flag_inner(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    flag: &Tensor,
    code: u32,
    step: Option<(&StepTable, u32)>,
) -> Result<()> {
    const OP: &str = "flag_nonfinite";
    if let Some((t, stride)) = step {
        let last = u64::from(code) + (t.rows() as u64).saturating_sub(1) * u64::from(stride);
        if last >= u64::from(FINITE) {
            return Err(Error::unsupported(
                OP,
                format!("codes up to {last} reach the `finite` value"),
            ));
        }
    }
    require_f32(OP, "x", x)?;
    require_f32(OP, "flag", flag)?;
    if flag.numel() != 1 {
        return Err(Error::shape(
            OP,
            format!(
                "flag `{}` has {} elements, expected 1",
                flag.name(),
                flag.numel()
            ),
        ));
    }
    if code == FINITE {
        return Err(Error::unsupported(
            OP,
            format!("code {code} means `finite`"),
        ));
    }
    let n = x.numel();
    let x1 = x.reshape(&[n])?;
    let chunk = rows_per_binding(rec, 4);
    let mut i0 = 0;
    while i0 < n {
        let len = chunk.min(n - i0);
        let gpu = rec.gpu();
        let xb = x1.narrow0(i0, len)?.bind(gpu, OP)?;
        let fb = flag.bind(gpu, OP)?;
        let mut params = FiniteParams {
            n: u32_of(OP, "elements", len)?,
            x_off: xb.elem_offset,
            flag_off: fb.elem_offset,
            code,
            ..Default::default()
        };
        let mut ranges = vec![xb.range, fb.range];
        if let Some((t, stride)) = step {
            let tb = t.tensor().bind(gpu, OP)?;
            params.stride = stride;
            params.table_off = tb.elem_offset;
            ranges.push(tb.range);
        }
        let grid = rec.gpu().grid(OP, len.div_ceil(WG as usize) as u64)?;
        push(rec, key(step.is_some()), &params, ranges, grid)?;
        i0 += len;
    }
    Ok(())
}
