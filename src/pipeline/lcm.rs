//! LCM-distilled U-Nets (`time_cond_proj_dim`): the guidance scale enters as an embedding
//! (diffusers `get_guidance_scale_embedding`, as `StableDiffusionPipeline` and
//! `StableDiffusionXLPipeline` pass it as `timestep_cond`), not as a classifier-free batch.

use super::{Pipeline, Request};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};

/// diffusers `get_guidance_scale_embedding(w = guidance − 1, d)` for one image: the
/// sinusoid of `1000·w` at frequencies `10000^(−j/(d/2 − 1))`, sines then cosines (a zero
/// after them for odd `d`), in f32 as torch computes it.
pub fn guidance_embedding(guidance: f32, d: usize) -> Vec<f32> {
    let half = d / 2;
    // torch.tensor(guidance_scale − 1): the subtraction in f64, then f32; × 1000 in f32.
    let w = (f64::from(guidance) - 1.0) as f32 * 1000.0;
    let step = 10000f32.ln() / (half as f32 - 1.0);
    let args: Vec<f32> = (0..half).map(|j| w * (j as f32 * -step).exp()).collect();
    let mut out: Vec<f32> = args.iter().map(|a| a.sin()).collect();
    out.extend(args.iter().map(|a| a.cos()));
    out.resize(d, 0.0);
    out
}

impl Pipeline {
    /// LCM's `timestep_cond` `[n, time_cond_proj_dim]` for `req`, or `None` for a U-Net
    /// without the embedding.
    pub(super) fn guidance_condition(
        &self,
        gpu: &Gpu,
        req: &Request,
        n: usize,
    ) -> Result<Option<Tensor>> {
        let Some(d) = self.unet.config.time_cond_proj_dim else {
            return Ok(None);
        };
        let row = guidance_embedding(req.guidance, d);
        let rows: Vec<f32> = (0..n).flat_map(|_| row.iter().copied()).collect();
        Tensor::from_f32(gpu, &rows, &[n, d], DType::F32, "guidance embedding").map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::guidance_embedding;

    #[test]
    fn guidance_embedding_is_diffusers_sinusoid() {
        // Values from diffusers 0.42 `get_guidance_scale_embedding(torch.tensor([7.0]), 8)`.
        let e = guidance_embedding(8.0, 8);
        let want: [f32; 8] = [
            0.506_885_4,
            -0.970_479_6,
            0.586_653_3,
            0.644_217_6,
            0.862_013_5,
            -0.241_183_1,
            -0.809_838_2,
            0.764_842_2,
        ];
        for (g, w) in e.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{e:?} vs {want:?}");
        }
        // Odd width: a zero after the sines and cosines (`torch.tensor([2.0])`, 5).
        let want: [f32; 5] = [0.930_039_5, 0.198_669_3, -0.367_459_6, 0.980_066_6, 0.0];
        let e = guidance_embedding(3.0, 5);
        for (g, w) in e.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{e:?} vs {want:?}");
        }
    }
}
