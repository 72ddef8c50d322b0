//! GPU ops. Each op validates shapes and dtypes, allocates its output from the pool, and
//! records [`Dispatch`]es into a [`Recorder`]; nothing here submits or waits.
//!
//! Each op family owns its WGSL file in `shaders/`, a `#[repr(C)]` params struct mirroring the
//! WGSL `Params` field by field, and a plain-loop CPU reference in [`crate::reference`].

pub mod attention;
mod attention_gemm;
pub mod conv2d;
pub mod elementwise;
pub mod finite;
mod gemm_core;
pub mod matmul;
pub mod movement;
pub mod norm;
pub mod random;
pub mod sampler;
pub mod step_table;
mod strided_product;
mod winograd;

pub use attention::{AttentionOptions, attention, attention_qkv};
pub use conv2d::{Conv2dOptions, InputNorm, conv2d, conv2d_group_norm};
pub use elementwise::{Binary, Unary, add, binary, clamp, geglu, mul, timestep_embedding, unary};
pub use finite::{flag_nonfinite, flag_nonfinite_step};
pub use matmul::{
    linear, linear_columns, linear_geglu, linear_layer_norm, linear_residual, matmul,
};
pub use movement::{
    cast, concat_channels, rgba8_row, to_rgba8, upsample_nearest, upsample_nearest2x,
};
pub use norm::{group_norm, layer_norm};
pub use random::random_fill;
pub use sampler::{SamplerStep, lincomb, sampler_step};
pub use step_table::{StepTable, copy_into, table_blend, table_combine};

use crate::error::{Error, Result};
use crate::gpu::{BufferRange, Cost, Dispatch, KernelKey, Recorder};
use crate::tensor::{DType, Tensor};

/// Every kernel variant the ops can create (the naga test validates each one).
pub fn all_kernel_keys() -> Vec<KernelKey> {
    let mut v = Vec::new();
    v.extend(matmul::kernel_keys());
    v.extend(conv2d::kernel_keys());
    v.extend(norm::kernel_keys());
    v.extend(attention::kernel_keys());
    v.extend(attention_gemm::kernel_keys());
    v.extend(elementwise::kernel_keys());
    v.extend(finite::kernel_keys());
    v.extend(sampler::kernel_keys());
    v.extend(step_table::kernel_keys());
    v.extend(random::kernel_keys());
    v
}

pub(crate) fn require_f32(op: &'static str, name: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::DType {
            op,
            tensor: name,
            got: t.dtype(),
            expected: "f32",
        });
    }
    Ok(())
}

/// The activation dtype of `t`, an op's input: f32 anywhere, f16 on devices with
/// `shader-f16` (kernels then store activations as f16 and compute in f32; see
/// `common.wgsl`'s `act`).
pub(crate) fn require_act(
    rec: &Recorder<'_>,
    op: &'static str,
    name: &'static str,
    t: &Tensor,
) -> Result<DType> {
    match t.dtype() {
        DType::F32 => Ok(DType::F32),
        DType::F16 if rec.gpu().features().contains(wgpu::Features::SHADER_F16) => Ok(DType::F16),
        got => Err(Error::DType {
            op,
            tensor: name,
            got,
            expected: "f32 (or f16 on devices with shader-f16)",
        }),
    }
}

/// `t`, an op's second activation input, has the dtype of its first, `act`.
pub(crate) fn require_same_act(
    op: &'static str,
    name: &'static str,
    t: &Tensor,
    act: DType,
) -> Result<()> {
    if t.dtype() != act {
        return Err(Error::DType {
            op,
            tensor: name,
            got: t.dtype(),
            expected: if act == DType::F16 {
                "f16, as the op's input"
            } else {
                "f32, as the op's input"
            },
        });
    }
    Ok(())
}

/// The define that selects f16 activation storage in a kernel, for activation dtype `act`.
pub(crate) fn act_defines(act: DType) -> Vec<crate::shaders::Define> {
    if act == DType::F16 {
        vec![crate::shaders::Define::Flag("ACT_F16")]
    } else {
        vec![]
    }
}

/// Converts a size to the `u32` the kernels index with, or names the limit.
pub(crate) fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        Error::unsupported(
            op,
            format!("{what} = {v} exceeds the 32-bit index range of the kernels"),
        )
    })
}

/// The params struct as bytes plus the kernel, bindings and grid, pushed as one dispatch.
pub(crate) fn push<P: bytemuck::Pod>(
    rec: &mut Recorder<'_>,
    key: KernelKey,
    params: &P,
    bindings: Vec<BufferRange>,
    workgroups: [u32; 3],
) -> Result<()> {
    if key.params_size != std::mem::size_of::<P>() as u64 {
        return Err(Error::unsupported(
            "dispatch",
            format!(
                "{}: params are {} bytes, the key says {}",
                key.label(),
                std::mem::size_of::<P>(),
                key.params_size
            ),
        ));
    }
    let kernel = rec.gpu().kernel(&key)?;
    let bytes = bindings.iter().map(|b| b.size as f64).sum();
    rec.push(Dispatch {
        kernel,
        params: bytemuck::bytes_of(params).to_vec(),
        bindings,
        workgroups,
        cost: Cost {
            flop: 0.0,
            bytes,
            shape: String::new(),
        },
    });
    Ok(())
}

/// Whether `bytes` fit one storage binding (with room for the window's alignment).
pub(crate) fn fits_binding(rec: &Recorder<'_>, bytes: u64) -> bool {
    let l = rec.gpu().limits();
    bytes + u64::from(l.min_storage_buffer_offset_alignment) <= l.max_storage_buffer_binding_size
}

/// Largest number of rows of `row_bytes` each that fit in one storage binding.
pub(crate) fn rows_per_binding(rec: &Recorder<'_>, row_bytes: u64) -> usize {
    let limit = rec.gpu().limits().max_storage_buffer_binding_size;
    // Leave room for the window starting up to one alignment unit before the tensor.
    let align = u64::from(rec.gpu().limits().min_storage_buffer_offset_alignment);
    (limit.saturating_sub(align) / row_bytes.max(1)).max(1) as usize
}
