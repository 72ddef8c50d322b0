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

/// Reads a PNG (8- or 16-bit; gray, gray+alpha, RGB or RGBA — alpha dropped) as RGB
/// `[h, w, 3]` in [0, 1]. Returns `(width, height, rgb)`. Other files are an error naming them.
pub fn read_png_rgb(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let bad = |e: png::DecodingError| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a readable PNG image: {e}"),
        ))
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(bad)?;
    let size = reader.output_buffer_size().ok_or_else(|| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "PNG too large",
        ))
    })?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf).map_err(bad)?;
    let (w, h) = (frame.width as usize, frame.height as usize);
    let channels = frame.color_type.samples();
    let sixteen = frame.bit_depth == png::BitDepth::Sixteen;
    let sample = |i: usize| -> f32 {
        if sixteen {
            f32::from(u16::from_be_bytes([buf[2 * i], buf[2 * i + 1]])) / 65535.0
        } else {
            f32::from(buf[i]) / 255.0
        }
    };
    let mut rgb = Vec::with_capacity(w * h * 3);
    for p in 0..w * h {
        let base = p * channels;
        match channels {
            1 | 2 => rgb.extend([sample(base); 3]),
            _ => rgb.extend([sample(base), sample(base + 1), sample(base + 2)]),
        }
    }
    Ok((w, h, rgb))
}

/// Crops an RGB `[h, w, 3]` image to the largest centred size whose sides are multiples of
/// `m`. Returns the image, its size and, when it changed, a message saying what was cut.
pub fn crop_to_multiple(
    rgb: &[f32],
    w: usize,
    h: usize,
    m: usize,
) -> (Vec<f32>, usize, usize, Option<String>) {
    let (nw, nh) = (w / m * m, h / m * m);
    if (nw, nh) == (w, h) {
        return (rgb.to_vec(), w, h, None);
    }
    let (x0, y0) = ((w - nw) / 2, (h - nh) / 2);
    let mut out = Vec::with_capacity(nw * nh * 3);
    for y in y0..y0 + nh {
        out.extend_from_slice(&rgb[(y * w + x0) * 3..(y * w + x0 + nw) * 3]);
    }
    let msg = format!("cropped {w}x{h} to {nw}x{nh} (centred) to get multiples of {m} px");
    (out, nw, nh, Some(msg))
}
