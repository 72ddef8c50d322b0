//! group-norm (+SiLU) and layer-norm; GB/s counts one read and one write of the activations
//! (the kernels read twice more for the statistics).

mod common;
use common::{Work, bench, tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use sd_wgpu::{DType, ops};

fn norm(c: &mut Criterion) {
    for (id, shape) in [
        ("sd 2x64x64x320 g32 silu", [2, 64, 64, 320]),
        ("sd 2x16x16x1280 g32 silu", [2, 16, 16, 1280]),
    ] {
        let x = tensor(&shape, DType::F32, 1);
        let ch = shape[3];
        let (g, b) = (tensor(&[ch], DType::F32, 2), tensor(&[ch], DType::F32, 3));
        let bytes = 8 * x.numel() as u64;
        bench(c, "group_norm", id, Work::Bytes(bytes), |rec| {
            ops::group_norm(rec, &x, 32, &g, &b, 1e-5, true).expect("group_norm");
        });
    }
    for (id, rows, ch) in [("sd 8192x320", 8192, 320), ("clip 154x768", 154, 768)] {
        let x = tensor(&[rows, ch], DType::F32, 1);
        let (g, b) = (tensor(&[ch], DType::F32, 2), tensor(&[ch], DType::F32, 3));
        bench(
            c,
            "layer_norm",
            id,
            Work::Bytes(8 * (rows * ch) as u64),
            |rec| {
                ops::layer_norm(rec, &x, &g, &b, 1e-5).expect("layer_norm");
            },
        );
    }
}

criterion_group!(benches, norm);
criterion_main!(benches);
