// Winograd F(2×2, 3×3) convolution for CPU devices (ops::winograd; Lavin & Gray, "Fast
// Algorithms for Convolutional Neural Networks", 2016): a 3×3, stride-1 conv computed per
// 2×2 output tile as
//
//   Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d Bᵀᵀ) ] A
//
// with d the tile's 4×4 input patch and g the 3×3 filter, so that the 36 multiplies of a tile
// and channel pair become 16, done as 16 matrix products V_e · U_e (e = 0..15) by the GEMM
// core:
//   WINO_W   (weight transform) U[e, ci, co] = (G g Gᵀ)_e of w[:, :, ci, co]
//            (for e in e0 .. e0 + e_len: a U larger than one binding is made in parts)
//   WINO_IN  (input transform)  V[e, t, ci]  = (Bᵀ d B)_e of tile t's patch of channel ci
//   (matmul)                    M[e, t, co]  = Σ_ci V[e, t, ci] · U[e, ci, co]
//   WINO_OUT (output transform) out[tile t's 2×2 pixels, co] = Aᵀ M[:, t, co] A + bias + res
// with
//   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1], G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1],
//   Aᵀ = [1 1 1 0; 0 1 −1 −1].
// Every element of x, U, V, M is f32 (the transforms add and subtract, and halve, in f32).
// Define LOAD64 (CPU devices, Gpu::load64) to read and write every vec4 as 64-bit words
// (common.wgsl: two per-lane memory operations per vec4 instead of four).
// Each thread handles one tile (or one input channel for WINO_W) and four channels (vec4):
// cin and cout are multiples of 4 (checked by the host). Tiles t0 .. t0 + t_len − 1 of the
// n · tiles_h · tiles_w tiles are this dispatch's (the host chunks large convs); V and M hold
// those tiles only, [16, t_len, c]. x and out: [n, h, w, c] channels-last activations
// (common.wgsl's act); with UP2 x is read as if nearest-upsampled 2× (h, w are the
// upsampled sizes). Zero padding: pad_t rows above and pad_l columns left of the input; the
// patch of tile (ty, tx) starts at input row 2·ty − pad_t, column 2·tx − pad_l.
// Threads and items as in elementwise.wgsl (WG · PER consecutive items per workgroup).
//
// Define F4 for F(4×4, 3×3) instead: 4×4 output tiles from 6×6 patches, 36 products per tile
// and channel pair where the direct conv does 144 (F(2×2) does 64 per 4×4 outputs), with
//   Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0;
//         0 4 0 −5 0 1],
//   G = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1⁄24 1⁄12 ⅙; 1⁄24 −1⁄12 ⅙; 0 0 1],
//   Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]
// (Lavin & Gray's F(4×4, 3×3)); element e of a tile's 6×6 is row·6 + column, V, M are
// [36, t_len, c] and U [36, cin, cout]. The patch of tile (ty, tx) starts at 4·ty − pad_t.

#include "common.wgsl"

override WG: u32 = 256u;
override PER: u32 = 1u;

struct Params {
    n: u32, h: u32, w: u32, cin: u32,
    ho: u32, wo: u32, cout: u32, tiles_w: u32,
    tiles_h: u32, t0: u32, t_len: u32, total: u32,
    pad_t: u32, pad_l: u32, x_off: u32, w_off: u32,
    bias_off: u32, res_off: u32, out_off: u32, has_bias: u32,
    has_res: u32, panels: u32, u_panels: u32, e0: u32,
    e_len: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

#if UP2
const UP: u32 = 1u;
#else
const UP: u32 = 0u;
#endif

#if F4
const TILE: u32 = 4u;
#else
const TILE: u32 = 2u;
#endif

// Four values of one row or column of a 4×4 (F2's patches, F4's outputs).
struct Row4 { a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32> }

// Six values of one row or column of a 6×6 (F4).
struct Six { a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>, e: vec4<f32>, f: vec4<f32> }

// Item j of this thread (of PER) in the dispatch's linear range.
fn item(wid: vec3<u32>, nwg: vec3<u32>, li: u32, j: u32) -> u32 {
    return linear_workgroup(wid, nwg) * WG * PER + li + j * WG;
}

// Item i of a tile kernel: (this chunk's tile t, channel c0 of four, image, the tile's top
// output row, its left output column); `c` channels per tile.
fn tile_item(i: u32, c: u32) -> array<u32, 5> {
    let groups = c >> 2u;
    let t = i / groups;
    let tile = p.t0 + t;
    let per_img = p.tiles_h * p.tiles_w;
    let r = tile % per_img;
    return array<u32, 5>(t, (i % groups) * 4u, tile / per_img, (r / p.tiles_w) * TILE, (r % p.tiles_w) * TILE);
}

#if WINO_IN
#if LOAD64
@group(0) @binding(1) var<storage, read> x: array<vec2<u64>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec2<u64>>;
fn x4_at(i: u32) -> vec4<f32> { return f32x4_bits(x[i]); }
fn v_put(i: u32, val: vec4<f32>) { v[i] = f32x4_words(val); }
#else
@group(0) @binding(1) var<storage, read> x: array<act4>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<f32>>;
fn x4_at(i: u32) -> vec4<f32> { return vec4<f32>(x[i]); }
fn v_put(i: u32, val: vec4<f32>) { v[i] = val; }
#endif

// Channels c0 .. c0 + 3 of input pixel (y, x) of image img, zero outside the image.
fn pixel(img: u32, y: i32, xx: i32, c0: u32) -> vec4<f32> {
    let inside = y >= 0 && xx >= 0 && y < i32(p.h) && xx < i32(p.w);
    let yc = u32(clamp(y, 0, i32(p.h) - 1)) >> UP;
    let xc = u32(clamp(xx, 0, i32(p.w) - 1)) >> UP;
    let i = p.x_off + ((img * (p.h >> UP) + yc) * (p.w >> UP) + xc) * p.cin + c0;
    return select(vec4<f32>(0.0), x4_at(i >> 2u), inside);
}

// Row r of the patch times B (the column transform): [d0 − d2, d1 + d2, d2 − d1, d1 − d3].
fn patch_row(img: u32, y: i32, x0: i32, c0: u32) -> Row4 {
    let d0 = pixel(img, y, x0, c0);
    let d1 = pixel(img, y, x0 + 1, c0);
    let d2 = pixel(img, y, x0 + 2, c0);
    let d3 = pixel(img, y, x0 + 3, c0);
    return Row4(d0 - d2, d1 + d2, d2 - d1, d1 - d3);
}

fn store_v(e: u32, t: u32, c0: u32, val: vec4<f32>) {
    v_put(((e * p.t_len + t) * p.cin + c0) >> 2u, val);
}

fn store_v_row(e0: u32, t: u32, c0: u32, r: Row4) {
    store_v(e0, t, c0, r.a);
    store_v(e0 + 1u, t, c0, r.b);
    store_v(e0 + 2u, t, c0, r.c);
    store_v(e0 + 3u, t, c0, r.d);
}

fn sub4(a: Row4, b: Row4) -> Row4 { return Row4(a.a - b.a, a.b - b.b, a.c - b.c, a.d - b.d); }
fn add4(a: Row4, b: Row4) -> Row4 { return Row4(a.a + b.a, a.b + b.b, a.c + b.c, a.d + b.d); }

#if F4
// Bᵀ applied to six values.
fn bt6(d0: vec4<f32>, d1: vec4<f32>, d2: vec4<f32>, d3: vec4<f32>, d4: vec4<f32>, d5: vec4<f32>) -> Six {
    return Six(
        4.0 * d0 - 5.0 * d2 + d4,
        d3 + d4 - 4.0 * (d1 + d2),
        4.0 * (d1 - d2) - d3 + d4,
        2.0 * (d3 - d1) - d2 + d4,
        2.0 * (d1 - d3) - d2 + d4,
        4.0 * d1 - 5.0 * d3 + d5,
    );
}

// Row y of the patch times B: bt6 of its six pixels.
fn patch_row6(img: u32, y: i32, x0: i32, c0: u32) -> Six {
    return bt6(
        pixel(img, y, x0, c0), pixel(img, y, x0 + 1, c0), pixel(img, y, x0 + 2, c0),
        pixel(img, y, x0 + 3, c0), pixel(img, y, x0 + 4, c0), pixel(img, y, x0 + 5, c0),
    );
}

// Column j of Bᵀ d B: element i·6 + j.
fn store_v_col(j: u32, t: u32, c0: u32, s: Six) {
    store_v(j, t, c0, s.a);
    store_v(6u + j, t, c0, s.b);
    store_v(12u + j, t, c0, s.c);
    store_v(18u + j, t, c0, s.d);
    store_v(24u + j, t, c0, s.e);
    store_v(30u + j, t, c0, s.f);
}

// One tile's V, channels c0 .. c0 + 3: its patch starts at input row y0, column x0.
fn input_tile(t: u32, c0: u32, img: u32, y0: i32, x0: i32) {
    let r0 = patch_row6(img, y0, x0, c0);
    let r1 = patch_row6(img, y0 + 1, x0, c0);
    let r2 = patch_row6(img, y0 + 2, x0, c0);
    let r3 = patch_row6(img, y0 + 3, x0, c0);
    let r4 = patch_row6(img, y0 + 4, x0, c0);
    let r5 = patch_row6(img, y0 + 5, x0, c0);
    // Bᵀ over the rows, column by column.
    store_v_col(0u, t, c0, bt6(r0.a, r1.a, r2.a, r3.a, r4.a, r5.a));
    store_v_col(1u, t, c0, bt6(r0.b, r1.b, r2.b, r3.b, r4.b, r5.b));
    store_v_col(2u, t, c0, bt6(r0.c, r1.c, r2.c, r3.c, r4.c, r5.c));
    store_v_col(3u, t, c0, bt6(r0.d, r1.d, r2.d, r3.d, r4.d, r5.d));
    store_v_col(4u, t, c0, bt6(r0.e, r1.e, r2.e, r3.e, r4.e, r5.e));
    store_v_col(5u, t, c0, bt6(r0.f, r1.f, r2.f, r3.f, r4.f, r5.f));
}
#else
fn input_tile(t: u32, c0: u32, img: u32, y0: i32, x0: i32) {
    let d0 = patch_row(img, y0, x0, c0);
    let d1 = patch_row(img, y0 + 1, x0, c0);
    let d2 = patch_row(img, y0 + 2, x0, c0);
    let d3 = patch_row(img, y0 + 3, x0, c0);
    // Bᵀ over the rows.
    store_v_row(0u, t, c0, sub4(d0, d2));
    store_v_row(4u, t, c0, add4(d1, d2));
    store_v_row(8u, t, c0, sub4(d2, d1));
    store_v_row(12u, t, c0, sub4(d1, d3));
}
#endif

@compute @workgroup_size(WG)
fn input_transform(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    for (var j = 0u; j < PER; j++) {
        let i = item(wid, nwg, li, j);
        if (i < p.total) {
            let ti = tile_item(i, p.cin);
            input_tile(ti[0], ti[1], ti[2], i32(ti[3]) - i32(p.pad_t), i32(ti[4]) - i32(p.pad_l));
        }
    }
}
#endif

#if WINO_W
#if LOAD64
#if W_F16
@group(0) @binding(1) var<storage, read> wt: array<u64>;
fn w4_at(i: u32) -> vec4<f32> { return f16x4_bits(wt[i >> 2u]); }
#else
@group(0) @binding(1) var<storage, read> wt: array<vec2<u64>>;
fn w4_at(i: u32) -> vec4<f32> { return f32x4_bits(wt[i >> 2u]); }
#endif
@group(0) @binding(2) var<storage, read_write> u: array<vec2<u64>>;
fn u_put(i: u32, val: vec4<f32>) { u[i] = f32x4_words(val); }
#else
#if W_F16
@group(0) @binding(1) var<storage, read> wt: array<vec2<u32>>;
fn w4_at(i: u32) -> vec4<f32> {
    let u = wt[i >> 2u];
    return vec4<f32>(unpack2x16float(u.x), unpack2x16float(u.y));
}
#else
@group(0) @binding(1) var<storage, read> wt: array<vec4<f32>>;
fn w4_at(i: u32) -> vec4<f32> { return wt[i >> 2u]; }
#endif
@group(0) @binding(2) var<storage, read_write> u: array<vec4<f32>>;
fn u_put(i: u32, val: vec4<f32>) { u[i] = val; }
#endif

// Filter tap (ky, kx) of input channel ci, output channels co0 .. co0 + 3: the weight is
// [3, 3, cin, cout] (K = 9·cin rows of cout), plain or panel-packed (Tensor::panels: panel
// co / 32 holds the K rows of its 32 columns).
fn tap(ky: u32, kx: u32, ci: u32, co0: u32) -> vec4<f32> {
    let k = (ky * 3u + kx) * p.cin + ci;
    if (p.panels != 0u) {
        return w4_at(p.w_off + (co0 >> 5u) * (9u * p.cin * 32u) + k * 32u + (co0 & 31u));
    }
    return w4_at(p.w_off + k * p.cout + co0);
}

struct Row3 { a: vec4<f32>, b: vec4<f32>, c: vec4<f32> }

// U[e, ci, co0 .. co0 + 3] for the elements e0 .. e0 + e_len − 1 this dispatch writes (a
// part of U small enough for one binding; others are skipped): plain [e_len, cin, cout], or
// with u_panels each U_e panel-packed (the GEMM core's fast layout for B: panel co / 32
// holds the cin rows of its 32 columns).
fn store_u(e: u32, ci: u32, co0: u32, val: vec4<f32>) {
    if (e < p.e0 || e >= p.e0 + p.e_len) {
        return;
    }
    let el = e - p.e0;
    var i = (el * p.cin + ci) * p.cout + co0;
    if (p.u_panels != 0u) {
        i = el * p.cin * p.cout + (co0 >> 5u) * (p.cin * 32u) + ci * 32u + (co0 & 31u);
    }
    u_put(i >> 2u, val);
}

// Gᵀ over one row's three taps: U[e0 .. e0 + 3] = [a, ½(a + b + c), ½(a − b + c), c].
fn store_u_row(e0: u32, ci: u32, co0: u32, r: Row3) {
    store_u(e0, ci, co0, r.a);
    store_u(e0 + 1u, ci, co0, 0.5 * (r.a + r.b + r.c));
    store_u(e0 + 2u, ci, co0, 0.5 * (r.a - r.b + r.c));
    store_u(e0 + 3u, ci, co0, r.c);
}

#if F4
// G applied to three values: [a/4, −(a + b + c)/6, −(a − b + c)/6, a/24 + b/12 + c/6,
// a/24 − b/12 + c/6, c].
fn g6(a: vec4<f32>, b: vec4<f32>, c: vec4<f32>) -> Six {
    let q = a / 24.0 + c / 6.0;
    return Six(a / 4.0, -(a + b + c) / 6.0, -(a - b + c) / 6.0, q + b / 12.0, q - b / 12.0, c);
}

// Column j of G g Gᵀ: element i·6 + j.
fn store_u_col(j: u32, ci: u32, co0: u32, s: Six) {
    store_u(j, ci, co0, s.a);
    store_u(6u + j, ci, co0, s.b);
    store_u(12u + j, ci, co0, s.c);
    store_u(18u + j, ci, co0, s.d);
    store_u(24u + j, ci, co0, s.e);
    store_u(30u + j, ci, co0, s.f);
}

// U[:, ci, co0 .. co0 + 3]: each filter row times Gᵀ, then G over the rows, column by column.
fn weight_item(ci: u32, co0: u32) {
    let h0 = g6(tap(0u, 0u, ci, co0), tap(0u, 1u, ci, co0), tap(0u, 2u, ci, co0));
    let h1 = g6(tap(1u, 0u, ci, co0), tap(1u, 1u, ci, co0), tap(1u, 2u, ci, co0));
    let h2 = g6(tap(2u, 0u, ci, co0), tap(2u, 1u, ci, co0), tap(2u, 2u, ci, co0));
    store_u_col(0u, ci, co0, g6(h0.a, h1.a, h2.a));
    store_u_col(1u, ci, co0, g6(h0.b, h1.b, h2.b));
    store_u_col(2u, ci, co0, g6(h0.c, h1.c, h2.c));
    store_u_col(3u, ci, co0, g6(h0.d, h1.d, h2.d));
    store_u_col(4u, ci, co0, g6(h0.e, h1.e, h2.e));
    store_u_col(5u, ci, co0, g6(h0.f, h1.f, h2.f));
}
#else
fn weight_item(ci: u32, co0: u32) {
    let g0 = Row3(tap(0u, 0u, ci, co0), tap(0u, 1u, ci, co0), tap(0u, 2u, ci, co0));
    let g1 = Row3(tap(1u, 0u, ci, co0), tap(1u, 1u, ci, co0), tap(1u, 2u, ci, co0));
    let g2 = Row3(tap(2u, 0u, ci, co0), tap(2u, 1u, ci, co0), tap(2u, 2u, ci, co0));
    // G over the filter's rows, then Gᵀ over each resulting row's three columns.
    let h1 = Row3(0.5 * (g0.a + g1.a + g2.a), 0.5 * (g0.b + g1.b + g2.b), 0.5 * (g0.c + g1.c + g2.c));
    let h2 = Row3(0.5 * (g0.a - g1.a + g2.a), 0.5 * (g0.b - g1.b + g2.b), 0.5 * (g0.c - g1.c + g2.c));
    store_u_row(0u, ci, co0, g0);
    store_u_row(4u, ci, co0, h1);
    store_u_row(8u, ci, co0, h2);
    store_u_row(12u, ci, co0, g2);
}
#endif

@compute @workgroup_size(WG)
fn weight_transform(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let groups = p.cout >> 2u;
    for (var j = 0u; j < PER; j++) {
        let i = item(wid, nwg, li, j);
        if (i < p.total) {
            weight_item(i / groups, (i % groups) * 4u);
        }
    }
}
#endif

#if WINO_OUT
#if LOAD64
@group(0) @binding(1) var<storage, read> mm: array<vec2<u64>>;
@group(0) @binding(3) var<storage, read> res: array<vec2<u64>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec2<u64>>;
fn mm_at(i: u32) -> vec4<f32> { return f32x4_bits(mm[i]); }
fn res_at(i: u32) -> vec4<f32> { return f32x4_bits(res[i]); }
fn out_put(i: u32, val: vec4<f32>) { out[i] = f32x4_words(val); }
#else
@group(0) @binding(1) var<storage, read> mm: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> res: array<act4>;
@group(0) @binding(4) var<storage, read_write> out: array<act4>;
fn mm_at(i: u32) -> vec4<f32> { return mm[i]; }
fn res_at(i: u32) -> vec4<f32> { return vec4<f32>(res[i]); }
fn out_put(i: u32, val: vec4<f32>) { out[i] = act4(val); }
#endif
#if W_F16
@group(0) @binding(2) var<storage, read> bias: array<u32>;
fn bias_at(i: u32) -> f32 { return unpack_half(bias[i >> 1u], i); }
#else
@group(0) @binding(2) var<storage, read> bias: array<f32>;
fn bias_at(i: u32) -> f32 { return bias[i]; }
#endif

fn m_at(e: u32, t: u32, co0: u32) -> vec4<f32> {
    return mm_at(((e * p.t_len + t) * p.cout + co0) >> 2u);
}

// Aᵀ over one row of M's 4×4: [m0 + m1 + m2, m1 − m2 − m3].
fn row_a(e0: u32, t: u32, co0: u32) -> array<vec4<f32>, 2> {
    let m0 = m_at(e0, t, co0);
    let m1 = m_at(e0 + 1u, t, co0);
    let m2 = m_at(e0 + 2u, t, co0);
    let m3 = m_at(e0 + 3u, t, co0);
    return array<vec4<f32>, 2>(m0 + m1 + m2, m1 - m2 - m3);
}

fn store_px(img: u32, oy: u32, ox: u32, co0: u32, y: vec4<f32>, add: vec4<f32>) {
    if (oy < p.ho && ox < p.wo) {
        let i = ((img * p.ho + oy) * p.wo + ox) * p.cout + co0;
        var o = y + add;
        if (p.has_res == 1u) { o += res_at((p.res_off + i) >> 2u); }
        if (p.has_res == 2u) { o += res_at((p.res_off + img * p.cout + co0) >> 2u); }
        out_put((p.out_off + i) >> 2u, o);
    }
}

#if F4
// Aᵀ applied to six values: [m0 + m1 + m2 + m3 + m4, m1 − m2 + 2(m3 − m4),
// m1 + m2 + 4(m3 + m4), m1 − m2 + 8(m3 − m4) + m5].
fn at4(m0: vec4<f32>, m1: vec4<f32>, m2: vec4<f32>, m3: vec4<f32>, m4: vec4<f32>, m5: vec4<f32>) -> Row4 {
    let s = m1 + m2;
    let d = m1 - m2;
    let s2 = m3 + m4;
    let d2 = m3 - m4;
    return Row4(m0 + s + s2, d + 2.0 * d2, s + 4.0 * s2, d + 8.0 * d2 + m5);
}

// Row k of M (elements 6k .. 6k + 5) times A.
fn row_a6(e0: u32, t: u32, co0: u32) -> Row4 {
    return at4(
        m_at(e0, t, co0), m_at(e0 + 1u, t, co0), m_at(e0 + 2u, t, co0),
        m_at(e0 + 3u, t, co0), m_at(e0 + 4u, t, co0), m_at(e0 + 5u, t, co0),
    );
}

// Output column ox of the tile: Aᵀ over the six rows' values, pixels oy .. oy + 3.
fn store_col(img: u32, oy: u32, ox: u32, co0: u32, y: Row4, add: vec4<f32>) {
    store_px(img, oy, ox, co0, y.a, add);
    store_px(img, oy + 1u, ox, co0, y.b, add);
    store_px(img, oy + 2u, ox, co0, y.c, add);
    store_px(img, oy + 3u, ox, co0, y.d, add);
}

// One tile's output pixels, channels co0 .. co0 + 3, from (oy, ox).
fn output_tile(t: u32, co0: u32, img: u32, oy: u32, ox: u32, add: vec4<f32>) {
    let r0 = row_a6(0u, t, co0);
    let r1 = row_a6(6u, t, co0);
    let r2 = row_a6(12u, t, co0);
    let r3 = row_a6(18u, t, co0);
    let r4 = row_a6(24u, t, co0);
    let r5 = row_a6(30u, t, co0);
    store_col(img, oy, ox, co0, at4(r0.a, r1.a, r2.a, r3.a, r4.a, r5.a), add);
    store_col(img, oy, ox + 1u, co0, at4(r0.b, r1.b, r2.b, r3.b, r4.b, r5.b), add);
    store_col(img, oy, ox + 2u, co0, at4(r0.c, r1.c, r2.c, r3.c, r4.c, r5.c), add);
    store_col(img, oy, ox + 3u, co0, at4(r0.d, r1.d, r2.d, r3.d, r4.d, r5.d), add);
}
#else
fn output_tile(t: u32, co0: u32, img: u32, oy: u32, ox: u32, add: vec4<f32>) {
    // Rows of t = M A (per row of M), then Aᵀ over them.
    let r0 = row_a(0u, t, co0);
    let r1 = row_a(4u, t, co0);
    let r2 = row_a(8u, t, co0);
    let r3 = row_a(12u, t, co0);
    store_px(img, oy, ox, co0, r0[0] + r1[0] + r2[0], add);
    store_px(img, oy, ox + 1u, co0, r0[1] + r1[1] + r2[1], add);
    store_px(img, oy + 1u, ox, co0, r1[0] - r2[0] - r3[0], add);
    store_px(img, oy + 1u, ox + 1u, co0, r1[1] - r2[1] - r3[1], add);
}
#endif

@compute @workgroup_size(WG)
fn output_transform(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    for (var j = 0u; j < PER; j++) {
        let i = item(wid, nwg, li, j);
        if (i < p.total) {
            let ti = tile_item(i, p.cout);
            let co0 = ti[1];
            var add = vec4<f32>(0.0);
            if (p.has_bias != 0u) {
                let b = p.bias_off + co0;
                add = vec4<f32>(bias_at(b), bias_at(b + 1u), bias_at(b + 2u), bias_at(b + 3u));
            }
            output_tile(ti[0], co0, ti[2], ti[3], ti[4], add);
        }
    }
}
#endif
