//! diffusers `DDIMScheduler` (Song et al. 2020, eq. 12), η ≥ 0, with `clip_sample`.

use super::{Algorithm, Combine, Program, Schedule, Slot};
use crate::error::{Error, Result};

pub(super) struct Ddim {
    pub eta: f64,
}

/// The update of the ᾱ-form samplers (DDIM, DDPM): `k0·x₀ + ke·ε + kx·x (+ kn·noise)` with
/// x₀ and ε linear in (x, model output); with `clip_sample`, x₀ is computed and clamped first.
pub(super) fn vp_program(s: &Schedule, noise: bool) -> Program {
    let mut combines = Vec::new();
    let mut last = vec![Slot::X, Slot::Model];
    if let Some(r) = s.clip {
        combines.push(Combine {
            terms: vec![Slot::X, Slot::Model],
            clamp: Some(r),
        });
        last.insert(0, Slot::Tmp(0));
    }
    if noise {
        last.push(Slot::Noise);
    }
    combines.push(Combine::new(&last));
    Program {
        states: 0,
        output: Slot::Tmp(combines.len() - 1),
        combines,
        updates: Vec::new(),
    }
}

/// Coefficients of [`vp_program`] for x₀ / ε forms `(x0f, ef)` at this step's ᾱ, weights
/// `[k0, ke, kx]` and the noise's `kn` (when the program has a noise term).
pub(super) fn vp_coefficients(
    s: &Schedule,
    (x0f, ef): ([f64; 2], [f64; 2]),
    [k0, ke, kx]: [f64; 3],
    kn: Option<f64>,
) -> Vec<f64> {
    let mut c = if s.clip.is_some() {
        vec![x0f[0], x0f[1], k0, ke * ef[0] + kx, ke * ef[1]]
    } else {
        vec![k0 * x0f[0] + ke * ef[0] + kx, k0 * x0f[1] + ke * ef[1]]
    };
    c.extend(kn);
    c
}

impl Algorithm for Ddim {
    fn clip_sample_default(&self) -> bool {
        true
    }

    fn set_schedule(&self, s: &mut Schedule) {
        s.set_discrete();
    }

    fn needs_noise(&self, _s: &Schedule, _i: usize) -> bool {
        self.eta > 0.0
    }

    fn check(&self, _cfg: &super::ScheduleConfig, _steps: usize) -> Result<()> {
        if !(0.0..=1.0).contains(&self.eta) {
            return Err(Error::unsupported(
                "sampler",
                format!("DDIM eta = {} (0 to 1)", self.eta),
            ));
        }
        Ok(())
    }

    fn program(&self, s: &Schedule) -> Program {
        vp_program(s, self.eta > 0.0)
    }

    fn coefficients(&self, s: &Schedule, i: usize, _j: usize) -> Vec<f64> {
        let t = s.timesteps[i];
        let prev = t - s.ratio();
        let (a_t, a_prev) = (s.ac[t as usize], s.ac_at(prev, s.final_ac));
        let variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev);
        let std = self.eta * variance.sqrt();
        let dir = (1.0 - a_prev - std * std).max(0.0).sqrt();
        let kn = (self.eta > 0.0).then_some(std);
        vp_coefficients(s, s.vp_forms(a_t), [a_prev.sqrt(), dir, 0.0], kn)
    }
}
