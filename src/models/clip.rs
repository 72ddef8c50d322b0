//! CLIP text encoder (transformers `CLIPTextModel`): token + position embeddings, pre-LN
//! transformer layers with causal self-attention, final layer norm. SD 1.x uses OpenAI's
//! ViT-L/14 text tower (quick-GELU); SD 2.x OpenCLIP ViT-H (GELU, taken at the penultimate
//! layer).

use super::blocks::Attention;
use super::{LayerNorm, Linear, Loader, read_json};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};
use crate::ops::{self, Unary};
use crate::tensor::{DType, Tensor};
use crate::weights::{Relayout, WeightDType, Weights};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    QuickGelu,
    Gelu,
}

/// The fields of a transformers `CLIPTextConfig` the encoder uses.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f32,
    /// The end token, whose final state is the pooled output: with transformers' legacy
    /// value 2 the end token is found as the largest id instead (`CLIPTextTransformer`).
    pub eos_token_id: u32,
    /// `CLIPTextModelWithProjection`'s `text_projection` width (SDXL's `text_encoder_2`).
    pub projection_dim: Option<usize>,
}

impl ClipTextConfig {
    /// SD 1.x: `openai/clip-vit-large-patch14` text config.
    pub fn sd15() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 2,
            projection_dim: None,
        }
    }

    /// SD 2.x: OpenCLIP ViT-H/14 text tower as diffusers ships it (23 of its 24 layers).
    pub fn sd21() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 23,
            num_attention_heads: 16,
            hidden_act: Activation::Gelu,
            ..Self::sd15()
        }
    }

    /// Reads a transformers `config.json` (`text_encoder/config.json`).
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json(&read_json(path)?, path)
    }

    /// The config from parsed JSON; `path` names it in errors.
    pub fn from_json(v: &serde_json::Value, path: &Path) -> Result<Self> {
        let bad = |what: String| Error::ModelLayout {
            path: path.to_path_buf(),
            what,
        };
        let int = |k: &str| -> Result<usize> {
            v[k].as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| bad(format!("`{k}` missing or not an integer")))
        };
        let hidden_act = match v["hidden_act"].as_str().unwrap_or("quick_gelu") {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            o => {
                return Err(bad(format!(
                    "hidden_act `{o}` is not supported (quick_gelu, gelu)"
                )));
            }
        };
        Ok(Self {
            vocab_size: int("vocab_size")?,
            hidden_size: int("hidden_size")?,
            intermediate_size: int("intermediate_size")?,
            num_hidden_layers: int("num_hidden_layers")?,
            num_attention_heads: int("num_attention_heads")?,
            max_position_embeddings: int("max_position_embeddings")?,
            hidden_act,
            layer_norm_eps: v["layer_norm_eps"].as_f64().unwrap_or(1e-5) as f32,
            // transformers' CLIPTextConfig default.
            eos_token_id: v["eos_token_id"].as_u64().unwrap_or(49407) as u32,
            projection_dim: v["projection_dim"].as_u64().map(|d| d as usize),
        })
    }
}

/// transformers `CLIPMLP` (`mlp`).
pub struct ClipMlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

/// One encoder layer (`encoder.layers.{i}`).
pub struct ClipEncoderLayer {
    pub layer_norm1: LayerNorm,
    /// transformers `CLIPAttention`: `q_proj`, `k_proj`, `v_proj` fused at load time into
    /// one `[h, 3h]` projection (one GEMM; the attention kernel reads q, k, v from its rows),
    /// causal, `out_proj` as `to_out`.
    pub self_attn: Attention,
    pub layer_norm2: LayerNorm,
    pub mlp: ClipMlp,
}

/// The token-embedding table stays on the host in its file dtype; the rows a prompt uses
/// are gathered there and uploaded ([vocab, hidden]).
enum TokenTable {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

pub struct ClipTextModel {
    pub config: ClipTextConfig,
    token_embedding: TokenTable,
    pub position_embedding: Tensor,
    pub layers: Vec<ClipEncoderLayer>,
    pub final_layer_norm: LayerNorm,
    /// `CLIPTextModelWithProjection`: the pooled output's projection (no bias).
    pub text_projection: Option<Linear>,
}

/// Which hidden state a pipeline takes as the prompt embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HiddenState {
    /// SD 1.x / 2.x pipelines: the output of layer `num_hidden_layers − clip_skip`, then the
    /// final layer norm (`clip_skip` 0: the last hidden state).
    Normed { clip_skip: usize },
    /// SDXL: `hidden_states[-(clip_skip + 2)]`, with no final layer norm (clip skip 0: the
    /// penultimate layer's output).
    Penultimate { clip_skip: usize },
}

/// What [`ClipTextModel::encode`] returns.
pub struct ClipOutput {
    /// The chosen hidden state `[batch, seq, hidden]`, f32.
    pub hidden: Tensor,
    /// With a `text_projection` and when asked: the final-layer-normed state at each row's
    /// end token, projected (`text_embeds`) `[batch, projection_dim]`, f32.
    pub pooled: Option<Tensor>,
}

impl ClipTextModel {
    /// Loads the encoder from `weights`. Keys may carry the `text_model.` prefix (real
    /// checkpoints) or not (transformers 5 saves); `prefix` is prepended to either.
    pub fn load(
        gpu: &Gpu,
        w: &Weights,
        prefix: &str,
        config: &ClipTextConfig,
        dt: WeightDType,
    ) -> Result<Self> {
        let c = config;
        let (h, ff) = (c.hidden_size, c.intermediate_size);
        if c.num_attention_heads == 0 || h % c.num_attention_heads != 0 {
            return Err(Error::unsupported(
                "clip",
                format!(
                    "hidden size {h} does not split into {} heads",
                    c.num_attention_heads
                ),
            ));
        }
        let root = if w.contains(&format!(
            "{prefix}text_model.embeddings.token_embedding.weight"
        )) {
            format!("{prefix}text_model.")
        } else {
            prefix.to_string()
        };
        let name = format!("{root}embeddings.token_embedding.weight");
        let (values, f16) = w.read_table(&name, &[c.vocab_size, h])?;
        let token_embedding = if f16 && dt != WeightDType::F32 {
            TokenTable::F16(values.iter().map(|&v| half::f16::from_f32(v)).collect())
        } else {
            TokenTable::F32(values)
        };
        let vb = Loader::new(w, gpu, &root, dt);
        let position_embedding = vb.pp("embeddings").pp("position_embedding").upload(
            "weight",
            &[c.max_position_embeddings, h],
            Relayout::None,
            WeightDType::F32,
        )?;
        let eps = c.layer_norm_eps;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let vb = vb.pp("encoder").pp("layers").pp(i);
                let (at, mlp) = (vb.pp("self_attn"), vb.pp("mlp"));
                Ok(ClipEncoderLayer {
                    layer_norm1: vb.pp("layer_norm1").layer_norm(h, eps)?,
                    self_attn: Attention {
                        causal: true,
                        ..Attention::load_self_named(
                            &at,
                            ["q_proj", "k_proj", "v_proj"],
                            &at.pp("out_proj"),
                            h,
                            c.num_attention_heads,
                            true,
                        )?
                    },
                    layer_norm2: vb.pp("layer_norm2").layer_norm(h, eps)?,
                    mlp: ClipMlp {
                        fc1: mlp.pp("fc1").linear(h, ff, true)?,
                        fc2: mlp.pp("fc2").linear(ff, h, true)?,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = vb.pp("final_layer_norm").layer_norm(h, eps)?;
        // `CLIPTextModelWithProjection`: a projection width in the config (which plain
        // `CLIPTextModel` configs often carry too) and the weight in the file.
        let projection = format!("{prefix}text_projection.weight");
        let text_projection = match c.projection_dim {
            Some(d) if w.contains(&projection) => Some(
                Loader::new(w, gpu, prefix, dt)
                    .pp("text_projection")
                    .linear(h, d, false)?,
            ),
            _ => None,
        };
        Ok(Self {
            config: c.clone(),
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            text_projection,
        })
    }

    /// Prompt embeddings `[batch, seq, hidden]` for token ids (`ids[b]`, each of the same
    /// length ≤ max_position_embeddings), as diffusers computes them: the output of layer
    /// `num_hidden_layers − clip_skip`, then the final layer norm (`clip_skip` 0: the last
    /// hidden state).
    pub fn forward(
        &self,
        rec: &mut Recorder<'_>,
        ids: &[Vec<u32>],
        clip_skip: usize,
    ) -> Result<Tensor> {
        let out = self.encode(rec, ids, HiddenState::Normed { clip_skip }, false)?;
        Ok(out.hidden)
    }

    /// The hidden state `which` of the token ids (as [`ClipTextModel::forward`] takes them)
    /// and, with `pooled` (an encoder with a `text_projection`), the projected pooled output:
    /// what SDXL's pipeline takes from `text_encoder_2`. The layers after the chosen state run
    /// only when the pooled output needs them.
    pub fn encode(
        &self,
        rec: &mut Recorder<'_>,
        ids: &[Vec<u32>],
        which: HiddenState,
        pooled: bool,
    ) -> Result<ClipOutput> {
        const OP: &str = "clip";
        // Layers left out after the chosen state.
        let (clip_skip, asked) = match which {
            HiddenState::Normed { clip_skip } => (clip_skip, clip_skip),
            HiddenState::Penultimate { clip_skip } => (clip_skip + 1, clip_skip),
        };
        let c = &self.config;
        let h = c.hidden_size;
        let seq = ids.first().map_or(0, Vec::len);
        if ids.is_empty()
            || seq == 0
            || seq > c.max_position_embeddings
            || ids.iter().any(|r| r.len() != seq)
        {
            return Err(Error::shape(
                OP,
                format!(
                    "token ids must be {} rows of equal length 1..={}",
                    ids.len(),
                    c.max_position_embeddings
                ),
            ));
        }
        if clip_skip >= c.num_hidden_layers {
            return Err(Error::unsupported(
                OP,
                format!(
                    "clip skip {asked} ({which:?}) with {} layers",
                    c.num_hidden_layers
                ),
            ));
        }
        // Token embeddings gathered on the host.
        let mut emb = Vec::with_capacity(ids.len() * seq * h);
        for &id in ids.iter().flatten() {
            let id = id as usize;
            if id >= c.vocab_size {
                return Err(Error::unsupported(
                    OP,
                    format!("token id {id} is outside the vocabulary ({})", c.vocab_size),
                ));
            }
            match &self.token_embedding {
                TokenTable::F32(t) => emb.extend_from_slice(&t[id * h..(id + 1) * h]),
                TokenTable::F16(t) => {
                    emb.extend(t[id * h..(id + 1) * h].iter().map(|v| v.to_f32()))
                }
            }
        }
        let gpu = rec.gpu();
        // Activations in f16 for f16 weights where the device runs them (Gpu::activation_dtype).
        let adt = gpu.activation_dtype(self.projection_dtype());
        let tokens = Tensor::from_f32(
            gpu,
            &emb,
            &[ids.len(), seq, h],
            DType::F32,
            "clip.token_embeddings",
        )?;
        let tokens = ops::cast(rec, &tokens, adt)?;
        let pos = ops::cast(rec, &self.position_embedding.narrow0(0, seq)?, adt)?;
        let mut x = ops::add(rec, &tokens, &pos)?; // [B, seq, h]
        let projection = match (pooled, &self.text_projection) {
            (false, _) => None,
            (true, Some(p)) => Some(p),
            (true, None) => {
                return Err(Error::unsupported(
                    OP,
                    "a pooled output was asked of an encoder without text_projection",
                ));
            }
        };
        let take = c.num_hidden_layers - clip_skip;
        let run = if projection.is_some() {
            c.num_hidden_layers
        } else {
            take
        };
        let mut hidden = None;
        if take == 0 {
            hidden = Some(x.clone());
        }
        for (i, layer) in self.layers[..run].iter().enumerate() {
            x = self.layer(rec, layer, &x)?;
            if i + 1 == take {
                hidden = Some(x.clone());
            }
        }
        let hidden = hidden.ok_or_else(|| Error::unsupported(OP, "no hidden state taken"))?;
        let hidden = match which {
            HiddenState::Normed { .. } => self.final_layer_norm.forward(rec, &hidden)?,
            HiddenState::Penultimate { .. } => hidden,
        };
        let pooled = match projection {
            Some(p) => {
                // The final state at each row's end token: transformers' legacy
                // `eos_token_id` 2 takes the largest id, else the first end token.
                let last = self.final_layer_norm.forward(rec, &x)?;
                let (b, seq) = (ids.len(), ids[0].len());
                let rows = last.reshape(&[b * seq, c.hidden_size])?;
                let mut cat: Option<Tensor> = None;
                for (r, row_ids) in ids.iter().enumerate() {
                    let pos = if c.eos_token_id == 2 {
                        let max = row_ids.iter().copied().max().unwrap_or(0);
                        row_ids.iter().position(|&t| t == max)
                    } else {
                        row_ids.iter().position(|&t| t == c.eos_token_id)
                    }
                    .unwrap_or(0);
                    let row = rows.narrow0(r * seq + pos, 1)?; // [1, h]
                    cat = Some(match cat {
                        None => row,
                        Some(prev) => ops::concat_channels(rec, &prev, &row)?,
                    });
                }
                let cat = cat
                    .ok_or_else(|| Error::unsupported(OP, "no rows"))?
                    .reshape(&[b, c.hidden_size])?;
                let proj = p.forward(rec, &cat)?; // [B, projection_dim]
                Some(ops::cast(rec, &proj, DType::F32)?)
            }
            None => None,
        };
        // The context leaves in f32 (prompt weighting and the U-Net take it from there).
        Ok(ClipOutput {
            hidden: ops::cast(rec, &hidden, DType::F32)?,
            pooled,
        })
    }

    /// One encoder layer: x + attn(ln1(x)), then + fc2(act(fc1(ln2(·)))).
    fn layer(
        &self,
        rec: &mut Recorder<'_>,
        layer: &ClipEncoderLayer,
        x: &Tensor,
    ) -> Result<Tensor> {
        // x + out_proj(attn(layer_norm1(x))) [B, seq, h]
        let x = layer
            .self_attn
            .forward(rec, x, Some(&layer.layer_norm1), Some(x))?;
        let y = layer.layer_norm2.forward(rec, &x)?;
        let y = layer.mlp.fc1.forward(rec, &y)?; // [B, seq, ff]
        let act = match self.config.hidden_act {
            Activation::QuickGelu => Unary::QuickGelu,
            Activation::Gelu => Unary::Gelu,
        };
        let y = ops::unary(rec, &y, act, 1.0, 0.0)?;
        layer.mlp.fc2.forward_res(rec, &y, Some(&x)) // x + fc2(y)
    }

    /// The dtype of the encoder's projection weights, which decides its activation dtype.
    fn projection_dtype(&self) -> DType {
        self.layers
            .first()
            .map_or(DType::F32, |l| l.self_attn.to_out.weight.dtype())
    }
}
