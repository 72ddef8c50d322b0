//! Weight upload: dtype policy (f16 stays f16), PyTorch → kernel re-layouts, range checks.

use crate::common::*;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use sd_wgpu::DType;
use sd_wgpu::ops::conv2d::oihw_to_hwio;
use sd_wgpu::weights::{Relayout, WeightDType, Weights};

#[test]
fn uploads_convert_dtype_and_relayout() {
    let gpu = gpu();
    let dir = std::env::temp_dir().join(format!("sd-wgpu-kt-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng::new(4);
    let lin = round_f16(&rng.normals(5 * 3, 1.0)); // [out 5, in 3]
    let conv = rng.normals(4 * 2 * 3 * 3, 1.0); // [out 4, in 2, 3, 3]
    let big = [1.0e5f32, 2.0];
    let lin_b: Vec<u8> = lin
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    let conv_b: Vec<u8> = conv.iter().flat_map(|x| x.to_le_bytes()).collect();
    let big_b: Vec<u8> = big.iter().flat_map(|x| x.to_le_bytes()).collect();
    let path = dir.join("w.safetensors");
    let tensors = vec![
        (
            "proj.weight",
            TensorView::new(Dtype::F16, vec![5, 3], &lin_b).unwrap(),
        ),
        (
            "conv.weight",
            TensorView::new(Dtype::F32, vec![4, 2, 3, 3], &conv_b).unwrap(),
        ),
        ("big", TensorView::new(Dtype::F32, vec![2], &big_b).unwrap()),
    ];
    safetensors::serialize_to_file(tensors, None, &path).unwrap();
    let w = Weights::open_file(&path).unwrap();

    // f16 file, Auto policy: stays f16 on the GPU, transposed to [in, out].
    let t = w
        .upload(
            gpu,
            "proj.weight",
            &[5, 3],
            Relayout::Transpose,
            WeightDType::Auto,
        )
        .unwrap();
    assert_eq!(
        (t.shape(), t.dtype(), t.name()),
        (&[3usize, 5][..], DType::F16, "proj.weight")
    );
    let want: Vec<f32> = (0..15).map(|k| lin[(k % 5) * 3 + k / 5]).collect();
    check(
        "transposed f16 linear weight",
        &t.to_vec(gpu).unwrap(),
        &want,
        0.0,
        0.0,
    );

    // f32 conv weight to [kh, kw, in, out], as f32 (Auto) and as f16 (forced).
    let t = w
        .upload(
            gpu,
            "conv.weight",
            &[4, 2, 3, 3],
            Relayout::ConvToHwio,
            WeightDType::Auto,
        )
        .unwrap();
    assert_eq!((t.shape(), t.dtype()), (&[3usize, 3, 2, 4][..], DType::F32));
    let hwio = oihw_to_hwio(&conv, 4, 2, 3, 3);
    check(
        "conv weight to hwio",
        &t.to_vec(gpu).unwrap(),
        &hwio,
        0.0,
        0.0,
    );
    let t = w
        .upload(
            gpu,
            "conv.weight",
            &[4, 2, 3, 3],
            Relayout::ConvToHwio,
            WeightDType::F16,
        )
        .unwrap();
    assert_eq!(t.dtype(), DType::F16);
    check(
        "conv weight as f16",
        &t.to_vec(gpu).unwrap(),
        &round_f16(&hwio),
        0.0,
        0.0,
    );

    // A value beyond f16's range: refused with the tensor named, fine as f32.
    let e = w
        .upload(gpu, "big", &[2], Relayout::None, WeightDType::F16)
        .unwrap_err()
        .to_string();
    assert!(e.contains("big") && e.contains("f16"), "{e}");
    assert_eq!(
        w.upload(gpu, "big", &[2], Relayout::None, WeightDType::Auto)
            .unwrap()
            .to_vec(gpu)
            .unwrap(),
        big
    );
    let e = w
        .upload(gpu, "big", &[2], Relayout::Transpose, WeightDType::Auto)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Transpose"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `upload_columns` (self-attention's fused q | k | v): each part transposed and the parts
/// side by side, f16 only when every part is f16, biases joined, and bad parts named.
#[test]
fn fused_uploads_join_transposed_parts_by_columns() {
    let gpu = gpu();
    let dir = std::env::temp_dir().join(format!("sd-wgpu-kt-fused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng::new(8);
    let (out, inp) = (3, 4);
    let parts: Vec<Vec<f32>> = (0..3)
        .map(|_| round_f16(&rng.normals(out * inp, 1.0)))
        .collect();
    let biases: Vec<Vec<f32>> = (0..3).map(|_| rng.normals(out, 1.0)).collect();
    let h = |v: &[f32]| -> Vec<u8> {
        v.iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect()
    };
    let f = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = ["to_q", "to_k", "to_v"]
        .iter()
        .enumerate()
        .flat_map(|(p, m)| {
            // to_v stored f32: the fused weight must then be f32 under Auto.
            let (dt, wb) = if p == 2 {
                (Dtype::F32, f(&parts[p]))
            } else {
                (Dtype::F16, h(&parts[p]))
            };
            [
                (format!("attn.{m}.weight"), dt, vec![out, inp], wb),
                (
                    format!("attn.{m}.bias"),
                    Dtype::F32,
                    vec![out],
                    f(&biases[p]),
                ),
            ]
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, dt, s, b)| (n.clone(), TensorView::new(*dt, s.clone(), b).unwrap()))
        .collect();
    let path = dir.join("fused.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let w = Weights::open_file(&path).unwrap();
    let names = |leaf: &str, ms: &[&str]| -> Vec<String> {
        ms.iter().map(|m| format!("attn.{m}.{leaf}")).collect()
    };
    let qkv = ["to_q", "to_k", "to_v"];
    let t = w
        .upload_columns(
            gpu,
            &names("weight", &qkv),
            &vec![vec![out, inp]; 3],
            Relayout::Transpose,
            WeightDType::Auto,
            "attn.qkv.weight",
        )
        .unwrap();
    assert_eq!(
        (t.shape(), t.dtype(), t.name()),
        (&[inp, 3 * out][..], DType::F32, "attn.qkv.weight")
    );
    // Row r (input feature) holds q[:, r] | k[:, r] | v[:, r].
    let want: Vec<f32> = (0..inp)
        .flat_map(|r| (0..3).flat_map(move |p| (0..out).map(move |o| (p, o, r))))
        .map(|(p, o, r)| parts[p][o * inp + r])
        .collect();
    check(
        "fused q|k|v weight",
        &t.to_vec(gpu).unwrap(),
        &want,
        0.0,
        0.0,
    );
    // The f16 parts alone stay f16.
    let t = w
        .upload_columns(
            gpu,
            &names("weight", &qkv[..2]),
            &vec![vec![out, inp]; 2],
            Relayout::Transpose,
            WeightDType::Auto,
            "attn.qk.weight",
        )
        .unwrap();
    assert_eq!(t.dtype(), DType::F16);
    let b = w
        .upload_columns(
            gpu,
            &names("bias", &qkv),
            &vec![vec![out]; 3],
            Relayout::None,
            WeightDType::F32,
            "attn.qkv.bias",
        )
        .unwrap();
    check(
        "fused bias",
        &b.to_vec(gpu).unwrap(),
        &biases.concat(),
        0.0,
        0.0,
    );
    // A misshaped part is named; parts of different widths of input are refused.
    let e = w
        .upload_columns(
            gpu,
            &names("weight", &qkv),
            &[vec![out, inp], vec![out, inp], vec![out + 1, inp]],
            Relayout::Transpose,
            WeightDType::Auto,
            "x",
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("attn.to_v.weight"), "{e}");
    let e = w
        .upload_columns(
            gpu,
            &names("weight", &qkv),
            &[vec![out, inp], vec![out, inp + 1], vec![out, inp]],
            Relayout::Transpose,
            WeightDType::Auto,
            "attn.qkv.weight",
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("share their rows"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
