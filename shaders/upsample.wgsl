// Nearest-neighbour resize, channels-last, as torch.nn.functional.interpolate(mode="nearest")
// computes it: source row = min(floor(dst_row · scale_h), H − 1) with scale_h = H / OH in f32
// (likewise columns), which for OH = 2H is exactly dst / 2.
// x: f32 [H, W, c] window starting at input row iy0; y: f32 band of output rows
// [oy0, oy0 + band_h) × OW × c. One output element per thread.

#include "common.wgsl"

override WG: u32 = 256u;

struct Params {
    full_h: u32, w: u32, c: u32, ow: u32,
    oy0: u32, iy0: u32, band_h: u32, total: u32,
    x_off: u32, y_off: u32, scale_h: f32, scale_w: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = linear_workgroup(wid, nwg) * WG + li;
    if (i >= p.total) { return; }
    let ch = i % p.c;
    let pix = i / p.c;
    let ox = pix % p.ow;
    let oy = p.oy0 + pix / p.ow;
    let sy = min(u32(floor(f32(oy) * p.scale_h)), p.full_h - 1u) - p.iy0;
    let sx = min(u32(floor(f32(ox) * p.scale_w)), p.w - 1u);
    y[p.y_off + i] = x[p.x_off + (sy * p.w + sx) * p.c + ch];
}
