//! The CLIP tokenizer, on the `tokenizers` crate: NFC, whitespace folding and lower-casing,
//! CLIP's split regex, byte-level BPE with `</w>` word ends. Prompts become exactly 77 ids:
//! `<|startoftext|>`, at most 75 prompt tokens, `<|endoftext|>`, then padding (SD 1.x pads
//! with `<|endoftext|>`, SD 2.x with `!` = id 0), as transformers' `CLIPTokenizer` with
//! `padding="max_length", truncation=True` gives them (the reference diffusers uses).
//!
//! The built-in vocabulary is the real CLIP BPE (`bpe_simple_vocab_16e6.txt.gz`, MIT, from
//! PyPI's `open_clip_torch`), converted by `tools/build_clip_tokenizer.py` into
//! `assets/clip-tokenizer.json`.

use crate::error::{Error, Result};
use std::path::Path;
use std::str::FromStr;
use tokenizers::Tokenizer;
use tokenizers::models::bpe::BPE;

/// Tokens per prompt for the CLIP text encoders of SD 1.x and 2.x.
pub const CONTEXT_LEN: usize = 77;
const BUILTIN_JSON: &str = include_str!("../assets/clip-tokenizer.json");
const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";

/// The id that fills a prompt up to 77 tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// `<|endoftext|>` (SD 1.x's tokenizer).
    EndOfText,
    /// A given id (SD 2.x's OpenCLIP tokenizer pads with `!`, id 0).
    Id(u32),
}

/// A tokenized prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokens {
    /// Exactly [`CONTEXT_LEN`] ids.
    pub ids: Vec<u32>,
    /// Position of `<|endoftext|>` (CLIP pools its output there).
    pub eos_index: usize,
    /// Prompt tokens dropped to fit (0 when the prompt fits); callers should warn.
    pub truncated: usize,
}

pub struct ClipTokenizer {
    inner: Tokenizer,
    bos: u32,
    eos: u32,
    pad: u32,
}

/// Largest tokenizer file read (`tokenizer.json`, `vocab.json`, `merges.txt`: CLIP's are
/// 1–4 MiB).
pub const MAX_TOKENIZER_BYTES: u64 = 64 << 20;

fn err(what: impl std::fmt::Display) -> Error {
    Error::unsupported("tokenizer", what.to_string())
}

impl ClipTokenizer {
    /// The built-in CLIP tokenizer (SD 1.x padding).
    pub fn builtin() -> Result<Self> {
        Self::from_tokenizer(
            Tokenizer::from_str(BUILTIN_JSON)
                .map_err(|e| err(format!("built-in tokenizer: {e}")))?,
        )
    }

    /// A `tokenizer.json` file (at most [`MAX_TOKENIZER_BYTES`]).
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = crate::files::read_text_limited(path, MAX_TOKENIZER_BYTES)?;
        Self::from_tokenizer(
            Tokenizer::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))?,
        )
    }

    /// A `vocab.json` + `merges.txt` pair (the `tokenizer/` folder of SD checkpoints), with
    /// CLIP's normalisation and pre-tokenisation.
    pub fn from_vocab_merges(vocab: &Path, merges: &Path) -> Result<Self> {
        // The BPE reader opens them itself: only regular files of a sane size get that far.
        for p in [vocab, merges] {
            crate::files::read_limited(p, MAX_TOKENIZER_BYTES)?;
        }
        let (v, m) = (vocab.to_string_lossy(), merges.to_string_lossy());
        let bpe = BPE::from_file(&v, &m)
            .unk_token(EOS.into())
            .end_of_word_suffix("</w>".into())
            .build()
            .map_err(|e| err(format!("{v} + {m}: {e}")))?;
        let mut t = Tokenizer::from_str(BUILTIN_JSON)
            .map_err(|e| err(format!("built-in tokenizer: {e}")))?;
        t.with_model(bpe);
        Self::from_tokenizer(t)
    }

    /// A diffusers `tokenizer/` folder: `tokenizer.json`, else `vocab.json` + `merges.txt`, else
    /// (configuration files only) the built-in vocabulary; the pad token comes from
    /// `tokenizer_config.json` or `special_tokens_map.json`.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::ModelLayout {
                path: dir.to_path_buf(),
                what: "no such tokenizer folder".into(),
            });
        }
        let tok = if dir.join("tokenizer.json").is_file() {
            Self::from_json_file(&dir.join("tokenizer.json"))?
        } else if dir.join("vocab.json").is_file() {
            Self::from_vocab_merges(&dir.join("vocab.json"), &dir.join("merges.txt"))?
        } else {
            // Only configuration files: the built-in CLIP vocabulary, with the folder's padding.
            Self::builtin()?
        };
        let pad = ["tokenizer_config.json", "special_tokens_map.json"]
            .iter()
            .find_map(|f| {
                let text = crate::files::read_config_text(&dir.join(f)).ok()?;
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                let p = &v["pad_token"];
                p.as_str()
                    .or_else(|| p["content"].as_str())
                    .map(str::to_string)
            });
        match pad {
            None => Ok(tok),
            Some(p) if p == EOS => tok.with_padding(Padding::EndOfText),
            Some(p) => {
                let id = tok.inner.token_to_id(&p).ok_or_else(|| {
                    err(format!(
                        "{}: pad token `{p}` is not in the vocabulary",
                        dir.display()
                    ))
                })?;
                tok.with_padding(Padding::Id(id))
            }
        }
    }

    fn from_tokenizer(inner: Tokenizer) -> Result<Self> {
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| err(format!("the vocabulary has no `{t}`")))
        };
        let (bos, eos) = (id(BOS)?, id(EOS)?);
        Ok(Self {
            inner,
            bos,
            eos,
            pad: eos,
        })
    }

    /// Sets the padding id. A pad token other than `<|endoftext|>` becomes a special token,
    /// as transformers' CLIPTokenizer makes it: SD 2's `!` then never merges with neighbours
    /// (`"4k!!"` ends in two pad ids, not the BPE token `!!`), exactly as diffusers feeds it.
    pub fn with_padding(mut self, p: Padding) -> Result<Self> {
        self.pad = match p {
            Padding::EndOfText => self.eos,
            Padding::Id(id) => id,
        };
        if self.pad != self.eos {
            if let Some(token) = self.inner.id_to_token(self.pad) {
                self.inner
                    .add_special_tokens([tokenizers::AddedToken::from(token, true)])
                    .map_err(|e| err(format!("pad token: {e}")))?;
            }
        }
        Ok(self)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The token ids of `text` alone (no BOS, EOS or padding).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(|e| err(format!("encoding {text:?}: {e}")))?
            .get_ids()
            .to_vec())
    }

    /// BOS + `ids` (at most 75) + EOS + padding to 77, with `weights` for `ids` and 1 for the
    /// rest.
    pub fn frame(&self, ids: &[u32], weights: &[f32]) -> (Vec<u32>, Vec<f32>) {
        let keep = ids.len().min(CONTEXT_LEN - 2);
        let mut out = Vec::with_capacity(CONTEXT_LEN);
        out.push(self.bos);
        out.extend_from_slice(&ids[..keep]);
        out.push(self.eos);
        out.resize(CONTEXT_LEN, self.pad);
        let mut w = vec![1.0; CONTEXT_LEN];
        w[1..1 + keep].copy_from_slice(&weights[..keep]);
        (out, w)
    }

    /// The 77 ids of `prompt`: BOS, up to 75 tokens, EOS, padding.
    pub fn encode(&self, prompt: &str) -> Result<Tokens> {
        let enc = self
            .inner
            .encode(prompt, false)
            .map_err(|e| err(format!("encoding {prompt:?}: {e}")))?;
        let body = enc.get_ids();
        let keep = body.len().min(CONTEXT_LEN - 2);
        let mut ids = Vec::with_capacity(CONTEXT_LEN);
        ids.push(self.bos);
        ids.extend_from_slice(&body[..keep]);
        ids.push(self.eos);
        let eos_index = ids.len() - 1;
        ids.resize(CONTEXT_LEN, self.pad);
        Ok(Tokens {
            ids,
            eos_index,
            truncated: body.len() - keep,
        })
    }
}
