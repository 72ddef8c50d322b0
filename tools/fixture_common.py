"""Shared by the fixture scripts in tools/: the CLIP tokenizer built from the engine's own
vocabulary (assets/clip-tokenizer.json), as transformers' fast tokenizer."""
import torch
from transformers import CLIPTokenizerFast


def perturb(*models, half=False):
    """Adds N(0, 0.05²) noise to every parameter (default init leaves norm weights at 1 and
    biases at 0, which would hide a dropped one), model by model in parameter order; with
    `half`, then rounds each to f16, so that a file stored in f16 holds exactly the weights the
    golden outputs are computed from (in f32). Puts the models in eval mode."""
    with torch.no_grad():
        for m in models:
            m.eval()
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.05)
                if half:
                    p.copy_(p.half().float())


def clip_tokenizer(pad="<|endoftext|>"):
    """SD 1.x pads with <|endoftext|>, SD 2.x (OpenCLIP) with "!"."""
    return CLIPTokenizerFast(tokenizer_file="assets/clip-tokenizer.json", bos_token="<|startoftext|>",
                             eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token=pad,
                             model_max_length=77)
