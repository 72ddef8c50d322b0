// layer_norm (torch.nn.LayerNorm over the last dimension, affine):
//
//   y[r, c] = (x[r, c] − mean[r]) / sqrt(var[r] + eps) · gamma[c] + beta[c]
//
// x, y: [rows, c] activations (common.wgsl's act); gamma, beta: f32 [c]. One workgroup of
// WG threads per row, two-pass mean / variance in f32. Dispatch: rows workgroups (linearised grid).

#include "common.wgsl"

override WG: u32 = 128u;

struct Params {
    rows: u32, c: u32, x_off: u32, y_off: u32,
    eps: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<act>;

#include "reduce.wgsl"

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = linear_workgroup(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.c;
    var s = 0.0;
    for (var c = li; c < p.c; c += WG) {
        s += f32(x[p.x_off + base + c]);
    }
    let mean = reduce_sum(li, s) / f32(p.c);
    var ss = 0.0;
    for (var c = li; c < p.c; c += WG) {
        let d = f32(x[p.x_off + base + c]) - mean;
        ss += d * d;
    }
    let inv = inverseSqrt(reduce_sum(li, ss) / f32(p.c) + p.eps);
    for (var c = li; c < p.c; c += WG) {
        y[p.y_off + base + c] = act((f32(x[p.x_off + base + c]) - mean) * inv * gamma[c] + beta[c]);
    }
}
