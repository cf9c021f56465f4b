#!/usr/bin/env python3
"""Results of bench/gpu/throughput.sh, one JSON line per run, and the table.

    report.py ours RUN/log.jsonl SEQ BATCH PEAK_MIB [NAME] -> a JSON line (our trainer's run)
    report.py hf   HF.json       SEQ BATCH PEAK_MIB   -> a JSON line (hf_baseline.py's run)
    report.py table RESULTS.jsonl                     -> the table

FLOPs as src/model/flops.rs counts them (Megatron's formula): per token, 6 x the encoder's matrix
weights + 12 x layers x hidden x seq; MFU against the GPU's dense bf16 peak. Our tokens are
the real tokens of the batches; HF's batches are full-length.
"""
import json
import sys

LAYERS, HIDDEN, INTERMEDIATE = 12, 768, 3072  # bert-base-cased (the CPU mode's tiny runs
# are only a check of the script: their TFLOP/s use this shape too)
PEAKS = [("H200", 989.4), ("H100 PCIE", 756.0), ("H100", 989.4), ("A100", 312.0)]


def flops_per_token(seq):
    per_layer = 4 * HIDDEN * HIDDEN + 2 * HIDDEN * INTERMEDIATE
    return 6 * LAYERS * per_layer + 12 * LAYERS * HIDDEN * seq


def peak_tflops(gpu):
    name = (gpu or "").upper()
    return next((p for key, p in PEAKS if key in name), None)


def ours(path, seq, batch, peak_mib, name="biobert"):
    rows = [json.loads(line) for line in open(path)]
    # The first logged window holds CUDA start-up and the first kernels' tuning.
    timed = rows[1:] or rows
    mean = lambda key: sum(r[key] for r in timed) / len(timed)
    return {
        "name": name,
        "seq": seq,
        "batch": batch,
        "steps": timed[-1]["step"] - rows[0]["step"],
        "seq_per_s": mean("perf/seq_per_s"),
        "tokens_per_s": mean("perf/tokens_per_s"),
        "tflops": mean("perf/tflops"),
        "peak_mib": peak_mib,
        "last_loss": rows[-1]["train/loss"],
    }


def hf(path, seq, batch, peak_mib):
    r = json.loads(open(path).read().strip().splitlines()[-1])
    if "seq_per_s" not in r:
        sys.exit(f"report.py: {path} holds no measurement (a dry run?)")
    r["tflops"] = r["tokens_per_s"] * flops_per_token(seq) / 1e12
    r["peak_mib"] = peak_mib
    return r


def table(path):
    rows = [json.loads(line) for line in open(path)]
    gpu = next((r["gpu"] for r in rows if "gpu" in r), "unknown GPU")
    rows = [r for r in rows if "seq" in r]
    torch = next((r["torch"] for r in rows if "torch" in r), "?")
    peak = peak_tflops(gpu)
    print(f"GPU: {gpu}; torch {torch}; bf16; BERT-base (bert-base-cased shape)")
    print("| seq x batch | run | seq/s | tokens/s | TFLOP/s | MFU | peak GPU memory (MiB, nvidia-smi) | vs HF compiled |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for seq in sorted({r["seq"] for r in rows}):
        shape = [r for r in rows if r["seq"] == seq]
        compiled = next((r["seq_per_s"] for r in shape
                         if r["name"] == "HF compiled" and "failed" not in r), None)
        for r in shape:
            if "failed" in r:
                print(f"| {seq} x {r['batch']} | {r['name']} | failed: {r['failed']} | | | | | |")
                continue
            mfu = f"{100 * r['tflops'] / peak:.1f}%" if peak else "n/a"
            ratio = f"{r['seq_per_s'] / compiled:.2f}x" if compiled else "n/a"
            print(f"| {seq} x {r['batch']} | {r['name']} | {r['seq_per_s']:,.0f} | "
                  f"{r['tokens_per_s']:,.0f} | {r['tflops']:.1f} | {mfu} | {r['peak_mib']} | {ratio} |")


def main():
    kind = sys.argv[1]
    if kind == "table":
        table(sys.argv[2])
        return
    path, seq, batch = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    peak = int(sys.argv[5]) if sys.argv[5].isdigit() else "n/a"  # no nvidia-smi (CPU mode)
    if kind == "ours":
        print(json.dumps(ours(path, seq, batch, peak, *sys.argv[6:7])))
    else:
        print(json.dumps(hf(path, seq, batch, peak)))


if __name__ == "__main__":
    main()
