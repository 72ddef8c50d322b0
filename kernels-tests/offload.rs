//! Offload: each network on the device only for its stage (`Pipeline::offload`).

use crate::pipeline::{fixtures, sd1_tiny, sneaker};
use sd_wgpu::pipeline::{InitImage, Offload, Request};

fn budget(bytes: u64) -> Option<sd_wgpu::MemoryBudget> {
    Some(sd_wgpu::MemoryBudget {
        bytes,
        source: "the test's".into(),
    })
}

/// `Always`: the estimate is the pool's real peak, the images and latents are the resident
/// run's exactly, the peak is below the resident run's, and no network stays on the device
/// after the run (txt2img, and img2img with the VAE encoder).
#[test]
fn offloaded_runs_match_resident_runs_and_their_estimates() {
    // A device of its own: the other tests' buffers would count in the shared one's pool.
    let own = sd_wgpu::Gpu::new().expect("GPU tests need a wgpu adapter");
    own.set_memory_budget(None);
    let mut pipe = sd1_tiny(&own);
    let (_, _, rgb) =
        sd_wgpu::imageio::read_image_rgb(&fixtures().join("img2img-input.png")).unwrap();
    let cases = [
        (
            "txt2img batch 2",
            Request {
                batch_size: 2,
                ..sneaker(3)
            },
        ),
        (
            "img2img euler",
            Request {
                sampler: Some(sd_wgpu::schedulers::SamplerKind::Euler),
                init_image: Some(InitImage::new(rgb, 0.7)),
                ..sneaker(4)
            },
        ),
    ];
    for (name, req) in &cases {
        pipe.offload = Offload::Never;
        let want = pipe.generate(&own, req, &mut |_| true).unwrap();
        own.trim_pool();
        let never = pipe.memory_estimate(&own, req).unwrap();
        pipe.offload = Offload::Always;
        let est = pipe.memory_estimate(&own, req).unwrap();
        assert!(est.offload && !never.offload, "{name}");
        let weights = pipe.model_bytes();
        assert!(weights > 0, "{name}");
        assert_eq!(est.resident + weights, never.resident, "{name}");
        // Measured from where such a run starts: every network released.
        pipe.release_models(&own);
        assert_eq!(pipe.model_bytes(), 0);
        let before = own.memory_stats();
        assert_eq!(before.in_use, est.resident, "{name}");
        own.reset_peak_memory();
        let got = pipe.generate(&own, req, &mut |_| true).unwrap();
        let real = own.memory_stats().peak - before.allocated;
        eprintln!(
            "{name}: offloaded {} bytes (estimate {}), resident {} bytes",
            before.in_use + real,
            est.total(),
            never.total()
        );
        assert_eq!(
            est.request, real,
            "{name}: estimate vs the pool's real peak"
        );
        assert!(est.total() < never.total(), "{name}");
        assert_eq!(got.latents, want.latents, "{name}");
        assert_eq!(got.image, want.image, "{name}");
        assert_eq!(pipe.model_bytes(), 0, "{name}: a network stayed loaded");
        assert_eq!(own.memory_stats().in_use, before.in_use, "{name}");
        assert_eq!(own.memory_stats().allocated, before.allocated, "{name}");
    }
}

/// `Auto`: networks stay while the request fits beside them; a budget that holds the request
/// only with idle networks released runs it that way (within the budget, the same image); a
/// smaller one is refused naming the mode, before anything is allocated; `Never` refuses
/// what `Auto` runs.
#[test]
fn auto_offload_runs_what_fits_only_with_networks_released() {
    let own = sd_wgpu::Gpu::new().expect("GPU tests need a wgpu adapter");
    own.set_memory_budget(None);
    let mut pipe = sd1_tiny(&own);
    let req = sneaker(3);
    pipe.offload = Offload::Never;
    let want = pipe.generate(&own, &req, &mut |_| true).unwrap();
    own.trim_pool();
    pipe.offload = Offload::Auto;
    let never = pipe.memory_estimate_with(&own, &req, false).unwrap();
    let always = pipe.memory_estimate_with(&own, &req, true).unwrap();
    assert!(!pipe.memory_estimate(&own, &req).unwrap().offload);
    assert!(always.total() < never.total());

    own.set_memory_budget(budget(never.total() - 1));
    let planned = pipe.memory_estimate(&own, &req).unwrap();
    assert!(planned.offload && planned.fits());
    pipe.offload = Offload::Never;
    let before = own.memory_stats();
    let e = pipe.generate(&own, &req, &mut |_| true).err().unwrap();
    assert!(matches!(e, sd_wgpu::Error::Memory { .. }), "{e}");
    assert_eq!(own.memory_stats(), before);
    pipe.offload = Offload::Auto;
    own.reset_peak_memory();
    let got = pipe.generate(&own, &req, &mut |_| true).unwrap();
    assert!(own.memory_stats().peak < never.total());
    assert_eq!(got.image, want.image);
    assert_eq!(pipe.model_bytes(), 0);

    own.set_memory_budget(budget(always.total() - 1));
    let before = own.memory_stats();
    let e = pipe.generate(&own, &req, &mut |_| true).err().unwrap();
    let msg = e.to_string();
    assert!(msg.contains("only for its stage"), "{msg}");
    assert_eq!(own.memory_stats(), before);
    own.set_memory_budget(None);
}
