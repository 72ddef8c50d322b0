#!/usr/bin/env python3
"""Reference text contexts for weighted and long prompts on the tiny SD 1-like text encoder
(tests/fixtures/pipeline/sd1-tiny), computed with transformers' CLIPTextModel and the
weighting rule of AUTOMATIC1111's web UI (sd_hijack_clip.py): each prompt piece tokenized on
its own, 75-token chunks framed BOS + tokens + EOS + padding, each chunk encoded, multiplied
row-wise by the token weights and rescaled to its unweighted mean, chunks concatenated.
The pieces and weights are written out by hand here (what the parser must produce).

    .venv/bin/python tools/make_prompt_fixture.py   → tests/fixtures/pipeline/prompt-golden.safetensors
"""
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPTextModel
from fixture_common import clip_tokenizer

root = Path("tests/fixtures/pipeline")
tok = clip_tokenizer()
te = CLIPTextModel.from_pretrained(root / "sd1-tiny/text_encoder").eval()
BOS, EOS, PAD = 49406, 49407, 49407


def context(pieces):
    ids, ws = [], []
    for text, w in pieces:
        t = tok(text, add_special_tokens=False).input_ids
        ids += t
        ws += [w] * len(t)
    chunks = []
    for c in range(max(1, -(-len(ids) // 75))):
        ci, cw = ids[c * 75:(c + 1) * 75], ws[c * 75:(c + 1) * 75]
        row = [BOS] + ci + [EOS]
        wrow = [1.0] + cw + [1.0]
        row += [PAD] * (77 - len(row))
        wrow += [1.0] * (77 - len(wrow))
        with torch.no_grad():
            z = te(torch.tensor([row]))[0]
        mean = z.mean()
        z = z * torch.tensor(wrow)[None, :, None]
        z = z * (mean / z.mean())
        chunks.append(z)
    return torch.cat(chunks, 1)


long_words = " ".join(["a red sneaker on a white table next to a blue dress"] * 9)
cases = {
    # "a (red:1.3) sneaker on a [white] table"
    "weighted": [("a ", 1.0), ("red", 1.3), (" sneaker on a ", 1.0), ("white", 1 / 1.1), (" table", 1.0)],
    # the long prompt, plain: two chunks
    "long": [(long_words, 1.0)],
    # "((blurry))": the negative prompt of the weighted case
    "negative": [("blurry", 1.1 * 1.1)],
}
out = {k: context(v).contiguous() for k, v in cases.items()}
for k, v in out.items():
    print(k, tuple(v.shape))
save_file(out, root / "prompt-golden.safetensors")
(root / "prompt-long.txt").write_text(long_words)
