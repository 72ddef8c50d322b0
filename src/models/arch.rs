//! A model's architecture: the configs of its three networks, its scheduler and tokenizer.
//! From a diffusers folder of `config.json` files, from an original LDM yaml
//! (`v1-inference.yaml` style), or inferred from a single-file checkpoint's tensor names and
//! shapes with the SD 1.x / 2.x conventions.

use super::clip::ClipTextConfig;
pub use super::inferred::{text_from_shapes, unet_from_shapes, vae_from_shapes};
use super::read_json;
use super::unet::UNetConfig;
use super::vae::AutoencoderKLConfig;
use crate::error::{Error, Result};
use crate::tokenizer::{ClipTokenizer, Padding};
use crate::weights::single_file::{TextTower, text_tower};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

/// Where an [`Architecture`] came from (reported to the user).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchSource {
    /// A diffusers folder of configs (the model's own, or `--config`).
    Folder(PathBuf),
    /// An original LDM yaml (`--config`, or `<stem>.yaml` beside the checkpoint).
    LdmYaml(PathBuf),
    /// Tensor names and shapes with the SD 1.x / 2.x conventions.
    Inferred,
    /// A named architecture built into the engine ([`Architecture::sd15`], …).
    Named(&'static str),
}

impl ArchSource {
    /// The file or folder the architecture came from (empty when inferred).
    pub fn path(&self) -> &Path {
        match self {
            Self::Folder(p) | Self::LdmYaml(p) => p,
            Self::Inferred | Self::Named(_) => Path::new(""),
        }
    }
}

impl std::fmt::Display for ArchSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Folder(p) => write!(f, "diffusers configs in {}", p.display()),
            Self::LdmYaml(p) => write!(f, "LDM config {}", p.display()),
            Self::Inferred => write!(f, "inferred from the checkpoint's tensor shapes"),
            Self::Named(n) => write!(f, "{n}"),
        }
    }
}

pub struct Architecture {
    pub text: ClipTextConfig,
    /// SDXL: the second text encoder (`text_encoder_2`, with projection) and its tokenizer.
    pub text_2: Option<(ClipTextConfig, ClipTokenizer)>,
    /// SDXL (`model_index.json`): no negative prompt gives a zero unconditional context and
    /// pooled output (diffusers' `force_zeros_for_empty_prompt`).
    pub force_zeros_for_empty_prompt: bool,
    /// SDXL refiner (`model_index.json`): the time ids carry an aesthetic score instead of
    /// the target size (five, not six), and the only text encoder is `text_encoder_2`.
    pub requires_aesthetics_score: bool,
    /// The 4× upscaler (`StableDiffusionUpscalePipeline`): its `low_res_scheduler` config
    /// and `max_noise_level`.
    pub upscaler: Option<UpscalerConfig>,
    pub unet: UNetConfig,
    pub vae: AutoencoderKLConfig,
    /// A diffusers `scheduler_config.json` (given, or the equivalent of the LDM settings).
    pub scheduler: serde_json::Value,
    pub tokenizer: ClipTokenizer,
    pub source: ArchSource,
}

/// What the 4× upscaler's `model_index.json` and `low_res_scheduler/` add.
#[derive(Clone, Debug, PartialEq)]
pub struct UpscalerConfig {
    /// The scheduler that noises the low-res image (`low_res_scheduler`, a DDPM config).
    pub low_res_scheduler: serde_json::Value,
    /// The largest noise level a request may ask for (`max_noise_level`, 350).
    pub max_noise_level: u32,
    /// The VAE config's own `scaling_factor` where it is not the upscaler's 0.08333 (then
    /// replaced by 0.08333, as diffusers does).
    pub vae_scaling_factor_in_config: Option<f32>,
}

/// The VAE scaling factor of every 4× upscaler (diffusers' `StableDiffusionUpscalePipeline`).
pub const UPSCALER_VAE_SCALING_FACTOR: f32 = 0.08333;

/// Tensor shapes by name (a checkpoint's header).
pub type Shapes = HashMap<String, Vec<usize>>;

impl Architecture {
    /// A diffusers folder's `text_encoder/`, `unet/`, `vae/` configs, its
    /// `scheduler/scheduler_config.json` and `tokenizer/` (the built-in CLIP vocabulary when
    /// it has none). Weights are not needed.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let tokenizer_in = |name: &str| -> Result<ClipTokenizer> {
            let d = dir.join(name);
            if d.is_dir() {
                ClipTokenizer::from_folder(&d)
            } else {
                ClipTokenizer::builtin()
            }
        };
        let index = dir.join("model_index.json");
        let index = if index.is_file() {
            read_json(&index)?
        } else {
            serde_json::Value::Null
        };
        // SDXL: a second text encoder and tokenizer; the refiner has only those.
        let has_2 = dir.join("text_encoder_2").is_dir();
        let refiner = has_2 && !dir.join("text_encoder").is_dir();
        let text_2 = if has_2 && !refiner {
            Some((
                ClipTextConfig::from_file(&dir.join("text_encoder_2/config.json"))?,
                tokenizer_in("tokenizer_2")?,
            ))
        } else {
            None
        };
        let (text, tokenizer) = if refiner {
            (
                ClipTextConfig::from_file(&dir.join("text_encoder_2/config.json"))?,
                tokenizer_in("tokenizer_2")?,
            )
        } else {
            (
                ClipTextConfig::from_file(&dir.join("text_encoder/config.json"))?,
                tokenizer_in("tokenizer")?,
            )
        };
        let xl = has_2;
        let flag = |k: &str, d: bool| index[k].as_bool().unwrap_or(d);
        let mut vae = AutoencoderKLConfig::from_file(&dir.join("vae/config.json"))?;
        let low_res = dir.join("low_res_scheduler/scheduler_config.json");
        let mut upscaler = if low_res.is_file() {
            Some(UpscalerConfig {
                low_res_scheduler: read_json(&low_res)?,
                max_noise_level: index["max_noise_level"]
                    .as_u64()
                    .unwrap_or(350)
                    .min(1 << 20) as u32,
                vae_scaling_factor_in_config: None,
            })
        } else {
            None
        };
        // Only diffusers' SDXL and upscale pipelines upcast the VAE.
        vae.force_upcast &= xl || upscaler.is_some();
        if let Some(u) = &mut upscaler {
            // diffusers' StableDiffusionUpscalePipeline.__init__ sets the VAE's scaling_factor
            // to 0.08333 whatever its config says (a deprecation warning, then
            // `vae.register_to_config(scaling_factor=0.08333)`); the upscaler's latents are
            // always the VAE's × 0.08333.
            if vae.scaling_factor != UPSCALER_VAE_SCALING_FACTOR {
                u.vae_scaling_factor_in_config = Some(vae.scaling_factor);
                vae.scaling_factor = UPSCALER_VAE_SCALING_FACTOR;
            }
        }
        Ok(Self {
            vae,
            text_2,
            force_zeros_for_empty_prompt: xl && flag("force_zeros_for_empty_prompt", true),
            requires_aesthetics_score: refiner && flag("requires_aesthetics_score", true),
            upscaler,
            text,
            unet: UNetConfig::from_file(&dir.join("unet/config.json"))?,
            scheduler: read_json(&dir.join("scheduler/scheduler_config.json"))?,
            tokenizer,
            source: ArchSource::Folder(dir.to_path_buf()),
        })
    }

    /// The folder a diffusers layout keeps the (first) text encoder's weights in: the
    /// refiner's only encoder is `text_encoder_2`.
    pub fn text_dir(&self) -> &'static str {
        if self.text_2.is_none() && self.unet.addition_time_embed_dim.is_some() {
            "text_encoder_2"
        } else {
            "text_encoder"
        }
    }

    /// An original LDM yaml: U-Net, VAE and schedule from it; the text tower (whose yaml
    /// entry names only a pretrained architecture) from the checkpoint's shapes.
    pub fn from_ldm_yaml(path: &Path, shapes: &Shapes, tower: TextTower) -> Result<Self> {
        let text = crate::files::read_config_text(path)?;
        Self::from_ldm_yaml_text(&text, path, shapes, tower)
    }

    /// [`Architecture::from_ldm_yaml`] from the yaml's text; `path` names it in errors.
    pub fn from_ldm_yaml_text(
        text: &str,
        path: &Path,
        shapes: &Shapes,
        tower: TextTower,
    ) -> Result<Self> {
        let (text, unet, vae, scheduler) = ldm_yaml_configs(text, path, shapes, tower)?;
        Ok(Self {
            text,
            unet,
            vae,
            scheduler,
            tokenizer: builtin_tokenizer(tower)?,
            source: ArchSource::LdmYaml(path.to_path_buf()),
            text_2: None,
            force_zeros_for_empty_prompt: false,
            requires_aesthetics_score: false,
            upscaler: None,
        })
    }

    /// The architecture of the single-file checkpoint `file` (whose header is `shapes`), in
    /// the order: `config` (a diffusers folder of configs, or an LDM yaml), `<stem>.yaml`
    /// beside the file, inference from the shapes.
    pub fn for_single_file(file: &Path, shapes: &Shapes, config: Option<&Path>) -> Result<Self> {
        let tower = text_tower(file, shapes)?;
        let stem_yaml = file.with_extension("yaml");
        match config {
            Some(c) if c.is_dir() => Self::from_folder(c),
            // SGM's yaml (sd_xl_base.yaml) is not read: SDXL single files are inferred.
            Some(c) => Self::from_ldm_yaml(c, shapes, tower),
            None if stem_yaml.is_file() && !tower.is_xl() => {
                Self::from_ldm_yaml(&stem_yaml, shapes, tower)
            }
            None => Self::infer(file, shapes, tower),
        }
    }

    /// The SD 1.x / 2.x conventions applied to a checkpoint's shapes: SD 1.x (CLIP ViT-L
    /// tower) has 8 heads per attention, ε-prediction and PNDM; SD 2.x (OpenCLIP tower) has
    /// 64-wide heads, the penultimate text layer, and — like diffusers, which takes such a file
    /// for stable-diffusion-2-1 — v-prediction with DDIM (2.x-base checkpoints need
    /// `--prediction-type epsilon`).
    pub fn infer(path: &Path, shapes: &Shapes, tower: TextTower) -> Result<Self> {
        if tower.is_xl() {
            return Self::infer_sdxl(path, shapes, tower);
        }
        let sd2 = tower == TextTower::OpenClip;
        let mut unet = unet_from_shapes(path, shapes, |c| if sd2 { c / 64 } else { 8 })?;
        unet.sample_size = if sd2 { 96 } else { 64 };
        Ok(Self {
            text: text_from_shapes(path, shapes, tower.first(), sd2)?,
            unet,
            vae: vae_from_shapes(path, shapes)?,
            scheduler: scheduler_json(sd2, 0.00085, 0.012, 1000),
            tokenizer: builtin_tokenizer(tower)?,
            source: ArchSource::Inferred,
            text_2: None,
            force_zeros_for_empty_prompt: false,
            requires_aesthetics_score: false,
            upscaler: None,
        })
    }
}

impl Architecture {
    /// SDXL base's conventions applied to an SGM single file's shapes (diffusers' `xl_base`
    /// configs): both towers at full depth (the pipeline takes their penultimate states), the
    /// second with its projection's width, 64-wide heads, transformer depths per level from
    /// the blocks present, the `text_time` embedding's time-id width from `label_emb`
    /// (`projection + 6·d` inputs), 1024 px, the VAE's 0.13025 scaling and upcast, SDXL's
    /// Euler schedule.
    ///
    /// The refiner (its one OpenCLIP tower): that tower with its projection as the only text
    /// encoder, five time ids (the aesthetic score for the target size), an encoded empty
    /// negative prompt.
    fn infer_sdxl(path: &Path, shapes: &Shapes, tower: TextTower) -> Result<Self> {
        let bad = |what: String| Error::ModelLayout {
            path: path.to_path_buf(),
            what,
        };
        let base = Self::sdxl()?;
        let refiner = tower == TextTower::SdxlRefiner;
        // The tower with the projection: the second, or the refiner's only one.
        let keys = tower.second().unwrap_or(tower.first());
        let mut pooling = text_from_shapes(path, shapes, keys, false)?;
        let proj_key = format!("{}text_projection", keys.prefix);
        let proj = match shapes.get(&proj_key).map(Vec::as_slice) {
            Some(&[w, p]) if w == pooling.hidden_size => p,
            other => {
                return Err(bad(format!(
                    "`{proj_key}` is {other:?}, not [{}, projection]",
                    pooling.hidden_size
                )));
            }
        };
        pooling.projection_dim = Some(proj);
        let mut unet = unet_from_shapes(path, shapes, |c| c / 64)?;
        let ids = if refiner { 5 } else { 6 };
        let inputs = unet.projection_class_embeddings_input_dim;
        if inputs <= proj || (inputs - proj) % ids != 0 {
            return Err(bad(format!(
                "the U-Net's label_emb takes {inputs} values: not the {proj}-wide pooled text \
                 embedding and {ids} time ids (pass --config)"
            )));
        }
        unet.addition_time_embed_dim = Some((inputs - proj) / ids);
        unet.sample_size = base.unet.sample_size;
        let vae = AutoencoderKLConfig {
            scaling_factor: base.vae.scaling_factor,
            force_upcast: true,
            sample_size: base.vae.sample_size,
            ..vae_from_shapes(path, shapes)?
        };
        let open_clip = builtin_tokenizer(TextTower::OpenClip)?;
        let (text, tokenizer, text_2) = if refiner {
            (pooling, open_clip, None)
        } else {
            let text = text_from_shapes(path, shapes, tower.first(), false)?;
            (
                text,
                builtin_tokenizer(TextTower::Clip)?,
                Some((pooling, open_clip)),
            )
        };
        Ok(Self {
            text,
            text_2,
            tokenizer,
            force_zeros_for_empty_prompt: !refiner,
            requires_aesthetics_score: refiner,
            upscaler: None,
            unet,
            vae,
            source: ArchSource::Inferred,
            ..base
        })
    }

    /// SD 1.5 as diffusers configures it (`stable-diffusion-v1-5`: CLIP ViT-L text encoder,
    /// U-Net, VAE, PNDM with ε-prediction).
    pub fn sd15() -> Result<Self> {
        Ok(Self {
            text: ClipTextConfig::sd15(),
            unet: UNetConfig::sd15(),
            vae: AutoencoderKLConfig::sd(),
            scheduler: scheduler_json(false, 0.00085, 0.012, 1000),
            tokenizer: builtin_tokenizer(TextTower::Clip)?,
            source: ArchSource::Named("SD 1.5 (diffusers configs)"),
            text_2: None,
            force_zeros_for_empty_prompt: false,
            requires_aesthetics_score: false,
            upscaler: None,
        })
    }

    /// SD 2.1 at 768 px (`stable-diffusion-2-1`: OpenCLIP ViT-H text encoder taken at the
    /// penultimate layer, 64-wide heads, linear projections, DDIM with v-prediction).
    pub fn sd21() -> Result<Self> {
        Ok(Self {
            text: ClipTextConfig::sd21(),
            unet: UNetConfig::sd21(),
            vae: AutoencoderKLConfig::sd(),
            scheduler: scheduler_json(true, 0.00085, 0.012, 1000),
            tokenizer: builtin_tokenizer(TextTower::OpenClip)?,
            source: ArchSource::Named("SD 2.1 (diffusers configs)"),
            text_2: None,
            force_zeros_for_empty_prompt: false,
            requires_aesthetics_score: false,
            upscaler: None,
        })
    }
}

impl Architecture {
    /// SDXL base 1.0 as diffusers configures it (`stable-diffusion-xl-base-1.0`: CLIP ViT-L and
    /// OpenCLIP ViT-bigG with projection, the `text_time` U-Net with transformer depths 1, 2,
    /// 10, the VAE with scaling factor 0.13025, Euler with SDXL's schedule).
    pub fn sdxl() -> Result<Self> {
        let text_2 = ClipTextConfig {
            hidden_size: 1280,
            intermediate_size: 5120,
            num_hidden_layers: 32,
            num_attention_heads: 20,
            hidden_act: crate::models::clip::Activation::Gelu,
            projection_dim: Some(1280),
            ..ClipTextConfig::sd15()
        };
        let unet = UNetConfig {
            block_out_channels: vec![320, 640, 1280],
            down_attention: vec![false, true, true],
            up_attention: vec![true, true, false],
            heads: vec![5, 10, 20],
            cross_attention_dim: 2048,
            use_linear_projection: true,
            sample_size: 128,
            transformer_layers_per_block: vec![1, 2, 10],
            only_cross_attention: vec![false; 3],
            addition_time_embed_dim: Some(256),
            projection_class_embeddings_input_dim: 2816,
            ..UNetConfig::sd15()
        };
        let mut scheduler = scheduler_json(false, 0.00085, 0.012, 1000);
        scheduler["_class_name"] = "EulerDiscreteScheduler".into();
        scheduler["timestep_spacing"] = "leading".into();
        scheduler["interpolation_type"] = "linear".into();
        Ok(Self {
            text: ClipTextConfig::sd15(),
            text_2: Some((text_2, builtin_tokenizer(TextTower::OpenClip)?)),
            force_zeros_for_empty_prompt: true,
            requires_aesthetics_score: false,
            upscaler: None,
            unet,
            vae: AutoencoderKLConfig {
                scaling_factor: 0.13025,
                force_upcast: true,
                sample_size: 1024,
                ..AutoencoderKLConfig::sd()
            },
            scheduler,
            tokenizer: builtin_tokenizer(TextTower::Clip)?,
            source: ArchSource::Named("SDXL base 1.0 (diffusers configs)"),
        })
    }
}

/// The built-in vocabulary with the tower's padding (OpenCLIP pads with id 0, `!`).
fn builtin_tokenizer(tower: TextTower) -> Result<ClipTokenizer> {
    ClipTokenizer::builtin()?.with_padding(match tower {
        TextTower::Clip | TextTower::Sdxl => Padding::EndOfText,
        TextTower::OpenClip | TextTower::SdxlRefiner => Padding::Id(0),
    })
}

/// The configs an LDM yaml gives (text encoder from `shapes`, U-Net, VAE, scheduler JSON):
/// everything of [`Architecture::from_ldm_yaml_text`] but the tokenizer.
pub fn ldm_yaml_configs(
    text: &str,
    path: &Path,
    shapes: &Shapes,
    tower: TextTower,
) -> Result<(
    ClipTextConfig,
    UNetConfig,
    AutoencoderKLConfig,
    serde_json::Value,
)> {
    let bad = |what: String| Error::ModelLayout {
        path: path.to_path_buf(),
        what,
    };
    if tower.is_xl() {
        return Err(bad(
            "an SDXL checkpoint: its architecture comes from a diffusers config folder \
             (--config DIR) or from the tensor shapes, not from an LDM yaml"
                .into(),
        ));
    }
    let docs = load_yaml(text).map_err(bad)?;
    let doc = docs.first().ok_or_else(|| bad("empty YAML".into()))?;
    let model = &doc["model"]["params"];
    let unet_p = &model["unet_config"]["params"];
    if unet_p.is_badvalue() {
        return Err(bad("no model.params.unet_config.params".into()));
    }
    let int = |v: &Yaml, k: &str| -> Result<Option<i64>> {
        match &v[k] {
            Yaml::BadValue | Yaml::Null => Ok(None),
            Yaml::Integer(i) => Ok(Some(*i)),
            o => Err(bad(format!("`{k}` must be an integer, got {o:?}"))),
        }
    };
    let need = |v: &Yaml, k: &str| -> Result<usize> {
        int(v, k)?
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| bad(format!("`{k}` missing or negative")))
    };
    let list = |v: &Yaml, k: &str| -> Result<Vec<usize>> {
        v[k].as_vec()
            .and_then(|a| {
                a.iter()
                    .map(|x| x.as_i64().and_then(|i| usize::try_from(i).ok()))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| bad(format!("`{k}` must be a list of integers")))
    };
    let float = |v: &Yaml, k: &str, d: f64| -> f64 {
        v[k].as_f64()
            .or_else(|| v[k].as_i64().map(|i| i as f64))
            .unwrap_or(d)
    };

    // U-Net (the rules of diffusers' create_unet_diffusers_config_from_ldm, with the
    // head count from num_head_channels when given).
    let mc = need(unet_p, "model_channels")?;
    let mult = list(unet_p, "channel_mult")?;
    let blocks: Vec<usize> = mult.iter().map(|m| m * mc).collect();
    let attn_res = list(unet_p, "attention_resolutions")?;
    let down_attention: Vec<bool> = (0..blocks.len())
        .map(|i| attn_res.contains(&(1 << i)))
        .collect();
    let up_attention = down_attention.iter().rev().copied().collect();
    if int(unet_p, "transformer_depth")?.is_some_and(|d| d != 1) {
        return Err(bad("transformer_depth other than 1 is not supported".into()));
    }
    let head_channels = int(unet_p, "num_head_channels")?.filter(|&h| h > 0);
    let num_heads = int(unet_p, "num_heads")?.filter(|&h| h > 0);
    let heads = match (head_channels, num_heads) {
        (Some(hc), _) => blocks.iter().map(|&c| c / hc as usize).collect(),
        (None, Some(n)) => vec![n as usize; blocks.len()],
        (None, None) => return Err(bad("neither num_heads nor num_head_channels".into())),
    };
    let context_dim = match &unet_p["context_dim"] {
        Yaml::Integer(i) => *i as usize,
        Yaml::Array(a) => a.first().and_then(Yaml::as_i64).unwrap_or(0) as usize,
        _ => return Err(bad("`context_dim` missing".into())),
    };
    let nb = blocks.len();
    let unet = UNetConfig {
        in_channels: need(unet_p, "in_channels")?,
        out_channels: need(unet_p, "out_channels")?,
        block_out_channels: blocks,
        down_attention,
        up_attention,
        layers_per_block: need(unet_p, "num_res_blocks")?,
        heads,
        cross_attention_dim: context_dim,
        norm_num_groups: 32,
        norm_eps: 1e-5,
        use_linear_projection: unet_p["use_linear_in_transformer"]
            .as_bool()
            .unwrap_or(false),
        flip_sin_to_cos: true,
        freq_shift: 0.0,
        // diffusers' defaults for the model types (v-prediction SD 2.x: 768 px).
        sample_size: if model["parameterization"].as_str() == Some("v") {
            96
        } else {
            64
        },
        transformer_layers_per_block: vec![1; nb],
        addition_time_embed_dim: None,
        projection_class_embeddings_input_dim: 0,
        time_cond_proj_dim: None,
        only_cross_attention: vec![false; nb],
        num_class_embeds: None,
    };

    let fs = &model["first_stage_config"]["params"];
    let dd = &fs["ddconfig"];
    if dd.is_badvalue() {
        return Err(bad(
            "no model.params.first_stage_config.params.ddconfig".into()
        ));
    }
    let ch = need(dd, "ch")?;
    let vae = AutoencoderKLConfig {
        in_channels: need(dd, "in_channels").unwrap_or(3),
        out_channels: need(dd, "out_ch")?,
        latent_channels: need(fs, "embed_dim")?,
        block_out_channels: list(dd, "ch_mult")?.iter().map(|m| m * ch).collect(),
        layers_per_block: need(dd, "num_res_blocks")?,
        norm_num_groups: 32,
        scaling_factor: float(model, "scale_factor", 0.18215) as f32,
        force_upcast: false,
        sample_size: 512,
    };

    let cond = &model["cond_stage_config"];
    let target = cond["target"].as_str().unwrap_or("");
    let yaml_tower = if target.contains("OpenCLIP") {
        TextTower::OpenClip
    } else {
        TextTower::Clip
    };
    if yaml_tower != tower {
        return Err(bad(format!(
            "the config's text encoder `{target}` is not the checkpoint's ({tower:?})"
        )));
    }
    let penultimate = cond["params"]["layer"].as_str() == Some("penultimate");
    let v = model["parameterization"].as_str() == Some("v");
    let scheduler = scheduler_json(
        v,
        float(model, "linear_start", 0.00085),
        float(model, "linear_end", 0.012),
        int(model, "timesteps")?.unwrap_or(1000),
    );
    Ok((
        text_from_shapes(path, shapes, tower.first(), penultimate)?,
        unet,
        vae,
        scheduler,
    ))
}

/// Nodes a YAML document may expand to, aliases counted at their full size each time they are
/// used (an LDM config has a few hundred; an alias bomb of 450 bytes has billions).
pub const MAX_YAML_NODES: u64 = 100_000;
/// Deepest YAML nesting accepted.
pub const MAX_YAML_DEPTH: usize = 64;

/// Parses YAML after counting, from the parser's events, the nodes the documents expand to
/// (an alias costs its anchor's whole size) and their depth: documents over
/// [`MAX_YAML_NODES`] or [`MAX_YAML_DEPTH`] are refused before any is built.
pub fn load_yaml(text: &str) -> std::result::Result<Vec<Yaml>, String> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    // Expanded size of each anchor; per open collection: (anchor id, nodes so far).
    let mut anchors: HashMap<usize, u64> = HashMap::new();
    let mut open: Vec<(usize, u64)> = Vec::new();
    let mut total: u64 = 0;
    let too_big = || {
        format!(
            "the YAML expands to more than {MAX_YAML_NODES} nodes (aliases counted at their \
             full size): refused"
        )
    };
    loop {
        let (event, mark) = parser
            .next_token()
            .map_err(|e| format!("invalid YAML: {e}"))?;
        // Nodes this event completes, and the anchor it defines.
        let (size, anchor) = match event {
            Event::StreamEnd => break,
            Event::Scalar(_, _, a, _) => (1, a),
            Event::Alias(a) => (anchors.get(&a).copied().unwrap_or(1), 0),
            Event::SequenceStart(a, _) | Event::MappingStart(a, _) => {
                if open.len() == MAX_YAML_DEPTH {
                    return Err(format!(
                        "the YAML nests deeper than {MAX_YAML_DEPTH} levels (line {})",
                        mark.line()
                    ));
                }
                open.push((a, 1));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match open.pop() {
                Some((a, n)) => (n, a),
                None => continue,
            },
            _ => continue,
        };
        if anchor != 0 {
            anchors.insert(anchor, size);
        }
        match open.last_mut() {
            Some(parent) => parent.1 = parent.1.saturating_add(size),
            None => total = total.saturating_add(size),
        }
        let live: u64 = open.iter().fold(total, |acc, o| acc.saturating_add(o.1));
        if live > MAX_YAML_NODES || size > MAX_YAML_NODES {
            return Err(too_big());
        }
    }
    YamlLoader::load_from_str(text).map_err(|e| format!("invalid YAML: {e}"))
}

/// The scheduler of the diffusers SD 1.5 (PNDM, ε) or SD 2.1 (DDIM, v) repositories, with
/// the given betas.
fn scheduler_json(v: bool, beta_start: f64, beta_end: f64, steps: i64) -> serde_json::Value {
    serde_json::json!({
        "_class_name": if v { "DDIMScheduler" } else { "PNDMScheduler" },
        "beta_start": beta_start,
        "beta_end": beta_end,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": steps,
        "prediction_type": if v { "v_prediction" } else { "epsilon" },
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "clip_sample": false,
    })
}
