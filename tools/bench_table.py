#!/usr/bin/env python3
"""Prints the README's kernel benchmark table from target/bench-results.tsv, which
`cargo bench` appends to (one line per bench: id, value, unit, ms, adapter, and the
reference matmul's GFLOP/s timed right after the row).

"vs matmul peak" is each row against the reference matmul measured in the same seconds
(benches/common: a CPU device's speed drifts within minutes); lines written before that
column existed are compared with the best matmul row on the same adapter instead.
Usage: tools/bench_table.py [tsv]
"""
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "target/bench-results.tsv"
rows = {}
for line in open(path):
    parts = line.rstrip("\n").split("\t")
    if len(parts) == 5:
        parts.append("")
    if len(parts) != 6:
        continue
    bench, value, unit, ms, adapter, peak = parts
    rows[(adapter, bench)] = (float(value), unit, float(ms), float(peak) if peak else None)  # last run wins

for adapter in sorted({a for a, _ in rows}):
    mine = {b: v for (a, b), v in rows.items() if a == adapter}
    best = max((v for b, (v, u, _, _) in mine.items() if b.startswith("matmul/")), default=None)
    print(f"Adapter: {adapter}\n")
    print("| kernel | shape | throughput | time | matmul peak next to it | vs matmul peak |")
    print("|---|---|---|---|---|---|")
    for b, (v, unit, ms, peak) in mine.items():
        op, shape = b.split("/", 1)
        ref = peak or best
        rel = f"{100 * v / ref:.0f} %" if unit == "GFLOP/s" and ref else ""
        next_to = f"{peak:.1f} GFLOP/s" if peak else ""
        print(f"| {op} | {shape} | {v:.2f} {unit} | {ms:.1f} ms | {next_to} | {rel} |")
    print()
