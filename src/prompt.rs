//! Prompt weighting and long prompts, as the common Stable Diffusion UIs do them
//! (AUTOMATIC1111's web UI: `modules/prompt_parser.py` and `sd_hijack_clip.py`):
//!
//! - `(words)` multiplies the attention to `words` by 1.1, `((words))` by 1.1², `[words]`
//!   divides by 1.1, `(words:1.4)` sets 1.4; `\(`, `\)`, `\[`, `\]` and `\\` are literal.
//!   Unbalanced brackets are an error here (the web UI closes them silently).
//! - The prompt is tokenized piece by piece and cut into chunks of 75 tokens; each chunk
//!   becomes BOS + 75 + EOS (padded like the model's tokenizer) and is encoded on its own.
//! - Each chunk's encoder output `z` (77 × width) is multiplied row by row by its tokens'
//!   weights (1 for BOS, EOS and padding), then rescaled so its mean over all elements is the
//!   unweighted mean: `z ← z·w · mean(z) / mean(z·w)`.
//! - The chunks are concatenated along the sequence (77·k tokens of context); the prompt and
//!   negative prompt are padded with empty chunks to the same count.
//!
//! A prompt without brackets that fits 75 tokens gives exactly the unweighted encoding.

use crate::error::{Error, Result};
use crate::tokenizer::{CONTEXT_LEN, ClipTokenizer};

/// Largest weight magnitude a piece of a prompt may end up with (explicit or through nested
/// brackets); beyond it the encoder's output is meaningless and can overflow.
pub const MAX_WEIGHT: f32 = 100.0;

/// Deepest bracket nesting accepted (keeps parsing linear in the prompt's length).
pub const MAX_NESTING: usize = 64;

/// Most 75-token chunks a prompt may make (4800 tokens): each is a full text-encoder pass and
/// 77 more context rows for every cross-attention of every step.
pub const MAX_CHUNKS: usize = 64;

/// Tokens per chunk between BOS and EOS.
pub const CHUNK: usize = CONTEXT_LEN - 2;

/// The prompt's text pieces with their weights, in order (adjacent equal weights merged).
pub fn parse_weights(prompt: &str) -> Result<Vec<(String, f32)>> {
    const UP: f32 = 1.1;
    let bad = |what: String| Error::Prompt {
        prompt: prompt.to_string(),
        what,
    };
    // (text, weight) pieces; brackets record where their range starts and what kind they are.
    let mut pieces: Vec<(String, f32)> = Vec::new();
    let mut open: Vec<(usize, char, usize)> = Vec::new(); // (piece index, kind, byte offset)
    let mut text = String::new();
    let flush = |text: &mut String, pieces: &mut Vec<(String, f32)>| {
        if !text.is_empty() {
            pieces.push((std::mem::take(text), 1.0));
        }
    };
    let chars: Vec<(usize, char)> = prompt.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, ch) = chars[i];
        match ch {
            '\\' if i + 1 < chars.len() => {
                text.push(chars[i + 1].1);
                i += 2;
                continue;
            }
            '(' | '[' => {
                flush(&mut text, &mut pieces);
                if open.len() == MAX_NESTING {
                    return Err(bad(format!(
                        "brackets nest deeper than {MAX_NESTING} levels at byte {at}"
                    )));
                }
                open.push((pieces.len(), ch, at));
            }
            ')' | ']' => {
                let want = if ch == ')' { '(' } else { '[' };
                // `(text:1.4)`: an explicit weight at the end of a round bracket.
                let mut factor = if ch == ')' { UP } else { 1.0 / UP };
                if ch == ')' {
                    if let Some(colon) = text.rfind(':') {
                        let num = text[colon + 1..].trim();
                        if let Ok(v) = num.parse::<f32>() {
                            if !v.is_finite() || v.abs() > MAX_WEIGHT {
                                return Err(bad(format!(
                                    "weight `{num}` before byte {at} must be a finite number \
                                     within ±{MAX_WEIGHT}"
                                )));
                            }
                            factor = v;
                            text.truncate(colon);
                        }
                    }
                }
                flush(&mut text, &mut pieces);
                match open.pop() {
                    Some((start, kind, _)) if kind == want => {
                        for p in &mut pieces[start..] {
                            p.1 *= factor;
                            if p.1.abs() > MAX_WEIGHT {
                                return Err(bad(format!(
                                    "`{}` gets weight {} from nested brackets, beyond ±{MAX_WEIGHT}",
                                    p.0, p.1
                                )));
                            }
                        }
                    }
                    Some((_, kind, pos)) => {
                        return Err(bad(format!(
                            "`{ch}` at byte {at} closes the `{kind}` opened at byte {pos}"
                        )));
                    }
                    None => return Err(bad(format!("`{ch}` at byte {at} closes nothing"))),
                }
            }
            _ => text.push(ch),
        }
        i += 1;
    }
    if let Some((_, kind, pos)) = open.pop() {
        return Err(bad(format!(
            "`{kind}` opened at byte {pos} is never closed"
        )));
    }
    flush(&mut text, &mut pieces);
    let mut merged: Vec<(String, f32)> = Vec::new();
    for (t, w) in pieces {
        match merged.last_mut() {
            Some(last) if last.1 == w => last.0.push_str(&t),
            _ => merged.push((t, w)),
        }
    }
    Ok(merged)
}

/// Whether `prompt` uses the weighting syntax (brackets or escapes).
pub fn has_weights(prompt: &str) -> bool {
    prompt.contains(['(', ')', '[', ']', '\\'])
}

/// A prompt as 77-token chunks: ids and per-token weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunks {
    pub ids: Vec<Vec<u32>>,
    pub weights: Vec<Vec<f32>>,
    /// Prompt tokens in all (without BOS, EOS, padding).
    pub tokens: usize,
}

/// Tokenizes `prompt` with its weights into chunks of 75 tokens (BOS + 75 + EOS, padded);
/// an empty prompt is one chunk.
pub fn chunk_prompt(tok: &ClipTokenizer, prompt: &str) -> Result<Chunks> {
    let mut ids = Vec::new();
    let mut weights = Vec::new();
    for (text, w) in parse_weights(prompt)? {
        let t = tok.tokenize(&text)?;
        weights.extend(std::iter::repeat_n(w, t.len()));
        ids.extend(t);
    }
    let mut out = Chunks {
        ids: Vec::new(),
        weights: Vec::new(),
        tokens: ids.len(),
    };
    let n = ids.len().div_ceil(CHUNK).max(1);
    if n > MAX_CHUNKS {
        return Err(Error::Prompt {
            prompt: prompt.chars().take(80).collect::<String>() + "…",
            what: format!(
                "{} tokens make {n} chunks of {CHUNK}; at most {MAX_CHUNKS} ({} tokens)",
                ids.len(),
                MAX_CHUNKS * CHUNK
            ),
        });
    }
    for c in 0..n {
        let (a, b) = (c * CHUNK, ((c + 1) * CHUNK).min(ids.len()));
        let (cid, cw) = tok.frame(&ids[a..b], &weights[a..b]);
        out.ids.push(cid);
        out.weights.push(cw);
    }
    Ok(out)
}

/// Applies per-token weights to one chunk's encoder output `z` (`[77, width]`, row-major) and
/// restores its mean: `z·w · mean(z) / mean(z·w)` (means over every element, in f64).
pub fn apply_weights(z: &mut [f32], weights: &[f32], width: usize) {
    if weights.iter().all(|&w| w == 1.0) {
        return;
    }
    let before: f64 = z.iter().map(|&v| f64::from(v)).sum::<f64>();
    for (row, &w) in z.chunks_exact_mut(width).zip(weights) {
        for v in row {
            *v *= w;
        }
    }
    let after: f64 = z.iter().map(|&v| f64::from(v)).sum::<f64>();
    if after != 0.0 {
        let k = (before / after) as f32;
        for v in z.iter_mut() {
            *v *= k;
        }
    }
}
