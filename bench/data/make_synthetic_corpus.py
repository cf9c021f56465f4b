"""A synthetic token corpus with the shape of BioBERT's: PubMed-like abstracts (about 11
sentences of about 32 WordPiece tokens: 351 tokens a document) and PMC-like full-text
articles (about 200 sentences: 6,000 tokens), in the proportion of the real corpus
(PubMed 4.5B words, PMC 13.5B words: a quarter of the tokens from abstracts). Token ids
are random; only the lengths shape the instance index, and the loader reads real bytes.

Writes OUT/manifest.json, OUT/vocab.txt and Megatron indexed-dataset shards
(shard_NNNNN.bin/.idx, uint16) as `corpus-tools prepare` does.

    python make_synthetic_corpus.py OUT TOKENS VOCAB_TXT [--seed 1]
"""
import argparse
import hashlib
import json
import os
import struct

import numpy as np

SHARD_TOKENS = 250_000_000
PUBMED_SHARE = 0.25


def sentence_lengths(rng, n, mean):
    """Log-normal lengths with the given mean, 1..512 tokens."""
    sigma = 0.55
    mu = np.log(mean) - sigma**2 / 2
    return np.clip(np.rint(rng.lognormal(mu, sigma, n)), 1, 512).astype(np.int32)


def documents(rng, tokens, sentences_mean, sentence_mean):
    """Sentence lengths and sentences per document until `tokens` are reached."""
    per_doc = sentences_mean * sentence_mean
    n_docs = max(1, int(tokens / per_doc))
    counts = 1 + rng.poisson(sentences_mean - 1, n_docs).astype(np.int64)
    lengths = sentence_lengths(rng, int(counts.sum()), sentence_mean)
    return counts, lengths


def write_shard(path, counts, lengths, rng):
    with open(path + ".bin", "wb") as f:
        remaining = int(lengths.sum())
        while remaining:
            n = min(remaining, 50_000_000)
            f.write(rng.integers(1000, 30000, n, dtype=np.uint16).tobytes())
            remaining -= n
    doc_index = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=doc_index[1:])
    pointers = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1].astype(np.int64) * 2, out=pointers[1:])
    with open(path + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00")
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", 8))
        f.write(struct.pack("<Q", len(lengths)))
        f.write(struct.pack("<Q", len(doc_index)))
        f.write(lengths.astype("<i4").tobytes())
        f.write(pointers.astype("<i8").tobytes())
        f.write(doc_index.astype("<i8").tobytes())


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return {"file": os.path.basename(path), "bytes": os.path.getsize(path), "sha256": h.hexdigest()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("tokens", type=int)
    p.add_argument("vocab")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=False)
    rng = np.random.default_rng(a.seed)
    vocab = open(a.vocab, "rb").read()
    open(os.path.join(a.out, "vocab.txt"), "wb").write(vocab)
    shards, totals = [], {"documents": 0, "sentences": 0, "tokens": 0}
    parts = [("PMID", a.tokens * PUBMED_SHARE, 11, 32), ("PMC", a.tokens * (1 - PUBMED_SHARE), 200, 30)]
    for prefix, tokens, sentences_mean, sentence_mean in parts:
        while tokens > 0:
            take = min(tokens, SHARD_TOKENS)
            counts, lengths = documents(rng, take, sentences_mean, sentence_mean)
            tokens -= take
            name = f"shard_{len(shards):05d}"
            write_shard(os.path.join(a.out, name), counts, lengths, rng)
            first = totals["documents"]
            entry = {
                "name": name,
                "documents": len(counts),
                "sentences": int(counts.sum()),
                "tokens": int(lengths.sum()),
                "first_document": f"{prefix}:{first}",
                "last_document": f"{prefix}:{first + len(counts) - 1}",
                "end": [0, 0],
                "text": None,
                "bin": digest(os.path.join(a.out, name + ".bin")),
                "idx": digest(os.path.join(a.out, name + ".idx")),
                "dtype": "uint16",
            }
            shards.append(entry)
            for k in totals:
                totals[k] += entry[k]
    manifest = {
        "format": "biobert-corpus/1",
        "tool": "bench/data/make_synthetic_corpus.py",
        "command": "shard",
        "tokenizer": {
            "file": "vocab.txt",
            "sha256": hashlib.sha256(vocab).hexdigest(),
            "vocab_size": vocab.count(b"\n"),
            "lowercase": True,
            "kind": "vocab.txt",
        },
        "settings": {
            "languages": ["eng"],
            "abstract_labels": False,
            "license_subset": None,
            "on_error": "fail",
            "target_tokens": SHARD_TOKENS,
            "target_text_bytes": None,
        },
        "totals": totals,
        "counts": dict(totals),
        "shards": shards,
        "sources": [],
    }
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(json.dumps(totals))


if __name__ == "__main__":
    main()
