//! CLIP text encoder against transformers' CLIPTextModel on random-weight fixtures
//! (`tests/fixtures/clip/`, made by `tools/make_clip_fixtures.py`).

use crate::common::*;
use sd_wgpu::Recorder;
use sd_wgpu::models::clip::{ClipTextConfig, ClipTextModel, HiddenState};
use sd_wgpu::weights::{WeightDType, Weights};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/clip")
        .join(name)
}

/// A fixture's config, its encoder loaded with `dt`, its golden file and token ids.
fn load(name: &str, dt: WeightDType) -> (ClipTextConfig, ClipTextModel, Weights, Vec<Vec<u32>>) {
    let dir = fixture(name);
    let cfg = ClipTextConfig::from_file(&dir.join("config.json")).unwrap();
    let w = Weights::open_file(&dir.join("model.safetensors")).unwrap();
    let model = ClipTextModel::load(gpu(), &w, "", &cfg, dt).unwrap();
    let golden = Weights::open_file(&dir.join("golden.safetensors")).unwrap();
    let ids: Vec<Vec<u32>> = golden
        .read_f32("input_ids", &[2, 77])
        .unwrap()
        .chunks(77)
        .map(|r| r.iter().map(|&v| v as u32).collect())
        .collect();
    (cfg, model, golden, ids)
}

#[test]
fn clip_text_encoder_matches_transformers() {
    let gpu = gpu();
    // (fixture, weight dtype, atol = rtol): f16 weights round every parameter to 11 bits.
    for (name, dt, tol) in [
        ("sd1-tiny", WeightDType::Auto, 1e-4f32),
        ("sd2-tiny", WeightDType::Auto, 1e-4),
        ("sd1-tiny", WeightDType::F16, 1e-2),
    ] {
        let (cfg, model, golden, ids) = load(name, dt);
        for skip in [0usize, 1] {
            let want = golden
                .read_f32(&format!("out_skip{skip}"), &[2, 77, cfg.hidden_size])
                .unwrap();
            let mut rec = Recorder::new(gpu);
            let out = model.forward(&mut rec, &ids, skip).unwrap();
            assert_eq!(out.shape(), [2, 77, cfg.hidden_size]);
            check(
                &format!("clip {name} {dt:?} clip_skip {skip}"),
                &run(rec, &out),
                &want,
                tol,
                tol,
            );
        }
    }
}

/// SDXL's two encoders (`tools/make_sdxl_clip_fixtures.py`): the hidden state before the last
/// layer (and one further back with clip skip 1) with no final layer norm, and the second
/// encoder's projected pooled output — the end token found by id, and by transformers'
/// legacy largest-id rule, with `!`-id-0 padding.
#[test]
fn sdxl_text_encoders_match_transformers() {
    let gpu = gpu();
    for (name, pooled) in [("sdxl1-tiny", false), ("sdxl2-tiny", true)] {
        let (cfg, model, golden, ids) = load(name, WeightDType::Auto);
        assert_eq!(model.text_projection.is_some(), pooled, "{name}");
        let h = cfg.hidden_size;
        for skip in [0usize, 1] {
            let want = golden
                .read_f32(&format!("penultimate_skip{skip}"), &[2, 77, h])
                .unwrap();
            let mut rec = Recorder::new(gpu);
            let which = HiddenState::Penultimate { clip_skip: skip };
            let out = model.encode(&mut rec, &ids, which, pooled).unwrap();
            assert_eq!(out.hidden.shape(), [2, 77, h]);
            let pooled_out = out.pooled.clone();
            let got = run(rec, &out.hidden);
            check(
                &format!("{name} penultimate, clip skip {skip}"),
                &got,
                &want,
                1e-4,
                1e-4,
            );
            if let Some(p) = pooled_out {
                let d = cfg.projection_dim.unwrap();
                assert_eq!(p.shape(), [2, d]);
                let want = golden.read_f32("text_embeds", &[2, d]).unwrap();
                let got = p.to_vec(gpu).unwrap();
                check(&format!("{name} text_embeds"), &got, &want, 1e-4, 1e-4);
            }
        }
    }
    // A pooled output of an encoder without a projection: an error, not a guess.
    let (_, model, _, _) = load("sdxl1-tiny", WeightDType::Auto);
    let mut rec = Recorder::new(gpu);
    let which = HiddenState::Penultimate { clip_skip: 0 };
    let e = model
        .encode(&mut rec, &[vec![1; 77]], which, true)
        .err()
        .unwrap();
    assert!(e.to_string().contains("text_projection"), "{e}");
}

#[test]
fn clip_errors_name_the_tensor_or_the_input() {
    let gpu = gpu();
    let dir = fixture("sd1-tiny");
    let mut cfg = ClipTextConfig::from_file(&dir.join("config.json")).unwrap();
    let w = Weights::open_file(&dir.join("model.safetensors")).unwrap();
    let model = ClipTextModel::load(gpu, &w, "", &cfg, WeightDType::Auto).unwrap();
    let mut rec = Recorder::new(gpu);
    let e = model
        .forward(&mut rec, &[vec![5000; 77]], 0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("5000"), "{e}");
    assert!(model.forward(&mut rec, &[vec![1; 78]], 0).is_err());
    assert!(model.forward(&mut rec, &[vec![1; 77]], 3).is_err());
    // A config with one layer more than the file has: the missing tensor is named.
    cfg.num_hidden_layers += 1;
    let e = ClipTextModel::load(gpu, &w, "", &cfg, WeightDType::Auto)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("text_model.encoder.layers.3.layer_norm1.weight"),
        "{e}"
    );
    cfg.num_hidden_layers -= 1;
    cfg.hidden_size = 48;
    let e = ClipTextModel::load(gpu, &w, "", &cfg, WeightDType::Auto)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("token_embedding") && e.contains("[1000, 48]"),
        "{e}"
    );
}
