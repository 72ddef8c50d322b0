// Helpers shared by several kernels (pasted in with `#include "common.wgsl"`).

// Linear workgroup index of a grid that the host split over x, y and z to stay within
// max_compute_workgroups_per_dimension. Ids at or past the real count must return early.
fn linear_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

// erf(x), Abramowitz & Stegun 7.1.26 refined: |error| < 1.5e-7, enough for f32 GELU.
fn erf_f32(x: f32) -> f32 {
    let s = sign(x);
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
        + 0.254829592) * t * exp(-a * a);
    return s * y;
}

// torch.nn.functional.gelu (exact, erf form).
fn gelu(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_f32(x * 0.70710678118654752));
}

// CLIP's quick_gelu: x * sigmoid(1.702 x).
fn quick_gelu(x: f32) -> f32 {
    return x / (1.0 + exp(-1.702 * x));
}

// torch.nn.functional.silu: x * sigmoid(x).
fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

// Element i of an f16 tensor stored packed two per u32 (element 2j in the low half).
fn unpack_half(word: u32, i: u32) -> f32 {
    let v = unpack2x16float(word);
    return select(v.x, v.y, (i & 1u) == 1u);
}
