//! Images in and out. Writing: RGB `[h, w, 3]` floats in [0, 1] → 8-bit PNG, JPEG or WebP
//! (chosen by the file extension), with the generation parameters embedded (PNG: an `iTXt`
//! UTF-8 text chunk; JPEG and WebP: EXIF `UserComment`, as AUTOMATIC1111's web UI writes
//! them), placed all or nothing ([`crate::files::PendingFile`]). Reading: PNG, JPEG or WebP,
//! size-checked from the header before any pixel is decoded.

use crate::error::{Error, Result};
use crate::files::{self, PendingFile};
use std::path::Path;

/// The pixel limit of input images unless raised (`--max-image-pixels`,
/// `SD_WGPU_MAX_IMAGE_PIXELS`): 4096 × 4096. A 20000 × 20000 PNG can be a few hundred KiB
/// and decode to 9.5 GB; the header is checked against this first.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 4096 * 4096;

/// The environment variable that raises (or lowers) [`DEFAULT_MAX_IMAGE_PIXELS`].
pub const ENV_MAX_IMAGE_PIXELS: &str = "SD_WGPU_MAX_IMAGE_PIXELS";

/// The input pixel limit: `SD_WGPU_MAX_IMAGE_PIXELS` if set (an error if it is not a
/// number), else [`DEFAULT_MAX_IMAGE_PIXELS`].
pub fn max_image_pixels_from_env() -> Result<u64> {
    match std::env::var(ENV_MAX_IMAGE_PIXELS) {
        Err(_) => Ok(DEFAULT_MAX_IMAGE_PIXELS),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                Error::unsupported(
                    "image input",
                    format!("{ENV_MAX_IMAGE_PIXELS}={v:?} is not a positive number of pixels"),
                )
            }),
    }
}

/// Output formats, from the file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    /// Quality 95 (baseline), parameters in EXIF.
    Jpeg,
    /// Lossless, parameters in EXIF.
    WebP,
}

impl ImageFormat {
    /// `.png`, `.jpg` / `.jpeg`, `.webp` (any case); anything else is an error naming the path.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("png") => Ok(Self::Png),
            Some("jpg" | "jpeg") => Ok(Self::Jpeg),
            Some("webp") => Ok(Self::WebP),
            other => Err(Error::Output {
                path: path.to_path_buf(),
                what: format!(
                    "unknown image format {} (use .png, .jpg, .jpeg or .webp)",
                    other.map_or("(no extension)".to_string(), |e| format!("`.{e}`"))
                ),
            }),
        }
    }
}

/// 8-bit values of `rgb` (clamped to [0, 1], rounded as diffusers' `numpy_to_pil`).
fn to_bytes(rgb: &[f32]) -> Vec<u8> {
    rgb.iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect()
}

/// EXIF (a big-endian TIFF block, as piexif writes) holding one `UserComment` in the
/// `UNICODE` encoding (UTF-16BE): what AUTOMATIC1111's web UI stores in JPEG and WebP files
/// and reads back with `piexif.helper.UserComment.load`.
pub fn exif_user_comment(text: &str) -> Vec<u8> {
    let mut comment = b"UNICODE\0".to_vec();
    comment.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
    let mut t = b"MM\0\x2a".to_vec();
    t.extend(8u32.to_be_bytes()); // IFD0 at 8
    // IFD0: one entry, ExifIFD pointer (0x8769, LONG) → the Exif IFD at 26.
    t.extend(1u16.to_be_bytes());
    t.extend(0x8769u16.to_be_bytes());
    t.extend(4u16.to_be_bytes());
    t.extend(1u32.to_be_bytes());
    t.extend(26u32.to_be_bytes());
    t.extend(0u32.to_be_bytes()); // no IFD1
    // Exif IFD at 26: UserComment (0x9286, UNDEFINED) with its data at 44.
    t.extend(1u16.to_be_bytes());
    t.extend(0x9286u16.to_be_bytes());
    t.extend(7u16.to_be_bytes());
    t.extend((comment.len() as u32).to_be_bytes());
    t.extend(44u32.to_be_bytes());
    t.extend(0u32.to_be_bytes());
    t.extend(comment);
    t
}

/// Encodes `rgb` (`[h, w, 3]` in [0, 1]) as `format`, with `text` chunks: PNG writes each as
/// an `iTXt` (UTF-8) chunk; JPEG and WebP write the `parameters` entry as EXIF UserComment.
pub fn encode_image(
    format: ImageFormat,
    rgb: &[f32],
    w: usize,
    h: usize,
    text: &[(&str, &str)],
) -> Result<Vec<u8>> {
    let bad = |what: String| Error::unsupported("image output", what);
    let px = w
        .checked_mul(h)
        .and_then(|p| p.checked_mul(3))
        .ok_or_else(|| bad(format!("{w}x{h} is too large")))?;
    if rgb.len() != px || w == 0 || h == 0 || w > u32::MAX as usize || h > u32::MAX as usize {
        return Err(bad(format!("{} values for a {w}x{h} RGB image", rgb.len())));
    }
    let bytes = to_bytes(rgb);
    let mut out = Vec::new();
    let enc_err = |e: String| bad(format!("encoding {format:?}: {e}"));
    match format {
        ImageFormat::Png => {
            let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            for (k, t) in text {
                enc.add_itxt_chunk((*k).into(), (*t).into())
                    .map_err(|e| enc_err(e.to_string()))?;
            }
            let mut writer = enc.write_header().map_err(|e| enc_err(e.to_string()))?;
            writer
                .write_image_data(&bytes)
                .map_err(|e| enc_err(e.to_string()))?;
            writer.finish().map_err(|e| enc_err(e.to_string()))?;
        }
        ImageFormat::Jpeg | ImageFormat::WebP => {
            use image::ImageEncoder;
            let exif = text
                .iter()
                .find(|(k, _)| *k == "parameters")
                .map(|(_, t)| exif_user_comment(t));
            let color = image::ExtendedColorType::Rgb8;
            let r = if format == ImageFormat::Jpeg {
                let mut e = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95);
                if let Some(x) = exif {
                    e.set_exif_metadata(x).map_err(|e| enc_err(e.to_string()))?;
                }
                e.write_image(&bytes, w as u32, h as u32, color)
            } else {
                let mut e = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
                if let Some(x) = exif {
                    e.set_exif_metadata(x).map_err(|e| enc_err(e.to_string()))?;
                }
                e.write_image(&bytes, w as u32, h as u32, color)
            };
            r.map_err(|e| enc_err(e.to_string()))?;
        }
    }
    Ok(out)
}

/// Prepares `path` for an image: its format from the extension, then the checks and the
/// temporary file of [`PendingFile::create`] (exists without `overwrite`, symbolic link,
/// missing or read-only folder): call before the work, write with [`encode_image`].
pub fn prepare_image_output(path: &Path, overwrite: bool) -> Result<(ImageFormat, PendingFile)> {
    let format = ImageFormat::from_path(path)?;
    Ok((format, PendingFile::create(path, overwrite)?))
}

/// Writes `rgb` as an image at `path` (format from the extension, `text` embedded as
/// [`encode_image`] does), all or nothing, replacing an existing regular file (never
/// following a symbolic link). The CLI refuses existing files unless `--overwrite`: use
/// [`prepare_image_output`] for that.
pub fn write_png(
    path: &Path,
    rgb: &[f32],
    w: usize,
    h: usize,
    text: &[(&str, &str)],
) -> Result<()> {
    let format = ImageFormat::from_path(path)?;
    let bytes = encode_image(format, rgb, w, h, text)?;
    files::write_atomic(path, &bytes, true)
}

fn bad_png(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Input {
        path: path.to_path_buf(),
        what: format!("is not a readable PNG image: {what}"),
    }
}

/// Reads an image — PNG (8- or 16-bit; gray, gray+alpha, RGB or RGBA), JPEG or WebP, alpha
/// dropped — as RGB `[h, w, 3]` in [0, 1], refusing images over the pixel limit
/// ([`max_image_pixels_from_env`]) from the header. Returns `(width, height, rgb)`.
pub fn read_image_rgb(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    read_image_rgb_limited(path, max_image_pixels_from_env()?)
}

/// [`read_image_rgb`] with an explicit pixel limit.
pub fn read_image_rgb_limited(path: &Path, max_pixels: u64) -> Result<(usize, usize, Vec<f32>)> {
    // The file is compressed: its size says nothing about the pixels, so read it whole (a
    // 4096² image compresses to far below this cap) and check the header.
    let bytes = files::read_limited(path, max_pixels.saturating_mul(8).max(1 << 20))?;
    decode_image_rgb(&bytes, max_pixels).map_err(|e| match e {
        Error::Input { what, .. } => Error::Input {
            path: path.to_path_buf(),
            what,
        },
        other => other,
    })
}

/// Decodes PNG, JPEG or WebP bytes (see [`read_image_rgb`]): PNG with the `png` crate (16-bit
/// samples kept exact), the others with `image`, both after checking the header's size against
/// `max_pixels` and with the decoder's allocations capped to match. Errors name the path as
/// `<memory>`.
pub fn decode_image_rgb(bytes: &[u8], max_pixels: u64) -> Result<(usize, usize, Vec<f32>)> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return decode_png_rgb(bytes, max_pixels);
    }
    let path = Path::new("<memory>");
    let bad = |what: String| Error::Input {
        path: path.to_path_buf(),
        what: format!("is not a readable image (PNG, JPEG or WebP): {what}"),
    };
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| bad(e.to_string()))
    };
    match reader()?.format() {
        Some(image::ImageFormat::Jpeg | image::ImageFormat::WebP) => {}
        other => return Err(bad(format!("format {other:?}"))),
    }
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| bad(e.to_string()))?;
    check_pixels(path, w as usize, h as usize, max_pixels)?;
    let mut r = reader()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(16 << 20));
    r.limits(limits);
    let img = r.decode().map_err(|e| bad(e.to_string()))?.to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    Ok((
        w,
        h,
        img.into_raw()
            .iter()
            .map(|&b| f32::from(b) / 255.0)
            .collect(),
    ))
}

fn check_pixels(path: &Path, w: usize, h: usize, max_pixels: u64) -> Result<()> {
    let pixels = w as u64 * h as u64;
    if pixels > max_pixels {
        return Err(Error::Input {
            path: path.to_path_buf(),
            what: format!(
                "is {w}x{h} = {pixels} pixels, above the limit of {max_pixels} \
                 (--max-image-pixels or {ENV_MAX_IMAGE_PIXELS} raise it)"
            ),
        });
    }
    Ok(())
}

/// Decodes PNG bytes (see [`read_image_rgb`]); errors name the path as `<memory>`.
pub fn decode_png_rgb(bytes: &[u8], max_pixels: u64) -> Result<(usize, usize, Vec<f32>)> {
    let path = Path::new("<memory>");
    let mut dec = png::Decoder::new_with_limits(
        std::io::Cursor::new(bytes),
        png::Limits {
            // Room for the largest allowed image at 16-bit RGBA, and nothing beyond it.
            bytes: usize::try_from(max_pixels.saturating_mul(8).saturating_add(1 << 20))
                .unwrap_or(usize::MAX),
        },
    );
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(|e| bad_png(path, e))?;
    let (w, h) = {
        let info = reader.info();
        (info.width as usize, info.height as usize)
    };
    check_pixels(path, w, h, max_pixels)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad_png(path, "too large"))?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| bad_png(path, e))?;
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

/// Resizes an RGB `[h, w, 3]` image (8-bit values, as read) to the largest size whose sides
/// are multiples of `m`, as diffusers' `VaeImageProcessor` does to a PIL input (Pillow's
/// resize, to the byte: [`crate::resample`]; Lanczos for image-to-image and inpainting,
/// bicubic for the 4× upscaler). Returns the image, its size and, when it changed, a message
/// saying so. A side shorter than `m` gives an empty image of size 0 (refused downstream).
/// 16-bit inputs are rounded to 8 bits first (Pillow reads them as 8-bit "RGB").
pub fn resize_to_multiple(
    rgb: &[f32],
    w: usize,
    h: usize,
    m: usize,
    filter: crate::resample::Filter,
) -> (Vec<f32>, usize, usize, Option<String>) {
    let (nw, nh) = (w / m * m, h / m * m);
    if (nw, nh) == (w, h) {
        return (rgb.to_vec(), w, h, None);
    }
    let msg = format!(
        "resized {w}x{h} to {nw}x{nh} ({filter:?}, as diffusers does) to get multiples of {m} px"
    );
    if nw == 0 || nh == 0 {
        return (Vec::new(), nw, nh, Some(msg));
    }
    let out = crate::resample::resize_u8(&to_bytes(rgb), (w, h), 3, (nw, nh), filter);
    (
        out.iter().map(|&b| f32::from(b) / 255.0).collect(),
        nw,
        nh,
        Some(msg),
    )
}

/// Pillow's RGB → "L" conversion (ITU-R 601-2 luma in 16-bit fixed point, rounded) of 8-bit
/// values, as diffusers' mask processor converts a mask: `[h, w, 3]` → `[h, w]` in [0, 1].
pub fn luma_pil(rgb: &[f32]) -> Vec<f32> {
    to_bytes(rgb)
        .chunks_exact(3)
        .map(|p| {
            let [r, g, b] = [p[0], p[1], p[2]].map(u32::from);
            ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as f32 / 255.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_the_extension_and_carry_the_parameters() {
        assert_eq!(
            ImageFormat::from_path(Path::new("a.JPG")).unwrap(),
            ImageFormat::Jpeg
        );
        let e = ImageFormat::from_path(Path::new("a.bmp")).unwrap_err();
        assert!(e.to_string().contains("`.bmp`"), "{e}");
        assert!(ImageFormat::from_path(Path::new("noext")).is_err());
        let rgb: Vec<f32> = (0..4 * 3 * 3).map(|i| i as f32 / 36.0).collect();
        let text = "a cat 🐱 猫 חתול\nSteps: 1";
        let png = encode_image(ImageFormat::Png, &rgb, 4, 3, &[("parameters", text)]).unwrap();
        let reader = png::Decoder::new(std::io::Cursor::new(&png))
            .read_info()
            .unwrap();
        let itxt = &reader.info().utf8_text;
        assert_eq!(itxt.len(), 1);
        assert_eq!(itxt[0].keyword, "parameters");
        assert_eq!(itxt[0].get_text().unwrap(), text);
        for f in [ImageFormat::Jpeg, ImageFormat::WebP] {
            let bytes = encode_image(f, &rgb, 4, 3, &[("parameters", text)]).unwrap();
            let want: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
            assert!(
                bytes.windows(want.len()).any(|w| w == want),
                "{f:?} lacks the UserComment"
            );
            let img = image::load_from_memory(&bytes).unwrap();
            assert_eq!((img.width(), img.height()), (4, 3));
        }
    }

    #[test]
    fn jpeg_and_webp_read_back_within_their_limits() {
        let rgb: Vec<f32> = (0..16 * 8 * 3).map(|i| (i % 11) as f32 / 11.0).collect();
        for f in [ImageFormat::Jpeg, ImageFormat::WebP] {
            let bytes = encode_image(f, &rgb, 16, 8, &[]).unwrap();
            let (w, h, back) = decode_image_rgb(&bytes, 1 << 20).unwrap();
            assert_eq!((w, h, back.len()), (16, 8, rgb.len()));
            // Lossless WebP is exact to the 8-bit values; JPEG close.
            let tol = if f == ImageFormat::WebP {
                0.5 / 255.0
            } else {
                0.1
            };
            let worst = back
                .iter()
                .zip(&rgb)
                .map(|(a, b)| (a - (b * 255.0).round() / 255.0).abs())
                .fold(0.0, f32::max);
            assert!(worst <= tol, "{f:?}: {worst}");
            let e = decode_image_rgb(&bytes, 127).unwrap_err().to_string();
            assert!(
                e.contains("16x8 = 128 pixels, above the limit of 127"),
                "{e}"
            );
        }
        let e = decode_image_rgb(b"GIF89a....", 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a readable image"), "{e}");
    }

    #[test]
    fn oversized_pngs_are_refused_from_the_header() {
        // A 20000 x 20000 gray PNG header with one empty IDAT: the header alone decides.
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend((data.len() as u32).to_be_bytes());
            let start = out.len();
            out.extend(kind);
            out.extend(data);
            let crc = crate::fuzz::crc32(&out[start..]);
            out.extend(crc.to_be_bytes());
        }
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend(20000u32.to_be_bytes());
        ihdr.extend(20000u32.to_be_bytes());
        ihdr.extend([8, 0, 0, 0, 0]);
        chunk(&mut png, b"IHDR", &ihdr);
        chunk(
            &mut png,
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        );
        chunk(&mut png, b"IEND", &[]);
        assert!(png.len() < 1 << 20, "{} bytes", png.len());
        let e = decode_png_rgb(&png, DEFAULT_MAX_IMAGE_PIXELS).unwrap_err();
        assert!(
            e.to_string().contains("20000x20000") && e.to_string().contains("16777216"),
            "{e}"
        );
    }
}
