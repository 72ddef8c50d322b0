//! The built-in model (`assets/fashion-model`, trained by `tools/train_fashion_model.py`):
//! the engine's output matches diffusers' on the same weights and latents, the garments come
//! out in the prompted colour, and `generate` without `--model` uses it at its native 32 px.

use crate::common::*;
use sd_wgpu::fashion::Vocabulary;
use sd_wgpu::pipeline::{Pipeline, Request};
use sd_wgpu::weights::{WeightDType, Weights};
use std::path::PathBuf;

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/fashion-model")
}

#[test]
fn default_model_matches_diffusers() {
    let gpu = gpu();
    let pipe = Pipeline::load(gpu, &model_dir(), WeightDType::Auto).unwrap();
    assert_eq!(pipe.default_size(), 32);
    // Its own fitted preview map (tools/fit_latent_preview.py), not SD's.
    assert_eq!(pipe.latent_rgb.factors.len(), 4);
    assert_ne!(pipe.latent_rgb, sd_wgpu::pipeline::LatentRgb::default());
    let g = Weights::open_file(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/fashion/golden.safetensors"),
    )
    .unwrap();
    let latents = g.read_f32("latents", &[2, 4, 8, 8]).unwrap();
    let images = g.read_f32("image", &[2, 32, 32, 3]).unwrap();
    for (i, prompt) in ["a red sneaker", "a blue dress"].iter().enumerate() {
        let req = Request {
            prompt: prompt.to_string(),
            steps: 20,
            guidance: 7.5,
            width: 32,
            height: 32,
            init_latents: Some(latents[i * 256..(i + 1) * 256].to_vec()),
            ..Request::default()
        };
        let out = pipe.generate(gpu, &req, &mut |_| true).unwrap();
        let want = &images[i * 3072..(i + 1) * 3072];
        check(
            &format!("fashion model `{prompt}`"),
            &out.image,
            want,
            2e-3,
            2e-3,
        );
        let p = psnr(&out.image, want);
        eprintln!("fashion model `{prompt}` PSNR vs diffusers: {p:.1} dB");
        assert!(p >= 40.0, "PSNR {p:.1} dB");
    }
}

/// One prompt per colour word (each with a different garment) and every held-out pair, fixed
/// seeds, the CLI's defaults (30 steps, guidance 7.5): the garment's measured colour must be
/// the prompted one.
#[test]
fn default_model_draws_the_prompted_colour() {
    let gpu = gpu();
    let voc = Vocabulary::load(&model_dir()).unwrap();
    let pipe = Pipeline::load(gpu, &model_dir(), WeightDType::Auto).unwrap();
    let mut prompts: Vec<(usize, String)> = voc
        .colours
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                i,
                format!("a {c} {}", voc.classes[(3 * i + 1) % voc.classes.len()]),
            )
        })
        .collect();
    for p in &voc.held_out {
        let i = voc
            .colours
            .iter()
            .position(|c| p.split(' ').nth(1) == Some(c));
        prompts.push((i.unwrap(), p.clone()));
    }
    let mut wrong = Vec::new();
    for (n, (colour, prompt)) in prompts.iter().enumerate() {
        let req = Request {
            prompt: prompt.clone(),
            width: 32,
            height: 32,
            seed: 100 + n as u64,
            ..Request::default()
        };
        let out = pipe.generate(gpu, &req, &mut |_| true).unwrap();
        let got = voc.garment_colour(&out.image);
        let name = |c: Option<usize>| c.map(|c| voc.colours[c].clone());
        eprintln!("`{prompt}` (seed {}): measured {:?}", req.seed, name(got));
        if got != Some(*colour) {
            wrong.push(format!("`{prompt}` came out {:?}", name(got)));
        }
    }
    assert!(wrong.is_empty(), "{wrong:?}");
}

/// `sd-wgpu generate --prompt "a red sneaker"` with no `--model` and no size: the built-in
/// model at 32×32, a red garment.
#[test]
fn generate_without_model_uses_the_builtin_one() {
    let dir = std::env::temp_dir().join(format!("sd-wgpu-default-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png_out = dir.join("sneaker.png");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
        .args(["generate", "--prompt", "a red sneaker", "--out"])
        .arg(&png_out)
        .env_remove("SD_WGPU_DEFAULT_MODEL")
        .status()
        .unwrap();
    assert!(status.success(), "sd-wgpu generate failed: {status}");
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_out).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    assert_eq!((frame.width, frame.height), (32, 32));
    let img: Vec<f32> = buf[..32 * 32 * 3]
        .iter()
        .map(|&b| f32::from(b) / 255.0)
        .collect();
    let voc = Vocabulary::load(&model_dir()).unwrap();
    let got = voc.garment_colour(&img).map(|c| voc.colours[c].clone());
    assert_eq!(got.as_deref(), Some("red"));
    let _ = std::fs::remove_dir_all(&dir);
}
