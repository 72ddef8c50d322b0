// Activation dtype conversion: y = x in the other dtype — f32 → f16 with TO_F16 (rounded to
// the nearest f16, as torch's `.half()`), else f16 → f32 (exact). The host defines ACT_F16
// too, which enables the f16 extension. Threads and elements as in elementwise.wgsl (WG · PER
// consecutive elements per workgroup).

#include "common.wgsl"

override WG: u32 = 256u;
override PER: u32 = 1u;

struct Params {
    n: u32, x_off: u32, y_off: u32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#if TO_F16
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f16>;
fn convert(v: f32) -> f16 { return f16(v); }
#else
@group(0) @binding(1) var<storage, read> x: array<f16>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
fn convert(v: f16) -> f32 { return f32(v); }
#endif

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i0 = linear_workgroup(wid, nwg) * WG * PER + li;
    for (var j = 0u; j < PER; j++) {
        let i = i0 + j * WG;
        if (i < p.n) {
            y[p.y_off + i] = convert(x[p.x_off + i]);
        }
    }
}
