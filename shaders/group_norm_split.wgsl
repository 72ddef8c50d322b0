// group_norm for GPUs at large sizes: the result of group_norm.wgsl (read its header) with
// `splits` workgroups per (image, group) instead of one, so that a norm with few groups and
// many pixels fills the device (the SD VAE's 512×512×128 norms: 32 groups of 1 M elements).
//
//   split_stats  per (image, group, split): mean and M2 = Σ (x − mean)² of the split's
//                elements (two passes in f32, as group_norm.wgsl);
//   split_apply  per (image, group, split): merges the group's splits with Chan et al.'s
//                pairwise formula (as group_norm_banded.wgsl's finalize; every workgroup of
//                the group merges in the same order, so all get the same statistics) into
//                mean and 1/sqrt(var + eps), then normalises its elements (then SiLU when
//                p.silu != 0).
//
// Split s covers pixels [s·ppw, min((s + 1)·ppw, hw)) of its image (the host makes every
// split non-empty). x, y: [n, hw, c] activations (common.wgsl's act); gamma, beta: f32
// [c]; stats: f32 [n, groups, splits, 2]. Dispatch: n · groups · splits workgroups for each entry point.

#include "common.wgsl"

override WG: u32 = 256u;

struct Params {
    n: u32, hw: u32, c: u32, groups: u32,
    x_off: u32, y_off: u32, silu: u32, splits: u32,
    ppw: u32, _pad0: u32, _pad1: u32, _pad2: u32,
    eps: f32, _pad3: u32, _pad4: u32, _pad5: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<act>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;

#include "reduce.wgsl"

// One split: its (image, group) index, the group's first channel, the split's first element
// (pixel s·ppw, the group's first channel) and its element count.
struct Split { bg: u32, ch0: u32, base: u32, count: u32 }

fn split_of(index: u32) -> Split {
    let bg = index / p.splits;
    let s = index % p.splits;
    let cg = p.c / p.groups;
    let ch0 = (bg % p.groups) * cg;
    let first = s * p.ppw;
    let px = min(p.ppw, p.hw - first);
    return Split(bg, ch0, ((bg / p.groups) * p.hw + first) * p.c + ch0, px * cg);
}

@compute @workgroup_size(WG)
fn split_stats(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let index = linear_workgroup(wid, nwg);
    if (index >= p.n * p.groups * p.splits) {
        return;
    }
    let sp = split_of(index);
    let cg = p.c / p.groups;
    // Element e of the split is pixel e / cg, channel e % cg: stepped, not divided.
    let e0 = divmod(li, cg);
    let step = divmod(WG, cg);
    var s = 0.0;
    var pc = e0;
    for (var e = li; e < sp.count; e += WG) {
        s += f32(x[p.x_off + sp.base + pc.q * p.c + pc.r]);
        pc = divmod_step(pc, step, cg);
    }
    let mean = reduce_sum(li, s) / f32(sp.count);
    var ss = 0.0;
    pc = e0;
    for (var e = li; e < sp.count; e += WG) {
        let d = f32(x[p.x_off + sp.base + pc.q * p.c + pc.r]) - mean;
        ss += d * d;
        pc = divmod_step(pc, step, cg);
    }
    let m2 = reduce_sum(li, ss);
    if (li == 0u) {
        stats[2u * index] = mean;
        stats[2u * index + 1u] = m2;
    }
}

// Mean and 1/sqrt(var + eps) of (image, group) bg, merged from its splits' statistics (every
// workgroup of the group merges them in the same order: all get the same values).
fn group_stats(bg: u32) -> vec2<f32> {
    let cg = p.c / p.groups;
    var acc = vec3<f32>(0.0);   // count, mean, M2
    for (var t = 0u; t < p.splits; t++) {
        let nb = f32(min(p.ppw, p.hw - t * p.ppw) * cg);
        let i = 2u * (bg * p.splits + t);
        acc = chan_merge(acc, nb, stats[i], stats[i + 1u]);
    }
    return vec2<f32>(acc.y, inverseSqrt(acc.z / acc.x + p.eps));
}

@compute @workgroup_size(WG)
fn split_apply(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let index = linear_workgroup(wid, nwg);
    if (index >= p.n * p.groups * p.splits) {
        return;
    }
    let sp = split_of(index);
    let cg = p.c / p.groups;
    let st = group_stats(sp.bg);
    let mean = st.x;
    let inv = st.y;
    let step = divmod(WG, cg);
    var pc = divmod(li, cg);
    for (var e = li; e < sp.count; e += WG) {
        let cc = sp.ch0 + pc.r;
        let i = sp.base + pc.q * p.c + pc.r;
        var v = (f32(x[p.x_off + i]) - mean) * inv * gamma[cc] + beta[cc];
        if (p.silu != 0u) {
            v = silu(v);
        }
        y[p.y_off + i] = act(v);
        pc = divmod_step(pc, step, cg);
    }
}

// For a conv that normalises as it reads (conv2d.wgsl's A_GN): per (image, group), one
// workgroup merges the group's splits as split_apply does and writes, for each channel c of
// the group, scale = γ[c] / sqrt(var + eps) and shift = β[c] − mean · scale into y, f32
// [n, 2·c] (scales, then shifts). x is not read. Dispatch: n · groups workgroups.
@compute @workgroup_size(WG)
fn split_affine(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let bg = linear_workgroup(wid, nwg);
    if (bg >= p.n * p.groups) {
        return;
    }
    let cg = p.c / p.groups;
    let st = group_stats(bg);
    let mean = st.x;
    let inv = st.y;
    let b = bg / p.groups;
    let ch0 = (bg % p.groups) * cg;
    for (var j = li; j < cg; j += WG) {
        let c = ch0 + j;
        let scale = inv * gamma[c];
        y[p.y_off + b * 2u * p.c + c] = act(scale);
        y[p.y_off + b * 2u * p.c + p.c + c] = act(beta[c] - mean * scale);
    }
}
