// Attention on CPU devices at wide heads as two GEMMs (ops::attention_gemm, read its doc):
// the helpers around the matmul kernel's products, f32.
//
// PACK: K and V of every (image, head) copied for the products, their key count padded
// with zeros to nkp (a multiple of 4, so that the products take the vectorised loop):
//   kt[bh, c, j] = K[b, j, h·d + c]   (Kᵀ, [b·heads, d, nkp]: B of S = Q·Kᵀ)
//   vp[bh, j, c] = V[b, j, h·d + c]   ([b·heads, nkp, d]: B of O = P·V)
// four head-dim elements of each per invocation. Dispatch: ⌈b·heads·nkp·d / 256⌉ workgroups.
//
// else (softmax): one row of a query chunk's scores S ([heads, qc, nkp], the first `rows`
// of each head's qc rows in use) replaced in place by softmax(scale · s) over its first
// n_kv columns (f32: the row max, then the exps and their sum, then the division, as
// torch.softmax), the padded columns by 0. One subgroup of 8 lanes per row (the host
// checks the device's subgroup size is 8), lane l taking the vec4s l, l + 8, …
// Dispatch: heads · qc workgroups.

#include "common.wgsl"

struct Params {
    batch: u32, heads: u32, n_kv: u32, nkp: u32,
    d: u32, k_off: u32, v_off: u32, k_stride: u32,
    v_stride: u32, qc: u32, rows: u32, scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

#if PACK
@group(0) @binding(1) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> kt: array<f32>;
@group(0) @binding(4) var<storage, read_write> vp: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    // Four head-dim elements per invocation (d, the offsets and strides are multiples of
    // 4, checked by the host): idx = (bh · nkp + j) · d/4 + c/4, vp's vec4.
    let dv = p.d / 4u;
    let idx = linear_workgroup(wid, nwg) * 64u + li;
    if (idx >= p.batch * p.heads * p.nkp * dv) {
        return;
    }
    let c = 4u * (idx % dv);
    let r = idx / dv;
    let j = r % p.nkp;
    let bh = r / p.nkp;
    let h = bh % p.heads;
    let b = bh / p.heads;
    var kx = vec4<f32>(0.0);
    var vx = vec4<f32>(0.0);
    if (j < p.n_kv) {
        kx = k[(p.k_off + (b * p.n_kv + j) * p.k_stride + h * p.d + c) / 4u];
        vx = v[(p.v_off + (b * p.n_kv + j) * p.v_stride + h * p.d + c) / 4u];
    }
    vp[idx] = vx;
    let t = (bh * p.d + c) * p.nkp + j;
    kt[t] = kx.x;
    kt[t + p.nkp] = kx.y;
    kt[t + 2u * p.nkp] = kx.z;
    kt[t + 3u * p.nkp] = kx.w;
}
#else
@group(0) @binding(1) var<storage, read_write> s: array<vec4<f32>>;

// The scaled scores of vec4 i of a row, columns past n_kv at `fill`.
fn scores(base: u32, i: u32, fill: f32) -> vec4<f32> {
    let col = vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u);
    return select(vec4<f32>(fill), s[base + i] * p.scale, col < vec4<u32>(p.n_kv));
}

@compute @workgroup_size(8)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let r = linear_workgroup(wid, nwg);
    if (r >= p.heads * p.qc || r % p.qc >= p.rows) {
        return;
    }
    let nv = p.nkp / 4u;
    let base = r * nv;
    var mx = vec4<f32>(-3.0e38);
    for (var i = lane; i < nv; i += 8u) {
        mx = max(mx, scores(base, i, -3.0e38));
    }
    let m = subgroupMax(max(max(mx.x, mx.y), max(mx.z, mx.w)));
    var sum = vec4<f32>(0.0);
    for (var i = lane; i < nv; i += 8u) {
        // exp(-inf-like) of a padded column is 0.
        let e = exp(scores(base, i, -3.0e38) - vec4<f32>(m));
        s[base + i] = e;
        sum += e;
    }
    let inv = 1.0 / subgroupAdd(sum.x + sum.y + sum.z + sum.w);
    for (var i = lane; i < nv; i += 8u) {
        s[base + i] = s[base + i] * inv;
    }
}
#endif
