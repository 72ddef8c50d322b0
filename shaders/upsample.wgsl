// Nearest-neighbour resize, channels-last, as torch.nn.functional.interpolate(mode="nearest")
// computes it: source row = min(floor(dst_row · scale_h), H − 1) with scale_h = H / OH in f32
// (likewise columns), which for OH = 2H is exactly dst / 2.
// x: [H, W, c] activations (common.wgsl's act) from input row iy0; y: the band of output rows
// [oy0, oy0 + band_h) × OW × c. Threads and elements as in elementwise.wgsl (WG · PER
// consecutive elements per workgroup).

#include "common.wgsl"

override WG: u32 = 256u;
override PER: u32 = 1u;

struct Params {
    full_h: u32, w: u32, c: u32, ow: u32,
    oy0: u32, iy0: u32, band_h: u32, total: u32,
    x_off: u32, y_off: u32, scale_h: f32, scale_w: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read_write> y: array<act>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i0 = linear_workgroup(wid, nwg) * WG * PER + li;
    // Element i is channel i % c of output pixel i / c, which is column (i / c) % ow of band
    // row (i / c) / ow: both pairs stepped by WG (common.wgsl's DivMod), not divided.
    var pc = divmod(i0, p.c);        // (pixel, channel)
    var rc = divmod(pc.q, p.ow);     // (band row, column)
    let s = divmod(WG, p.c);
    let sp = divmod(s.q, p.ow);
    let one = divmod(1u, p.ow);
    for (var j = 0u; j < PER; j++) {
        let i = i0 + j * WG;
        if (i < p.total) {
            let oy = p.oy0 + rc.q;
            let sy = min(u32(floor(f32(oy) * p.scale_h)), p.full_h - 1u) - p.iy0;
            let sx = min(u32(floor(f32(rc.r) * p.scale_w)), p.w - 1u);
            y[p.y_off + i] = x[p.x_off + (sy * p.w + sx) * p.c + pc.r];
        }
        // The pixel advances by s.q, plus one when the channel wraps.
        let carry = pc.r + s.r >= p.c;
        pc = divmod_step(pc, s, p.c);
        rc = divmod_step(rc, sp, p.ow);
        if (carry) {
            rc = divmod_step(rc, one, p.ow);
        }
    }
}
