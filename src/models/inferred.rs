//! Network configs inferred from a single-file checkpoint's tensor names and shapes, with
//! the SD 1.x / 2.x conventions (what `Architecture` falls back to without config files).

use super::arch::Shapes;
use super::clip::{Activation, ClipTextConfig};
use super::unet::UNetConfig;
use super::vae::AutoencoderKLConfig;
use crate::error::{Error, Result};
use crate::weights::single_file::{TowerKeys, UNET_PREFIX, VAE_PREFIX};
use std::path::Path;

fn layout_err(path: &Path, what: String) -> Error {
    Error::ModelLayout {
        path: path.to_path_buf(),
        what,
    }
}

/// The shape of `name`, or an error naming it.
fn shape<'a>(path: &Path, shapes: &'a Shapes, name: &str) -> Result<&'a [usize]> {
    shapes
        .get(name)
        .map(Vec::as_slice)
        .ok_or_else(|| Error::MissingTensor {
            path: path.to_path_buf(),
            tensor: name.to_string(),
        })
}

/// Number of `{prefix}{i}.` groups (i = 0, 1, … contiguous).
fn count(shapes: &Shapes, prefix: &str) -> usize {
    (0..)
        .take_while(|i| {
            let p = format!("{prefix}{i}.");
            shapes.keys().any(|k| k.starts_with(&p))
        })
        .count()
}

/// The text encoder's config from its tensors: width, depth and MLP size from shapes, 64-wide
/// heads (ViT-L/14, ViT-H/14 and ViT-bigG/14 alike), quick-GELU for OpenAI CLIP, GELU for
/// OpenCLIP. `penultimate` drops the last layer (SD 2.x runs 23 of OpenCLIP's 24). No
/// projection: SDXL's second tower sets `projection_dim` itself.
pub fn text_from_shapes(
    path: &Path,
    shapes: &Shapes,
    tower: TowerKeys,
    penultimate: bool,
) -> Result<ClipTextConfig> {
    let p = tower.prefix;
    let (tok, pos, layers, fc1, act) = if tower.open_clip {
        (
            format!("{p}token_embedding.weight"),
            format!("{p}positional_embedding"),
            count(shapes, &format!("{p}transformer.resblocks.")),
            format!("{p}transformer.resblocks.0.mlp.c_fc.weight"),
            Activation::Gelu,
        )
    } else {
        let root = if shapes
            .keys()
            .any(|k| k.starts_with(&format!("{p}text_model.")))
        {
            format!("{p}text_model.")
        } else {
            p.to_string()
        };
        (
            format!("{root}embeddings.token_embedding.weight"),
            format!("{root}embeddings.position_embedding.weight"),
            count(shapes, &format!("{root}encoder.layers.")),
            format!("{root}encoder.layers.0.mlp.fc1.weight"),
            Activation::QuickGelu,
        )
    };
    let &[vocab, hidden] = shape(path, shapes, &tok)? else {
        return Err(layout_err(path, format!("`{tok}` is not 2-D")));
    };
    let max_pos = shape(path, shapes, &pos)?[0];
    let ff = shape(path, shapes, &fc1)?[0];
    let layers = layers.saturating_sub(usize::from(penultimate));
    if layers == 0 || hidden % 64 != 0 {
        return Err(layout_err(
            path,
            format!(
                "text encoder with {layers} layers of width {hidden}: not an SD 1.x / 2.x / XL \
                 tower (pass --config)"
            ),
        ));
    }
    Ok(ClipTextConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: ff,
        num_hidden_layers: layers,
        num_attention_heads: hidden / 64,
        max_position_embeddings: max_pos,
        hidden_act: act,
        layer_norm_eps: 1e-5,
        eos_token_id: 2,
        projection_dim: None,
    })
}

/// The U-Net's config from its tensors; `heads(channels)` gives each level's head count.
pub fn unet_from_shapes(
    path: &Path,
    shapes: &Shapes,
    heads: impl Fn(usize) -> usize,
) -> Result<UNetConfig> {
    let p = UNET_PREFIX;
    let conv_in = shape(path, shapes, &format!("{p}input_blocks.0.0.weight"))?;
    let (mc, in_channels) = (conv_in[0], conv_in[1]);
    let out_channels = shape(path, shapes, &format!("{p}out.2.weight"))?[0];
    let n_in = count(shapes, &format!("{p}input_blocks."));
    // The first downsampler (`input_blocks.{lpb+1}.0.op`) gives layers per block.
    let lpb = (1..n_in)
        .find(|i| shapes.contains_key(&format!("{p}input_blocks.{i}.0.op.weight")))
        .map(|i| i - 1)
        .unwrap_or(n_in.saturating_sub(1));
    if lpb == 0 || n_in == 0 || n_in % (lpb + 1) != 0 {
        return Err(layout_err(
            path,
            format!("{n_in} U-Net input blocks do not form levels (pass --config)"),
        ));
    }
    let levels = n_in / (lpb + 1);
    let mut blocks = Vec::new();
    let mut down_attention = Vec::new();
    let mut linear = None;
    let mut context = None;
    let mut depths = Vec::new();
    for b in 0..levels {
        let i = 1 + b * (lpb + 1);
        blocks.push(
            shape(
                path,
                shapes,
                &format!("{p}input_blocks.{i}.0.out_layers.3.weight"),
            )?[0],
        );
        let proj = format!("{p}input_blocks.{i}.1.proj_in.weight");
        down_attention.push(shapes.contains_key(&proj));
        if let Some(s) = shapes.get(&proj) {
            linear = Some(s.len() == 2);
            let k = format!("{p}input_blocks.{i}.1.transformer_blocks.0.attn2.to_k.weight");
            context = Some(shape(path, shapes, &k)?[1]);
        }
        // SDXL: several transformer blocks per attention (1 where there is none).
        let blocks = count(
            shapes,
            &format!("{p}input_blocks.{i}.1.transformer_blocks."),
        );
        depths.push(blocks.max(1));
    }
    // The mid block's depth is the last level's in diffusers' configs; a last level without
    // attention (SDXL's refiner) takes the mid block's (its own is unused). A file that
    // differs needs its config.
    let mid = count(shapes, &format!("{p}middle_block.1.transformer_blocks."));
    if let (Some(d), Some(false)) = (depths.last_mut(), down_attention.last()) {
        if mid != 0 {
            *d = mid;
        }
    }
    if mid != 0 && Some(&mid) != depths.last() {
        return Err(layout_err(
            path,
            format!(
                "the mid block's transformer depth {mid} is not the last level's {:?} (pass \
                 --config)",
                depths.last()
            ),
        ));
    }
    // SDXL's `text_time` embedding: `label_emb.0.0` takes the pooled text embedding and six
    // sinusoids of the time ids.
    let label = shapes.get(&format!("{p}label_emb.0.0.weight"));
    let up_attention = (0..levels)
        .map(|b| {
            shapes.contains_key(&format!(
                "{p}output_blocks.{}.1.proj_in.weight",
                b * (lpb + 1)
            ))
        })
        .collect();
    if blocks[0] != mc {
        return Err(layout_err(
            path,
            format!("conv_in has {mc} channels, the first level {}", blocks[0]),
        ));
    }
    Ok(UNetConfig {
        in_channels,
        out_channels,
        heads: blocks.iter().map(|&c| heads(c).max(1)).collect(),
        block_out_channels: blocks,
        down_attention,
        up_attention,
        layers_per_block: lpb,
        cross_attention_dim: context
            .ok_or_else(|| layout_err(path, "the U-Net has no cross-attention".into()))?,
        norm_num_groups: 32,
        norm_eps: 1e-5,
        use_linear_projection: linear.unwrap_or(false),
        flip_sin_to_cos: true,
        freq_shift: 0.0,
        sample_size: 64,
        transformer_layers_per_block: depths,
        // Set by the caller from the second text tower's projection (`label_emb` takes
        // `projection + 6·d`).
        addition_time_embed_dim: None,
        projection_class_embeddings_input_dim: label.map_or(0, |s| s.get(1).copied().unwrap_or(0)),
        time_cond_proj_dim: None,
        only_cross_attention: vec![false; levels],
        num_class_embeds: None,
    })
}

/// The VAE's config from its decoder's tensors (32 groups, SD's scaling factor).
pub fn vae_from_shapes(path: &Path, shapes: &Shapes) -> Result<AutoencoderKLConfig> {
    let p = format!("{VAE_PREFIX}decoder.");
    let levels = count(shapes, &format!("{p}up."));
    let per_level = count(shapes, &format!("{p}up.0.block."));
    if levels == 0 || per_level == 0 {
        return Err(layout_err(
            path,
            "no VAE decoder levels (`decoder.up.*`)".into(),
        ));
    }
    let blocks = (0..levels)
        .map(|i| Ok(shape(path, shapes, &format!("{p}up.{i}.block.0.conv2.weight"))?[0]))
        .collect::<Result<Vec<_>>>()?;
    let encoder_in = format!("{VAE_PREFIX}encoder.conv_in.weight");
    Ok(AutoencoderKLConfig {
        in_channels: shapes.get(&encoder_in).map_or(3, |s| s[1]),
        out_channels: shape(path, shapes, &format!("{p}conv_out.weight"))?[0],
        latent_channels: shape(path, shapes, &format!("{p}conv_in.weight"))?[1],
        block_out_channels: blocks,
        layers_per_block: per_level - 1,
        norm_num_groups: 32,
        scaling_factor: 0.18215,
        force_upcast: false,
        sample_size: 512,
    })
}
