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
    ) -> Result<(Option<Arc<Patches>>, Vec<(usize, String)>)> {
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
        for p in patches {
            let m = &p.file.modules[p.module];
            let out = shape.first().copied().unwrap_or(0);
            let cols = values.len() / out.max(1);
            let read = |key: &str| {
                let t = p.file.file.get(key).expect("parsed key");
                crate::weights::to_f32(&t)
            };
            let (down, up) = (read(&m.down)?, read(&m.up)?);
            let r = m.rank;
            if down.len() != r * cols || up.len() != out * r {
                // check_fits ran on the same shapes when the table was built.
                return Err(Error::Lora {
                    path: p.file.path().to_path_buf(),
                    what: format!("{} does not fit a weight of shape {shape:?}", m.down),
                });
            }
            for o in 0..out {
                let row = &mut values[o * cols..(o + 1) * cols];
                for k in 0..r {
                    let a = p.scale * up[o * r + k];
                    if a == 0.0 {
                        continue;
                    }
                    for (w, d) in row.iter_mut().zip(&down[k * cols..(k + 1) * cols]) {
                        *w += a * d;
                    }
                }
            }
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
    let up_ok = up.len() >= 2
        && up[0] == out
        && up[1] == m.rank
        && up.iter().skip(2).all(|&d| d == 1);
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
