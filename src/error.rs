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
        "{op}: `{tensor}` needs {bytes} bytes in one binding, above the device limit \
         {limit_name} = {limit}"
    )]
    Limit {
        op: &'static str,
        tensor: String,
        bytes: u64,
        limit_name: &'static str,
        limit: u64,
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

    pub(crate) fn unsupported(op: &'static str, what: impl Into<String>) -> Self {
        Error::Unsupported {
            op,
            what: what.into(),
        }
    }
}
