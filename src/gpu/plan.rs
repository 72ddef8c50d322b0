//! Step plans: a recorder's dispatches captured once, with their params uniform written and
//! their bind groups built, then encoded again as often as needed with no host work beyond
//! `set_pipeline` / `set_bind_group` / `dispatch` per dispatch.
//!
//! What changes between replays must live in device memory the plan reads: the denoising
//! step keeps its per-step values in a [`crate::ops::StepTable`] and its state in buffers it
//! copies its results into (see `crate::pipeline`).

use super::recorder::{Encoded, encode_bindings};
use super::{Dispatch, Gpu, Recorder};
use crate::error::{Error, Result};

/// Dispatches recorded once and replayed. Holds every buffer they bind (so a step's
/// intermediates stay allocated while the plan lives: one step's working set).
pub struct Plan {
    dispatches: Vec<Dispatch>,
    /// While simulating: only the uniform (held for the memory count), no bind groups.
    encoded: Encoded,
    simulated: bool,
}

impl Plan {
    /// Takes `rec`'s pending dispatches (unsubmitted) and prepares them for replay.
    pub fn capture(rec: &mut Recorder<'_>) -> Result<Self> {
        let gpu = rec.gpu();
        let dispatches = rec.take();
        if gpu.is_simulating() {
            // The real plan keeps its uniform for its lifetime: so does the simulated one.
            return Ok(Self {
                encoded: encode_bindings(gpu, &dispatches),
                dispatches,
                simulated: true,
            });
        }
        let scope = gpu.device().push_error_scope(wgpu::ErrorFilter::Validation);
        let encoded = encode_bindings(gpu, &dispatches);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Device {
                context: format!("capturing a plan of {} dispatches", dispatches.len()),
                what: e.to_string(),
            });
        }
        Ok(Self {
            dispatches,
            encoded,
            simulated: false,
        })
    }

    pub fn len(&self) -> usize {
        self.dispatches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }

    /// The captured dispatches (a profiler replays them one pass each).
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    /// Encodes every dispatch into one compute pass of `enc` (nothing while simulating).
    pub fn encode(&self, enc: &mut wgpu::CommandEncoder) {
        if self.simulated {
            return;
        }
        let e = &self.encoded;
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("sd-wgpu step plan"),
            timestamp_writes: None,
        });
        for ((d, bg), &off) in self.dispatches.iter().zip(&e.bind_groups).zip(&e.offsets) {
            pass.set_pipeline(&d.kernel.pipeline);
            pass.set_bind_group(0, bg, &[off]);
            let [x, y, z] = d.workgroups;
            pass.dispatch_workgroups(x, y, z);
        }
    }

    /// Replays the dispatches through `gpu`'s profiler (one timed pass each, waits).
    pub fn submit_profiled(&self, gpu: &Gpu) -> Result<()> {
        let mut rec = Recorder::new(gpu);
        rec.replay(&self.dispatches);
        rec.submit()
    }
}
