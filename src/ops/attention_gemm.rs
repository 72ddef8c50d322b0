//! Attention on CPU devices at wide heads (wider than 80: SD 1.5's 160, the VAE's single
//! 512-wide head) as two GEMMs per group of images or chunk of queries, through the matmul
//! kernel's subgroup core (`shaders/attention_gemm.wgsl` packs V and takes the softmax):
//!
//! ```text
//! V       packed per (image, head), keys zero-padded to nkp, a multiple of 4 (f32)
//! for each group of g images (all their queries), or each image's chunks of qc queries:
//!     Sᵀ = K·Qᵀ                 stored as S [g·heads, qc, nkp] (matmul with K and Q read in
//!                               place, images × heads as its batch)
//!     P = softmax(scale · S)    in place, over the n_kv real keys (f32, as torch.softmax)
//!     O = P·V                   written into the output's head columns (matmul)
//! ```
//!
//! On llvmpipe a storage load whose address differs between lanes runs lane by lane, so a
//! kernel's speed is set by how many FLOPs each loaded value serves. The flash kernels keep
//! every key and value for a handful of queries (`attention_cpu_wide.wgsl`: four), the GEMM
//! core for 16 rows × 32 columns: measured on Mesa 25 lavapipe (`cargo bench --bench
//! attention`), the VAE's 1024-token 512-wide attention went from 4.9 to the matmul rows'
//! speed (see the README). The scores are computed transposed so that the keys are the
//! product's rows: 77 keys fill five 16-row tiles (80), where as columns they took three
//! 32-column tiles (96), and neither K nor Q is copied (the core reads Bᵀ's rows and writes
//! Cᵀ, `ops::strided_product::Layout`). The scores of one product are `g · heads · qc · nkp`
//! floats, held under [`S_BUDGET`] (never N×M: 8 MiB whatever the image size), the packed V
//! `b·nkp·c`.
//! Only f32 activations without a causal mask take this path (the flash kernels keep f16
//! activations, CLIP's causal mask and devices whose loop cap a long key loop would pass).

use super::strided_product::{Layout, Strided, strided_product};
use super::{push, u32_of};
use crate::error::Result;
use crate::gpu::{Access, KernelKey, Recorder};
use crate::shaders::Define;
use crate::tensor::{DType, Tensor};

/// Mirrors `Params` in `shaders/attention_gemm.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    heads: u32,
    n_kv: u32,
    nkp: u32,
    d: u32,
    v_off: u32,
    v_stride: u32,
    qc: u32,
    rows: u32,
    scale: f32,
    _pad: [u32; 2],
}

/// Bytes of one product's scores (a group of images, or a chunk of one image's queries).
pub(crate) const S_BUDGET: usize = 8 << 20;

/// The packing kernel (`PACK`) or the softmax, with 64-bit components where `load64`.
fn kernel(pack: bool, load64: bool) -> KernelKey {
    let mut defines = if pack {
        vec![Define::Flag("PACK")]
    } else {
        vec![]
    };
    if load64 {
        defines.push(Define::Flag("LOAD64"));
    }
    let bindings = if pack {
        vec![Access::Read, Access::ReadWrite]
    } else {
        vec![Access::ReadWrite]
    };
    KernelKey {
        shader: "attention_gemm.wgsl",
        entry: "main",
        defines,
        overrides: vec![],
        bindings,
        params_size: std::mem::size_of::<Params>() as u64,
    }
}

pub(crate) fn kernel_keys() -> Vec<KernelKey> {
    vec![
        kernel(true, false),
        kernel(true, true),
        kernel(false, false),
        kernel(false, true),
    ]
}

/// Whether heads `d` wide are faster as GEMMs than in the flash kernels on CPU devices:
/// wider than 80 (SD 1.5's 160, the VAE's 512). Measured on Mesa 25 lavapipe, the two paths
/// alternating in one process (12 rounds, median ratio of the flash kernel's GFLOP/s to the
/// GEMMs', batch 2 unless said), since the flash kernel takes its keys in spans
/// (`attention_cpu.wgsl`'s SPANS): 80 wide 1.13× (256 × 256 keys), 1.13–1.14× (1024 × 1024),
/// 1.16× (256 × 77), 1.20× (1024 × 77); 64 wide 1.36–1.37× (4096², 5 heads), 1.47× (1024²,
/// 10 heads), 1.24× (256², 20 heads). (Before the spans the GEMMs had won from 80 wide, and
/// at 64 from 256 keys, by 1.02–1.21×; 40-wide heads were 0.54–0.59× as GEMMs: a 40-wide
/// P·V fills 64 columns of two 32-column tiles and its S product's K loop is 10 steps long.)
fn gemm_heads(d: usize) -> bool {
    d > 80
}

/// Whether a CPU device (subgroup GEMM core) runs this attention (`b` images, `c` channels
/// of heads `d` wide) as GEMMs: f32 activations, vec4 operands, heads as [`gemm_heads`]
/// says, at least [`MIN_QUERIES`] queries, no causal mask, a packed V that fits one storage
/// binding, and a key loop (the P·V product's K of `nkp`, ~1.25 iterations per key) inside
/// the device's loop cap.
#[allow(clippy::too_many_arguments)]
pub(crate) fn applies(
    gpu: &crate::Gpu,
    b: usize,
    c: usize,
    d: usize,
    n_q: usize,
    n_kv: usize,
    act: DType,
    vec4: bool,
    causal: bool,
) -> bool {
    let nkp = n_kv.next_multiple_of(4);
    let packed = (b * c * nkp * 4) as u64;
    act == DType::F32
        && vec4
        && !causal
        && gemm_heads(d)
        && n_q >= MIN_QUERIES
        && packed <= gpu.limits().max_storage_buffer_binding_size
        && gpu
            .loop_iteration_limit()
            .is_none_or(|l| 2 * nkp < l as usize)
}

/// Fewest queries for which the GEMMs (3 dispatches per group of images or query chunk,
/// plus the packing) beat the one-dispatch wide-head flash kernel: measured on Mesa 25
/// lavapipe (`ops::attention` timed alone, the two paths alternating in one process, four
/// times each, one image per product then), 2 images × 8 heads × 160 with 77 keys: 16
/// queries 2.1–2.6 ms against 1.7–2.0, 32: 3.2–3.3 against 3.4–3.9, 64: 5.3–5.8 against
/// 4.4–6.9 (three of four); 1 × 512 at 64 queries and keys 0.8 against 1.7 ms, at 16
/// 0.17–0.20 against 0.16. With the scores as Sᵀ (12 rounds alternating, medians of the
/// GEMMs' GFLOP/s over the flash kernel's): 32 queries × 77 keys 1.34×, 16 × 77 0.86×,
/// 16 × 16 0.72×, 1 × 512 at 16 × 16 0.62×.
pub(crate) const MIN_QUERIES: usize = 32;

/// How the scores are materialised: `images` images per product (all their queries) when
/// one image's scores fit, else one image in chunks of `queries` queries.
#[derive(Debug, PartialEq)]
struct Plan {
    images: usize,
    queries: usize,
}

/// As many images, or queries of one image, per product as keep the scores within
/// [`S_BUDGET`] and one storage binding; a query chunk is a multiple of the GEMM core's
/// 16-row tile (at least one tile).
fn plan(b: usize, n_q: usize, heads: usize, nkp: usize, max_binding: u64) -> Plan {
    let bytes = (S_BUDGET as u64).min(max_binding) as usize;
    let per_query = heads * nkp * 4;
    let per_image = per_query * n_q;
    if per_image <= bytes {
        return Plan {
            images: (bytes / per_image).clamp(1, b.max(1)),
            queries: n_q,
        };
    }
    let qc = (bytes / per_query / 16 * 16).max(16);
    Plan {
        images: 1,
        queries: qc.min(n_q.next_multiple_of(16)),
    }
}

/// One operand of the attention: the tensor `[b, seq, row]` and where its heads start in a
/// row (elements).
pub(crate) struct Heads<'a> {
    pub t: &'a Tensor,
    pub col: usize,
}

impl Heads<'_> {
    fn row(&self) -> usize {
        self.t.shape()[2]
    }
}

/// Writes attention over `heads` heads of `d` into `out` (`[b, n_q, heads·d]`, f32); the
/// caller has validated the shapes and that [`applies`] holds.
pub(crate) fn attention_gemm(
    rec: &mut Recorder<'_>,
    q: &Heads<'_>,
    k: &Heads<'_>,
    v: &Heads<'_>,
    out: &Tensor,
    heads: usize,
    scale: f32,
) -> Result<()> {
    const OP: &str = "attention";
    let (b, n_q) = (q.t.shape()[0], q.t.shape()[1]);
    let n_kv = k.t.shape()[1];
    let c = out.shape()[2];
    let d = c / heads;
    let nkp = n_kv.next_multiple_of(4);
    let gpu = rec.gpu();
    // V per (image, head), zero-padded keys (K is read in place).
    let vp = Tensor::empty_in(rec, &[b * heads, nkp, d], DType::F32, "attention.vp")?;
    let vb = v.t.bind(gpu, OP)?;
    let vpb = vp.bind(gpu, OP)?;
    let u = |what, x: usize| u32_of(OP, what, x);
    let base = Params {
        batch: u("batch", b)?,
        heads: u("heads", heads)?,
        n_kv: u("keys", n_kv)?,
        nkp: u("padded keys", nkp)?,
        d: u("head dim", d)?,
        scale,
        ..Default::default()
    };
    let pack = Params {
        v_off: vb.elem_offset + u("column offset", v.col)?,
        v_stride: u("row length", v.row())?,
        ..base
    };
    // The packing kernel indexes the packed elements with one u32, a workgroup per 4 keys.
    let total = b * heads * nkp * d;
    u("packed elements", total)?;
    let grid = gpu.grid(OP, (b * heads * nkp / 4) as u64)?;
    push(
        rec,
        kernel(true, gpu.load64()),
        &pack,
        vec![vb.range, vpb.range],
        grid,
    )?;
    rec.set_last_cost(crate::gpu::Cost {
        flop: 0.0,
        bytes: 8.0 * total as f64,
        shape: format!("pack {b}x{heads} heads, {n_kv} keys, d {d}"),
    });

    let max_binding = gpu.limits().max_storage_buffer_binding_size;
    let plan = plan(b, n_q, heads, nkp, max_binding);
    let (g, qc) = (plan.images, plan.queries);
    let s = Tensor::empty_in(rec, &[g * heads, qc, nkp], DType::F32, "attention.scores")?;
    let sb = s.bind(gpu, OP)?;
    // The scores as Cᵀ of Sᵀ = K·Qᵀ and as A of O = P·V: [g·heads, qc, nkp].
    let scores = Strided {
        t: &s,
        off: 0,
        ld: nkp,
        bstride: qc * nkp,
        ostride: heads * qc * nkp,
    };
    for bi in (0..b).step_by(g) {
        let gi = g.min(b - bi);
        for q0 in (0..n_q).step_by(qc) {
            let rows = qc.min(n_q - q0);
            // S[i, h] = Q[bi + i, q0.., h] · Kᵀ[bi + i, h], computed as Sᵀ = K·Qᵀ with both
            // read in place: gi × heads products [n_kv, d] · [d, rows] stored transposed.
            strided_product(
                rec,
                &Strided {
                    t: k.t,
                    off: bi * n_kv * k.row() + k.col,
                    ld: k.row(),
                    bstride: d,
                    ostride: n_kv * k.row(),
                },
                &Strided {
                    t: q.t,
                    off: (bi * n_q + q0) * q.row() + q.col,
                    ld: q.row(),
                    bstride: d,
                    ostride: n_q * q.row(),
                },
                &scores,
                Layout::Transposed,
                n_kv,
                rows,
                d,
                gi * heads,
                heads,
            )?;
            let params = Params {
                heads: u("heads", gi * heads)?,
                qc: u("chunk", qc)?,
                rows: u("rows", rows)?,
                ..base
            };
            push(
                rec,
                kernel(false, gpu.load64()),
                &params,
                vec![sb.range.clone()],
                gpu.grid(OP, (gi * heads * qc).div_ceil(8) as u64)?,
            )?;
            rec.set_last_cost(crate::gpu::Cost {
                flop: 0.0,
                bytes: 12.0 * (gi * heads * rows * nkp) as f64,
                shape: format!("softmax {}x[{rows}x{n_kv}]", gi * heads),
            });
            // O[bi + i, q0.., h] = P[i, h] · V[bi + i, h]: [rows, nkp] · [nkp, d], into the
            // head's columns.
            strided_product(
                rec,
                &scores,
                &Strided {
                    t: &vp,
                    off: bi * heads * nkp * d,
                    ld: d,
                    bstride: nkp * d,
                    ostride: heads * nkp * d,
                },
                &Strided {
                    t: out,
                    off: (bi * n_q + q0) * c,
                    ld: c,
                    bstride: d,
                    ostride: n_q * c,
                },
                Layout::Plain,
                rows,
                d,
                nkp,
                gi * heads,
                heads,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_groups_images_whose_scores_fit_else_chunks_queries() {
        let big = 128 << 20;
        // SD's 8×8 and 16×16 latents, batch 2 with guidance: both images in one product.
        assert_eq!(
            plan(4, 64, 8, 80, big),
            Plan {
                images: 4,
                queries: 64
            }
        );
        assert_eq!(
            plan(2, 256, 8, 80, big),
            Plan {
                images: 2,
                queries: 256
            }
        );
        // 480 KB per image under a 1 MiB binding: two images per product.
        assert_eq!(
            plan(3, 200, 2, 300, 1 << 20),
            Plan {
                images: 2,
                queries: 200
            }
        );
        // The VAE's 64² latents (4096 tokens, 64 MiB of scores): 512-query chunks.
        assert_eq!(
            plan(1, 4096, 1, 4096, big),
            Plan {
                images: 1,
                queries: 512
            }
        );
        // A chunk is at least one 16-row tile, and no longer than the queries rounded up.
        assert_eq!(
            plan(1, 40, 1, 1 << 20, big),
            Plan {
                images: 1,
                queries: 16
            }
        );
        assert_eq!(
            plan(1, 600, 1, 1000, 1 << 20),
            Plan {
                images: 1,
                queries: 256
            }
        );
    }
}
