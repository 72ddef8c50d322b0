//! sd-wgpu: Stable-Diffusion-class latent diffusion on any GPU that wgpu drives, with
//! hand-written WGSL compute kernels.
//!
//! Layers, bottom up (see the README's architecture section):
//! - [`gpu`]: device and queue (own or borrowed), buffer pool, pipeline cache, recorder;
//! - [`tensor`]: GPU tensors (f32 or packed f16, channels-last activations);
//! - [`ops`]: the kernels' Rust wrappers, which validate and record dispatches;
//! - [`models`]: the networks (CLIP text encoder so far), from checkpoint weights;
//! - [`pipeline`]: text-to-image from a diffusers folder, with guidance and any sampler;
//! - [`reference`]: plain-loop CPU references of every op;
//! - [`schedulers`]: noise schedules and samplers (DDIM, DDPM, PNDM, Euler, Euler-a, DPM++ 2M);
//! - [`weights`]: safetensors checkpoints (mmap, dtype conversion, re-layout), pickles refused;
//! - [`tokenizer`]: the CLIP tokenizer (built-in real CLIP BPE, or a model's own files).

pub mod bench;
pub mod brownian;
pub mod error;
pub mod fashion;
pub mod files;
pub mod fuzz;
pub mod gpu;
pub mod imageio;
pub mod infotext;
pub mod lora;
pub mod models;
pub mod npy;
pub mod ops;
pub mod pipeline;
pub mod prompt;
pub mod reference;
pub mod resample;
pub mod rng;
pub mod schedulers;
pub mod shaders;
pub mod tensor;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions, MemoryBudget, Recorder};
pub use tensor::{DType, Tensor};
