// Workgroup sum of one f32 per invocation (tree reduction in workgroup memory), shared by
// the norm kernels. The including file declares `override WG` (a power of two). Every
// invocation of the workgroup must call it (it contains barriers); all get the total.

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
