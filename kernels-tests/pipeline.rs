//! Text-to-image end to end against diffusers' StableDiffusionPipeline on a tiny
//! random-weight pipeline (`tests/fixtures/pipeline/`, made by
//! `tools/make_pipeline_fixture.py`): same prompt, negative prompt and initial latents,
//! 4 DDIM steps, guidance 7.5.

use crate::common::*;
use sd_wgpu::pipeline::{Pipeline, Request};
use sd_wgpu::weights::{WeightDType, Weights};
use std::path::PathBuf;

/// The pipeline fixtures' folder.
pub(crate) fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline")
}

/// The tiny SD 1-like pipeline (f32 weights).
fn sd1_tiny(gpu: &sd_wgpu::Gpu) -> Pipeline {
    Pipeline::load(gpu, &fixtures().join("sd1-tiny"), WeightDType::Auto).unwrap()
}

/// The reference prompt pair of the SD 1-like fixtures at 32×32 with guidance 7.5.
pub(crate) fn sneaker(steps: usize) -> Request {
    Request {
        prompt: "a red sneaker on a white table".into(),
        negative_prompt: "blurry".into(),
        steps,
        guidance: 7.5,
        width: 32,
        height: 32,
        ..Request::default()
    }
}

#[test]
fn txt2img_matches_diffusers_end_to_end() {
    let gpu = gpu();
    let root = fixtures();
    let pipe = sd1_tiny(gpu);
    let g = Weights::open_file(&root.join("sd1-tiny-golden.safetensors")).unwrap();
    let req = Request {
        init_latents: Some(g.read_f32("latents", &[1, 4, 8, 8]).unwrap()),
        ..sneaker(4)
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
        width: 34,
        ..req.clone()
    };
    assert!(
        pipe.generate(gpu, &bad, &mut |_| true)
            .err()
            .unwrap()
            .to_string()
            .contains("multiple of 4")
    );
}

/// The `generate` command end to end: same run through the binary, PNG pixels and text
/// chunk, `--init-latents` / `--latents-out` .npy files.
#[test]
fn generate_cli_writes_the_reference_image_and_latents() {
    let root = fixtures();
    let g = Weights::open_file(&root.join("sd1-tiny-golden.safetensors")).unwrap();
    let dir = std::env::temp_dir().join(format!("sd-wgpu-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (init, lat_out, png_out) = (
        dir.join("init.npy"),
        dir.join("final.npy"),
        dir.join("out.png"),
    );
    sd_wgpu::npy::write_f32(
        &init,
        &[1, 4, 8, 8],
        &g.read_f32("latents", &[1, 4, 8, 8]).unwrap(),
    )
    .unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
        .args(["generate", "--model"])
        .arg(root.join("sd1-tiny"))
        .args([
            "--prompt",
            "a red sneaker on a white table",
            "--negative-prompt",
            "blurry",
            "--steps",
            "4",
        ])
        .args([
            "--guidance",
            "7.5",
            "--sampler",
            "ddim",
            "--width",
            "32",
            "--height",
            "32",
            "--seed",
            "7",
        ])
        .arg("--init-latents")
        .arg(&init)
        .arg("--latents-out")
        .arg(&lat_out)
        .arg("--out")
        .arg(&png_out)
        .status()
        .unwrap();
    assert!(status.success(), "sd-wgpu generate failed: {status}");
    let (shape, latents) = sd_wgpu::npy::read_f32(&lat_out).unwrap();
    assert_eq!(shape, [1, 4, 8, 8]);
    check(
        "cli --latents-out",
        &latents,
        &g.read_f32("final_latents", &[1, 4, 8, 8]).unwrap(),
        1e-3,
        1e-3,
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_out).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    assert_eq!(
        (frame.width, frame.height, frame.color_type),
        (32, 32, png::ColorType::Rgb)
    );
    let want: Vec<f32> = g
        .read_f32("image", &[1, 32, 32, 3])
        .unwrap()
        .iter()
        .map(|v| (v * 255.0).round())
        .collect();
    let got: Vec<f32> = buf[..32 * 32 * 3].iter().map(|&b| f32::from(b)).collect();
    check("cli png pixels (0..255)", &got, &want, 1.0, 0.0);
    let params = png_parameters(&png_out);
    // AUTOMATIC1111's infotext: the model by name and hash, never by its directory.
    let hash =
        sd_wgpu::files::sha256_hex(&root.join("sd1-tiny/unet/diffusion_pytorch_model.safetensors"))
            .unwrap();
    assert!(
        params.starts_with("a red sneaker on a white table\nNegative prompt: blurry\nSteps: 4, ")
            && params.contains("Sampler: DDIM, CFG scale: 7.5, Seed: 7, Size: 32x32, ")
            && params.contains(&format!("Model hash: {}, Model: sd1-tiny, ", &hash[..10]))
            && params.contains("Clip skip: 1")
            && !params.contains(&*root.to_string_lossy()),
        "{params}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A seed alone (no initial latents) with an ancestral sampler reproduces diffusers with
/// `generator=torch.Generator("cpu").manual_seed(42)`: initial latents and per-step noise.
#[test]
fn seeded_euler_ancestral_matches_diffusers() {
    let gpu = gpu();
    let root = fixtures();
    let pipe = sd1_tiny(gpu);
    let g = Weights::open_file(&root.join("sd1-tiny-golden.safetensors")).unwrap();
    let req = Request {
        prompt: "a red sneaker on a white table".into(),
        steps: 3,
        guidance: 5.0,
        sampler: Some(sd_wgpu::schedulers::SamplerKind::EulerAncestral),
        width: 32,
        height: 32,
        seed: 42,
        ..Request::default()
    };
    let out = pipe.generate(gpu, &req, &mut |_| true).unwrap();
    let want = g.read_f32("image_seed42_euler_a", &[1, 32, 32, 3]).unwrap();
    check("seed 42 euler-a image", &out.image, &want, 1e-3, 1e-3);
    let p = psnr(&out.image, &want);
    eprintln!("seeded euler-a PSNR vs diffusers: {p:.1} dB");
    assert!(p >= 40.0, "PSNR {p:.1} dB");
}

/// The full-size SD 1.5 architecture (random weights) at 256², 2 DDIM steps, against
/// diffusers. Heavy: run on demand after `tools/make_full_size_sd15.py DIR`:
/// `SD_WGPU_FULL_SIZE_DIR=DIR cargo test --release --test kernels -- --ignored full_size --nocapture`.
#[test]
#[ignore = "needs tools/make_full_size_sd15.py output (~4.3 GB) and minutes of GPU time"]
fn full_size_sd15_matches_diffusers() {
    let dir =
        PathBuf::from(std::env::var("SD_WGPU_FULL_SIZE_DIR").expect("set SD_WGPU_FULL_SIZE_DIR"));
    full_size_run(&dir, &dir.join("model"));
}

/// The same model as one single-file checkpoint (made by `tools/make_single_file_fixtures.py
/// convert DIR/model DIR/sd15.safetensors`), architecture inferred from the tensor shapes
/// alone (no config), and DDIM chosen over the inferred PNDM default.
#[test]
#[ignore = "needs DIR/sd15.safetensors (~4.3 GB) and minutes of GPU time"]
fn full_size_sd15_single_file_inferred_matches_diffusers() {
    let dir =
        PathBuf::from(std::env::var("SD_WGPU_FULL_SIZE_DIR").expect("set SD_WGPU_FULL_SIZE_DIR"));
    full_size_run(&dir, &dir.join("sd15.safetensors"));
}

fn full_size_run(dir: &std::path::Path, model: &std::path::Path) {
    let gpu = gpu();
    let t0 = std::time::Instant::now();
    let pipe = Pipeline::load(gpu, model, WeightDType::Auto).unwrap();
    eprintln!("architecture: {}", pipe.architecture);
    eprintln!(
        "loaded in {:.1} s; {:.0} MiB on the GPU",
        t0.elapsed().as_secs_f64(),
        gpu.memory_stats().allocated as f64 / 1048576.0
    );
    let g = Weights::open_file(&dir.join("golden.safetensors")).unwrap();
    let req = Request {
        prompt: "a photograph of an astronaut riding a horse".into(),
        steps: 2,
        guidance: 7.5,
        width: 256,
        height: 256,
        init_latents: Some(g.read_f32("latents", &[1, 4, 32, 32]).unwrap()),
        sampler: Some(sd_wgpu::schedulers::SamplerKind::Ddim { eta: 0.0 }),
        ..Request::default()
    };
    // The estimate must be the real peak at full size too (run these tests one at a time:
    // they share the device's pool).
    gpu.trim_pool();
    let t1 = std::time::Instant::now();
    let est = pipe.memory_estimate(gpu, &req).unwrap();
    let est_time = t1.elapsed();
    let before = gpu.memory_stats();
    gpu.reset_peak_memory();
    let out = pipe
        .generate(gpu, &req, &mut |p| {
            eprintln!("step {}/{} done", p.step, p.steps);
            true
        })
        .unwrap();
    let real = gpu.memory_stats().peak - before.allocated;
    eprintln!(
        "request memory: estimated {:.1} MiB in {:.0} ms, real peak {:.1} MiB",
        est.request as f64 / 1048576.0,
        est_time.as_secs_f64() * 1e3,
        real as f64 / 1048576.0
    );
    assert_eq!(est.request, real, "memory estimate vs the real peak");
    let t = out.timings;
    eprintln!(
        "text encoding {:.2} s, sampling {:.1} s ({:.1} s/step, U-Net batch 2 at 32x32 latents), decoding {:.1} s; peak GPU memory {:.0} MiB",
        t.text_encoding.as_secs_f64(),
        t.sampling.as_secs_f64(),
        t.sampling.as_secs_f64() / 2.0,
        t.decoding.as_secs_f64(),
        gpu.memory_stats().peak as f64 / 1048576.0
    );
    check(
        "full-size final latents",
        &out.latents,
        &g.read_f32("final_latents", &[1, 4, 32, 32]).unwrap(),
        1e-3,
        1e-3,
    );
    let want = g.read_f32("image", &[1, 256, 256, 3]).unwrap();
    let p = psnr(&out.image, &want);
    eprintln!("full-size SD 1.5 txt2img PSNR vs diffusers: {p:.1} dB");
    assert!(p >= 40.0, "PSNR {p:.1} dB");
}

/// An SD 2.x-style pipeline end to end (v-prediction, trailing spacing, linear projections,
/// per-block heads, GELU text encoder, "!" padding with a "!!" in the prompt), with guidance
/// and with guidance 1.0 (the unconditional pass skipped).
#[test]
fn sd2_style_txt2img_matches_diffusers() {
    let gpu = gpu();
    let root = fixtures();
    let pipe = Pipeline::load(gpu, &root.join("sd2-tiny"), WeightDType::Auto).unwrap();
    assert_eq!(
        pipe.scheduler.prediction,
        sd_wgpu::schedulers::Prediction::VPrediction
    );
    let g = Weights::open_file(&root.join("sd2-tiny-golden.safetensors")).unwrap();
    let base = Request {
        prompt: "a blue dress!! on a mannequin".into(),
        width: 32,
        height: 32,
        init_latents: Some(g.read_f32("latents", &[1, 4, 8, 8]).unwrap()),
        ..Request::default()
    };
    for (name, req) in [
        (
            "image_cfg",
            Request {
                negative_prompt: "low quality".into(),
                steps: 4,
                guidance: 7.5,
                ..base.clone()
            },
        ),
        (
            "image_noguide",
            Request {
                steps: 3,
                guidance: 1.0,
                ..base.clone()
            },
        ),
    ] {
        let out = pipe.generate(gpu, &req, &mut |_| true).unwrap();
        let want = g.read_f32(name, &[1, 32, 32, 3]).unwrap();
        check(&format!("sd2-style {name}"), &out.image, &want, 1e-3, 1e-3);
        let p = psnr(&out.image, &want);
        eprintln!("sd2-style {name} PSNR vs diffusers: {p:.1} dB");
        assert!(p >= 40.0, "{name}: PSNR {p:.1} dB");
    }
}

/// Reads an 8-bit RGB PNG as 0..255 values.
fn read_png_rgb(path: &std::path::Path) -> (u32, u32, Vec<f32>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    assert_eq!(frame.color_type, png::ColorType::Rgb);
    let n = (frame.width * frame.height * 3) as usize;
    (
        frame.width,
        frame.height,
        buf[..n].iter().map(|&b| f32::from(b)).collect(),
    )
}

/// The SD 1.x single-file layout (`model.diffusion_model.*`, `first_stage_model.*`,
/// `cond_stage_model.transformer.*`), stored f16, with the architecture from a diffusers
/// config folder (`--config`), against diffusers' `from_single_file(config=…)` on the same
/// file. The weights stay f16 on the GPU.
#[test]
fn single_file_sd1_f16_matches_diffusers_from_single_file() {
    use sd_wgpu::models::arch::ArchSource;
    use sd_wgpu::pipeline::LoadOptions;
    let gpu = gpu();
    let root = fixtures();
    let file = root.join("sd1-tiny.safetensors");
    // The tiny model breaks the SD conventions (4 heads, 32 wide): inference refuses it and
    // says what to do.
    let e = Pipeline::load(gpu, &file, WeightDType::Auto)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("--config") && e.contains("sd1-tiny.safetensors"),
        "{e}"
    );
    let opts = LoadOptions {
        config: Some(root.join("sd1-tiny")),
        ..LoadOptions::default()
    };
    let pipe = Pipeline::load_with(gpu, &file, &opts).unwrap();
    assert_eq!(pipe.architecture, ArchSource::Folder(root.join("sd1-tiny")));
    assert_eq!(pipe.unet.conv_in.weight.dtype(), sd_wgpu::DType::F16);
    let g = Weights::open_file(&root.join("sd1-tiny-golden.safetensors")).unwrap();
    let golden = Weights::open_file(&root.join("single-file-golden.safetensors")).unwrap();
    let req = Request {
        init_latents: Some(g.read_f32("latents", &[1, 4, 8, 8]).unwrap()),
        ..sneaker(4)
    };
    let out = pipe.generate(gpu, &req, &mut |_| true).unwrap();
    let want = golden.read_f32("sd1_image", &[1, 32, 32, 3]).unwrap();
    check("single-file sd1 (f16)", &out.image, &want, 1e-3, 1e-3);
    let p = psnr(&out.image, &want);
    eprintln!("single-file SD1 f16 PSNR vs diffusers: {p:.1} dB");
    assert!(p >= 40.0, "PSNR {p:.1} dB");
}

/// The SD 2.x single-file layout with the OpenCLIP text tower (fused `in_proj_weight`, an
/// extra unused last resblock), stored bf16, through the CLI with `--config`.
#[test]
fn single_file_sd2_open_clip_through_the_cli() {
    let root = fixtures();
    let g = Weights::open_file(&root.join("sd2-tiny-golden.safetensors")).unwrap();
    let golden = Weights::open_file(&root.join("single-file-golden.safetensors")).unwrap();
    let dir = std::env::temp_dir().join(format!("sd-wgpu-cli-sf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (init, png_out) = (dir.join("init.npy"), dir.join("out.png"));
    sd_wgpu::npy::write_f32(
        &init,
        &[1, 4, 8, 8],
        &g.read_f32("latents", &[1, 4, 8, 8]).unwrap(),
    )
    .unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
        .args(["generate", "--model"])
        .arg(root.join("sd2-tiny.safetensors"))
        .arg("--config")
        .arg(root.join("sd2-tiny"))
        .args(["--prompt", "a blue dress!! on a mannequin"])
        .args(["--negative-prompt", "low quality", "--steps", "4"])
        .args(["--width", "32", "--height", "32", "--init-latents"])
        .arg(&init)
        .arg("--out")
        .arg(&png_out)
        .status()
        .unwrap();
    assert!(status.success(), "sd-wgpu generate failed: {status}");
    let (w, h, got) = read_png_rgb(&png_out);
    assert_eq!((w, h), (32, 32));
    let want: Vec<f32> = golden
        .read_f32("sd2_image", &[1, 32, 32, 3])
        .unwrap()
        .iter()
        .map(|v| (v * 255.0).round())
        .collect();
    check("cli single-file sd2 png (0..255)", &got, &want, 1.0, 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Image-to-image against diffusers' `StableDiffusionImg2ImgPipeline` (tiny SD 1-like model,
/// `tools/make_img2img_fixture.py`): the init image encoded to a posterior sample, noised with
/// the scheduler's `add_noise` at the step `strength` selects, then the remaining steps, all
/// random draws from `torch.Generator("cpu").manual_seed(42)` in diffusers' order. DDIM
/// (strength 0.6 of 4 steps: 2 run, from t = 251), PNDM (its extra PLMS step included),
/// Euler-ancestral (step noise) and DPM++ 2M.
#[test]
fn img2img_matches_diffusers() {
    use sd_wgpu::pipeline::InitImage;
    use sd_wgpu::schedulers::SamplerKind;
    let gpu = gpu();
    let root = fixtures();
    let pipe = sd1_tiny(gpu);
    let g = Weights::open_file(&root.join("img2img-golden.safetensors")).unwrap();
    let (w, h, rgb) = sd_wgpu::imageio::read_image_rgb(&root.join("img2img-input.png")).unwrap();
    assert_eq!((w, h), (32, 32));
    for (name, kind, strength, steps, runs) in [
        ("ddim_s06", SamplerKind::Ddim { eta: 0.0 }, 0.6, 4, 2),
        ("pndm_s075", SamplerKind::Pndm, 0.75, 4, 4),
        ("euler_a_s05", SamplerKind::EulerAncestral, 0.5, 6, 3),
        ("dpm_s08", SamplerKind::DpmPP2M { karras: false }, 0.8, 5, 4),
    ] {
        let req = Request {
            sampler: Some(kind),
            seed: 42,
            init_image: Some(InitImage::new(rgb.clone(), strength)),
            ..sneaker(steps)
        };
        let mut seen = 0;
        let out = pipe
            .generate(gpu, &req, &mut |p| {
                seen = p.steps;
                true
            })
            .unwrap();
        assert_eq!(seen, runs, "{name}: steps run");
        let want = g.read_f32(name, &[1, 32, 32, 3]).unwrap();
        check(&format!("img2img {name}"), &out.image, &want, 1e-3, 1e-3);
        let p = psnr(&out.image, &want);
        eprintln!("img2img {name} PSNR vs diffusers: {p:.1} dB");
        assert!(p >= 40.0, "{name}: PSNR {p:.1} dB");
    }
    // A batch of 2 with an init image (encoded once, repeated; noise and Euler-a step noise
    // drawn for both), against diffusers' num_images_per_prompt=2.
    let batch = Request {
        sampler: Some(SamplerKind::EulerAncestral),
        seed: 42,
        batch_size: 2,
        init_image: Some(InitImage::new(rgb.clone(), 0.5)),
        ..sneaker(6)
    };
    let out = pipe.generate(gpu, &batch, &mut |_| true).unwrap();
    let want = g
        .read_f32("img2img_batch2_euler_a", &[2, 32, 32, 3])
        .unwrap();
    check(
        "img2img batch of 2 (euler-a)",
        &out.image,
        &want,
        1e-3,
        1e-3,
    );
    let p = psnr(&out.image, &want);
    eprintln!("img2img batch of 2 PSNR vs diffusers: {p:.1} dB");
    assert!(p >= 40.0);
    // Strength outside [0, 1] is a typed error.
    let bad = Request {
        width: 32,
        height: 32,
        init_image: Some(InitImage::new(rgb, 1.5)),
        ..Request::default()
    };
    let e = pipe.generate(gpu, &bad, &mut |_| true).err().unwrap();
    assert!(
        e.to_string().contains("`init_image.strength` is 1.5"),
        "{e}"
    );
}

/// Text-to-image with PNDM, SD 1.5's default sampler: its PLMS schedule repeats one timestep,
/// so 5 steps are 6 U-Net calls, every one of which must run (as diffusers' loop over
/// `scheduler.timesteps` does).
#[test]
fn txt2img_pndm_runs_every_plms_timestep_like_diffusers() {
    let gpu = gpu();
    let root = fixtures();
    let pipe = sd1_tiny(gpu);
    let g = Weights::open_file(&root.join("img2img-golden.safetensors")).unwrap();
    let req = Request {
        sampler: Some(sd_wgpu::schedulers::SamplerKind::Pndm),
        init_latents: Some(g.read_f32("latents_pndm", &[1, 4, 8, 8]).unwrap()),
        ..sneaker(5)
    };
    let mut calls = 0;
    let out = pipe
        .generate(gpu, &req, &mut |_| {
            calls += 1;
            true
        })
        .unwrap();
    assert_eq!(calls, 6);
    let want = g.read_f32("txt2img_pndm", &[1, 32, 32, 3]).unwrap();
    check("txt2img pndm", &out.image, &want, 1e-3, 1e-3);
    let p = psnr(&out.image, &want);
    eprintln!("txt2img PNDM PSNR vs diffusers: {p:.1} dB");
    assert!(p >= 40.0, "PSNR {p:.1} dB");
}

/// `generate --init-image --strength` through the CLI: the DDIM case of
/// `img2img_matches_diffusers` (seed 42), PNG pixels within 1 of diffusers'; an init image
/// whose size is no multiple of 8 is cropped with a warning; a strength outside [0, 1] fails.
#[test]
fn img2img_through_the_cli() {
    let root = fixtures();
    let g = Weights::open_file(&root.join("img2img-golden.safetensors")).unwrap();
    let dir = std::env::temp_dir().join(format!("sd-wgpu-cli-i2i-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png_out = dir.join("out.png");
    let run = |image: &std::path::Path, strength: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
            .args(["generate", "--model"])
            .arg(root.join("sd1-tiny"))
            .args(["--prompt", "a red sneaker on a white table"])
            .args([
                "--negative-prompt",
                "blurry",
                "--steps",
                "4",
                "--seed",
                "42",
            ])
            .args(["--sampler", "ddim", "--strength", strength, "--init-image"])
            .arg(image)
            .arg("--out")
            .arg(&png_out)
            .arg("--overwrite")
            .output()
            .unwrap()
    };
    let out = run(&root.join("img2img-input.png"), "0.6");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (w, h, got) = read_png_rgb(&png_out);
    assert_eq!((w, h), (32, 32));
    let want: Vec<f32> = g
        .read_f32("ddim_s06", &[1, 32, 32, 3])
        .unwrap()
        .iter()
        .map(|v| (v * 255.0).round())
        .collect();
    check("cli img2img png (0..255)", &got, &want, 1.0, 0.0);
    // 37×35 px: cropped to 36×32 (the tiny VAE's factor is 4; SD's 8) with a message.
    let (_, _, rgb) = sd_wgpu::imageio::read_image_rgb(&root.join("img2img-input.png")).unwrap();
    let mut big = vec![0.5f32; 37 * 35 * 3];
    for y in 0..32 {
        big[(y * 37) * 3..(y * 37 + 32) * 3].copy_from_slice(&rgb[y * 32 * 3..(y + 1) * 32 * 3]);
    }
    let odd = dir.join("odd.png");
    sd_wgpu::imageio::write_png(&odd, &big, 37, 35, &[]).unwrap();
    let out = run(&odd, "0.6");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cropped 37x35 to 36x32"), "{err}");
    let out = run(&root.join("img2img-input.png"), "1.5");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`init_image.strength` is 1.5"), "{err}");
    // Not an image.
    let out = run(&root.join("sd1-tiny/model_index.json"), "0.5");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a readable image"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Prompt weighting and long prompts against a reference built from transformers'
/// CLIPTextModel and AUTOMATIC1111's rule (`tools/make_prompt_fixture.py`): per-token weights,
/// mean restored per chunk, 75-token chunks concatenated; a plain prompt in weighting syntax
/// with weight 1 gives exactly the plain encoding; a two-chunk context runs through the U-Net.
#[test]
fn weighted_and_long_prompts_match_the_reference() {
    let gpu = gpu();
    let root = fixtures();
    let pipe = sd1_tiny(gpu);
    let g = Weights::open_file(&root.join("prompt-golden.safetensors")).unwrap();
    let req = Request {
        prompt: "a (red:1.3) sneaker on a [white] table".into(),
        negative_prompt: "((blurry))".into(),
        guidance: 7.5,
        width: 32,
        height: 32,
        ..Request::default()
    };
    let (ctx, shape) = pipe.text_context(gpu, &req).unwrap();
    assert_eq!(shape, [2, 77, 32]);
    let mut want = g.read_f32("negative", &[1, 77, 32]).unwrap();
    want.extend(g.read_f32("weighted", &[1, 77, 32]).unwrap());
    check("weighted prompt context", &ctx, &want, 1e-4, 1e-4);

    let long = std::fs::read_to_string(root.join("prompt-long.txt")).unwrap();
    let req_long = Request {
        prompt: long.clone(),
        guidance: 1.0,
        steps: 2,
        width: 32,
        height: 32,
        ..Request::default()
    };
    let (ctx, shape) = pipe.text_context(gpu, &req_long).unwrap();
    assert_eq!(shape, [1, 154, 32]);
    let want = g.read_f32("long", &[1, 154, 32]).unwrap();
    check("long prompt context (2 chunks)", &ctx, &want, 1e-4, 1e-4);
    let out = pipe.generate(gpu, &req_long, &mut |_| true).unwrap();
    assert!(out.image.iter().all(|v| v.is_finite()) && out.truncated_tokens == 0);
    // Truncation instead: one window, the dropped tokens reported.
    let trunc = Request {
        long_prompt: sd_wgpu::pipeline::LongPrompt::Truncate,
        ..req_long.clone()
    };
    let (_, shape) = pipe.text_context(gpu, &trunc).unwrap();
    assert_eq!(shape, [1, 77, 32]);
    assert_eq!(
        pipe.generate(gpu, &trunc, &mut |_| true)
            .unwrap()
            .truncated_tokens,
        108 - 75
    );

    // Weight 1 in weighting syntax: exactly the plain prompt.
    let plain = Request {
        prompt: "a red sneaker".into(),
        ..req.clone()
    };
    let same = Request {
        prompt: "(a red sneaker:1)".into(),
        ..req.clone()
    };
    assert_eq!(
        pipe.text_context(gpu, &plain).unwrap().0,
        pipe.text_context(gpu, &same).unwrap().0
    );
    // Unbalanced brackets: a typed error naming the prompt.
    let bad = Request {
        prompt: "a (red sneaker".into(),
        ..req
    };
    let e = pipe.generate(gpu, &bad, &mut |_| true).err().unwrap();
    assert!(matches!(e, sd_wgpu::Error::Prompt { .. }), "{e}");
}

/// Inpainting against diffusers' `StableDiffusionInpaintPipeline` (`tools/make_inpaint_fixture.py`):
/// an ordinary 4-channel U-Net (the known region blended back every step) at strength 1 and
/// 0.75, and a 9-channel inpainting U-Net (mask and masked-image latents as input); 4 DDIM
/// steps, guidance 7.5, seed 42 (posterior samples and noise in diffusers' order).
/// `keep_unmasked` pastes the original pixels back outside the mask.
#[test]
fn inpainting_matches_diffusers() {
    use sd_wgpu::models::unet::{UNet, UNetConfig};
    use sd_wgpu::pipeline::InitImage;
    let gpu = gpu();
    let root = fixtures();
    let mut pipe = sd1_tiny(gpu);
    let g = Weights::open_file(&root.join("inpaint-golden.safetensors")).unwrap();
    let (_, _, rgb) = sd_wgpu::imageio::read_image_rgb(&root.join("img2img-input.png")).unwrap();
    let (_, _, m) = sd_wgpu::imageio::read_image_rgb(&root.join("inpaint-mask.png")).unwrap();
    let mask: Vec<f32> = m.chunks_exact(3).map(|p| p[0]).collect();
    let req = |strength: f64, keep: bool| Request {
        seed: 42,
        init_image: Some(InitImage {
            mask: Some(mask.clone()),
            keep_unmasked: keep,
            ..InitImage::new(rgb.clone(), strength)
        }),
        ..sneaker(4)
    };
    let run = |pipe: &Pipeline, name: &str, r: &Request| {
        let out = pipe.generate(gpu, r, &mut |_| true).unwrap();
        let want = g.read_f32(name, &[1, 32, 32, 3]).unwrap();
        check(&format!("inpaint {name}"), &out.image, &want, 1e-3, 1e-3);
        let p = psnr(&out.image, &want);
        eprintln!("inpaint {name} PSNR vs diffusers: {p:.1} dB");
        assert!(p >= 40.0, "{name}: PSNR {p:.1} dB");
        out.image
    };
    run(&pipe, "legacy_s1", &req(1.0, false));
    run(&pipe, "legacy_s075", &req(0.75, false));
    // A batch of 2 (image and masked image encoded once, noise per image).
    let batch = Request {
        batch_size: 2,
        ..req(0.75, false)
    };
    let out = pipe.generate(gpu, &batch, &mut |_| true).unwrap();
    let want = g.read_f32("legacy_s075_batch2", &[2, 32, 32, 3]).unwrap();
    check("inpaint batch of 2", &out.image, &want, 1e-3, 1e-3);
    let p = psnr(&out.image, &want);
    eprintln!("inpaint batch of 2 PSNR vs diffusers: {p:.1} dB");
    assert!(p >= 40.0);
    // keep_unmasked: outside the mask, exactly the input pixels.
    let kept = pipe
        .generate(gpu, &req(1.0, true), &mut |_| true)
        .unwrap()
        .image;
    for (i, v) in kept.iter().enumerate() {
        if mask[i / 3] < 0.5 {
            assert_eq!(*v, rgb[i]);
        }
    }
    let dir = root.join("inpaint-unet");
    let cfg = UNetConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(cfg.in_channels, 9);
    let w = Weights::open_file(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    pipe.unet = UNet::load(gpu, &w, "", &cfg, WeightDType::Auto).unwrap();
    run(&pipe, "unet9_s1", &req(1.0, false));
    // An inpainting U-Net without a mask: a clear error.
    let no_mask = Request {
        init_image: Some(InitImage::new(rgb.clone(), 1.0)),
        ..req(1.0, false)
    };
    let e = pipe.generate(gpu, &no_mask, &mut |_| true).err().unwrap();
    assert!(e.to_string().contains("give a mask"), "{e}");
    // A mask of another size than the image: a shape error saying both.
    let wrong = Request {
        init_image: Some(InitImage {
            mask: Some(vec![1.0; 16 * 16]),
            ..InitImage::new(rgb.clone(), 1.0)
        }),
        ..req(1.0, false)
    };
    let e = pipe.generate(gpu, &wrong, &mut |_| true).err().unwrap();
    assert!(
        e.to_string().contains("`init_image.mask` holds 256 values"),
        "{e}"
    );
}

/// Batches: `batch_size` 2 against diffusers' `num_images_per_prompt=2` (one seeded draw of
/// `[2, 4, 8, 8]`, both images in one U-Net call); through the CLI with `--batch-count 2`:
/// four numbered files, the second run seeded seed + 1, each PNG recording its seed.
#[test]
fn batches_match_diffusers_and_number_their_files() {
    let gpu = gpu();
    let root = fixtures();
    let pipe = sd1_tiny(gpu);
    let g = Weights::open_file(&root.join("img2img-golden.safetensors")).unwrap();
    let want = g.read_f32("batch2_seed7", &[2, 32, 32, 3]).unwrap();
    let req = Request {
        sampler: Some(sd_wgpu::schedulers::SamplerKind::Ddim { eta: 0.0 }),
        seed: 7,
        batch_size: 2,
        ..sneaker(3)
    };
    let out = pipe.generate(gpu, &req, &mut |_| true).unwrap();
    assert_eq!(out.latents.len(), 2 * 4 * 8 * 8);
    check("batch of 2", &out.image, &want, 1e-3, 1e-3);
    let p = psnr(&out.image, &want);
    eprintln!("batch of 2 PSNR vs diffusers: {p:.1} dB");
    assert!(p >= 40.0);
    // A batch whose activations cannot fit one device buffer: refused before any work,
    // naming the limit.
    let huge = Request {
        batch_size: 64,
        width: 1024,
        height: 1024,
        ..req.clone()
    };
    let e = pipe.generate(gpu, &huge, &mut |_| true).err().unwrap();
    assert!(
        matches!(
            &e,
            sd_wgpu::Error::Limit {
                limit_name: "max_buffer_size",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("batch 64"), "{e}");
    // Past the batch limit: a request error naming the field and the limit.
    let e = pipe
        .generate(
            gpu,
            &Request {
                batch_size: 1 << 20,
                ..req.clone()
            },
            &mut |_| true,
        )
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("`batch_size` is 1048576; it must be 1 to 1024"),
        "{e}"
    );

    let dir = std::env::temp_dir().join(format!("sd-wgpu-cli-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
        .args(["generate", "--model"])
        .arg(root.join("sd1-tiny"))
        .args(["--prompt", "a red sneaker on a white table"])
        .args(["--negative-prompt", "blurry", "--steps", "3", "--seed", "7"])
        .args([
            "--sampler",
            "ddim",
            "--batch-size",
            "2",
            "--batch-count",
            "2",
        ])
        .args(["--width", "32", "--height", "32", "--out"])
        .arg(dir.join("b.png"))
        .status()
        .unwrap();
    assert!(status.success());
    let want255: Vec<f32> = want.iter().map(|v| (v * 255.0).round()).collect();
    for k in 0..4 {
        let path = dir.join(format!("b-{k:03}.png"));
        let (_, _, got) = read_png_rgb(&path);
        if k < 2 {
            let w = &want255[k * 3072..(k + 1) * 3072];
            check(&format!("cli batch image {k}"), &got, w, 1.0, 0.0);
        }
        let params = png_parameters(&path);
        let seed = if k < 2 { "Seed: 7," } else { "Seed: 8," };
        assert!(
            params.contains(seed) && params.contains(&format!("Batch pos: {}", k % 2)),
            "{params}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Previews through the progress callback every N steps (the latent → RGB approximation of the
/// latents at that step), and cancellation from another thread: the run stops at the step it
/// was asked to, every buffer it held is back in the pool, and the next request gives
/// diffusers' image.
#[test]
fn previews_and_cancellation_from_another_thread() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    // Its own device: the memory accounting must not see the tests running beside it.
    let own = sd_wgpu::Gpu::new().unwrap_or_else(|e| panic!("GPU tests need a wgpu adapter: {e}"));
    let gpu = &own;
    let root = fixtures();
    let pipe = sd1_tiny(gpu);
    let g = Weights::open_file(&root.join("sd1-tiny-golden.safetensors")).unwrap();
    let req = Request {
        init_latents: Some(g.read_f32("latents", &[1, 4, 8, 8]).unwrap()),
        preview_every: 2,
        ..sneaker(4)
    };
    let mut previews = Vec::new();
    let out = pipe
        .generate(gpu, &req, &mut |p| {
            if let Some(pv) = p.preview {
                previews.push((p.step, pv));
            }
            true
        })
        .unwrap();
    assert_eq!(previews.iter().map(|p| p.0).collect::<Vec<_>>(), [2, 4]);
    // The last preview is the approximation of the final latents.
    let nhwc: Vec<f32> = (0..64)
        .flat_map(|p| (0..4).map(move |c| (p, c)))
        .map(|(p, c)| out.latents[c * 64 + p])
        .collect();
    let want = sd_wgpu::pipeline::latent_preview(&nhwc, 8, 8, 4, &pipe.latent_rgb);
    let last = &previews[1].1;
    assert_eq!((last.width, last.height), (8, 8));
    check(
        "preview of the final latents",
        &last.rgb,
        &want.rgb,
        1e-6,
        0.0,
    );

    // Cancel from another thread while step 1 is being reported.
    let before = gpu.memory_stats().in_use;
    let cancel = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let (c2, s2) = (cancel.clone(), started.clone());
    let canceller = std::thread::spawn(move || {
        while !s2.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        c2.store(true, Ordering::SeqCst);
    });
    let plain = Request {
        preview_every: 0,
        ..req.clone()
    };
    let e = pipe
        .generate(gpu, &plain, &mut |_| {
            started.store(true, Ordering::SeqCst);
            while !cancel.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            false
        })
        .err()
        .unwrap();
    canceller.join().unwrap();
    assert!(matches!(e, sd_wgpu::Error::Cancelled { step: 1 }), "{e}");
    assert_eq!(
        gpu.memory_stats().in_use,
        before,
        "the cancelled run left buffers in use"
    );
    // Still usable: the next run is diffusers' image.
    let again = pipe.generate(gpu, &plain, &mut |_| true).unwrap();
    let want = g.read_f32("image", &[1, 32, 32, 3]).unwrap();
    check(
        "txt2img after a cancelled run",
        &again.image,
        &want,
        1e-3,
        1e-3,
    );
}

/// Several pipelines on one `Gpu`: loading the same model again shares its weight buffers
/// (no new device memory in use), unless `private_weights` asks for a copy; the pipelines
/// give identical images, and dropping one keeps the other's weights alive.
#[test]
fn pipelines_on_one_gpu_share_weights() {
    use sd_wgpu::pipeline::LoadOptions;
    let own = sd_wgpu::Gpu::new().unwrap_or_else(|e| panic!("GPU tests need a wgpu adapter: {e}"));
    let gpu = &own;
    let root = fixtures();
    let base = gpu.memory_stats().in_use;
    let a = sd1_tiny(gpu);
    let one = gpu.memory_stats().in_use - base;
    assert!(one > 1 << 20, "weights: {one} bytes");
    let b = sd1_tiny(gpu);
    assert_eq!(
        gpu.memory_stats().in_use - base,
        one,
        "a second load doubled the weights"
    );
    let opts = LoadOptions {
        private_weights: true,
        ..LoadOptions::default()
    };
    let c = Pipeline::load_with(gpu, &root.join("sd1-tiny"), &opts).unwrap();
    assert_eq!(
        gpu.memory_stats().in_use - base,
        2 * one,
        "private weights are a copy"
    );
    let req = Request {
        prompt: "a red sneaker".into(),
        steps: 2,
        width: 32,
        height: 32,
        seed: 3,
        ..Request::default()
    };
    let ia = a.generate(gpu, &req, &mut |_| true).unwrap().image;
    drop(a);
    let ib = b.generate(gpu, &req, &mut |_| true).unwrap().image;
    let ic = c.generate(gpu, &req, &mut |_| true).unwrap().image;
    assert_eq!(ia, ib);
    assert_eq!(ia, ic);
}

/// Memory estimates: the peak recorded against the simulating pool is what the real pool
/// allocates for the same request (txt2img batches with several samplers and sizes, img2img,
/// 4-channel inpainting); a request over the memory budget is refused before anything is
/// allocated, with the largest batch that fits, and that batch then runs.
#[test]
fn memory_estimates_are_the_real_peak_and_the_budget_is_enforced() {
    use sd_wgpu::pipeline::InitImage;
    use sd_wgpu::schedulers::SamplerKind;
    // A device of its own: the other tests' buffers would count in the shared one's pool.
    let own = sd_wgpu::Gpu::new().expect("GPU tests need a wgpu adapter");
    let pipe = sd1_tiny(&own);
    let (_, _, rgb) =
        sd_wgpu::imageio::read_image_rgb(&fixtures().join("img2img-input.png")).unwrap();
    let mask: Vec<f32> = (0..32 * 32).map(|p| f32::from(p % 32 >= 16)).collect();
    let cases = [
        (
            "txt2img ddim batch 2",
            Request {
                batch_size: 2,
                ..sneaker(3)
            },
        ),
        (
            "txt2img pndm 64x48, 9 timesteps",
            Request {
                sampler: Some(SamplerKind::Pndm),
                width: 64,
                height: 48,
                ..sneaker(8)
            },
        ),
        (
            "txt2img dpm++ unguided batch 3",
            Request {
                sampler: Some(SamplerKind::DpmPP2M { karras: true }),
                guidance: 1.0,
                batch_size: 3,
                ..sneaker(4)
            },
        ),
        (
            "img2img euler-a",
            Request {
                sampler: Some(SamplerKind::EulerAncestral),
                init_image: Some(InitImage::new(rgb.clone(), 0.7)),
                ..sneaker(5)
            },
        ),
        (
            "inpaint 4-channel batch 2",
            Request {
                batch_size: 2,
                init_image: Some(InitImage {
                    mask: Some(mask),
                    ..InitImage::new(rgb, 1.0)
                }),
                ..sneaker(4)
            },
        ),
    ];
    for (name, req) in &cases {
        own.trim_pool();
        let clock = std::time::Instant::now();
        let est = pipe.memory_estimate(&own, req).unwrap();
        let took = clock.elapsed();
        let before = own.memory_stats();
        assert_eq!(est.resident, before.in_use, "{name}");
        own.reset_peak_memory();
        pipe.generate(&own, req, &mut |_| true).unwrap();
        let real = own.memory_stats().peak - before.allocated;
        eprintln!(
            "{name}: estimate {} bytes in {:.1} ms, real peak {real} bytes (resident {})",
            est.request,
            took.as_secs_f64() * 1e3,
            est.resident
        );
        assert_eq!(
            est.request, real,
            "{name}: estimate vs the pool's real peak"
        );
    }

    // A budget that holds a batch of 3 and not 8.
    let batch = |n: usize| Request {
        batch_size: n,
        ..sneaker(3)
    };
    own.trim_pool();
    let three = pipe.memory_estimate(&own, &batch(3)).unwrap();
    let eight = pipe.memory_estimate(&own, &batch(8)).unwrap();
    assert!(eight.total() > three.total());
    let named = |bytes| {
        Some(sd_wgpu::MemoryBudget {
            bytes,
            source: "the test's".into(),
        })
    };
    own.set_memory_budget(named(three.total()));
    let before = own.memory_stats();
    let e = pipe
        .generate(&own, &batch(8), &mut |_| panic!("no step may run"))
        .err()
        .unwrap();
    eprintln!("{e}");
    let sd_wgpu::Error::Memory {
        resident,
        request,
        budget,
        ..
    } = &e
    else {
        panic!("expected a memory error, got {e}");
    };
    assert_eq!(
        (*resident + *request, *budget),
        (eight.total(), three.total())
    );
    let msg = e.to_string();
    assert!(msg.contains("batch 8 at 32x32"), "{msg}");
    assert!(msg.contains("(the test's)"), "{msg}");
    let most: usize = msg
        .split("a batch of at most ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("no largest batch in: {msg}"));
    assert!((3..8).contains(&most), "{msg}");
    // Nothing was allocated for the refused request.
    assert_eq!(own.memory_stats(), before);
    // The batch it names runs within the budget; one more does not fit.
    own.reset_peak_memory();
    let out = pipe.generate(&own, &batch(most), &mut |_| true).unwrap();
    assert_eq!(out.image.len(), most * 32 * 32 * 3);
    assert!(own.memory_stats().peak <= three.total());
    assert!(!pipe.memory_estimate(&own, &batch(most + 1)).unwrap().fits());
    // One image over the budget: the message says the size must shrink.
    own.set_memory_budget(named(before.in_use + 1024));
    let e = pipe.generate(&own, &batch(1), &mut |_| true).err().unwrap();
    assert!(e.to_string().contains("1 image at 32x32"), "{e}");
    own.set_memory_budget(None);

    // The CLI: the estimate printed, and a budget too small refused with no image written.
    let out_png = std::env::temp_dir().join(format!("sd-wgpu-budget-{}.png", std::process::id()));
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
        .args(["generate", "--model"])
        .arg(fixtures().join("sd1-tiny"))
        .args([
            "--prompt",
            "a red sneaker",
            "--steps",
            "2",
            "--width",
            "32",
            "--height",
            "32",
        ])
        .args(["--batch-size", "4", "--memory-budget", "9MiB", "--out"])
        .arg(&out_png)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{err}");
    assert!(err.contains("device memory: "), "{err}");
    assert!(
        err.contains("above the memory budget of 9.0 MiB (--memory-budget)"),
        "{err}"
    );
    assert!(err.contains("a batch of at most"), "{err}");
    assert!(!out_png.exists());
    assert!(
        !out_png
            .with_file_name(format!("sd-wgpu-budget-{}-000.png", std::process::id()))
            .exists()
    );
}

/// The whole text-to-image run on a device whose storage bindings hold 320 KiB (the tiny
/// model's largest weight is 288 KiB): at 96×64 px with a batch of 2 the U-Net's
/// feed-forward and skip concatenations (384 KiB) and the VAE's activations (3 MiB) must
/// split into binding windows — as SD's do on real devices (768² or big batches exceed
/// lavapipe's 128 MiB and many GPUs' limits) — and the images still match diffusers
/// (`tools/make_split_fixture.py`).
#[test]
fn txt2img_within_small_binding_limits_matches_diffusers() {
    let small = sd_wgpu::Gpu::with_options(&sd_wgpu::GpuOptions {
        max_storage_binding: Some(320 << 10),
        ..Default::default()
    })
    .expect("GPU tests need a wgpu adapter");
    let pipe = sd1_tiny(&small);
    let g = Weights::open_file(&fixtures().join("split-golden.safetensors")).unwrap();
    let req = Request {
        sampler: Some(sd_wgpu::schedulers::SamplerKind::Ddim { eta: 0.0 }),
        seed: 11,
        batch_size: 2,
        width: 96,
        height: 64,
        ..sneaker(3)
    };
    let out = pipe.generate(&small, &req, &mut |_| true).unwrap();
    let want = g.read_f32("batch2_96x64", &[2, 64, 96, 3]).unwrap();
    check("txt2img, 320 KiB bindings", &out.image, &want, 1e-3, 1e-3);
    let p = psnr(&out.image, &want);
    eprintln!("96x64 batch 2 within 320 KiB bindings: PSNR {p:.1} dB vs diffusers");
    assert!(p >= 40.0);
}

/// The `parameters` text of a PNG the CLI wrote (an `iTXt` chunk: UTF-8).
fn png_parameters(path: &std::path::Path) -> String {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let reader = dec.read_info().unwrap();
    reader
        .info()
        .utf8_text
        .iter()
        .find(|t| t.keyword == "parameters")
        .and_then(|t| t.get_text().ok())
        .unwrap_or_default()
}
