//! The tiny autoencoder (TAESD) against diffusers' `AutoencoderTiny` on random weights
//! (`tools/make_taesd_fixture.py`): decode and encode alone, the original release's decoder
//! file, f16 weights, and as the pipelines' decoder (SD 1 and SDXL) and preview decoder.

use crate::common::*;
use crate::pipeline::{fixtures, sd1_tiny, sneaker};
use sd_wgpu::models::taesd::{TinyDecoder, TinyEncoder, TinyWeights};
use sd_wgpu::pipeline::{Decoder, Pipeline, PreviewDecoder, Request};
use sd_wgpu::weights::{WeightDType, Weights};
use sd_wgpu::{DType, Recorder};

fn golden() -> Weights {
    Weights::open_file(&fixtures().join("taesd-golden.safetensors")).unwrap()
}

#[test]
fn tiny_autoencoder_matches_diffusers() {
    let gpu = gpu();
    let g = golden();
    let z = nhwc(
        &g.read_f32("latents", &[1, 4, 6, 10]).unwrap(),
        [1, 4, 6, 10],
    );
    let want = nhwc(
        &g.read_f32("decoded", &[1, 3, 48, 80]).unwrap(),
        [1, 3, 48, 80],
    );
    let dir = fixtures().join("taesd-tiny");
    for (path, dt, tol) in [
        (dir.clone(), WeightDType::Auto, 1e-4f32),
        (dir.clone(), WeightDType::F16, 2e-2),
        // The original release's layout (`N.…`, its Clamp at index 0), default config.
        (
            dir.join("taesd_decoder.safetensors"),
            WeightDType::Auto,
            1e-4,
        ),
    ] {
        let w = if path.is_dir() {
            TinyWeights::open(&path).unwrap()
        } else {
            // The file's own default config is TAESD's 64 channels: this fixture's is smaller.
            let mut w = TinyWeights::open(&path).unwrap();
            w.config = TinyWeights::open(&dir).unwrap().config;
            w
        };
        let dec = TinyDecoder::load(gpu, &w, dt).unwrap();
        let zt = upload(&z, &[1, 6, 10, 4], DType::F32, "latents");
        let mut rec = Recorder::new(gpu);
        let img = dec.forward(&mut rec, &zt).unwrap();
        assert_eq!(img.shape(), [1, 48, 80, 3]);
        check(
            &format!("tiny decode {} {dt:?}", path.display()),
            &run(rec, &img),
            &want,
            tol,
            tol,
        );
    }
    let x = nhwc(
        &g.read_f32("image", &[1, 3, 48, 80]).unwrap(),
        [1, 3, 48, 80],
    );
    let want = nhwc(
        &g.read_f32("encoded", &[1, 4, 6, 10]).unwrap(),
        [1, 4, 6, 10],
    );
    let enc = TinyEncoder::load(gpu, &TinyWeights::open(&dir).unwrap(), WeightDType::Auto).unwrap();
    let xt = upload(&x, &[1, 48, 80, 3], DType::F32, "image");
    let mut rec = Recorder::new(gpu);
    let lat = enc.forward(&mut rec, &xt).unwrap();
    check("tiny encode", &run(rec, &lat), &want, 1e-4, 1e-4);
    // Shapes it cannot take: clear errors naming the tensor.
    let mut rec = Recorder::new(gpu);
    let bad = upload(&x[..47 * 80 * 3], &[1, 47, 80, 3], DType::F32, "odd image");
    let e = enc.forward(&mut rec, &bad).err().unwrap().to_string();
    assert!(
        e.contains("odd image") && e.contains("multiples of 8"),
        "{e}"
    );
    let dec = TinyDecoder::load(gpu, &TinyWeights::open(&dir).unwrap(), WeightDType::Auto).unwrap();
    let e = dec.forward(&mut rec, &xt).err().unwrap().to_string();
    assert!(e.contains("image") && e.contains("[n, h, w, 4]"), "{e}");
}

/// diffusers' pipelines with `vae=AutoencoderTiny(…)`: SD 1 (tiny, seed 42, 4 steps) and
/// SDXL (tiny, its golden's initial latents, 3 steps), against the engine with
/// `Decoder::Tiny`; the TAESD previews are the final image's decoder applied mid-run.
#[test]
fn tiny_autoencoder_decodes_pipelines_like_diffusers() {
    let gpu = gpu();
    let g = golden();
    let mut pipe = sd1_tiny(gpu);
    let req = Request {
        seed: 42,
        decoder: Decoder::Tiny,
        ..sneaker(4)
    };
    // Not loaded yet: the request names the field.
    let e = pipe
        .generate(gpu, &req, &mut |_| true)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("decoder") && e.contains("none is loaded"), "{e}");
    // A tiny autoencoder of another factor (8×, for this model's 4×) is refused.
    let e = pipe
        .set_tiny_autoencoder(gpu, Some(&fixtures().join("taesd-tiny")), WeightDType::Auto)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("4×") && e.contains("8×"), "{e}");
    // The model's own VAE folder is not a tiny autoencoder: named as such.
    let e = pipe
        .set_tiny_autoencoder(
            gpu,
            Some(&fixtures().join("sd1-tiny/vae")),
            WeightDType::Auto,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("AutoencoderKL") && e.contains("AutoencoderTiny"),
        "{e}"
    );
    let f4 = fixtures().join("taesd-f4-tiny");
    pipe.set_tiny_autoencoder(gpu, Some(&f4), WeightDType::Auto)
        .unwrap();
    let mut previews = Vec::new();
    let out = pipe
        .generate(
            gpu,
            &Request {
                preview_every: 2,
                preview_decoder: PreviewDecoder::Tiny,
                ..req.clone()
            },
            &mut |p| {
                previews.extend(p.preview);
                true
            },
        )
        .unwrap();
    let want = g.read_f32("sd1_image", &[1, 32, 32, 3]).unwrap();
    let p = psnr(&out.image, &want);
    eprintln!("sd1 with the tiny decoder: {p:.1} dB against diffusers");
    assert!(p >= 40.0, "{p} dB");
    // Previews at full resolution; the last one is the final latents' decode.
    assert_eq!(previews.len(), 2);
    assert_eq!((previews[1].width, previews[1].height), (32, 32));
    assert!(psnr(&previews[1].rgb, &out.image) > 100.0);
    assert!(psnr(&previews[0].rgb, &out.image) < 60.0);
    // The VAE still decodes when asked, and differs.
    let vae = pipe
        .generate(gpu, &sneaker_seeded(), &mut |_| true)
        .unwrap();
    assert!(psnr(&vae.image, &out.image) < 40.0);

    let mut xlp = Pipeline::load(gpu, &fixtures().join("sdxl-tiny"), WeightDType::Auto).unwrap();
    xlp.set_tiny_autoencoder(gpu, Some(&f4), WeightDType::Auto)
        .unwrap();
    let xg = Weights::open_file(&fixtures().join("sdxl-tiny-golden.safetensors")).unwrap();
    let out = xlp
        .generate(
            gpu,
            &Request {
                decoder: Decoder::Tiny,
                ..crate::sdxl::neg_request(&xg)
            },
            &mut |_| true,
        )
        .unwrap();
    let want = g.read_f32("sdxl_image", &[1, 32, 32, 3]).unwrap();
    let p = psnr(&out.image, &want);
    eprintln!("sdxl with the tiny decoder: {p:.1} dB against diffusers");
    assert!(p >= 40.0, "{p} dB");
}

fn sneaker_seeded() -> Request {
    Request {
        seed: 42,
        ..sneaker(4)
    }
}

/// `sd-wgpu generate --taesd … --preview-decoder taesd`: the image is diffusers' (through
/// 8-bit PNG), the preview a full-size PNG; asking for TAESD previews without one is a clear
/// error.
#[test]
fn taesd_cli_decodes_and_previews() {
    let dir = std::env::temp_dir().join(format!("sd-wgpu-taesd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (out, preview) = (dir.join("out.png"), dir.join("preview.png"));
    let run = crate::pipeline::sd1_cli("a red sneaker on a white table", 4)
        .args([
            "--seed",
            "42",
            "--preview-every",
            "2",
            "--preview-decoder",
            "taesd",
        ])
        .arg("--taesd")
        .arg(fixtures().join("taesd-f4-tiny"))
        .arg("--preview")
        .arg(&preview)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (w, h, rgb) = sd_wgpu::imageio::read_image_rgb(&out).unwrap();
    assert_eq!((w, h), (32, 32));
    let want = golden().read_f32("sd1_image", &[1, 32, 32, 3]).unwrap();
    let p = psnr(&rgb, &want);
    assert!(p >= 40.0, "{p} dB");
    let (pw, ph, _) = sd_wgpu::imageio::read_image_rgb(&preview).unwrap();
    assert_eq!((pw, ph), (32, 32));
    let bad = crate::pipeline::sd1_cli("a red sneaker", 2)
        .args(["--preview-every", "1", "--preview-decoder", "taesd"])
        .arg("--preview")
        .arg(dir.join("p2.png"))
        .arg("--out")
        .arg(dir.join("o2.png"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("preview_decoder"),
        "{err}"
    );
    assert!(!dir.join("o2.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
