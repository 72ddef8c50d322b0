//! Text-to-image end to end against diffusers' StableDiffusionPipeline on a tiny
//! random-weight pipeline (`tests/fixtures/pipeline/`, made by
//! `tools/make_pipeline_fixture.py`): same prompt, negative prompt and initial latents,
//! 4 DDIM steps, guidance 7.5.

use crate::common::*;
use sd_wgpu::pipeline::{Pipeline, Request};
use sd_wgpu::weights::{WeightDType, Weights};
use std::path::PathBuf;

fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (1.0 / mse.max(1e-20)).log10()
}

#[test]
fn txt2img_matches_diffusers_end_to_end() {
    let gpu = gpu();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline");
    let pipe = Pipeline::load(gpu, &root.join("sd1-tiny"), WeightDType::Auto).unwrap();
    let g = Weights::open_file(&root.join("sd1-tiny-golden.safetensors")).unwrap();
    let req = Request {
        prompt: "a red sneaker on a white table".into(),
        negative_prompt: "blurry".into(),
        steps: 4,
        guidance: 7.5,
        width: 32,
        height: 32,
        init_latents: Some(g.read_f32("latents", &[1, 4, 8, 8]).unwrap()),
        ..Request::default()
    };
    let mut seen = Vec::new();
    let out = pipe
        .generate(gpu, &req, &mut |p| {
            seen.push(p.step);
            true
        })
        .unwrap();
    assert_eq!(seen, [1, 2, 3, 4]);
    check(
        "txt2img final latents",
        &out.latents,
        &g.read_f32("final_latents", &[1, 4, 8, 8]).unwrap(),
        1e-3,
        1e-3,
    );
    let want = g.read_f32("image", &[1, 32, 32, 3]).unwrap();
    check("txt2img image", &out.image, &want, 1e-3, 1e-3);
    let p = psnr(&out.image, &want);
    eprintln!("txt2img PSNR vs diffusers: {p:.1} dB");
    assert!(p >= 40.0, "PSNR {p:.1} dB < 40 dB");

    // Cancellation from the progress callback ends the run with a typed error.
    let e = pipe.generate(gpu, &req, &mut |p| p.step < 2).err().unwrap();
    assert!(matches!(e, sd_wgpu::Error::Cancelled { step: 2 }), "{e}");
    // Sizes the networks cannot take are refused before any work.
    let bad = Request {
        width: 36,
        ..req.clone()
    };
    assert!(
        pipe.generate(gpu, &bad, &mut |_| true)
            .err()
            .unwrap()
            .to_string()
            .contains("multiples of 8")
    );
}
