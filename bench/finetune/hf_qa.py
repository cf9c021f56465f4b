#!/usr/bin/env python3
"""transformers' side of bench/finetune/qa.sh: AutoModelForQuestionAnswering fine-tuned and
evaluated as `biobert finetune qa` is, with the same windows, n-best rules and five answers
per question (the port of Google's run_squad.py in tests/fixtures/squad_reference.py, and
BioBERT's transform_nbset2bioasqform rules below), the same schedule (AdamW without decay
on biases and LayerNorm, linear warm-up then decay, clipping at 1.0), scored by BioASQ's
official evaluator. Prints one JSON line: the scores per test file and their mean.

usage: hf_qa.py MODEL TRAIN.json --test A.json [B.json ...] --golden GA.json [GB.json ...]
       --work DIR [--limit-train N] [--limit-eval N] [--epochs N] [--lr X] [--batch N] [--seed N] [--device D]
"""
import argparse
import json
import math
import os
import random
import subprocess
import sys

import torch
from transformers import AutoModelForQuestionAnswering, get_linear_schedule_with_warmup
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
import squad_reference as ref  # noqa: E402

JAR = os.path.join(ROOT, "..", "shared", "tools", "bioasq-eval", "BioASQEvaluation.jar")


def batches(feats, size, order):
    for i in range(0, len(order), size):
        yield [feats[j] for j in order[i:i + size]]


def collate(group, device):
    width = max(len(f["input_ids"]) for f in group)
    pad = lambda key, fill: torch.tensor(
        [f[key] + [fill] * (width - len(f[key])) for f in group], device=device)
    mask = torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"]))
                         for f in group], device=device)
    return pad("input_ids", 0), pad("token_type_ids", 0), mask


def train(model, feats, a, device):
    decay = [p for n, p in model.named_parameters() if not ("bias" in n or "LayerNorm" in n)]
    rest = [p for n, p in model.named_parameters() if "bias" in n or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": rest, "weight_decay": 0.0}], lr=a.lr, eps=1e-6)
    steps = math.ceil(len(feats) / a.batch) * a.epochs
    sched = get_linear_schedule_with_warmup(opt, int(0.1 * steps), steps)
    rng = random.Random(a.seed)
    model.train()
    for _ in range(a.epochs):
        order = list(range(len(feats)))
        rng.shuffle(order)
        for group in batches(feats, a.batch, order):
            ids, types, mask = collate(group, device)
            starts = torch.tensor([f["start"] for f in group], device=device)
            ends = torch.tensor([f["end"] for f in group], device=device)
            out = model(input_ids=ids, token_type_ids=types, attention_mask=mask,
                        start_positions=starts, end_positions=ends)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()


@torch.no_grad()
def window_logits(model, feats, device):
    model.eval()
    out = []
    for group in batches(feats, 64, list(range(len(feats)))):
        ids, types, mask = collate(group, device)
        r = model(input_ids=ids, token_type_ids=types, attention_mask=mask)
        for k, f in enumerate(group):
            n = len(f["input_ids"])
            out.append([[float(s), float(e)] for s, e in
                        zip(r.start_logits[k, :n].float(), r.end_logits[k, :n].float())])
    return out


def five_answers(nbest):
    """BioBERT's rules (transform_nbset2bioasqform.py), sorting stably."""
    pooled = {}
    for qa_id, entries in nbest.items():
        pooled.setdefault(qa_id.rsplit("_", 1)[0], []).extend(entries)
    questions = []
    for qid, entries in pooled.items():
        ranked = sorted(entries, key=lambda e: e["probability"], reverse=True)
        merged, first = {}, {}
        for e in ranked:
            text = e["text"]
            if text == "" or len(text) > 100:
                continue
            key = text.lower()
            if key in first:
                merged[first[key]] += e["probability"]
            else:
                first[key] = text
                merged[text] = e["probability"]
        best = sorted(merged.items(), key=lambda kv: kv[1], reverse=True)[:5]
        questions.append({"id": qid, "type": "factoid", "ideal_answer": "",
                          "exact_answer": [[t] for t, _ in best]})
    return {"questions": questions}


def official(golden, submission):
    out = subprocess.run(["java", "-cp", JAR, "evaluation.EvaluatorTask1b", "-phaseB", "-e", "5",
                          golden, submission], capture_output=True, text=True, check=True)
    return [float(x) for x in out.stdout.split()[1:4]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("train")
    ap.add_argument("--test", nargs="+", required=True)
    ap.add_argument("--golden", nargs="+", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--limit-train", type=int, default=10 ** 9)
    ap.add_argument("--limit-eval", type=int, default=10 ** 9)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=5e-6)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    torch.manual_seed(a.seed)
    config = json.load(open(os.path.join(a.model, "tokenizer_config.json")))
    r = dict(max_seq_len=384, max_query_len=64, doc_stride=128, n_best=20, max_answer_len=30,
             lowercase=config.get("do_lower_case", True))
    tokenizer = BertTokenizerLegacy(os.path.join(a.model, "vocab.txt"),
                                    do_lower_case=r["lowercase"])
    model = AutoModelForQuestionAnswering.from_pretrained(a.model).to(a.device)
    train_ex = ref.read_examples(a.train, True, 0, a.limit_train)
    train(model, ref.features(train_ex, tokenizer, r, True), a, a.device)
    scores = {}
    for test, golden in zip(a.test, a.golden):
        examples = ref.read_examples(test, False, 0, a.limit_eval)
        feats = ref.features(examples, tokenizer, r, False)
        nbest = ref.nbest(examples, feats, window_logits(model, feats, a.device), r)
        name = os.path.splitext(os.path.basename(test))[0]
        path = os.path.join(a.work, f"bioasq_{name}.json")
        json.dump(five_answers(nbest), open(path, "w"))
        scores[name] = official(golden, path)
    mean = [sum(s[i] for s in scores.values()) / len(scores) for i in range(3)]
    print(json.dumps({"scores": scores, "mean": mean}))


if __name__ == "__main__":
    main()
