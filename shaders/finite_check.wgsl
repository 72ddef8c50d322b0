// Non-finite detector. flag[flag_off] ← min(flag, code) when any x[i] (i < n) is NaN or ±Inf.
//
// x: f32 values read as their bit patterns: a value is non-finite when its exponent bits are
// all ones (0x7f800000), a test no fast-math rewrite of `x != x` can drop. The flag is one u32
// that the host sets to 0xFFFFFFFF (no stage); stages use increasing codes, so after a run it
// holds the earliest stage that produced a NaN or Inf.
// Dispatch: one element per thread, WG threads per workgroup, linearised grid. Only threads
// that see a bad value touch the atomic, so a healthy tensor costs one read per element.

#include "common.wgsl"

override WG: u32 = 256u;

struct Params {
    n: u32, x_off: u32, flag_off: u32, code: u32,
    // With STEP: the code grows by `stride` per row of a step table (src/ops/step_table.rs),
    // so a check recorded once in a step plan names the step it ran in.
    stride: u32, table_off: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> flag: array<atomic<u32>>;
#if STEP
@group(0) @binding(3) var<storage, read> table: array<u32>;
#endif

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = linear_workgroup(wid, nwg) * WG + li;
    if (i >= p.n) { return; }
    if ((x[p.x_off + i] & 0x7f800000u) == 0x7f800000u) {
#if STEP
        let code = p.code + table[p.table_off] * p.stride;
#else
        let code = p.code;
#endif
        atomicMin(&flag[p.flag_off], code);
    }
}
