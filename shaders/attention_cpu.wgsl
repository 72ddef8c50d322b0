// Attention for CPU devices (subgroup size 8, checked by the host): the operation, operands
// and key chunks of attention.wgsl (read its header). One subgroup per workgroup, no
// workgroup memory and no barriers (on llvmpipe a barrier switches every subgroup of the
// workgroup out and back in). Each lane owns QPL queries of an 8·QPL-query tile, i, i + 8,
// …, with q and the accumulator of each in registers (named arrays: an array of them,
// passed by pointer, made naga's SPIR-V backend panic); lane l loads key j0 + l of a block
// of 8 and its value, which reach every lane by subgroupShuffle — each shuffled key and
// value serving QPL queries (measured on Mesa 25 lavapipe: two queries 1.2–1.8× one, four
// 1.2–1.35× two at head dims up to 48, far slower above, see ops::attention::cpu_quad) —
// and the online softmax advances one key at a time, the QPL queries' running max and sum
// side by side in one vector. QPL is 2, or 4 with QUAD. With SPANS (head dims of 40 and up,
// ops::attention::cpu_spans) the keys go in spans of SPAN_KEYS instead, two passes each:
// the span's scores are kept (one SV per key, in private memory) with their maximum, the
// running state is rescaled once per span, and the second pass adds exp(s − max) · v with
// no rescale per key (1.15–1.3× on SD's and CLIP's heads on Mesa 25 lavapipe). Dispatch:
// ⌈n_q / (8·QPL)⌉ · heads · batch workgroups.

#include "common.wgsl"
#include "attention_chunks.wgsl"

const KEY_BLOCK: u32 = 8u;
const SPAN_KEYS: u32 = 128u;
#if QUAD
const QPL: u32 = 4u;   // queries per lane, the statistics of query s in component s
alias SV = vec4<f32>;
alias UV = vec4<u32>;
alias BV = vec4<bool>;
const Q_STEP = UV(0u, 8u, 16u, 24u);
#else
const QPL: u32 = 2u;
alias SV = vec2<f32>;
alias UV = vec2<u32>;
alias BV = vec2<bool>;
const Q_STEP = UV(0u, 8u);
#endif
const QPW: u32 = 8u * QPL;

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
    // This lane's queries i0 + 8·s (s < QPL); the statistics of query s in component s.
    let i0 = tq * QPW + lane;
    let ii = UV(i0) + Q_STEP;
    let qi = min(ii, UV(p.n_q - 1u));
    let sbv = ((b * p.n_q + qi) * p.heads + h) * STATE_LEN;

    var qv0: array<V, DV>;
    var qv1: array<V, DV>;
    var acc0: array<V, DV>;
    var acc1: array<V, DV>;
#if QUAD
    var qv2: array<V, DV>;
    var qv3: array<V, DV>;
    var acc2: array<V, DV>;
    var acc3: array<V, DV>;
#endif
    let qb = p.q_off + ((b * p.n_q + qi) * p.q_stride + h * DV);
    for (var c = 0u; c < DV; c++) {
        qv0[c] = q_at(qb.x + c) * p.scale;
        qv1[c] = q_at(qb.y + c) * p.scale;
        acc0[c] = V(0.0);
        acc1[c] = V(0.0);
#if QUAD
        qv2[c] = q_at(qb.z + c) * p.scale;
        qv3[c] = q_at(qb.w + c) * p.scale;
        acc2[c] = V(0.0);
        acc3[c] = V(0.0);
#endif
    }
    var m = SV(-3.0e38);
    var l = SV(0.0);
    if (p.first == 0u) {
        let r0 = resume(sbv.x, &acc0);
        let r1 = resume(sbv.y, &acc1);
#if QUAD
        let r2 = resume(sbv.z, &acc2);
        let r3 = resume(sbv.w, &acc3);
        m = SV(r0.x, r1.x, r2.x, r3.x);
        l = SV(r0.y, r1.y, r2.y, r3.y);
#else
        m = SV(r0.x, r1.x);
        l = SV(r0.y, r1.y);
#endif
    }
    var kv_end = p.kv_end;
    if (p.causal != 0u) {
        kv_end = min(kv_end, min(tq * QPW + QPW, p.n_q));
    }
    let k_base = p.k_off + b * p.n_kv * p.k_stride + h * DV;
    let v_base = p.v_off + b * p.n_kv * p.v_stride + h * DV;
    var kr: array<V, DV>;
    var vr: array<V, DV>;
#if SPANS
    // SPANS: the keys in spans of SPAN_KEYS, each in two passes. The first keeps the span's
    // scores (this lane's queries, one SV per key; masked ones at −3e38) and their maximum;
    // the running state is rescaled once to it; the second adds exp(s − max) · v with no
    // rescale per key. Both walk whole blocks of 8 keys (a loop of constant length, which
    // the compiler unrolls: 1.03–1.25× a loop to the block's real end): keys past the span
    // are masked, their values loaded as 0.
    var sc: array<SV, SPAN_KEYS>;
    for (var s0 = p.kv_begin; s0 < kv_end; s0 += SPAN_KEYS) {
        let s1 = min(s0 + SPAN_KEYS, kv_end);
        var mx = m;
        for (var j0 = s0; j0 < s1; j0 += KEY_BLOCK) {
            let jl = min(j0 + lane, s1 - 1u);
            for (var c = 0u; c < DV; c++) {
                kr[c] = k_at(k_base + jl * p.k_stride + c);
            }
            for (var jj = 0u; jj < KEY_BLOCK; jj++) {
                var x = SV(0.0);
                for (var c = 0u; c < DV; c++) {
                    let kk = subgroupShuffle(kr[c], jj);
                    x.x += vdot(qv0[c], kk);
                    x.y += vdot(qv1[c], kk);
#if QUAD
                    x.z += vdot(qv2[c], kk);
                    x.w += vdot(qv3[c], kk);
#endif
                }
                let mask = (BV(p.causal != 0u) & (UV(j0 + jj) > qi)) | BV(j0 + jj >= s1);
                x = select(x, SV(-3.0e38), mask);
                sc[j0 + jj - s0] = x;
                mx = max(mx, x);
            }
        }
        let cf = exp(m - mx);
        l = l * cf;
        for (var c = 0u; c < DV; c++) {
            acc0[c] = acc0[c] * cf.x;
            acc1[c] = acc1[c] * cf.y;
#if QUAD
            acc2[c] = acc2[c] * cf.z;
            acc3[c] = acc3[c] * cf.w;
#endif
        }
        m = mx;
        for (var j0 = s0; j0 < s1; j0 += KEY_BLOCK) {
            let jl = min(j0 + lane, s1 - 1u);
            let real = j0 + lane < s1;
            for (var c = 0u; c < DV; c++) {
                vr[c] = select(V(0.0), v_at(v_base + jl * p.v_stride + c), real);
            }
            for (var jj = 0u; jj < KEY_BLOCK; jj++) {
                let x = sc[j0 + jj - s0];
                let pr = select(exp(x - m), SV(0.0), x <= SV(-3.0e38));
                l += pr;
                for (var c = 0u; c < DV; c++) {
                    let vv = subgroupShuffle(vr[c], jj);
                    acc0[c] = fma(V(pr.x), vv, acc0[c]);
                    acc1[c] = fma(V(pr.y), vv, acc1[c]);
#if QUAD
                    acc2[c] = fma(V(pr.z), vv, acc2[c]);
                    acc3[c] = fma(V(pr.w), vv, acc3[c]);
#endif
                }
            }
        }
    }
#else
    for (var j0 = p.kv_begin; j0 < kv_end; j0 += KEY_BLOCK) {
        let jl = min(j0 + lane, kv_end - 1u);
        for (var c = 0u; c < DV; c++) {
            kr[c] = k_at(k_base + jl * p.k_stride + c);
            vr[c] = v_at(v_base + jl * p.v_stride + c);
        }
        let jn = min(KEY_BLOCK, kv_end - j0);
        for (var jj = 0u; jj < jn; jj++) {
            var sc = SV(0.0);
            for (var c = 0u; c < DV; c++) {
                let kk = subgroupShuffle(kr[c], jj);
                sc.x += vdot(qv0[c], kk);
                sc.y += vdot(qv1[c], kk);
#if QUAD
                sc.z += vdot(qv2[c], kk);
                sc.w += vdot(qv3[c], kk);
#endif
            }
            // Online softmax, the QPL queries' statistics side by side.
            let mask = BV(p.causal != 0u) & (UV(j0 + jj) > qi);
            let mn = select(max(m, sc), m, mask);
            let cf = exp(m - mn);
            let pr = select(exp(sc - mn), SV(0.0), mask);
            l = l * cf + pr;
            for (var c = 0u; c < DV; c++) {
                let vv = subgroupShuffle(vr[c], jj);
                acc0[c] = fma(V(pr.x), vv, acc0[c] * cf.x);
                acc1[c] = fma(V(pr.y), vv, acc1[c] * cf.y);
#if QUAD
                acc2[c] = fma(V(pr.z), vv, acc2[c] * cf.z);
                acc3[c] = fma(V(pr.w), vv, acc3[c] * cf.w);
#endif
            }
            m = mn;
        }
    }
#endif
    finish(ii.x < p.n_q, ii.x, b, h, sbv.x, acc0, m.x, l.x);
    finish(ii.y < p.n_q, ii.y, b, h, sbv.y, acc1, m.y, l.y);
#if QUAD
    finish(ii.z < p.n_q, ii.z, b, h, sbv.z, acc2, m.z, l.z);
    finish(ii.w < p.n_q, ii.w, b, h, sbv.w, acc3, m.w, l.w);
#endif
}
