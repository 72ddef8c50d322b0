// conv2d with at most 4 output channels on CPU devices (included by conv2d.wgsl with NARROW
// and X4; the host checks a subgroup of exactly 8 lanes, cout <= 4, cin a multiple of 8 and x
// vec4-aligned): the VAE decoder's conv_out to RGB (128 -> 3) and the U-Net's conv_out
// (320 -> 4). The subgroup GEMM core's tile is 32 output channels wide, so with 3 of them live
// it did 1/8 of useful work per load (measured 0.6 GFLOP/s on Mesa 25 lavapipe).
//
// Here lanes own output pixels: lane l of workgroup g computes pixels 32g + l + 8j (j < 4),
// all output channels of a pixel in one vec4 (channels past cout are 0 and not stored). Per
// 8 k of a tap's channel block, lane l loads the cout weights of k = k0 + l once and
// subgroupBroadcast hands every lane all 8 rows: each weight is loaded once per workgroup, and
// each input value (two vec4 loads per pixel per 8 k) feeds 4 multiply-adds.
// Dispatch: ceil(m / 32) workgroups (linearised grid).

const NARROW_ROWS: u32 = 32u;

// Eight k of one pixel: its inputs xa (k0 .. k0 + 3) and xb (k0 + 4 .. k0 + 7) times the
// eight weight rows.
fn narrow_k8(
    acc: vec4<f32>, xa: vec4<f32>, xb: vec4<f32>,
    w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>,
    w4: vec4<f32>, w5: vec4<f32>, w6: vec4<f32>, w7: vec4<f32>,
) -> vec4<f32> {
    var a = fma(vec4<f32>(xa.x), w0, acc);
    a = fma(vec4<f32>(xa.y), w1, a);
    a = fma(vec4<f32>(xa.z), w2, a);
    a = fma(vec4<f32>(xa.w), w3, a);
    a = fma(vec4<f32>(xb.x), w4, a);
    a = fma(vec4<f32>(xb.y), w5, a);
    a = fma(vec4<f32>(xb.z), w6, a);
    return fma(vec4<f32>(xb.w), w7, a);
}

// Output pixel m's channels (store_c adds the bias and the residual).
fn narrow_store(m: u32, v: vec4<f32>) {
    if (m < p.m) {
        for (var n = 0u; n < p.cout; n++) {
            store_c(0u, m, n, v[n]);
        }
    }
}

@compute @workgroup_size(8, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let g = linear_workgroup(wid, nwg);
    if (g >= p.tiles_m) {
        return;
    }
    let m0 = g * NARROW_ROWS + lane;
    // a_row clamps a pixel past M to the last one (read, never stored).
    let r0 = a_row(0u, m0);
    let r1 = a_row(0u, m0 + 8u);
    let r2 = a_row(0u, m0 + 16u);
    let r3 = a_row(0u, m0 + 24u);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let cin = kblock_len();
    for (var tap = 0u; tap < kblocks(); tap++) {
        let b0 = a_block(r0, tap);
        let b1 = a_block(r1, tap);
        let b2 = a_block(r2, tap);
        let b3 = a_block(r3, tap);
        for (var i = 0u; i < cin; i += 8u) {
            // This lane's weight row (load_b is 0 past cout).
            let k = tap * cin + i + lane;
            let wl = vec4<f32>(load_b(0u, k, 0u), load_b(0u, k, 1u), load_b(0u, k, 2u), load_b(0u, k, 3u));
            let w0 = subgroupBroadcast(wl, 0u);
            let w1 = subgroupBroadcast(wl, 1u);
            let w2 = subgroupBroadcast(wl, 2u);
            let w3 = subgroupBroadcast(wl, 3u);
            let w4 = subgroupBroadcast(wl, 4u);
            let w5 = subgroupBroadcast(wl, 5u);
            let w6 = subgroupBroadcast(wl, 6u);
            let w7 = subgroupBroadcast(wl, 7u);
            acc0 = narrow_k8(acc0, load_a4(b0, i), load_a4(b0, i + 4u), w0, w1, w2, w3, w4, w5, w6, w7);
            acc1 = narrow_k8(acc1, load_a4(b1, i), load_a4(b1, i + 4u), w0, w1, w2, w3, w4, w5, w6, w7);
            acc2 = narrow_k8(acc2, load_a4(b2, i), load_a4(b2, i + 4u), w0, w1, w2, w3, w4, w5, w6, w7);
            acc3 = narrow_k8(acc3, load_a4(b3, i), load_a4(b3, i + 4u), w0, w1, w2, w3, w4, w5, w6, w7);
        }
    }
    narrow_store(m0, acc0);
    narrow_store(m0 + 8u, acc1);
    narrow_store(m0 + 16u, acc2);
    narrow_store(m0 + 24u, acc3);
}
