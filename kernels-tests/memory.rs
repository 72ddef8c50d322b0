//! What a run holds and gives back: previews and cancellation, weights shared between
//! pipelines on one device, and memory estimates equal to the real peak with the budget
//! enforced.

use crate::common::*;
use crate::pipeline::{fixtures, sd1_tiny, sneaker};
use sd_wgpu::pipeline::{Pipeline, Request};
use sd_wgpu::weights::Weights;

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
    let mut pipe = sd1_tiny(&own);
    // Every network stays loaded (`offload.rs` tests the other policies).
    pipe.offload = sd_wgpu::pipeline::Offload::Never;
    pipe.set_tiny_autoencoder(
        &own,
        Some(&fixtures().join("taesd-f4-tiny")),
        sd_wgpu::weights::WeightDType::Auto,
    )
    .unwrap();
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
            "txt2img dpm++ sde: tiny decoder and tiny previews every step",
            Request {
                sampler: Some(SamplerKind::DpmSde),
                decoder: sd_wgpu::pipeline::Decoder::Tiny,
                preview_decoder: sd_wgpu::pipeline::PreviewDecoder::Tiny,
                preview_every: 1,
                ..sneaker(3)
            },
        ),
        (
            "txt2img 128x96 with the VAE in 32 px tiles",
            Request {
                width: 128,
                height: 96,
                vae_tiling: sd_wgpu::pipeline::VaeTiling::On,
                vae_tile_size: Some(32),
                ..sneaker(2)
            },
        ),
        (
            "txt2img unipc batch 2",
            Request {
                sampler: Some(SamplerKind::UniPc),
                batch_size: 2,
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
        // Every network kept: with the default `--offload auto` this batch runs offloaded.
        .args([
            "--batch-size",
            "4",
            "--memory-budget",
            "8MiB",
            "--offload",
            "never",
        ])
        .arg("--out")
        .arg(&out_png)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{err}");
    assert!(err.contains("device memory: "), "{err}");
    assert!(
        err.contains("above the memory budget of 8.0 MiB (--memory-budget)"),
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
