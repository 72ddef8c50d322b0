//! diffusers `UniPCMultistepScheduler` (UniPC, arXiv 2302.04867) as diffusers configures it by
//! default: `predict_x0`, `solver_type` bh2 (B(h) = e^{−h} − 1), `solver_order` 2,
//! `lower_order_final`, the corrector on every step but the run's first.
//!
//! Each step first corrects the sample the previous step predicted (UniC), using the model's
//! x₀ at that sample; diffusers recomputes the correction from the previous *corrected*
//! sample (`last_sample`), not from the sample it is handed, so the state keeps that one too
//! (an inpainting blend between steps reaches the model input only, as in diffusers). Then
//! it predicts the next sample (UniP, order 2 once a past x₀ exists, 1 on the last step).
//!
//! With λᵢ = log αᵢ − log σᵢ, h = λ_t − λ_s, x₀ᵢ the model's x₀ at step i, Dᵢ = x₀ᵢ₋₁ − x₀ᵢ:
//! - UniC at step i (order o of the previous prediction), from the corrected `x_c` of step
//!   i − 1: `x_c = σᵢ/σᵢ₋₁·x_c₋₁ − αᵢ(e^{−h} − 1)·x₀ᵢ₋₁ − αᵢB(h)·(ρ₀·Dᵢ₋₁/r + ρ₁·(x₀ᵢ − x₀ᵢ₋₁))`,
//!   ρ = ½ (order 1) or the solution of the 2 × 2 system of φ-functions (order 2);
//! - UniP: `x' = σ_t/σᵢ·x_c − α_t(e^{−h} − 1)·x₀ᵢ − α_t·B(h)·½·Dᵢ/r` (the last term order 2).
//!
//! State: 0 the corrected sample, 1 the previous x₀, 2 the previous D.

use super::dpm_solver::{alpha_sigma, lambda, vp_noise_coefficients, vp_x0_form};
use super::{Algorithm, Combine, Program, Schedule, Slot};

pub(super) struct UniPc;

/// The order diffusers' `step` gives the predictor at step `i`, the `j`-th of the run:
/// `min(solver_order, steps − i, warm-up + 1)`.
fn predictor_order(n: usize, i: usize, j: usize) -> usize {
    2.min(n - i).min(j + 1)
}

/// `(h, e^{−h} − 1)` from σ_s to σ_t (B(h) of bh2 is the same e^{−h} − 1).
fn step_h(s: &Schedule, from: usize, to: usize) -> (f64, f64) {
    let h = lambda(s.sigmas[to]) - lambda(s.sigmas[from]);
    (h, (-h).exp_m1())
}

impl Algorithm for UniPc {
    fn set_schedule(&self, s: &mut Schedule) {
        s.set_multistep(false);
    }

    fn noise_coefficients(&self, s: &Schedule, k: usize) -> (f32, f32) {
        vp_noise_coefficients(s, k)
    }

    fn program(&self, _s: &Schedule) -> Program {
        use Slot::{Model, State, Tmp, X};
        Program {
            states: 3,
            combines: vec![
                Combine::new(&[X, Model]),                             // 0: x₀ᵢ
                Combine::new(&[State(0), State(1), State(2), Tmp(0)]), // 1: UniC
                Combine::new(&[Tmp(1), X]),                            // 2: x_c (X on the first)
                Combine::new(&[State(1), Tmp(0)]),                     // 3: Dᵢ
                Combine::new(&[Tmp(2), Tmp(0), Tmp(3)]),               // 4: UniP
            ],
            output: Tmp(4),
            updates: vec![(0, Tmp(2)), (1, Tmp(0)), (2, Tmp(3))],
        }
    }

    fn coefficients(&self, s: &Schedule, i: usize, j: usize) -> Vec<f64> {
        let n = s.timesteps.len();
        let sg = &s.sigmas;
        let x0 = vp_x0_form(s, sg[i]);
        // UniC, of the order the previous step predicted with.
        let (corr, pick) = if j == 0 {
            ([0.0; 4], [0.0, 1.0])
        } else {
            let (a_i, s_i) = alpha_sigma(sg[i]);
            let s_prev = alpha_sigma(sg[i - 1]).1;
            let (h, hphi1) = step_h(s, i - 1, i);
            let b_h = hphi1;
            let (rho0, rho1, r) = if predictor_order(n, i - 1, j - 1) == 1 {
                (0.0, 0.5, 1.0)
            } else {
                // R·ρ = b with R = [[1, 1], [r, 1]], b the φ-function terms over B(h).
                let hh = -h;
                let phi_2 = hphi1 / hh - 1.0;
                let phi_3 = phi_2 / hh - 0.5;
                let (b1, b2) = (phi_2 / b_h, phi_3 * 2.0 / b_h);
                let r = (lambda(sg[i - 2]) - lambda(sg[i - 1])) / h;
                let rho0 = (b1 - b2) / (1.0 - r);
                (rho0, b1 - rho0, r)
            };
            (
                [
                    s_i / s_prev,
                    -a_i * hphi1 + a_i * b_h * rho1,
                    -a_i * b_h * rho0 / r,
                    -a_i * b_h * rho1,
                ],
                [1.0, 0.0],
            )
        };
        // UniP.
        let pred = if sg[i + 1] == 0.0 {
            // σ_t = 0 (the last step, first order): x' = x₀ᵢ.
            [0.0, 1.0, 0.0]
        } else {
            let (a_t, s_t) = alpha_sigma(sg[i + 1]);
            let s_s = alpha_sigma(sg[i]).1;
            let (h, hphi1) = step_h(s, i, i + 1);
            let d = if predictor_order(n, i, j) == 2 {
                let r = (lambda(sg[i - 1]) - lambda(sg[i])) / h;
                -a_t * hphi1 * 0.5 / r
            } else {
                0.0
            };
            [s_t / s_s, -a_t * hphi1, d]
        };
        let mut c = vec![x0[0], x0[1]];
        c.extend(corr);
        c.extend(pick);
        c.extend([1.0, -1.0]);
        c.extend(pred);
        c
    }
}
