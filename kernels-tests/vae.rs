//! VAE decoder against diffusers' AutoencoderKL.decode on a random-weight fixture
//! (`tests/fixtures/vae/`, made by `tools/make_vae_fixtures.py`).

use crate::common::*;
use sd_wgpu::models::vae::{AutoencoderKLConfig, Posterior, VaeDecoder, VaeEncoder};
use sd_wgpu::weights::{WeightDType, Weights};
use sd_wgpu::{DType, Recorder};
use std::path::PathBuf;

#[test]
fn vae_decoder_matches_diffusers() {
    let gpu = gpu();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vae/f4-tiny");
    let cfg = AutoencoderKLConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(cfg.downsample_factor(), 4);
    let w = Weights::open_file(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let golden = Weights::open_file(&dir.join("golden.safetensors")).unwrap();
    let z = nhwc(
        &golden.read_f32("latents", &[1, 4, 6, 7]).unwrap(),
        [1, 4, 6, 7],
    );
    let want = nhwc(
        &golden.read_f32("image", &[1, 3, 24, 28]).unwrap(),
        [1, 3, 24, 28],
    );
    for (dt, tol) in [(WeightDType::Auto, 1e-4f32), (WeightDType::F16, 2e-2)] {
        let vae = VaeDecoder::load(gpu, &w, "", &cfg, dt).unwrap();
        let zt = upload(&z, &[1, 6, 7, 4], DType::F32, "latents");
        let mut rec = Recorder::new(gpu);
        let img = vae.forward(&mut rec, &zt).unwrap();
        assert_eq!(img.shape(), [1, 24, 28, 3]);
        check(
            &format!("vae decode {dt:?}"),
            &run(rec, &img),
            &want,
            tol,
            tol,
        );
    }
}

/// The encoder against diffusers' `AutoencoderKL.encode` (posterior mean and std, and a sample
/// drawn with `torch.Generator("cpu").manual_seed(3)`) on a 28×36 image: odd sizes for the
/// downsamplers' one-sided padding. f32 and f16 weights.
#[test]
fn vae_encoder_matches_diffusers() {
    let gpu = gpu();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vae/f4-tiny");
    let cfg = AutoencoderKLConfig::from_file(&dir.join("config.json")).unwrap();
    let w = Weights::open_file(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let golden = Weights::open_file(&dir.join("encode_golden.safetensors")).unwrap();
    let image = nhwc(
        &golden.read_f32("image", &[1, 3, 28, 36]).unwrap(),
        [1, 3, 28, 36],
    );
    let want_mean = golden.read_f32("mean", &[1, 4, 7, 9]).unwrap();
    let want_std = golden.read_f32("std", &[1, 4, 7, 9]).unwrap();
    for (dt, tol) in [(WeightDType::Auto, 1e-4f32), (WeightDType::F16, 2e-2)] {
        let enc = VaeEncoder::load(gpu, &w, "", &cfg, dt).unwrap();
        let x = upload(&image, &[1, 28, 36, 3], DType::F32, "image");
        let mut rec = Recorder::new(gpu);
        let m = enc.forward(&mut rec, &x).unwrap();
        assert_eq!(m.shape(), [1, 7, 9, 8]);
        let post = Posterior::from_moments(&run(rec, &m), [1, 7, 9, 8]).unwrap();
        check(
            &format!("vae encode mean {dt:?}"),
            &post.mean,
            &want_mean,
            tol,
            tol,
        );
        check(
            &format!("vae encode std {dt:?}"),
            &post.std,
            &want_std,
            tol,
            tol,
        );
        if dt == WeightDType::Auto {
            let s = post.sample(&mut sd_wgpu::rng::TorchGenerator::new(3));
            let want = golden.read_f32("sample_seed3", &[1, 4, 7, 9]).unwrap();
            check("vae encode sample (seed 3)", &s, &want, tol, tol);
        }
    }
    // A size that is not a multiple of the factor is refused, naming the tensor.
    let enc = VaeEncoder::load(gpu, &w, "", &cfg, WeightDType::Auto).unwrap();
    let x = upload(
        &image[..27 * 36 * 3],
        &[1, 27, 36, 3],
        DType::F32,
        "odd image",
    );
    let e = enc
        .forward(&mut Recorder::new(gpu), &x)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("odd image") && e.contains("multiples of 4"),
        "{e}"
    );
}

/// The decoder on a device whose storage bindings (256 KiB) are smaller than its activations
/// (up to 983 KB): conv2d, group-norm and upsample run in bands of rows, and the image is
/// still diffusers' — the path that lets 512² and 768² decode within lavapipe's 128 MiB.
#[test]
fn vae_decoder_in_bands_matches_diffusers() {
    let g = sd_wgpu::Gpu::with_options(&sd_wgpu::GpuOptions {
        max_storage_binding: Some(256 << 10),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("GPU tests need a wgpu adapter: {e}"));
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vae/f4-tiny");
    let cfg = AutoencoderKLConfig::from_file(&dir.join("config.json")).unwrap();
    let w = Weights::open_file(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let golden = Weights::open_file(&dir.join("golden.safetensors")).unwrap();
    let z = nhwc(
        &golden.read_f32("latents_big", &[1, 4, 24, 20]).unwrap(),
        [1, 4, 24, 20],
    );
    let want = nhwc(
        &golden.read_f32("image_big", &[1, 3, 96, 80]).unwrap(),
        [1, 3, 96, 80],
    );
    let vae = VaeDecoder::load(&g, &w, "", &cfg, WeightDType::Auto).unwrap();
    let zt = sd_wgpu::Tensor::from_f32(&g, &z, &[1, 24, 20, 4], DType::F32, "latents").unwrap();
    let mut rec = Recorder::new(&g);
    let img = vae.forward(&mut rec, &zt).unwrap();
    assert_eq!(img.shape(), [1, 96, 80, 3]);
    rec.submit().unwrap();
    check(
        "vae decode in bands (256 KiB bindings)",
        &img.to_vec(&g).unwrap(),
        &want,
        1e-4,
        1e-4,
    );
}

/// The full-size SD VAE decoding 64×64 latents to 512² on this device: at 512² its
/// 256-channel activations (256 MiB) exceed lavapipe's 128 MiB binding, so conv, group-norm and
/// upsample run in bands. On demand, after `tools/make_full_size_sd15.py DIR`:
/// `SD_WGPU_FULL_SIZE_DIR=DIR cargo test --release --test kernels -- --ignored full_size_vae --nocapture`.
#[test]
#[ignore = "needs tools/make_full_size_sd15.py output and minutes of GPU time"]
fn full_size_vae_decodes_512_like_diffusers() {
    full_size_vae_decode(512, "vae512.safetensors");
}

/// The same at 768² (96×96 latents; 128-channel activations of 288 MiB), after
/// `tools/make_full_size_sd15.py DIR --vae768` wrote `DIR/vae768.safetensors`.
#[test]
#[ignore = "needs DIR/vae768.safetensors and tens of minutes on lavapipe"]
fn full_size_vae_decodes_768_like_diffusers() {
    full_size_vae_decode(768, "vae768.safetensors");
}

fn full_size_vae_decode(px: usize, golden: &str) {
    let gpu = gpu();
    let dir =
        PathBuf::from(std::env::var("SD_WGPU_FULL_SIZE_DIR").expect("set SD_WGPU_FULL_SIZE_DIR"));
    let vdir = dir.join("model/vae");
    let cfg = AutoencoderKLConfig::from_file(&vdir.join("config.json")).unwrap();
    let w = Weights::open_file(&vdir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let vae = VaeDecoder::load(gpu, &w, "", &cfg, WeightDType::Auto).unwrap();
    let g = Weights::open_file(&dir.join(golden)).unwrap();
    let l = px / 8;
    let z = nhwc(&g.read_f32("latents", &[1, 4, l, l]).unwrap(), [1, 4, l, l]);
    let want = nhwc(
        &g.read_f32("image", &[1, 3, px, px]).unwrap(),
        [1, 3, px, px],
    );
    gpu.reset_peak_memory();
    let t0 = std::time::Instant::now();
    let zt = upload(&z, &[1, l, l, 4], DType::F32, "latents");
    let mut rec = Recorder::new(gpu);
    let img = vae.forward(&mut rec, &zt).unwrap();
    let got = run(rec, &img);
    eprintln!(
        "{px}² decode on {}: {:.1} s, peak device memory {:.0} MiB",
        gpu.adapter_info().name,
        t0.elapsed().as_secs_f64(),
        gpu.memory_stats().peak as f64 / 1048576.0
    );
    let mse = got
        .iter()
        .zip(&want)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum::<f64>()
        / got.len() as f64;
    // Images in [-1, 1]: peak-to-peak 2.
    let psnr = 10.0 * (4.0 / mse.max(1e-20)).log10();
    eprintln!("{px}² decode PSNR vs diffusers: {psnr:.1} dB");
    check(
        &format!("full-size VAE {px}² decode"),
        &got,
        &want,
        1e-3,
        1e-3,
    );
}
