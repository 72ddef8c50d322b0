//! The 4× upscaler's configuration as diffusers reads it (no GPU).

use sd_wgpu::models::arch::{Architecture, UPSCALER_VAE_SCALING_FACTOR};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pipeline")
        .join(name)
}

/// A copy of a diffusers folder's configs (no weights), the VAE's `scaling_factor` set.
fn configs_with_vae_scale(src: &Path, tag: &str, scale: f64) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("sd-wgpu-upscaler-cfg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dir.join(e.file_name());
        if e.path().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(e.path()).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|x| x == "json") {
                    std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
                }
            }
        } else if e.path().extension().is_some_and(|x| x == "json") {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
    let vae = dir.join("vae/config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&vae).unwrap()).unwrap();
    v["scaling_factor"] = serde_json::json!(scale);
    std::fs::write(&vae, serde_json::to_vec(&v).unwrap()).unwrap();
    dir
}

#[test]
fn upscaler_vae_scaling_factor_is_always_0_08333() {
    // diffusers' StableDiffusionUpscalePipeline.__init__ replaces any other VAE
    // scaling_factor by 0.08333 (with a deprecation warning); the engine does the same and
    // remembers the configured one for the CLI's note.
    let dir = configs_with_vae_scale(&fixture("upscaler-tiny"), "up", 0.18215);
    let a = Architecture::from_folder(&dir).unwrap();
    assert_eq!(a.vae.scaling_factor, UPSCALER_VAE_SCALING_FACTOR);
    assert_eq!(
        a.upscaler.as_ref().unwrap().vae_scaling_factor_in_config,
        Some(0.18215)
    );
    // Already 0.08333: nothing replaced.
    let a = Architecture::from_folder(&fixture("upscaler-tiny")).unwrap();
    assert_eq!(a.vae.scaling_factor, 0.08333);
    assert_eq!(
        a.upscaler.as_ref().unwrap().vae_scaling_factor_in_config,
        None
    );
    // Other pipelines keep their VAE's own.
    let sd = configs_with_vae_scale(&fixture("sd1-tiny"), "sd", 0.5);
    let a = Architecture::from_folder(&sd).unwrap();
    assert_eq!(a.vae.scaling_factor, 0.5);
    assert!(a.upscaler.is_none());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&sd);
}
