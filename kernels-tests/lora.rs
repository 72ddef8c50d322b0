//! LoRA against diffusers' `load_lora_weights` + `set_adapters` (tools/make_lora_fixture.py):
//! kohya files (SD 1.x with LoCon convs, SDXL in the original U-Net names, te1/te2) and a
//! PEFT file with adapter metadata, on folders and single files; switching LoRAs on a loaded
//! pipeline; bad files.

use crate::common::{check_golden, gpu, psnr};
use crate::pipeline::{fixtures, sneaker};
use sd_wgpu::lora::LoraSpec;
use sd_wgpu::pipeline::{LoadOptions, Pipeline, Request};
use sd_wgpu::weights::Weights;
use std::path::PathBuf;

fn lora(name: &str) -> PathBuf {
    fixtures().join("lora").join(name)
}

fn golden() -> Weights {
    Weights::open_file(&lora("golden.safetensors")).unwrap()
}

fn sd1_request() -> Request {
    let g = Weights::open_file(&fixtures().join("sd1-tiny-golden.safetensors")).unwrap();
    Request {
        init_latents: Some(g.read_f32("latents", &[1, 4, 8, 8]).unwrap()),
        ..sneaker(4)
    }
}

/// `model` (a fixture folder, or a single file with the folder of its stem as config) with
/// `loras`.
fn with_loras(model: &str, loras: Vec<LoraSpec>) -> sd_wgpu::Result<Pipeline> {
    let config = model
        .strip_suffix(".safetensors")
        .map(|stem| fixtures().join(stem));
    let opts = LoadOptions {
        loras,
        config,
        ..LoadOptions::default()
    };
    Pipeline::load_with(gpu(), &fixtures().join(model), &opts)
}

fn kohya() -> LoraSpec {
    LoraSpec::new(lora("sd1-kohya.safetensors"), 0.8)
}

/// The kohya file (text encoder, attention, 1×1 and 3×3 LoCon convs) at 0.8, on the folder
/// and on the single-file checkpoint (its f16 weights, diffusers' `from_single_file`).
#[test]
fn kohya_lora_matches_diffusers_on_folders_and_single_files() {
    let g = golden();
    for (model, case) in [
        ("sd1-tiny", "kohya"),
        ("sd1-tiny.safetensors", "kohya_file"),
    ] {
        let pipe = with_loras(model, vec![kohya()]).unwrap();
        assert!(pipe.lora_warnings.is_empty());
        eprint!("{model}: ");
        check_golden(&pipe, &g, case, &sd1_request());
    }
}

/// Two LoRAs (kohya 0.8, PEFT with metadata 0.5) switched onto a loaded pipeline and off
/// again; another pipeline of the same model on the same device keeps the plain weights.
#[test]
fn loras_switch_on_a_loaded_pipeline() {
    let gpu = gpu();
    let g = golden();
    let base = Weights::open_file(&fixtures().join("sd1-tiny-golden.safetensors")).unwrap();
    let plain_image = base.read_f32("image", &[1, 32, 32, 3]).unwrap();
    let mut pipe = with_loras("sd1-tiny", vec![]).unwrap();
    let other = with_loras("sd1-tiny", vec![]).unwrap();
    let both = vec![kohya(), LoraSpec::new(lora("sd1-peft.safetensors"), 0.5)];
    let conv_in = pipe.unet(gpu).unwrap().conv_in.weight.clone();
    assert!(pipe.set_loras(gpu, &both, false).unwrap().is_empty());
    // A weight no LoRA touches is the same device buffer, not uploaded again.
    let after = pipe.unet(gpu).unwrap().conv_in.weight.clone();
    assert!(std::sync::Arc::ptr_eq(conv_in.buffer(), after.buffer()));
    assert_eq!(pipe.loras(), both.as_slice());
    eprint!("switched on: ");
    check_golden(&pipe, &g, "both", &sd1_request());
    let out = other.generate(gpu, &sd1_request(), &mut |_| true).unwrap();
    let p = psnr(&out.image, &plain_image);
    assert!(
        p >= 40.0,
        "the other pipeline saw merged weights: {p:.1} dB"
    );
    pipe.set_loras(gpu, &[], false).unwrap();
    let out = pipe.generate(gpu, &sd1_request(), &mut |_| true).unwrap();
    let p = psnr(&out.image, &plain_image);
    eprintln!("switched off: image {p:.1} dB vs the plain model");
    assert!(p >= 40.0, "{p:.1} dB");
    // Scale 0 is the plain model too.
    pipe.set_loras(
        gpu,
        &[LoraSpec::new(lora("sd1-kohya.safetensors"), 0.0)],
        false,
    )
    .unwrap();
    let out = pipe.generate(gpu, &sd1_request(), &mut |_| true).unwrap();
    assert!(psnr(&out.image, &plain_image) >= 40.0);
}

/// kohya's SDXL file: the U-Net in the original (SGM) module names, te1 and te2.
#[test]
fn sdxl_kohya_lora_matches_diffusers() {
    let g = golden();
    let xg = Weights::open_file(&fixtures().join("sdxl-tiny-golden.safetensors")).unwrap();
    let req = crate::sdxl::neg_request(&xg);
    let spec = LoraSpec::new(lora("sdxl-kohya.safetensors"), 0.7);
    for model in ["sdxl-tiny", "sdxl-tiny.safetensors"] {
        let pipe = with_loras(model, vec![spec.clone()]).unwrap();
        eprint!("{model}: ");
        check_golden(&pipe, &g, "sdxl", &req);
    }
}

/// Updates of the wrong shape name the module and both shapes; keys that match nothing are
/// an error naming them (lenient: warnings, the rest applied); DoRA is refused by name.
#[test]
fn bad_lora_files_are_refused_by_name() {
    // The SDXL file on an SD 1.x model: the mid-block's cross-attention is another width.
    let sdxl = LoraSpec::new(lora("sdxl-kohya.safetensors"), 1.0);
    let e = with_loras("sd1-tiny", vec![sdxl])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("sdxl-kohya") && e.contains("does not fit") && e.contains("[64, 32]"),
        "{e}"
    );

    let dir = std::env::temp_dir().join(format!("sd-wgpu-lora-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = Weights::open_file(&lora("sd1-kohya.safetensors")).unwrap();
    let m = "lora_unet_down_blocks_0_attentions_0_proj_in";
    let down = src
        .read_f32(&format!("{m}.lora_down.weight"), &[4, 32, 1, 1])
        .unwrap();
    let up = src
        .read_f32(&format!("{m}.lora_up.weight"), &[32, 4, 1, 1])
        .unwrap();
    let small = vec![0.01f32; 4 * 32];
    // A file with the proj_in update and `extra` keys (each a [4, 32] tensor).
    let write = |name: &str, extra: &[&str]| {
        fn t(v: &[f32], s: Vec<usize>) -> safetensors::tensor::TensorView<'_> {
            let bytes = bytemuck::cast_slice(v);
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s, bytes).unwrap()
        }
        let path = dir.join(name);
        let mut tensors = vec![
            (format!("{m}.lora_down.weight"), t(&down, vec![4, 32, 1, 1])),
            (format!("{m}.lora_up.weight"), t(&up, vec![32, 4, 1, 1])),
        ];
        for k in extra {
            tensors.push((k.to_string(), t(&small, vec![4, 32])));
        }
        safetensors::serialize_to_file(tensors, None, &path).unwrap();
        path
    };
    let dora = write("dora.safetensors", &[&format!("{m}.dora_scale")]);
    let e = with_loras("sd1-tiny", vec![LoraSpec::new(&dora, 1.0)])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("DoRA") && e.contains("dora_scale"), "{e}");
    // A te2 module on a one-encoder model, and a key of no format.
    let te2 = "lora_te2_text_model_encoder_layers_0_mlp_fc1";
    let odd = write(
        "odd.safetensors",
        &[
            "something_else.weight",
            &format!("{te2}.lora_down.weight"),
            &format!("{te2}.lora_up.weight"),
        ],
    );
    let e = with_loras("sd1-tiny", vec![LoraSpec::new(&odd, 1.0)])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("2 key(s)") && e.contains(te2) && e.contains("--lora-lenient"),
        "{e}"
    );
    let opts = LoadOptions {
        loras: vec![LoraSpec::new(&odd, 1.0)],
        lora_lenient: true,
        ..LoadOptions::default()
    };
    let pipe = Pipeline::load_with(gpu(), &fixtures().join("sd1-tiny"), &opts).unwrap();
    let w = &pipe.lora_warnings;
    assert!(
        w.len() == 1 && w[0].contains("something_else") && w[0].contains(te2),
        "{w:?}"
    );
    let missing = LoraSpec::new(dir.join("none.safetensors"), 1.0);
    let e = with_loras("sd1-tiny", vec![missing])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("none.safetensors"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The CLI: a `<lora:NAME:W>` tag found in `--lora-dir` plus a `--lora PATH:SCALE`, the tag
/// removed from the encoded prompt, both LoRAs in the image's parameters.
#[test]
fn cli_merges_prompt_tags_and_lora_flags() {
    let root = fixtures();
    let base = Weights::open_file(&root.join("sd1-tiny-golden.safetensors")).unwrap();
    let dir = std::env::temp_dir().join(format!("sd-wgpu-lora-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (init, lat_out, png_out) = (
        dir.join("init.npy"),
        dir.join("final.npy"),
        dir.join("out.png"),
    );
    let latents = base.read_f32("latents", &[1, 4, 8, 8]).unwrap();
    sd_wgpu::npy::write_f32(&init, &[1, 4, 8, 8], &latents).unwrap();
    let run = |prompt: &str, extra: &[&str]| {
        crate::pipeline::sd1_cli(prompt, 4)
            .arg("--lora-dir")
            .arg(root.join("lora"))
            .args(extra)
            .arg("--init-latents")
            .arg(&init)
            .arg("--latents-out")
            .arg(&lat_out)
            .arg("--out")
            .arg(&png_out)
            .arg("--overwrite")
            .output()
            .unwrap()
    };
    let peft = format!("{}:0.5", lora("sd1-peft.safetensors").display());
    let out = run(
        "a red sneaker <lora:sd1-kohya:0.8>on a white table",
        &["--lora", &peft],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, got) = sd_wgpu::npy::read_f32(&lat_out).unwrap();
    let want = golden().read_f32("final_both", &[1, 4, 8, 8]).unwrap();
    let e = crate::common::rel_l2(&got, &want);
    assert!(e <= 1e-3, "latents relative L2 {e}");
    let params = crate::pipeline::png_parameters(&png_out);
    assert!(
        params.contains("<lora:sd1-kohya:0.8>") && params.contains("<lora:sd1-peft:0.5>"),
        "{params}"
    );
    // A tag naming no file, and a tag without --lora-dir, fail before any output.
    let _ = std::fs::remove_file(&png_out);
    let out = run("a shoe <lora:nothing:1>", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("nothing.safetensors"),
        "{err}"
    );
    assert!(!png_out.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
