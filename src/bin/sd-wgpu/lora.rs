//! `--lora PATH[:SCALE]`, `--lora-dir` and A1111's `<lora:NAME:W>` prompt tags → the LoRAs a
//! run merges and the prompt it encodes.

use anyhow::{Result, bail};
use sd_wgpu::lora::{LoraSpec, tags};
use std::path::Path;

/// What a run's LoRA arguments and prompt tags come to.
pub struct RunLoras {
    /// The prompt without its tags (what the text encoder reads).
    pub prompt: String,
    /// `--lora` specs first, then the prompt's tags, in order.
    pub specs: Vec<LoraSpec>,
    /// The prompt for the image's parameters: as given, with each `--lora` written as a tag
    /// (so the web UI's "read parameters" finds every LoRA the image used).
    pub infotext_prompt: String,
}

pub fn run_loras(
    prompt: &str,
    negative: Option<&str>,
    args: &[String],
    dir: Option<&Path>,
) -> Result<RunLoras> {
    let (clean, tagged) = tags::extract(prompt)?;
    if let Some(n) = negative {
        if !tags::extract(n)?.1.is_empty() {
            bail!("--negative-prompt: <lora:…> tags belong in --prompt");
        }
    }
    let mut specs = args
        .iter()
        .map(|a| tags::parse_spec(a))
        .collect::<sd_wgpu::Result<Vec<_>>>()?;
    let mut infotext_prompt = prompt.to_string();
    for s in &specs {
        let stem = s
            .path
            .file_stem()
            .and_then(|x| x.to_str())
            .unwrap_or("lora");
        infotext_prompt.push_str(&format!(" <lora:{stem}:{}>", s.scale));
    }
    if !tagged.is_empty() {
        let Some(dir) = dir else {
            bail!(
                "the prompt names LoRAs ({}): give --lora-dir, the folder that holds them",
                tagged
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        for t in &tagged {
            specs.push(t.spec(dir)?);
        }
    }
    Ok(RunLoras {
        prompt: clean,
        specs,
        infotext_prompt,
    })
}
