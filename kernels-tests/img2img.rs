//! Image-to-image and inpainting end to end against diffusers' img2img and inpainting
//! pipelines on the tiny random-weight SD 1-like pipeline, through the library and the CLI.

use crate::common::*;
use crate::pipeline::{fixtures, read_png_rgb, sd1_tiny, sneaker};
use sd_wgpu::pipeline::{Pipeline, Request};
use sd_wgpu::weights::{WeightDType, Weights};

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

/// `generate --init-image --strength` through the CLI: the DDIM case of
/// `img2img_matches_diffusers` (seed 42), PNG pixels within 1 of diffusers'; an init image
/// whose size is no multiple of the VAE factor is resized as diffusers resizes it (img2img
/// and inpainting vs diffusers' runs on such an input); a strength outside [0, 1] fails.
#[test]
fn img2img_through_the_cli() {
    let root = fixtures();
    let g = Weights::open_file(&root.join("img2img-golden.safetensors")).unwrap();
    let dir = std::env::temp_dir().join(format!("sd-wgpu-cli-i2i-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png_out = dir.join("out.png");
    let run_with = |image: &std::path::Path, strength: &str, extra: &[&str]| {
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
            .args(extra)
            .arg("--out")
            .arg(&png_out)
            .arg("--overwrite")
            .output()
            .unwrap()
    };
    let run = |image: &std::path::Path, strength: &str| run_with(image, strength, &[]);
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
    // 37×35 px: resized to 36×32 with Pillow's Lanczos as diffusers' image processor does
    // (the tiny VAE's factor is 4; SD's 8), with a message; diffusers' run on that input
    // (tools/make_resize_pipeline_fixture.py). Inpainting with a coloured 37×35 mask,
    // resized in RGB then made "L" like diffusers' mask processor.
    let odd = root.join("img2img-input-odd.png");
    let r = Weights::open_file(&root.join("resize-golden.safetensors")).unwrap();
    let out = run(&odd, "0.6");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("resized 37x35 to 36x32 (Lanczos"), "{err}");
    let unit = |v: Vec<f32>| v.iter().map(|x| x / 255.0).collect::<Vec<f32>>();
    let (w, h, got) = read_png_rgb(&png_out);
    assert_eq!((w, h), (36, 32));
    let p = psnr(&unit(got), &r.read_f32("img2img", &[1, 32, 36, 3]).unwrap());
    assert!(p >= 40.0, "img2img on a resized input: {p:.1} dB");
    let mask = root.join("inpaint-mask-odd.png");
    let out = run_with(&odd, "1", &["--mask", mask.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = unit(read_png_rgb(&png_out).2);
    let p = psnr(&got, &r.read_f32("inpaint", &[1, 32, 36, 3]).unwrap());
    assert!(p >= 40.0, "inpainting with a resized mask: {p:.1} dB");
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

/// Inpainting against diffusers' `StableDiffusionInpaintPipeline` (`tools/make_inpaint_fixture.py`):
/// an ordinary 4-channel U-Net (the known region blended back every step) at strength 1 and
/// 0.75, and a 9-channel inpainting U-Net (mask and masked-image latents as input); 4 DDIM
/// steps, guidance 7.5, seed 42 (posterior samples and noise in diffusers' order).
/// `keep_unmasked` pastes the original pixels back outside the mask.
#[test]
fn inpainting_matches_diffusers() {
    use sd_wgpu::models::unet::UNetConfig;
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
    pipe.replace_unet(gpu, w, &cfg, WeightDType::Auto).unwrap();
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
