//! Memory-bound kernels on SD 1.5 shapes; GB/s counts bytes read plus bytes written.

mod common;
use common::{Work, bench, tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use sd_wgpu::DType;
use sd_wgpu::ops::{self, SamplerStep, Unary};

fn elementwise(c: &mut Criterion) {
    let shape = [2, 64, 64, 320];
    let n = shape.iter().product::<usize>() as u64;
    let x = tensor(&shape, DType::F32, 1);
    let y = tensor(&shape, DType::F32, 2);
    bench(
        c,
        "elementwise",
        "silu 2x64x64x320",
        Work::Bytes(8 * n),
        |rec| {
            ops::unary(rec, &x, Unary::Silu, 1.0, 0.0).expect("silu");
        },
    );
    bench(
        c,
        "elementwise",
        "add 2x64x64x320",
        Work::Bytes(12 * n),
        |rec| {
            ops::add(rec, &x, &y).expect("add");
        },
    );
    // f16 activations: half the bytes (devices with shader-f16).
    let x16 = tensor(&shape, DType::F16, 6);
    bench(
        c,
        "elementwise",
        "silu f16 2x64x64x320",
        Work::Bytes(4 * n),
        |rec| {
            ops::unary(rec, &x16, Unary::Silu, 1.0, 0.0).expect("silu");
        },
    );
    bench(
        c,
        "elementwise",
        "cast f32->f16 2x64x64x320",
        Work::Bytes(6 * n),
        |rec| {
            ops::cast(rec, &x, DType::F16).expect("cast");
        },
    );
    let temb = tensor(&[2, 320], DType::F32, 3);
    bench(
        c,
        "elementwise",
        "add temb [2,320] bcast",
        Work::Bytes(8 * n),
        |rec| {
            ops::add(rec, &x, &temb).expect("add");
        },
    );
    let ff = tensor(&[2 * 4096, 2560], DType::F32, 4);
    bench(
        c,
        "elementwise",
        "geglu 8192x2560",
        Work::Bytes(4 * (8192 * 2560 + 8192 * 1280)),
        |rec| {
            ops::geglu(rec, &ff).expect("geglu");
        },
    );
    let small = tensor(&[2, 32, 32, 640], DType::F32, 5);
    bench(
        c,
        "elementwise",
        "upsample 2x32x32x640",
        Work::Bytes(4 * 5 * (2 * 32 * 32 * 640)),
        |rec| {
            ops::upsample_nearest2x(rec, &small).expect("upsample");
        },
    );
    bench(
        c,
        "elementwise",
        "concat 2x32x32x(640+640)",
        Work::Bytes(4 * 4 * (2 * 32 * 32 * 640)),
        |rec| {
            ops::concat_channels(rec, &small, &small).expect("concat");
        },
    );
    let eps_guard = tensor(&[2, 64, 64, 4], DType::F32, 9);
    let img_guard = tensor(&[1, 512, 512, 3], DType::F32, 10);
    // The non-finite guard's pass over a U-Net output (what each step adds) and over a
    // 512² image.
    let flag = tensor(&[1], DType::F32, 8);
    for (name, t) in [
        ("flag_nonfinite 2x64x64x4", &eps_guard),
        ("flag_nonfinite 1x512x512x3", &img_guard),
    ] {
        let n = t.numel() as u64;
        bench(c, "elementwise", name, Work::Bytes(4 * n), |rec| {
            ops::flag_nonfinite(rec, t, &flag, 0).expect("flag_nonfinite");
        });
    }
    let lat = tensor(&[1, 64, 64, 4], DType::F32, 6);
    let eps = tensor(&[2, 64, 64, 4], DType::F32, 7);
    let step = SamplerStep {
        guidance: Some(7.5),
        a: 0.99,
        b: -0.05,
        c: 0.0,
        d: 0.0,
    };
    bench(
        c,
        "elementwise",
        "sampler step cfg 64x64x4",
        Work::Bytes(4 * 4 * 16384),
        |rec| {
            ops::sampler_step(rec, &lat, &eps, None, None, step, false).expect("step");
        },
    );
    // A recorded step's table-driven sampler combination (4 latent terms) and a weight made on
    // the device (`bench`'s synthetic weights).
    let table = ops::StepTable::new(common::gpu(), &[vec![0.5; 8], vec![0.25; 8]]).expect("table");
    let terms = [&lat, &lat, &lat, &lat];
    bench(
        c,
        "elementwise",
        "table_combine 4 terms 64x64x4",
        Work::Bytes(5 * 4 * 16384),
        |rec| {
            let t: Vec<(usize, &sd_wgpu::Tensor)> =
                terms.iter().enumerate().map(|(k, t)| (k, *t)).collect();
            ops::table_combine(rec, &table, &t, None).expect("table_combine");
        },
    );
    let w = tensor(&[3, 3, 320, 320], DType::F16, 11);
    bench(
        c,
        "elementwise",
        "random_fill f16 3x3x320x320",
        Work::Bytes(2 * 9 * 320 * 320),
        |rec| {
            ops::random_fill(rec, &w, 7, 0.02, 0.0).expect("random_fill");
        },
    );
    let img = tensor(&[512, 512, 3], DType::F32, 8);
    bench(
        c,
        "elementwise",
        "to_rgba8 512x512",
        Work::Bytes(512 * 512 * (12 + 4)),
        |rec| {
            ops::to_rgba8(rec, &img, false).expect("to_rgba8");
        },
    );
}

criterion_group!(benches, elementwise);
criterion_main!(benches);
