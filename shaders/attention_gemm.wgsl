// Attention on CPU devices at wide heads as two GEMMs (ops::attention_gemm, read its doc):
// the helpers around the matmul kernel's products, f32.
//
// PACK: K and V of every (image, head) copied for the products, their key count padded
// with zeros to nkp (a multiple of 4, so that the products take the vectorised loop):
//   kt[bh, c, j] = K[b, j, h·d + c]   (Kᵀ, [b·heads, d, nkp]: B of S = Q·Kᵀ)
//   vp[bh, j, c] = V[b, j, h·d + c]   ([b·heads, nkp, d]: B of O = P·V)
// one workgroup of 8 lanes per pair of packed key rows. Dispatch: b·heads·nkp/2
// workgroups.
//
// else (softmax): each row of a query chunk's scores S ([heads, qc, nkp], the first `rows`
// of each head's qc rows in use) replaced in place by softmax(scale · s) over its first
// n_kv columns (f32, as torch.softmax: exp(x − max) / sum; the max and the sum in one
// online pass, the probabilities in a second: two loads and one store per score), the
// padded columns by 0. One row per lane; LOAD64 moves the scores as 64-bit words.
// Dispatch: ⌈heads · qc / 8⌉ workgroups.

#include "common.wgsl"

struct Params {
    batch: u32, heads: u32, n_kv: u32, nkp: u32,
    d: u32, k_off: u32, v_off: u32, k_stride: u32,
    v_stride: u32, qc: u32, rows: u32, scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

#if PACK
#if LOAD64
// 64-bit components (define LOAD64, see common.wgsl): llvmpipe moves storage data lane by
// lane, one component at a time, so a u64 carrying two f32 halves the work.
@group(0) @binding(1) var<storage, read> k: array<vec2<u64>>;
@group(0) @binding(2) var<storage, read> v: array<vec2<u64>>;
@group(0) @binding(3) var<storage, read_write> kt: array<u64>;
@group(0) @binding(4) var<storage, read_write> vp: array<vec2<u64>>;
fn k4(i: u32) -> vec4<f32> { return f32x4_bits(k[i]); }
fn v4(i: u32) -> vec4<f32> { return f32x4_bits(v[i]); }
fn store_vp(i: u32, x: vec4<f32>) { vp[i] = f32x4_words(x); }
// Kᵀ elements t and t + 1 (t even).
fn store_kt2(t: u32, a: f32, b: f32) {
    kt[t / 2u] = u64(bitcast<u32>(a)) | (u64(bitcast<u32>(b)) << 32u);
}
#else
@group(0) @binding(1) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> kt: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> vp: array<vec4<f32>>;
fn k4(i: u32) -> vec4<f32> { return k[i]; }
fn v4(i: u32) -> vec4<f32> { return v[i]; }
fn store_vp(i: u32, x: vec4<f32>) { vp[i] = x; }
fn store_kt2(t: u32, a: f32, b: f32) { kt[t / 2u] = vec2<f32>(a, b); }
#endif

@compute @workgroup_size(8)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    // One workgroup per pair of packed key rows j, j + 1 (j even; nkp is a multiple of 4) of
    // one (image, head) bh: its indices are the same for every lane (llvmpipe divides per
    // lane otherwise, one scalar divide each). The 8 lanes take four head-dim elements each,
    // 32 apart (d, the offsets and strides are multiples of 4, checked by the host); the pair
    // makes Kᵀ's stores two keys wide. A padded key loads the last real one (an address in
    // bounds) and stores zeros.
    let pair = linear_workgroup(wid, nwg);
    let half = p.nkp / 2u;
    if (pair >= p.batch * p.heads * half) {
        return;
    }
    let j = 2u * (pair % half);
    let bh = pair / half;
    let h = bh % p.heads;
    let b = bh / p.heads;
    let v0 = j < p.n_kv;
    let v1 = j + 1u < p.n_kv;
    let key0 = b * p.n_kv + min(j, p.n_kv - 1u);
    let key1 = b * p.n_kv + min(j + 1u, p.n_kv - 1u);
    let k0 = p.k_off + key0 * p.k_stride + h * p.d;
    let k1 = p.k_off + key1 * p.k_stride + h * p.d;
    let w0 = p.v_off + key0 * p.v_stride + h * p.d;
    let w1 = p.v_off + key1 * p.v_stride + h * p.d;
    let row = bh * p.nkp + j;
    for (var c = 4u * lane; c < p.d; c += 32u) {
        store_vp((row * p.d + c) / 4u, select(vec4<f32>(0.0), v4((w0 + c) / 4u), v0));
        store_vp(((row + 1u) * p.d + c) / 4u, select(vec4<f32>(0.0), v4((w1 + c) / 4u), v1));
        let a = select(vec4<f32>(0.0), k4((k0 + c) / 4u), v0);
        let n = select(vec4<f32>(0.0), k4((k1 + c) / 4u), v1);
        let t = (bh * p.d + c) * p.nkp + j;
        store_kt2(t, a.x, n.x);
        store_kt2(t + p.nkp, a.y, n.y);
        store_kt2(t + 2u * p.nkp, a.z, n.z);
        store_kt2(t + 3u * p.nkp, a.w, n.w);
    }
}
#else
#if LOAD64
@group(0) @binding(1) var<storage, read_write> s: array<vec2<u64>>;
fn s4(i: u32) -> vec4<f32> { return f32x4_bits(s[i]); }
fn store_s4(i: u32, x: vec4<f32>) { s[i] = f32x4_words(x); }
#else
@group(0) @binding(1) var<storage, read_write> s: array<vec4<f32>>;
fn s4(i: u32) -> vec4<f32> { return s[i]; }
fn store_s4(i: u32, x: vec4<f32>) { s[i] = x; }
#endif

// The scaled scores of vec4 i of a row, columns past n_kv at `fill`.
fn scores(base: u32, i: u32, fill: f32) -> vec4<f32> {
    let col = vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u);
    return select(vec4<f32>(fill), s4(base + i) * p.scale, col < vec4<u32>(p.n_kv));
}

@compute @workgroup_size(8)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    // One row per lane, 8 rows per workgroup: a workgroup per row cost more to start than
    // a short row's work on llvmpipe.
    let r = linear_workgroup(wid, nwg) * 8u + lane;
    if (r >= p.heads * p.qc || r % p.qc >= p.rows) {
        return;
    }
    let nv = p.nkp / 4u;
    let base = r * nv;
    // Pass 1: the running max and sum of exps per component (online: the sum is rescaled
    // when the max grows), padded columns contributing nothing.
    var mx = vec4<f32>(-3.0e38);
    var sum = vec4<f32>(0.0);
    for (var i = 0u; i < nv; i++) {
        let x = scores(base, i, -3.0e38);
        let m = max(mx, x);
        let col = vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u);
        let e = select(vec4<f32>(0.0), exp(x - m), col < vec4<u32>(p.n_kv));
        sum = sum * exp(mx - m) + e;
        mx = m;
    }
    let m = max(max(mx.x, mx.y), max(mx.z, mx.w));
    let inv = 1.0 / dot(sum, exp(mx - vec4<f32>(m)));
    // Pass 2: the probabilities (exp of a padded column's fill is 0).
    for (var i = 0u; i < nv; i++) {
        store_s4(base + i, exp(scores(base, i, -3.0e38) - vec4<f32>(m)) * inv);
    }
}
#endif
