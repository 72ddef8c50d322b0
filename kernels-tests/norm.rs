use crate::common::*;
use sd_wgpu::{DType, Recorder, ops, reference};

#[test]
fn group_norm_matches_reference() {
    for gpu in gemm_loop_gpus() {
        group_norm_matches_reference_on(gpu);
    }
}

/// On each device of `gemm_loop_gpus`: CPU devices run the one-subgroup variant, the other
/// device the workgroup-wide kernel that GPUs use; groups of a multiple of 4 channels are read
/// four at a time (as 64-bit words where `Gpu::load64`).
fn group_norm_matches_reference_on(gpu: &sd_wgpu::Gpu) {
    // (name, [n, hw, c], groups, silu, mean offset of the data)
    let cases: &[(&str, [usize; 3], usize, bool, f32)] = &[
        ("sd 2x64x64x320 g32 silu", [2, 4096, 320], 32, true, 0.0),
        ("sd 1x16x16x1280 g32", [1, 256, 1280], 32, false, 0.0),
        (
            "large mean 1e3 (two-pass)",
            [1, 1024, 64],
            32,
            false,
            1000.0,
        ),
        ("odd 3x5x6 g3 silu", [3, 5, 6], 3, true, 0.5),
        // GPUs split large groups over workgroups (merged statistics): a VAE-sized norm
        // (16 splits), a last split shorter than the others, a large mean across splits.
        ("vae 1x128x128x128 g32 silu", [1, 16384, 128], 32, true, 0.0),
        ("split edges 2x3001x12 g4 silu", [2, 3001, 12], 4, true, 0.3),
        ("large mean 1e3 split", [1, 8192, 64], 32, false, 1000.0),
        (
            "large mean 1e3 vec4 2x2048x256 g32",
            [2, 2048, 256],
            32,
            false,
            1000.0,
        ),
        ("vec4 odd pixels 3x37x24 g2 silu", [3, 37, 24], 2, true, 0.2),
        // CPU devices take whole 16-channel lines (four groups of 4 channels, two of 8) or
        // 32 (a group of 32) per subgroup: odd pixel counts, a large mean.
        (
            "quads 4-channel groups odd pixels 2x37x32 g8",
            [2, 37, 32],
            8,
            true,
            0.1,
        ),
        (
            "quads vae 1x64x512 g32 large mean",
            [1, 64, 512],
            32,
            false,
            1000.0,
        ),
        (
            "quads 32-channel groups 3x9x64 g2 silu",
            [3, 9, 64],
            2,
            true,
            0.0,
        ),
        ("single pixel, 1 group", [2, 1, 7], 1, false, 0.0),
    ];
    for (ci, &(name, [n, hw, c], groups, silu, offset)) in cases.iter().enumerate() {
        for seed in [1u64, 2] {
            let mut rng = Rng::new(seed * 7 + ci as u64);
            let x: Vec<f32> = rng
                .normals(n * hw * c, 1.0)
                .iter()
                .map(|v| v + offset)
                .collect();
            let gamma = rng.normals(c, 1.0);
            let beta = rng.normals(c, 1.0);
            let xt = upload_to(gpu, &x, &[n, hw, c], DType::F32, "x");
            let (gt, bt) = (
                upload_to(gpu, &gamma, &[c], DType::F32, "norm.weight"),
                upload_to(gpu, &beta, &[c], DType::F32, "norm.bias"),
            );
            let mut rec = Recorder::new(gpu);
            let y = ops::group_norm(&mut rec, &xt, groups, &gt, &bt, 1e-5, silu).unwrap();
            let labels: Vec<String> = rec
                .dispatches()
                .iter()
                .map(|d| d.kernel.key.label())
                .collect();
            // The plain kernel (not the GPUs' splits) reads four channels at a time where the
            // groups have a multiple of 4.
            if labels.iter().all(|l| l.starts_with("group_norm:main")) {
                let cg = c / groups;
                let vec4 = cg % 4 == 0;
                let wide = vec4 && gpu.load64();
                let quads = gpu.gemm_variant() == sd_wgpu::gpu::GemmVariant::Subgroup
                    && matches!(cg, 4 | 8 | 16 | 32);
                let has = |f: &str| labels.iter().any(|l| l.contains(f));
                assert_eq!(
                    (has("VEC4"), ran_load64(&rec), has("QUADS")),
                    (vec4, wide, quads),
                    "{} {name}: vec4, 64-bit loads, quads",
                    core_name(gpu)
                );
            }
            let got = run(rec, &y);
            let want = reference::group_norm(&x, n, hw, c, groups, &gamma, &beta, 1e-5, silu);
            // |x - mean| reaches ~5σ; the large-mean case loses ~1e-4 of mean in f32 inputs.
            let atol = if offset > 100.0 { 2e-3 } else { 1e-4 };
            check(
                &format!("group_norm {} {name} seed {seed}", core_name(gpu)),
                &got,
                &want,
                atol,
                1e-4,
            );
        }
    }
}

#[test]
fn layer_norm_matches_reference() {
    for gpu in gemm_gpus() {
        layer_norm_matches_reference_on(gpu);
    }
}

/// On each device of `gemm_gpus`: CPU devices run the one-subgroup variant, the other
/// device the workgroup-wide kernel that GPUs use.
fn layer_norm_matches_reference_on(gpu: &sd_wgpu::Gpu) {
    let cases: &[(&str, usize, usize)] = &[
        ("sd 2x4096 x 320", 2 * 4096, 320),
        ("clip 2x77 x 768", 2 * 77, 768),
        ("sd 2x256 x 1280", 512, 1280),
        ("odd 3 x 5", 3, 5),
        ("c = 1", 4, 1),
    ];
    for (ci, &(name, rows, c)) in cases.iter().enumerate() {
        let mut rng = Rng::new(11 + ci as u64);
        let x: Vec<f32> = rng.normals(rows * c, 2.0).iter().map(|v| v + 3.0).collect();
        let gamma = rng.normals(c, 1.0);
        let beta = rng.normals(c, 1.0);
        let xt = upload_to(gpu, &x, &[rows, c], DType::F32, "x");
        let (gt, bt) = (
            upload_to(gpu, &gamma, &[c], DType::F32, "ln.weight"),
            upload_to(gpu, &beta, &[c], DType::F32, "ln.bias"),
        );
        let mut rec = Recorder::new(gpu);
        let y = ops::layer_norm(&mut rec, &xt, &gt, &bt, 1e-5).unwrap();
        let got = run(rec, &y);
        check(
            &format!("layer_norm {:?} {name}", gpu.gemm_variant()),
            &got,
            &reference::layer_norm(&x, c, &gamma, &beta, 1e-5),
            1e-4,
            1e-4,
        );
    }
}

#[test]
fn norms_reject_bad_input() {
    let gpu = gpu();
    let x = upload(&[0.0; 2 * 4 * 6], &[2, 4, 6], DType::F32, "h");
    let g = upload(&[1.0; 6], &[6], DType::F32, "norm1.weight");
    let b5 = upload(&[0.0; 5], &[5], DType::F32, "norm1.bias");
    let mut rec = Recorder::new(gpu);
    let e = ops::group_norm(&mut rec, &x, 4, &g, &g, 1e-5, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("4 groups"), "{e}");
    let e = ops::group_norm(&mut rec, &x, 3, &g, &b5, 1e-5, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("norm1.bias"), "{e}");
    let e = ops::layer_norm(&mut rec, &x, &g, &b5, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("norm1.bias"), "{e}");
}
