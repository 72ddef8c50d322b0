// group_norm (torch.nn.GroupNorm with affine), optional fused SiLU, channels-last:
//
//   y[b, p, c] = (x[b, p, c] − mean[b, g]) / sqrt(var[b, g] + eps) · gamma[c] + beta[c]
//   with g = c / (C / G); mean and (biased) var over all p and the C/G channels of group g;
//   then y = silu(y) when p.silu != 0.
//
// x, y: [n, hw, c] activations (f32, or f16 with ACT_F16: common.wgsl's act); gamma, beta:
// f32 [c]; statistics in f32. One workgroup of WG threads per (b, g):
// pass 1 sums x, pass 2 sums (x − mean)² (two-pass in f32: no cancellation, no overflow),
// pass 3 writes. Dispatch: n · groups workgroups (linearised grid).

#include "common.wgsl"

override WG: u32 = 256u;

struct Params {
    n: u32, hw: u32, c: u32, groups: u32,
    x_off: u32, y_off: u32, silu: u32, _pad0: u32,
    eps: f32, _pad1: u32, _pad2: u32, _pad3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// The kernels work in units of U: four channels of one pixel with VEC4 (C / G, x_off and
// y_off multiples of 4, checked by the host; with LOAD64 read and written as 64-bit words:
// common.wgsl), else one channel.
#if VEC4
#if LOAD64
@group(0) @binding(1) var<storage, read> x: array<act4_bits>;
@group(0) @binding(4) var<storage, read_write> y: array<act4_bits>;
fn x_at(i: u32) -> vec4<f32> { return act4_of(x[i]); }
fn y_put(i: u32, v: vec4<f32>) { y[i] = act4_words(v); }
#else
@group(0) @binding(1) var<storage, read> x: array<act4>;
@group(0) @binding(4) var<storage, read_write> y: array<act4>;
fn x_at(i: u32) -> vec4<f32> { return vec4<f32>(x[i]); }
fn y_put(i: u32, v: vec4<f32>) { y[i] = act4(v); }
#endif
@group(0) @binding(2) var<storage, read> gamma: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> beta: array<vec4<f32>>;
alias U = vec4<f32>;
const UW: u32 = 4u;
fn usum(v: U) -> f32 { return v.x + v.y + v.z + v.w; }
fn usilu(v: U) -> U { return vec4<f32>(silu(v.x), silu(v.y), silu(v.z), silu(v.w)); }
#else
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<act>;
fn x_at(i: u32) -> f32 { return f32(x[i]); }
fn y_put(i: u32, v: f32) { y[i] = act(v); }
alias U = f32;
const UW: u32 = 1u;
fn usum(v: U) -> f32 { return v; }
fn usilu(v: U) -> U { return silu(v); }
#endif

#include "reduce.wgsl"

#if QUADS
// Define QUADS (with VEC4 and SUBGROUP_REDUCE: CPU devices) where C / G is 4, 8, 16 or 32
// channels: one subgroup takes GB consecutive groups of an image (GB · C / G = W4 · 4 = 16
// or 32 channels: a whole 64-byte line of f32 per pixel, not the 16 bytes of one narrow
// group, so that the VAE's 128-channel norms read each line once per pass, not once per
// group). Lane l always reads channel quad l % W4 of pixels l / W4, l / W4 + 8 / W4, …
// (so its γ and β are loaded once), and the lanes of a group add up their partial sums by
// shuffles. The host defines GB, QG = C / G / 4 and PSTEP = 8 / W4 (W4 = GB · QG is 4 or
// 8 quads). Dispatch: n · G / GB workgroups.
const W4: u32 = GB * QG;

// The sum of v over the lanes of this lane's group: first the lanes of the same quad (lane
// l and l ^ 4 when W4 is 4), then the group's quads (QG = 1, 2, 4 or 8, aligned).
fn group_sum(v: f32) -> f32 {
    var s = v;
    if (W4 == 4u) { s += subgroupShuffleXor(s, 4u); }
    if (QG > 1u) { s += subgroupShuffleXor(s, 1u); }
    if (QG > 2u) { s += subgroupShuffleXor(s, 2u); }
    if (QG > 4u) { s += subgroupShuffleXor(s, 4u); }
    return s;
}

@compute @workgroup_size(8)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) li: u32,
) {
    let wg_index = linear_workgroup(wid, nwg);
    let blocks = p.groups / GB;
    if (wg_index >= p.n * blocks) {
        return;
    }
    let b = wg_index / blocks;
    let blk = wg_index % blocks;
    let c4 = p.c >> 2u;
    let r = li % W4;
    let q0 = li / W4;
    let base = b * p.hw * c4 + blk * W4 + r;
    let xb = (p.x_off >> 2u) + base;

    var s = vec4<f32>(0.0);
    for (var q = q0; q < p.hw; q += PSTEP) {
        s += x_at(xb + q * c4);
    }
    let n = f32(p.hw * QG * 4u);
    let mean = group_sum(usum(s)) / n;

    var ss = vec4<f32>(0.0);
    for (var q = q0; q < p.hw; q += PSTEP) {
        let d = x_at(xb + q * c4) - vec4<f32>(mean);
        ss += d * d;
    }
    let inv = inverseSqrt(group_sum(usum(ss)) / n + p.eps);

    let cc = blk * W4 + r;
    let gm = gamma[cc];
    let bt = beta[cc];
    let yb = (p.y_off >> 2u) + base;
    for (var q = q0; q < p.hw; q += PSTEP) {
        var v = (x_at(xb + q * c4) - vec4<f32>(mean)) * inv * gm + bt;
        if (p.silu != 0u) {
            v = usilu(v);
        }
        y_put(yb + q * c4, v);
    }
}
#else
// The generic kernel: one workgroup of WG threads per (b, g), in units of U.
@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let wg_index = linear_workgroup(wid, nwg);
    if (wg_index >= p.n * p.groups) {
        return;
    }
    let b = wg_index / p.groups;
    let g = wg_index % p.groups;
    let cu = p.c / UW;
    let cg = cu / p.groups;
    let count = p.hw * cg;
    let base = b * p.hw * cu + g * cg;
    let xb = p.x_off / UW + base;

    // Unit e of the group is pixel e / cg, unit e % cg: stepped (common.wgsl's DivMod), not
    // divided, per element.
    let e0 = divmod(li, cg);
    let step = divmod(WG, cg);

    var s = U(0.0);
    var pc = e0;
    for (var e = li; e < count; e += WG) {
        s += x_at(xb + pc.q * cu + pc.r);
        pc = divmod_step(pc, step, cg);
    }
    let n = f32(count * UW);
    let mean = reduce_sum(li, usum(s)) / n;

    var ss = U(0.0);
    pc = e0;
    for (var e = li; e < count; e += WG) {
        let d = x_at(xb + pc.q * cu + pc.r) - U(mean);
        ss += d * d;
        pc = divmod_step(pc, step, cg);
    }
    let inv = inverseSqrt(reduce_sum(li, usum(ss)) / n + p.eps);

    pc = e0;
    for (var e = li; e < count; e += WG) {
        let cc = g * cg + pc.r;
        let i = pc.q * cu + pc.r;
        var v = (x_at(xb + i) - U(mean)) * inv * gamma[cc] + beta[cc];
        if (p.silu != 0u) {
            v = usilu(v);
        }
        y_put(p.y_off / UW + base + i, v);
        pc = divmod_step(pc, step, cg);
    }
}
#endif
