//! The `sd-wgpu` command line: `generate` (generate.rs), `upscale` (upscale.rs), `info`,
//! `bench`.

mod generate;
mod lora;
mod upscale;

use generate::{GenerateArgs, generate};

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use sd_wgpu::gpu::{self, Gpu};
use sd_wgpu::schedulers::SamplerKind;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "sd-wgpu", version, about = "Latent diffusion on any wgpu GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum DTypeArg {
    F16,
    F32,
}

/// The weight dtype policy of a `--dtype` flag (absent: the files' own).
fn weight_dtype(d: Option<DTypeArg>) -> sd_wgpu::weights::WeightDType {
    use sd_wgpu::weights::WeightDType;
    match d {
        None => WeightDType::Auto,
        Some(DTypeArg::F16) => WeightDType::F16,
        Some(DTypeArg::F32) => WeightDType::F32,
    }
}

/// Which networks stay on the device (`sd_wgpu::pipeline::Offload`).
#[derive(Clone, Copy, Default, ValueEnum)]
enum OffloadArg {
    /// Every network stays loaded; a request that does not fit beside them is refused.
    Never,
    /// Networks stay loaded unless the request fits only with the idle ones released.
    #[default]
    Auto,
    /// Each network is loaded for its stage and released after (lowest memory; each request
    /// reads the weights again).
    Always,
}

impl OffloadArg {
    fn policy(self) -> sd_wgpu::pipeline::Offload {
        use sd_wgpu::pipeline::Offload;
        match self {
            OffloadArg::Never => Offload::Never,
            OffloadArg::Auto => Offload::Auto,
            OffloadArg::Always => Offload::Always,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum PredictionArg {
    Epsilon,
    #[value(name = "v_prediction")]
    VPrediction,
}

fn parse_size(text: &str) -> std::result::Result<u64, String> {
    gpu::parse_bytes(text).ok_or_else(|| format!("`{text}` is not a size (6GiB, 512MiB, bytes)"))
}

#[derive(Clone, Copy, ValueEnum)]
enum ArchArg {
    Sd15,
    Sd21,
    Sdxl,
    Builtin,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// sd15 / sd21 / sdxl: the diffusers configs with random weights made here (no checkpoint);
    /// builtin: the built-in model.
    #[arg(long, value_enum, default_value = "sd15")]
    arch: ArchArg,
    /// Default: the model's native size (sd15 512, sd21 768, sdxl 1024, builtin 32).
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    height: Option<usize>,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// Default: the model's own scheduler.
    #[arg(long)]
    sampler: Option<String>,
    #[arg(long, value_enum, default_value = "f16")]
    dtype: DTypeArg,
    #[arg(long, default_value_t = 7.5)]
    guidance: f32,
    /// Seeds the random weights and the latents.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also time one warm run dispatch by dispatch (timestamp queries): GPU time per stage,
    /// the step by op family, its 10 most expensive dispatches.
    #[arg(long)]
    profile: bool,
    /// Also time a TAESD-sized tiny autoencoder (random weights) decoding the same latents.
    #[arg(long)]
    taesd: bool,
    #[arg(long, value_parser = parse_size)]
    memory_budget: Option<u64>,
    /// Which networks stay on the device between stages (see `generate --offload`).
    #[arg(long, value_enum, default_value = "auto")]
    offload: OffloadArg,
}

#[derive(Subcommand)]
enum Command {
    /// Measure a whole model (text encoder, guided steps, VAE decode) on this adapter, with
    /// random weights for sd15 / sd21 / sdxl: no model file needed.
    Bench(Box<BenchArgs>),
    /// Generate an image from a text prompt.
    Generate(Box<GenerateArgs>),
    /// Upscale an image 4× with the latent upscaler (stable-diffusion-x4-upscaler).
    Upscale(Box<upscale::UpscaleArgs>),
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
        Command::Bench(args) => bench(&args),
        Command::Generate(args) => generate(&args),
        Command::Upscale(args) => upscale::upscale(&args),
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
    match gpu.memory_budget() {
        Some(b) => println!(
            "  memory budget                         {} ({})",
            gpu::format_bytes(b.bytes),
            b.source
        ),
        None => println!(
            "  memory budget                         unknown (set {})",
            gpu::ENV_MEMORY_BUDGET
        ),
    }
    println!(
        "  f16 activations                       {} for f16 weights ({} = 1 / 0 to override)",
        if gpu.activation_dtype(sd_wgpu::DType::F16) == sd_wgpu::DType::F16 {
            "on"
        } else {
            "off"
        },
        gpu::ENV_F16_ACTIVATIONS
    );
    println!(
        "  Winograd 3x3 convs                    {} ({} = 1 / 0 to override; CPU devices only)",
        if gpu.winograd() { "on" } else { "off" },
        gpu::ENV_WINOGRAD
    );
    println!(
        "  64-bit operand loads                  {} ({} = 1 / 0 to override; CPU devices with shader-int64)",
        if gpu.load64() { "on" } else { "off" },
        gpu::ENV_LOAD64
    );
    if all {
        for a in gpu::list_adapters(None) {
            println!();
            print_adapter(&a.info, a.features, &a.limits);
        }
    }
    Ok(())
}

fn bench(a: &BenchArgs) -> Result<()> {
    let gpu = Gpu::new()?;
    if let Some(bytes) = a.memory_budget {
        gpu.set_memory_budget(Some(sd_wgpu::MemoryBudget {
            bytes,
            source: "--memory-budget".into(),
        }));
    }
    let opts = sd_wgpu::bench::BenchOptions {
        arch: match a.arch {
            ArchArg::Sd15 => sd_wgpu::bench::BenchArch::Sd15,
            ArchArg::Sd21 => sd_wgpu::bench::BenchArch::Sd21,
            ArchArg::Sdxl => sd_wgpu::bench::BenchArch::Sdxl,
            ArchArg::Builtin => sd_wgpu::bench::BenchArch::Builtin,
        },
        width: a.width,
        height: a.height,
        batch: a.batch,
        steps: a.steps,
        sampler: a.sampler.as_deref().map(SamplerKind::parse).transpose()?,
        f16: matches!(a.dtype, DTypeArg::F16),
        guidance: a.guidance,
        seed: a.seed,
        builtin_path: default_model(),
        profile: a.profile,
        offload: a.offload.policy(),
        taesd: a.taesd,
    };
    if !a.json {
        eprintln!(
            "bench: {} on {} (random weights are made on the device first; then a cold one-step run, then the measured run)",
            opts.arch.name(),
            gpu.adapter_info().name
        );
    }
    let report = sd_wgpu::bench::run(&gpu, &opts)?;
    if a.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}

/// The built-in model: SD_WGPU_DEFAULT_MODEL, else the repository's assets/fashion-model.
fn default_model() -> PathBuf {
    std::env::var_os("SD_WGPU_DEFAULT_MODEL").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/fashion-model")),
        PathBuf::from,
    )
}
