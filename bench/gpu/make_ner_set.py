#!/usr/bin/env python3
"""A synthetic NER set with NCBI-disease's shape, for timing fine-tuning steps on machines
that hold no benchmark sets: train.tsv, devel.tsv and test.tsv in BioBERT's format (a token
and its IOB label per line, a blank line between sentences).

    make_ner_set.py OUT_DIR VOCAB [SENTENCES]

The words are whole tokens of VOCAB (make_corpus.py's synthetic vocabulary), so each word is
one WordPiece. Sentence lengths follow NCBI-disease's training file (median 23 words, a long
tail to about 120; about 5,400 sentences); about 6% of the words are inside a mention of one
to four words. Only the step time means anything: the labels are random.
"""
import os
import random
import sys


def sentence(rng, words):
    n = min(120, max(3, int(rng.lognormvariate(3.15, 0.5))))
    tokens, labels = [rng.choice(words) for _ in range(n)], ["O"] * n
    i = 0
    while i < n:
        if rng.random() < 0.025:
            span = rng.randint(1, 4)
            for j in range(i, min(n, i + span)):
                labels[j] = "B" if j == i else "I"
            i += span
        i += 1
    return tokens, labels


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    out, vocab = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) == 4 else 5424
    words = [w.strip() for w in open(vocab) if w.strip().startswith("w")][:20000]
    if not words:
        sys.exit(f"{vocab}: no synthetic words (w0, w1, ...): write it with make_corpus.py")
    rng = random.Random(20261202)
    os.makedirs(out, exist_ok=True)
    for name, n in [("train.tsv", count), ("devel.tsv", max(1, count // 6)), ("test.tsv", max(1, count // 6))]:
        with open(os.path.join(out, name), "w") as f:
            for _ in range(n):
                tokens, labels = sentence(rng, words)
                f.writelines(f"{t}\t{l}\n" for t, l in zip(tokens, labels))
                f.write("\n")


if __name__ == "__main__":
    main()
