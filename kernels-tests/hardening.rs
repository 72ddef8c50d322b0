//! Bad inputs end in typed errors, before any work where they can be seen up front, and
//! NaN / Inf are caught on the device where they appear: the `flag_nonfinite` kernel against
//! its reference, then whole runs with poisoned weights, configs and requests.

use crate::common::*;
use sd_wgpu::ops::finite::FINITE;
use sd_wgpu::pipeline::{InitImage, Pipeline, Request};
use sd_wgpu::weights::WeightDType;
use sd_wgpu::{DType, Error, Gpu, GpuOptions, Recorder, Tensor, ops, reference};
use std::path::{Path, PathBuf};

fn flag_of(g: &Gpu, flag: &Tensor) -> u32 {
    flag.to_vec(g).unwrap()[0].to_bits()
}

/// The kernel over SD shapes and odd ones, healthy extremes (f32::MAX, subnormals, −0) that
/// must not trip it, NaN / +Inf / −Inf at the first, a middle and the last element, and the
/// earliest code winning over later ones.
#[test]
fn flag_nonfinite_matches_reference() {
    let small = Gpu::with_options(&GpuOptions {
        max_storage_binding: Some(1 << 12),
        max_workgroups_per_dim: Some(3),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("GPU tests need a wgpu adapter: {e}"));
    let mut rng = Rng::new(5);
    for g in [gpu(), &small] {
        for shape in [
            vec![2, 64, 64, 4],
            vec![2, 77, 768],
            vec![1, 64, 64, 3],
            vec![7],
            vec![3, 5, 11],
            vec![1],
        ] {
            let n: usize = shape.iter().product();
            let mut x = rng.normals(n, 3.0);
            x[n / 2] = f32::MAX;
            x[0] = f32::MIN_POSITIVE / 4.0;
            if n > 2 {
                x[n - 2] = -0.0;
            }
            for bad in [
                None,
                Some(f32::NAN),
                Some(f32::INFINITY),
                Some(f32::NEG_INFINITY),
            ] {
                for at in [0, n / 3, n - 1] {
                    let mut v = x.clone();
                    if let Some(b) = bad {
                        v[at] = b;
                    }
                    let xt = Tensor::from_f32(g, &v, &shape, DType::F32, "x").unwrap();
                    let flag =
                        Tensor::from_f32(g, &[f32::from_bits(FINITE)], &[1], DType::F32, "flag")
                            .unwrap();
                    let mut rec = Recorder::new(g);
                    ops::flag_nonfinite(&mut rec, &xt, &flag, 7).unwrap();
                    // A later stage cannot overwrite the earliest one.
                    ops::flag_nonfinite(&mut rec, &xt, &flag, 9).unwrap();
                    rec.submit().unwrap();
                    let want = reference::flag_nonfinite(&v, FINITE, 7);
                    assert_eq!(
                        flag_of(g, &flag),
                        want,
                        "shape {shape:?}, {bad:?} at {at}, binding limit {}",
                        g.limits().max_storage_buffer_binding_size
                    );
                }
            }
        }
    }
    // Wrong flag shape and the reserved code are typed errors.
    let g = gpu();
    let x = upload(&[1.0; 4], &[4], DType::F32, "x");
    let two = upload(&[0.0; 2], &[2], DType::F32, "two");
    let mut rec = Recorder::new(g);
    assert!(ops::flag_nonfinite(&mut rec, &x, &two, 0).is_err());
    assert!(ops::flag_nonfinite(&mut rec, &x, &x.reshape(&[4]).unwrap(), FINITE).is_err());
}

pub(crate) fn fixture(name: &str) -> PathBuf {
    crate::pipeline::fixtures().join(name)
}

/// A copy of the tiny SD 1 pipeline in a fresh temporary folder.
fn copy_sd1(tag: &str) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dst = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &dst);
            } else {
                std::fs::copy(e.path(), dst).unwrap();
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("sd-wgpu-hard-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy(&fixture("sd1-tiny"), &dir);
    dir
}

/// Rewrites tensor `name` of a safetensors file with every value set to `v` (f32 tensors).
fn poison(file: &Path, name: &str, v: f32) {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (k, t) in st.tensors() {
        let mut data = t.data().to_vec();
        if k == name {
            assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
            data = std::iter::repeat_n(v.to_le_bytes(), data.len() / 4)
                .flatten()
                .collect();
        }
        owned.push((k, t.dtype(), t.shape().to_vec(), data));
    }
    assert!(owned.iter().any(|o| o.0 == name), "no tensor {name}");
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(k, d, s, b)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, file).unwrap();
}

fn sneaker() -> Request {
    crate::pipeline::sneaker(3)
}

/// NaN weights in each network stop the run at the stage they poison, named in the error:
/// never a black image.
#[test]
fn nonfinite_values_stop_the_run_where_they_appear() {
    let g = gpu();
    let cases = [
        (
            "text_encoder/model.safetensors",
            "final_layer_norm.bias",
            f32::NAN,
            "the text encoder's output",
        ),
        (
            "unet/diffusion_pytorch_model.safetensors",
            "conv_out.bias",
            f32::INFINITY,
            "the U-Net's output at step 1",
        ),
        (
            "vae/diffusion_pytorch_model.safetensors",
            "decoder.conv_out.bias",
            f32::NAN,
            "the VAE decoder's output",
        ),
    ];
    for (k, (file, tensor, v, stage)) in cases.into_iter().enumerate() {
        let dir = copy_sd1(&format!("nan{k}"));
        poison(&dir.join(file), tensor, v);
        let pipe = Pipeline::load(g, &dir, WeightDType::Auto).unwrap();
        let mut steps = 0;
        let e = pipe
            .generate(g, &sneaker(), &mut |p| {
                steps = p.step;
                true
            })
            .err()
            .unwrap_or_else(|| panic!("{tensor} = {v}: the run succeeded"));
        assert!(
            matches!(&e, Error::NonFinite { stage: s } if s.starts_with(stage)),
            "{tensor}: {e}"
        );
        // The U-Net case stops at its first step (the flag read rides on the step's wait).
        if k == 1 {
            assert_eq!(steps, 0, "the run went on to step {steps}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    // The texture path checks too (no readback of the image, one of the flag).
    let dir = copy_sd1("nantex");
    poison(
        &dir.join("vae/diffusion_pytorch_model.safetensors"),
        "decoder.conv_out.bias",
        f32::NAN,
    );
    let pipe = Pipeline::load(g, &dir, WeightDType::Auto).unwrap();
    let tex = g.device().create_texture(&wgpu::TextureDescriptor {
        label: Some("out"),
        size: wgpu::Extent3d {
            width: 32,
            height: 32,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let e = pipe
        .generate_to_texture(g, &sneaker(), &mut |_| true, &tex)
        .err()
        .unwrap();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Requests out of range are refused before any work, naming the field, value and limit.
#[test]
fn bad_requests_are_refused_before_any_work() {
    // A device of its own: other tests allocate on the shared one meanwhile.
    let own = Gpu::new().unwrap_or_else(|e| panic!("GPU tests need a wgpu adapter: {e}"));
    let g = &own;
    let mut pipe = Pipeline::load(g, &fixture("sd1-tiny"), WeightDType::Auto).unwrap();
    // Every network stays loaded: a request over the budget is refused (with the default
    // `Offload::Auto` it could run with idle networks released; `kernels-tests/offload.rs`).
    pipe.offload = sd_wgpu::pipeline::Offload::Never;
    let before = g.memory_stats();
    let cases: Vec<(Request, &str)> = vec![
        (
            Request {
                guidance: f32::INFINITY,
                ..sneaker()
            },
            "`guidance` is inf",
        ),
        (
            Request {
                guidance: 1e39f64 as f32,
                ..sneaker()
            },
            "`guidance` is inf",
        ),
        (
            Request {
                guidance: f32::NAN,
                ..sneaker()
            },
            "`guidance` is NaN",
        ),
        (
            Request {
                width: 1 << 31,
                height: 1 << 31,
                ..sneaker()
            },
            "`width` is 2147483648 px",
        ),
        (
            Request {
                batch_size: 1 << 60,
                ..sneaker()
            },
            "`batch_size` is 1152921504606846976",
        ),
        (
            Request {
                batch_size: 0,
                ..sneaker()
            },
            "`batch_size` is 0",
        ),
        (
            Request {
                steps: 0,
                ..sneaker()
            },
            "`steps` is 0",
        ),
        (
            Request {
                steps: 1001,
                ..sneaker()
            },
            "`steps` is 1001",
        ),
        (
            Request {
                clip_skip: 99,
                ..sneaker()
            },
            "`clip_skip` is 99",
        ),
        (
            Request {
                prompt: "(a:1e40)".into(),
                ..sneaker()
            },
            "weight `1e40`",
        ),
        (
            Request {
                negative_prompt: "(a:nan)".into(),
                ..sneaker()
            },
            "weight `nan`",
        ),
        (
            Request {
                prompt: "(a:-inf)".into(),
                ..sneaker()
            },
            "weight `-inf`",
        ),
        (
            Request {
                prompt: "x".repeat(70_000),
                ..sneaker()
            },
            "`prompt` is 70000 bytes",
        ),
        (
            Request {
                prompt: "a ".repeat(5000),
                ..sneaker()
            },
            "5000 tokens make 67 chunks of 75; at most 64",
        ),
        (
            Request {
                width: 16384,
                height: 16384,
                batch_size: 16,
                ..sneaker()
            },
            "the latents [16, 4, 4096, 4096] would hold more than 268435456 values",
        ),
        (
            Request {
                prompt: "a ".repeat(4000),
                batch_size: 1024,
                ..sneaker()
            },
            "with a prompt of 54 chunk(s) the text context would hold more than",
        ),
        (
            Request {
                init_latents: Some({
                    let mut v = vec![0.0; 4 * 8 * 8];
                    v[17] = f32::NAN;
                    v
                }),
                ..sneaker()
            },
            "`init_latents` holds NaN at index 17",
        ),
        (
            Request {
                init_latents: Some(vec![0.0; 10]),
                ..sneaker()
            },
            "`init_latents` holds 10 values; [1, 4, 8, 8] needs 256",
        ),
        (
            Request {
                init_image: Some(InitImage {
                    noise: Some(vec![f32::INFINITY; 4 * 8 * 8]),
                    ..InitImage::new(vec![0.5; 32 * 32 * 3], 0.5)
                }),
                ..sneaker()
            },
            "`init_image.noise` holds inf at index 0",
        ),
        (
            Request {
                init_image: Some(InitImage::new(vec![0.5; 32 * 32 * 3], f64::NAN)),
                ..sneaker()
            },
            "`init_image.strength` is NaN",
        ),
    ];
    for (req, want) in cases {
        for e in [
            pipe.memory_estimate(g, &req).err(),
            pipe.generate(g, &req, &mut |_| true).err(),
        ] {
            let e = e.unwrap_or_else(|| panic!("accepted: {want}"));
            assert!(e.to_string().contains(want), "want {want:?}, got: {e}");
        }
    }
    assert_eq!(g.memory_stats().in_use, before.in_use);
    // --noise with a batch and a 9-channel model: the shape is [batch, out_channels, h, w].
    let req = Request {
        batch_size: 2,
        init_image: Some(InitImage {
            noise: Some(vec![0.0; 2 * 4 * 8 * 8]),
            ..InitImage::new(vec![0.5; 32 * 32 * 3], 0.5)
        }),
        ..sneaker()
    };
    assert_eq!(pipe.latent_shape(&req), [2, 4, 8, 8]);
    pipe.validate(&req).unwrap();
    // Over the memory budget, the largest batch that fits is found even though the request's
    // own noise is sized for its batch.
    let one = pipe
        .memory_estimate(
            g,
            &Request {
                batch_size: 1,
                init_image: Some(InitImage::new(vec![0.5; 32 * 32 * 3], 0.5)),
                ..sneaker()
            },
        )
        .unwrap();
    g.set_memory_budget(Some(sd_wgpu::MemoryBudget {
        bytes: one.total(),
        source: "test".into(),
    }));
    let e = pipe.generate(g, &req, &mut |_| true).err().unwrap();
    assert!(e.to_string().contains("a batch of at most 1 fits"), "{e}");
    g.set_memory_budget(None);
}

/// Configs that would panic, overflow or make NaN are refused at load time, naming the key.
#[test]
fn bad_configs_are_refused_at_load() {
    let g = gpu();
    let edit = |tag: &str, file: &str, key: &str, value: serde_json::Value| -> String {
        let dir = copy_sd1(tag);
        let p = dir.join(file);
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        v[key] = value;
        std::fs::write(&p, v.to_string()).unwrap();
        let e = Pipeline::load(g, &dir, WeightDType::Auto)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        e
    };
    let sched = "scheduler/scheduler_config.json";
    for (tag, file, key, value, want) in [
        (
            "ss",
            "unet/config.json",
            "sample_size",
            serde_json::json!(1u64 << 32),
            "`sample_size` = 4294967296",
        ),
        (
            "eps",
            "unet/config.json",
            "norm_eps",
            serde_json::json!(-1e-5),
            "`norm_eps` = -0.00001",
        ),
        (
            "grp",
            "unet/config.json",
            "norm_num_groups",
            serde_json::json!(0),
            "`norm_num_groups` = 0",
        ),
        (
            "sf",
            "vae/config.json",
            "scaling_factor",
            serde_json::json!(0.0),
            "`scaling_factor` = 0",
        ),
        (
            "off",
            sched,
            "steps_offset",
            serde_json::json!(1_000_000),
            "`steps_offset` = 1000000",
        ),
        (
            "b0",
            sched,
            "beta_start",
            serde_json::json!(0.0),
            "`beta_start` = 0",
        ),
        (
            "b1",
            sched,
            "beta_end",
            serde_json::json!(1.5),
            "`beta_end` = 1.5",
        ),
        (
            "cls",
            sched,
            "_class_name",
            serde_json::json!("FooScheduler"),
            "\"FooScheduler\"",
        ),
        (
            "lne",
            "text_encoder/config.json",
            "layer_norm_eps",
            serde_json::json!(0.0),
            "`layer_norm_eps` = 0",
        ),
    ] {
        let e = edit(tag, file, key, value);
        assert!(e.contains(want), "{key}: want {want:?}, got {e:?}");
    }
    // A scheduler diffusers has but the engine does not: the model loads, a request must
    // name its sampler.
    let dir = copy_sd1("lms");
    let p = dir.join(sched);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["_class_name"] = "TCDScheduler".into();
    std::fs::write(&p, v.to_string()).unwrap();
    let pipe = Pipeline::load(g, &dir, WeightDType::Auto).unwrap();
    let e = pipe.generate(g, &sneaker(), &mut |_| true).err().unwrap();
    assert!(e.to_string().contains("TCDScheduler"), "{e}");
    // Leading spacing: steps_offset plus the schedule past the training range.
    let e = pipe
        .generate(
            g,
            &Request {
                sampler: Some(sd_wgpu::schedulers::SamplerKind::Ddim { eta: 0.0 }),
                steps: 2,
                ..sneaker()
            },
            &mut |_| true,
        )
        .map(|_| ());
    assert!(e.is_ok(), "{e:?}");
    let _ = std::fs::remove_dir_all(&dir);
    // A FIFO as a weight file is refused, not opened (opening it would block forever).
    let dir = copy_sd1("fifo");
    let w = dir.join("unet/diffusion_pytorch_model.safetensors");
    std::fs::remove_file(&w).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&w)
        .status()
        .unwrap();
    assert!(made.success());
    let e = Pipeline::load(g, &dir, WeightDType::Auto).err().unwrap();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
