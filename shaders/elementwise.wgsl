// Elementwise kernels, f32, one element per thread, WG threads per workgroup, linearised grid.
//
// unary:  y[i] = f(alpha · x[i] + beta), f by p.op: 0 identity (scale/shift), 1 SiLU,
//         2 GELU (erf, torch's default), 3 quick-GELU (CLIP); op 4 is
//         y[i] = clamp(x[i], alpha, beta) (torch.clamp).
// binary: y[i] = x[i] ∘ z[j(i)], ∘ by p.op: 0 add, 1 mul; z broadcasts with
//         j(i) = (i / outer) · inner + i % inner  (same shape: outer = inner = n;
//         per-channel [c]: outer = n, inner = c; per-(batch, channel) [b, c] over [b, hw, c]:
//         outer = hw · c, inner = c).
// geglu:  x: [rows, 2f] → y: [rows, f], y = x[:, :f] · gelu(x[:, f:]) (diffusers GEGLU).

#include "common.wgsl"

override WG: u32 = 256u;

struct Params {
    n: u32, op: u32, x_off: u32, y_off: u32,
    z_off: u32, outer: u32, inner: u32, f: u32,
    alpha: f32, beta: f32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> z: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return linear_workgroup(wid, nwg) * WG + li;
}

@compute @workgroup_size(WG)
fn unary(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = index(wid, nwg, li);
    if (i >= p.n) { return; }
    let t = p.alpha * x[p.x_off + i] + p.beta;
    var r = t;
    switch p.op {
        case 1u: { r = silu(t); }
        case 2u: { r = gelu(t); }
        case 3u: { r = quick_gelu(t); }
        case 4u: { r = clamp(x[p.x_off + i], p.alpha, p.beta); }
        default: {}
    }
    y[p.y_off + i] = r;
}

@compute @workgroup_size(WG)
fn binary(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = index(wid, nwg, li);
    if (i >= p.n) { return; }
    let a = x[p.x_off + i];
    let bz = z[p.z_off + (i / p.outer) * p.inner + i % p.inner];
    y[p.y_off + i] = select(a + bz, a * bz, p.op == 1u);
}

@compute @workgroup_size(WG)
fn geglu(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = index(wid, nwg, li);
    if (i >= p.n) { return; }
    let row = i / p.f;
    let col = i % p.f;
    let base = p.x_off + row * 2u * p.f;
    y[p.y_off + i] = x[base + col] * gelu(x[base + p.f + col]);
}
