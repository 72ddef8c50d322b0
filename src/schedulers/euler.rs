//! diffusers `EulerDiscreteScheduler` (s_churn 0) and `EulerAncestralDiscreteScheduler`.

use super::{Algorithm, Combine, Prediction, Program, Schedule, ScheduleConfig, Slot};
use crate::error::{Error, Result};

pub(super) struct Euler {
    pub ancestral: bool,
}

impl Algorithm for Euler {
    fn set_schedule(&self, s: &mut Schedule) {
        // diffusers' EulerAncestralDiscreteScheduler has no sigma-schedule options: a config's
        // Karras / exponential flags do not reach it.
        if self.ancestral {
            s.cfg.use_karras_sigmas = false;
            s.cfg.use_exponential_sigmas = false;
            s.cfg.use_beta_sigmas = false;
        }
        s.set_euler();
    }

    fn sigma_space(&self) -> bool {
        true
    }

    fn noise_coefficients(&self, s: &Schedule, k: usize) -> (f32, f32) {
        (1.0, s.sigmas[k] as f32)
    }

    fn needs_noise(&self, _s: &Schedule, _i: usize) -> bool {
        self.ancestral
    }

    fn check(&self, cfg: &ScheduleConfig, _steps: usize) -> Result<()> {
        if self.ancestral && cfg.prediction == Prediction::Sample {
            return Err(Error::unsupported(
                "sampler",
                "euler-a with prediction_type `sample` (diffusers does not implement it)",
            ));
        }
        Ok(())
    }

    fn program(&self, _s: &Schedule) -> Program {
        let mut terms = vec![Slot::X, Slot::Model];
        if self.ancestral {
            terms.push(Slot::Noise);
        }
        Program {
            states: 0,
            combines: vec![Combine::new(&terms)],
            output: Slot::Tmp(0),
            updates: Vec::new(),
        }
    }

    /// `x' = x + (x − x₀)/σ · dt` (+ `σ_up · noise` for the ancestral step).
    fn coefficients(&self, s: &Schedule, i: usize, _j: usize) -> Vec<f64> {
        let (sg, s_next) = (s.sigmas[i], s.sigmas[i + 1]);
        let x0f = s.sigma_x0_form(sg);
        let (target, up) = if self.ancestral {
            let up = (s_next * s_next * (sg * sg - s_next * s_next) / (sg * sg)).sqrt();
            let down = (s_next * s_next - up * up).max(0.0).sqrt();
            (down, Some(up))
        } else {
            (s_next, None)
        };
        let d = (target - sg) / sg;
        let mut c = vec![1.0 + d - d * x0f[0], -d * x0f[1]];
        c.extend(up);
        c
    }
}
