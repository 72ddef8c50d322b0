//! Pillow's `Image.resize` for 8-bit images, to the bit: diffusers' image processor resizes
//! every PIL input to a multiple of the VAE factor with it (`VaeImageProcessor.resize`:
//! Lanczos for image-to-image and inpainting, bicubic for the 4× upscaler), so the engine
//! does the same to feed the networks the same pixels.
//!
//! The algorithm of Pillow's `libImaging/Resample.c` (separable convolution; the filter's
//! support widened by the scale when shrinking; per-output-pixel weights normalised to sum 1,
//! then turned into 22-bit fixed point rounded away from zero; a horizontal pass, then a
//! vertical pass, each accumulating `int` sums started at half a unit and clipped to 0..=255).

/// Pillow's resampling filters that diffusers uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `Image.BICUBIC` (Keys' cubic, a = −0.5, support 2).
    Bicubic,
    /// `Image.LANCZOS` (sinc windowed by sinc(x/3), support 3).
    Lanczos,
}

/// Fixed-point bits of the 8-bit passes (Pillow's `PRECISION_BITS`: 32 − 8 − 2).
const PRECISION_BITS: u32 = 22;
/// Each sum starts at half a unit (rounding).
const HALF: i32 = 1 << (PRECISION_BITS - 1);

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// One axis's taps: for each output position, the first input index and its fixed-point
/// weights (Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`).
fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncation of a value ≥ −0.5 + …, clamped like Pillow's.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| filter.weight((x as f64 - center + 0.5) / filterscale))
                .collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&v| {
                    let v = if total != 0.0 { v / total } else { v };
                    let s = v * f64::from(1u32 << PRECISION_BITS);
                    (if v < 0.0 { s - 0.5 } else { s + 0.5 }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes interleaved 8-bit pixels `[h, w, channels]` to `[nh, nw, channels]` as Pillow
/// 13's `Image.resize((nw, nh), filter)` does for an "L" or "RGB" image (the same size: a
/// copy). Sizes must be non-zero.
pub fn resize_u8(
    src: &[u8],
    (w, h): (usize, usize),
    channels: usize,
    (nw, nh): (usize, usize),
    filter: Filter,
) -> Vec<u8> {
    debug_assert_eq!(src.len(), w * h * channels);
    // Pillow 13 (python-pillow/Pillow#9549) runs the vertical pass first when the height
    // shrinks by more than twice as many pixels as the width does; before, and otherwise,
    // horizontal first. The order changes the 8-bit rounding between the passes.
    let vertical_first = nh < h && (h - nh) as i64 > 2 * (w as i64 - nw as i64);
    let horizontal_needed = nw != w;
    let vertical_needed = nh != h;
    match (vertical_first, horizontal_needed, vertical_needed) {
        (_, false, false) => src.to_vec(),
        (_, true, false) => horizontal(src, (w, h), channels, nw, filter),
        (_, false, true) => vertical(src, (w, h), channels, nh, filter),
        (false, true, true) => {
            let t = horizontal(src, (w, h), channels, nw, filter);
            vertical(&t, (nw, h), channels, nh, filter)
        }
        (true, true, true) => {
            let t = vertical(src, (w, h), channels, nh, filter);
            horizontal(&t, (w, nh), channels, nw, filter)
        }
    }
}

/// Pillow's `ImagingResampleHorizontal_8bpc`: every row to `nw` pixels.
fn horizontal(src: &[u8], (w, h): (usize, usize), c: usize, nw: usize, filter: Filter) -> Vec<u8> {
    let taps = coefficients(w, nw, filter);
    let mut out = vec![0u8; h * nw * c];
    for y in 0..h {
        for (xx, (xmin, k)) in taps.iter().enumerate() {
            for ch in 0..c {
                let mut s = HALF;
                for (i, &kv) in k.iter().enumerate() {
                    s += i32::from(src[(y * w + xmin + i) * c + ch]) * kv;
                }
                out[(y * nw + xx) * c + ch] = clip8(s);
            }
        }
    }
    out
}

/// Pillow's `ImagingResampleVertical_8bpc`: every column to `nh` pixels.
fn vertical(src: &[u8], (w, h): (usize, usize), c: usize, nh: usize, filter: Filter) -> Vec<u8> {
    let taps = coefficients(h, nh, filter);
    let row = w * c;
    let mut out = vec![0u8; nh * row];
    for (yy, (ymin, k)) in taps.iter().enumerate() {
        for x in 0..row {
            let mut s = HALF;
            for (i, &kv) in k.iter().enumerate() {
                s += i32::from(src[(ymin + i) * row + x]) * kv;
            }
            out[yy * row + x] = clip8(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_a_copy_and_flat_images_stay_flat() {
        let src: Vec<u8> = (0..5 * 3 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_u8(&src, (5, 3), 3, (5, 3), Filter::Lanczos), src);
        for f in [Filter::Bicubic, Filter::Lanczos] {
            let flat = vec![200u8; 13 * 7];
            let out = resize_u8(&flat, (13, 7), 1, (4, 9), f);
            assert!(out.iter().all(|&v| v == 200), "{f:?}: {out:?}");
        }
    }
}
