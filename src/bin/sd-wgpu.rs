//! The `sd-wgpu` command line.

use anyhow::Result;
use clap::{Parser, Subcommand};
use sd_wgpu::gpu::{self, Gpu};

#[derive(Parser)]
#[command(name = "sd-wgpu", version, about = "Latent diffusion on any wgpu GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the adapter the engine picks, every adapter wgpu sees, and their features and limits.
    Info {
        /// Also list every adapter, not only the chosen one.
        #[arg(long)]
        all: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info { all } => info(all),
    }
}

fn print_adapter(info: &wgpu::AdapterInfo, features: wgpu::Features, limits: &wgpu::Limits) {
    println!(
        "adapter:  {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );
    println!("driver:   {} {}", info.driver, info.driver_info);
    let names = [
        (wgpu::Features::SHADER_F16, "shader-f16"),
        (wgpu::Features::SUBGROUP, "subgroups"),
        (wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
    ];
    let have: Vec<&str> = names
        .iter()
        .filter(|(f, _)| features.contains(*f))
        .map(|(_, n)| *n)
        .collect();
    println!(
        "features: {}",
        if have.is_empty() {
            "none of shader-f16, subgroups, timestamp-query".into()
        } else {
            have.join(", ")
        }
    );
    println!("limits:");
    println!(
        "  max_buffer_size                    {}",
        limits.max_buffer_size
    );
    println!(
        "  max_storage_buffer_binding_size    {}",
        limits.max_storage_buffer_binding_size
    );
    println!(
        "  max_compute_workgroup_storage_size {}",
        limits.max_compute_workgroup_storage_size
    );
    println!(
        "  max_compute_invocations_per_workgroup {}",
        limits.max_compute_invocations_per_workgroup
    );
    println!(
        "  max_compute_workgroups_per_dimension  {}",
        limits.max_compute_workgroups_per_dimension
    );
    println!(
        "  max_storage_buffers_per_shader_stage  {}",
        limits.max_storage_buffers_per_shader_stage
    );
    println!(
        "  min_storage_buffer_offset_alignment   {}",
        limits.min_storage_buffer_offset_alignment
    );
}

fn info(all: bool) -> Result<()> {
    let gpu = Gpu::new()?;
    println!(
        "== chosen ({} / WGPU_BACKEND to override)",
        gpu::ENV_ADAPTER
    );
    print_adapter(gpu.adapter_info(), gpu.features(), gpu.limits());
    if all {
        for a in gpu::list_adapters(None) {
            println!();
            print_adapter(&a.info, a.features, &a.limits);
        }
    }
    Ok(())
}
