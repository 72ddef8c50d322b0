#!/usr/bin/env python3
"""Dumps Brownian-tree noise from diffusers' BrownianTreeNoiseSampler (torchsde's
BrownianInterval, halfway tree, tol 1e-6, pool 24) for tests/brownian.rs: per case the seed,
the tree's σ range, the sample shape, and a sequence of (σ, σ') queries with the noise
returned for each, plus numpy SeedSequence states.

    .venv/bin/python tools/dump_brownian_fixture.py   (needs torchsde: pip install torchsde)
"""
import json

import numpy as np
import torch
import torchsde
from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

cases = []


def case(name, seed, smin, smax, shape, queries):
    x = torch.zeros(shape)
    ns = BrownianTreeNoiseSampler(x, smin, smax, seed)
    out = []
    for a, b in queries:
        a32, b32 = torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
        out.append({"sigma": float(a32), "next": float(b32),
                    "noise": ns(a32, b32).reshape(-1).tolist()})
    cases.append({"name": name, "seed": seed, "sigma_min": smin, "sigma_max": smax,
                  "shape": list(shape), "queries": out})


def sde_queries(sigmas):
    """The (σ, σ') pairs DPMSolverSDEScheduler asks for: to the log-midpoint, then the step."""
    q = []
    for s, n in zip(sigmas[:-1], sigmas[1:]):
        s32, n32 = torch.tensor(s, dtype=torch.float32), torch.tensor(n, dtype=torch.float32)
        t, tn = -s32.log(), -n32.log()
        mid = (-(t + (tn - t) * 0.5)).exp()
        q.append((float((-t).exp()), float(mid)))
        q.append((float((-t).exp()), float((-tn).exp())))
    return q


sig = [14.614647, 6.9642625, 3.5472317, 1.7889855, 0.8629633, 0.35916373, 0.029167533]
case("sd15 schedule, 24 values", 42, sig[-1], sig[0], (1, 4, 2, 3), sde_queries(sig))
case("few values (double-precision randn)", 7, sig[-1], sig[0], (5,), sde_queries(sig[:4]))
case("batch of 2, 128 values, big seed", 2**63 - 25, 0.0292, 14.6146, (2, 4, 4, 4),
     sde_queries([14.6146, 9.0, 2.5, 0.0292]))
# Queries out of order, touching and overlapping earlier ones, and the whole interval.
case("out of order", 1234, 0.5, 3.25, (17,),
     [(1.0, 2.0), (3.25, 0.5), (2.0, 1.5), (0.75, 3.0), (1.2345678, 1.2345679)])
seeds = [{"entropy": e, "spawn_key": list(k),
          "state": [int(v) for v in np.random.SeedSequence(entropy=e, spawn_key=k, pool_size=24).generate_state(4)]}
         for e, k in [(42, ()), (2**40 + 7, (3, 2)), (0, (0, 0)), (123456789, (2**33 + 5, 34)), (2**63 - 25, (1, 1))]]
with open("tests/fixtures/brownian.json", "w") as f:
    json.dump({"torchsde": torchsde.__version__, "torch": torch.__version__, "numpy": np.__version__,
               "cases": cases, "seed_sequences": seeds}, f, indent=1, allow_nan=False)
print(len(cases), "cases")
