// Flash attention for GPUs: the same operation, operands, key chunks and state as
// attention.wgsl (read its header), computed as small GEMMs by a workgroup that shares its
// queries' work instead of one thread per query with D-float private arrays.
//
//   o[b, i, h, :] = sum_j softmax_j(scale · q[b, i, h, :] · k[b, j, h, :] (+ causal mask)) · v[b, j, h, :]
//
// One workgroup of 16×16 threads owns BQ = 64 queries of one (b, h) and walks the keys in
// blocks of BKV = 32 (FlashAttention-2's loop order: the output tile stays on chip):
//   1. S = Q·Kᵀ for the block: thread (tx, ty) computes rows 4·ty .. 4·ty + 3 and keys tx,
//      tx + 16 (8 scores, a vec4 of rows per key), with Q and K streamed through workgroup
//      memory 8 head-dim floats (2 vec4) at a time;
//   2. online softmax in f32: the block's row maxima from the scores in workgroup memory
//      (each thread reads its 4 rows as vec4s), the rescale factor exp(m_old − m_new) per
//      row, P = exp(S − m_new) written back, per-thread partial row sums (summed over the
//      16 threads of a row once, at the end);
//   3. O += P·V: thread pairs (row group of 4, head-dim vec4) own the output tile in
//      registers (⌈DV / 16⌉ pairs per thread, 4 vec4 each), with V streamed through
//      workgroup memory VK keys at a time; 16 FMAs per two workgroup-memory vec4 loads.
// Workgroup memory: P (32 keys × 64 rows, 8 KiB), one streaming buffer (VK·DV ≤ 320 vec4,
// 5 KiB) and the per-row factors: 13.3 KiB, under WebGPU's default 16 KiB. Scores never
// leave the workgroup; memory stays O((N + M)·D).
//
// The host defines D (floats, a multiple of 8), DV = D / 4, VK (keys per V chunk: a power of
// two with VK·DV ≤ 320) and NO = ⌈DV / 16⌉; offsets and strides are in vec4 units.
// Dispatch: tiles_q · heads · batch workgroups, tiles_q = ⌈n_q / 64⌉.

#include "common.wgsl"

const BQ: u32 = 64u;
const BKV: u32 = 32u;
const STATE_LEN: u32 = DV + 1u;   // accumulator, then (max, sum, 0, 0)
const STREAM: u32 = 320u;
const NEG: f32 = -3.0e38;         // finite "minus infinity": exp(NEG − m) = 0, never inf − inf

alias V = vec4<f32>;
alias VS = act4;
#include "attention_io.wgsl"

// P transposed: p_s[j · 16 + g] holds rows 4g .. 4g + 3 of key j (scores, then weights; at
// the end the partial row sums, [tx · 16 + g]).
var<workgroup> p_s: array<vec4<f32>, 512>;
// Q and K chunks ([64 rows][2] then [32 keys][2] vec4), or a V chunk ([VK keys][DV]).
var<workgroup> stream: array<vec4<f32>, STREAM>;
// Per row group: this block's rescale factors, at the end the row sums.
var<workgroup> rows_s: array<vec4<f32>, 16>;

fn state_base(b: u32, i: u32, h: u32) -> u32 {
    return ((b * p.n_q + i) * p.heads + h) * STATE_LEN;
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let t = attention_tile(wid, nwg);
    if (t.x >= p.tiles_q) {
        return;
    }
    let h = t.y;
    let b = t.z;
    let q0 = t.x * BQ;
    let tx = li % 16u;
    let ty = li / 16u;
    let last_q = p.n_q - 1u;
    let q_img = p.q_off + b * p.n_q * p.q_stride + h * DV;
    let k_img = p.k_off + b * p.n_kv * p.k_stride + h * DV;
    let v_img = p.v_off + b * p.n_kv * p.v_stride + h * DV;

    // Softmax state of rows 4·ty .. 4·ty + 3 (one vec4 lane per row): the running max
    // (every thread of the row holds it) and this thread's share of the running sum.
    var m_run = vec4<f32>(NEG);
    var l_part = vec4<f32>(0.0);
    // Output pairs e = li + 256·s: row group e % 16, head-dim vec4 e / 16.
    var acc: array<vec4<f32>, NO * 4u>;
    if (p.first == 0u) {
        for (var s = 0u; s < NO; s++) {
            let e = li + 256u * s;
            let g = e % 16u;
            let c = e / 16u;
            for (var i = 0u; i < 4u; i++) {
                let row = min(q0 + 4u * g + i, last_q);
                acc[s * 4u + i] = select(vec4<f32>(0.0), state[state_base(b, row, h) + min(c, DV - 1u)], c < DV);
            }
        }
        for (var i = 0u; i < 4u; i++) {
            let ml = state[state_base(b, min(q0 + 4u * ty + i, last_q), h) + DV];
            m_run[i] = ml.x;
            l_part[i] = select(0.0, ml.y, tx == 0u);
        }
    }

    // With a causal mask no key past the tile's last query is needed.
    var kv_end = p.kv_end;
    if (p.causal != 0u) {
        kv_end = min(kv_end, min(q0 + BQ, p.n_q));
    }

    for (var j0 = p.kv_begin; j0 < kv_end; j0 += BKV) {
        // 1. Scores of rows 4·ty + i (lane i) with keys j0 + tx and j0 + tx + 16.
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        for (var dc = 0u; dc < DV; dc += 2u) {
            workgroupBarrier();
            if (li < 128u) {
                let row = min(q0 + li / 2u, last_q);
                stream[li] = vec4<f32>(q[q_img + row * p.q_stride + dc + li % 2u]) * p.scale;
            } else if (li < 192u) {
                let key = min(j0 + (li - 128u) / 2u, kv_end - 1u);
                stream[li] = vec4<f32>(k[k_img + key * p.k_stride + dc + li % 2u]);
            }
            workgroupBarrier();
            for (var u = 0u; u < 2u; u++) {
                let k0 = stream[128u + tx * 2u + u];
                let k1 = stream[128u + (tx + 16u) * 2u + u];
                for (var i = 0u; i < 4u; i++) {
                    let qv = stream[(4u * ty + i) * 2u + u];
                    s0[i] += dot(qv, k0);
                    s1[i] += dot(qv, k1);
                }
            }
        }
        let ja = j0 + tx;
        let jb = j0 + tx + 16u;
        for (var i = 0u; i < 4u; i++) {
            let row = q0 + 4u * ty + i;
            let causal = p.causal != 0u;
            s0[i] = select(s0[i], NEG, ja >= kv_end || (causal && ja > row));
            s1[i] = select(s1[i], NEG, jb >= kv_end || (causal && jb > row));
        }
        p_s[tx * 16u + ty] = s0;
        p_s[(tx + 16u) * 16u + ty] = s1;
        workgroupBarrier();

        // 2. Online softmax: the rows' new maxima over the whole block.
        var m_new = m_run;
        for (var j = 0u; j < BKV; j++) {
            m_new = max(m_new, p_s[j * 16u + ty]);
        }
        let corr = exp(m_run - m_new);
        m_run = m_new;
        workgroupBarrier();
        let w0 = select(exp(s0 - m_new), vec4<f32>(0.0), s0 <= vec4<f32>(NEG));
        let w1 = select(exp(s1 - m_new), vec4<f32>(0.0), s1 <= vec4<f32>(NEG));
        l_part = l_part * corr + w0 + w1;
        p_s[tx * 16u + ty] = w0;
        p_s[(tx + 16u) * 16u + ty] = w1;
        if (tx == 0u) {
            rows_s[ty] = corr;
        }
        workgroupBarrier();

        // 3. O = O · corr + P · V, V in chunks of VK keys.
        for (var s = 0u; s < NO; s++) {
            let cf = rows_s[(li + 256u * s) % 16u];
            for (var i = 0u; i < 4u; i++) {
                acc[s * 4u + i] *= cf[i];
            }
        }
        for (var jv = 0u; jv < BKV; jv += VK) {
            workgroupBarrier();
            for (var e = li; e < VK * DV; e += 256u) {
                let key = min(j0 + jv + e / DV, kv_end - 1u);
                stream[e] = vec4<f32>(v[v_img + key * p.v_stride + e % DV]);
            }
            workgroupBarrier();
            for (var jj = 0u; jj < VK; jj++) {
                for (var s = 0u; s < NO; s++) {
                    let e = li + 256u * s;
                    let c = min(e / 16u, DV - 1u);
                    let w = p_s[(jv + jj) * 16u + e % 16u];
                    let vv = stream[jj * DV + c];
                    for (var i = 0u; i < 4u; i++) {
                        acc[s * 4u + i] = fma(vec4<f32>(w[i]), vv, acc[s * 4u + i]);
                    }
                }
            }
        }
    }

    // The rows' sums: the 16 partial sums of each row, added by the row's tx = 0 thread.
    workgroupBarrier();
    p_s[tx * 16u + ty] = l_part;
    workgroupBarrier();
    if (tx == 0u) {
        var l = vec4<f32>(0.0);
        for (var x = 0u; x < 16u; x++) {
            l += p_s[x * 16u + ty];
        }
        rows_s[ty] = l;
        if (p.last == 0u) {
            for (var i = 0u; i < 4u; i++) {
                let row = q0 + 4u * ty + i;
                if (row < p.n_q) {
                    state[state_base(b, row, h) + DV] = vec4<f32>(m_run[i], l[i], 0.0, 0.0);
                }
            }
        }
    }
    workgroupBarrier();
    for (var s = 0u; s < NO; s++) {
        let e = li + 256u * s;
        let g = e % 16u;
        let c = e / 16u;
        let l = rows_s[g];
        for (var i = 0u; i < 4u; i++) {
            let row = q0 + 4u * g + i;
            if (c < DV && row < p.n_q) {
                if (p.last != 0u) {
                    o[p.o_off + (b * p.n_q + row) * p.o_stride + h * DV + c] = act4(acc[s * 4u + i] / l[i]);
                } else {
                    state[state_base(b, row, h) + c] = acc[s * 4u + i];
                }
            }
        }
    }
}
