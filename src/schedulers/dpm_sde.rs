//! diffusers `DPMSolverSDEScheduler` (DPM++ SDE, k-diffusion's `sample_dpmpp_sde` with
//! r = ½, A1111's "DPM++ SDE"): each step σ → σ' first goes to the log-midpoint
//! σ̂ = e^{−(t + (t' − t)/2)} (t = −log σ) with the model at σ, then takes the whole step from
//! the saved sample with the model re-evaluated at σ̂; both halves are ancestral (the
//! deterministic part down to σ↓, then σ↑ of noise). The last step, to σ' = 0, is a plain
//! Euler step (x₀). 2n − 1 model calls for n steps.
//!
//! The noise comes from a Brownian tree over [σ_min, σ_max] (`crate::brownian`): the half step
//! reads its increment over [σ̂, σ], the whole step over [σ', σ], each over the square root of
//! its length, so that a seed gives diffusers' noise (its `noise_sampler_seed`; the engine
//! passes the image seed).
//!
//! The schedule lists the model-call σ (`[σ₀, σ̂₀, σ₁, σ̂₁, …, σₙ₋₁]` then 0) and timesteps
//! (the midpoints' read off the training σ, unrounded, as diffusers' `_second_order_timesteps`).
//!
//! State: 0 the sample the half step started from.

use super::schedule::{log_f32, sigma_to_t, train_sigmas};
use super::{Algorithm, Combine, Prediction, Program, Schedule, ScheduleConfig, Slot};
use crate::error::{Error, Result};

pub(super) struct DpmSde;

/// σ → t → σ in f32, as diffusers' `sigma_fn(t_fn(σ))` round-trips it.
fn round_trip(s: f32) -> f32 {
    (-(-s.ln())).exp()
}

/// The log-midpoint of σ and σ' in f32 as diffusers computes it.
fn midpoint(sigma: f32, next: f32) -> f32 {
    let (t, tn) = (-sigma.ln(), -next.ln());
    (-(t + (tn - t) * 0.5)).exp()
}

/// The ancestral split of σ_from → σ_to: `(σ↑, σ↓)` in f32.
fn split(from: f32, to: f32) -> (f32, f32) {
    let up = to.min((to * to * (from * from - to * to) / (from * from)).sqrt());
    (up, (to * to - up * up).sqrt())
}

impl DpmSde {
    /// The `(σ, σ')` the step's noise is queried at, as the f32 values diffusers passes.
    fn interval(s: &Schedule, i: usize) -> Option<(f32, f32)> {
        let n = s.timesteps.len();
        if i + 1 >= n {
            return None; // the last step (to 0) draws none
        }
        Some(if i % 2 == 0 {
            (round_trip(s.sigmas[i] as f32), s.sigmas[i + 1] as f32)
        } else {
            (
                round_trip(s.sigmas[i - 1] as f32),
                round_trip(s.sigmas[i + 1] as f32),
            )
        })
    }
}

impl Algorithm for DpmSde {
    fn order(&self) -> usize {
        2
    }

    fn check(&self, cfg: &ScheduleConfig, _steps: usize) -> Result<()> {
        if cfg.prediction == Prediction::Sample {
            return Err(Error::unsupported(
                "sampler",
                "DPM++ SDE with prediction_type `sample` (diffusers does not implement it)",
            ));
        }
        Ok(())
    }

    fn set_schedule(&self, s: &mut Schedule) {
        // DPMSolverSDEScheduler keeps its timesteps in f64; its σ are Euler's.
        s.set_euler();
        let (ts, sg) = (
            std::mem::take(&mut s.timesteps),
            std::mem::take(&mut s.sigmas),
        );
        let log_sigmas = log_f32(&train_sigmas(&s.ac));
        let n = ts.len();
        let mids: Vec<f64> = (1..n)
            .map(|j| f64::from(midpoint(sg[j - 1] as f32, sg[j] as f32)))
            .collect();
        // diffusers reads the midpoint timesteps off the σ before their f32 rounding.
        let mid_ts: Vec<f64> = (1..n)
            .map(|j| {
                let (t, tn) = (-sg[j - 1].ln(), -sg[j].ln());
                sigma_to_t((-(t + (tn - t) * 0.5)).exp(), &log_sigmas)
            })
            .collect();
        s.timesteps = std::iter::once(ts[0])
            .chain((1..n).flat_map(|j| [mid_ts[j - 1], ts[j]]))
            .collect();
        s.sigmas = std::iter::once(sg[0])
            .chain((1..n).flat_map(|j| [mids[j - 1], sg[j]]))
            .chain(std::iter::once(0.0))
            .collect();
    }

    fn sigma_space(&self) -> bool {
        true
    }

    fn noise_coefficients(&self, s: &Schedule, k: usize) -> (f32, f32) {
        (1.0, s.sigmas[k] as f32)
    }

    fn needs_noise(&self, s: &Schedule, i: usize) -> bool {
        Self::interval(s, i).is_some()
    }

    fn brownian_interval(&self, s: &Schedule, i: usize) -> Option<(f32, f32)> {
        Self::interval(s, i)
    }

    /// `x₀ = a·x + b·m`; `x' = c_x·x + c_s·x_saved + c_0·x₀ + σ↑·noise`; the state keeps x.
    fn program(&self, _s: &Schedule) -> Program {
        use Slot::{Model, Noise, State, Tmp, X};
        Program {
            states: 1,
            combines: vec![
                Combine::new(&[X, Model]),
                Combine::new(&[X, State(0), Tmp(0), Noise]),
            ],
            output: Tmp(1),
            updates: vec![(0, X)],
        }
    }

    fn coefficients(&self, s: &Schedule, i: usize, _j: usize) -> Vec<f64> {
        let [a, b] = s.sigma_x0_form(s.sigmas[i]);
        let update = match Self::interval(s, i) {
            // The last step: Euler to σ' = 0 is x₀.
            None => [0.0, 0.0, 1.0, 0.0],
            Some((from, to)) => {
                let (up, down) = split(from, to);
                // (e^{−t↓}/e^{−t})·x − expm1(t − t↓)·x₀ with t = −log σ, t↓ = −log σ↓ (f32).
                let sigma = s.sigmas[if i % 2 == 0 { i } else { i - 1 }] as f32;
                let (t, t_down) = (-sigma.ln(), -down.ln());
                let ratio = f64::from((-t_down).exp() / (-t).exp());
                let c0 = f64::from(-(t - t_down).exp_m1());
                let (cx, cs) = if i % 2 == 0 {
                    (ratio, 0.0)
                } else {
                    (0.0, ratio)
                };
                [cx, cs, c0, f64::from(up)]
            }
        };
        vec![a, b, update[0], update[1], update[2], update[3]]
    }
}
