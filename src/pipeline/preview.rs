//! Step previews: a cheap latent → RGB approximation delivered through the progress callback.

use std::path::Path;

/// A step's preview: a latent → RGB approximation at latent resolution (a fixed linear map
/// of the latent channels, no VAE), or the tiny autoencoder's image at full resolution
/// ([`super::PreviewDecoder::Tiny`]).
#[derive(Clone, Debug)]
pub struct Preview {
    pub width: usize,
    pub height: usize,
    /// `[height, width, 3]` in [0, 1].
    pub rgb: Vec<f32>,
}

/// A linear latent → RGB map for previews: `rgb = Σ_c z_c · factors[c] + bias`, in [0, 1]
/// units. The default is the map the common UIs use for SD 1.x / 2.x latents; a model folder
/// may carry its own in `latent_rgb.json` (`{"factors": [[r, g, b], …], "bias": [r, g, b]}`;
/// the built-in model's is fitted by `tools/fit_latent_preview.py`).
#[derive(Clone, Debug, PartialEq)]
pub struct LatentRgb {
    pub factors: Vec<[f32; 3]>,
    pub bias: [f32; 3],
}

impl Default for LatentRgb {
    fn default() -> Self {
        const SD: [[f32; 3]; 4] = [
            [0.3512, 0.2297, 0.3227],
            [0.3250, 0.4974, 0.2350],
            [-0.2829, 0.1762, 0.2721],
            [-0.2120, -0.2616, -0.7177],
        ];
        Self {
            factors: SD.iter().map(|r| r.map(|v| v / 2.0)).collect(),
            bias: [0.5; 3],
        }
    }
}

impl LatentRgb {
    /// `dir/latent_rgb.json` if present and well-formed, else the SD map.
    pub(super) fn from_folder(dir: &Path) -> Self {
        let Ok(v) = crate::models::read_json(&dir.join("latent_rgb.json")) else {
            return Self::default();
        };
        let rgb = |x: &serde_json::Value| -> Option<[f32; 3]> {
            let a = x.as_array()?;
            let f = |i: usize| a.get(i)?.as_f64().map(|v| v as f32);
            Some([f(0)?, f(1)?, f(2)?])
        };
        let factors: Option<Vec<[f32; 3]>> = v["factors"]
            .as_array()
            .and_then(|a| a.iter().map(rgb).collect());
        match (factors, rgb(&v["bias"])) {
            (Some(factors), Some(bias)) => Self { factors, bias },
            _ => Self::default(),
        }
    }
}

/// The preview of NHWC latents (`[.., h, w, c]`, first image) with `map`; a channel count the
/// map does not have gives gray from the channel mean.
pub fn latent_preview(latents: &[f32], h: usize, w: usize, c: usize, map: &LatentRgb) -> Preview {
    let mut rgb = Vec::with_capacity(h * w * 3);
    for px in latents[..h * w * c].chunks_exact(c) {
        for k in 0..3 {
            let v = if map.factors.len() == c {
                px.iter()
                    .zip(&map.factors)
                    .map(|(v, f)| v * f[k])
                    .sum::<f32>()
                    + map.bias[k]
            } else {
                (px.iter().sum::<f32>() / c as f32 + 1.0) / 2.0
            };
            rgb.push(v.clamp(0.0, 1.0));
        }
    }
    Preview {
        width: w,
        height: h,
        rgb,
    }
}
