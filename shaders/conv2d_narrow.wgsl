// conv2d with at most 4 output channels on CPU devices (included by conv2d.wgsl with NARROW
// and X4; the host checks a subgroup of exactly 8 lanes, cout <= 4, cin a multiple of 8 and x
// vec4-aligned): the VAE decoder's conv_out to RGB (128 -> 3) and the U-Net's conv_out
// (320 -> 4). The subgroup GEMM core's tile is 32 output channels wide, so with 3 of them live
// it did 1/8 of useful work per load (measured 0.6 GFLOP/s on Mesa 25 lavapipe).
//
// Lanes own output pixels, all output channels of a pixel in one vec4 (channels past cout
// are 0 and not stored); 32 pixels per workgroup. The k loop takes 8 k of a tap's channel
// block at a time: two vec4 loads of a pixel's input, times the 8 weight rows, which every
// lane receives by broadcast (weights8), so each weight is loaded once per workgroup.
// - By default lane l computes pixels 32g + l + 8j (j < 4), one tap after another.
// - RUNS (3-wide kernels at stride 1, output rows a multiple of 4 wide, no upsampling,
//   checked by the host): lane l owns a run of four pixels of one output row, 32g + 4l ..
//   32g + 4l + 3. For each kernel row the run's 3 × 4 (tap, pixel) pairs read 6 input
//   columns, each loaded once for up to three taps instead of once per tap.
// Measured on Mesa 25 lavapipe (`[2, 128, 128, 128] -> 3`, ops::conv2d alone, variants
// alternating in one process): W_BLOCK 1.11–1.17× the per-lane weight rows, RUNS with it a
// further 1.34–1.46× (see the README; RUNS alone, with per-lane rows, gained 4 %).
// Dispatch: ceil(m / 32) workgroups (linearised grid).

const NARROW_ROWS: u32 = 32u;

// The weight rows of 8 consecutive k (each a vec4 over the output channels).
struct W8 {
    w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>,
    w4: vec4<f32>, w5: vec4<f32>, w6: vec4<f32>, w7: vec4<f32>,
}

// Eight k of one pixel: its inputs xa (k0 .. k0 + 3) and xb (k0 + 4 .. k0 + 7) times the
// eight weight rows.
fn narrow_k8(acc: vec4<f32>, xa: vec4<f32>, xb: vec4<f32>, w: W8) -> vec4<f32> {
    var a = fma(vec4<f32>(xa.x), w.w0, acc);
    a = fma(vec4<f32>(xa.y), w.w1, a);
    a = fma(vec4<f32>(xa.z), w.w2, a);
    a = fma(vec4<f32>(xa.w), w.w3, a);
    a = fma(vec4<f32>(xb.x), w.w4, a);
    a = fma(vec4<f32>(xb.y), w.w5, a);
    a = fma(vec4<f32>(xb.z), w.w6, a);
    return fma(vec4<f32>(xb.w), w.w7, a);
}

// Output pixel m's channels (store_c adds the bias and the residual).
fn narrow_store(m: u32, v: vec4<f32>) {
    if (m < p.m) {
        for (var n = 0u; n < p.cout; n++) {
            store_c(0u, m, n, v[n]);
        }
    }
}

#if W_BLOCK
// W_BLOCK (the host checks the weight starts 16-byte aligned; COUT is cout): rows k0 ..
// k0 + 7 are 8·COUT consecutive values from a 16-byte boundary (k0 is a multiple of 8),
// 2·COUT vec4s once in f32. A few lanes load them (f32: lane l < 2·COUT one vec4; f16: lane
// l < COUT eight halves) and broadcasts hand every lane all of them — one lane-by-lane load
// where every lane's own row took COUT scalar ones. Value f of the block is component f % 4
// of vec4 f / 4.
fn w_block(k0: u32, lane: u32) -> array<vec4<f32>, 8> {
    let last = 2u * COUT - 1u;
#if W_F16
    let u = w8_at(p.w_off + k0 * COUT + 8u * min(lane, COUT - 1u));
    let lo = vec4<f32>(unpack2x16float(u.x), unpack2x16float(u.y));
    let hi = vec4<f32>(unpack2x16float(u.z), unpack2x16float(u.w));
    let h = COUT - 1u;
    return array<vec4<f32>, 8>(
        subgroupBroadcast(lo, 0u), subgroupBroadcast(hi, 0u),
        subgroupBroadcast(lo, min(1u, h)), subgroupBroadcast(hi, min(1u, h)),
        subgroupBroadcast(lo, min(2u, h)), subgroupBroadcast(hi, min(2u, h)),
        subgroupBroadcast(lo, min(3u, h)), subgroupBroadcast(hi, min(3u, h)),
    );
#else
    let mine = w4_at(p.w_off + k0 * COUT + 4u * min(lane, last));
    return array<vec4<f32>, 8>(
        subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u),
        subgroupBroadcast(mine, min(2u, last)), subgroupBroadcast(mine, min(3u, last)),
        subgroupBroadcast(mine, min(4u, last)), subgroupBroadcast(mine, min(5u, last)),
        subgroupBroadcast(mine, min(6u, last)), subgroupBroadcast(mine, min(7u, last)),
    );
#endif
}

fn w_value(b: array<vec4<f32>, 8>, f: u32) -> f32 {
    let i = min(f, 8u * COUT - 1u);
    return b[i / 4u][i % 4u];
}

// Row j of a block: its COUT weights, 0 past them (constant indices once inlined).
fn w_row(b: array<vec4<f32>, 8>, j: u32) -> vec4<f32> {
    let f = j * COUT;
    return vec4<f32>(
        w_value(b, f),
        select(0.0, w_value(b, f + 1u), COUT > 1u),
        select(0.0, w_value(b, f + 2u), COUT > 2u),
        select(0.0, w_value(b, f + 3u), COUT > 3u),
    );
}

fn weights8(k0: u32, lane: u32) -> W8 {
    let b = w_block(k0, lane);
    return W8(w_row(b, 0u), w_row(b, 1u), w_row(b, 2u), w_row(b, 3u),
              w_row(b, 4u), w_row(b, 5u), w_row(b, 6u), w_row(b, 7u));
}
#else
// Lane l loads row k0 + l (load_b is 0 past cout), then broadcasts.
fn weights8(k0: u32, lane: u32) -> W8 {
    let k = k0 + lane;
    let wl = vec4<f32>(load_b(0u, k, 0u), load_b(0u, k, 1u), load_b(0u, k, 2u), load_b(0u, k, 3u));
    return W8(
        subgroupBroadcast(wl, 0u), subgroupBroadcast(wl, 1u), subgroupBroadcast(wl, 2u), subgroupBroadcast(wl, 3u),
        subgroupBroadcast(wl, 4u), subgroupBroadcast(wl, 5u), subgroupBroadcast(wl, 6u), subgroupBroadcast(wl, 7u),
    );
}
#endif

#if RUNS
// An input column of a run's kernel row: where its pixel starts and whether it is inside
// the image (the row's test folded in).
struct Col { pix: u32, inside: bool }

fn run_col(row: u32, row_in: bool, ix: i32) -> Col {
    let inside = row_in && ix >= 0 && ix < i32(p.w);
    return Col(row + u32(clamp(ix, 0, i32(p.w) - 1)) * p.cin, inside);
}

fn run_x4(c: Col, i: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), x4_at((c.pix + i) >> 2u), c.inside);
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
    // The run's first pixel (a_row clamps one past M to the last pixel: read, never
    // stored; M is whole runs, as every row is).
    let m0 = g * NARROW_ROWS + 4u * lane;
    let r = a_row(0u, m0);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let cin = p.cin;
    for (var ky = 0u; ky < p.kh; ky++) {
        let iy = r.iy0 + i32(ky);
        let row_in = iy >= 0 && iy < i32(p.h);
        let row = r.base + u32(clamp(iy, 0, i32(p.h) - 1)) * p.w * cin;
        // Input columns ix0 .. ix0 + 5: pixel r of the run reads column r + kx.
        let c0 = run_col(row, row_in, r.ix0);
        let c1 = run_col(row, row_in, r.ix0 + 1);
        let c2 = run_col(row, row_in, r.ix0 + 2);
        let c3 = run_col(row, row_in, r.ix0 + 3);
        let c4 = run_col(row, row_in, r.ix0 + 4);
        let c5 = run_col(row, row_in, r.ix0 + 5);
        let tap0 = ky * 3u * cin;
        for (var i = 0u; i < cin; i += 8u) {
            let x0a = run_x4(c0, i);
            let x0b = run_x4(c0, i + 4u);
            let x1a = run_x4(c1, i);
            let x1b = run_x4(c1, i + 4u);
            let x2a = run_x4(c2, i);
            let x2b = run_x4(c2, i + 4u);
            let x3a = run_x4(c3, i);
            let x3b = run_x4(c3, i + 4u);
            let x4a = run_x4(c4, i);
            let x4b = run_x4(c4, i + 4u);
            let x5a = run_x4(c5, i);
            let x5b = run_x4(c5, i + 4u);
            let w0 = weights8(tap0 + i, lane);
            acc0 = narrow_k8(acc0, x0a, x0b, w0);
            acc1 = narrow_k8(acc1, x1a, x1b, w0);
            acc2 = narrow_k8(acc2, x2a, x2b, w0);
            acc3 = narrow_k8(acc3, x3a, x3b, w0);
            let w1 = weights8(tap0 + cin + i, lane);
            acc0 = narrow_k8(acc0, x1a, x1b, w1);
            acc1 = narrow_k8(acc1, x2a, x2b, w1);
            acc2 = narrow_k8(acc2, x3a, x3b, w1);
            acc3 = narrow_k8(acc3, x4a, x4b, w1);
            let w2 = weights8(tap0 + 2u * cin + i, lane);
            acc0 = narrow_k8(acc0, x2a, x2b, w2);
            acc1 = narrow_k8(acc1, x3a, x3b, w2);
            acc2 = narrow_k8(acc2, x4a, x4b, w2);
            acc3 = narrow_k8(acc3, x5a, x5b, w2);
        }
    }
    narrow_store(m0, acc0);
    narrow_store(m0 + 1u, acc1);
    narrow_store(m0 + 2u, acc2);
    narrow_store(m0 + 3u, acc3);
}
#else
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
            let w = weights8(tap * cin + i, lane);
            acc0 = narrow_k8(acc0, load_a4(b0, i), load_a4(b0, i + 4u), w);
            acc1 = narrow_k8(acc1, load_a4(b1, i), load_a4(b1, i + 4u), w);
            acc2 = narrow_k8(acc2, load_a4(b2, i), load_a4(b2, i + 4u), w);
            acc3 = narrow_k8(acc3, load_a4(b3, i), load_a4(b3, i + 4u), w);
        }
    }
    narrow_store(m0, acc0);
    narrow_store(m0 + 8u, acc1);
    narrow_store(m0 + 16u, acc2);
    narrow_store(m0 + 24u, acc3);
}
#endif
