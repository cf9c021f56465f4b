#!/usr/bin/env python3
"""The Hugging Face baseline of the GPU throughput benchmark: BertForPreTraining with
bert-base-cased's shape, bf16 autocast, SDPA attention, fused AdamW (no decay on LayerNorm
and biases), gradient clipping at 1.0 — the usual HF/PyTorch recipe — eager or with
torch.compile, on full-length batches with BERT's masking (15%, at most
max_predictions_per_seq positions carry an MLM label) and NSP labels.

    hf_baseline.py --seq 128 --batch 256 --predictions 20 --steps 50 [--compile]
    hf_baseline.py --device cpu --hidden 64 --layers 2 --heads 4 ...   (a quick CPU check)
    hf_baseline.py ... --dry-run      (checks the arguments without importing torch)

Prints one JSON line: seq/s, tokens/s, peak memory (torch's allocator) and the losses.
"""
import argparse
import json
import time


def batch(args, vocab_size, device, generator):
    b, t = args.batch, args.seq
    ids = torch.randint(1000, vocab_size, (b, t), generator=generator)
    ids[:, 0], ids[:, t // 2], ids[:, -1] = 101, 102, 102
    types = torch.zeros(b, t, dtype=torch.long)
    types[:, t // 2 + 1 :] = 1
    labels = torch.full((b, t), -100, dtype=torch.long)
    for row in range(b):
        picks = torch.randperm(t - 2, generator=generator)[: args.predictions] + 1
        labels[row, picks] = ids[row, picks]
        ids[row, picks] = 103
    nsp = torch.randint(0, 2, (b,), generator=generator)
    to = lambda x: x.to(device, non_blocking=True)
    return to(ids), to(types), to(torch.ones(b, t, dtype=torch.long)), to(labels), to(nsp)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--predictions", type=int, default=20)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="cuda", help="cuda, or cpu for a quick check of this script")
    p.add_argument("--hidden", type=int, default=768, help="the shape (default bert-base-cased)")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=3072)
    p.add_argument("--vocab", type=int, default=28996)
    p.add_argument("--dry-run", action="store_true", help="check the arguments, import nothing")
    args = p.parse_args()
    if args.dry_run:
        print(json.dumps({"dry_run": vars(args)}))
        return
    global torch
    import torch
    from transformers import BertConfig, BertForPreTraining

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=args.heads, intermediate_size=args.intermediate,
                        attn_implementation="sdpa")
    model = BertForPreTraining(config).to(device).train()
    decay = [p for n, p in model.named_parameters() if not ("LayerNorm" in n or n.endswith("bias"))]
    rest = [p for n, p in model.named_parameters() if "LayerNorm" in n or n.endswith("bias")]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
        lr=1e-4, betas=(0.9, 0.999), eps=1e-6, fused=cuda,
    )
    step_model = torch.compile(model) if args.compile else model
    generator = torch.Generator().manual_seed(0)
    batches = [batch(args, config.vocab_size, device, generator) for _ in range(4)]
    losses = []

    def step(i):
        ids, types, mask, labels, nsp = batches[i % len(batches)]
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = step_model(input_ids=ids, token_type_ids=types, attention_mask=mask,
                             labels=labels, next_sentence_label=nsp)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out.loss.detach()

    for i in range(args.warmup):
        losses.append(step(i))
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for i in range(args.steps):
        losses.append(step(args.warmup + i))
    sync()
    seconds = time.perf_counter() - started
    seq_per_s = args.steps * args.batch / seconds
    print(json.dumps({
        "name": "HF compiled" if args.compile else "HF eager",
        "seq": args.seq,
        "batch": args.batch,
        "steps": args.steps,
        "seq_per_s": seq_per_s,
        "tokens_per_s": seq_per_s * args.seq,
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
        "first_loss": float(losses[0]),
        "last_loss": float(losses[-1]),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if cuda else "cpu",
    }))


if __name__ == "__main__":
    main()
