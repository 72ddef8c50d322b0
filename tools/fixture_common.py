"""Shared by the fixture scripts in tools/: the CLIP tokenizer built from the engine's own
vocabulary (assets/clip-tokenizer.json), as transformers' fast tokenizer."""
from transformers import CLIPTokenizerFast


def clip_tokenizer(pad="<|endoftext|>"):
    """SD 1.x pads with <|endoftext|>, SD 2.x (OpenCLIP) with "!"."""
    return CLIPTokenizerFast(tokenizer_file="assets/clip-tokenizer.json", bos_token="<|startoftext|>",
                             eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token=pad,
                             model_max_length=77)
