//! U-Nets with added conditions against diffusers' UNet2DConditionModel on random-weight
//! fixtures (`tools/make_sdxl_unet_fixtures.py`): SDXL's structure (no first-level
//! transformer, two transformer blocks per `Transformer2D` at a level and in the mid block,
//! `text_time` added embedding of the pooled text embedding and six time ids) and LCM's
//! guidance embedding (`time_cond_proj_dim`). The fixtures' weights are stored in f16 (the
//! golden outputs are of exactly those weights, in f32).

use crate::common::*;
use sd_wgpu::models::unet::{AddedConditions, UNet, UNetConfig};
use sd_wgpu::weights::{WeightDType, Weights};
use sd_wgpu::{DType, Recorder, Tensor};
use std::path::PathBuf;

struct Fixture {
    cfg: UNetConfig,
    w: Weights,
    g: Weights,
}

fn fixture(name: &str) -> Fixture {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/unet")
        .join(name);
    Fixture {
        cfg: UNetConfig::from_file(&dir.join("config.json")).unwrap(),
        w: Weights::open_file(&dir.join("diffusion_pytorch_model.safetensors")).unwrap(),
        g: Weights::open_file(&dir.join("golden.safetensors")).unwrap(),
    }
}

/// `name` from the golden file, or zeros where the fixture has none (a condition its U-Net
/// does not take).
fn tensor(g: &Weights, name: &str, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    let v = g.read_f32(name, shape).unwrap_or_else(|_| vec![0.0; n]);
    upload(&v, shape, DType::F32, name)
}

/// The U-Net's output for the fixture's inputs, with `added` built from its tensors.
fn forward(f: &Fixture, dt: WeightDType, with: &[&str]) -> Result<Vec<f32>, String> {
    let gpu = gpu();
    let unet = UNet::load(gpu, &f.w, "", &f.cfg, dt).map_err(|e| e.to_string())?;
    let g = &f.g;
    let x = nhwc(
        &g.read_f32("sample", &[2, 4, 8, 12]).unwrap(),
        [2, 4, 8, 12],
    );
    let xt = upload(&x, &[2, 8, 12, 4], DType::F32, "latents");
    let t = g.read_f32("timestep", &[1]).unwrap()[0];
    let tt = upload(&[t, t], &[2], DType::F32, "timestep");
    let cross = f.cfg.cross_attention_dim;
    let ct = tensor(g, "encoder_hidden_states", &[2, 77, cross]);
    let text_embeds = with
        .contains(&"text_embeds")
        .then(|| tensor(g, "text_embeds", &[2, 16]));
    let time_ids = with
        .contains(&"time_ids")
        .then(|| tensor(g, "time_ids", &[2, 6]));
    let timestep_cond = with
        .contains(&"timestep_cond")
        .then(|| tensor(g, "timestep_cond", &[2, 16]));
    let added = AddedConditions {
        text_embeds: text_embeds.as_ref(),
        time_ids: time_ids.as_ref(),
        timestep_cond: timestep_cond.as_ref(),
        class_labels: None,
    };
    let mut rec = Recorder::new(gpu);
    let ctx = unet
        .project_context_with(&mut rec, &ct, added)
        .map_err(|e| e.to_string())?;
    let out = unet
        .forward_ctx(&mut rec, &xt, &tt, &ctx)
        .map_err(|e| e.to_string())?;
    assert_eq!(out.shape(), [2, 8, 12, 4]);
    Ok(run(rec, &out))
}

#[test]
fn sdxl_and_lcm_unets_match_diffusers() {
    for (name, with, dt, tol) in [
        (
            "sdxl-tiny",
            &["text_embeds", "time_ids"][..],
            WeightDType::Auto,
            1e-4f32,
        ),
        (
            "sdxl-tiny",
            &["text_embeds", "time_ids"],
            WeightDType::F32,
            1e-4,
        ),
        ("lcm-tiny", &["timestep_cond"], WeightDType::Auto, 1e-4),
    ] {
        let f = fixture(name);
        let want = nhwc(&f.g.read_f32("out", &[2, 4, 8, 12]).unwrap(), [2, 4, 8, 12]);
        let got = forward(&f, dt, with).unwrap();
        check(&format!("unet {name} {dt:?}"), &got, &want, tol, tol);
    }
    let xl = fixture("sdxl-tiny");
    assert_eq!(xl.cfg.transformer_layers_per_block, [1, 2]);
    assert_eq!(xl.cfg.addition_time_embed_dim, Some(8));
    assert_eq!(fixture("lcm-tiny").cfg.time_cond_proj_dim, Some(16));
}

/// A missing or unexpected condition is an error naming it, never a silent run without it.
#[test]
fn unet_added_conditions_are_checked() {
    let xl = fixture("sdxl-tiny");
    let e = forward(&xl, WeightDType::Auto, &["text_embeds"]).unwrap_err();
    assert!(e.contains("time_ids"), "{e}");
    let e = forward(&xl, WeightDType::Auto, &[]).unwrap_err();
    assert!(e.contains("text_embeds"), "{e}");
    let e = forward(
        &xl,
        WeightDType::Auto,
        &["text_embeds", "time_ids", "timestep_cond"],
    )
    .unwrap_err();
    assert!(e.contains("timestep_cond"), "{e}");
    let lcm = fixture("lcm-tiny");
    let e = forward(&lcm, WeightDType::Auto, &[]).unwrap_err();
    assert!(e.contains("timestep_cond"), "{e}");
    // A config asking for what the engine does not build is refused at load.
    let mut v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/unet/sdxl-tiny/config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    v["addition_embed_type"] = "image".into();
    let e = UNetConfig::from_json(&v, "x.json".as_ref())
        .unwrap_err()
        .to_string();
    assert!(e.contains("addition_embed_type"), "{e}");
    v["addition_embed_type"] = "text_time".into();
    v["class_embed_type"] = "timestep".into();
    let e = UNetConfig::from_json(&v, "x.json".as_ref())
        .unwrap_err()
        .to_string();
    assert!(e.contains("class_embed_type"), "{e}");
}

/// The 4× upscaler's U-Net shape (`tools/make_upscaler_unet_fixture.py`): 7 input channels,
/// the noise level as a class label (`num_class_embeds`), `only_cross_attention` on the first
/// attention levels (their `attn1` attends to the text), f16 weights; labels are checked.
#[test]
fn upscaler_unet_matches_diffusers() {
    let gpu = gpu();
    let f = fixture("upscaler-tiny");
    assert_eq!(f.cfg.only_cross_attention, [true, true, false]);
    assert_eq!((f.cfg.in_channels, f.cfg.num_class_embeds), (7, Some(50)));
    let g = &f.g;
    let x = nhwc(
        &g.read_f32("sample", &[2, 7, 8, 12]).unwrap(),
        [2, 7, 8, 12],
    );
    let xt = upload(&x, &[2, 8, 12, 7], DType::F32, "latents and image");
    let t = g.read_f32("timestep", &[1]).unwrap()[0];
    let tt = upload(&[t, t], &[2], DType::F32, "timestep");
    let ct = tensor(g, "encoder_hidden_states", &[2, 77, 24]);
    let labels: Vec<usize> = g
        .read_f32("class_labels", &[2])
        .unwrap()
        .iter()
        .map(|&l| l as usize)
        .collect();
    let want = nhwc(&g.read_f32("out", &[2, 4, 8, 12]).unwrap(), [2, 4, 8, 12]);
    for (dt, tol) in [(WeightDType::Auto, 1e-4f32), (WeightDType::F32, 1e-4)] {
        let unet = UNet::load(gpu, &f.w, "", &f.cfg, dt).unwrap();
        let mut rec = Recorder::new(gpu);
        let added = AddedConditions {
            class_labels: Some(&labels),
            ..AddedConditions::default()
        };
        let ctx = unet.project_context_with(&mut rec, &ct, added).unwrap();
        let out = unet.forward_ctx(&mut rec, &xt, &tt, &ctx).unwrap();
        check(
            &format!("upscaler unet {dt:?}"),
            &run(rec, &out),
            &want,
            tol,
            tol,
        );
    }
    // Labels missing, out of range, or for a U-Net without classes: errors naming them.
    let unet = UNet::load(gpu, &f.w, "", &f.cfg, WeightDType::Auto).unwrap();
    let mut rec = Recorder::new(gpu);
    let e = unet
        .project_context_with(&mut rec, &ct, AddedConditions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("class_labels"), "{e}");
    let bad = AddedConditions {
        class_labels: Some(&[20, 50]),
        ..AddedConditions::default()
    };
    let e = unet
        .project_context_with(&mut rec, &ct, bad)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("class_labels") && e.contains("below 50"), "{e}");
    let lcm = fixture("lcm-tiny");
    let plain = UNet::load(gpu, &lcm.w, "", &lcm.cfg, WeightDType::Auto).unwrap();
    let ct = tensor(&lcm.g, "encoder_hidden_states", &[2, 77, 24]);
    let tc = tensor(&lcm.g, "timestep_cond", &[2, 16]);
    let extra = AddedConditions {
        class_labels: Some(&[1, 2]),
        timestep_cond: Some(&tc),
        ..AddedConditions::default()
    };
    let e = plain
        .project_context_with(&mut rec, &ct, extra)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("class_labels"), "{e}");
}
