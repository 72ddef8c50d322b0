//! The GPU runtime: device and queue (our own or a host application's), the buffer pool,
//! the pipeline cache, readback and GPU timing.
//!
//! Every other layer takes `&Gpu`; nothing here is global, so tests and host apps pass their
//! own device.

mod budget;
mod pipeline;
mod plan;
mod pool;
mod profile;
mod readback;
mod recorder;

pub use pipeline::{Access, Kernel, KernelKey};
pub use pool::{GpuBuffer, MemoryStats};
pub use profile::{ProfileEntry, family};

pub use budget::{ENV_MEMORY_BUDGET, MemoryBudget, format_bytes, parse_bytes};
use budget::{default_budget, env_budget};
pub use plan::Plan;
pub use readback::AsyncRead;
pub use recorder::{BufferRange, Cost, Dispatch, Recorder};

use crate::error::{Error, Result};
use std::sync::Arc;

/// Environment variable: substring of the adapter name to use (case-insensitive).
pub const ENV_ADAPTER: &str = "SD_WGPU_ADAPTER";
/// Environment variable: set to `1` to disable buffer reuse (exposes aliasing bugs).
pub const ENV_NO_REUSE: &str = "SD_WGPU_NO_BUFFER_REUSE";

/// How to pick an adapter in [`Gpu::with_options`].
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Case-insensitive substring of the adapter name; `None` reads `SD_WGPU_ADAPTER`.
    pub adapter: Option<String>,
    /// Backends to consider; `None` reads `WGPU_BACKEND`, else all.
    pub backends: Option<wgpu::Backends>,
    /// Lower `max_storage_buffer_binding_size` than the adapter's (tests of op splitting).
    pub max_storage_binding: Option<u64>,
    /// Lower `max_compute_workgroups_per_dimension` than the adapter's (tests of grids).
    pub max_workgroups_per_dim: Option<u32>,
    /// Loop iterations one shader invocation may run (see [`Gpu::loop_iteration_limit`]);
    /// `None` detects it from the adapter.
    pub loop_iteration_limit: Option<u32>,
    /// GEMM core for matmul and conv2d; `None` reads `SD_WGPU_GEMM` (`tiled` or `subgroup`),
    /// else picks per adapter.
    pub gemm: Option<GemmVariant>,
    /// Device memory the engine may use, in bytes (see [`Gpu::memory_budget`]); `None` reads
    /// `SD_WGPU_MEMORY_BUDGET`, else asks the driver.
    pub memory_budget: Option<u64>,
    /// Whether models with f16 weights compute with f16 activations (see
    /// [`Gpu::activation_dtype`]); `None` reads `SD_WGPU_F16_ACTIVATIONS` (`1` / `0`), else
    /// on for GPUs with `shader-f16`, off for CPU devices.
    pub f16_activations: Option<bool>,
}

/// Environment variable: `1` or `0` turns f16 activations on or off (see
/// [`Gpu::activation_dtype`]).
pub const ENV_F16_ACTIVATIONS: &str = "SD_WGPU_F16_ACTIVATIONS";

/// Usage of every storage buffer the engine allocates.
pub(crate) const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

thread_local! {
    /// The simulating pool of a [`Gpu::simulate`] call running on this thread, with the
    /// identity of the `Gpu` it stands in for.
    static SIMULATION: std::cell::RefCell<Option<(usize, pool::BufferPool)>> =
        const { std::cell::RefCell::new(None) };
}

/// Environment variable: `tiled` or `subgroup` forces the GEMM core (see [`GemmVariant`]).
pub const ENV_GEMM: &str = "SD_WGPU_GEMM";

/// Environment variable: `0` turns Winograd convolutions off, `1` on (see [`Gpu::winograd`]).
pub const ENV_WINOGRAD: &str = "SD_WGPU_WINOGRAD";

/// Environment variable: `0` turns the CPU devices' 64-bit operand loads off, `1` on (see
/// [`Gpu::load64`]).
pub const ENV_LOAD64: &str = "SD_WGPU_LOAD64";

/// An on/off switch from the environment (`SD_WGPU_F16_ACTIVATIONS`, `SD_WGPU_WINOGRAD`,
/// `SD_WGPU_LOAD64`): `1` on, `0` off, unset or empty the default; anything else is an error.
fn env_switch(name: &str) -> Result<Option<bool>> {
    match std::env::var(name).as_deref() {
        Err(_) | Ok("") => Ok(None),
        Ok("1") => Ok(Some(true)),
        Ok("0") => Ok(Some(false)),
        Ok(other) => Err(Error::unsupported(
            "gpu",
            format!("{name}={other:?} must be 1 or 0"),
        )),
    }
}

/// The GEMM core that matmul and conv2d are built on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmVariant {
    /// Workgroup-memory tiles with 4×4 register blocks (`shaders/gemm_tile.wgsl`): GPUs.
    Tiled,
    /// No workgroup memory; lanes share A through subgroup shuffles
    /// (`shaders/gemm_subgroup.wgsl`): CPU devices with subgroups of exactly 8 lanes.
    Subgroup,
}

fn detect_gemm(info: &wgpu::AdapterInfo, features: wgpu::Features) -> GemmVariant {
    let fixed8 = info.subgroup_min_size == 8 && info.subgroup_max_size == 8;
    if info.device_type == wgpu::DeviceType::Cpu
        && features.contains(wgpu::Features::SUBGROUP)
        && fixed8
    {
        GemmVariant::Subgroup
    } else {
        GemmVariant::Tiled
    }
}

/// Mesa's llvmpipe (lavapipe) before Mesa 25 silently ends a loop of an invocation once 65535
/// back-edges have run (gallivm's loop limiter). Measured by
/// `kernels-tests/runtime.rs::the_loop_iteration_cap_is_what_the_device_does`: on Mesa 22.3
/// a 100000-iteration loop runs 65535 times (a short loop after it runs in full); on Mesa
/// 25.0 it runs 100000 times.
pub const LLVMPIPE_LOOP_LIMIT: u32 = 65535;

/// The Mesa major version in a driver string such as `Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6)`.
fn mesa_major(driver_info: &str) -> Option<u32> {
    let rest = &driver_info[driver_info.find("Mesa ")? + 5..];
    rest.split('.').next()?.trim().parse().ok()
}

/// llvmpipe's cap: measured on Mesa 22.3 (capped) and 25.0 (not); versions between are
/// assumed capped, as is an llvmpipe whose version cannot be read.
fn detect_loop_limit(info: &wgpu::AdapterInfo) -> Option<u32> {
    let software = info.device_type == wgpu::DeviceType::Cpu;
    let llvmpipe = software && info.name.to_lowercase().contains("llvmpipe");
    let fixed = mesa_major(&info.driver_info).is_some_and(|v| v >= 25);
    (llvmpipe && !fixed).then_some(LLVMPIPE_LOOP_LIMIT)
}

/// A device and queue plus the engine's per-device state.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    features: wgpu::Features,
    limits: wgpu::Limits,
    pool: pool::BufferPool,
    pipelines: pipeline::PipelineCache,
    loop_limit: Option<u32>,
    gemm: GemmVariant,
    /// f16 activations for models with f16 weights ([`Gpu::activation_dtype`]).
    f16_act: bool,
    /// 3×3 stride-1 convs by Winograd F(2×2, 3×3) on the subgroup GEMM core
    /// ([`Gpu::winograd`]).
    winograd: std::sync::atomic::AtomicBool,
    /// 64-bit operand loads in the CPU devices' kernels ([`Gpu::load64`]).
    load64: std::sync::atomic::AtomicBool,
    budget: std::sync::Mutex<Option<MemoryBudget>>,
    /// Per-dispatch timing while profiling ([`Gpu::set_profiling`]).
    profiler: std::sync::Mutex<Option<profile::Profiler>>,
    /// Unique for the process's lifetime (caches keyed by device use it, never an address).
    uid: u64,
}

/// One adapter as `sd-wgpu info` shows it.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
}

/// Features the engine uses when the adapter has them.
fn wanted_features() -> wgpu::Features {
    wgpu::Features::SHADER_F16
        | wgpu::Features::SUBGROUP
        | wgpu::Features::SHADER_INT64
        | wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
}

fn instance(backends: Option<wgpu::Backends>) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if let Some(b) = backends {
        desc.backends = b;
    }
    wgpu::Instance::new(desc)
}

/// Preference of an adapter: discrete GPUs first, then integrated, virtual, CPU; native
/// backends before GL (the GL path lacks f16 and subgroups on the platforms we measured).
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let device = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (device, backend)
}

/// Every adapter wgpu can see with the given backends (`None`: `WGPU_BACKEND` or all).
pub fn list_adapters(backends: Option<wgpu::Backends>) -> Vec<AdapterSummary> {
    let inst = instance(backends);
    pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()))
        .into_iter()
        .map(|a| AdapterSummary {
            info: a.get_info(),
            features: a.features(),
            limits: a.limits(),
        })
        .collect()
}

impl Gpu {
    /// Picks the best adapter (see [`GpuOptions`]) and creates a device with the adapter's
    /// own limits and the optional features it supports (`shader-f16`, subgroups, timestamps).
    pub fn new() -> Result<Self> {
        Self::with_options(&GpuOptions::default())
    }

    pub fn with_options(opts: &GpuOptions) -> Result<Self> {
        let inst = instance(opts.backends);
        let wanted = opts
            .adapter
            .clone()
            .or_else(|| std::env::var(ENV_ADAPTER).ok())
            .filter(|s| !s.is_empty());
        let mut adapters = pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()));
        if let Some(w) = &wanted {
            let w = w.to_lowercase();
            adapters.retain(|a| a.get_info().name.to_lowercase().contains(&w));
        }
        adapters.sort_by_key(|a| rank(&a.get_info()));
        let adapter = adapters
            .into_iter()
            .next()
            .ok_or_else(|| Error::NoAdapter {
                detail: match &wanted {
                    Some(w) => format!(" matching {ENV_ADAPTER}=`{w}`"),
                    None => String::new(),
                },
            })?;
        let info = adapter.get_info();
        let features = adapter.features() & wanted_features();
        let mut limits = adapter.limits();
        if let Some(v) = opts.max_storage_binding {
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(v);
        }
        if let Some(v) = opts.max_workgroups_per_dim {
            limits.max_compute_workgroups_per_dimension =
                limits.max_compute_workgroups_per_dimension.min(v);
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("sd-wgpu"),
            required_features: features,
            // The adapter's own limits: max_buffer_size and max_storage_buffer_binding_size
            // in particular are far above the WebGPU defaults on real GPUs.
            required_limits: limits,
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) =
            pollster::block_on(adapter.request_device(&desc)).map_err(|source| {
                Error::RequestDevice {
                    adapter: info.name.clone(),
                    source,
                }
            })?;
        let mut gpu = Self::build(device, queue, info);
        if let Some(bytes) = opts.memory_budget {
            gpu.set_memory_budget(Some(MemoryBudget {
                bytes,
                source: "GpuOptions::memory_budget".into(),
            }));
        }
        if opts.loop_iteration_limit.is_some() {
            gpu.loop_limit = opts.loop_iteration_limit;
        }
        let forced = match std::env::var(ENV_GEMM).as_deref() {
            Err(_) | Ok("") => None,
            Ok("tiled") => Some(GemmVariant::Tiled),
            Ok("subgroup") => Some(GemmVariant::Subgroup),
            Ok(other) => {
                return Err(Error::unsupported(
                    "gpu",
                    format!("{ENV_GEMM}={other:?} is not a GEMM variant (tiled, subgroup)"),
                ));
            }
        };
        if let Some(on) = opts.f16_activations.or(env_switch(ENV_F16_ACTIVATIONS)?) {
            gpu.set_f16_activations(on)?;
        }
        if let Some(on) = env_switch(ENV_WINOGRAD)? {
            gpu.set_winograd(on);
        }
        if let Some(on) = env_switch(ENV_LOAD64)? {
            gpu.set_load64(on);
        }
        if let Some(g) = opts.gemm.or(forced) {
            if g == GemmVariant::Subgroup {
                let info = &gpu.info;
                let sg = 8;
                if !gpu.features.contains(wgpu::Features::SUBGROUP)
                    || info.subgroup_min_size != sg
                    || info.subgroup_max_size != sg
                {
                    return Err(Error::unsupported(
                        "gpu",
                        format!(
                            "the subgroup GEMM needs subgroups of exactly {sg} lanes; `{}` has {}..{}",
                            info.name, info.subgroup_min_size, info.subgroup_max_size
                        ),
                    ));
                }
            }
            gpu.gemm = g;
        }
        Ok(gpu)
    }

    /// Wraps a host application's device and queue. The engine uses whatever features and
    /// limits the host enabled (f16 storage works without `shader-f16`; see the README).
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = device.adapter_info();
        Self::build(device, queue, info)
    }

    fn build(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Self {
        let features = device.features();
        let limits = device.limits();
        let reuse = std::env::var(ENV_NO_REUSE).map_or(true, |v| v != "1");
        let loop_limit = detect_loop_limit(&info);
        let gemm = detect_gemm(&info, features);
        // f16 halves the activations' memory and traffic: on by default on GPUs, where memory
        // is what limits sizes and batches. CPU devices (lavapipe, where the parity suite
        // runs) keep f32 so that f16 checkpoints match the reference's f32 run as closely as
        // before; f16 activations are opt-in there (faster too: see the README).
        let f16_act = features.contains(wgpu::Features::SHADER_F16)
            && info.device_type != wgpu::DeviceType::Cpu;
        let budget = env_budget().or_else(|| default_budget(&device, &info));
        Self {
            budget: std::sync::Mutex::new(budget),
            profiler: std::sync::Mutex::new(None),
            loop_limit,
            gemm,
            f16_act,
            winograd: std::sync::atomic::AtomicBool::new(true),
            load64: std::sync::atomic::AtomicBool::new(true),
            pool: pool::BufferPool::new(reuse),
            pipelines: pipeline::PipelineCache::default(),
            uid: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
            device,
            queue,
            info,
            features,
            limits,
        }
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }
    pub fn features(&self) -> wgpu::Features {
        self.features
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }
    /// The most loop iterations one shader invocation may run on this device, when it has
    /// such a cap ([`LLVMPIPE_LOOP_LIMIT`] on llvmpipe); ops with long loops split their work
    /// into several dispatches to stay below it.
    pub fn loop_iteration_limit(&self) -> Option<u32> {
        self.loop_limit
    }
    /// The GEMM core matmul and conv2d use on this device.
    pub fn gemm_variant(&self) -> GemmVariant {
        self.gemm
    }

    /// The dtype a model whose weights are `weights` keeps its activations in: f16 for f16
    /// weights where f16 activations are on (by default on GPUs with `shader-f16`; see
    /// [`GpuOptions::f16_activations`]), else f32. Kernels compute in f32 either way.
    pub fn activation_dtype(&self, weights: crate::DType) -> crate::DType {
        if weights == crate::DType::F16 && self.f16_act {
            crate::DType::F16
        } else {
            crate::DType::F32
        }
    }

    /// Turns f16 activations on or off for what models record from now on (each forward
    /// pass reads the policy; a request's step plan keeps the dtype it was recorded with);
    /// on needs `shader-f16`.
    pub fn set_f16_activations(&mut self, on: bool) -> Result<()> {
        if on && !self.features.contains(wgpu::Features::SHADER_F16) {
            return Err(Error::unsupported(
                "gpu",
                format!(
                    "f16 activations need shader-f16, which `{}` lacks",
                    self.info.name
                ),
            ));
        }
        self.f16_act = on;
        Ok(())
    }
    /// Whether 3×3 stride-1 convs may run as Winograd F(4×4, 3×3) or F(2×2, 3×3)
    /// (`ops::conv2d`, for convs with f32 activations and enough tiles; 4× or 2.25× fewer
    /// multiplies, f32 transforms): on CPU devices (the subgroup GEMM core) unless
    /// `SD_WGPU_WINOGRAD=0`; GPUs always run the direct implicit GEMM.
    pub fn winograd(&self) -> bool {
        self.gemm == GemmVariant::Subgroup
            && self.winograd.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Turns Winograd convolutions on or off for what is recorded from now on (tests and A/B
    /// measurements; a recorded step plan keeps what it was recorded with).
    pub fn set_winograd(&self, on: bool) {
        self.winograd
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the kernels of the subgroup GEMM core's devices (the core itself for matmul,
    /// conv2d and the Winograd products, the narrow conv, the CPU attention kernel, the
    /// Winograd transforms and the vectorised group norm) read and write vec4 operands as
    /// 64-bit words (define `LOAD64`): llvmpipe loads a storage buffer lane by lane with a
    /// bounds test per component, and a `u64` carries two f32 or four f16. Needs
    /// `shader-int64`; on unless `SD_WGPU_LOAD64=0`.
    pub fn load64(&self) -> bool {
        self.gemm == GemmVariant::Subgroup
            && self.features.contains(wgpu::Features::SHADER_INT64)
            && self.load64.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Turns [`Gpu::load64`] on or off for what is recorded from now on (tests and A/B
    /// measurements).
    pub fn set_load64(&self, on: bool) {
        self.load64.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Turns buffer reuse on or off (off: every released buffer is destroyed, so a kernel
    /// that reads a buffer after its tensor was dropped reads garbage or fails loudly).
    pub fn set_buffer_reuse(&self, on: bool) {
        self.pool.set_reuse(on);
    }
    /// Bytes allocated now and at peak, and how many buffers the pool holds.
    pub fn memory_stats(&self) -> MemoryStats {
        self.pool.stats()
    }
    /// Resets the peak counter to the current allocation.
    pub fn reset_peak_memory(&self) {
        self.pool.reset_peak();
    }
    /// Frees the pool's cached (unused) buffers (inside [`Gpu::simulate`]: the simulated
    /// pool's).
    pub fn trim_pool(&self) {
        self.with_pool(|p| p.trim());
    }

    /// The device memory requests may need (checked before each generation): set with
    /// [`GpuOptions::memory_budget`] or [`Gpu::set_memory_budget`], else
    /// `SD_WGPU_MEMORY_BUDGET`, else the driver's figure (Vulkan: the largest device-local
    /// heap). `None` when none is known: then only per-buffer limits are checked.
    pub fn memory_budget(&self) -> Option<MemoryBudget> {
        self.budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets the memory budget (a host app that shares the device with its own resources
    /// gives the engine its share; `source` names where the number came from in messages);
    /// `None` returns to the environment's or the driver's figure.
    pub fn set_memory_budget(&self, budget: Option<MemoryBudget>) {
        let b =
            budget.or_else(|| env_budget().or_else(|| default_budget(&self.device, &self.info)));
        *self.budget.lock().unwrap_or_else(|p| p.into_inner()) = b;
    }

    fn id(&self) -> usize {
        self as *const Self as usize
    }

    /// An identifier no other `Gpu` of this process has (caches keyed by device use it).
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// Whether this thread is inside [`Gpu::simulate`] for this device.
    pub fn is_simulating(&self) -> bool {
        SIMULATION.with(|s| matches!(&*s.borrow(), Some((id, _)) if *id == self.id()))
    }

    /// Runs `f` against a simulating pool and returns its result with the memory it would
    /// have allocated: buffers are not created (every tensor shares one 256-byte placeholder),
    /// uploads and submissions are skipped, readbacks return zeros; pool classes and reuse
    /// behave exactly as for real, so `peak` is what running `f` would add to the pool when
    /// its cache starts empty. Ops only record, so the same code that runs a request sizes it.
    /// Weights must not be loaded inside (they would be placeholders): see
    /// `Weights::upload`. Calls nested in a simulation run in the outer one.
    pub fn simulate<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<(T, MemoryStats)> {
        if self.is_simulating() {
            return f().map(|t| (t, MemoryStats::default()));
        }
        let placeholder = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("memory estimate placeholder"),
            size: 256,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let sim = pool::BufferPool::simulating(self.pool.reuse(), placeholder.clone());
        struct Restore(Option<(usize, pool::BufferPool)>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let prev = self.0.take();
                SIMULATION.with(|s| *s.borrow_mut() = prev);
            }
        }
        let prev = SIMULATION.with(|s| s.borrow_mut().replace((self.id(), sim)));
        let restore = Restore(prev);
        let out = f();
        let stats = SIMULATION.with(|s| s.borrow().as_ref().map(|(_, p)| p.stats()));
        drop(restore);
        placeholder.destroy();
        out.map(|t| (t, stats.unwrap_or_default()))
    }

    /// Runs `f` on the pool in effect: this thread's simulating one inside
    /// [`Gpu::simulate`], else the device's.
    fn with_pool<R>(&self, f: impl FnOnce(&pool::BufferPool) -> R) -> R {
        SIMULATION.with(|s| match &*s.borrow() {
            Some((id, sim)) if *id == self.id() => f(sim),
            _ => f(&self.pool),
        })
    }

    fn pooled(&self, size: u64, usage: wgpu::BufferUsages, label: &str) -> Arc<GpuBuffer> {
        self.with_pool(|p| p.get(&self.device, size, usage, label))
    }

    /// A storage buffer of at least `size` bytes from the pool.
    pub fn alloc(&self, size: u64, label: &str) -> Result<Arc<GpuBuffer>> {
        if size > self.limits.max_buffer_size {
            return Err(Error::Limit {
                op: "alloc",
                tensor: label.to_string(),
                bytes: size,
                limit_name: "max_buffer_size",
                limit: self.limits.max_buffer_size,
            });
        }
        Ok(self.pooled(size, STORAGE_USAGE, label))
    }

    pub(crate) fn alloc_uniform(&self, size: u64) -> Arc<GpuBuffer> {
        self.pooled(
            size,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            "params",
        )
    }

    /// The compiled pipeline for `key`, created on first use.
    pub fn kernel(&self, key: &KernelKey) -> Result<Arc<Kernel>> {
        self.pipelines.get(self, key)
    }

    /// Number of distinct pipelines compiled so far.
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.len()
    }

    /// Splits `groups` workgroups into a grid within `max_compute_workgroups_per_dimension`.
    /// Kernels linearise `workgroup_id` with `num_workgroups` and skip ids past the end.
    pub fn grid(&self, op: &'static str, groups: u64) -> Result<[u32; 3]> {
        let lim = u64::from(self.limits.max_compute_workgroups_per_dimension.max(1));
        if groups == 0 {
            return Ok([0, 0, 0]);
        }
        let x = groups.min(lim);
        let rest = groups.div_ceil(x);
        let y = rest.min(lim);
        let z = rest.div_ceil(y);
        if z > lim {
            return Err(Error::Limit {
                op,
                tensor: "dispatch grid".into(),
                bytes: groups,
                limit_name: "max_compute_workgroups_per_dimension^3",
                limit: lim * lim * lim,
            });
        }
        Ok([x as u32, y as u32, z as u32])
    }

    /// Blocks until all submitted work has finished.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Device {
                context: "wait".into(),
                what: e.to_string(),
            })
    }
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::{format_bytes, parse_bytes};

    #[test]
    fn mesa_versions_parse() {
        assert_eq!(
            super::mesa_major("Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6)"),
            Some(25)
        );
        assert_eq!(super::mesa_major("Mesa 22.3.6 (LLVM 15.0.6)"), Some(22));
        assert_eq!(super::mesa_major("535.104"), None);
    }

    #[test]
    fn byte_sizes_parse_and_print() {
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("6GiB"), Some(6 << 30));
        assert_eq!(parse_bytes("6 gb"), Some(6 << 30));
        assert_eq!(parse_bytes("512M"), Some(512 << 20));
        assert_eq!(parse_bytes("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_bytes("64kib"), Some(64 << 10));
        assert_eq!(parse_bytes("1T"), Some(1 << 40));
        for bad in ["", "GiB", "6 parsecs", "-1G", "1e3", "1.2.3G"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(format_bytes(320 << 20), "320.0 MiB");
    }
}
