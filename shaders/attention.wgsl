// Fused flash-style attention (never materialises the N×M score matrix):
//
//   o[b, i, h, :] = sum_j softmax_j(scale · q[b, i, h, :] · k[b, j, h, :] (+ causal mask)) · v[b, j, h, :]
//
// q: [b, n_q, ·] and k, v: [b, n_kv, ·] with head h at columns h·D .. h·D + D of rows of
// q_stride / k_stride / v_stride elements (so q, k, v may be slices of one fused projection);
// o: [b, n_q, o_stride] likewise. q, k, v, o: activations (f32, or f16 with ACT_F16:
// common.wgsl's act); scores, softmax statistics and accumulators are f32. Causal: key j is
// masked for j > i (CLIP).
//
// One workgroup of WG threads handles WG queries of one (b, h); each thread owns one query
// row with q and the output accumulator (D floats each) in registers. Keys and values stream
// through workgroup memory in blocks of BKV rows; each thread keeps a running max and
// denominator (online softmax) and rescales its accumulator when the max grows. Memory is
// O((N + M)·D); workgroup memory 2·BKV·D floats. Dispatch: tiles_q · heads · batch
// workgroups.
//
// Head-dim storage is in units of V: vec4<f32> when the host defines VEC4 (D, every
// offset and every stride a multiple of 4: all SD shapes), else f32. Offsets, strides and
// D below are in units of V. D (in floats), DV = D / width and BKV are constants prepended
// by the host.
//
// Key chunks: one dispatch handles keys [kv_begin, kv_end). When the host splits the keys
// over several dispatches (devices that cap loop iterations per invocation, such as Mesa's
// llvmpipe at 65535), each non-final chunk saves its running (max, sum, accumulator) to
// `state` ([b, n_q, heads, STATE_LEN] of V, still O(N·D)) and the next chunk resumes from it.

#include "common.wgsl"
#include "attention_chunks.wgsl"

override WG: u32 = 64u;

var<workgroup> k_tile: array<V, BKV * DV>;
var<workgroup> v_tile: array<V, BKV * DV>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let t = attention_tile(wid, nwg);
    if (t.x >= p.tiles_q) {
        return;
    }
    let tq = t.x;
    let h = t.y;
    let b = t.z;
    let i = tq * WG + li;
    let in_range = i < p.n_q;
    let qi = min(i, p.n_q - 1u);

    var qv: array<V, DV>;
    var acc: array<V, DV>;
    let q_base = p.q_off + (b * p.n_q + qi) * p.q_stride + h * DV;
    for (var c = 0u; c < DV; c++) {
        qv[c] = V(q[q_base + c]) * p.scale;
        acc[c] = V(0.0);
    }
    // Finite start so a fully masked block gives exp(-inf) = 0, never inf - inf.
    var m_run = -3.0e38;
    var l_run = 0.0;
    let s_base = ((b * p.n_q + qi) * p.heads + h) * STATE_LEN;
    if (p.first == 0u) {
        let ml = resume(s_base, &acc);
        m_run = ml.x;
        l_run = ml.y;
    }

    // With a causal mask no key past the workgroup's last query is needed.
    var kv_end = p.kv_end;
    if (p.causal != 0u) {
        kv_end = min(kv_end, min(tq * WG + WG, p.n_q));
    }
    let k_base = p.k_off + b * p.n_kv * p.k_stride + h * DV;
    let v_base = p.v_off + b * p.n_kv * p.v_stride + h * DV;

    for (var j0 = p.kv_begin; j0 < kv_end; j0 += BKV) {
        workgroupBarrier();
        for (var e = li; e < BKV * DV; e += WG) {
            let j = min(j0 + e / DV, kv_end - 1u);
            let c = e % DV;
            k_tile[e] = V(k[k_base + j * p.k_stride + c]);
            v_tile[e] = V(v[v_base + j * p.v_stride + c]);
        }
        workgroupBarrier();

        // Keys present in this block (the last block of a chunk may be partial).
        let jn = min(BKV, kv_end - j0);
        var s: array<f32, BKV>;
        var m_blk = m_run;
        for (var j = 0u; j < jn; j++) {
            var dot_acc = 0.0;
            for (var c = 0u; c < DV; c++) {
                dot_acc += vdot(qv[c], k_tile[j * DV + c]);
            }
            let jj = j0 + j;
            let masked = p.causal != 0u && jj > qi;
            s[j] = select(dot_acc, -3.0e38, masked);
            m_blk = max(m_blk, s[j]);
        }
        let corr = exp(m_run - m_blk);
        l_run *= corr;
        for (var c = 0u; c < DV; c++) {
            acc[c] *= corr;
        }
        for (var j = 0u; j < jn; j++) {
            let pj = select(exp(s[j] - m_blk), 0.0, s[j] <= -3.0e38);
            l_run += pj;
            for (var c = 0u; c < DV; c++) {
                acc[c] = fma(V(pj), v_tile[j * DV + c], acc[c]);
            }
        }
        m_run = m_blk;
    }

    finish(in_range, i, b, h, s_base, acc, m_run, l_run);
}

