#!/usr/bin/env python3
"""Reference SDXL runs with weighted and long prompts on the tiny SDXL pipeline
(tests/fixtures/pipeline/sdxl-tiny), for kernels-tests/sdxl.rs. diffusers' SDXL pipeline has
no prompt syntax; the engine applies the web UI's rule (AUTOMATIC1111, as for SD 1.x: see
tools/make_prompt_fixture.py) to each encoder: each piece tokenized on its own, 75-token
chunks framed BOS + tokens + EOS + padding (the first tokenizer pads with <|endoftext|>, the
second with "!"), each chunk's penultimate hidden state multiplied row-wise by the token
weights and rescaled to its unweighted mean, chunks concatenated, the two encoders side by
side; `text_embeds` is the second encoder's pooled projection of the first chunk, unweighted
(the web UI's `zs[0].pooled`); a shorter prompt is padded with empty chunks. Those
embeddings then go through diffusers' StableDiffusionXLPipeline (`prompt_embeds=`,
`pooled_prompt_embeds=` and the negative ones), from the SDXL fixture's latents, 3 Euler
steps, guidance 5.

    tests/fixtures/pipeline/sdxl-prompt-golden.safetensors
        final_<case> [1, 4, 8, 8], image_<case> [1, 32, 32, 3]:
        - weighted: "a (red:1.3) sneaker on a [white] table", negative "((blurry))"
        - long: tests/fixtures/pipeline/prompt-long.txt (two chunks), negative "blurry"

    .venv/bin/python tools/make_sdxl_prompt_fixture.py   (after make_pipeline_fixture_sdxl.py,
                                                         make_prompt_fixture.py)
"""
from pathlib import Path

import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import load_file, save_file

from fixture_common import clip_tokenizer

root = Path("tests/fixtures/pipeline")
pipe = StableDiffusionXLPipeline.from_pretrained(root / "sdxl-tiny", tokenizer=clip_tokenizer(),
                                                 tokenizer_2=clip_tokenizer("!"), torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
tok = clip_tokenizer()
BOS, EOS = 49406, 49407


def chunks(pieces, k):
    ids, ws = [], []
    for text, w in pieces:
        t = tok(text, add_special_tokens=False).input_ids
        ids += t
        ws += [w] * len(t)
    out = []
    for c in range(k):
        ci, cw = ids[c * 75:(c + 1) * 75], ws[c * 75:(c + 1) * 75]
        out.append(([BOS] + ci + [EOS], [1.0] + cw + [1.0]))
    return out


def n_chunks(pieces):
    n = sum(len(tok(t, add_special_tokens=False).input_ids) for t, _ in pieces)
    return max(1, -(-n // 75))


def encode(pieces, k):
    """[1, 77·k, 32 + 40] context and [1, 24] pooled output."""
    zs, pooled = [], None
    for c, (row, w) in enumerate(chunks(pieces, k)):
        both = []
        for te, pad in ((pipe.text_encoder, EOS), (pipe.text_encoder_2, 0)):
            ids = torch.tensor([row + [pad] * (77 - len(row))])
            wrow = torch.tensor(w + [1.0] * (77 - len(w)))
            with torch.no_grad():
                o = te(ids, output_hidden_states=True)
            z = o.hidden_states[-2][0]
            mean = z.mean()
            z = z * wrow[:, None]
            z = z * (mean / z.mean())
            both.append(z)
            if c == 0 and te is pipe.text_encoder_2:
                pooled = o.text_embeds
        zs.append(torch.cat(both, -1))
    return torch.cat(zs, 0)[None], pooled


long_words = (root / "prompt-long.txt").read_text()
cases = {
    "weighted": ([("a ", 1.0), ("red", 1.3), (" sneaker on a ", 1.0), ("white", 1 / 1.1), (" table", 1.0)],
                 [("blurry", 1.1 * 1.1)]),
    "long": ([(long_words, 1.0)], [("blurry", 1.0)]),
}
gold = load_file(root / "sdxl-tiny-golden.safetensors")
out = {}
for name, (pos, neg) in cases.items():
    k = max(n_chunks(pos), n_chunks(neg))
    pe, pp = encode(pos, k)
    ne, npool = encode(neg, k)
    kw = dict(prompt_embeds=pe, pooled_prompt_embeds=pp, negative_prompt_embeds=ne,
              negative_pooled_prompt_embeds=npool, num_inference_steps=3, guidance_scale=5.0, height=32, width=32)
    with torch.no_grad():
        out[f"final_{name}"] = pipe(**kw, latents=gold["latents"].clone(), output_type="latent").images.contiguous()
        out[f"image_{name}"] = torch.from_numpy(
            pipe(**kw, latents=gold["latents"].clone(), output_type="np").images).contiguous()
    print(name, "chunks", k, tuple(pe.shape))
save_file(out, root / "sdxl-prompt-golden.safetensors")
