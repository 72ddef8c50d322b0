// An RGB image → packed RGBA8 texels for a texture upload (no CPU readback).
//
// x: f32 [h, w, 3], values clamped to [0, 1] and rounded ×255 half-to-even (as diffusers'
// numpy_to_pil); y: u32 [h, row] with row ≥ w (rows padded for copy_buffer_to_texture's
// 256-byte bytes_per_row), texel = R | G << 8 | B << 16 | 255 << 24 (little-endian RGBA8), R
// and B swapped when p.swap = 1 (BGRA8 formats); padding texels 0.

#include "common.wgsl"

override WG: u32 = 256u;

struct Params {
    h: u32, w: u32, row: u32, swap: u32,
    x_off: u32, y_off: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;

fn q(v: f32) -> u32 {
    return u32(round(clamp(v, 0.0, 1.0) * 255.0));
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = linear_workgroup(wid, nwg) * WG + li;
    if (i >= p.h * p.row) { return; }
    let r = i / p.row;
    let c = i % p.row;
    var texel = 0u;
    if (c < p.w) {
        let s = p.x_off + (r * p.w + c) * 3u;
        var red = q(x[s]);
        let green = q(x[s + 1u]);
        var blue = q(x[s + 2u]);
        if (p.swap == 1u) {
            let t = red;
            red = blue;
            blue = t;
        }
        texel = red | (green << 8u) | (blue << 16u) | (255u << 24u);
    }
    y[p.y_off + i] = texel;
}
