#!/usr/bin/env python3
"""Comparisons for bench/gpu/check.sh.

    compare.py features A.safetensors B.safetensors   relative error of layer.-1, A against B
    compare.py losses RUN_A RUN_B [TOLERANCE]          train/loss of two runs' log.jsonl, step by step
"""
import json
import sys


def features(a, b):
    from safetensors.numpy import load_file
    import numpy as np
    x, y = load_file(a)["layer.-1"].astype(np.float64), load_file(b)["layer.-1"].astype(np.float64)
    rel = np.linalg.norm(x - y) / np.linalg.norm(y)
    print(f"layer.-1: relative error {rel:.3e} (Frobenius), max |diff| {np.abs(x - y).max():.3e}")
    return rel < 1e-2


def losses(a, b, tolerance):
    read = lambda run: {r["step"]: r["train/loss"] for r in map(json.loads, open(f"{run}/log.jsonl"))}
    x, y = read(a), read(b)
    steps = sorted(set(x) & set(y))
    worst = max(abs(x[s] - y[s]) for s in steps)
    for s in steps:
        print(f"  step {s:>5}: {x[s]:.6f} {y[s]:.6f} diff {x[s] - y[s]:+.2e}")
    print(f"{len(steps)} logged steps, largest |diff| {worst:.3e} (tolerance {tolerance:g})")
    return bool(steps) and worst <= tolerance


if __name__ == "__main__":
    kind = sys.argv[1]
    ok = features(*sys.argv[2:4]) if kind == "features" else losses(
        sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
    print("ok" if ok else "FAILED")
    sys.exit(0 if ok else 1)
