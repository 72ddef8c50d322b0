// Helpers shared by several kernels (pasted in with `#include "common.wgsl"`).

// Linear workgroup index of a grid that the host split over x, y and z to stay within
// max_compute_workgroups_per_dimension. Ids at or past the real count must return early.
fn linear_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + nwg.x * (wid.y + nwg.y * wid.z);
}

// Splits a linear workgroup index into (x, y, z) for a grid of nx × ny × (any) tiles:
// x fastest. Used with linear_workgroup to address (tile column, tile row, batch) and the like.
fn split3(index: u32, nx: u32, ny: u32) -> vec3<u32> {
    return vec3<u32>(index % nx, (index / nx) % ny, index / (nx * ny));
}

// Quotient and remainder of an element index by d, advanced by a fixed step without a
// division per element: CPU implementations (llvmpipe) have no vector integer division, so
// every `/` or `%` of a per-lane value costs one scalar divide per lane — measured on Mesa 25
// lavapipe, a channel concat paid twice the time of a plain copy for its `i / c`, `i % c`.
struct DivMod { q: u32, r: u32 }

fn divmod(i: u32, d: u32) -> DivMod {
    return DivMod(i / d, i % d);
}

// The DivMod of i + step, given x = divmod(i, d) and s = divmod(step, d).
fn divmod_step(x: DivMod, s: DivMod, d: u32) -> DivMod {
    var q = x.q + s.q;
    var r = x.r + s.r;
    if (r >= d) {
        r -= d;
        q += 1u;
    }
    return DivMod(q, r);
}

// erfc(x) with relative error < 1.2e-7 over the whole line (Chebyshev fit, Numerical
// Recipes' erfcc), so that GELU keeps its relative accuracy in the negative tail, where
// 1 + erf(x) cancels.
fn erfc_f32(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    let r = t * exp(-z * z + poly);
    return select(2.0 - r, r, x >= 0.0);
}

// torch.nn.functional.gelu (exact form): 0.5 · x · (1 + erf(x / √2)) = 0.5 · x · erfc(−x / √2).
fn gelu(x: f32) -> f32 {
    return 0.5 * x * erfc_f32(-x * 0.70710678118654752);
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

// Activation storage: f16 with ACT_F16 (the host emits `enable f16;` and checks the device
// has shader-f16), else f32. Kernels read activations into f32 and compute in f32; only
// what they store is rounded to f16.
#if ACT_F16
alias act = f16;
alias act4 = vec4<f16>;
#else
alias act = f32;
alias act4 = vec4<f32>;
#endif

#if LOAD64
// 64-bit loads (define LOAD64; CPU devices with shader-int64, see ops::matmul::wide_loads):
// llvmpipe loads a storage buffer lane by lane, one bounds compare and branch per
// component, so a u64 component carrying two f32 or four f16 halves (f32) or quarters (f16)
// the loads of a vec4 read. The bits are unpacked exactly: bitcast, or unpack2x16float
// (the f16 → f32 conversion).
fn lo32(v: u64) -> u32 { return u32(v & 0xFFFFFFFFlu); }
fn hi32(v: u64) -> u32 { return u32(v >> 32u); }
fn f32x4_bits(v: vec2<u64>) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(lo32(v.x), hi32(v.x), lo32(v.y), hi32(v.y)));
}
fn f16x4_bits(v: u64) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(lo32(v)), unpack2x16float(hi32(v)));
}
// The bits of four f32 as two 64-bit words (a 64-bit store: two per-lane stores, not four).
fn f32x4_words(v: vec4<f32>) -> vec2<u64> {
    let u = bitcast<vec4<u32>>(v);
    return vec2<u64>(u64(u.x) | (u64(u.y) << 32u), u64(u.z) | (u64(u.w) << 32u));
}
// Four activations (common's act4) as one or two 64-bit loads.
// act4_words: four activations rounded as act4 rounds them, as the words to store.
#if ACT_F16
alias act4_bits = u64;
fn act4_of(v: u64) -> vec4<f32> { return f16x4_bits(v); }
fn act4_words(v: vec4<f32>) -> u64 {
    // Rounded to f16 as act4 rounds; pack2x16float then packs exact values.
    let h = vec4<f32>(vec4<f16>(v));
    return u64(pack2x16float(h.xy)) | (u64(pack2x16float(h.zw)) << 32u);
}
#else
alias act4_bits = vec2<u64>;
fn act4_of(v: vec2<u64>) -> vec4<f32> { return f32x4_bits(v); }
fn act4_words(v: vec4<f32>) -> vec2<u64> { return f32x4_words(v); }
#endif
#endif
