// Attention for CPU devices at wide heads (subgroup size 8, checked by the host; head dims
// of 32·k floats from 128 up: SD's 160 at its smallest latents, the VAE's 512): the
// operation, operands and key chunks of attention.wgsl (read its header), VEC4 storage only.
//
// attention_cpu.wgsl gives each lane whole query rows, so a lane holds q, the accumulator and
// a key and value row, DV vec4s each; past ~24 vec4s the compiler no longer unrolls the loops
// over them, the arrays are indexed at run time and llvmpipe reaches them lane by lane
// (measured on Mesa 25: 11.7 GFLOP/s at head dim 96, 3.1 at 128, 2.4 at 160 and 512). Here
// the subgroup's lanes split the head dim instead: lane l owns the vec4s l, l + 8, l + 16, …
// (DJ = DV / 8 of them, at most 16) of QPW = 4 queries of one head — q and the accumulator
// of each in registers — and of every key and value it loads (8 queries measured the same
// within the VM's noise at head dim 160, and slower at 512). A score is the subgroupAdd of
// the lanes' partial dots; the online softmax (one key at a time, f32 statistics, the same
// in every lane) rescales each lane's part of the accumulator. No shuffles, no workgroup
// memory, no barriers. Dispatch: ⌈n_q / 4⌉ · heads · batch workgroups.

#include "common.wgsl"
#include "attention_chunks.wgsl"

const DJ: u32 = DV / 8u;
const QPW: u32 = 4u;

// One query's running state: its q part (scaled), its accumulator part, max and sum.
struct Row {
    q: array<V, DJ>,
    acc: array<V, DJ>,
    m: f32,
    l: f32,
}

// This lane's part of query i's row (clamped to a valid query): q scaled, and the state a
// previous key chunk saved (or an empty one).
fn start(i: u32, b: u32, h: u32, lane: u32) -> Row {
    let qi = min(i, p.n_q - 1u);
    let qb = p.q_off + (b * p.n_q + qi) * p.q_stride + h * DV + lane;
    var r: Row;
    for (var c = 0u; c < DJ; c++) {
        r.q[c] = q_at(qb + 8u * c) * p.scale;
        r.acc[c] = V(0.0);
    }
    r.m = -3.0e38;
    r.l = 0.0;
    if (p.first == 0u) {
        let sb = ((b * p.n_q + qi) * p.heads + h) * STATE_LEN;
        for (var c = 0u; c < DJ; c++) {
            r.acc[c] = state[sb + 8u * c + lane];
        }
        let ml = state[sb + DV];
        r.m = ml.x;
        r.l = ml.y;
    }
    return r;
}

// Key j (this lane's parts kk and vv) into query i's row; causal masking as attention.wgsl.
fn step(r: ptr<function, Row>, i: u32, j: u32, kk: ptr<function, array<V, DJ>>, vv: ptr<function, array<V, DJ>>) {
    var part = 0.0;
    for (var c = 0u; c < DJ; c++) {
        part += vdot((*r).q[c], (*kk)[c]);
    }
    let s = subgroupAdd(part);
    let masked = p.causal != 0u && j > i;
    let mn = select(max((*r).m, s), (*r).m, masked);
    let corr = exp((*r).m - mn);
    let pj = select(exp(s - mn), 0.0, masked);
    (*r).l = (*r).l * corr + pj;
    for (var c = 0u; c < DJ; c++) {
        (*r).acc[c] = fma(V(pj), (*vv)[c], (*r).acc[c] * corr);
    }
    (*r).m = mn;
}

// A chunk's end for query i: the running state for the next key chunk, or the normalised
// output.
fn end(r: Row, i: u32, b: u32, h: u32, lane: u32) {
    if (i >= p.n_q) {
        return;
    }
    if (p.last == 0u) {
        let sb = ((b * p.n_q + i) * p.heads + h) * STATE_LEN;
        for (var c = 0u; c < DJ; c++) {
            state[sb + 8u * c + lane] = r.acc[c];
        }
        if (lane == 0u) {
            state[sb + DV] = vec4<f32>(r.m, r.l, 0.0, 0.0);
        }
    } else {
        let inv = 1.0 / r.l;
        let ob = p.o_off + (b * p.n_q + i) * p.o_stride + h * DV + lane;
        for (var c = 0u; c < DJ; c++) {
            o[ob + 8u * c] = VS(r.acc[c] * inv);
        }
    }
}

@compute @workgroup_size(8)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let t = attention_tile(wid, nwg);
    if (t.x >= p.tiles_q) {
        return;
    }
    let h = t.y;
    let b = t.z;
    let i0 = t.x * QPW;
    var r0 = start(i0, b, h, lane);
    var r1 = start(i0 + 1u, b, h, lane);
    var r2 = start(i0 + 2u, b, h, lane);
    var r3 = start(i0 + 3u, b, h, lane);
    var kv_end = p.kv_end;
    if (p.causal != 0u) {
        kv_end = min(kv_end, min(i0 + QPW, p.n_q));
    }
    let k_base = p.k_off + b * p.n_kv * p.k_stride + h * DV + lane;
    let v_base = p.v_off + b * p.n_kv * p.v_stride + h * DV + lane;
    var kk: array<V, DJ>;
    var vv: array<V, DJ>;
    for (var j = p.kv_begin; j < kv_end; j++) {
        for (var c = 0u; c < DJ; c++) {
            kk[c] = k_at(k_base + j * p.k_stride + 8u * c);
            vv[c] = v_at(v_base + j * p.v_stride + 8u * c);
        }
        step(&r0, i0, j, &kk, &vv);
        step(&r1, i0 + 1u, j, &kk, &vv);
        step(&r2, i0 + 2u, j, &kk, &vv);
        step(&r3, i0 + 3u, j, &kk, &vv);
    }
    end(r0, i0, b, h, lane);
    end(r1, i0 + 1u, b, h, lane);
    end(r2, i0 + 2u, b, h, lane);
    end(r3, i0 + 3u, b, h, lane);
}
