#!/usr/bin/env python3
"""A synthetic PubMed baseline and a cased vocabulary of BERT-base-cased's size (28,996
entries), for GPU benchmarks on machines that cannot download BERT or PubMed.

    make_corpus.py OUT_DIR [ABSTRACTS]

Writes OUT_DIR/vocab.txt and OUT_DIR/pubmed/synthetic0001.xml. The abstracts are long (about
1,200 tokens each), so that Google's instance builder fills sequences of 128 and of 512
tokens alike, as it does on real full-text. Words follow a Zipf law over the vocabulary, each
word a whole WordPiece token; the text then goes through `corpus-tools prepare` like real
PubMed, so the benchmark measures the real data path.
"""
import itertools
import os
import random
import sys
from xml.sax.saxutils import escape

VOCAB_SIZE = 28996  # bert-base-cased
SPECIAL = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PUNCTUATION = [".", ",", ";", ":", "(", ")"]
# Sentences open with a capitalised word, as the sentence splitter expects.
OPENERS = ["The", "We", "In", "These", "Our", "This", "Patients", "Results", "Here", "Both"]


def vocabulary():
    fixed = SPECIAL + PUNCTUATION + OPENERS
    words = [f"w{i}" for i in range(VOCAB_SIZE - len(fixed))]
    return fixed + words, words


class Words:
    """Zipf-distributed words, drawn in large blocks (one draw per word is slow)."""

    def __init__(self, rng, words):
        self.rng, self.words = rng, words
        self.cum = list(itertools.accumulate(1.0 / (rank + 10) for rank in range(len(words))))
        self.block, self.at = [], 0

    def take(self, n):
        if self.at + n > len(self.block):
            self.block, self.at = self.rng.choices(self.words, cum_weights=self.cum, k=1 << 20), 0
        self.at += n
        return self.block[self.at - n : self.at]


def sentence(rng, words):
    body = words.take(rng.randint(12, 30))
    return rng.choice(OPENERS) + " " + " ".join(body) + "."


def main():
    out = sys.argv[1]
    abstracts = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    rng = random.Random(1234)
    vocab, words = vocabulary()
    assert len(vocab) == VOCAB_SIZE
    draw = Words(rng, words)
    os.makedirs(os.path.join(out, "pubmed"), exist_ok=True)
    with open(os.path.join(out, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    path = os.path.join(out, "pubmed", "synthetic0001.xml")
    with open(path, "w") as f:
        f.write('<?xml version="1.0" encoding="utf-8"?>\n<PubmedArticleSet>\n')
        for pmid in range(1, abstracts + 1):
            title = sentence(rng, draw)
            text = " ".join(sentence(rng, draw) for _ in range(rng.randint(50, 70)))
            f.write(
                f'<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM">'
                f'<PMID Version="1">{pmid}</PMID><Article PubModel="Print">'
                f"<ArticleTitle>{escape(title)}</ArticleTitle>"
                f"<Abstract><AbstractText>{escape(text)}</AbstractText></Abstract>"
                f"<Language>eng</Language></Article></MedlineCitation></PubmedArticle>\n"
            )
        f.write("</PubmedArticleSet>\n")
    print(f"{abstracts} abstracts in {path}; vocabulary of {len(vocab)} in {out}/vocab.txt")


if __name__ == "__main__":
    main()
