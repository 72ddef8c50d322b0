// Subgroup GEMM core, same operand hooks as gemm_tile.wgsl (gemm_dims, gemm_tiles, ARow,
// a_row, load_a, load_b, store_c), for devices where every memory load is costly relative
// to register shuffles and workgroup memory buys nothing — CPU implementations such as
// Mesa's llvmpipe, where each lane's load is a gather (see the README's platform notes).
//
//   C[b, m, n] = sum_k A(b, m, k) · B(b, k, n)      (f32 accumulation)
//
// One workgroup is one subgroup of 8 lanes (the host checks the device's subgroup size is
// exactly 8) and computes a 16 × 32 tile of C with no workgroup memory: for each k, lane l
// loads A rows m0 + l and m0 + 8 + l and B columns n0 + 4l .. n0 + 4l + 3 (one vec4), then
// the 16 values of A are shared with subgroupBroadcast: 64 FMAs per lane for 6 loads. The
// accumulators are 16 named vec4 registers (no dynamically indexed arrays, which a CPU
// compiler would spill to memory). Rows and columns past the edge of C load clamped,
// valid addresses and are not stored; only k must stay below K.
// Dispatch: tiles_n · tiles_m · batch workgroups (linearised grid).
//
// Define VEC4 (the host checks the alignment it needs: K blocks and N multiples of 4, every
// operand offset a multiple of 4 elements) for the vectorised loop: K is walked as
// kblocks() blocks of kblock_len() elements (matmul: one block, the whole K; conv2d: one
// block per kernel tap, cin long, so the tap's pixel address and padding test are computed
// once per tap instead of per element) and every load is a vec4 — A four consecutive k of
// one row (a_block / load_a4), B four consecutive columns of one k row (load_b4).
// Measured on Mesa 25 lavapipe: 1.3× the scalar loop.

// One row of this lane's four columns n0 .. n0 + 3, inside C only. Called once per row
// with a constant accumulator index: a loop indexing the accumulators dynamically made
// them memory on llvmpipe (Mesa 22.3: the epilogue cost more than a short K loop).
#if VEC4
fn store_row(b: u32, m: u32, n0: u32, dims: vec4<u32>, v: vec4<f32>) {
    if (m < dims.x && n0 < dims.y) {
        store_c4(b, m, n0, v);
    }
}
#else
fn store_row(b: u32, m: u32, n0: u32, dims: vec4<u32>, v: vec4<f32>) {
    if (m < dims.x) {
        for (var j = 0u; j < 4u; j++) {
            if (n0 + j < dims.y) {
                store_c(b, m, n0 + j, v[j]);
            }
        }
    }
}
#endif

#if C_T
// Column n of the tile as its 16 rows, four vec4 of a row of Cᵀ (define C_T).
fn store_col(cb: u32, n: u32, m0: u32, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) {
    if (n < gemm_dims().y) {
        store_ct4(cb, n, m0, v0);
        store_ct4(cb, n, m0 + 4u, v1);
        store_ct4(cb, n, m0 + 8u, v2);
        store_ct4(cb, n, m0 + 12u, v3);
    }
}

// The tile transposed: this lane's columns n0 .. n0 + 3 are components x .. w of the 16
// row accumulators (a register rename on SIMD-per-lane CPU compilers).
fn store_tile(b: u32, m0: u32, n0: u32, dims: vec4<u32>, acc: array<vec4<f32>, 16>) {
    let cb = c_batch(b);
    store_col(cb, n0, m0,
        vec4<f32>(acc[0].x, acc[1].x, acc[2].x, acc[3].x),
        vec4<f32>(acc[4].x, acc[5].x, acc[6].x, acc[7].x),
        vec4<f32>(acc[8].x, acc[9].x, acc[10].x, acc[11].x),
        vec4<f32>(acc[12].x, acc[13].x, acc[14].x, acc[15].x));
    store_col(cb, n0 + 1u, m0,
        vec4<f32>(acc[0].y, acc[1].y, acc[2].y, acc[3].y),
        vec4<f32>(acc[4].y, acc[5].y, acc[6].y, acc[7].y),
        vec4<f32>(acc[8].y, acc[9].y, acc[10].y, acc[11].y),
        vec4<f32>(acc[12].y, acc[13].y, acc[14].y, acc[15].y));
    store_col(cb, n0 + 2u, m0,
        vec4<f32>(acc[0].z, acc[1].z, acc[2].z, acc[3].z),
        vec4<f32>(acc[4].z, acc[5].z, acc[6].z, acc[7].z),
        vec4<f32>(acc[8].z, acc[9].z, acc[10].z, acc[11].z),
        vec4<f32>(acc[12].z, acc[13].z, acc[14].z, acc[15].z));
    store_col(cb, n0 + 3u, m0,
        vec4<f32>(acc[0].w, acc[1].w, acc[2].w, acc[3].w),
        vec4<f32>(acc[4].w, acc[5].w, acc[6].w, acc[7].w),
        vec4<f32>(acc[8].w, acc[9].w, acc[10].w, acc[11].w),
        vec4<f32>(acc[12].w, acc[13].w, acc[14].w, acc[15].w));
}
#else
fn store_tile(b: u32, m0: u32, n0: u32, dims: vec4<u32>, acc: array<vec4<f32>, 16>) {
#if VEC4
    // The bias of this lane's columns, loaded once for its 16 rows.
    let add = bias4(min(n0, dims.y - 4u));
#else
    let add = vec4<f32>(0.0);   // store_c adds the bias
#endif
    store_row(b, m0 + 0u, n0, dims, acc[0] + add);
    store_row(b, m0 + 1u, n0, dims, acc[1] + add);
    store_row(b, m0 + 2u, n0, dims, acc[2] + add);
    store_row(b, m0 + 3u, n0, dims, acc[3] + add);
    store_row(b, m0 + 4u, n0, dims, acc[4] + add);
    store_row(b, m0 + 5u, n0, dims, acc[5] + add);
    store_row(b, m0 + 6u, n0, dims, acc[6] + add);
    store_row(b, m0 + 7u, n0, dims, acc[7] + add);
    store_row(b, m0 + 8u, n0, dims, acc[8] + add);
    store_row(b, m0 + 9u, n0, dims, acc[9] + add);
    store_row(b, m0 + 10u, n0, dims, acc[10] + add);
    store_row(b, m0 + 11u, n0, dims, acc[11] + add);
    store_row(b, m0 + 12u, n0, dims, acc[12] + add);
    store_row(b, m0 + 13u, n0, dims, acc[13] + add);
    store_row(b, m0 + 14u, n0, dims, acc[14] + add);
    store_row(b, m0 + 15u, n0, dims, acc[15] + add);
}
#endif

#if VEC4
#include "gemm_bias.wgsl"
#endif

// One k of the tile: rows m0 .. m0 + 7 take lane l's x0 (row m0 + l) by broadcast, rows
// m0 + 8 .. m0 + 15 its x1; each times this lane's four B columns.
fn fma_step(acc: ptr<function, array<vec4<f32>, 16>>, x0: f32, x1: f32, bv: vec4<f32>) {
    (*acc)[0] = fma(vec4<f32>(subgroupBroadcast(x0, 0u)), bv, (*acc)[0]);
    (*acc)[1] = fma(vec4<f32>(subgroupBroadcast(x0, 1u)), bv, (*acc)[1]);
    (*acc)[2] = fma(vec4<f32>(subgroupBroadcast(x0, 2u)), bv, (*acc)[2]);
    (*acc)[3] = fma(vec4<f32>(subgroupBroadcast(x0, 3u)), bv, (*acc)[3]);
    (*acc)[4] = fma(vec4<f32>(subgroupBroadcast(x0, 4u)), bv, (*acc)[4]);
    (*acc)[5] = fma(vec4<f32>(subgroupBroadcast(x0, 5u)), bv, (*acc)[5]);
    (*acc)[6] = fma(vec4<f32>(subgroupBroadcast(x0, 6u)), bv, (*acc)[6]);
    (*acc)[7] = fma(vec4<f32>(subgroupBroadcast(x0, 7u)), bv, (*acc)[7]);
    (*acc)[8] = fma(vec4<f32>(subgroupBroadcast(x1, 0u)), bv, (*acc)[8]);
    (*acc)[9] = fma(vec4<f32>(subgroupBroadcast(x1, 1u)), bv, (*acc)[9]);
    (*acc)[10] = fma(vec4<f32>(subgroupBroadcast(x1, 2u)), bv, (*acc)[10]);
    (*acc)[11] = fma(vec4<f32>(subgroupBroadcast(x1, 3u)), bv, (*acc)[11]);
    (*acc)[12] = fma(vec4<f32>(subgroupBroadcast(x1, 4u)), bv, (*acc)[12]);
    (*acc)[13] = fma(vec4<f32>(subgroupBroadcast(x1, 5u)), bv, (*acc)[13]);
    (*acc)[14] = fma(vec4<f32>(subgroupBroadcast(x1, 6u)), bv, (*acc)[14]);
    (*acc)[15] = fma(vec4<f32>(subgroupBroadcast(x1, 7u)), bv, (*acc)[15]);
}

@compute @workgroup_size(8, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let dims = gemm_dims();
    let tiles = gemm_tiles();
    let wg_index = linear_workgroup(wid, nwg);
    if (wg_index >= tiles.x * tiles.y * dims.w) {
        return;
    }
    let t = split3(wg_index, tiles.x, tiles.y);
    let tn = t.x;
    let tm = t.y;
    let b = t.z;
    let m0 = tm * 16u;
    let n0 = tn * 32u + 4u * lane;
    let last_m = dims.x - 1u;
    let row0 = a_row(b, min(m0 + lane, last_m));
    let row1 = a_row(b, min(m0 + 8u + lane, last_m));

    var acc: array<vec4<f32>, 16>;
#if VEC4
    // Columns past N (N is a multiple of 4, so a lane's four are all in or all out) load
    // the last valid ones and are not stored.
    let col = min(n0, dims.y - 4u);
    let len = kblock_len();
#if B_T
    // B transposed (B_T): this lane's four columns are four rows of Bᵀ (clamped into N),
    // each read four k at a time (as A's rows) and transposed in registers: as many loads
    // as four rows of B.
    let t0 = bt_row(b, n0);
    let t1 = bt_row(b, n0 + 1u);
    let t2 = bt_row(b, n0 + 2u);
    let t3 = bt_row(b, n0 + 3u);
    for (var i = 0u; i < len; i += 4u) {
        let a0 = load_a4(row0, i);
        let a1 = load_a4(row1, i);
        let b0 = load_bt4(t0, i);
        let b1 = load_bt4(t1, i);
        let b2 = load_bt4(t2, i);
        let b3 = load_bt4(t3, i);
        fma_step(&acc, a0.x, a1.x, vec4<f32>(b0.x, b1.x, b2.x, b3.x));
        fma_step(&acc, a0.y, a1.y, vec4<f32>(b0.y, b1.y, b2.y, b3.y));
        fma_step(&acc, a0.z, a1.z, vec4<f32>(b0.z, b1.z, b2.z, b3.z));
        fma_step(&acc, a0.w, a1.w, vec4<f32>(b0.w, b1.w, b2.w, b3.w));
    }
#else
    for (var kb = 0u; kb < kblocks(); kb++) {
        let blk0 = a_block(row0, kb);
        let blk1 = a_block(row1, kb);
        let kbase = kb * len;
        for (var i = 0u; i < len; i += 4u) {
            let a0 = load_a4(blk0, i);
            let a1 = load_a4(blk1, i);
            for (var s = 0u; s < 4u; s++) {
                let bv = load_b4(b, kbase + i + s, col);
                fma_step(&acc, a0[s], a1[s], bv);
            }
        }
    }
#endif
#else
    let last_n = dims.y - 1u;
    let c0 = min(n0, last_n);
    let c1 = min(n0 + 1u, last_n);
    let c2 = min(n0 + 2u, last_n);
    let c3 = min(n0 + 3u, last_n);
    // Four k per iteration: fewer loop iterations (llvmpipe caps them per invocation) and
    // independent loads in flight. load_a / load_b return 0 for k >= K.
    for (var k = 0u; k < dims.z; k += 4u) {
        let a0 = vec4<f32>(load_a(row0, k), load_a(row0, k + 1u), load_a(row0, k + 2u), load_a(row0, k + 3u));
        let a1 = vec4<f32>(load_a(row1, k), load_a(row1, k + 1u), load_a(row1, k + 2u), load_a(row1, k + 3u));
        for (var s = 0u; s < 4u; s++) {
            let kk = k + s;
            let bv = vec4<f32>(load_b(b, kk, c0), load_b(b, kk, c1), load_b(b, kk, c2), load_b(b, kk, c3));
            fma_step(&acc, a0[s], a1[s], bv);
        }
    }
#endif
    store_tile(b, m0, n0, dims, acc);
}
