//! Checkpoint weights: safetensors files mapped into memory, read tensor by tensor,
//! converted (f32 / f16 / bf16 → the GPU dtype) and re-laid out while uploading, so host
//! memory holds one tensor at a time, never the file. Pickle checkpoints are refused.

use crate::error::{Error, Result};

use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod cache;
pub mod single_file;
mod synthetic;
mod upload;

pub use synthetic::Synthetic;

/// One memory-mapped safetensors file and its parsed header.
pub struct WeightFile {
    path: PathBuf,
    /// Canonical path, length and modification time: what identifies the file's contents
    /// for the device's weight cache.
    identity: (PathBuf, u64, Option<std::time::SystemTime>),
    map: memmap2::Mmap,
    /// Byte offset of the data section (8-byte length + JSON header).
    data_start: usize,
    tensors: HashMap<String, safetensors::tensor::TensorInfo>,
}

/// A tensor inside a mapped file.
#[derive(Clone, Debug)]
pub struct TensorRef<'a> {
    pub file: &'a Path,
    /// The key in the file (for a renamed tensor: the file's key and the name asked for).
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: &'a [u8],
    /// Where `bytes` start in the file.
    pub file_offset: usize,
    /// The bytes hold the transpose of the 2-D `shape` (a renamed tensor stored the other
    /// way round, e.g. OpenCLIP's `text_projection`); [`to_f32`] gives `shape`'s order.
    pub transposed: bool,
    identity: &'a (PathBuf, u64, Option<std::time::SystemTime>),
}

/// Extensions of pickle-based checkpoints.
const PICKLE_EXTENSIONS: &[&str] = &["ckpt", "pt", "pth", "bin", "pkl", "pickle"];

/// Refuses pickle checkpoints by extension and by content (`head`: the first 9 bytes or
/// fewer): a zip archive, as `torch.save` writes, or a raw pickle stream starting with the
/// PROTO opcode — unless the bytes are a safetensors start (an 8-byte header length, then
/// the header's `{`), whose length bytes can look the same.
pub fn refuse_pickle(path: &Path, head: &[u8]) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_lowercase);
    let by_name = ext.is_some_and(|e| PICKLE_EXTENSIONS.contains(&e.as_str()));
    let safetensors_start = head.get(8) == Some(&b'{');
    let zip = head.starts_with(b"PK\x03\x04");
    let raw_pickle =
        head.first() == Some(&0x80) && head.get(1).is_some_and(|&v| (2..=5).contains(&v));
    let by_content = !safetensors_start && (zip || raw_pickle);
    if by_name || by_content {
        return Err(Error::Pickle {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Parses a safetensors file's header (the bytes of the whole file, or at least of its
/// header, which the format checks against the data's size): `(header length, tensors)`.
pub fn parse_header(
    path: &Path,
    bytes: &[u8],
) -> Result<(usize, HashMap<String, safetensors::tensor::TensorInfo>)> {
    refuse_pickle(path, &bytes[..bytes.len().min(9)])?;
    let (header_len, meta) = SafeTensors::read_metadata(bytes).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        what: e.to_string(),
    })?;
    let tensors = meta
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.clone()))
        .collect();
    Ok((header_len, tensors))
}

impl WeightFile {
    /// Maps `path` and parses its header. Pickles, truncated files and corrupt headers are
    /// errors naming the file.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        // Only a regular file: a FIFO would block the open, a device could map anything.
        let file = crate::files::open_regular(path)?;
        // SAFETY: the map is read-only; a file truncated by another process while mapped
        // can fault on access, a risk every mmap-based loader shares (we only read files
        // the user named as model weights).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let (header_len, tensors) = parse_header(path, &map)?;
        let meta = file.metadata().map_err(io)?;
        let identity = (
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            meta.len(),
            meta.modified().ok(),
        );
        Ok(Self {
            path: path.to_path_buf(),
            identity,
            map,
            data_start: 8 + header_len,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The header's `__metadata__` strings (e.g. a LoRA's adapter config).
    pub fn user_metadata(&self) -> Option<HashMap<String, String>> {
        SafeTensors::read_metadata(&self.map)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
    }

    /// Canonical path, length and modification time (what the weight cache keys on).
    pub(crate) fn identity(&self) -> (&PathBuf, u64, Option<std::time::SystemTime>) {
        (&self.identity.0, self.identity.1, self.identity.2)
    }

    pub fn get(&self, name: &str) -> Option<TensorRef<'_>> {
        let (key, info) = self.tensors.get_key_value(name)?;
        let (a, b) = info.data_offsets;
        Some(TensorRef {
            file: &self.path,
            name: key.clone(),
            dtype: info.dtype,
            shape: info.shape.clone(),
            bytes: &self.map[self.data_start + a..self.data_start + b],
            file_offset: self.data_start + a,
            transposed: false,
            identity: &self.identity,
        })
    }
}

/// A model's weights, possibly spread over several files (sharded checkpoints). Clones share
/// the mapped files.
#[derive(Clone)]
pub struct Weights {
    files: Arc<Vec<WeightFile>>,
    /// What errors call the weights: the folder or the single file.
    origin: PathBuf,
    /// For a checkpoint in another layout: the name each network asks for → where the tensor
    /// is in the files (see [`single_file`]). `None`: names are the files' keys.
    renames: Option<Arc<HashMap<String, Rename>>>,
    /// LoRA updates merged into the weights they name as those are read (see
    /// [`Weights::with_lora`]).
    lora: Option<Arc<crate::lora::Patches>>,
    /// Reuse tensors already on the device from the same file region (see [`Weights::sharing`]).
    share: bool,
    /// Random weights instead of files (benchmarks): see [`Weights::synthetic`].
    synthetic: Option<Synthetic>,
}

/// Where a renamed tensor lives: a key of the file, whole or one of `parts` equal slices
/// along its first dimension (a fused q/k/v projection), optionally with trailing unit
/// dimensions dropped (a 1×1 conv stored where a linear is asked for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rename {
    pub source: String,
    /// `(index, parts)`: rows `index·n/parts .. (index+1)·n/parts`.
    pub slice: Option<(usize, usize)>,
    pub squeeze: bool,
    /// The key holds the transpose of the 2-D tensor the name stands for.
    pub transpose: bool,
}

impl Rename {
    pub fn to(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            slice: None,
            squeeze: false,
            transpose: false,
        }
    }
}

/// How a tensor is rearranged for the kernels while uploading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relayout {
    None,
    /// PyTorch `Linear.weight` `[out, in]` → `[in, out]` (matmul's B).
    Transpose,
    /// [`Relayout::Transpose`], then packed in panels of [`crate::tensor::PANEL`] columns
    /// (`out` a multiple of it): matmul's B on CPU devices, where each GEMM tile then streams
    /// its columns from contiguous memory instead of one short piece per long row.
    TransposePanels,
    /// PyTorch conv weight `[out, in, kh, kw]` → `[kh, kw, in, out]` (conv2d's layout).
    ConvToHwio,
    /// [`Relayout::ConvToHwio`], then packed in panels as [`Relayout::TransposePanels`] (K =
    /// kh·kw·in rows, `out` a multiple of [`crate::tensor::PANEL`]): CPU devices' convs.
    ConvToHwioPanels,
}

/// Which dtype weights get on the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightDType {
    /// f16 files stay f16; f32 and bf16 files load as f32 (bf16's range exceeds f16's).
    #[default]
    Auto,
    /// Everything as f16 (a value beyond f16's range is an error naming the tensor).
    F16,
    F32,
}

impl Weights {
    /// The weights in `files` (each a safetensors file); `origin` names them in errors.
    pub fn open(origin: &Path, files: &[PathBuf]) -> Result<Self> {
        if files.is_empty() {
            return Err(Error::ModelLayout {
                path: origin.to_path_buf(),
                what: "no .safetensors weight files found".into(),
            });
        }
        let files = files
            .iter()
            .map(|f| WeightFile::open(f))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            files: Arc::new(files),
            origin: origin.to_path_buf(),
            renames: None,
            lora: None,
            share: true,
            synthetic: None,
        })
    }

    /// Random weights (see [`Synthetic`]); `origin` names them in messages.
    pub fn synthetic(origin: &Path, s: Synthetic) -> Self {
        Self {
            files: Arc::new(Vec::new()),
            origin: origin.to_path_buf(),
            renames: None,
            lora: None,
            share: false,
            synthetic: Some(s),
        }
    }

    /// A table read to the host (the CLIP token embeddings): f32 values of `name`, checked
    /// against `shape`, and whether the source stores it as f16.
    pub fn read_table(&self, name: &str, shape: &[usize]) -> Result<(Vec<f32>, bool)> {
        if let Some(s) = &self.synthetic {
            return Ok((s.values(name, shape), s.f16));
        }
        let t = self.tensor(name)?;
        check_shape(&t, shape)?;
        let mut values = to_f32(&t)?;
        self.merge_lora(name, &mut values, shape)?;
        Ok((values, t.dtype == Dtype::F16))
    }

    /// The same files with `lora`'s updates merged into the weights it names as they are
    /// read or uploaded (`None`: the files' own weights). A merged weight is cached on the
    /// device under its LoRAs' identities and scales: the weights of other views of the same
    /// files are shared, merged ones never are with another set of LoRAs.
    pub fn with_lora(&self, lora: Option<Arc<crate::lora::Patches>>) -> Self {
        Self {
            lora,
            ..self.clone()
        }
    }

    /// The LoRA updates this view merges, if any.
    pub fn lora(&self) -> Option<&crate::lora::Patches> {
        self.lora.as_deref()
    }

    /// Adds the LoRA updates of the weight `name` (PyTorch shape `shape`) to `values`.
    pub(crate) fn merge_lora(&self, name: &str, values: &mut [f32], shape: &[usize]) -> Result<()> {
        match &self.lora {
            Some(p) => crate::lora::Patches::apply(p.for_weight(name), values, shape),
            None => Ok(()),
        }
    }

    /// The cache identities of the LoRA updates of `name` (empty: none).
    pub(crate) fn lora_ids(&self, name: &str) -> Vec<crate::lora::PatchId> {
        self.lora
            .as_ref()
            .map(|p| crate::lora::Patches::ids(p.for_weight(name)))
            .unwrap_or_default()
    }

    /// Whether uploads reuse a tensor another load already put on the same `Gpu` from the
    /// same file region with the same layout and dtype (default: yes — loading a model twice
    /// does not double its weights). `false` always uploads a private copy.
    pub fn sharing(mut self, share: bool) -> Self {
        self.share = share;
        self
    }

    /// This view names tensors by `renames`' keys (only those).
    pub fn with_renames(mut self, renames: HashMap<String, Rename>) -> Self {
        self.renames = Some(Arc::new(renames));
        self
    }

    /// The file or folder the weights come from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Name and shape of every tensor in the files (their own keys, before renaming).
    pub fn file_shapes(&self) -> HashMap<String, Vec<usize>> {
        self.files
            .iter()
            .flat_map(|f| f.tensors.iter().map(|(k, v)| (k.clone(), v.shape.clone())))
            .collect()
    }

    /// A single safetensors file.
    pub fn open_file(path: &Path) -> Result<Self> {
        Self::open(path, &[path.to_path_buf()])
    }

    /// The names tensors are asked for by (after renaming).
    pub fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match &self.renames {
            Some(r) => Box::new(r.keys().map(String::as_str)),
            None => Box::new(self.files.iter().flat_map(WeightFile::names)),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        if self.synthetic.is_some() {
            return true;
        }
        match &self.renames {
            Some(r) => r
                .get(name)
                .is_some_and(|r| self.files.iter().any(|f| f.get(&r.source).is_some())),
            None => self.files.iter().any(|f| f.get(name).is_some()),
        }
    }

    /// The tensor `name`, or an error naming it and the weights.
    pub fn tensor(&self, name: &str) -> Result<TensorRef<'_>> {
        let missing = |tensor: String| Error::MissingTensor {
            path: self.origin.clone(),
            tensor,
        };
        let Some(renames) = &self.renames else {
            return self
                .files
                .iter()
                .find_map(|f| f.get(name))
                .ok_or_else(|| missing(name.to_string()));
        };
        let r = renames.get(name).ok_or_else(|| {
            missing(format!(
                "{name} (no key of this checkpoint's layout maps to it)"
            ))
        })?;
        let mut t = self
            .files
            .iter()
            .find_map(|f| f.get(&r.source))
            .ok_or_else(|| missing(format!("{} (for {name})", r.source)))?;
        t.name = format!("{} (as {name})", r.source);
        if let Some((index, parts)) = r.slice {
            let rows = t.shape.first().copied().unwrap_or(0);
            if parts == 0 || rows % parts != 0 || t.bytes.len() % parts != 0 {
                return Err(Error::TensorData {
                    path: t.file.to_path_buf(),
                    tensor: t.name,
                    what: format!("shape {:?} does not split into {parts} parts", t.shape),
                });
            }
            let len = t.bytes.len() / parts;
            t.bytes = &t.bytes[index * len..(index + 1) * len];
            t.file_offset += index * len;
            t.shape[0] = rows / parts;
        }
        if r.squeeze {
            while t.shape.len() > 2 && t.shape.last() == Some(&1) {
                t.shape.pop();
            }
        }
        if r.transpose {
            if t.shape.len() != 2 {
                return Err(Error::TensorData {
                    path: t.file.to_path_buf(),
                    tensor: t.name,
                    what: format!("shape {:?} is not a matrix to transpose", t.shape),
                });
            }
            t.shape.reverse();
            t.transposed = true;
        }
        Ok(t)
    }

    /// Reads `name` as f32 after checking it has `shape`.
    pub fn read_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.tensor(name)?;
        check_shape(&t, shape)?;
        to_f32(&t)
    }
}

fn check_shape(t: &TensorRef<'_>, shape: &[usize]) -> Result<()> {
    if t.shape.as_slice() != shape {
        return Err(Error::TensorShape {
            path: t.file.to_path_buf(),
            tensor: t.name.clone(),
            expected: shape.to_vec(),
            got: t.shape.to_vec(),
        });
    }
    Ok(())
}

/// The tensor's values as f32 (from f32, f16 or bf16 storage, little-endian).
pub fn to_f32(t: &TensorRef<'_>) -> Result<Vec<f32>> {
    let b = t.bytes;
    let n: usize = t.shape.iter().product();
    let width = match t.dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        other => {
            return Err(Error::TensorData {
                path: t.file.to_path_buf(),
                tensor: t.name.clone(),
                what: format!(
                    "dtype {other:?} is not supported (weights must be F32, F16 or BF16)"
                ),
            });
        }
    };
    if b.len() != n * width {
        return Err(Error::TensorData {
            path: t.file.to_path_buf(),
            tensor: t.name.clone(),
            what: format!("{} bytes for {n} {:?} values", b.len(), t.dtype),
        });
    }
    let values: Vec<f32> = match t.dtype {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    };
    Ok(match (t.transposed, t.shape.as_slice()) {
        // Stored [c, r] for the logical [r, c].
        (true, &[r, c]) => upload::transpose(&values, c, r),
        _ => values,
    })
}

/// How a model path stores its networks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelLayout {
    /// A diffusers folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`, …).
    Diffusers(PathBuf),
    /// One original (CompVis-layout) `.safetensors` checkpoint.
    SingleFile(PathBuf),
}

/// Detects the layout of `path`; pickles and unknown files are errors that say what is
/// expected.
pub fn detect_layout(path: &Path) -> Result<ModelLayout> {
    if path.is_dir() {
        if path.join("model_index.json").is_file() {
            return Ok(ModelLayout::Diffusers(path.to_path_buf()));
        }
        return Err(Error::ModelLayout {
            path: path.to_path_buf(),
            what: "a folder without model_index.json (expected a diffusers pipeline folder)".into(),
        });
    }
    let mut head = [0u8; 9];
    let n = {
        use std::io::Read;
        let mut f = crate::files::open_regular(path)?;
        f.read(&mut head).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?
    };
    refuse_pickle(path, &head[..n])?;
    if path.extension().and_then(|e| e.to_str()) == Some("safetensors") {
        return Ok(ModelLayout::SingleFile(path.to_path_buf()));
    }
    Err(Error::ModelLayout {
        path: path.to_path_buf(),
        what: "expected a diffusers folder or a .safetensors checkpoint".into(),
    })
}
