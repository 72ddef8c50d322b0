#!/usr/bin/env python3
"""Prints the README's kernel benchmark table from target/bench-results.tsv, which
`cargo bench` appends to (one line per bench: id, value, unit, ms, adapter, the reference
matmul's best GFLOP/s in alternation with the row, and the median of the row / reference
speed ratios over those pairs, in %).

"vs matmul peak" is that median (benches/common: a CPU device's speed drifts within
minutes); lines written before those columns existed are compared with the best matmul
row on the same adapter instead.
Usage: tools/bench_table.py [tsv]
"""
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "target/bench-results.tsv"
rows = {}
for line in open(path):
    parts = line.rstrip("\n").split("\t")
    if not 5 <= len(parts) <= 7:
        continue
    parts += [""] * (7 - len(parts))
    bench, value, unit, ms, adapter, peak, pct = parts
    num = lambda x: float(x) if x else None
    rows[(adapter, bench)] = (float(value), unit, float(ms), num(peak), num(pct))  # last run wins

for adapter in sorted({a for a, _ in rows}):
    mine = {b: v for (a, b), v in rows.items() if a == adapter}
    best = max((v for b, (v, u, *_) in mine.items() if b.startswith("matmul/")), default=None)
    print(f"Adapter: {adapter}\n")
    print("| kernel | shape | throughput | time | matmul peak next to it | vs matmul peak |")
    print("|---|---|---|---|---|---|")
    for b, (v, unit, ms, peak, pct) in mine.items():
        op, shape = b.split("/", 1)
        if pct is not None:
            rel = f"{pct:.0f} %"
        else:
            rel = f"{100 * v / best:.0f} %" if unit == "GFLOP/s" and best else ""
        next_to = f"{peak:.1f} GFLOP/s" if peak else ""
        print(f"| {op} | {shape} | {v:.2f} {unit} | {ms:.1f} ms | {next_to} | {rel} |")
    print()
