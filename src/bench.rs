//! Whole-model benchmarks (`sd-wgpu bench`): a named architecture with random weights (no
//! checkpoint file: [`crate::weights::Synthetic`]) or the built-in model, run through text
//! encoding, guided sampling steps and the VAE decode, with the figures a speed report needs.
//!
//! The run is done twice: a one-step cold run first (shader compilation, pipeline creation,
//! first allocations: reported as `cold_s`), then the measured run. Any NaN or Inf stops it
//! with the stage named (the pipeline's non-finite guard), so a figure never comes from a
//! degenerate computation.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::models::arch::Architecture;
use crate::pipeline::{Pipeline, Request};
use crate::schedulers::SamplerKind;
use crate::weights::{Synthetic, WeightDType};
use std::path::Path;

/// Architectures `bench` builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchArch {
    /// SD 1.5's diffusers configs, random weights.
    Sd15,
    /// SD 2.1's (768 px, v-prediction), random weights.
    Sd21,
    /// SDXL base 1.0's (1024 px, two text encoders), random weights.
    Sdxl,
    /// The built-in model's own trained weights (`assets/fashion-model`).
    Builtin,
}

impl BenchArch {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sd15 => "sd15",
            Self::Sd21 => "sd21",
            Self::Sdxl => "sdxl",
            Self::Builtin => "builtin",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub arch: BenchArch,
    /// `None`: the model's native size.
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub batch: usize,
    pub steps: usize,
    pub sampler: Option<SamplerKind>,
    /// Weights on the device as f16 (else f32).
    pub f16: bool,
    pub guidance: f32,
    pub seed: u64,
    /// Where the built-in model is (for [`BenchArch::Builtin`]).
    pub builtin_path: std::path::PathBuf,
    /// After the measured run, a one-step run timed dispatch by dispatch ([`Profile`]).
    pub profile: bool,
    /// Which networks stay on the device ([`crate::pipeline::Offload`]).
    pub offload: crate::pipeline::Offload,
    /// Also decode the measured run's latents with a TAESD-sized tiny autoencoder of random
    /// weights (64 channels, as TAESD and TAESDXL), timed beside the VAE.
    pub taesd: bool,
}

/// GPU time per dispatch of one warm run (text encoding, one step, decoding), from timestamp
/// queries: the step by op family and its most expensive dispatches.
#[derive(Clone, Debug)]
pub struct Profile {
    /// GPU time per stage (`text encoder`, `step 1`, `VAE decode`), in order.
    pub stages: Vec<(String, f64)>,
    /// The step's GPU time per op family: (family, seconds, dispatches), largest first.
    pub families: Vec<(&'static str, f64, usize)>,
    /// The step's 10 most expensive dispatches.
    pub top: Vec<crate::gpu::ProfileEntry>,
    /// The step's GPU time in all.
    pub step_s: f64,
    /// The stage summarised by family (`step 1`, …).
    pub step: String,
}

impl Profile {
    /// Sums `entries` (a profiled run) by stage, and the stage `step` by family.
    pub fn from_entries(entries: &[crate::gpu::ProfileEntry], step: &str) -> Self {
        let mut stages: Vec<(String, f64)> = Vec::new();
        for e in entries {
            match stages.iter_mut().find(|s| s.0 == e.stage) {
                Some(s) => s.1 += e.seconds,
                None => stages.push((e.stage.clone(), e.seconds)),
            }
        }
        let in_step: Vec<&crate::gpu::ProfileEntry> =
            entries.iter().filter(|e| e.stage == step).collect();
        let mut families: Vec<(&'static str, f64, usize)> = Vec::new();
        for e in &in_step {
            match families.iter_mut().find(|f| f.0 == e.family) {
                Some(f) => {
                    f.1 += e.seconds;
                    f.2 += 1;
                }
                None => families.push((e.family, e.seconds, 1)),
            }
        }
        families.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut top: Vec<crate::gpu::ProfileEntry> = in_step.iter().map(|e| (*e).clone()).collect();
        top.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        top.truncate(10);
        Self {
            stages,
            families,
            step_s: in_step.iter().map(|e| e.seconds).sum(),
            step: step.to_string(),
            top,
        }
    }

    /// The tables for people.
    pub fn to_table(&self) -> String {
        let mut out = String::from("GPU time per stage (timestamp queries, one warm run):\n");
        for (s, t) in &self.stages {
            out.push_str(&format!("  {s:<14} {:>10.2} ms\n", 1e3 * t));
        }
        out.push_str(&self.stage_table());
        out
    }

    /// The summarised stage by op family and its 10 most expensive dispatches.
    pub fn stage_table(&self) -> String {
        let mut out = self.family_table();
        out.push_str(&format!("{}'s 10 most expensive dispatches:\n", self.step));
        out.push_str(&self.top_table());
        out
    }

    /// The stage's GPU time by op family.
    pub fn family_table(&self) -> String {
        let mut out = format!("{} by op family:\n", self.step);
        for (f, t, n) in &self.families {
            out.push_str(&format!(
                "  {f:<12} {:>10.2} ms {:>5.1} %  {n} dispatches\n",
                1e3 * t,
                100.0 * t / self.step_s.max(1e-12)
            ));
        }
        out
    }

    fn top_table(&self) -> String {
        let mut out = String::new();
        for e in &self.top {
            let shape = if e.shape.is_empty() {
                format!("{:?} workgroups", e.workgroups)
            } else {
                e.shape.clone()
            };
            out.push_str(&format!(
                "  {:>9.2} ms {:>5.1} %  {:>16}  {}  {}\n",
                1e3 * e.seconds,
                100.0 * e.seconds / self.step_s.max(1e-12),
                e.rate(),
                e.kernel,
                shape
            ));
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "stages": self.stages.iter().map(|(s, t)| serde_json::json!({"stage": s, "gpu_s": t})).collect::<Vec<_>>(),
            "step_gpu_s": self.step_s,
            "families": self.families.iter().map(|(f, t, n)| serde_json::json!({"family": f, "gpu_s": t, "dispatches": n})).collect::<Vec<_>>(),
            "top": self.top.iter().map(|e| serde_json::json!({"kernel": e.kernel, "family": e.family, "shape": e.shape, "workgroups": e.workgroups, "gpu_s": e.seconds, "flop": e.flop, "bytes": e.bytes})).collect::<Vec<_>>(),
        })
    }
}

/// The figures of one run (names as in `--json`).
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub adapter: String,
    pub driver: String,
    pub arch: &'static str,
    pub width: usize,
    pub height: usize,
    pub batch: usize,
    pub steps: usize,
    /// Weight dtype.
    pub dtype: &'static str,
    /// Activation dtype ([`crate::Gpu::activation_dtype`] of the weights').
    pub activations: &'static str,
    pub guidance: f32,
    pub sampler: String,
    /// Loading (or generating and uploading) the weights.
    pub load_s: f64,
    /// The one-step cold run: shader compilation, pipelines, first allocations.
    pub cold_s: f64,
    pub text_encoder_s: f64,
    /// The U-Net's cross-attention keys and values of the prompt, once per request
    /// ([`crate::pipeline::Timings::context_projection`]; inside every step in diffusers).
    pub context_projection_s: f64,
    pub denoise_s: f64,
    pub vae_decode_s: f64,
    /// With [`BenchOptions::taesd`]: the same latents decoded by the tiny autoencoder (a
    /// second run with [`crate::pipeline::Decoder::Tiny`], its decode timed alone).
    pub taesd_decode_s: Option<f64>,
    pub s_per_step: f64,
    /// U-Net FLOPs per step (all images of the batch, both guidance halves), analytic
    /// ([`crate::models::unet::UNetConfig::flops_per_image`]).
    pub unet_flop_per_step: f64,
    pub achieved_tflops: f64,
    /// Host time spent encoding a step (table row, step noise, the plan's pass).
    pub cpu_record_s_per_step: f64,
    /// Host time in `queue.submit` per step (on CPU devices this can include executing
    /// work).
    pub cpu_submit_s_per_step: f64,
    pub dispatches_per_step: f64,
    /// Host time recording the step plan, once per request (ops, dispatch records, bind
    /// groups).
    pub plan_record_s: f64,
    /// Peak device memory the engine held during the measured run (weights included).
    pub peak_device_bytes: u64,
    /// The engine's estimate of that peak ([`Pipeline::memory_estimate`], `resident +
    /// request`, asked with the pool's cache freed as the run starts).
    pub estimate_bytes: u64,
    /// The run loaded each network for its stage ([`crate::pipeline::Offload`]).
    pub offload: bool,
    pub weight_bytes: u64,
    /// With [`BenchOptions::profile`]: the step, and the VAE decode by family.
    pub profile: Option<Profile>,
    pub decode_profile: Option<Profile>,
    /// With [`BenchOptions::profile`]: the text encoder by family.
    pub text_profile: Option<Profile>,
}

/// The prompt every bench run encodes (one 77-token chunk).
pub const BENCH_PROMPT: &str = "a photograph of an astronaut riding a horse";

/// Builds the model and runs the benchmark.
pub fn run(gpu: &Gpu, o: &BenchOptions) -> Result<BenchReport> {
    let dtype = if o.f16 {
        WeightDType::F16
    } else {
        WeightDType::F32
    };
    let before = gpu.memory_stats().in_use;
    let clock = std::time::Instant::now();
    let synthetic = Synthetic {
        seed: o.seed,
        f16: o.f16,
    };
    let synthetic_arch = match o.arch {
        BenchArch::Sd15 => Some(("synthetic SD 1.5", Architecture::sd15()?)),
        BenchArch::Sd21 => Some(("synthetic SD 2.1", Architecture::sd21()?)),
        BenchArch::Sdxl => Some(("synthetic SDXL", Architecture::sdxl()?)),
        BenchArch::Builtin => None,
    };
    let pipe = match synthetic_arch {
        Some((name, arch)) => Pipeline::synthetic(gpu, name, arch, synthetic, dtype)?,
        None => Pipeline::load(gpu, &o.builtin_path, dtype)?,
    };
    let mut pipe = pipe;
    pipe.offload = o.offload;
    gpu.wait()?;
    let load_s = clock.elapsed().as_secs_f64();
    let weight_bytes = gpu.memory_stats().in_use.saturating_sub(before);
    let size = pipe.default_size();
    let req = Request {
        prompt: BENCH_PROMPT.into(),
        steps: o.steps,
        guidance: o.guidance,
        sampler: o.sampler,
        width: o.width.unwrap_or(size),
        height: o.height.unwrap_or(size),
        seed: o.seed,
        batch_size: o.batch,
        ..Request::default()
    };
    let kind = pipe.sampler_for(&req)?;
    let cold = Request {
        steps: 1,
        ..req.clone()
    };
    let clock = std::time::Instant::now();
    pipe.generate(gpu, &cold, &mut |_| true)?;
    let cold_s = clock.elapsed().as_secs_f64();
    // From an empty cache, so that the peak is the estimate's (cached buffers would count).
    gpu.trim_pool();
    let est = pipe.memory_estimate(gpu, &req)?;
    gpu.reset_peak_memory();
    let out = pipe.generate(gpu, &req, &mut |_| true)?;
    if out.image.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            stage: "the decoded image".into(),
        });
    }
    let t = out.timings;
    let steps = out.steps_run.max(1) as f64;
    let f = pipe.vae_scale_factor();
    let rows = if pipe.guided(&req) { 2 } else { 1 } * req.batch_size;
    let flop = pipe.unet.config.flops_per_image(
        req.height / f,
        req.width / f,
        crate::tokenizer::CONTEXT_LEN,
    ) * rows as f64;
    let s_per_step = t.sampling.as_secs_f64() / steps;
    let peak_device_bytes = gpu.memory_stats().peak;
    let taesd_decode_s = if o.taesd {
        let w = crate::models::taesd::TinyWeights::synthetic(synthetic, f);
        pipe.set_tiny_weights(gpu, &w, dtype)?;
        let tiny = Request {
            decoder: crate::pipeline::Decoder::Tiny,
            ..req.clone()
        };
        // Warm (its shaders compiled), then measured.
        pipe.generate(
            gpu,
            &Request {
                steps: 1,
                ..tiny.clone()
            },
            &mut |_| true,
        )?;
        let out = pipe.generate(gpu, &tiny, &mut |_| true)?;
        Some(out.timings.decoding.as_secs_f64())
    } else {
        None
    };
    let (profile, decode_profile, text_profile) = if o.profile {
        gpu.set_profiling(true)?;
        let run = pipe.generate(gpu, &cold, &mut |_| true);
        let entries = gpu.take_profile();
        gpu.set_profiling(false)?;
        run?;
        (
            Some(Profile::from_entries(&entries, "step 1")),
            Some(Profile::from_entries(&entries, "VAE decode")),
            Some(Profile::from_entries(&entries, "text encoder")),
        )
    } else {
        (None, None, None)
    };
    let info = gpu.adapter_info();
    Ok(BenchReport {
        adapter: info.name.clone(),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        arch: o.arch.name(),
        width: req.width,
        height: req.height,
        batch: req.batch_size,
        steps: out.steps_run,
        dtype: if o.f16 { "f16" } else { "f32" },
        activations: if gpu.activation_dtype(if o.f16 {
            crate::DType::F16
        } else {
            crate::DType::F32
        }) == crate::DType::F16
        {
            "f16"
        } else {
            "f32"
        },
        guidance: req.guidance,
        sampler: format!("{kind:?}"),
        load_s,
        cold_s,
        text_encoder_s: t.text_encoding.as_secs_f64(),
        context_projection_s: t.context_projection.as_secs_f64(),
        denoise_s: t.sampling.as_secs_f64(),
        vae_decode_s: t.decoding.as_secs_f64(),
        taesd_decode_s,
        s_per_step,
        unet_flop_per_step: flop,
        achieved_tflops: flop / s_per_step / 1e12,
        cpu_record_s_per_step: t.step_record.as_secs_f64() / steps,
        cpu_submit_s_per_step: t.step_submit.as_secs_f64() / steps,
        dispatches_per_step: t.step_dispatches as f64 / steps,
        plan_record_s: t.plan_record.as_secs_f64(),
        peak_device_bytes,
        estimate_bytes: est.total(),
        offload: est.offload,
        weight_bytes,
        profile,
        decode_profile,
        text_profile,
    })
}

impl BenchReport {
    /// One JSON object (the fields above).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "adapter": self.adapter,
            "driver": self.driver,
            "arch": self.arch,
            "width": self.width,
            "height": self.height,
            "batch": self.batch,
            "steps": self.steps,
            "dtype": self.dtype,
            "activations": self.activations,
            "guidance": self.guidance,
            "sampler": self.sampler,
            "load_s": self.load_s,
            "cold_s": self.cold_s,
            "text_encoder_s": self.text_encoder_s,
            "context_projection_s": self.context_projection_s,
            "denoise_s": self.denoise_s,
            "vae_decode_s": self.vae_decode_s,
            "taesd_decode_s": self.taesd_decode_s,
            "s_per_step": self.s_per_step,
            "it_per_s": 1.0 / self.s_per_step,
            "unet_flop_per_step": self.unet_flop_per_step,
            "achieved_tflops": self.achieved_tflops,
            "cpu_record_s_per_step": self.cpu_record_s_per_step,
            "cpu_submit_s_per_step": self.cpu_submit_s_per_step,
            "dispatches_per_step": self.dispatches_per_step,
            "plan_record_s": self.plan_record_s,
            "peak_device_bytes": self.peak_device_bytes,
            "estimate_bytes": self.estimate_bytes,
            "offload": self.offload,
            "weight_bytes": self.weight_bytes,
            "profile": self.profile.as_ref().map(Profile::to_json),
            "profile_vae_decode": self.decode_profile.as_ref().map(Profile::to_json),
            "profile_text_encoder": self.text_profile.as_ref().map(Profile::to_json),
        })
    }

    /// A table for people.
    pub fn to_table(&self) -> String {
        let gib = |b: u64| crate::gpu::format_bytes(b);
        let rows: Vec<(&str, String)> = vec![
            ("adapter", format!("{} ({})", self.adapter, self.driver)),
            (
                "model",
                format!(
                    "{} {}x{} batch {} {} weights, {} activations, guidance {} {} x {} steps",
                    self.arch,
                    self.width,
                    self.height,
                    self.batch,
                    self.dtype,
                    self.activations,
                    self.guidance,
                    self.sampler,
                    self.steps
                ),
            ),
            ("load weights", format!("{:.2} s", self.load_s)),
            ("cold run (1 step)", format!("{:.2} s", self.cold_s)),
            ("text encoder", format!("{:.3} s", self.text_encoder_s)),
            (
                "context K/V",
                format!(
                    "{:.3} s (the U-Net's cross-attention keys and values, once per request)",
                    self.context_projection_s
                ),
            ),
            (
                "denoise",
                format!(
                    "{:.3} s = {:.4} s/step ({:.2} it/s)",
                    self.denoise_s,
                    self.s_per_step,
                    1.0 / self.s_per_step
                ),
            ),
            ("VAE decode", format!("{:.3} s", self.vae_decode_s)),
            (
                "TAESD decode",
                self.taesd_decode_s
                    .map_or("(--taesd)".into(), |s| format!("{s:.3} s")),
            ),
            (
                "U-Net per step",
                format!(
                    "{:.2} GFLOP, {:.2} GFLOP/s achieved",
                    self.unet_flop_per_step / 1e9,
                    self.achieved_tflops * 1e3
                ),
            ),
            (
                "host per step",
                format!(
                    "{:.3} ms encoding ({:.2} % of the step), {:.2} ms submitting, {:.0} dispatches \
                     (the plan: recorded once in {:.1} ms)",
                    1e3 * self.cpu_record_s_per_step,
                    100.0 * self.cpu_record_s_per_step / self.s_per_step,
                    1e3 * self.cpu_submit_s_per_step,
                    self.dispatches_per_step,
                    1e3 * self.plan_record_s
                ),
            ),
            (
                "device memory",
                format!(
                    "{} peak (estimate {}), {}",
                    gib(self.peak_device_bytes),
                    gib(self.estimate_bytes),
                    if self.offload {
                        format!(
                            "each network loaded for its stage ({} of weights in all)",
                            gib(self.weight_bytes)
                        )
                    } else {
                        format!("{} of it weights", gib(self.weight_bytes))
                    }
                ),
            ),
        ];
        let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let mut out: String = rows
            .iter()
            .map(|(k, v)| format!("{k:<w$}  {v}\n"))
            .collect();
        if let Some(p) = &self.profile {
            out.push_str(&p.to_table());
        }
        if let Some(p) = &self.decode_profile {
            out.push_str(&p.stage_table());
        }
        if let Some(p) = &self.text_profile {
            out.push_str(&p.stage_table());
        }
        out
    }
}

/// The built-in model's folder inside a source checkout (what `sd-wgpu` uses by default).
pub fn builtin_model_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/fashion-model"))
}
