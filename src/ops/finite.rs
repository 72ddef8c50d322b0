//! Non-finite detection (`shaders/finite_check.wgsl`): a cheap pass over a tensor that records,
//! in a one-word flag on the device, the earliest stage whose output held a NaN or Inf. The
//! pipeline folds one into the work after text encoding, after every U-Net call and sampler
//! step, and after decoding, and reads the flag without stalling the GPU
//! ([`crate::pipeline`]'s guard).

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
}

fn key() -> KernelKey {
    KernelKey {
        shader: "finite_check.wgsl",
        entry: "main",
        defines: vec![],
        overrides: vec![("WG", WG)],
        bindings: vec![Access::Read, Access::ReadWrite],
        params_size: std::mem::size_of::<FiniteParams>() as u64,
    }
}

pub(crate) fn kernel_keys() -> Vec<KernelKey> {
    vec![key()]
}

/// Records `flag ← min(flag, code)` if any element of `x` (f32, any shape) is NaN or ±Inf.
/// `flag` is a one-element tensor whose 32 bits the kernel treats as a `u32` (set it to
/// [`FINITE`]'s bits before the first check). Split over binding windows like the
/// elementwise ops.
pub fn flag_nonfinite(rec: &mut Recorder<'_>, x: &Tensor, flag: &Tensor, code: u32) -> Result<()> {
    const OP: &str = "flag_nonfinite";
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
        let params = FiniteParams {
            n: u32_of(OP, "elements", len)?,
            x_off: xb.elem_offset,
            flag_off: fb.elem_offset,
            code,
        };
        let grid = rec.gpu().grid(OP, len.div_ceil(WG as usize) as u64)?;
        push(rec, key(), &params, vec![xb.range, fb.range], grid)?;
        i0 += len;
    }
    Ok(())
}
