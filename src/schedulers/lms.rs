//! diffusers `LMSDiscreteScheduler` (linear multistep, order 4): `x' = x + Σₖ cₖ·dₖ` over the
//! current and up to three past derivatives `d = (x − x₀)/σ`, each cₖ the integral of its
//! Lagrange basis polynomial over [σᵢ, σᵢ₊₁] (diffusers integrates numerically with
//! `scipy.integrate.quad`; the integrand is a polynomial, integrated exactly here).
//!
//! State: the three previous derivatives, most recent first.

use super::{Algorithm, Combine, Program, Schedule, Slot};

pub(super) struct Lms;

/// The pipelines call `step` with diffusers' default order.
const ORDER: usize = 4;

/// `∫_{σ_t}^{σ_{t+1}} Π_{k ≠ cur, k < order} (τ − σ_{t−k}) / (σ_{t−cur} − σ_{t−k}) dτ`.
fn lms_coefficient(sig: &[f64], order: usize, t: usize, cur: usize) -> f64 {
    // Ascending polynomial coefficients.
    let mut poly = vec![1.0];
    for k in (0..order).filter(|&k| k != cur) {
        let denom = sig[t - cur] - sig[t - k];
        let mut next = vec![0.0; poly.len() + 1];
        for (p, &c) in poly.iter().enumerate() {
            next[p + 1] += c / denom;
            next[p] -= c * sig[t - k] / denom;
        }
        poly = next;
    }
    let primitive = |x: f64| {
        poly.iter()
            .enumerate()
            .map(|(p, &c)| c * x.powi(p as i32 + 1) / (p + 1) as f64)
            .sum::<f64>()
    };
    primitive(sig[t + 1]) - primitive(sig[t])
}

impl Algorithm for Lms {
    fn set_schedule(&self, s: &mut Schedule) {
        s.set_euler();
    }

    fn sigma_space(&self) -> bool {
        true
    }

    fn noise_coefficients(&self, s: &Schedule, k: usize) -> (f32, f32) {
        (1.0, s.sigmas[k] as f32)
    }

    fn program(&self, _s: &Schedule) -> Program {
        use Slot::{Model, State, Tmp, X};
        Program {
            states: 3,
            combines: vec![
                Combine::new(&[X, Model]),                      // d
                Combine::new(&[X, Tmp(0), State(0), State(1)]), // x + c₀d + c₁d₋₁ + c₂d₋₂
                Combine::new(&[Tmp(1), State(2)]),              // + c₃d₋₃
                Combine::new(&[State(0)]),                      // the history, shifted
                Combine::new(&[State(1)]),
            ],
            output: Tmp(2),
            updates: vec![(0, Tmp(0)), (1, Tmp(3)), (2, Tmp(4))],
        }
    }

    /// diffusers' order at step i is `min(i + 1, 4)` (i counts from the schedule's start, so
    /// image-to-image's first step already takes order 4), and only the derivatives this run
    /// has made take part (`zip` with the history).
    fn coefficients(&self, s: &Schedule, i: usize, j: usize) -> Vec<f64> {
        let sg = s.sigmas[i];
        let [a, b] = s.sigma_x0_form(sg);
        let order = (i + 1).min(ORDER);
        let used = order.min(j + 1);
        let c: Vec<f64> = (0..ORDER)
            .map(|k| {
                if k < used {
                    lms_coefficient(&s.sigmas, order, i, k)
                } else {
                    0.0
                }
            })
            .collect();
        vec![
            (1.0 - a) / sg,
            -b / sg,
            1.0,
            c[0],
            c[1],
            c[2],
            1.0,
            c[3],
            1.0,
            1.0,
        ]
    }
}
