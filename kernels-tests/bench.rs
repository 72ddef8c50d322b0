//! `sd-wgpu bench`: the whole-model benchmark runs on any adapter with nothing but the binary
//! (random weights for SD 1.5 / 2.1), reports every figure the README's speed tables use, and
//! its analytic FLOP count is the U-Net's.

use sd_wgpu::bench::{BenchArch, BenchOptions};
use sd_wgpu::models::unet::UNetConfig;

/// The JSON fields `--json` promises.
const FIELDS: [&str; 17] = [
    "adapter",
    "arch",
    "width",
    "height",
    "batch",
    "steps",
    "dtype",
    "text_encoder_s",
    "context_projection_s",
    "denoise_s",
    "vae_decode_s",
    "s_per_step",
    "unet_flop_per_step",
    "achieved_tflops",
    "cpu_record_s_per_step",
    "dispatches_per_step",
    "peak_device_bytes",
];

/// `sd-wgpu bench --arch builtin --json ARGS`, parsed.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
        .args(["bench", "--arch", "builtin", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bench_cli_reports_the_built_in_model() {
    let v = bench_json(&["--steps", "3"]);
    for k in FIELDS {
        assert!(!v[k].is_null(), "no `{k}` in {v}");
    }
    assert_eq!(
        (v["arch"].as_str(), v["width"].as_u64()),
        (Some("builtin"), Some(32))
    );
    assert_eq!(v["steps"].as_u64(), Some(3));
    for k in [
        "text_encoder_s",
        "context_projection_s",
        "denoise_s",
        "vae_decode_s",
        "s_per_step",
        "achieved_tflops",
    ] {
        let x = v[k].as_f64().unwrap();
        assert!(x.is_finite() && x > 0.0, "{k} = {x}");
    }
    // The built-in U-Net at 8×8 latents, both guidance halves.
    let cfg = UNetConfig::from_file(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets/fashion-model/unet/config.json"),
    )
    .unwrap();
    assert_eq!(
        v["unet_flop_per_step"].as_f64().unwrap(),
        2.0 * cfg.flops_per_image(8, 8, 77)
    );
    assert!(v["dispatches_per_step"].as_f64().unwrap() >= 50.0, "{v}");
    assert!(v["peak_device_bytes"].as_u64().unwrap() > v["weight_bytes"].as_u64().unwrap());
    // The engine's estimate is the real peak, to the byte.
    assert_eq!(v["peak_device_bytes"], v["estimate_bytes"], "{v}");
    assert_eq!(v["offload"], false, "{v}");
    // The table form names the same run.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
        .args(["bench", "--arch", "builtin", "--steps", "2"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("s/step") && table.contains("GFLOP/s achieved"),
        "{table}"
    );

    // --profile: one warm run timed dispatch by dispatch.
    let v = bench_json(&["--steps", "2", "--profile"]);
    let p = &v["profile"];
    let stages: Vec<&str> = p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        ["text encoder", "context projection", "step 1", "VAE decode"],
        "{p}"
    );
    let step = p["step_gpu_s"].as_f64().unwrap();
    let families = p["families"].as_array().unwrap();
    let sum: f64 = families.iter().map(|f| f["gpu_s"].as_f64().unwrap()).sum();
    assert!(
        step > 0.0 && (sum - step).abs() <= 1e-9 * step.max(1.0),
        "{p}"
    );
    let names: Vec<&str> = families
        .iter()
        .map(|f| f["family"].as_str().unwrap())
        .collect();
    // (No layer-norm family on CPU devices: there the projections' GEMMs normalise their
    // input, `ops::linear_layer_norm`.)
    for f in ["conv2d", "matmul", "attention", "group-norm", "elementwise"] {
        assert!(names.contains(&f), "no {f} in {names:?}");
    }
    let dispatches: u64 = families
        .iter()
        .map(|f| f["dispatches"].as_u64().unwrap())
        .sum();
    assert_eq!(
        dispatches as f64,
        v["dispatches_per_step"].as_f64().unwrap()
    );
    let top: Vec<f64> = p["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["gpu_s"].as_f64().unwrap())
        .collect();
    assert_eq!(top.len(), 10);
    assert!(top.windows(2).all(|w| w[0] >= w[1]), "{top:?}");
    // generate --profile prints the last step's table.
    let dir = std::env::temp_dir().join(format!("sd-wgpu-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sd-wgpu"))
        .args([
            "generate",
            "--prompt",
            "a red dress",
            "--steps",
            "2",
            "--profile",
            "--out",
        ])
        .arg(dir.join("p.png"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("step 2 by op family"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Full-size SD 1.5 with random weights made here: no checkpoint, every tensor the networks
/// ask for, finite outputs (the run fails on NaN / Inf), the weights' size as SD 1.5's.
#[test]
fn bench_builds_sd15_with_random_weights() {
    // A device of its own: the peak must be this run's alone.
    let own = sd_wgpu::Gpu::new().expect("GPU tests need a wgpu adapter");
    let r = sd_wgpu::bench::run(
        &own,
        &BenchOptions {
            arch: BenchArch::Sd15,
            width: Some(64),
            height: Some(64),
            batch: 1,
            steps: 1,
            sampler: Some(sd_wgpu::schedulers::SamplerKind::Ddim { eta: 0.0 }),
            f16: true,
            guidance: 1.0,
            seed: 3,
            builtin_path: sd_wgpu::bench::builtin_model_dir().to_path_buf(),
            profile: false,
            // Each network loaded for its stage: the peak is below the weights' sum.
            offload: sd_wgpu::pipeline::Offload::Always,
            // A TAESD-sized tiny decoder of random weights decodes the latents too.
            taesd: true,
        },
    )
    .unwrap();
    assert_eq!((r.arch, r.width, r.height, r.steps), ("sd15", 64, 64, 1));
    assert!(r.taesd_decode_s.is_some_and(|s| s > 0.0));
    assert_eq!(
        r.unet_flop_per_step,
        UNetConfig::sd15().flops_per_image(8, 8, 77)
    );
    // CLIP ViT-L text encoder 123 M + U-Net 860 M + VAE decoder 49 M parameters in f16,
    // in the pool's size classes (≤ 12.5 % rounding).
    let gib = r.weight_bytes as f64 / (1u64 << 30) as f64;
    assert!((1.8..2.3).contains(&gib), "{gib} GiB of weights");
    assert!(r.offload);
    assert_eq!(r.peak_device_bytes, r.estimate_bytes);
    assert!(
        r.peak_device_bytes < r.weight_bytes,
        "offloaded peak {} vs {} of weights",
        r.peak_device_bytes,
        r.weight_bytes
    );
}

/// Full-size SDXL base (random weights of its diffusers configs) at 1024² in f16 with f16
/// activations, each network loaded for its stage (the text encoders released after
/// encoding), one guided step: the engine's estimate is the real peak and fits an 8 GB card
/// (issue 13: ≤ 7.5 GiB). On demand — about an hour on lavapipe:
/// `cargo test --release --test kernels -- --ignored sdxl_1024_fits_8gb --nocapture`.
#[test]
#[ignore = "full-size SDXL at 1024²: about an hour on lavapipe"]
fn sdxl_1024_fits_8gb() {
    use sd_wgpu::pipeline::{Offload, Pipeline, Request};
    let own = sd_wgpu::Gpu::with_options(&sd_wgpu::GpuOptions {
        f16_activations: Some(true),
        ..Default::default()
    })
    .expect("GPU tests need a wgpu adapter");
    let weights = sd_wgpu::weights::Synthetic { seed: 3, f16: true };
    let arch = sd_wgpu::models::arch::Architecture::sdxl().unwrap();
    let mut pipe = Pipeline::synthetic(
        &own,
        "synthetic SDXL",
        arch,
        weights,
        sd_wgpu::weights::WeightDType::F16,
    )
    .unwrap();
    pipe.offload = Offload::Always;
    let req = Request {
        prompt: "a red sneaker on a white table".into(),
        steps: 1,
        guidance: 5.0,
        width: 1024,
        height: 1024,
        ..Request::default()
    };
    // The run starts with no network on the device (it loads each for its stage): the peak
    // is counted from there, not from the weights the synthetic load left resident.
    pipe.release_models(&own);
    own.trim_pool();
    let est = pipe.memory_estimate(&own, &req).unwrap();
    own.reset_peak_memory();
    let t = std::time::Instant::now();
    let out = pipe.generate(&own, &req, &mut |_| true).unwrap();
    let peak = own.memory_stats().peak;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    eprintln!(
        "SDXL 1024² f16 offloaded, 1 step: estimate {:.2} GiB, peak {:.2} GiB, {:.0} s ({:?})",
        gib(est.total()),
        gib(peak),
        t.elapsed().as_secs_f64(),
        out.timings
    );
    assert!(est.offload && out.image.iter().all(|v| v.is_finite()));
    assert_eq!(peak, est.total());
    assert!(gib(peak) <= 7.5);
}
