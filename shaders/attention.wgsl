// Fused flash-style attention (never materialises the N×M score matrix):
//
//   o[b, i, h, :] = sum_j softmax_j(scale · q[b, i, h, :] · k[b, j, h, :] (+ causal mask)) · v[b, j, h, :]
//
// q: [b, n_q, ·] and k, v: [b, n_kv, ·] with head h at columns h·D .. h·D + D of rows of
// q_stride / k_stride / v_stride elements (so q, k, v may be slices of one fused projection);
// o: [b, n_q, o_stride] likewise. All f32. Causal: key j is masked for j > i (CLIP).
//
// One workgroup of WG threads handles WG queries of one (b, h); each thread owns one query
// row with q and the output accumulator (D floats each) in registers. Keys and values stream
// through workgroup memory in blocks of BKV rows; each thread keeps a running max and
// denominator (online softmax) and rescales its accumulator when the max grows. Memory is
// O((N + M)·D); workgroup memory 2·BKV·D floats. D (head dim) and BKV are compile-time
// constants prepended by the host. Dispatch: tiles_q · heads · batch workgroups.
//
// Key chunks: one dispatch handles keys [kv_begin, kv_end). When the host splits the keys
// over several dispatches (devices that cap loop iterations per invocation, such as Mesa's
// llvmpipe at 65535), each non-final chunk saves its running (max, sum, accumulator) to
// `state` ([b, n_q, heads, D + 2] f32, still O(N·D)) and the next chunk resumes from it.

#include "common.wgsl"

override WG: u32 = 64u;

struct Params {
    batch: u32, heads: u32, n_q: u32, n_kv: u32,
    q_off: u32, k_off: u32, v_off: u32, o_off: u32,
    q_stride: u32, k_stride: u32, v_stride: u32, o_stride: u32,
    tiles_q: u32, causal: u32, scale: f32, kv_begin: u32,
    kv_end: u32, first: u32, last: u32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;
@group(0) @binding(5) var<storage, read_write> state: array<f32>;

var<workgroup> k_tile: array<f32, BKV * D>;
var<workgroup> v_tile: array<f32, BKV * D>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let wg_index = linear_workgroup(wid, nwg);
    if (wg_index >= p.tiles_q * p.heads * p.batch) {
        return;
    }
    let tq = wg_index % p.tiles_q;
    let h = (wg_index / p.tiles_q) % p.heads;
    let b = wg_index / (p.tiles_q * p.heads);
    let i = tq * WG + li;
    let in_range = i < p.n_q;
    let qi = min(i, p.n_q - 1u);

    var qv: array<f32, D>;
    var acc: array<f32, D>;
    let q_base = p.q_off + (b * p.n_q + qi) * p.q_stride + h * D;
    for (var c = 0u; c < D; c++) {
        qv[c] = q[q_base + c] * p.scale;
        acc[c] = 0.0;
    }
    // Finite start so a fully masked block gives exp(-inf) = 0, never inf - inf.
    var m_run = -3.0e38;
    var l_run = 0.0;
    let s_base = ((b * p.n_q + qi) * p.heads + h) * (D + 2u);
    if (p.first == 0u) {
        m_run = state[s_base];
        l_run = state[s_base + 1u];
        for (var c = 0u; c < D; c++) {
            acc[c] = state[s_base + 2u + c];
        }
    }

    // With a causal mask no key past the workgroup's last query is needed.
    var kv_end = p.kv_end;
    if (p.causal != 0u) {
        kv_end = min(kv_end, min(tq * WG + WG, p.n_q));
    }
    let k_base = p.k_off + b * p.n_kv * p.k_stride + h * D;
    let v_base = p.v_off + b * p.n_kv * p.v_stride + h * D;

    for (var j0 = p.kv_begin; j0 < kv_end; j0 += BKV) {
        workgroupBarrier();
        for (var e = li; e < BKV * D; e += WG) {
            let j = j0 + e / D;
            let c = e % D;
            var kval = 0.0;
            var vval = 0.0;
            if (j < kv_end) {
                kval = k[k_base + j * p.k_stride + c];
                vval = v[v_base + j * p.v_stride + c];
            }
            k_tile[e] = kval;
            v_tile[e] = vval;
        }
        workgroupBarrier();

        var s: array<f32, BKV>;
        var m_blk = m_run;
        for (var j = 0u; j < BKV; j++) {
            var dot = 0.0;
            for (var c = 0u; c < D; c++) {
                dot = fma(qv[c], k_tile[j * D + c], dot);
            }
            let jj = j0 + j;
            let masked = jj >= kv_end || (p.causal != 0u && jj > qi);
            s[j] = select(dot, -3.0e38, masked);
            m_blk = max(m_blk, s[j]);
        }
        let corr = exp(m_run - m_blk);
        l_run *= corr;
        for (var c = 0u; c < D; c++) {
            acc[c] *= corr;
        }
        for (var j = 0u; j < BKV; j++) {
            let pj = select(exp(s[j] - m_blk), 0.0, s[j] <= -3.0e38);
            l_run += pj;
            for (var c = 0u; c < D; c++) {
                acc[c] = fma(pj, v_tile[j * D + c], acc[c]);
            }
        }
        m_run = m_blk;
    }

    if (in_range && p.last == 0u) {
        state[s_base] = m_run;
        state[s_base + 1u] = l_run;
        for (var c = 0u; c < D; c++) {
            state[s_base + 2u + c] = acc[c];
        }
    }
    if (in_range && p.last != 0u) {
        let inv = 1.0 / l_run;
        let o_base = p.o_off + (b * p.n_q + i) * p.o_stride + h * D;
        for (var c = 0u; c < D; c++) {
            o[o_base + c] = acc[c] * inv;
        }
    }
}
