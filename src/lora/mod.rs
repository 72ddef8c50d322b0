//! LoRA: low-rank weight updates `W' = W + s · (alpha / rank) · up · down` read from the files
//! people download (kohya / A1111, diffusers / PEFT; see [`keys`]) and merged into the
//! networks' weights as they are uploaded (see [`Patches`] and `Pipeline::set_loras`).
//!
//! Scaling follows the formats' own rules: a kohya module by its `.alpha` over its rank (no
//! alpha: 1), a PEFT module by its adapter metadata's `lora_alpha` over `r` (`alpha_pattern`
//! and `use_rslora` honoured; no metadata: 1, diffusers' convention) — times the user's scale,
//! one per LoRA for the U-Net and one for the text encoders (diffusers' `set_adapters`
//! weights; A1111's `<lora:name:te:unet>`).

pub mod keys;
mod merge;
pub mod tags;

pub use keys::Part;
pub(crate) use merge::PatchId;
pub use merge::{Patches, add_low_rank};

use crate::error::{Error, Result};
use crate::weights::WeightFile;
use keys::{KeyInfo, Role};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A LoRA to apply and its strength.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    /// Multiplier of the U-Net's update (1: as trained; 0: off).
    pub scale: f32,
    /// Multiplier of the text encoders' update; `None`: `scale`.
    pub text_scale: Option<f32>,
}

impl LoraSpec {
    pub fn new(path: impl Into<PathBuf>, scale: f32) -> Self {
        Self {
            path: path.into(),
            scale,
            text_scale: None,
        }
    }

    /// The user's multiplier for `part`.
    pub fn scale_for(&self, part: Part) -> f32 {
        match part {
            Part::Unet => self.scale,
            _ => self.text_scale.unwrap_or(self.scale),
        }
    }
}

/// One module's update in a file: the keys of its two factors and its own scale
/// (alpha / rank).
#[derive(Clone, Debug)]
pub(crate) struct Module {
    pub part: Part,
    /// `_`-joined module name (kohya SDXL U-Nets: the original layout, `sgm`).
    pub name: String,
    pub sgm: bool,
    pub down: String,
    pub up: String,
    pub rank: usize,
    pub alpha_scale: f32,
}

/// A parsed LoRA file: its modules, and the keys it holds that the engine cannot apply.
pub struct LoraFile {
    pub(crate) file: WeightFile,
    pub(crate) modules: Vec<Module>,
    /// Keys of no known format, or of a variant the engine does not apply (with why).
    pub unknown: Vec<String>,
}

/// PEFT adapter metadata for one network (diffusers' `lora_adapter_metadata`, a `LoraConfig`
/// per component with the component's prefix).
#[derive(Default)]
struct PeftConfig {
    r: Option<f64>,
    lora_alpha: Option<f64>,
    alpha_pattern: HashMap<String, f64>,
    rank_pattern: HashMap<String, f64>,
    rslora: bool,
}

impl PeftConfig {
    fn read(meta: &serde_json::Value, part: Part) -> Option<Self> {
        let get = |k: &str| meta.get(format!("{}.{k}", part.name()));
        let pattern = |k: &str| -> HashMap<String, f64> {
            get(k)
                .and_then(|v| v.as_object())
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let cfg = Self {
            r: get("r").and_then(|v| v.as_f64()),
            lora_alpha: get("lora_alpha").and_then(|v| v.as_f64()),
            alpha_pattern: pattern("alpha_pattern"),
            rank_pattern: pattern("rank_pattern"),
            rslora: get("use_rslora").and_then(|v| v.as_bool()) == Some(true),
        };
        (cfg.r.is_some() || cfg.lora_alpha.is_some()).then_some(cfg)
    }

    /// PEFT's per-module value of a pattern: the key equal to the module's dotted name or
    /// to a tail of it after a dot (`get_pattern_key`'s `(.*\.)?key$`, for literal keys).
    fn pattern(map: &HashMap<String, f64>, dotted: &str) -> Option<f64> {
        map.iter()
            .find(|(k, _)| dotted == k.as_str() || dotted.ends_with(&format!(".{k}")))
            .map(|(_, v)| *v)
    }

    /// `lora_alpha / r` (rsLoRA: `/ √r`) for the module `dotted` of rank `rank`.
    fn scale(&self, dotted: &str, rank: usize) -> f32 {
        let r = Self::pattern(&self.rank_pattern, dotted)
            .or(self.r)
            .unwrap_or(rank as f64);
        let alpha = Self::pattern(&self.alpha_pattern, dotted)
            .or(self.lora_alpha)
            .unwrap_or(r);
        let denom = if self.rslora { r.sqrt() } else { r };
        (alpha / denom) as f32
    }
}

impl LoraFile {
    /// Opens and parses `path` (a safetensors file; pickles are refused).
    pub fn open(path: &Path) -> Result<Self> {
        let file = WeightFile::open(path)?;
        let err = |what: String| Error::Lora {
            path: path.to_path_buf(),
            what,
        };
        let metadata = file
            .user_metadata()
            .and_then(|m| m.get("lora_adapter_metadata").cloned())
            .map(|s| serde_json::from_str::<serde_json::Value>(&s))
            .transpose()
            .map_err(|e| err(format!("lora_adapter_metadata is not JSON: {e}")))?;
        let mut unknown = Vec::new();
        // (part, module) → ([down key, up key, alpha key], kohya SGM name); BTreeMap: a
        // stable order.
        type Found = ([Option<String>; 3], bool);
        let mut found: BTreeMap<(Part, String), Found> = BTreeMap::new();
        let mut names: Vec<&str> = file.names().collect();
        names.sort_unstable();
        for key in names {
            match keys::classify(key) {
                None => unknown.push(key.to_string()),
                Some(KeyInfo {
                    role: Role::Unsupported(what),
                    ..
                }) => unknown.push(format!("{key} ({what})")),
                Some(k) => {
                    let slot = match k.role {
                        Role::Down => 0,
                        Role::Up => 1,
                        _ => 2,
                    };
                    let entry = found.entry((k.part, k.module)).or_default();
                    entry.0[slot] = Some(key.to_string());
                    entry.1 = k.sgm;
                }
            }
        }
        let configs: HashMap<Part, PeftConfig> = metadata
            .iter()
            .flat_map(|m| Part::ALL.map(|p| PeftConfig::read(m, p).map(|c| (p, c))))
            .flatten()
            .collect();
        let mut modules = Vec::new();
        for ((part, name), ([down, up, alpha], sgm)) in found {
            let missing = if up.is_none() {
                "up (lora_B)"
            } else {
                "down (lora_A)"
            };
            let (Some(down), Some(up)) = (down, up) else {
                return Err(err(format!(
                    "module {name} ({}) lacks its {missing} factor",
                    part.name()
                )));
            };
            let d = file.get(&down).expect("listed key");
            let rank = d.shape.first().copied().unwrap_or(0);
            if rank == 0 {
                return Err(err(format!("{down} has shape {:?} (rank 0)", d.shape)));
            }
            let alpha_scale = match &alpha {
                Some(a) => {
                    let t = file.get(a).expect("listed key");
                    let v = crate::weights::to_f32(&t)?;
                    let [v] = v.as_slice() else {
                        return Err(err(format!("{a} is not a scalar (shape {:?})", t.shape)));
                    };
                    *v / rank as f32
                }
                None => match configs.get(&part) {
                    Some(c) => c.scale(&peft_dotted(&down), rank),
                    None => 1.0,
                },
            };
            if !alpha_scale.is_finite() {
                return Err(err(format!(
                    "module {name}: scale {alpha_scale} is not finite"
                )));
            }
            modules.push(Module {
                part,
                name,
                sgm,
                down,
                up,
                rank,
                alpha_scale,
            });
        }
        if modules.is_empty() && unknown.is_empty() {
            return Err(err("holds no LoRA modules".into()));
        }
        Ok(Self {
            file,
            modules,
            unknown,
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// How many modules the file updates in `part`.
    pub fn module_count(&self, part: Part) -> usize {
        self.modules.iter().filter(|m| m.part == part).count()
    }
}

/// A PEFT key's module in PEFT's dotted naming (for its patterns): the key without the
/// component prefix and the `.lora_A.weight` tail.
fn peft_dotted(key: &str) -> String {
    let rest = keys::split_part(key).1;
    rest.split(".lora_").next().unwrap_or(rest).to_string()
}

/// The specs' files, parsed; a file named twice in the list (by the same canonical path) is
/// parsed once.
pub(crate) fn open_all(specs: &[LoraSpec]) -> Result<Vec<(Arc<LoraFile>, LoraSpec)>> {
    let mut opened: HashMap<PathBuf, Arc<LoraFile>> = HashMap::new();
    specs
        .iter()
        .map(|s| {
            if !(s.scale.is_finite() && s.scale_for(Part::TextEncoder).is_finite()) {
                return Err(Error::Lora {
                    path: s.path.clone(),
                    what: format!(
                        "scale {} / text scale {:?} is not finite",
                        s.scale, s.text_scale
                    ),
                });
            }
            let canon = std::fs::canonicalize(&s.path).unwrap_or_else(|_| s.path.clone());
            let f = match opened.get(&canon) {
                Some(f) => f.clone(),
                None => {
                    let f = Arc::new(LoraFile::open(&s.path)?);
                    opened.insert(canon, f.clone());
                    f
                }
            };
            Ok((f, s.clone()))
        })
        .collect()
}
