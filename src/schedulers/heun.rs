//! diffusers `HeunDiscreteScheduler` (Karras et al. 2022, algorithm 1 without churn): each
//! step is an Euler step to the next σ (first order) whose derivative is then averaged with
//! the one re-evaluated there (second order). The schedule interleaves the timesteps and σ
//! (`[t₀, t₁, t₁, …, tₙ₋₁, tₙ₋₁]`): 2n − 1 model calls for n steps, the last one first order
//! down to σ = 0.
//!
//! State: 0 the sample the first-order step started from, 1 its derivative.

use super::{Algorithm, Combine, Program, Schedule, ScheduleConfig, Slot};
use crate::error::{Error, Result};

pub(super) struct Heun;

impl Algorithm for Heun {
    fn order(&self) -> usize {
        2
    }

    fn set_schedule(&self, s: &mut Schedule) {
        s.set_euler();
        // [t₀, t₁, t₁, …] and [σ₀, σ₁, σ₁, …, σₙ₋₁, σₙ₋₁, 0].
        let (ts, sg) = (
            std::mem::take(&mut s.timesteps),
            std::mem::take(&mut s.sigmas),
        );
        s.timesteps = std::iter::once(ts[0])
            .chain(ts[1..].iter().flat_map(|&t| [t, t]))
            .collect();
        let n = sg.len() - 1;
        s.sigmas = std::iter::once(sg[0])
            .chain(sg[1..n].iter().flat_map(|&v| [v, v]))
            .chain(std::iter::once(sg[n]))
            .collect();
    }

    fn sigma_space(&self) -> bool {
        true
    }

    fn noise_coefficients(&self, s: &Schedule, k: usize) -> (f32, f32) {
        (1.0, s.sigmas[k] as f32)
    }

    fn check(&self, cfg: &ScheduleConfig, _steps: usize) -> Result<()> {
        if cfg.clip_sample == Some(true) {
            return Err(Error::unsupported(
                "sampler",
                "heun with `clip_sample` (not implemented)",
            ));
        }
        Ok(())
    }

    fn program(&self, _s: &Schedule) -> Program {
        use Slot::{Model, State, Tmp, X};
        Program {
            states: 2,
            combines: vec![
                Combine::new(&[X, Model, State(0), State(1)]), // x'
                Combine::new(&[X, Model]),                     // the first-order derivative
            ],
            output: Tmp(0),
            updates: vec![(0, X), (1, Tmp(1))],
        }
    }

    /// First order (even i): `d = (x − x₀(σ))/σ`, `x' = x + d·(σ' − σ)`, keeping x and d.
    /// Second order (odd i): `d₂ = (x − x₀(σ'))/σ'`, `x' = x_saved + (d_saved + d₂)/2·dt`.
    fn coefficients(&self, s: &Schedule, i: usize, _j: usize) -> Vec<f64> {
        if i % 2 == 0 {
            let (sg, next) = (s.sigmas[i], s.sigmas[i + 1]);
            let [a, b] = s.sigma_x0_form(sg);
            let (dx, dm) = ((1.0 - a) / sg, -b / sg);
            let dt = next - sg;
            vec![1.0 + dx * dt, dm * dt, 0.0, 0.0, dx, dm]
        } else {
            let (sg, next) = (s.sigmas[i - 1], s.sigmas[i]);
            let [a, b] = s.sigma_x0_form(next);
            let half = (next - sg) / 2.0;
            let (dx, dm) = ((1.0 - a) / next, -b / next);
            vec![dx * half, dm * half, 1.0, half, 0.0, 0.0]
        }
    }
}
