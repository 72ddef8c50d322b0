//! Samplers: DDIM (η ≥ 0), DDPM, PNDM (PLMS, SD 1.5's default), Euler, Euler ancestral and
//! DPM++ 2M (with or without Karras sigmas), matching diffusers' schedulers step for step.
//!
//! The schedule math ([`schedule`]) runs once on the CPU. Each step is written once, as in
//! diffusers, over [`LatentOps`] — linear combinations and a clamp of latent tensors — so the
//! same sampler code runs on host vectors ([`HostOps`], the reference the tests check against
//! diffusers) and on GPU tensors ([`GpuOps`], over the engine's kernels). Where a step
//! needs no clamp it is folded into one linear combination of (x, model output, noise).

pub mod schedule;

pub use schedule::{BetaSchedule, Prediction, ScheduleConfig, Spacing};

use crate::error::{Error, Result};
use schedule::{
    discrete_timesteps, interp, karras_sigmas, linspace, round_half_even, sigma_to_t, train_sigmas,
};

/// Linear algebra on latents that the samplers need.
pub trait LatentOps {
    type V: Clone;
    /// `Σ cᵢ · vᵢ`.
    fn lincomb(&mut self, terms: &[(f64, &Self::V)]) -> Result<Self::V>;
    /// `clamp(v, −r, r)` elementwise.
    fn clamp(&mut self, v: &Self::V, r: f64) -> Result<Self::V>;
}

/// [`LatentOps`] on host vectors, accumulating in f64.
pub struct HostOps;

impl LatentOps for HostOps {
    type V = Vec<f32>;
    fn lincomb(&mut self, terms: &[(f64, &Vec<f32>)]) -> Result<Vec<f32>> {
        let n = terms.first().map_or(0, |(_, v)| v.len());
        if terms.iter().any(|(_, v)| v.len() != n) {
            return Err(Error::shape("lincomb", "vectors of different lengths"));
        }
        Ok((0..n)
            .map(|i| terms.iter().map(|(c, v)| c * f64::from(v[i])).sum::<f64>() as f32)
            .collect())
    }
    fn clamp(&mut self, v: &Vec<f32>, r: f64) -> Result<Vec<f32>> {
        let r = r as f32;
        Ok(v.iter().map(|x| x.clamp(-r, r)).collect())
    }
}

/// [`LatentOps`] on GPU tensors: each operation records dispatches into `rec`
/// ([`crate::ops::lincomb`], [`crate::ops::clamp`]); nothing is submitted.
pub struct GpuOps<'r, 'g> {
    pub rec: &'r mut crate::gpu::Recorder<'g>,
}

impl LatentOps for GpuOps<'_, '_> {
    type V = crate::tensor::Tensor;
    fn lincomb(&mut self, terms: &[(f64, &Self::V)]) -> Result<Self::V> {
        let terms: Vec<(f32, &Self::V)> = terms.iter().map(|&(c, t)| (c as f32, t)).collect();
        crate::ops::lincomb(self.rec, &terms)
    }
    fn clamp(&mut self, v: &Self::V, r: f64) -> Result<Self::V> {
        crate::ops::clamp(self.rec, v, -r as f32, r as f32)
    }
}

/// The samplers, by the names the CLI takes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerKind {
    /// DDIM; `eta` 0 is deterministic, 1 is DDPM-like.
    Ddim {
        eta: f64,
    },
    Ddpm,
    /// PNDM with `skip_prk_steps` (pseudo linear multistep), SD 1.5's default.
    Pndm,
    Euler,
    EulerAncestral,
    /// DPM-Solver++ 2M (midpoint); `karras` uses Karras sigmas.
    DpmPP2M {
        karras: bool,
    },
}

impl SamplerKind {
    pub const NAMES: &'static str = "ddim, ddpm, pndm, euler, euler-a, dpm++2m, dpm++2m-karras";

    /// Parses a CLI name; an unknown name gets an error listing the known ones.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "ddim" => Self::Ddim { eta: 0.0 },
            "ddpm" => Self::Ddpm,
            "pndm" => Self::Pndm,
            "euler" => Self::Euler,
            "euler-a" | "euler_a" => Self::EulerAncestral,
            "dpm++2m" => Self::DpmPP2M { karras: false },
            "dpm++2m-karras" => Self::DpmPP2M { karras: true },
            o => {
                return Err(Error::unsupported(
                    "sampler",
                    format!("unknown sampler `{o}` (known: {})", Self::NAMES),
                ));
            }
        })
    }

    fn default_spacing(self) -> Spacing {
        match self {
            Self::Ddim { .. } | Self::Ddpm | Self::Pndm => Spacing::Leading,
            Self::Euler | Self::EulerAncestral | Self::DpmPP2M { .. } => Spacing::Linspace,
        }
    }

    /// Euler-family samplers work on σ-scaled latents ("VE" form); the others on ᾱ form.
    fn sigma_space(self) -> bool {
        matches!(self, Self::Euler | Self::EulerAncestral)
    }
}

/// One sampling run: the schedule for `steps` steps and the history between steps.
pub struct Sampler<V> {
    kind: SamplerKind,
    cfg: ScheduleConfig,
    spacing: Spacing,
    ac: Vec<f64>,
    final_ac: f64,
    steps: usize,
    timesteps: Vec<f64>,
    /// σ per step plus the final σ (Euler family, DPM++); empty otherwise.
    sigmas: Vec<f64>,
    step_index: usize,
    // PNDM
    ets: Vec<V>,
    cur_sample: Option<V>,
    counter: usize,
    // DPM++ 2M: the previous x₀ prediction
    x0_prev: Option<V>,
}

/// `np.log` of diffusers' f32 σ array (computed in f32).
fn log_f32(sigmas: &[f64]) -> Vec<f64> {
    sigmas.iter().map(|&s| f64::from((s as f32).ln())).collect()
}

/// Rounds to f32 and back: diffusers keeps its timesteps and sigmas in f32 tensors.
fn f32r(x: f64) -> f64 {
    f64::from(x as f32)
}

impl<V: Clone> Sampler<V> {
    pub fn new(kind: SamplerKind, cfg: &ScheduleConfig, steps: usize) -> Result<Self> {
        let n = cfg.num_train_timesteps;
        if steps == 0 || steps > n {
            return Err(Error::unsupported(
                "sampler",
                format!("{steps} steps (1 to {n} with this schedule)"),
            ));
        }
        if let SamplerKind::Ddim { eta } = kind {
            if !(0.0..=1.0).contains(&eta) {
                return Err(Error::unsupported(
                    "sampler",
                    format!("DDIM eta = {eta} (0 to 1)"),
                ));
            }
        }
        if kind == SamplerKind::EulerAncestral && cfg.prediction == Prediction::Sample {
            return Err(Error::unsupported(
                "sampler",
                "euler-a with prediction_type `sample` (diffusers does not implement it)",
            ));
        }
        let spacing = cfg.spacing.unwrap_or(kind.default_spacing());
        // Leading spacing adds steps_offset to (steps − 1)·(n / steps): past the training
        // range diffusers fails with an index error; say why instead.
        let last = (steps - 1) * (n / steps) + cfg.steps_offset;
        if spacing == Spacing::Leading && last >= n {
            return Err(Error::unsupported(
                "sampler",
                format!(
                    "{steps} steps with steps_offset {} reach timestep {last}, beyond the {n} \
                     training timesteps",
                    cfg.steps_offset
                ),
            ));
        }
        let ac = cfg.alphas_cumprod();
        let final_ac = if cfg.set_alpha_to_one { 1.0 } else { ac[0] };
        let mut s = Self {
            kind,
            cfg: cfg.clone(),
            spacing,
            final_ac,
            steps,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            step_index: 0,
            ets: Vec::new(),
            cur_sample: None,
            counter: 0,
            x0_prev: None,
            ac,
        };
        match kind {
            SamplerKind::Ddim { .. } | SamplerKind::Ddpm => {
                s.timesteps = discrete_timesteps(cfg, spacing, steps)
            }
            SamplerKind::Pndm => s.timesteps = s.pndm_timesteps(),
            SamplerKind::Euler | SamplerKind::EulerAncestral => s.set_euler_schedule(),
            SamplerKind::DpmPP2M { karras } => s.set_dpm_schedule(karras),
        }
        Ok(s)
    }

    /// Timesteps to call the model with, one per step (fractional for Euler).
    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// σ per step and the final σ, for the samplers that use them.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// Standard deviation of the initial noise (diffusers' `init_noise_sigma`).
    pub fn init_noise_sigma(&self) -> f64 {
        if !self.kind.sigma_space() {
            return 1.0;
        }
        let max = self.sigmas.iter().cloned().fold(0.0, f64::max);
        match self.spacing {
            Spacing::Linspace | Spacing::Trailing => max,
            Spacing::Leading => (max * max + 1.0).sqrt(),
        }
    }

    /// Factor applied to the latents before the model call at step `i`
    /// (diffusers' `scale_model_input`).
    pub fn input_scale(&self, i: usize) -> f64 {
        if self.kind.sigma_space() {
            let s = self.sigmas[i] as f32;
            f64::from(1.0 / (s * s + 1.0).sqrt())
        } else {
            1.0
        }
    }

    /// Image-to-image (diffusers' `get_timesteps`): the step index sampling starts at for
    /// `strength` ∈ [0, 1] — `steps − min(⌊steps·strength⌋, steps)` (every sampler here has
    /// order 1). Strength 1 starts at 0, strength 0 skips every step.
    pub fn start_index(steps: usize, strength: f64) -> usize {
        let init = ((steps as f64 * strength).floor() as usize).min(steps);
        steps - init
    }

    /// Starts the run at step `k` (diffusers' `set_begin_index` / sliced timesteps): the
    /// multistep histories start empty there.
    pub fn begin_at(&mut self, k: usize) -> Result<()> {
        if self.step_index != 0 || k > self.timesteps.len() {
            return Err(Error::unsupported(
                "sampler",
                format!(
                    "begin at step {k} of {} (only before the first step)",
                    self.timesteps.len()
                ),
            ));
        }
        self.step_index = k;
        Ok(())
    }

    /// `(a, b)` of diffusers' `scheduler.add_noise(x₀, noise, timesteps[k])` = a·x₀ + b·noise:
    /// DDIM / DDPM / PNDM √ᾱ_t and √(1−ᾱ_t) (in f32, as diffusers computes them); Euler σ_k
    /// (a = 1); DPM++ its VP pair α_t = 1/√(σ²+1), σ_t = σ·α_t.
    pub fn noise_coefficients(&self, k: usize) -> (f32, f32) {
        match self.kind {
            SamplerKind::Euler | SamplerKind::EulerAncestral => (1.0, self.sigmas[k] as f32),
            SamplerKind::DpmPP2M { .. } => {
                let s = self.sigmas[k] as f32;
                let a = 1.0 / (s * s + 1.0).sqrt();
                (a, s * a)
            }
            _ => {
                let t = self.timesteps[k] as usize;
                let ac = self.ac[t] as f32;
                (ac.sqrt(), (1.0 - ac).sqrt())
            }
        }
    }

    /// Whether step `i` draws Gaussian noise (pass it to [`Sampler::step`]).
    pub fn needs_noise(&self, i: usize) -> bool {
        match self.kind {
            SamplerKind::Ddim { eta } => eta > 0.0,
            SamplerKind::Ddpm => self.timesteps[i] > 0.0,
            SamplerKind::EulerAncestral => true,
            _ => false,
        }
    }

    fn pndm_timesteps(&self) -> Vec<f64> {
        let (n, steps) = (self.cfg.num_train_timesteps, self.steps);
        // Ascending base timesteps.
        let base: Vec<f64> = match self.spacing {
            Spacing::Linspace => linspace(0.0, (n - 1) as f64, steps)
                .iter()
                .map(|&t| round_half_even(t))
                .collect(),
            Spacing::Leading => (0..steps)
                .map(|i| (i * (n / steps) + self.cfg.steps_offset) as f64)
                .collect(),
            Spacing::Trailing => {
                let mut t = discrete_timesteps(&self.cfg, Spacing::Trailing, steps);
                t.reverse();
                t
            }
        };
        // PLMS order: all but the last, the second-to-last again, the last; then reversed.
        let k = base.len();
        let mut plms: Vec<f64> = base[..k - 1].to_vec();
        if k >= 2 {
            plms.push(base[k - 2]);
        }
        plms.push(base[k - 1]);
        plms.reverse();
        plms
    }

    fn set_euler_schedule(&mut self) {
        let (n, steps) = (self.cfg.num_train_timesteps, self.steps);
        let full = train_sigmas(&self.ac);
        let mut ts: Vec<f64> = match self.spacing {
            Spacing::Linspace => linspace(0.0, (n - 1) as f64, steps)
                .iter()
                .rev()
                .map(|&t| f32r(t))
                .collect(),
            Spacing::Leading => (0..steps)
                .rev()
                .map(|i| ((i * (n / steps)) + self.cfg.steps_offset) as f64)
                .collect(),
            Spacing::Trailing => discrete_timesteps(&self.cfg, Spacing::Trailing, steps),
        };
        let mut sig: Vec<f64> = ts.iter().map(|&t| interp(t, &full)).collect();
        if self.cfg.use_karras_sigmas {
            let log_sigmas = log_f32(&full);
            sig = karras_sigmas(sig[steps - 1], sig[0], steps);
            ts = sig
                .iter()
                .map(|&s| f32r(sigma_to_t(s, &log_sigmas)))
                .collect();
        }
        sig.push(0.0);
        self.sigmas = sig.into_iter().map(f32r).collect();
        self.timesteps = ts;
    }

    fn set_dpm_schedule(&mut self, karras: bool) {
        let (n, steps) = (self.cfg.num_train_timesteps, self.steps);
        let full = train_sigmas(&self.ac);
        let log_sigmas = log_f32(&full);
        let mut ts: Vec<f64> = match self.spacing {
            Spacing::Linspace => {
                let t = linspace(0.0, (n - 1) as f64, steps + 1);
                t.iter()
                    .rev()
                    .take(steps)
                    .map(|&x| round_half_even(x))
                    .collect()
            }
            Spacing::Leading => {
                let ratio = n / (steps + 1);
                (1..=steps)
                    .rev()
                    .map(|i| (i * ratio + self.cfg.steps_offset) as f64)
                    .collect()
            }
            Spacing::Trailing => discrete_timesteps(&self.cfg, Spacing::Trailing, steps),
        };
        let mut sig: Vec<f64>;
        if karras || self.cfg.use_karras_sigmas {
            sig = karras_sigmas(full[0], full[n - 1], steps);
            ts = sig
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sigmas);
                    if self.cfg.beta_schedule == BetaSchedule::SquaredCosCapV2 {
                        t
                    } else {
                        round_half_even(t)
                    }
                })
                .collect();
        } else {
            sig = ts.iter().map(|&t| interp(t, &full)).collect();
        }
        sig.push(0.0);
        self.sigmas = sig.into_iter().map(f32r).collect();
        self.timesteps = ts;
    }

    /// (x₀, ε) as linear forms `[c_x, c_m]` of the sample and the model output at ᾱ = `a`.
    fn vp_forms(&self, a: f64) -> ([f64; 2], [f64; 2]) {
        let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
        match self.cfg.prediction {
            Prediction::Epsilon => ([1.0 / sa, -sb / sa], [0.0, 1.0]),
            Prediction::VPrediction => ([sa, -sb], [sb, sa]),
            Prediction::Sample => ([0.0, 1.0], [1.0 / sb, -sa / sb]),
        }
    }

    fn ac_at(&self, t: f64, fallback: f64) -> f64 {
        if t >= 0.0 {
            self.ac[t as usize]
        } else {
            fallback
        }
    }

    /// Step `i`: from the sample `x` and the (guided) model output `m` to the next sample.
    /// `noise` is required when [`Sampler::needs_noise`] says so.
    pub fn step<O: LatentOps<V = V>>(
        &mut self,
        ops: &mut O,
        i: usize,
        x: &V,
        m: &V,
        noise: Option<&V>,
    ) -> Result<V> {
        if i != self.step_index || i >= self.timesteps.len() {
            return Err(Error::unsupported(
                "sampler",
                format!(
                    "step {i} called, expected step {} of {}",
                    self.step_index,
                    self.timesteps.len()
                ),
            ));
        }
        if self.needs_noise(i) && noise.is_none() {
            return Err(Error::unsupported(
                "sampler",
                format!("step {i} of {:?} needs noise", self.kind),
            ));
        }
        let out = match self.kind {
            SamplerKind::Ddim { eta } => self.step_ddim(ops, i, x, m, noise, eta),
            SamplerKind::Ddpm => self.step_ddpm(ops, i, x, m, noise),
            SamplerKind::Pndm => self.step_pndm(ops, i, x, m),
            SamplerKind::Euler | SamplerKind::EulerAncestral => {
                self.step_euler(ops, i, x, m, noise)
            }
            SamplerKind::DpmPP2M { .. } => self.step_dpm(ops, i, x, m),
        }?;
        self.step_index += 1;
        Ok(out)
    }

    /// `k0·x₀ + ke·ε + kx·x (+ kn·noise)`, clamping x₀ first when the config asks.
    #[allow(clippy::too_many_arguments)]
    fn combine<O: LatentOps<V = V>>(
        &self,
        ops: &mut O,
        x: &V,
        m: &V,
        (x0f, ef): ([f64; 2], [f64; 2]),
        [k0, ke, kx]: [f64; 3],
        noise: Option<(f64, &V)>,
    ) -> Result<V> {
        let mut terms: Vec<(f64, &V)> = Vec::with_capacity(4);
        let x0;
        if let Some(r) = self.cfg.clip_sample {
            let raw = ops.lincomb(&[(x0f[0], x), (x0f[1], m)])?;
            x0 = ops.clamp(&raw, r)?;
            terms.extend([(k0, &x0), (ke * ef[0] + kx, x), (ke * ef[1], m)]);
        } else {
            terms.extend([
                (k0 * x0f[0] + ke * ef[0] + kx, x),
                (k0 * x0f[1] + ke * ef[1], m),
            ]);
        }
        if let Some(z) = noise {
            terms.push(z);
        }
        ops.lincomb(&terms)
    }

    /// diffusers `DDIMScheduler.step` (Song et al. 2020, eq. 12).
    fn step_ddim<O: LatentOps<V = V>>(
        &mut self,
        ops: &mut O,
        i: usize,
        x: &V,
        m: &V,
        noise: Option<&V>,
        eta: f64,
    ) -> Result<V> {
        let t = self.timesteps[i];
        let prev = t - (self.cfg.num_train_timesteps / self.steps) as f64;
        let (a_t, a_prev) = (self.ac[t as usize], self.ac_at(prev, self.final_ac));
        let variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev);
        let std = eta * variance.sqrt();
        let dir = (1.0 - a_prev - std * std).max(0.0).sqrt();
        let z = if eta > 0.0 {
            noise.map(|z| (std, z))
        } else {
            None
        };
        self.combine(ops, x, m, self.vp_forms(a_t), [a_prev.sqrt(), dir, 0.0], z)
    }

    /// diffusers `DDPMScheduler.step` (posterior mean, "fixed_small" variance).
    fn step_ddpm<O: LatentOps<V = V>>(
        &mut self,
        ops: &mut O,
        i: usize,
        x: &V,
        m: &V,
        noise: Option<&V>,
    ) -> Result<V> {
        let t = self.timesteps[i];
        let prev = t - (self.cfg.num_train_timesteps / self.steps) as f64;
        let (a_t, a_prev) = (self.ac[t as usize], self.ac_at(prev, 1.0));
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let cur_alpha = a_t / a_prev;
        let cur_beta = 1.0 - cur_alpha;
        let k0 = a_prev.sqrt() * cur_beta / b_t;
        let kx = cur_alpha.sqrt() * b_prev / b_t;
        let z = if t > 0.0 {
            let variance = (b_prev / b_t * cur_beta).max(1e-20);
            noise.map(|z| (variance.sqrt(), z))
        } else {
            None
        };
        let forms = self.vp_forms(a_t);
        self.combine(ops, x, m, forms, [k0, 0.0, kx], z)
    }

    /// diffusers `PNDMScheduler.step_plms` (skip_prk_steps): linear multistep over the last
    /// four model outputs, with its special second step.
    fn step_pndm<O: LatentOps<V = V>>(&mut self, ops: &mut O, i: usize, x: &V, m: &V) -> Result<V> {
        let ratio = (self.cfg.num_train_timesteps / self.steps) as f64;
        let mut t = self.timesteps[i];
        let mut prev = t - ratio;
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.remove(0);
            }
            self.ets.push(m.clone());
        } else {
            prev = t;
            t += ratio;
        }
        let e = &self.ets;
        let k = e.len();
        let mut sample = x.clone();
        let mo = if k == 1 && self.counter == 0 {
            self.cur_sample = Some(x.clone());
            m.clone()
        } else if k == 1 && self.counter == 1 {
            sample = self
                .cur_sample
                .take()
                .ok_or_else(|| Error::unsupported("sampler", "PNDM lost its saved sample"))?;
            ops.lincomb(&[(0.5, m), (0.5, &e[0])])?
        } else if k == 2 {
            ops.lincomb(&[(1.5, &e[1]), (-0.5, &e[0])])?
        } else if k == 3 {
            ops.lincomb(&[
                (23.0 / 12.0, &e[2]),
                (-16.0 / 12.0, &e[1]),
                (5.0 / 12.0, &e[0]),
            ])?
        } else {
            ops.lincomb(&[
                (55.0 / 24.0, &e[3]),
                (-59.0 / 24.0, &e[2]),
                (37.0 / 24.0, &e[1]),
                (-9.0 / 24.0, &e[0]),
            ])?
        };
        // _get_prev_sample (F-PNDM eq. 9).
        let (a_t, a_prev) = (self.ac[t as usize], self.ac_at(prev, self.final_ac));
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        let k_m = -(a_prev - a_t) / denom;
        self.counter += 1;
        match self.cfg.prediction {
            Prediction::Epsilon => ops.lincomb(&[(sample_coeff, &sample), (k_m, &mo)]),
            // v → ε with the sample this step uses.
            Prediction::VPrediction => ops.lincomb(&[
                (sample_coeff + k_m * b_t.sqrt(), &sample),
                (k_m * a_t.sqrt(), &mo),
            ]),
            Prediction::Sample => Err(Error::unsupported(
                "sampler",
                "PNDM with prediction_type `sample` (diffusers does not implement it)",
            )),
        }
    }

    /// diffusers `EulerDiscreteScheduler.step` (s_churn 0) and
    /// `EulerAncestralDiscreteScheduler.step`.
    fn step_euler<O: LatentOps<V = V>>(
        &mut self,
        ops: &mut O,
        i: usize,
        x: &V,
        m: &V,
        noise: Option<&V>,
    ) -> Result<V> {
        let (s, s_next) = (self.sigmas[i], self.sigmas[i + 1]);
        let x0f = match self.cfg.prediction {
            Prediction::Epsilon => [1.0, -s],
            Prediction::VPrediction => [1.0 / (s * s + 1.0), -s / (s * s + 1.0).sqrt()],
            Prediction::Sample => [0.0, 1.0],
        };
        let (target, z) = if self.kind == SamplerKind::EulerAncestral {
            let up = (s_next * s_next * (s * s - s_next * s_next) / (s * s)).sqrt();
            let down = (s_next * s_next - up * up).max(0.0).sqrt();
            (down, noise.map(|z| (up, z)))
        } else {
            (s_next, None)
        };
        // x' = x + (x − x₀)/σ · dt
        let d = (target - s) / s;
        let mut terms = vec![(1.0 + d - d * x0f[0], x), (-d * x0f[1], m)];
        if let Some(z) = z {
            terms.push(z);
        }
        ops.lincomb(&terms)
    }

    /// diffusers `DPMSolverMultistepScheduler.step` with `dpmsolver++`, order 2, midpoint,
    /// `final_sigmas_type = "zero"` (the last step is first order).
    fn step_dpm<O: LatentOps<V = V>>(&mut self, ops: &mut O, i: usize, x: &V, m: &V) -> Result<V> {
        let alpha_sigma = |s: f64| {
            let a = 1.0 / (s * s + 1.0).sqrt();
            (a, s * a)
        };
        let (a_s, s_s) = alpha_sigma(self.sigmas[i]);
        let x0f = match self.cfg.prediction {
            Prediction::Epsilon => [1.0 / a_s, -s_s / a_s],
            Prediction::VPrediction => [a_s, -s_s],
            Prediction::Sample => [0.0, 1.0],
        };
        let x0 = ops.lincomb(&[(x0f[0], x), (x0f[1], m)])?;
        let s_next = self.sigmas[i + 1];
        let last = i + 1 == self.timesteps.len();
        let out = if s_next == 0.0 {
            // σ_t = 0: every first-order formula reduces to x₀.
            x0.clone()
        } else {
            let (a_t, s_t) = alpha_sigma(s_next);
            let lambda = |a: f64, s: f64| a.ln() - s.ln();
            let h = lambda(a_t, s_t) - lambda(a_s, s_s);
            let k = a_t * ((-h).exp() - 1.0);
            match (&self.x0_prev, last) {
                (Some(x0_prev), false) => {
                    let (a_1, s_1) = alpha_sigma(self.sigmas[i - 1]);
                    let r0 = (lambda(a_s, s_s) - lambda(a_1, s_1)) / h;
                    ops.lincomb(&[
                        (s_t / s_s, x),
                        (-k * (1.0 + 0.5 / r0), &x0),
                        (0.5 * k / r0, x0_prev),
                    ])?
                }
                _ => ops.lincomb(&[(s_t / s_s, x), (-k, &x0)])?,
            }
        };
        self.x0_prev = Some(x0);
        Ok(out)
    }
}
