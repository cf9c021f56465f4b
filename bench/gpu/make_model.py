#!/usr/bin/env python3
"""A randomly initialised BERT (default: bert-base-cased's shape) as a Hugging Face folder,
with a given vocab.txt, for GPU checks on machines that cannot download BERT.

    make_model.py OUT_DIR VOCAB_TXT [--hidden 768 --layers 12 --heads 12 --intermediate 3072]
    make_model.py ... --dry-run     (checks the arguments without importing torch)
"""
import argparse
import shutil


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("vocab")
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=3072)
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args()
    size = sum(1 for _ in open(args.vocab))
    if args.dry_run:
        print(f"dry run: BERT ({args.layers} x {args.hidden}), vocabulary {size}, to {args.out}")
        return
    import torch
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    config = BertConfig(vocab_size=size, hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=args.heads, intermediate_size=args.intermediate)
    BertForPreTraining(config).save_pretrained(args.out)
    shutil.copy(args.vocab, f"{args.out}/vocab.txt")
    print(f"BERT ({args.layers} x {args.hidden}) with a vocabulary of {size} in {args.out}")


if __name__ == "__main__":
    main()
