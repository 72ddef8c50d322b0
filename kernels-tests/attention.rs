use crate::common::*;
use sd_wgpu::ops::{AttentionOptions, attention::attention_qkv};
use sd_wgpu::{DType, Recorder, ops, reference};

struct Case {
    name: &'static str,
    b: usize,
    n: usize,
    m: usize,
    heads: usize,
    d: usize,
    causal: bool,
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // SD 1.5 self-attention at 64×64 latents: 4096 tokens, 8 heads × 40.
    Case { name: "sd self 4096x4096 8x40", b: 1, n: 4096, m: 4096, heads: 8, d: 40, causal: false },
    // Cross-attention to the 77-token context, batch 2 (guidance).
    Case { name: "sd cross 4096x77 8x40 b2", b: 2, n: 4096, m: 77, heads: 8, d: 40, causal: false },
    // SD 2.x head dim 64, SD 1.5 mid-block 8 × 160 (GEMMs on CPU devices), 8 × 80 at
    // 32×32.
    Case { name: "sd2 self 1024 5x64", b: 1, n: 1024, m: 1024, heads: 5, d: 64, causal: false },
    Case { name: "sd2 cross 256x77 5x64", b: 1, n: 256, m: 77, heads: 5, d: 64, causal: false },
    Case { name: "sd 8x80 1024x77", b: 2, n: 1024, m: 77, heads: 8, d: 80, causal: false },
    Case { name: "sd mid 8x160 64x64", b: 1, n: 64, m: 64, heads: 8, d: 160, causal: false },
    // CLIP text encoder: causal, 77 tokens, 12 heads × 64.
    Case { name: "clip causal 77 12x64 b2", b: 2, n: 77, m: 77, heads: 12, d: 64, causal: true },
    // VAE mid-block: one head of 512 channels.
    Case { name: "vae 1x512 256 tokens", b: 1, n: 256, m: 256, heads: 1, d: 512, causal: false },
    // SD's 16×16-latent (512²) cross-attention, batch 2.
    Case { name: "sd cross 8x160 256x77 b2", b: 2, n: 256, m: 77, heads: 8, d: 160, causal: false },
    // Odd shapes.
    Case { name: "odd 67x13 3x7", b: 2, n: 67, m: 13, heads: 3, d: 7, causal: false },
    Case { name: "one query one key", b: 1, n: 1, m: 1, heads: 1, d: 1, causal: false },
    Case { name: "causal 65 2x40", b: 1, n: 65, m: 65, heads: 2, d: 40, causal: true },
    // CPU devices' key spans (128 keys, from head dim 40): three spans ending in a partial
    // block under a causal mask (later spans wholly masked for early query tiles), and
    // two queries per lane over 333 keys.
    Case { name: "spans causal 300 2x40", b: 1, n: 300, m: 300, heads: 2, d: 40, causal: true },
    Case { name: "spans 40x333 2x64 b2", b: 2, n: 40, m: 333, heads: 2, d: 64, causal: false },
    // The GPU kernel's edges: partial 64-query tiles and 32-key blocks, its smallest head
    // dim (8), several query tiles under a causal mask.
    Case { name: "tile edges 70x45 3x8 b2", b: 2, n: 70, m: 45, heads: 3, d: 8, causal: false },
    Case { name: "causal 150 2x24", b: 1, n: 150, m: 150, heads: 2, d: 24, causal: true },
    // CPU devices at head dims of 128 and up: SD's 8×8-latent cross-attention (GEMMs), the
    // wide-head kernel (lanes splitting the head dim) under 32 queries with partial 4-query
    // tiles, and with a causal mask.
    Case { name: "sd cross 8x160 64x77 b2", b: 2, n: 64, m: 77, heads: 8, d: 160, causal: false },
    Case { name: "wide odd 29x37 2x128", b: 1, n: 29, m: 37, heads: 2, d: 128, causal: false },
    Case { name: "wide causal 19 3x160 b2", b: 2, n: 19, m: 19, heads: 3, d: 160, causal: true },
];

#[test]
fn attention_matches_reference() {
    for gpu in gemm_loop_gpus() {
        attention_matches_reference_on(gpu);
    }
}

/// On each device of `gemm_loop_gpus`: CPU devices run the one-subgroup variant (reading q, k
/// and v as 64-bit words where `Gpu::load64`, and not on the last device), the other device
/// the workgroup-wide kernel that GPUs use.
fn attention_matches_reference_on(gpu: &sd_wgpu::Gpu) {
    let mut failures = Vec::new();
    for (ci, c) in CASES.iter().enumerate() {
        let mut rng = Rng::new(40 + ci as u64);
        let ch = c.heads * c.d;
        let q = rng.normals(c.b * c.n * ch, 1.0);
        let k = rng.normals(c.b * c.m * ch, 1.0);
        let v = rng.normals(c.b * c.m * ch, 1.0);
        let (qt, kt, vt) = (
            upload_to(gpu, &q, &[c.b, c.n, ch], DType::F32, "q"),
            upload_to(gpu, &k, &[c.b, c.m, ch], DType::F32, "k"),
            upload_to(gpu, &v, &[c.b, c.m, ch], DType::F32, "v"),
        );
        let opts = AttentionOptions {
            heads: c.heads,
            causal: c.causal,
            scale: None,
        };
        let mut rec = Recorder::new(gpu);
        let out = ops::attention(&mut rec, &qt, &kt, &vt, opts).unwrap();
        assert_eq!(
            ran_load64(&rec),
            gpu.load64() && c.d % 4 == 0,
            "{} {}: 64-bit loads",
            core_name(gpu),
            c.name
        );
        let ran_labels = labels(&rec);
        let ran = |name: &str| ran_labels.iter().any(|l| l.contains(name));
        let cpu = gpu.gemm_variant() == sd_wgpu::gpu::GemmVariant::Subgroup;
        // CPU devices: two GEMMs per query chunk (ops::attention_gemm) at head dims wider
        // than 80, from 32 queries (its MIN_QUERIES) without a causal mask; else the
        // wide-head flash kernel at head dims of 128 and up.
        let heads_fit = c.d > 80;
        let gemms = cpu && c.d % 4 == 0 && heads_fit && !c.causal && c.n >= 32;
        let wide_head = cpu && c.d % 4 == 0 && c.d >= 128 && !gemms;
        assert_eq!(
            (
                ran("attention_cpu_wide"),
                ran("attention_gemm"),
                ran("matmul")
            ),
            (wide_head, gemms, gemms),
            "{} {}: wide-head kernel, GEMM path",
            core_name(gpu),
            c.name
        );
        // The CPU-device flash kernel takes its keys in spans from head dim 40
        // (ops::attention's cpu_spans), one at a time under.
        let flash_cpu = cpu && !gemms && !wide_head;
        assert_eq!(
            (ran("attention_cpu:"), ran("SPANS")),
            (flash_cpu, flash_cpu && c.d >= 40),
            "{} {}: CPU flash kernel, key spans",
            core_name(gpu),
            c.name
        );
        // Four queries per lane on CPU devices at head dims up to 48 with more than 16
        // queries, and 64 from 256 queries (ops::attention's cpu_quad), two otherwise.
        assert_eq!(
            ran("QUAD"),
            cpu && c.d % 4 == 0 && ((c.d <= 48 && c.n > 16) || (c.d <= 64 && c.n >= 256)),
            "{} {}: four queries per lane",
            core_name(gpu),
            c.name
        );
        let got = run(rec, &out);
        // Long sequences: compare a spread of query rows (every 13th and the last), all heads.
        let rows: Vec<usize> = if c.n > 1024 {
            (0..c.n).step_by(13).chain([c.n - 1]).collect()
        } else {
            (0..c.n).collect()
        };
        let scale = 1.0 / (c.d as f32).sqrt();
        let want = reference::attention(
            &q,
            &k,
            &v,
            [c.b, c.n, c.m],
            c.heads,
            c.d,
            c.causal,
            scale,
            Some(&rows),
        );
        let got_rows: Vec<f32> = (0..c.b)
            .flat_map(|bi| {
                rows.iter()
                    .flat_map(move |&r| (0..ch).map(move |j| (bi * c.n + r) * ch + j))
            })
            .map(|i| got[i])
            .collect();
        if let Err(e) = try_check(
            &format!("attention {} {}", core_name(gpu), c.name),
            &got_rows,
            &want,
            1e-4,
            1e-4,
        ) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fused_qkv_matches_separate_inputs() {
    let gpu = gpu();
    let (b, n, heads, d) = (2, 77, 16, 64);
    let c = heads * d;
    let mut rng = Rng::new(5);
    let qkv = rng.normals(b * n * 3 * c, 1.0);
    let split = |part: usize| -> Vec<f32> {
        qkv.chunks_exact(3 * c)
            .flat_map(|r| r[part * c..(part + 1) * c].to_vec())
            .collect()
    };
    let (q, k, v) = (split(0), split(1), split(2));
    let t = upload(&qkv, &[b, n, 3 * c], DType::F32, "in_proj.out");
    let mut rec = Recorder::new(gpu);
    let opts = AttentionOptions {
        heads,
        causal: true,
        scale: None,
    };
    let out = attention_qkv(&mut rec, &t, opts).unwrap();
    let got = run(rec, &out);
    let want = reference::attention(&q, &k, &v, [b, n, n], heads, d, true, 1.0 / 8.0, None);
    check(
        "attention_qkv sd2 clip 16x64 causal",
        &got,
        &want,
        1e-4,
        1e-4,
    );
}

#[test]
fn attention_rejects_bad_input() {
    let gpu = gpu();
    let q = upload(&[0.0; 2 * 3 * 8], &[2, 3, 8], DType::F32, "attn1.q");
    let k = upload(&[0.0; 2 * 5 * 8], &[2, 5, 8], DType::F32, "attn1.k");
    let k6 = upload(&[0.0; 2 * 5 * 6], &[2, 5, 6], DType::F32, "attn2.k");
    let mut rec = Recorder::new(gpu);
    let o = |heads, causal| AttentionOptions {
        heads,
        causal,
        scale: None,
    };
    assert!(
        ops::attention(&mut rec, &q, &k6, &k6, o(2, false))
            .unwrap_err()
            .to_string()
            .contains("attn2.k")
    );
    assert!(
        ops::attention(&mut rec, &q, &k, &k, o(3, false))
            .unwrap_err()
            .to_string()
            .contains("3 heads")
    );
    assert!(
        ops::attention(&mut rec, &q, &k, &k, o(2, true))
            .unwrap_err()
            .to_string()
            .contains("causal")
    );
    // An empty batch (at a shape that CPU devices would run as GEMMs).
    let none = upload(&[], &[0, 64, 256], DType::F32, "none");
    assert!(
        ops::attention(&mut rec, &none, &none, &none, o(2, false))
            .unwrap_err()
            .to_string()
            .contains("0 images")
    );
    let wide = upload(&vec![0.0; 1026], &[1, 1, 1026], DType::F32, "wide");
    assert!(
        ops::attention(&mut rec, &wide, &wide, &wide, o(1, false))
            .unwrap_err()
            .to_string()
            .contains("maximum 512")
    );
}

/// Key chunking (several dispatches carrying the softmax state) on any device: a device
/// object with a tiny loop budget forces many chunks on small inputs.
#[test]
fn attention_key_chunks_match_reference() {
    // Both kernels: the device's own (one-subgroup on CPU devices) and the other GEMM core's
    // device, which takes the workgroup-wide kernel there.
    for gemm in gemm_gpus().iter().map(|g| g.gemm_variant()) {
        let g = sd_wgpu::Gpu::with_options(&sd_wgpu::GpuOptions {
            loop_iteration_limit: Some(600),
            gemm: Some(gemm),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("GPU tests need a wgpu adapter: {e}"));
        key_chunks_on(&g);
    }
}

fn key_chunks_on(g: &sd_wgpu::Gpu) {
    for (n, m, heads, d, causal) in [
        (100, 300, 2, 40, false),
        (77, 77, 4, 16, true),
        (5, 1000, 1, 8, false),
        (150, 150, 2, 24, true), // query tiles whose causal keys end before later chunks
        (90, 90, 3, 64, true),   // key spans (CPU devices) resumed across chunks, causal
        (30, 200, 3, 7, false),  // scalar (non-vec4) storage
        (21, 300, 1, 160, false), // CPU devices' wide-head kernel
        (50, 50, 2, 128, true),
    ] {
        let c = heads * d;
        let mut rng = Rng::new(m as u64);
        let (q, k, v) = (
            rng.normals(n * c, 1.0),
            rng.normals(m * c, 1.0),
            rng.normals(m * c, 1.0),
        );
        let up =
            |x: &[f32], s: &[usize]| sd_wgpu::Tensor::from_f32(g, x, s, DType::F32, "qkv").unwrap();
        let mut rec = Recorder::new(g);
        let out = ops::attention(
            &mut rec,
            &up(&q, &[1, n, c]),
            &up(&k, &[1, m, c]),
            &up(&v, &[1, m, c]),
            AttentionOptions {
                heads,
                causal,
                scale: None,
            },
        )
        .unwrap();
        assert!(
            rec.len() > 1,
            "expected several key chunks, got {} dispatch",
            rec.len()
        );
        let quad = labels(&rec).iter().all(|l| l.contains("QUAD"));
        let cpu = g.gemm_variant() == sd_wgpu::gpu::GemmVariant::Subgroup;
        assert_eq!(
            quad,
            cpu && d % 4 == 0 && ((d <= 48 && n > 16) || (d <= 64 && n >= 256)),
            "n={n} d={d}: QUAD"
        );
        let spans = labels(&rec).iter().all(|l| l.contains("SPANS"));
        assert_eq!(
            spans,
            cpu && (40..128).contains(&d),
            "n={n} d={d}: key spans"
        );
        rec.submit().unwrap();
        let want = reference::attention(
            &q,
            &k,
            &v,
            [1, n, m],
            heads,
            d,
            causal,
            1.0 / (d as f32).sqrt(),
            None,
        );
        check(
            &format!(
                "attention {:?} chunked n={n} m={m} d={d} causal={causal}",
                g.gemm_variant()
            ),
            &out.to_vec(g).unwrap(),
            &want,
            1e-4,
            1e-4,
        );
    }
}

/// CPU devices' wide-head attention as GEMMs (ops::attention_gemm) over several query
/// chunks, on a device whose 1 MiB storage bindings cap a chunk's scores at 1 MiB: two
/// images of 600 queries × 1000 keys (256 queries a chunk: three per image), keys padded
/// to a multiple of 4 under a partial row tile (133 queries; 7 keys: an odd last pair in the
/// packing), heads read from a fused q|k|v row, and images sharing a product (three images
/// whose scores fit two per binding: a group of two and a group of one; four small images in
/// one). Each case runs with the packing's 64-bit components and without (devices without
/// shader-int64).
#[test]
fn attention_gemm_chunks_match_reference() {
    let g = sd_wgpu::Gpu::with_options(&sd_wgpu::GpuOptions {
        max_storage_binding: Some(1 << 20),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("GPU tests need a wgpu adapter: {e}"));
    let cpu = g.gemm_variant() == sd_wgpu::gpu::GemmVariant::Subgroup;
    for case in [
        (2, 600, 1000, 1, 128, false, 6),
        (1, 133, 7, 2, 160, false, 1),
        (1, 150, 150, 2, 128, true, 1),
        (3, 200, 300, 2, 128, false, 2),
        (4, 40, 40, 2, 160, true, 1),
    ]
    .into_iter()
    .flat_map(|case| [(case, true), (case, false)])
    {
        let ((b, n, m, heads, d, fused, softmaxes), load64) = case;
        g.set_load64(load64);
        let c = heads * d;
        let mut rng = Rng::new((n + m) as u64);
        let (q, k, v) = (
            rng.normals(b * n * c, 1.0),
            rng.normals(b * m * c, 1.0),
            rng.normals(b * m * c, 1.0),
        );
        let up = |x: &[f32], s: &[usize]| {
            sd_wgpu::Tensor::from_f32(&g, x, s, DType::F32, "qkv").unwrap()
        };
        let opts = AttentionOptions {
            heads,
            causal: false,
            scale: Some(0.07),
        };
        let mut rec = Recorder::new(&g);
        let out = if fused {
            let rows: Vec<f32> = (0..b * n)
                .flat_map(|r| {
                    [&q, &k, &v]
                        .into_iter()
                        .flat_map(move |x| x[r * c..(r + 1) * c].to_vec())
                })
                .collect();
            attention_qkv(&mut rec, &up(&rows, &[b, n, 3 * c]), opts).unwrap()
        } else {
            ops::attention(
                &mut rec,
                &up(&q, &[b, n, c]),
                &up(&k, &[b, m, c]),
                &up(&v, &[b, m, c]),
                opts,
            )
            .unwrap()
        };
        let labels = labels(&rec);
        let count = |s: &str| labels.iter().filter(|l| l.as_str() == s).count();
        let (pack, softmax) = if load64 && g.load64() {
            (
                "attention_gemm:main PACK LOAD64",
                "attention_gemm:main LOAD64",
            )
        } else {
            ("attention_gemm:main PACK", "attention_gemm:main")
        };
        assert_eq!(
            (count(pack), count(softmax)),
            if cpu { (1, softmaxes) } else { (0, 0) },
            "n={n} m={m} d={d}: packs and query chunks in {labels:?}"
        );
        rec.submit().unwrap();
        let want = reference::attention(&q, &k, &v, [b, n, m], heads, d, false, 0.07, None);
        check(
            &format!("attention GEMMs b={b} n={n} m={m} {heads}x{d} fused={fused} load64={load64}"),
            &out.to_vec(&g).unwrap(),
            &want,
            1e-4,
            1e-4,
        );
    }
}

/// Where the packed V (keys padded to a multiple of 4) would not fit one storage binding
/// although V does, CPU devices keep the wide-head flash kernel instead of the GEMMs.
#[test]
fn attention_gemm_falls_back_when_packed_v_outgrows_a_binding() {
    let (n, m, d) = (128, 131, 128);
    let g = sd_wgpu::Gpu::with_options(&sd_wgpu::GpuOptions {
        max_storage_binding: Some((m * d * 4) as u64),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("GPU tests need a wgpu adapter: {e}"));
    let mut rng = Rng::new(131);
    let (q, k, v) = (
        rng.normals(n * d, 1.0),
        rng.normals(m * d, 1.0),
        rng.normals(m * d, 1.0),
    );
    let up =
        |x: &[f32], s: &[usize]| sd_wgpu::Tensor::from_f32(&g, x, s, DType::F32, "qkv").unwrap();
    let opts = AttentionOptions {
        heads: 1,
        causal: false,
        scale: None,
    };
    let mut rec = Recorder::new(&g);
    let out = ops::attention(
        &mut rec,
        &up(&q, &[1, n, d]),
        &up(&k, &[1, m, d]),
        &up(&v, &[1, m, d]),
        opts,
    )
    .unwrap();
    let labels = labels(&rec);
    let cpu = g.gemm_variant() == sd_wgpu::gpu::GemmVariant::Subgroup;
    assert!(
        labels.iter().all(|l| !l.starts_with("attention_gemm"))
            && labels.iter().any(|l| l.starts_with("attention_cpu_wide")) == cpu,
        "{labels:?}"
    );
    rec.submit().unwrap();
    let want = reference::attention(
        &q,
        &k,
        &v,
        [1, n, m],
        1,
        d,
        false,
        1.0 / (d as f32).sqrt(),
        None,
    );
    check(
        "attention 1x128, 131 keys, packed K over the binding",
        &out.to_vec(&g).unwrap(),
        &want,
        1e-4,
        1e-4,
    );
}
