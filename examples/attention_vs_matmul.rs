//! Attention next to the matmul peak, interleaved in one process so that a CPU device's
//! changing speed moves both (a development aid; `cargo bench` is the measurement of record).
//! Each round times the bench harness's reference product (`[1024×768]·[768×3072]` f32, its
//! weight panel-packed as CPU devices' linears load it: `benches/common`), then every
//! attention shape given as `b,n,m,heads,d` (`b,n,m,heads,d,c` for a causal mask) on N(0, 1)
//! data, and prints GFLOP/s (4·b·heads·n·m·d, as `cargo bench`) and the ratio to that
//! round's matmul. `--rows 154` times CLIP's own `fc1` (154 rows) instead, the reference of
//! the README's earlier figures.
//! `cargo run --release --example attention_vs_matmul -- 2,64,77,8,160 1,1024,1024,1,512`
use sd_wgpu::ops::{self, AttentionOptions};
use sd_wgpu::{DType, Gpu, Recorder, Tensor};

/// Seconds per run of what `record` records, `reps` runs in one submission after a warm one.
fn time(gpu: &Gpu, reps: usize, record: &dyn Fn(&mut Recorder<'_>)) -> Result<f64, sd_wgpu::Error> {
    let mut rec = Recorder::new(gpu);
    record(&mut rec);
    rec.submit_timed()?;
    let mut rec = Recorder::new(gpu);
    for _ in 0..reps {
        record(&mut rec);
    }
    Ok(rec.submit_timed()?.as_secs_f64() / reps as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut m = 1024;
    if let Some(i) = args.iter().position(|a| a == "--rows") {
        m = args
            .get(i + 1)
            .and_then(|r| r.parse().ok())
            .ok_or("--rows needs a row count")?;
        args.drain(i..i + 2);
    }
    let cases = args
        .iter()
        .map(|a| {
            let causal = a.ends_with(",c");
            let v: Vec<usize> = a
                .trim_end_matches(",c")
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()?;
            match v[..] {
                [b, n, m, heads, d] => Ok((b, n, m, heads, d, causal)),
                _ => Err(format!("`{a}`: expected b,n,m,heads,d or b,n,m,heads,d,c").into()),
            }
        })
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let gpu = Gpu::new()?;
    println!("{}", gpu.adapter_info().name);
    let mut rng = sd_wgpu::rng::SplitMix64::new(7);
    let mut normal = |s: &[usize]| {
        let n: usize = s.iter().product();
        Tensor::from_f32(&gpu, &rng.normals(n, 1.0), s, DType::F32, "x")
    };
    let (k, n) = (768, 3072);
    let a = normal(&[m, k])?;
    let w = normal(&[k, n])?.to_vec(&gpu)?;
    let w = Tensor::from_f32_panels(&gpu, &w, (k, n), DType::F32, "w")?;
    let qkv = cases
        .iter()
        .map(|&(b, n, m, h, d, _)| {
            Ok((
                normal(&[b, n, h * d])?,
                normal(&[b, m, h * d])?,
                normal(&[b, m, h * d])?,
            ))
        })
        .collect::<Result<Vec<_>, sd_wgpu::Error>>()?;
    for round in 0..3 {
        let s = time(&gpu, 5, &|r| {
            drop(ops::matmul(r, &a, &w, None).expect("matmul"))
        })?;
        let peak = 2.0 * (m * k * n) as f64 / s / 1e9;
        let mut line = format!("round {round}: matmul {peak:.1} GFLOP/s");
        for (&(b, n, m, heads, d, causal), (q, k, v)) in cases.iter().zip(&qkv) {
            let flop = 4.0 * (b * heads * n * m * d) as f64;
            let reps = (2e8 / flop).clamp(1.0, 50.0) as usize;
            let opts = AttentionOptions {
                heads,
                causal,
                scale: None,
            };
            let s = time(&gpu, reps, &|r| {
                drop(ops::attention(r, q, k, v, opts).expect("attention"))
            })?;
            let g = flop / s / 1e9;
            line += &format!(
                " | {b}x{n}x{m} {heads}x{d} {g:.1} ({:.0} %)",
                100.0 * g / peak
            );
        }
        println!("{line}");
    }
    Ok(())
}
