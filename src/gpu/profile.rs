//! Per-dispatch GPU timing (`--profile`): while a [`Gpu`] profiles, every submission puts each
//! dispatch in a compute pass of its own with beginning/end timestamps (plain `TIMESTAMP_QUERY`,
//! no in-pass writes needed), reads them back after the submission, and logs one
//! [`ProfileEntry`] per dispatch under the stage the caller named. Profiling serialises the
//! GPU and adds a readback per submission: profile a separate run, never the measured one.

use super::{Dispatch, Gpu};
use crate::error::Result;

/// One dispatch's GPU time.
#[derive(Clone, Debug)]
pub struct ProfileEntry {
    /// What the pipeline was doing (`text encoder`, `step 1`, `VAE decode`, …).
    pub stage: String,
    /// The kernel's label (shader, entry point, variant).
    pub kernel: String,
    /// The op family: conv2d, winograd (its transforms), matmul, attention, group-norm,
    /// layer-norm, elementwise, sampler or guard.
    pub family: &'static str,
    pub workgroups: [u32; 3],
    pub seconds: f64,
    /// The dispatch's work ([`super::Cost`]).
    pub flop: f64,
    pub bytes: f64,
    pub shape: String,
}

impl ProfileEntry {
    /// `12.3 GFLOP/s` for ops with arithmetic, else `4.5 GB/s`.
    pub fn rate(&self) -> String {
        let s = self.seconds.max(1e-12);
        if self.flop > 0.0 {
            format!("{:.2} GFLOP/s", self.flop / s / 1e9)
        } else {
            format!("{:.2} GB/s", self.bytes / s / 1e9)
        }
    }
}

/// The op family of a shader file.
pub fn family(shader: &str) -> &'static str {
    match shader {
        "conv2d.wgsl" => "conv2d",
        // Winograd convs' transforms (their 16 products are matmul dispatches).
        "winograd.wgsl" => "winograd",
        s if s.starts_with("gemm") || s == "matmul.wgsl" => "matmul",
        s if s.starts_with("attention") => "attention",
        s if s.starts_with("group_norm") => "group-norm",
        "layer_norm.wgsl" => "layer-norm",
        "sampler_step.wgsl" | "step_table.wgsl" => "sampler",
        "finite_check.wgsl" => "guard",
        _ => "elementwise",
    }
}

/// Dispatches timed per submission (each needs two queries; query sets hold at most 4096).
pub(crate) const PROFILE_CHUNK: usize = 1024;

#[derive(Default)]
pub(crate) struct Profiler {
    pub stage: String,
    pub entries: Vec<ProfileEntry>,
}

impl Gpu {
    /// Starts (or, with `false`, stops) per-dispatch profiling; needs timestamp queries.
    pub fn set_profiling(&self, on: bool) -> Result<()> {
        if on && !self.has_timestamps() {
            return Err(crate::Error::unsupported(
                "profile",
                format!("`{}` has no timestamp queries", self.info.name),
            ));
        }
        let mut p = self.profiler.lock().unwrap_or_else(|e| e.into_inner());
        *p = on.then(Profiler::default);
        Ok(())
    }

    /// Names the stage the following submissions belong to (while profiling).
    pub fn set_profile_stage(&self, stage: &str) {
        let mut p = self.profiler.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = p.as_mut() {
            p.stage = stage.to_string();
        }
    }

    /// The entries logged so far (profiling continues).
    pub fn take_profile(&self) -> Vec<ProfileEntry> {
        let mut p = self.profiler.lock().unwrap_or_else(|e| e.into_inner());
        p.as_mut()
            .map(|p| std::mem::take(&mut p.entries))
            .unwrap_or_default()
    }

    pub(crate) fn profiling(&self) -> bool {
        !self.is_simulating()
            && self
                .profiler
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
    }

    /// Logs the timestamps `[begin, end]` per dispatch read back for `dispatches`.
    pub(crate) fn log_profile(&self, dispatches: &[Dispatch], stamps: &[u64]) {
        let period = f64::from(self.queue.get_timestamp_period()) * 1e-9;
        let mut p = self.profiler.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = p.as_mut() else { return };
        for (d, t) in dispatches.iter().zip(stamps.chunks_exact(2)) {
            p.entries.push(ProfileEntry {
                stage: p.stage.clone(),
                kernel: d.kernel.key.label(),
                family: family(d.kernel.key.shader),
                workgroups: d.workgroups,
                seconds: t[1].saturating_sub(t[0]) as f64 * period,
                flop: d.cost.flop,
                bytes: d.cost.bytes,
                shape: d.cost.shape.clone(),
            });
        }
    }
}
