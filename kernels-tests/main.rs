//! GPU kernel tests: every op against its plain-loop CPU reference (`sd_wgpu::reference`) over
//! SD-shaped and odd shapes, several seeds, `|gpu − ref| ≤ atol + rtol·|ref|` with the worst
//! element reported. These tests need a wgpu adapter and FAIL (never skip) without one; on a
//! machine with no GPU install Mesa's software Vulkan driver (`mesa-vulkan-drivers`).

mod attention;
mod batches;
mod bench;
mod cli_outputs;
mod clip;
mod common;
mod conv2d;
mod default_model;
mod elementwise;
mod f16_activations;
mod fewstep;
mod generation;
mod hardening;
mod img2img;
mod lora;
mod matmul;
mod memory;
mod norm;
mod offload;
mod pipeline;
mod runtime;
mod sampler;
mod sdxl;
mod step_ops;
mod taesd;
mod unet;
mod unet_added;
mod upscale;
mod vae;
mod vae_tiling;
mod weights;
