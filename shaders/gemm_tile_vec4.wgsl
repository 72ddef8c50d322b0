// Tiled GEMM core for GPUs, vectorised: matmul.wgsl and conv2d.wgsl include it for the tiled
// core when the host defines VEC4 (K blocks, N and every operand offset multiples of 4).
//
//   C[b, m, n] = sum_k A(b, m, k) · B(b, k, n)      (f32 accumulation)
//
// Operand hooks, the same as gemm_subgroup.wgsl's VEC4 loop: kblocks() blocks of kblock_len()
// elements along K (matmul: one block, the whole K; conv2d: one per kernel tap, cin long, so a
// tap's pixel address and padding test are computed once per block), a_block / load_a4 (four
// consecutive k of one row of A), load_b4 (four consecutive columns of one k row of B),
// store_c4 (bias already added) and bias4 (gemm_bias.wgsl).
//
// One workgroup of 16×16 threads computes a BM × BM tile of C, BM = 64·RV (RV, an integer
// define, 1 or 2: 64² or 128² tiles, chosen per shape by the host); thread (tx, ty) keeps a
// (4·RV) × (4·RV) register block, rows 4·ty + 64·r + i and columns 4·tx + 64·c + j
// (r, c < RV; i, j < 4), as RV·4·RV vec4 accumulators. Per step it reads from workgroup
// memory RV vec4 of A and RV of B per k for 16·RV² FMAs.
// K is walked BK = 16 / RV at a time, so a step's A and B tiles are 1024 floats each at either
// size: one vec4 global load of A and one of B per thread per step. A step that runs past
// its K block's end loads zeros there (blocks need not be multiples of BK); rows past M and
// columns past N load clamped valid addresses and are not stored, so the interior K loop has
// no per-element bounds checks. Workgroup memory is double-buffered: the next step's vec4s
// are loaded into registers before this step's FMAs and stored into the other buffer after
// them, one barrier per step. 16 KiB of workgroup memory, WebGPU's default limit.
// Dispatch: tiles_n · tiles_m · batch workgroups (linearised grid).

const BM: u32 = 64u * RV;     // tile side, rows and columns
const BK: u32 = 16u / RV;     // k per step
const AV: u32 = BK / 4u;      // vec4 per A row per step
const BV: u32 = BM / 4u;      // vec4 per B row (and per C row of the tile)
const HALF: u32 = 256u;       // vec4s of one buffer of a tile: BM · BK / 4
const NACC: u32 = RV * RV * 4u;

var<workgroup> tile_a: array<vec4<f32>, 512>;  // [2][BK][BM / 4]: k-major, 4 rows per vec4
var<workgroup> tile_b: array<vec4<f32>, 512>;  // [2][BK][BM / 4]: 4 columns per vec4

#include "gemm_bias.wgsl"

// What one thread loads for a step: four k of its A row, four columns of its B row.
struct Step { av: vec4<f32>, bv: vec4<f32> }

// Step s: K block s / spb, offset BK · (s % spb) in it. This thread loads A row `arow` at
// block offsets q4 .. q4 + 3 and B row krow (of the step) at columns col .. col + 3.
fn load_step(arow: ARow, b: u32, s: u32, spb: u32, len: u32, q4: u32, krow: u32, col: u32) -> Step {
    let kb = s / spb;
    let i0 = (s % spb) * BK;
    let blk = a_block(arow, kb);
    let ia = i0 + q4;
    let av = select(vec4<f32>(0.0), load_a4(blk, min(ia, len - 4u)), ia < len);
    let ib = i0 + krow;
    let bv = select(vec4<f32>(0.0), load_b4(b, kb * len + min(ib, len - 1u), col), ib < len);
    return Step(av, bv);
}

fn store_step(buf: u32, st: Step, ra: u32, q4: u32, krow: u32, cv: u32) {
    let base = buf * HALF + ra / 4u;
    let lane = ra % 4u;
    tile_a[base + q4 * BV][lane] = st.av.x;
    tile_a[base + (q4 + 1u) * BV][lane] = st.av.y;
    tile_a[base + (q4 + 2u) * BV][lane] = st.av.z;
    tile_a[base + (q4 + 3u) * BV][lane] = st.av.w;
    tile_b[buf * HALF + krow * BV + cv] = st.bv;
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let dims = gemm_dims();
    let tiles = gemm_tiles();
    let wg_index = linear_workgroup(wid, nwg);
    if (wg_index >= tiles.x * tiles.y * dims.w) {
        return;
    }
    let t = split3(wg_index, tiles.x, tiles.y);
    let b = t.z;
    let m0 = t.y * BM;
    let n0 = t.x * BM;
    let tx = li % 16u;
    let ty = li / 16u;

    // This thread's loads: A row ra of the tile at block offset q4 (four k), B row krow of
    // the step at the tile's vec4 column cv.
    let ra = li / AV;
    let q4 = 4u * (li % AV);
    let krow = li / BV;
    let cv = li % BV;
    let arow = a_row(b, min(m0 + ra, dims.x - 1u));
    let col = min(n0 + 4u * cv, dims.y - 4u);
    let len = kblock_len();
    let spb = (len + BK - 1u) / BK;
    let nsteps = kblocks() * spb;

    var acc: array<vec4<f32>, NACC>;
    var st = load_step(arow, b, 0u, spb, len, q4, krow, col);
    store_step(0u, st, ra, q4, krow, cv);
    workgroupBarrier();
    for (var s = 0u; s < nsteps; s++) {
        let cur = (s % 2u) * HALF;
        let more = s + 1u < nsteps;
        if (more) {
            st = load_step(arow, b, s + 1u, spb, len, q4, krow, col);
        }
        for (var k = 0u; k < BK; k++) {
            var av: array<vec4<f32>, RV>;
            var bv: array<vec4<f32>, RV>;
            for (var r = 0u; r < RV; r++) {
                av[r] = tile_a[cur + k * BV + ty + 16u * r];
                bv[r] = tile_b[cur + k * BV + tx + 16u * r];
            }
            for (var r = 0u; r < RV; r++) {
                for (var i = 0u; i < 4u; i++) {
                    let x4 = vec4<f32>(av[r][i]);
                    for (var c = 0u; c < RV; c++) {
                        let e = (r * 4u + i) * RV + c;
                        acc[e] = fma(x4, bv[c], acc[e]);
                    }
                }
            }
        }
        if (more) {
            store_step(1u - s % 2u, st, ra, q4, krow, cv);
        }
        workgroupBarrier();
    }

    for (var c = 0u; c < RV; c++) {
        let n = n0 + 4u * tx + 64u * c;
        if (n < dims.y) {
            let add = bias4(n);
            for (var r = 0u; r < RV; r++) {
                for (var i = 0u; i < 4u; i++) {
                    let m = m0 + 4u * ty + 64u * r + i;
                    if (m < dims.x) {
                        store_c4(b, m, n, acc[(r * 4u + i) * RV + c] + add);
                    }
                }
            }
        }
    }
}
