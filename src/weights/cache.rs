//! Weights already on a device, by file region and layout: a second pipeline loading the same
//! file on the same [`Gpu`](crate::gpu::Gpu) gets the same buffers. Entries are weak, so a
//! dropped pipeline frees its weights; a weight with LoRA updates merged in is keyed by them
//! too (see [`crate::lora`]); the device is named by its process-unique
//! [`Gpu::uid`](crate::gpu::Gpu::uid).

use crate::tensor::{DType, Tensor, WeakTensor};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Where one source tensor of a weight lies: the file, its length and modification time, and
/// the tensor's byte range in it and whether it is read transposed.
pub(crate) type SourcePart = (
    std::path::PathBuf,
    (u64, Option<std::time::SystemTime>),
    (usize, usize, bool),
);

/// A weight on a device: the device, its source tensors (one, or the parts of a fused
/// weight in column order), and how it was laid out.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WeightKey {
    pub gpu: u64,
    pub parts: Vec<SourcePart>,
    pub relayout: u8,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// LoRA updates merged in (empty: the file's own weight).
    pub lora: Vec<crate::lora::PatchId>,
}

fn cache() -> &'static Mutex<HashMap<WeightKey, WeakTensor>> {
    static CACHE: OnceLock<Mutex<HashMap<WeightKey, WeakTensor>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The live tensor uploaded under `key`, if any.
pub(crate) fn lookup(key: &WeightKey) -> Option<Tensor> {
    let map = cache().lock().unwrap_or_else(|e| e.into_inner());
    map.get(key).and_then(WeakTensor::upgrade)
}

/// Records `tensor` under `key` (and forgets entries whose tensors are gone).
pub(crate) fn insert(key: WeightKey, tensor: &Tensor) {
    let mut map = cache().lock().unwrap_or_else(|e| e.into_inner());
    map.retain(|_, w| w.upgrade().is_some());
    map.insert(key, WeakTensor::of(tensor));
}
