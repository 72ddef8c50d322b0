//! GPU tensors: a byte range of a pooled buffer with a shape and a storage dtype.
//!
//! Layout conventions: row-major, last dimension contiguous; images and activations are
//! channels-last (`[n, h, w, c]`). `F16` tensors store IEEE halves packed two per `u32` word
//! (element `i` in the low half of word `i / 2` when `i` is even), which every device can read
//! with `unpack2x16float`, `shader-f16` or not.

use crate::error::{Error, Result};
use crate::gpu::{BufferRange, Gpu, GpuBuffer, Recorder};
use std::sync::Arc;

/// Storage type of a tensor's elements. Arithmetic is always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
}

impl DType {
    pub fn size(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
}

/// A view of GPU memory with a shape. Cloning is cheap and shares the buffer.
#[derive(Clone)]
pub struct Tensor {
    buffer: Arc<GpuBuffer>,
    /// Byte offset of element 0 in `buffer`.
    offset: u64,
    shape: Vec<usize>,
    dtype: DType,
    name: Arc<str>,
    /// A weight `[.., N]` (K = the product of the other dims) stored in panels of [`PANEL`]
    /// columns (each panel's K rows of `PANEL` values contiguous, panel after panel):
    /// matmul's B and conv2d's weight on CPU devices, read by those alone (see
    /// [`Tensor::panels`]).
    panels: bool,
}

/// Columns per panel of a panel-packed weight (the subgroup GEMM core's tile width).
pub const PANEL: usize = 32;

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor(`{}` {:?} {:?})",
            self.name, self.shape, self.dtype
        )
    }
}

/// A tensor that does not keep its buffer alive (the weight cache's entries).
pub(crate) struct WeakTensor {
    buffer: std::sync::Weak<GpuBuffer>,
    offset: u64,
    shape: Vec<usize>,
    dtype: DType,
    name: Arc<str>,
    panels: bool,
}

impl WeakTensor {
    pub(crate) fn of(t: &Tensor) -> Self {
        Self {
            buffer: Arc::downgrade(&t.buffer),
            offset: t.offset,
            shape: t.shape.clone(),
            dtype: t.dtype,
            name: t.name.clone(),
            panels: t.panels,
        }
    }

    pub(crate) fn upgrade(&self) -> Option<Tensor> {
        Some(Tensor {
            buffer: self.buffer.upgrade()?,
            offset: self.offset,
            shape: self.shape.clone(),
            dtype: self.dtype,
            name: self.name.clone(),
            panels: self.panels,
        })
    }
}

/// What a kernel needs to address a tensor: the bound window and the element index of the
/// tensor's first element inside it.
pub(crate) struct Bound {
    pub range: BufferRange,
    pub elem_offset: u32,
}

impl Tensor {
    /// A tensor of uninitialised contents (pooled memory may hold old data).
    pub fn empty(gpu: &Gpu, shape: &[usize], dtype: DType, name: &str) -> Result<Self> {
        let buffer = gpu.alloc(byte_len(shape, dtype).max(4), name)?;
        Ok(Self::whole(buffer, shape, dtype, name))
    }

    /// A tensor over all of `buffer` from its start.
    fn whole(buffer: Arc<GpuBuffer>, shape: &[usize], dtype: DType, name: &str) -> Self {
        Self {
            buffer,
            offset: 0,
            shape: shape.to_vec(),
            dtype,
            name: name.into(),
            panels: false,
        }
    }

    /// An op's output or scratch tensor: like [`Tensor::empty`], but may reuse a buffer whose
    /// last reader is an earlier dispatch of `rec` (see [`Recorder::alloc`]). Only for
    /// tensors that a dispatch of `rec` writes before anything reads them.
    pub fn empty_in(rec: &Recorder<'_>, shape: &[usize], dtype: DType, name: &str) -> Result<Self> {
        let buffer = rec.alloc(byte_len(shape, dtype).max(4), name)?;
        Ok(Self::whole(buffer, shape, dtype, name))
    }

    /// Uploads f32 host data, converting to `dtype`.
    pub fn from_f32(
        gpu: &Gpu,
        data: &[f32],
        shape: &[usize],
        dtype: DType,
        name: &str,
    ) -> Result<Self> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return Err(Error::HostData {
                tensor: name.to_string(),
                shape: shape.to_vec(),
                expected: n,
                got: data.len(),
            });
        }
        let t = Self::empty(gpu, shape, dtype, name)?;
        if gpu.is_simulating() {
            return Ok(t);
        }
        let mut bytes: Vec<u8> = match dtype {
            DType::F32 => bytemuck::cast_slice(data).to_vec(),
            DType::F16 => data
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect(),
        };
        bytes.resize(bytes.len().div_ceil(4) * 4, 0);
        if !bytes.is_empty() {
            gpu.queue().write_buffer(t.buffer.raw(), 0, &bytes);
        }
        Ok(t)
    }

    /// A tensor filled with zeros.
    pub fn zeros(gpu: &Gpu, shape: &[usize], dtype: DType, name: &str) -> Result<Self> {
        let n: usize = shape.iter().product();
        Self::from_f32(gpu, &vec![0.0; n], shape, dtype, name)
    }

    /// Reads the tensor back as f32 (waits for all submitted work).
    pub fn to_vec(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let n = self.numel();
        let bytes = gpu.read_bytes(
            self.buffer.raw(),
            self.offset,
            byte_len(&self.shape, self.dtype),
            &self.name,
        )?;
        let v: Vec<f32> = match self.dtype {
            DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(&bytes[..n * 4]),
            DType::F16 => bytes[..n * 2]
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        };
        Ok(match (self.panels, self.shape.last()) {
            (true, Some(&n)) => unpack_panels(&v, n_rows(self.numel(), n), n),
            _ => v,
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn buffer(&self) -> &Arc<GpuBuffer> {
        &self.buffer
    }
    pub fn byte_offset(&self) -> u64 {
        self.offset
    }

    /// Same memory, new shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        // A panel-packed weight's layout depends only on its last dim (N) and the rest (K):
        // it may change shape while keeping N (a 1×1 conv's [1, 1, cin, cout] as [cin, cout]).
        if self.panels && shape.last() != self.shape.last() {
            return Err(self.packed_err("reshape"));
        }
        if n != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!("`{}` {:?} cannot become {:?}", self.name, self.shape, shape),
            ));
        }
        Ok(Self {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// Elements `[start, start + len)` of dimension 0, as a view (no copy).
    pub fn narrow0(&self, start: usize, len: usize) -> Result<Self> {
        if self.panels {
            return Err(self.packed_err("narrow0"));
        }
        let d0 = *self.shape.first().unwrap_or(&1);
        if self.shape.is_empty() || start + len > d0 {
            return Err(Error::shape(
                "narrow0",
                format!(
                    "rows {start}..{} of `{}` {:?}",
                    start + len,
                    self.name,
                    self.shape
                ),
            ));
        }
        let row: usize = self.shape[1..].iter().product();
        let offset = self.offset + (start * row) as u64 * self.dtype.size();
        if self.dtype == DType::F16 && offset % 4 != 0 {
            return Err(Error::unsupported(
                "narrow0",
                format!(
                    "an f16 view of `{}` must start at an even element",
                    self.name
                ),
            ));
        }
        let mut shape = self.shape.clone();
        shape[0] = len;
        Ok(Self {
            offset,
            shape,
            ..self.clone()
        })
    }

    /// Uploads a `[k, n]` matrix (row-major host data) as a panel-packed weight: `n` a
    /// multiple of [`PANEL`]; the same bytes as the plain tensor, reordered.
    pub fn from_f32_panels(
        gpu: &Gpu,
        data: &[f32],
        (k, n): (usize, usize),
        dtype: DType,
        name: &str,
    ) -> Result<Self> {
        if n % PANEL != 0 || data.len() != k * n {
            return Err(Error::shape(
                "panels",
                format!(
                    "`{name}` [{k}, {n}] with {} values: N must be a multiple of {PANEL}",
                    data.len()
                ),
            ));
        }
        let packed = pack_panels(data, k, n);
        Ok(Self::from_f32(gpu, &packed, &[k, n], dtype, name)?.with_panels())
    }

    /// This tensor marked panel-packed (its bytes already are).
    pub(crate) fn with_panels(mut self) -> Self {
        self.panels = true;
        self
    }

    /// Whether this is a panel-packed weight ([`Tensor::from_f32_panels`]): only matmul's B
    /// and conv2d's weight read it; other ops refuse it.
    pub fn panels(&self) -> bool {
        self.panels
    }

    /// The binding window for a kernel: starts at the tensor's offset aligned down to the
    /// device's storage-offset alignment, covers the tensor, and must fit the device's
    /// `max_storage_buffer_binding_size`. A panel-packed weight is refused: only matmul and
    /// conv2d read one ([`Tensor::bind_any`]).
    pub(crate) fn bind(&self, gpu: &Gpu, op: &'static str) -> Result<Bound> {
        if self.panels {
            return Err(self.packed_err(op));
        }
        self.bind_any(gpu, op)
    }

    /// The error of an op that cannot read a panel-packed weight.
    fn packed_err(&self, op: &'static str) -> Error {
        Error::unsupported(
            op,
            format!(
                "`{}` is a panel-packed weight, which only matmul and conv2d read",
                self.name
            ),
        )
    }

    /// [`Tensor::bind`] of any layout (matmul's B, conv2d's weight).
    pub(crate) fn bind_any(&self, gpu: &Gpu, op: &'static str) -> Result<Bound> {
        let align = u64::from(gpu.limits().min_storage_buffer_offset_alignment.max(4));
        let start = self.offset / align * align;
        let end = self.offset + byte_len(&self.shape, self.dtype);
        let size = (end - start).div_ceil(4).max(1) * 4;
        let limit = gpu.limits().max_storage_buffer_binding_size;
        if size > limit {
            return Err(Error::Limit {
                op,
                tensor: format!("{} {:?}", self.name, self.shape),
                bytes: size,
                limit_name: "max_storage_buffer_binding_size",
                limit,
            });
        }
        Ok(Bound {
            range: BufferRange {
                buffer: self.buffer.clone(),
                offset: start,
                size,
            },
            elem_offset: ((self.offset - start) / self.dtype.size()) as u32,
        })
    }
}

/// `[k, n]` row-major → panels of [`PANEL`] columns (`n` a multiple of it): element (r, c)
/// goes to `(c / PANEL)·k·PANEL + r·PANEL + c % PANEL`.
pub fn pack_panels<T: Copy>(data: &[T], k: usize, n: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(data.len());
    for p in 0..n / PANEL {
        for r in 0..k {
            out.extend_from_slice(&data[r * n + p * PANEL..r * n + (p + 1) * PANEL]);
        }
    }
    out
}

/// K of a `[.., N]` weight of `numel` values.
fn n_rows(numel: usize, n: usize) -> usize {
    numel.checked_div(n).unwrap_or(0)
}

/// The inverse of [`pack_panels`].
pub fn unpack_panels<T: Copy + Default>(data: &[T], k: usize, n: usize) -> Vec<T> {
    let mut out = vec![T::default(); data.len()];
    for (i, &v) in data.iter().enumerate() {
        let (p, r, c) = (i / (k * PANEL), i / PANEL % k, i % PANEL);
        out[r * n + p * PANEL + c] = v;
    }
    out
}

/// Bytes that `shape` of `dtype` occupies, rounded up to whole `u32` words.
pub fn byte_len(shape: &[usize], dtype: DType) -> u64 {
    let n: u64 = shape.iter().map(|&d| d as u64).product();
    (n * dtype.size()).div_ceil(4) * 4
}
