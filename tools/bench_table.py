#!/usr/bin/env python3
"""Prints the README's kernel benchmark table from target/bench-results.tsv, which
`cargo bench` appends to (one line per bench: id, value, unit, ms, adapter).

The reference for "vs matmul peak" is the best matmul result on the same adapter: the
device's practical matmul throughput with our kernels. Usage: tools/bench_table.py [tsv]
"""
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "target/bench-results.tsv"
rows = {}
for line in open(path):
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 5:
        continue
    bench, value, unit, ms, adapter = parts
    rows[(adapter, bench)] = (float(value), unit, float(ms))  # last run wins

for adapter in sorted({a for a, _ in rows}):
    mine = {b: v for (a, b), v in rows.items() if a == adapter}
    peak = max((v for b, (v, u, _) in mine.items() if b.startswith("matmul/")), default=None)
    print(f"Adapter: {adapter}\n")
    print("| kernel | shape | throughput | time | vs matmul peak |")
    print("|---|---|---|---|---|")
    for b, (v, unit, ms) in mine.items():
        op, shape = b.split("/", 1)
        rel = f"{100 * v / peak:.0f} %" if unit == "GFLOP/s" and peak else ""
        print(f"| {op} | {shape} | {v:.2f} {unit} | {ms:.1f} ms | {rel} |")
    print()
