//! The prompt-weighting syntax (AUTOMATIC1111's: `(x)`, `((x))`, `(x:1.4)`, `[x]`, escapes),
//! chunking and the weight rule, without a GPU.

use sd_wgpu::Error;
use sd_wgpu::prompt::{apply_weights, chunk_prompt, has_weights, parse_weights};
use sd_wgpu::tokenizer::ClipTokenizer;

fn p(s: &str) -> Vec<(String, f32)> {
    parse_weights(s).unwrap()
}

fn close(got: &[(String, f32)], want: &[(&str, f32)]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for ((gt, gw), (wt, ww)) in got.iter().zip(want) {
        assert_eq!(gt, wt);
        assert!((gw - ww).abs() < 1e-6, "{gt}: {gw} vs {ww}");
    }
}

#[test]
fn weighting_syntax() {
    close(&p("a cat"), &[("a cat", 1.0)]);
    close(
        &p("a (red) cat"),
        &[("a ", 1.0), ("red", 1.1), (" cat", 1.0)],
    );
    close(&p("((red))"), &[("red", 1.21)]);
    close(&p("[blue] sky"), &[("blue", 1.0 / 1.1), (" sky", 1.0)]);
    close(&p("(red:1.4) cat"), &[("red", 1.4), (" cat", 1.0)]);
    close(&p("(red: 0.5 )"), &[("red", 0.5)]);
    close(&p("((red:1.5))"), &[("red", 1.65)]);
    close(
        &p(r"a \(literal\) \[x\] \\"),
        &[(r"a (literal) [x] \", 1.0)],
    );
    // A colon without a number stays text.
    close(&p("(time: noon)"), &[("time: noon", 1.1)]);
    // Nested: (a [b] c).
    let n = p("(a [b] c)");
    assert_eq!(n.len(), 3);
    assert!((n[1].1 - 1.0).abs() < 1e-6 && (n[0].1 - 1.1).abs() < 1e-6);
    assert!(!has_weights("a plain prompt, with commas: and colons"));
    assert!(has_weights("a (weighted) prompt"));
}

#[test]
fn unbalanced_brackets_are_errors() {
    for (s, want) in [
        ("a (red cat", "never closed"),
        ("a red) cat", "closes nothing"),
        ("a (red] cat", "closes the `(`"),
        ("[a", "never closed"),
    ] {
        match parse_weights(s) {
            Err(Error::Prompt { prompt, what }) => {
                assert_eq!(prompt, s);
                assert!(what.contains(want), "{s}: {what}");
            }
            other => panic!("{s}: {other:?}"),
        }
    }
}

#[test]
fn chunks_of_75_tokens_with_aligned_weights() {
    let tok = ClipTokenizer::builtin().unwrap();
    let c = chunk_prompt(&tok, "a (red:1.5) cat").unwrap();
    assert_eq!(c.ids.len(), 1);
    let plain = tok.encode("a red cat").unwrap().ids;
    assert_eq!(c.ids[0], plain);
    assert_eq!(&c.weights[0][..5], &[1.0, 1.0, 1.5, 1.0, 1.0]);
    let long = "word ".repeat(100);
    let c = chunk_prompt(&tok, &long).unwrap();
    assert_eq!((c.ids.len(), c.tokens), (2, 100));
    for ids in &c.ids {
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[0], 49406);
    }
    assert_eq!(c.ids[1][26], 49407); // 25 tokens in the second chunk, then EOS
    let e = chunk_prompt(&tok, "").unwrap();
    assert_eq!(e.ids, vec![tok.encode("").unwrap().ids]);
}

#[test]
fn weights_scale_rows_and_restore_the_mean() {
    let width = 3;
    let mut z: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
    let orig = z.clone();
    apply_weights(&mut z, &[1.0; 4], width);
    assert_eq!(z, orig, "all-ones weights must leave z bit-identical");
    let w = [1.0, 2.0, 0.5, 1.0];
    apply_weights(&mut z, &w, width);
    let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
    assert!((mean(&z) - mean(&orig)).abs() < 1e-6);
    // Row 1 was doubled relative to row 0 before the common rescale.
    let k = z[0] / orig[0];
    assert!((z[3] / (orig[3] * 2.0) - k).abs() < 1e-5);
}
