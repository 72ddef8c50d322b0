//! The run's non-finite guard: a one-word flag on the device that
//! [`ops::flag_nonfinite`](crate::ops::flag_nonfinite) passes set to the earliest stage whose
//! output held a NaN or Inf (text encoding, each U-Net call, each sampler update, decoding).
//! The flag is read asynchronously after each submission ([`crate::gpu::AsyncRead`]): no
//! extra wait in the step loop, and the run stops at the first step whose read shows a bad
//! stage, naming it.

use crate::error::{Error, Result};
use crate::gpu::{AsyncRead, Gpu, Recorder};
use crate::ops::{self, finite::FINITE};
use crate::tensor::{DType, Tensor};

pub(crate) struct FiniteGuard {
    flag: Tensor,
    stages: Vec<String>,
    pending: Option<AsyncRead>,
}

impl FiniteGuard {
    pub fn new(gpu: &Gpu) -> Result<Self> {
        let flag = Tensor::from_f32(
            gpu,
            &[f32::from_bits(FINITE)],
            &[1],
            DType::F32,
            "non-finite flag",
        )?;
        Ok(Self {
            flag,
            stages: Vec::new(),
            pending: None,
        })
    }

    /// Records a check of `x` as `stage` (a description for the error).
    pub fn check(&mut self, rec: &mut Recorder<'_>, x: &Tensor, stage: String) -> Result<()> {
        let code = self.stages.len() as u32;
        self.stages.push(stage);
        ops::flag_nonfinite(rec, x, &self.flag, code)
    }

    /// The flag tensor (for checks recorded with [`ops::flag_nonfinite_step`]).
    pub fn flag(&self) -> &Tensor {
        &self.flag
    }

    /// Reserves codes for a recorded step: `rows` step-table rows × `per_row` checks, code
    /// `base + row · per_row + k` naming `stage(row, k)`; returns `base`.
    pub fn reserve_steps(
        &mut self,
        rows: usize,
        per_row: usize,
        stage: impl Fn(usize, usize) -> String,
    ) -> u32 {
        let base = self.stages.len() as u32;
        for row in 0..rows {
            for k in 0..per_row {
                self.stages.push(stage(row, k));
            }
        }
        base
    }

    fn verdict(&self, gpu: &Gpu, bytes: &[u8]) -> Result<()> {
        if gpu.is_simulating() {
            return Ok(());
        }
        let code = bytes
            .get(..4)
            .map_or(FINITE, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if code == FINITE {
            return Ok(());
        }
        Err(Error::NonFinite {
            stage: self
                .stages
                .get(code as usize)
                .cloned()
                .unwrap_or_else(|| format!("stage {code}")),
        })
    }

    /// After a submission: starts reading the flag (behind the submitted work) unless a read
    /// is already under way.
    pub fn after_submit(&mut self, gpu: &Gpu) {
        if self.pending.is_none() {
            self.pending = Some(gpu.read_bytes_async(
                self.flag.buffer().raw(),
                self.flag.byte_offset(),
                4,
                "non-finite flag",
            ));
        }
    }

    /// The verdict of the read under way if it has arrived (no waiting).
    pub fn poll(&mut self, gpu: &Gpu) -> Result<()> {
        if let Some(read) = &mut self.pending {
            if let Some(bytes) = read.try_take(gpu)? {
                self.pending = None;
                self.verdict(gpu, &bytes)?;
            }
        }
        Ok(())
    }

    /// The verdict over everything submitted so far (waits for it).
    pub fn finish(&mut self, gpu: &Gpu) -> Result<()> {
        self.pending = None;
        self.after_submit(gpu);
        let bytes = match &mut self.pending {
            Some(read) => read.wait(gpu)?,
            None => return Ok(()),
        };
        self.pending = None;
        self.verdict(gpu, &bytes)
    }
}

/// A host-side check with the same error: the first non-finite value of `v`, if any.
pub(crate) fn check_host(v: &[f32], stage: impl FnOnce() -> String) -> Result<()> {
    if v.iter().all(|x| x.is_finite()) {
        return Ok(());
    }
    Err(Error::NonFinite { stage: stage() })
}
