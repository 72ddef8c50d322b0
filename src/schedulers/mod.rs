//! Samplers: DDIM (η ≥ 0), DDPM, PNDM (PLMS, SD 1.5's default), Euler, Euler ancestral,
//! Heun, DPM2 (and ancestral), LMS, DPM++ 2M and 2M SDE (with or without Karras sigmas), DPM++
//! SDE (noise from a Brownian tree), UniPC, DEIS and LCM, matching
//! diffusers' schedulers step for step.
//!
//! The schedule math ([`schedule`]) runs once on the CPU. Each sampler (a file of its own
//! behind [`Algorithm`]) writes its update once, as a [`Program`]: a fixed list of linear
//! combinations (and a clamp) of the sample, the model output, the step's noise and its own
//! state, whose coefficients it computes per step as diffusers does. The same program runs on
//! host vectors ([`HostOps`], the reference the tests check against diffusers), on GPU
//! tensors eagerly ([`GpuOps`]), and recorded once into a step plan that reads the
//! coefficients from a device table (the pipeline).

mod beta_dist;
mod ddim;
mod ddpm;
mod deis;
mod dpm_sde;
mod dpm_solver;
mod euler;
mod heun;
mod kdpm2;
mod lcm;
mod lms;
mod pndm;
pub mod program;
pub mod schedule;
mod unipc;

pub use program::{Combine, Program, Slot};
pub use schedule::{BetaSchedule, Prediction, Schedule, ScheduleConfig, SigmaSchedule, Spacing};

use crate::error::{Error, Result};

/// Linear algebra on latents that the samplers need.
pub trait LatentOps {
    type V: Clone;
    /// `Σ cᵢ · vᵢ`.
    fn lincomb(&mut self, terms: &[(f64, &Self::V)]) -> Result<Self::V>;
    /// `clamp(v, −r, r)` elementwise.
    fn clamp(&mut self, v: &Self::V, r: f64) -> Result<Self::V>;
    /// Zeros shaped like `v` (a sampler state before the first step).
    fn zeros_like(&mut self, v: &Self::V) -> Result<Self::V>;
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
    fn zeros_like(&mut self, v: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(vec![0.0; v.len()])
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
    fn zeros_like(&mut self, v: &Self::V) -> Result<Self::V> {
        let gpu = self.rec.gpu();
        crate::tensor::Tensor::zeros(gpu, v.shape(), crate::tensor::DType::F32, "sampler state")
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
    /// Latent consistency sampling (`LCMScheduler`), for LCM-distilled U-Nets and LCM-LoRA.
    Lcm,
    /// Heun's second-order method (`HeunDiscreteScheduler`): two model calls per step but
    /// the last.
    Heun,
    /// Linear multistep of order 4 (`LMSDiscreteScheduler`).
    Lms,
    /// DPM-Solver++ 2M SDE (`sde-dpmsolver++`): fresh noise every step; `karras` as above.
    DpmPP2MSde {
        karras: bool,
    },
    /// DPM2 (`KDPM2DiscreteScheduler`): second order through the log-midpoint σ, two model
    /// calls per step but the last.
    Dpm2,
    /// DPM2 ancestral (`KDPM2AncestralDiscreteScheduler`): DPM2 to σ↓ plus fresh noise.
    Dpm2Ancestral,
    /// UniPC (`UniPCMultistepScheduler`, bh2, order 2): predictor–corrector, one model call
    /// per step.
    UniPc,
    /// DEIS (`DEISMultistepScheduler`, log-ρ, order 2).
    Deis,
    /// DPM++ SDE (`DPMSolverSDEScheduler`): second order through the log-midpoint, noise from
    /// a Brownian tree seeded by the image seed; two model calls per step but the last.
    DpmSde,
}

impl SamplerKind {
    pub const NAMES: &'static str = "ddim, ddpm, pndm, euler, euler-a, heun, dpm2, dpm2-a, lms, dpm++2m, \
                                  dpm++2m-karras, dpm++2m-sde, dpm++2m-sde-karras, dpm++sde, unipc, deis, lcm";

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
            "lcm" => Self::Lcm,
            "heun" => Self::Heun,
            "dpm2" => Self::Dpm2,
            "dpm2-a" | "dpm2_a" => Self::Dpm2Ancestral,
            "lms" => Self::Lms,
            "dpm++2m-sde" => Self::DpmPP2MSde { karras: false },
            "dpm++2m-sde-karras" => Self::DpmPP2MSde { karras: true },
            "dpm++sde" => Self::DpmSde,
            "unipc" => Self::UniPc,
            "deis" => Self::Deis,
            // The web UI's names ("DPM++ 2M Karras", "Euler a", "PLMS", …), any case.
            o => match Self::ALL
                .into_iter()
                .find(|k| crate::infotext::sampler_name(*k).eq_ignore_ascii_case(o))
            {
                Some(k) => k,
                None => {
                    return Err(Error::unsupported(
                        "sampler",
                        format!(
                            "unknown sampler `{o}` (known: {}, or the web UI's names such as \
                             \"DPM++ 2M Karras\")",
                            Self::NAMES
                        ),
                    ));
                }
            },
        })
    }

    /// A name with the web UI's " Karras" suffix on a sampler whose Karras schedule is a
    /// separate option ("LMS Karras", "DPM2 a Karras", "Euler Karras"): the sampler and the
    /// schedule; any other name as [`SamplerKind::parse`] reads it, with no schedule.
    pub fn parse_with_schedule(name: &str) -> Result<(Self, Option<SigmaSchedule>)> {
        let plain = Self::parse(name);
        let stem = name
            .strip_suffix(" Karras")
            .or_else(|| name.strip_suffix(" karras"))
            .or_else(|| name.strip_suffix("-karras"));
        match (plain, stem.map(Self::parse)) {
            (Ok(k), _) => Ok((k, None)),
            (Err(_), Some(Ok(k))) if k.has_sigma_schedule() => Ok((k, Some(SigmaSchedule::Karras))),
            (Err(e), _) => Err(e),
        }
    }

    /// Every sampler (DDIM with η = 0).
    pub const ALL: [SamplerKind; 17] = [
        Self::Ddim { eta: 0.0 },
        Self::Ddpm,
        Self::Pndm,
        Self::Euler,
        Self::EulerAncestral,
        Self::Heun,
        Self::Dpm2,
        Self::Dpm2Ancestral,
        Self::Lms,
        Self::DpmPP2M { karras: false },
        Self::DpmPP2M { karras: true },
        Self::DpmPP2MSde { karras: false },
        Self::DpmPP2MSde { karras: true },
        Self::DpmSde,
        Self::UniPc,
        Self::Deis,
        Self::Lcm,
    ];

    /// The sampler's update rule.
    fn algorithm(self) -> Box<dyn Algorithm> {
        match self {
            Self::Ddim { eta } => Box::new(ddim::Ddim { eta }),
            Self::Ddpm => Box::new(ddpm::Ddpm),
            Self::Pndm => Box::new(pndm::Pndm),
            Self::Euler => Box::new(euler::Euler { ancestral: false }),
            Self::EulerAncestral => Box::new(euler::Euler { ancestral: true }),
            Self::DpmPP2M { karras } => Box::new(dpm_solver::DpmPP2M { karras, sde: false }),
            Self::DpmPP2MSde { karras } => Box::new(dpm_solver::DpmPP2M { karras, sde: true }),
            Self::Lcm => Box::new(lcm::Lcm),
            Self::Heun => Box::new(heun::Heun),
            Self::Dpm2 => Box::new(kdpm2::Kdpm2 { ancestral: false }),
            Self::Dpm2Ancestral => Box::new(kdpm2::Kdpm2 { ancestral: true }),
            Self::Lms => Box::new(lms::Lms),
            Self::UniPc => Box::new(unipc::UniPc),
            Self::Deis => Box::new(deis::Deis),
            Self::DpmSde => Box::new(dpm_sde::DpmSde),
        }
    }

    /// Whether the sampler reads the σ-schedule options (diffusers' Euler, Heun, KDPM2, LMS,
    /// DPM-Solver, UniPC and DEIS have them; DDIM, DDPM, PNDM, Euler ancestral and LCM do not).
    pub fn has_sigma_schedule(self) -> bool {
        matches!(
            self,
            Self::Euler
                | Self::Heun
                | Self::Dpm2
                | Self::Dpm2Ancestral
                | Self::Lms
                | Self::DpmPP2M { .. }
                | Self::DpmPP2MSde { .. }
                | Self::DpmSde
                | Self::UniPc
                | Self::Deis
        )
    }

    /// diffusers' class default: linspace for the σ-based samplers (those with a σ schedule,
    /// and Euler ancestral), leading for DDIM, DDPM, PNDM and LCM (which ignores it: its
    /// timesteps come from the distillation schedule).
    fn default_spacing(self) -> Spacing {
        if self.has_sigma_schedule() || self == Self::EulerAncestral {
            Spacing::Linspace
        } else {
            Spacing::Leading
        }
    }
}

/// What every sampler provides: its schedule, its update as a [`Program`], and the
/// program's coefficients at each step.
pub trait Algorithm: Send + Sync {
    /// Model evaluations per step (diffusers' `scheduler.order`): image-to-image starts at
    /// `t_start · order` in the timesteps.
    fn order(&self) -> usize {
        1
    }
    /// diffusers' class default for a config without `clip_sample`.
    fn clip_sample_default(&self) -> bool {
        false
    }
    /// diffusers' class default for a config without `set_alpha_to_one`.
    fn set_alpha_to_one_default(&self) -> bool {
        true
    }
    /// Fills `s.timesteps` (and `s.sigmas` where used).
    fn set_schedule(&self, s: &mut Schedule);
    /// Whether the sampler works on σ-scaled latents ("VE" form: the Euler family).
    fn sigma_space(&self) -> bool {
        false
    }
    /// `(a, b)` of diffusers' `scheduler.add_noise(x₀, noise, timesteps[k])` = a·x₀ + b·noise.
    fn noise_coefficients(&self, s: &Schedule, k: usize) -> (f32, f32) {
        let ac = s.ac[s.timesteps[k] as usize] as f32;
        (ac.sqrt(), (1.0 - ac).sqrt())
    }
    /// Whether step `i` draws Gaussian noise.
    fn needs_noise(&self, _s: &Schedule, _i: usize) -> bool {
        false
    }
    /// For samplers whose noise is a Brownian motion's increments (DPM++ SDE): the `(σ, σ')`
    /// step `i` queries the tree at (`None`: Gaussian noise from the generator, if any).
    fn brownian_interval(&self, _s: &Schedule, _i: usize) -> Option<(f32, f32)> {
        None
    }
    /// Requests the sampler cannot serve with this config (an error naming why).
    fn check(&self, _cfg: &ScheduleConfig, _steps: usize) -> Result<()> {
        Ok(())
    }
    /// The update, the same for every step.
    fn program(&self, s: &Schedule) -> Program;
    /// The program's coefficients at step `i`, the `j`-th step of the run (img2img starts
    /// part-way: `j = i − first`).
    fn coefficients(&self, s: &Schedule, i: usize, j: usize) -> Vec<f64>;
}

/// One sampling run: the schedule for `steps` steps, the sampler's program and, for the
/// step-by-step API ([`Sampler::step`]), its state between steps.
pub struct Sampler<V> {
    kind: SamplerKind,
    algo: Box<dyn Algorithm>,
    sched: Schedule,
    program: Program,
    step_index: usize,
    first: usize,
    states: Vec<V>,
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
        let algo = kind.algorithm();
        algo.check(cfg, steps)?;
        let spacing = cfg.spacing.unwrap_or(kind.default_spacing());
        // Leading spacing adds steps_offset to (steps − 1)·(n / steps): past the training
        // range diffusers fails with an index error; say why instead.
        let last = (steps - 1) * (n / steps) + cfg.steps_offset;
        if spacing == Spacing::Leading && last >= n && kind != SamplerKind::Lcm {
            return Err(Error::unsupported(
                "sampler",
                format!(
                    "{steps} steps with steps_offset {} reach timestep {last}, beyond the {n} \
                     training timesteps",
                    cfg.steps_offset
                ),
            ));
        }
        let defaults = (algo.set_alpha_to_one_default(), algo.clip_sample_default());
        let mut sched = Schedule::new(cfg, spacing, steps, defaults);
        algo.set_schedule(&mut sched);
        let program = algo.program(&sched);
        program.check()?;
        Ok(Self {
            kind,
            algo,
            sched,
            program,
            step_index: 0,
            first: 0,
            states: Vec::new(),
        })
    }

    pub fn kind(&self) -> SamplerKind {
        self.kind
    }

    /// Timesteps to call the model with, one per step (fractional for Euler).
    pub fn timesteps(&self) -> &[f64] {
        &self.sched.timesteps
    }

    /// σ per step and the final σ, for the samplers that use them.
    pub fn sigmas(&self) -> &[f64] {
        &self.sched.sigmas
    }

    /// Model evaluations per step (diffusers' `scheduler.order`).
    pub fn order(&self) -> usize {
        self.algo.order()
    }

    /// Standard deviation of the initial noise (diffusers' `init_noise_sigma`).
    pub fn init_noise_sigma(&self) -> f64 {
        if !self.algo.sigma_space() {
            return 1.0;
        }
        let max = self.sched.sigmas.iter().cloned().fold(0.0, f64::max);
        match self.sched.spacing {
            Spacing::Linspace | Spacing::Trailing => max,
            Spacing::Leading => (max * max + 1.0).sqrt(),
        }
    }

    /// Factor applied to the latents before the model call at step `i`
    /// (diffusers' `scale_model_input`).
    pub fn input_scale(&self, i: usize) -> f64 {
        if self.algo.sigma_space() {
            let s = self.sched.sigmas[i] as f32;
            f64::from(1.0 / (s * s + 1.0).sqrt())
        } else {
            1.0
        }
    }

    /// Image-to-image (diffusers' `get_timesteps`): the index into [`Sampler::timesteps`]
    /// that sampling starts at for `strength` ∈ [0, 1]: `t_start · order` with
    /// `t_start = steps − min(⌊steps·strength⌋, steps)`. Strength 1 starts at 0, strength 0
    /// skips every step.
    pub fn start_index(&self, strength: f64) -> usize {
        let steps = self.sched.steps;
        let init = ((steps as f64 * strength).floor() as usize).min(steps);
        ((steps - init) * self.order()).min(self.sched.timesteps.len())
    }

    /// diffusers' `discrete_timestep_cutoff` for a fraction `f` of the denoising:
    /// `round(n − f·n)` (half to even, as Python's `round`).
    fn cutoff(&self, f: f64) -> f64 {
        let n = self.sched.cfg.num_train_timesteps as f64;
        schedule::round_half_even(n - f * n)
    }

    /// `denoising_end` (SDXL base + refiner): how many timesteps run, those at or above the
    /// cutoff.
    pub fn end_index(&self, end: f64) -> usize {
        let c = self.cutoff(end);
        self.sched.timesteps.iter().filter(|&&t| t >= c).count()
    }

    /// `denoising_start` (the refiner's part): the first step, the first timestep below the
    /// cutoff (one earlier for a second-order sampler cut mid-pair, as diffusers does).
    pub fn denoising_start_index(&self, start: f64) -> usize {
        let c = self.cutoff(start);
        let ts = &self.sched.timesteps;
        let mut run = ts.iter().filter(|&&t| t < c).count();
        if self.order() == 2 && run % 2 == 0 {
            run += 1;
        }
        ts.len() - run.min(ts.len())
    }

    /// Starts the run at step `k` (diffusers' `set_begin_index` / sliced timesteps): the
    /// multistep histories start empty there.
    pub fn begin_at(&mut self, k: usize) -> Result<()> {
        if self.step_index != self.first || k > self.sched.timesteps.len() {
            return Err(Error::unsupported(
                "sampler",
                format!(
                    "begin at step {k} of {} (only before the first step)",
                    self.sched.timesteps.len()
                ),
            ));
        }
        self.step_index = k;
        self.first = k;
        Ok(())
    }

    /// The step the run began at.
    pub fn first(&self) -> usize {
        self.first
    }

    /// `(a, b)` of diffusers' `scheduler.add_noise(x₀, noise, timesteps[k])` = a·x₀ + b·noise:
    /// DDIM / DDPM / PNDM √ᾱ_t and √(1−ᾱ_t) (in f32, as diffusers computes them); Euler σ_k
    /// (a = 1); DPM++ its VP pair α_t = 1/√(σ²+1), σ_t = σ·α_t.
    pub fn noise_coefficients(&self, k: usize) -> (f32, f32) {
        self.algo.noise_coefficients(&self.sched, k)
    }

    /// Whether step `i` draws Gaussian noise (pass it to [`Sampler::step`]).
    pub fn needs_noise(&self, i: usize) -> bool {
        self.algo.needs_noise(&self.sched, i)
    }

    /// DPM++ SDE: the `(σ, σ')` whose Brownian increment is step `i`'s noise
    /// ([`Sampler::brownian_tree`]); `None` for samplers whose noise is the generator's.
    pub fn brownian_interval(&self, i: usize) -> Option<(f32, f32)> {
        self.algo.brownian_interval(&self.sched, i)
    }

    /// The Brownian tree a DPM++ SDE run draws its noise from, over the schedule's positive σ
    /// (diffusers' `BrownianTreeNoiseSampler(sample, σ_min, σ_max, seed)`), for samples of
    /// `numel` values; `None` for a sampler or run that needs none.
    pub fn brownian_tree(
        &self,
        numel: usize,
        seed: u64,
    ) -> Result<Option<crate::brownian::BrownianTree>> {
        let n = self.sched.timesteps.len();
        if !(self.first..n).any(|i| self.brownian_interval(i).is_some()) {
            return Ok(None);
        }
        let positive = self.sched.sigmas.iter().copied().filter(|&s| s > 0.0);
        let lo = positive.clone().fold(f64::INFINITY, f64::min);
        let hi = positive.fold(0.0, f64::max);
        crate::brownian::BrownianTree::new(lo, hi, numel, u128::from(seed)).map(Some)
    }

    /// The update every step runs.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The program's coefficients at step `i` of a run that began at [`Sampler::first`].
    pub fn coefficients(&self, i: usize) -> Vec<f64> {
        self.algo
            .coefficients(&self.sched, i, i.saturating_sub(self.first))
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
        if i != self.step_index || i >= self.sched.timesteps.len() {
            return Err(Error::unsupported(
                "sampler",
                format!(
                    "step {i} called, expected step {} of {}",
                    self.step_index,
                    self.sched.timesteps.len()
                ),
            ));
        }
        if self.needs_noise(i) && noise.is_none() {
            return Err(Error::unsupported(
                "sampler",
                format!("step {i} of {:?} needs noise", self.kind),
            ));
        }
        let coefs = self.coefficients(i);
        let out = self
            .program
            .run(ops, &coefs, x, m, noise, &mut self.states)?;
        self.step_index += 1;
        Ok(out)
    }
}
