//! Loading a pipeline: a diffusers folder or a single-file checkpoint, an optional separate
//! VAE, the LoRAs to merge, synthetic weights for benchmarks.

use super::resident::{self, Resident};
use super::scheduler_choice::sampler_of;
use super::{LatentRgb, NOISE_CHUNK_BYTES, Offload, Pipeline};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::arch::Architecture;
use crate::models::clip::ClipTextModel;
use crate::models::unet::UNet;
use crate::models::vae::{AutoencoderKLConfig, VaeDecoder, VaeEncoder};
use crate::schedulers::ScheduleConfig;
use crate::weights::single_file::SingleFile;
use crate::weights::{ModelLayout, WeightDType, Weights, detect_layout};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `.safetensors` weights of one component folder: full-precision files, else the
/// `.fp16.` variants.
fn component_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut all: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("safetensors"))
        .collect();
    all.sort();
    let is_fp16 = |p: &PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(".fp16."))
    };
    let full: Vec<PathBuf> = all.iter().filter(|p| !is_fp16(p)).cloned().collect();
    let files = if full.is_empty() { all } else { full };
    if files.is_empty() {
        let pickles = ["bin", "ckpt", "pt"].iter().any(|e| {
            dir.join(format!("diffusion_pytorch_model.{e}")).exists()
                || dir.join(format!("pytorch_model.{e}")).exists()
        });
        let what = if pickles {
            "only pickle weights (.bin); convert them to .safetensors"
        } else {
            "no .safetensors weights"
        };
        return Err(Error::ModelLayout {
            path: dir.to_path_buf(),
            what: what.into(),
        });
    }
    Ok(files)
}

/// How [`Pipeline::load_with`] loads a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub dtype: WeightDType,
    /// Architecture of a single-file checkpoint: a diffusers folder of configs (as diffusers'
    /// `from_single_file(config=…)` takes) or an original LDM yaml. `None`: `<stem>.yaml`
    /// beside the checkpoint if there is one, else inferred from the tensor shapes. Ignored
    /// for diffusers folders, which carry their own configs.
    pub config: Option<PathBuf>,
    /// A VAE to use instead of the model's (diffusers' `vae=AutoencoderKL…` argument; e.g. the
    /// fp16-fix SDXL VAE): a diffusers `AutoencoderKL` folder (its `config.json` gives the
    /// scaling factor and `force_upcast`), or one `.safetensors` file, diffusers-named or in
    /// the original layout, of the model's VAE architecture (the model's VAE config applies).
    pub vae: Option<PathBuf>,
    /// LoRAs merged into the text encoders and the U-Net (see [`Pipeline::set_loras`]).
    pub loras: Vec<crate::lora::LoraSpec>,
    /// LoRA keys that match no weight of the model are warnings
    /// ([`Pipeline::lora_warnings`]) instead of an error.
    pub lora_lenient: bool,
    /// Upload a private copy of every weight. By default a model already loaded on the same
    /// `Gpu` (same files) shares its weight buffers: a second pipeline costs no weight memory.
    pub private_weights: bool,
}

impl Pipeline {
    /// Loads a diffusers pipeline folder or a single-file checkpoint (see [`LoadOptions`]).
    pub fn load(gpu: &Gpu, path: &Path, dtype: WeightDType) -> Result<Self> {
        Self::load_with(
            gpu,
            path,
            &LoadOptions {
                dtype,
                ..LoadOptions::default()
            },
        )
    }

    pub fn load_with(gpu: &Gpu, path: &Path, opts: &LoadOptions) -> Result<Self> {
        let dtype = opts.dtype;
        let mut latent_rgb = LatentRgb::default();
        let (parts, te2, arch) = match detect_layout(path)? {
            ModelLayout::Diffusers(dir) => {
                let arch = Architecture::from_folder(&dir)?;
                latent_rgb = LatentRgb::from_folder(&dir);
                let open = |c: &str| {
                    let d = dir.join(c);
                    Weights::open(&d, &component_files(&d)?)
                };
                let te2 = match arch.text_2 {
                    Some(_) => Some(open("text_encoder_2")?),
                    None => None,
                };
                (
                    [open(arch.text_dir())?, open("unet")?, open("vae")?],
                    te2,
                    arch,
                )
            }
            ModelLayout::SingleFile(file) => {
                // One header read serves the architecture and the renames.
                let sf = SingleFile::open(&file)?;
                let arch =
                    Architecture::for_single_file(&file, &sf.shapes, opts.config.as_deref())?;
                if sf.text_encoder_2.is_some() != arch.text_2.is_some() {
                    return Err(Error::ModelLayout {
                        path: file,
                        what: format!(
                            "the file holds {} text encoder(s), the architecture ({}) takes {}",
                            1 + usize::from(sf.text_encoder_2.is_some()),
                            arch.source,
                            1 + usize::from(arch.text_2.is_some())
                        ),
                    });
                }
                let sf = sf.with_unet_layout(arch.unet.layers_per_block);
                ([sf.text_encoder, sf.unet, sf.vae], sf.text_encoder_2, arch)
            }
        };
        let (arch, parts) = match &opts.vae {
            Some(v) => Self::with_vae(arch, parts, v)?,
            None => (arch, parts),
        };
        let share = !opts.private_weights;
        let parts = parts.map(|w| w.sharing(share));
        let te2 = te2.map(|w| w.sharing(share));
        let loras = (opts.loras.as_slice(), opts.lora_lenient);
        Self::from_parts(gpu, path, arch, parts, te2, dtype, latent_rgb, loras)
    }

    /// `arch` and `[text_encoder, unet, vae]` with the VAE at `path` instead (see
    /// [`LoadOptions::vae`]).
    fn with_vae(
        mut arch: Architecture,
        [te, unet, _]: [Weights; 3],
        path: &Path,
    ) -> Result<(Architecture, [Weights; 3])> {
        let vae = if path.is_dir() {
            let mut cfg = AutoencoderKLConfig::from_file(&path.join("config.json"))?;
            // Only diffusers' SDXL pipelines upcast the VAE.
            cfg.force_upcast &= arch.text_2.is_some();
            arch.vae = cfg;
            Weights::open(path, &component_files(path)?)?
        } else {
            crate::weights::single_file::standalone_vae(path)?
        };
        Ok((arch, [te, unet, vae]))
    }

    /// A pipeline of the architecture `arch` with random weights ([`Synthetic`]): what
    /// `sd-wgpu bench` measures, with no checkpoint file. `name` names it in messages.
    pub fn synthetic(
        gpu: &Gpu,
        name: &str,
        arch: Architecture,
        weights: crate::weights::Synthetic,
        dtype: WeightDType,
    ) -> Result<Self> {
        let origin = Path::new(name);
        let w = |part: &str| Weights::synthetic(&origin.join(part), weights);
        let parts = [w("text_encoder"), w("unet"), w("vae")];
        let te2 = arch.text_2.as_ref().map(|_| w("text_encoder_2"));
        let (rgb, loras) = (LatentRgb::default(), (&[][..], false));
        Self::from_parts(gpu, origin, arch, parts, te2, dtype, rgb, loras)
    }

    /// Checks `arch` and loads its networks from `[text_encoder, unet, vae]` weights, with
    /// `loras` (and whether unmatched keys are allowed) merged in.
    #[allow(clippy::too_many_arguments)]
    fn from_parts(
        gpu: &Gpu,
        path: &Path,
        arch: Architecture,
        [te, uw, vw]: [Weights; 3],
        te2: Option<Weights>,
        dtype: WeightDType,
        latent_rgb: LatentRgb,
        (loras, lenient): (&[crate::lora::LoraSpec], bool),
    ) -> Result<Self> {
        arch.check(path)?;
        let sources = super::lora::Sources {
            text: Arc::new(te),
            text_2: te2.map(Arc::new),
            unet: Arc::new(uw),
            dtype,
        };
        let applied = sources.apply(loras, arch.unet.layers_per_block, lenient)?;
        // Each network keeps its weights' source, to load again after a release.
        use resident::Resident as R;
        let vw = Arc::new(vw);
        let text_encoder =
            R::from_weights(gpu, &arch.text, applied.text, ClipTextModel::load, dtype)?;
        let text_encoder_2 = match (applied.text_2, &arch.text_2) {
            (Some(w), Some((cfg, _))) => {
                Some(R::from_weights(gpu, cfg, w, ClipTextModel::load, dtype)?)
            }
            _ => None,
        };
        let unet = R::from_weights(gpu, &arch.unet, applied.unet, UNet::load, dtype)?;
        let vae = R::from_weights(gpu, &arch.vae, vw.clone(), VaeDecoder::load, dtype)?;
        let encoder_config = arch.vae.clone();
        let encoder_load: resident::Loader<VaeEncoder> =
            Box::new(move |g| VaeEncoder::load(g, &vw, "", &encoder_config, dtype));
        let encoder = Resident::new((), None, encoder_load);
        let scheduler = ScheduleConfig::from_value(&arch.scheduler)?;
        let layout_err = |what: String| Error::ModelLayout {
            path: path.to_path_buf(),
            what: format!("{what} ({})", arch.source),
        };
        let default_sampler = sampler_of(&arch.scheduler).map_err(layout_err)?;
        let upscaler = match &arch.upscaler {
            Some(u) => Some(super::Upscaler {
                low_res_ac: ScheduleConfig::from_value(&u.low_res_scheduler)?.alphas_cumprod(),
                max_noise_level: u.max_noise_level,
                vae_scaling_factor_in_config: u.vae_scaling_factor_in_config,
            }),
            None => None,
        };
        let scheduler_class = arch.scheduler["_class_name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(Self {
            tokenizer: arch.tokenizer,
            text_encoder,
            text_encoder_2,
            tokenizer_2: arch.text_2.map(|(_, t)| t),
            force_zeros_for_empty_prompt: arch.force_zeros_for_empty_prompt,
            requires_aesthetics_score: arch.requires_aesthetics_score,
            unet,
            vae,
            offload: Offload::default(),
            default_sampler,
            scheduler_class,
            scheduler,
            architecture: arch.source,
            encoder,
            latent_rgb,
            upscaler,
            tiny: None,
            noise_chunk_bytes: NOISE_CHUNK_BYTES,
            sources,
            loras: loras.to_vec(),
            lora_lenient: lenient,
            lora_warnings: applied.warnings,
        })
    }
}
