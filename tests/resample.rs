//! Pillow's `Image.resize` reproduced to the byte (`tools/make_resize_fixture.py`).

use safetensors::SafeTensors;
use sd_wgpu::resample::{Filter, resize_u8};

#[test]
fn resize_matches_pillow_byte_for_byte() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/resize.safetensors"
    ))
    .unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st
        .names()
        .iter()
        .filter_map(|n| n.strip_suffix(".in").map(str::to_string))
        .collect();
    names.sort();
    assert_eq!(names.len(), 12);
    for name in names {
        let src = st.tensor(&format!("{name}.in")).unwrap();
        let want = st.tensor(&format!("{name}.out")).unwrap();
        let (s, d) = (src.shape(), want.shape());
        let filter = if name.starts_with("bicubic") {
            Filter::Bicubic
        } else {
            Filter::Lanczos
        };
        let got = resize_u8(src.data(), (s[1], s[0]), s[2], (d[1], d[0]), filter);
        let diff: Vec<usize> = (0..got.len())
            .filter(|&i| got[i] != want.data()[i])
            .collect();
        assert!(
            diff.is_empty(),
            "{name}: {} of {} bytes differ, first at {}: {} vs Pillow's {}",
            diff.len(),
            got.len(),
            diff[0],
            got[diff[0]],
            want.data()[diff[0]]
        );
    }
}
