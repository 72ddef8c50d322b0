//! diffusers `DEISMultistepScheduler` (diffusion exponential integrator sampler, arXiv
//! 2204.13902) as diffusers configures it by default: `algorithm_type` deis, `solver_type`
//! logrho, `solver_order` 2, `lower_order_final` (the last step first order below 15 steps),
//! its σ list ending at σ_min rather than 0.
//!
//! It works on ε: `ε̂ = (x − α_s·x₀)/σ_s` from the model's x₀. First order (a DDIM step):
//! `x' = α_t/α_s·x − σ_t(e^h − 1)·ε̂`; second order integrates the Lagrange interpolant of the
//! last two ε̂ in log ρ (ρ = σ/α): `x' = α_t(x/α_s + c₁·ε̂ + c₂·ε̂₋₁)`.
//!
//! State: the previous step's ε̂.

use super::dpm_solver::{alpha_sigma, lambda, vp_noise_coefficients, vp_x0_form};
use super::{Algorithm, Combine, Program, Schedule, Slot};

pub(super) struct Deis;

/// `∫ (log τ − log c)/(log b − log c) dτ` (diffusers' `ind_fn`).
fn ind(t: f64, b: f64, c: f64) -> f64 {
    t * (-c.ln() + t.ln() - 1.0) / (b.ln() - c.ln())
}

impl Algorithm for Deis {
    fn set_schedule(&self, s: &mut Schedule) {
        s.set_multistep(true);
    }

    fn noise_coefficients(&self, s: &Schedule, k: usize) -> (f32, f32) {
        vp_noise_coefficients(s, k)
    }

    /// `ε̂ = e_x·x + e_m·m`; `x' = c_x·x + c_0·ε̂ + c_1·ε̂₋₁`; the state keeps ε̂.
    fn program(&self, _s: &Schedule) -> Program {
        use Slot::{Model, State, Tmp, X};
        Program {
            states: 1,
            combines: vec![
                Combine::new(&[X, Model]),
                Combine::new(&[X, Tmp(0), State(0)]),
            ],
            output: Tmp(1),
            updates: vec![(0, Tmp(0))],
        }
    }

    fn coefficients(&self, s: &Schedule, i: usize, j: usize) -> Vec<f64> {
        let n = s.timesteps.len();
        let (a_s, s_s) = alpha_sigma(s.sigmas[i]);
        let (a_t, s_t) = alpha_sigma(s.sigmas[i + 1]);
        let x0 = vp_x0_form(s, s.sigmas[i]);
        let eps = [(1.0 - a_s * x0[0]) / s_s, -a_s * x0[1] / s_s];
        // diffusers: first order on the run's first step and, below 15 steps, on the last.
        let first_order = j == 0 || (i + 1 == n && n < 15);
        let update = if first_order {
            let h = lambda(s.sigmas[i + 1]) - lambda(s.sigmas[i]);
            [a_t / a_s, -s_t * h.exp_m1(), 0.0]
        } else {
            let (a_1, s_1) = alpha_sigma(s.sigmas[i - 1]);
            let (rt, r0, r1) = (s_t / a_t, s_s / a_s, s_1 / a_1);
            let c1 = ind(rt, r0, r1) - ind(r0, r0, r1);
            let c2 = ind(rt, r1, r0) - ind(r0, r1, r0);
            [a_t / a_s, a_t * c1, a_t * c2]
        };
        vec![eps[0], eps[1], update[0], update[1], update[2]]
    }
}
