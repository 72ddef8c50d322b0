//! Prompt weighting and long prompts against the reference's weighted encoding, and batches
//! (one seeded draw for N images) against diffusers' `num_images_per_prompt`.

use crate::common::*;
use crate::pipeline::{fixtures, png_parameters, read_png_rgb, sd1_tiny, sneaker};
use sd_wgpu::pipeline::Request;
use sd_wgpu::weights::Weights;

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
    let status = crate::pipeline::sd1_cli("a red sneaker on a white table", 3)
        .args([
            "--seed",
            "7",
            "--batch-size",
            "2",
            "--batch-count",
            "2",
            "--out",
        ])
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
