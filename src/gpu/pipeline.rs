//! Pipeline cache keyed by (shader, entry point, specialisation). Layouts are explicit: binding
//! 0 is the op's `Params` uniform (with a dynamic offset into the recorder's one uniform
//! buffer), bindings 1.. are storage buffers in the order the op lists them.

use super::Gpu;
use crate::error::{Error, Result};
use crate::shaders::{self, Define};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How a kernel uses one storage binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    ReadWrite,
}

/// Identifies one compiled pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelKey {
    /// File name in `shaders/`.
    pub shader: &'static str,
    pub entry: &'static str,
    /// Preprocessor defines (storage variants, compile-time sizes).
    pub defines: Vec<Define>,
    /// WGSL `override` constants (tile sizes).
    pub overrides: Vec<(&'static str, u32)>,
    /// Storage bindings 1.. in order.
    pub bindings: Vec<Access>,
    /// Size of the `Params` uniform struct in bytes.
    pub params_size: u64,
}

impl KernelKey {
    pub fn label(&self) -> String {
        let mut s = format!("{}:{}", self.shader.trim_end_matches(".wgsl"), self.entry);
        for d in &self.defines {
            match d {
                Define::Flag(n) => s.push_str(&format!(" {n}")),
                Define::Const(n, v) => s.push_str(&format!(" {n}={v}")),
            }
        }
        for (n, v) in &self.overrides {
            s.push_str(&format!(" {n}={v}"));
        }
        s
    }
}

/// A compiled pipeline and its bind-group layout.
pub struct Kernel {
    pub key: KernelKey,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kernel({})", self.key.label())
    }
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    map: Mutex<HashMap<KernelKey, Arc<Kernel>>>,
}

impl PipelineCache {
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub(crate) fn get(&self, gpu: &Gpu, key: &KernelKey) -> Result<Arc<Kernel>> {
        if let Some(k) = self.map.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
            return Ok(k.clone());
        }
        let kernel = Arc::new(create(gpu, key)?);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map.entry(key.clone()).or_insert(kernel).clone())
    }
}

fn create(gpu: &Gpu, key: &KernelKey) -> Result<Kernel> {
    let device = gpu.device();
    let label = key.label();
    let src = shaders::preprocess(key.shader, &key.defines)?;
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    // Bounds checks (and integer-division checks) stay on; only naga's forced loop bounding
    // is turned off: a hidden 64-bit counter in every loop that costs lavapipe about a third of
    // a GEMM's time (measured: matmul 1024³ 9.0 → 12–14 GFLOP/s, Mesa 25).
    let checks = wgpu::ShaderRuntimeChecks {
        force_loop_bounding: false,
        ..wgpu::ShaderRuntimeChecks::checked()
    };
    // SAFETY: `force_loop_bounding: false` requires that no shader loops forever. Every loop in
    // `shaders/` runs over a count taken from its uniform params (shapes validated by the
    // op's Rust wrapper, all far below u32::MAX, so counters cannot wrap) or a constant, and
    // advances by a positive step; `shader_loops_are_counted` (tests/shaders.rs) checks the
    // loop forms. Memory safety is untouched: bounds checks are enforced.
    let module = unsafe {
        device.create_shader_module_trusted(
            wgpu::ShaderModuleDescriptor {
                label: Some(&label),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            },
            checks,
        )
    };
    let mut entries = vec![wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: true,
            min_binding_size: wgpu::BufferSize::new(key.params_size),
        },
        count: None,
    }];
    for (i, a) in key.bindings.iter().enumerate() {
        entries.push(wgpu::BindGroupLayoutEntry {
            binding: i as u32 + 1,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage {
                    read_only: *a == Access::Read,
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        });
    }
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(&label),
        entries: &entries,
    });
    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(&label),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let constants: Vec<(&str, f64)> = key
        .overrides
        .iter()
        .map(|(n, v)| (*n, f64::from(*v)))
        .collect();
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(&label),
        layout: Some(&pl),
        module: &module,
        entry_point: Some(key.entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &constants,
            // Our kernels write every workgroup variable before reading it.
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(Error::Device {
            context: format!("creating pipeline {label}"),
            what: e.to_string(),
        });
    }
    Ok(Kernel {
        key: key.clone(),
        pipeline,
        layout,
    })
}
