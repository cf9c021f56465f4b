#!/usr/bin/env python3
"""The Hugging Face side of bench/finetune/run.sh: what a user runs instead of
`biobert finetune`. AutoModelForTokenClassification / AutoModelForSequenceClassification
with transformers' Trainer, on the same data, model, seed and hyperparameters; scores
with seqeval (NER, entity level) and scikit-learn (RE, the positive class).

    hf_finetune.py ner MODEL DATA_DIR --epochs 2 --max-len 192 --batch 32 --lr 5e-5 --seed 1
    hf_finetune.py re  MODEL DATA_DIR --epochs 1 --max-len 128 ...
    hf_finetune.py check-ner EXPORTED_MODEL DATA_DIR PREDICTIONS --max-len 192

--device cuda trains and predicts on the GPU with bf16 autocast (Trainer's bf16=True), as
`biobert finetune` uses bf16 products on GPUs; the default is the CPU in fp32.

`check-ner` reloads the folder `biobert finetune ner` exported, predicts the test file
with transformers over the same word-boundary windows, and counts the words whose tag
differs from biobert's predictions file (expected: none).

--limit-train N and --limit-eval N keep the first N training and test inputs (a check of
the script). Prints one JSON line: the test F1, the seconds spent in Trainer.train and in
the whole run.
"""
import argparse
import json
import time


def read_ner(path):
    sentences, words, labels = [], [], []
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n").rstrip("\r")
        if not line.strip():
            if words:
                sentences.append((words, labels))
                words, labels = [], []
            continue
        w, l = line.split("\t")
        words.append(w)
        labels.append(l.strip())
    if words:
        sentences.append((words, labels))
    return sentences


def read_re(path):
    rows = [l.rstrip("\n").rstrip("\r") for l in open(path, encoding="utf-8") if l.strip()]
    if rows and rows[0] == "index\tsentence\tlabel":
        return [(r.split("\t")[1], r.split("\t")[2]) for r in rows[1:]]
    return [(r.split("\t")[0], r.split("\t")[1]) for r in rows]


def ner_windows(tokenizer, sentences, label_ids, max_len):
    """biobert's windows: whole words, at most max_len - 2 pieces, the label on the first."""
    room = max_len - 2
    out = []
    for k, (words, _) in enumerate(sentences):
        pieces = []
        for w in words:
            p = tokenizer(w, add_special_tokens=False)["input_ids"] or [tokenizer.unk_token_id]
            pieces.append(p[:room])
        first = 0
        while first < len(pieces):
            last, used = first, 0
            while last < len(pieces) and used + len(pieces[last]) <= room:
                used += len(pieces[last])
                last += 1
            ids, labels = [tokenizer.cls_token_id], [-100]
            for w in range(first, last):
                for j, p in enumerate(pieces[w]):
                    ids.append(p)
                    labels.append(label_ids[k][w] if j == 0 else -100)
            ids.append(tokenizer.sep_token_id)
            labels.append(-100)
            out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels,
                        "sentence": k, "words": (first, last)})
            first = last
    return out


def ner_tags(sentences, windows, predictions, names):
    tags = [["O"] * len(words) for words, _ in sentences]
    for w, pred in zip(windows, predictions):
        firsts = [i for i, l in enumerate(w["labels"]) if l != -100]
        for pos, word in zip(firsts, range(*w["words"])):
            tags[w["sentence"]][word] = names[pred[pos]]
    return tags


def predict(model, rows, device="cpu", batch=64):
    import torch
    out = []
    model.to(device).eval()
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=device == "cuda"):
        for i in range(0, len(rows), batch):
            chunk = rows[i:i + batch]
            width = max(len(r["input_ids"]) for r in chunk)
            ids = torch.tensor([r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in chunk])
            mask = torch.tensor([r["attention_mask"] + [0] * (width - len(r["attention_mask"])) for r in chunk])
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            out.extend(logits.argmax(-1).tolist())
    return out


class Rows:
    """A list of feature dicts as a torch Dataset (only the model's inputs)."""

    def __init__(self, rows, keys):
        self.rows, self.keys = rows, keys

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {k: self.rows[i][k] for k in self.keys}


def train(args, model, rows, collator):
    from transformers import Trainer, TrainingArguments
    targs = TrainingArguments(
        output_dir=args.work, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch,
        learning_rate=args.lr, weight_decay=0.0, warmup_steps=0, adam_epsilon=1e-8, max_grad_norm=1.0,
        lr_scheduler_type="linear", seed=args.seed, save_strategy="no", report_to=[], logging_steps=50,
        use_cpu=args.device == "cpu", bf16=args.device == "cuda", dataloader_num_workers=0,
        disable_tqdm=True)
    started = time.time()
    Trainer(model=model, args=targs, train_dataset=rows, data_collator=collator).train()
    return time.time() - started


def run_ner(args):
    from seqeval.metrics import f1_score
    from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification
    started = time.time()
    tok = AutoTokenizer.from_pretrained(args.model)
    train_s = read_ner(f"{args.data}/train.tsv")[: args.limit_train or None]
    test_s = read_ner(f"{args.data}/test.tsv")[: args.limit_eval or None]
    names = sorted({l for _, ls in train_s for l in ls}, key=lambda l: (l != "O", l))
    index = {n: i for i, n in enumerate(names)}
    ids = lambda ss: [[index[l] for l in ls] for _, ls in ss]
    train_w = ner_windows(tok, train_s, ids(train_s), args.max_len)
    test_w = ner_windows(tok, test_s, ids(test_s), args.max_len)
    model = AutoModelForTokenClassification.from_pretrained(
        args.model, num_labels=len(names), id2label=dict(enumerate(names)), label2id=index)
    train_seconds = train(args, model, Rows(train_w, ["input_ids", "attention_mask", "labels"]),
                          DataCollatorForTokenClassification(tok))
    tags = ner_tags(test_s, test_w, predict(model, test_w, args.device), names)
    f1 = f1_score([ls for _, ls in test_s], tags)
    return {"task": "ner", "test_f1": f1, "train_seconds": train_seconds,
            "seconds": time.time() - started}


def run_re(args):
    from sklearn.metrics import f1_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding
    started = time.time()
    tok = AutoTokenizer.from_pretrained(args.model)
    train_rows = read_re(f"{args.data}/train.tsv")[: args.limit_train or None]
    test_rows = read_re(f"{args.data}/test.tsv")[: args.limit_eval or None]
    names = sorted({l for _, l in train_rows})
    index = {n: i for i, n in enumerate(names)}

    def encode(rows):
        return [dict(tok(t, truncation=True, max_length=args.max_len), labels=index[l]) for t, l in rows]

    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(names))
    train_seconds = train(args, model, Rows(encode(train_rows), ["input_ids", "attention_mask", "labels"]),
                          DataCollatorWithPadding(tok))
    test = [dict(r, attention_mask=r["attention_mask"]) for r in encode(test_rows)]
    pred = [p for p in predict(model, test, args.device)]
    gold = [r["labels"] for r in test]
    f1 = f1_score(gold, pred, pos_label=index.get("1", 1), average="binary")
    return {"task": "re", "test_f1": float(f1), "train_seconds": train_seconds,
            "seconds": time.time() - started}


def check_ner(args):
    from transformers import AutoModelForTokenClassification, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForTokenClassification.from_pretrained(args.model)
    names = [model.config.id2label[i] for i in range(len(model.config.id2label))]
    test_s = read_ner(f"{args.data}/test.tsv")[: args.limit_eval or None]
    index = {n: i for i, n in enumerate(names)}
    test_w = ner_windows(tok, test_s, [[index[l] for l in ls] for _, ls in test_s], args.max_len)
    tags = ner_tags(test_s, test_w, predict(model, test_w, args.device), names)
    ours = [l.split(" ")[2] for l in open(args.predictions, encoding="utf-8").read().split("\n") if l.strip()]
    theirs = [t for s in tags for t in s]
    differ = sum(a != b for a, b in zip(ours, theirs)) + abs(len(ours) - len(theirs))
    return {"task": "check-ner", "words": len(theirs), "differing_tags": differ}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("task", choices=["ner", "re", "check-ner"])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("predictions", nargs="?")
    p.add_argument("--epochs", type=float, default=1)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--limit-train", type=int, default=0)
    p.add_argument("--limit-eval", type=int, default=0)
    p.add_argument("--work", default="/tmp/hf-finetune")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = p.parse_args()
    run = {"ner": run_ner, "re": run_re, "check-ner": check_ner}[args.task]
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
