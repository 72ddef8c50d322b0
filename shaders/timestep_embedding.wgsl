// Sinusoidal timestep embedding, diffusers `get_timestep_embedding` (embeddings.py):
//
//   half = dim / 2;  freq[i] = exp(−ln(max_period) · i / (half − downscale_freq_shift))
//   arg = scale · t · freq[i];  emb = [sin(arg), cos(arg)]  (or [cos, sin] if flip_sin_to_cos)
//   odd dim: one trailing 0.
//
// t: f32 [batch]; y: f32 [batch, dim]. Arguments reach ~1000 rad, beyond the range where
// WGSL guarantees sin/cos accuracy, so they are reduced to [−π, π] first with a two-constant
// (Cody–Waite) 2π, keeping the error near one ulp of the f32 argument, as torch computes it.

#include "common.wgsl"

override WG: u32 = 64u;

struct Params {
    batch: u32, dim: u32, flip: u32, t_off: u32,
    y_off: u32, _pad0: u32, _pad1: u32, _pad2: u32,
    shift: f32, scale: f32, log_max_period: f32, _pad3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> t: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

fn reduce_angle(a: f32) -> f32 {
    // 2π = C1 + C2 with C1 exact in few bits, so k · C1 is exact for |k| < 2^12.
    let c1 = 6.28125;
    let c2 = 1.9353071795864769e-3;
    let k = round(a * 0.15915494309189535);
    return (a - k * c1) - k * c2;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = linear_workgroup(wid, nwg) * WG + li;
    if (i >= p.batch * p.dim) { return; }
    let b = i / p.dim;
    let col = i % p.dim;
    let half = p.dim / 2u;
    if (col >= 2u * half) {
        y[p.y_off + i] = 0.0;
        return;
    }
    let j = col % half;
    let exponent = -p.log_max_period * f32(j) / (f32(half) - p.shift);
    let arg = reduce_angle(p.scale * (t[p.t_off + b] * exp(exponent)));
    let first = col < half;
    // Without flip: [sin, cos]; with flip: [cos, sin].
    let use_sin = first != (p.flip != 0u);
    y[p.y_off + i] = select(cos(arg), sin(arg), use_sin);
}
