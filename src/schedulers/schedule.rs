//! Noise-schedule math on the CPU: betas and ᾱ, inference timesteps for each spacing,
//! sigmas (interpolated or Karras) and σ → t. Cross-checked against numbers dumped from
//! diffusers 0.42 (`tools/dump_scheduler_fixtures.py`, `tests/schedulers.rs`).

use crate::error::{Error, Result};

const OP: &str = "scheduler config";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    SquaredCosCapV2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    VPrediction,
    Sample,
}

/// How inference timesteps are spread over the training range ("Common Diffusion Noise
/// Schedules and Sample Steps are Flawed", table 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    Leading,
    Trailing,
    Linspace,
}

/// A σ schedule asked for by a request (`--schedule`), as diffusers'
/// `from_config(config, use_karras_sigmas=…)` / `use_exponential_sigmas=…` /
/// `use_beta_sigmas=…` sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigmaSchedule {
    /// The timesteps' own σ (both flags off).
    Plain,
    Karras,
    Exponential,
    /// "Beta Sampling is All You Need" (arXiv 2407.12173): σ at the Beta(0.6, 0.6) quantiles.
    Beta,
}

impl SigmaSchedule {
    pub const NAMES: &'static str = "plain, karras, exponential, beta";

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "plain" | "default" => Ok(Self::Plain),
            "karras" => Ok(Self::Karras),
            "exponential" => Ok(Self::Exponential),
            "beta" => Ok(Self::Beta),
            o => Err(Error::unsupported(
                OP,
                format!("sigma schedule `{o}` (known: {})", Self::NAMES),
            )),
        }
    }

    /// `cfg` with this schedule's flags.
    pub fn apply(self, cfg: &mut ScheduleConfig) {
        cfg.use_karras_sigmas = self == Self::Karras;
        cfg.use_exponential_sigmas = self == Self::Exponential;
        cfg.use_beta_sigmas = self == Self::Beta;
    }
}

impl Spacing {
    pub const NAMES: &'static str = "leading, trailing, linspace";

    /// A `timestep_spacing` value (the config's and the CLI's names).
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "leading" => Ok(Self::Leading),
            "trailing" => Ok(Self::Trailing),
            "linspace" => Ok(Self::Linspace),
            o => Err(Error::unsupported(
                OP,
                format!("timestep_spacing `{o}` (known: {})", Self::NAMES),
            )),
        }
    }
}

/// The fields of a diffusers `scheduler_config.json` the samplers use.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub prediction: Prediction,
    /// `None`: the sampler's own default (DDIM, DDPM, PNDM: leading; Euler, DPM++: linspace),
    /// as diffusers does when a config written for another scheduler lacks the key.
    pub spacing: Option<Spacing>,
    pub steps_offset: usize,
    /// `None` (absent from the config): the sampler class's default, as diffusers'
    /// `Scheduler.from_config` takes it (PNDM false; DDIM, LCM true).
    pub set_alpha_to_one: Option<bool>,
    /// Whether DDIM, DDPM and LCM clamp the predicted x₀ to ±`clip_sample_range`; `None`:
    /// the class's default (DDIM and DDPM true, LCM false).
    pub clip_sample: Option<bool>,
    pub clip_sample_range: f64,
    /// PNDM runs PLMS only (`skip_prk_steps`); false (set so, or a `PNDMScheduler` config
    /// without the key, diffusers' default there) asks for Runge–Kutta warm-up steps, which
    /// are not implemented: refused. Another class's config without the key reads true.
    pub skip_prk_steps: bool,
    pub use_karras_sigmas: bool,
    /// σ spaced evenly in log σ between the schedule's ends (Euler, Heun, LMS, DPM++; with
    /// `use_karras_sigmas` Karras wins, as diffusers checks it first).
    pub use_exponential_sigmas: bool,
    /// σ at the quantiles of Beta(0.6, 0.6) between the schedule's ends (the same samplers).
    pub use_beta_sigmas: bool,
    /// LCM: the distillation schedule's length (`original_inference_steps`, 50).
    pub original_inference_steps: usize,
    /// LCM: the boundary condition's timestep scale (`timestep_scaling`, 10).
    pub timestep_scaling: f64,
}

impl ScheduleConfig {
    /// Stable Diffusion 1.x (`runwayml/stable-diffusion-v1-5` scheduler_config.json).
    pub fn sd15() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            prediction: Prediction::Epsilon,
            spacing: None,
            steps_offset: 1,
            set_alpha_to_one: Some(false),
            clip_sample: Some(false),
            clip_sample_range: 1.0,
            skip_prk_steps: true,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            original_inference_steps: 50,
            timestep_scaling: 10.0,
        }
    }

    /// Stable Diffusion 2.x at 768 px (`stabilityai/stable-diffusion-2-1`): v-prediction.
    pub fn sd21() -> Self {
        Self {
            prediction: Prediction::VPrediction,
            ..Self::sd15()
        }
    }

    /// Reads a diffusers `scheduler_config.json`; absent keys take diffusers' defaults.
    pub fn from_json(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::unsupported(OP, format!("not valid JSON: {e}")))?;
        Self::from_value(&v)
    }

    pub fn from_value(v: &serde_json::Value) -> Result<Self> {
        let num = |k: &str, d: f64| -> Result<f64> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(d),
                Some(x) => x.as_f64().ok_or_else(|| {
                    Error::unsupported(OP, format!("`{k}` must be a number, got {x}"))
                }),
            }
        };
        let flag = |k: &str, d: bool| v.get(k).and_then(|x| x.as_bool()).unwrap_or(d);
        let text = |k: &str| v.get(k).and_then(|x| x.as_str());
        if v.get("trained_betas").is_some_and(|x| !x.is_null()) {
            return Err(Error::unsupported(OP, "`trained_betas` is not supported"));
        }
        // Options that change the math and are not implemented: refused, never ignored.
        for k in [
            "thresholding",
            "rescale_betas_zero_snr",
            "use_lu_lambdas",
            "use_flow_sigmas",
        ] {
            if flag(k, false) {
                return Err(Error::unsupported(
                    OP,
                    format!("`{k}: true` is not supported"),
                ));
            }
        }
        for (k, fine) in [
            ("interpolation_type", "linear"),
            ("timestep_type", "discrete"),
            ("final_sigmas_type", "zero"),
        ] {
            if let Some(o) = text(k).filter(|o| *o != fine) {
                return Err(Error::unsupported(
                    OP,
                    format!("`{k}` `{o}` (only `{fine}` is supported)"),
                ));
            }
        }
        // diffusers' defaults are per class; LCMScheduler's betas default to SD's.
        let lcm = text("_class_name") == Some("LCMScheduler");
        let beta_default = if lcm { "scaled_linear" } else { "linear" };
        // diffusers' σ-schedule classes refuse more than one of the three flags.
        let sigma_flags = [
            "use_karras_sigmas",
            "use_exponential_sigmas",
            "use_beta_sigmas",
        ];
        if sigma_flags.iter().filter(|k| flag(k, false)).count() > 1 {
            return Err(Error::unsupported(
                OP,
                "only one of `use_karras_sigmas`, `use_exponential_sigmas`, `use_beta_sigmas` \
                 can be true",
            ));
        }
        let beta_schedule = match text("beta_schedule").unwrap_or(beta_default) {
            "linear" => BetaSchedule::Linear,
            "scaled_linear" => BetaSchedule::ScaledLinear,
            "squaredcos_cap_v2" => BetaSchedule::SquaredCosCapV2,
            o => {
                return Err(Error::unsupported(
                    OP,
                    format!(
                        "beta_schedule `{o}` (known: linear, scaled_linear, squaredcos_cap_v2)"
                    ),
                ));
            }
        };
        let prediction = match text("prediction_type").unwrap_or("epsilon") {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::VPrediction,
            "sample" => Prediction::Sample,
            o => {
                return Err(Error::unsupported(
                    OP,
                    format!("prediction_type `{o}` (known: epsilon, v_prediction, sample)"),
                ));
            }
        };
        let spacing = text("timestep_spacing").map(Spacing::parse).transpose()?;
        let n = num("num_train_timesteps", 1000.0)?;
        if !(2.0..=100_000.0).contains(&n) {
            return Err(Error::unsupported(OP, format!("num_train_timesteps = {n}")));
        }
        if n.fract() != 0.0 {
            return Err(Error::unsupported(
                OP,
                format!("num_train_timesteps = {n} is not a whole number"),
            ));
        }
        // HeunDiscreteScheduler's betas default to SD's range (its schedule to linear).
        let heun = text("_class_name") == Some("HeunDiscreteScheduler");
        let (beta_start, beta_end) = if lcm || heun {
            (num("beta_start", 0.00085)?, num("beta_end", 0.012)?)
        } else {
            (num("beta_start", 0.0001)?, num("beta_end", 0.02)?)
        };
        for (k, b) in [("beta_start", beta_start), ("beta_end", beta_end)] {
            if !(b > 0.0 && b < 1.0) {
                return Err(Error::unsupported(
                    OP,
                    format!("`{k}` = {b} is outside (0, 1)"),
                ));
            }
        }
        let steps_offset = num("steps_offset", 0.0)?;
        if !(0.0..n).contains(&steps_offset) || steps_offset.fract() != 0.0 {
            return Err(Error::unsupported(
                OP,
                format!(
                    "`steps_offset` = {steps_offset} must be a whole number from 0 to {}",
                    n - 1.0
                ),
            ));
        }
        let clip_range = num("clip_sample_range", 1.0)?;
        if !(clip_range.is_finite() && clip_range > 0.0) {
            return Err(Error::unsupported(
                OP,
                format!("`clip_sample_range` = {clip_range} must be a finite positive number"),
            ));
        }
        let orig = num("original_inference_steps", 50.0)?;
        if !(1.0..=n).contains(&orig) || orig.fract() != 0.0 {
            return Err(Error::unsupported(
                OP,
                format!("`original_inference_steps` = {orig} must be a whole number from 1 to {n}"),
            ));
        }
        let timestep_scaling = num("timestep_scaling", 10.0)?;
        if !(timestep_scaling.is_finite() && timestep_scaling > 0.0) {
            return Err(Error::unsupported(
                OP,
                format!("`timestep_scaling` = {timestep_scaling} must be a finite positive number"),
            ));
        }
        Ok(Self {
            num_train_timesteps: n as usize,
            beta_start,
            beta_end,
            beta_schedule,
            prediction,
            spacing,
            steps_offset: steps_offset as usize,
            set_alpha_to_one: v.get("set_alpha_to_one").and_then(|x| x.as_bool()),
            clip_sample: v.get("clip_sample").and_then(|x| x.as_bool()),
            clip_sample_range: clip_range,
            skip_prk_steps: flag(
                "skip_prk_steps",
                text("_class_name") != Some("PNDMScheduler"),
            ),
            use_karras_sigmas: flag("use_karras_sigmas", false),
            use_exponential_sigmas: flag("use_exponential_sigmas", false),
            use_beta_sigmas: flag("use_beta_sigmas", false),
            original_inference_steps: orig as usize,
            timestep_scaling,
        })
    }

    /// ᾱ_t for t in 0..num_train_timesteps, computed as diffusers does with torch (betas by
    /// `torch.linspace(..., dtype=float32)`, alphas in f32, `cumprod` accumulating in f64 and
    /// stored in f32), so that every later quantity starts from the reference's own numbers.
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        let n = self.num_train_timesteps;
        let betas: Vec<f32> = match self.beta_schedule {
            BetaSchedule::Linear => linspace_f32(self.beta_start as f32, self.beta_end as f32, n),
            BetaSchedule::ScaledLinear => linspace_f32(
                self.beta_start.sqrt() as f32,
                self.beta_end.sqrt() as f32,
                n,
            )
            .iter()
            .map(|b| b * b)
            .collect(),
            // diffusers `betas_for_alpha_bar` (cosine, max_beta 0.999) in f64, then f32.
            BetaSchedule::SquaredCosCapV2 => {
                let ab = |t: f64| {
                    ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|i| {
                        (1.0 - ab((i + 1) as f64 / n as f64) / ab(i as f64 / n as f64)).min(0.999)
                            as f32
                    })
                    .collect()
            }
        };
        // torch's CPU cumprod accumulates f32 in f64 and rounds each output to f32.
        let mut acc = 1.0f64;
        betas
            .iter()
            .map(|b| {
                acc *= f64::from(1.0 - b);
                f64::from(acc as f32)
            })
            .collect()
    }
}

/// torch.linspace for float32 on the CPU: the first half counts up from `start`, the second
/// half down from `end`, each element one fused multiply-add in f32 (torch's vectorised
/// kernel; checked bit for bit against torch 2.15 for SD's beta ranges).
fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// numpy's `np.linspace(a, b, n)` in f64.
pub(crate) fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    let step = (b - a) / (n - 1) as f64;
    (0..n)
        .map(|i| if i == n - 1 { b } else { a + step * i as f64 })
        .collect()
}

/// Python's `round` (half to even), which numpy's `.round()` uses too.
pub(crate) fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// `np.arange(start, stop, step)` for a negative step, in f64.
pub(crate) fn arange_down(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let n = ((stop - start) / step).ceil().max(0.0) as usize;
    (0..n).map(|i| start + step * i as f64).collect()
}

/// σ_t = sqrt((1 − ᾱ_t) / ᾱ_t) for every training timestep, as diffusers computes it from
/// the f32 ᾱ (in f32).
pub fn train_sigmas(alphas_cumprod: &[f64]) -> Vec<f64> {
    alphas_cumprod
        .iter()
        .map(|&a| {
            let a = a as f32;
            f64::from(((1.0 - a) / a).sqrt())
        })
        .collect()
}

/// `np.interp(x, 0..len, ys)`.
pub(crate) fn interp(x: f64, ys: &[f64]) -> f64 {
    if x <= 0.0 {
        return ys[0];
    }
    let last = ys.len() - 1;
    if x >= last as f64 {
        return ys[last];
    }
    let i = x.floor() as usize;
    let w = x - i as f64;
    ys[i] + w * (ys[i + 1] - ys[i])
}

/// diffusers `_sigma_to_t`: the (fractional) training timestep whose σ is `sigma`, by linear
/// interpolation in log σ.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    // Index of the last log σ at or below log_sigma, clipped to n − 2.
    let count = log_sigmas.iter().filter(|&&l| log_sigma - l >= 0.0).count();
    let low = count.saturating_sub(1).min(n - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// Karras et al. (2022) σ spacing with ρ = 7 between `sigma_max` and `sigma_min`.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    linspace(0.0, 1.0, n)
        .iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// diffusers' `_convert_to_exponential`: σ evenly spaced in log σ from `sigma_max` down to
/// `sigma_min`.
pub fn exponential_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    linspace(sigma_max.ln(), sigma_min.ln(), n)
        .iter()
        .map(|l| l.exp())
        .collect()
}

/// diffusers' `_convert_to_beta` (α = β = 0.6): `σ_min + ppf(1 − r)·(σ_max − σ_min)` for `r` in
/// `linspace(0, 1, n)`, `ppf` the Beta(0.6, 0.6) quantile function (scipy's `beta.ppf`).
pub fn beta_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    linspace(0.0, 1.0, n)
        .iter()
        .map(|r| sigma_min + super::beta_dist::ppf(1.0 - r, 0.6, 0.6) * (sigma_max - sigma_min))
        .collect()
}

/// Integer timesteps of DDIM / DDPM (descending) for `steps` inference steps.
pub(crate) fn discrete_timesteps(cfg: &ScheduleConfig, spacing: Spacing, steps: usize) -> Vec<f64> {
    let n = cfg.num_train_timesteps;
    match spacing {
        Spacing::Linspace => linspace(0.0, (n - 1) as f64, steps)
            .iter()
            .rev()
            .map(|&t| round_half_even(t))
            .collect(),
        Spacing::Leading => {
            let ratio = n / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio + cfg.steps_offset) as f64)
                .collect()
        }
        Spacing::Trailing => {
            let ratio = n as f64 / steps as f64;
            arange_down(n as f64, 0.0, -ratio)
                .iter()
                .map(|&t| round_half_even(t) - 1.0)
                .collect()
        }
    }
}

/// `np.log` of diffusers' f32 σ array (computed in f32).
pub(crate) fn log_f32(sigmas: &[f64]) -> Vec<f64> {
    sigmas.iter().map(|&s| f64::from((s as f32).ln())).collect()
}

/// Rounds to f32 and back: diffusers keeps its timesteps and sigmas in f32 tensors.
pub(crate) fn f32r(x: f64) -> f64 {
    f64::from(x as f32)
}

/// One run's schedule, computed once on the CPU: the config, ᾱ, and the timesteps (and σ
/// where the sampler uses them) for `steps` inference steps.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub cfg: ScheduleConfig,
    pub spacing: Spacing,
    pub ac: Vec<f64>,
    /// ᾱ "before" the first training step (`set_alpha_to_one`: 1, else ᾱ₀).
    pub final_ac: f64,
    /// The range the predicted x₀ is clamped to (`clip_sample`), if it is.
    pub clip: Option<f64>,
    pub steps: usize,
    /// Model-call timesteps, one per step (fractional for Euler).
    pub timesteps: Vec<f64>,
    /// σ per step plus the final σ (Euler family, DPM++); empty otherwise.
    pub sigmas: Vec<f64>,
}

impl Schedule {
    /// `defaults`: the sampler class's `(set_alpha_to_one, clip_sample)` for keys the config
    /// lacks.
    pub(crate) fn new(
        cfg: &ScheduleConfig,
        spacing: Spacing,
        steps: usize,
        defaults: (bool, bool),
    ) -> Self {
        let ac = cfg.alphas_cumprod();
        let clip = cfg.clip_sample.unwrap_or(defaults.1);
        Self {
            final_ac: if cfg.set_alpha_to_one.unwrap_or(defaults.0) {
                1.0
            } else {
                ac[0]
            },
            clip: clip.then_some(cfg.clip_sample_range),
            cfg: cfg.clone(),
            spacing,
            ac,
            steps,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
        }
    }

    /// ᾱ at `t`, or `fallback` before the first training step (t < 0).
    pub(crate) fn ac_at(&self, t: f64, fallback: f64) -> f64 {
        if t >= 0.0 {
            self.ac[t as usize]
        } else {
            fallback
        }
    }

    /// Training timesteps between two inference steps (`num_train_timesteps // steps`).
    pub(crate) fn ratio(&self) -> f64 {
        (self.cfg.num_train_timesteps / self.steps) as f64
    }

    /// DDIM / DDPM: the discrete timesteps of the spacing.
    pub(crate) fn set_discrete(&mut self) {
        self.timesteps = discrete_timesteps(&self.cfg, self.spacing, self.steps);
    }

    /// PNDM (PLMS, `skip_prk_steps`): every base timestep but the last, the second-to-last
    /// again, the last; descending.
    pub(crate) fn set_pndm(&mut self) {
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
        let k = base.len();
        let mut plms: Vec<f64> = base[..k - 1].to_vec();
        if k >= 2 {
            plms.push(base[k - 2]);
        }
        plms.push(base[k - 1]);
        plms.reverse();
        self.timesteps = plms;
    }

    /// Euler family: σ interpolated at the timesteps (or Karras σ and their timesteps), then 0.
    pub(crate) fn set_euler(&mut self) {
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
        let c = &self.cfg;
        if c.use_karras_sigmas || c.use_exponential_sigmas || c.use_beta_sigmas {
            let log_sigmas = log_f32(&full);
            let (lo, hi) = (sig[steps - 1], sig[0]);
            sig = if c.use_karras_sigmas {
                karras_sigmas(lo, hi, steps)
            } else if c.use_exponential_sigmas {
                exponential_sigmas(lo, hi, steps)
            } else {
                beta_sigmas(lo, hi, steps)
            };
            ts = sig
                .iter()
                .map(|&s| f32r(sigma_to_t(s, &log_sigmas)))
                .collect();
        }
        sig.push(0.0);
        self.sigmas = sig.into_iter().map(f32r).collect();
        self.timesteps = ts;
    }

    /// DPM-Solver++: `steps + 1` spaced points without the last (or Karras σ), σ then 0.
    pub(crate) fn set_dpm(&mut self, karras: bool) {
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
        } else if self.cfg.use_exponential_sigmas || self.cfg.use_beta_sigmas {
            // From the training schedule's ends; the timesteps truncated to integers (diffusers
            // stores them as int64), the σ kept.
            sig = if self.cfg.use_exponential_sigmas {
                exponential_sigmas(full[0], full[n - 1], steps)
            } else {
                beta_sigmas(full[0], full[n - 1], steps)
            };
            ts = sig
                .iter()
                .map(|&s| sigma_to_t(s, &log_sigmas).trunc())
                .collect();
        } else {
            sig = ts.iter().map(|&t| interp(t, &full)).collect();
        }
        sig.push(0.0);
        self.sigmas = sig.into_iter().map(f32r).collect();
        self.timesteps = ts;
    }

    /// DEIS and UniPC: DPM-Solver's timesteps and σ, except that their Karras timesteps are
    /// rounded for every beta schedule, and DEIS (`sigma_min_end`) ends at σ_min (the
    /// training schedule's first σ; a converted schedule's last σ again) instead of 0.
    pub(crate) fn set_multistep(&mut self, sigma_min_end: bool) {
        self.set_dpm(false);
        if self.cfg.use_karras_sigmas {
            for t in &mut self.timesteps {
                *t = round_half_even(*t);
            }
        }
        let n = self.sigmas.len();
        if sigma_min_end {
            let c = &self.cfg;
            self.sigmas[n - 1] =
                if c.use_karras_sigmas || c.use_exponential_sigmas || c.use_beta_sigmas {
                    self.sigmas[n - 2]
                } else {
                    train_sigmas(&self.ac[..1])[0]
                };
        }
    }

    /// x₀ as a linear form `[c_x, c_m]` of the σ-scaled sample and the model output at σ
    /// (the Euler family's `pred_original_sample`: Euler, Heun, LMS).
    pub(crate) fn sigma_x0_form(&self, sg: f64) -> [f64; 2] {
        match self.cfg.prediction {
            Prediction::Epsilon => [1.0, -sg],
            Prediction::VPrediction => [1.0 / (sg * sg + 1.0), -sg / (sg * sg + 1.0).sqrt()],
            Prediction::Sample => [0.0, 1.0],
        }
    }

    /// (x₀, ε) as linear forms `[c_x, c_m]` of the sample and the model output at ᾱ = `a`.
    pub(crate) fn vp_forms(&self, a: f64) -> ([f64; 2], [f64; 2]) {
        let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
        match self.cfg.prediction {
            Prediction::Epsilon => ([1.0 / sa, -sb / sa], [0.0, 1.0]),
            Prediction::VPrediction => ([sa, -sb], [sb, sa]),
            Prediction::Sample => ([0.0, 1.0], [1.0 / sb, -sa / sb]),
        }
    }
}
