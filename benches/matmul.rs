//! matmul / linear on square and SD 1.5 shapes. The best of these is the device's practical
//! matmul peak that the README compares every kernel with.

mod common;
use common::{Work, bench, tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use sd_wgpu::{DType, ops};

fn matmul(c: &mut Criterion) {
    // (id, batch·m, k, n, weight dtype)
    let cases = [
        ("square 2048 f32", 2048, 2048, 2048, DType::F32),
        ("square 2048 f16 weights", 2048, 2048, 2048, DType::F16),
        ("sd to_q 8192x320x320", 8192, 320, 320, DType::F32),
        ("sd ff 2048x640x5120 f16", 2048, 640, 5120, DType::F16),
        ("sd to_k 154x768x320", 154, 768, 320, DType::F32),
    ];
    for (id, m, k, n, w) in cases {
        let a = tensor(&[m, k], DType::F32, 1);
        let b = tensor(&[k, n], w, 2);
        let flops = 2 * (m * k * n) as u64;
        bench(c, "matmul", id, Work::Flops(flops), |rec| {
            ops::matmul(rec, &a, &b, None).expect("matmul");
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
}

criterion_group!(benches, matmul);
criterion_main!(benches);
