// Per-step arithmetic of a recorded denoising step (src/ops/step_table.rs).
//
// A step plan is recorded once and replayed every step; what differs between steps (the
// timestep, the sampler's coefficients, the input scale, inpainting's noise level) lives in
// a table on the device:
//
//   table[table_off]                          the current row, as u32 bits (copied in per step)
//   table[table_off + 1 + row·stride + k]     coefficient k of that row
//
// Entries (n f32 elements each, one per thread, linearised grid):
//   combine:  y = Σ_{k < terms} coef(cidx[k]) · s_k      then clamp(y, −r, r) when clamp_on
//   blend:    y = m · x + (1 − m) · (coef(cidx[0]) · img + coef(cidx[1]) · noise)
//             (s0 = x, s1 = m, s2 = img, s3 = noise: 4-channel inpainting's known region)
//   copy:     y = s0
// Unused sources are bound to s0 and never read.

#include "common.wgsl"

override WG: u32 = 256u;

struct Params {
    n: u32, terms: u32, clamp_on: u32, y_off: u32,
    off: vec4<u32>,
    cidx: vec4<u32>,
    stride: u32, table_off: u32, clamp_r: f32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> s0: array<f32>;
@group(0) @binding(3) var<storage, read> s1: array<f32>;
@group(0) @binding(4) var<storage, read> s2: array<f32>;
@group(0) @binding(5) var<storage, read> s3: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

fn coef(k: u32) -> f32 {
    let row = bitcast<u32>(table[p.table_off]);
    return table[p.table_off + 1u + row * p.stride + k];
}

@compute @workgroup_size(WG)
fn combine(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = linear_workgroup(wid, nwg) * WG + li;
    if (i >= p.n) { return; }
    var r = coef(p.cidx.x) * s0[p.off.x + i];
    if (p.terms > 1u) { r += coef(p.cidx.y) * s1[p.off.y + i]; }
    if (p.terms > 2u) { r += coef(p.cidx.z) * s2[p.off.z + i]; }
    if (p.terms > 3u) { r += coef(p.cidx.w) * s3[p.off.w + i]; }
    if (p.clamp_on != 0u) { r = clamp(r, -p.clamp_r, p.clamp_r); }
    y[p.y_off + i] = r;
}

@compute @workgroup_size(WG)
fn blend(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = linear_workgroup(wid, nwg) * WG + li;
    if (i >= p.n) { return; }
    let m = s1[p.off.y + i];
    let known = coef(p.cidx.x) * s2[p.off.z + i] + coef(p.cidx.y) * s3[p.off.w + i];
    y[p.y_off + i] = m * s0[p.off.x + i] + (1.0 - m) * known;
}

@compute @workgroup_size(WG)
fn copy(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = linear_workgroup(wid, nwg) * WG + li;
    if (i >= p.n) { return; }
    y[p.y_off + i] = s0[p.off.x + i];
}
