//! conv2d (implicit GEMM) on SD 1.5 U-Net shapes.

mod common;
use common::{Work, bench, tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use sd_wgpu::DType;
use sd_wgpu::ops::{self, Conv2dOptions};

fn conv2d(c: &mut Criterion) {
    // (id, [n, h, w, cin], k, cout, stride, weight dtype, upsample, activation dtype)
    let cases = [
        (
            "sd 3x3 320->320 64x64 b2",
            [2, 64, 64, 320],
            3,
            320,
            1,
            DType::F32,
            1,
        ),
        (
            "sd 3x3 640->640 32x32 b2 f16",
            [2, 32, 32, 640],
            3,
            640,
            1,
            DType::F16,
            1,
        ),
        (
            "vae 3x3 256->256 128x128",
            [1, 128, 128, 256],
            3,
            256,
            1,
            DType::F32,
            1,
        ),
        // The VAE decoder's conv_out to RGB (CPU devices: the narrow kernel).
        (
            "vae conv_out 3x3 128->3 128x128 b2",
            [2, 128, 128, 128],
            3,
            3,
            1,
            DType::F32,
            1,
        ),
        (
            "sd 3x3 s2 320 64x64 b2",
            [2, 64, 64, 320],
            3,
            320,
            2,
            DType::F32,
            1,
        ),
        (
            "sd 1x1 640->320 32x32 b2",
            [2, 32, 32, 640],
            1,
            320,
            1,
            DType::F32,
            1,
        ),
        (
            "sd upsampler 3x3 640 32x32 -> 64x64 b2 f16 (fused 2x)",
            [2, 32, 32, 640],
            3,
            640,
            1,
            DType::F16,
            2,
        ),
    ];
    // f16 weights with f16 activations (devices with shader-f16) next to the f32 ones.
    let f16_act = (
        "sd 3x3 640->640 32x32 b2 f16, f16 activations",
        [2, 32, 32, 640],
        3,
        640,
        1,
        DType::F16,
        1,
    );
    let cases = cases.map(|c| (c, DType::F32));
    for ((id, xs, k, cout, stride, w, up), act) in cases.into_iter().chain([(f16_act, DType::F16)])
    {
        let x = tensor(&xs, act, 1);
        let wt = tensor(&[k, k, xs[3], cout], w, 2);
        let pad = k / 2;
        let (ho, wo) = (
            (xs[1] * up + 2 * pad - k) / stride + 1,
            (xs[2] * up + 2 * pad - k) / stride + 1,
        );
        let opts = Conv2dOptions {
            upsample: up,
            ..Conv2dOptions::new(stride, pad)
        };
        let flops = 2 * (xs[0] * ho * wo * cout * k * k * xs[3]) as u64;
        bench(c, "conv2d", id, Work::Flops(flops), |rec| {
            ops::conv2d(rec, &x, &wt, None, None, opts).expect("conv2d");
        });
    }
}

criterion_group!(benches, conv2d);
criterion_main!(benches);
