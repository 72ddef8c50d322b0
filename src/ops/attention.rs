//! Fused flash-style multi-head attention (`shaders/attention.wgsl`). Memory O((N + M)·d):
//! the N×M score matrix is never allocated.

use super::{act_defines, push, require_act, require_same_act, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{Access, KernelKey, Recorder};
use crate::shaders::Define;
use crate::tensor::{Bound, DType, Tensor};

/// Mirrors `Params` in `shaders/attention.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AttentionParams {
    pub batch: u32,
    pub heads: u32,
    pub n_q: u32,
    pub n_kv: u32,
    pub q_off: u32,
    pub k_off: u32,
    pub v_off: u32,
    pub o_off: u32,
    pub q_stride: u32,
    pub k_stride: u32,
    pub v_stride: u32,
    pub o_stride: u32,
    pub tiles_q: u32,
    pub causal: u32,
    pub scale: f32,
    pub kv_begin: u32,
    pub kv_end: u32,
    pub first: u32,
    pub last: u32,
    pub _pad: u32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionOptions {
    pub heads: usize,
    /// Mask keys after the query's position (CLIP's causal mask).
    pub causal: bool,
    /// Score scale; `None` is `1/sqrt(d_head)`.
    pub scale: Option<f32>,
}

/// Queries per workgroup (one per thread).
pub const WG: u32 = 64;
/// Largest head dim the kernel takes (the SD VAE's single 512-channel head).
pub const MAX_HEAD_DIM: usize = 512;
/// Workgroup memory the kernel plans for (the WebGPU default minimum is 16 KiB).
const SMEM_BUDGET: usize = 16 * 1024;

/// Keys per block: the largest power of two ≤ 32 whose K and V tiles fit the budget.
fn block_keys(d: usize, smem: usize) -> u32 {
    let mut b = 32;
    while b > 1 && 2 * b * d * 4 > smem {
        b /= 2;
    }
    b as u32
}

/// Threads (= queries) per workgroup: 64, or 16 / 32 when there are that few queries (the
/// idle threads would still take part in every barrier: on lavapipe the built-in model's
/// 16-query attentions ran at a quarter of the speed at 64).
fn wg_for(n_q: usize) -> u32 {
    match n_q {
        0..=16 => 16,
        17..=32 => 32,
        _ => WG,
    }
}

/// Workgroup size of the CPU-device kernel (`shaders/attention_cpu.wgsl`) that devices with
/// the subgroup GEMM core (subgroup size exactly 8: CPU devices such as lavapipe) use.
const SUBGROUP_WG: u32 = 8;

/// An attention kernel: q, k, v read, the output and the key chunks' state written, the
/// params of [`AttentionParams`].
fn attention_kernel(
    shader: &'static str,
    defines: Vec<Define>,
    overrides: Vec<(&'static str, u32)>,
) -> KernelKey {
    KernelKey {
        shader,
        entry: "main",
        defines,
        overrides,
        bindings: vec![
            Access::Read,
            Access::Read,
            Access::Read,
            Access::ReadWrite,
            Access::ReadWrite,
        ],
        params_size: std::mem::size_of::<AttentionParams>() as u64,
    }
}

/// The workgroup kernel (`shaders/attention.wgsl`) with `wg` threads; `act`: the dtype of q,
/// k, v and the output.
fn key(d: usize, smem: usize, vec4: bool, wg: u32, act: DType) -> KernelKey {
    let width = if vec4 { 4 } else { 1 };
    let mut defines = vec![
        Define::Const("D", d as u32),
        Define::Const("DV", (d / width) as u32),
        Define::Const("BKV", block_keys(d, smem)),
    ];
    if vec4 {
        defines.push(Define::Flag("VEC4"));
    }
    defines.extend(act_defines(act));
    attention_kernel("attention.wgsl", defines, vec![("WG", wg)])
}

/// Queries per workgroup of the GPU kernel (`shaders/attention_tiled.wgsl`), and its keys per
/// block.
const TILED_BQ: usize = 64;
const TILED_BKV: usize = 32;
/// vec4s of that kernel's streaming buffer (a V chunk is VK keys × DV vec4s).
const TILED_STREAM: usize = 320;

/// Keys per V chunk of the GPU kernel for `dv` head-dim vec4s: the largest power of two
/// ≤ 32 whose chunk fits the streaming buffer.
fn tiled_vk(dv: usize) -> usize {
    let mut vk = TILED_BKV;
    while vk > 1 && vk * dv > TILED_STREAM {
        vk /= 2;
    }
    vk
}

/// Whether the GPU kernel takes this head dim: vec4 operands, whole chunks of two vec4s.
fn tiled_ok(d: usize, vec4: bool) -> bool {
    vec4 && d % 8 == 0 && d <= MAX_HEAD_DIM
}

/// The GPU kernel for head dim `d` (see [`tiled_ok`]).
fn tiled_key(d: usize, act: DType) -> KernelKey {
    let dv = d / 4;
    let mut defines = vec![
        Define::Const("D", d as u32),
        Define::Const("DV", dv as u32),
        Define::Const("VK", tiled_vk(dv) as u32),
        Define::Const("NO", dv.div_ceil(16) as u32),
    ];
    defines.extend(act_defines(act));
    attention_kernel("attention_tiled.wgsl", defines, vec![])
}

/// The CPU-device kernel (`shaders/attention_cpu.wgsl`): one subgroup of 8 lanes, two
/// queries per lane, four with `quad` (see [`cpu_quad`]).
fn cpu_key(d: usize, vec4: bool, load64: bool, quad: bool, act: DType) -> KernelKey {
    let width = if vec4 { 4 } else { 1 };
    let mut defines = vec![
        Define::Const("D", d as u32),
        Define::Const("DV", (d / width) as u32),
    ];
    if quad {
        defines.push(Define::Flag("QUAD"));
    }
    if cpu_spans(d) {
        defines.push(Define::Flag("SPANS"));
    }
    if vec4 {
        defines.push(Define::Flag("VEC4"));
        if load64 {
            defines.push(Define::Flag("LOAD64"));
        }
    }
    defines.extend(act_defines(act));
    attention_kernel("attention_cpu.wgsl", defines, vec![])
}

/// Whether the CPU-device kernel gives each lane four queries (`QUAD`, 32-query tiles)
/// rather than two: vec4 rows of at most 12 vec4s (head dims up to 48, SD 1.x's 40) and more
/// than one 16-query tile, or of 16 (head dim 64: SD 2.x's and SDXL's) from 256 queries.
/// Each shuffled key and value then serves four queries; measured on Mesa 25 lavapipe
/// (`attention` in `cargo bench`): 1.2–1.35× at d 8–48, but 3–4× slower from 14 vec4s
/// (d 56, 64, 80), where the four rows no longer fit what llvmpipe keeps unrolled. Since the
/// key spans ([`cpu_spans`]), 64-wide heads gain from four queries too (the two alternating
/// 12 rounds in one process, median ratios: 2 × 4096² × 5 heads 1.22×, 1024² × 10 heads
/// 1.17×, 1024 × 77 keys × 8 heads 1.06–1.08×, 256² × 20 heads 1.08×, 256 × 77 1.04×), but
/// not CLIP's 77 queries (0.77×: three 32-query tiles for 77) nor 80-wide heads (0.27×).
fn cpu_quad(dv: usize, vec4: bool, n_q: usize) -> bool {
    vec4 && n_q > CPU_QPW && (dv <= 12 || (dv <= 16 && n_q >= 256))
}

/// Queries per workgroup of the CPU-device kernel (two per lane; four with `QUAD`).
const CPU_QPW: usize = 16;

/// Whether the CPU-device kernel takes its keys in spans of 128, two passes each (`SPANS`:
/// the span's scores kept, then exp(s − max) · v with one rescale per span instead of one
/// per key): head dims of 40 and up. Measured on Mesa 25 lavapipe (ops::attention alone,
/// the two alternating 12 rounds in one process, median ratio): 2 × 4096 × 77 keys × 8 × 40
/// 1.15–1.24×, 4096² × 8 × 40 1.21×, 1024² × 8 × 40 1.15×, 1024 × 77 × 8 × 64 1.30×, CLIP's
/// causal 77 × 12 × 64 1.30×; but 0.95× at 2 × 24 and 0.72× at 4 × 12 (the built-in
/// model's heads), where a key's arithmetic no longer covers storing its scores.
fn cpu_spans(d: usize) -> bool {
    d >= 40
}

/// Whether CPU devices run this head dim with the wide-head kernel
/// (`shaders/attention_cpu_wide.wgsl`: lanes split the head dim): vec4 operands, 8 lanes ×
/// whole vec4s, and at least 128 floats (below, `attention_cpu.wgsl`'s rows still fit the
/// loops the compiler unrolls).
fn cpu_wide_ok(d: usize, vec4: bool) -> bool {
    vec4 && d % 32 == 0 && (128..=MAX_HEAD_DIM).contains(&d)
}

/// The CPU-device wide-head kernel for head dim `d` (see [`cpu_wide_ok`]).
fn cpu_wide_key(d: usize, load64: bool, act: DType) -> KernelKey {
    let mut defines = vec![
        Define::Const("D", d as u32),
        Define::Const("DV", (d / 4) as u32),
        Define::Flag("VEC4"),
    ];
    if load64 {
        defines.push(Define::Flag("LOAD64"));
    }
    defines.extend(act_defines(act));
    attention_kernel("attention_cpu_wide.wgsl", defines, vec![])
}

/// Queries per workgroup of the wide-head CPU kernel.
const CPU_WIDE_QPW: usize = 4;

/// Keys one dispatch of the wide-head CPU kernel may take so that no invocation runs more
/// than `limit` loop iterations, for `dv` head-dim vec4s (dj = dv / 8 per lane): per key
/// 1 + dj (loads) + 4 · 2 · dj (each query's dot and accumulate), plus 4 · 2 · dj around
/// the loop (each query's start and end).
fn wide_keys_per_dispatch(limit: Option<u32>, dv: usize) -> Option<usize> {
    let limit = limit? as usize * 9 / 10;
    let dj = dv / 8;
    let per_key = 1 + dj + CPU_WIDE_QPW * 2 * dj;
    Some((limit.saturating_sub(CPU_WIDE_QPW * 2 * dj) / per_key).max(1))
}

/// Loop iterations one invocation of the GPU kernel runs per block of 32 keys for `dv`
/// head-dim vec4s (an upper bound: the score chunks 1 + 2·(1 + 4) per two vec4s, the row
/// maxima, the rescale, then per V chunk its loads and VK keys of NO·(1 + 4) each).
fn tiled_iterations_per_block(dv: usize) -> usize {
    let (vk, no) = (tiled_vk(dv), dv.div_ceil(16));
    dv / 2 * 11
        + TILED_BKV
        + 8
        + no * 5
        + TILED_BKV / vk * (1 + (vk * dv).div_ceil(256))
        + TILED_BKV * (1 + 5 * no)
}

pub(crate) fn kernel_keys() -> Vec<KernelKey> {
    let mut keys = Vec::new();
    for act in [DType::F32, DType::F16] {
        let mut k: Vec<KernelKey> = [40, 64, 80, 160, 512, 1, 7]
            .iter()
            .flat_map(|&d| {
                let vec4 = d % 4 == 0;
                [
                    key(d, SMEM_BUDGET, vec4, WG, act),
                    key(d, 2 * SMEM_BUDGET, vec4, WG, act),
                    key(d, SMEM_BUDGET, false, WG, act),
                    key(d, SMEM_BUDGET, vec4, 16, act),
                    key(d, SMEM_BUDGET, vec4, 32, act),
                ]
            })
            .collect();
        k.dedup();
        keys.extend(k);
        keys.extend([40, 64, 80, 160, 512, 8].map(|d| tiled_key(d, act)));
        // Spans from head dim 40 (cpu_spans); 24 and under, one key at a time.
        for d in [40, 64, 80, 160, 512, 1, 7, 24] {
            keys.push(cpu_key(d, d % 4 == 0, false, false, act));
            keys.push(cpu_key(d, d % 4 == 0, true, false, act));
            keys.push(cpu_key(d, false, false, false, act));
            if cpu_quad(d / 4, d % 4 == 0, usize::MAX) {
                keys.push(cpu_key(d, true, false, true, act));
                keys.push(cpu_key(d, true, true, true, act));
            }
        }
        for d in [128, 160, 512] {
            keys.push(cpu_wide_key(d, false, act));
            keys.push(cpu_wide_key(d, true, act));
        }
    }
    keys
}

/// Keys one dispatch may take so that no invocation runs more than `limit` loop iterations,
/// for `dv` head-dim entries (floats or vec4s): per block of `bkv` keys the kernel runs
/// 1 + ⌈bkv·dv/WG⌉ (loads) + 2·bkv·(dv + 1) (scores, weighted sum) + dv (rescale)
/// iterations, plus 4·dv around the loop. `None`: all keys.
/// The CPU-device kernel runs 1 + dv (loads) + 8·(1 + 2·dv) iterations per block of 8
/// keys (two or four queries per iteration); with spans (`spans`: [`cpu_spans`]) two
/// passes of 1 + dv + 8·(1 + dv) per block and, per span of 16 blocks, a rescale of dv
/// (counted in full for every block, an upper bound).
fn keys_per_dispatch(
    limit: Option<u32>,
    dv: usize,
    bkv: usize,
    wg: u32,
    spans: bool,
) -> Option<usize> {
    let limit = limit? as usize * 9 / 10;
    let (per_block, bkv) = if wg == SUBGROUP_WG && spans {
        (2 * (1 + dv + 8 * (1 + dv)) + 1 + dv, 8)
    } else if wg == SUBGROUP_WG {
        (1 + dv + 8 * (1 + 2 * dv), 8)
    } else {
        (
            1 + (bkv * dv).div_ceil(wg as usize) + 2 * bkv * (dv + 1) + dv,
            bkv,
        )
    };
    let blocks = (limit.saturating_sub(4 * dv) / per_block).max(1);
    Some(blocks * bkv)
}

/// One operand: the tensor `[b, seq, row]`, where its heads start in a row, and the row length.
struct Operand<'a> {
    t: &'a Tensor,
    col: usize,
}

impl Operand<'_> {
    /// The binding with the element offset of the heads and the row stride, in floats.
    fn bind(&self, rec: &Recorder<'_>) -> Result<(Bound, u32, u32)> {
        let b = self.t.bind(rec.gpu(), "attention")?;
        let off = b.elem_offset + u32_of("attention", "column offset", self.col)?;
        let stride = u32_of("attention", "row length", self.t.shape()[2])?;
        Ok((b, off, stride))
    }
}

/// Multi-head attention. `q`: f32 `[b, n, heads·d]`; `k`, `v`: f32 `[b, m, heads·d]`.
/// Returns f32 `[b, n, heads·d]` (heads concatenated, as diffusers' attention output before
/// `to_out`).
pub fn attention(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: AttentionOptions,
) -> Result<Tensor> {
    const OP: &str = "attention";
    let act = require_act(rec, OP, "q", q)?;
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        require_same_act(OP, name, t, act)?;
        if t.rank() != 3 {
            return Err(Error::shape(
                OP,
                format!(
                    "{name} `{}` must be [batch, seq, heads·d], got {:?}",
                    t.name(),
                    t.shape()
                ),
            ));
        }
    }
    let c = q.shape()[2];
    if k.shape()[2] != c
        || v.shape()[2] != c
        || k.shape()[..2] != v.shape()[..2]
        || k.shape()[0] != q.shape()[0]
    {
        return Err(Error::shape(
            OP,
            format!(
                "q `{}` {:?}, k `{}` {:?}, v `{}` {:?} do not agree",
                q.name(),
                q.shape(),
                k.name(),
                k.shape(),
                v.name(),
                v.shape()
            ),
        ));
    }
    run(
        rec,
        Operand { t: q, col: 0 },
        Operand { t: k, col: 0 },
        Operand { t: v, col: 0 },
        c,
        opts,
    )
}

/// Self-attention on a fused projection `qkv`: f32 `[b, n, 3·heads·d]` holding q, k and v
/// side by side in each row (OpenCLIP's `in_proj`). Returns f32 `[b, n, heads·d]`.
pub fn attention_qkv(
    rec: &mut Recorder<'_>,
    qkv: &Tensor,
    opts: AttentionOptions,
) -> Result<Tensor> {
    const OP: &str = "attention";
    require_act(rec, OP, "qkv", qkv)?;
    if qkv.rank() != 3 || qkv.shape()[2] % 3 != 0 {
        return Err(Error::shape(
            OP,
            format!(
                "qkv `{}` must be [batch, seq, 3·c], got {:?}",
                qkv.name(),
                qkv.shape()
            ),
        ));
    }
    let c = qkv.shape()[2] / 3;
    run(
        rec,
        Operand { t: qkv, col: 0 },
        Operand { t: qkv, col: c },
        Operand { t: qkv, col: 2 * c },
        c,
        opts,
    )
}

fn run(
    rec: &mut Recorder<'_>,
    q: Operand<'_>,
    k: Operand<'_>,
    v: Operand<'_>,
    c: usize,
    opts: AttentionOptions,
) -> Result<Tensor> {
    const OP: &str = "attention";
    let heads = opts.heads;
    if heads == 0 || c % heads != 0 {
        return Err(Error::shape(
            OP,
            format!("{c} channels do not split into {heads} heads"),
        ));
    }
    let d = c / heads;
    if d > MAX_HEAD_DIM {
        return Err(Error::unsupported(
            OP,
            format!("head dim {d} exceeds the kernel's maximum {MAX_HEAD_DIM}"),
        ));
    }
    let (b, n_q) = (q.t.shape()[0], q.t.shape()[1]);
    let n_kv = k.t.shape()[1];
    if b == 0 || n_q == 0 || n_kv == 0 {
        return Err(Error::shape(
            OP,
            format!("empty input: {b} images, {n_q} queries, {n_kv} keys"),
        ));
    }
    if opts.causal && n_kv != n_q {
        return Err(Error::shape(
            OP,
            format!("a causal mask needs as many keys as queries ({n_kv} vs {n_q})"),
        ));
    }
    let gpu = rec.gpu();
    let act = q.t.dtype();
    let out = Tensor::empty_in(rec, &[b, n_q, c], act, "attention.out")?;
    let (qb, q_off, q_stride) = q.bind(rec)?;
    let (kb, k_off, k_stride) = k.bind(rec)?;
    let (vb, v_off, v_stride) = v.bind(rec)?;
    let ob = out.bind(gpu, OP)?;
    // vec4 storage when the head dim and every offset and stride (in floats) divide by 4.
    let vec4 = [
        d as u32,
        q_off,
        k_off,
        v_off,
        ob.elem_offset,
        q_stride,
        k_stride,
        v_stride,
        c as u32,
    ]
    .iter()
    .all(|&x| x % 4 == 0);
    let width: u32 = if vec4 { 4 } else { 1 };
    let dv = d / width as usize;
    let smem = (gpu.limits().max_compute_workgroup_storage_size as usize).min(SMEM_BUDGET * 2);
    let subgroup = gpu.gemm_variant() == crate::gpu::GemmVariant::Subgroup;
    let scale = opts.scale.unwrap_or(1.0 / (d as f32).sqrt());
    // CPU devices: wide heads as GEMMs where they apply (ops::attention_gemm).
    if subgroup && super::attention_gemm::applies(gpu, b, c, d, n_q, n_kv, act, vec4, opts.causal) {
        use super::attention_gemm::{Heads, attention_gemm};
        let (qh, kh, vh) = (
            Heads { t: q.t, col: q.col },
            Heads { t: k.t, col: k.col },
            Heads { t: v.t, col: v.col },
        );
        attention_gemm(rec, &qh, &kh, &vh, &out, heads, scale)?;
        return Ok(out);
    }
    // GPUs: the tiled kernel where it applies; CPU devices: one subgroup per workgroup.
    let tiled = !subgroup && tiled_ok(d, vec4);
    let wide = subgroup && cpu_wide_ok(d, vec4);
    let wg = if subgroup { SUBGROUP_WG } else { wg_for(n_q) };
    let quad = subgroup && !wide && cpu_quad(dv, vec4, n_q);
    let chunk = if wide {
        wide_keys_per_dispatch(gpu.loop_iteration_limit(), dv)
    } else if tiled {
        gpu.loop_iteration_limit().map(|limit| {
            let budget = (limit as usize * 9 / 10).saturating_sub(8 * dv);
            let blocks = budget / tiled_iterations_per_block(dv);
            blocks.max(1) * TILED_BKV
        })
    } else {
        keys_per_dispatch(
            gpu.loop_iteration_limit(),
            dv,
            block_keys(d, smem) as usize,
            wg,
            subgroup && cpu_spans(d),
        )
    }
    .unwrap_or(n_kv)
    .min(n_kv);
    let chunks = n_kv.div_ceil(chunk);
    // Running softmax state between key chunks: per query and head the accumulator and
    // (max, sum), rounded to whole vec4s: [b, n_q, heads, 4·⌈(d + 2) / 4⌉] floats, O(N·d).
    let state = if chunks > 1 {
        Tensor::empty_in(
            rec,
            &[b, n_q, heads, (d + 2).div_ceil(4) * 4],
            DType::F32,
            "attention.state",
        )?
    } else {
        Tensor::empty_in(rec, &[4], DType::F32, "attention.state.unused")?
    };
    let sb = state.bind(gpu, OP)?;
    if sb.elem_offset != 0 {
        return Err(Error::unsupported(
            OP,
            "state buffer must start at its binding",
        ));
    }
    let tiles_q = n_q.div_ceil(if tiled {
        TILED_BQ
    } else if wide {
        CPU_WIDE_QPW
    } else if subgroup {
        if quad { 2 * CPU_QPW } else { CPU_QPW }
    } else {
        wg as usize
    });
    let base = AttentionParams {
        batch: b as u32,
        heads: heads as u32,
        n_q: u32_of(OP, "queries", n_q)?,
        n_kv: u32_of(OP, "keys", n_kv)?,
        q_off: q_off / width,
        k_off: k_off / width,
        v_off: v_off / width,
        o_off: ob.elem_offset / width,
        q_stride: q_stride / width,
        k_stride: k_stride / width,
        v_stride: v_stride / width,
        o_stride: c as u32 / width,
        tiles_q: tiles_q as u32,
        causal: opts.causal as u32,
        scale,
        ..Default::default()
    };
    let grid = gpu.grid(OP, (tiles_q * heads * b) as u64)?;
    for i in 0..chunks {
        let params = AttentionParams {
            kv_begin: (i * chunk) as u32,
            kv_end: ((i + 1) * chunk).min(n_kv) as u32,
            first: (i == 0) as u32,
            last: (i + 1 == chunks) as u32,
            ..base
        };
        let bindings = vec![
            qb.range.clone(),
            kb.range.clone(),
            vb.range.clone(),
            ob.range.clone(),
            sb.range.clone(),
        ];
        let kernel = if tiled {
            tiled_key(d, act)
        } else if wide {
            cpu_wide_key(d, gpu.load64(), act)
        } else if subgroup {
            cpu_key(d, vec4, gpu.load64(), quad, act)
        } else {
            key(d, smem, vec4, wg, act)
        };
        push(rec, kernel, &params, bindings, grid)?;
        let kv = (params.kv_end - params.kv_begin) as f64;
        let (bh, nq, df) = ((b * heads) as f64, n_q as f64, d as f64);
        rec.set_last_cost(crate::gpu::Cost {
            // Q·Kᵀ and P·V.
            flop: 4.0 * bh * nq * kv * df,
            bytes: act.size() as f64 * bh * df * (2.0 * nq + 2.0 * kv),
            shape: format!("{b}x{heads} heads, {n_q} queries x {n_kv} keys, d {d}"),
        });
    }
    Ok(out)
}
