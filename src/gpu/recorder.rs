//! Dispatch records and the eager executor.
//!
//! Ops never submit: they validate shapes and push [`Dispatch`] records (kernel, uniform
//! params, storage bindings, workgroup counts) into a [`Recorder`]. `submit` encodes them all
//! into one compute pass and one queue submission; the params of every dispatch go into one
//! uniform buffer, bound with dynamic offsets. Because a dispatch is plain data, a later plan
//! executor can capture a recorder's dispatches once and replay them.

use super::{Gpu, GpuBuffer, Kernel};
use crate::error::{Error, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A byte range of a pooled buffer bound as one storage binding.
#[derive(Clone, Debug)]
pub struct BufferRange {
    pub buffer: Arc<GpuBuffer>,
    pub offset: u64,
    pub size: u64,
}

/// One compute dispatch, as data.
#[derive(Clone, Debug)]
pub struct Dispatch {
    pub kernel: Arc<Kernel>,
    /// The `Params` uniform, bytes exactly as the WGSL struct lays them out.
    pub params: Vec<u8>,
    /// Storage bindings 1.. in the kernel's order.
    pub bindings: Vec<BufferRange>,
    pub workgroups: [u32; 3],
    /// What the dispatch computes, for profiles.
    pub cost: Cost,
}

/// The work of one dispatch, for the profiler's GFLOP/s and GB/s: arithmetic (0 when the
/// op is memory-bound) and bytes moved (by default the bound ranges: an upper bound), with the
/// op's shapes in words.
#[derive(Clone, Debug, Default)]
pub struct Cost {
    pub flop: f64,
    pub bytes: f64,
    pub shape: String,
}

/// Collects dispatches and submits them in one pass.
///
/// Buffers are reused inside the pass: once every tensor on a buffer is dropped and only
/// this recorder's pending dispatches still bind it, [`Recorder::alloc`] hands it to a later
/// op (the pass runs dispatches in order, and wgpu puts a barrier between a dispatch that
/// reads a buffer and a later one that writes it). So a network's intermediates take the
/// memory of the live ones at each point, not of all of them. Host uploads never get such a
/// buffer: `queue.write_buffer` lands before the pass runs.
///
/// A recorder that is dropped with dispatches still pending submits them (errors are then
/// lost; call [`Recorder::submit`] to see them).
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    dispatches: Vec<Dispatch>,
    /// Every buffer the pending dispatches bind (by address), with how many bindings hold it.
    held: std::collections::HashMap<usize, (Arc<GpuBuffer>, usize)>,
    /// Addresses of `held` buffers by (size class, usage): where `alloc` looks.
    by_class: std::collections::HashMap<(u64, u32), Vec<usize>>,
}

impl<'g> Recorder<'g> {
    pub fn new(gpu: &'g Gpu) -> Self {
        Self {
            gpu,
            dispatches: Vec::new(),
            held: Default::default(),
            by_class: Default::default(),
        }
    }

    /// A storage buffer of at least `size` bytes for an op's output or scratch, written
    /// first by a dispatch of this recorder: a buffer whose tensors are all dropped and that
    /// only earlier dispatches of this pass bind — of the same size class, else the smallest
    /// such buffer up to twice the size (a decoder level's first resnet leaves a tensor
    /// twice as wide as everything after it: without this its buffer sat idle beside new
    /// ones) — else a new one from the pool.
    pub fn alloc(&self, size: u64, label: &str) -> Result<Arc<GpuBuffer>> {
        let class = super::pool::size_class(size);
        let usage = super::STORAGE_USAGE.bits();
        let dead = |a: &usize| {
            let (buf, refs) = &self.held[a];
            // Our `held` clone plus one per binding: no tensor holds it any more.
            Arc::strong_count(buf) == refs + 1
        };
        if let Some(a) = self
            .by_class
            .get(&(class, usage))
            .and_then(|addrs| addrs.iter().find(|a| dead(a)))
        {
            return Ok(self.held[a].0.clone());
        }
        let larger = self
            .by_class
            .iter()
            .filter(|((c, u), _)| *u == usage && *c > class && *c <= 2 * class)
            .filter_map(|((c, _), addrs)| addrs.iter().find(|a| dead(a)).map(|a| (*c, *a)))
            .min();
        if let Some((_, a)) = larger {
            return Ok(self.held[&a].0.clone());
        }
        self.gpu.alloc(size, label)
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Dispatches recorded and not yet submitted.
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    pub fn len(&self) -> usize {
        self.dispatches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }

    pub fn push(&mut self, d: Dispatch) {
        if d.workgroups.iter().all(|&n| n > 0) {
            for b in &d.bindings {
                let addr = Arc::as_ptr(&b.buffer) as usize;
                let entry = self.held.entry(addr).or_insert_with(|| {
                    let key = (b.buffer.size(), b.buffer.usage_bits());
                    self.by_class.entry(key).or_default().push(addr);
                    (b.buffer.clone(), 0)
                });
                entry.1 += 1;
            }
            self.dispatches.push(d);
        }
    }

    /// Describes the work of the dispatch pushed last (ops with known arithmetic).
    pub fn set_last_cost(&mut self, cost: Cost) {
        if let Some(d) = self.dispatches.last_mut() {
            d.cost = cost;
        }
    }

    /// Takes the pending dispatches out, unsubmitted (to capture them for replay).
    pub fn take(&mut self) -> Vec<Dispatch> {
        self.held.clear();
        self.by_class.clear();
        std::mem::take(&mut self.dispatches)
    }

    /// Records captured dispatches again: same kernels, bindings and params.
    pub fn replay(&mut self, dispatches: &[Dispatch]) {
        for d in dispatches {
            self.push(d.clone());
        }
    }

    /// Encodes and submits every pending dispatch (does not wait; while the device profiles,
    /// see [`Gpu::set_profiling`], it times each dispatch and waits for the times).
    pub fn submit(&mut self) -> Result<()> {
        if self.gpu.profiling() && !self.dispatches.is_empty() {
            return self.submit_profiled();
        }
        self.encode_and_submit(None, false).map(|_| ())
    }

    /// Each dispatch in a pass of its own between two timestamps, in chunks that fit a query
    /// set; the times are read back and logged on the device's profile.
    fn submit_profiled(&mut self) -> Result<()> {
        let all = self.take();
        for chunk in all.chunks(super::profile::PROFILE_CHUNK) {
            let n = chunk.len() as u32;
            let device = self.gpu.device();
            let qs = device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * n,
            });
            let size = 16 * u64::from(n);
            let resolve = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile resolve"),
                size,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            self.replay(chunk);
            self.encode_and_submit(Some((&qs, &resolve)), true)?;
            let bytes = self.gpu.read_bytes(&resolve, 0, size, "profile")?;
            let stamps: Vec<u64> = bytes
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .collect();
            self.gpu.log_profile(chunk, &stamps);
        }
        Ok(())
    }

    /// Submits, waits, and returns the GPU time of the pass: from timestamp queries when the
    /// device has them, else the wall time from submit to completion.
    pub fn submit_timed(&mut self) -> Result<Duration> {
        if !self.gpu.has_timestamps() || self.gpu.is_simulating() {
            let t = Instant::now();
            self.encode_and_submit(None, false)?;
            self.gpu.wait()?;
            return Ok(t.elapsed());
        }
        let device = self.gpu.device();
        let qs = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("pass timing"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pass timing resolve"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        self.encode_and_submit(Some((&qs, &resolve)), false)?;
        let bytes = self.gpu.read_bytes(&resolve, 0, 16, "pass timing")?;
        let t: [u64; 2] = bytemuck::pod_read_unaligned(&bytes);
        let ns =
            t[1].saturating_sub(t[0]) as f64 * f64::from(self.gpu.queue().get_timestamp_period());
        Ok(Duration::from_nanos(ns as u64))
    }

    /// `timing`: a query set and its resolve buffer, for two timestamps around the pass, or
    /// (`per_dispatch`) around each dispatch in a pass of its own.
    fn encode_and_submit(
        &mut self,
        timing: Option<(&wgpu::QuerySet, &wgpu::Buffer)>,
        per_dispatch: bool,
    ) -> Result<()> {
        let dispatches = self.take();
        if dispatches.is_empty() && timing.is_none() {
            return Ok(());
        }
        let gpu = self.gpu;
        let device = gpu.device();
        if gpu.is_simulating() {
            // Sized like a real submission (its params buffer counts), nothing encoded.
            let _ = encode_bindings(gpu, &dispatches);
            return Ok(());
        }
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let Encoded {
            uniform,
            offsets,
            bind_groups,
        } = encode_bindings(gpu, &dispatches);
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("sd-wgpu recorder"),
        });
        // Profiling: a pass per dispatch, each between its own two timestamps.
        let per_dispatch = timing.is_some() && per_dispatch;
        let passes: Vec<std::ops::Range<usize>> = if per_dispatch {
            (0..dispatches.len()).map(|i| i..i + 1).collect()
        } else {
            std::iter::once(0..dispatches.len()).collect()
        };
        for (k, range) in passes.iter().enumerate() {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("sd-wgpu ops"),
                timestamp_writes: timing.map(|(qs, _)| wgpu::ComputePassTimestampWrites {
                    query_set: qs,
                    beginning_of_pass_write_index: Some(2 * k as u32),
                    end_of_pass_write_index: Some(2 * k as u32 + 1),
                }),
            });
            for i in range.clone() {
                let d = &dispatches[i];
                pass.set_pipeline(&d.kernel.pipeline);
                pass.set_bind_group(0, &bind_groups[i], &[offsets[i]]);
                let [x, y, z] = d.workgroups;
                pass.dispatch_workgroups(x, y, z);
            }
        }
        if let Some((qs, buf)) = timing {
            enc.resolve_query_set(qs, 0..2 * passes.len() as u32, buf, 0);
        }
        gpu.queue().submit([enc.finish()]);
        drop(uniform);
        if let Some(e) = pollster::block_on(scope.pop()) {
            let labels: Vec<String> = dispatches.iter().map(|d| d.kernel.key.label()).collect();
            return Err(Error::Device {
                context: format!("submitting [{}]", labels.join(", ")),
                what: e.to_string(),
            });
        }
        Ok(())
    }
}

/// A pass's params uniform (every dispatch's params at its aligned offset) and bind groups.
pub(super) struct Encoded {
    pub uniform: Arc<GpuBuffer>,
    pub offsets: Vec<u32>,
    pub bind_groups: Vec<wgpu::BindGroup>,
}

/// Allocates the params uniform of `dispatches` from the pool and (unless simulating, when
/// only the allocation counts and no bind group is made) writes it and builds one bind group
/// per dispatch.
pub(super) fn encode_bindings(gpu: &Gpu, dispatches: &[Dispatch]) -> Encoded {
    let device = gpu.device();
    let align = u64::from(gpu.limits().min_uniform_buffer_offset_alignment.max(16));
    let mut offsets = Vec::with_capacity(dispatches.len());
    let mut total = 0u64;
    for d in dispatches {
        offsets.push(total as u32);
        total += (d.params.len() as u64).max(16).div_ceil(align) * align;
    }
    let uniform = gpu.alloc_uniform(total.max(align));
    if gpu.is_simulating() {
        return Encoded {
            uniform,
            offsets,
            bind_groups: Vec::new(),
        };
    }
    let mut staging = vec![0u8; total as usize];
    for (d, &o) in dispatches.iter().zip(&offsets) {
        staging[o as usize..o as usize + d.params.len()].copy_from_slice(&d.params);
    }
    gpu.queue().write_buffer(uniform.raw(), 0, &staging);
    let bind_groups = dispatches
        .iter()
        .map(|d| {
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: uniform.raw(),
                    offset: 0,
                    size: wgpu::BufferSize::new(d.kernel.key.params_size),
                }),
            }];
            for (i, b) in d.bindings.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: b.buffer.raw(),
                        offset: b.offset,
                        size: wgpu::BufferSize::new(b.size),
                    }),
                });
            }
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &d.kernel.layout,
                entries: &entries,
            })
        })
        .collect();
    Encoded {
        uniform,
        offsets,
        bind_groups,
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        if !self.dispatches.is_empty() {
            let _ = self.submit();
        }
    }
}
