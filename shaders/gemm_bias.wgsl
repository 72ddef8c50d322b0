// Bias of columns n .. n + 3 (zero without one), for the vectorised GEMM cores' epilogues
// (gemm_subgroup.wgsl and gemm_tile_vec4.wgsl, define VEC4); needs the includer's
// p.has_bias, p.bias_off and bias_at.
fn bias4(n: u32) -> vec4<f32> {
    if (p.has_bias == 0u) {
        return vec4<f32>(0.0);
    }
    let i = p.bias_off + n;
    return vec4<f32>(bias_at(i), bias_at(i + 1u), bias_at(i + 2u), bias_at(i + 3u));
}
