// Attention on CPU devices at wide heads as two GEMMs (ops::attention_gemm, read its doc):
// the helpers around the matmul kernel's products, f32.
//
// PACK: V of every (image, head) copied for O = P·V, its key count padded with zeros to
// nkp (a multiple of 4, so that the product takes the vectorised loop):
//   vp[bh, j, c] = V[b, j, h·d + c]   ([b·heads, nkp, d]: B of O = P·V)
// one workgroup of 8 lanes per 4 packed key rows. Dispatch: b·heads·nkp/4 workgroups.
// (K and Q are read in place by Sᵀ = K·Qᵀ, the matmul kernel's B_T and C_T.)
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
    d: u32, v_off: u32, v_stride: u32, qc: u32,
    rows: u32, scale: f32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

#if PACK
#if LOAD64
// 64-bit components (define LOAD64, see common.wgsl): llvmpipe moves storage data lane by
// lane, one component at a time, so a u64 carrying two f32 halves the work.
@group(0) @binding(1) var<storage, read> v: array<vec2<u64>>;
@group(0) @binding(2) var<storage, read_write> vp: array<vec2<u64>>;
fn v4(i: u32) -> vec4<f32> { return f32x4_bits(v[i]); }
fn store_vp(i: u32, x: vec4<f32>) { vp[i] = f32x4_words(x); }
#else
@group(0) @binding(1) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> vp: array<vec4<f32>>;
fn v4(i: u32) -> vec4<f32> { return v[i]; }
fn store_vp(i: u32, x: vec4<f32>) { vp[i] = x; }
#endif

@compute @workgroup_size(8)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    // One workgroup per 4 packed key rows j0 .. j0 + 3 of one (image, head) bh: its indices
    // are the same for every lane (llvmpipe divides per lane otherwise, one scalar divide
    // each). The 8 lanes take four head-dim elements each, 32 apart (d, the offsets and
    // strides are multiples of 4, checked by the host). A padded key loads the last real one
    // (an address in bounds) and stores zeros.
    let blk = linear_workgroup(wid, nwg);
    let nblk = p.nkp / 4u;
    if (blk >= p.batch * p.heads * nblk) {
        return;
    }
    let j0 = 4u * (blk % nblk);
    let bh = blk / nblk;
    let h = bh % p.heads;
    let b = bh / p.heads;
    for (var jj = 0u; jj < 4u; jj++) {
        let j = j0 + jj;
        let w = p.v_off + (b * p.n_kv + min(j, p.n_kv - 1u)) * p.v_stride + h * p.d;
        let o = (bh * p.nkp + j) * p.d;
        let real = j < p.n_kv;
        for (var c = 4u * lane; c < p.d; c += 32u) {
            store_vp((o + c) / 4u, select(vec4<f32>(0.0), v4((w + c) / 4u), real));
        }
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
