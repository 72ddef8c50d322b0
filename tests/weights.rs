//! Weight loading without a GPU: reading and converting f32 / f16 / bf16 safetensors, and
//! every kind of bad input getting an error that names the file and tensor.

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use sd_wgpu::Error;
use sd_wgpu::weights::{ModelLayout, Weights, detect_layout};
use std::path::PathBuf;

/// A fresh directory under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sd-wgpu-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect()
}

fn bf16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect()
}

/// A safetensors file with one tensor of each supported dtype and an unsupported one.
fn sample_file(dir: &std::path::Path) -> PathBuf {
    let vals = [1.0f32, -2.5, 0.125, 3.0, 65504.0, -0.0];
    let f32b: Vec<u8> = vals.iter().flat_map(|x| x.to_le_bytes()).collect();
    let (f16b, bf16b) = (f16_bytes(&vals), bf16_bytes(&vals));
    let i64b: Vec<u8> = (0..4i64).flat_map(|x| x.to_le_bytes()).collect();
    let tensors = vec![
        (
            "a.f32",
            TensorView::new(Dtype::F32, vec![2, 3], &f32b).unwrap(),
        ),
        (
            "a.f16",
            TensorView::new(Dtype::F16, vec![2, 3], &f16b).unwrap(),
        ),
        (
            "a.bf16",
            TensorView::new(Dtype::BF16, vec![6], &bf16b).unwrap(),
        ),
        ("ids", TensorView::new(Dtype::I64, vec![4], &i64b).unwrap()),
    ];
    let path = dir.join("model.safetensors");
    safetensors::serialize_to_file(tensors, None, &path).unwrap();
    path
}

#[test]
fn reads_f32_f16_bf16_and_names_missing_or_misshaped_tensors() {
    let dir = temp_dir("read");
    let path = sample_file(&dir);
    let w = Weights::open_file(&path).unwrap();
    let want = [1.0f32, -2.5, 0.125, 3.0, 65504.0, -0.0];
    assert_eq!(w.read_f32("a.f32", &[2, 3]).unwrap(), want);
    assert_eq!(w.read_f32("a.f16", &[2, 3]).unwrap(), want);
    // bf16 keeps 8 mantissa bits: 65504 rounds to 65536.
    let bf = w.read_f32("a.bf16", &[6]).unwrap();
    assert_eq!(bf[..4], want[..4]);
    assert_eq!(bf[4], 65536.0);
    assert_eq!(w.names().count(), 4);

    match w.read_f32("unet.conv_in.weight", &[1]) {
        Err(e @ Error::MissingTensor { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("unet.conv_in.weight") && m.contains("model.safetensors"),
                "{m}"
            );
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    match w.read_f32("a.f32", &[3, 2]) {
        Err(e @ Error::TensorShape { .. }) => assert!(
            e.to_string().contains("[2, 3]") && e.to_string().contains("a.f32"),
            "{e}"
        ),
        other => panic!("expected TensorShape, got {other:?}"),
    }
    let e = w.read_f32("ids", &[4]).unwrap_err().to_string();
    assert!(
        e.contains("ids") && e.contains("I64") && e.contains("not supported"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn truncated_and_corrupt_files_are_refused_with_the_file_named() {
    let dir = temp_dir("corrupt");
    let path = sample_file(&dir);
    let bytes = std::fs::read(&path).unwrap();
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 5]).unwrap();
    match Weights::open_file(&truncated) {
        Err(e @ Error::Safetensors { .. }) => {
            assert!(e.to_string().contains("truncated.safetensors"), "{e}")
        }
        other => panic!("expected a safetensors error, got {:?}", other.err()),
    }
    let garbage = dir.join("garbage.safetensors");
    let mut g = 40u64.to_le_bytes().to_vec();
    g.extend_from_slice(b"{\"a\": {\"dtype\": \"F32\", this is not json}}");
    std::fs::write(&garbage, &g).unwrap();
    assert!(matches!(
        Weights::open_file(&garbage),
        Err(Error::Safetensors { .. })
    ));
    let empty = dir.join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert!(Weights::open_file(&empty).is_err());
    let e = Weights::open_file(&dir.join("absent.safetensors"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("absent.safetensors"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pickles_are_refused_by_name_and_by_content_but_safetensors_never_are() {
    let dir = temp_dir("pickle");
    for (name, content) in [
        ("sd-v1-5.ckpt", &b"anything"[..]),
        ("model.pt", &b"anything"[..]),
        // torch.save's zip container, whatever the name.
        (
            "renamed.safetensors",
            &b"PK\x03\x04\x14\x00\x00\x00\x08\x00"[..],
        ),
        // A raw pickle stream (protocol 2).
        ("raw.safetensors", &b"\x80\x02}q\x00(X\x05\x00\x00\x00"[..]),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        match Weights::open_file(&p) {
            Err(e @ Error::Pickle { .. }) => {
                assert!(e.to_string().contains("never loads pickles"), "{e}")
            }
            other => panic!("{name}: expected Pickle, got {:?}", other.err()),
        }
        assert!(
            matches!(detect_layout(&p), Err(Error::Pickle { .. })),
            "{name}"
        );
    }
    // A real safetensors file whose header length is 640 = 0x280 starts with 0x80 0x02, like a
    // pickle; the `{` after the length tells them apart.
    let mut header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.to_vec();
    header.resize(640, b' ');
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    assert_eq!(bytes[..2], [0x80, 0x02]);
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&7.5f32.to_le_bytes());
    let p = dir.join("looks-like-pickle.safetensors");
    std::fs::write(&p, &bytes).unwrap();
    assert_eq!(
        Weights::open_file(&p).unwrap().read_f32("w", &[1]).unwrap(),
        [7.5]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn model_layouts_are_detected() {
    let dir = temp_dir("layout");
    let single = sample_file(&dir);
    assert_eq!(
        detect_layout(&single).unwrap(),
        ModelLayout::SingleFile(single.clone())
    );
    let folder = dir.join("sd15");
    std::fs::create_dir_all(&folder).unwrap();
    let e = detect_layout(&folder).unwrap_err().to_string();
    assert!(e.contains("model_index.json"), "{e}");
    std::fs::write(folder.join("model_index.json"), "{}").unwrap();
    assert_eq!(
        detect_layout(&folder).unwrap(),
        ModelLayout::Diffusers(folder.clone())
    );
    let txt = dir.join("notes.txt");
    std::fs::write(&txt, "hello").unwrap();
    assert!(
        detect_layout(&txt)
            .unwrap_err()
            .to_string()
            .contains(".safetensors")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
