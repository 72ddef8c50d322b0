//! Writing images: RGB `[h, w, 3]` floats in [0, 1] → 8-bit PNG, with optional text chunks
//! (the CLI records the generation parameters in one, as other tools do).

use crate::error::{Error, Result};
use std::path::Path;

/// Writes `rgb` (`[h, w, 3]`, values clamped to [0, 1], rounded as diffusers' `numpy_to_pil`)
/// as an 8-bit RGB PNG with the given `(keyword, text)` chunks.
pub fn write_png(
    path: &Path,
    rgb: &[f32],
    w: usize,
    h: usize,
    text: &[(&str, &str)],
) -> Result<()> {
    if rgb.len() != w * h * 3 {
        return Err(Error::unsupported(
            "write_png",
            format!("{} values for a {w}x{h} RGB image", rgb.len()),
        ));
    }
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let enc_err = |e: png::EncodingError| io(std::io::Error::other(e));
    let file = std::fs::File::create(path).map_err(io)?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    for (k, t) in text {
        enc.add_text_chunk((*k).into(), (*t).into())
            .map_err(enc_err)?;
    }
    let mut writer = enc.write_header().map_err(enc_err)?;
    let bytes: Vec<u8> = rgb
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    writer.write_image_data(&bytes).map_err(enc_err)?;
    writer.finish().map_err(enc_err)
}
