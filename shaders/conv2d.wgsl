// conv2d as implicit GEMM (no im2col buffer), channels-last:
//
//   out[b, oy, ox, co] = bias[co] + res[b, oy, ox, co]   (has_res 1; has_res 2: res[b, co],
//       one row per image added to every pixel: a resnet's time-embedding projection)
//       + sum_{ky, kx, ci} x[b, oy·s − pad_t + ky, ox·s − pad_l + kx, ci] · w[ky, kx, ci, co]
//
// GEMM view: M = batch·Ho·Wo output pixels, N = Cout, K = KH·KW·Cin with ci fastest, so A
// loads along k read contiguous input channels. x, out, res: [n, h, w, c] activations, f32,
// or f16 with ACT_F16 (common.wgsl's act: read into f32, rounded once when stored). w: re-laid out
// at load time from PyTorch's [Cout, Cin, KH, KW] to [KH, KW, Cin, Cout], f32 or f16 (define
// W_F16); bias has w's dtype. Out-of-image taps read 0 (zero padding, any of the four sides).
// Define A_GN (the GPU core) for a conv on a group norm of x, normalised as it is read:
// x(b, y, x, ci) becomes x · gn[b, ci] + gn[b, cin + ci] (the group's 1/σ·γ and β − mean/σ·γ,
// from ops::norm's group_norm_affine), then SiLU when p.gn_silu != 0; zero padding stays
// zero (the reference pads the normalised tensor). The normalised activation is never
// stored: a resnet's norm + SiLU + conv reads its input once.
// Define UP2: x is read as if nearest-upsampled 2× (h, w are the upsampled sizes; pixel
// (y, x) reads stored pixel (y >> 1, x >> 1)), diffusers' Upsample2D without its big tensor.
// The tile loop is gemm_tile_vec4.wgsl on GPUs where cin, cout and the offsets allow (define
// VEC4), else gemm_tile.wgsl; gemm_subgroup.wgsl on CPU devices (define SUBGROUP_GEMM, with
// VEC4 on the same condition). Dispatch: tiles_n · tiles_m workgroups. Define NARROW (CPU
// devices, at most 4 output channels): conv2d_narrow.wgsl instead of a GEMM core (its
// W_BLOCK variant binds the weight as whole vec4s; read its header).

#include "common.wgsl"

struct Params {
    n: u32, h: u32, w: u32, cin: u32,
    ho: u32, wo: u32, cout: u32, kh: u32,
    kw: u32, stride: u32, pad_t: u32, pad_l: u32,
    m: u32, k: u32, x_off: u32, w_off: u32,
    bias_off: u32, res_off: u32, out_off: u32, has_bias: u32,
    has_res: u32, tiles_n: u32, tiles_m: u32, gn_off: u32,
    gn_silu: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#if X4
#if LOAD64
@group(0) @binding(1) var<storage, read> x: array<act4_bits>;
fn x4_at(i: u32) -> vec4<f32> { return act4_of(x[i]); }
#else
@group(0) @binding(1) var<storage, read> x: array<act4>;
fn x4_at(i: u32) -> vec4<f32> { return vec4<f32>(x[i]); }
#endif
#else
@group(0) @binding(1) var<storage, read> x: array<act>;
#endif
#if W_F16
#if W_BLOCK
// The narrow kernel's f16 weight read eight halves at a time (conv2d_narrow.wgsl's w_block).
@group(0) @binding(2) var<storage, read> wt: array<vec4<u32>>;
fn w8_at(i: u32) -> vec4<u32> { return wt[i >> 3u]; }
fn w_at(i: u32) -> f32 { return unpack_half(wt[i >> 3u][(i >> 1u) & 3u], i); }
#else
#if VEC4
#if LOAD64
@group(0) @binding(2) var<storage, read> wt: array<u64>;
fn w4_at(i: u32) -> vec4<f32> { return f16x4_bits(wt[i >> 2u]); }
#else
@group(0) @binding(2) var<storage, read> wt: array<vec2<u32>>;
fn w4_at(i: u32) -> vec4<f32> {
    let u = wt[i >> 2u];
    return vec4<f32>(unpack2x16float(u.x), unpack2x16float(u.y));
}
#endif
#else
@group(0) @binding(2) var<storage, read> wt: array<u32>;
fn w_at(i: u32) -> f32 { return unpack_half(wt[i >> 1u], i); }
#endif
#endif
@group(0) @binding(3) var<storage, read> bias: array<u32>;
fn bias_at(i: u32) -> f32 { return unpack_half(bias[i >> 1u], i); }
#else
#if VEC4
#if LOAD64
@group(0) @binding(2) var<storage, read> wt: array<vec2<u64>>;
fn w4_at(i: u32) -> vec4<f32> { return f32x4_bits(wt[i >> 2u]); }
#else
@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;
fn w4_at(i: u32) -> vec4<f32> { return wt[i >> 2u]; }
#endif
#else
#if W_BLOCK
// The narrow kernel's f32 weight read a vec4 at a time (conv2d_narrow.wgsl's w_block).
#if LOAD64
@group(0) @binding(2) var<storage, read> wt: array<vec2<u64>>;
fn w4_at(i: u32) -> vec4<f32> { return f32x4_bits(wt[i >> 2u]); }
#else
@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;
fn w4_at(i: u32) -> vec4<f32> { return wt[i >> 2u]; }
#endif
fn w_at(i: u32) -> f32 { return w4_at(i)[i & 3u]; }
#else
@group(0) @binding(2) var<storage, read> wt: array<f32>;
fn w_at(i: u32) -> f32 { return wt[i]; }
#endif
#endif
@group(0) @binding(3) var<storage, read> bias: array<f32>;
fn bias_at(i: u32) -> f32 { return bias[i]; }
#endif
#if VEC4
@group(0) @binding(4) var<storage, read> res: array<act4>;
@group(0) @binding(5) var<storage, read_write> out: array<act4>;
#else
@group(0) @binding(4) var<storage, read> res: array<act>;
@group(0) @binding(5) var<storage, read_write> out: array<act>;
#endif

#if A_GN
#if VEC4
@group(0) @binding(6) var<storage, read> gn: array<vec4<f32>>;
// x · scale + shift of channels ci .. ci + 3 of image img, then SiLU when asked.
fn norm4(v: vec4<f32>, img: u32, ci: u32) -> vec4<f32> {
    let o = p.gn_off + img * 2u * p.cin + ci;
    let y = v * gn[o >> 2u] + gn[(o + p.cin) >> 2u];
    if (p.gn_silu != 0u) {
        return vec4<f32>(silu(y.x), silu(y.y), silu(y.z), silu(y.w));
    }
    return y;
}
#else
@group(0) @binding(6) var<storage, read> gn: array<f32>;
fn norm1(v: f32, img: u32, ci: u32) -> f32 {
    let o = p.gn_off + img * 2u * p.cin + ci;
    let y = v * gn[o] + gn[o + p.cin];
    return select(y, silu(y), p.gn_silu != 0u);
}
#endif
#endif

#if UP2
const UP: u32 = 1u;
#else
const UP: u32 = 0u;
#endif

fn gemm_dims() -> vec4<u32> { return vec4<u32>(p.m, p.cout, p.k, 1u); }
fn gemm_tiles() -> vec2<u32> { return vec2<u32>(p.tiles_n, p.tiles_m); }

// Output pixel m decoded once: image base index and the top-left input tap.
struct ARow { base: u32, iy0: i32, ix0: i32, valid: bool, img: u32 }

fn a_row(b: u32, m: u32) -> ARow {
    let hw = p.ho * p.wo;
    let mc = min(m, p.m - 1u);
    let img = mc / hw;
    let r = mc % hw;
    let oy = r / p.wo;
    let ox = r % p.wo;
    return ARow(
        p.x_off + img * (p.h >> UP) * (p.w >> UP) * p.cin,
        i32(oy * p.stride) - i32(p.pad_t),
        i32(ox * p.stride) - i32(p.pad_l),
        m < p.m,
        img,
    );
}

#if X4
// The vectorised loops (gemm_tile_vec4.wgsl, gemm_subgroup.wgsl with VEC4, and the narrow
// kernel; the host defines X4 with either): one K block per
// kernel tap, cin long (cin, cout and the offsets are multiples of 4, checked by the host).
// The tap's input pixel and its zero-padding test are computed once per block.
struct ABlock { pix: u32, inside: bool, img: u32 }

fn kblocks() -> u32 { return p.kh * p.kw; }
fn kblock_len() -> u32 { return p.cin; }
fn a_block(r: ARow, tap: u32) -> ABlock {
    let iy = r.iy0 + i32(tap / p.kw);
    let ix = r.ix0 + i32(tap % p.kw);
    let inside = iy >= 0 && ix >= 0 && iy < i32(p.h) && ix < i32(p.w);
    let yc = u32(clamp(iy, 0, i32(p.h) - 1));
    let xc = u32(clamp(ix, 0, i32(p.w) - 1));
    return ABlock(r.base + ((yc >> UP) * (p.w >> UP) + (xc >> UP)) * p.cin, inside, r.img);
}
fn load_a4(blk: ABlock, i: u32) -> vec4<f32> {
    var v = x4_at((blk.pix + i) >> 2u);
#if A_GN
    v = norm4(v, blk.img, i);
#endif
    return select(vec4<f32>(0.0), v, blk.inside);
}
#else
// Loads are branch-free: the address is clamped into the image and the value selected
// (zero padding, k past K), which keeps SIMD (CPU) implementations vectorised.
fn load_a(r: ARow, k: u32) -> f32 {
    let kc = min(k, p.k - 1u);
    let ci = kc % p.cin;
    let tap = kc / p.cin;
    let iy = r.iy0 + i32(tap / p.kw);
    let ix = r.ix0 + i32(tap % p.kw);
    let inside = iy >= 0 && ix >= 0 && iy < i32(p.h) && ix < i32(p.w);
    let yc = u32(clamp(iy, 0, i32(p.h) - 1));
    let xc = u32(clamp(ix, 0, i32(p.w) - 1));
    var v = f32(x[r.base + ((yc >> UP) * (p.w >> UP) + (xc >> UP)) * p.cin + ci]);
#if A_GN
    v = norm1(v, r.img, ci);
#endif
    return select(0.0, v, r.valid && k < p.k && inside);
}
#endif

#if VEC4
#if PANELS_B
// A panel-packed weight (the host's Tensor::panels): panel n / 32 holds K rows of 32 values.
fn load_b4(b: u32, k: u32, n: u32) -> vec4<f32> {
    return w4_at(p.w_off + (n >> 5u) * (p.k * 32u) + k * 32u + (n & 31u));
}
#else
fn load_b4(b: u32, k: u32, n: u32) -> vec4<f32> { return w4_at(p.w_off + k * p.cout + n); }
#endif
// Channels n .. n + 3 of output pixel m (bias already added).
fn store_c4(b: u32, m: u32, n: u32, v: vec4<f32>) {
    var o = v;
    let i = m * p.cout + n;
    if (p.has_res == 1u) { o += vec4<f32>(res[(p.res_off + i) >> 2u]); }
    if (p.has_res == 2u) { o += vec4<f32>(res[(p.res_off + (m / (p.ho * p.wo)) * p.cout + n) >> 2u]); }
    out[(p.out_off + i) >> 2u] = act4(o);
}
#else
fn load_b(b: u32, k: u32, n: u32) -> f32 {
#if PANELS_B
    let nc = min(n, p.cout - 1u);
    let v = w_at(p.w_off + (nc >> 5u) * (p.k * 32u) + min(k, p.k - 1u) * 32u + (nc & 31u));
#else
    let v = w_at(p.w_off + min(k, p.k - 1u) * p.cout + min(n, p.cout - 1u));
#endif
    return select(0.0, v, k < p.k && n < p.cout);
}

fn store_c(b: u32, m: u32, n: u32, v: f32) {
    var o = v;
    if (p.has_bias != 0u) { o += bias_at(p.bias_off + n); }
    let i = m * p.cout + n;
    if (p.has_res == 1u) { o += f32(res[p.res_off + i]); }
    if (p.has_res == 2u) { o += f32(res[p.res_off + (m / (p.ho * p.wo)) * p.cout + n]); }
    out[p.out_off + i] = act(o);
}
#endif


#if NARROW
#include "conv2d_narrow.wgsl"
#else
#if SUBGROUP_GEMM
#include "gemm_subgroup.wgsl"
#else
#if VEC4
#include "gemm_tile_vec4.wgsl"
#else
#include "gemm_tile.wgsl"
#endif
#endif
#endif
