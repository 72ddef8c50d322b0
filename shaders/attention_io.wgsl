// The attention kernels' parameters and bindings (attention.wgsl, attention_tiled.wgsl; read
// attention.wgsl's header): the includer defines V (the head-dim unit it computes in, f32 or
// vec4<f32>, also the state's) and VS (how q, k, v and o are stored: common.wgsl's act or
// act4).

struct Params {
    batch: u32, heads: u32, n_q: u32, n_kv: u32,
    q_off: u32, k_off: u32, v_off: u32, o_off: u32,
    q_stride: u32, k_stride: u32, v_stride: u32, o_stride: u32,
    tiles_q: u32, causal: u32, scale: f32, kv_begin: u32,
    kv_end: u32, first: u32, last: u32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#if LOAD64
// q, k and v read as 64-bit words (the CPU kernel with vec4 storage; see common.wgsl).
@group(0) @binding(1) var<storage, read> q: array<act4_bits>;
@group(0) @binding(2) var<storage, read> k: array<act4_bits>;
@group(0) @binding(3) var<storage, read> v: array<act4_bits>;
fn q_at(i: u32) -> V { return act4_of(q[i]); }
fn k_at(i: u32) -> V { return act4_of(k[i]); }
fn v_at(i: u32) -> V { return act4_of(v[i]); }
#else
@group(0) @binding(1) var<storage, read> q: array<VS>;
@group(0) @binding(2) var<storage, read> k: array<VS>;
@group(0) @binding(3) var<storage, read> v: array<VS>;
fn q_at(i: u32) -> V { return V(q[i]); }
fn k_at(i: u32) -> V { return V(k[i]); }
fn v_at(i: u32) -> V { return V(v[i]); }
#endif
@group(0) @binding(4) var<storage, read_write> o: array<VS>;
@group(0) @binding(5) var<storage, read_write> state: array<V>;

// This workgroup's (query tile, head, image); x is tiles_q past the grid's end (the kernel
// returns: the grid may be padded to fit the device's per-dimension limit).
fn attention_tile(wid: vec3<u32>, nwg: vec3<u32>) -> vec3<u32> {
    let wg_index = linear_workgroup(wid, nwg);
    if (wg_index >= p.tiles_q * p.heads * p.batch) {
        return vec3<u32>(p.tiles_q, 0u, 0u);
    }
    return split3(wg_index, p.tiles_q, p.heads);
}
