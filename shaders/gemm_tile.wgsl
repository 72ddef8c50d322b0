// Register-blocked GEMM tile loop, shared by matmul.wgsl and conv2d.wgsl.
//
//   C[b, m, n] = sum_k A(b, m, k) * B(b, k, n)      (f32 accumulation)
//
// One workgroup of WG×WG threads computes one (WG·4)×(WG·4) tile of C, walking K in steps of
// WG through workgroup memory. Thread (tx, ty) holds a 4×4 register block: rows ty + WG·i,
// columns tx + WG·j, so that B loads and C stores are contiguous across neighbouring threads.
// The A tile is stored k-major so the inner loop reads 4 A and 4 B values per 16 FMAs.
//
// The including file defines the operands:
//   fn gemm_dims() -> vec4<u32>              (M, N, K, batch)
//   fn gemm_tiles() -> vec2<u32>             (tiles along N, tiles along M)
//   struct ARow; fn a_row(b: u32, m: u32) -> ARow   (per-row addressing, computed once)
//   fn load_a(r: ARow, k: u32) -> f32        (0 when k >= K or the row is out of range)
//   fn load_b(b: u32, k: u32, n: u32) -> f32 (0 when out of range)
//   fn store_c(b: u32, m: u32, n: u32, v: f32)  (called only for m < M, n < N)
//
// Dispatch: tiles_n · tiles_m · batch workgroups, any grid shape (linearised).

override WG: u32 = 16u;   // threads per side; the tile is (4·WG)² and the K step is WG
const RB: u32 = 4u;       // register block per thread, per side

var<workgroup> tile_a: array<f32, WG * WG * RB>;  // [WG (k)][WG·RB (m)]
var<workgroup> tile_b: array<f32, WG * WG * RB>;  // [WG (k)][WG·RB (n)]

@compute @workgroup_size(WG, WG, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
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
    let bm = WG * RB;
    let m0 = tm * bm;
    let n0 = tn * bm;
    let tx = lid.x;
    let ty = lid.y;
    let li = ty * WG + tx;

    // This thread loads A rows ty + WG·r (r < RB) at k offset tx of every K step.
    var rows: array<ARow, RB>;
    for (var r = 0u; r < RB; r++) {
        rows[r] = a_row(b, m0 + ty + WG * r);
    }

    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }

    for (var k0 = 0u; k0 < dims.z; k0 += WG) {
        for (var r = 0u; r < RB; r++) {
            tile_a[tx * bm + ty + WG * r] = load_a(rows[r], k0 + tx);
        }
        for (var r = 0u; r < RB; r++) {
            let e = li + WG * WG * r;
            tile_b[e] = load_b(b, k0 + e / bm, n0 + e % bm);
        }
        workgroupBarrier();
        for (var k = 0u; k < WG; k++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < RB; i++) {
                av[i] = tile_a[k * bm + ty + WG * i];
                bv[i] = tile_b[k * bm + tx + WG * i];
            }
            for (var i = 0u; i < RB; i++) {
                for (var j = 0u; j < RB; j++) {
                    acc[i * RB + j] = fma(av[i], bv[j], acc[i * RB + j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < RB; i++) {
        let m = m0 + ty + WG * i;
        if (m < dims.x) {
            for (var j = 0u; j < RB; j++) {
                let n = n0 + tx + WG * j;
                if (n < dims.y) {
                    store_c(b, m, n, acc[i * RB + j]);
                }
            }
        }
    }
}
