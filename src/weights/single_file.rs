//! Original single-file checkpoints (the CompVis / Stability "LDM" layout that UIs share):
//! one `.safetensors` with `model.diffusion_model.*` (U-Net), `first_stage_model.*` (VAE)
//! and `cond_stage_model.transformer.*` (SD 1.x: Hugging Face CLIP keys) or
//! `cond_stage_model.model.*` (SD 2.x: the OpenCLIP text tower, with fused
//! `attn.in_proj_weight`); SDXL's (Stability's "SGM" layout) has both towers as
//! `conditioner.embedders.0.transformer.*` (CLIP ViT-L) and `conditioner.embedders.1.model.*`
//! (OpenCLIP ViT-bigG with its `text_projection`), and the U-Net's added embedding as
//! `label_emb.0.{0,2}`.
//!
//! Nothing is converted in memory ahead of time: each network gets a view of the file whose
//! tensor names are the diffusers ones, built by renaming every key of the file. The renaming
//! follows the structure diffusers' `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`
//! and `convert_open_clip_checkpoint` (diffusers/loaders/single_file_utils.py) undo; the
//! fixtures made by `tools/make_single_file_fixtures.py` are checked against diffusers'
//! `from_single_file` on the same files.

use super::{Rename, Weights};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

pub const UNET_PREFIX: &str = "model.diffusion_model.";
pub const VAE_PREFIX: &str = "first_stage_model.";
pub const CLIP_PREFIX: &str = "cond_stage_model.transformer.";
pub const OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";
pub const SGM_CLIP_PREFIX: &str = "conditioner.embedders.0.transformer.";
pub const SGM_OPEN_CLIP_PREFIX: &str = "conditioner.embedders.1.model.";
/// SDXL refiner single files: OpenCLIP ViT-bigG alone, as the first embedder.
pub const SGM_REFINER_PREFIX: &str = "conditioner.embedders.0.model.";

/// Which text tower(s) a single file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextTower {
    /// SD 1.x: OpenAI CLIP ViT-L/14 in Hugging Face keys.
    Clip,
    /// SD 2.x: OpenCLIP ViT-H/14 in its own keys.
    OpenClip,
    /// SDXL base: CLIP ViT-L/14 (Hugging Face keys) and OpenCLIP ViT-bigG/14 with its
    /// projection, in the SGM layout.
    Sdxl,
    /// SDXL refiner: OpenCLIP ViT-bigG/14 with its projection alone, in the SGM layout.
    SdxlRefiner,
}

/// Where one text tower's tensors lie in a single file: the key prefix, and whether the
/// keys are OpenCLIP's (else Hugging Face CLIP's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TowerKeys {
    pub prefix: &'static str,
    pub open_clip: bool,
    /// The tower's `text_projection` is read (SDXL's second; SD 2.x's is unused).
    pub projection: bool,
}

impl TextTower {
    /// SDXL (base or refiner): architecture from shapes or a config folder, never a yaml.
    pub fn is_xl(self) -> bool {
        matches!(self, Self::Sdxl | Self::SdxlRefiner)
    }

    /// The first text encoder's keys.
    pub fn first(self) -> TowerKeys {
        match self {
            Self::Clip => TowerKeys {
                prefix: CLIP_PREFIX,
                open_clip: false,
                projection: false,
            },
            Self::OpenClip => TowerKeys {
                prefix: OPEN_CLIP_PREFIX,
                open_clip: true,
                projection: false,
            },
            Self::Sdxl => TowerKeys {
                prefix: SGM_CLIP_PREFIX,
                open_clip: false,
                projection: false,
            },
            Self::SdxlRefiner => TowerKeys {
                prefix: SGM_REFINER_PREFIX,
                open_clip: true,
                projection: true,
            },
        }
    }

    /// SDXL's second text encoder's keys.
    pub fn second(self) -> Option<TowerKeys> {
        (self == Self::Sdxl).then_some(TowerKeys {
            prefix: SGM_OPEN_CLIP_PREFIX,
            open_clip: true,
            projection: true,
        })
    }

    /// The renames naming `keys` (a file's) as this tower's `CLIPTextModel`.
    fn renames<'a>(t: TowerKeys, keys: impl Iterator<Item = &'a str>) -> HashMap<String, Rename> {
        if t.open_clip {
            let mut r = open_clip_renames(t.prefix, keys);
            if !t.projection {
                r.remove("text_projection.weight");
            }
            r
        } else {
            clip_renames(t.prefix, keys)
        }
    }
}

/// A single-file checkpoint opened as three diffusers-named views.
pub struct SingleFile {
    /// Named by the diffusers keys after [`SingleFile::with_unet_layout`].
    pub unet: Weights,
    pub vae: Weights,
    pub text_encoder: Weights,
    /// SDXL's second text encoder.
    pub text_encoder_2: Option<Weights>,
    pub tower: TextTower,
    /// Every key of the file with its shape (for architecture inference).
    pub shapes: HashMap<String, Vec<usize>>,
}

/// The text tower a file's keys name, or an error saying what is missing.
pub fn text_tower(path: &Path, shapes: &HashMap<String, Vec<usize>>) -> Result<TextTower> {
    let has = |p: &str| shapes.keys().any(|k| k.starts_with(p));
    if has(SGM_CLIP_PREFIX) && has(SGM_OPEN_CLIP_PREFIX) {
        Ok(TextTower::Sdxl)
    } else if has(SGM_REFINER_PREFIX) {
        Ok(TextTower::SdxlRefiner)
    } else if has(OPEN_CLIP_PREFIX) {
        Ok(TextTower::OpenClip)
    } else if has(CLIP_PREFIX) {
        Ok(TextTower::Clip)
    } else {
        Err(Error::ModelLayout {
            path: path.to_path_buf(),
            what: format!(
                "no text encoder in the file (expected keys `{CLIP_PREFIX}*`, \
                 `{OPEN_CLIP_PREFIX}*`, or SDXL's `{SGM_CLIP_PREFIX}*` and \
                 `{SGM_OPEN_CLIP_PREFIX}*`)"
            ),
        })
    }
}

impl SingleFile {
    /// Maps the file (once per network; the header is parsed, no tensor is read) and renames
    /// the VAE and text encoder. The U-Net's key numbering depends on its layers per block,
    /// known only once the architecture is: name them with [`SingleFile::with_unet_layout`].
    pub fn open(path: &Path) -> Result<Self> {
        let probe = Weights::open_file(path)?;
        let shapes = probe.file_shapes();
        for (prefix, what) in [(UNET_PREFIX, "U-Net"), (VAE_PREFIX, "VAE")] {
            if !shapes.keys().any(|k| k.starts_with(prefix)) {
                return Err(Error::ModelLayout {
                    path: path.to_path_buf(),
                    what: format!("no {what} in the file (expected keys `{prefix}*`)"),
                });
            }
        }
        let tower = text_tower(path, &shapes)?;
        let keys = || shapes.keys().map(String::as_str);
        let vae = vae_renames(VAE_PREFIX, keys());
        let text = TextTower::renames(tower.first(), keys());
        let text_encoder_2 = match tower.second() {
            Some(t) => Some(Weights::open_file(path)?.with_renames(TextTower::renames(t, keys()))),
            None => None,
        };
        Ok(Self {
            unet: probe,
            vae: Weights::open_file(path)?.with_renames(vae),
            text_encoder: Weights::open_file(path)?.with_renames(text),
            text_encoder_2,
            tower,
            shapes,
        })
    }

    /// Names the U-Net's tensors for a U-Net with `layers_per_block` resnets per level.
    pub fn with_unet_layout(mut self, layers_per_block: usize) -> Self {
        let renames = unet_renames(self.shapes.keys().map(String::as_str), layers_per_block);
        self.unet = self.unet.with_renames(renames);
        self
    }
}

/// `a.b.rest` → `(a, b, rest)` where `b` is a number.
fn split_index(s: &str) -> Option<(&str, usize, &str)> {
    let (head, rest) = s.split_once('.')?;
    let (num, tail) = rest.split_once('.')?;
    Some((head, num.parse().ok()?, tail))
}

/// The original ResBlock's module names → diffusers' `ResnetBlock2D`.
fn resnet_leaf(rest: &str) -> Option<String> {
    const MAP: [(&str, &str); 6] = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("emb_layers.1.", "time_emb_proj."),
        ("skip_connection.", "conv_shortcut."),
    ];
    MAP.iter()
        .find_map(|(o, d)| rest.strip_prefix(o).map(|leaf| format!("{d}{leaf}")))
}

/// One U-Net key of the original layout (without `model.diffusion_model.`) → its diffusers
/// name; `None` for keys the engine does not use (or does not know).
pub fn unet_key(key: &str, lpb: usize) -> Option<String> {
    const FIXED: [(&str, &str); 7] = [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        // SDXL's `text_time` embedding.
        ("label_emb.0.0.", "add_embedding.linear_1."),
        ("label_emb.0.2.", "add_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
    ];
    if let Some(s) = FIXED
        .iter()
        .find_map(|(o, d)| key.strip_prefix(o).map(|leaf| format!("{d}{leaf}")))
    {
        return Some(s);
    }
    let (kind, i, rest) = split_index(key)?;
    if kind == "middle_block" {
        return match i {
            0 | 2 => Some(format!(
                "mid_block.resnets.{}.{}",
                i / 2,
                resnet_leaf(rest)?
            )),
            1 => Some(format!("mid_block.attentions.0.{rest}")),
            _ => None,
        };
    }
    let (j, rest) = rest
        .split_once('.')
        .and_then(|(j, r)| Some((j.parse::<usize>().ok()?, r)))?;
    let per = lpb + 1;
    match kind {
        "input_blocks" if i >= 1 => {
            let (b, l) = ((i - 1) / per, (i - 1) % per);
            match (j, rest.strip_prefix("op.")) {
                (0, Some(leaf)) => Some(format!("down_blocks.{b}.downsamplers.0.conv.{leaf}")),
                (0, None) => Some(format!(
                    "down_blocks.{b}.resnets.{l}.{}",
                    resnet_leaf(rest)?
                )),
                (1, None) => Some(format!("down_blocks.{b}.attentions.{l}.{rest}")),
                _ => None,
            }
        }
        "output_blocks" => {
            let (b, l) = (i / per, i % per);
            match (j, rest.strip_prefix("conv.")) {
                (0, _) => Some(format!("up_blocks.{b}.resnets.{l}.{}", resnet_leaf(rest)?)),
                (1 | 2, Some(leaf)) => Some(format!("up_blocks.{b}.upsamplers.0.conv.{leaf}")),
                (1, None) => Some(format!("up_blocks.{b}.attentions.{l}.{rest}")),
                _ => None,
            }
        }
        _ => None,
    }
}

pub fn unet_renames<'a>(
    keys: impl Iterator<Item = &'a str>,
    layers_per_block: usize,
) -> HashMap<String, Rename> {
    keys.filter_map(|k| {
        let key = k.strip_prefix(UNET_PREFIX)?;
        Some((unet_key(key, layers_per_block)?, Rename::to(k)))
    })
    .collect()
}

/// One VAE key of the original layout (without `first_stage_model.`) → its diffusers name
/// and whether it is a 1×1 conv standing for a linear; `levels` is the number of resolution
/// levels (the decoder's `up.{i}` count in reverse).
pub fn vae_key(key: &str, levels: usize) -> Option<(String, bool)> {
    let (part, rest) = key.split_once('.')?;
    if part != "encoder" && part != "decoder" {
        // quant_conv, post_quant_conv keep their names.
        return Some((key.to_string(), false));
    }
    let resnet = |r: &str| r.replacen("nin_shortcut.", "conv_shortcut.", 1);
    let (inner, squeeze) = if let Some(r) = rest.strip_prefix("norm_out.") {
        (format!("conv_norm_out.{r}"), false)
    } else if let Some(r) = rest.strip_prefix("mid.block_1.") {
        (format!("mid_block.resnets.0.{}", resnet(r)), false)
    } else if let Some(r) = rest.strip_prefix("mid.block_2.") {
        (format!("mid_block.resnets.1.{}", resnet(r)), false)
    } else if let Some(r) = rest.strip_prefix("mid.attn_1.") {
        let (m, leaf) = r.split_once('.')?;
        let m = match m {
            "norm" => "group_norm",
            "q" => "to_q",
            "k" => "to_k",
            "v" => "to_v",
            "proj_out" => "to_out.0",
            _ => return None,
        };
        (
            format!("mid_block.attentions.0.{m}.{leaf}"),
            m != "group_norm",
        )
    } else if let Some((kind, i, r)) = split_index(rest) {
        let (blocks, level) = match kind {
            "down" => ("down_blocks", i),
            "up" if i < levels => ("up_blocks", levels - 1 - i),
            _ => return None,
        };
        if let Some((_, j, leaf)) = split_index(r).filter(|(b, _, _)| *b == "block") {
            (
                format!("{blocks}.{level}.resnets.{j}.{}", resnet(leaf)),
                false,
            )
        } else if let Some(leaf) = r
            .strip_prefix("downsample.")
            .or_else(|| r.strip_prefix("upsample."))
        {
            let s = if kind == "down" { "down" } else { "up" };
            (format!("{blocks}.{level}.{s}samplers.0.{leaf}"), false)
        } else {
            return None;
        }
    } else {
        (rest.to_string(), false)
    };
    Some((format!("{part}.{inner}"), squeeze))
}

/// The original-layout VAE keys behind `prefix` ([`VAE_PREFIX`] in a whole checkpoint, ""
/// in a VAE file of its own) named as diffusers' `AutoencoderKL`.
pub fn vae_renames<'a>(
    prefix: &str,
    keys: impl Iterator<Item = &'a str> + Clone,
) -> HashMap<String, Rename> {
    let levels = keys
        .clone()
        .filter_map(|k| {
            let r = k.strip_prefix(prefix)?.strip_prefix("decoder.up.")?;
            r.split_once('.')?.0.parse::<usize>().ok()
        })
        .max()
        .map_or(0, |m| m + 1);
    keys.filter_map(|k| {
        let (name, squeeze) = vae_key(k.strip_prefix(prefix)?, levels)?;
        Some((
            name,
            Rename {
                squeeze,
                ..Rename::to(k)
            },
        ))
    })
    .collect()
}

/// SD 1.x and SDXL's first tower: Hugging Face CLIP keys behind `prefix` (with or without
/// `text_model.`), named as a `CLIPTextModel` with the `text_model.` prefix.
pub fn clip_renames<'a>(
    prefix: &str,
    keys: impl Iterator<Item = &'a str>,
) -> HashMap<String, Rename> {
    keys.filter_map(|k| {
        let rest = k.strip_prefix(prefix)?;
        let name = if rest.starts_with("text_model.") {
            rest.to_string()
        } else {
            format!("text_model.{rest}")
        };
        Some((name, Rename::to(k)))
    })
    .collect()
}

/// SD 2.x and SDXL's second tower: the OpenCLIP text tower behind `prefix`, named as a
/// `CLIPTextModel(WithProjection)` (`text_model.` prefix). The fused `attn.in_proj_*` splits
/// into q/k/v by rows; `text_projection` (`x @ P`, `[width, projection]`) is the transpose of
/// the projection's `Linear.weight` (used by SDXL only); `logit_scale` is unused, and so is
/// the last resblock when the model takes the penultimate layer (SD 2.x's text config then
/// has one layer less).
pub fn open_clip_renames<'a>(
    prefix: &str,
    keys: impl Iterator<Item = &'a str>,
) -> HashMap<String, Rename> {
    let mut out = HashMap::new();
    for k in keys {
        let Some(rest) = k.strip_prefix(prefix) else {
            continue;
        };
        if rest == "text_projection" {
            let r = Rename {
                transpose: true,
                ..Rename::to(k)
            };
            out.insert("text_projection.weight".to_string(), r);
            continue;
        }
        let fixed = match rest {
            "token_embedding.weight" => Some("embeddings.token_embedding.weight".to_string()),
            "positional_embedding" => Some("embeddings.position_embedding.weight".to_string()),
            r => r
                .strip_prefix("ln_final.")
                .map(|leaf| format!("final_layer_norm.{leaf}")),
        };
        if let Some(name) = fixed {
            out.insert(format!("text_model.{name}"), Rename::to(k));
            continue;
        }
        let Some((_, i, leaf)) = rest
            .strip_prefix("transformer.")
            .and_then(split_index)
            .filter(|(r, _, _)| *r == "resblocks")
        else {
            continue;
        };
        let layer = format!("text_model.encoder.layers.{i}");
        if let Some(w) = leaf.strip_prefix("attn.in_proj_") {
            for (idx, q) in ["q", "k", "v"].iter().enumerate() {
                out.insert(
                    format!("{layer}.self_attn.{q}_proj.{w}"),
                    Rename {
                        slice: Some((idx, 3)),
                        ..Rename::to(k)
                    },
                );
            }
            continue;
        }
        const MAP: [(&str, &str); 5] = [
            ("attn.out_proj.", "self_attn.out_proj."),
            ("ln_1.", "layer_norm1."),
            ("ln_2.", "layer_norm2."),
            ("mlp.c_fc.", "mlp.fc1."),
            ("mlp.c_proj.", "mlp.fc2."),
        ];
        if let Some(name) = MAP
            .iter()
            .find_map(|(o, d)| leaf.strip_prefix(o).map(|l| format!("{layer}.{d}{l}")))
        {
            out.insert(name, Rename::to(k));
        }
    }
    out
}

/// A VAE file of its own (`--vae FILE`, e.g. `sdxl_vae.safetensors`): diffusers-named tensors
/// as they are, or the original layout (`decoder.up.*`, with or without
/// `first_stage_model.`) renamed.
pub fn standalone_vae(path: &Path) -> Result<Weights> {
    let w = Weights::open_file(path)?;
    let shapes = w.file_shapes();
    let keys = || shapes.keys().map(String::as_str);
    let has = |p: &str| shapes.keys().any(|k| k.starts_with(p));
    Ok(if has(VAE_PREFIX) {
        w.with_renames(vae_renames(VAE_PREFIX, keys()))
    } else if has("decoder.up.") {
        w.with_renames(vae_renames("", keys()))
    } else if has("decoder.up_blocks.") {
        w
    } else {
        return Err(Error::ModelLayout {
            path: path.to_path_buf(),
            what: "not a VAE (no `decoder.up_blocks.*`, `decoder.up.*` or \
                   `first_stage_model.decoder.up.*` tensors)"
                .into(),
        });
    })
}
