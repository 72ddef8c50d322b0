#!/usr/bin/env python3
"""Pillow's Image.resize on random 8-bit images, the reference for src/resample.rs
(tests/resample.rs): each case `NAME` stores `NAME.in` [h, w, c] and `NAME.out` [nh, nw, c]
(uint8), resized with the filter its name says, as diffusers' VaeImageProcessor.resize does.

    .venv/bin/python tools/make_resize_fixture.py
"""
import numpy as np
import PIL
import torch
from PIL import Image
from safetensors.torch import save_file

rng = np.random.default_rng(11)
CASES = [  # name, (w, h), (nw, nh), channels, filter
    ("bicubic_21x14_to_20x12", (21, 14), (20, 12), 3, Image.BICUBIC),
    ("lanczos_21x14_to_20x12", (21, 14), (20, 12), 3, Image.LANCZOS),
    ("lanczos_97x61_to_96x56", (97, 61), (96, 56), 3, Image.LANCZOS),
    ("bicubic_64x48_to_9x7", (64, 48), (9, 7), 3, Image.BICUBIC),
    ("lanczos_64x48_to_9x7", (64, 48), (9, 7), 3, Image.LANCZOS),
    ("bicubic_7x5_to_16x16", (7, 5), (16, 16), 3, Image.BICUBIC),
    ("lanczos_7x5_to_16x16", (7, 5), (16, 16), 3, Image.LANCZOS),
    ("lanczos_gray_33x17_to_32x16", (33, 17), (32, 16), 1, Image.LANCZOS),
    ("lanczos_width_only_35x8_to_32x8", (35, 8), (32, 8), 3, Image.LANCZOS),
    ("bicubic_height_only_8x35_to_8x32", (8, 35), (8, 32), 3, Image.BICUBIC),
    # Pillow 13 runs the vertical pass first here (the height loses > 2× the width's pixels).
    ("lanczos_40x60_to_80x30", (40, 60), (80, 30), 3, Image.LANCZOS),
    ("bicubic_30x50_to_29x40", (30, 50), (29, 40), 3, Image.BICUBIC),
]
out = {}
for name, (w, h), (nw, nh), c, f in CASES:
    # Smooth areas, hard edges and extremes (0 and 255 overshoot the clip).
    a = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    a[: h // 2, : w // 2] = 255
    a[h // 2:, w // 2:] = 0
    img = Image.fromarray(a[:, :, 0] if c == 1 else a, "L" if c == 1 else "RGB")
    r = np.asarray(img.resize((nw, nh), resample=f))
    out[f"{name}.in"] = torch.from_numpy(a.copy())
    out[f"{name}.out"] = torch.from_numpy(r.reshape(nh, nw, c).copy())
save_file(out, "tests/fixtures/resize.safetensors", metadata={"pillow": PIL.__version__})
print(len(CASES), "cases, Pillow", PIL.__version__)
