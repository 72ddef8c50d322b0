// matmul / linear:  C[b, m, n] = sum_k A[b, m, k] · B[b, k, n] + bias[n] (+ R[b, m, n])
//
// A, C and R: row-major activations, f32, or f16 with ACT_F16 (common.wgsl's act: read into
// f32, f32 accumulation, rounded once when stored). B: row-major [K, N] (linear weights are
// stored transposed at load time), f32 or f16 (define W_F16: packed two per u32); bias has
// B's dtype. A batch stride of
// 0 for B broadcasts one weight over every batch (the host folds that case into M instead).
// B's rows are b_ld elements apart (N, or wider for a column window of a fused weight, see
// ops::matmul::linear_columns).
// Define A_GEGLU for a feed-forward's second linear reading its GEGLU in place: A's rows are
// the first linear's output [gate-value | gate] (a_ld = 2K) and A(m, k) = P[m, k] ·
// gelu(P[m, K + k]) (diffusers GEGLU), so the [M, K] activation is never stored.
// Define A_LN (subgroup core) for a linear on a LayerNorm of A, normalised as it is read:
// a_row computes the row's mean and 1/sqrt(var + eps) (two passes over K, f32), and
// A(m, k) = (P[m, k] − mean) · inv · ln_g[k] + ln_b[k] (torch.nn.LayerNorm, biased variance),
// so the normalised activation is never stored.
// C's rows are c_ld elements apart (N, or wider: a column window of a larger tensor).
// Batches of two levels: matrix b of A and of C starts at (b / b_inner)·ostride +
// (b % b_inner)·bstride (attention's images × heads, ops::attention_gemm; b_inner = batch
// for a plain batch); B's matrices are b_bstride apart.
// Defines B_T and C_T (subgroup core, VEC4; the host sets both: attention's scores as
// Sᵀ = K·Qᵀ with K and Q read in place and S stored, ops::attention_gemm):
// B_T: B given transposed, as the rows of Bᵀ ([N, K], b_ld apart): B(k, n) = Bᵀ[n, k],
// matrix b starting at (b / b_inner)·b_ostride + (b % b_inner)·b_bstride; columns past N
// load the last row (N need not be a multiple of 4).
// C_T: C stored transposed, C(m, n) at Cᵀ[n, m] (rows c_ld apart, a multiple of 4 at least
// M rounded up to 4), four m per store; elements past M keep their value.
// R (has_res): a residual laid out as C, added in the epilogue (a transformer's
// `x + to_out(attn)`, `x + ff(x)` without a separate add pass).
// The tile loop is gemm_tile_vec4.wgsl on GPUs where K, N and the offsets allow (define VEC4),
// else gemm_tile.wgsl; gemm_subgroup.wgsl on CPU devices (define SUBGROUP_GEMM, with VEC4 on
// the same condition). Dispatch: tiles_n · tiles_m · batch workgroups.

#include "common.wgsl"

struct Params {
    m: u32, n: u32, k: u32, batch: u32,
    a_off: u32, b_off: u32, c_off: u32, bias_off: u32,
    a_bstride: u32, b_bstride: u32, c_bstride: u32, has_bias: u32,
    tiles_n: u32, tiles_m: u32, res_off: u32, has_res: u32,
    b_ld: u32, a_ld: u32, c_ld: u32, b_inner: u32,
    ln_g_off: u32, ln_b_off: u32, ln_eps: f32, a_ostride: u32,
    c_ostride: u32, b_ostride: u32, _pad5: u32, _pad6: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#if VEC4
#if LOAD64
@group(0) @binding(1) var<storage, read> a: array<act4_bits>;
fn a4_at(i: u32) -> vec4<f32> { return act4_of(a[i]); }
#else
@group(0) @binding(1) var<storage, read> a: array<act4>;
fn a4_at(i: u32) -> vec4<f32> { return vec4<f32>(a[i]); }
#endif
#else
@group(0) @binding(1) var<storage, read> a: array<act>;
fn a_at(i: u32) -> f32 { return f32(a[i]); }
#endif
#if W_F16
#if VEC4
#if LOAD64
@group(0) @binding(2) var<storage, read> w: array<u64>;
fn w4_at(i: u32) -> vec4<f32> { return f16x4_bits(w[i >> 2u]); }
#else
@group(0) @binding(2) var<storage, read> w: array<vec2<u32>>;
fn w4_at(i: u32) -> vec4<f32> {
    let u = w[i >> 2u];
    return vec4<f32>(unpack2x16float(u.x), unpack2x16float(u.y));
}
#endif
#else
@group(0) @binding(2) var<storage, read> w: array<u32>;
fn w_at(i: u32) -> f32 { return unpack_half(w[i >> 1u], i); }
#endif
@group(0) @binding(3) var<storage, read> bias: array<u32>;
fn bias_at(i: u32) -> f32 { return unpack_half(bias[i >> 1u], i); }
#else
#if VEC4
#if LOAD64
@group(0) @binding(2) var<storage, read> w: array<vec2<u64>>;
fn w4_at(i: u32) -> vec4<f32> { return f32x4_bits(w[i >> 2u]); }
#else
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
fn w4_at(i: u32) -> vec4<f32> { return w[i >> 2u]; }
#endif
#else
@group(0) @binding(2) var<storage, read> w: array<f32>;
fn w_at(i: u32) -> f32 { return w[i]; }
#endif
@group(0) @binding(3) var<storage, read> bias: array<f32>;
fn bias_at(i: u32) -> f32 { return bias[i]; }
#endif
#if VEC4
@group(0) @binding(4) var<storage, read_write> c: array<act4>;
@group(0) @binding(5) var<storage, read> res: array<act4>;
#else
@group(0) @binding(4) var<storage, read_write> c: array<act>;
@group(0) @binding(5) var<storage, read> res: array<act>;
#endif
#if A_LN
#if VEC4
#if LOAD64
@group(0) @binding(6) var<storage, read> ln_g: array<vec2<u64>>;
@group(0) @binding(7) var<storage, read> ln_b: array<vec2<u64>>;
fn ln_g4(i: u32) -> vec4<f32> { return f32x4_bits(ln_g[i]); }
fn ln_b4(i: u32) -> vec4<f32> { return f32x4_bits(ln_b[i]); }
#else
@group(0) @binding(6) var<storage, read> ln_g: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> ln_b: array<vec4<f32>>;
fn ln_g4(i: u32) -> vec4<f32> { return ln_g[i]; }
fn ln_b4(i: u32) -> vec4<f32> { return ln_b[i]; }
#endif
#else
@group(0) @binding(6) var<storage, read> ln_g: array<f32>;
@group(0) @binding(7) var<storage, read> ln_b: array<f32>;
#endif
#endif

fn gemm_dims() -> vec4<u32> { return vec4<u32>(p.m, p.n, p.k, p.batch); }
fn gemm_tiles() -> vec2<u32> { return vec2<u32>(p.tiles_n, p.tiles_m); }

struct ARow { base: u32, valid: bool, mean: f32, inv: f32 }

#if A_LN
// Mean and 1/sqrt(biased variance + eps) of the row starting at `base` (two passes: no
// cancellation), as torch.nn.LayerNorm computes them.
fn row_stats(base: u32) -> vec2<f32> {
    var s = 0.0;
#if VEC4
    for (var k = 0u; k < p.k; k += 4u) {
        s += dot(a4_at((base + k) >> 2u), vec4<f32>(1.0));
    }
#else
    for (var k = 0u; k < p.k; k++) {
        s += a_at(base + k);
    }
#endif
    let mean = s / f32(p.k);
    var ss = 0.0;
#if VEC4
    for (var k = 0u; k < p.k; k += 4u) {
        let d = a4_at((base + k) >> 2u) - vec4<f32>(mean);
        ss += dot(d, d);
    }
#else
    for (var k = 0u; k < p.k; k++) {
        let d = a_at(base + k) - mean;
        ss += d * d;
    }
#endif
    return vec2<f32>(mean, inverseSqrt(ss / f32(p.k) + p.ln_eps));
}
#endif

// Where matrix b of A, C or a transposed B starts: the two-level batch (b is the same for a
// workgroup; a plain batch skips the division).
fn batch_off(b: u32, stride: u32, ostride: u32) -> u32 {
    if (p.b_inner >= p.batch) {
        return b * stride;
    }
    return (b / p.b_inner) * ostride + (b % p.b_inner) * stride;
}

fn a_row(b: u32, m: u32) -> ARow {
    let base = p.a_off + batch_off(b, p.a_bstride, p.a_ostride) + min(m, p.m - 1u) * p.a_ld;
#if A_LN
    let st = row_stats(base);
    return ARow(base, m < p.m, st.x, st.y);
#else
    return ARow(base, m < p.m, 0.0, 1.0);
#endif
}

#if VEC4
// The vectorised loops (gemm_tile_vec4.wgsl, gemm_subgroup.wgsl with VEC4): K is one block;
// k, K, N and every offset are multiples of 4 (checked by the host). Rows past M load a clamped valid row and
// are not stored.
fn kblocks() -> u32 { return 1u; }
fn kblock_len() -> u32 { return p.k; }
fn a_block(r: ARow, kb: u32) -> ARow { return r; }
#if A_GEGLU
fn load_a4(r: ARow, i: u32) -> vec4<f32> {
    let g = a4_at((r.base + p.k + i) >> 2u);
    return a4_at((r.base + i) >> 2u) * vec4<f32>(gelu(g.x), gelu(g.y), gelu(g.z), gelu(g.w));
}
#else
#if A_LN
fn load_a4(r: ARow, i: u32) -> vec4<f32> {
    let x = a4_at((r.base + i) >> 2u);
    let g = ln_g4((p.ln_g_off + i) >> 2u);
    return (x - vec4<f32>(r.mean)) * r.inv * g + ln_b4((p.ln_b_off + i) >> 2u);
}
#else
fn load_a4(r: ARow, i: u32) -> vec4<f32> { return a4_at((r.base + i) >> 2u); }
#endif
#endif
fn load_b4(b: u32, k: u32, n: u32) -> vec4<f32> {
#if PANELS_B
    // Panel-packed B (the host's Tensor::panels): panel n / 32 is b_ld elements long, its K
    // rows of 32 values one after another; a batched B is such matrices b_bstride apart.
    return w4_at(p.b_off + b * p.b_bstride + (n >> 5u) * p.b_ld + k * 32u + (n & 31u));
#else
    return w4_at(p.b_off + b * p.b_bstride + k * p.b_ld + n);
#endif
}
#if B_T
// Where row n of Bᵀ (column n of B) of matrix b starts: once per lane and column, before
// the K loop.
fn bt_row(b: u32, n: u32) -> u32 {
    return p.b_off + batch_off(b, p.b_bstride, p.b_ostride) + min(n, p.n - 1u) * p.b_ld;
}
// B(k .. k + 3, n) for the Bᵀ row starting at `row`.
fn load_bt4(row: u32, k: u32) -> vec4<f32> { return w4_at(row + k); }
#endif
#if C_T
// Where matrix b of C starts (once per tile).
fn c_batch(b: u32) -> u32 {
    return p.c_off + batch_off(b, p.c_bstride, p.c_ostride);
}
// C(m .. m + 3, n) of the matrix starting at cb (c_batch) as four elements of row n of Cᵀ
// (no bias or residual), those at or past M keeping their value (a read-modify-write at
// the tile's edge only).
fn store_ct4(cb: u32, n: u32, m: u32, v: vec4<f32>) {
    if (m >= p.m) {
        return;
    }
    let i = (cb + n * p.c_ld + m) >> 2u;
    var out = v;
    if (m + 4u > p.m) {
        let inside = vec4<u32>(m) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.m);
        out = select(vec4<f32>(c[i]), v, inside);
    }
    c[i] = act4(out);
}
#endif
// Columns n .. n + 3 of row m (bias already added).
fn store_c4(b: u32, m: u32, n: u32, v: vec4<f32>) {
    let i = batch_off(b, p.c_bstride, p.c_ostride) + m * p.c_ld + n;
    var out = v;
    if (p.has_res != 0u) { out += vec4<f32>(res[(p.res_off + i) >> 2u]); }
    c[(p.c_off + i) >> 2u] = act4(out);
}
#else
// Loads are branch-free: the address is clamped into the operand and the value selected,
// which keeps SIMD (CPU) implementations vectorised and costs nothing on GPUs.
fn load_a(r: ARow, k: u32) -> f32 {
    let kk = min(k, p.k - 1u);
#if A_GEGLU
    let v = a_at(r.base + kk) * gelu(a_at(r.base + p.k + kk));
#else
#if A_LN
    let v = (a_at(r.base + kk) - r.mean) * r.inv * ln_g[p.ln_g_off + kk] + ln_b[p.ln_b_off + kk];
#else
    let v = a_at(r.base + kk);
#endif
#endif
    return select(0.0, v, r.valid && k < p.k);
}

fn load_b(b: u32, k: u32, n: u32) -> f32 {
#if PANELS_B
    let nc = min(n, p.n - 1u);
    let v = w_at(p.b_off + b * p.b_bstride + (nc >> 5u) * p.b_ld + min(k, p.k - 1u) * 32u + (nc & 31u));
#else
    let v = w_at(p.b_off + b * p.b_bstride + min(k, p.k - 1u) * p.b_ld + min(n, p.n - 1u));
#endif
    return select(0.0, v, k < p.k && n < p.n);
}

fn store_c(b: u32, m: u32, n: u32, v: f32) {
    var out = v;
    if (p.has_bias != 0u) { out += bias_at(p.bias_off + n); }
    let i = batch_off(b, p.c_bstride, p.c_ostride) + m * p.c_ld + n;
    if (p.has_res != 0u) { out += f32(res[p.res_off + i]); }
    c[p.c_off + i] = act(out);
}
#endif


#if SUBGROUP_GEMM
#include "gemm_subgroup.wgsl"
#else
#if VEC4
#include "gemm_tile_vec4.wgsl"
#else
#include "gemm_tile.wgsl"
#endif
#endif
