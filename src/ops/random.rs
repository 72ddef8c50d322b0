//! Random fill on the device (`shaders/random_fill.wgsl`): synthetic weights for `sd-wgpu
//! bench` are made where they are used, with no host generation or upload.

use super::{push, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{Access, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

const WG: u32 = 256;

/// Mirrors `Params` in `shaders/random_fill.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RandomParams {
    pub n: u32,
    pub key: u32,
    pub y_off: u32,
    pub words: u32,
    pub scale: f32,
    pub offset: f32,
    pub _pad: [u32; 2],
}

fn kernel_key(entry: &'static str) -> KernelKey {
    KernelKey {
        shader: "random_fill.wgsl",
        entry,
        defines: vec![],
        overrides: vec![("WG", WG)],
        bindings: vec![Access::ReadWrite],
        params_size: std::mem::size_of::<RandomParams>() as u64,
    }
}

pub(crate) fn kernel_keys() -> Vec<KernelKey> {
    vec![kernel_key("f32_words"), kernel_key("f16_words")]
}

/// The PCG-RXS-M-XS hash the kernel uses.
pub fn pcg(x: u32) -> u32 {
    let state = x.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// Element `i` of a fill with `key`, `scale` and `offset`: what the kernel writes (f32).
pub fn random_value(key: u32, i: u32, scale: f32, offset: f32) -> f32 {
    let h = pcg(pcg(key) ^ pcg(i));
    let u = (h >> 8) as f32 / 16_777_216.0;
    offset + scale * (2.0 * u - 1.0)
}

/// Fills `y` (f32 or f16, any shape, starting on a 4-byte boundary) with
/// [`random_value`]`(key, i, scale, offset)` for each element i.
pub fn random_fill(
    rec: &mut Recorder<'_>,
    y: &Tensor,
    key: u32,
    scale: f32,
    offset: f32,
) -> Result<()> {
    const OP: &str = "random_fill";
    if y.byte_offset() % 4 != 0 {
        return Err(Error::shape(
            OP,
            format!("`{}` starts at byte {}", y.name(), y.byte_offset()),
        ));
    }
    let n = y.numel();
    let (entry, words) = match y.dtype() {
        DType::F32 => ("f32_words", n),
        DType::F16 => ("f16_words", n.div_ceil(2)),
    };
    let gpu = rec.gpu();
    let yb = y.bind(gpu, OP)?;
    // The binding's element offset is in the tensor's own elements; the kernel counts words.
    let y_off = (y.byte_offset() - yb.range.offset) / 4;
    let params = RandomParams {
        n: u32_of(OP, "elements", n)?,
        key,
        y_off: y_off as u32,
        words: u32_of(OP, "words", words)?,
        scale,
        offset,
        _pad: [0; 2],
    };
    let grid = gpu.grid(OP, words.div_ceil(WG as usize) as u64)?;
    push(rec, kernel_key(entry), &params, vec![yb.range], grid)
}
