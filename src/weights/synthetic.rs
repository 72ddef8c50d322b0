//! Random weights for `sd-wgpu bench`: any architecture with no checkpoint file.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};

/// Random weights for benchmarks ([`Weights::synthetic`]): every tensor a network asks for
/// exists with the shape it asks for, filled as PyTorch initialises layers by default, scaled
/// by fan-in (weights uniform in ±1/√fan_in, biases ±0.02, norm scales 1 and shifts 0,
/// embeddings of standard deviation 0.02), from a generator seeded by `seed` and the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Synthetic {
    pub seed: u64,
    /// Store as f16 (with [`WeightDType::Auto`]).
    pub f16: bool,
}

impl Synthetic {
    /// How `name` (PyTorch shape `shape`) is filled: values `offset + scale·(2u − 1)`.
    pub fn init(name: &str, shape: &[usize]) -> (f32, f32) {
        let leaf = name.rsplit('.').next().unwrap_or(name);
        if shape.len() == 1 && name.contains("norm") {
            return (0.0, if leaf == "weight" { 1.0 } else { 0.0 });
        }
        let bound = if shape.len() == 1 {
            0.02
        } else if name.contains("embedding") {
            0.02 * 3f32.sqrt()
        } else {
            1.0 / (shape[1..].iter().product::<usize>().max(1) as f32).sqrt()
        };
        (bound, 0.0)
    }

    /// The fill's key: FNV-1a over the name, mixed with the seed (reproducible per tensor,
    /// whatever the load order).
    pub fn key(&self, name: &str) -> u32 {
        let h = name.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        h ^ crate::ops::random::pcg(self.seed as u32 ^ (self.seed >> 32) as u32)
    }

    /// The values of `name` with PyTorch shape `shape`, on the host: exactly what the
    /// device fill ([`crate::ops::random_fill`]) writes for it.
    pub fn values(&self, name: &str, shape: &[usize]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let (scale, offset) = Self::init(name, shape);
        let key = self.key(name);
        (0..n)
            .map(|i| crate::ops::random::random_value(key, i as u32, scale, offset))
            .collect()
    }

    /// The GPU dtype of synthetic weights under `policy`.
    pub(super) fn dtype(&self, policy: super::WeightDType) -> DType {
        match policy {
            super::WeightDType::F16 => DType::F16,
            super::WeightDType::Auto if self.f16 => DType::F16,
            _ => DType::F32,
        }
    }

    /// `name` made on the device with device shape `gpu_shape` (a re-laid-out weight holds
    /// the same random values in another order: the distribution is all that matters).
    pub(super) fn device_tensor(
        &self,
        gpu: &Gpu,
        name: &str,
        shape: &[usize],
        gpu_shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        let (scale, offset) = Self::init(name, shape);
        let t = Tensor::empty(gpu, gpu_shape, dtype, name)?;
        let mut rec = crate::gpu::Recorder::new(gpu);
        crate::ops::random_fill(&mut rec, &t, self.key(name), scale, offset)?;
        rec.submit()?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::Synthetic;

    #[test]
    fn synthetic_values_follow_the_default_initialisation() {
        let s = Synthetic {
            seed: 7,
            f16: false,
        };
        let w = s.values("down_blocks.0.resnets.0.conv1.weight", &[320, 320, 3, 3]);
        let bound = 1.0 / (320.0f32 * 9.0).sqrt();
        assert!(w.iter().all(|v| v.abs() <= bound));
        let mean = w.iter().sum::<f32>() / w.len() as f32;
        let var = w.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / w.len() as f32;
        // Uniform in ±b: variance b²/3.
        assert!((var / (bound * bound / 3.0) - 1.0).abs() < 0.02, "{var}");
        assert!(mean.abs() < bound / 50.0);
        // Reproducible per name, different across names and seeds.
        assert_eq!(
            w,
            s.values("down_blocks.0.resnets.0.conv1.weight", &[320, 320, 3, 3])
        );
        assert_ne!(
            w[..8],
            s.values("down_blocks.0.resnets.0.conv2.weight", &[320, 320, 3, 3])[..8]
        );
        let other = Synthetic {
            seed: 8,
            f16: false,
        };
        assert_ne!(
            w[..8],
            other.values("down_blocks.0.resnets.0.conv1.weight", &[320, 320, 3, 3])[..8]
        );
        assert!(
            s.values("mid_block.resnets.0.norm1.weight", &[4])
                .iter()
                .all(|&v| v == 1.0)
        );
        assert!(
            s.values("mid_block.resnets.0.norm1.bias", &[4])
                .iter()
                .all(|&v| v == 0.0)
        );
        assert!(
            s.values("conv_in.bias", &[320])
                .iter()
                .all(|v| v.abs() <= 0.02)
        );
    }
}
