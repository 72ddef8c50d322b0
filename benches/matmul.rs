//! matmul / linear on square and SD 1.5 shapes. The best of these is the device's practical
//! matmul peak that the README compares every kernel with.

mod common;
use common::{Work, bench, tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use sd_wgpu::{DType, Tensor, ops};

fn matmul(c: &mut Criterion) {
    // (id, batch·m, k, n, weight dtype, activation dtype)
    let (f32_, f16_) = (DType::F32, DType::F16);
    let cases = [
        ("square 2048 f32", 2048, 2048, 2048, f32_, f32_),
        ("square 2048 f16 weights", 2048, 2048, 2048, f16_, f32_),
        ("sd to_q 8192x320x320", 8192, 320, 320, f32_, f32_),
        ("sd ff 2048x640x5120 f16", 2048, 640, 5120, f16_, f32_),
        (
            "sd ff 2048x640x5120 f16, f16 activations",
            2048,
            640,
            5120,
            f16_,
            f16_,
        ),
        ("sd to_k 154x768x320", 154, 768, 320, f32_, f32_),
    ];
    for (id, m, k, n, w, act) in cases {
        let a = tensor(&[m, k], act, 1);
        let b = tensor(&[k, n], w, 2);
        let flops = 2 * (m * k * n) as u64;
        bench(c, "matmul", id, Work::Flops(flops), |rec| {
            ops::matmul(rec, &a, &b, None).expect("matmul");
        });
    }
    // CLIP's MLP product with its weight plain (rows 12 KB apart) and panel-packed (what
    // linears load as on CPU devices; GPUs keep the plain layout).
    let (m, k, n) = (154, 768, 3072);
    let a = tensor(&[m, k], DType::F32, 1);
    let plain = tensor(&[k, n], DType::F32, 2);
    let flops = Work::Flops(2 * (m * k * n) as u64);
    bench(c, "matmul", "clip fc1 154x768x3072", flops, |rec| {
        ops::matmul(rec, &a, &plain, None).expect("matmul");
    });
    if common::gpu().gemm_variant() == sd_wgpu::gpu::GemmVariant::Subgroup {
        let values = plain.to_vec(common::gpu()).expect("read back");
        let packed = Tensor::from_f32_panels(common::gpu(), &values, (k, n), DType::F32, "bench")
            .expect("upload");
        bench(c, "matmul", "clip fc1 154x768x3072 panels", flops, |rec| {
            ops::matmul(rec, &a, &packed, None).expect("matmul");
        });
    }
    // The residual epilogue (a transformer's `x + to_out(attn)`), next to the plain case.
    let (m, k, n) = (8192, 320, 320);
    let a = tensor(&[m, k], DType::F32, 1);
    let b = tensor(&[k, n], DType::F32, 2);
    let r = tensor(&[m, n], DType::F32, 3);
    bench(
        c,
        "matmul",
        "sd to_out 8192x320x320 + residual",
        Work::Flops(2 * (m * k * n) as u64),
        |rec| {
            ops::linear_residual(rec, &a, &b, None, &r).expect("linear_residual");
        },
    );
    // A transformer's projections with what they read transformed in place: the GEGLU of the
    // feed-forward (SD 1.5 at 32² latents, and the built-in model's 48-wide one, which CPU
    // devices fuse), the LayerNorm before a narrow projection (the built-in model's q/k/v),
    // and one column window (q) of a fused q/k/v weight.
    for (id, rows, f, out) in [
        ("sd ff.net.2 geglu 2048x[2x1280]x320 f16", 2048, 1280, 320),
        ("builtin ff.net.2 geglu 128x[2x192]x48 f16", 128, 192, 48),
    ] {
        let p = tensor(&[rows, 2 * f], DType::F32, 4);
        let w = tensor(&[f, out], DType::F16, 5);
        let flops = 2 * (rows * f * out) as u64;
        bench(c, "matmul", id, Work::Flops(flops), |rec| {
            ops::linear_geglu(rec, &p, &w, None, None).expect("linear_geglu");
        });
    }
    let (rows, ch, out) = (128, 48, 144);
    let x = tensor(&[rows, ch], DType::F32, 6);
    let (g, be) = (tensor(&[ch], DType::F32, 7), tensor(&[ch], DType::F32, 8));
    let w = tensor(&[ch, out], DType::F16, 9);
    bench(
        c,
        "matmul",
        "builtin norm1 + to_q|to_k|to_v 128x48x144 f16",
        Work::Flops(2 * (rows * ch * out) as u64),
        |rec| {
            ops::linear_layer_norm(rec, &x, (&g, &be, 1e-5), &w, None).expect("linear_layer_norm");
        },
    );
    let (m, k, c3) = (8192, 320, 960);
    let x = tensor(&[m, k], DType::F32, 10);
    let w = tensor(&[k, c3], DType::F16, 11);
    bench(
        c,
        "matmul",
        "sd to_q window of fused qkv 8192x320x[960] f16",
        Work::Flops(2 * (m * k * 320) as u64),
        |rec| {
            ops::linear_columns(rec, &x, &w, None, 0..320).expect("linear_columns");
        },
    );
}

criterion_group!(benches, matmul);
criterion_main!(benches);
