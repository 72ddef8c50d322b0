//! Single-file checkpoints without a GPU: the architecture from an LDM yaml or inferred from
//! tensor shapes must be exactly SD 1.5's / SD 2.1's / SDXL base's diffusers configs, and the
//! renames must cover the file. `tests/fixtures/ldm-headers.json` holds the names and shapes
//! of full-size SD 1.5, 2.1 and SDXL base single files (written by `tools/make_single_file_fixtures.py` from
//! diffusers' models through its diffusers → LDM renaming, which that script verifies
//! against diffusers' `from_single_file`).

use sd_wgpu::models::arch::{ArchSource, Architecture, Shapes};
use sd_wgpu::models::clip::ClipTextConfig;
use sd_wgpu::models::unet::UNetConfig;
use sd_wgpu::models::vae::AutoencoderKLConfig;
use sd_wgpu::schedulers::ScheduleConfig;
use sd_wgpu::weights::single_file::{
    CLIP_PREFIX, OPEN_CLIP_PREFIX, SGM_CLIP_PREFIX, SGM_OPEN_CLIP_PREFIX, SGM_REFINER_PREFIX,
    TextTower, clip_renames, open_clip_renames, text_tower, unet_renames, vae_renames,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn header(which: &str) -> Shapes {
    let text = std::fs::read_to_string(fixtures().join("ldm-headers.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v[which]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, s)| {
            let s = s
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize);
            (k.clone(), s.collect())
        })
        .collect()
}

fn check_arch(a: &Architecture, sd2: bool) {
    let (text, unet, sched) = if sd2 {
        (
            ClipTextConfig::sd21(),
            UNetConfig::sd21(),
            ScheduleConfig::sd21(),
        )
    } else {
        (
            ClipTextConfig::sd15(),
            UNetConfig::sd15(),
            ScheduleConfig::sd15(),
        )
    };
    assert_eq!(a.text, text);
    assert_eq!(a.unet, unet);
    assert_eq!(a.vae, AutoencoderKLConfig::sd());
    assert_eq!(ScheduleConfig::from_value(&a.scheduler).unwrap(), sched);
    let class = if sd2 {
        "DDIMScheduler"
    } else {
        "PNDMScheduler"
    };
    assert_eq!(a.scheduler["_class_name"], class);
    // SD 1 pads with <|endoftext|> (49407), SD 2's OpenCLIP with `!` (0).
    let ids = a.tokenizer.encode("a cat").unwrap().ids;
    assert_eq!(ids[76], if sd2 { 0 } else { 49407 });
}

#[test]
fn sd15_and_sd21_architectures_inferred_from_shapes() {
    for (which, sd2) in [("sd15", false), ("sd21", true)] {
        let h = header(which);
        let file = Path::new("model.safetensors");
        let tower = text_tower(file, &h).unwrap();
        assert_eq!(tower == TextTower::OpenClip, sd2);
        let a = Architecture::infer(file, &h, tower).unwrap();
        assert_eq!(a.source, ArchSource::Inferred);
        check_arch(&a, sd2);
    }
}

#[test]
fn ldm_yaml_gives_the_same_architecture() {
    for (which, yaml, sd2) in [
        ("sd15", "v1-inference.yaml", false),
        ("sd21", "v2-inference-v.yaml", true),
    ] {
        let h = header(which);
        let path = fixtures().join("ldm").join(yaml);
        let file = Path::new("model.safetensors");
        let a = Architecture::for_single_file(file, &h, Some(&path)).unwrap();
        assert_eq!(a.source, ArchSource::LdmYaml(path.clone()));
        check_arch(&a, sd2);
    }
    // The yaml's text encoder must be the checkpoint's.
    let e = Architecture::for_single_file(
        Path::new("model.safetensors"),
        &header("sd15"),
        Some(&fixtures().join("ldm/v2-inference-v.yaml")),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("FrozenOpenCLIPEmbedder"), "{e}");
}

#[test]
fn stem_yaml_beside_the_checkpoint_is_used() {
    let dir = std::env::temp_dir().join(format!("sd-wgpu-stem-yaml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("my-model.safetensors");
    let h = header("sd21");
    // Without a yaml: inferred.
    let a = Architecture::for_single_file(&file, &h, None).unwrap();
    assert_eq!(a.source, ArchSource::Inferred);
    // `my-model.yaml` beside it wins over inference (here: ε-prediction, 2.x-base style).
    let yaml = std::fs::read_to_string(fixtures().join("ldm/v2-inference-v.yaml"))
        .unwrap()
        .replace("parameterization: \"v\"", "parameterization: \"eps\"");
    std::fs::write(dir.join("my-model.yaml"), yaml).unwrap();
    let a = Architecture::for_single_file(&file, &h, None).unwrap();
    assert_eq!(a.source, ArchSource::LdmYaml(dir.join("my-model.yaml")));
    assert_eq!(a.scheduler["prediction_type"], "epsilon");
    // A diffusers config folder given explicitly wins over both.
    let folder = fixtures().join("pipeline/sd2-tiny");
    let a = Architecture::for_single_file(&file, &h, Some(&folder)).unwrap();
    assert_eq!(a.source, ArchSource::Folder(folder));
    assert_eq!(a.unet.block_out_channels, [32, 64]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_ldm_yaml_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("sd-wgpu-bad-yaml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let h = header("sd15");
    for (text, want) in [
        ("model: [unclosed", "invalid YAML"),
        ("model:\n  params: {}\n", "unet_config"),
        (
            "model:\n  params:\n    unet_config:\n      params:\n        model_channels: 320\n",
            "channel_mult",
        ),
    ] {
        let y = dir.join("bad.yaml");
        std::fs::write(&y, text).unwrap();
        let e = Architecture::for_single_file(Path::new("m.safetensors"), &h, Some(&y))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(want) && e.contains("bad.yaml"), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every U-Net, VAE and text-encoder key of the full-size files gets exactly one diffusers
/// name (no two keys collide), and spot checks of the index arithmetic.
#[test]
fn renames_cover_full_size_checkpoints() {
    for (which, lpb) in [("sd15", 2), ("sd21", 2), ("sdxl", 2)] {
        let h = header(which);
        let keys = || h.keys().map(String::as_str);
        let count = |p: &str| h.keys().filter(|k| k.starts_with(p)).count();
        let unet = unet_renames(keys(), lpb);
        let mapped: HashSet<_> = unet.values().map(|r| r.source.as_str()).collect();
        let unmapped: Vec<_> = keys()
            .filter(|k| k.starts_with("model.diffusion_model.") && !mapped.contains(k))
            .collect();
        assert!(
            unmapped.is_empty(),
            "{which}: unmapped U-Net keys {unmapped:?}"
        );
        assert_eq!(unet.len(), count("model.diffusion_model."), "{which} unet");
        let vae = vae_renames("first_stage_model.", keys());
        assert_eq!(vae.len(), count("first_stage_model."), "{which} vae");
        let sources: HashSet<_> = unet.values().map(|r| &r.source).collect();
        assert_eq!(sources.len(), unet.len());
        if which == "sdxl" {
            continue;
        }
        let src = |name: &str| unet[name].source.clone();
        assert_eq!(
            src("down_blocks.1.downsamplers.0.conv.weight"),
            "model.diffusion_model.input_blocks.6.0.op.weight"
        );
        assert_eq!(
            src("up_blocks.0.upsamplers.0.conv.weight"),
            "model.diffusion_model.output_blocks.2.1.conv.weight"
        );
        assert_eq!(
            src("up_blocks.1.upsamplers.0.conv.weight"),
            "model.diffusion_model.output_blocks.5.2.conv.weight"
        );
        assert_eq!(
            src("up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k.weight"),
            "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight"
        );
        assert_eq!(
            src("mid_block.resnets.1.time_emb_proj.weight"),
            "model.diffusion_model.middle_block.2.emb_layers.1.weight"
        );
        assert_eq!(
            vae["decoder.up_blocks.0.resnets.2.conv1.weight"].source,
            "first_stage_model.decoder.up.3.block.2.conv1.weight"
        );
        assert_eq!(
            vae["decoder.up_blocks.2.upsamplers.0.conv.weight"].source,
            "first_stage_model.decoder.up.1.upsample.conv.weight"
        );
        let q = &vae["decoder.mid_block.attentions.0.to_q.weight"];
        assert!(q.squeeze && q.source.ends_with("decoder.mid.attn_1.q.weight"));
        assert!(!vae["decoder.mid_block.attentions.0.group_norm.weight"].squeeze);
    }
    let sd1 = clip_renames(CLIP_PREFIX, header("sd15").keys().map(String::as_str));
    assert_eq!(
        sd1["text_model.encoder.layers.11.mlp.fc2.bias"].source,
        "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.bias"
    );
    let h = header("sd21");
    let sd2 = open_clip_renames(OPEN_CLIP_PREFIX, h.keys().map(String::as_str));
    let k = &sd2["text_model.encoder.layers.22.self_attn.k_proj.weight"];
    assert_eq!(
        k.source,
        "cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight"
    );
    assert_eq!(k.slice, Some((1, 3)));
    assert_eq!(
        sd2["text_model.embeddings.position_embedding.weight"].source,
        "cond_stage_model.model.positional_embedding"
    );
    // 24 resblocks × 16 tensors (q/k/v weight and bias from the fused ones) + 4 + the
    // projection (unused by SD 2).
    assert_eq!(sd2.len(), 24 * 16 + 5);
}

/// SDXL base's SGM single file: the architecture inferred from its shapes is exactly
/// diffusers' SDXL base configs (both towers, transformer depths 1, 2, 10, the `text_time`
/// embedding's 256-wide time ids, the VAE's 0.13025 and upcast, SDXL's Euler); every key of
/// both towers, `label_emb` included, gets its diffusers name, the OpenCLIP projection
/// transposed.
#[test]
fn sdxl_architecture_and_renames_from_shapes() {
    let h = header("sdxl");
    let file = Path::new("sd_xl_base_1.0.safetensors");
    let tower = text_tower(file, &h).unwrap();
    assert_eq!(tower, TextTower::Sdxl);
    let a = Architecture::infer(file, &h, tower).unwrap();
    let want = Architecture::sdxl().unwrap();
    assert_eq!(a.source, ArchSource::Inferred);
    assert_eq!(a.text, want.text);
    assert_eq!(
        a.text_2.as_ref().map(|t| &t.0),
        want.text_2.as_ref().map(|t| &t.0)
    );
    assert_eq!(a.unet, want.unet);
    assert_eq!(a.vae, want.vae);
    assert_eq!(a.scheduler, want.scheduler);
    assert!(a.force_zeros_for_empty_prompt);
    a.check(file).unwrap();
    // OpenCLIP pads with `!` (0), the first tower with <|endoftext|>.
    assert_eq!(a.tokenizer.encode("a cat").unwrap().ids[76], 49407);
    assert_eq!(a.text_2.unwrap().1.encode("a cat").unwrap().ids[76], 0);

    let keys = || h.keys().map(String::as_str);
    let count = |p: &str| h.keys().filter(|k| k.starts_with(p)).count();
    let unet = unet_renames(keys(), 2);
    assert_eq!(
        unet["add_embedding.linear_1.weight"].source,
        "model.diffusion_model.label_emb.0.0.weight"
    );
    assert_eq!(
        unet["down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k.weight"].source,
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight"
    );
    let one = clip_renames(SGM_CLIP_PREFIX, keys());
    assert_eq!(one.len(), count(SGM_CLIP_PREFIX));
    let two = open_clip_renames(SGM_OPEN_CLIP_PREFIX, keys());
    // 32 resblocks × 16 + 4 + the projection (logit_scale unused).
    assert_eq!(two.len(), 32 * 16 + 5);
    let p = &two["text_projection.weight"];
    assert!(p.transpose && p.source == "conditioner.embedders.1.model.text_projection");
    // An SDXL file is not described by an LDM yaml.
    let yaml = fixtures().join("ldm").join("v1-inference.yaml");
    let e = Architecture::from_ldm_yaml(&yaml, &h, tower)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("SDXL") && e.contains("--config"), "{e}");
}

/// SDXL refiner's SGM single file (OpenCLIP alone as `conditioner.embedders.0.model`): the one
/// text encoder with its projection, five time ids of 256 (2560 = 1280 + 5·256), transformer
/// depth 4, 64-wide heads, the aesthetic score in the time ids, an encoded empty negative
/// prompt; every key named.
#[test]
fn sdxl_refiner_architecture_from_shapes() {
    let h = header("sdxl_refiner");
    let file = Path::new("sd_xl_refiner_1.0.safetensors");
    let tower = text_tower(file, &h).unwrap();
    assert_eq!(tower, TextTower::SdxlRefiner);
    let a = Architecture::infer(file, &h, tower).unwrap();
    a.check(file).unwrap();
    assert!(a.text_2.is_none() && a.requires_aesthetics_score && !a.force_zeros_for_empty_prompt);
    assert_eq!(
        (
            a.text.hidden_size,
            a.text.num_hidden_layers,
            a.text.projection_dim
        ),
        (1280, 32, Some(1280))
    );
    let u = &a.unet;
    assert_eq!(u.block_out_channels, [384, 768, 1536, 1536]);
    assert_eq!(u.down_attention, [false, true, true, false]);
    assert_eq!(u.heads, [6, 12, 24, 24]);
    // The first level's depth is unused; the last (no attention either) takes the mid block's.
    assert_eq!(u.transformer_layers_per_block[1..], [4, 4, 4]);
    assert_eq!(
        (u.cross_attention_dim, u.addition_time_embed_dim),
        (1280, Some(256))
    );
    assert_eq!(u.projection_class_embeddings_input_dim, 2560);
    assert_eq!(a.text_dir(), "text_encoder_2");
    // OpenCLIP pads with `!`.
    assert_eq!(a.tokenizer.encode("a cat").unwrap().ids[76], 0);
    let keys = || h.keys().map(String::as_str);
    let unet = unet_renames(keys(), 2);
    assert_eq!(
        unet.len(),
        h.keys()
            .filter(|k| k.starts_with("model.diffusion_model."))
            .count()
    );
    let text = open_clip_renames(SGM_REFINER_PREFIX, keys());
    assert_eq!(text.len(), 32 * 16 + 5);
}
