#!/usr/bin/env python3
"""Builds assets/clip-tokenizer.json (a `tokenizers` JSON) from the real CLIP BPE vocabulary
`bpe_simple_vocab_16e6.txt.gz` (MIT, shipped in PyPI's open_clip_torch wheel), and dumps
golden token ids from transformers' CLIPTokenizer (the slow, reference implementation) to
tests/fixtures/clip_tokens.json.

    pip download --no-deps open_clip_torch -d /tmp/ocw
    .venv/bin/python tools/build_clip_tokenizer.py /tmp/ocw/open_clip_torch-*.whl

The vocabulary is the one OpenAI's CLIP builds in its SimpleTokenizer: the 256 byte
characters, the same with `</w>`, one entry per merge, then <|startoftext|>, <|endoftext|>.
"""
import gzip
import io
import json
import sys
import tempfile
import zipfile
from pathlib import Path

from transformers import CLIPTokenizer, CLIPTokenizerFast


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


wheel = sys.argv[1]
with zipfile.ZipFile(wheel) as z:
    raw = z.read("open_clip/bpe_simple_vocab_16e6.txt.gz")
lines = gzip.decompress(raw).decode("utf-8").split("\n")
merges = [tuple(l.split()) for l in lines[1:49152 - 256 - 2 + 1]]
vocab = list(bytes_to_unicode().values())
vocab += [v + "</w>" for v in vocab]
vocab += ["".join(m) for m in merges]
vocab += ["<|startoftext|>", "<|endoftext|>"]
assert len(vocab) == 49408, len(vocab)

with tempfile.TemporaryDirectory() as d:
    d = Path(d)
    (d / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    (d / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 77, "do_lower_case": True, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    slow = CLIPTokenizer.from_pretrained(d)
    fast = CLIPTokenizerFast.from_pretrained(d)
    fast.backend_tokenizer.save("assets/clip-tokenizer.json")
    # SD 2.x's OpenCLIP tokenizer folder pads with "!" (id 0).
    (d / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 77, "do_lower_case": True, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "!"}))
    slow_sd2 = CLIPTokenizer.from_pretrained(d)

prompts = [
    "a photograph of an astronaut riding a horse",
    "",
    "A RED Sneaker, studio lighting; 4k!!",
    "  multiple   spaces\tand\nnewlines  ",
    "caf\u00e9 na\u00efve co\u00f6perate \u2014 emoji \U0001F680 and CJK \u6f22\u5b57",
    "numbers 1234567 and 3.14159, don't won't I'm",
    "(masterpiece:1.2), [blurry], <lora:x:0.5>",
    " ".join(["a very long prompt"] * 30),
]
out = {"cases": []}
for p in prompts:
    sd1 = slow(p, padding="max_length", max_length=77, truncation=True)["input_ids"]
    sd2 = slow_sd2(p, padding="max_length", max_length=77, truncation=True)["input_ids"]
    full = slow(p)["input_ids"]
    assert fast(p, padding="max_length", max_length=77, truncation=True)["input_ids"] == sd1, p
    out["cases"].append({"prompt": p, "sd1": sd1, "sd2": sd2, "untruncated_len": len(full)})
Path("tests/fixtures/clip_tokens.json").write_text(json.dumps(out, ensure_ascii=False, indent=1))
print(f"vocab {len(vocab)}, {len(prompts)} golden prompts")
