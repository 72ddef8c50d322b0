//! Minimal `.npy` (NumPy format 1.0 / 2.0) reading and writing of little-endian float32
//! C-order arrays: what `--init-latents` and `--latents-out` exchange with numpy/diffusers.

use crate::error::{Error, Result};
use std::path::Path;

fn bad(path: &Path, what: impl Into<String>) -> Error {
    Error::Npy {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Largest `.npy` file read (1 GiB: far above any latents the engine takes).
pub const MAX_NPY_BYTES: u64 = 1 << 30;

/// Reads a float32 array: `(shape, values)` (a regular file of at most [`MAX_NPY_BYTES`]).
pub fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = crate::files::read_limited(path, MAX_NPY_BYTES)?;
    parse_f32(&bytes, path)
}

/// Parses `.npy` bytes (see [`read_f32`]); `path` names them in errors.
pub fn parse_f32(bytes: &[u8], path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad(path, "not a .npy file (no \\x93NUMPY magic)"));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(path, format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start.saturating_add(header_len))
        .ok_or_else(|| bad(path, "truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad(path, "header is not text"))?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[i..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr").ok_or_else(|| bad(path, "no descr"))?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("'float32'")) {
        return Err(bad(
            path,
            format!(
                "dtype {} (expected float32 '<f4')",
                descr.split(',').next().unwrap_or(descr)
            ),
        ));
    }
    if field("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(bad(
            path,
            "Fortran-order arrays are not supported (save with np.ascontiguousarray)",
        ));
    }
    let shape_text = field("shape").ok_or_else(|| bad(path, "no shape"))?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad(path, "bad shape"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(path, format!("bad shape entry `{s}`")))
        })
        .collect::<Result<Vec<_>>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| n.checked_mul(4).is_some())
        .ok_or_else(|| bad(path, format!("shape {shape:?} is too large")))?;
    let data = &bytes[start + header_len..];
    if data.len() != 4 * n {
        return Err(bad(
            path,
            format!(
                "{} data bytes for shape {shape:?} ({} expected)",
                data.len(),
                4 * n
            ),
        ));
    }
    Ok((
        shape,
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    ))
}

/// Writes a float32 C-order array (format 1.0), all or nothing, replacing an existing
/// regular file (never following a symbolic link).
pub fn write_f32(path: &Path, shape: &[usize], values: &[f32]) -> Result<()> {
    crate::files::write_atomic(path, &encode_f32(path, shape, values)?, true)
}

/// The bytes of a float32 C-order `.npy` (format 1.0); `path` names it in errors.
pub fn encode_f32(path: &Path, shape: &[usize], values: &[f32]) -> Result<Vec<u8>> {
    if shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(values.len()) {
        return Err(bad(
            path,
            format!("{} values for shape {shape:?}", values.len()),
        ));
    }
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // Pad so that the data starts at a multiple of 64 bytes, ending the header with '\n'.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.div_ceil(64) * 64 - total));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_bad_files() {
        let dir = std::env::temp_dir().join(format!("sd-wgpu-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.npy");
        let v: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        super::write_f32(&p, &[1, 4, 2, 3], &v).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(
            (10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64,
            0
        );
        assert_eq!(super::read_f32(&p).unwrap(), (vec![1, 4, 2, 3], v));
        std::fs::write(&p, b"not numpy").unwrap();
        assert!(
            super::read_f32(&p)
                .unwrap_err()
                .to_string()
                .contains("x.npy")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
