//! Tiled VAE (diffusers' `AutoencoderKL.enable_tiling`): the decoder (or encoder) runs on
//! overlapping tiles, so its activations are a tile's whatever the image size, and the tiles
//! are blended where they overlap.
//!
//! diffusers' semantics, reproduced exactly: with S the pixel tile (`tile_sample_min_size`,
//! the VAE config's `sample_size` or `--vae-tile-size`) and L = S / f its latent size,
//! - decode (when the latents exceed L on a side): latent tiles of L at a stride of ⌊0.75·L⌋,
//!   each decoded; blend extent ⌊0.25·S⌋ px, each tile kept to S − extent px;
//! - encode (when the image exceeds S on a side): pixel tiles of S at a stride of ⌊0.75·S⌋,
//!   each encoded to the posterior's moments; blend extent ⌊0.25·L⌋, kept to L − extent;
//! - tiles are visited row by row; each is blended in place, first with the tile above, then
//!   with the tile to its left — both already blended — linearly over the extent (`blend_v`,
//!   `blend_h`, in f32 as torch computes them), then cropped, and the crops are concatenated.
//!
//! The tiles' inputs are cut and their outputs blended on the host; each tile runs on the
//! device on its own. S must be a multiple of 4·f: then the kept parts tile the output
//! exactly (diffusers' arithmetic gives an image of another size otherwise).

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};

/// One tiled pass: input tiles of `tile` at `stride` (input units), outputs `scale_num /
/// scale_den` times the input's size, blended over `extent` and kept to `keep` (output
/// units).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileGeometry {
    pub tile: usize,
    pub stride: usize,
    pub extent: usize,
    pub keep: usize,
    pub scale_num: usize,
    pub scale_den: usize,
}

impl TileGeometry {
    /// The decode of latents in tiles of `tile_px` pixels for a VAE of factor `f`.
    pub fn decode(tile_px: usize, f: usize) -> Result<Self> {
        Self::new(tile_px, f, true)
    }

    /// The encode of images in tiles of `tile_px` pixels for a VAE of factor `f`.
    pub fn encode(tile_px: usize, f: usize) -> Result<Self> {
        Self::new(tile_px, f, false)
    }

    /// Input tiles of S px (encode) or L = S/f latents (decode) at three quarters of a tile;
    /// outputs blended over a quarter of their tile and kept to the rest.
    fn new(tile_px: usize, f: usize, decode: bool) -> Result<Self> {
        check_tile(tile_px, f)?;
        let (s, l) = (tile_px, tile_px / f);
        let (tile, out) = if decode { (l, s) } else { (s, l) };
        Ok(Self {
            tile,
            stride: tile * 3 / 4,
            extent: out / 4,
            keep: out - out / 4,
            scale_num: if decode { f } else { 1 },
            scale_den: if decode { 1 } else { f },
        })
    }
}

fn check_tile(tile_px: usize, f: usize) -> Result<()> {
    if tile_px == 0 || tile_px % (4 * f) != 0 || tile_px > 1 << 14 {
        return Err(Error::request(
            "vae_tile_size",
            format!(
                "is {tile_px} px; VAE tiles must be a multiple of {} px (4 × the VAE's factor \
                 {f}) up to 16384",
                4 * f
            ),
        ));
    }
    Ok(())
}

/// A tile's output on the host, NHWC.
struct Tile {
    h: usize,
    w: usize,
    data: Vec<f32>,
}

/// `b`'s first rows (`vertical`) or columns blended with `a`'s last, in place on `b`
/// (diffusers' `blend_v` / `blend_h`: `a·(1 − k/e) + b·(k/e)` in f32, e the extent clipped to
/// both tiles).
fn blend(a: &Tile, b: &mut Tile, [n, c]: [usize; 2], extent: usize, vertical: bool) {
    let (la, lb) = if vertical { (a.h, b.h) } else { (a.w, b.w) };
    let e = extent.min(la).min(lb);
    // The other axis: both tiles share it (the same column, or the same row).
    let across = if vertical { b.w.min(a.w) } else { b.h.min(a.h) };
    for k in 0..e {
        let (wa, wb) = (
            (1.0 - k as f64 / e as f64) as f32,
            (k as f64 / e as f64) as f32,
        );
        let ka = la - e + k;
        for img in 0..n {
            for o in 0..across {
                let (ia, ib) = if vertical {
                    (((img * a.h + ka) * a.w + o), ((img * b.h + k) * b.w + o))
                } else {
                    (((img * a.h + o) * a.w + ka), ((img * b.h + o) * b.w + k))
                };
                for ch in 0..c {
                    b.data[ib * c + ch] = a.data[ia * c + ch] * wa + b.data[ib * c + ch] * wb;
                }
            }
        }
    }
}

/// Runs `f` over the tiles of `input` (host NHWC `[n, h, w, c]`) and returns the blended
/// result, NHWC `[n, H, W, c_out]`, with its shape. `f` maps a device tile `[n, th, tw, c]`
/// to `[n, th·num/den, tw·num/den, c_out]`.
pub fn run_tiled(
    gpu: &Gpu,
    input: &[f32],
    [n, h, w, c]: [usize; 4],
    g: &TileGeometry,
    mut f: impl FnMut(&Tensor) -> Result<Tensor>,
) -> Result<(Vec<f32>, [usize; 4])> {
    let starts = |len: usize| (0..len).step_by(g.stride.max(1)).collect::<Vec<_>>();
    let (ys, xs) = (starts(h), starts(w));
    let out_len = |len: usize| len * g.scale_num / g.scale_den;
    let mut above: Vec<Tile> = Vec::new();
    let mut out_rows: Vec<(usize, Vec<f32>)> = Vec::new(); // (height, NHWC row band)
    let mut c_out = 0;
    let mut out_w = 0;
    for &y0 in &ys {
        let th = g.tile.min(h - y0);
        let mut row: Vec<Tile> = Vec::with_capacity(xs.len());
        for (j, &x0) in xs.iter().enumerate() {
            let tw = g.tile.min(w - x0);
            let mut cut = Vec::with_capacity(n * th * tw * c);
            for img in 0..n {
                for y in y0..y0 + th {
                    let s = ((img * h + y) * w + x0) * c;
                    cut.extend_from_slice(&input[s..s + tw * c]);
                }
            }
            let t = Tensor::from_f32(gpu, &cut, &[n, th, tw, c], DType::F32, "vae tile")?;
            let o = f(&t)?;
            let s = o.shape().to_vec();
            if s.len() != 4 || s[0] != n || s[1] != out_len(th) || s[2] != out_len(tw) {
                return Err(Error::shape(
                    "tiled vae",
                    format!("a [{n}, {th}, {tw}, {c}] tile gave {s:?}"),
                ));
            }
            c_out = s[3];
            let mut tile = Tile {
                h: s[1],
                w: s[2],
                data: o.to_vec(gpu)?,
            };
            drop((o, t));
            gpu.trim_pool();
            if let Some(a) = above.get(j) {
                blend(a, &mut tile, [n, c_out], g.extent, true);
            }
            if let Some(l) = row.last() {
                blend(l, &mut tile, [n, c_out], g.extent, false);
            }
            row.push(tile);
        }
        // The row's kept parts, side by side.
        let kh = row[0].h.min(g.keep);
        let widths: Vec<usize> = row.iter().map(|t| t.w.min(g.keep)).collect();
        out_w = widths.iter().sum();
        let mut band = Vec::with_capacity(n * kh * out_w * c_out);
        for img in 0..n {
            for y in 0..kh {
                for (t, &kw) in row.iter().zip(&widths) {
                    let s = ((img * t.h + y) * t.w) * c_out;
                    band.extend_from_slice(&t.data[s..s + kw * c_out]);
                }
            }
        }
        out_rows.push((kh, band));
        above = row;
    }
    let out_h: usize = out_rows.iter().map(|(kh, _)| kh).sum();
    let mut out = Vec::with_capacity(n * out_h * out_w * c_out);
    for img in 0..n {
        for (kh, band) in &out_rows {
            let per = kh * out_w * c_out;
            out.extend_from_slice(&band[img * per..(img + 1) * per]);
        }
    }
    Ok((out, [n, out_h, out_w, c_out]))
}

impl super::Pipeline {
    /// The tile of the request's tiled VAE in pixels.
    pub fn vae_tile_px(&self, req: &super::Request) -> usize {
        req.vae_tile_size.unwrap_or(self.vae.config.sample_size)
    }

    /// The geometry of the request's tiled decode (`decode`) or encode, when it tiles
    /// ([`super::VaeTiling::On`]; `Auto` has been resolved by then).
    pub(super) fn vae_tiles(
        &self,
        req: &super::Request,
        decode: bool,
    ) -> Result<Option<TileGeometry>> {
        if req.vae_tiling != super::VaeTiling::On {
            return Ok(None);
        }
        let (px, f) = (self.vae_tile_px(req), self.vae_scale_factor());
        Ok(Some(if decode {
            TileGeometry::decode(px, f)?
        } else {
            TileGeometry::encode(px, f)?
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_is_diffusers_and_odd_tiles_are_refused() {
        // SD's VAE at its 512 px sample size: 64-latent tiles at a stride of 48, 128 px blended,
        // 384 kept (the stride in pixels).
        let d = TileGeometry::decode(512, 8).unwrap();
        assert_eq!((d.tile, d.stride, d.extent, d.keep), (64, 48, 128, 384));
        let e = TileGeometry::encode(512, 8).unwrap();
        assert_eq!((e.tile, e.stride, e.extent, e.keep), (512, 384, 16, 48));
        for bad in [0, 200, 100] {
            let err = TileGeometry::decode(bad, 8).unwrap_err().to_string();
            assert!(
                err.contains("vae_tile_size") && err.contains("32 px"),
                "{err}"
            );
        }
    }
}
