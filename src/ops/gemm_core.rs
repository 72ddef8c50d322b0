//! The GEMM cores' configuration, shared by matmul and conv2d: which loop a product runs
//! (`shaders/gemm_tile.wgsl`, `gemm_tile_vec4.wgsl` on GPUs, `gemm_subgroup.wgsl` on CPU
//! devices), its output tile and the shader defines that select it.

use crate::gpu::GemmVariant;
use crate::shaders::Define;
use crate::tensor::{Bound, DType};

/// Threads per side of the tiled core's workgroup; its output tile is `4·WG` square.
pub const WG: u32 = 16;
/// C tile of one subgroup-core workgroup (fixed in `shaders/gemm_subgroup.wgsl`).
const SG_TILE_M: usize = 16;
const SG_TILE_N: usize = 32;
/// The vectorised tiled core (`shaders/gemm_tile_vec4.wgsl`) takes 128² tiles when a product
/// has at least this many of them, else 64² tiles: a 128² tile does twice the FMAs per
/// workgroup-memory load, but a GPU needs a few workgroups per multiprocessor to hide memory
/// latency (an H100/H200 has 132), and SD's low-resolution levels (16² and 8² latents, M of
/// 512 or 128 rows at batch 2) have few 128² tiles.
pub(crate) const BIG_TILE_MIN_WORKGROUPS: usize = 128;

/// One GEMM core's specialisation: its output tile and the shader defines / overrides.
#[derive(Clone)]
pub(crate) struct Gemm {
    pub tile_m: usize,
    pub tile_n: usize,
    pub defines: Vec<Define>,
    pub overrides: Vec<(&'static str, u32)>,
}

/// Which GEMM loop a product runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Loop {
    /// Per-element loads: any shape, any alignment.
    Scalar,
    /// vec4 loads (define `VEC4`): every K block (`K` for matmul, `cin` for conv2d) and N a
    /// multiple of 4, operands 4-aligned (see [`vec4_ok`]). On the tiled core, `big` picks
    /// 128² tiles over 64² ones.
    Vec4 { big: bool },
}

impl Loop {
    /// The loop for an `m × n` product over `batch` (`vec4`: [`vec4_ok`] holds).
    pub(crate) fn for_shape(vec4: bool, m: usize, n: usize, batch: usize) -> Loop {
        if !vec4 {
            return Loop::Scalar;
        }
        let big_tiles = m.div_ceil(128) * n.div_ceil(128) * batch;
        Loop::Vec4 {
            big: big_tiles >= BIG_TILE_MIN_WORKGROUPS,
        }
    }
}

/// The core `variant` with weights of dtype `w` (shared by matmul and conv2d) running `lp`.
pub(crate) fn gemm(variant: GemmVariant, w: DType, lp: Loop) -> Gemm {
    let mut defines = Vec::new();
    if w == DType::F16 {
        defines.push(Define::Flag("W_F16"));
    }
    match (variant, lp) {
        (GemmVariant::Tiled, Loop::Scalar) => Gemm {
            tile_m: (4 * WG) as usize,
            tile_n: (4 * WG) as usize,
            defines,
            overrides: vec![("WG", WG)],
        },
        (GemmVariant::Tiled, Loop::Vec4 { big }) => {
            let rv = if big { 2 } else { 1 };
            defines.extend([Define::Flag("VEC4"), Define::Const("RV", rv)]);
            Gemm {
                tile_m: 64 * rv as usize,
                tile_n: 64 * rv as usize,
                defines,
                overrides: vec![],
            }
        }
        (GemmVariant::Subgroup, lp) => {
            defines.push(Define::Flag("SUBGROUP_GEMM"));
            if lp != Loop::Scalar {
                defines.push(Define::Flag("VEC4"));
            }
            Gemm {
                tile_m: SG_TILE_M,
                tile_n: SG_TILE_N,
                defines,
                overrides: vec![],
            }
        }
    }
}

/// The subgroup core's vectorised loop (and the narrow conv) reads its operands as 64-bit
/// words where the device allows ([`crate::Gpu::load64`]).
pub(crate) fn load64(gpu: &crate::Gpu, g: &mut Gemm) {
    let vec4 = [Define::Flag("VEC4"), Define::Flag("NARROW")]
        .iter()
        .any(|d| g.defines.contains(d));
    if vec4 && gpu.load64() {
        g.defines.push(Define::Flag("LOAD64"));
    }
}

/// Both cores, both weight dtypes, every loop (the subgroup core's vectorised loop has one
/// tile size).
pub(crate) fn gemm_variants() -> Vec<Gemm> {
    let mut v = Vec::new();
    for w in [DType::F32, DType::F16] {
        for lp in [
            Loop::Scalar,
            Loop::Vec4 { big: false },
            Loop::Vec4 { big: true },
        ] {
            v.push(gemm(GemmVariant::Tiled, w, lp));
        }
        for lp in [Loop::Scalar, Loop::Vec4 { big: false }] {
            v.push(gemm(GemmVariant::Subgroup, w, lp));
        }
    }
    v
}

/// Whether the vectorised loops may read these operands: every K block (`k_block`: K for
/// matmul, cin for conv2d) a positive multiple of 4, N a multiple of 4, and each bound operand
/// starting at a multiple of 4 elements and holding whole vec4s (so no load falls past a
/// binding's end).
pub(crate) fn vec4_ok(k_block: usize, n: usize, operands: &[(&Bound, DType)]) -> bool {
    k_block % 4 == 0
        && k_block > 0
        && n % 4 == 0
        && operands
            .iter()
            .all(|(b, dt)| b.elem_offset % 4 == 0 && b.range.size % (4 * dt.size()) == 0)
}
