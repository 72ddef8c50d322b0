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
pub(crate) fn sd1_tiny(gpu: &sd_wgpu::Gpu) -> Pipeline {
    Pipeline::load(gpu, &fixtures().join("sd1-tiny"), WeightDType::Auto).unwrap()
}

/// `sd-wgpu generate` on the tiny SD 1 model: `prompt` with the negative prompt "blurry",
/// DDIM, `steps` steps, guidance 7.5, 32×32 (the reference settings of the fixtures).
pub(crate) fn sd1_cli(prompt: &str, steps: usize) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_sd-wgpu"));
    c.args(["generate", "--model"])
        .arg(fixtures().join("sd1-tiny"))
        .args(["--prompt", prompt, "--negative-prompt", "blurry"])
        .args([
            "--steps",
            &steps.to_string(),
            "--guidance",
            "7.5",
            "--sampler",
            "ddim",
        ])
        .args(["--width", "32", "--height", "32"]);
    c
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
    let status = sd1_cli("a red sneaker on a white table", 4)
        .args(["--seed", "7"])
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
pub(crate) fn read_png_rgb(path: &std::path::Path) -> (u32, u32, Vec<f32>) {
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
    assert_eq!(
        pipe.unet(gpu).unwrap().conv_in.weight.dtype(),
        sd_wgpu::DType::F16
    );
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
pub(crate) fn png_parameters(path: &std::path::Path) -> String {
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
