//! diffusers `PNDMScheduler.step_plms` (`skip_prk_steps`): linear multistep over the last
//! four model outputs, with its special second step.
//!
//! State: 0 the saved sample (`cur_sample`), 1..=3 the previous model outputs, most recent
//! first (diffusers' `ets` without the current one). Each step: `mo` from the current and
//! past outputs, `x' = A·sample + B·mo` (F-PNDM eq. 9), then the history shifts (except on
//! the second step, which re-evaluates the first one's interval and pushes nothing).

use super::{Algorithm, Combine, Prediction, Program, Schedule, ScheduleConfig, Slot};
use crate::error::{Error, Result};

pub(super) struct Pndm;

impl Algorithm for Pndm {
    fn set_schedule(&self, s: &mut Schedule) {
        s.set_pndm();
    }

    fn set_alpha_to_one_default(&self) -> bool {
        false
    }

    fn check(&self, cfg: &ScheduleConfig, _steps: usize) -> Result<()> {
        if !cfg.skip_prk_steps {
            return Err(Error::unsupported(
                "sampler",
                "PNDM with Runge–Kutta warm-up steps (the scheduler config lacks \
                 `skip_prk_steps: true`): not implemented, choose another sampler",
            ));
        }
        if cfg.prediction == Prediction::Sample {
            return Err(Error::unsupported(
                "sampler",
                "PNDM with prediction_type `sample` (diffusers does not implement it)",
            ));
        }
        Ok(())
    }

    fn program(&self, _s: &Schedule) -> Program {
        use Slot::{Model, State, Tmp, X};
        Program {
            states: 4,
            combines: vec![
                Combine::new(&[Model, State(1), State(2), State(3)]), // mo
                Combine::new(&[X, State(0), Tmp(0)]),                 // x'
                Combine::new(&[X, State(0)]),                         // saved sample
                Combine::new(&[State(2), State(3)]),                  // ε₋₃
                Combine::new(&[State(1), State(2)]),                  // ε₋₂
                Combine::new(&[Model, State(1)]),                     // ε₋₁
            ],
            output: Tmp(1),
            updates: vec![(0, Tmp(2)), (3, Tmp(3)), (2, Tmp(4)), (1, Tmp(5))],
        }
    }

    fn coefficients(&self, s: &Schedule, i: usize, j: usize) -> Vec<f64> {
        let ratio = s.ratio();
        let (mut t, mut prev) = (s.timesteps[i], s.timesteps[i] - ratio);
        if j == 1 {
            prev = t;
            t += ratio;
        }
        let mo: [f64; 4] = match j {
            0 => [1.0, 0.0, 0.0, 0.0],
            1 => [0.5, 0.5, 0.0, 0.0],
            2 => [1.5, -0.5, 0.0, 0.0],
            3 => [23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0, 0.0],
            _ => [55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0],
        };
        // _get_prev_sample (F-PNDM eq. 9).
        let (a_t, a_prev) = (s.ac[t as usize], s.ac_at(prev, s.final_ac));
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        let k_m = -(a_prev - a_t) / denom;
        let (a, b) = match s.cfg.prediction {
            // v → ε with the sample this step uses.
            Prediction::VPrediction => (sample_coeff + k_m * b_t.sqrt(), k_m * a_t.sqrt()),
            _ => (sample_coeff, k_m),
        };
        // The second step restarts from the saved sample.
        let (on_x, on_saved) = if j == 1 { (0.0, a) } else { (a, 0.0) };
        // Saved sample: x on the first step, kept after; history shifts except on step 2.
        let save = if j == 0 { [1.0, 0.0] } else { [0.0, 1.0] };
        let shift = if j == 1 { [0.0, 1.0] } else { [1.0, 0.0] };
        let mut c = mo.to_vec();
        c.extend([on_x, on_saved, b]);
        c.extend(save);
        for _ in 0..3 {
            c.extend(shift);
        }
        c
    }
}
