//! Uploading checkpoint tensors to the device: dtype policy, PyTorch → kernel re-layouts,
//! fused weights joined by columns, the device's weight cache, f16 range checks.

use super::{Relayout, TensorRef, WeightDType, Weights, cache, check_shape, to_f32};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{DType, PANEL, Tensor, pack_panels};
use safetensors::Dtype;

impl Weights {
    /// Uploads `name` (checked against `shape`, PyTorch's layout) as a GPU tensor of the
    /// dtype `policy` picks, rearranged by `relayout`. The GPU tensor is labelled with `name`.
    pub fn upload(
        &self,
        gpu: &Gpu,
        name: &str,
        shape: &[usize],
        relayout: Relayout,
        policy: WeightDType,
    ) -> Result<Tensor> {
        let gpu_shape = relaid_shape(relayout, shape);
        if let Some(s) = &self.synthetic {
            // Made on the device (in a simulation, sized the same way: its fill's parameters
            // included); random values need no re-layout: only the shape changes.
            let t = s.device_tensor(gpu, name, shape, &gpu_shape, s.dtype(policy))?;
            return Ok(laid_out(t, relayout));
        }
        let t = self.tensor(name)?;
        check_shape(&t, shape)?;
        let dtype = gpu_dtype(policy, &[&t]);
        if gpu.is_simulating() {
            return Ok(laid_out(simulated(gpu, &gpu_shape, dtype, name)?, relayout));
        }
        let key = self.cache_key(gpu, &[&t], relayout, dtype, shape, &[name]);
        if let Some(hit) = key.as_ref().and_then(cache::lookup) {
            return Ok(hit);
        }
        let mut values = to_f32(&t)?;
        self.merge_lora(name, &mut values, shape)?;
        let (values, gpu_shape) = relaid(&t, values, shape, relayout)?;
        check_f16_range(&t, &values, dtype)?;
        let tensor = laid_out(
            Tensor::from_f32(gpu, &values, &gpu_shape, dtype, name)?,
            relayout,
        );
        if let Some(k) = key {
            cache::insert(k, &tensor);
        }
        Ok(tensor)
    }

    /// Several tensors uploaded as one, their columns side by side: part `names[p]` (PyTorch
    /// shape `shapes[p]`: a `Linear.weight` `[out_p, in]` with [`Relayout::Transpose`], or a
    /// bias `[out_p]` with [`Relayout::None`]) is laid out as [`Weights::upload`] would, then
    /// the parts are joined along the last dimension: `[in, Σ out_p]` or `[Σ out_p]`. Fuses
    /// projections of one input into one GEMM (self-attention's `to_q`, `to_k`, `to_v`);
    /// `label` names the GPU tensor. f16 only when every part is (or `policy` says f16).
    pub fn upload_columns(
        &self,
        gpu: &Gpu,
        names: &[String],
        shapes: &[Vec<usize>],
        relayout: Relayout,
        policy: WeightDType,
        label: &str,
    ) -> Result<Tensor> {
        let rows = match (relayout, shapes.first().map(Vec::as_slice)) {
            (Relayout::Transpose | Relayout::TransposePanels, Some(&[_, i])) => Some(i),
            (Relayout::None, Some(&[_])) => None,
            _ => {
                return Err(Error::unsupported(
                    "fused weight",
                    format!("{relayout:?} of {shapes:?} does not join by columns ({label})"),
                ));
            }
        };
        let same_rows = shapes.iter().all(|s| match rows {
            Some(i) => s.len() == 2 && s[1] == i,
            None => s.len() == 1,
        });
        if names.len() != shapes.len() || !same_rows {
            return Err(Error::unsupported(
                "fused weight",
                format!("parts {names:?} with shapes {shapes:?} do not share their rows"),
            ));
        }
        let total: usize = shapes.iter().map(|s| s[0]).sum();
        let (torch_shape, gpu_shape) = match rows {
            Some(i) => (vec![total, i], vec![i, total]),
            None => (vec![total], vec![total]),
        };
        if relayout == Relayout::TransposePanels && total % PANEL != 0 {
            return Err(Error::unsupported(
                "fused weight",
                format!("{total} columns are not whole panels of {PANEL} ({label})"),
            ));
        }
        if let Some(s) = &self.synthetic {
            let t = s.device_tensor(gpu, label, &torch_shape, &gpu_shape, s.dtype(policy))?;
            return Ok(laid_out(t, relayout));
        }
        let parts = names
            .iter()
            .zip(shapes)
            .map(|(n, shape)| {
                let t = self.tensor(n)?;
                check_shape(&t, shape)?;
                Ok(t)
            })
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&TensorRef<'_>> = parts.iter().collect();
        let dtype = gpu_dtype(policy, &refs);
        if gpu.is_simulating() {
            return Ok(laid_out(
                simulated(gpu, &gpu_shape, dtype, label)?,
                relayout,
            ));
        }
        let key = self.cache_key(gpu, &refs, relayout, dtype, &torch_shape, names);
        if let Some(hit) = key.as_ref().and_then(cache::lookup) {
            return Ok(hit);
        }
        let rows = rows.unwrap_or(1);
        let mut fused = vec![0.0f32; rows * total];
        let mut col = 0;
        for ((t, shape), name) in parts.iter().zip(shapes).zip(names) {
            let mut values = to_f32(t)?;
            self.merge_lora(name, &mut values, shape)?;
            let part_relayout = match relayout {
                Relayout::TransposePanels => Relayout::Transpose,
                r => r,
            };
            let (values, _) = relaid(t, values, shape, part_relayout)?;
            check_f16_range(t, &values, dtype)?;
            let width = shape[0];
            for r in 0..rows {
                fused[r * total + col..r * total + col + width]
                    .copy_from_slice(&values[r * width..(r + 1) * width]);
            }
            col += width;
        }
        if relayout == Relayout::TransposePanels {
            fused = pack_panels(&fused, rows, total);
        }
        let tensor = laid_out(
            Tensor::from_f32(gpu, &fused, &gpu_shape, dtype, label)?,
            relayout,
        );
        if let Some(k) = key {
            cache::insert(k, &tensor);
        }
        Ok(tensor)
    }

    /// The device cache's key for a weight made of `parts` (asked for as `names`), LoRA
    /// updates included (none when sharing is off).
    fn cache_key<S: AsRef<str>>(
        &self,
        gpu: &Gpu,
        parts: &[&TensorRef<'_>],
        relayout: Relayout,
        dtype: DType,
        shape: &[usize],
        names: &[S],
    ) -> Option<cache::WeightKey> {
        self.share.then(|| cache::WeightKey {
            gpu: gpu.uid(),
            parts: parts
                .iter()
                .map(|t| {
                    (
                        t.identity.0.clone(),
                        (t.identity.1, t.identity.2),
                        (t.file_offset, t.bytes.len(), t.transposed),
                    )
                })
                .collect(),
            relayout: relayout as u8,
            dtype,
            shape: shape.to_vec(),
            lora: names
                .iter()
                .flat_map(|n| self.lora_ids(n.as_ref()))
                .collect(),
        })
    }
}

/// A weight as a memory estimate sees it (inside [`Gpu::simulate`]): the tensor a load would
/// allocate, its data never read. The device's weight cache is neither asked nor told (a
/// placeholder must not be found later; a network the estimate loads again is sized as a
/// fresh copy even where its buffers are live, since releasing it would free them).
/// The uploaded tensor marked panel-packed when `relayout` packed it.
fn laid_out(t: Tensor, relayout: Relayout) -> Tensor {
    if matches!(
        relayout,
        Relayout::TransposePanels | Relayout::ConvToHwioPanels
    ) {
        t.with_panels()
    } else {
        t
    }
}

fn simulated(gpu: &Gpu, gpu_shape: &[usize], dtype: DType, name: &str) -> Result<Tensor> {
    Tensor::empty(gpu, gpu_shape, dtype, name)
}

/// The device shape `relayout` gives a weight of PyTorch shape `shape` (checked by
/// [`relaid`] when the data is read).
fn relaid_shape(relayout: Relayout, shape: &[usize]) -> Vec<usize> {
    match (relayout, shape) {
        (Relayout::Transpose | Relayout::TransposePanels, &[o, i]) => vec![i, o],
        (Relayout::ConvToHwio | Relayout::ConvToHwioPanels, &[o, i, kh, kw]) => vec![kh, kw, i, o],
        _ => shape.to_vec(),
    }
}

/// The GPU dtype `policy` gives a weight read from `parts`: f16 when asked, or (`Auto`) when
/// every part is stored f16; f32 otherwise.
fn gpu_dtype(policy: WeightDType, parts: &[&TensorRef<'_>]) -> DType {
    match policy {
        WeightDType::F16 => DType::F16,
        WeightDType::Auto if parts.iter().all(|t| t.dtype == Dtype::F16) => DType::F16,
        _ => DType::F32,
    }
}

/// `values` (`t`'s, in f32) re-laid out for the GPU, with the GPU shape.
fn relaid(
    t: &TensorRef<'_>,
    values: Vec<f32>,
    shape: &[usize],
    relayout: Relayout,
) -> Result<(Vec<f32>, Vec<usize>)> {
    Ok(match (relayout, shape) {
        (Relayout::None, _) => (values, shape.to_vec()),
        (Relayout::Transpose, &[o, i]) => (transpose(&values, o, i), vec![i, o]),
        (Relayout::TransposePanels, &[o, i]) if o % PANEL == 0 => {
            (pack_panels(&transpose(&values, o, i), i, o), vec![i, o])
        }
        (Relayout::ConvToHwioPanels, &[o, i, kh, kw]) if o % PANEL == 0 => (
            pack_panels(
                &crate::ops::conv2d::oihw_to_hwio(&values, o, i, kh, kw),
                kh * kw * i,
                o,
            ),
            vec![kh, kw, i, o],
        ),
        (Relayout::ConvToHwio, &[o, i, kh, kw]) => (
            crate::ops::conv2d::oihw_to_hwio(&values, o, i, kh, kw),
            vec![kh, kw, i, o],
        ),
        _ => {
            return Err(Error::TensorData {
                path: t.file.to_path_buf(),
                tensor: t.name.clone(),
                what: format!("{relayout:?} does not apply to shape {shape:?}"),
            });
        }
    })
}

/// An error naming `t` when a value of it does not fit the f16 it would be stored as.
fn check_f16_range(t: &TensorRef<'_>, values: &[f32], dtype: DType) -> Result<()> {
    if dtype != DType::F16 {
        return Ok(());
    }
    match values
        .iter()
        .find(|v| v.is_finite() && v.abs() > f32::from(half::f16::MAX))
    {
        Some(v) => Err(Error::TensorData {
            path: t.file.to_path_buf(),
            tensor: t.name.clone(),
            what: format!("value {v} does not fit f16 (load with f32 weights instead)"),
        }),
        None => Ok(()),
    }
}

pub(super) fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}
