//! SDXL text-to-image against diffusers' StableDiffusionXLPipeline on a tiny random-weight
//! model (`tools/make_pipeline_fixture_sdxl.py`): two text encoders (penultimate states
//! concatenated, the second's pooled projection), the `text_time` added embedding with the
//! request's time ids, `force_zeros_for_empty_prompt`, Euler with SDXL's scheduler config,
//! the VAE's scaling factor 0.13025.

use crate::common::*;
use crate::pipeline::fixtures;
use sd_wgpu::pipeline::{Pipeline, Request};
use sd_wgpu::weights::{WeightDType, Weights};

fn golden() -> Weights {
    Weights::open_file(&fixtures().join("sdxl-tiny-golden.safetensors")).unwrap()
}

/// The fixture's "neg" case: prompt and negative prompt, 3 Euler steps, guidance 5, 32², the
/// golden initial latents.
pub(crate) fn neg_request(g: &Weights) -> Request {
    Request {
        prompt: "a red sneaker on a white table".into(),
        negative_prompt: "blurry".into(),
        steps: 3,
        guidance: 5.0,
        width: 32,
        height: 32,
        init_latents: Some(g.read_f32("latents", &[1, 4, 8, 8]).unwrap()),
        ..Request::default()
    }
}

#[test]
fn sdxl_pipeline_matches_diffusers() {
    let gpu = gpu();
    let pipe = Pipeline::load(gpu, &fixtures().join("sdxl-tiny"), WeightDType::Auto).unwrap();
    assert!(pipe.text_encoder_2.is_some() && pipe.force_zeros_for_empty_prompt);
    assert_eq!(pipe.default_size(), 32);
    let g = golden();
    let base = neg_request(&g);
    let cases = [
        ("neg", base.clone()),
        (
            "noneg",
            Request {
                negative_prompt: String::new(),
                ..base.clone()
            },
        ),
        (
            "sizes",
            Request {
                original_size: Some((64, 48)),
                crops_coords_top_left: (4, 8),
                target_size: Some((32, 32)),
                ..base.clone()
            },
        ),
        (
            "negsizes",
            Request {
                negative_micro: Some(sd_wgpu::pipeline::MicroConditioning {
                    original_size: (16, 24),
                    crops_coords_top_left: (2, 6),
                    target_size: (40, 36),
                }),
                ..base.clone()
            },
        ),
    ];
    for (name, req) in &cases {
        check_golden(&pipe, &g, name, req);
    }
    // The zero unconditional context is not the encoded empty prompt's.
    let encoded = pipe
        .generate(
            gpu,
            &Request {
                negative_prompt: String::new(),
                encode_empty_negative: true,
                ..base.clone()
            },
            &mut |_| true,
        )
        .unwrap();
    let want = g.read_f32("final_noneg", &[1, 4, 8, 8]).unwrap();
    assert!(rel_l2(&encoded.latents, &want) > 1e-3);
}

/// The samplers from SDXL's scheduler config (Euler ancestral, DPM++ 2M Karras, DDIM), seeded
/// (initial latents and step noise from the torch-compatible generator), and SDXL-Turbo's
/// way: Euler ancestral with trailing spacing at guidance 0, 1 and 2 steps, in one pass.
#[test]
fn sdxl_samplers_and_turbo_match_diffusers() {
    use sd_wgpu::schedulers::{SamplerKind, Spacing};
    let pipe = Pipeline::load(gpu(), &fixtures().join("sdxl-tiny"), WeightDType::Auto).unwrap();
    let g = golden();
    let seeded = |sampler| Request {
        init_latents: None,
        seed: 42,
        sampler: Some(sampler),
        ..neg_request(&g)
    };
    check_golden(&pipe, &g, "eulera", &seeded(SamplerKind::EulerAncestral));
    check_golden(
        &pipe,
        &g,
        "dpmk",
        &seeded(SamplerKind::DpmPP2M { karras: true }),
    );
    check_golden(&pipe, &g, "ddim", &seeded(SamplerKind::Ddim { eta: 0.0 }));
    for steps in [1, 2] {
        let turbo = Request {
            steps,
            guidance: 0.0,
            negative_prompt: String::new(),
            spacing: Some(Spacing::Trailing),
            ..seeded(SamplerKind::EulerAncestral)
        };
        assert!(!pipe.guided(&turbo));
        check_golden(&pipe, &g, &format!("turbo{steps}"), &turbo);
    }
}

/// SDXL base's single-file (SGM) layout, f16, with the folder's configs (`--config`; the
/// tiny model breaks SDXL's conventions, so inference refuses it and says so): diffusers'
/// `StableDiffusionXLPipeline.from_single_file` image for the "neg" case, and the folder's
/// final latents (the file holds exactly the folder's weights).
#[test]
fn sdxl_single_file_matches_diffusers_from_single_file() {
    use sd_wgpu::pipeline::LoadOptions;
    let gpu = gpu();
    let file = fixtures().join("sdxl-tiny.safetensors");
    let e = Pipeline::load(gpu, &file, WeightDType::Auto)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--config"), "{e}");
    let opts = LoadOptions {
        config: Some(fixtures().join("sdxl-tiny")),
        ..LoadOptions::default()
    };
    let pipe = Pipeline::load_with(gpu, &file, &opts).unwrap();
    assert!(pipe.text_encoder_2.is_some());
    let g = golden();
    let out = pipe.generate(gpu, &neg_request(&g), &mut |_| true).unwrap();
    let sf = Weights::open_file(&fixtures().join("single-file-golden.safetensors")).unwrap();
    let img = sf.read_f32("sdxl_image", &[1, 32, 32, 3]).unwrap();
    let want = g.read_f32("final_neg", &[1, 4, 8, 8]).unwrap();
    let (e, p) = (rel_l2(&out.latents, &want), psnr(&out.image, &img));
    eprintln!("sdxl single file: final latents relative L2 {e:.2e}, image {p:.1} dB");
    assert!(e <= 1e-3 && p >= 40.0, "{e} {p}");
    // SD 1's configs do not describe the file: a clear error, not a half-loaded model.
    let wrong = LoadOptions {
        config: Some(fixtures().join("sd1-tiny")),
        ..LoadOptions::default()
    };
    let e = Pipeline::load_with(gpu, &file, &wrong)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("text encoder"), "{e}");
}

/// `--vae`: a separate VAE as diffusers' `vae=` argument takes it — a folder with its own
/// config (another architecture, scaling factor 0.2, `force_upcast` false: both honoured) and
/// one original-layout file of the model's VAE architecture; anything else is refused.
#[test]
fn sdxl_with_a_separate_vae_matches_diffusers() {
    use sd_wgpu::pipeline::LoadOptions;
    let gpu = gpu();
    let g = golden();
    let vg = Weights::open_file(&fixtures().join("vae-golden.safetensors")).unwrap();
    for (name, vae) in [("folder", "vae-small"), ("file", "vae-ldm.safetensors")] {
        let opts = LoadOptions {
            vae: Some(fixtures().join(vae)),
            ..LoadOptions::default()
        };
        let pipe = Pipeline::load_with(gpu, &fixtures().join("sdxl-tiny"), &opts).unwrap();
        if name == "folder" {
            assert_eq!(pipe.vae.config.scaling_factor, 0.2);
            assert!(!pipe.vae.config.force_upcast);
        }
        let out = pipe.generate(gpu, &neg_request(&g), &mut |_| true).unwrap();
        let img = vg
            .read_f32(&format!("image_{name}"), &[1, 32, 32, 3])
            .unwrap();
        let p = psnr(&out.image, &img);
        eprintln!("sdxl with the {name} VAE: image {p:.1} dB");
        assert!(p >= 40.0, "{name}: {p} dB");
    }
    let bad = LoadOptions {
        vae: Some(fixtures().join("sd1-tiny/unet/diffusion_pytorch_model.safetensors")),
        ..LoadOptions::default()
    };
    let e = Pipeline::load_with(gpu, &fixtures().join("sdxl-tiny"), &bad)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a VAE"), "{e}");
}

/// SDXL image-to-image and inpainting against diffusers' `StableDiffusionXLImg2ImgPipeline` /
/// `StableDiffusionXLInpaintPipeline` (`tools/make_sdxl_img2img_fixture.py`; SDXL base has no
/// aesthetic-score ids): the posterior sample, `add_noise` at the step `strength` selects and
/// the micro-conditioning of the image's size, seed 42; the 4-channel U-Net with the known
/// region blended back, and a 9-channel SDXL inpainting U-Net.
#[test]
fn sdxl_img2img_and_inpainting_match_diffusers() {
    use sd_wgpu::models::unet::UNetConfig;
    use sd_wgpu::pipeline::InitImage;
    use sd_wgpu::schedulers::SamplerKind;
    let gpu = gpu();
    let root = fixtures();
    let mut pipe = Pipeline::load(gpu, &root.join("sdxl-tiny"), WeightDType::Auto).unwrap();
    let g = Weights::open_file(&root.join("sdxl-img2img-golden.safetensors")).unwrap();
    let (_, _, rgb) = sd_wgpu::imageio::read_image_rgb(&root.join("img2img-input.png")).unwrap();
    let (_, _, m) = sd_wgpu::imageio::read_image_rgb(&root.join("inpaint-mask.png")).unwrap();
    let mask: Vec<f32> = m.chunks_exact(3).map(|p| p[0]).collect();
    let req = |sampler, steps, strength, mask: Option<&Vec<f32>>| Request {
        sampler: Some(sampler),
        steps,
        seed: 42,
        init_latents: None,
        init_image: Some(InitImage {
            mask: mask.cloned(),
            ..InitImage::new(rgb.clone(), strength)
        }),
        ..neg_request(&golden())
    };
    let run = |pipe: &Pipeline, name: &str, req: &Request| {
        let out = pipe.generate(gpu, req, &mut |_| true).unwrap();
        let want = g.read_f32(name, &[1, 32, 32, 3]).unwrap();
        let p = psnr(&out.image, &want);
        eprintln!("sdxl {name}: image {p:.1} dB");
        assert!(p >= 40.0, "{name}: {p} dB");
    };
    let dpmk = SamplerKind::DpmPP2M { karras: true };
    run(
        &pipe,
        "img_euler_s06",
        &req(SamplerKind::Euler, 4, 0.6, None),
    );
    run(&pipe, "img_dpmk_s08", &req(dpmk, 5, 0.8, None));
    run(
        &pipe,
        "inp_s075",
        &req(SamplerKind::Euler, 4, 0.75, Some(&mask)),
    );
    run(
        &pipe,
        "inp_s1",
        &req(SamplerKind::Euler, 4, 1.0, Some(&mask)),
    );
    let dir = root.join("sdxl-inpaint-unet");
    let cfg = UNetConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(cfg.in_channels, 9);
    let w = Weights::open_file(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    pipe.replace_unet(gpu, w, &cfg, WeightDType::Auto).unwrap();
    run(
        &pipe,
        "inp9_s1",
        &req(SamplerKind::Euler, 4, 1.0, Some(&mask)),
    );
}

/// Weighted and long prompts on both SDXL encoders (the web UI's rule per encoder, pooled
/// output from the first chunk, unweighted; `tools/make_sdxl_prompt_fixture.py`, the
/// embeddings then through diffusers' SDXL pipeline).
#[test]
fn sdxl_weighted_and_long_prompts_match_the_reference() {
    let pipe = Pipeline::load(gpu(), &fixtures().join("sdxl-tiny"), WeightDType::Auto).unwrap();
    let g = Weights::open_file(&fixtures().join("sdxl-prompt-golden.safetensors")).unwrap();
    let long = std::fs::read_to_string(fixtures().join("prompt-long.txt")).unwrap();
    let base = neg_request(&golden());
    for (name, prompt, negative) in [
        (
            "weighted",
            "a (red:1.3) sneaker on a [white] table",
            "((blurry))",
        ),
        ("long", long.as_str(), "blurry"),
    ] {
        let req = Request {
            prompt: prompt.into(),
            negative_prompt: negative.into(),
            ..base.clone()
        };
        check_golden(&pipe, &g, name, &req);
    }
}

/// The tiny SDXL refiner as a diffusers folder (a temporary one per `tag`):
/// `tests/fixtures/pipeline/sdxl-refiner-tiny`'s own parts with the base's `text_encoder_2`,
/// `tokenizer_2` and `vae` copied in (the fixture keeps one copy of them).
fn refiner_folder(tag: &str) -> std::path::PathBuf {
    fn copy(from: &std::path::Path, to: &std::path::Path) {
        if from.is_dir() {
            std::fs::create_dir_all(to).unwrap();
            for e in std::fs::read_dir(from).unwrap() {
                let e = e.unwrap();
                copy(&e.path(), &to.join(e.file_name()));
            }
        } else {
            std::fs::copy(from, to).unwrap();
        }
    }
    let dir = std::env::temp_dir().join(format!("sd-wgpu-refiner-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy(&fixtures().join("sdxl-refiner-tiny"), &dir);
    for part in ["text_encoder_2", "tokenizer_2", "vae"] {
        copy(&fixtures().join("sdxl-tiny").join(part), &dir.join(part));
    }
    dir
}

/// SDXL base + refiner against diffusers' ensemble (`tools/make_sdxl_refiner_fixture.py`):
/// the base's 6 Euler steps cut at 0.7 (`denoising_end`: 4 run), the refiner — its one text
/// encoder, five time ids with aesthetic scores, no zeros for the negative prompt — from
/// those latents (`denoising_start`: 2 run); and the refiner alone as image-to-image with
/// other aesthetic scores.
#[test]
fn sdxl_base_and_refiner_match_diffusers() {
    use sd_wgpu::pipeline::InitImage;
    let gpu = gpu();
    let base = Pipeline::load(gpu, &fixtures().join("sdxl-tiny"), WeightDType::Auto).unwrap();
    let dir = refiner_folder("lib");
    let refiner = Pipeline::load(gpu, &dir, WeightDType::Auto).unwrap();
    assert!(refiner.requires_aesthetics_score && refiner.is_xl());
    assert!(refiner.text_encoder_2.is_none() && !refiner.force_zeros_for_empty_prompt);
    let g = Weights::open_file(&fixtures().join("sdxl-refiner-golden.safetensors")).unwrap();
    let req = Request {
        steps: 6,
        ..neg_request(&golden())
    };
    let mut steps = Vec::new();
    let out = base
        .generate_refined(gpu, &refiner, &req, 0.7, &mut |p| {
            steps.push((p.step, p.steps));
            true
        })
        .unwrap();
    assert_eq!(out.steps_run, 6);
    assert_eq!(steps.last(), Some(&(2, 2)), "{steps:?}");
    let want = g.read_f32("final_ensemble", &[1, 4, 8, 8]).unwrap();
    let img = g.read_f32("image_ensemble", &[1, 32, 32, 3]).unwrap();
    let (e, p) = (rel_l2(&out.latents, &want), psnr(&out.image, &img));
    eprintln!("sdxl base + refiner: final latents relative L2 {e:.2e}, image {p:.1} dB");
    assert!(e <= 1e-3 && p >= 40.0, "{e} {p}");
    // The refiner alone, as image-to-image.
    let (_, _, rgb) =
        sd_wgpu::imageio::read_image_rgb(&fixtures().join("img2img-input.png")).unwrap();
    let img2img = Request {
        steps: 4,
        seed: 42,
        init_latents: None,
        init_image: Some(InitImage::new(rgb, 0.5)),
        aesthetic_score: 7.0,
        negative_aesthetic_score: 2.0,
        ..req.clone()
    };
    let out = refiner.generate(gpu, &img2img, &mut |_| true).unwrap();
    let want = g.read_f32("image_refine_img", &[1, 32, 32, 3]).unwrap();
    let p = psnr(&out.image, &want);
    eprintln!("sdxl refiner image-to-image: {p:.1} dB");
    assert!(p >= 40.0, "{p} dB");
    // Out-of-range hand-overs are request errors.
    let e = base
        .generate_refined(gpu, &refiner, &req, 1.0, &mut |_| true)
        .err()
        .unwrap();
    assert!(e.to_string().contains("refiner_start"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The CLI's `--refiner` / `--refiner-start`: the ensemble's PNG within one level of
/// diffusers' image.
#[test]
fn sdxl_refiner_through_the_cli() {
    let dir = refiner_folder("cli");
    let work = std::env::temp_dir().join(format!("sd-wgpu-cli-refiner-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let (init, png) = (work.join("init.npy"), work.join("out.png"));
    let latents = golden().read_f32("latents", &[1, 4, 8, 8]).unwrap();
    sd_wgpu::npy::write_f32(&init, &[1, 4, 8, 8], &latents).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
        .args(["generate", "--model"])
        .arg(fixtures().join("sdxl-tiny"))
        .arg("--refiner")
        .arg(&dir)
        .args(["--refiner-start", "0.7", "--steps", "6", "--guidance", "5"])
        .args(["--prompt", "a red sneaker on a white table"])
        .args([
            "--negative-prompt",
            "blurry",
            "--width",
            "32",
            "--height",
            "32",
        ])
        .arg("--init-latents")
        .arg(&init)
        .arg("--out")
        .arg(&png)
        .status()
        .unwrap();
    assert!(status.success(), "sd-wgpu generate failed: {status}");
    let (_, _, got) = crate::pipeline::read_png_rgb(&png);
    let g = Weights::open_file(&fixtures().join("sdxl-refiner-golden.safetensors")).unwrap();
    let want: Vec<f32> = g
        .read_f32("image_ensemble", &[1, 32, 32, 3])
        .unwrap()
        .iter()
        .map(|v| (v * 255.0).round())
        .collect();
    check("cli base + refiner png (0..255)", &got, &want, 1.0, 0.0);
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SDXL's VAE runs in f32 activations (`force_upcast`, as diffusers' SDXL pipelines upcast
/// it) even on a device that keeps f16 activations for f16 weights; SD 1.x's does not (its
/// pipelines ignore the flag). The f16-activation SDXL run still matches diffusers' f32 one.
#[test]
fn sdxl_vae_is_upcast_and_f16_runs_match() {
    use sd_wgpu::{DType, Recorder};
    let own = sd_wgpu::Gpu::with_options(&sd_wgpu::GpuOptions {
        f16_activations: Some(true),
        ..Default::default()
    })
    .expect("GPU tests need a wgpu adapter");
    let xl = Pipeline::load(&own, &fixtures().join("sdxl-tiny"), WeightDType::F16).unwrap();
    let sd = Pipeline::load(&own, &fixtures().join("sd1-tiny"), WeightDType::F16).unwrap();
    assert!(xl.vae.config.force_upcast && !sd.vae.config.force_upcast);
    let rec = Recorder::new(&own);
    assert_eq!(xl.vae.config.activation_dtype(&rec, DType::F16), DType::F32);
    assert_eq!(sd.vae.config.activation_dtype(&rec, DType::F16), DType::F16);
    drop(rec);
    let g = golden();
    let req = neg_request(&g);
    let out = xl.generate(&own, &req, &mut |_| true).unwrap();
    let p = psnr(
        &out.image,
        &g.read_f32("image_neg", &[1, 32, 32, 3]).unwrap(),
    );
    eprintln!("sdxl f16 activations (VAE in f32): image {p:.1} dB against diffusers f32");
    assert!(p >= 30.0, "{p} dB");
}
