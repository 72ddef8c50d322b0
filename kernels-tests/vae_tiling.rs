//! The tiled VAE against diffusers' `enable_tiling` at a 32 px tile (6 × 6 tiles on a 128²
//! image; `tools/make_vae_tiling_fixture.py`): decode and encode alone, text-to-image and
//! image-to-image through the pipeline, and the automatic fallback when the exact decode
//! would not fit the memory budget.

use crate::common::*;
use crate::pipeline::{fixtures, sd1_tiny, sneaker};
use sd_wgpu::models::vae::{AutoencoderKLConfig, VaeDecoder, VaeEncoder};
use sd_wgpu::pipeline::tiling::{TileGeometry, run_tiled};
use sd_wgpu::pipeline::{InitImage, Request, VaeTiling};
use sd_wgpu::weights::{WeightDType, Weights};
use sd_wgpu::{DType, Recorder};

fn golden() -> Weights {
    Weights::open_file(&fixtures().join("vae-tiling-golden.safetensors")).unwrap()
}

#[test]
fn tiled_vae_matches_diffusers() {
    let gpu = gpu();
    let dir = fixtures().join("sd1-tiny/vae");
    let cfg = AutoencoderKLConfig::from_file(&dir.join("config.json")).unwrap();
    let w = Weights::open_file(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let g = golden();
    let dec = VaeDecoder::load(gpu, &w, "", &cfg, WeightDType::Auto).unwrap();
    let geo = TileGeometry::decode(32, 4).unwrap();
    for (name, [n, c, h, wd]) in [("sq", [1, 4, 32, 32]), ("wide2", [2, 4, 24, 40])] {
        let z = nhwc(
            &g.read_f32(&format!("latents_{name}"), &[n, c, h, wd])
                .unwrap(),
            [n, c, h, wd],
        );
        let (img, shape) = run_tiled(gpu, &z, [n, h, wd, c], &geo, |t| {
            let mut rec = Recorder::new(gpu);
            let img = dec.forward(&mut rec, t)?;
            rec.submit()?;
            Ok(img)
        })
        .unwrap();
        assert_eq!(shape, [n, 4 * h, 4 * wd, 3], "{name}");
        let want = nhwc(
            &g.read_f32(&format!("decoded_{name}"), &[n, 3, 4 * h, 4 * wd])
                .unwrap(),
            [n, 3, 4 * h, 4 * wd],
        );
        check(&format!("tiled decode {name}"), &img, &want, 1e-4, 1e-4);
    }
    let enc = VaeEncoder::load(gpu, &w, "", &cfg, WeightDType::Auto).unwrap();
    let x = nhwc(
        &g.read_f32("image", &[1, 3, 128, 128]).unwrap(),
        [1, 3, 128, 128],
    );
    let (m, shape) = run_tiled(
        gpu,
        &x,
        [1, 128, 128, 3],
        &TileGeometry::encode(32, 4).unwrap(),
        |t| {
            let mut rec = Recorder::new(gpu);
            let m = enc.forward(&mut rec, t)?;
            rec.submit()?;
            Ok(m)
        },
    )
    .unwrap();
    assert_eq!(shape, [1, 32, 32, 8]);
    let (mean, logvar): (Vec<f32>, Vec<f32>) = (
        m.chunks_exact(8).flat_map(|p| p[..4].to_vec()).collect(),
        m.chunks_exact(8).flat_map(|p| p[4..].to_vec()).collect(),
    );
    let want = |k: &str| nhwc(&g.read_f32(k, &[1, 4, 32, 32]).unwrap(), [1, 4, 32, 32]);
    check("tiled encode mean", &mean, &want("enc_mean"), 1e-4, 1e-4);
    check(
        "tiled encode logvar",
        &logvar,
        &want("enc_logvar"),
        1e-4,
        1e-4,
    );
    // A tile that does not divide into the VAE's geometry is refused, naming the field.
    let e = TileGeometry::decode(40, 4).unwrap_err().to_string();
    assert!(e.contains("vae_tile_size") && e.contains("16 px"), "{e}");
    let _ = DType::F32;
}

/// The pipelines with tiling at 128² (diffusers with `vae.enable_tiling()`, 32 px tiles):
/// text-to-image (tiled decode) and image-to-image (tiled encode and decode); the exact run
/// differs; `Auto` tiles by itself only when the exact decode exceeds the budget.
#[test]
fn tiled_vae_pipelines_match_diffusers_and_fall_back_automatically() {
    let own = sd_wgpu::Gpu::new().expect("GPU tests need a wgpu adapter");
    let pipe = sd1_tiny(&own);
    let g = golden();
    let t2i = Request {
        seed: 42,
        width: 128,
        height: 128,
        vae_tile_size: Some(32),
        ..sneaker(3)
    };
    let tiled = Request {
        vae_tiling: VaeTiling::On,
        ..t2i.clone()
    };
    let out = pipe.generate(&own, &tiled, &mut |_| true).unwrap();
    let want = g.read_f32("t2i_128", &[1, 128, 128, 3]).unwrap();
    let p = psnr(&out.image, &want);
    eprintln!("tiled text-to-image 128²: {p:.1} dB against diffusers");
    assert!(p >= 40.0, "{p} dB");
    assert_eq!(out.vae_tiled_automatically, None);
    let exact = pipe.generate(&own, &t2i, &mut |_| true).unwrap();
    assert!(
        psnr(&exact.image, &out.image) < 60.0,
        "tiling changes the image"
    );
    assert_eq!(exact.latents, out.latents);

    let (_, _, rgb) =
        sd_wgpu::imageio::read_image_rgb(&fixtures().join("img2img-input-128.png")).unwrap();
    let i2i = Request {
        init_image: Some(InitImage::new(rgb, 0.6)),
        ..sneaker(4)
    };
    let out = pipe
        .generate(
            &own,
            &Request {
                seed: 42,
                width: 128,
                height: 128,
                vae_tiling: VaeTiling::On,
                vae_tile_size: Some(32),
                ..i2i
            },
            &mut |_| true,
        )
        .unwrap();
    let want = g.read_f32("i2i_128", &[1, 128, 128, 3]).unwrap();
    let p = psnr(&out.image, &want);
    eprintln!("tiled image-to-image 128²: {p:.1} dB against diffusers");
    assert!(p >= 40.0, "{p} dB");

    // A budget between the tiled and the exact run's needs: Auto tiles, Off is refused.
    own.trim_pool();
    let need_exact = pipe.memory_estimate(&own, &t2i).unwrap().total();
    let need_tiled = pipe.memory_estimate(&own, &tiled).unwrap().total();
    assert!(need_tiled < need_exact, "{need_tiled} vs {need_exact}");
    own.set_memory_budget(Some(sd_wgpu::MemoryBudget {
        bytes: need_tiled,
        source: "the test's".into(),
    }));
    let auto = pipe.generate(&own, &t2i, &mut |_| true).unwrap();
    assert_eq!(auto.vae_tiled_automatically, Some(32));
    let want = g.read_f32("t2i_128", &[1, 128, 128, 3]).unwrap();
    assert!(psnr(&auto.image, &want) >= 40.0);
    let off = Request {
        vae_tiling: VaeTiling::Off,
        ..t2i
    };
    let e = pipe.generate(&own, &off, &mut |_| true).err().unwrap();
    assert!(matches!(e, sd_wgpu::Error::Memory { .. }), "{e}");
}
