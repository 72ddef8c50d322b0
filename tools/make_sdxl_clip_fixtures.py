#!/usr/bin/env python3
"""Builds SDXL's two kinds of tiny random-weight text encoders with transformers (the
reference) and dumps what the SDXL pipeline takes from them, for kernels-tests/clip.rs:

    tests/fixtures/clip/<name>/config.json, model.safetensors (keys `text_model.…` and, for
    the projection model, `text_projection.weight`; every tensor perturbed),
    golden.safetensors: input_ids [2, 77] (as f32) and per clip skip k in 0, 1:
    penultimate_skip<k> = hidden_states[-(k + 2)] (no final layer norm, as diffusers'
    StableDiffusionXLPipeline.encode_prompt), and for the projection model text_embeds =
    the output's text_embeds (the final-layer-normed state at the end token, projected).

- sdxl1-tiny: `CLIPTextModel`, quick-GELU (the CLIP ViT-L of `text_encoder`), end token
  id 999 found by id (transformers' non-legacy `eos_token_id` path).
- sdxl2-tiny: `CLIPTextModelWithProjection`, GELU (the OpenCLIP bigG of `text_encoder_2`),
  `eos_token_id` 2 (transformers' legacy path: the end token is the largest id), padded with
  id 0 (`tokenizer_2` pads with "!").

    .venv/bin/python tools/make_sdxl_clip_fixtures.py
"""
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from fixture_common import perturb

torch.manual_seed(11)
CONFIGS = {
    "sdxl1-tiny": (CLIPTextModel, dict(hidden_act="quick_gelu", hidden_size=64, intermediate_size=160,
                                       num_attention_heads=4, eos_token_id=999, pad_token_id=999)),
    "sdxl2-tiny": (CLIPTextModelWithProjection,
                   dict(hidden_act="gelu", hidden_size=80, intermediate_size=192, num_attention_heads=5,
                        projection_dim=48, eos_token_id=2, pad_token_id=1)),
}
for name, (cls, kw) in CONFIGS.items():
    out = Path("tests/fixtures/clip") / name
    out.mkdir(parents=True, exist_ok=True)
    cfg = CLIPTextConfig(vocab_size=1000, num_hidden_layers=3, max_position_embeddings=77,
                         layer_norm_eps=1e-5, bos_token_id=998, **kw)
    model = cls(cfg)
    perturb(model)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}
    state = {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v
             for k, v in state.items()}
    save_file(state, out / "model.safetensors")
    (out / "config.json").write_text(cfg.to_json_string())
    ids = torch.randint(1, 998, (2, 77))
    ids[:, 0] = 998
    pad = 999 if name == "sdxl1-tiny" else 0
    ids[0, 12] = 999  # the end token mid-sequence, then padding
    ids[0, 13:] = pad
    ids[1, 76] = 999  # a prompt that fills the window
    with torch.no_grad():
        o = model(input_ids=ids, output_hidden_states=True)
        golden = {"input_ids": ids.float()}
        for k in (0, 1):
            golden[f"penultimate_skip{k}"] = o.hidden_states[-(k + 2)].contiguous()
        if name == "sdxl2-tiny":
            golden["text_embeds"] = o.text_embeds.contiguous()
    save_file(golden, out / "golden.safetensors")
    print(name, sum(v.numel() for v in state.values()), "parameters")
