//! diffusers `LCMScheduler` (Luo et al. 2023, multistep consistency sampling): each step maps
//! the sample to the consistency function's estimate of x₀ (`c_skip·x + c_out·x̂₀`, the
//! boundary-condition scalings at `timestep · timestep_scaling`) and, except on the last
//! step, noises it again to the next timestep.

use super::ddim::{vp_coefficients, vp_program};
use super::{Algorithm, Program, Schedule, ScheduleConfig};
use crate::error::{Error, Result};

pub(super) struct Lcm;

/// diffusers' `sigma_data` of the boundary condition.
const SIGMA_DATA: f32 = 0.5;

/// The LCM inference timesteps (diffusers `LCMScheduler.set_timesteps` with strength 1):
/// `steps` indices evenly spread over the distillation schedule of `original_inference_steps`
/// timesteps `k·i − 1` (k = ⌊n / original⌋), descending.
pub(crate) fn lcm_timesteps(cfg: &ScheduleConfig, steps: usize) -> Vec<f64> {
    let orig = cfg.original_inference_steps;
    let k = cfg.num_train_timesteps / orig;
    let origin: Vec<usize> = (1..=orig).rev().map(|i| i * k - 1).collect();
    // np.floor(np.linspace(0, len, steps, endpoint=False)).
    let stride = origin.len() as f64 / steps as f64;
    (0..steps)
        .map(|i| origin[(i as f64 * stride).floor() as usize] as f64)
        .collect()
}

/// `(c_skip, c_out)` at integer timestep `t`, in f32 as diffusers computes them.
fn boundary_scalings(cfg: &ScheduleConfig, t: f64) -> (f64, f64) {
    let scaled = t as f32 * cfg.timestep_scaling as f32;
    let d2 = SIGMA_DATA * SIGMA_DATA;
    let c_skip = d2 / (scaled * scaled + d2);
    let c_out = scaled / (scaled * scaled + d2).sqrt();
    (f64::from(c_skip), f64::from(c_out))
}

impl Algorithm for Lcm {
    fn set_schedule(&self, s: &mut Schedule) {
        s.timesteps = lcm_timesteps(&s.cfg, s.steps);
    }

    /// Noise on every step but the last (a one-step run draws none).
    fn needs_noise(&self, s: &Schedule, i: usize) -> bool {
        i + 1 != s.steps
    }

    fn check(&self, cfg: &ScheduleConfig, steps: usize) -> Result<()> {
        let (orig, n) = (cfg.original_inference_steps, cfg.num_train_timesteps);
        if orig > n {
            return Err(Error::unsupported(
                "sampler",
                format!("lcm with original_inference_steps {orig} > num_train_timesteps {n}"),
            ));
        }
        // The run's timesteps are a subset of the distillation schedule's.
        if steps > orig {
            return Err(Error::unsupported(
                "sampler",
                format!(
                    "lcm with {steps} steps: at most original_inference_steps = {orig} (the \
                     distillation schedule the timesteps are taken from)"
                ),
            ));
        }
        Ok(())
    }

    fn program(&self, s: &Schedule) -> Program {
        vp_program(s, true)
    }

    fn coefficients(&self, s: &Schedule, i: usize, _j: usize) -> Vec<f64> {
        let t = s.timesteps[i];
        let a_t = s.ac[t as usize];
        let (c_skip, c_out) = boundary_scalings(&s.cfg, t);
        // denoised = c_out·x̂₀ + c_skip·x; then √ᾱ_prev·denoised + √(1 − ᾱ_prev)·noise.
        let (scale, kn) = if self.needs_noise(s, i) {
            let a_prev = s.ac_at(s.timesteps[i + 1], s.final_ac);
            (a_prev.sqrt(), (1.0 - a_prev).sqrt())
        } else {
            (1.0, 0.0)
        };
        vp_coefficients(
            s,
            s.vp_forms(a_t),
            [scale * c_out, 0.0, scale * c_skip],
            Some(kn),
        )
    }
}
