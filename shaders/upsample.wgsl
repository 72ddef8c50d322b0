// Nearest-neighbour 2× upsample (torch.nn.functional.interpolate(scale_factor=2,
// mode="nearest")), channels-last: y[b, oy, ox, c] = x[b, oy / 2, ox / 2, c].
// x: f32 [n, h, w, c], y: f32 [n, 2h, 2w, c]. One output element per thread.

#include "common.wgsl"

override WG: u32 = 256u;

struct Params {
    n: u32, h: u32, w: u32, c: u32,
    x_off: u32, y_off: u32, total: u32, _pad0: u32,
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
    let c = i % p.c;
    let pix = i / p.c;
    let w2 = p.w * 2u;
    let ox = pix % w2;
    let oy = (pix / w2) % (p.h * 2u);
    let b = pix / (w2 * p.h * 2u);
    y[p.y_off + i] = x[p.x_off + ((b * p.h + oy / 2u) * p.w + ox / 2u) * p.c + c];
}
