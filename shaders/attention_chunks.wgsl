// Shared by attention.wgsl and attention_cpu.wgsl (read attention.wgsl's header): the
// head-dim unit V they compute in (vec4<f32> with VEC4, else f32) and VS that q, k, v and o
// are stored in, the parameters and bindings, and the key chunks' state: resume reads the
// running (accumulator, max, sum) a previous chunk saved, finish saves it or writes the
// normalised output.

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
