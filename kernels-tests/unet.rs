//! U-Net against diffusers' UNet2DConditionModel on random-weight fixtures
//! (`tests/fixtures/unet/`, made by `tools/make_unet_fixtures.py`): SD 1.x-like (conv
//! projections) and SD 2.x-like (linear projections, per-block head counts).

use crate::common::*;
use sd_wgpu::models::unet::{UNet, UNetConfig};
use sd_wgpu::weights::{WeightDType, Weights};
use sd_wgpu::{DType, Recorder};
use std::path::PathBuf;

#[test]
fn unet_matches_diffusers() {
    let gpu = gpu();
    for (name, dt, tol) in [
        ("sd1-tiny", WeightDType::Auto, 1e-4f32),
        ("sd2-tiny", WeightDType::Auto, 1e-4),
        ("sd1-tiny", WeightDType::F16, 2e-2),
    ] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/unet")
            .join(name);
        let cfg = UNetConfig::from_file(&dir.join("config.json")).unwrap();
        let w = Weights::open_file(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
        let unet = UNet::load(gpu, &w, "", &cfg, dt).unwrap();
        let g = Weights::open_file(&dir.join("golden.safetensors")).unwrap();
        let cross = cfg.cross_attention_dim;
        let x = nhwc(
            &g.read_f32("sample", &[2, 4, 8, 12]).unwrap(),
            [2, 4, 8, 12],
        );
        let t = g.read_f32("timestep", &[1]).unwrap()[0];
        let ctx = g
            .read_f32("encoder_hidden_states", &[2, 77, cross])
            .unwrap();
        let want = nhwc(&g.read_f32("out", &[2, 4, 8, 12]).unwrap(), [2, 4, 8, 12]);
        let xt = upload(&x, &[2, 8, 12, 4], DType::F32, "latents");
        let ct = upload(&ctx, &[2, 77, cross], DType::F32, "encoder_hidden_states");
        let mut rec = Recorder::new(gpu);
        let out = unet.forward(&mut rec, &xt, t, &ct).unwrap();
        assert_eq!(out.shape(), [2, 8, 12, 4]);
        check(
            &format!("unet {name} {dt:?}"),
            &run(rec, &out),
            &want,
            tol,
            tol,
        );
    }
}

/// Odd latent sizes (9×11: down 9 → 5 → 3, upsampled back to each skip's size, as diffusers
/// does with `upsample_size`), and a context of the wrong width refused.
#[test]
fn unet_odd_sizes_match_diffusers() {
    let gpu = gpu();
    for name in ["sd1-tiny", "sd2-tiny"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/unet")
            .join(name);
        let cfg = UNetConfig::from_file(&dir.join("config.json")).unwrap();
        let w = Weights::open_file(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
        let unet = UNet::load(gpu, &w, "", &cfg, WeightDType::Auto).unwrap();
        let g = Weights::open_file(&dir.join("golden.safetensors")).unwrap();
        let cross = cfg.cross_attention_dim;
        let x = nhwc(
            &g.read_f32("sample_odd", &[2, 4, 9, 11]).unwrap(),
            [2, 4, 9, 11],
        );
        let want = nhwc(
            &g.read_f32("out_odd", &[2, 4, 9, 11]).unwrap(),
            [2, 4, 9, 11],
        );
        let t = g.read_f32("timestep", &[1]).unwrap()[0];
        let ctx = g
            .read_f32("encoder_hidden_states", &[2, 77, cross])
            .unwrap();
        let mut rec = Recorder::new(gpu);
        let xt = upload(&x, &[2, 9, 11, 4], DType::F32, "latents");
        let ct = upload(&ctx, &[2, 77, cross], DType::F32, "encoder_hidden_states");
        let out = unet.forward(&mut rec, &xt, t, &ct).unwrap();
        check(
            &format!("unet {name} 9x11 latents"),
            &run(rec, &out),
            &want,
            1e-4,
            1e-4,
        );

        let bad_ctx = upload(
            &vec![0.0; 2 * 77 * 24],
            &[2, 77, 24],
            DType::F32,
            "encoder_hidden_states",
        );
        let mut rec = Recorder::new(gpu);
        if cross != 24 {
            let e = unet
                .forward(&mut rec, &xt, 1.0, &bad_ctx)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("encoder_hidden_states"), "{e}");
        }
    }
}
