// Channel concat (torch.cat(dim=channels) in channels-last): y[r, :] = [a[r, :ca], b[r, :cb]].
// a: [rows, ca], b: [rows, cb], y: [rows, ca + cb], activations (common.wgsl's act). Threads and elements as in
// elementwise.wgsl (WG · PER consecutive elements per workgroup, no division per element).

#include "common.wgsl"

override WG: u32 = 256u;
override PER: u32 = 1u;

struct Params {
    rows: u32, ca: u32, cb: u32, total: u32,
    a_off: u32, b_off: u32, y_off: u32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<act>;
@group(0) @binding(2) var<storage, read> b: array<act>;
@group(0) @binding(3) var<storage, read_write> y: array<act>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i0 = linear_workgroup(wid, nwg) * WG * PER + li;
    let c = p.ca + p.cb;
    var rc = divmod(i0, c);   // (row, column)
    let s = divmod(WG, c);
    for (var j = 0u; j < PER; j++) {
        let i = i0 + j * WG;
        if (i < p.total) {
            var v: act;
            if (rc.r < p.ca) {
                v = a[p.a_off + rc.q * p.ca + rc.r];
            } else {
                v = b[p.b_off + rc.q * p.cb + rc.r - p.ca];
            }
            y[p.y_off + i] = v;
        }
        rc = divmod_step(rc, s, c);
    }
}
