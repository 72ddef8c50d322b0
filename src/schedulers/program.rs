//! A sampler's update as a fixed program of linear combinations: the same combinations every
//! step, only their coefficients change. The host reference runs it on vectors
//! ([`Program::run`] over [`LatentOps`]); a recorded step plan records it once over a device
//! table of coefficients (`crate::pipeline`), so the plan serves every step.

use super::LatentOps;
use crate::error::{Error, Result};

/// A value a combination reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The current sample.
    X,
    /// The (guided) model output.
    Model,
    /// This step's Gaussian noise (zero coefficient on steps that draw none).
    Noise,
    /// Sampler state kept between steps (PNDM's past outputs, DPM++'s previous x₀), zeros
    /// before the first step.
    State(usize),
    /// The result of an earlier combination of the same step.
    Tmp(usize),
}

/// `Σ cᵢ · termᵢ`, optionally clamped to `[−r, r]`; at most 4 terms (one kernel dispatch).
#[derive(Clone, Debug, PartialEq)]
pub struct Combine {
    pub terms: Vec<Slot>,
    pub clamp: Option<f64>,
}

impl Combine {
    pub fn new(terms: &[Slot]) -> Self {
        Self {
            terms: terms.to_vec(),
            clamp: None,
        }
    }
}

/// One step: `combines` in order (`Tmp(k)` is the k-th one's result), the next sample is
/// `output`, and each `(k, slot)` of `updates` becomes `State(k)` for the next step.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub states: usize,
    pub combines: Vec<Combine>,
    pub output: Slot,
    /// Sources are `X`, `Model`, `Noise` or `Tmp` (never a state: all updates read the old
    /// step's values).
    pub updates: Vec<(usize, Slot)>,
}

impl Program {
    /// Coefficients per step: one per term of every combination, in order.
    pub fn coefficient_count(&self) -> usize {
        self.combines.iter().map(|c| c.terms.len()).sum()
    }

    /// Structural checks (the kernels take at most 4 terms; slots must exist when read).
    pub fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error::unsupported("sampler program", what));
        for (k, c) in self.combines.iter().enumerate() {
            if c.terms.is_empty() || c.terms.len() > 4 {
                return bad(format!("combination {k} has {} terms", c.terms.len()));
            }
            for s in &c.terms {
                match *s {
                    Slot::Tmp(j) if j >= k => {
                        return bad(format!("combination {k} reads Tmp({j})"));
                    }
                    Slot::State(j) if j >= self.states => {
                        return bad(format!("combination {k} reads State({j})"));
                    }
                    _ => {}
                }
            }
        }
        for &(k, s) in &self.updates {
            if k >= self.states || matches!(s, Slot::State(_)) {
                return bad(format!("update of State({k}) from {s:?}"));
            }
        }
        Ok(())
    }

    /// Runs one step over `ops`: `coefs` as [`Sampler::coefficients`](super::Sampler) gives
    /// them, `states` updated in place. Terms with coefficient 0 are left out (so a missing
    /// noise is fine where its coefficient is 0).
    pub fn run<O: LatentOps>(
        &self,
        ops: &mut O,
        coefs: &[f64],
        x: &O::V,
        m: &O::V,
        noise: Option<&O::V>,
        states: &mut Vec<O::V>,
    ) -> Result<O::V> {
        if coefs.len() != self.coefficient_count() {
            return Err(Error::unsupported(
                "sampler program",
                format!(
                    "{} coefficients for {} terms",
                    coefs.len(),
                    self.coefficient_count()
                ),
            ));
        }
        while states.len() < self.states {
            states.push(ops.zeros_like(x)?);
        }
        let mut tmps: Vec<O::V> = Vec::with_capacity(self.combines.len());
        let mut next = 0;
        for c in &self.combines {
            let mut terms: Vec<(f64, &O::V)> = Vec::with_capacity(c.terms.len());
            for s in &c.terms {
                let k = coefs[next];
                next += 1;
                if k == 0.0 {
                    continue;
                }
                let v = match *s {
                    Slot::X => x,
                    Slot::Model => m,
                    Slot::Noise => noise.ok_or_else(|| {
                        Error::unsupported("sampler", "this step needs noise and got none")
                    })?,
                    Slot::State(j) => &states[j],
                    Slot::Tmp(j) => &tmps[j],
                };
                terms.push((k, v));
            }
            let v = if terms.is_empty() {
                ops.zeros_like(x)?
            } else {
                ops.lincomb(&terms)?
            };
            let v = match c.clamp {
                Some(r) => ops.clamp(&v, r)?,
                None => v,
            };
            tmps.push(v);
        }
        let pick = |s: Slot, tmps: &[O::V], states: &[O::V]| -> Result<O::V> {
            Ok(match s {
                Slot::X => x.clone(),
                Slot::Model => m.clone(),
                Slot::Noise => noise
                    .cloned()
                    .ok_or_else(|| Error::unsupported("sampler", "no noise"))?,
                Slot::State(j) => states[j].clone(),
                Slot::Tmp(j) => tmps[j].clone(),
            })
        };
        let out = pick(self.output, &tmps, states)?;
        let updated: Vec<(usize, O::V)> = self
            .updates
            .iter()
            .map(|&(k, s)| pick(s, &tmps, states).map(|v| (k, v)))
            .collect::<Result<_>>()?;
        for (k, v) in updated {
            states[k] = v;
        }
        Ok(out)
    }
}
