#!/usr/bin/env python3
"""A randomly initialised BERT-base (bert-base-cased shape) as a Hugging Face folder, with a
given vocab.txt, for GPU checks on machines that cannot download BERT.

    make_model.py OUT_DIR VOCAB_TXT
"""
import shutil
import sys

import torch
from transformers import BertConfig, BertForPreTraining

out, vocab = sys.argv[1], sys.argv[2]
size = sum(1 for _ in open(vocab))
torch.manual_seed(0)
model = BertForPreTraining(BertConfig(vocab_size=size))
model.save_pretrained(out)
shutil.copy(vocab, f"{out}/vocab.txt")
print(f"BERT-base with a vocabulary of {size} in {out}")
