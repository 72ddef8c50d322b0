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

#if VEC4
alias V = vec4<f32>;
alias VS = act4;   // storage of q, k, v, o (common.wgsl's act)
fn vdot(a: V, b: V) -> f32 { return dot(a, b); }
const STATE_LEN: u32 = DV + 1u;   // accumulator, then (max, sum, 0, 0)
#else
alias V = f32;
alias VS = act;
fn vdot(a: V, b: V) -> f32 { return a * b; }
const STATE_LEN: u32 = DV + 2u;   // accumulator, max, sum
#endif

override WG: u32 = 64u;

#include "attention_io.wgsl"

// A later key chunk: the accumulator saved by the previous chunk (into `acc`) and its
// running (max, sum).
fn resume(s_base: u32, acc: ptr<function, array<V, DV>>) -> vec2<f32> {
    for (var c = 0u; c < DV; c++) {
        (*acc)[c] = state[s_base + c];
    }
    let ml = state[s_base + DV];
#if VEC4
    return ml.xy;
#else
    return vec2<f32>(ml, state[s_base + DV + 1u]);
#endif
}

#if SUBGROUP_ATTN
// CPU devices (subgroup size 8, checked by the host; WG = 8): one subgroup per workgroup, no
// workgroup memory and no barriers (on llvmpipe a barrier switches every subgroup of the
// workgroup out and back in). Lane l loads key j0 + l and its value; the 8 keys of a block
// reach every lane's query by subgroupShuffle, and the online softmax advances one key at a
// time (scores never leave registers).
const KEY_BLOCK: u32 = 8u;
#else
var<workgroup> k_tile: array<V, BKV * DV>;
var<workgroup> v_tile: array<V, BKV * DV>;
#endif

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
#if SUBGROUP_ATTN
    @builtin(subgroup_invocation_id) lane: u32,
#endif
) {
    let wg_index = linear_workgroup(wid, nwg);
    if (wg_index >= p.tiles_q * p.heads * p.batch) {
        return;
    }
    let t = split3(wg_index, p.tiles_q, p.heads);
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

#if SUBGROUP_ATTN
    var kr: array<V, DV>;
    var vr: array<V, DV>;
    for (var j0 = p.kv_begin; j0 < kv_end; j0 += KEY_BLOCK) {
        let jl = min(j0 + lane, kv_end - 1u);
        for (var c = 0u; c < DV; c++) {
            kr[c] = V(k[k_base + jl * p.k_stride + c]);
            vr[c] = V(v[v_base + jl * p.v_stride + c]);
        }
        let jn = min(KEY_BLOCK, kv_end - j0);
        for (var jj = 0u; jj < jn; jj++) {
            var sc = 0.0;
            for (var c = 0u; c < DV; c++) {
                sc += vdot(qv[c], subgroupShuffle(kr[c], jj));
            }
            let masked = p.causal != 0u && j0 + jj > qi;
            let m_new = select(max(m_run, sc), m_run, masked);
            let corr = exp(m_run - m_new);
            let pj = select(exp(sc - m_new), 0.0, masked);
            l_run = l_run * corr + pj;
            for (var c = 0u; c < DV; c++) {
                acc[c] = fma(V(pj), subgroupShuffle(vr[c], jj), acc[c] * corr);
            }
            m_run = m_new;
        }
    }
#else
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

#endif
    finish(in_range, i, b, h, s_base, acc, m_run, l_run);
}

// A chunk's end: the running state for the next key chunk, or the normalised output.
fn finish(in_range: bool, i: u32, b: u32, h: u32, s_base: u32, acc: array<V, DV>, m_run: f32, l_run: f32) {
    if (in_range && p.last == 0u) {
        for (var c = 0u; c < DV; c++) {
            state[s_base + c] = acc[c];
        }
#if VEC4
        state[s_base + DV] = vec4<f32>(m_run, l_run, 0.0, 0.0);
#else
        state[s_base + DV] = m_run;
        state[s_base + DV + 1u] = l_run;
#endif
    }
    if (in_range && p.last != 0u) {
        let inv = 1.0 / l_run;
        let o_base = p.o_off + (b * p.n_q + i) * p.o_stride + h * DV;
        for (var c = 0u; c < DV; c++) {
            o[o_base + c] = VS(acc[c] * inv);
        }
    }
}
