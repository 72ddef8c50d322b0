use crate::common::*;
use sd_wgpu::{DType, Recorder, ops, reference};

struct Case {
    name: &'static str,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    b_batched: bool,
    bias: bool,
    w: DType,
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // SD 1.5 shapes: attention projection at 64×64 latents (batch 2 for guidance), cross-attn
    // key/value projection of the 77-token context, feed-forward at 32×32 with f16 weights.
    Case { name: "sd to_q 2x4096x320·320x320", batch: 2, m: 4096, n: 320, k: 320, b_batched: false, bias: false, w: DType::F32 },
    Case { name: "sd to_k 2x77x768·768x320", batch: 2, m: 77, n: 320, k: 768, b_batched: false, bias: false, w: DType::F32 },
    Case { name: "sd ff f16 2x1024x640·640x1280+b", batch: 2, m: 1024, n: 1280, k: 640, b_batched: false, bias: true, w: DType::F16 },
    Case { name: "sd time_emb 2x320·320x1280+b f16", batch: 1, m: 2, n: 1280, k: 320, b_batched: false, bias: true, w: DType::F16 },
    // Odd shapes: nothing a multiple of the 64-wide tile, 1-element edges, batched B.
    Case { name: "odd 3x37x53·53x29 batched+b", batch: 3, m: 37, n: 29, k: 53, b_batched: true, bias: true, w: DType::F32 },
    Case { name: "odd batched f16 odd k·n", batch: 2, m: 5, n: 7, k: 3, b_batched: true, bias: true, w: DType::F16 },
    Case { name: "1x1x1", batch: 1, m: 1, n: 1, k: 1, b_batched: false, bias: true, w: DType::F32 },
    Case { name: "column 65x1·1x67", batch: 1, m: 65, n: 67, k: 1, b_batched: false, bias: false, w: DType::F32 },
    Case { name: "dot 1x1000·1000x1", batch: 1, m: 1, n: 1, k: 1000, b_batched: false, bias: false, w: DType::F32 },
    Case { name: "tile edge 64x64·64x64 +1", batch: 1, m: 65, n: 65, k: 65, b_batched: false, bias: true, w: DType::F16 },
    // Multiples of 4 (the subgroup core's vectorised loop) with partial 16×32 tiles.
    Case { name: "vec4 edges 2x21x36·36x44 batched+b", batch: 2, m: 21, n: 44, k: 36, b_batched: true, bias: true, w: DType::F32 },
    Case { name: "vec4 edges f16 3x19x20·20x12 +b", batch: 3, m: 19, n: 12, k: 20, b_batched: false, bias: true, w: DType::F16 },
];

#[test]
fn matmul_and_its_residual_epilogue_match_reference() {
    // Activations (A, C, the residual) in f32, and in f16 (one seed): read into f32, one
    // rounding when stored, so f16 adds ~2^-11 relative error to the output.
    for gpu in gemm_loop_gpus() {
        let core = core_name(gpu);
        for (act, seeds, rtol) in [
            (DType::F32, &[1u64, 2][..], 1e-4),
            (DType::F16, &[1], 1.5e-3),
        ] {
            for (ci, c) in CASES.iter().enumerate() {
                for &seed in seeds {
                    let mut rng = Rng::new(seed * 100 + ci as u64);
                    let mut a = rng.normals(c.batch * c.m * c.k, 1.0);
                    if act == DType::F16 {
                        a = round_f16(&a);
                    }
                    let b_count = if c.b_batched { c.batch } else { 1 };
                    let mut b = rng.normals(b_count * c.k * c.n, 1.0 / (c.k as f32).sqrt());
                    let mut bias = rng.normals(c.n, 0.5);
                    if c.w == DType::F16 {
                        b = round_f16(&b);
                        bias = round_f16(&bias);
                    }
                    let upload = |d: &[f32], s: &[usize], t, n: &str| upload_to(gpu, d, s, t, n);
                    let at = upload(&a, &[c.batch, c.m, c.k], act, "a");
                    let b_shape: Vec<usize> = if c.b_batched {
                        vec![c.batch, c.k, c.n]
                    } else {
                        vec![c.k, c.n]
                    };
                    let bt = upload(&b, &b_shape, c.w, "b");
                    let biast = upload(&bias, &[c.n], c.w, "bias");
                    let mut rec = Recorder::new(gpu);
                    let out = ops::matmul(&mut rec, &at, &bt, c.bias.then_some(&biast)).unwrap();
                    assert_eq!(out.shape(), [c.batch, c.m, c.n]);
                    assert_eq!(
                        ran_load64(&rec),
                        gpu.load64() && c.k % 4 == 0 && c.n % 4 == 0,
                        "{core} {}: 64-bit loads",
                        c.name
                    );
                    assert_eq!(out.dtype(), act);
                    let got = run(rec, &out);
                    let want = reference::matmul(
                        &a,
                        &b,
                        c.bias.then_some(&bias[..]),
                        c.batch,
                        c.m,
                        c.n,
                        c.k,
                        c.b_batched,
                    );
                    check(
                        &format!("matmul {core} {act:?} {} seed {seed}", c.name),
                        &got,
                        &want,
                        2e-5 * (c.k as f32).sqrt(),
                        rtol,
                    );
                    if c.b_batched {
                        continue;
                    }
                    // The residual epilogue: x·w + bias + r.
                    let mut r = rng.normals(c.batch * c.m * c.n, 1.0);
                    if act == DType::F16 {
                        r = round_f16(&r);
                    }
                    let rt = upload(&r, &[c.batch, c.m, c.n], act, "residual");
                    let mut rec = Recorder::new(gpu);
                    let out =
                        ops::linear_residual(&mut rec, &at, &bt, c.bias.then_some(&biast), &rt)
                            .unwrap();
                    let got = run(rec, &out);
                    let want: Vec<f32> = want.iter().zip(&r).map(|(w, r)| w + r).collect();
                    check(
                        &format!("matmul + residual {core} {act:?} {} seed {seed}", c.name),
                        &got,
                        &want,
                        2e-5 * (c.k as f32).sqrt(),
                        rtol,
                    );
                }
            }
        }
    }
}

#[test]
fn linear_rejects_bad_shapes_with_named_tensors() {
    let gpu = gpu();
    let x = upload(&[0.0; 6], &[2, 3], DType::F32, "x");
    let w = upload(&[0.0; 8], &[4, 2], DType::F32, "proj.weight");
    let mut rec = Recorder::new(gpu);
    let e = ops::linear(&mut rec, &x, &w, None).unwrap_err().to_string();
    assert!(e.contains("proj.weight") && e.contains("inner dims"), "{e}");
    let w3 = upload(&[0.0; 12], &[3, 4], DType::F32, "w");
    let bad_bias = upload(&[0.0; 3], &[3], DType::F32, "proj.bias");
    let e = ops::linear(&mut rec, &x, &w3, Some(&bad_bias))
        .unwrap_err()
        .to_string();
    assert!(e.contains("proj.bias"), "{e}");
    // f16 activations are fine (lavapipe has shader-f16), mixed with an f32 residual not.
    let xf16 = upload(&[0.0; 6], &[2, 3], DType::F16, "x16");
    let r32 = upload(&[0.0; 8], &[2, 4], DType::F32, "r32");
    let e = ops::linear_residual(&mut rec, &xf16, &w3, None, &r32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dtype") && e.contains("residual"), "{e}");
    let short = upload(&[0.0; 7], &[7], DType::F32, "short residual");
    let e = ops::linear_residual(
        &mut rec,
        &x,
        &upload(&[0.0; 12], &[3, 4], DType::F32, "w"),
        None,
        &short,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("short residual"), "{e}");
    assert!(rec.is_empty(), "failed ops must record nothing");
}

/// Operands that start anywhere in their buffer (views at offsets 1, 3 and 4 elements): the
/// subgroup core's vectorised loop needs 4-element alignment and must fall back, not misread.
#[test]
fn matmul_of_views_at_any_offset() {
    let (m, k, n) = (9, 12, 8);
    for gpu in gemm_loop_gpus() {
        let core = core_name(gpu);
        for off in [1usize, 3, 4] {
            let mut rng = Rng::new(off as u64);
            let a = rng.normals(off + m * k, 1.0);
            let b = rng.normals(off + k * n, 0.3);
            let at = upload_to(gpu, &a, &[off + m * k], DType::F32, "a");
            let bt = upload_to(gpu, &b, &[off + k * n], DType::F32, "b");
            let av = at.narrow0(off, m * k).unwrap().reshape(&[m, k]).unwrap();
            let bv = bt.narrow0(off, k * n).unwrap().reshape(&[k, n]).unwrap();
            let mut rec = Recorder::new(gpu);
            let out = ops::matmul(&mut rec, &av, &bv, None).unwrap();
            let got = run(rec, &out);
            let want = reference::matmul(&a[off..], &b[off..], None, 1, m, n, k, false);
            check(
                &format!("matmul {core} views at offset {off}"),
                &got,
                &want,
                1e-5,
                1e-4,
            );
        }
    }
}

/// `linear_columns`: windows of a fused weight `[k, 3c]` (self-attention's q | k | v) read in
/// place, with the fused bias — aligned windows take the vectorised loop, odd ones (c = 5)
/// the scalar one — against the product with the window cut out on the host.
#[test]
fn linear_columns_of_a_fused_weight_match_reference() {
    for gpu in gemm_loop_gpus() {
        let core = core_name(gpu);
        for (m, k, c, dt) in [
            (2 * 64, 48, 48, DType::F16),
            (37, 20, 5, DType::F32),
            (300, 320, 320, DType::F32),
        ] {
            let mut rng = Rng::new((m * k + c) as u64);
            let x = rng.normals(m * k, 1.0);
            let w = rng.normals(k * 3 * c, 0.3);
            let bias = rng.normals(3 * c, 0.5);
            let (w_r, b_r) = match dt {
                DType::F16 => (round_f16(&w), round_f16(&bias)),
                DType::F32 => (w.clone(), bias.clone()),
            };
            let xt = upload_to(gpu, &x, &[m, k], DType::F32, "x");
            let wt = upload_to(gpu, &w, &[k, 3 * c], dt, "to_q+to_k+to_v.weight");
            let bt = upload_to(gpu, &bias, &[3 * c], dt, "to_q+to_k+to_v.bias");
            for part in 0..3 {
                let cols = part * c..(part + 1) * c;
                let mut rec = Recorder::new(gpu);
                let y = ops::linear_columns(&mut rec, &xt, &wt, Some(&bt), cols.clone()).unwrap();
                assert_eq!(y.shape(), [m, c]);
                let got = run(rec, &y);
                let wp: Vec<f32> = (0..k)
                    .flat_map(|r| w_r[r * 3 * c + cols.start..r * 3 * c + cols.end].to_vec())
                    .collect();
                let want = reference::matmul(&x, &wp, Some(&b_r[cols.clone()]), 1, m, c, k, false);
                check(
                    &format!(
                        "linear_columns {core} {m}x{k} · [{k}x{}] cols {cols:?} {dt:?}",
                        3 * c
                    ),
                    &got,
                    &want,
                    1e-4,
                    1e-4,
                );
            }
            let mut rec = Recorder::new(gpu);
            let e = ops::linear_columns(&mut rec, &xt, &wt, None, 2 * c..3 * c + 1)
                .unwrap_err()
                .to_string();
            assert!(e.contains("to_q+to_k+to_v.weight"), "{e}");
        }
    }
}

/// `linear_geglu`: a feed-forward's second linear reading `geglu(p)` in place, with bias and
/// residual, on SD shapes (vectorised loads) and odd ones (scalar), f16 and f32 weights —
/// against GEGLU then the product on the host.
#[test]
fn linear_geglu_matches_reference() {
    for gpu in gemm_loop_gpus() {
        let core = core_name(gpu);
        for (rows, f, out, dt) in [
            (2 * 256, 1280, 320, DType::F16),
            (2 * 64, 192, 48, DType::F32),
            (7, 5, 3, DType::F32),
            (1, 1, 1, DType::F16),
        ] {
            let mut rng = Rng::new((rows * f + out) as u64);
            let p = rng.normals(rows * 2 * f, 1.5);
            let w = rng.normals(f * out, 1.0 / (f as f32).sqrt());
            let bias = rng.normals(out, 0.5);
            let res = rng.normals(rows * out, 1.0);
            let (w_r, b_r) = match dt {
                DType::F16 => (round_f16(&w), round_f16(&bias)),
                DType::F32 => (w.clone(), bias.clone()),
            };
            let pt = upload_to(gpu, &p, &[1, rows, 2 * f], DType::F32, "ff.net.0.proj.out");
            let wt = upload_to(gpu, &w, &[f, out], dt, "ff.net.2.weight");
            let bt = upload_to(gpu, &bias, &[out], dt, "ff.net.2.bias");
            let rt = upload_to(gpu, &res, &[1, rows, out], DType::F32, "residual");
            let mut rec = Recorder::new(gpu);
            let y = ops::linear_geglu(&mut rec, &pt, &wt, Some(&bt), Some(&rt)).unwrap();
            assert_eq!(y.shape(), [1, rows, out]);
            let got = run(rec, &y);
            let g = reference::geglu(&p, f);
            let want: Vec<f32> = reference::matmul(&g, &w_r, Some(&b_r), 1, rows, out, f, false)
                .iter()
                .zip(&res)
                .map(|(a, b)| a + b)
                .collect();
            check(
                &format!("linear_geglu {core} [{rows}x{}] -> {out} {dt:?}", 2 * f),
                &got,
                &want,
                1e-4,
                1e-4,
            );
        }
        let mut rec = Recorder::new(gpu);
        let odd = upload_to(gpu, &[0.0; 6], &[2, 3], DType::F32, "odd.proj.out");
        let w = upload_to(gpu, &[0.0; 3], &[1, 3], DType::F32, "w");
        let e = ops::linear_geglu(&mut rec, &odd, &w, None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("odd.proj.out"), "{e}");
    }
}

/// `linear_layer_norm`: a linear on a LayerNorm of its input — on CPU devices normalised as
/// the GEMM reads it (vectorised and scalar loads, rows with a large mean for the two-pass
/// statistics), elsewhere a norm pass then the product — against the host's norm then product.
#[test]
fn linear_layer_norm_matches_reference() {
    for gpu in gemm_loop_gpus() {
        let core = core_name(gpu);
        for (rows, c, out, dt, offset) in [
            (2 * 64, 48, 144, DType::F16, 0.0),
            (2 * 1024, 320, 960, DType::F32, 0.0),
            (37, 96, 40, DType::F32, 300.0),
            (5, 7, 3, DType::F32, 0.5),
        ] {
            let mut rng = Rng::new((rows * c + out) as u64);
            let x: Vec<f32> = rng
                .normals(rows * c, 2.0)
                .iter()
                .map(|v| v + offset)
                .collect();
            let gamma = rng.normals(c, 1.0);
            let beta = rng.normals(c, 1.0);
            let w = rng.normals(c * out, 1.0 / (c as f32).sqrt());
            let bias = rng.normals(out, 0.5);
            let (w_r, b_r) = match dt {
                DType::F16 => (round_f16(&w), round_f16(&bias)),
                DType::F32 => (w.clone(), bias.clone()),
            };
            let xt = upload_to(gpu, &x, &[1, rows, c], DType::F32, "hidden_states");
            let gt = upload_to(gpu, &gamma, &[c], DType::F32, "norm1.weight");
            let bt = upload_to(gpu, &beta, &[c], DType::F32, "norm1.bias");
            let wt = upload_to(gpu, &w, &[c, out], dt, "attn1.to_q+to_k+to_v.weight");
            let bbt = upload_to(gpu, &bias, &[out], dt, "bias");
            let mut rec = Recorder::new(gpu);
            let y =
                ops::linear_layer_norm(&mut rec, &xt, (&gt, &bt, 1e-5), &wt, Some(&bbt)).unwrap();
            assert_eq!(y.shape(), [1, rows, out]);
            let got = run(rec, &y);
            let xn = reference::layer_norm(&x, c, &gamma, &beta, 1e-5);
            let want = reference::matmul(&xn, &w_r, Some(&b_r), 1, rows, out, c, false);
            check(
                &format!("linear_layer_norm {core} [{rows}x{c}] -> {out} {dt:?} mean {offset}"),
                &got,
                &want,
                2e-4,
                2e-4,
            );
        }
        let mut rec = Recorder::new(gpu);
        let x = upload_to(gpu, &[0.0; 6], &[2, 3], DType::F32, "x");
        let g = upload_to(gpu, &[1.0; 2], &[2], DType::F32, "norm3.weight");
        let w = upload_to(gpu, &[0.0; 3], &[3, 1], DType::F32, "w");
        let e = ops::linear_layer_norm(&mut rec, &x, (&g, &g, 1e-5), &w, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("norm3.weight"), "{e}");
    }
}

/// Panel-packed weights (`Tensor::from_f32_panels`, what CPU devices' linears load as): the
/// plain product, bias, residual, a column window at a panel, GEGLU and LayerNorm inputs,
/// f32 and f16, SD shapes (CLIP's 154×768·768×3072) and odd row counts — against the host.
/// Other layouts' readers refuse them by name; so do windows inside a panel and the tiled
/// GPU core.
#[test]
fn panel_packed_weights_match_reference() {
    use sd_wgpu::gpu::GemmVariant;
    let subgroup: Vec<_> = gemm_loop_gpus()
        .into_iter()
        .filter(|g| g.gemm_variant() == GemmVariant::Subgroup)
        .collect();
    assert!(!subgroup.is_empty(), "lavapipe runs the subgroup core");
    for (gpu, (m, k, n, dt)) in subgroup.into_iter().flat_map(|g| {
        [
            (154, 768, 3072, DType::F32),
            (37, 20, 96, DType::F16),
            (5, 64, 32, DType::F32),
            (130, 48, 64, DType::F16),
        ]
        .map(|c| (g, c))
    }) {
        let mut rng = Rng::new((m * k + n) as u64);
        let x = rng.normals(m * 2 * k, 1.0);
        let mut w = rng.normals(k * n, 1.0 / (k as f32).sqrt());
        let mut bias = rng.normals(n, 0.5);
        let res = rng.normals(m * n, 1.0);
        if dt == DType::F16 {
            w = round_f16(&w);
            bias = round_f16(&bias);
        }
        let xs = x[..m * k].to_vec();
        let xt = upload_to(gpu, &xs, &[m, k], DType::F32, "x");
        let wt = sd_wgpu::Tensor::from_f32_panels(gpu, &w, (k, n), dt, "w").unwrap();
        assert!(wt.panels());
        let bt = upload_to(gpu, &bias, &[n], dt, "bias");
        let rt = upload_to(gpu, &res, &[m, n], DType::F32, "res");
        let case = |what: &str| format!("panels {} {what} {m}x{k}·{k}x{n} {dt:?}", core_name(gpu));
        // Plain, with bias, with bias and residual.
        let mut rec = Recorder::new(gpu);
        let y = ops::linear(&mut rec, &xt, &wt, Some(&bt)).unwrap();
        let want = reference::matmul(&xs, &w, Some(&bias), 1, m, n, k, false);
        check(&case("linear"), &run(rec, &y), &want, 1e-4, 1e-4);
        let mut rec = Recorder::new(gpu);
        let y = ops::linear_residual(&mut rec, &xt, &wt, Some(&bt), &rt).unwrap();
        let want_r: Vec<f32> = want.iter().zip(&res).map(|(a, b)| a + b).collect();
        check(&case("residual"), &run(rec, &y), &want_r, 1e-4, 1e-4);
        // The second panel-aligned half of the columns.
        if n >= 64 {
            let cols = n / 2 / 32 * 32..n;
            let mut rec = Recorder::new(gpu);
            let y = ops::linear_columns(&mut rec, &xt, &wt, Some(&bt), cols.clone()).unwrap();
            let wp: Vec<f32> = (0..k)
                .flat_map(|r| w[r * n + cols.start..r * n + cols.end].to_vec())
                .collect();
            let want = reference::matmul(
                &xs,
                &wp,
                Some(&bias[cols.clone()]),
                1,
                m,
                cols.len(),
                k,
                false,
            );
            check(&case("columns"), &run(rec, &y), &want, 1e-4, 1e-4);
            let mut rec = Recorder::new(gpu);
            let e = ops::linear_columns(&mut rec, &xt, &wt, None, 4..n)
                .unwrap_err()
                .to_string();
            assert!(e.contains("panel-packed weight `w`"), "{e}");
        }
        // GEGLU input [m, 2k] and LayerNorm input.
        let pt = upload_to(gpu, &x, &[m, 2 * k], DType::F32, "p");
        let mut rec = Recorder::new(gpu);
        let y = ops::linear_geglu(&mut rec, &pt, &wt, Some(&bt), None).unwrap();
        let g: Vec<f32> = (0..m * k)
            .map(|i| {
                let (r, c) = (i / k, i % k);
                x[r * 2 * k + c] * reference::gelu(x[r * 2 * k + k + c])
            })
            .collect();
        let want = reference::matmul(&g, &w, Some(&bias), 1, m, n, k, false);
        check(&case("geglu"), &run(rec, &y), &want, 1e-4, 1e-4);
        let gamma = rng.normals(k, 1.0);
        let beta = rng.normals(k, 0.5);
        let (gt, bet) = (
            upload_to(gpu, &gamma, &[k], DType::F32, "ln.weight"),
            upload_to(gpu, &beta, &[k], DType::F32, "ln.bias"),
        );
        let mut rec = Recorder::new(gpu);
        let y = ops::linear_layer_norm(&mut rec, &xt, (&gt, &bet, 1e-5), &wt, Some(&bt)).unwrap();
        let normed = reference::layer_norm(&xs, k, &gamma, &beta, 1e-5);
        let want = reference::matmul(&normed, &w, Some(&bias), 1, m, n, k, false);
        check(&case("layer norm"), &run(rec, &y), &want, 1e-4, 1e-4);
        // Any other reader refuses the packed bytes; reading back unpacks them.
        if dt == DType::F32 {
            let mut rec = Recorder::new(gpu);
            let e = ops::unary(&mut rec, &wt, ops::Unary::Silu, 1.0, 0.0)
                .unwrap_err()
                .to_string();
            assert!(e.contains("panel-packed"), "{e}");
        }
        assert_eq!(wt.to_vec(gpu).unwrap(), w);
    }
    for g in gemm_gpus() {
        if g.gemm_variant() != GemmVariant::Subgroup {
            let x = upload_to(g, &[0.0; 64], &[2, 32], DType::F32, "x");
            let w = sd_wgpu::Tensor::from_f32_panels(g, &[0.0; 32 * 32], (32, 32), DType::F32, "w")
                .unwrap();
            let mut rec = Recorder::new(g);
            let e = ops::linear(&mut rec, &x, &w, None).unwrap_err().to_string();
            assert!(e.contains("panel-packed weight `w`"), "{e}");
        }
    }
}
