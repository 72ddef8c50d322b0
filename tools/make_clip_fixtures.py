#!/usr/bin/env python3
"""Builds tiny random-weight CLIP text encoders with transformers (the reference) and dumps
their outputs, for kernels-tests/clip.rs:

    tests/fixtures/clip/<name>/config.json        transformers CLIPTextConfig
    tests/fixtures/clip/<name>/model.safetensors  weights, keys `text_model.…` as in real
                                                  SD checkpoints; every tensor perturbed
                                                  (default init leaves norm weights at 1 and
                                                  biases at 0, which would hide a dropped one)
    tests/fixtures/clip/<name>/golden.safetensors input_ids [2, 77] (as f32), and per clip
                                                  skip k: out_skip<k> = final_layer_norm(
                                                  hidden_states[-(k + 1)]) as diffusers' SD
                                                  pipelines compute prompt embeddings

    .venv/bin/python tools/make_clip_fixtures.py
"""
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

torch.manual_seed(0)
CONFIGS = {
    # SD 1.x-like: quick-GELU, like CLIP ViT-L/14 (768 wide, 12 layers, 12 heads) but tiny.
    "sd1-tiny": dict(vocab_size=1000, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                     num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu"),
    # SD 2.x-like: GELU, OpenCLIP ViT-H style head count, used with clip skip 1 (penultimate).
    "sd2-tiny": dict(vocab_size=1000, hidden_size=80, intermediate_size=192, num_hidden_layers=3,
                     num_attention_heads=5, max_position_embeddings=77, hidden_act="gelu"),
}

for name, kw in CONFIGS.items():
    out = Path("tests/fixtures/clip") / name
    out.mkdir(parents=True, exist_ok=True)
    cfg = CLIPTextConfig(**kw, layer_norm_eps=1e-5, bos_token_id=998, eos_token_id=999, pad_token_id=999)
    model = CLIPTextModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    state = {("text_model." + k if not k.startswith("text_model.") else k): v.contiguous()
             for k, v in model.state_dict().items() if "position_ids" not in k}
    save_file(state, out / "model.safetensors")
    (out / "config.json").write_text(cfg.to_json_string())
    ids = torch.randint(0, 998, (2, 77))
    ids[:, 0] = 998
    ids[0, 12] = 999  # an end token mid-sequence, then padding, as SD prompts have
    ids[0, 13:] = 999
    with torch.no_grad():
        o = model(input_ids=ids, output_hidden_states=True)
        golden = {"input_ids": ids.float()}
        for k in (0, 1):
            golden[f"out_skip{k}"] = model.final_layer_norm(o.hidden_states[-(k + 1)]).contiguous()
        assert torch.allclose(golden["out_skip0"], o.last_hidden_state)
    save_file(golden, out / "golden.safetensors")
    print(name, sum(v.numel() for v in state.values()), "parameters")
