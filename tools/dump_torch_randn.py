#!/usr/bin/env python3
"""Dumps torch.randn (CPU generator, float32) for several seeds and sizes, and the uniform
floats of torch.rand, to tests/fixtures/torch_randn.json for tests/rng.rs.

    .venv/bin/python tools/dump_torch_randn.py
"""
import json

import torch

cases = []
for seed, sizes in [(0, [16, 17, 100]), (42, [256, 3, 40]), (1234567, [4 * 8 * 8, 4 * 8 * 8]), (2**32 + 5, [20])]:
    g = torch.Generator("cpu").manual_seed(seed)
    draws = [torch.randn(n, generator=g, dtype=torch.float32).tolist() for n in sizes]
    cases.append({"seed": seed, "sizes": sizes, "randn": draws})
g = torch.Generator("cpu").manual_seed(7)
rand = torch.rand(10, generator=g).tolist()
json.dump({"torch": torch.__version__, "cases": cases, "rand_seed7": rand}, open("tests/fixtures/torch_randn.json", "w"))
print(len(cases), "cases")
