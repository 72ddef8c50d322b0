// Random tensor fill for synthetic weights (src/ops/random.rs): element i of a tensor gets
//
//   offset + scale · (2u − 1),   u = (h >> 8) / 2²⁴ ∈ [0, 1),   h = pcg(pcg(key) ^ pcg(i))
//
// (PCG-RXS-M-XS hash, Jarzynski & Olano 2020), the same function the host computes in
// `weights::Synthetic::values`, so host and device copies agree bit for bit.
// y: raw 32-bit words: f32 (entry f32) or two f16 per word, element 2k in the low half
// (entry f16). One word per thread, linearised grid.

#include "common.wgsl"

override WG: u32 = 256u;

struct Params {
    n: u32, key: u32, y_off: u32, words: u32,
    scale: f32, offset: f32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;

fn pcg(x: u32) -> u32 {
    let state = x * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn value(i: u32) -> f32 {
    let h = pcg(pcg(p.key) ^ pcg(i));
    let u = f32(h >> 8u) / 16777216.0;
    return p.offset + p.scale * (2.0 * u - 1.0);
}

@compute @workgroup_size(WG)
fn f32_words(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let k = linear_workgroup(wid, nwg) * WG + li;
    if (k >= p.words) { return; }
    y[p.y_off + k] = bitcast<u32>(value(k));
}

@compute @workgroup_size(WG)
fn f16_words(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let k = linear_workgroup(wid, nwg) * WG + li;
    if (k >= p.words) { return; }
    let lo = value(2u * k);
    let hi = select(0.0, value(2u * k + 1u), 2u * k + 1u < p.n);
    y[p.y_off + k] = pack2x16float(vec2<f32>(lo, hi));
}
