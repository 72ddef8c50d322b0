//! The 4× upscaler against diffusers' `StableDiffusionUpscalePipeline` on a tiny random-weight
//! model of its structure (`tools/make_upscaler_fixture.py`): 7-channel U-Net with the noise
//! level as its class label, the low-res image noised by `low_res_scheduler` (its noise drawn
//! before the latents), classifier-free guidance, the 4× VAE; a 20×12 input (no multiple of 64).

use crate::common::*;
use crate::pipeline::fixtures;
use sd_wgpu::pipeline::{Pipeline, Request, Upscale};
use sd_wgpu::weights::{WeightDType, Weights};

fn request(rgb: &[f32], noise_level: u32) -> Request {
    Request {
        prompt: "a red sneaker".into(),
        negative_prompt: "blurry".into(),
        steps: 4,
        guidance: 9.0,
        width: 80,
        height: 48,
        seed: 42,
        upscale: Some(Upscale {
            rgb: rgb.to_vec(),
            noise_level,
            noise: None,
        }),
        ..Request::default()
    }
}

#[test]
fn upscaler_matches_diffusers() {
    let gpu = gpu();
    let pipe = Pipeline::load(gpu, &fixtures().join("upscaler-tiny"), WeightDType::Auto).unwrap();
    assert_eq!(pipe.vae_scale_factor(), 4);
    let g = Weights::open_file(&fixtures().join("upscale-golden.safetensors")).unwrap();
    let (w, h, rgb) =
        sd_wgpu::imageio::read_image_rgb(&fixtures().join("upscale-input.png")).unwrap();
    assert_eq!((w, h), (20, 12));
    for (name, level) in [("image_f32", 20), ("image_nl100", 100)] {
        let out = pipe
            .generate(gpu, &request(&rgb, level), &mut |_| true)
            .unwrap();
        let want = g.read_f32(name, &[1, 48, 80, 3]).unwrap();
        let p = psnr(&out.image, &want);
        eprintln!("upscale {name}: {p:.1} dB against diffusers");
        assert!(p >= 40.0, "{name}: {p} dB");
    }
    // f16 weights against diffusers' own fp16 run (its VAE upcast, as `force_upcast` asks).
    let half = Pipeline::load(gpu, &fixtures().join("upscaler-tiny"), WeightDType::F16).unwrap();
    let out = half
        .generate(gpu, &request(&rgb, 20), &mut |_| true)
        .unwrap();
    let want = g.read_f32("image_f16", &[1, 48, 80, 3]).unwrap();
    let p = psnr(&out.image, &want);
    eprintln!("upscale f16: {p:.1} dB against diffusers' fp16 run");
    assert!(p >= 40.0, "f16: {p} dB");
    // The memory estimate is the real peak (a device of its own: nothing else in its pool).
    let own = sd_wgpu::Gpu::new().expect("GPU tests need a wgpu adapter");
    let mut p = Pipeline::load(&own, &fixtures().join("upscaler-tiny"), WeightDType::Auto).unwrap();
    p.offload = sd_wgpu::pipeline::Offload::Never;
    own.trim_pool();
    let est = p.memory_estimate(&own, &request(&rgb, 20)).unwrap();
    let before = own.memory_stats();
    assert_eq!(est.resident, before.in_use);
    own.reset_peak_memory();
    p.generate(&own, &request(&rgb, 20), &mut |_| true).unwrap();
    assert_eq!(est.request, own.memory_stats().peak - before.allocated);
    // Hostile inputs: named errors.
    let e = pipe
        .generate(gpu, &request(&rgb, 351), &mut |_| true)
        .err()
        .unwrap();
    assert!(e.to_string().contains("noise_level"), "{e}");
    let e = pipe
        .generate(gpu, &request(&rgb[3..], 20), &mut |_| true)
        .err()
        .unwrap();
    assert!(e.to_string().contains("upscale.rgb"), "{e}");
    let plain = Request {
        upscale: None,
        ..request(&rgb, 20)
    };
    let e = pipe.generate(gpu, &plain, &mut |_| true).err().unwrap();
    assert!(e.to_string().contains("upscaler"), "{e}");
}

/// `sd-wgpu upscale`: seed 42 gives diffusers' image (through 8-bit PNG); `--init-latents`
/// and `--noise` (the low-res image's noise) with another seed give diffusers' run with those
/// latents and seed 42, whose first draw that noise is; an input of no multiple of 4 px is
/// resized as diffusers resizes it; `--batch-size 2` gives diffusers' two images; a
/// non-upscaler model is refused.
#[test]
fn upscale_cli_matches_diffusers() {
    let dir = std::env::temp_dir().join(format!("sd-wgpu-upscale-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let g = Weights::open_file(&fixtures().join("upscale-golden.safetensors")).unwrap();
    let cli_on = |image: &str, out: &std::path::Path, model: &str, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
            .arg("upscale")
            .arg("--model")
            .arg(fixtures().join(model))
            .arg("--image")
            .arg(fixtures().join(image))
            .args(["--prompt", "a red sneaker", "--negative-prompt", "blurry"])
            .args(["--steps", "4", "--guidance", "9"])
            .args(extra)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let cli = |out: &std::path::Path, model: &str, extra: &[&str]| {
        cli_on("upscale-input.png", out, model, extra)
    };
    let png = |p: &std::path::Path| {
        let (w, h, rgb) = sd_wgpu::imageio::read_image_rgb(p).unwrap();
        assert_eq!((w, h), (80, 48));
        rgb
    };
    let a = dir.join("a.png");
    let r = cli(&a, "upscaler-tiny", &["--seed", "42"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let p = psnr(&png(&a), &g.read_f32("image_f32", &[1, 48, 80, 3]).unwrap());
    assert!(p >= 40.0, "{p} dB");
    let (lat, noise) = (dir.join("latents.npy"), dir.join("noise.npy"));
    let lv = g.read_f32("latents", &[1, 4, 12, 20]).unwrap();
    sd_wgpu::npy::write_f32(&lat, &[1, 4, 12, 20], &lv).unwrap();
    let nv = g.read_f32("noise", &[1, 3, 12, 20]).unwrap();
    sd_wgpu::npy::write_f32(&noise, &[1, 3, 12, 20], &nv).unwrap();
    let b = dir.join("b.png");
    let r = cli(
        &b,
        "upscaler-tiny",
        &[
            "--seed",
            "7",
            "--init-latents",
            lat.to_str().unwrap(),
            "--noise",
            noise.to_str().unwrap(),
        ],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let p = psnr(
        &png(&b),
        &g.read_f32("image_latents", &[1, 48, 80, 3]).unwrap(),
    );
    assert!(p >= 40.0, "{p} dB");
    // A 22×13 input: resized to 20×12 with Pillow's bicubic as diffusers' image processor
    // does (tools/make_resize_pipeline_fixture.py), then diffusers' image.
    let d = dir.join("d.png");
    let r = cli_on(
        "upscale-input-odd.png",
        &d,
        "upscaler-tiny",
        &["--seed", "42"],
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("resized 22x13 to 20x12 (Bicubic"), "{err}");
    let want = Weights::open_file(&fixtures().join("resize-golden.safetensors")).unwrap();
    let p = psnr(
        &png(&d),
        &want.read_f32("upscale", &[1, 48, 80, 3]).unwrap(),
    );
    assert!(p >= 40.0, "upscale of a resized input: {p} dB");
    // --batch-size 2: diffusers' num_images_per_prompt=2 (the image's noise drawn once, then
    // both latents), written as e-000.png and e-001.png.
    let r = cli(
        &dir.join("e.png"),
        "upscaler-tiny",
        &["--seed", "42", "--batch-size", "2"],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(!dir.join("e.png").exists());
    let want = Weights::open_file(&fixtures().join("upscale-batch-golden.safetensors")).unwrap();
    let want = want.read_f32("image", &[2, 48, 80, 3]).unwrap();
    for (k, w) in want.chunks(48 * 80 * 3).enumerate() {
        let p = psnr(&png(&dir.join(format!("e-{k:03}.png"))), w);
        assert!(p >= 40.0, "batch image {k}: {p} dB");
    }
    let r = cli(&dir.join("c.png"), "sd1-tiny", &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && err.contains("not an upscaler"),
        "{err}"
    );
    assert!(!dir.join("c.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The upscaler trained for the built-in model (`assets/fashion-upscaler`,
/// `tools/train_fashion_upscaler.py`) on a held-out red sneaker's 8×8 box reduction: the
/// engine's image is diffusers' (20 DDIM steps, guidance 4, seed 1) and nearer the 32×32
/// original than Pillow's bicubic upsample of the same input.
#[test]
fn trained_fashion_upscaler_matches_diffusers_and_beats_bicubic() {
    let gpu = gpu();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipe = Pipeline::load(
        gpu,
        &root.join("assets/fashion-upscaler"),
        WeightDType::Auto,
    )
    .unwrap();
    let g = Weights::open_file(&root.join("tests/fixtures/fashion/upscaler-golden.safetensors"))
        .unwrap();
    let low = g.read_f32("low", &[8, 8, 3]).unwrap();
    let original = g.read_f32("original", &[32, 32, 3]).unwrap();
    let req = Request {
        prompt: "a red sneaker".into(),
        steps: 20,
        guidance: 4.0,
        width: 32,
        height: 32,
        seed: 1,
        upscale: Some(Upscale {
            rgb: low.clone(),
            noise_level: 20,
            noise: None,
        }),
        ..Request::default()
    };
    let out = pipe.generate(gpu, &req, &mut |_| true).unwrap();
    let p = psnr(&out.image, &g.read_f32("image", &[1, 32, 32, 3]).unwrap());
    let bytes: Vec<u8> = low.iter().map(|v| (v * 255.0).round() as u8).collect();
    let bicubic: Vec<f32> = sd_wgpu::resample::resize_u8(
        &bytes,
        (8, 8),
        3,
        (32, 32),
        sd_wgpu::resample::Filter::Bicubic,
    )
    .iter()
    .map(|&b| f32::from(b) / 255.0)
    .collect();
    let (ours, theirs) = (psnr(&out.image, &original), psnr(&bicubic, &original));
    eprintln!(
        "fashion upscaler: {p:.1} dB against diffusers; against the original {ours:.2} dB \
         (bicubic {theirs:.2} dB)"
    );
    assert!(p >= 40.0, "{p} dB against diffusers");
    assert!(ours > theirs, "{ours} dB vs bicubic's {theirs} dB");
}
