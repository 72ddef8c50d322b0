// Attention for CPU devices (subgroup size 8, checked by the host): the operation, operands
// and key chunks of attention.wgsl (read its header). One subgroup per workgroup, no
// workgroup memory and no barriers (on llvmpipe a barrier switches every subgroup of the
// workgroup out and back in). Each lane owns two queries of a 16-query tile, i and i + 8,
// with q and the accumulator of both in registers; lane l loads key j0 + l of a block of 8
// and its value, which reach every lane by subgroupShuffle — each shuffled key and value
// serving two queries (measured on Mesa 25 lavapipe: 1.2–1.8× the one-query-per-lane
// kernel) — and the online softmax advances one key at a time. Dispatch: ⌈n_q / 16⌉ · heads
// · batch workgroups.

#include "common.wgsl"
#include "attention_chunks.wgsl"

const KEY_BLOCK: u32 = 8u;
const QPW: u32 = 16u;

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
    let tq = t.x;
    let h = t.y;
    let b = t.z;
    let i0 = tq * QPW + lane;
    let i1 = i0 + 8u;
    let qi0 = min(i0, p.n_q - 1u);
    let qi1 = min(i1, p.n_q - 1u);

    var qv0: array<V, DV>;
    var qv1: array<V, DV>;
    var acc0: array<V, DV>;
    var acc1: array<V, DV>;
    let qb0 = p.q_off + (b * p.n_q + qi0) * p.q_stride + h * DV;
    let qb1 = p.q_off + (b * p.n_q + qi1) * p.q_stride + h * DV;
    for (var c = 0u; c < DV; c++) {
        qv0[c] = q_at(qb0 + c) * p.scale;
        qv1[c] = q_at(qb1 + c) * p.scale;
        acc0[c] = V(0.0);
        acc1[c] = V(0.0);
    }
    var m0 = -3.0e38;
    var l0 = 0.0;
    var m1 = -3.0e38;
    var l1 = 0.0;
    let sb0 = ((b * p.n_q + qi0) * p.heads + h) * STATE_LEN;
    let sb1 = ((b * p.n_q + qi1) * p.heads + h) * STATE_LEN;
    if (p.first == 0u) {
        let r0 = resume(sb0, &acc0);
        let r1 = resume(sb1, &acc1);
        m0 = r0.x;
        l0 = r0.y;
        m1 = r1.x;
        l1 = r1.y;
    }
    var kv_end = p.kv_end;
    if (p.causal != 0u) {
        kv_end = min(kv_end, min(tq * QPW + QPW, p.n_q));
    }
    let k_base = p.k_off + b * p.n_kv * p.k_stride + h * DV;
    let v_base = p.v_off + b * p.n_kv * p.v_stride + h * DV;
    var kr: array<V, DV>;
    var vr: array<V, DV>;
    for (var j0 = p.kv_begin; j0 < kv_end; j0 += KEY_BLOCK) {
        let jl = min(j0 + lane, kv_end - 1u);
        for (var c = 0u; c < DV; c++) {
            kr[c] = k_at(k_base + jl * p.k_stride + c);
            vr[c] = v_at(v_base + jl * p.v_stride + c);
        }
        let jn = min(KEY_BLOCK, kv_end - j0);
        for (var jj = 0u; jj < jn; jj++) {
            var sc0 = 0.0;
            var sc1 = 0.0;
            for (var c = 0u; c < DV; c++) {
                let kk = subgroupShuffle(kr[c], jj);
                sc0 += vdot(qv0[c], kk);
                sc1 += vdot(qv1[c], kk);
            }
            let causal = p.causal != 0u;
            let mask0 = causal && j0 + jj > qi0;
            let mask1 = causal && j0 + jj > qi1;
            let mn0 = select(max(m0, sc0), m0, mask0);
            let mn1 = select(max(m1, sc1), m1, mask1);
            let c0 = exp(m0 - mn0);
            let c1 = exp(m1 - mn1);
            let p0 = select(exp(sc0 - mn0), 0.0, mask0);
            let p1 = select(exp(sc1 - mn1), 0.0, mask1);
            l0 = l0 * c0 + p0;
            l1 = l1 * c1 + p1;
            for (var c = 0u; c < DV; c++) {
                let vv = subgroupShuffle(vr[c], jj);
                acc0[c] = fma(V(p0), vv, acc0[c] * c0);
                acc1[c] = fma(V(p1), vv, acc1[c] * c1);
            }
            m0 = mn0;
            m1 = mn1;
        }
    }
    finish(i0 < p.n_q, i0, b, h, sb0, acc0, m0, l0);
    finish(i1 < p.n_q, i1, b, h, sb1, acc1, m1, l1);
}
