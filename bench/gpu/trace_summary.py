#!/usr/bin/env python3
"""Summarises a Chrome trace written by `biobert pretrain --profile START:COUNT`.

    python3 bench/gpu/trace_summary.py RUN/profile/trace_rank0_steps20-22.json [--steps 3]
        [--top 15] [--json OUT.json]

With CUDA kernels in the trace (a GPU run) it sums the kernels' time (and the device's
copies and fills) by category, the GPU's busy share of the recorded span, the longest
kernels by total time and the achieved GEMM rate (the GEMM operators' FLOPs, from their
recorded input shapes, over the GEMM kernels' time). A CPU trace has no kernels: it sums each operator's
self time (its time less that of the operators it called) instead, on the same categories.
"""

import argparse
import json
import re
import sys

# First match wins: the specific categories before the broad ones.
CATEGORIES = [
    ("NCCL", r"nccl"),
    ("optimizer", r"adam|lamb|multi_tensor_apply"),
    ("attention", r"flash|fmha|attention|sdpa|scaled_dot_product|(?<!log)_softmax"),
    ("LayerNorm", r"layer_?norm"),
    ("dropout", r"dropout|bernoulli|philox"),
    ("GEMM", r"gemm|gemv|cutlass|cublas|xmma|wgmma|aten::(add|baddb|b)?mm$|aten::matmul|aten::linear"),
    ("fills and zeros", r"fill|zero|memset"),
    ("copies and casts", r"copy|memcpy|cast|contiguous|clone|aten::to$|aten::cat|aten::stack|index|gather|scatter|embedding"),
    ("reductions", r"reduce|sum|norm|mean|max|min|softmax|nll|cross_entropy|argmax"),
    ("views and allocation", r"empty|view|reshape|permute|transpose|aten::t$|expand|narrow|select|slice|squeeze|as_strided|detach|alias|resize|unbind|split|chunk|set_"),
    ("other element-wise", r"elementwise|vectorized|unrolled|gelu|erf|tanh|add|mul|div|sub|where|neg|sqrt|rsqrt|exp|pow|aten::"),
]
COMPILED = [(name, re.compile(pattern, re.IGNORECASE)) for name, pattern in CATEGORIES]
GEMM_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
DEVICE_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}


def category(name):
    for label, pattern in COMPILED:
        if pattern.search(name):
            return label
    return "other"


def load(path):
    try:
        with open(path) as f:
            trace = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"trace_summary: {path}: not a readable Chrome trace ({e})")
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "dur" in e]
    if not events:
        sys.exit(f"trace_summary: {path}: no complete events (was anything recorded?)")
    return events


def gemm_flop_count(op):
    """2 x m x k x n (times the batch) from a GEMM operator's recorded input shapes."""
    dims = [d for d in op.get("args", {}).get("Input Dims", []) if d]
    if op["name"] in ("aten::addmm", "aten::baddbmm"):
        dims = dims[1:]  # the added tensor comes first
    if len(dims) < 2:
        return 0.0
    a, b = dims[0], dims[1]
    if len(a) == 2 and len(b) == 2:
        return 2.0 * a[0] * a[1] * b[1]
    if len(a) == 3 and len(b) == 3:
        return 2.0 * a[0] * a[1] * a[2] * b[2]
    return 0.0


def union_length(intervals):
    total, end = 0.0, None
    for start, stop in sorted(intervals):
        if end is None or start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def self_times(ops):
    """Each CPU operator's duration less its children's, per thread (events nest)."""
    result = []
    by_thread = {}
    for e in ops:
        by_thread.setdefault((e.get("pid"), e.get("tid")), []).append(e)
    for events in by_thread.values():
        events.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [event, child time]
        for e in events:
            while stack and e["ts"] >= stack[-1][0]["ts"] + stack[-1][0]["dur"]:
                done, child = stack.pop()
                result.append((done, max(done["dur"] - child, 0.0)))
            if stack:
                stack[-1][1] += e["dur"]
            stack.append([e, 0.0])
        for done, child in stack:
            result.append((done, max(done["dur"] - child, 0.0)))
    return result


def summarise(path, steps, top):
    events = load(path)
    span_start = min(e["ts"] for e in events)
    span = max(e["ts"] + e["dur"] for e in events) - span_start
    device = [e for e in events if e.get("cat") in DEVICE_CATS]
    ops = [e for e in events if e.get("cat") == "cpu_op"]
    gpu = any(e.get("cat") == "kernel" for e in device)
    if gpu:
        timed = [(e, float(e["dur"])) for e in device]
        busy = union_length([(e["ts"], e["ts"] + e["dur"]) for e in device]) / span
    else:
        timed = self_times(ops)
        busy = None
    by_category, by_name = {}, {}
    for e, t in timed:
        c = category(e["name"])
        by_category[c] = by_category.get(c, 0.0) + t
        count, total = by_name.get(e["name"], (0, 0.0))
        by_name[e["name"]] = (count + 1, total + t)
    total = sum(by_category.values())
    gemm_flops = sum(gemm_flop_count(e) for e in ops if e["name"] in GEMM_OPS)
    gemm_us = by_category.get("GEMM", 0.0)
    return {
        "trace": path,
        "kind": "gpu" if gpu else "cpu",
        "events": len(timed),
        "steps": steps,
        "span_ms": span / 1e3,
        "step_ms": span / 1e3 / steps,
        "busy_share": busy,
        "categories": {
            c: {"ms": t / 1e3, "share": t / total if total else 0.0}
            for c, t in sorted(by_category.items(), key=lambda kv: -kv[1])
        },
        "longest": [
            {"name": n, "count": k, "ms": t / 1e3, "share": t / total if total else 0.0}
            for n, (k, t) in sorted(by_name.items(), key=lambda kv: -kv[1][1])[:top]
        ],
        "gemm_tflops": gemm_flops / (gemm_us * 1e-6) / 1e12 if gemm_us > 0 and gemm_flops > 0 else None,
        "gemm_tflop": gemm_flops / 1e12,
    }


def print_summary(s):
    what = "kernels and device copies" if s["kind"] == "gpu" else "CPU operators (self time)"
    print(f"trace: {s['trace']}")
    print(
        f"{s['events']} {what}; {s['steps']} step(s) over {s['span_ms']:.1f} ms: "
        f"{s['step_ms']:.1f} ms a step"
    )
    if s["busy_share"] is not None:
        print(f"GPU busy: {100 * s['busy_share']:.1f}% of the recorded span")
    print()
    print(f"{'category':<22} {'ms':>10} {'share':>7}")
    for c, v in s["categories"].items():
        print(f"{c:<22} {v['ms']:>10.2f} {100 * v['share']:>6.1f}%")
    print()
    label = "kernels" if s["kind"] == "gpu" else "operators"
    print(f"the {len(s['longest'])} longest {label} by total time:")
    print(f"{'ms':>10} {'count':>6} {'share':>7}  name")
    for k in s["longest"]:
        name = k["name"] if len(k["name"]) <= 100 else k["name"][:97] + "..."
        print(f"{k['ms']:>10.2f} {k['count']:>6} {100 * k['share']:>6.1f}%  {name}")
    print()
    if s["gemm_tflops"] is None:
        print("GEMM rate: no GEMM FLOPs recorded")
    else:
        print(f"GEMM rate: {s['gemm_tflop']:.3f} TFLOP at {s['gemm_tflops']:.2f} TFLOP/s achieved")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--steps", type=int, default=0, help="steps recorded (default: from the file name)")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", help="also write the summary here")
    a = ap.parse_args()
    steps = a.steps
    if steps <= 0:
        m = re.search(r"steps(\d+)-(\d+)", a.trace)
        steps = int(m.group(2)) - int(m.group(1)) + 1 if m else 1
    s = summarise(a.trace, steps, a.top)
    print_summary(s)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(s, f, indent=1)


if __name__ == "__main__":
    main()
