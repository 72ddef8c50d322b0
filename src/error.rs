//! Typed errors of the library. Every variant names the thing involved (tensor, shape,
//! limit) so that a message alone tells the user what to change.

use thiserror::Error;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// No wgpu adapter could be found (or none matched `SD_WGPU_ADAPTER`).
    #[error(
        "no GPU adapter found{detail}. On a machine without a GPU install Mesa's software \
         Vulkan driver (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`), or point \
         WGPU_BACKEND / SD_WGPU_ADAPTER at an available adapter (`sd-wgpu info` lists them)"
    )]
    NoAdapter { detail: String },

    /// The adapter refused to create a device.
    #[error("could not create a device on adapter `{adapter}`: {source}")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },

    /// A tensor's shape does not fit the op.
    #[error("{op}: {what}")]
    Shape { op: &'static str, what: String },

    /// A tensor has a dtype the op does not accept.
    #[error("{op}: tensor `{tensor}` has dtype {got:?}, expected {expected}")]
    DType {
        op: &'static str,
        tensor: &'static str,
        got: crate::tensor::DType,
        expected: &'static str,
    },

    /// A value (size, count, parameter) is out of the range the op supports.
    #[error("{op}: {what}")]
    Unsupported { op: &'static str, what: String },

    /// A buffer or binding would exceed a device limit.
    #[error(
        "{op}: `{tensor}` needs {bytes} bytes in one buffer or binding, above the device \
         limit {limit_name} = {limit}"
    )]
    Limit {
        op: &'static str,
        tensor: String,
        bytes: u64,
        limit_name: &'static str,
        limit: u64,
    },

    /// A request would need more device memory than the budget allows (checked before
    /// anything is allocated).
    #[error(
        "{op}: {what} needs {} of device memory ({} in use by loaded weights and live tensors \
         + {} for the request{mode}), above the memory budget of {} ({budget_source}){hint}",
        crate::gpu::format_bytes(*.resident + *.request),
        crate::gpu::format_bytes(*.resident),
        crate::gpu::format_bytes(*.request),
        crate::gpu::format_bytes(*.budget),
        mode = if *.offload { ", with each network on the device only for its stage" } else { "" }
    )]
    Memory {
        op: &'static str,
        what: String,
        resident: u64,
        request: u64,
        budget: u64,
        budget_source: String,
        /// The request would run with each network on the device only for its stage.
        offload: bool,
        hint: String,
    },

    /// Host data given to an upload does not match the tensor shape.
    #[error("upload of `{tensor}`: {got} values given for shape {shape:?} ({expected} values)")]
    HostData {
        tensor: String,
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },

    /// Mapping a buffer for readback failed.
    #[error("readback of `{tensor}` failed: {what}")]
    Readback { tensor: String, what: String },

    /// An input file that is not what it must be (not a regular file, too large, not text).
    #[error("`{path}` {what}")]
    Input {
        path: std::path::PathBuf,
        what: String,
    },

    /// An output file could not be written, or is refused (exists, is a symbolic link, its
    /// folder is missing or read-only, an unknown format). Nothing was written at `path`.
    #[error("writing `{path}`: {what}")]
    Output {
        path: std::path::PathBuf,
        what: String,
    },

    /// A request parameter outside its range (checked before any work).
    #[error("request: `{field}` {what}")]
    Request { field: &'static str, what: String },

    /// NaN or Inf appeared in the computation; the run stopped at the stage that made them.
    #[error(
        "non-finite values (NaN or Inf) in {stage}: the run stopped there. Check the model's \
         weights and config and the request's values (guidance, prompt weights, latents)"
    )]
    NonFinite { stage: String },

    /// A file could not be read.
    #[error("reading `{path}`: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A pickle checkpoint (`.ckpt`, `.pt`, …): refused, never executed.
    #[error(
        "`{path}` is a pickle checkpoint: sd-wgpu never loads pickles, because unpickling runs arbitrary code. Convert it to .safetensors (for example with diffusers' convert_original_stable_diffusion_to_diffusers.py, or torch.load + safetensors.torch.save_file in a Python you trust) and pass that file"
    )]
    Pickle { path: std::path::PathBuf },

    /// A safetensors file whose header or size is wrong.
    #[error("`{path}` is not a valid safetensors file: {what}")]
    Safetensors {
        path: std::path::PathBuf,
        what: String,
    },

    /// A tensor the model needs is not in its weight files.
    #[error("tensor `{tensor}` is missing from `{path}`")]
    MissingTensor {
        path: std::path::PathBuf,
        tensor: String,
    },

    /// A tensor has another shape than the model's config implies.
    #[error("tensor `{tensor}` in `{path}` has shape {got:?}, the model expects {expected:?}")]
    TensorShape {
        path: std::path::PathBuf,
        tensor: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    /// A tensor has a dtype we do not load, or values that do not fit the requested one.
    #[error("tensor `{tensor}` in `{path}`: {what}")]
    TensorData {
        path: std::path::PathBuf,
        tensor: String,
        what: String,
    },

    /// A model path that is neither a diffusers folder nor a single-file checkpoint.
    #[error("`{path}`: {what}")]
    ModelLayout {
        path: std::path::PathBuf,
        what: String,
    },

    /// A `.npy` file that is not a float32 C-order array.
    #[error("`{path}`: {what}")]
    Npy {
        path: std::path::PathBuf,
        what: String,
    },

    /// A prompt's weighting syntax is malformed (unbalanced brackets).
    #[error("prompt {prompt:?}: {what}")]
    Prompt { prompt: String, what: String },

    /// A LoRA file that cannot be applied: unknown or unmatched keys, shapes that do not fit
    /// the model, an unsupported variant (DoRA, LoHa), a name not found in the LoRA folder.
    #[error("LoRA `{path}`: {what}")]
    Lora {
        path: std::path::PathBuf,
        what: String,
    },

    /// The progress callback asked to stop.
    #[error("cancelled after step {step}")]
    Cancelled { step: usize },

    /// The device reported an error (validation, out of memory) while running our work.
    #[error("GPU error in {context}: {what}")]
    Device { context: String, what: String },
}

impl Error {
    pub(crate) fn shape(op: &'static str, what: impl Into<String>) -> Self {
        Error::Shape {
            op,
            what: what.into(),
        }
    }

    pub(crate) fn request(field: &'static str, what: impl Into<String>) -> Self {
        Error::Request {
            field,
            what: what.into(),
        }
    }

    pub(crate) fn unsupported(op: &'static str, what: impl Into<String>) -> Self {
        Error::Unsupported {
            op,
            what: what.into(),
        }
    }
}
