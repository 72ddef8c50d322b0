//! LoRA updates matched to a network's weights and merged into them as they are uploaded.

use super::{LoraFile, LoraSpec, Part, keys};
use crate::error::{Error, Result};
use crate::weights::Weights;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The LoRA updates of one network, by the name of the weight they change (see
/// [`Weights::with_lora`](crate::weights::Weights::with_lora)).
pub struct Patches {
    part: Part,
    by_name: HashMap<String, Vec<Patch>>,
}

/// One module's update of a weight: `scale · up · down`.
pub(crate) struct Patch {
    file: Arc<LoraFile>,
    module: usize,
    /// The user's scale times the module's alpha / rank.
    scale: f32,
}

/// `w[o, c] += scale · Σₖ up[o, k] · down[k, c]` for `w` of `out` rows (`down`: `[rank,
/// w.len() / out]`, `up`: `[out, rank]`): the host merge of one LoRA module, row by row as
/// rank-many axpys (vectorised, one pass over the weight per rank).
pub fn add_low_rank(
    w: &mut [f32],
    out: usize,
    down: &[f32],
    up: &[f32],
    rank: usize,
    scale: f32,
) -> Result<()> {
    let cols = w.len() / out.max(1);
    if out == 0 || w.len() != out * cols || down.len() != rank * cols || up.len() != out * rank {
        return Err(Error::shape(
            "lora merge",
            format!(
                "weight of {} values in {out} rows, down of {}, up of {} (rank {rank})",
                w.len(),
                down.len(),
                up.len()
            ),
        ));
    }
    // One thread: splitting the rows over this 2-vCPU host's cores measured 25–40 % slower
    // (benches/lora.rs).
    for (o, row) in w.chunks_exact_mut(cols.max(1)).enumerate() {
        for k in 0..rank {
            let a = scale * up[o * rank + k];
            if a == 0.0 {
                continue;
            }
            for (x, d) in row.iter_mut().zip(&down[k * cols..(k + 1) * cols]) {
                *x += a * d;
            }
        }
    }
    Ok(())
}

/// A module no weight took: the index of its LoRA and its down key.
pub(crate) type Unmatched = (usize, String);

/// What identifies a merged weight's update in the device's weight cache: each LoRA's file
/// (canonical path, length, modification time), module and scale.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PatchId {
    file: (PathBuf, u64, Option<std::time::SystemTime>),
    module: String,
    scale_bits: u32,
}

/// A weight's name as LoRA modules spell it: without `.weight` (and a text encoder's
/// `text_model.`), `.` as `_`. `None` for names that are not a weight (biases, norms' shifts).
fn module_of(asked: &str, part: Part) -> Option<String> {
    let m = asked.strip_suffix(".weight")?;
    let m = if part.is_text() {
        m.strip_prefix("text_model.").unwrap_or(m)
    } else {
        m
    };
    Some(m.replace('.', "_"))
}

impl Patches {
    /// Matches the modules `loras` hold for `part` to the weights `base` names (`None`: the
    /// model has no such network), checking each update's shape against its weight. Returns
    /// the table (`None` when nothing applies) and the modules that matched no weight (the
    /// index of their LoRA in `loras`, their down key). `layers_per_block` places kohya's SDXL (original-layout) U-Net names.
    pub(crate) fn build(
        part: Part,
        loras: &[(Arc<LoraFile>, LoraSpec)],
        base: Option<&Weights>,
        layers_per_block: usize,
    ) -> Result<(Option<Arc<Patches>>, Vec<Unmatched>)> {
        let names: HashMap<String, String> = base
            .map(|w| {
                w.names()
                    .filter_map(|n| Some((module_of(n, part)?, n.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let mut by_name: HashMap<String, Vec<Patch>> = HashMap::new();
        let mut unmatched = Vec::new();
        for (index, (file, spec)) in loras.iter().enumerate() {
            for (i, m) in file.modules.iter().enumerate() {
                if m.part != part {
                    continue;
                }
                let name = if m.sgm {
                    keys::sgm_to_diffusers(&m.name, layers_per_block)
                } else {
                    Some(m.name.clone())
                };
                let (Some(asked), Some(w)) = (name.and_then(|n| names.get(&n)), base) else {
                    unmatched.push((index, m.down.clone()));
                    continue;
                };
                check_fits(file, m, &w.tensor(asked)?.shape, asked)?;
                let scale = spec.scale_for(part) * m.alpha_scale;
                if scale != 0.0 {
                    by_name.entry(asked.clone()).or_default().push(Patch {
                        file: file.clone(),
                        module: i,
                        scale,
                    });
                }
            }
        }
        let table = (!by_name.is_empty()).then(|| Arc::new(Patches { part, by_name }));
        Ok((table, unmatched))
    }

    /// The network the table patches.
    pub fn part(&self) -> Part {
        self.part
    }

    /// How many weights the table changes.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The updates of the weight asked for as `name` (empty: none).
    pub(crate) fn for_weight(&self, name: &str) -> &[Patch] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// The cache identity of `patches`.
    pub(crate) fn ids(patches: &[Patch]) -> Vec<PatchId> {
        patches
            .iter()
            .map(|p| {
                let (path, len, time) = p.file.file.identity();
                PatchId {
                    file: (path.clone(), len, time),
                    module: p.file.modules[p.module].down.clone(),
                    scale_bits: p.scale.to_bits(),
                }
            })
            .collect()
    }

    /// Adds `patches` to `values`, a weight of PyTorch shape `shape` (`[out, …]`), in place:
    /// `W[o, c] += s · Σₖ up[o, k] · down[k, c]` over the flattened input dimensions `c`
    /// (a conv's `in·kh·kw`: LoCon's `down` keeps the kernel, its `up` is 1×1).
    pub(crate) fn apply(patches: &[Patch], values: &mut [f32], shape: &[usize]) -> Result<()> {
        let out = shape.first().copied().unwrap_or(0);
        for p in patches {
            let m = &p.file.modules[p.module];
            let read = |key: &str| match p.file.file.get(key) {
                Some(t) => crate::weights::to_f32(&t),
                None => Err(Error::Lora {
                    path: p.file.path().to_path_buf(),
                    what: format!("{key} is gone"),
                }),
            };
            let (down, up) = (read(&m.down)?, read(&m.up)?);
            // check_fits ran on the same shapes when the table was built.
            add_low_rank(values, out, &down, &up, m.rank, p.scale).map_err(|e| Error::Lora {
                path: p.file.path().to_path_buf(),
                what: format!("{} does not fit a weight of shape {shape:?}: {e}", m.down),
            })?;
        }
        Ok(())
    }
}

/// An error naming the module and both shapes unless its update `up · down` has the weight's
/// shape `shape` (`[out, in]`, or a conv's `[out, in, kh, kw]`).
fn check_fits(file: &LoraFile, m: &super::Module, shape: &[usize], asked: &str) -> Result<()> {
    let shape_of = |k: &str| file.file.get(k).map(|t| t.shape).unwrap_or_default();
    let (down, up) = (shape_of(&m.down), shape_of(&m.up));
    let out = shape.first().copied().unwrap_or(0);
    let cols: usize = shape.iter().skip(1).product();
    let down_ok = down.first() == Some(&m.rank) && down.iter().skip(1).product::<usize>() == cols;
    let up_ok =
        up.len() >= 2 && up[0] == out && up[1] == m.rank && up.iter().skip(2).all(|&d| d == 1);
    // A conv update needs a conv weight of the same kernel; a 1×1 one fits a linear too.
    let kernel_ok = down.len() <= 2
        || shape.len() == down.len() && shape[2..] == down[2..]
        || down[2..].iter().all(|&d| d == 1);
    if down_ok && up_ok && kernel_ok {
        return Ok(());
    }
    Err(Error::Lora {
        path: file.path().to_path_buf(),
        what: format!(
            "{} (down {down:?}, up {up:?}) does not fit the model's {asked} of shape {shape:?}",
            m.down
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::{LoraSpec, open_all};

    fn write(path: &std::path::Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(k, s, v)| {
                let bytes: &[u8] = bytemuck::cast_slice(v);
                let view =
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), bytes)
                        .unwrap();
                (k.to_string(), view)
            })
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    }

    fn ramp(n: usize, k: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * k).sin() * 0.5).collect()
    }

    /// Each module scaled by its own alpha / rank (kohya, A1111), the LoCon conv's kernel on
    /// `down`, against a plain loop; the user's scale on top.
    #[test]
    fn merged_weights_equal_the_plain_sum() {
        let dir = std::env::temp_dir().join(format!("sd-wgpu-merge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (base, lora) = (dir.join("base.safetensors"), dir.join("lora.safetensors"));
        let (wa, wc) = (ramp(12, 0.3), ramp(2 * 3 * 9, 0.7));
        write(
            &base,
            &[
                ("a.weight", vec![3, 4], wa.clone()),
                ("c.weight", vec![2, 3, 3, 3], wc.clone()),
            ],
        );
        let (da, ua) = (ramp(8, 1.1), ramp(6, 1.3));
        let (dc, uc) = (ramp(27, 0.9), ramp(2, 1.7));
        write(
            &lora,
            &[
                ("lora_unet_a.lora_down.weight", vec![2, 4], da.clone()),
                ("lora_unet_a.lora_up.weight", vec![3, 2], ua.clone()),
                ("lora_unet_a.alpha", vec![], vec![1.0]),
                ("lora_unet_c.lora_down.weight", vec![1, 3, 3, 3], dc.clone()),
                ("lora_unet_c.lora_up.weight", vec![2, 1, 1, 1], uc.clone()),
                ("lora_unet_c.alpha", vec![], vec![3.0]),
            ],
        );
        let w = Weights::open_file(&base).unwrap();
        let files = open_all(&[LoraSpec::new(&lora, 0.7)]).unwrap();
        let (p, unmatched) = Patches::build(Part::Unet, &files, Some(&w), 1).unwrap();
        assert!(unmatched.is_empty());
        let merged = w.with_lora(p);
        let got_a = merged.read_table("a.weight", &[3, 4]).unwrap().0;
        let got_c = merged.read_table("c.weight", &[2, 3, 3, 3]).unwrap().0;
        for o in 0..3 {
            for c in 0..4 {
                let d: f32 = (0..2).map(|k| ua[o * 2 + k] * da[k * 4 + c]).sum();
                let want = wa[o * 4 + c] + 0.7 * (1.0 / 2.0) * d;
                assert!((got_a[o * 4 + c] - want).abs() < 1e-6, "a[{o},{c}]");
            }
        }
        for o in 0..2 {
            for c in 0..27 {
                let want = wc[o * 27 + c] + 0.7 * 3.0 * uc[o] * dc[c];
                assert!((got_c[o * 27 + c] - want).abs() < 1e-6, "c[{o},{c}]");
            }
        }
        // The plain view is untouched.
        assert_eq!(w.read_table("a.weight", &[3, 4]).unwrap().0, wa);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
