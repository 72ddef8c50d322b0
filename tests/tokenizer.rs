//! The CLIP tokenizer against transformers' CLIPTokenizer (golden ids in
//! `tests/fixtures/clip_tokens.json`, made by `tools/build_clip_tokenizer.py`).

use sd_wgpu::tokenizer::{CONTEXT_LEN, ClipTokenizer, Padding};
use serde_json::Value;

fn cases() -> Vec<Value> {
    let v: Value = serde_json::from_str(include_str!("fixtures/clip_tokens.json")).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn builtin_tokenizer_matches_transformers_for_sd1_and_sd2_padding() {
    let sd1 = ClipTokenizer::builtin().unwrap();
    assert_eq!(sd1.vocab_size(), 49408);
    let sd2 = ClipTokenizer::builtin()
        .unwrap()
        .with_padding(Padding::Id(0))
        .unwrap();
    let cases = cases();
    assert!(cases.len() >= 8);
    for c in &cases {
        let prompt = c["prompt"].as_str().unwrap();
        let t1 = sd1.encode(prompt).unwrap();
        assert_eq!(t1.ids, ids(&c["sd1"]), "sd1 ids for {prompt:?}");
        assert_eq!(t1.ids.len(), CONTEXT_LEN);
        assert_eq!(
            sd2.encode(prompt).unwrap().ids,
            ids(&c["sd2"]),
            "sd2 ids for {prompt:?}"
        );
        let full = c["untruncated_len"].as_u64().unwrap() as usize;
        assert_eq!(
            t1.truncated,
            full.saturating_sub(CONTEXT_LEN),
            "truncation count for {prompt:?}"
        );
        assert_eq!(t1.ids[t1.eos_index], 49407);
    }
}

#[test]
fn a_model_folder_with_vocab_and_merges_gives_the_same_ids() {
    // Write the built-in vocabulary out as vocab.json + merges.txt (the layout of SD
    // checkpoints' tokenizer/ folders) with SD 2's pad token, and read it back.
    let json: Value = serde_json::from_str(include_str!("../assets/clip-tokenizer.json")).unwrap();
    let dir = std::env::temp_dir().join(format!("sd-wgpu-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vocab.json"), json["model"]["vocab"].to_string()).unwrap();
    let merges: Vec<String> = json["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            Value::String(s) => s.clone(),
            Value::Array(p) => format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()),
            other => panic!("merge entry {other}"),
        })
        .collect();
    std::fs::write(
        dir.join("merges.txt"),
        format!("#version: 0.2\n{}\n", merges.join("\n")),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"pad_token": "!", "model_max_length": 77}"#,
    )
    .unwrap();
    let tok = ClipTokenizer::from_folder(&dir).unwrap();
    for c in cases() {
        let prompt = c["prompt"].as_str().unwrap();
        assert_eq!(
            tok.encode(prompt).unwrap().ids,
            ids(&c["sd2"]),
            "{prompt:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ClipTokenizer::from_folder(&std::env::temp_dir().join("no-such-tokenizer")).is_err());
}
