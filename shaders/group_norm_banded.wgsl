// group_norm for an image larger than one storage binding, in bands of pixels, with the
// same statistics as group_norm.wgsl (torch.nn.GroupNorm, then SiLU when p.silu != 0):
//
//   band_stats    per (band, group): count, mean and M2 = Σ (x − mean)² of the band (two-pass);
//   band_finalize per group: merges the bands' (mean, M2) with Chan et al.'s pairwise
//                 formula into the image's mean and 1 / sqrt(var + eps);
//   band_apply    per (band, group): y = (x − mean) · inv · gamma + beta (+ SiLU).
//
// x, y: the band's pixels, [hw, c] activations (common.wgsl's act); gamma, beta: f32 [c];
// stats: f32, the partials [n_bands, groups, 2] then the result [groups, 2]. One workgroup per group (linearised
// grid); the host dispatches the bands of one image in order, then finalize, then apply.

#include "common.wgsl"

override WG: u32 = 256u;

#include "reduce.wgsl"

struct Params {
    hw: u32, c: u32, groups: u32, x_off: u32,
    y_off: u32, silu: u32, band: u32, n_bands: u32,
    band_hw: u32, total_hw: u32, _pad0: u32, _pad1: u32,
    eps: f32, _pad2: u32, _pad3: u32, _pad4: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<act>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;

fn x_at(g: u32, cg: u32, e: u32) -> f32 {
    return f32(x[p.x_off + (e / cg) * p.c + g * cg + e % cg]);
}

@compute @workgroup_size(WG)
fn band_stats(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let g = linear_workgroup(wid, nwg);
    if (g >= p.groups) {
        return;
    }
    let cg = p.c / p.groups;
    let count = p.hw * cg;
    var s = 0.0;
    for (var e = li; e < count; e += WG) {
        s += x_at(g, cg, e);
    }
    let mean = reduce_sum(li, s) / f32(count);
    var ss = 0.0;
    for (var e = li; e < count; e += WG) {
        let d = x_at(g, cg, e) - mean;
        ss += d * d;
    }
    let m2 = reduce_sum(li, ss);
    if (li == 0u) {
        let i = (p.band * p.groups + g) * 2u;
        stats[i] = mean;
        stats[i + 1u] = m2;
    }
}

@compute @workgroup_size(WG)
fn band_finalize(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let g = linear_workgroup(wid, nwg);
    if (g >= p.groups || li != 0u) {
        return;
    }
    let cg = p.c / p.groups;
    var acc = vec3<f32>(0.0);   // count, mean, M2
    for (var b = 0u; b < p.n_bands; b++) {
        let nb = f32(min(p.band_hw, p.total_hw - b * p.band_hw) * cg);
        let i = (b * p.groups + g) * 2u;
        acc = chan_merge(acc, nb, stats[i], stats[i + 1u]);
    }
    let n = acc.x;
    let mean = acc.y;
    let m2 = acc.z;
    let out = (p.n_bands * p.groups + g) * 2u;
    stats[out] = mean;
    stats[out + 1u] = inverseSqrt(m2 / n + p.eps);
}

@compute @workgroup_size(WG)
fn band_apply(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let g = linear_workgroup(wid, nwg);
    if (g >= p.groups) {
        return;
    }
    let cg = p.c / p.groups;
    let s = (p.n_bands * p.groups + g) * 2u;
    let mean = stats[s];
    let inv = stats[s + 1u];
    for (var e = li; e < p.hw * cg; e += WG) {
        let cc = g * cg + e % cg;
        let i = (e / cg) * p.c + cc;
        var v = (f32(x[p.x_off + i]) - mean) * inv * gamma[cc] + beta[cc];
        if (p.silu != 0u) {
            v = silu(v);
        }
        y[p.y_off + i] = act(v);
    }
}
