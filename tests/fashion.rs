//! The built-in model's vocabulary file and the colour measure used by its evaluation and
//! tests (no GPU).

use sd_wgpu::fashion::Vocabulary;
use std::path::PathBuf;

fn vocabulary() -> Vocabulary {
    Vocabulary::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/fashion-model"))
        .unwrap()
}

#[test]
fn vocabulary_lists_colours_classes_and_held_out_pairs() {
    let v = vocabulary();
    assert_eq!(v.colours.len(), v.rgb.len());
    assert!(v.colours.len() >= 4 && v.classes.len() == 10);
    for p in &v.held_out {
        let words: Vec<&str> = p.splitn(3, ' ').collect();
        assert_eq!(words[0], "a", "{p}");
        assert!(v.colours.iter().any(|c| c == words[1]), "{p}");
        assert!(v.classes.iter().any(|c| c == words[2]), "{p}");
    }
}

/// A garment-shaped blob in each tint (with shading and a dark background) is measured as
/// that colour; an all-dark image has none.
#[test]
fn garment_colour_recovers_each_tint() {
    let v = vocabulary();
    for (i, rgb) in v.rgb.iter().enumerate() {
        let mut img = vec![0.02f32; 32 * 32 * 3];
        for y in 6..26 {
            for x in 10..22 {
                let shade = 0.5 + 0.5 * ((x + y) % 5) as f32 / 4.0;
                for c in 0..3 {
                    img[(y * 32 + x) * 3 + c] = rgb[c] * shade;
                }
            }
        }
        assert_eq!(v.garment_colour(&img), Some(i), "{}", v.colours[i]);
    }
    assert_eq!(v.garment_colour(&[0.1; 32 * 32 * 3]), None);
}
