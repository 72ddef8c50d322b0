// Workgroup sum of one f32 per invocation, shared by the norm kernels; all invocations get
// the total and every invocation of the workgroup must call it. The including file declares
// `override WG` (a power of two).
// Define SUBGROUP_REDUCE where the workgroup is exactly one subgroup (WG = the device's
// subgroup size, checked by the host): a subgroupAdd, with no workgroup memory and no
// barriers — on CPU devices (llvmpipe) each barrier switches every subgroup of the workgroup
// out and back in, which made small norms cost more than their arithmetic.

#if SUBGROUP_REDUCE
fn reduce_sum(li: u32, v: f32) -> f32 {
    return subgroupAdd(v);
}
#else
var<workgroup> partial: array<f32, WG>;

fn reduce_sum(li: u32, v: f32) -> f32 {
    partial[li] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            partial[li] += partial[li + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}
#endif

// Chan et al.'s pairwise merge of partial statistics: `acc` (count, mean, M2) with a part of
// `nb` elements, mean `mean_b` and M2 = Σ (x − mean)² `m2_b`. Exact in exact arithmetic; no
// cancellation between large sums. Used where a group's statistics come in parts (bands of
// an image, splits over workgroups).
fn chan_merge(acc: vec3<f32>, nb: f32, mean_b: f32, m2_b: f32) -> vec3<f32> {
    let delta = mean_b - acc.y;
    let total = acc.x + nb;
    return vec3<f32>(total, acc.y + delta * nb / total, acc.z + m2_b + delta * delta * acc.x * nb / total);
}
