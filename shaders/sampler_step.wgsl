// Sampler update with classifier-free guidance fused in:
//
//   ε  = ε_u + s · (ε_c − ε_u)      (guidance on; eps holds [uncond batch; cond batch], the
//                                    order of diffusers' noise_pred.chunk(2))
//   ε  = eps                         (guidance off)
//   x' = a · x + b · ε + c · noise + d · hist
//
// DDIM, DDPM and the Euler family reduce to this per step with host-computed a, b, c (the
// noise term for η > 0 / ancestral steps); d · hist carries one earlier term for multistep
// samplers (DPM++ 2M, PNDM). The guided ε (or model output) is written to eps_out when
// write_eps != 0, for samplers that keep a history. All f32, n elements of x.

#include "common.wgsl"

override WG: u32 = 256u;

struct Params {
    n: u32, guidance: u32, has_noise: u32, has_hist: u32,
    write_eps: u32, x_off: u32, eps_off: u32, noise_off: u32,
    hist_off: u32, y_off: u32, eps_out_off: u32, _pad0: u32,
    scale: f32, a: f32, b: f32, c: f32,
    d: f32, _pad1: u32, _pad2: u32, _pad3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> eps: array<f32>;
@group(0) @binding(3) var<storage, read> noise: array<f32>;
@group(0) @binding(4) var<storage, read> hist: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read_write> eps_out: array<f32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = linear_workgroup(wid, nwg) * WG + li;
    if (i >= p.n) { return; }
    var e = eps[p.eps_off + i];
    if (p.guidance != 0u) {
        let c = eps[p.eps_off + p.n + i];
        e = e + p.scale * (c - e);
    }
    var r = p.a * x[p.x_off + i] + p.b * e;
    if (p.has_noise != 0u) { r += p.c * noise[p.noise_off + i]; }
    if (p.has_hist != 0u) { r += p.d * hist[p.hist_off + i]; }
    y[p.y_off + i] = r;
    if (p.write_eps != 0u) { eps_out[p.eps_out_off + i] = e; }
}
