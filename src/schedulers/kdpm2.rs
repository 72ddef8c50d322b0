//! diffusers `KDPM2DiscreteScheduler` (DPM2, Karras et al. 2022's second-order sampler,
//! A1111's "DPM2"): each step takes an Euler step to the log-midpoint σ̂ = √(σ·σ') (first
//! order), re-evaluates the model there, and takes the full step from the saved sample with
//! that midpoint derivative. Like Heun, 2n − 1 model calls for n steps; the last step goes
//! to σ̂ = 0, which is the denoised sample.
//!
//! The schedule lists the model-call σ (`[σ₀, σ̂₁, σ₁, σ̂₂, σ₂, …, σₙ₋₁]` then 0) and
//! timesteps (`[t₀, t(σ̂₁), t₁, …]`, t(σ̂) read off the training σ as diffusers'
//! `_sigma_to_t` does); the model input is scaled by the call's σ.
//!
//! DPM2 ancestral (`KDPM2AncestralDiscreteScheduler`, A1111's "DPM2 a") splits each step
//! σ → σ' into a deterministic part down to σ↓ = √(σ'² − σ↑²), σ↑ = √(σ'²(σ² − σ'²)/σ²)
//! (Euler ancestral's split), takes the midpoint between σ and σ↓, and adds σ↑ of fresh
//! noise after the second-order update; the last step goes to 0 without noise.
//!
//! State: 0 the sample the first-order step started from.

use super::schedule::{f32r, log_f32, round_half_even, sigma_to_t, train_sigmas};
use super::{Algorithm, Combine, Program, Schedule, Slot};

pub(super) struct Kdpm2 {
    pub ancestral: bool,
}

/// The ancestral split of the step σ → σ' in f32 as diffusers computes it: `(σ↑, σ↓)`.
fn split(sigma: f64, next: f64) -> (f64, f64) {
    let (s, n) = (sigma as f32, next as f32);
    let up = (n * n * (s * s - n * n) / (s * s)).sqrt();
    let down = (n * n - up * up).sqrt();
    (f64::from(up), f64::from(down))
}

/// diffusers' `sigmas.log().lerp(sigmas.roll(1).log(), 0.5).exp()` at one point, in f32 as
/// torch computes it (its lerp for weight ≥ 0.5: `end − (end − start)·(1 − w)`).
fn log_midpoint(sigma: f64, previous: f64) -> f64 {
    let (start, end) = ((sigma as f32).ln(), (previous as f32).ln());
    f64::from((end - (end - start) * 0.5).exp())
}

impl Algorithm for Kdpm2 {
    fn order(&self) -> usize {
        2
    }

    fn set_schedule(&self, s: &mut Schedule) {
        s.set_euler();
        if s.cfg.use_karras_sigmas {
            // KDPM2 rounds the Karras timesteps (Euler and Heun keep them fractional).
            for t in &mut s.timesteps {
                *t = round_half_even(*t);
            }
        }
        let (ts, sg) = (
            std::mem::take(&mut s.timesteps),
            std::mem::take(&mut s.sigmas),
        );
        let log_sigmas = log_f32(&train_sigmas(&s.ac));
        let n = ts.len();
        // The second-order call of step j − 1 → j runs at mid[j − 1], between σⱼ₋₁ and σⱼ
        // (ancestral: σ↓ of the step). The last step has none: its first-order update goes
        // to 0 (diffusers zeroes that midpoint).
        let mid: Vec<f64> = (1..n)
            .map(|j| match self.ancestral {
                false => log_midpoint(sg[j], sg[j - 1]),
                true => log_midpoint(sg[j - 1], split(sg[j - 1], sg[j]).1),
            })
            .collect();
        s.timesteps = std::iter::once(ts[0])
            .chain((1..n).flat_map(|j| [f32r(sigma_to_t(mid[j - 1], &log_sigmas)), ts[j]]))
            .collect();
        s.sigmas = std::iter::once(sg[0])
            .chain((1..n).flat_map(|j| [mid[j - 1], sg[j]]))
            .chain(std::iter::once(0.0))
            .collect();
    }

    fn needs_noise(&self, _s: &Schedule, i: usize) -> bool {
        self.ancestral && i % 2 == 1
    }

    fn sigma_space(&self) -> bool {
        true
    }

    fn noise_coefficients(&self, s: &Schedule, k: usize) -> (f32, f32) {
        (1.0, s.sigmas[k] as f32)
    }

    fn program(&self, _s: &Schedule) -> Program {
        use Slot::{Model, Noise, State, Tmp, X};
        let terms: &[Slot] = match self.ancestral {
            true => &[X, Model, State(0), Noise],
            false => &[X, Model, State(0)],
        };
        Program {
            states: 1,
            combines: vec![Combine::new(terms)],
            output: Tmp(0),
            updates: vec![(0, X)],
        }
    }

    /// First order (even i, at σ): `d = (x − x₀(σ))/σ`, `x' = x + d·(σ̂ − σ)`, keeping x.
    /// Second order (odd i, at σ̂): `d = (x − x₀(σ̂))/σ̂`, `x' = x_saved + d·(σ' − σ)`;
    /// ancestral: `x' = x_saved + d·(σ↓ − σ) + σ↑·noise`.
    fn coefficients(&self, s: &Schedule, i: usize, _j: usize) -> Vec<f64> {
        let at = s.sigmas[i];
        let [a, b] = s.sigma_x0_form(at);
        let (dx, dm) = ((1.0 - a) / at, -b / at);
        let mut c = if i % 2 == 0 {
            let dt = s.sigmas[i + 1] - at;
            vec![1.0 + dx * dt, dm * dt, 0.0]
        } else if self.ancestral {
            let (sigma, next) = (s.sigmas[i - 1], s.sigmas[i + 1]);
            let (up, down) = split(sigma, next);
            let dt = down - sigma;
            return vec![dx * dt, dm * dt, 1.0, up];
        } else {
            let dt = s.sigmas[i + 1] - s.sigmas[i - 1];
            vec![dx * dt, dm * dt, 1.0]
        };
        if self.ancestral {
            c.push(0.0);
        }
        c
    }
}
