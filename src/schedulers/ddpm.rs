//! diffusers `DDPMScheduler` (posterior mean, "fixed_small" variance).

use super::ddim::{vp_coefficients, vp_program};
use super::{Algorithm, Program, Schedule};

pub(super) struct Ddpm;

impl Algorithm for Ddpm {
    fn clip_sample_default(&self) -> bool {
        true
    }

    fn set_schedule(&self, s: &mut Schedule) {
        s.set_discrete();
    }

    /// diffusers draws noise on every step but the one at t = 0.
    fn needs_noise(&self, s: &Schedule, i: usize) -> bool {
        s.timesteps[i] > 0.0
    }

    fn program(&self, s: &Schedule) -> Program {
        vp_program(s, true)
    }

    fn coefficients(&self, s: &Schedule, i: usize, _j: usize) -> Vec<f64> {
        let t = s.timesteps[i];
        let prev = t - s.ratio();
        let (a_t, a_prev) = (s.ac[t as usize], s.ac_at(prev, 1.0));
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let cur_alpha = a_t / a_prev;
        let cur_beta = 1.0 - cur_alpha;
        let k0 = a_prev.sqrt() * cur_beta / b_t;
        let kx = cur_alpha.sqrt() * b_prev / b_t;
        let kn = if t > 0.0 {
            (b_prev / b_t * cur_beta).max(1e-20).sqrt()
        } else {
            0.0
        };
        vp_coefficients(s, s.vp_forms(a_t), [k0, 0.0, kx], Some(kn))
    }
}
