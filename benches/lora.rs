//! The host merge of LoRA updates into weights as they load (`W += s · up · down`), at SD
//! 1.5 / SDXL shapes; elements/s counts multiply-adds (out · in · rank).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sd_wgpu::lora::add_low_rank;

fn lora(c: &mut Criterion) {
    let mut g = c.benchmark_group("lora_merge");
    for (id, out, cols, rank) in [
        ("attn 1280x1280 r32", 1280, 1280, 32),
        ("ff 10240x1280 r32", 10240, 1280, 32),
        ("locon conv 1280x1280x3x3 r16", 1280, 1280 * 9, 16),
    ] {
        let mut w = vec![0.1f32; out * cols];
        let down: Vec<f32> = (0..rank * cols).map(|i| (i % 7) as f32 * 0.01).collect();
        let up: Vec<f32> = (0..out * rank).map(|i| (i % 5) as f32 * 0.01).collect();
        g.throughput(Throughput::Elements((out * cols * rank) as u64));
        g.bench_function(id, |b| {
            b.iter(|| add_low_rank(&mut w, out, &down, &up, rank, 0.8).expect("merge"));
        });
    }
    g.finish();
}

criterion_group!(benches, lora);
criterion_main!(benches);
