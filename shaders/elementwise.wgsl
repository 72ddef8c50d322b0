// Elementwise kernels on activations (f32, or f16 storage with ACT_F16: common.wgsl's act;
// computed in f32), WG threads per workgroup, linearised grid. Each workgroup covers
// WG · PER consecutive elements and thread li handles li, li + WG, …, li + (PER − 1)·WG of
// them: PER = 1 on GPUs; on CPU devices few one-subgroup workgroups that loop (llvmpipe
// pays per subgroup of a workgroup, measured 3× the time of a loop over the same elements).
// Index arithmetic steps DivMods (common.wgsl): no division per element.
//
// unary:  y[i] = f(alpha · x[i] + beta), f by p.op: 0 identity (scale/shift), 1 SiLU,
//         2 GELU (erf, torch's default), 3 quick-GELU (CLIP); op 4 is
//         y[i] = clamp(x[i], alpha, beta) (torch.clamp).
// binary: y[i] = x[i] ∘ z[j(i)], ∘ by p.op: 0 add, 1 mul; z broadcasts with
//         j(i) = (i / outer) · inner + i % inner  (same shape: outer = inner = n;
//         per-channel [c]: outer = n, inner = c; per-(batch, channel) [b, c] over [b, hw, c]:
//         outer = hw · c, inner = c).
// geglu:  x: [rows, 2f] → y: [rows, f], y = x[:, :f] · gelu(x[:, f:]) (diffusers GEGLU).

#include "common.wgsl"

override WG: u32 = 256u;
override PER: u32 = 1u;

struct Params {
    n: u32, op: u32, x_off: u32, y_off: u32,
    z_off: u32, outer: u32, inner: u32, f: u32,
    alpha: f32, beta: f32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read> z: array<act>;
@group(0) @binding(3) var<storage, read_write> y: array<act>;

// This thread's first element.
fn first_index(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return linear_workgroup(wid, nwg) * WG * PER + li;
}

@compute @workgroup_size(WG)
fn unary(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i0 = first_index(wid, nwg, li);
    for (var j = 0u; j < PER; j++) {
        let i = i0 + j * WG;
        if (i < p.n) {
            let xi = f32(x[p.x_off + i]);
            let t = p.alpha * xi + p.beta;
            var r = t;
            switch p.op {
                case 1u: { r = silu(t); }
                case 2u: { r = gelu(t); }
                case 3u: { r = quick_gelu(t); }
                case 4u: { r = clamp(xi, p.alpha, p.beta); }
                case 5u: {
                    // tanh from e^{-2|t|} ≤ 1: no overflow however large t is.
                    let e = exp(-2.0 * abs(t));
                    r = sign(t) * (1.0 - e) / (1.0 + e);
                }
                default: {}
            }
            y[p.y_off + i] = act(r);
        }
    }
}

@compute @workgroup_size(WG)
fn binary(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i0 = first_index(wid, nwg, li);
    // i / outer and i % inner, stepped by WG.
    var o = divmod(i0, p.outer);
    var n = divmod(i0, p.inner);
    let so = divmod(WG, p.outer);
    let sn = divmod(WG, p.inner);
    for (var j = 0u; j < PER; j++) {
        let i = i0 + j * WG;
        if (i < p.n) {
            let a = f32(x[p.x_off + i]);
            let bz = f32(z[p.z_off + o.q * p.inner + n.r]);
            y[p.y_off + i] = act(select(a + bz, a * bz, p.op == 1u));
        }
        o = divmod_step(o, so, p.outer);
        n = divmod_step(n, sn, p.inner);
    }
}

@compute @workgroup_size(WG)
fn geglu(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i0 = first_index(wid, nwg, li);
    var rc = divmod(i0, p.f);   // (row, column)
    let s = divmod(WG, p.f);
    for (var j = 0u; j < PER; j++) {
        let i = i0 + j * WG;
        if (i < p.n) {
            let base = p.x_off + rc.q * 2u * p.f;
            y[p.y_off + i] = act(f32(x[base + rc.r]) * gelu(f32(x[base + p.f + rc.r])));
        }
        rc = divmod_step(rc, s, p.f);
    }
}
