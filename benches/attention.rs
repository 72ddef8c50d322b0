//! Fused attention on SD 1.5 shapes. FLOPs count both products: 4·b·heads·n·m·d.

mod common;
use common::{Work, bench, tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use sd_wgpu::DType;
use sd_wgpu::ops::{self, AttentionOptions};

fn attention(c: &mut Criterion) {
    // (id, b, n, m, heads, d)
    let cases = [
        ("sd self 4096x4096 8x40", 1, 4096, 4096, 8, 40),
        ("sd cross 4096x77 8x40 b2", 2, 4096, 77, 8, 40),
        ("sd self 1024x1024 8x80 b2", 2, 1024, 1024, 8, 80),
        ("clip causal 77 12x64 b2", 2, 77, 77, 12, 64),
        ("sd cross 64x77 8x160 b2", 2, 64, 77, 8, 160),
        ("sd cross 256x77 8x160 b2", 2, 256, 77, 8, 160),
        ("vae mid 1024x1024 1x512", 1, 1024, 1024, 1, 512),
    ];
    for (id, b, n, m, heads, d) in cases {
        let ch = heads * d;
        let (q, k, v) = (
            tensor(&[b, n, ch], DType::F32, 1),
            tensor(&[b, m, ch], DType::F32, 2),
            tensor(&[b, m, ch], DType::F32, 3),
        );
        let causal = id.contains("causal");
        let flops = 4 * (b * heads * n * m * d) as u64;
        bench(c, "attention", id, Work::Flops(flops), |rec| {
            ops::attention(
                rec,
                &q,
                &k,
                &v,
                AttentionOptions {
                    heads,
                    causal,
                    scale: None,
                },
            )
            .expect("attention");
        });
    }
}

criterion_group!(benches, attention);
criterion_main!(benches);
