// Channel concat (torch.cat(dim=channels) in channels-last): y[r, :] = [a[r, :ca], b[r, :cb]].
// a: f32 [rows, ca], b: f32 [rows, cb], y: f32 [rows, ca + cb]. One output element per thread.

#include "common.wgsl"

override WG: u32 = 256u;

struct Params {
    rows: u32, ca: u32, cb: u32, total: u32,
    a_off: u32, b_off: u32, y_off: u32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = linear_workgroup(wid, nwg) * WG + li;
    if (i >= p.total) { return; }
    let c = p.ca + p.cb;
    let r = i / c;
    let col = i % c;
    var v: f32;
    if (col < p.ca) {
        v = a[p.a_off + r * p.ca + col];
    } else {
        v = b[p.b_off + r * p.cb + col - p.ca];
    }
    y[p.y_off + i] = v;
}
