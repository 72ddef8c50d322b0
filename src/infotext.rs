//! Generation parameters in AUTOMATIC1111's web UI format ("infotext"), the text that image
//! browsers and model sites read from a PNG's `parameters` chunk or a JPEG's EXIF
//! UserComment:
//!
//! ```text
//! a prompt
//! Negative prompt: a negative prompt
//! Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1, Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 1, Version: sd-wgpu 0.1.0
//! ```
//!
//! Values holding `,`, `:` or a line break are JSON-quoted, as the web UI's `quote()` does.
//! Paths never appear: the model is named by its file stem (or folder name) and hash.

use crate::schedulers::SamplerKind;

/// What one image's infotext records.
#[derive(Clone, Debug, Default)]
pub struct Infotext {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    /// `None`: not recorded.
    pub sampler: Option<SamplerKind>,
    pub guidance: f32,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    /// The first 10 hex digits of the checkpoint's SHA-256, when known.
    pub model_hash: Option<String>,
    /// The checkpoint's file stem (or the diffusers folder's name).
    pub model: String,
    /// The engine's layers-skipped count (0 = none); written in the web UI's numbering, where
    /// 1 means none.
    pub clip_skip: usize,
    /// `(batch size, position)` for batches of more than one image.
    pub batch: Option<(usize, usize)>,
    /// Image-to-image / inpainting strength.
    pub denoising_strength: Option<f64>,
}

/// The web UI's name for a sampler (`Sampler:`).
pub fn sampler_name(kind: SamplerKind) -> &'static str {
    match kind {
        SamplerKind::Ddim { .. } => "DDIM",
        SamplerKind::Ddpm => "DDPM",
        SamplerKind::Pndm => "PLMS",
        SamplerKind::Euler => "Euler",
        SamplerKind::EulerAncestral => "Euler a",
        SamplerKind::DpmPP2M { karras: false } => "DPM++ 2M",
        SamplerKind::DpmPP2M { karras: true } => "DPM++ 2M Karras",
        SamplerKind::Lcm => "LCM",
        SamplerKind::Heun => "Heun",
        SamplerKind::Dpm2 => "DPM2",
        SamplerKind::Dpm2Ancestral => "DPM2 a",
        SamplerKind::Lms => "LMS",
        SamplerKind::DpmPP2MSde { karras: false } => "DPM++ 2M SDE",
        SamplerKind::DpmPP2MSde { karras: true } => "DPM++ 2M SDE Karras",
        SamplerKind::DpmSde => "DPM++ SDE",
        SamplerKind::UniPc => "UniPC",
        SamplerKind::Deis => "DEIS",
    }
}

/// The web UI's `quote()`: JSON-quoted when the value holds `,`, `:` or a line break.
fn quote(v: &str) -> String {
    if v.contains([',', ':', '\n']) {
        serde_json::Value::String(v.to_string()).to_string()
    } else {
        v.to_string()
    }
}

impl Infotext {
    /// The infotext, in the web UI's order of keys.
    pub fn to_text(&self) -> String {
        let mut fields: Vec<(&str, String)> = vec![("Steps", self.steps.to_string())];
        if let Some(s) = self.sampler {
            fields.push(("Sampler", sampler_name(s).to_string()));
        }
        fields.push(("CFG scale", self.guidance.to_string()));
        fields.push(("Seed", self.seed.to_string()));
        fields.push(("Size", format!("{}x{}", self.width, self.height)));
        if let Some(h) = &self.model_hash {
            fields.push(("Model hash", h.clone()));
        }
        if !self.model.is_empty() {
            fields.push(("Model", quote(&self.model)));
        }
        if let Some((n, pos)) = self.batch {
            fields.push(("Batch size", n.to_string()));
            fields.push(("Batch pos", pos.to_string()));
        }
        if let Some(s) = self.denoising_strength {
            fields.push(("Denoising strength", s.to_string()));
        }
        fields.push(("Clip skip", (self.clip_skip + 1).to_string()));
        fields.push(("Version", format!("sd-wgpu {}", env!("CARGO_PKG_VERSION"))));
        let line = fields
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut text = self.prompt.clone();
        if !self.negative_prompt.is_empty() {
            text.push_str("\nNegative prompt: ");
            text.push_str(&self.negative_prompt);
        }
        text.push('\n');
        text.push_str(&line);
        text
    }
}

/// The name the web UI shows for a model at `path`: a file's stem, or a folder's name.
pub fn model_name(path: &std::path::Path) -> String {
    let name = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    name.map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The file whose SHA-256 names a model (the web UI hashes the checkpoint file): the file
/// itself, or a diffusers folder's U-Net weights (its first `.safetensors`, full precision
/// first).
pub fn hashed_file(path: &std::path::Path) -> Option<std::path::PathBuf> {
    if path.is_file() {
        return Some(path.to_path_buf());
    }
    let mut files: Vec<_> = std::fs::read_dir(path.join("unet"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort_by_key(|p| (p.to_string_lossy().contains(".fp16."), p.clone()));
    files.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infotext_in_the_web_ui_format() {
        let t = Infotext {
            prompt: "a cat, (sitting:1.2) 🐱".into(),
            negative_prompt: String::new(),
            steps: 20,
            sampler: Some(SamplerKind::DpmPP2M { karras: true }),
            guidance: 7.5,
            seed: 42,
            width: 512,
            height: 768,
            model_hash: Some("6ce0161689".into()),
            model: "v1-5, pruned".into(),
            clip_skip: 0,
            batch: Some((2, 1)),
            denoising_strength: Some(0.75),
        };
        assert_eq!(
            t.to_text(),
            format!(
                "a cat, (sitting:1.2) 🐱\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, \
                 Seed: 42, Size: 512x768, Model hash: 6ce0161689, Model: \"v1-5, pruned\", \
                 Batch size: 2, Batch pos: 1, Denoising strength: 0.75, Clip skip: 1, \
                 Version: sd-wgpu {}",
                env!("CARGO_PKG_VERSION")
            )
        );
        let t = Infotext {
            negative_prompt: "blurry".into(),
            clip_skip: 1,
            batch: None,
            denoising_strength: None,
            model_hash: None,
            ..t
        };
        let text = t.to_text();
        assert!(text.contains("\nNegative prompt: blurry\n"), "{text}");
        assert!(text.contains("Clip skip: 2"), "{text}");
        assert!(!text.contains("Model hash"), "{text}");
        assert_eq!(sampler_name(SamplerKind::Pndm), "PLMS");
        assert_eq!(sampler_name(SamplerKind::EulerAncestral), "Euler a");
    }
}
