#!/usr/bin/env python3
"""The weak-scaling model of BENCHMARKS.md's "Multi-node" section, from measured figures
and stated link bandwidths:

    bench/multinode/scaling_model.py [--share F]

Measured inputs (BENCHMARKS.md): the H200 step times of "First GPU run" (bf16_residual:
3,920 seq/s at seq 128, 773 seq/s at seq 512), the gradient buffer of bert-base-cased's
shape (108.9 M parameters), and the share F of the hideable communication that the
overlapped all-reduce hid on the emulated slow link (bench/multinode/overlap.sh; default
0.64). Stated: NVLink 360 GB/s usable per GPU and direction; InfiniBand 45 or 22.5 GB/s
usable per GPU (8 or 4 x 400 Gb/s a node, 90% of the line rate).

The all-reduce is NCCL's hierarchical ring: a reduce-scatter and an all-gather inside the
node over NVLink, and across the N nodes a ring over each GPU's eighth through its port.
Without overlap all of it is exposed. With overlap, the buckets are those the trainer
forms (parameters in the order their gradients complete, about distributed.bucket_mb
each; src/parallel/gradient_buckets.rs), the last one (the embeddings) starts after
backward and is always exposed, and the others can hide inside the last micro-batch's
backward pass (2/3 of its compute): the bound hides all they can, the measured column
hides the share F of it.
"""
import sys

VOCAB, HIDDEN, LAYERS, INTERMEDIATE, POSITIONS = 28996, 768, 12, 3072, 512
NVLINK = 360e9
PORTS = {"4 x 400": 22.5e9, "8 x 400": 45e9}
BUCKET_ELEMENTS = 64 << 20 >> 2


def parameters_in_completion_order():
    """(name, elements) of BERT-base's pretraining parameters in the order their gradients
    complete: the heads, the layers from the last, the embeddings' LayerNorm, the tables."""
    h, i = HIDDEN, INTERMEDIATE
    heads = [("mlm bias", VOCAB), ("mlm transform", h * h + 3 * h), ("pooler", h * h + h), ("nsp", 2 * h + 2)]
    layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    layers = [(f"layer {n}", layer) for n in reversed(range(LAYERS))]
    return heads + layers + [("embeddings LayerNorm", 2 * h),
                             ("embedding tables", (VOCAB + POSITIONS + 2) * h)]


def last_bucket_share():
    """The last bucket's share of the gradient, cut as gradient_buckets.rs cuts it."""
    buckets, filled = [[]], 0
    for name, n in parameters_in_completion_order():
        if filled >= BUCKET_ELEMENTS:
            buckets.append([])
            filled = 0
        buckets[-1].append(n)
        filled += n
    total = sum(sum(b) for b in buckets)
    return sum(buckets[-1]) / total, total


def all_reduce_s(gradient_bytes, gpus, port):
    t = 2 * 7 / 8 * gradient_bytes / NVLINK
    nodes = gpus // 8
    if nodes > 1:
        t += 2 * (nodes - 1) / nodes * gradient_bytes / 8 / PORTS[port]
    return t


def efficiency(compute_s, last_micro_batch_s, t, last_share, share):
    """compute / (compute + exposed); share None: without overlap."""
    if share is None:
        exposed = t
    else:
        hideable = t * (1 - last_share)
        hidden = share * min(hideable, 2 / 3 * last_micro_batch_s)
        exposed = t - hidden
    return compute_s / (compute_s + exposed)


def main():
    share = float(sys.argv[sys.argv.index("--share") + 1]) if "--share" in sys.argv else 0.64
    last_share, elements = last_bucket_share()
    fp32 = elements * 4
    print(f"bert-base-cased: {elements / 1e6:.1f} M parameters, {fp32 / 1e6:.1f} MB of fp32 gradients; "
          f"the last bucket (started after backward) {100 * last_share:.1f}% of them; measured share {share:.2f}\n")
    shapes = [
        # name, compute a step (s), micro-batches a step
        ("seq 128, NVIDIA phase 1 (64 x 128 accumulation a GPU)", 64 * 128 / 3920, 128),
        ("seq 512, BioBERT's 24 a GPU, no accumulation", 24 / 773, 1),
    ]
    configs = [(8, "4 x 400"), (64, "4 x 400"), (64, "8 x 400"), (256, "4 x 400"), (256, "8 x 400")]
    head = " | ".join(f"{g} GPUs" + (", NVLink" if g == 8 else f", {p}") for g, p in configs)
    print(f"| shape | sums in | compute a step (ms) | {head} |")
    print("|---|---|---:|" + "---|" * len(configs))
    for name, compute, micro_batches in shapes:
        for dtype, size in [("fp32", fp32), ("bf16", fp32 / 2)]:
            cells = []
            for gpus, port in configs:
                t = all_reduce_s(size, gpus, port)
                e = [efficiency(compute, compute / micro_batches, t, last_share, s) for s in (None, 1.0, share)]
                cells.append(" / ".join(f"{100 * x:.1f}%" for x in e))
            print(f"| {name} | {dtype} | {1e3 * compute:,.1f} | " + " | ".join(cells) + " |")
    print("\n(each cell: without overlap / with overlap, the bound / with overlap at the measured share)")
    print("all-reduce (fp32): " + ", ".join(
        f"{g} GPUs {p}: {1e3 * all_reduce_s(fp32, g, p):.2f} ms" for g, p in configs))


if __name__ == "__main__":
    main()
