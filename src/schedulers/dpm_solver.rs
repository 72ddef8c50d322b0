//! diffusers `DPMSolverMultistepScheduler` with `dpmsolver++` (DPM++ 2M) or `sde-dpmsolver++`
//! (DPM++ 2M SDE: fresh Gaussian noise every step), order 2, midpoint,
//! `final_sigmas_type = "zero"` (the last step is first order).

use super::{Algorithm, Combine, Prediction, Program, Schedule, Slot};

pub(super) struct DpmPP2M {
    pub karras: bool,
    pub sde: bool,
}

/// DPM++'s VP pair at σ: α = 1/√(σ²+1), σ_t = σ·α (DEIS and UniPC share it).
pub(super) fn alpha_sigma(s: f64) -> (f64, f64) {
    let a = 1.0 / (s * s + 1.0).sqrt();
    (a, s * a)
}

/// `add_noise`'s `(α, σ)` at step `k` of a VP multistep solver (DPM++, DEIS, UniPC), in f32
/// as diffusers computes them from its f32 σ.
pub(super) fn vp_noise_coefficients(s: &Schedule, k: usize) -> (f32, f32) {
    let sg = s.sigmas[k] as f32;
    let a = 1.0 / (sg * sg + 1.0).sqrt();
    (a, sg * a)
}

/// λ = log α − log σ (+∞ at σ = 0).
pub(super) fn lambda(s: f64) -> f64 {
    let (a, sg) = alpha_sigma(s);
    a.ln() - sg.ln()
}

/// The multistep solvers' `convert_model_output` x₀ as `[c_x, c_m]` at σ (the sample and the
/// model output on the VP scale: no input scaling).
pub(super) fn vp_x0_form(s: &Schedule, sigma: f64) -> [f64; 2] {
    let (a, sg) = alpha_sigma(sigma);
    match s.cfg.prediction {
        Prediction::Epsilon => [1.0 / a, -sg / a],
        Prediction::VPrediction => [a, -sg],
        Prediction::Sample => [0.0, 1.0],
    }
}

impl Algorithm for DpmPP2M {
    fn set_schedule(&self, s: &mut Schedule) {
        s.set_dpm(self.karras);
    }

    fn noise_coefficients(&self, s: &Schedule, k: usize) -> (f32, f32) {
        vp_noise_coefficients(s, k)
    }

    /// diffusers draws the SDE's noise on every step (the last one's weight is 0).
    fn needs_noise(&self, _s: &Schedule, _i: usize) -> bool {
        self.sde
    }

    /// `x₀ = f(x, m)`; `x' = c_x·x + c_0·x₀ + c_1·x₀_prev (+ c_n·noise)`; the state keeps x₀.
    fn program(&self, _s: &Schedule) -> Program {
        let mut update = vec![Slot::X, Slot::Tmp(0), Slot::State(0)];
        if self.sde {
            update.push(Slot::Noise);
        }
        Program {
            states: 1,
            combines: vec![Combine::new(&[Slot::X, Slot::Model]), Combine::new(&update)],
            output: Slot::Tmp(1),
            updates: vec![(0, Slot::Tmp(0))],
        }
    }

    fn coefficients(&self, s: &Schedule, i: usize, j: usize) -> Vec<f64> {
        let s_s = alpha_sigma(s.sigmas[i]).1;
        let x0f = vp_x0_form(s, s.sigmas[i]);
        let s_next = s.sigmas[i + 1];
        let last = i + 1 == s.timesteps.len();
        let (update, noise) = if s_next == 0.0 {
            // σ_t = 0: every first-order formula reduces to x₀ (and the noise vanishes).
            ([0.0, 1.0, 0.0], 0.0)
        } else {
            let (a_t, s_t) = alpha_sigma(s_next);
            let h = lambda(s_next) - lambda(s.sigmas[i]);
            // ODE: x' = σ_t/σ_s·x − α_t(e^{−h} − 1)·D; SDE: σ_t/σ_s·e^{−h}·x
            // + α_t(1 − e^{−2h})·D + σ_t√(1 − e^{−2h})·z.
            let (cx, k, n) = if self.sde {
                let e2 = 1.0 - (-2.0 * h).exp();
                (s_t / s_s * (-h).exp(), -a_t * e2, s_t * e2.sqrt())
            } else {
                (s_t / s_s, a_t * ((-h).exp() - 1.0), 0.0)
            };
            if j > 0 && !last {
                let r0 = (lambda(s.sigmas[i]) - lambda(s.sigmas[i - 1])) / h;
                ([cx, -k * (1.0 + 0.5 / r0), 0.5 * k / r0], n)
            } else {
                ([cx, -k, 0.0], n)
            }
        };
        let mut c = vec![x0f[0], x0f[1], update[0], update[1], update[2]];
        if self.sde {
            c.push(noise);
        }
        c
    }
}
